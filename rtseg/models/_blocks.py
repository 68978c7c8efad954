"""Layers shared by several architectures.

Everything here is plain torch and exports to ONNX with static shapes. Upsampling always goes
through :func:`resize_to` so that every model uses the same interpolation (bilinear,
``align_corners=False``), which maps to ONNX ``Resize`` with ``half_pixel`` coordinates.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class ConvBNAct(nn.Sequential):
    """Conv2d -> BatchNorm2d -> activation, with "same" padding for odd kernels.

    Args:
        in_ch: input channels.
        out_ch: output channels.
        kernel: kernel size.
        stride: stride.
        dilation: dilation; padding grows with it so the spatial size only changes by the stride.
        groups: convolution groups (``in_ch`` for depthwise).
        act: activation module class, or ``None`` for a linear output.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1,
                 dilation: int = 1, groups: int = 1, act: type[nn.Module] | None = nn.ReLU):
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, kernel, stride, padding=dilation * (kernel // 2),
                      dilation=dilation, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        if act is not None:
            layers.append(act(inplace=True) if act in (nn.ReLU, nn.ReLU6) else act())
        super().__init__(*layers)


class SeparableConv(nn.Sequential):
    """Depthwise 3x3 (optionally dilated) -> pointwise 1x1, each followed by BN + ReLU.

    The atrous separable convolution of DeepLabv3+ (Chen et al. 2018, Sec. 3.1): the same receptive
    field as a dense 3x3 conv at roughly 1/9 of the multiply-adds when ``out_ch`` is large.
    """

    def __init__(self, in_ch: int, out_ch: int, dilation: int = 1):
        super().__init__(
            ConvBNAct(in_ch, in_ch, 3, dilation=dilation, groups=in_ch),
            ConvBNAct(in_ch, out_ch, 1),
        )


def conv_head(in_ch: int, mid_ch: int, num_classes: int, dropout: float = 0.1) -> nn.Sequential:
    """3x3 ConvBNReLU -> dropout -> 1x1 classifier: PSPNet's head and the auxiliary heads."""
    return nn.Sequential(ConvBNAct(in_ch, mid_ch, 3), nn.Dropout2d(dropout), nn.Conv2d(mid_ch, num_classes, 1))


def resize_to(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinearly resizes ``x`` (N, C, h, w) to ``size`` (H, W); a no-op when already that size."""
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Zero-pads the bottom/right of ``x`` so H and W are multiples of ``multiple``.

    Returns the padded tensor and the original (H, W) so the caller can crop its output back.
    Zero in a normalized input is the dataset mean colour, so the padding looks like flat grey
    to the network; cropping removes its logits before anyone sees them.
    """
    h, w = int(x.shape[-2]), int(x.shape[-1])
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph))
    return x, (h, w)


def init_weights(module: nn.Module) -> None:
    """Kaiming-normal init for convs, unit BN, small normal for linear layers (from-scratch training)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
