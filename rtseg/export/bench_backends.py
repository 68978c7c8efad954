"""Speed and accuracy of one model across runtimes and precisions (model-only figures).

Each run is ``runtime:precision`` (``:argmax`` for an argmax-in-graph artifact). Artifacts come
from ``rtseg export`` and its cache, so a sweep re-run after a change only rebuilds what changed.
Latency is that of ``predict_ids`` on one preprocessed frame: network plus argmax, for logits
and argmax artifacts alike, which is what answers "does argmax in the graph pay". Preprocessing,
decoding and drawing are not included: ``rtseg bench`` reports the end-to-end figures.

    python -m rtseg.export.bench_backends --model deeplabv3plus_camvid --size 360x480 \\
        --runs torch:fp32,onnxruntime:fp32,onnxruntime:int8,openvino:fp32,openvino:int8 \\
        --calib ../shared/data/camvid/train --val-root ../shared/data/camvid --json bench.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from rtseg.errors import RtsegError
from rtseg.progress import log_stderr
from rtseg.runtimes import FORMAT_OF
DEFAULT_RUNS = "torch:fp32,onnxruntime:fp32,onnxruntime:int8,openvino:fp32,openvino:int8"


@dataclass(frozen=True)
class Run:
    runtime: str
    precision: str
    argmax: bool = False

    @classmethod
    def parse(cls, text: str) -> "Run":
        parts = text.strip().split(":")
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "argmax"):
            raise RtsegError(f"a run is runtime:precision[:argmax], e.g. onnxruntime:int8, got '{text}'")
        if parts[0] not in ("torch", *FORMAT_OF):
            raise RtsegError(f"unknown runtime '{parts[0]}' in '{text}'; valid: torch, {', '.join(FORMAT_OF)}")
        return cls(parts[0], parts[1], len(parts) == 3)

    def __str__(self) -> str:
        return f"{self.runtime}:{self.precision}{':argmax' if self.argmax else ''}"


def time_backend(backend, size: tuple[int, int], warmup: int = 10, repeats: int = 50, seed: int = 0) -> dict:
    """Latency of ``backend.predict_ids`` on a (1, 3, H, W) batch: mean, p50, p99 (ms) and FPS."""
    x = np.random.default_rng(seed).standard_normal((1, 3, *size), dtype=np.float32)
    for _ in range(warmup):
        backend.predict_ids(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        backend.predict_ids(x)
        times.append((time.perf_counter() - t0) * 1e3)
    t = np.asarray(times)
    return {"mean_ms": float(t.mean()), "p50_ms": float(np.percentile(t, 50)),
            "p99_ms": float(np.percentile(t, 99)), "fps": float(1e3 / t.mean()), "repeats": repeats}


def artifact_for(model: str, run: Run, size: tuple[int, int], calib: str | None, out_dir: str,
                 log: Callable[[str], None]) -> tuple[str, dict | None]:
    """Model spec to open for ``run`` (exported through the cache) and its INT8 gate record."""
    if run.runtime == "torch":
        if run.argmax or run.precision == "int8":
            raise RtsegError(f"{run}: torch runs fp32 (or fp16 on CUDA) logits only")
        return model, None
    from rtseg.export import ExportRequest, export

    # force: the sweep reports an over-budget INT8 model with its measured drop instead of skipping it.
    req = ExportRequest(model, FORMAT_OF[run.runtime], run.precision, size, argmax=run.argmax, calib=calib,
                        force=True, out_dir=out_dir)
    result = export(req, log=log)
    return str(result.path), result.gate


def bench(model: str, runs: Sequence[Run], size: tuple[int, int], calib: str | None = None,
          val_root: str | None = None, val_split: str = "val", limit: int | None = None, warmup: int = 10,
          repeats: int = 50, device: str = "cpu", out_dir: str | None = None,
          log: Callable[[str], None] = lambda _: None) -> list[dict]:
    """One row per run: artifact, latency figures and (with ``val_root``) CamVid mIoU.

    A run that cannot be built here (no TensorRT, a refused export) gets a ``status`` instead of
    figures, so one missing runtime does not stop the sweep.
    """
    from rtseg.backends import open_backend
    from rtseg.data import build_dataset
    from rtseg.evaluate import evaluate

    rows = []
    for run in runs:
        row: dict = {"run": str(run), "runtime": run.runtime, "precision": run.precision, "argmax": run.argmax}
        try:
            spec, gate = artifact_for(model, run, size, calib, out_dir, log)
            options = {"precision": run.precision} if run.runtime == "torch" else {}
            backend = open_backend(spec, device=None if run.runtime == "tensorrt" else device,
                                   runtime=run.runtime, **options)
            log(f"timing {run} ({spec})")
            row |= {"artifact": spec, **time_backend(backend, size, warmup, repeats)}
            if gate:
                row["int8_gate_drop"] = gate.get("drop")
            if val_root:
                ds = build_dataset("camvid", val_root, val_split, ignore_index=backend.meta.ignore_index)
                row["miou"] = evaluate(backend, ds, size, limit=limit, progress=False)["miou"]
                row["images"] = min(limit or len(ds), len(ds))
            row["status"] = "ok"
        except RtsegError as e:
            row["status"] = f"skipped: {e}"
            log(f"{run}: {e}")
        rows.append(row)
    return rows


def format_rows(rows: list[dict], size: tuple[int, int]) -> str:
    """A Markdown table of :func:`bench` rows."""
    lines = [f"| run ({size[0]}x{size[1]}) | mean ms | p50 ms | p99 ms | FPS | mIoU | INT8 gate drop |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r.get("status") != "ok":
            lines.append(f"| {r['run']} | {r['status']} ||||||")
            continue
        miou = f"{100 * r['miou']:.1f}" if "miou" in r else "-"
        drop = f"{r['int8_gate_drop']:+.2f}" if r.get("int8_gate_drop") is not None else "-"
        lines.append(f"| {r['run']} | {r['mean_ms']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                     f"{r['fps']:.1f} | {miou} | {drop} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from rtseg.commands import size_arg

    p = argparse.ArgumentParser(prog="python -m rtseg.export.bench_backends", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="shipped name or weight file")
    p.add_argument("--runs", default=DEFAULT_RUNS, help=f"comma-separated runtime:precision[:argmax] "
                   f"(default {DEFAULT_RUNS})")
    p.add_argument("--size", type=size_arg, default=(360, 480))
    p.add_argument("--calib", help="calibration frames for INT8 runs (folder or video)")
    p.add_argument("--val-root", help="CamVid root: adds mIoU on its val split")
    p.add_argument("--limit", type=int, help="score only the first N val images")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out-dir", default=None, help="export cache (default: the user's, see rtseg export --help)")
    p.add_argument("--json", help="also write the rows as JSON")
    args = p.parse_args(argv)
    try:
        runs = [Run.parse(r) for r in args.runs.split(",") if r.strip()]
        rows = bench(args.model, runs, args.size, args.calib, args.val_root, limit=args.limit,
                     warmup=args.warmup, repeats=args.repeats, device=args.device, out_dir=args.out_dir,
                     log=log_stderr)
    except RtsegError as e:
        print(f"bench_backends: error: {e}", file=sys.stderr)
        return 2
    print(format_rows(rows, args.size))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
