"""The INT8 accuracy gate: mIoU of an INT8 artifact against its FP32 model on held-out frames.

With labels, both models are scored against the labels and the gate looks at the difference.
Without labels (a video, an unlabelled folder) the FP32 predictions serve as pseudo-labels: the
INT8 model's mIoU against them measures how far it strays from FP32 (FP32 scores 100 by
construction), which is stricter than the true drop, and the report says so.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch

from rtseg.backends.base import Backend
from rtseg.errors import RtsegError
from rtseg.evaluate import predict_probs
from rtseg.metrics import ConfusionMatrix
from rtseg.progress import Progress

DEFAULT_BUDGET = 1.0  # mIoU points


class GateRefused(RtsegError):
    """The INT8 artifact loses more mIoU than the budget allows (and --force was not given)."""


@dataclass
class GateResult:
    """Outcome of :func:`run_gate`. IoUs are fractions; drops are in mIoU points (0..100)."""

    reference: str            # "labels" or "fp32-pseudo-labels"
    frames: int
    class_names: list[str]
    iou_fp32: list[float]
    iou_int8: list[float]
    miou_fp32: float
    miou_int8: float
    budget: float
    source: str = ""

    @property
    def drop(self) -> float:
        return 100.0 * (self.miou_fp32 - self.miou_int8)

    @property
    def per_class_drop(self) -> list[float]:
        return [100.0 * (a - b) for a, b in zip(self.iou_fp32, self.iou_int8)]

    @property
    def passed(self) -> bool:
        return self.drop <= self.budget

    def as_dict(self) -> dict:
        """JSON-safe record for an artifact's metadata (NaN -> None)."""
        def clean(v):
            return None if isinstance(v, float) and math.isnan(v) else v

        d = asdict(self)
        d["iou_fp32"] = [clean(v) for v in self.iou_fp32]
        d["iou_int8"] = [clean(v) for v in self.iou_int8]
        return {**d, "drop": round(self.drop, 4), "passed": self.passed}

    def format(self) -> str:
        """Per-class table and a summary line."""
        pseudo = self.reference != "labels"
        head = "agree" if pseudo else "INT8"
        w = max(len("class"), *(len(n) for n in self.class_names))
        lines = [f"INT8 accuracy gate on {self.frames} held-out frames of {self.source or '?'} "
                 + ("(no labels: FP32 predictions used as pseudo-labels, so FP32 = 100 and the drop "
                    "is INT8's disagreement with FP32)" if pseudo else "(against their labels)"),
                 f"{'class':<{w}}  {'FP32':>6}  {head:>6}  {'drop':>6}"]
        for name, a, b, d in zip(self.class_names, self.iou_fp32, self.iou_int8, self.per_class_drop):
            lines.append(f"{name:<{w}}  {_pct(a):>6}  {_pct(b):>6}  {_pts(d):>6}")
        verdict = "pass" if self.passed else "FAIL"
        lines.append(f"{'mIoU':<{w}}  {_pct(self.miou_fp32):>6}  {_pct(self.miou_int8):>6}  {_pts(self.drop):>6}"
                     f"   budget {self.budget:.1f} points: {verdict}")
        return "\n".join(lines)


def _pct(v: float | None) -> str:
    return "-" if v is None or math.isnan(v) else f"{100 * v:.1f}"


def _pts(v: float | None) -> str:
    return "-" if v is None or math.isnan(v) else f"{v:+.2f}"


def run_gate(int8: Backend, fp32: Backend, frames: Sequence[tuple[np.ndarray, np.ndarray | None]],
             budget: float = DEFAULT_BUDGET, source: str = "", progress: bool = True) -> GateResult:
    """Scores ``int8`` against ``fp32`` on ``frames`` = (RGB uint8 image, mask or None) pairs.

    Frames either all have masks (scored against them) or none has (pseudo-labels).
    """
    if not frames:
        raise RtsegError("the INT8 accuracy gate has no held-out frames; pass --val DIR")
    labelled = all(m is not None for _, m in frames)
    if not labelled and any(m is not None for _, m in frames):
        raise RtsegError("held-out frames are partly labelled; the gate needs all or none")
    meta = fp32.meta
    c = meta.num_classes
    ignore = meta.ignore_index if labelled else -1
    cm32, cm8 = ConfusionMatrix(c, ignore), ConfusionMatrix(c, ignore)
    with Progress(len(frames), "int8 gate", "img", enabled=progress) as bar:
        for image, mask in frames:
            p32 = predict_probs(fp32, image).argmax(0)
            p8 = predict_probs(int8, image).argmax(0)
            target = torch.from_numpy(mask.astype(np.int64)) if labelled else p32
            cm32.update(p32, target)
            cm8.update(p8, target)
            bar.update()
    r32, r8 = cm32.compute(), cm8.compute()
    return GateResult("labels" if labelled else "fp32-pseudo-labels", len(frames), list(meta.class_names),
                      r32["iou"], r8["iou"], r32["miou"], r8["miou"], float(budget), source)
