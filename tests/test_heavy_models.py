"""Heavy (batch-mode) architectures: FCN-8s, SegNet, U-Net, PSPNet, DeepLabv3, and their backbones."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from rtseg.models._aspp import ASPP
from rtseg.models._blocks import resize_to
from rtseg.models._ppm import PyramidPooling
from rtseg.models.backbones import PretrainedUnavailableError
from rtseg.models.backbones.resnet import resnet
from rtseg.models.backbones.vgg import vgg16
from rtseg.models.deeplabv3 import build_deeplabv3
from rtseg.models.fcn8s import bilinear_kernel, build_fcn8s
from rtseg.models.pspnet import build_pspnet
from rtseg.models.segnet import build_segnet
from rtseg.models.unet import build_unet

NUM_CLASSES = 5
SIZES = [(64, 96), (70, 90)]

# Builders with their default (paper) configuration, plus the cheap variants of the options.
BUILDERS = {
    "fcn8s": lambda: build_fcn8s(NUM_CLASSES),
    "segnet": lambda: build_segnet(NUM_CLASSES),
    "segnet_bilinear": lambda: build_segnet(NUM_CLASSES, upsample="bilinear"),
    "unet": lambda: build_unet(NUM_CLASSES, base=16),
    "unet_bilinear": lambda: build_unet(NUM_CLASSES, base=16, bilinear=True),
    "pspnet": lambda: build_pspnet(NUM_CLASSES),
    "deeplabv3": lambda: build_deeplabv3(NUM_CLASSES, aux=True),
}
HAS_AUX = {"pspnet", "deeplabv3"}


@pytest.fixture(scope="module", params=list(BUILDERS))
def model(request):
    torch.manual_seed(0)
    return request.param, BUILDERS[request.param]()


def _first_conv(m: nn.Module) -> nn.Conv2d:
    return next(c for c in m.modules() if isinstance(c, nn.Conv2d))


# --- models -------------------------------------------------------------------------------------


def test_eval_output_at_input_size(model):
    name, m = model
    m.eval()
    with torch.no_grad():
        for h, w in SIZES:
            y = m(torch.randn(1, 3, h, w))
            assert isinstance(y, torch.Tensor), name
            assert y.shape == (1, NUM_CLASSES, h, w), name
            assert torch.isfinite(y).all(), name


def test_train_output_and_gradient_reaches_first_conv(model):
    name, m = model
    m.train()
    m.zero_grad()
    # Batch 2: BN after the 1x1 global-pooling branches (PPM bin 1, ASPP image pool) needs >1 value.
    out = m(torch.randn(2, 3, 50, 66))
    outs = out if isinstance(out, tuple) else (out,)
    assert outs[0].shape == (2, NUM_CLASSES, 50, 66), name
    assert len(outs) == (2 if name in HAS_AUX else 1), name
    for aux in outs[1:]:
        assert aux.shape[:2] == (2, NUM_CLASSES)
    target = torch.randint(0, NUM_CLASSES, (2, 50, 66))
    loss = sum(F.cross_entropy(resize_to(o, target.shape[-2:]), target) for o in outs)
    loss.backward()
    grad = _first_conv(m).weight.grad
    assert grad is not None and grad.abs().sum() > 0, name
    m.eval()


@pytest.mark.parametrize("builder", [build_fcn8s, build_segnet, build_unet, build_pspnet,
                                     build_deeplabv3])
def test_unknown_option_raises_type_error(builder):
    with pytest.raises(TypeError):
        builder(NUM_CLASSES, no_such_option=1)


@pytest.mark.parametrize("builder", [build_pspnet, build_deeplabv3])
def test_pretrained_unavailable(builder):
    with pytest.raises(PretrainedUnavailableError):
        builder(NUM_CLASSES, pretrained=True)


def test_pspnet_generic_backbone_and_no_aux():
    m = build_pspnet(NUM_CLASSES, backbone="vgg16", output_stride=32, aux=False).train()
    out = m(torch.randn(2, 3, 70, 90))
    assert isinstance(out, torch.Tensor) and out.shape == (2, NUM_CLASSES, 70, 90)
    assert m.ppm.out_channels == 512 + 4 * 128


def test_pspnet_uses_deep_stem_and_deeplab_rates_follow_output_stride():
    assert build_pspnet(NUM_CLASSES, aux=False).backbone.channels[0] == 128
    m = build_deeplabv3(NUM_CLASSES, output_stride=16)
    dilations = [b[0].dilation[0] for b in m.aspp.branches[1:-1]]
    assert dilations == [6, 12, 18]
    m = build_deeplabv3(NUM_CLASSES, output_stride=8)
    assert [b[0].dilation[0] for b in m.aspp.branches[1:-1]] == [12, 24, 36]


def test_segnet_rejects_unknown_upsample():
    with pytest.raises(ValueError):
        build_segnet(NUM_CLASSES, upsample="nearest")


def test_fcn_upsampler_is_bilinear():
    up = nn.ConvTranspose2d(3, 3, 4, stride=2, padding=1, bias=False)
    with torch.no_grad():
        up.weight.copy_(bilinear_kernel(3, 4))
        x = torch.randn(1, 3, 6, 7)
        y, ref = up(x), F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    assert y.shape == ref.shape
    # Identical except at the one-pixel border, where the deconvolution sees zero padding.
    torch.testing.assert_close(y[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1])


# --- backbones ----------------------------------------------------------------------------------


@pytest.mark.parametrize("output_stride,strides", [(32, [2, 4, 8, 16, 32]),
                                                   (16, [2, 4, 8, 16, 16]),
                                                   (8, [2, 4, 8, 8, 8])])
def test_resnet_feature_strides(output_stride, strides):
    net = resnet(50, output_stride=output_stride).eval()
    assert net.channels == [64, 256, 512, 1024, 2048]
    with torch.no_grad():
        feats = net(torch.randn(1, 3, 32, 64))
    assert [f.shape[1] for f in feats] == net.channels
    assert [tuple(f.shape[-2:]) for f in feats] == [(32 // s, 64 // s) for s in strides]


def test_resnet_dilation_pattern_at_os8():
    net = resnet(50, output_stride=8)
    # First block of a dilated stage uses half the stage's dilation.
    assert [b.conv2[0].dilation[0] for b in net.stages[3]] == [1, 2, 2, 2, 2, 2]
    assert [b.conv2[0].dilation[0] for b in net.stages[4]] == [2, 4, 4]
    assert all(b.conv2[0].stride[0] == 1 for b in [*net.stages[3], *net.stages[4]])


def test_resnet101_depth_and_deep_stem():
    net = resnet(101, deep_stem=True)
    assert len(net.stages[3]) == 23
    assert net.channels[0] == 128
    assert [c.out_channels for c in net.stages[0].modules() if isinstance(c, nn.Conv2d)] == \
        [64, 64, 128]


def test_backbone_invalid_arguments():
    with pytest.raises(ValueError):
        resnet(34)
    with pytest.raises(ValueError):
        vgg16(output_stride=16)
    with pytest.raises(PretrainedUnavailableError):
        resnet(50, pretrained=True)
    with pytest.raises(PretrainedUnavailableError):
        vgg16(pretrained=True)


def test_vgg_indices_and_pre_pool_sizes():
    net = vgg16(return_indices=True).eval()
    x = torch.randn(1, 3, 70, 90)
    with torch.no_grad():
        outs = net(x)
        plain = vgg16(return_indices=False)
        plain.load_state_dict(net.state_dict())
        plain_feats = plain.eval()(x)
    assert [tuple(size) for _, _, size in outs] == [(70, 90), (35, 45), (17, 22), (8, 11), (4, 5)]
    assert [tuple(p.shape[-2:]) for p, _, _ in outs] == [(35, 45), (17, 22), (8, 11), (4, 5), (2, 2)]
    for (pooled, _, _), ref in zip(outs, plain_feats):
        torch.testing.assert_close(pooled, ref)
    # Unpooling with the indices to the odd pre-pool size puts each maximum back where it was, so
    # pooling the unpooled map again reproduces the pooled features.
    pooled, indices, size = outs[1]
    unpooled = F.max_unpool2d(pooled, indices, 2, 2, output_size=size)
    assert tuple(unpooled.shape[-2:]) == (35, 45)
    torch.testing.assert_close(F.max_pool2d(unpooled, 2), pooled)


# --- shared modules -----------------------------------------------------------------------------


def test_ppm_concat_and_sum_on_non_divisible_size():
    x = torch.randn(2, 8, 7, 11)  # 7 and 11 divisible by none of 2, 3, 6
    concat = PyramidPooling(8, 3, mode="concat").eval()
    with torch.no_grad():
        y = concat(x)
    assert y.shape == (2, 8 + 4 * 3, 7, 11) and concat.out_channels == 20
    torch.testing.assert_close(y[:, :8], x)
    summed = PyramidPooling(8, mode="sum")
    assert summed(x).shape == x.shape and summed.out_channels == 8
    # Bin 1 alone in sum mode adds the global mean to every position.
    torch.testing.assert_close(PyramidPooling(8, bins=(1,), mode="sum")(x),
                               x + x.mean((2, 3), keepdim=True))
    with pytest.raises(ValueError):
        PyramidPooling(8, 3, mode="sum")


def test_aspp_dense_and_separable():
    x = torch.randn(2, 16, 9, 13)
    for separable in (False, True):
        aspp = ASPP(16, out_ch=8, rates=(1, 2), separable=separable).eval()
        with torch.no_grad():
            assert aspp(x).shape == (2, 8, 9, 13)
        assert len(aspp.branches) == 4  # 1x1, two atrous, image pooling
