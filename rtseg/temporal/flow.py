"""Dense optical flow (OpenCV DIS) and backward warping, shared by the flicker metric and the
flow smoother.

Direction convention, used everywhere in :mod:`rtseg.temporal`: the flow that warps frame t-1 to
frame t is computed *from t to t-1*, ``flow = DIS.calc(grey_t, grey_prev)``, so that
``grey_t(x) ~= grey_prev(x + flow(x))``. Backward warping then samples the previous frame's data at
``x + flow(x)`` for every pixel x of frame t (``cv2.remap``), which fills every pixel of t exactly
once; a pixel whose source ``x + flow(x)`` falls outside the frame has no counterpart in t-1 and is
left out (metric) or not blended (smoother).
"""
from __future__ import annotations

import cv2
import numpy as np


def grey(image_bgr: np.ndarray, width: int) -> np.ndarray:
    """uint8 grey image scaled (area filter) to ``width`` columns, aspect kept; never enlarged."""
    g = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY) if image_bgr.ndim == 3 else image_bgr
    h, w = g.shape
    if w <= width:
        return np.ascontiguousarray(g)
    return cv2.resize(g, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)


class DisFlow:
    """OpenCV's DIS optical flow (Kroeger et al., ECCV 2016), ultrafast preset: a few ms at 480x270
    on one core, which is what lets it run once per frame next to the network."""

    def __init__(self):
        self.dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)

    def __call__(self, grey_from: np.ndarray, grey_to: np.ndarray) -> np.ndarray:
        """(h, w, 2) float32 flow with ``grey_from(x) ~= grey_to(x + flow(x))`` (x, y order)."""
        return self.dis.calc(grey_from, grey_to, None)


def resize_flow(flow: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Flow computed at one resolution -> (H, W, 2) at another, vectors scaled with the grid."""
    h, w = flow.shape[:2]
    if (h, w) == tuple(hw):
        return flow
    out = cv2.resize(flow, (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR)
    out[..., 0] *= hw[1] / w
    out[..., 1] *= hw[0] / h
    return out


def sample_maps(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``cv2.remap`` maps ``x + flow(x)`` and the mask of pixels whose source lies inside the frame."""
    h, w = flow.shape[:2]
    map_x = flow[..., 0] + np.arange(w, dtype=np.float32)[None, :]
    map_y = flow[..., 1] + np.arange(h, dtype=np.float32)[:, None]
    inside = (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)
    return map_x, map_y, inside


def forward_backward_ok(flow_back: np.ndarray, flow_fwd: np.ndarray, map_x: np.ndarray,
                        map_y: np.ndarray) -> np.ndarray:
    """Pixels of frame t whose flow to t-1 and the flow from there back to t cancel out.

    ``flow_back`` is t -> t-1 and ``flow_fwd`` t-1 -> t. Where a point is occluded or the flow is
    wrong, following one and then the other does not return to the start. The tolerance is the one
    of Sundaram et al. (ECCV 2010): |b + f|^2 <= 0.01 (|b|^2 + |f|^2) + 0.5, in pixels of the flow.
    """
    f = cv2.remap(flow_fwd, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    err = ((flow_back + f) ** 2).sum(-1)
    return err <= 0.01 * ((flow_back ** 2).sum(-1) + (f ** 2).sum(-1)) + 0.5
