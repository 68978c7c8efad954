"""TensorRT engines (``.engine``): a JSON header with metadata and cache key, then the plan.

An engine only runs on the TensorRT version and GPU model it was built for. The header records
both, and loading compares them with the running ones before TensorRT sees the bytes: a foreign
engine is refused with one line instead of failing obscurely (or running wrong) inside
``deserialize_cuda_engine``. ``rtseg export`` rebuilds in that case.

File layout: ``b"RTSEGTRT"``, a 4-byte little-endian header length, the UTF-8 JSON header, the
serialized engine.

Tensors are addressed by name (``set_input_shape``, ``set_tensor_address``) and run with
``execute_async_v3`` on torch's current CUDA stream; torch CUDA tensors are the device buffers,
so no pycuda context fights torch's.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import torch

from rtseg.backends.base import Backend, ModelMeta
from rtseg.errors import RtsegError
from rtseg.io import atomic_output

MAGIC = b"RTSEGTRT"
HEADER_VERSION = 1


class ForeignEngineError(RtsegError):
    """The engine was built for another GPU or TensorRT version."""


def import_tensorrt():
    try:
        import tensorrt
    except (ImportError, OSError) as e:  # the PyPI stubs import but miss their shared libraries
        why = "" if isinstance(e, ImportError) and "No module" in str(e) else f" ({str(e).splitlines()[0]})"
        raise RtsegError(f'TensorRT is not installed{why}: pip install "rtseg[tensorrt]" '
                         f"on a machine with an NVIDIA GPU") from None
    return tensorrt


def cuda_device() -> dict:
    """Name and compute capability of the current CUDA device, as torch sees it."""
    if not torch.cuda.is_available():
        build = "a CPU build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise RtsegError(f"TensorRT needs a CUDA GPU, and torch {torch.__version__} ({build}) sees none")
    i = torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(i)
    return {"gpu": torch.cuda.get_device_name(i), "capability": f"{major}.{minor}"}


def trt_environment() -> dict:
    """``{"tensorrt": version, "gpu": name, "capability": "8.9"}`` of this machine; RtsegError if
    TensorRT or a CUDA GPU is missing."""
    trt = import_tensorrt()
    return {"tensorrt": trt.__version__, **cuda_device()}


def write_engine(path: str | Path, header: dict, plan: bytes) -> Path:
    """Writes header + plan atomically."""
    blob = json.dumps({"version": HEADER_VERSION, **header}, sort_keys=True).encode()
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        f.write(MAGIC + struct.pack("<I", len(blob)) + blob)
        f.write(plan)
    return Path(path)


def read_engine_header(path: str | Path) -> tuple[dict, int]:
    """The header of an rtseg engine file and the offset where the plan starts."""
    path = Path(path)
    if not path.is_file():
        raise RtsegError(f"engine file not found: {path}")
    with open(path, "rb") as f:
        start = f.read(len(MAGIC) + 4)
        if len(start) < len(MAGIC) + 4 or start[:len(MAGIC)] != MAGIC:
            raise RtsegError(f"{path} is not an rtseg engine (no rtseg header); build engines with "
                             f"rtseg export --format engine")
        (n,) = struct.unpack("<I", start[len(MAGIC):])
        try:
            header = json.loads(f.read(n).decode())
        except (UnicodeDecodeError, ValueError):
            raise RtsegError(f"{path} has a corrupt rtseg engine header") from None
    for key in ("meta", "tensorrt", "gpu", "capability"):
        if key not in header:
            raise RtsegError(f"{path}: engine header lacks '{key}'")
    return header, len(MAGIC) + 4 + n


def check_compatible(header: dict, env: dict, where: str = "engine") -> None:
    """Raises ForeignEngineError if ``header`` was built for another TensorRT or GPU than ``env``."""
    for key, what in (("tensorrt", "TensorRT"), ("gpu", "GPU"), ("capability", "compute capability")):
        if str(header.get(key)) != str(env.get(key)):
            raise ForeignEngineError(
                f"{where} was built for {what} {header.get(key)} but this machine has {env.get(key)}; "
                f"rebuild it here with rtseg export --format engine")


class TensorRTBackend(Backend):
    """A deserialized engine with one execution context on the current CUDA device.

    Args:
        path: ``.engine`` file written by ``rtseg export``.
        device: ``cuda`` or ``cuda:N``.
    """

    runtime = "tensorrt"

    def __init__(self, path: str | Path, device: str = "cuda"):
        header, offset = read_engine_header(path)
        if not str(device).startswith("cuda"):
            raise RtsegError(f"TensorRT engines run on a CUDA device, not '{device}'")
        trt = import_tensorrt()
        self.device = torch.device(device)
        cuda_device()  # a clear error without a GPU, before set_device's
        torch.cuda.set_device(self.device)
        check_compatible(header, trt_environment(), str(path))
        self.meta = ModelMeta.from_json(json.dumps(header["meta"]), str(path))
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime_ = trt.Runtime(self.logger)
        with open(path, "rb") as f:
            f.seek(offset)
            self.engine = self.runtime_.deserialize_cuda_engine(f.read())
        if self.engine is None:
            raise RtsegError(f"TensorRT could not deserialize {path}")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise RtsegError(f"{path}: expected one input and one output tensor, got {inputs} -> {outputs}")
        self.input_name, self.output_name = inputs[0], outputs[0]
        self.input_dtype = _torch_dtype(trt, self.engine.get_tensor_dtype(self.input_name))
        self.output_dtype = _torch_dtype(trt, self.engine.get_tensor_dtype(self.output_name))
        self.path = Path(path)

    def infer(self, batch: np.ndarray | torch.Tensor) -> torch.Tensor:
        return self.infer_device(torch.as_tensor(batch)).cpu()

    def infer_device(self, x: torch.Tensor) -> torch.Tensor:
        """Runs a batch and leaves the result on the GPU (for pipelines that stay there)."""
        x = x.to(self.device, self.input_dtype, non_blocking=True).contiguous()
        if not self.context.set_input_shape(self.input_name, tuple(x.shape)):
            raise RtsegError(f"input shape {tuple(x.shape)} is outside the engine's optimization profile")
        out = torch.empty(tuple(self.context.get_tensor_shape(self.output_name)), dtype=self.output_dtype,
                          device=self.device)
        self.context.set_tensor_address(self.input_name, x.data_ptr())
        self.context.set_tensor_address(self.output_name, out.data_ptr())
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RtsegError("TensorRT execution failed")
        stream.synchronize()
        return out if self.meta.argmax_in_graph else out.float()


def _torch_dtype(trt, dtype) -> torch.dtype:
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int8: torch.int8,
             trt.int32: torch.int32, trt.uint8: torch.uint8, trt.bool: torch.bool}
    if hasattr(trt, "int64"):
        table[trt.int64] = torch.int64
    if dtype not in table:
        raise RtsegError(f"unsupported engine tensor type {dtype}")
    return table[dtype]
