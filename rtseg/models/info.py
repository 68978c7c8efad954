"""Model size and cost, measured rather than typed in.

FLOPs come from ``torch.utils.flop_counter`` on a forward pass; they count a multiply-add as two
FLOPs (the counter's convention). The pass runs on the ``meta`` device, which tracks shapes without
computing anything, so the cost at 1024x2048 of a 200-GFLOP model takes a second, not a minute.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from rtseg.models import available, build


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, size: tuple[int, int]) -> int:
    """FLOPs of one eval-mode forward pass of ``model`` on a 1 x 3 x H x W input."""
    model = model.eval()
    device = next(model.parameters()).device
    fc = FlopCounterMode(display=False)
    with fc, torch.no_grad():
        model(torch.empty(1, 3, *size, device=device))
    return fc.get_total_flops()


@dataclass
class ModelInfo:
    name: str
    params: int
    gflops_360x480: float
    gflops_1024x2048: float
    weights: list[str]


def model_info(name: str, num_classes: int = 19, weights: list[str] | None = None,
               **options) -> ModelInfo:
    """Parameters and GFLOPs at 360x480 and 1024x2048 of architecture ``name``.

    ``num_classes`` defaults to Cityscapes' 19; it changes only the classifier's cost.
    """
    try:
        with torch.device("meta"):
            model = build(name, num_classes, **options)
        flops = [count_flops(model, s) for s in ((360, 480), (1024, 2048))]
    except (NotImplementedError, RuntimeError):
        # An op without a meta kernel: fall back to a real (slower) CPU pass.
        model = build(name, num_classes, **options)
        flops = [count_flops(model, s) for s in ((360, 480), (1024, 2048))]
    return ModelInfo(name, count_params(model), round(flops[0] / 1e9, 2), round(flops[1] / 1e9, 2),
                     weights or [])


def zoo_info(shipped: dict[str, list[str]] | None = None) -> list[ModelInfo]:
    """:class:`ModelInfo` for every architecture; ``shipped`` maps an architecture to its weight names."""
    shipped = shipped or {}
    return [model_info(name, weights=shipped.get(name, [])) for name in available()]
