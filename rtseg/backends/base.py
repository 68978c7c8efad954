"""The backend interface: normalized (N, 3, H, W) float32 batch in, logits (or class ids) out."""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, fields
from typing import Callable

import numpy as np
import torch

from rtseg.errors import RtsegError


@dataclass
class ModelMeta:
    """What a caller needs besides the network: how to feed it and how to draw its output.

    Exported artifacts embed this as JSON (ONNX ``metadata_props``, OpenVINO ``rt_info``, the
    header of a TensorRT engine file), so a model file describes itself.
    """

    name: str
    class_names: list[str]
    colors: list[list[int]]       # RGB per class
    mean: list[float]             # RGB, on [0, 1] pixels
    std: list[float]
    input_size: tuple[int, int]   # (H, W) the model was trained/exported for
    ignore_index: int
    precision: str = "fp32"
    argmax_in_graph: bool = False  # the artifact outputs uint8 class ids (N, H, W), not logits
    source: str = ""              # the model an artifact was exported from (preset or weight file)
    info: dict = field(default_factory=dict)  # export facts: cache key, INT8 gate, float nodes, ...

    @classmethod
    def from_preset(cls, preset, dataset, source: str = "") -> "ModelMeta":
        """The metadata of a torch model from its ``ModelPreset`` and ``DatasetConfig``."""
        return cls(preset.name, list(dataset.class_names), [list(c) for c in dataset.colors], list(preset.mean),
                   list(preset.std), (int(preset.input_size[0]), int(preset.input_size[1])),
                   dataset.ignore_index, source=source)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str = "artifact") -> "ModelMeta":
        """Parses :meth:`to_json` output; keys from a newer rtseg are ignored, missing ones fail."""
        try:
            data = json.loads(text)
        except (TypeError, ValueError):
            raise RtsegError(f"{where}: rtseg metadata is not valid JSON") from None
        names = {f.name for f in fields(cls)}
        try:
            meta = cls(**{k: v for k, v in data.items() if k in names})
        except TypeError as e:
            raise RtsegError(f"{where}: incomplete rtseg metadata ({e})") from None
        meta.input_size = (int(meta.input_size[0]), int(meta.input_size[1]))
        return meta


def normalize_image(image: np.ndarray, size: tuple[int, int], mean, std, bgr: bool = False) -> np.ndarray:
    """uint8 RGB (or BGR with ``bgr=True``) (H, W, 3) -> normalized float32 RGB (3, h, w) at
    ``size`` = (h, w).

    Resizes the uint8 frame first (a quarter of the pixels at 960x540 -> 480x360), then writes
    each channel plane once as ``x * (1 / (255 std)) + (-mean / std)``: 1.4 ms instead of 6.4 ms
    for converting, resizing and normalizing the whole frame in float (docs/results.md). The
    channel swap is free here, so OpenCV's BGR frames need no conversion.
    """
    import cv2

    h, w = size
    if image.shape[:2] != (h, w):
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    scale = 1.0 / (255.0 * np.asarray(std, np.float32))
    offset = -np.asarray(mean, np.float32) / np.asarray(std, np.float32)
    out = np.empty((3, h, w), np.float32)
    for c in range(3):
        plane = out[c]
        plane[...] = image[:, :, 2 - c if bgr else c]
        plane *= scale[c]
        plane += offset[c]
    return out


class Backend(ABC):
    """A loaded model on one runtime. Subclasses implement :meth:`infer`."""

    meta: ModelMeta
    runtime: str = "?"
    # How many frames the runtime can work on at once (OpenVINO streams). The pipeline keeps this
    # many submitted for files; a model that runs several one-thread requests side by side wastes
    # less CPU at its threads' barriers than one request spread over every core.
    inflight: int = 1

    @abstractmethod
    def infer(self, batch: np.ndarray) -> torch.Tensor:
        """Runs a normalized float32 batch (N, 3, H, W).

        Returns:
            Logits (N, C, H, W) float32 on the CPU, or, when ``meta.argmax_in_graph``, class ids
            (N, H, W) uint8.
        """

    def submit(self, batch: np.ndarray) -> Callable[[], torch.Tensor]:
        """Starts :meth:`infer` on ``batch``; the returned callable waits for its output.

        At most :attr:`inflight` submissions may be pending, and each is collected before a later
        one: results come back in order. This default runs the batch at once.
        """
        out = self.infer(batch)
        return lambda: out

    def predict_ids(self, batch: np.ndarray) -> torch.Tensor:
        """Class ids (N, H, W) int64 for either kind of artifact."""
        out = self.infer(batch)
        if self.meta.argmax_in_graph:
            return out.long()
        # max(1).indices is argmax (first maximum on ties), but torch's argmax reduces over the
        # strided channel axis slowly: 15 ms vs 2.8 ms for 11x360x480 logits on 2 cores, which
        # was a quarter of the INT8 model's whole frame time.
        return out.max(1).indices

    def preprocess(self, image_rgb: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
        """uint8 RGB (H, W, 3) -> normalized float32 (3, h, w) at ``size`` (default: model size)."""
        return normalize_image(image_rgb, size or self.meta.input_size, self.meta.mean, self.meta.std)

    def preprocess_bgr(self, image_bgr: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
        """The same from a BGR frame as OpenCV decodes it (no colour conversion needed)."""
        return normalize_image(image_bgr, size or self.meta.input_size, self.meta.mean, self.meta.std, bgr=True)
