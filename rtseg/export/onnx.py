"""PyTorch -> ONNX with torch.onnx's dynamo exporter, checked against torch in ONNX Runtime.

Static input sizes always work. Dynamic H/W is only kept when ONNX Runtime reproduces torch at
three sizes: torch.export happily records shape arithmetic that is only right for the traced
size (pyramid pooling, padding to a multiple of 32), and such a graph would otherwise fail or be
silently wrong at run time. Argmax-in-graph is appended to an already checked logits graph, so it
needs no second export.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from rtseg.backends.base import ModelMeta
from rtseg.errors import RtsegError
from rtseg.io import atomic_output

META_KEY = "rtseg"
INPUT, LOGITS, IDS = "input", "logits", "ids"
REL_TOL = 1e-3            # max |ORT - torch| / max |torch| accepted for FP32 logits
HALF_MIN_AGREEMENT = 0.98  # FP16 graph vs FP32 model: logits drift, so compare class ids
MIN_AGREEMENT = 0.999


class ExportError(RtsegError):
    """A model cannot be exported, or the exported graph does not reproduce torch."""


def import_onnx():
    try:
        import onnx
        import onnxruntime  # noqa: F401 - every export is checked with it
    except ImportError:
        raise RtsegError('ONNX export needs onnx and onnxruntime: pip install "rtseg[onnx]"') from None
    return onnx


class _HalfModel(nn.Module):
    """FP16 weights and arithmetic with FP32 input and output, for strongly typed TensorRT builds."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.half()

    def forward(self, x):
        return self.model(x.half()).float()


@contextlib.contextmanager
def _quiet_exporter():
    """The dynamo exporter logs, warns and prints progress on every call; keep the CLI's output ours."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnx_ir", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def torch_to_onnx(model: nn.Module, size: tuple[int, int], dynamic: bool = False, half: bool = False):
    """Exports ``model`` (eval mode) for a (1, 3, H, W) input; returns the ``onnx.ModelProto``.

    Args:
        model: logits model; it is not modified (FP16 export works on a copy).
        size: (H, W) traced input size.
        dynamic: mark H and W dynamic; torch.export refuses if the model specializes them.
        half: FP16 graph with FP32 input/output.

    Raises:
        ExportError: torch.onnx fails (with a reason naming dynamic shapes if those were asked for).
    """
    import copy

    from torch.export import Dim

    import_onnx()
    model = model.eval()
    if half:
        model = _HalfModel(copy.deepcopy(model))
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))
    shapes = {"x": {2: Dim.DYNAMIC, 3: Dim.DYNAMIC}} if dynamic else None
    try:
        with _quiet_exporter():
            program = torch.onnx.export(model, (x,), None, dynamo=True, input_names=[INPUT],
                                        output_names=[LOGITS], dynamic_shapes=shapes, verbose=False)
    except Exception as e:  # noqa: BLE001 - the exporter raises many types; all mean "cannot export"
        reason = _first_line(e)
        if dynamic:
            raise ExportError(f"dynamic H/W refused: torch.export cannot keep H and W symbolic for "
                              f"this model ({reason}); export a static --size instead") from None
        raise ExportError(f"torch.onnx cannot export this model: {reason}") from None
    return program.model_proto


def _first_line(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    # torch.export puts the actual reason after a long preamble; prefer a line that names it.
    for ln in lines:
        if any(w in ln for w in ("specializ", "inferred a static", "Constraints violated", "not supported")):
            return ln[:300]
    return (lines[0] if lines else type(e).__name__)[:300]


def add_argmax(proto, num_classes: int):
    """Appends ``ArgMax(axis=1) -> Cast(uint8)`` to a logits graph: output ``ids`` (N, H, W) uint8.

    uint8 ids are an eighth of int64's bytes and 1/(4C) of FP32 logits', which is what a frame
    pipeline copies back from the device; class ids beyond 255 would not fit.
    """
    from onnx import TensorProto, helper

    if num_classes > 256:
        raise ExportError(f"argmax in graph gives uint8 ids: at most 256 classes, got {num_classes}")
    graph = proto.graph
    out = graph.output[0]
    dims = out.type.tensor_type.shape.dim
    graph.node.append(helper.make_node("ArgMax", [out.name], ["ids_int64"], axis=1, keepdims=0,
                                       name="rtseg_argmax"))
    graph.node.append(helper.make_node("Cast", ["ids_int64"], [IDS], to=TensorProto.UINT8, name="rtseg_ids"))
    shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims]
    new_out = helper.make_tensor_value_info(IDS, TensorProto.UINT8, [shape[0], shape[2], shape[3]])
    graph.output.pop()
    graph.output.append(new_out)
    return proto


def set_meta(proto, meta: ModelMeta):
    """Stores ``meta`` as JSON under ``metadata_props['rtseg']`` (replacing an older entry)."""
    keep = [p for p in proto.metadata_props if p.key != META_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, meta.to_json()
    return proto


def save_checked(proto, path: str | Path) -> Path:
    """``onnx.checker`` then an atomic write (temporary name, then rename)."""
    onnx = import_onnx()
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"onnx.checker rejects the exported graph: {_first_line(e)}") from None
    with atomic_output(path) as tmp:
        onnx.save(proto, str(tmp))
    return Path(path)


def ort_session(path: str | Path, threads: int | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def compare_with_torch(model: nn.Module, onnx_path: str | Path, inputs: list[np.ndarray]) -> dict:
    """Runs ``inputs`` (each (1, 3, H, W) float32) through torch and ONNX Runtime.

    Returns:
        ``max_abs`` (largest logit difference), ``rel`` (that over the largest |torch logit|),
        ``agreement`` (fraction of pixels with the same argmax; ids for argmax graphs).
    """
    sess = ort_session(onnx_path)
    name = sess.get_inputs()[0].name
    max_abs, scale, same, total = 0.0, 0.0, 0, 0
    for x in inputs:
        with torch.inference_mode():
            ref = model.eval()(torch.from_numpy(x)).float().numpy()
        out = sess.run(None, {name: x})[0]
        if out.ndim == 3:  # argmax graph: ids only
            ids = out.astype(np.int64)
        else:
            max_abs = max(max_abs, float(np.abs(out - ref).max()))
            ids = out.argmax(1)
        scale = max(scale, float(np.abs(ref).max()))
        same += int((ids == ref.argmax(1)).sum())
        total += ids.size
    return {"max_abs": max_abs, "rel": max_abs / max(scale, 1e-12), "agreement": same / max(total, 1)}


def probe_sizes(size: tuple[int, int]) -> list[tuple[int, int]]:
    """The traced size and two others, smaller and larger, with odd sides (no multiple of 2 or 32)."""
    h, w = size
    return [(h, w), (max(9, (h * 3) // 4) | 1, max(9, (w * 3) // 4) | 1), ((h * 3) // 2 + 1, (w * 3) // 2 + 3)]


def random_inputs(sizes: list[tuple[int, int]], seed: int = 0) -> list[np.ndarray]:
    g = np.random.default_rng(seed)
    return [g.standard_normal((1, 3, h, w), dtype=np.float32) for h, w in sizes]


def verify(model: nn.Module, onnx_path: str | Path, sizes: list[tuple[int, int]],
           inputs: list[np.ndarray] | None = None, dynamic: bool = False, tol: float | None = REL_TOL) -> dict:
    """Checks an exported logits graph against torch at each size; raises ExportError if it differs.

    Returns:
        The worst :func:`compare_with_torch` figures over the sizes, plus ``sizes``.
    """
    worst = {"max_abs": 0.0, "rel": 0.0, "agreement": 1.0}
    for i, hw in enumerate(sizes):
        xs = [x for x in (inputs or []) if x.shape[-2:] == hw] or random_inputs([hw], seed=i)
        try:
            r = compare_with_torch(model, onnx_path, xs)
        except Exception as e:  # noqa: BLE001 - ORT shape errors are plain exceptions
            what = "dynamic H/W refused" if dynamic else "exported graph fails"
            raise ExportError(f"{what}: ONNX Runtime fails at {hw[0]}x{hw[1]} ({_first_line(e)})") from None
        # Logits may differ locally where a max-pool window holds two near-equal values and the
        # runtimes pick different ones (ENet's unpooling then moves a value by a pixel); what must
        # hold is the predicted class, so a logit deviation alone is not a failure.
        if tol is not None and r["rel"] > tol and r["agreement"] < MIN_AGREEMENT:
            what = "dynamic H/W refused" if dynamic else "exported graph is wrong"
            raise ExportError(f"{what}: at {hw[0]}x{hw[1]} ONNX Runtime differs from torch by "
                              f"{r['max_abs']:.3g} ({100 * r['rel']:.2g} % of the logit range)")
        worst = {"max_abs": max(worst["max_abs"], r["max_abs"]), "rel": max(worst["rel"], r["rel"]),
                 "agreement": min(worst["agreement"], r["agreement"])}
    return {**worst, "sizes": [list(s) for s in sizes]}


def export_onnx(model: nn.Module, meta: ModelMeta, path: str | Path, size: tuple[int, int],
                dynamic: bool = False, argmax: bool = False, half: bool = False,
                check_inputs: list[np.ndarray] | None = None) -> tuple[Path, dict]:
    """Exports, verifies and saves ``model`` with ``meta`` embedded.

    The logits graph is compared with torch at ``size`` (and, for ``dynamic``, at two more sizes)
    before argmax is appended, so a wrong graph never reaches disk.

    Args:
        model: the torch model (eval mode).
        meta: metadata to embed; its ``input_size``, ``precision`` and ``argmax_in_graph`` are
            set from the other arguments.
        path: output ``.onnx`` path.
        size: (H, W).
        dynamic: dynamic H/W (refused with ExportError unless proven right).
        argmax: output uint8 class ids instead of logits.
        half: FP16 graph (for TensorRT 11); checked against the FP32 model.
        check_inputs: real frames (1, 3, H, W) to compare on; random inputs otherwise.

    Returns:
        (path, check figures).
    """
    proto = torch_to_onnx(model, size, dynamic=dynamic, half=half)
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.check{os.getpid()}.onnx")
    try:
        save_checked(proto, tmp)
        sizes = probe_sizes(size) if dynamic else [tuple(size)]
        check = verify(model, tmp, sizes, check_inputs, dynamic, None if half else REL_TOL)
    finally:
        tmp.unlink(missing_ok=True)
    if half and check["agreement"] < HALF_MIN_AGREEMENT:
        raise ExportError(f"the FP16 graph disagrees with FP32 on {100 * (1 - check['agreement']):.2f} % "
                          f"of pixels")
    if argmax:
        proto = add_argmax(proto, meta.num_classes)
    meta.input_size = (int(size[0]), int(size[1]))
    meta.precision = "fp16" if half else "fp32"
    meta.argmax_in_graph = bool(argmax)
    meta.info = {**meta.info, "dynamic": bool(dynamic), "check": check}
    return save_checked(set_meta(proto, meta), path), check
