"""What the model and each stage cost when measured alone, on the artifact a run used.

Inside the pipeline every stage shares the cores with the others, so the inference stage's own
timing is not what the model can do: on two cores it took 22-29 ms a frame in the pipeline against
11 ms alone. ``rtseg run`` therefore measures, after its last frame (nothing else running, same
backend object, same runtime and thread settings):

* **model only**: repeated inference on the last frame's tensor; wall-clock latency and FPS;
* **CPU milliseconds per frame of each stage**, each run alone on the last frame: decoding the
  source (files), preprocessing, inference (all of the runtime's threads), postprocessing,
  drawing, and the outputs: the H.264 encoder's own process CPU over the run divided by its
  frames, plus the PNG/JPEG encoding of the image folders.

CPU time is read with ``time.process_time`` (every thread of this process) and, for the encoder,
from the kernel's accounting of the finished ffmpeg process.
"""
from __future__ import annotations

import time
from collections import deque

import numpy as np
import torch

from rtseg.backends.base import Backend
from rtseg.pipeline import stages
from rtseg.pipeline.stats import percentiles

# The model-only loop stops at MAX_RUNS or after BUDGET_S, whichever comes first (at least
# MIN_RUNS): about a second at the end of a run for a 20-50 ms model.
WARMUP, MIN_RUNS, MAX_RUNS, BUDGET_S = 3, 5, 30, 1.5


def model_only(backend: Backend, tensor: np.ndarray, warmup: int = WARMUP, runs: int = MAX_RUNS,
               budget_s: float | None = BUDGET_S, min_runs: int = MIN_RUNS, class_ids: bool = False) -> dict:
    """The model alone on one preprocessed frame: {fps, latency_ms, cpu_ms, runs, inflight}.

    Run as the pipeline runs it: ``backend.inflight`` frames submitted at a time (one for most
    runtimes), so ``fps`` is frames over elapsed time and ``latency_ms`` each frame's submission
    to result; ``cpu_ms`` is the CPU time per frame over all threads. With ``class_ids`` the timed
    call is ``predict_ids`` one frame at a time (network + argmax, for logits and argmax-in-graph
    artifacts alike), which is what answers whether putting argmax in the graph pays.
    """
    depth = 1 if class_ids else max(1, backend.inflight)
    if class_ids:
        def submit():
            out = backend.predict_ids(tensor[None])
            return lambda: out
    else:
        def submit():
            return stages.submit(backend, tensor)
    for _ in range(warmup):
        submit()()
    times: list[float] = []
    pending: deque = deque()
    cpu0, start = time.process_time(), time.perf_counter()
    while len(times) + len(pending) < runs and (budget_s is None or len(times) < min_runs
                                                or time.perf_counter() - start < budget_s):
        pending.append((time.perf_counter(), submit()))
        if len(pending) >= depth:
            t, result = pending.popleft()
            result()
            times.append((time.perf_counter() - t) * 1000)
    while pending:
        t, result = pending.popleft()
        result()
        times.append((time.perf_counter() - t) * 1000)
    elapsed, cpu = time.perf_counter() - start, (time.process_time() - cpu0) * 1000 / len(times)
    return {"fps": round(len(times) / elapsed, 3), "latency_ms": percentiles(times), "cpu_ms": round(cpu, 2),
            "runs": len(times), "inflight": depth}


def _cpu_ms(fn, *args, runs: int = 5) -> float:
    """Mean CPU milliseconds of ``fn(*args)`` over ``runs`` calls after one untimed call."""
    fn(*args)
    t = time.process_time()
    for _ in range(runs):
        fn(*args)
    return round((time.process_time() - t) * 1000 / runs, 2)


def stage_costs(backend: Backend, renderer, image: np.ndarray, size, hud_text: str | None,
                inference_cpu_ms: float, sinks: list = (), decode_ms: float | None = None,
                draw: bool = True) -> dict:
    """CPU ms per frame of each stage, each measured alone on ``image`` (the last frame).

    Args:
        inference_cpu_ms: from :func:`model_only` (the same loop gives it).
        sinks: the run's sinks; each one with a ``cpu_ms_per_frame()`` reports its own cost.
        decode_ms: the source's decoding cost, when it could be measured (files).
        draw: whether the run drew the overlay (None for its cost otherwise).
    """
    tensor = stages.preprocess(backend, image, size)
    with torch.inference_mode():
        output = stages.infer(backend, tensor)
        hw = image.shape[:2]
        mask = stages.to_mask(backend, output, hw)
        costs = {
            "capture": decode_ms,
            "preprocess": _cpu_ms(stages.preprocess, backend, image, size),
            "inference": inference_cpu_ms,
            "postprocess": _cpu_ms(stages.to_mask, backend, output, hw),
            "overlay": _cpu_ms(renderer.render, image, mask, hud_text) if draw else None,
        }
    view = renderer.render(image, mask, hud_text)
    sink_ms = [s.cpu_ms_per_frame(mask, view) for s in sinks if hasattr(s, "cpu_ms_per_frame")]
    known = [v for v in sink_ms if v is not None]
    costs["sink"] = round(sum(known), 2) if known else None
    return costs


def decode_cost(path: str, frames: int = 10) -> float | None:
    """CPU ms per decoded frame of a video file or image folder, None if it cannot be opened."""
    from rtseg.pipeline.sources import SourceError, open_source

    try:
        source = open_source(path, max_frames=frames + 1)
    except SourceError:
        return None
    source.warn = lambda _line: None  # the run already reported its bad frames once
    try:
        if source.live or source.read(None) is None:  # the first read opens the decoder: untimed
            return None
        t, n = time.process_time(), 0
        while n < frames and source.read(None) is not None:
            n += 1
        return round((time.process_time() - t) * 1000 / n, 2) if n else None
    finally:
        source.close()
