"""``rtseg batch`` as a library call: a folder, glob or video in; masks, overlays and a summary out.

Offline and sequential on purpose: throughput, not latency, matters here, so frames of the same
size are grouped into one backend call per scale, and nothing is dropped.

Output layout (names as ``rtseg run --save-masks``: image stem, or ``%06d`` frame index)::

    OUT/masks/<name>.png      class ids, uint8, at the source resolution
    OUT/overlays/<name>.jpg   Cityscapes-colour overlay (unless overlays are off)
    OUT/summary.json          settings, counts, timings (and scores with --score-root)

Resuming: a frame whose mask exists is skipped (it costs a decode for videos, never a model
call). Every file is written under a hidden temporary name and renamed when complete, and the
overlay is renamed before the mask, so an existing mask means a finished frame. ``summary.json``
is written before the first frame with the settings that change predictions, and a later run
whose settings differ refuses to add its masks to the folder instead of mixing two models'
outputs.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from rtseg.backends.base import Backend
from rtseg.batch.crf import CRFParams, dense_crf
from rtseg.tta import TTAOptions, predict_scores, scores_to_probs
from rtseg.errors import RtsegError
from rtseg.pipeline.app import DEFAULT_MODEL, write_json
from rtseg.pipeline.overlay import Renderer, Style
from rtseg.pipeline.sinks import SinkError, check_writable, ensure_dir, temp_name
from rtseg.pipeline.sources import ImageSource, Source, SourceError, open_source
from rtseg.progress import Progress, notice
from rtseg.zoo import default_batch_model

OVERLAY_EXTS = ("jpg", "png")


@dataclass
class BatchOptions:
    """Everything ``rtseg batch`` accepts; see ``rtseg batch --help`` for each field.

    ``overlap=None`` with a tile means a third of the tile's shorter side.
    """

    source: str
    out: str
    # The shipped batch model where it is installed: a run resumed from the CLI must pick the same.
    model: str = field(default_factory=lambda: default_batch_model(DEFAULT_MODEL))
    device: str | None = None
    batch_size: int = 4
    size: tuple[int, int] | None = None
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    tile: tuple[int, int] | None = None
    overlap: int | None = None
    crf: CRFParams | None = None
    overlay: bool = True
    overlay_ext: str = "jpg"
    max_frames: int | None = None
    threads: int | None = None
    quiet: bool = False
    score_root: str | None = None
    score_split: str = "val"
    score_data: str = "camvid"
    tta: TTAOptions = field(init=False)

    def __post_init__(self):
        if self.batch_size < 1:
            raise RtsegError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.overlay_ext not in OVERLAY_EXTS:
            raise RtsegError(f"--overlay-ext must be one of {', '.join(OVERLAY_EXTS)}, got '{self.overlay_ext}'")
        overlap = self.overlap
        if overlap is None:
            overlap = min(self.tile) // 3 if self.tile else 0
        self.tta = TTAOptions(self.size, tuple(self.scales), self.flip, self.tile, overlap)

    def settings(self) -> dict:
        """What decides the masks; a resumed run must match it."""
        return {"model": self.model, **self.tta.to_dict(),
                "crf": self.crf.to_dict() if self.crf else None}


def write_image(path: Path, image: np.ndarray, params: list[int] | tuple = ()) -> None:
    """Encodes by suffix, writes under :func:`temp_name`, renames: never a partial file."""
    ok, data = cv2.imencode(path.suffix, image, list(params))
    if not ok:
        raise SinkError(f"cannot encode {path.name}")
    tmp = temp_name(path)
    try:
        tmp.write_bytes(data.tobytes())
        os.replace(tmp, path)
    except OSError as e:
        raise SinkError(f"cannot write {path}: {e.strerror}") from None


def _frames(source: Source, done):
    """Yields ``(name, bgr)`` for every frame, ``bgr`` None where ``done(name)``: image files
    that are done are not even decoded; video frames must be, to reach the next one."""
    if isinstance(source, ImageSource):
        for path in source.files:
            if done(path.stem):
                yield path.stem, None
                continue
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                raise SourceError(f"cannot decode image (corrupt or unsupported format): {path}")
            yield path.stem, image
        return
    import threading

    never = threading.Event()
    while (item := source.read(never)) is not None:
        _, name, image = item
        yield name, None if done(name) else image


def _expected_names(source: Source) -> list[str] | None:
    """Names the source will produce, when known without decoding (for the progress total)."""
    if isinstance(source, ImageSource):
        return [p.stem for p in source.files]
    if source.total is not None:
        return [f"{i:06d}" for i in range(source.total)]  # stride 1: names are frame indices
    return None


def _check_resume(out: Path, masks: Path, settings: dict) -> None:
    """Refuses to mix masks of different settings in one folder."""
    path = out / "summary.json"
    if not path.is_file() or not any(masks.glob("*.png")):
        return
    try:
        previous = json.loads(path.read_text()).get("settings")
    except (OSError, ValueError, AttributeError):
        return
    if previous and previous != settings:
        diff = ", ".join(f"{k} {previous.get(k)} -> {v}" for k, v in settings.items() if previous.get(k) != v)
        raise RtsegError(f"{masks} holds masks made with other settings ({diff}); "
                         f"use another --out or delete that folder")


def run_batch(opts: BatchOptions, backend: Backend | None = None) -> dict:
    """Runs ``opts``; returns the summary that is also written to ``OUT/summary.json``.

    Args:
        opts: the options.
        backend: an already opened backend (tests); default ``open_backend(opts.model, opts.device)``.

    Raises:
        RtsegError subclasses for bad options, outputs, sources and models, before any frame.
    """
    out = Path(opts.out)
    masks_dir = ensure_dir(out / "masks", "--out")
    overlay_dir = ensure_dir(out / "overlays", "--out") if opts.overlay else None
    check_writable(out / "summary.json")
    for d in (masks_dir, overlay_dir):  # leftovers of a killed run
        for tmp in (d.glob(".*.incomplete.*") if d else ()):
            tmp.unlink(missing_ok=True)
    _check_resume(out, masks_dir, opts.settings())

    source = open_source(opts.source, 1, opts.max_frames)
    threads = torch.get_num_threads()
    try:
        if source.live:
            raise SourceError(f"rtseg batch reads files (folder, glob, video), not {source.description}; "
                              f"use rtseg run for cameras and streams")
        if backend is None:
            from rtseg.backends import open_backend

            backend = open_backend(opts.model, device=opts.device)
        meta = backend.meta
        if meta.argmax_in_graph and (opts.tta.averaged or opts.crf):
            what = "--crf" if opts.crf and not opts.tta.averaged else "--scales/--flip/--tile"
            raise RtsegError(f"{what} needs class scores, but {opts.model} outputs class ids "
                             f"(argmax in graph); export it without --argmax")
        labels = None
        if opts.score_root:
            from rtseg.data import labelled_dataset

            labels = labelled_dataset(opts.score_data, opts.score_root, opts.score_split,
                                      ignore_index=meta.ignore_index)
        if opts.threads:
            torch.set_num_threads(opts.threads)
        renderer = Renderer(meta.colors, meta.class_names, Style(hud=False)) if opts.overlay else None
        summary = {"settings": opts.settings(), "complete": False}
        write_json(out / "summary.json", summary)
        done = lambda name: (masks_dir / f"{name}.png").is_file()  # noqa: E731
        names = _expected_names(source)
        todo = None if names is None else sum(not done(n) for n in names)
        progress = Progress(todo, "batch", "img", enabled=not opts.quiet)
        ms: list[float] = []
        seen = skipped = 0
        interrupted = False
        start = time.perf_counter()
        group: list[tuple[str, np.ndarray]] = []

        def flush():
            t0 = time.perf_counter()
            _process(backend, opts, group, masks_dir, overlay_dir, renderer)
            # A group is one unit of work: its time (inference, CRF, encoding) is shared equally.
            ms.extend([(time.perf_counter() - t0) * 1000 / len(group)] * len(group))
            progress.update(len(group))
            group.clear()

        try:
            for name, image in _frames(source, done):
                seen += 1
                if image is None:
                    skipped += 1
                    continue
                if group and group[0][1].shape != image.shape:
                    flush()
                group.append((name, image))
                if len(group) >= opts.batch_size:
                    flush()
            if group:
                flush()
        except KeyboardInterrupt:
            interrupted = True  # the finished frames are on disk; a re-run continues from there
        finally:
            if progress.n:
                progress.close()
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
        source.close()

    processed = len(ms)
    summary = {
        "model": meta.name, "model_spec": opts.model, "runtime": backend.runtime,
        "precision": meta.precision, "source": source.description, "out": str(out),
        "frames_total": seen, "frames_processed": processed, "frames_skipped": skipped,
        "seconds": round(seconds, 3), "images_per_s": round(processed / seconds, 3) if processed else None,
        "ms_per_frame_mean": round(float(np.mean(ms)), 2) if ms else None,
        "ms_per_frame_p50": round(float(np.median(ms)), 2) if ms else None,
        "batch_size": opts.batch_size, "overlays": opts.overlay_ext if opts.overlay else None,
        "settings": opts.settings(), "views_per_frame": opts.tta.views,
        "interrupted": interrupted, "complete": not interrupted,
    }
    if labels is not None and not interrupted:
        from rtseg.batch.score import score_masks

        summary["score"] = {"data": opts.score_data, "root": str(opts.score_root), "split": opts.score_split,
                            **score_masks(masks_dir, labels, meta.class_names, meta.ignore_index)}
    write_json(out / "summary.json", summary)
    if interrupted and not opts.quiet:
        notice(f"interrupted after {processed} frames; run the same command again to continue")
    return summary


def _process(backend: Backend, opts: BatchOptions, group, masks_dir: Path, overlay_dir: Path | None,
             renderer: Renderer | None) -> None:
    """Masks (and overlays) of same-sized frames, written overlay first."""
    rgbs = [cv2.cvtColor(image, cv2.COLOR_BGR2RGB) for _, image in group]
    scores = predict_scores(backend, rgbs, opts.tta, opts.batch_size)                     # (N, C, H, W)
    if opts.crf:
        probs = scores_to_probs(scores, opts.tta).numpy()
        masks = [dense_crf(p, rgb, opts.crf).argmax(0).astype(np.uint8) for p, rgb in zip(probs, rgbs)]
    else:
        # .max().indices is argmax (first maximum on ties), as rtseg eval takes it, but faster.
        masks = list(scores.max(1).indices.to(torch.uint8).numpy())
    for (name, image), mask in zip(group, masks):
        if renderer is not None:
            params = [cv2.IMWRITE_JPEG_QUALITY, 95] if opts.overlay_ext == "jpg" else []
            write_image(overlay_dir / f"{name}.{opts.overlay_ext}", renderer.render(image, mask), params)
        write_image(masks_dir / f"{name}.png", np.ascontiguousarray(mask))


def format_summary(summary: dict) -> str:
    """Two or three lines for the terminal."""
    s = summary["settings"]
    lines = [f"batch {summary['model']} ({summary['runtime']})  {summary['frames_processed']} processed, "
             f"{summary['frames_skipped']} skipped of {summary['frames_total']}  "
             f"{summary['seconds']:.1f} s  {summary['images_per_s'] or 0:.3g} img/s  "
             f"{summary['ms_per_frame_mean'] or 0:.0f} ms/img",
             f"scales {','.join(f'{v:g}' for v in s['scales'])}  flip {s['flip']}  "
             f"tile {'x'.join(map(str, s['tile'])) if s['tile'] else 'off'}  crf {'on' if s['crf'] else 'off'}"
             f"  -> {summary['out']}"]
    if "score" in summary:
        sc = summary["score"]
        lines.append(f"mIoU {100 * (sc['miou'] or 0):.2f}  pixel acc {100 * (sc['pixel_acc'] or 0):.2f}  "
                     f"({sc['images']} images of {sc['data']}:{sc['split']}, {sc['missing']} without a mask)")
    return "\n".join(lines)


__all__ = ["BatchOptions", "OVERLAY_EXTS", "format_summary", "run_batch", "write_image"]
