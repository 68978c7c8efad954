"""ResNet-50/101 (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016) as a
five-stage backbone, with the dilated variant used by PSPNet and DeepLab.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from rtseg.models._blocks import ConvBNAct, init_weights
from rtseg.models.backbones import PretrainedUnavailableError, StagedBackbone

# Bottleneck blocks per residual stage (conv2_x .. conv5_x in the paper's Table 1).
_DEPTHS: dict[int, tuple[int, int, int, int]] = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (strided or dilated) -> 1x1 expand (x4), plus a projection shortcut.

    The stride sits on the 3x3 conv ("ResNet v1.5", as in most PyTorch ports) rather than on the
    first 1x1 as in the paper: a strided 1x1 ignores three of every four input pixels.

    Args:
        in_ch: input channels.
        mid_ch: bottleneck width; the block outputs ``4 * mid_ch`` channels.
        stride: stride of the 3x3 conv and of the shortcut projection.
        dilation: dilation of the 3x3 conv.
    """

    expansion = 4

    def __init__(self, in_ch: int, mid_ch: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        out_ch = mid_ch * self.expansion
        self.conv1 = ConvBNAct(in_ch, mid_ch, 1)
        self.conv2 = ConvBNAct(mid_ch, mid_ch, 3, stride=stride, dilation=dilation)
        self.conv3 = ConvBNAct(mid_ch, out_ch, 1, act=None)
        self.shortcut = (
            ConvBNAct(in_ch, out_ch, 1, stride=stride, act=None)
            if stride != 1 or in_ch != out_ch else nn.Identity()
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv3(self.conv2(self.conv1(x))) + self.shortcut(x))


def _make_layer(in_ch: int, mid_ch: int, blocks: int, stride: int, dilation: int) -> nn.Sequential:
    """One residual stage; a dilated stage (``dilation > 1``) keeps stride 1 everywhere.

    The first block of a dilated stage uses ``dilation // 2`` (as in the DeepLab and PSPNet
    implementations): in the undilated network that block's 3x3 conv still runs on the previous
    stage's grid, where neighbouring taps are ``dilation // 2`` pixels apart in the dilated map;
    only after its (removed) stride does the sampling grid get twice as sparse. Matching that keeps
    the receptive field of every later layer identical to the strided network, so the dilated model
    computes the same function on a denser grid instead of a differently wired one.
    """
    first_dilation = max(1, dilation // 2)
    layers = [Bottleneck(in_ch, mid_ch, stride=1 if dilation > 1 else stride,
                         dilation=first_dilation if dilation > 1 else 1)]
    out_ch = mid_ch * Bottleneck.expansion
    layers += [Bottleneck(out_ch, mid_ch, dilation=dilation) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class ResNet(StagedBackbone):
    """ResNet-50/101 split into five stages (strides 2, 4, 8, 16, 32 at ``output_stride=32``).

    Stages: 0 = stem conv(s), 1 = 3x3/2 max-pool + conv2_x, 2 = conv3_x, 3 = conv4_x, 4 = conv5_x.
    ``output_stride=16`` dilates conv5_x by 2; ``output_stride=8`` dilates conv4_x by 2 and conv5_x
    by 4 (the "dilated ResNet" of DeepLab, Chen et al. 2017, and PSPNet, Zhao et al. 2017).

    Args:
        depth: 50 or 101.
        output_stride: 8, 16 or 32.
        deep_stem: replace the 7x7/2 stem by three 3x3 convs (64, 64, 128 channels), the stem of
            the ResNet used in PSPNet; it sees the same 7x7-ish field with more non-linearity.
    """

    def __init__(self, depth: int, output_stride: int = 32, deep_stem: bool = False):
        super().__init__()
        blocks = _DEPTHS[depth]
        # Dilation of conv4_x and conv5_x for each output stride.
        dil3, dil4 = {32: (1, 1), 16: (1, 2), 8: (2, 4)}[output_stride]
        if deep_stem:
            stem = nn.Sequential(ConvBNAct(3, 64, 3, stride=2), ConvBNAct(64, 64, 3),
                                 ConvBNAct(64, 128, 3))
            stem_ch = 128
        else:
            stem = ConvBNAct(3, 64, 7, stride=2)
            stem_ch = 64
        self.stages = nn.ModuleList([
            stem,                                                         # (N, 64|128, H/2, W/2)
            nn.Sequential(nn.MaxPool2d(3, stride=2, padding=1),
                          _make_layer(stem_ch, 64, blocks[0], 1, 1)),     # (N, 256, H/4, W/4)
            _make_layer(256, 128, blocks[1], 2, 1),                       # (N, 512, H/8, W/8)
            _make_layer(512, 256, blocks[2], 2, dil3),                    # (N, 1024, H/16|8, ..)
            _make_layer(1024, 512, blocks[3], 2, dil4),                   # (N, 2048, H/OS, W/OS)
        ])
        self.channels = [stem_ch, 256, 512, 1024, 2048]
        init_weights(self)


def resnet(depth: int, output_stride: int = 32, pretrained: bool = False,
           deep_stem: bool = False) -> StagedBackbone:
    """Builds a (possibly dilated) ResNet-50/101 backbone.

    Args:
        depth: 50 or 101.
        output_stride: 8, 16 or 32.
        pretrained: must be False: no ImageNet weights for this implementation ship offline.
        deep_stem: three 3x3 stem convs instead of one 7x7 (PSPNet's ResNet).

    Raises:
        ValueError: unsupported depth or output stride.
        PretrainedUnavailableError: ``pretrained=True``.
    """
    if depth not in _DEPTHS:
        raise ValueError(f"ResNet depth must be one of {sorted(_DEPTHS)}, got {depth}")
    if output_stride not in (8, 16, 32):
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    if pretrained:
        raise PretrainedUnavailableError(
            f"no pretrained weights are available offline for resnet{depth}; use pretrained=False")
    return ResNet(depth, output_stride, deep_stem)
