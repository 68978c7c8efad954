"""Exponential moving average (EMA) of a model's weights for evaluation and export.

Averaging the weights over the last few thousand steps (Polyak & Juditsky 1992; the "shadow
variables" of TensorFlow's ExponentialMovingAverage) smooths out the noise of the final SGD steps
and usually gives a slightly better and more stable mIoU than the raw weights.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn


def _unwrap(model: nn.Module) -> nn.Module:
    # DataParallel / DistributedDataParallel keep the real model in `.module`; averaging the
    # wrapper would prefix every key with "module." and break loading into a bare model.
    if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        return model.module
    return model


class ModelEMA:
    """Keeps ``ema = d * ema + (1 - d) * model`` for every parameter and buffer.

    Floating-point buffers (BatchNorm ``running_mean`` / ``running_var``) are averaged with the
    same decay as the parameters, so the normalisation statistics stay matched to the averaged
    weights rather than to the last step's weights; integer buffers (``num_batches_tracked``)
    are copied, since an average of counters means nothing.

    The decay ramps up as ``d_t = decay * (1 - exp(-t / warmup))`` over the first updates: early
    weights are close to the random initialisation, and a full 0.999 decay would keep them in
    the average for thousands of steps. ``warmup=0`` uses ``decay`` from the first update.

    Args:
        model: the model being trained; it is deep-copied, not modified.
        decay: the decay once warmed up, in [0, 1).
        warmup: number of updates over which the decay ramps up (time constant of the ramp).

    Attributes:
        module: the averaged copy, in eval mode, with ``requires_grad=False``.
        updates: number of :meth:`update` calls so far.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: int = 2000):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        if warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {warmup}")
        self.module = copy.deepcopy(_unwrap(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = float(decay)
        self.warmup = int(warmup)
        self.updates = 0

    def current_decay(self) -> float:
        """Decay used by the latest :meth:`update` (the ramp evaluated at ``updates``)."""
        if self.warmup == 0:
            return self.decay
        return self.decay * (1.0 - math.exp(-self.updates / self.warmup))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Folds the current weights of ``model`` (same architecture) into the average."""
        self.updates += 1
        d = self.current_decay()
        src = _unwrap(model).state_dict()
        for name, ema_v in self.module.state_dict().items():
            v = src[name].detach().to(ema_v.device)
            if ema_v.dtype.is_floating_point:
                ema_v.lerp_(v.to(ema_v.dtype), 1.0 - d)
            else:
                ema_v.copy_(v)

    def state_dict(self) -> dict:
        """The averaged weights and the update count, everything needed to resume training."""
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        """Restores :meth:`state_dict` output; ``decay`` and ``warmup`` stay as constructed."""
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
