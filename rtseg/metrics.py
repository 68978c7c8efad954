"""Confusion matrix for semantic segmentation and every score derived from it.

All scores come from one C x C integer matrix (rows = ground truth, columns = prediction), so
matrices from several batches, workers or videos can simply be added before the scores are
computed once: averaging per-batch mIoUs would weight small batches too much and is not the
mIoU the papers report.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch


class ConfusionMatrix:
    """Accumulates (ground truth, prediction) pixel counts over any number of label maps.

    Pixels whose target equals ``ignore_index`` or lies outside ``[0, num_classes)`` are skipped
    (Cityscapes' 255, CamVid's "void"). Predictions must be class indices in ``[0, num_classes)``.

    Args:
        num_classes: number of classes C.
        ignore_index: target value that marks unlabelled pixels.

    Attributes:
        matrix: (C, C) int64 tensor on the CPU; ``matrix[t, p]`` counts pixels of ground-truth
            class ``t`` predicted as ``p``.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.matrix = torch.zeros((self.num_classes, self.num_classes), dtype=torch.int64)

    def reset(self) -> None:
        """Zeroes the counts."""
        self.matrix.zero_()

    def update(self, pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> None:
        """Adds one batch of predictions.

        Args:
            pred: predicted class indices, any shape (e.g. (N, H, W) from ``logits.argmax(1)``).
            target: ground-truth class indices of the same shape.

        Raises:
            ValueError: shapes differ, or a counted pixel has a prediction outside [0, C).
        """
        pred = torch.as_tensor(pred)
        target = torch.as_tensor(target, device=pred.device)
        if pred.shape != target.shape:
            raise ValueError(f"pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
        c = self.num_classes
        pred = pred.reshape(-1).long()
        target = target.reshape(-1).long()
        keep = (target != self.ignore_index) & (target >= 0) & (target < c)
        pred, target = pred[keep], target[keep]
        if pred.numel() and (int(pred.min()) < 0 or int(pred.max()) >= c):
            raise ValueError(f"predictions must lie in [0, {c}), got range "
                             f"[{int(pred.min())}, {int(pred.max())}]")
        # One bincount over the flattened (t, p) pair index is the whole confusion matrix; it
        # runs on the input's device so GPU predictions are not copied pixel by pixel.
        counts = torch.bincount(target * c + pred, minlength=c * c)
        self.matrix += counts.reshape(c, c).cpu()

    def __add__(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        """A new matrix holding the counts of both (e.g. from two workers or two clips)."""
        if not isinstance(other, ConfusionMatrix):
            return NotImplemented
        if (other.num_classes, other.ignore_index) != (self.num_classes, self.ignore_index):
            raise ValueError("cannot add confusion matrices with different num_classes/ignore_index: "
                             f"({self.num_classes}, {self.ignore_index}) vs "
                             f"({other.num_classes}, {other.ignore_index})")
        out = ConfusionMatrix(self.num_classes, self.ignore_index)
        out.matrix = self.matrix + other.matrix
        return out

    def compute(self) -> dict:
        """Scores of the accumulated counts.

        Returns:
            A dict with, as fractions in [0, 1]:

            - ``pixel_acc``: correctly classified pixels / counted pixels.
            - ``acc``: per-class accuracy (recall) list; NaN for classes with no ground-truth pixel.
            - ``mean_acc``: mean of ``acc`` over classes that have ground-truth pixels.
            - ``iou``: per-class intersection over union list; NaN for a class absent from both
              ground truth and prediction (its IoU is 0/0).
            - ``miou``: mean of ``iou`` over the classes that are not NaN. A class absent from
              both prediction and ground truth is EXCLUDED, because there is nothing to score;
              a class present in the ground truth but never predicted (IoU 0), or predicted but
              absent from the ground truth (IoU 0), counts.
            - ``fwiou``: frequency-weighted IoU, sum over classes of (GT pixels of c / counted
              pixels) * IoU_c.
            - ``dice``: per-class Dice / F1 list, 2TP / (2TP + FP + FN); NaN where IoU is NaN.
            - ``mean_dice``: mean of ``dice`` with the same exclusion as ``miou``.
            - ``confusion``: the counts themselves, rows = ground truth, columns = prediction
              (what a class's missed pixels became: its row off the diagonal).

            Every value is NaN when no pixel has been counted.
        """
        m = self.matrix.double()
        tp = m.diag()
        gt = m.sum(1)      # pixels of each class in the ground truth
        pr = m.sum(0)      # pixels predicted as each class
        total = m.sum()
        union = gt + pr - tp
        nan = torch.full_like(tp, float("nan"))
        acc = torch.where(gt > 0, tp / gt.clamp_min(1), nan)
        iou = torch.where(union > 0, tp / union.clamp_min(1), nan)
        dice = torch.where(gt + pr > 0, 2 * tp / (gt + pr).clamp_min(1), nan)
        if total > 0:
            pixel_acc = float(tp.sum() / total)
            # Classes with no GT pixel have weight 0, so their NaN/0 IoU must not reach the sum.
            fwiou = float(((gt / total) * torch.nan_to_num(iou, nan=0.0)).sum())
        else:
            pixel_acc = fwiou = math.nan
        return {
            "pixel_acc": pixel_acc,
            "acc": acc.tolist(),
            "mean_acc": _nanmean(acc),
            "iou": iou.tolist(),
            "miou": _nanmean(iou),
            "fwiou": fwiou,
            "dice": dice.tolist(),
            "mean_dice": _nanmean(dice),
            "confusion": self.matrix.long().tolist(),
        }


def merge(a: ConfusionMatrix, b: ConfusionMatrix) -> ConfusionMatrix:
    """Sum of two confusion matrices; the same as ``a + b``."""
    return a + b


def json_value(v):
    """``v`` with NaN (a score of a class that no frame had) as None: JSON has no NaN, and Python's
    ``json`` would write a bare ``NaN`` token that strict parsers reject."""
    return None if isinstance(v, float) and math.isnan(v) else v


def _nanmean(x: torch.Tensor) -> float:
    """Mean over non-NaN entries; NaN (without numpy's warning) when there are none."""
    ok = ~torch.isnan(x)
    return float(x[ok].mean()) if ok.any() else math.nan


def format_table(result: dict, class_names: Sequence[str] | None = None) -> str:
    """Renders :meth:`ConfusionMatrix.compute` output as an aligned plain-text table.

    Per-class IoU, Dice and accuracy in percent with one decimal ("-" for a class that is not
    scored), followed by the summary scores.

    Args:
        result: the dict returned by :meth:`ConfusionMatrix.compute`.
        class_names: one name per class; ``None`` numbers the classes.

    Raises:
        ValueError: ``class_names`` does not have one entry per class.
    """
    n = len(result["iou"])
    names = [str(c) for c in range(n)] if class_names is None else [str(c) for c in class_names]
    if len(names) != n:
        raise ValueError(f"{len(names)} class names for {n} classes")

    def pct(v: float) -> str:
        return "-" if v is None or math.isnan(v) else f"{100.0 * v:.1f}"

    width = max([len("class")] + [len(s) for s in names] + [len("pixel acc")])
    lines = [f"{'class':<{width}}  {'IoU':>6}  {'Dice':>6}  {'Acc':>6}",
             "-" * (width + 24)]
    for name, iou, dice, acc in zip(names, result["iou"], result["dice"], result["acc"]):
        lines.append(f"{name:<{width}}  {pct(iou):>6}  {pct(dice):>6}  {pct(acc):>6}")
    lines.append("-" * (width + 24))
    lines.append(f"{'mean':<{width}}  {pct(result['miou']):>6}  {pct(result['mean_dice']):>6}  "
                 f"{pct(result['mean_acc']):>6}")
    lines.append(f"{'fwIoU':<{width}}  {pct(result['fwiou']):>6}")
    lines.append(f"{'pixel acc':<{width}}  {pct(result['pixel_acc']):>6}")
    return "\n".join(lines)
