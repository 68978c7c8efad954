"""Atrous spatial pyramid pooling, shared by DeepLabv3 and DeepLabv3+."""
from __future__ import annotations

import torch
import torch.nn as nn

from rtseg.models._blocks import ConvBNAct, SeparableConv


class ImagePooling(nn.Module):
    """Global average pool -> 1x1 conv -> BN -> ReLU, broadcast back to the input size.

    ``x.mean((2, 3))`` rather than ``AdaptiveAvgPool2d(1)``: it exports as ``ReduceMean`` for any
    input size, and broadcasting the 1x1 result is exact where a bilinear resize would interpolate.
    """

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = ConvBNAct(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.conv(x.mean((2, 3), keepdim=True))          # (N, out_ch, 1, 1)
        return pooled.expand(-1, -1, x.shape[-2], x.shape[-1])   # (N, out_ch, h, w)


class ASPP(nn.Module):
    """ASPP as improved in DeepLabv3 (Chen et al., "Rethinking Atrous Convolution for Semantic Image
    Segmentation", 2017, Sec. 3.3).

    Parallel branches on the same feature map: a 1x1 conv, one 3x3 atrous conv per rate, and
    image-level pooling; each gives ``out_ch`` channels with BN + ReLU. They are concatenated and
    projected by a 1x1 conv (BN, ReLU) to ``out_ch``, followed by dropout. The image pooling branch
    exists because at large rates a 3x3 atrous conv degenerates to its centre tap (the other taps
    fall into the padding), so global context has to be supplied explicitly.

    Args:
        in_ch: input channels.
        out_ch: channels of every branch and of the output (``out_channels``).
        rates: dilation rates of the 3x3 branches; (6, 12, 18) at output stride 16, doubled at 8.
        separable: depthwise-separable atrous convs (DeepLabv3+, Chen et al. 2018) instead of dense
            3x3 convs.
        dropout: dropout probability after the projection (0 disables it).
    """

    def __init__(self, in_ch: int, out_ch: int = 256, rates: tuple[int, ...] = (6, 12, 18),
                 separable: bool = False, dropout: float = 0.1):
        super().__init__()
        branches: list[nn.Module] = [ConvBNAct(in_ch, out_ch, 1)]
        for r in rates:
            branches.append(SeparableConv(in_ch, out_ch, dilation=r) if separable
                            else ConvBNAct(in_ch, out_ch, 3, dilation=r))
        branches.append(ImagePooling(in_ch, out_ch))
        self.branches = nn.ModuleList(branches)
        self.project = nn.Sequential(ConvBNAct(len(branches) * out_ch, out_ch, 1),
                                     nn.Dropout(dropout))
        self.out_channels = out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([b(x) for b in self.branches], dim=1))  # (N, out_ch, h, w)
