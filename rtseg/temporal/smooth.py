"""Temporal smoothing of class probabilities for video, on a grid of at most AVG_WIDTH columns.

Modes (``rtseg run --smooth``):

- ``flow``: an exponential moving average of class probabilities with motion compensation. The
  running average is warped to the new frame with DIS optical flow (t -> t-1, see
  :mod:`rtseg.temporal.flow`) and blended, ``avg_t = alpha * p_t + (1 - alpha) * warp(avg_{t-1})``;
  where the flow fails its forward-backward check (occlusions, wrong flow) or points out of the
  frame, the new frame's probabilities are taken as they are. Close in spirit to the DIS-flow
  fusion of PaddleSeg's human-segmentation demo, for any number of classes.
- ``ema``: the same average without flow, for static cameras (moving objects leave a trail whose
  length depends on alpha).
- ``off``: the per-frame output unchanged.

The average is kept at :data:`AVG_WIDTH` columns: a model's 11 x 360 x 480 logits are area-
downsampled to 11 x 180 x 240 before the softmax, a quarter of the per-pixel work, and the smoothed
log-probabilities are returned at that size for the usual upsample-then-argmax. Light models
predict on a coarser grid than their output (DeepLabv3+'s decoder and ICNet at a quarter of the
input, bilinearly upsampled in the graph), so little is lost; ENet predicts at its full output size
and gives up detail finer than the average's grid when smoothed. On 60 frames of the sample clip
the masks flicker less than with the average at 360 x 480 (README, "Flicker", for the measured cost
and accuracy). Log-probabilities differ from logits by a per-pixel constant, which bilinear
upsampling turns into a class-independent term, so on a steady input the masks are those of the
downsampled logits.

Artifacts with the argmax in their graph give class ids only; those are smoothed as one-hot
probabilities (votes) and the result is returned as ids again.

The state is reset (the next output is the frame's own) on a scene cut, detected as a mean
absolute difference above :data:`CUT_DIFF` grey levels between consecutive thumbnails, when the
frame size changes, and for live sources when frames were dropped (a gap in the frame index), since
the flow between frames far apart is unreliable. Smoothing runs in the postprocess thread, which
sees frames in order, so the pipeline's frame policy is untouched.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from rtseg.errors import RtsegError
from rtseg.temporal.flow import DisFlow, forward_backward_ok, grey, resize_flow, sample_maps

SMOOTH_MODES = ("off", "ema", "flow")
DEFAULT_ALPHA = 0.5    # measured with DEFAULT_HOLD: README, "Flicker"
CUT_DIFF = 30.0        # grey levels (0..255); consecutive frames of a moving car stay under 13
THUMB_WIDTH = 64       # thumbnail for the cut test: cheap, and blind to noise and small motion
FLOW_WIDTH = 240       # columns of the grey frames the smoother's flow is computed on
AVG_WIDTH = 240        # columns the running average of logits is kept at (ids: their own size)
DEFAULT_HOLD = 0.15    # hysteresis margin (probability); measured: README, "Flicker"
NO_CLASS = 255         # a carried label where the flow failed: no class is held there


def check_smooth(mode: str, alpha: float, hold: float = 0.0) -> None:
    """One-line errors for a mode or weight ``rtseg run`` cannot use."""
    if mode not in SMOOTH_MODES:
        raise RtsegError(f"unknown --smooth '{mode}'; valid: {', '.join(SMOOTH_MODES)}")
    if not 0.0 < alpha <= 1.0:
        raise RtsegError(f"--smooth-alpha must be in (0, 1] (the new frame's weight), got {alpha}")
    if not 0.0 <= hold < 1.0:
        raise RtsegError(f"--smooth-hold must be in [0, 1) (a probability margin), got {hold}")


class Smoother:
    """Smooths a backend's per-frame output over time; one instance per stream, one thread.

    Args:
        mode: ``ema`` or ``flow`` (see the module docstring).
        alpha: weight of the new frame, in (0, 1]; 1 disables smoothing.
        num_classes: needed to one-hot class ids.
        live: reset the state when the frame index skips (dropped frames).
        flow_width: columns of the grey frames flow is computed on.
        avg_width: columns the average of logits is kept at (never more than the logits have).
        hold: hysteresis margin: where the flow holds, the class shown at that point in the last
            frame keeps it until another class's averaged probability beats it by this much.
    """

    def __init__(self, mode: str, alpha: float = DEFAULT_ALPHA, num_classes: int = 0, live: bool = False,
                 flow_width: int = FLOW_WIDTH, hold: float = DEFAULT_HOLD, avg_width: int = AVG_WIDTH):
        check_smooth(mode, alpha, hold)
        if mode == "off":
            raise RtsegError("Smoother needs mode 'ema' or 'flow'")
        self.mode, self.alpha, self.num_classes, self.live = mode, alpha, num_classes, live
        self.hold = hold
        self.flow_width, self.avg_width = flow_width, avg_width
        self.flow = DisFlow() if mode == "flow" else None
        self.resets = 0          # how often the state was dropped (cuts, gaps, size changes)
        self.reset()

    def reset(self) -> None:
        self._avg: np.ndarray | None = None     # (C, h, w) float32 probabilities
        self._grey: np.ndarray | None = None    # flow-resolution grey of the last frame
        self._thumb: np.ndarray | None = None
        self._index: int | None = None
        self._label: np.ndarray | None = None   # (h, w) uint8 classes shown for the last frame (hold)

    def _probs(self, output: torch.Tensor) -> np.ndarray:
        """(1, C, h, w) logits or (1, h, w) ids -> (C, h', w') float32 probabilities on the
        average's grid (ids: their own grid, as one-hot votes).

        OpenCV's resize, exp and log run several times faster than numpy's or torch's on CPU, and
        they are most of this stage's cost; (C, h*w) views let exp work on the whole stack at once.
        """
        if output.dim() == 3:
            ids = output[0].numpy()
            return (np.arange(self.num_classes, dtype=ids.dtype)[:, None, None] == ids).astype(np.float32)
        logits = np.ascontiguousarray(output[0].float().numpy())  # planes for OpenCV
        c, h, w = logits.shape
        if w > self.avg_width:
            size = (self.avg_width, max(1, round(h * self.avg_width / w)))
            logits = np.stack([cv2.resize(plane, size, interpolation=cv2.INTER_AREA) for plane in logits])
        e = cv2.exp((logits - logits.max(0)).reshape(c, -1)).reshape(logits.shape)  # max 1: no overflow
        e *= 1.0 / e.sum(0)
        return e

    def _continues(self, index: int, g: np.ndarray, thumb: np.ndarray, shape: tuple) -> bool:
        """Whether the new frame continues the averaged sequence (no cut, no gap, same size)."""
        if self._avg is None or self._avg.shape != shape or self._grey.shape != g.shape:
            return False
        if self.live and index != self._index + 1:
            return False
        return float(np.abs(thumb.astype(np.float32) - self._thumb).mean()) <= CUT_DIFF

    def _blend(self, p: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """avg_t = p + (1 - alpha) * keep * (warp(avg_{t-1}) - p), keep 1 where the flow holds, else 0:
        the blend and the fallback in one pass over the (C, h, w) stack. Also returns the last
        frame's classes carried to this frame (255 where the flow failed) when ``hold`` is on."""
        if self.mode == "ema":
            c = p.shape[0]
            return cv2.addWeighted(p.reshape(c, -1), self.alpha, self._avg.reshape(c, -1), 1.0 - self.alpha,
                                   0.0).reshape(p.shape), (self._label if self.hold > 0 else None)
        back = self.flow(g, self._grey)                     # t -> t-1 at flow resolution
        bx, by, inside = sample_maps(back)
        ok = inside & forward_backward_ok(back, self.flow(self._grey, g), bx, by)
        h, w = p.shape[1:]
        map_x, map_y, _ = sample_maps(resize_flow(back, (h, w)))
        valid = cv2.resize(ok.astype(np.float32), (w, h), interpolation=cv2.INTER_NEAREST)
        keep = valid * (1.0 - self.alpha)
        out = np.empty_like(p)
        for k in range(p.shape[0]):  # remap per plane: the stack stays (C, h, w), no transposes
            cv2.remap(self._avg[k], map_x, map_y, cv2.INTER_LINEAR, dst=out[k], borderMode=cv2.BORDER_REPLICATE)
        out -= p
        out *= keep
        out += p
        if self._label is None or self.hold == 0:
            return out, None
        carried = cv2.remap(self._label, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
        carried[valid == 0] = NO_CLASS
        return out, carried

    def _held(self, avg: np.ndarray, carried: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """(scores shown, their classes at the model's resolution): ``avg`` with ``hold`` added to the
        carried class where that class is not already the leader, and the argmax of the result.

        Border pixels whose probabilities hover near a tie are what flickers; the margin keeps them
        on their last side until the evidence moves. Only pixels that would change class get the
        margin, so where nothing changes (a static scene) the output is the average's own, and the
        average itself is never biased, so the margin does not accumulate.
        """
        if carried is None:
            return avg, None
        # Imported here: rtseg.pipeline imports this module for its postprocess stage.
        from rtseg.pipeline.upsample import channel_argmax

        label = channel_argmax(avg)
        plane = label.size
        flat, last = label.reshape(-1), carried.reshape(-1)
        where = np.flatnonzero((last != NO_CLASS) & (last != flat))
        if where.size == 0:
            return avg, label
        shown = avg.copy()
        scores = shown.reshape(-1)
        held = last[where].astype(np.intp) * plane + where
        scores[held] += self.hold
        stays = scores[held] > scores[flat[where].astype(np.intp) * plane + where]
        flat[where[stays]] = last[where[stays]]
        return shown, label

    def update(self, index: int, image_bgr: np.ndarray, output: torch.Tensor) -> torch.Tensor:
        """The smoothed output for frame ``index``: log-probabilities (1, C, h', w') on the
        average's grid for logits, ids (1, h, w) uint8 for an argmax-in-graph artifact."""
        p = self._probs(output)
        g = grey(image_bgr, self.flow_width)
        thumb = grey(g, THUMB_WIDTH)
        carried = None
        if self._continues(index, g, thumb, p.shape):
            avg, carried = self._blend(p, g)
        else:
            avg = p
            if self._avg is not None:
                self.resets += 1
        self._avg, self._grey, self._thumb, self._index = avg, g, thumb.astype(np.float32), index
        shown, label = self._held(avg, carried)
        if label is None and (self.hold > 0 or output.dim() == 3):
            from rtseg.pipeline.upsample import channel_argmax

            label = channel_argmax(shown)
        self._label = label
        if output.dim() == 3:
            return torch.from_numpy(self._label)[None]
        c = shown.shape[0]
        return torch.from_numpy(cv2.log(np.maximum(shown, 1e-30).reshape(c, -1)).reshape(shown.shape))[None]
