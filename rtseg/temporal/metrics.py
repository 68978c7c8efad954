"""How much a sequence of masks flickers, measured without labels.

Two figures over consecutive frames (t-1, t):

- **changed pixels**: the share of pixels whose class differs between mask t-1 and mask t, as they
  are shown (no motion compensation: what a viewer of the overlay sees change);
- **temporal consistency (TC)**, as defined by Liu et al., "Efficient Semantic Video Segmentation
  with Per-frame Inference" (ECCV 2020): the mIoU between mask t and mask t-1 warped to frame t by
  dense optical flow. Motion explains part of the change; TC counts only the rest. Flow is DIS
  (:mod:`rtseg.temporal.flow`) from frame t to frame t-1 on grey frames scaled to
  :data:`FLOW_WIDTH` columns (for speed), resized to the mask's resolution; mask t-1 is sampled at
  ``x + flow(x)`` with nearest neighbour, and only pixels whose source lies inside the frame count.
  The mIoU of a pair averages the classes present in either mask over those pixels; TC is the mean
  over pairs.

Both are reported in percent. A static scene with steady masks gives TC 100 and 0 changed pixels.
A scene cut is a pair like any other (low TC, many changed pixels): read figures of edited
footage with that in mind.
"""
from __future__ import annotations

from typing import Iterable

import cv2
import numpy as np

from rtseg.temporal.flow import DisFlow, grey, resize_flow, sample_maps

FLOW_WIDTH = 480   # columns of the grey frames the metric's flow is computed on


def changed_share(prev: np.ndarray, cur: np.ndarray) -> float:
    """Fraction (0..1) of pixels whose class id differs between two masks of one size."""
    return float(np.count_nonzero(prev != cur)) / cur.size


def pair_miou(a: np.ndarray, b: np.ndarray) -> float:
    """mIoU (0..1) between two id arrays of equal shape over the classes present in either; NaN if empty."""
    if a.size == 0:
        return float("nan")
    k = int(max(a.max(), b.max())) + 1
    cm = np.bincount(a.astype(np.int64) * k + b, minlength=k * k).reshape(k, k)
    inter = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - inter
    present = union > 0
    return float((inter[present] / union[present]).mean())


def warp_mask(prev: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mask t-1 warped to frame t by ``flow`` (t -> t-1, at the mask's resolution; see
    :mod:`rtseg.temporal.flow`) with nearest neighbour, and the pixels whose source is in frame."""
    map_x, map_y, inside = sample_maps(flow)
    warped = cv2.remap(prev, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
    return warped, inside


def temporal_consistency(prev: np.ndarray, cur: np.ndarray, flow: np.ndarray) -> float:
    """TC of one pair (0..1): mIoU of ``cur`` and ``prev`` warped by ``flow`` (t -> t-1, any
    resolution: it is resized to the masks'), over the pixels the flow keeps in frame."""
    warped, inside = warp_mask(prev, resize_flow(flow, cur.shape))
    return pair_miou(cur[inside], warped[inside])


class FlickerMeter:
    """Accumulates changed pixels and TC over a stream of (frame, mask) pairs.

    Args:
        flow_width: columns of the grey frames flow is computed on.
        defer: keep (small grey frame, mask) pairs and compute everything in :meth:`summary`, so a
            benchmark's timed run does not pay for the flow; memory grows with the number of
            frames (about 0.65 MB per 960x540 frame), so it is for bounded runs only.
    """

    def __init__(self, flow_width: int = FLOW_WIDTH, defer: bool = False):
        self.flow_width, self.defer = flow_width, defer
        self.flow = DisFlow()
        self.changed: list[float] = []
        self.tc: list[float] = []
        self._prev: tuple[np.ndarray, np.ndarray] | None = None
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []

    def update(self, image_bgr: np.ndarray, mask: np.ndarray) -> None:
        item = (grey(image_bgr, self.flow_width), np.array(mask, np.uint8, copy=True))
        if self.defer:
            self._pending.append(item)
        else:
            self._add(item)

    def _add(self, item: tuple[np.ndarray, np.ndarray]) -> None:
        g, mask = item
        if self._prev is not None:
            g_prev, m_prev = self._prev
            if m_prev.shape == mask.shape and g_prev.shape == g.shape:  # a live source may change size
                self.changed.append(changed_share(m_prev, mask))
                self.tc.append(temporal_consistency(m_prev, mask, self.flow(g, g_prev)))
        self._prev = item

    def summary(self) -> dict:
        """``{"pairs", "tc", "changed"}``: TC and changed pixels in percent (None without a pair)."""
        for item in self._pending:
            self._add(item)
        self._pending.clear()
        tc = [v for v in self.tc if v == v]  # a pair with every pixel flowing out of frame has no TC
        return {"pairs": len(self.changed),
                "tc": round(100 * float(np.mean(tc)), 3) if tc else None,
                "changed": round(100 * float(np.mean(self.changed)), 4) if self.changed else None}

    # The pipeline's sink interface: the meter runs in the sink thread, after the other sinks.
    needs_view = False

    def write(self, frame) -> None:
        self.update(frame.image, frame.mask)

    def close(self, commit: bool = True) -> None:
        pass


def flicker(images: Iterable[np.ndarray], masks: Iterable[np.ndarray], flow_width: int = FLOW_WIDTH) -> dict:
    """TC and changed pixels of a sequence: BGR frames and their uint8 masks, in order."""
    meter = FlickerMeter(flow_width)
    for image, mask in zip(images, masks):
        meter.update(image, mask)
    return meter.summary()
