"""scripts/train_protocol.py names each shipped model's training stages by config file: every
stage must be a config `rtseg train` accepts, and the chain must end in the model it names."""
import importlib.util
from pathlib import Path

import pytest

from rtseg import zoo
from rtseg.train import load_train_config

REPO = Path(__file__).resolve().parents[1]


def _recipes() -> dict:
    spec = importlib.util.spec_from_file_location("train_protocol", REPO / "scripts" / "train_protocol.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.RECIPES


@pytest.mark.parametrize("model", sorted(_recipes()))
def test_each_recipe_stage_is_a_config_ending_in_its_model(model):
    stages = [load_train_config(str(REPO / "configs" / "train" / f"{s}.yaml")) for s in _recipes()[model]]
    assert [c.name for c in stages] == _recipes()[model]  # run folders are named after the stage
    assert stages[-1].preset == model
    presets = {p.name for p in zoo.presets()}
    assert all(c.preset in presets for c in stages)


def test_every_shipped_model_has_a_recipe():
    assert set(zoo.shipped_names()) <= set(_recipes())
