"""PyTorch eager runtime: CPU, and CUDA with FP16 and channels-last for GPUs without TensorRT."""
from __future__ import annotations

import numpy as np
import torch

from rtseg.backends.base import Backend, ModelMeta
from rtseg.errors import RtsegError
from rtseg.runtimes import RUNTIMES

PRECISIONS = RUNTIMES["torch"].precisions


def resolve_device(device: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N``; a CUDA device on a machine without one is an RtsegError."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise RtsegError(f"unknown device '{device}' (use cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        build = "a CPU build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise RtsegError(f"device '{device}' requested but CUDA is not available "
                         f"(torch {torch.__version__} is {build})")
    if dev.type not in ("cpu", "cuda"):
        raise RtsegError(f"the torch backend runs on cpu or cuda, not '{device}'")
    return dev


class TorchBackend(Backend):
    """An ``nn.Module`` in eval mode.

    Args:
        model: the network; moved to ``device`` and put in eval mode.
        meta: its metadata.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``fp32``, or ``fp16`` (CUDA only: CPU half kernels are slow or missing).
        channels_last: NHWC memory layout, which cuDNN's tensor-core kernels prefer; default on
            for CUDA, off (the model's layout left as it is) for the CPU.
    """

    runtime = "torch"

    def __init__(self, model: torch.nn.Module, meta: ModelMeta, device: str = "cpu",
                 precision: str = "fp32", channels_last: bool | None = None):
        if precision not in PRECISIONS:
            raise RtsegError(f"the torch backend runs {' or '.join(PRECISIONS)}, not '{precision}' "
                             f"(INT8 needs an exported model: rtseg export)")
        self.device = resolve_device(device)
        if precision == "fp16" and self.device.type != "cuda":
            raise RtsegError("fp16 with the torch backend needs a CUDA device (--device cuda)")
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        self.channels_last = self.device.type == "cuda" if channels_last is None else channels_last
        # Only ever convert *to* channels-last: training validates its live model through this
        # class, and converting that model back to contiguous would undo its own layout choice.
        self.model = model.eval().to(self.device, self.dtype)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        meta.precision = precision
        self.meta = meta

    @classmethod
    def load(cls, spec: str, device: str = "cpu", precision: str = "fp32",
             channels_last: bool | None = None) -> "TorchBackend":
        from rtseg.zoo import load_model

        return cls.from_loaded(load_model(spec), str(spec), device, precision, channels_last)

    @classmethod
    def from_loaded(cls, lm, source: str, device: str = "cpu", precision: str = "fp32",
                    channels_last: bool | None = None) -> "TorchBackend":
        """Wraps a :class:`rtseg.zoo.LoadedModel` (its module is used, not copied)."""
        return cls(lm.model, ModelMeta.from_preset(lm.preset, lm.dataset, source), device, precision,
                   channels_last)

    @torch.inference_mode()
    def infer(self, batch: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(batch).to(self.device, self.dtype, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x).float().cpu()
