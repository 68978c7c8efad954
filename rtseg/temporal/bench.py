"""What temporal smoothing buys and costs: flicker and end-to-end FPS on a clip, mIoU on a
labelled sequence. Run by ``scripts/bench_smooth.py`` (its docstring has the command).

- :func:`clip_runs`: ``rtseg run`` on every frame of the clip once per setting, one after the
  other with one backend, writing an H.264 overlay like the README's run; the flicker figures are
  computed after each timed run (``flicker_defer``), so the FPS of every setting excludes the
  metric and the ratios compare smoothing alone.
- :func:`sequence_miou`: the labelled frames scored in name order with one smoother carried across
  them (real motion between frames), and each frame alone with the smoother fed that frame twice.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import torch

from rtseg.backends.base import Backend
from rtseg.metrics import ConfusionMatrix
from rtseg.pipeline import stages
from rtseg.pipeline.sources import VideoFileSource
from rtseg.temporal.smooth import Smoother


def clip_runs(backend: Backend, clip: str, settings: Sequence[tuple[str, float, float]],
              max_frames: int | None = None, log: Callable[[str], None] = lambda _: None) -> list[dict]:
    """One row per ``(mode, alpha, hold)``: frames, fps, model_fps, tc, changed, resets."""
    from rtseg.pipeline.app import RunOptions, run

    rows = []
    for mode, alpha, hold in settings:
        log(f"clip: smoothing {mode} alpha {alpha} hold {hold}")
        with tempfile.TemporaryDirectory(prefix="rtseg-smooth-") as tmp:
            s = run(RunOptions(source=clip, output=str(Path(tmp) / "o.mp4"), max_frames=max_frames, quiet=True,
                               smooth=mode, smooth_alpha=alpha, smooth_hold=hold, flicker=True, flicker_defer=True),
                    backend=backend)
        rows.append({"mode": mode, "alpha": alpha if mode != "off" else None,
                     "hold": hold if mode != "off" else None, "frames": s["frames"],
                     "fps": s["fps"], "model_fps": s["model_fps"], "tc": s["flicker"]["tc"],
                     "changed": s["flicker"]["changed"], "resets": s["smooth"]["resets"]})
        log(f"  {rows[-1]}")
    return rows


def _predict(backend: Backend, image_rgb: np.ndarray, smoother: Smoother | None, index: int,
             repeat: int = 1) -> np.ndarray:
    """uint8 ids at the image's resolution, the network's output passed through ``smoother``."""
    with torch.inference_mode():
        output = backend.infer(backend.preprocess(image_rgb, None)[None])
        bgr = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
        for k in range(repeat if smoother is not None else 0):
            out = smoother.update(index + k, bgr, output)
        return stages.to_mask(backend, out if smoother is not None else output, image_rgb.shape[:2])


def sequence_miou(backend: Backend, dataset, mode: str, alpha: float, hold: float = 0.0) -> dict:
    """mIoU (0..1) of ``dataset`` with ``mode`` smoothing: ``sequence`` in order, ``single`` per frame."""
    c = backend.meta.num_classes
    cms = {"sequence": ConfusionMatrix(c, backend.meta.ignore_index),
           "single": ConfusionMatrix(c, backend.meta.ignore_index)}
    seq = Smoother(mode, alpha, c, hold=hold) if mode != "off" else None
    resets = 0
    for i in range(len(dataset)):
        image, mask = dataset.load_raw(i)
        target = torch.from_numpy(mask.astype(np.int64))
        cms["sequence"].update(torch.from_numpy(_predict(backend, image, seq, i).astype(np.int64)), target)
        if mode == "off":
            continue  # one network pass gives both figures
        single = Smoother(mode, alpha, c, hold=hold)
        pred = _predict(backend, image, single, 0, repeat=2)
        cms["single"].update(torch.from_numpy(pred.astype(np.int64)), target)
    if mode == "off":
        cms["single"] = cms["sequence"]
    if seq is not None:
        resets = seq.resets
    return {"mode": mode, "alpha": alpha if mode != "off" else None, "hold": hold if mode != "off" else None,
            "images": len(dataset),
            "miou_sequence": cms["sequence"].compute()["miou"], "miou_single": cms["single"].compute()["miou"],
            "resets": resets}


def strip(backend: Backend, clip: str, start: int, count: int, modes: Sequence[str], alpha: float,
          hold: float = 0.0, tile_width: int = 240, warmup: int = 10) -> np.ndarray:
    """BGR image: for each mode a row of overlays of frames ``start..start+count-1`` and a row of
    the pixels whose class changed since the previous frame (white), tiles ``tile_width`` wide."""
    from rtseg.pipeline.overlay import Renderer, Style

    source = VideoFileSource(clip, end=start + count)
    frames = []
    while (frame := source.read(None)) is not None:
        if frame.index >= start - warmup - 1:
            frames.append(frame.image)
    source.close()
    renderer = Renderer(backend.meta.colors, backend.meta.class_names, Style("overlay", 0.5, hud=False, legend=False))
    rows = []
    for mode in modes:
        smoother = Smoother(mode, alpha, backend.meta.num_classes, hold=hold) if mode != "off" else None
        masks = [_predict(backend, cv2.cvtColor(f, cv2.COLOR_BGR2RGB), smoother, i) for i, f in enumerate(frames)]
        shown = range(len(frames) - count, len(frames))
        h = round(frames[0].shape[0] * tile_width / frames[0].shape[1])
        tile = lambda img: cv2.resize(img, (tile_width, h), interpolation=cv2.INTER_AREA)  # noqa: E731
        over = [tile(renderer.render(frames[i], masks[i], "")) for i in shown]
        diff = [tile(np.repeat(((masks[i] != masks[i - 1]) * 255).astype(np.uint8)[..., None], 3, 2)) for i in shown]
        for row in (over, diff):
            img = np.hstack(row)
            cv2.putText(img, mode, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 255, 255), 1, cv2.LINE_AA)
            rows.append(img)
    return np.vstack(rows)
