"""The held-out-drive protocol: drives selected and excluded by file stem, a held-out drive that
never reaches a gradient step, checkpoints picked on it, and the camera-appearance augmentations.

Everything here builds its own tiny frames, so it needs no dataset beside the repository.
"""
import json

import cv2
import numpy as np
import pytest
import yaml

from rtseg.cli import main
from rtseg.data import DatasetError, SegDataset, build_dataset, sequence_of
from rtseg.data.transforms import (
    RandomBlur,
    RandomGamma,
    RandomJpeg,
    RandomNoise,
    appearance_transforms,
    train_transform,
)
from rtseg.train import TrainConfig, fit

DRIVES = {"train": {"0001TP": 3, "0006R0": 2, "0016E5": 3}, "val": {"0016E5": 2}}


def _frames(root, drives=DRIVES, size=(48, 64)):
    """A ``folder`` dataset: per split, ``<drive>_<n>.png`` RGB frames and 0..10 label maps.
    The image is a blurred copy of its label so a network can learn something in a few steps."""
    rng = np.random.default_rng(0)
    for split, counts in drives.items():
        for sub in ("images", "masks"):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
        for drive, n in counts.items():
            for k in range(n):
                mask = np.zeros(size, np.uint8)
                mask[size[0] // 2:] = 3  # road below, sky above
                mask[:, rng.integers(0, size[1] - 8):][:, :8] = 2
                image = np.stack([mask * 20, mask * 7, 255 - mask * 20], -1).astype(np.uint8)
                stem = f"{drive}_{k * 30:06d}"
                cv2.imwrite(str(root / split / "images" / f"{stem}.png"), image)
                cv2.imwrite(str(root / split / "masks" / f"{stem}.png"), mask)
    return root


def test_a_frames_drive_is_its_stem_prefix():
    assert sequence_of("camvid/train/0006R0_f01890.png") == "0006R0"
    assert sequence_of("Seq05VD_f00000.png") == "Seq05VD"
    assert sequence_of("frame42.png") == "frame42"


def test_drives_are_selected_excluded_and_joined(tmp_path):
    root = _frames(tmp_path)
    full = build_dataset("folder", root, "train")
    assert full.sequences() == {"0001TP": 3, "0006R0": 2, "0016E5": 3}
    only = build_dataset("folder", root, "train", sequences=["0006R0"])
    assert only.sequences() == {"0006R0": 2}
    assert all(sequence_of(i) == "0006R0" for i, _ in only.files)
    without = build_dataset("folder", root, "train", exclude_sequences=["0006R0"])
    assert without.sequences() == {"0001TP": 3, "0016E5": 3}
    both = build_dataset("folder", root, "train+val", exclude_sequences=["0006R0"])
    assert both.sequences() == {"0001TP": 3, "0016E5": 5}
    assert len(both) == 8 and len({i for i, _ in both.files}) == 8


def test_an_unknown_or_emptying_drive_selection_is_an_error(tmp_path):
    root = _frames(tmp_path)
    with pytest.raises(DatasetError, match="no drive 0006RO; its drives are 0001TP, 0006R0, 0016E5"):
        build_dataset("folder", root, "train", exclude_sequences=["0006RO"])
    with pytest.raises(DatasetError, match="no frames"):
        build_dataset("folder", root, "val", exclude_sequences=["0016E5"])
    with pytest.raises(DatasetError, match="invalid split"):
        build_dataset("folder", root, "train+")


def _cfg(tmp_path, **kw):
    base = dict(name="ho", preset="enet_camvid", root=str(tmp_path / "data"), data="folder",
                crop_size=[48, 64], scale_range=[1.0, 1.0], jitter=[0, 0, 0, 0], epochs=2, batch_size=2,
                optimizer="adamw", lr=1e-2, weight_decay=0, warmup_epochs=0, poly_power=0.0, loss="ce",
                ema_decay=0, val_every=1, workers=0, threads=1, out=str(tmp_path / "runs"))
    return TrainConfig(**{**base, **kw})


def test_a_held_out_drive_never_reaches_training(tmp_path, monkeypatch):
    _frames(tmp_path / "data")
    trained_on = []
    getitem = SegDataset.__getitem__

    def spy(self, index):  # every training sample goes through __getitem__; scoring uses load_raw
        trained_on.append(sequence_of(self.files[index][0]))
        return getitem(self, index)

    monkeypatch.setattr(SegDataset, "__getitem__", spy)
    fit(_cfg(tmp_path, holdout="0006R0"), progress=False)
    assert trained_on and "0006R0" not in trained_on
    assert set(trained_on) == {"0001TP", "0016E5"}
    history = json.loads((tmp_path / "runs" / "ho" / "history.json").read_text())
    # Each scoring epoch reports the held-out drive and val beside it.
    assert all({"holdout_miou", "val_miou"} <= set(h) for h in history)
    from rtseg.checkpoint import load_weights

    info = load_weights(tmp_path / "runs" / "ho" / "best.safetensors")[3]
    assert info["picked_on"] == "holdout"
    best = max(history, key=lambda h: h["holdout_miou"])
    assert info["epoch"] == best["epoch"] and info["holdout_miou"] == best["holdout_miou"]


def test_weights_trained_on_val_are_not_picked_on_val(tmp_path):
    _frames(tmp_path / "data")
    fit(_cfg(tmp_path, train_split="train+val", epochs=2), progress=False)
    from rtseg.checkpoint import load_weights

    info = load_weights(tmp_path / "runs" / "ho" / "best.safetensors")[3]
    assert info["picked_on"] == "last" and info["epoch"] == 2


def test_train_holdout_flag_runs_in_its_own_folder(tmp_path, capsys):
    _frames(tmp_path / "data")
    cfg = {k: v for k, v in vars(_cfg(tmp_path, epochs=1)).items()}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", "--config", str(path), "--holdout", "0001TP"]) == 0
    run = tmp_path / "runs" / "ho_holdout-0001TP"
    assert (run / "best.safetensors").is_file() and not (tmp_path / "runs" / "ho").exists()
    assert json.loads((run / "config.json").read_text())["holdout"] == "0001TP"


def test_train_split_and_init_from_flags_make_a_second_stage_of_a_final_run(tmp_path, capsys):
    _frames(tmp_path / "data")
    cfg = {k: v for k, v in vars(_cfg(tmp_path, epochs=1)).items()}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", "--config", str(path), "--train-split", "train+val", "--threads", "1"]) == 0
    first = tmp_path / "runs" / "ho_train-val"
    saved = json.loads((first / "config.json").read_text())
    assert saved["train_split"] == "train+val" and saved["threads"] == 1
    assert not (tmp_path / "runs" / "ho").exists()
    cfg["name"] = "ho2"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", "--config", str(path), "--train-split", "train+val",
                 "--init-from", str(first / "best.safetensors")]) == 0
    assert "tensors copied" in capsys.readouterr().out
    second = json.loads((tmp_path / "runs" / "ho2_train-val" / "config.json").read_text())
    assert second["init_from"] == str(first / "best.safetensors")


def test_amp_and_grad_clip_flags_override_the_config(tmp_path, capsys):
    _frames(tmp_path / "data")
    cfg = {k: v for k, v in vars(_cfg(tmp_path, epochs=1)).items()}
    cfg.update(amp="bf16", grad_clip=None)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", "--config", str(path), "--amp", "fp32", "--grad-clip", "5"]) == 0
    saved = json.loads((tmp_path / "runs" / "ho" / "config.json").read_text())
    assert saved["amp"] is None and saved["grad_clip"] == 5.0
    history = json.loads((tmp_path / "runs" / "ho" / "history.json").read_text())
    assert history[0]["skipped_steps"] == 0  # the clip ran (only clipped runs count skips)
    with pytest.raises(SystemExit):
        main(["train", "--config", str(path), "--amp", "fp16"])


def test_eval_scores_only_the_drives_asked_for(tmp_path, capsys):
    _frames(tmp_path / "data")
    fit(_cfg(tmp_path, epochs=1), progress=False)
    out = tmp_path / "e.json"
    assert main(["eval", "--model", str(tmp_path / "runs" / "ho" / "best.safetensors"), "--data", "folder",
                 "--root", str(tmp_path / "data"), "--split", "train", "--sequences", "0006R0",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["images"] == 2 and result["sequences"] == {"0006R0": 2}
    assert "[0006R0]" in capsys.readouterr().out


# --- camera appearance ------------------------------------------------------------------------

def _scene():
    rng = np.random.default_rng(3)
    image = cv2.resize(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), (64, 48), interpolation=cv2.INTER_LINEAR)
    mask = rng.integers(0, 11, (48, 64), dtype=np.uint8)
    return image, mask


@pytest.mark.parametrize("t", [RandomGamma(p=1.0), RandomBlur(p=1.0), RandomNoise(p=1.0), RandomJpeg(p=1.0)],
                         ids=repr)
def test_appearance_changes_the_image_not_the_mask(t):
    image, mask = _scene()
    out, out_mask = t(image.copy(), mask.copy(), np.random.default_rng(0))
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert np.abs(out.astype(int) - image).mean() > 0.2
    assert np.array_equal(out_mask, mask)
    again, _ = t(image.copy(), mask.copy(), np.random.default_rng(0))
    assert np.array_equal(out, again)  # seeded: reproducible


def test_probability_zero_leaves_the_image_alone():
    image, mask = _scene()
    for t in (RandomGamma(p=0.0), RandomBlur(p=0.0), RandomNoise(p=0.0), RandomJpeg(p=0.0)):
        assert t(image, mask, np.random.default_rng(0))[0] is image


def test_jpeg_round_trip_keeps_the_channel_order():
    red = np.zeros((32, 32, 3), np.uint8)
    red[..., 0] = 220
    out, _ = RandomJpeg(90, 90, p=1.0)(red, None, np.random.default_rng(0))
    assert out[..., 0].mean() > 200 and out[..., 2].mean() < 20


def test_gamma_above_one_darkens_mid_tones():
    grey = np.full((4, 4, 3), 128, np.uint8)
    out, _ = RandomGamma(1.5, 1.5, p=1.0)(grey, None, np.random.default_rng(0))
    assert out[0, 0, 0] == round(255 * (128 / 255) ** 1.5)


def test_appearance_spec_is_validated_and_reaches_the_training_transform():
    with pytest.raises(ValueError, match="did you mean 'gamma'"):
        appearance_transforms({"gama": {}})
    with pytest.raises(ValueError, match="appearance.jpeg: unknown argument quality"):
        appearance_transforms({"jpeg": {"quality": 50}})
    t = train_transform((48, 64), ignore_index=11, appearance={"jpeg": {"p": 1.0}, "gamma": {}})
    names = [type(s).__name__ for s in t.transforms]
    assert names.index("RandomGamma") < names.index("RandomJpeg") < names.index("Normalize")
