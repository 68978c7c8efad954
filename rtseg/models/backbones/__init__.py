"""Classification backbones cut into five stages for dense prediction.

Contract shared by every backbone here:

* ``backbone.stages`` is an ``nn.ModuleList`` of five stages whose outputs have nominal strides
  2, 4, 8, 16, 32 relative to the input;
* ``backbone.channels`` lists the five output channel counts;
* with ``output_stride`` 16 (or 8) the last one (or two) stages replace their stride by dilation,
  so feature maps stop shrinking while the receptive field keeps growing (DeepLab's atrous trick);
* ``backbone(x)`` returns the list of the five stage outputs.
"""
from __future__ import annotations

import importlib

import torch
import torch.nn as nn

from rtseg.errors import RtsegError


class StagedBackbone(nn.Module):
    """Runs ``stages`` in order and returns every stage's output."""

    stages: nn.ModuleList
    channels: list[int]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


def atrous_schedule(strides: list[int], output_stride: int, start_stride: int = 2) -> list[tuple[int, int]]:
    """(stride, dilation) for each block, given its nominal stride, so features stop shrinking at
    ``output_stride``.

    A block that would downsample past ``output_stride`` keeps stride 1 and the current dilation;
    the blocks after it use twice the dilation (DeepLab's atrous trick). ``start_stride`` is the
    stride already applied before the first block (the stem's).
    """
    out, reached, dilation = [], start_stride, 1
    for s in strides:
        if s == 2 and reached >= output_stride:
            out.append((1, dilation))  # keep the resolution; later blocks see a wider field instead
            dilation *= 2
        else:
            reached *= s
            out.append((s, dilation))
    return out


# name -> (module, factory, fixed keyword arguments); imported lazily like the model registry.
_BACKBONES: dict[str, tuple[str, str, dict]] = {
    "mobilenetv2": ("rtseg.models.backbones.mobilenetv2", "mobilenetv2", {}),
    "efficientnet_lite0": ("rtseg.models.backbones.efficientnet_lite", "efficientnet_lite", {"variant": 0}),
    "efficientnet_lite1": ("rtseg.models.backbones.efficientnet_lite", "efficientnet_lite", {"variant": 1}),
    "efficientnet_lite2": ("rtseg.models.backbones.efficientnet_lite", "efficientnet_lite", {"variant": 2}),
    "resnet50": ("rtseg.models.backbones.resnet", "resnet", {"depth": 50}),
    "resnet101": ("rtseg.models.backbones.resnet", "resnet", {"depth": 101}),
    "vgg16": ("rtseg.models.backbones.vgg", "vgg16", {}),
}


def backbone_names() -> list[str]:
    return list(_BACKBONES)


def build_backbone(name: str, output_stride: int = 32, pretrained: bool = False,
                   **options) -> StagedBackbone:
    """Builds backbone ``name`` with the given output stride (8, 16 or 32).

    Raises:
        UnknownModelError: unknown backbone name (the message lists valid names).
        PretrainedUnavailableError: ``pretrained=True`` but its weights package is not installed.
    """
    from rtseg.models import check_name

    check_name(name, backbone_names(), "backbone")
    if output_stride not in (8, 16, 32):
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    module, factory, fixed = _BACKBONES[name]
    fn = getattr(importlib.import_module(module), factory)
    return fn(output_stride=output_stride, pretrained=pretrained, **fixed, **options)


class PretrainedUnavailableError(RtsegError, RuntimeError):
    """``pretrained=True`` for a backbone whose weights are not installed (offline, no download)."""
