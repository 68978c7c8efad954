"""A short real training run on CamVid frames, resume, self-describing weights, `rtseg eval`."""
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rtseg.checkpoint import CheckpointError, load_state, load_weights, save_weights
from rtseg.cli import main
from rtseg.config import load_dataset_config, load_preset
from rtseg.train import TrainConfig, fit
from rtseg.zoo import load_model

from conftest import CAMVID


def _subset(root: Path) -> Path:
    """A `folder` dataset of 4 real CamVid train frames and 2 val frames (copies, not symlinks)."""
    for split, n in (("train", 4), ("val", 2)):
        for sub, src in (("images", split), ("masks", f"{split}annot")):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
            for f in sorted((CAMVID / src).glob("*.png"))[:n]:
                shutil.copy(f, root / split / sub / f.name)
    return root


def _cfg(tmp_path, epochs):
    return TrainConfig(name="smoke", preset="enet_camvid", root=str(tmp_path / "data"), data="folder",
                       crop_size=[120, 160], scale_range=[0.45, 0.5], jitter=[0, 0, 0, 0], epochs=epochs, batch_size=4,
                       optimizer="adamw", lr=1e-2, weight_decay=1e-4, warmup_epochs=0, poly_power=0.0, loss="ce",
                       class_weights=None, ema_decay=0.5, ema_warmup=0, val_every=4, workers=0,
                       out=str(tmp_path))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    _subset(tmp / "data")
    result = fit(_cfg(tmp, 12), progress=False)
    return tmp, result


def test_training_lowers_the_loss_on_real_frames(run):
    tmp, result = run
    history = json.loads((tmp / "smoke" / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, 13))
    first, last = history[0]["loss"], sum(h["loss"] for h in history[-3:]) / 3
    assert last < 0.8 * first, (first, last)
    assert "val_miou" in history[3] and "val_miou" in history[11]
    assert 0 <= result["best_miou"] <= 1


def test_best_weights_describe_themselves(run):
    tmp, result = run
    state, preset, dataset, info = load_weights(tmp / "smoke" / "best.safetensors")
    assert preset.name == "enet_camvid" and dataset.num_classes == 11
    assert info["val_miou"] == pytest.approx(result["best_miou"])
    assert info["train_config"]["preset"] == "enet_camvid"
    lm = load_model(str(tmp / "smoke" / "best.safetensors"))
    assert not lm.model.training


def test_weight_files_follow_the_umask(tmp_path):
    # safetensors' own save_file makes 0600 files; weights are written so the umask decides.
    old = os.umask(0o022)
    try:
        path = save_weights(tmp_path / "w.safetensors", torch.nn.Linear(2, 2), load_preset("enet_camvid"),
                            load_dataset_config("camvid"))
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]


def test_resume_continues_from_last_epoch(run):
    tmp, _ = run
    before = load_state(tmp / "smoke" / "last.pt")
    assert before["epoch"] == 12
    fit(_cfg(tmp, 13), progress=False)
    after = load_state(tmp / "smoke" / "last.pt")
    assert after["epoch"] == 13 and len(after["history"]) == 13
    assert after["history"][:12] == before["history"]


def test_eval_command_writes_json(run, tmp_path, capsys):
    weights = run[0] / "smoke" / "best.safetensors"
    out = tmp_path / "e" / "out.json"
    assert main(["eval", "--model", str(weights), "--root", str(CAMVID), "--split", "val",
                 "--limit", "2", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "Bicyclist" in table and "mean" in table
    # Strict JSON: a NaN (class absent from the frames) must be written as null.
    data = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    for key in ("miou", "pixel_acc", "mean_acc", "fwiou", "dice"):
        assert 0 <= data[key] <= 1
    assert set(data["iou"]) == {"Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol",
                                "Fence", "Car", "Pedestrian", "Bicyclist"}
    assert data["size"] == [360, 480] and data["images"] == 2
    # The confusion matrix is the one the figures came from: recomputing them from it agrees.
    cm = np.array(data["confusion"], dtype=np.float64)
    assert cm.shape == (11, 11) and cm.sum() > 0 and data["class_names"][2] == "Pole"
    tp, gt, pr = np.diag(cm), cm.sum(1), cm.sum(0)
    assert data["pixel_acc"] == pytest.approx(tp.sum() / cm.sum())
    seen = gt + pr - tp > 0
    assert data["miou"] == pytest.approx(np.mean(tp[seen] / (gt + pr - tp)[seen]))
    assert data["acc_per_class"]["Road"] == pytest.approx(tp[3] / gt[3])


def test_eval_multiscale_flip_runs(run, capsys):
    weights = run[0] / "smoke" / "best.safetensors"
    assert main(["eval", "--model", str(weights), "--root", str(CAMVID), "--limit", "1",
                 "--scales", "0.75,1", "--flip"]) == 0
    assert "scales 0.75,1  flip True" in capsys.readouterr().out


def test_foreign_and_corrupt_weight_files(tmp_path):
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(CheckpointError, match="no rtseg metadata"):
        load_weights(plain)
    corrupt = tmp_path / "bad.safetensors"
    corrupt.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="not a readable"):
        load_weights(corrupt)
    with pytest.raises(CheckpointError, match="not found"):
        load_weights(tmp_path / "missing.safetensors")


def test_training_state_cannot_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, path)
    with pytest.raises(CheckpointError):
        load_state(path)


def test_eval_unknown_model_is_one_line():
    out = subprocess.run([sys.executable, "-m", "rtseg", "eval", "--model", "nosuchmodel",
                          "--root", str(CAMVID)], capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().count("\n") == 0 and "unknown model 'nosuchmodel'" in out.stderr


def test_class_weights_reach_the_loss(tmp_path):
    from rtseg.data import build_dataset
    from rtseg.train import _build_loss

    ds = build_dataset("folder", _subset(tmp_path / "data"), "train", ignore_index=11)
    cfg = _cfg(tmp_path, 1)
    cfg.class_weights = "enet"
    loss = _build_loss(cfg, 11, 11, ds)
    w = loss.base_loss.weight
    assert w.shape == (11,) and torch.isfinite(w).all()
    # ENet weighting 1/ln(1.02 + p): the most frequent class weighs least, an absent one 1/ln(1.02).
    counts = torch.zeros(11)
    for i in range(len(ds)):
        counts += torch.bincount(torch.from_numpy(ds.load_raw(i)[1]).flatten().long(), minlength=12)[:11]
    assert w.argmin() == counts.argmax()
    assert w[counts == 0].allclose(torch.tensor(1 / math.log(1.02)))


def test_bf16_autocast_trains_fp32_weights(tmp_path):
    """amp: bf16 runs the forward in bfloat16 but keeps FP32 weights; the loss still falls."""
    _subset(tmp_path / "data")
    cfg = _cfg(tmp_path, 6)
    cfg.amp, cfg.val_every, cfg.ema_decay = "bf16", 6, 0
    fit(cfg, progress=False)
    history = json.loads((tmp_path / "smoke" / "history.json").read_text())
    assert history[-1]["loss"] < 0.8 * history[0]["loss"], history
    state = load_state(tmp_path / "smoke" / "last.pt")
    assert all(v.dtype == torch.float32 for k, v in state["model"].items() if v.is_floating_point())


def test_unknown_focus_class_is_refused_with_the_class_list(tmp_path):
    from rtseg.train import TrainError

    cfg = _cfg(tmp_path, 1)
    cfg.focus_classes, cfg.focus_p = ["pedestrian", "Lamppost"], 0.5
    with pytest.raises(TrainError, match="unknown class Lamppost; the classes are Sky, Building, Pole"):
        fit(cfg, progress=False)


def test_unknown_amp_is_refused(tmp_path):
    from rtseg.train import TrainError

    cfg = _cfg(tmp_path, 1)
    cfg.amp = "fp8"
    with pytest.raises(TrainError, match="amp must be bf16"):
        fit(cfg, progress=False)


def test_grad_clip_bounds_every_step(tmp_path):
    """Nesterov SGD without weight decay moves the parameters by at most
    lr * clip * (1 + m / (1 - m)) = 10 * lr * clip per step (m = 0.9) once every gradient is
    clipped to norm `clip`; the unclipped ENet gradients here are > 100x larger, so an ignored
    grad_clip moves them far beyond the (2x slack) bound."""
    from rtseg.config import load_preset
    from rtseg.zoo import build_from_preset

    _subset(tmp_path / "data")
    cfg = _cfg(tmp_path, 2)
    cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.grad_clip = "sgd", 0.1, 0.0, 1e-3
    cfg.val_every, cfg.ema_decay = 10, 0
    fit(cfg, progress=False)
    history = json.loads((tmp_path / "smoke" / "history.json").read_text())
    assert all(h["grad_norm_max"] > 100 * cfg.grad_clip for h in history), history  # the clip did bite

    torch.manual_seed(cfg.seed)  # fit builds the model right after seeding: same initial weights
    start = build_from_preset(load_preset("enet_camvid"), 11).state_dict()
    end = load_state(tmp_path / "smoke" / "last.pt")["model"]
    names = [n for n, _ in build_from_preset(load_preset("enet_camvid"), 11).named_parameters()]
    moved = math.sqrt(sum(float((end[n] - start[n]).pow(2).sum()) for n in names))
    steps = len(history)  # 4 frames, batch 4: one step per epoch
    assert 0 < moved <= 2 * steps * 10 * cfg.lr * cfg.grad_clip, moved


def test_weights_that_turn_inf_stop_the_run(tmp_path, monkeypatch):
    """A BN statistic that overflows must stop training with a clear error, not be averaged
    into a NaN EMA and saved as 'best' weights."""
    from rtseg.train import ModelEMA, TrainError

    _subset(tmp_path / "data")
    cfg = _cfg(tmp_path, 2)
    real_update = ModelEMA.update

    def poisoned_update(self, model):
        bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
        bn.running_var[0] = float("inf")
        real_update(self, model)

    monkeypatch.setattr(ModelEMA, "update", poisoned_update)
    with pytest.raises(TrainError, match=r"running_var became inf/NaN during epoch 1"):
        fit(cfg, progress=False)
    assert not (tmp_path / "smoke" / "best.safetensors").exists()


def test_non_positive_grad_clip_is_refused(tmp_path):
    from rtseg.train import TrainError

    cfg = _cfg(tmp_path, 1)
    cfg.grad_clip = 0.0
    with pytest.raises(TrainError, match="grad_clip must be a positive number"):
        fit(cfg, progress=False)


def test_steps_with_an_overflowing_gradient_norm_are_skipped(tmp_path, monkeypatch):
    """clip_grad_norm_ scales by max_norm / inf = 0, and 0 * inf = NaN: such steps must be skipped."""
    from rtseg.config import load_preset
    from rtseg.zoo import build_from_preset

    _subset(tmp_path / "data")
    cfg = _cfg(tmp_path, 2)
    cfg.optimizer, cfg.weight_decay, cfg.grad_clip, cfg.val_every, cfg.ema_decay = "sgd", 0.0, 1.0, 10, 0
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda params, max_norm: torch.tensor(float("inf")))
    fit(cfg, progress=False)
    history = json.loads((tmp_path / "smoke" / "history.json").read_text())
    assert [h["skipped_steps"] for h in history] == [1, 1]

    torch.manual_seed(cfg.seed)
    start = build_from_preset(load_preset("enet_camvid"), 11).state_dict()
    end = load_state(tmp_path / "smoke" / "last.pt")["model"]
    params = [n for n, _ in build_from_preset(load_preset("enet_camvid"), 11).named_parameters()]
    assert all(torch.equal(start[n], end[n]) for n in params)  # no step was taken


def test_stop_after_keeps_the_long_schedule(tmp_path):
    """A staged recipe stops at `stop_after` with the lr where the `epochs`-long poly curve has it,
    and validates there; resuming with a later stop_after continues the same curve."""
    _subset(tmp_path / "data")
    cfg = _cfg(tmp_path, 4)
    cfg.optimizer, cfg.lr, cfg.poly_power, cfg.stop_after, cfg.val_every = "sgd", 0.1, 1.0, 2, 10
    fit(cfg, progress=False)
    history = json.loads((tmp_path / "smoke" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2] and "val_miou" in history[-1]
    state = load_state(tmp_path / "smoke" / "last.pt")
    # One step per epoch; the second step ran at iteration 1 of 4: lr = 0.1 * (1 - 1/4).
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.075)
    cfg.stop_after = None
    fit(cfg, progress=False)
    history = json.loads((tmp_path / "smoke" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]


def test_weight_files_record_the_options_the_run_trained_with(tmp_path):
    """A run that overrides an option that changes inference (ENet stages 1-2: max-unpooling
    under the bilinear preset) writes weights that load by path as they were validated."""
    _subset(tmp_path / "data")
    cfg = _cfg(tmp_path, 1)
    cfg.val_every, cfg.iters_per_epoch, cfg.val_limit = 1, 1, 1
    cfg.train_options = {"upsample": "unpool"}
    fit(cfg, progress=False)
    _, preset, _, _ = load_weights(tmp_path / "smoke" / "best.safetensors")
    assert preset.options["upsample"] == "unpool"
    assert load_model(str(tmp_path / "smoke" / "best.safetensors")).model.upsample == "unpool"
    assert load_model("enet_camvid").model.upsample == "bilinear"  # the shipped preset is unchanged
