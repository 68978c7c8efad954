"""INT8 post-training static quantization of an FP32 ONNX graph with ONNX Runtime (QDQ format).

Two flavours from the same calibration frames:

* ``cpu``: U8 activations (asymmetric), S8 per-channel weights. The fast combination for ONNX
  Runtime's and OpenVINO's VNNI kernels. (``openvino``: the same, with a few more op types left
  in float, see FLOAT_OPS.)
* ``tensorrt``: S8 activations and S8 per-channel weights, both symmetric, so every zero point
  is 0 — TensorRT's ONNX parser rejects non-zero zero points. Slow on ORT's CPU kernels, but ORT
  can still run it, which is how its accuracy is measured without a GPU.

``quant_pre_process`` (shape inference and graph optimisation) runs first, as ORT recommends.
Nodes that stay in float are listed, whether the quantizer skipped them or they were excluded.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from rtseg.errors import RtsegError

TARGETS = ("cpu", "tensorrt", "openvino")
COMPUTE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
# Left in float. OpenVINO 2026.4 crashes (segfault in compile_model) on ORT's Q/DQ around
# ConvTranspose and around an unfused BatchNormalization (measured on ENet), and the CPU artifact
# must at least not crash OpenVINO. onnx-tensorrt folds a BatchNormalization into one scale layer
# only when its scale/bias/mean/var are initializers, not DequantizeLinear outputs. The
# ``openvino`` target (QDQ converted to IR when NNCF is missing) also keeps Pad and MaxPool in
# float: OpenVINO's low-precision passes mis-propagate a per-channel dequantization through
# ENet's channel-padding downsampling branch ("Argument shapes are inconsistent").
FLOAT_OPS = {"cpu": ("ConvTranspose", "BatchNormalization"), "tensorrt": ("BatchNormalization",),
             "openvino": ("ConvTranspose", "BatchNormalization", "Pad", "MaxPool")}


def op_types(target: str) -> list[str]:
    """Op types ORT may quantize for ``target``: its own default set minus FLOAT_OPS[target]."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted((set(QLinearOpsRegistry) | set(QDQRegistry)) - set(FLOAT_OPS[target]))


def import_quantization():
    try:
        from onnxruntime import quantization
    except ImportError:
        raise RtsegError('INT8 quantization needs ONNX Runtime: pip install "rtseg[onnx]"') from None
    return quantization


@contextlib.contextmanager
def _quiet_root_logger():
    """ORT's quantizer logs notes (e.g. per-channel axes of unfused BatchNorms) on the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _reader(input_name: str, batches: Sequence[np.ndarray]):
    q = import_quantization()

    class FrameReader(q.CalibrationDataReader):
        """Feeds the preprocessed frames one at a time (the graph is batch 1)."""

        def __init__(self):
            self._it = iter(batches)

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {input_name: np.ascontiguousarray(x[None], np.float32)}

        def rewind(self):
            self._it = iter(batches)

        def __len__(self):
            return len(batches)

    return FrameReader()


def head_nodes(model) -> list[str]:
    """Names of the last convolution and every node after it (classifier + final upsampling).

    They are the layers whose rounding errors reach the output directly, the usual candidates to
    keep in float when INT8 costs accuracy.
    """
    nodes = list(model.graph.node)
    last = max((i for i, n in enumerate(nodes) if n.op_type in ("Conv", "ConvTranspose")), default=None)
    if last is None:
        return []
    downstream, names = set(nodes[last].output), [nodes[last].name]
    for n in nodes[last + 1:]:
        if downstream.intersection(n.input):
            downstream.update(n.output)
            names.append(n.name)
    return names


def float_nodes(model) -> dict[str, list[str]]:
    """Compute nodes (Conv, Gemm, ...) of a QDQ graph that run in float: input or weight not
    fed by a DequantizeLinear (an activation may be dequantized for another consumer while this
    node keeps float weights)."""
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    out: dict[str, list[str]] = {}
    for n in model.graph.node:
        if n.op_type in COMPUTE_OPS and not all(producer.get(i) == "DequantizeLinear" for i in n.input[:2]):
            out.setdefault(n.op_type, []).append(n.name)
    return out


def nonzero_zero_points(model) -> list[str]:
    """Names of Q/DQ zero-point tensors that are not all zero (TensorRT refuses those)."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    consts = {n.output[0]: n for n in model.graph.node if n.op_type == "Constant"}
    bad = []
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2 and n.input[2]:
            zp = n.input[2]
            if zp in inits:
                value = numpy_helper.to_array(inits[zp])
            elif zp in consts:
                value = numpy_helper.to_array(consts[zp].attribute[0].t)
            else:
                bad.append(zp)  # computed at run time: cannot be proven zero
                continue
            if np.any(value != 0):
                bad.append(zp)
    return bad


def qdq_count(model) -> int:
    return sum(n.op_type == "QuantizeLinear" for n in model.graph.node)


def quantize_onnx(fp32_path: str | Path, out_path: str | Path, frames: Sequence[np.ndarray],
                  target: str = "cpu", exclude: Sequence[str] = (), keep_head: bool = False,
                  method: str = "minmax") -> dict:
    """Writes a QDQ INT8 model of ``fp32_path`` calibrated on ``frames``.

    Args:
        fp32_path: FP32 logits ONNX (batch 1, static size).
        out_path: where the INT8 ONNX goes (no rtseg metadata yet: the caller adds it).
        frames: preprocessed float32 (3, H, W) calibration frames at the graph's input size.
        target: ``cpu`` or ``openvino`` (U8/S8), or ``tensorrt`` (symmetric S8/S8, zero points 0).
        exclude: node names (of the pre-processed graph) to leave in float.
        keep_head: also leave the last convolution and everything after it in float.
        method: ``minmax``, ``entropy`` or ``percentile``.

    Returns:
        ``float_nodes`` (op type -> names left in float), ``excluded``, ``qdq_nodes`` and, for
        TensorRT, ``nonzero_zero_points`` (must be empty).
    """
    import onnx

    q = import_quantization()
    if target not in TARGETS:
        raise RtsegError(f"quantization target must be one of {TARGETS}, got '{target}'")
    methods = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
               "percentile": q.CalibrationMethod.Percentile}
    if method not in methods:
        raise RtsegError(f"calibration method must be one of {', '.join(methods)}, got '{method}'")
    if not frames:
        raise RtsegError("calibration needs at least one frame")
    # MinMax calibration keeps only per-tensor min/max per frame, so memory stays small. (Not
    # CalibMaxIntermediateOutputs: in ORT 1.31 it discards the collected ranges instead of merging them.)
    options: dict = {}
    if target == "tensorrt":
        options |= {"ActivationSymmetric": True, "WeightSymmetric": True}
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(prefix="rtseg-quant-") as tmp, _quiet_root_logger():
        pre = Path(tmp) / "pre.onnx"
        q.quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        pre_model = onnx.load(str(pre))
        input_name = pre_model.graph.input[0].name
        exclude = list(exclude) + (head_nodes(pre_model) if keep_head else [])
        del pre_model
        q.quantize_static(
            str(pre), str(out_path), _reader(input_name, frames), quant_format=q.QuantFormat.QDQ,
            per_channel=True,
            activation_type=q.QuantType.QInt8 if target == "tensorrt" else q.QuantType.QUInt8,
            weight_type=q.QuantType.QInt8, calibrate_method=methods[method],
            op_types_to_quantize=op_types(target), nodes_to_exclude=list(exclude), extra_options=options)
    model = onnx.load(str(out_path))
    report = {"target": target, "method": method, "frames": len(frames), "excluded": list(exclude),
              "float_nodes": float_nodes(model), "qdq_nodes": qdq_count(model)}
    if target == "tensorrt":
        report["nonzero_zero_points"] = nonzero_zero_points(model)
        if report["nonzero_zero_points"]:
            os.unlink(out_path)
            raise RtsegError(f"TensorRT Q/DQ model has non-zero zero points "
                             f"({', '.join(report['nonzero_zero_points'][:3])}); TensorRT would reject it")
    return report


def describe_float_nodes(report: dict) -> str:
    """One line: ``left in float: Conv x2 (head.cls, ...), ConvTranspose x1 (...)`` or ``none``."""
    groups = report.get("float_nodes") or {}
    if not groups:
        return "left in float: no Conv/Gemm node (every compute layer is INT8)"
    counts = Counter({k: len(v) for k, v in groups.items()})
    parts = [f"{op} x{n} ({', '.join(groups[op][:3])}{', ...' if n > 3 else ''})" for op, n in counts.items()]
    return "left in float: " + ", ".join(parts)
