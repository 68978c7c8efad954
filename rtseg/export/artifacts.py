"""Reading and re-stamping the metadata of an artifact file of any format, chosen by suffix."""
from __future__ import annotations

import json
from pathlib import Path

from rtseg.backends.base import ModelMeta
from rtseg.errors import RtsegError


def read_meta(path: str | Path) -> ModelMeta:
    """The rtseg metadata of an ``.onnx``, ``.xml`` (OpenVINO IR) or ``.engine`` file."""
    path = Path(path)
    if path.suffix == ".onnx":
        from rtseg.backends.onnxruntime_backend import read_onnx_meta

        return read_onnx_meta(path)
    if path.suffix == ".xml":
        from rtseg.backends.openvino_backend import openvino_core, read_ir_meta

        try:
            model = openvino_core().read_model(str(path))
        except RuntimeError as e:
            raise RtsegError(f"OpenVINO cannot read {path}: {str(e).splitlines()[0]}") from None
        return read_ir_meta(model, str(path))
    if path.suffix == ".engine":
        from rtseg.backends.tensorrt_backend import read_engine_header

        return ModelMeta.from_json(json.dumps(read_engine_header(path)[0]["meta"]), str(path))
    raise RtsegError(f"not an rtseg artifact: {path}")


def restamp(src: str | Path, dst: str | Path, meta: ModelMeta) -> Path:
    """Writes ``src`` (ONNX or IR) to ``dst`` with ``meta`` as its metadata."""
    src = Path(src)
    if src.suffix == ".xml":
        from rtseg.backends.openvino_backend import openvino_core
        from rtseg.export.openvino import save_ir

        return save_ir(openvino_core().read_model(str(src)), dst, meta)
    import onnx

    from rtseg.export.onnx import save_checked, set_meta

    return save_checked(set_meta(onnx.load(str(src)), meta), dst)
