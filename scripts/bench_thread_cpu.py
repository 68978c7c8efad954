"""Where the CPU goes inside `rtseg run`: CPU milliseconds per frame of each stage thread, of the
threads no stage owns (the runtime's workers, the video decoder's, the main thread) and of the
H.264 encoder's process, for one run of the default command on the sample clip.

The stage costs `rtseg run` prints are each measured alone; this is the same work while the stages
share the cores, so its sum against the cores' capacity shows how much the run loses to sharing.
Usage (nothing else running):
    python scripts/bench_thread_cpu.py [--masks-only] [--frames N]
"""
from __future__ import annotations

import argparse
import os
import resource
import tempfile
import threading
import time
from pathlib import Path

from rtseg.assets import SAMPLE_CLIP
from rtseg.pipeline import runner
from rtseg.pipeline.app import DEFAULT_MODEL, RunOptions, run
from rtseg.resolve import FILE_STREAMS, open_for_run

STAGE_THREADS = ("_capture", "_stage", "_inference", "_sink")


def record_thread_cpu(into: dict) -> None:
    """Makes every stage thread store its own CPU seconds under its name when it ends."""
    def wrap(fn):
        def stage(self, *args):
            try:
                return fn(self, *args)
            finally:
                into[threading.current_thread().name] = time.thread_time()
        return stage
    for name in STAGE_THREADS:
        setattr(runner.Pipeline, name, wrap(getattr(runner.Pipeline, name)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--masks-only", action="store_true", help="no H.264 output (masks only)")
    ap.add_argument("--frames", type=int, default=None)
    args = ap.parse_args()
    threads: dict[str, float] = {}
    record_thread_cpu(threads)
    # Opened first, so that compiling the model is not counted.
    backend = open_for_run(DEFAULT_MODEL, streams=FILE_STREAMS, log=lambda _line: None)
    with tempfile.TemporaryDirectory(prefix="rtseg-cpu-") as tmp:
        opts = RunOptions(source=str(SAMPLE_CLIP), max_frames=args.frames, save_masks=str(Path(tmp) / "m"),
                          output=None if args.masks_only else str(Path(tmp) / "o.mp4"), quiet=True, costs=False)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu0, t0 = time.process_time(), time.perf_counter()
        summary = run(opts, backend=backend)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    encoder = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    n, cores = summary["frames"], os.cpu_count() or 1
    per = {k.removeprefix("rtseg-"): round(v / n * 1000, 1) for k, v in threads.items()}
    per["runtime, decoder, main"] = round((cpu - sum(threads.values())) / n * 1000, 1)
    per["H.264 encoder process"] = round(encoder / n * 1000, 1)
    total = sum(per.values())
    print(f"{'masks only' if args.masks_only else 'H.264 + masks'}: {n} frames, {summary['fps']:.1f} FPS, "
          f"{backend.runtime} {backend.meta.precision}, {backend.inflight} request(s) in flight")
    print("CPU ms per frame: " + "  ".join(f"{k} {v}" for k, v in per.items()))
    print(f"total {total:.1f} ms a frame; {cores} cores busy {100 * (cpu + encoder) / wall / cores:.0f} % "
          f"of the run's {wall:.2f} s")


if __name__ == "__main__":
    main()
