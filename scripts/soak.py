"""Soak benchmark: a live stream replayed on 127.0.0.1 for N minutes through ``rtseg run``'s pipeline.

Every 10 s it samples the process's resident memory (RSS), the p50/p99 capture-to-output latency
and the frames delivered and dropped in that window, and at the end writes ``soak.csv``,
``soak.png`` and ``soak.json`` (memory growth per hour and latency drift, from linear fits that
skip the first minute of warm-up).

    python scripts/soak.py --minutes 30 --out soak/            # the default model, as `rtseg run` runs it
    python scripts/soak.py --minutes 2 --model enet_camvid --backend torch --out /tmp/soak

The stream is the highway clip looped by the ffmpeg binary of imageio-ffmpeg (``-re``: real time,
25 fps, MPEG-TS over HTTP in listen mode); the pipeline records it to an H.264 file as a camera
recorder would (``--no-output`` leaves that out). A script, not a test: it takes minutes and
its figures depend on the machine.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CLIP = ROOT.parent / "shared" / "data" / "video" / "highway_960x540_25fps.mp4"
FIELDS = ["t_s", "rss_mb", "frames", "fps", "latency_p50_ms", "latency_p99_ms", "dropped", "dropped_total"]


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        kb = next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:"))
    return kb / 1024


def serve(clip: Path, seconds: float) -> tuple[subprocess.Popen, str]:
    """ffmpeg looping ``clip`` in real time to one HTTP client on 127.0.0.1."""
    import imageio_ffmpeg

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/live.ts"
    proc = subprocess.Popen([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-re",
                             "-stream_loop", "-1", "-i", str(clip), "-t", f"{seconds:.0f}", "-c", "copy",
                             "-f", "mpegts", "-listen", "1", url],
                            stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # the listening socket is up well within this; the client's open then waits for data
    return proc, url


def sample(pipeline, seen: int, dropped_before: int, t: float, window: float) -> tuple[dict, int, int]:
    """One row: what the sink delivered since the last sample."""
    with pipeline.stats._lock:
        records = pipeline.stats.records[seen:]
    lat = [r["latency"] for r in records]
    dropped = pipeline.stats.dropped
    p50, p99 = (np.percentile(lat, [50, 99]) if lat else (float("nan"), float("nan")))
    row = {"t_s": round(t, 1), "rss_mb": round(rss_mb(), 1), "frames": len(records),
           "fps": round(len(records) / window, 2), "latency_p50_ms": round(float(p50), 1),
           "latency_p99_ms": round(float(p99), 1), "dropped": dropped - dropped_before, "dropped_total": dropped}
    # The records list is the run's JSON; the soak keeps it (as `rtseg run --json` would).
    return row, seen + len(records), dropped


def per_hour(rows: list[dict], key: str, skip_s: float = 60.0) -> float | None:
    """Slope of ``key`` over time, per hour, from a least-squares line (warm-up skipped)."""
    pts = [(r["t_s"], r[key]) for r in rows if r["t_s"] >= skip_s and np.isfinite(r[key])]
    if len(pts) < 3:
        return None
    t, v = np.array(pts).T
    return float(np.polyfit(t, v, 1)[0] * 3600)


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r["t_s"] / 60 for r in rows]
    fig, ax = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    ax[0].plot(t, [r["rss_mb"] for r in rows])
    ax[0].set_ylabel("RSS (MB)")
    ax[1].plot(t, [r["latency_p50_ms"] for r in rows], label="p50")
    ax[1].plot(t, [r["latency_p99_ms"] for r in rows], label="p99")
    ax[1].set_ylabel("latency (ms)")
    ax[1].legend()
    ax[2].plot(t, [r["fps"] for r in rows], label="delivered FPS")
    ax[2].plot(t, [r["dropped"] / 10 for r in rows], label="dropped / s")
    ax[2].set_ylabel("frames / s")
    ax[2].set_xlabel("minutes")
    ax[2].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--model", default=None, help="default: rtseg run's default model")
    p.add_argument("--backend", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    p.add_argument("--clip", default=str(CLIP))
    p.add_argument("--no-output", action="store_true", help="do not record the stream to a video file")
    p.add_argument("--out", default="soak", help="folder for soak.csv, soak.png, soak.json")
    args = p.parse_args()

    import torch

    from rtseg.resolve import open_for_run
    from rtseg.pipeline import DEFAULT_MODEL, Pipeline, Renderer, Style
    from rtseg.pipeline.sinks import VideoSink
    from rtseg.pipeline.sources import open_source
    from rtseg.progress import log_stderr

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = args.model or DEFAULT_MODEL
    backend = open_for_run(model, None, args.backend, log=log_stderr)
    if args.threads:
        torch.set_num_threads(args.threads)
    server, url = serve(Path(args.clip), args.minutes * 60 + 60)
    tmp = tempfile.TemporaryDirectory()
    try:
        source = open_source(url, reconnect=0)
        meta = backend.meta
        sinks = [] if args.no_output else [VideoSink(Path(tmp.name) / "rec.mp4", source.fps, timestamps=True)]
        pipeline = Pipeline(source, backend, Renderer(meta.colors, meta.class_names, Style()), sinks)
        runner = threading.Thread(target=pipeline.run, name="soak-pipeline", daemon=True)
        runner.start()
        rows, seen, dropped = [], 0, 0
        t0 = time.monotonic()
        end = t0 + args.minutes * 60
        while time.monotonic() < end and runner.is_alive():
            time.sleep(min(args.interval, max(0.0, end - time.monotonic())))
            row, seen, dropped = sample(pipeline, seen, dropped, time.monotonic() - t0, args.interval)
            rows.append(row)
            print(" ".join(f"{k} {row[k]}" for k in FIELDS), flush=True)
        pipeline.stop.set()
        runner.join(120)
    finally:
        server.kill()
        server.wait()
        tmp.cleanup()
    with open(out / "soak.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    result = {"model": meta.name, "runtime": backend.runtime, "minutes": round(rows[-1]["t_s"] / 60, 2) if rows else 0,
              "cpus": os.cpu_count(), "record": not args.no_output,
              "rss_mb_start": rows[0]["rss_mb"] if rows else None, "rss_mb_end": rows[-1]["rss_mb"] if rows else None,
              "rss_mb_per_hour": per_hour(rows, "rss_mb"),
              "latency_p50_ms_per_hour": per_hour(rows, "latency_p50_ms"),
              "latency_p99_ms_per_hour": per_hour(rows, "latency_p99_ms"),
              "fps_mean": round(float(np.mean([r["fps"] for r in rows])), 2) if rows else None,
              "dropped_total": dropped, "frames_total": seen, "error": pipeline.error_message()}
    (out / "soak.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    try:
        plot(rows, out / "soak.png", f"rtseg soak: {meta.name} ({backend.runtime}), live 25 fps over HTTP")
    except ImportError:
        print("matplotlib missing: no soak.png (pip install rtseg[plot])", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
