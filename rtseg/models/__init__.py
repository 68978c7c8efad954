"""Model zoo: a plain dict from architecture name to builder.

Every builder has the signature ``build_x(num_classes, **options) -> nn.Module``. In eval mode a
model maps an (N, 3, H, W) normalized float batch to (N, num_classes, H, W) logits for any H, W;
in train mode it may return ``(main, *aux)`` where auxiliary logits can be at a lower resolution
(the training loss resizes them).
"""
from __future__ import annotations

import difflib
import importlib

import torch.nn as nn

from rtseg.errors import RtsegError

# name -> module holding `build_<name>`. Modules are imported on first use so that `rtseg --help`
# stays fast and one architecture's import error cannot take the others down.
# Real-time models first: they are what `rtseg run` is for.
REGISTRY: dict[str, str] = {
    "enet": "rtseg.models.enet",
    "icnet": "rtseg.models.icnet",
    "deeplabv3plus": "rtseg.models.deeplabv3plus",
    "fcn8s": "rtseg.models.fcn8s",
    "segnet": "rtseg.models.segnet",
    "unet": "rtseg.models.unet",
    "pspnet": "rtseg.models.pspnet",
    "deeplabv3": "rtseg.models.deeplabv3",
}

REALTIME = ("enet", "icnet", "deeplabv3plus")


class UnknownModelError(RtsegError, ValueError):
    """Raised for a model name that is not in the registry; the message lists the valid names."""


def available() -> list[str]:
    """Names of every architecture in the zoo, real-time models first."""
    return list(REGISTRY)


def check_name(name: str, valid: list[str], what: str = "model") -> None:
    """Raises :class:`UnknownModelError` with a suggestion and the valid names if ``name`` is unknown."""
    if name in valid:
        return
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise UnknownModelError(f"unknown {what} '{name}'.{hint} Valid: {', '.join(valid)}")


def build(name: str, num_classes: int, **options) -> nn.Module:
    """Builds architecture ``name`` with ``num_classes`` outputs.

    Args:
        name: one of :func:`available`.
        num_classes: number of output channels (classes).
        **options: architecture options, e.g. ``backbone="efficientnet_lite0", pretrained=True``.

    Raises:
        UnknownModelError: ``name`` is not an architecture of the zoo.
        TypeError: an option that this architecture does not take.
    """
    check_name(name, available(), "model")
    builder = getattr(importlib.import_module(REGISTRY[name]), f"build_{name}")
    return builder(num_classes, **options)
