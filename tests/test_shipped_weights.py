"""Every weight file that ships loads offline by its name and segments real CamVid val frames.

A wrong tensor, a preset whose options no longer fit its weights, or normalisation that drifted
from what the weights were trained with all show up here as a load error or a collapsed score.
"""
import pytest

from rtseg.backends import open_backend
from rtseg.data import build_dataset
from rtseg.evaluate import evaluate
from rtseg.zoo import default_batch_model, load_model, shipped_names

from conftest import CAMVID

# Pixel accuracy on the first 4 val frames of the repository's CamVid fixture (tests/data/camvid),
# 7-15 points under what the shipped weights measure there (ENet 0.936, ICNet 0.931, DeepLabv3+
# 0.952, its hi-res batch variant 0.949); a model that labels every pixel with one class collapses
# far below.
FLOOR = {"enet_camvid": 0.85, "icnet_camvid": 0.78, "deeplabv3plus_camvid": 0.88,
         "deeplabv3plus_hires_camvid": 0.88}


def test_the_four_trained_models_ship():
    assert set(FLOOR) <= set(shipped_names())
    assert default_batch_model("deeplabv3plus_camvid") == "deeplabv3plus_hires_camvid"


@pytest.mark.parametrize("name", sorted(FLOOR))
def test_shipped_weights_load_and_segment_real_frames(name):
    lm = load_model(name)
    assert lm.preset.name == name and lm.dataset.name == "camvid"
    ds = build_dataset("camvid", str(CAMVID), "val", ignore_index=lm.dataset.ignore_index)
    result = evaluate(open_backend(name), ds, None, [1.0], False, 4)
    assert result["pixel_acc"] > FLOOR[name], result["pixel_acc"]
