"""Scoring a backend on a labelled dataset at the original label resolution.

Logits are upsampled (bilinear) to the label's size before the argmax, rather than the argmax
being resized: upsampling scores keeps class boundaries sub-pixel accurate, and it is what the
papers' evaluation scripts do. Multi-scale / flip test-time augmentation averages softmax
probabilities at the original resolution.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from rtseg.backends.base import Backend, ModelMeta
from rtseg.metrics import ConfusionMatrix, format_table, json_value
from rtseg.progress import Progress
from rtseg.tta import TTAOptions, predict_scores


def predict_probs(backend: Backend, image_rgb: np.ndarray, size: tuple[int, int] | None = None,
                  scales: Sequence[float] = (1.0,), flip: bool = False) -> torch.Tensor:
    """Class scores (C, H, W) at the image's own resolution.

    A single scale without flip returns raw logits (the argmax is the same, and nothing is spent
    on a softmax); with test-time augmentation it returns summed softmax probabilities; an
    artifact with the argmax in its graph gives one-hot ids. See :mod:`rtseg.tta`.

    Args:
        backend: the model.
        image_rgb: uint8 RGB (H, W, 3).
        size: (h, w) the image is resized to before inference; default the model's input size.
        scales: multipliers of ``size``.
        flip: also run the horizontally flipped image.
    """
    return predict_scores(backend, [image_rgb], TTAOptions(size, tuple(scales), flip), batch_size=1)[0]


def evaluate(backend: Backend, dataset, size: tuple[int, int] | None = None,
             scales: Sequence[float] = (1.0,), flip: bool = False, limit: int | None = None,
             progress: bool = True) -> dict:
    """Runs ``backend`` over ``dataset`` (anything with ``load_raw(i)`` and ``len``) and scores it.

    Returns:
        :meth:`ConfusionMatrix.compute` output.
    """
    n = len(dataset) if limit is None else min(limit, len(dataset))
    cm = ConfusionMatrix(backend.meta.num_classes, backend.meta.ignore_index)
    with Progress(n, "eval", "img", enabled=progress) as bar:
        for i in range(n):
            image, mask = dataset.load_raw(i)
            # .max().indices is argmax (first maximum on ties) but several times faster on CPU.
            pred = predict_probs(backend, image, size, scales, flip).max(0).indices
            cm.update(pred, torch.from_numpy(mask.astype(np.int64)))
            bar.update()
    return cm.compute()


@dataclass
class EvalReport:
    """One scored run of ``rtseg eval``: the figures and everything that produced them."""

    model: str
    runtime: str
    meta: ModelMeta
    data: str
    root: str
    split: str
    sequences: dict[str, int]   # frames per drive of the scored set
    images: int                 # how many were scored (``limit`` applied)
    size: tuple[int, int]
    scales: tuple[float, ...]
    flip: bool
    result: dict                # :meth:`ConfusionMatrix.compute` output

    def table(self) -> str:
        """The per-class table and its means."""
        return format_table(self.result, self.meta.class_names)

    def summary(self) -> str:
        """One line: what was scored, by which model, how."""
        return (f"model {self.meta.name} ({self.runtime}, {self.meta.precision})  data {self.data}:{self.split} "
                f"[{','.join(self.sequences)}] ({self.images} images)  size {self.size[0]}x{self.size[1]}  "
                f"scales {','.join(f'{s:g}' for s in self.scales)}  flip {self.flip}")

    def as_json(self) -> dict:
        """Strict-JSON figures (NaN -> null) with the confusion matrix they came from."""
        r, names = self.result, self.meta.class_names
        per_class = lambda key: {n: json_value(v) for n, v in zip(names, r[key])}  # noqa: E731
        return {"miou": json_value(r["miou"]), "pixel_acc": json_value(r["pixel_acc"]),
                "mean_acc": json_value(r["mean_acc"]), "fwiou": json_value(r["fwiou"]),
                "dice": json_value(r["mean_dice"]),
                "iou": per_class("iou"), "dice_per_class": per_class("dice"), "acc_per_class": per_class("acc"),
                # Pixel counts, rows = ground truth, columns = prediction, in class_names order.
                "class_names": list(names), "confusion": r["confusion"],
                "model": self.model, "runtime": self.runtime, "precision": self.meta.precision,
                "data": self.data, "root": self.root, "split": self.split, "sequences": self.sequences,
                "images": self.images, "size": list(self.size), "scales": list(self.scales), "flip": self.flip}


def evaluate_model(model: str, data: str, root: str, split: str, size: tuple[int, int] | None = None,
                   scales: Sequence[float] = (1.0,), flip: bool = False, limit: int | None = None,
                   sequences: Sequence[str] | None = None, exclude_sequences: Sequence[str] | None = None,
                   progress: bool = True) -> EvalReport:
    """Opens ``model`` (a shipped name or a file) and scores it on the labelled ``split`` of ``data``.

    Args:
        sequences, exclude_sequences: keep only / leave out these drives (file-stem prefixes).
        Others: as :func:`evaluate`.
    """
    from rtseg.backends import open_backend
    from rtseg.data import labelled_dataset

    backend = open_backend(model)
    meta = backend.meta
    dataset = labelled_dataset(data, root, split, ignore_index=meta.ignore_index, sequences=sequences,
                               exclude_sequences=exclude_sequences)
    result = evaluate(backend, dataset, size, scales, flip, limit, progress)
    return EvalReport(model, backend.runtime, meta, data, str(root), split, dataset.sequences(),
                      min(limit or len(dataset), len(dataset)), tuple(size or meta.input_size), tuple(scales),
                      flip, result)
