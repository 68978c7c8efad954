"""Pyramid pooling module, shared by PSPNet and ICNet."""
from __future__ import annotations

import torch
import torch.nn as nn

from rtseg.models._blocks import ConvBNAct, resize_to

_MODES = ("concat", "sum")


class PyramidPooling(nn.Module):
    """Pyramid pooling module (Zhao et al., "Pyramid Scene Parsing Network", CVPR 2017, Sec. 3.3).

    The feature map is average-pooled to ``b x b`` for each bin count ``b``, upsampled back and
    merged with the input, so every position sees global and sub-region context.
    ``AdaptiveAvgPool2d`` splits a side that is not divisible by ``b`` into overlapping
    floor/ceil windows, so every input pixel is covered for any size (e.g. 7 rows into 6 bins).

    Two merge modes:

    * ``"concat"`` (PSPNet): each pooled map goes through 1x1 conv -> BN -> ReLU to ``out_ch``
      channels, and the output is ``cat([x, *branches])`` with ``in_ch + len(bins) * out_ch``
      channels.
    * ``"sum"`` (ICNet, Zhao et al. 2018, released model): the pooled maps are upsampled and added
      to the input without any conv, so the module is parameter-free and keeps ``in_ch`` channels;
      ICNet reduces the channels with a 1x1 conv after it.

    ``out_channels`` holds the output channel count for either mode.

    Args:
        in_ch: input channels.
        out_ch: channels per branch in concat mode; default ``in_ch // len(bins)`` (the paper's
            reduction to 1/N). Must be left ``None`` in sum mode, which has no convs.
        bins: pooled output sizes.
        mode: ``"concat"`` or ``"sum"``.
    """

    def __init__(self, in_ch: int, out_ch: int | None = None,
                 bins: tuple[int, ...] = (1, 2, 3, 6), mode: str = "concat"):
        super().__init__()
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got '{mode}'")
        if mode == "sum" and out_ch is not None:
            raise ValueError("out_ch is only used in concat mode; sum mode keeps in_ch channels")
        self.mode = mode
        branches = []
        if mode == "concat":
            out_ch = out_ch or in_ch // len(bins)
            for b in bins:
                branches.append(nn.Sequential(nn.AdaptiveAvgPool2d(b), ConvBNAct(in_ch, out_ch, 1)))
            self.out_channels = in_ch + len(bins) * out_ch
        else:
            branches = [nn.AdaptiveAvgPool2d(b) for b in bins]
            self.out_channels = in_ch
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [resize_to(branch(x), size) for branch in self.branches]  # each (N, c, h, w)
        if self.mode == "concat":
            return torch.cat([x, *pooled], dim=1)      # (N, in_ch + len(bins) * out_ch, h, w)
        out = x
        for p in pooled:
            out = out + p
        return out                                     # (N, in_ch, h, w)
