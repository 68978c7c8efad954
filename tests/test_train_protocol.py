"""scripts/train_protocol.py names each shipped model's training stages by config file: every
stage must be a config `rtseg train` accepts, and the chain must end in the model it names."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from rtseg import zoo
from rtseg.train import load_train_config

REPO = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("train_protocol", REPO / "scripts" / "train_protocol.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _recipes() -> dict:
    return _script().RECIPES


@pytest.mark.parametrize("model", sorted(_recipes()))
def test_each_recipe_stage_is_a_config_ending_in_its_model(model):
    stages = [load_train_config(str(REPO / "configs" / "train" / f"{s}.yaml")) for s in _recipes()[model]]
    assert [c.name for c in stages] == _recipes()[model]  # run folders are named after the stage
    assert stages[-1].preset == model
    presets = {p.name for p in zoo.presets()}
    assert all(c.preset in presets for c in stages)


def test_every_shipped_model_has_a_recipe():
    assert set(zoo.shipped_names()) <= set(_recipes())


def test_a_held_out_chain_starts_each_stage_from_the_last_and_passes_its_flags(tmp_path, monkeypatch):
    script, calls = _script(), []

    def fake_rtseg(*args):  # records the command; an eval writes the report the script reads back
        calls.append(list(args))
        if args[0] == "eval":
            Path(args[args.index("--json") + 1]).write_text(json.dumps({"miou": 0.5}))

    monkeypatch.setattr(script, "rtseg", fake_rtseg)
    monkeypatch.setattr(sys, "argv", ["train_protocol.py", "icnet_camvid", "--holdout", "0006R0", "--out",
                                      str(tmp_path), "--amp", "bf16", "--grad-clip", "10", "--threads", "2"])
    script.main()
    trains = [c for c in calls if c[0] == "train"]
    assert [c[c.index("--config") + 1] for c in trains] == [f"configs/train/{s}.yaml" for s in script.RECIPES["icnet_camvid"]]
    for c in trains:
        assert c[c.index("--holdout") + 1] == "0006R0" and c[c.index("--amp") + 1] == "bf16"
        assert c[c.index("--grad-clip") + 1] == "10" and c[c.index("--threads") + 1] == "2"
    assert "--init-from" not in trains[0]  # a held-out chain never starts from weights that saw the drive
    assert trains[1][trains[1].index("--init-from") + 1] == str(tmp_path / "icnet_camvid_holdout-0006R0" / "best.safetensors")
    evals = [c for c in calls if c[0] == "eval"]
    assert [c[c.index("--split") + 1] for c in evals] == ["train", "val"]
    assert evals[0][evals[0].index("--sequences") + 1] == "0006R0"
    summary = json.loads((tmp_path / "icnet_camvid_holdout-0006R0.json").read_text())
    assert summary["heldout_miou"] == summary["val_miou"] == 0.5
    assert summary["weights"] == str(tmp_path / "icnet_camvid_stage2_holdout-0006R0" / "best.safetensors")
