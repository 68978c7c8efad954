"""The per-frame work of each stage, as plain functions the threads in ``runner.py`` call.

Keeping them free of threading makes the naive sequential loop of the benchmark and the
threaded pipeline run exactly the same code.
"""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np
import torch

from rtseg.backends.base import Backend
from rtseg.pipeline.upsample import bilinear_argmax, channel_argmax


def preprocess(backend: Backend, image_bgr: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """BGR uint8 (H, W, 3) -> normalized float32 (3, h, w) at ``size`` (default: the model's)."""
    # Models are trained on RGB; OpenCV decodes to BGR: the channels are swapped while normalizing.
    return backend.preprocess_bgr(image_bgr, size)


def infer(backend: Backend, tensor: np.ndarray) -> torch.Tensor:
    """(3, h, w) -> logits (1, C, h, w) (or ids (1, h, w), see :func:`to_mask`); batch size 1,
    the latency-optimal choice for live video."""
    return backend.infer(tensor[None])


def submit(backend: Backend, tensor: np.ndarray) -> Callable[[], torch.Tensor]:
    """:func:`infer` started in the background (see ``Backend.submit``); call the result to wait."""
    return backend.submit(tensor[None])


def logits_to_mask(logits: torch.Tensor, out_hw: tuple[int, int]) -> np.ndarray:
    """Logits (1, C, h, w) -> uint8 class ids (H, W) at the source resolution.

    The scores are upsampled (bilinear) before the argmax, exactly as
    :func:`rtseg.evaluate.predict_probs` scores models, so the masks ``rtseg run`` saves give the
    mIoU ``rtseg eval`` reports. Resizing the argmax with nearest neighbour instead is cheaper
    but puts class boundaries on the coarse grid of the inference size (blocky edges at 2x and
    more); the cost of doing it right is measured by ``rtseg bench --pipeline`` and recorded in
    the README.
    """
    if tuple(logits.shape[-2:]) != tuple(out_hw):
        # Same ids as upsampling every class, computed only where they can differ (upsample.py).
        return bilinear_argmax(logits[0], out_hw)
    return channel_argmax(logits[0].float().numpy())


def ids_to_mask(ids: torch.Tensor, out_hw: tuple[int, int]) -> np.ndarray:
    """Class ids (1, h, w) from an artifact with the argmax in its graph -> uint8 (H, W).

    Ids cannot be interpolated, so they are resized with nearest neighbour (OpenCV's nearest
    picks the same source pixels as torch's, which ``predict_probs`` uses for such artifacts).
    """
    small = np.ascontiguousarray(ids[0].numpy().astype(np.uint8, copy=False))
    if small.shape == tuple(out_hw):
        return small
    return cv2.resize(small, (out_hw[1], out_hw[0]), interpolation=cv2.INTER_NEAREST)


def to_mask(backend: Backend, output: torch.Tensor, out_hw: tuple[int, int]) -> np.ndarray:
    """The backend's output (logits, or ids for ``meta.argmax_in_graph``) -> uint8 (H, W) ids."""
    if backend.meta.argmax_in_graph:
        return ids_to_mask(output, out_hw)
    return logits_to_mask(output, out_hw)


def logits_to_mask_nearest(logits: torch.Tensor, out_hw: tuple[int, int]) -> np.ndarray:
    """The cheaper alternative: argmax at the inference size, then nearest-neighbour resize."""
    small = channel_argmax(logits[0].float().numpy())
    return cv2.resize(small, (out_hw[1], out_hw[0]), interpolation=cv2.INTER_NEAREST)
