"""One inference interface for run, eval, bench and batch; one file per runtime.

``open_backend(spec)`` returns a :class:`~rtseg.backends.base.Backend` for a shipped preset name or
a weight file. Export formats (ONNX Runtime, OpenVINO, TensorRT) plug into the same interface.
"""
from __future__ import annotations

from rtseg.backends.base import Backend, ModelMeta


def open_backend(spec: str, device: str = "cpu") -> Backend:
    """Opens ``spec`` (preset name or ``.safetensors`` file) on the torch runtime."""
    from rtseg.backends.torch_backend import TorchBackend

    return TorchBackend.load(spec, device=device)


__all__ = ["Backend", "ModelMeta", "open_backend"]
