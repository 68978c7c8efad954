"""OpenVINO on the CPU: IR (``.xml`` + ``.bin``) written by ``rtseg export``, or an rtseg ``.onnx``.

OpenVINO runs ONNX Runtime's QDQ models with its own INT8 kernels, so an INT8 ``.onnx`` can be
opened here as well as in ONNX Runtime.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from rtseg.backends.base import Backend, ModelMeta
from rtseg.errors import RtsegError

RT_INFO_PATH = ["rtseg", "meta"]  # where the JSON metadata lives in the IR's rt_info
HINTS = ("LATENCY", "THROUGHPUT")


def import_openvino():
    try:
        import openvino
    except ImportError:
        raise RtsegError('OpenVINO is not installed: pip install "rtseg[openvino]"') from None
    return openvino


@lru_cache(maxsize=None)
def openvino_core():
    """The process's one ``ov.Core``, kept until exit.

    OpenVINO's CPU plugin (one per ``Core``) gives the thread that creates it an alternate signal
    stack big enough for AMX state, and on destruction puts back the stack it found and unmaps its
    own. Two cores freed in the order they were made leave the thread's signal stack pointing at
    unmapped memory, and the next signal with a handler (Ctrl-C, a subprocess ending) kills the
    process with SIGSEGV: seen on a 2-core AMX Xeon after two backends were opened and closed.
    One core that lives as long as the process cannot do that, and it is OpenVINO's advice anyway.
    """
    return import_openvino().Core()


def read_ir_meta(model, where: str) -> ModelMeta:
    """Metadata of an ``ov.Model`` read from an IR; see :data:`RT_INFO_PATH`."""
    if not model.has_rt_info(RT_INFO_PATH):
        raise RtsegError(f"{where} has no rtseg metadata (export it with rtseg export)")
    return ModelMeta.from_json(model.get_rt_info(RT_INFO_PATH).astype(str), where)


class OpenVinoBackend(Backend):
    """A compiled OpenVINO model.

    Args:
        path: ``.xml`` IR (its ``.bin`` beside it) or ``.onnx`` file with rtseg metadata.
        device: OpenVINO device name; ``cpu`` maps to ``CPU``.
        hint: ``LATENCY`` (one request at a time, the right choice for a frame loop) or
            ``THROUGHPUT`` (parallel streams, for batch work).
        streams: with ``streams > 1``, that many requests run side by side (``THROUGHPUT`` with
            ``NUM_STREAMS``, the CPU's threads split between them) and :meth:`submit` keeps them
            busy. On 2 cores of an AMX Xeon the default model's INT8 IR gave 84 frames/s with
            2 streams against 74 with one 2-thread request, at 23 instead of 27 CPU ms a frame;
            each frame's own latency doubles, so live sources keep one stream.
        inference_precision: OpenVINO's ``INFERENCE_PRECISION_HINT``. Default: ``f32`` for FP32 and
            INT8 artifacts, OpenVINO's own choice for FP16 ones. The CPU plugin's own default is
            bf16 wherever the CPU has bf16 instructions (AVX512_BF16, AMX), which silently turns
            an "FP32" model into a bf16 one (measured: 9.6 mIoU points of disagreement with FP32
            for a lightly trained ENet).
    """

    runtime = "openvino"

    def __init__(self, path: str | Path, device: str = "cpu", hint: str = "LATENCY",
                 inference_precision: str | None = None, streams: int = 1):
        path = Path(path)
        if not path.is_file():
            raise RtsegError(f"model file not found: {path}")
        if hint not in HINTS:
            raise RtsegError(f"OpenVINO performance hint must be one of {HINTS}, got '{hint}'")
        core = openvino_core()
        try:
            model = core.read_model(str(path))
        except RuntimeError as e:
            raise RtsegError(f"OpenVINO cannot read {path}: {str(e).splitlines()[0]}") from None
        if path.suffix == ".onnx":
            from rtseg.backends.onnxruntime_backend import read_onnx_meta

            self.meta = read_onnx_meta(path)
        else:
            self.meta = read_ir_meta(model, str(path))
        ov_device = device.upper()
        if ov_device not in core.available_devices:
            raise RtsegError(f"OpenVINO device '{device}' not available here; "
                             f"available: {', '.join(core.available_devices)}")
        config = {"PERFORMANCE_HINT": hint}
        if streams > 1:
            config.update(PERFORMANCE_HINT="THROUGHPUT", NUM_STREAMS=int(streams))
        if inference_precision is None and self.meta.precision in ("fp32", "int8"):
            inference_precision = "f32"
        if inference_precision:
            config["INFERENCE_PRECISION_HINT"] = inference_precision
        try:
            self.compiled = core.compile_model(model, ov_device, config)
        except RuntimeError as e:
            lines = [ln for ln in str(e).splitlines() if ln.strip()]
            raise RtsegError(f"OpenVINO cannot compile {path}: {lines[-1][:200] if lines else e}") from None
        self.requests = [self.compiled.create_infer_request() for _ in range(max(1, int(streams)))]
        self.request = self.requests[0]
        self.inflight = len(self.requests)
        self._next = 0
        shape = self.compiled.inputs[0].partial_shape
        self.fixed_batch = shape[0].get_length() if shape[0].is_static else None
        self.path = path

    def infer(self, batch: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(np.asarray(batch, dtype=np.float32))
        if self.fixed_batch and len(x) != self.fixed_batch:
            return torch.cat([self._run(x[i:i + self.fixed_batch]) for i in range(0, len(x), self.fixed_batch)])
        return self._run(x)

    def submit(self, batch: np.ndarray) -> Callable[[], torch.Tensor]:
        x = np.ascontiguousarray(np.asarray(batch, dtype=np.float32))
        if self.inflight == 1 or (self.fixed_batch and len(x) != self.fixed_batch):
            return super().submit(x)
        request = self.requests[self._next]
        self._next = (self._next + 1) % self.inflight
        request.wait()  # collected already by the caller's contract; a no-op then
        request.start_async({0: x})  # copies the input: the caller may reuse its array

        def result() -> torch.Tensor:
            request.wait()
            return torch.from_numpy(request.get_output_tensor(0).data.copy())
        return result

    def _run(self, x: np.ndarray) -> torch.Tensor:
        # The request owns its output buffer and reuses it on the next call: copy it out.
        return torch.from_numpy(self.request.infer({0: x})[0].copy())
