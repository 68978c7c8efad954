"""The runtimes rtseg runs models in, described once: every command, the exporter and the sweep
read this table, so adding a runtime or a precision is one edit here.

Importing it imports nothing heavy: a runtime's packages are looked up with ``find_spec``, not
imported, so the CLI can list choices and check what is installed in milliseconds.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass

PRECISIONS = ("fp32", "fp16", "int8")
# The folder under the user's cache directory that holds exported models (see export.cache).
CACHE_FOLDER = "engines"


@dataclass(frozen=True)
class Runtime:
    """One runtime.

    Attributes:
        name: the ``--backend`` value (``rtseg run``, ``rtseg bench``, ``rtseg batch``).
        module, cls: the backend class that opens its files.
        suffix: the file suffix of the artifacts it opens.
        export_format: the ``rtseg export --format`` value that builds those artifacts (torch: none).
        needs: packages an export to it and a run in it import (the ONNX step included).
        extra: the pip extra that installs ``needs`` (torch: none, it is a base dependency).
        precisions: what it runs; torch's fp16 needs CUDA, TensorRT runs only on CUDA.
        cuda_only: opens on a CUDA device only.
    """

    name: str
    module: str
    cls: str
    suffix: str
    export_format: str | None
    needs: tuple[str, ...]
    extra: str | None
    precisions: tuple[str, ...]
    cuda_only: bool = False


RUNTIMES: dict[str, Runtime] = {r.name: r for r in (
    Runtime("torch", "rtseg.backends.torch_backend", "TorchBackend", ".safetensors", None, (), None,
            ("fp32", "fp16")),
    Runtime("onnxruntime", "rtseg.backends.onnxruntime_backend", "OnnxRuntimeBackend", ".onnx", "onnx",
            ("onnx", "onnxruntime"), "onnx", PRECISIONS),
    Runtime("openvino", "rtseg.backends.openvino_backend", "OpenVinoBackend", ".xml", "openvino",
            ("onnx", "onnxruntime", "openvino"), "openvino", PRECISIONS),
    Runtime("tensorrt", "rtseg.backends.tensorrt_backend", "TensorRTBackend", ".engine", "engine",
            ("onnx", "tensorrt"), "tensorrt", PRECISIONS, cuda_only=True),
)}

# Derived views, so that no other module writes these lists again.
SUFFIXES: dict[str, str] = {r.suffix: r.name for r in RUNTIMES.values()}           # suffix -> runtime
FORMATS: dict[str, str] = {r.export_format: r.suffix for r in RUNTIMES.values() if r.export_format}
FORMAT_OF: dict[str, str] = {r.name: r.export_format for r in RUNTIMES.values() if r.export_format}
CPU_RUNTIMES = tuple(r.name for r in RUNTIMES.values() if not r.cuda_only)
BACKEND_CHOICES = ("auto", *RUNTIMES)  # `--backend`: auto picks one per model and device


def missing_package(runtime: str) -> str | None:
    """The first package ``runtime`` needs that is not installed here, or None."""
    return next((m for m in RUNTIMES[runtime].needs if importlib.util.find_spec(m) is None), None)


def installed(runtime: str) -> bool:
    return missing_package(runtime) is None
