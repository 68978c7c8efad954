"""Scoring a backend on a labelled dataset at the original label resolution.

Logits are upsampled (bilinear) to the label's size before the argmax, rather than the argmax
being resized: upsampling scores keeps class boundaries sub-pixel accurate, and it is what the
papers' evaluation scripts do. Multi-scale / flip test-time augmentation averages softmax
probabilities at the original resolution.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from rtseg.backends.base import Backend
from rtseg.metrics import ConfusionMatrix
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


def eval_command(model: str, data: str, root: str, split: str, size: tuple[int, int] | None,
                 scales: Sequence[float], flip: bool, json_path: str | None, limit: int | None,
                 sequences: Sequence[str] | None = None, exclude_sequences: Sequence[str] | None = None) -> dict:
    """``rtseg eval``: prints the per-class table and summary, optionally writes JSON."""
    import json
    from pathlib import Path

    from rtseg.backends import open_backend
    from rtseg.data import labelled_dataset
    from rtseg.metrics import format_table, json_value
    from rtseg.errors import RtsegError

    backend = open_backend(model)
    meta = backend.meta
    dataset = labelled_dataset(data, root, split, ignore_index=meta.ignore_index, sequences=sequences,
                               exclude_sequences=exclude_sequences)
    if json_path:  # fail before the long part if the output cannot be written
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        if not Path(json_path).parent.is_dir():
            raise RtsegError(f"cannot write {json_path}")
    result = evaluate(backend, dataset, size, scales, flip, limit)
    print(format_table(result, meta.class_names))
    used = size or meta.input_size
    drives = ",".join(dataset.sequences())
    print(f"model {meta.name} ({backend.runtime}, {meta.precision})  data {data}:{split} [{drives}] "
          f"({min(limit or len(dataset), len(dataset))} images)  size {used[0]}x{used[1]}  "
          f"scales {','.join(f'{s:g}' for s in scales)}  flip {flip}")
    if json_path:
        per_class = lambda key: {n: json_value(v) for n, v in zip(meta.class_names, result[key])}  # noqa: E731
        out = {"miou": json_value(result["miou"]), "pixel_acc": json_value(result["pixel_acc"]),
               "mean_acc": json_value(result["mean_acc"]), "fwiou": json_value(result["fwiou"]),
               "dice": json_value(result["mean_dice"]),
               "iou": per_class("iou"), "dice_per_class": per_class("dice"), "acc_per_class": per_class("acc"),
               # Pixel counts, rows = ground truth, columns = prediction, in class_names order.
               "class_names": list(meta.class_names), "confusion": result["confusion"],
               "model": model, "runtime": backend.runtime, "precision": meta.precision,
               "data": data, "root": str(root), "split": split, "sequences": dataset.sequences(), "images": min(limit or len(dataset), len(dataset)),
               "size": list(used), "scales": list(scales), "flip": flip}
        tmp = Path(json_path).with_suffix(".json.tmp")
        try:
            tmp.write_text(json.dumps(out, indent=2))
            tmp.replace(json_path)
        except OSError as e:
            raise RtsegError(f"cannot write {json_path}: {e.strerror}") from None
    return result
