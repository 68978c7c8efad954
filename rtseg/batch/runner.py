"""``rtseg batch`` as a library call: folders, globs, videos in; masks, overlays and a summary out.

Throughput, not latency, matters here: frames of the same size are grouped into one backend call
per scale, and nothing is dropped. The inputs are cut into chunks (``inputs.py``) that run one
after the other in this process or spread over a Ray cluster (``ray_pool.py``); either way each
chunk runs through the same :class:`~rtseg.batch.work.ChunkWorker`, so both write the same masks.

Output layout (names as ``rtseg run --save-masks``: image stem, or ``%06d`` frame index)::

    OUT/masks/<name>.png      class ids, uint8, at the source resolution
    OUT/overlays/<name>.jpg   Cityscapes-colour overlay (unless overlays are off)
    OUT/summary.json          settings, counts, timings (and scores with --score-root)

With several inputs each one writes into its own subfolder: ``OUT/masks/<label>/<name>.png``.

Resuming: a frame whose mask exists is skipped (it costs a decode for videos, never a model
call; a video chunk whose masks all exist is not even opened). Every file is written under a
hidden temporary name and renamed when complete, and the overlay is renamed before the mask, so
an existing mask means a finished frame. ``summary.json`` is written before the first frame with
the settings that change predictions, and a later run whose settings differ refuses to add its
masks to the folder instead of mixing two models' outputs.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from rtseg.backends.base import Backend
from rtseg.batch.inputs import Chunk, expand_sources, plan_chunks
from rtseg.batch.options import OVERLAY_EXTS, BatchOptions
from rtseg.batch.work import STATE_DIR, ChunkWorker, output_dirs, write_image
from rtseg.errors import RtsegError
from rtseg.io import atomic_write_bytes, check_writable, ensure_dir, write_json
from rtseg.progress import Progress, log_silent, log_stderr, notice


class _Tally:
    """Counts over every chunk, and the lines to report."""

    def __init__(self):
        self.processed = self.skipped = self.failed = self.retried = 0
        self.ms: list[float] = []
        self.errors: list[str] = []

    def frames(self, n: int, ms: float) -> None:
        self.processed += n
        self.ms.extend([ms] * n)

    def add(self, result: dict, with_frames: bool) -> None:
        if with_frames:  # local runs count processed frames as they are written
            self.processed += result["processed"]
            self.ms.extend(result["ms"])
        self.skipped += result["skipped"]
        self.failed += result["failed"]
        self.retried += result["retried"]
        for line in result["warnings"]:
            notice(line)
        if result["error"]:
            self.errors.append(result["error"])
            notice(f"error: {result['error']} (rest of that chunk skipped)")


def _prepare_out(out: Path, overlay: bool) -> None:
    """Output folders, a write check, and no leftovers of a killed run."""
    ensure_dir(out / "masks", "--out")
    if overlay:
        ensure_dir(out / "overlays", "--out")
    check_writable(out / "summary.json")
    for sub in ("masks", "overlays"):
        for tmp in (out / sub).rglob(".*.incomplete.*") if (out / sub).is_dir() else ():
            tmp.unlink(missing_ok=True)
    shutil.rmtree(out / STATE_DIR / "claims", ignore_errors=True)  # attempts count per run


def _check_resume(out: Path, settings: dict) -> None:
    """Refuses to mix masks of different settings in one folder."""
    path = out / "summary.json"
    if not path.is_file() or not any((out / "masks").rglob("*.png")):
        return
    try:
        previous = json.loads(path.read_text()).get("settings")
    except (OSError, ValueError, AttributeError):
        return
    if previous and previous != settings:
        diff = ", ".join(f"{k} {previous.get(k)} -> {v}" for k, v in settings.items() if previous.get(k) != v)
        raise RtsegError(f"{out / 'masks'} holds masks made with other settings ({diff}); "
                         f"use another --out or delete that folder")


def _open_model(opts: BatchOptions) -> Backend:
    """As given, or through ``rtseg run``'s runtime selection when a backend or precision is asked."""
    if not opts.exported:
        from rtseg.backends import open_backend

        return open_backend(opts.model, device=opts.device)
    from rtseg.resolve import open_for_run

    return open_for_run(opts.model, opts.device, opts.backend or "auto", opts.precision, opts.size, opts.calib,
                        opts.engines_dir, log=log_silent if opts.quiet else log_stderr)


def _worker_model(opts: BatchOptions, backend: Backend, out: Path) -> tuple[str, str | None]:
    """What every Ray worker opens: the model file copied into the (shared) output folder, so
    that workers on other nodes need neither the driver's export cache nor its paths; a shipped
    name as it is (every node has the package)."""
    path = getattr(backend, "path", None) or (Path(opts.model) if Path(opts.model).is_file() else None)
    if path is None:
        return opts.model, backend.runtime if opts.exported else None
    path = Path(path)
    dest = ensure_dir(out / STATE_DIR / "model", "--out")
    for f in (path, path.with_suffix(".bin")) if path.suffix == ".xml" else (path,):
        atomic_write_bytes(dest / f.name, f.read_bytes())
    return str(dest / path.name), backend.runtime


def _todo(chunks: list[Chunk], out: Path, overlay: bool) -> int | None:
    """Frames without a mask yet (None when a video's length is unknown)."""
    n = 0
    for c in chunks:
        names = c.names()
        if names is None:
            return None
        masks, _ = output_dirs(out, c.label, overlay)
        n += sum(not (masks / f"{name}.png").is_file() for name in names)
    return n


def run_batch(opts: BatchOptions, backend: Backend | None = None,
              backend_factory: Callable[[], Backend] | None = None) -> dict:
    """Runs ``opts``; returns the summary that is also written to ``OUT/summary.json``.

    Args:
        opts: the options.
        backend: an already opened backend for a local run (tests); default: :func:`_open_model`.
        backend_factory: opens the model, called once per worker (and once here for its metadata);
            for models that are not files or shipped names.

    Raises:
        RtsegError subclasses for bad options, outputs, sources, models and Ray addresses, before
        any frame.
    """
    out = Path(opts.out)
    _prepare_out(out, opts.overlay)
    inputs, failed_inputs = expand_sources(opts.sources, opts.max_frames, warn=notice)
    if opts.score_root and len(inputs) + len(failed_inputs) > 1:
        raise RtsegError("--score-root scores one input; pass a single --source")
    chunks = plan_chunks(inputs, opts.chunk_frames, opts.max_frames)
    threads = torch.get_num_threads()
    connected = False
    try:
        if opts.ray is not None:
            from rtseg.batch import ray_pool

            address = None if opts.ray == "local" else opts.ray
            connected = ray_pool.connect(address, ray_pool.local_cpus(opts.workers, opts.num_cpus))
            cluster = ray_pool.check_resources(opts.workers, opts.num_cpus, opts.num_gpus)
        if backend is None:
            backend = backend_factory() if backend_factory else _open_model(opts)
        meta = backend.meta
        if meta.argmax_in_graph and (opts.tta.averaged or opts.crf):
            what = "--crf" if opts.crf and not opts.tta.averaged else "--scales/--flip/--tile"
            raise RtsegError(f"{what} needs class scores, but {opts.model} outputs class ids "
                             f"(argmax in graph); export it without --argmax")
        settings = opts.settings()
        if opts.exported:
            settings.update(runtime=backend.runtime, precision=meta.precision)
        _check_resume(out, settings)
        labels = None
        if opts.score_root:
            from rtseg.data import labelled_dataset

            labels = labelled_dataset(opts.score_data, opts.score_root, opts.score_split,
                                      ignore_index=meta.ignore_index)
        if opts.threads:
            torch.set_num_threads(opts.threads)
        write_json(out / "summary.json", {"settings": settings, "complete": False})
        progress = Progress(_todo(chunks, out, opts.overlay), "batch", "img", enabled=not opts.quiet)
        tally = _Tally()
        interrupted = False
        start = time.perf_counter()
        try:
            if opts.ray is None:
                worker = ChunkWorker(backend, opts)
                for chunk in chunks:
                    tally.add(worker.run(chunk, on_frames=lambda n, ms: (tally.frames(n, ms), progress.update(n))),
                              with_frames=False)
            else:
                model, runtime = _worker_model(opts, backend, out) if backend_factory is None else (opts.model, None)
                for result in ray_pool.run_chunks(chunks, opts, model, runtime, opts.workers, opts.num_cpus,
                                                  opts.num_gpus, backend_factory):
                    tally.add(result, with_frames=True)
                    progress.update(result["processed"] + result["failed"], failed=tally.failed)
        except KeyboardInterrupt:
            interrupted = True  # the finished frames are on disk; a re-run continues from there
        finally:
            if progress.n:
                progress.close()
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
        if connected:
            ray_pool.disconnect()

    summary = _summary(opts, backend, settings, inputs, failed_inputs, tally, seconds, interrupted, len(chunks))
    if opts.ray is not None:
        summary["ray"] = {"address": opts.ray, "workers": opts.workers, "num_cpus": opts.num_cpus,
                          "num_gpus": opts.num_gpus, "cluster": cluster}
    if labels is not None and not interrupted:
        from rtseg.batch.score import score_masks

        summary["score"] = {"data": opts.score_data, "root": str(opts.score_root), "split": opts.score_split,
                            **score_masks(out / "masks", labels, meta.class_names, meta.ignore_index)}
    write_json(out / "summary.json", summary)
    if not interrupted:
        shutil.rmtree(out / STATE_DIR, ignore_errors=True)
    elif not opts.quiet:
        notice(f"interrupted after {tally.processed} frames; run the same command again to continue")
    return summary


def _summary(opts: BatchOptions, backend: Backend, settings: dict, inputs, failed_inputs, tally: _Tally,
             seconds: float, interrupted: bool, chunks: int) -> dict:
    ms, processed = tally.ms, tally.processed
    return {
        "model": backend.meta.name, "model_spec": opts.model, "runtime": backend.runtime,
        "precision": backend.meta.precision, "source": ", ".join(opts.sources), "out": str(opts.out),
        "inputs": [{"source": i.spec, "label": i.label, "kind": i.kind,
                    "frames": len(i.files) if i.kind == "images" else i.frames} for i in inputs],
        "failed_inputs": failed_inputs,
        "frames_total": processed + tally.skipped + tally.failed, "frames_processed": processed,
        "frames_skipped": tally.skipped, "frames_failed": tally.failed, "frames_retried": tally.retried,
        "errors": tally.errors,
        "seconds": round(seconds, 3), "images_per_s": round(processed / seconds, 3) if processed else None,
        "ms_per_frame_mean": round(float(np.mean(ms)), 2) if ms else None,
        "ms_per_frame_p50": round(float(np.median(ms)), 2) if ms else None,
        "batch_size": opts.batch_size, "chunks": chunks, "chunk_frames": opts.chunk_frames,
        "overlays": opts.overlay_ext if opts.overlay else None,
        "settings": settings, "views_per_frame": opts.tta.views, "ray": None,
        "interrupted": interrupted, "complete": not interrupted,
    }


def format_summary(summary: dict) -> str:
    """Two to four lines for the terminal."""
    s = summary["settings"]
    lines = [f"batch {summary['model']} ({summary['runtime']})  {summary['frames_processed']} processed, "
             f"{summary['frames_skipped']} skipped of {summary['frames_total']}  "
             f"{summary['seconds']:.1f} s  {summary['images_per_s'] or 0:.3g} img/s  "
             f"{summary['ms_per_frame_mean'] or 0:.0f} ms/img",
             f"scales {','.join(f'{v:g}' for v in s['scales'])}  flip {s['flip']}  "
             f"tile {'x'.join(map(str, s['tile'])) if s['tile'] else 'off'}  crf {'on' if s['crf'] else 'off'}"
             f"  -> {summary['out']}"]
    if summary.get("ray"):
        r = summary["ray"]
        lines[1] += f"  ray {r['address']} x{r['workers']}"
    failed, retried = summary.get("frames_failed", 0), summary.get("frames_retried", 0)
    if failed or retried or summary.get("failed_inputs"):
        lines.append(f"{len(summary['failed_inputs'])} input(s) unreadable, {failed} frame(s) failed, "
                     f"{retried} frame(s) retried after a worker died (details in summary.json)")
    if "score" in summary:
        sc = summary["score"]
        lines.append(f"mIoU {100 * (sc['miou'] or 0):.2f}  pixel acc {100 * (sc['pixel_acc'] or 0):.2f}  "
                     f"({sc['images']} images of {sc['data']}:{sc['split']}, {sc['missing']} without a mask)")
    return "\n".join(lines)


__all__ = ["BatchOptions", "OVERLAY_EXTS", "format_summary", "run_batch", "write_image"]
