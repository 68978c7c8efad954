"""A model spec -> a runnable backend: which runtime ``rtseg run`` uses, exporting to it on first use.

This sits above both ``backends`` (which only open files) and ``export`` (which builds them): a
shipped name or weight file is looked up in the export cache by its header and a remembered digest,
exported on a miss, and the artifact opened; the torch weights are read only to build.

A shipped name or ``.safetensors`` file is a torch model; on a CPU, OpenVINO runs the same network
2.6x faster (DeepLabv3+: 73 vs 192 ms a frame on the 2-core build machine, same masks to 99.9 %),
so ``--backend auto`` exports it once into the user's export cache and runs the export. The choice is per
model, recorded in its preset as ``cpu_runtime`` from ``rtseg bench`` (ENet with the paper's
max-unpooling decoder ran 5x *slower* in OpenVINO than in torch; the shipped ENet upsamples
bilinearly and OpenVINO runs it faster, but a preset may still say torch). Exported files (``.onnx``,
``.xml``, ``.engine``) always run in their own runtime.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from rtseg.backends import open_backend
from rtseg.backends.base import Backend
from rtseg.errors import RtsegError
from rtseg.export.api import ExportRequest, export
from rtseg.export.cache import engines_dir as cache_dir
from rtseg.export.gate import DEFAULT_BUDGET
from rtseg.progress import log_stderr
from rtseg.runtimes import BACKEND_CHOICES, FORMAT_OF, SUFFIXES, installed


def _preset_runtime(spec: str) -> str:
    """The ``cpu_runtime`` of a shipped name or a weight file's embedded preset (header only).

    An unknown name fails listing only the names that run, not every preset file."""
    from rtseg.zoo import model_header

    return model_header(spec)[0].cpu_runtime


def choose_runtime(spec: str, device: str | None, backend: str = "auto", precision: str | None = None) -> str:
    """The runtime ``spec`` will run in for ``--backend backend`` on ``device``.

    Raises:
        RtsegError: unknown backend, or an exported file asked to run in another runtime.
    """
    if backend not in BACKEND_CHOICES:
        raise RtsegError(f"--backend must be one of {', '.join(BACKEND_CHOICES)}, got '{backend}'")
    own = SUFFIXES.get(Path(spec).suffix.lower())
    if own and own != "torch":  # an exported artifact
        if backend in ("auto", own) or (backend == "openvino" and own == "onnxruntime"):
            return own if backend == "auto" else backend
        raise RtsegError(f"{spec} is a {own} artifact; it cannot run with --backend {backend} "
                         f"(pass the torch model instead and rtseg exports it)")
    if backend != "auto":
        return backend
    if device and device.startswith("cuda"):
        return "torch"  # TensorRT builds take minutes: only on request (--backend tensorrt)
    runtime = _preset_runtime(spec)
    if runtime != "torch" and installed(runtime):
        return runtime
    if precision == "int8":  # asked for INT8: torch has none, take any CPU runtime that has
        for other in DEFAULT_INT8_RUNTIMES:
            if installed(other):
                return other
    return "torch"


# OpenVINO requests run side by side on a file (``OpenVinoBackend``'s ``streams``): one per core
# pair's worth, as measured on 2 cores (84 vs 74 model frames/s, and the stages around the model
# fit in the CPU time saved: docs/results.md#pipeline). Live sources keep one, for latency.
FILE_STREAMS = 2 if (os.cpu_count() or 1) >= 2 else 1


def _open_artifact(path: str, device: str | None, runtime: str, streams: int) -> Backend:
    options = {"streams": streams} if runtime == "openvino" and streams > 1 else {}
    return open_backend(path, device=device, runtime=runtime, **options)


# CPU runtimes whose INT8 artifact `rtseg run` uses without being asked: 2.3x faster than their
# FP32 at the same CamVid val mIoU for the default model (docs/results.md).
DEFAULT_INT8_RUNTIMES = ("openvino", "onnxruntime")
# Calibration of the default INT8 artifact: frames that ship with rtseg (rtseg/assets/calib), so
# no user data is needed and one artifact serves every source. Fewer frames than `rtseg export`'s
# 64/100 keep the one-time build short; the gate still compares INT8 with FP32 on the other frames.
DEFAULT_CALIB_FRAMES, DEFAULT_GATE_FRAMES = 24, 16
DEFAULT_MAX_DROP = DEFAULT_BUDGET  # mIoU points INT8 may lose against FP32 on the held-out frames


def _default_int8(spec: str, runtime: str, size, calib: str | None, engines_dir: str | None,
                  log: Callable[[str], None], device: str | None, streams: int) -> Backend | None:
    """The INT8 artifact of ``spec`` when it builds and passes its accuracy gate, else None (the
    caller runs FP32 and says why). Calibrated on ``calib`` if given, else on the shipped frames."""
    from rtseg.assets import CALIB_DIR

    req = ExportRequest(model=spec, format=FORMAT_OF[runtime], precision="int8", size=size,
                        calib=calib or str(CALIB_DIR), calib_frames=DEFAULT_CALIB_FRAMES,
                        gate_frames=DEFAULT_GATE_FRAMES, max_drop=DEFAULT_MAX_DROP, out_dir=engines_dir)
    try:
        result = export(req, log=log)
    except (RtsegError, OSError) as e:
        log(f"notice: INT8 not used ({str(e).splitlines()[0]}); running FP32")
        return None
    log(f"{'using' if result.reused else 'exported'} {result.path} ({runtime}, int8, gate "
        f"{result.gate['drop']:+.2f} mIoU points vs FP32; --precision fp32 opts out)")
    return _open_artifact(str(result.path), device, runtime, streams)


def open_for_run(spec: str, device: str | None = None, backend: str = "auto", precision: str | None = None,
                 size: tuple[int, int] | None = None, calib: str | None = None, engines_dir: str | None = None,
                 log: Callable[[str], None] = log_stderr, streams: int = 1) -> Backend:
    """Opens ``spec`` for the live pipeline, exporting (once, cached) when the runtime needs it.

    ``precision=None`` means INT8 for a torch model on a CPU runtime that has it (built once,
    calibrated on frames that ship with rtseg or on ``calib``, used only when its accuracy gate
    passes; FP32 otherwise), FP32 in torch, and the file's own precision for an exported one; an
    explicit precision that an exported file does not have is an error, not ignored.
    With ``backend="auto"`` a failed export is reported and the model runs in torch instead, so
    that the default command works wherever torch does; an explicit backend fails loudly.
    ``streams``: OpenVINO requests run side by side (:data:`FILE_STREAMS` for files, 1 for live).
    """
    runtime = choose_runtime(spec, device, backend, precision)
    own = SUFFIXES.get(Path(spec).suffix.lower())
    if own and own != "torch":
        opened = _open_artifact(spec, device, runtime, streams)
        if precision is not None and opened.meta.precision != precision:
            raise RtsegError(f"{spec} was exported as {opened.meta.precision}; --precision {precision} cannot "
                             f"change that: pass the torch model (rtseg exports it) or "
                             f"rtseg export --precision {precision}")
        return opened
    if precision is None and runtime in DEFAULT_INT8_RUNTIMES and not (device or "cpu").startswith("cuda"):
        opened = _default_int8(spec, runtime, size, calib, engines_dir, log, device, streams)
        if opened is not None:
            return opened
    precision = precision or "fp32"
    if runtime == "torch":
        if precision == "int8":
            raise RtsegError("--precision int8 needs an exported runtime: --backend openvino or onnxruntime "
                             "(CPU) or tensorrt (GPU)")
        return open_backend(spec, device=device, runtime="torch",
                            **({"precision": precision} if precision != "fp32" else {}))
    req = ExportRequest(model=spec, format=FORMAT_OF[runtime], precision=precision, size=size,
                        calib=calib, out_dir=engines_dir)
    try:
        result = export(req, log=log)
    except (RtsegError, OSError) as e:
        # Only the plain default falls back: an explicit backend or precision is a request to honour.
        if backend != "auto" or precision != "fp32":
            if isinstance(e, OSError):
                raise RtsegError(f"cannot export to {cache_dir(engines_dir)}/: {e.strerror or e}") from None
            raise
        log(f"notice: could not export to {runtime} ({e}); running in torch instead")
        return open_backend(spec, device=device, runtime="torch")
    gate = f", INT8 gate: {result.gate['drop']:+.2f} mIoU points vs FP32" if result.gate else ""
    log(f"{'using' if result.reused else 'exported'} {result.path} ({runtime}, {precision}{gate})")
    return _open_artifact(str(result.path), device, runtime, streams)
