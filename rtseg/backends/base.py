"""The backend interface: normalized (N, 3, H, W) float32 batch in, logits out."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class ModelMeta:
    """What a caller needs besides the network: how to feed it and how to draw its output."""

    name: str
    class_names: list[str]
    colors: list[list[int]]       # RGB per class
    mean: list[float]             # RGB, on [0, 1] pixels
    std: list[float]
    input_size: tuple[int, int]   # (H, W) the model was trained/exported for
    ignore_index: int
    precision: str = "fp32"
    argmax_in_graph: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


class Backend(ABC):
    """A loaded model on one runtime. Subclasses implement :meth:`infer`."""

    meta: ModelMeta
    runtime: str = "?"

    @abstractmethod
    def infer(self, batch: np.ndarray) -> torch.Tensor:
        """Logits (N, C, H, W) float32 for a normalized float32 batch (N, 3, H, W)."""

    def preprocess(self, image_rgb: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
        """uint8 RGB (H, W, 3) -> normalized float32 (3, h, w) at ``size`` (default: model size)."""
        import cv2

        h, w = size or self.meta.input_size
        if image_rgb.shape[:2] != (h, w):
            image_rgb = cv2.resize(image_rgb, (w, h), interpolation=cv2.INTER_LINEAR)
        x = image_rgb.astype(np.float32) * (1.0 / 255.0)
        x = (x - np.asarray(self.meta.mean, np.float32)) / np.asarray(self.meta.std, np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1))
