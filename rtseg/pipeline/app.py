"""``rtseg run`` as a library call: options in, outputs written, summary out.

Everything that can fail on user input (outputs, source, model, class names) is checked before
the first frame, in that order, so a typo costs no model loading and a bad model costs no
half-written files. Once frames flow, every ending (end of input, a signal, a lost source, a
failed stage) finalizes the outputs and writes the JSON before ``run`` returns or raises.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from rtseg import signals
from rtseg.backends.base import Backend
from rtseg.io import check_writable, write_json
from rtseg.pipeline import stages
from rtseg.pipeline.ending import ERROR, SOURCE_LOST
from rtseg.pipeline.overlay import Renderer, Style, parse_ignore
from rtseg.pipeline.runner import Pipeline, PipelineError, SourceLost
from rtseg.pipeline.sinks import DisplaySink, ImageDirSink, VideoSink, check_display, check_video_path
from rtseg.pipeline.sources import Source, SourceError, open_source
from rtseg.serve.hub import ServeSink
from rtseg.progress import Progress, log_silent, log_stderr, notice
from rtseg.temporal.pipeline import temporal_parts, temporal_summary
from rtseg.temporal.smooth import DEFAULT_ALPHA, DEFAULT_HOLD, check_smooth

DEFAULT_MODEL = "deeplabv3plus_camvid"


@dataclass
class RunOptions:
    """Everything ``rtseg run`` accepts; see ``rtseg run --help`` for each field."""

    source: str
    model: str = DEFAULT_MODEL
    device: str | None = None
    backend: str = "auto"           # auto | torch | onnxruntime | openvino | tensorrt (rtseg.resolve)
    precision: str | None = None    # None: fp32, or an exported file's own precision
    calib: str | None = None        # calibration frames for an INT8 export
    engines_dir: str | None = None  # where exports are cached (None: the user's cache, see export.cache)
    output: str | None = None
    save_masks: str | None = None
    save_overlay: str | None = None
    show: bool = False
    json: str | None = None
    max_frames: int | None = None
    vid_stride: int = 1
    reconnect: int = 0
    alpha: float = 0.5
    mode: str = "overlay"
    ignore_class: str | None = None
    size: tuple[int, int] | None = None
    hud: bool = True
    legend: bool = True
    threads: int | None = None
    quiet: bool = False
    smooth: str = "off"             # off | ema | flow (rtseg.temporal.smooth)
    smooth_alpha: float = DEFAULT_ALPHA  # the new frame's weight in the running average (README: Flicker)
    smooth_hold: float = DEFAULT_HOLD  # hysteresis margin on the shown class (README: Flicker)
    flicker: bool | None = None     # TC and changed pixels in the summary; None: on when smoothing
    flicker_defer: bool = False     # compute the flicker figures after the timed run (bounded runs only)
    strict: bool = False            # the first undecodable frame ends the run instead of being skipped
    costs: bool = True              # after the run: model-only FPS and each stage's CPU ms, measured alone
    serve: str | None = None        # [HOST:]PORT: the live view in a browser (rtseg.serve)
    snapshot_dir: str = "snapshots"  # where the browser's snapshot button writes


def run(opts: RunOptions, backend: Backend | None = None, source: Source | None = None) -> dict:
    """Runs the pipeline described by ``opts``; returns the summary (see ``stats.Stats.summary``).

    Args:
        opts: the options.
        backend: an already opened backend (benchmarks, tests); default ``open_backend(opts.model)``.
        source: an already opened source (tests simulate cameras this way); default from ``opts.source``.

    Raises:
        RtsegError subclasses for bad input; PipelineError when a stage failed and SourceLost when
        the source went away, both after finalizing the outputs (their ``summary`` is the run's).
    """
    style = Style(opts.mode, opts.alpha, hud=opts.hud, legend=opts.legend)
    check_smooth(opts.smooth, opts.smooth_alpha, opts.smooth_hold)
    if opts.output:
        check_video_path(Path(opts.output))
    if opts.json:
        check_writable(Path(opts.json))
    if opts.show:
        check_display()
    sinks: list = [ImageDirSink(d, kind) for d, kind in ((opts.save_masks, "mask"), (opts.save_overlay, "overlay")) if d]
    # Listening now: a port in use is refused before the source opens and the model loads.
    server = _open_server(opts, style)

    try:
        if source is None:
            source = open_source(opts.source, opts.vid_stride, opts.max_frames, opts.reconnect, opts.strict)
    except BaseException:
        if server is not None:
            server.close()
        raise
    threads = torch.get_num_threads()
    progress = pipeline = None
    try:
        if backend is None:
            from rtseg.resolve import FILE_STREAMS, open_for_run

            backend = open_for_run(opts.model, opts.device, opts.backend, opts.precision, opts.size, opts.calib,
                                   opts.engines_dir, log=log_silent if opts.quiet else log_stderr,
                                   streams=1 if source.live else FILE_STREAMS)
        signals.check()  # a signal during loading ends here, even if a library swallowed its exception
        meta = backend.meta
        renderer = Renderer(meta.colors, meta.class_names, style, parse_ignore(opts.ignore_class, meta.class_names))
        video = VideoSink(opts.output, source.fps, timestamps=source.live) if opts.output else None
        if video is not None:
            sinks.insert(0, video)
        stop = threading.Event()
        if opts.show:
            # First, so the window shows a frame before the files are encoded: that is the
            # capture-to-screen latency a viewer feels.
            sinks.insert(0, DisplaySink(style, stop))
        if server is not None:
            sinks.insert(0, ServeSink(server.hub))
        smoother, meter = temporal_parts(opts, meta.num_classes, source.live)
        if meter is not None:
            sinks.append(meter)
        if opts.threads:
            torch.set_num_threads(opts.threads)
        elif backend.runtime != "torch":
            # The model has its own thread pool; torch only serves the stages around it (smoothing),
            # and its OpenMP workers spin waiting for a core the model holds (torch's max over 11
            # classes: 16 ms of CPU on 2 threads under load, 4.5 ms on 1; docs/results.md#pipeline).
            torch.set_num_threads(1)
        # Created last: its clock gives the rate and ETA, and model loading is not frame time.
        progress = Progress(source.total, "run", "frame", enabled=not opts.quiet)
        pipeline = Pipeline(source, backend, renderer, sinks, opts.size, progress, stop=stop, smoother=smoother)
        if server is not None:
            server.hub.attach(pipeline.stats, stop, meta, _serve_info(opts, source, backend))
        # From here every ending finalizes the outputs; once the frames are done, a signal waits
        # for the JSON instead of losing it.
        with signals.deferred():
            summary = pipeline.run()
            summary.update(_costs(opts, pipeline, backend, renderer, sinks, summary))
            return _finish(opts, summary, source, backend, video, pipeline, torch.get_num_threads(),
                           smoother, meter)
    finally:
        torch.set_num_threads(threads)
        if pipeline is None:  # once started, the pipeline closes the source itself
            source.close()
        if progress is not None and progress.n:
            progress.close()
        if server is not None:  # after the JSON: a viewer never delays the outputs
            server.close()


def _open_server(opts: RunOptions, style: Style):
    """``--serve``: binds and starts the live view's server, or None without the option."""
    if not opts.serve:
        return None
    from rtseg.serve import open_server

    server = open_server(opts.serve, style, opts.snapshot_dir)
    if not opts.quiet:
        log_stderr(f"rtseg: live view at {server.url}")
    return server


def _serve_info(opts: RunOptions, source: Source, backend: Backend) -> dict:
    size = opts.size or backend.meta.input_size
    return {"model": backend.meta.name, "runtime": backend.runtime, "precision": backend.meta.precision,
            "source": source.description, "size": [int(size[0]), int(size[1])]}


def _costs(opts: RunOptions, pipeline: Pipeline, backend: Backend, renderer: Renderer, sinks: list,
           summary: dict) -> dict:
    """Model-only FPS and per-stage CPU ms measured alone after the last frame (rtseg.pipeline.costs),
    beside the end-to-end figures; skipped when asked, when no frame arrived or a signal ended the run."""
    last = pipeline.last
    none = {"model_fps": None, "model_only": None, "ratio": None, "stage_cpu_ms": None}
    if not opts.costs or last is None or summary["ending"] == ERROR or signals.received() is not None:
        return none
    from rtseg.pipeline import costs

    try:
        tensor = stages.preprocess(backend, last.image, opts.size)
        alone = costs.model_only(backend, tensor)
        decode = None if pipeline.source.live else costs.decode_cost(opts.source)
        cpu = costs.stage_costs(backend, renderer, last.image, opts.size, pipeline.stats.hud_text(),
                                alone["cpu_ms"], sinks, decode, pipeline.draw)
    except Exception as e:  # noqa: BLE001 - a measurement must never cost the run its JSON
        notice(f"model-only FPS and stage costs not measured: {type(e).__name__}: {e}")
        return none
    return {"model_fps": alone["fps"], "model_only": alone, "ratio": round(summary["fps"] / alone["fps"], 3),
            "stage_cpu_ms": cpu}


def _finish(opts: RunOptions, summary: dict, source: Source, backend: Backend, video: VideoSink | None,
            pipeline: Pipeline, threads: int, smoother, meter) -> dict:
    """Completes the summary, writes the JSON, and raises for the endings that are errors."""
    meta = backend.meta
    size = opts.size or meta.input_size
    summary.update({"source": source.description, "live": source.live, "source_fps": round(source.fps, 3),
                    "skipped_frames": source.skipped, "truncated": source.truncated,
                    "reconnects": getattr(source, "reconnects", 0),
                    "model": meta.name, "runtime": backend.runtime, "precision": meta.precision,
                    "size": [int(size[0]), int(size[1])], "codec": video.codec if video else None,
                    "video_s": video.duration_s if video else None, "threads": threads})
    if video is not None and video.discarded:
        summary["error"] += f"; the unfinished {opts.output} was removed"
    summary.update(temporal_summary(opts, smoother, meter))
    if opts.json:
        write_json(opts.json, {"summary": summary, "frames": pipeline.stats.records})
    if summary["frames"] == 0 and source.skipped:
        raise SourceError(f"no decodable frame in {source.description}: all {source.skipped} were skipped")
    if summary["ending"] == SOURCE_LOST:
        raise SourceLost(summary["error"], summary)
    if summary["ending"] == ERROR:
        raise PipelineError(summary["error"], summary) from pipeline.error[1] if pipeline.error else None
    return summary
