"""Throughput of ``rtseg batch``: local vs ``--ray`` with 1 and 2 workers, torch vs the exported
OpenVINO INT8 model, over the highway clip and the CamVid val folder in one job.

    python scripts/bench_batch_ray.py --frames 32 --out /tmp/bench_batch      # what docs/results.md shows
    python scripts/bench_batch_ray.py --frames 0 --model deeplabv3plus_hires_camvid --workers 1,2,4

Each configuration runs the ``rtseg batch`` command in a fresh process into a fresh output folder
(so nothing is skipped) and reads its ``summary.json``: ``img/s`` is frames over the processing
time (model replicas loaded, Ray started); ``wall s`` is the whole command, start-up included. The
INT8 artifact is built (and gated) once before the timed runs. A script, not a test: the figures
depend on the machine and on what else runs on it.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
VAL = ROOT.parent / "shared" / "data" / "camvid" / "val"


def run(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def main() -> None:
    from rtseg.assets import SAMPLE_CLIP

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="deeplabv3plus_camvid")
    ap.add_argument("--frames", type=int, default=32, help="frames per input (0: all 221 + 101)")
    ap.add_argument("--workers", default="1,2", help="Ray pool sizes to run")
    ap.add_argument("--out", default="bench_batch_out", help="work folder (emptied); results.json/.md land here")
    args = ap.parse_args()

    work = Path(args.out)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "RTSEG_CACHE": str(work / "cache")}
    base = [sys.executable, "-m", "rtseg", "batch", "--source", str(SAMPLE_CLIP), "--source", str(VAL),
            "--model", args.model, "--quiet", "--no-overlay"] + (["--max-frames", str(args.frames)] if args.frames else [])
    runtimes = {"torch": [], "openvino int8": ["--backend", "openvino", "--precision", "int8", "--calib", str(VAL)]}
    # Build and gate the INT8 artifact once, outside the timing.
    run([sys.executable, "-m", "rtseg", "batch", "--source", str(VAL), "--max-frames", "1", "--model", args.model,
         "--quiet", "--out", str(work / "warm")] + runtimes["openvino int8"], env)
    rows = []
    for name, extra in runtimes.items():
        # local: torch's default threads (one per core); local, 1 thread: as one Ray worker runs.
        for mode in ["local", "local, 1 thread"] + [f"ray x{n}" for n in args.workers.split(",")]:
            out = work / f"{name.replace(' ', '_')}_{mode.replace(' ', '').replace(',', '_')}"
            ray = (["--threads", "1"] if mode == "local, 1 thread" else [] if mode == "local"
                   else ["--ray", "--workers", mode.split("x")[1], "--num-cpus", "1"])
            wall = run(base + extra + ray + ["--out", str(out)], env)
            s = json.loads((out / "summary.json").read_text())
            rows.append({"runtime": name, "mode": mode, "frames": s["frames_processed"], "seconds": s["seconds"],
                         "img_per_s": s["images_per_s"], "wall_s": round(wall, 1), "precision": s["precision"]})
            print(f"{name:14s} {mode:16s} {s['frames_processed']:4d} frames  {s['images_per_s']:6.2f} img/s  "
                  f"wall {wall:6.1f} s", flush=True)
    (work / "results.json").write_text(json.dumps({"model": args.model, "frames_per_input": args.frames,
                                                   "cpus": os.cpu_count(), "rows": rows}, indent=1))
    lines = ["| runtime | mode | frames | img/s | wall s (start-up included) |", "|---|---|---:|---:|---:|"]
    lines += [f"| {r['runtime']} | {r['mode']} | {r['frames']} | {r['img_per_s']:.2f} | {r['wall_s']:.1f} |" for r in rows]
    (work / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
