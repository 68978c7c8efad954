"""``rtseg bench --pipeline``: the pipeline against the model alone, on the runtime ``rtseg run``
uses by default (the same artifact, runtime and thread settings), in one run.

Measurements on the same clip and the same loaded model, one after the other:

1. *model only*: the model on one preprocessed frame, repeated, nothing else running, with as
   many requests in flight as the pipeline keeps (``Backend.inflight``);
2. *naive loop*: read -> preprocess -> infer -> postprocess -> overlay -> write in one thread,
   the way a first demo script is written;
3. *pipeline, video*: ``rtseg run`` with H.264 output, masks and JSON (five overlapping threads);
4. *pipeline, masks*: the same with masks only;
5. *live*: the clip replayed at its own frame rate like a camera, newest frame only.

Reported: FPS of each, each pipeline's end-to-end / model-only ratio, the speed-up over the naive
loop, p50/p99 latency (decoded frame to written frame; the pipeline's includes queueing), the CPU
milliseconds per frame of each stage measured alone, and the cost of upsampling logits before the
argmax vs resizing the argmax mask.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rtseg.assets import SAMPLE_CLIP
from rtseg.cpustat import StealMeter
from rtseg.pipeline import costs, stages
from rtseg.io import write_json
from rtseg.pipeline.app import RunOptions, run
from rtseg.pipeline.overlay import Renderer, Style
from rtseg.pipeline.sinks import VideoSink
from rtseg.pipeline.sources import Source, SourceError, VideoFileSource, open_source
from rtseg.pipeline.stats import Stats
from rtseg.progress import Progress, notice

DEFAULT_CLIP = str(SAMPLE_CLIP)  # the dashcam clip that ships with rtseg
# Steal share above which the report says the run was disturbed: the development VM's quiet runs
# had under 1 %, its busy ones 5-6 %.
STEAL_WARN = 0.02


class ReplaySource(Source):
    """A video file delivered at its own frame rate, like a camera: frame i exists at t0 + i / fps."""

    live = True

    def __init__(self, path: str, max_frames: int | None):
        self.inner = VideoFileSource(path, 1, max_frames)
        self.fps, self.description = self.inner.fps, f"{path} (replayed live)"
        self.t0: float | None = None

    def read(self, stop):
        if self.t0 is None:
            self.t0 = time.perf_counter()
        frame = self.inner.read(stop)
        if frame is not None:
            wait = self.t0 + frame.index / self.fps - time.perf_counter()
            if wait > 0 and stop.wait(wait):
                return None
            frame.t_capture = time.perf_counter()  # a camera's frame is captured when it exists
        return frame

    def close(self):
        self.inner.close()


def _naive(backend, source_path: str, frames: int, size, out: Path, quiet: bool) -> dict:
    source = open_source(source_path, max_frames=frames)
    sink = VideoSink(out, source.fps)
    renderer = Renderer(backend.meta.colors, backend.meta.class_names, Style())
    stats = Stats()
    stats.start()
    with Progress(source.total, "naive loop", "frame", enabled=not quiet) as bar:
        try:
            while (frame := source.read(None)) is not None:
                t0 = frame.t_capture
                logits = stages.infer(backend, stages.preprocess(backend, frame.image, size))
                with torch.inference_mode():
                    frame.mask = stages.to_mask(backend, logits, frame.image.shape[:2])
                frame.view = renderer.render(frame.image, frame.mask, stats.hud_text())
                sink.write(frame)
                stats.add(frame.index, frame.name, {}, t0)
                bar.update()
        finally:
            source.close()
            sink.close(commit=False)  # the file is a by-product; only its cost matters
    s = stats.summary()
    return {"fps": s["fps"], "frames": s["frames"], "latency_ms": s["latency_ms"]}


def _dense_bilinear_argmax(logits: torch.Tensor, out_hw: tuple[int, int]) -> np.ndarray:
    """The reference the pipeline's sparse version replaces: upsample every class, then argmax."""
    up = torch.nn.functional.interpolate(logits, size=out_hw, mode="bilinear", align_corners=False)
    return up.max(1).indices[0].to(torch.uint8).numpy()


def _postprocess_cost(backend, tensor: np.ndarray, out_hw: tuple[int, int], n: int = 20) -> dict:
    if backend.meta.argmax_in_graph:
        return {}  # the artifact outputs ids: nearest resize is the only choice
    logits = stages.infer(backend, tensor)
    result = {}
    with torch.inference_mode():
        for name, fn in (("bilinear_logits_argmax", stages.logits_to_mask),
                         ("dense_bilinear_argmax", _dense_bilinear_argmax),
                         ("argmax_nearest", stages.logits_to_mask_nearest)):
            fn(logits, out_hw)
            t = time.perf_counter()
            for _ in range(n):
                fn(logits, out_hw)
            result[name] = round((time.perf_counter() - t) / n * 1000, 2)
        # How often the cheap version disagrees: the pixels near class boundaries.
        a = stages.logits_to_mask(logits, out_hw)
        b = stages.logits_to_mask_nearest(logits, out_hw)
        result["pixels_differing"] = round(float((a != b).mean()), 4)
    return result


def _open(model: str | None, device: str | None, backend: str, precision: str | None, size, calib,
          engines_dir: str | None, quiet: bool, live: bool = False):
    """The backend ``rtseg run`` would open for these options (INT8 by default on a CPU runtime)
    and a file (``live=False``) or a camera."""
    from rtseg.resolve import FILE_STREAMS, open_for_run
    from rtseg.pipeline.app import DEFAULT_MODEL
    from rtseg.progress import log_silent, log_stderr

    return open_for_run(model or DEFAULT_MODEL, device, backend, precision, size, calib, engines_dir,
                        log=log_silent if quiet else log_stderr, streams=1 if live else FILE_STREAMS)


def _piped(summary: dict) -> dict:
    return {"fps": summary["fps"], "latency_ms": summary["latency_ms"], "stages_ms": summary["stages_ms"],
            "model_fps_in_pipeline": summary["model_fps_in_pipeline"]}


def pipeline_benchmark(model: str | None = None, source: str = DEFAULT_CLIP, frames: int | None = None,
                       size: tuple[int, int] | None = None, threads: int | None = None, warmup: int = 5,
                       json_path: str | None = None, quiet: bool = False, device: str | None = None,
                       backend=None, runtime: str = "auto", precision: str | None = None,
                       calib: str | None = None, engines_dir: str | None = None) -> dict:
    """Runs the measurements; returns them as a dict (also written to ``json_path``).

    ``runtime``, ``precision``, ``calib`` and ``engines_dir`` choose the artifact as ``rtseg run``'s
    ``--backend``, ``--precision``, ``--calib`` and ``--engines`` do; ``backend`` passes one already open.
    """
    probe = open_source(source, max_frames=frames)  # fails early on a missing clip
    if probe.live:
        probe.close()
        raise SourceError(f"bench --pipeline needs a video file, not a live source ({source})")
    first = probe.read(None).image
    total = probe.total
    probe.close()
    saved_threads = torch.get_num_threads()
    try:
        if threads:
            torch.set_num_threads(threads)
        given = backend is not None
        backend = backend or _open(model, device, runtime, precision, size, calib, engines_dir, quiet)
        # rtseg run opens a camera with one request at a time (latency), as a demo script would:
        # the live replay and the naive loop run that one.
        single = backend if given or backend.inflight == 1 else \
            _open(model, device, runtime, precision, size, calib, engines_dir, True, live=True)
        tensor = stages.preprocess(backend, first, size)
        n = max(10, min(total or 50, 50))
        if not quiet:
            notice(f"model only: {warmup} warm-up + {n} runs")
        meter = StealMeter()
        model_only = costs.model_only(backend, tensor, warmup=warmup, runs=n, budget_s=None)
        steal = {"model_only": meter.lap()}
        post = _postprocess_cost(backend, tensor, first.shape[:2])
        meter.lap()  # the post-processing timings are not among the reported measurements
        with tempfile.TemporaryDirectory(prefix="rtseg-bench-") as tmp:
            naive = _naive(single, source, total, size, Path(tmp) / "naive.mp4", quiet)
            steal["naive"] = meter.lap()
            video = run(RunOptions(source=source, max_frames=total, output=str(Path(tmp) / "pipeline.mp4"),
                                   save_masks=str(Path(tmp) / "masks-v"), json=str(Path(tmp) / "run.json"),
                                   size=size, quiet=quiet), backend=backend)
            steal["pipeline"] = meter.lap()
            masks = run(RunOptions(source=source, max_frames=total, save_masks=str(Path(tmp) / "masks"),
                                   size=size, quiet=quiet, costs=False), backend=backend)
            steal["masks"] = meter.lap()
            live = run(RunOptions(source=source, output=str(Path(tmp) / "live.mp4"), size=size, quiet=quiet,
                                  costs=False), backend=single, source=ReplaySource(source, total))
            steal["live"] = meter.lap()
    finally:
        torch.set_num_threads(saved_threads)
    used = size or backend.meta.input_size
    result = {
        "model": backend.meta.name, "runtime": backend.runtime, "precision": backend.meta.precision,
        "size": [int(used[0]), int(used[1])], "source": source, "frames": video["frames"],
        "frame_size": [int(first.shape[0]), int(first.shape[1])], "threads": threads or saved_threads,
        "model_only": model_only, "naive": naive, "pipeline": _piped(video), "masks_only": _piped(masks),
        "live": {"fps": live["fps"], "frames": live["frames"], "dropped": live["dropped"],
                 "latency_ms": live["latency_ms"], "source_fps": live["source_fps"]},
        "ratio_end_to_end_model_only": round(video["fps"] / model_only["fps"], 3),
        "ratio_masks_only_model_only": round(masks["fps"] / model_only["fps"], 3),
        "speedup_over_naive": round(video["fps"] / naive["fps"], 3) if naive["fps"] else 0.0,
        "stage_cpu_ms": video["stage_cpu_ms"],
        "postprocess_ms": post,
        # Hypervisor steal during each measurement (share of CPU time; None off Linux).
        "cpu_steal": steal,
    }
    if json_path:
        write_json(json_path, result)
    return result


def format_benchmark(r: dict) -> str:
    """The table ``rtseg bench --pipeline`` prints."""
    rows = [("model only", r["model_only"], f"the model alone, nothing else running, "
                                            f"{r['model_only'].get('inflight', 1)} in flight"),
            ("naive loop", r["naive"], "read->infer->overlay->write, one thread, one request"),
            ("pipeline", r["pipeline"], f"H.264 + masks + JSON, every frame "
                                        f"(ratio {r['ratio_end_to_end_model_only']:.2f} of model only)"),
            ("masks only", r["masks_only"], f"masks, every frame (ratio {r['ratio_masks_only_model_only']:.2f})"),
            ("live", r["live"], f"clip replayed at {r['live']['source_fps']:g} fps, newest frame only: "
                                f"{r['live']['dropped']} of {r['live']['frames'] + r['live']['dropped']} dropped")]
    h, w = r["frame_size"]
    lines = [f"{r['model']} ({r['runtime']}, {r['precision']}) at {r['size'][0]}x{r['size'][1]}, "
             f"{r['frames']} frames of {w}x{h} from {Path(r['source']).name}, {r['threads']} torch threads",
             f"{'':<12}{'FPS':>8}{'p50 ms':>9}{'p99 ms':>9}  (latency: decoded frame to written frame)"]
    for name, m, note in rows:
        lines.append(f"{name:<12}{m['fps']:>8.2f}{m['latency_ms']['p50']:>9.1f}{m['latency_ms']['p99']:>9.1f}  {note}")
    lines.append(f"speed-up over naive {r['speedup_over_naive']:.2f}x (pipeline with video vs the naive loop)")
    cpu = r.get("stage_cpu_ms")
    if cpu:
        lines.append("CPU ms per frame, each stage alone: "
                     + "  ".join(f"{k} {'--' if v is None else f'{v:.1f}'}" for k, v in cpu.items()))
    p = r["postprocess_ms"]
    if p:
        lines.append(f"postprocess at {w}x{h}: bilinear logits + argmax {p['bilinear_logits_argmax']:.1f} ms "
                     f"(boundary pixels only; {p['dense_bilinear_argmax']:.1f} ms upsampling every class), "
                     f"argmax + nearest resize {p['argmax_nearest']:.1f} ms "
                     f"({100 * p['pixels_differing']:.1f}% of pixels differ)")
    steal = r.get("cpu_steal") or {}
    if any(v is not None for v in steal.values()):
        shares = "  ".join(f"{k.replace('_', ' ')} {100 * v:.1f}%" for k, v in steal.items() if v is not None)
        lines.append(f"CPU time stolen by the hypervisor: {shares}"
                     + (f"  (above {100 * STEAL_WARN:g}% the figures vary; re-run on a quieter host)"
                        if max(v for v in steal.values() if v is not None) > STEAL_WARN else ""))
    return "\n".join(lines)
