"""Per-class logit offsets tuned for mIoU on labelled frames and folded into the classifier's bias.

A network trained with pixel-averaged cross-entropy ranks classes by how well they pay off per
pixel; when its features separate a rare class only weakly (ENet on CamVid: a class-balanced
linear probe on its last features finds Pedestrian at 44 % recall but 6 % precision), the argmax
never picks that class and its IoU is 0. Adding a constant to each class's logit moves the
decision boundaries without retraining (post-hoc logit adjustment; Menon et al. 2021, "Long-tail
learning via logit adjustment", derive the offsets from class priors for balanced error; here they
are searched directly for mIoU). The offsets are tuned on *training* frames, never on the split
that reports the model's accuracy, and an offset added to the last layer's bias costs nothing at
inference: every runtime and export sees an ordinary bias.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from rtseg.errors import RtsegError

# Offsets searched per class, in logit units; 0 is included so a round never makes mIoU worse.
GRID = tuple(float(v) for v in np.arange(-2.0, 4.0001, 0.25))


@dataclass
class BiasResult:
    offsets: list[float]
    miou_before: float
    miou_after: float
    rounds: list[float] = field(default_factory=list)  # mIoU after each round


def confusion(labels: torch.Tensor, pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, C) counts, rows = label; ``labels`` already holds only valid pixels."""
    return torch.bincount(labels * num_classes + pred, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes)


def miou_of(cm: torch.Tensor) -> float:
    """mIoU over classes present in labels or predictions (the rtseg.metrics convention)."""
    cm = cm.double()
    inter = cm.diag()
    union = cm.sum(0) + cm.sum(1) - inter
    seen = union > 0
    return float((inter[seen] / union[seen]).mean()) if seen.any() else 0.0


def tune_offsets(logits: torch.Tensor, labels: torch.Tensor, grid: Sequence[float] = GRID,
                 rounds: int = 3) -> BiasResult:
    """Coordinate ascent on per-class offsets for the mIoU of ``argmax(logits + offsets)``.

    Args:
        logits: (C, P) scores of P labelled pixels (any float dtype).
        labels: (P,) int64 class ids in [0, C); ignored pixels already removed.
        grid: offsets tried for each class in turn, the others held fixed.
        rounds: passes over all classes (stops early when a pass changes nothing).
    """
    c_count = logits.shape[0]
    z = logits.float()
    b = torch.zeros(c_count)
    before = miou_of(confusion(labels, z.max(0).indices, c_count))
    result = BiasResult([0.0] * c_count, before, before)
    for _ in range(rounds):
        changed = False
        for c in range(c_count):
            # Best other class per pixel, fixed while only class c's offset moves.
            others = z + b[:, None]
            others[c] = -float("inf")
            m_other, a_other = others.max(0)
            zc = z[c]
            best_v, best_m = float(b[c]), -1.0
            for v in grid:
                pred = torch.where(zc + v > m_other, c, a_other)
                m = miou_of(confusion(labels, pred, c_count))
                # On a tie the smaller |offset| wins: offsets stay as close to 0 as mIoU allows.
                if m > best_m + 1e-9 or (abs(m - best_m) <= 1e-9 and abs(v) < abs(best_v)):
                    best_v, best_m = v, m
            if best_v != float(b[c]):
                changed = True
            b[c] = best_v
        result.rounds.append(miou_of(confusion(labels, (z + b[:, None]).max(0).indices, c_count)))
        if not changed:
            break
    result.offsets = [float(v) for v in b]
    result.miou_after = result.rounds[-1] if result.rounds else before
    return result


def _candidates(model: nn.Module, num_classes: int) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and m.out_channels == num_classes
            and m.bias is not None]


@torch.no_grad()
def fold_offsets(model: nn.Module, offsets: Sequence[float], size: tuple[int, int]) -> str:
    """Adds ``offsets`` to the bias of the layer whose bias shifts the output logits one for one.

    Which layer that is depends on the architecture (a final transposed conv, a classifier conv
    followed by a bilinear resize, ...); instead of naming it per model, each conv with one output
    per class is tried and kept only if a probe shift of its bias moves every output logit by
    exactly that shift.

    Returns:
        The name of the layer that took the offsets.

    Raises:
        RtsegError: no such layer (e.g. a normalisation after the classifier).
    """
    model.eval()
    delta = torch.as_tensor(list(offsets), dtype=torch.float32)
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))
    base = model(x)
    probe = torch.linspace(0.5, 1.5, len(delta))
    for name, layer in _candidates(model, len(delta)):
        layer.bias += probe
        shifted = model(x) - base
        layer.bias -= probe
        # FP32 rounding of logits of magnitude L is about 1e-7 * L (untrained nets reach 1e4).
        tol = 1e-3 + 1e-6 * float(base.abs().max())
        if torch.allclose(shifted, probe[None, :, None, None].expand_as(shifted), atol=tol):
            layer.bias += delta
            return name
    raise RtsegError("cannot fold class offsets into this model: no layer's bias shifts the "
                     "output logits one for one")


def collect(backend, dataset, every: int = 1, stride: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (C, P) float16 and labels (P,) of every ``every``-th image, on a ``stride`` pixel grid.

    Logits are taken at the label's resolution, as ``rtseg eval`` scores them.
    """
    from rtseg.evaluate import predict_probs

    zs, ys = [], []
    ignore = backend.meta.ignore_index
    for i in range(0, len(dataset), every):
        image, mask = dataset.load_raw(i)
        z = predict_probs(backend, image)[:, ::stride, ::stride]
        y = torch.from_numpy(mask[::stride, ::stride].astype(np.int64))
        keep = (y != ignore) & (y >= 0) & (y < z.shape[0])
        zs.append(z[:, keep].half())
        ys.append(y[keep])
    if not ys:
        raise RtsegError("no labelled images to tune the class offsets on")
    return torch.cat(zs, 1), torch.cat(ys)


def tune_bias_command(model: str, data: str, root: str, split: str, out: str, every: int = 3,
                      log=print, exclude_sequences=None) -> BiasResult:
    """``rtseg tune-bias``: tunes offsets on ``split`` and writes ``model`` with them folded in.

    The output is an ordinary weight file (same preset and classes) whose info records the
    offsets, the frames they were tuned on and the mIoU there before and after.
    """
    from rtseg.backends.torch_backend import TorchBackend
    from rtseg.checkpoint import save_weights
    from rtseg.data import labelled_dataset
    from rtseg.zoo import load_model

    if Path(out).suffix != ".safetensors":
        raise RtsegError(f"--out must be a .safetensors file, got {out}")
    if every < 1:
        raise RtsegError(f"--every must be >= 1, got {every}")
    # Fail before the long part when the output cannot be written.
    try:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RtsegError(f"cannot write {out}: {e.strerror or e}") from None
    if not os.access(Path(out).parent, os.W_OK):
        raise RtsegError(f"cannot write {out}: folder not writable")
    loaded = load_model(model)
    backend = TorchBackend.from_loaded(loaded, model)
    dataset = labelled_dataset(data, root, split, ignore_index=backend.meta.ignore_index,
                               exclude_sequences=exclude_sequences)
    n = len(range(0, len(dataset), every))
    log(f"collecting logits of {n} {data}:{split} images (1 in {every})")
    logits, labels = collect(backend, dataset, every)
    result = tune_offsets(logits, labels)
    layer = fold_offsets(backend.model, result.offsets, backend.meta.input_size)
    names = backend.meta.class_names
    log("offsets: " + ", ".join(f"{c} {v:+.2f}" for c, v in zip(names, result.offsets) if v))
    log(f"{data}:{split} mIoU {result.miou_before * 100:.2f} -> {result.miou_after * 100:.2f} "
        f"(pixels on a 2-pixel grid); folded into {layer}.bias")
    # A second tuning adds to the first: record the total the bias now carries.
    before = loaded.info.get("class_bias", {}).get("offsets", {})
    total = {c: before.get(c, 0.0) + v for c, v in zip(names, result.offsets)}
    info = {**loaded.info, "class_bias": {
        "offsets": total, "layer": layer, "tuned_on": f"{data}:{split}", "drives": dataset.sequences(),
        "images": n, "every": every, "miou_before": result.miou_before, "miou_after": result.miou_after}}
    try:
        save_weights(out, backend.model, loaded.preset, loaded.dataset, info)
    except OSError as e:
        raise RtsegError(f"cannot write {out}: {e.strerror or e}") from None
    log(f"wrote {out}")
    return result
