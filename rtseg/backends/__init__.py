"""One inference interface for run, eval, bench and batch; one file per runtime.

``open_backend(spec)`` picks the runtime from the file suffix: a shipped preset name or a
``.safetensors`` file runs in torch, ``.onnx`` in ONNX Runtime, ``.xml`` in OpenVINO and
``.engine`` in TensorRT. ``runtime=`` overrides the choice where a file can run in more than one
(an ``.onnx`` in OpenVINO). Runtime packages are imported only when their backend is opened.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from rtseg.backends.base import Backend, ModelMeta, normalize_image
from rtseg.errors import RtsegError
from rtseg.runtimes import RUNTIMES, SUFFIXES


def runtime_for(spec: str) -> str:
    """The runtime that opens ``spec`` by default; preset names (no suffix) are torch."""
    suffix = Path(spec).suffix.lower()
    if suffix in SUFFIXES:
        return SUFFIXES[suffix]
    if suffix and Path(spec).is_file():
        raise RtsegError(f"cannot tell the runtime of {spec}: expected one of {', '.join(SUFFIXES)} "
                         f"or a shipped model name")
    return "torch"


def open_backend(spec: str, device: str | None = None, runtime: str | None = None, **options) -> Backend:
    """Opens ``spec`` on ``runtime`` (default: from the suffix) and ``device``.

    Args:
        spec: preset name, ``.safetensors``, ``.onnx``, ``.xml`` or ``.engine`` file.
        device: ``cpu`` / ``cuda`` (default: ``cuda`` for engines, ``cpu`` otherwise).
        runtime: one of :data:`RUNTIMES` to override the suffix's choice.
        **options: runtime options, e.g. ``precision="fp16"`` for torch on CUDA, ``threads=`` for
            ONNX Runtime, ``hint="THROUGHPUT"`` for OpenVINO.
    """
    runtime = runtime or runtime_for(str(spec))
    if runtime not in RUNTIMES:
        raise RtsegError(f"unknown runtime '{runtime}'; valid: {', '.join(RUNTIMES)}")
    entry = RUNTIMES[runtime]
    backend_cls = getattr(importlib.import_module(entry.module), entry.cls)
    device = device or ("cuda" if entry.cuda_only else "cpu")
    if runtime == "torch":
        return backend_cls.load(str(spec), device=device, **options)
    return backend_cls(spec, device=device, **options)


__all__ = ["Backend", "ModelMeta", "RUNTIMES", "normalize_image", "open_backend", "runtime_for"]
