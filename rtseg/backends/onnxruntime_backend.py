"""ONNX Runtime: ``.onnx`` files written by ``rtseg export`` (FP32, INT8 QDQ, argmax-in-graph)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from rtseg.backends.base import Backend, ModelMeta
from rtseg.errors import RtsegError

META_KEY = "rtseg"  # key of the JSON metadata in the ONNX model's metadata_props


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise RtsegError('ONNX Runtime is not installed: pip install "rtseg[onnx]"') from None
    return onnxruntime


def providers_for(device: str) -> list[str]:
    """Execution providers for ``cpu`` or ``cuda[:N]``; CUDA without its provider is an error."""
    ort = import_onnxruntime()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise RtsegError("this onnxruntime has no CUDA provider: pip install onnxruntime-gpu, "
                             "or use --device cpu")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise RtsegError(f"ONNX Runtime runs on cpu or cuda, not '{device}'")


def read_onnx_meta(path: str | Path) -> ModelMeta:
    """The rtseg metadata embedded in an ONNX file (without loading its weights into a session)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and OS errors alike
        raise RtsegError(f"{path} is not a readable ONNX file ({type(e).__name__})") from None
    props = {p.key: p.value for p in model.metadata_props}
    if META_KEY not in props:
        raise RtsegError(f"{path} has no rtseg metadata (export it with rtseg export)")
    return ModelMeta.from_json(props[META_KEY], str(path))


class OnnxRuntimeBackend(Backend):
    """An ONNX Runtime session.

    Args:
        path: ``.onnx`` file with rtseg metadata.
        device: ``cpu`` or ``cuda``.
        threads: intra-op threads; ``None`` lets ONNX Runtime use every core.
    """

    runtime = "onnxruntime"

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None):
        ort = import_onnxruntime()
        path = Path(path)
        if not path.is_file():
            raise RtsegError(f"model file not found: {path}")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=providers_for(device))
        except Exception as e:  # noqa: BLE001 - ORT raises its own untyped errors for bad files
            raise RtsegError(f"ONNX Runtime cannot load {path}: {str(e).splitlines()[0]}") from None
        props = self.session.get_modelmeta().custom_metadata_map
        if META_KEY not in props:
            raise RtsegError(f"{path} has no rtseg metadata (export it with rtseg export)")
        self.meta = ModelMeta.from_json(props[META_KEY], str(path))
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.output_name = self.session.get_outputs()[0].name
        # Exports are static (batch 1): larger batches run one sample at a time.
        self.fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) else None
        self.path = path

    def infer(self, batch: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(np.asarray(batch, dtype=np.float32))
        if self.fixed_batch and len(x) != self.fixed_batch:
            outs = [self._run(x[i:i + self.fixed_batch]) for i in range(0, len(x), self.fixed_batch)]
            return torch.cat(outs)
        return self._run(x)

    def _run(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.session.run([self.output_name], {self.input_name: x})[0])

