"""YAML -> dataclasses: every shipped config loads, and mistakes are reported with a suggestion."""
import pytest

from rtseg.config import (ConfigError, DatasetConfig, ModelPreset, from_dict, list_configs,
                          load_dataset_config, load_preset)
from rtseg.models import available


def test_every_model_preset_loads_and_names_a_known_architecture():
    names = list_configs("models")
    assert "deeplabv3plus_camvid" in names
    for name in names:
        p = load_preset(name)
        assert p.name == name
        assert p.arch in available()
        load_dataset_config(p.dataset)


def test_every_training_recipe_loads():
    # The recipes behind the shipped weights (and the experiments the README reports) must stay
    # runnable as the code moves: known keys, a known preset and classes, options the network takes.
    from pathlib import Path

    from rtseg.data.transforms import appearance_transforms
    from rtseg.train import _class_ids, load_train_config
    from rtseg.zoo import build_from_preset

    files = sorted(Path(__file__).resolve().parents[1].joinpath("configs", "train").glob("*.yaml"))
    assert len(files) >= 4
    for f in files:
        cfg = load_train_config(str(f))
        assert cfg.name == f.stem, f
        preset = load_preset(cfg.preset)
        dcfg = load_dataset_config(preset.dataset)
        _class_ids(cfg.focus_classes, dcfg.class_names)
        appearance_transforms(cfg.appearance)
        build_from_preset(preset, dcfg.num_classes, pretrained=False, **cfg.train_options)


def test_every_architecture_has_a_preset():
    archs = {load_preset(n).arch for n in list_configs("models")}
    assert archs == set(available())


def test_camvid_draws_in_cityscapes_colours():
    camvid, city = load_dataset_config("camvid"), load_dataset_config("cityscapes")
    assert camvid.num_classes == 11 and camvid.ignore_index == 11
    assert city.num_classes == 19 and city.ignore_index == 255
    for name, cid, color in zip(camvid.class_names, camvid.cityscapes_ids, camvid.colors):
        assert color == city.colors[cid], name
    named = dict(zip(camvid.class_names, (city.class_names[i] for i in camvid.cityscapes_ids)))
    assert named["Pavement"] == "sidewalk" and named["Tree"] == "vegetation"
    assert named["Bicyclist"] == "bicycle" and named["SignSymbol"] == "traffic sign"


def test_unknown_key_suggests_the_right_one():
    data = {"name": "x", "arch": "enet", "dataset": "camvid", "input_sise": [8, 8]}
    with pytest.raises(ConfigError, match="unknown key 'input_sise'.*did you mean 'input_size'"):
        from_dict(ModelPreset, data, "x.yaml")


def test_missing_key_and_bad_values():
    with pytest.raises(ConfigError, match="missing required key"):
        from_dict(ModelPreset, {"name": "x", "arch": "enet", "dataset": "camvid"})
    with pytest.raises(ConfigError, match="class_names"):
        from_dict(DatasetConfig, {"name": "d", "num_classes": 2, "ignore_index": 255,
                                  "class_names": ["a"], "colors": [[0, 0, 0], [1, 1, 1]]})


def test_unknown_preset_name_lists_valid_ones():
    with pytest.raises(ConfigError, match="Did you mean 'enet_camvid'"):
        load_preset("enet_camvd")


def test_broken_yaml_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_preset(str(bad))


def test_batch_mode_defaults_to_a_shipped_batch_model_else_the_live_default(monkeypatch):
    import rtseg.zoo as zoo

    batch = [p.name for p in zoo.presets() if p.description.startswith("batch")]
    assert "deeplabv3plus_hires_camvid" in batch
    monkeypatch.setattr(zoo, "is_shipped", lambda f: f == "deeplabv3plus_hires_camvid.safetensors")
    assert zoo.default_batch_model("deeplabv3plus_camvid") == "deeplabv3plus_hires_camvid"
    monkeypatch.setattr(zoo, "is_shipped", lambda f: f == "deeplabv3plus_camvid.safetensors")
    assert zoo.default_batch_model("deeplabv3plus_camvid") == "deeplabv3plus_camvid"
