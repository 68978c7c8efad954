"""ONNX -> OpenVINO IR (``.xml`` + ``.bin``), FP32 / FP16 weights / INT8.

INT8 comes from NNCF's post-training quantization of the FP32 graph when ``nncf`` is installed,
otherwise from ONNX Runtime's QDQ model (OpenVINO turns its Q/DQ pairs into FakeQuantize and runs
them with INT8 kernels). Metadata lives in the IR's ``rt_info`` under ``rtseg/meta``.
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Sequence

import numpy as np

from rtseg.backends.base import ModelMeta
from rtseg.backends.openvino_backend import RT_INFO_PATH, import_openvino, openvino_core
from rtseg.errors import RtsegError
from rtseg.io import atomic_output

CONV_TYPES = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData",
              "MatMul")


def has_nncf() -> bool:
    try:
        import nncf  # noqa: F401
    except ImportError:
        return False
    return True


def save_ir(model, xml_path: str | Path, meta: ModelMeta, fp16_weights: bool = False) -> Path:
    """Embeds ``meta`` and writes the IR atomically (both files renamed into place)."""
    ov = import_openvino()
    model.set_rt_info(meta.to_json(), RT_INFO_PATH)
    with atomic_output(xml_path, also=(".bin",)) as tmp:
        # compress_to_fp16 defaults to True in ov.save_model: an "FP32" IR would silently get FP16 weights.
        ov.save_model(model, str(tmp), compress_to_fp16=fp16_weights)
    return Path(xml_path)


def onnx_to_ir(onnx_path: str | Path, xml_path: str | Path, meta: ModelMeta, fp16_weights: bool = False) -> Path:
    """Converts an rtseg ONNX (FP32 or QDQ INT8) to IR with ``meta``."""
    ov = import_openvino()
    try:
        model = ov.convert_model(str(onnx_path))
    except Exception as e:  # noqa: BLE001 - the converter raises its own error types
        raise RtsegError(f"OpenVINO cannot convert {onnx_path}: {str(e).splitlines()[0]}") from None
    return save_ir(model, xml_path, meta, fp16_weights)


def head_ops(model) -> list[str]:
    """Friendly names of the last convolution and every op after it (up to the result)."""
    ops = list(model.get_ordered_ops())
    last = max((i for i, op in enumerate(ops) if op.get_type_name() in CONV_TYPES[:4]), default=None)
    if last is None:
        return []
    names, reached = [ops[last].get_friendly_name()], {ops[last].get_friendly_name()}
    for op in ops[last + 1:]:
        if op.get_type_name() in ("Result", "Constant"):
            continue
        parents = {op.input_value(i).get_node().get_friendly_name() for i in range(op.get_input_size())}
        if parents & reached:
            reached.add(op.get_friendly_name())
            names.append(op.get_friendly_name())
    return names


def float_ops(model) -> dict[str, list[str]]:
    """Convolution/MatMul ops whose activation input is not fed by a FakeQuantize (left in float)."""
    out: dict[str, list[str]] = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() in CONV_TYPES:
            src = op.input_value(0).get_node().get_type_name()
            if src != "FakeQuantize":
                out.setdefault(op.get_type_name(), []).append(op.get_friendly_name())
    return out


def quantize_nncf(onnx_path: str | Path, xml_path: str | Path, meta: ModelMeta, frames: Sequence[np.ndarray],
                  keep_head: bool = False) -> dict:
    """NNCF post-training INT8 quantization of an FP32 ONNX, calibrated on preprocessed ``frames``.

    Returns:
        ``float_nodes`` (op type -> names left in float), ``excluded``, ``frames``, ``method``.
    """
    import logging

    import nncf

    ov = import_openvino()
    model = ov.convert_model(str(onnx_path))
    excluded = head_ops(model) if keep_head else []
    scope = nncf.IgnoredScope(names=excluded, validate=False) if excluded else None
    dataset = nncf.Dataset(list(frames), lambda x: np.ascontiguousarray(x[None], np.float32))
    nncf_logger = logging.getLogger("nncf")
    level = nncf_logger.level
    nncf_logger.setLevel(logging.WARNING)  # NNCF logs every step at INFO
    try:
        # ...and draws rich progress bars on stdout, whose last line belongs to the artifact path.
        with contextlib.redirect_stdout(io.StringIO()):
            quantized = nncf.quantize(model, dataset, subset_size=len(frames), ignored_scope=scope,
                                      preset=nncf.QuantizationPreset.PERFORMANCE)
    finally:
        nncf_logger.setLevel(level)
    save_ir(quantized, xml_path, meta)
    return {"method": "nncf", "frames": len(frames), "excluded": excluded, "float_nodes": float_ops(quantized)}


def ir_float_report(xml_path: str | Path) -> dict:
    """``float_nodes`` of an existing IR (e.g. converted from an ORT QDQ model)."""
    return {"float_nodes": float_ops(openvino_core().read_model(str(xml_path)))}
