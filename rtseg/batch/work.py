"""One chunk of ``rtseg batch`` on one model replica: read its frames, predict, write the outputs.

The same :class:`ChunkWorker` runs in the local process and inside every Ray actor, so the two
modes cannot drift apart: frames are grouped into model calls the same way (same size, at most
``batch_size``), and every file is written under a hidden temporary name and renamed when
complete, the overlay before the mask, so an existing mask means a finished frame. A worker that
dies mid-chunk therefore loses only the frames it had not finished, and whoever runs the chunk
next (a retry, or a re-run of the command) skips the rest.

Undecodable images and damaged video frames are counted as failed and reported; they never stop
the chunk. An error of the model or of the outputs fails the rest of the chunk (counted, with the
message) but not the job.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np
import torch

from rtseg.backends.base import Backend
from rtseg.batch.crf import dense_crf
from rtseg.batch.inputs import Chunk
from rtseg.errors import RtsegError
from rtseg.io import OutputError, atomic_write_bytes, ensure_dir
from rtseg.pipeline.overlay import Renderer, Style
from rtseg.pipeline.sources import ImageSource, Source, VideoFileSource
from rtseg.tta import predict_scores, scores_to_probs

# Hidden folder in OUT for the run's bookkeeping: one claim file per chunk, holding its attempt
# number, so that a retried chunk (its worker died) is recognized on any node of the cluster.
STATE_DIR = ".rtseg-batch"
# Attempts at one chunk before it is given up (its remaining frames counted as failed): Ray
# restarts dead workers without limit, and a frame that crashes its worker every time must not
# keep a cluster busy for ever.
MAX_ATTEMPTS = 3


def write_image(path: Path, image: np.ndarray, params: list[int] | tuple = ()) -> None:
    """Encodes by suffix and writes atomically: never a partial file."""
    ok, data = cv2.imencode(path.suffix, image, list(params))
    if not ok:
        raise OutputError(f"cannot encode {path.name}")
    atomic_write_bytes(path, data.tobytes())


def output_dirs(out: Path, label: str, overlay: bool) -> tuple[Path, Path | None]:
    """``OUT/masks[/label]`` and ``OUT/overlays[/label]`` (None without overlays)."""
    masks = out / "masks" / label if label else out / "masks"
    overlays = (out / "overlays" / label if label else out / "overlays") if overlay else None
    return masks, overlays


class ChunkWorker:
    """A model replica and the options of the job; :meth:`run` processes one chunk.

    Args:
        backend: the opened model.
        opts: the job's :class:`~rtseg.batch.runner.BatchOptions`.
        track_attempts: keep claim files in ``OUT/.rtseg-batch`` to count retried chunks (Ray).
    """

    def __init__(self, backend: Backend, opts, track_attempts: bool = False):
        self.backend, self.opts, self.track = backend, opts, track_attempts
        self.out = Path(opts.out)
        meta = backend.meta
        self.renderer = Renderer(meta.colors, meta.class_names, Style(hud=False)) if opts.overlay else None

    def run(self, chunk: Chunk, on_frames: Callable[[int, float], None] | None = None) -> dict:
        """Processes ``chunk``; returns its counts (processed, skipped, failed, retried), per-frame
        milliseconds and warnings. ``on_frames(n, ms_each)`` is called after each model call."""
        result = {"id": chunk.id, "processed": 0, "skipped": 0, "failed": 0, "retried": 0, "ms": [],
                  "warnings": [], "error": None}
        masks, overlays = output_dirs(self.out, chunk.label, self.opts.overlay)
        done = lambda name: (masks / f"{name}.png").is_file()  # noqa: E731
        attempt = self._claim(chunk) if self.track else 1
        if attempt > MAX_ATTEMPTS:
            result["error"] = f"{chunk.spec}: its worker died {MAX_ATTEMPTS} times on this chunk; given up"
            result["failed"] = sum(not done(n) for n in chunk.names() or ())
            return result
        ensure_dir(masks, "--out")
        if overlays:
            ensure_dir(overlays, "--out")
        group: list[tuple[str, np.ndarray]] = []

        def flush():
            t0 = time.perf_counter()
            self._process(group, masks, overlays)
            ms = (time.perf_counter() - t0) * 1000 / len(group)  # a group's time, shared equally
            result["processed"] += len(group)
            result["ms"].extend([ms] * len(group))
            if on_frames:
                on_frames(len(group), ms)
            group.clear()

        try:
            for name, image in self._frames(chunk, done, result):
                if image is None:
                    result["skipped"] += 1
                    continue
                if group and group[0][1].shape != image.shape:
                    flush()
                group.append((name, image))
                if len(group) >= self.opts.batch_size:
                    flush()
            if group:
                flush()
        except (RtsegError, RuntimeError, OSError, ValueError) as e:
            # The rest of this chunk is lost, not the job; the summary names the error.
            result["error"] = f"{chunk.spec}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
            result["failed"] += max(0, chunk.total - result["processed"] - result["skipped"] - result["failed"])
        if attempt > 1:
            result["retried"] = result["processed"]
        return result

    def _claim(self, chunk: Chunk) -> int:
        """Records one more attempt at ``chunk``; returns its number (2 and up: a retry)."""
        path = ensure_dir(self.out / STATE_DIR / "claims", "--out") / str(chunk.id)
        try:
            attempt = int(path.read_text() or 0) + 1
        except (OSError, ValueError):
            attempt = 1
        path.write_text(str(attempt))
        return attempt

    def _frames(self, chunk: Chunk, done, result: dict) -> Iterator[tuple[str, np.ndarray | None]]:
        """``(name, bgr)`` per frame of the chunk, ``bgr`` None where ``done(name)``. Frames come
        from the pipeline's sources; the frames they skip (undecodable) count as failed here."""
        if chunk.kind == "images":
            todo = []
            for f in chunk.files:
                if done(Path(f).stem):
                    yield Path(f).stem, None  # finished before: not even decoded
                else:
                    todo.append(Path(f))
            if todo:
                yield from self._read(ImageSource(todo, chunk.spec), result)
            return
        if chunk.end is not None and all(done(f"{i:06d}") for i in range(chunk.start, chunk.end)):
            result["skipped"] += chunk.end - chunk.start  # finished before: not even decoded
            return
        source = VideoFileSource(chunk.spec, start=chunk.start, end=chunk.end)
        for name, image in self._read(source, result):
            yield name, None if done(name) else image
        if source.truncated:
            result["failed"] += source.truncated["declared"] - source.truncated["read"]

    @staticmethod
    def _read(source: Source, result: dict) -> Iterator[tuple[str, np.ndarray]]:
        """Every frame of ``source``; its warnings go to the chunk's result."""
        source.warn = result["warnings"].append
        try:
            while (frame := source.read(None)) is not None:
                yield frame.name, frame.image
        finally:
            result["failed"] += source.skipped
            source.close()

    def _process(self, group, masks_dir: Path, overlay_dir: Path | None) -> None:
        """Masks (and overlays) of same-sized frames, written overlay first."""
        opts = self.opts
        rgbs = [cv2.cvtColor(image, cv2.COLOR_BGR2RGB) for _, image in group]
        scores = predict_scores(self.backend, rgbs, opts.tta, opts.batch_size)                # (N, C, H, W)
        if opts.crf:
            probs = scores_to_probs(scores, opts.tta).numpy()
            masks = [dense_crf(p, rgb, opts.crf).argmax(0).astype(np.uint8) for p, rgb in zip(probs, rgbs)]
        else:
            # .max().indices is argmax (first maximum on ties), as rtseg eval takes it, but faster.
            masks = list(scores.max(1).indices.to(torch.uint8).numpy())
        for (name, image), mask in zip(group, masks):
            if self.renderer is not None:
                params = [cv2.IMWRITE_JPEG_QUALITY, 95] if opts.overlay_ext == "jpg" else []
                write_image(overlay_dir / f"{name}.{opts.overlay_ext}", self.renderer.render(image, mask), params)
            write_image(masks_dir / f"{name}.png", np.ascontiguousarray(mask))


__all__ = ["ChunkWorker", "MAX_ATTEMPTS", "STATE_DIR", "output_dirs", "write_image"]
