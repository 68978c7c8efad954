"""What ``rtseg run --serve`` costs: end-to-end FPS on the highway clip with the live view and one
connected viewer, against the same run without it, in one process, alternating, repeated.

    python scripts/bench_serve.py                                   # the default model, as `rtseg run` runs it
    python scripts/bench_serve.py --model enet_camvid --backend torch --repeats 3

The viewer reads the MJPEG stream as fast as the server sends it, from another thread of this
process (a browser on another machine costs this one only the server's work: encoding and
sending). The model is opened once and shared by every run, so loading is never timed. A script,
not a test: its figures depend on the machine and on what else runs on it.
"""
from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import threading
import time

from rtseg.assets import SAMPLE_CLIP
from rtseg.resolve import open_for_run
from rtseg.pipeline.app import DEFAULT_MODEL, RunOptions, run
from rtseg.progress import log_silent


class Viewer(threading.Thread):
    """Connects as soon as the server listens (before the first frame) and reads until it closes."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port, self.bytes, self.frames = port, 0, 0

    def run(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
                break
            except OSError:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.01)
        with sock:
            sock.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: bench\r\n\r\n")
            while chunk := sock.recv(1 << 16):
                self.bytes += len(chunk)
                self.frames += chunk.count(b"--rtsegframe")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_run(backend, args, serve: bool) -> dict:
    port = free_port()
    viewer = Viewer(port) if serve else None
    opts = RunOptions(source=str(SAMPLE_CLIP), model=args.model, quiet=True, threads=args.threads,
                      serve=f"127.0.0.1:{port}" if serve else None)
    if viewer is not None:
        viewer.start()
    cpu = time.process_time()
    summary = run(opts, backend=backend)
    cpu = time.process_time() - cpu
    if viewer is not None:
        viewer.join(10)
    return {"serve": serve, "fps": summary["fps"], "model_fps": summary["model_fps"], "ratio": summary["ratio"],
            # CPU seconds of the whole process per frame (model loading excluded, the in-process
            # viewer included): a cost figure that other work on the machine does not move.
            "cpu_ms_per_frame": round(1000 * cpu / max(summary["frames"], 1), 1),
            "frames": summary["frames"], "viewer_frames": viewer.frames if viewer else None,
            "viewer_mb": round(viewer.bytes / 1e6, 1) if viewer else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--size", type=lambda s: tuple(int(v) for v in s.split("x")), default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3, help="pairs of runs (without, with), alternating")
    parser.add_argument("--json", help="write the runs and the ratio here")
    args = parser.parse_args(argv)
    backend = open_for_run(args.model, None, args.backend, None, args.size, log=log_silent)
    one_run(backend, args, serve=False)  # warm-up: caches, thread pools, the first allocations
    runs = []
    for _ in range(args.repeats):
        for serve in (False, True):
            runs.append(one_run(backend, args, serve))
            print(json.dumps(runs[-1]), file=sys.stderr)
    without = statistics.mean(r["fps"] for r in runs if not r["serve"])
    with_view = statistics.mean(r["fps"] for r in runs if r["serve"])
    # Each pair ran back to back, so its ratio shares the machine's load of the moment.
    pair_ratios = [b["fps"] / a["fps"] for a, b in zip(runs[::2], runs[1::2])]
    cpu = [statistics.mean(r["cpu_ms_per_frame"] for r in runs if r["serve"] is s) for s in (False, True)]
    result = {"model": backend.meta.name, "runtime": backend.runtime, "precision": backend.meta.precision,
              "clip": SAMPLE_CLIP.name, "repeats": args.repeats, "fps_without": round(without, 2),
              "fps_with_serve_and_viewer": round(with_view, 2), "ratio": round(with_view / without, 3),
              "pair_ratios": [round(r, 3) for r in pair_ratios],
              "median_pair_ratio": round(statistics.median(pair_ratios), 3),
              "cpu_ms_per_frame": {"without": round(cpu[0], 1), "with": round(cpu[1], 1)}, "runs": runs}
    print(f"{result['model']} {result['runtime']} {result['precision']}: end-to-end FPS without --serve "
          f"{without:.2f}, with --serve and one viewer {with_view:.2f} (ratio of means {with_view / without:.3f}, "
          f"median of {args.repeats} back-to-back pair ratios {result['median_pair_ratio']:.3f}); "
          f"CPU per frame {cpu[0]:.1f} -> {cpu[1]:.1f} ms")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
