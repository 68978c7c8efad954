"""Test-time augmentation (multi-scale + horizontal flip) and sliding-window tiles over a
:class:`~rtseg.backends.base.Backend`, for several same-sized images per backend call.

The one implementation of class scores at an image's own resolution, shared by ``rtseg eval``
(:func:`rtseg.evaluate.predict_probs`, one image a call) and ``rtseg batch`` (batches, tiles): at
every scale each image is resized to ``scaled_size(base, s)``, run together with its mirror
image, its logits are upsampled (bilinear) to the image's own resolution, and the softmax
probabilities of every view are summed. So the masks of a batch run score what ``rtseg eval
--scales --flip`` scores (``tests/test_batch.py`` checks this pixel by pixel).

Tiles: where the (scaled) image is larger than the tile, a window of the tile size slides over it
with the given overlap; the last window of a row or column is moved inward so that every window
is full-size, and windows are never resized. The softmax probabilities of the windows are
summed and divided by a coverage count (how many windows saw each pixel), then upsampled to the
image resolution. A side shorter than the tile is covered by one window of that side's length,
so an image smaller than the tile runs whole, exactly as without ``tile``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from rtseg.backends.base import Backend
from rtseg.errors import RtsegError


def scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    return max(8, int(round(size[0] * scale))), max(8, int(round(size[1] * scale)))


@dataclass(frozen=True)
class TTAOptions:
    """How each image is run.

    Attributes:
        size: (h, w) the image is resized to at scale 1; default the model's input size, or with
            ``tile`` the image's own size (tiling exists to avoid downscaling large images).
        scales: multipliers of ``size``.
        flip: also run the horizontally flipped image.
        tile: (h, w) of the sliding window, or None to run whole images.
        overlap: pixels shared by neighbouring windows (at least; edge windows may share more).
    """

    size: tuple[int, int] | None = None
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    tile: tuple[int, int] | None = None
    overlap: int = 0

    def __post_init__(self):
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))
        if not self.scales or any(not s > 0 for s in self.scales):
            raise RtsegError(f"--scales must be positive numbers, got {list(self.scales)}")
        if self.overlap < 0:
            raise RtsegError(f"--overlap must be >= 0, got {self.overlap}")
        if self.tile is None:
            if self.overlap:
                raise RtsegError("--overlap needs --tile")
            return
        if min(self.tile) < 8:
            raise RtsegError(f"--tile must be at least 8x8, got {self.tile[0]}x{self.tile[1]}")
        if self.overlap >= min(self.tile):
            raise RtsegError(f"--overlap {self.overlap} leaves no stride: it must be smaller than "
                             f"both sides of the {self.tile[0]}x{self.tile[1]} tile")

    @property
    def averaged(self) -> bool:
        """Outputs are summed softmax probabilities (rather than the logits of a single run)."""
        return len(self.scales) > 1 or self.flip or self.tile is not None

    @property
    def views(self) -> int:
        """Number of probability maps summed per image."""
        return len(self.scales) * (2 if self.flip else 1)

    def base_size(self, input_size: tuple[int, int], image_hw: tuple[int, int]) -> tuple[int, int]:
        return tuple(self.size or (image_hw if self.tile else input_size))

    def to_dict(self) -> dict:
        return {"size": list(self.size) if self.size else None, "scales": list(self.scales),
                "flip": self.flip, "tile": list(self.tile) if self.tile else None,
                "overlap": self.overlap if self.tile else None}


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Window offsets along one side: stride ``tile - overlap``, the last one flush with the end."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    count = -(-(length - tile) // stride) + 1
    return [min(i * stride, length - tile) for i in range(count)]


def tile_windows(hw: tuple[int, int], tile: tuple[int, int], overlap: int) -> list[tuple[int, int, int, int]]:
    """``(y, x, h, w)`` of every window over an ``hw`` image; sides shorter than the tile get one
    window of their own length."""
    th, tw = min(tile[0], hw[0]), min(tile[1], hw[1])
    return [(y, x, th, tw) for y in tile_starts(hw[0], th, overlap) for x in tile_starts(hw[1], tw, overlap)]


def coverage(hw: tuple[int, int], windows: Sequence[tuple[int, int, int, int]]) -> torch.Tensor:
    """(h, w) float count of the windows covering each pixel."""
    count = torch.zeros(hw)
    for y, x, h, w in windows:
        count[y:y + h, x:x + w] += 1
    return count


def predict_scores(backend: Backend, images_rgb: Sequence[np.ndarray], opts: TTAOptions = TTAOptions(),
                   batch_size: int | None = None) -> torch.Tensor:
    """Class scores (N, C, H, W) of same-sized images at their own resolution.

    Per image: logits for a single
    scale without flip or tiles, otherwise the *sum* of the softmax probabilities of the
    ``opts.views`` views (see :func:`scores_to_probs`); one-hot ids for an artifact with the
    argmax in its graph.

    Args:
        backend: the model.
        images_rgb: uint8 RGB (H, W, 3) images, all of the same size.
        opts: scales, flip and tiles.
        batch_size: images per backend call (their flipped copies ride along in the same call,
            as in ``predict_probs``); with tiles, that many images' worth of windows. Default all.
    """
    if not len(images_rgb):
        raise ValueError("no images")
    out_hw = tuple(images_rgb[0].shape[:2])
    if any(tuple(im.shape[:2]) != out_hw for im in images_rgb):
        raise ValueError("images of one call must share their size")
    n = len(images_rgb)
    bs = max(1, batch_size or n)
    meta = backend.meta
    base = opts.base_size(meta.input_size, out_hw)
    if meta.argmax_in_graph:
        if opts.averaged:
            raise RtsegError("test-time augmentation and tiles average class scores, but this artifact "
                             "outputs class ids (argmax in graph); export it without --argmax")
        return _ids(backend, images_rgb, base, out_hw, bs)
    total = None
    for s in opts.scales:
        hw = scaled_size(base, s)
        x = np.stack([backend.preprocess(im, hw) for im in images_rgb])                  # (N, 3, h, w)
        windows = tile_windows(hw, opts.tile, opts.overlap) if opts.tile else []
        if len(windows) > 1:
            part = _tiled(backend, x, windows, opts.flip, bs, out_hw)
        else:
            part = _whole(backend, x, opts.flip, opts.averaged, bs, out_hw)
        total = part if total is None else total + part
    return total


def scores_to_probs(scores: torch.Tensor, opts: TTAOptions) -> torch.Tensor:
    """:func:`predict_scores` output -> probabilities that sum to one per pixel."""
    return scores / opts.views if opts.averaged else scores.softmax(1)


def _whole(backend: Backend, x: np.ndarray, flip: bool, averaged: bool, bs: int,
           out_hw: tuple[int, int]) -> torch.Tensor:
    """predict_probs' inner loop for one scale, ``bs`` images (and their mirror images) a call."""
    part = None
    for a in range(0, len(x), bs):
        xs = x[a:a + bs]
        k = len(xs)
        batch = np.concatenate([xs, xs[..., ::-1]]) if flip else xs
        logits = backend.infer(np.ascontiguousarray(batch))
        logits = F.interpolate(logits, size=out_hw, mode="bilinear", align_corners=False)
        if averaged:
            probs = logits.softmax(1)
            logits = probs[:k] + probs[k:].flip(-1) if flip else probs
        if part is None:
            part = logits.new_empty((len(x),) + tuple(logits.shape[1:]))
        part[a:a + k] = logits
    return part


def _tiled(backend: Backend, x: np.ndarray, windows, flip: bool, bs: int,
           out_hw: tuple[int, int]) -> torch.Tensor:
    """Window-averaged probabilities of one scale, summed with those of the mirror image."""
    n, _, h, w = x.shape
    views = np.concatenate([x, x[..., ::-1]]) if flip else x                             # (V*N, 3, h, w)
    jobs = [(v, win) for v in range(len(views)) for win in windows]
    per_call = bs * (2 if flip else 1)
    acc = None
    for a in range(0, len(jobs), per_call):
        chunk = jobs[a:a + per_call]
        crops = np.stack([views[v, :, y:y + th, x0:x0 + tw] for v, (y, x0, th, tw) in chunk])
        logits = backend.infer(crops)                                                    # (m, C, th, tw)
        if tuple(logits.shape[-2:]) != crops.shape[-2:]:
            logits = F.interpolate(logits, size=crops.shape[-2:], mode="bilinear", align_corners=False)
        probs = logits.softmax(1)
        if acc is None:
            acc = torch.zeros((len(views), probs.shape[1], h, w))
        for (v, (y, x0, th, tw)), p in zip(chunk, probs):
            acc[v, :, y:y + th, x0:x0 + tw] += p
    acc /= coverage((h, w), windows)
    acc = F.interpolate(acc, size=out_hw, mode="bilinear", align_corners=False)
    return acc[:n] + acc[n:].flip(-1) if flip else acc


def _ids(backend: Backend, images_rgb, base, out_hw, bs: int) -> torch.Tensor:
    """One-hot scores of an argmax-in-graph artifact's ids, nearest-upsampled as predict_probs does."""
    out = []
    for a in range(0, len(images_rgb), bs):
        x = np.stack([backend.preprocess(im, base) for im in images_rgb[a:a + bs]])
        ids = backend.infer(x).long()[:, None].float()
        ids = F.interpolate(ids, size=out_hw, mode="nearest")[:, 0].long()
        out.append(F.one_hot(ids, backend.meta.num_classes).permute(0, 3, 1, 2).float())
    return torch.cat(out)


__all__ = ["TTAOptions", "coverage", "predict_scores", "scaled_size", "scores_to_probs", "tile_starts", "tile_windows"]
