"""Label statistics of a dataset: pixel counts per class and the class weights built on them."""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch


def count_pixels(label_iter: Iterable, num_classes: int,
                 ignore_index: int = 255) -> tuple[np.ndarray, np.ndarray]:
    """Counts labelled pixels per class over a dataset's label maps.

    Args:
        label_iter: label maps (numpy arrays or tensors). A 2-D item is one image; an item with
            more dimensions is a batch of images along its first axis.
        num_classes: number of classes C.
        ignore_index: unlabelled value; such pixels (and values outside [0, C)) are not counted.

    Returns:
        ``(counts, present_pixels)``, two int64 arrays of length C: ``counts[c]`` is the number of
        pixels of class c; ``present_pixels[c]`` is the number of labelled pixels of the images in
        which c occurs (the denominator of median-frequency balancing).
    """
    counts = np.zeros(num_classes, dtype=np.int64)
    present = np.zeros(num_classes, dtype=np.int64)
    for item in label_iter:
        arr = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else np.asarray(item)
        images = arr[None] if arr.ndim <= 2 else arr.reshape(-1, *arr.shape[-2:])
        for lab in images:
            lab = lab.reshape(-1).astype(np.int64)
            lab = lab[(lab != ignore_index) & (lab >= 0) & (lab < num_classes)]
            c = np.bincount(lab, minlength=num_classes)
            counts += c
            present += np.where(c > 0, lab.size, 0)
    return counts, present


def class_weights(pixel_counts: Sequence[int] | np.ndarray | torch.Tensor,
                  method: str = "median_freq", c: float = 1.02,
                  present_pixels: Sequence[int] | np.ndarray | None = None) -> torch.Tensor:
    """Per-class loss weights that up-weight rare classes.

    - ``"median_freq"`` (Eigen & Fergus 2015, used by SegNet): ``w_c = median(freq) / freq_c``
      with ``freq_c = pixels of c / pixels of the images where c is present``. Without
      ``present_pixels`` the simplification ``freq_c = pixels of c / all pixels`` is used, which
      is exact only when every class occurs in every image. The median is taken over classes
      with at least one pixel; a class with no pixel gets weight 0 (it cannot be learned and an
      infinite weight would break label smoothing).
    - ``"enet"`` (Paszke et al. 2016, ENet): ``w_c = 1 / ln(c + p_c)`` with ``p_c`` the class's
      share of all pixels; ``c = 1.02`` bounds the weights to [1.42, 50.5].

    Args:
        pixel_counts: pixels per class, e.g. ``count_pixels(...)[0]``.
        method: ``"median_freq"`` or ``"enet"``.
        c: ENet's constant.
        present_pixels: ``count_pixels(...)[1]``, for exact median-frequency balancing.

    Returns:
        (C,) float32 tensor, ready for ``CrossEntropy(weight=...)``.
    """
    counts = torch.as_tensor(np.asarray(pixel_counts), dtype=torch.float64)
    if counts.sum() <= 0:
        raise ValueError("pixel_counts has no pixel at all")
    if method == "median_freq":
        denom = counts.sum() if present_pixels is None else \
            torch.as_tensor(np.asarray(present_pixels), dtype=torch.float64)
        seen = counts > 0
        freq = torch.where(seen, counts / torch.as_tensor(denom).clamp_min(1), torch.zeros_like(counts))
        # torch.median returns the lower middle value for even counts; the paper means the median.
        med = float(np.median(freq[seen].numpy()))
        w = torch.where(seen, med / freq.clamp_min(1e-300), torch.zeros_like(freq))
    elif method == "enet":
        w = 1.0 / torch.log(c + counts / counts.sum())
    else:
        raise ValueError(f"unknown class weight method '{method}'. Valid: median_freq, enet")
    return w.float()
