"""Drawing a class-id mask over its frame: palette blend, mask-only, side by side, legend, HUD.

Everything per pixel is one OpenCV call: the palette lookup is ``cv2.applyColorMap`` with the
palette as a user colour map (0.55 ms of CPU at 960x540 against 2 ms for ``np.take``), the blend
one ``cv2.addWeighted`` on uint8, the legend's class counts one ``cv2.calcHist``. Text (legend,
HUD) touches only small regions. Colours are the model's ``meta.colors`` (RGB; CamVid classes
carry their Cityscapes colours), flipped once to BGR because frames stay BGR from capture to sink.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from rtseg.errors import RtsegError

MODES = ("overlay", "mask", "side")
_FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass
class Style:
    """How frames are drawn. The display sink changes ``mode`` and ``alpha`` from key presses while
    the overlay thread reads them; single attribute stores are atomic in Python, and a frame drawn
    with the previous value is harmless, so no lock is needed.

    Attributes:
        mode: ``overlay`` (palette blended over the frame), ``mask`` (palette only) or ``side``
            (frame | palette, twice as wide).
        alpha: weight of the palette in ``overlay`` mode, 0..1.
        hud: draw FPS and latency in the top-left corner.
        legend: list the classes present in the frame in the top-right corner.
    """

    mode: str = "overlay"
    alpha: float = 0.5
    hud: bool = True
    legend: bool = True

    def __post_init__(self):
        if self.mode not in MODES:
            raise RtsegError(f"--mode must be one of {', '.join(MODES)}, got '{self.mode}'")
        if not 0.0 <= self.alpha <= 1.0:
            raise RtsegError(f"--alpha must lie in [0, 1], got {self.alpha}")

    def next_mode(self) -> None:
        self.mode = MODES[(MODES.index(self.mode) + 1) % len(MODES)]

    def change_alpha(self, delta: float) -> None:
        self.alpha = round(min(1.0, max(0.0, self.alpha + delta)), 2)


def parse_ignore(names: str | None, class_names: list[str]) -> list[int]:
    """``"Sky,road"`` -> class indices (case-insensitive); unknown names list the valid ones."""
    if not names:
        return []
    lower = {n.lower(): i for i, n in enumerate(class_names)}
    out = []
    for name in (n.strip() for n in names.split(",") if n.strip()):
        if name.lower() not in lower:
            raise RtsegError(f"--ignore-class: unknown class '{name}'. Valid: {', '.join(class_names)}")
        out.append(lower[name.lower()])
    return out


class Renderer:
    """Turns (frame, mask) into the picture that sinks write and the window shows.

    Args:
        colors: RGB colour per class.
        class_names: legend labels.
        style: shared :class:`Style`.
        ignore: class indices drawn as "no class": the frame shows through in overlay mode,
            black in the palette, absent from the legend.
    """

    def __init__(self, colors: list[list[int]], class_names: list[str], style: Style, ignore: list[int] = ()):
        self.palette = np.ascontiguousarray(np.asarray(colors, np.uint8)[:, ::-1])  # (C, 3) BGR
        self.palette[list(ignore)] = 0
        if len(self.palette) > 256:
            raise RtsegError(f"at most 256 classes can be drawn, the model has {len(self.palette)}")
        # The colour map for cv2.applyColorMap: 256 BGR entries; ids past the last class (none
        # come from a model) take the last class's colour.
        self.lut = np.repeat(self.palette[-1:], 256, axis=0)[:, None, :]
        self.lut[:len(self.palette), 0] = self.palette
        self.class_names = list(class_names)
        self.style = style
        self.ignored = np.zeros(len(class_names), bool)
        self.ignored[list(ignore)] = True

    def colorize(self, mask: np.ndarray) -> np.ndarray:
        """(H, W) uint8 class ids -> a new (H, W, 3) BGR palette image."""
        return cv2.applyColorMap(np.ascontiguousarray(mask, np.uint8), self.lut)

    def render(self, image: np.ndarray, mask: np.ndarray, hud_text: str | None = None) -> np.ndarray:
        """A new BGR image (frames are handed to another thread, so the result is never reused)."""
        style = self.style
        mode, alpha = style.mode, style.alpha
        color = self.colorize(mask)
        if mode == "overlay":
            out = cv2.addWeighted(image, 1.0 - alpha, color, alpha, 0.0)
            if self.ignored.any():
                keep = self.ignored[mask]  # (H, W) bool
                out[keep] = image[keep]
        elif mode == "mask":
            out = color
        else:
            out = np.concatenate([image, color], axis=1)  # (H, 2W, 3)
        if style.legend:
            n = len(self.class_names)
            counts = cv2.calcHist([mask], [0], None, [n], [0, n]).ravel()  # 2x faster than np.bincount
            self.draw_legend(out, np.flatnonzero((counts > 0) & ~self.ignored))
        if style.hud and hud_text:
            self.draw_hud(out, hud_text)
        return out

    @staticmethod
    def _scale(height: int) -> tuple[float, int]:
        scale = max(0.35, height / 1200)
        return scale, max(1, int(round(scale * 2)))

    def draw_legend(self, out: np.ndarray, classes: np.ndarray) -> None:
        """A column of colour swatches and names of ``classes`` at the top-right corner, in place."""
        if len(classes) == 0:
            return
        scale, thick = self._scale(out.shape[0])
        (tw, th), _ = cv2.getTextSize(max((self.class_names[c] for c in classes), key=len), _FONT, scale, thick)
        row, pad, sw = int(th * 1.8), int(th * 0.5), th
        w, h = sw + tw + 3 * pad, row * len(classes) + pad
        x0, y0 = out.shape[1] - w - pad, pad
        if x0 < 0 or y0 + h > out.shape[0]:
            return  # frame too small for a readable legend
        roi = out[y0:y0 + h, x0:x0 + w]
        np.right_shift(roi, 1, out=roi)  # darken the background by half so text reads on any scene
        for k, c in enumerate(classes):
            y = y0 + pad + k * row
            b, g, r = (int(v) for v in self.palette[c])
            cv2.rectangle(out, (x0 + pad, y), (x0 + pad + sw, y + th), (b, g, r), -1)
            cv2.putText(out, self.class_names[c], (x0 + 2 * pad + sw, y + th), _FONT, scale,
                        (255, 255, 255), thick, cv2.LINE_AA)

    def draw_hud(self, out: np.ndarray, text: str) -> None:
        """``text`` on a darkened strip at the top-left corner, in place."""
        scale, thick = self._scale(out.shape[0])
        (tw, th), base = cv2.getTextSize(text, _FONT, scale, thick)
        pad = int(th * 0.5)
        roi = out[0:th + base + 2 * pad, 0:min(out.shape[1], tw + 2 * pad)]
        np.right_shift(roi, 1, out=roi)
        cv2.putText(out, text, (pad, pad + th), _FONT, scale, (255, 255, 255), thick, cv2.LINE_AA)
