"""Scoring a folder of written masks against a labelled dataset (``rtseg batch --score-root``).

The masks ``rtseg batch`` writes are the argmax of scores upsampled to the label resolution,
which is what ``rtseg eval`` scores, so the mIoU of the masks of a whole split equals ``rtseg
eval``'s for the same model and settings; this closes the loop for settings ``eval`` does not
have (tiles, CRF).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from rtseg.errors import RtsegError
from rtseg.metrics import ConfusionMatrix, json_value


def score_masks(mask_dir: str | Path, dataset, class_names: list[str], ignore_index: int) -> dict:
    """mIoU and per-class IoU of ``mask_dir/<image stem>.png`` against the dataset's labels.

    Images of the split without a mask are counted in ``missing`` and left out of the scores
    (a ``--max-frames`` run scores the frames it wrote).

    Args:
        mask_dir: folder of single-channel class-id PNGs.
        dataset: from :func:`rtseg.data.labelled_dataset` (anything with ``files`` pairs and ``load_label(i)``).
        class_names: the model's classes (their count is C).
        ignore_index: label value left unscored.

    Raises:
        RtsegError: unreadable files, size mismatch, no mask for any image.
    """
    from rtseg.data.datasets import DatasetError, read_mask

    cm = ConfusionMatrix(len(class_names), ignore_index)
    scored = missing = 0
    for i, (image_path, label_path) in enumerate(dataset.files):
        pred_path = Path(mask_dir) / f"{image_path.stem}.png"
        if not pred_path.is_file():
            missing += 1
            continue
        pred = read_mask(pred_path)
        label = dataset.load_label(i)
        if pred.shape != label.shape:
            raise DatasetError(f"mask {pred_path} is {pred.shape[1]}x{pred.shape[0]} but the label "
                               f"{label_path} is {label.shape[1]}x{label.shape[0]}")
        if int(pred.max()) >= len(class_names):
            raise DatasetError(f"mask {pred_path} holds class {int(pred.max())}; the model has "
                               f"{len(class_names)} classes")
        cm.update(torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(label.astype(np.int64)))
        scored += 1
    if not scored:
        raise RtsegError(f"no mask in {mask_dir} matches an image of the scored split")
    result = cm.compute()
    return {"images": scored, "missing": missing,
            "miou": json_value(result["miou"]), "pixel_acc": json_value(result["pixel_acc"]),
            "mean_acc": json_value(result["mean_acc"]),
            "iou": {name: json_value(v) for name, v in zip(class_names, result["iou"])}}


__all__ = ["score_masks"]
