"""The FPS / mIoU sweep behind ``rtseg bench``: models x backends x precisions x sizes.

Every combination is exported through ``rtseg export`` (and its cache, so a re-run only rebuilds
what changed), then measured on the artifact itself:

- mIoU on a labelled split (CamVid val by default), single scale, at the combination's size;
- model-only latency of ``predict_ids`` on one frame (network + argmax) after warm-up; with
  ``argmax`` each exported combination is measured twice, outputting logits and with argmax inside
  its graph (uint8 class ids), which answers whether moving the argmax into the runtime pays;
- end-to-end FPS of the threaded ``rtseg run`` pipeline on a video, writing an H.264 file, and
  the flicker of its masks (TC and changed pixels, :mod:`rtseg.temporal.metrics`), computed after
  the timed run so the FPS does not include it;
- parameters and GFLOPs of the network at that size, and the artifact's size on disk.

A combination that cannot be measured gets a status instead of figures, so one missing runtime
never stops the sweep:

- ``ok``;
- ``failed validation``: exported and measured, but the INT8 accuracy gate saw a drop over its
  budget (``rtseg export`` would refuse this artifact without ``--force``);
- ``export failed``: the exporter or the runtime rejected the model (message kept);
- ``runtime not available``: the package, or for TensorRT a CUDA GPU, is missing here;
- ``not applicable``: a precision the backend does not run on this device (torch INT8,
  torch FP16 on a CPU).
"""
from __future__ import annotations

import copy
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from rtseg.data import labelled_dataset
from rtseg.errors import RtsegError
from rtseg.runtimes import FORMAT_OF, PRECISIONS, RUNTIMES, missing_package

OK, FAILED_VALIDATION, EXPORT_FAILED, NO_RUNTIME, NOT_APPLICABLE = (
    "ok", "failed validation", "export failed", "runtime not available", "not applicable")


@dataclass(frozen=True)
class Combo:
    model: str
    backend: str
    precision: str
    size: tuple[int, int]
    argmax: bool = False  # the artifact outputs class ids (argmax in its graph), not logits

    @property
    def label(self) -> str:
        return (f"{Path(self.model).stem} {self.backend}:{self.precision}{':argmax' if self.argmax else ''} "
                f"{self.size[0]}x{self.size[1]}")


@dataclass
class SweepOptions:
    """What to measure and on what; see ``rtseg bench --help``."""

    models: Sequence[str]
    backends: Sequence[str] = tuple(RUNTIMES)
    precisions: Sequence[str] = ("fp32", "int8")
    sizes: Sequence[tuple[int, int]] = ((360, 480),)
    data: str = "camvid"
    root: str | None = None             # labelled dataset; None: no mIoU
    split: str = "val"
    limit: int | None = None            # score only the first N images
    video: str | None = None            # end-to-end FPS on this clip; None: not measured
    video_frames: int = 60
    calib: str | None = None            # INT8 calibration frames (folder or video)
    calib_frames: int = 32
    gate_frames: int = 30
    warmup: int = 5
    repeats: int = 30
    argmax: bool = False                # also each exported combination with argmax in its graph
    device: str = "cpu"
    engines_dir: str | None = None  # None: the user's export cache (rtseg.export.cache.engines_dir)


def plan(opts: SweepOptions) -> list[Combo]:
    """Every combination, in the order it is measured (model, size, backend, precision)."""
    for b in opts.backends:
        if b not in RUNTIMES:
            raise RtsegError(f"unknown backend '{b}'; valid: {', '.join(RUNTIMES)}")
    for p in opts.precisions:
        if p not in PRECISIONS:
            raise RtsegError(f"unknown precision '{p}'; valid: {', '.join(PRECISIONS)}")
    if not opts.models:
        raise RtsegError("no model to measure (--models); `rtseg models` lists the shipped ones")
    # torch has no graph to put the argmax in: its rows are the logits rows only.
    argmax = (False, True) if opts.argmax else (False,)
    return [Combo(m, b, p, tuple(s), a) for m in opts.models for s in opts.sizes
            for b in opts.backends for p in opts.precisions for a in argmax if not (a and b == "torch")]


def unavailable(backend: str, precision: str, device: str) -> tuple[str, str] | None:
    """(status, reason) when ``backend`` cannot run ``precision`` here, checked without loading anything."""
    if backend == "torch":
        if precision == "int8":
            return NOT_APPLICABLE, "torch runs fp32 (and fp16 on CUDA); INT8 is an exported engine"
        if precision == "fp16" and not device.startswith("cuda"):
            return NOT_APPLICABLE, "torch fp16 needs --device cuda"
        if device.startswith("cuda") and not torch.cuda.is_available():
            return NO_RUNTIME, "no CUDA device for torch"
        return None
    missing = missing_package(backend)
    if missing:
        return NO_RUNTIME, f"{missing} is not installed (pip install 'rtseg[{RUNTIMES[backend].extra}]')"
    if backend == "tensorrt":
        from rtseg.backends.tensorrt_backend import trt_environment

        try:
            trt_environment()
        except RtsegError as e:
            return NO_RUNTIME, str(e)
    return None


def network_cost(model: str, size: tuple[int, int]) -> tuple[int, float]:
    """(parameters, GFLOPs at ``size``) of the network behind ``model``, counted on the meta device."""
    from rtseg.models.info import count_flops, count_params
    from rtseg.zoo import load_model

    net = load_model(model).model
    params = count_params(net)
    try:
        meta_net = copy.deepcopy(net).to("meta")
        flops = count_flops(meta_net, size)
    except (NotImplementedError, RuntimeError):
        flops = count_flops(net, size)  # an op without a meta kernel: one real CPU pass
    return params, round(flops / 1e9, 2)


def artifact_bytes(spec: str) -> int | None:
    """Size on disk of what the backend loads (an OpenVINO IR counts its ``.bin``)."""
    from rtseg.weights import is_shipped, weight_path

    path = Path(spec)
    if not path.is_file():
        from rtseg.config import load_preset

        try:
            name = load_preset(spec).weights
        except RtsegError:
            return None
        if not is_shipped(name):
            return None
        path = weight_path(name)
    size = path.stat().st_size
    if path.suffix == ".xml" and path.with_suffix(".bin").is_file():
        size += path.with_suffix(".bin").stat().st_size
    return size


def _export(combo: Combo, opts: SweepOptions, log: Callable[[str], None]) -> tuple[str, dict | None]:
    if combo.backend == "torch":
        return combo.model, None
    from rtseg.export import ExportRequest, export

    if combo.precision == "int8" and not opts.calib:
        raise RtsegError("INT8 needs calibration frames: pass --calib DIR|VIDEO")
    # force: a sweep reports an INT8 model over the accuracy budget with its measured drop
    # ("failed validation") instead of leaving a hole in the table.
    req = ExportRequest(combo.model, FORMAT_OF[combo.backend], combo.precision, combo.size, argmax=combo.argmax,
                        calib=opts.calib if combo.precision == "int8" else None,
                        calib_frames=opts.calib_frames, gate_frames=opts.gate_frames, force=True,
                        out_dir=opts.engines_dir)
    result = export(req, log=log)
    return str(result.path), result.gate


def model_latency(backend, size: tuple[int, int], warmup: int, repeats: int) -> dict:
    """Model-only figures of ``backend.predict_ids`` on a random (3, H, W) frame: the pipeline's
    timing loop, run for exactly ``repeats`` calls after ``warmup`` untimed ones."""
    import numpy as np

    from rtseg.pipeline.costs import model_only

    x = np.random.default_rng(0).standard_normal((3, *size), dtype=np.float32)
    t = model_only(backend, x, warmup=warmup, runs=repeats, budget_s=None, class_ids=True)
    lat = t["latency_ms"]
    return {"mean_ms": lat["mean"], "p50_ms": lat["p50"], "p99_ms": lat["p99"], "fps": round(t["fps"], 2)}


def _end_to_end(backend, video: str, frames: int, size: tuple[int, int]) -> dict:
    from rtseg.pipeline.app import RunOptions, run

    with tempfile.TemporaryDirectory(prefix="rtseg-bench-") as tmp:
        summary = run(RunOptions(source=video, max_frames=frames, output=str(Path(tmp) / "e2e.mp4"),
                                 size=size, quiet=True, flicker=True, flicker_defer=True), backend=backend)
    return {"e2e_fps": summary["fps"], "e2e_p50_ms": summary["latency_ms"]["p50"],
            "e2e_p99_ms": summary["latency_ms"]["p99"], "e2e_frames": summary["frames"],
            "tc": summary["flicker"]["tc"], "changed": summary["flicker"]["changed"]}


def measure(combo: Combo, opts: SweepOptions, log: Callable[[str], None] = lambda _: None,
            dataset=None) -> dict:
    """One row of the sweep: figures and ``status`` (see the module docstring)."""
    from rtseg.backends import open_backend
    from rtseg.evaluate import evaluate

    row: dict = {"model": Path(combo.model).stem if Path(combo.model).is_file() else combo.model,
                 "backend": combo.backend, "precision": combo.precision, "argmax": combo.argmax,
                 "size": f"{combo.size[0]}x{combo.size[1]}", "device": opts.device}
    skip = unavailable(combo.backend, combo.precision, opts.device)
    if skip:
        row["status"], row["reason"] = skip
        return row
    try:
        row["params"], row["gflops"] = network_cost(combo.model, combo.size)
    except RtsegError as e:  # unknown model or unreadable weights: nothing else can work either
        row["status"], row["reason"] = EXPORT_FAILED, str(e)
        return row
    try:
        spec, gate = _export(combo, opts, log)
        options = {"precision": combo.precision} if combo.backend == "torch" else {}
        backend = open_backend(spec, device=None if combo.backend == "tensorrt" else opts.device,
                               runtime=combo.backend, **options)
    except RtsegError as e:
        row["status"], row["reason"] = EXPORT_FAILED, str(e)
        return row
    row["artifact"] = spec
    size = artifact_bytes(spec)
    row["artifact_mb"] = round(size / 2**20, 2) if size else None
    try:
        log(f"{combo.label}: model-only latency")
        row |= model_latency(backend, combo.size, opts.warmup, opts.repeats)
        if dataset is not None:
            log(f"{combo.label}: mIoU on {opts.data}:{opts.split}")
            r = evaluate(backend, dataset, combo.size, limit=opts.limit, progress=False)
            # Six digits, not four: the report prints one decimal of a percent, and rounding twice
            # (0.61149 -> 0.6115 -> 61.2) would disagree with `rtseg eval` (61.1).
            row["miou"] = round(r["miou"], 6)
            row["eval_images"] = min(opts.limit or len(dataset), len(dataset))
        if opts.video:
            log(f"{combo.label}: end-to-end pipeline on {Path(opts.video).name}")
            row |= _end_to_end(backend, opts.video, opts.video_frames, combo.size)
    except RtsegError as e:
        row["status"], row["reason"] = EXPORT_FAILED, f"runtime rejected the artifact: {e}"
        return row
    row["status"] = OK
    if gate is not None:
        row["int8_gate_drop"] = gate.get("drop")
        if not gate.get("passed", True):
            row["status"] = FAILED_VALIDATION
            row["reason"] = (f"INT8 loses {gate['drop']:.2f} mIoU points on held-out frames "
                             f"(budget {gate.get('budget', 1.0):.1f})")
    return row


def sweep(opts: SweepOptions, log: Callable[[str], None] = lambda _: None,
          progress: bool = True) -> list[dict]:
    """Measures every combination of :func:`plan`; returns one row per combination."""
    from rtseg.progress import Progress

    combos = plan(opts)
    dataset = None
    if opts.root:
        dataset = labelled_dataset(opts.data, opts.root, opts.split)
    rows = []
    t0 = time.perf_counter()
    with Progress(len(combos), "bench", "run", enabled=progress) as bar:
        for combo in combos:
            row = measure(combo, opts, log, dataset)
            rows.append(row)
            bar.update(1, last=f"{combo.label} {row['status']}")
    log(f"sweep of {len(combos)} combinations took {time.perf_counter() - t0:.0f} s")
    return rows
