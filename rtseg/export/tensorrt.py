"""ONNX -> TensorRT engine with the TensorRT 10/11 Python API.

* ``builder.create_network(0)``: explicit batch is the only mode since 10.0.
* Precision. TensorRT 10 may take ``BuilderFlag.FP16`` on an FP32 ONNX; TensorRT 11 has no
  precision flags and builds strongly typed networks, so FP16 must be in the ONNX itself (rtseg
  exports an FP16 graph with FP32 input/output for it). INT8 is explicit quantization only: a Q/DQ
  ONNX with zero zero-points (``quantize.py``, target ``tensorrt``), on both versions.
* The built engine is inspected layer by layer and the build fails if the asked-for precision
  appears in no layer: flags that silently build FP32 have been reported.
* Optimization profile: min = opt = max for a static export; a range around ``--size`` for a
  dynamic one. A timing cache per GPU and TensorRT version makes rebuilds fast.

Nothing in this file has run on a GPU in rtseg's CI: see the README. The pure parts (profiles,
inspector parsing) are tested.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from rtseg.backends.tensorrt_backend import import_tensorrt
from rtseg.errors import RtsegError

DTYPE_PATTERNS = (("int8", re.compile(r"\bint8\b", re.I)), ("fp16", re.compile(r"half|fp16", re.I)),
                  ("fp32", re.compile(r"float|fp32", re.I)))


def shape_profile(size: tuple[int, int], dynamic: bool = False, batch: int = 1, min_scale: float = 0.5,
                  max_scale: float = 2.0, multiple: int = 8) -> dict[str, tuple[int, int, int, int]]:
    """``{"min", "opt", "max"}`` input shapes (N, 3, H, W) for an optimization profile.

    Static: all three equal ``size``. Dynamic: ``size`` is the optimum, and H and W may range
    from ``min_scale`` to ``max_scale`` times it, rounded to ``multiple`` (down for the minimum,
    up for the maximum) and never below one ``multiple``.
    """
    h, w = int(size[0]), int(size[1])
    if h < 1 or w < 1 or batch < 1:
        raise RtsegError(f"invalid profile size {size} batch {batch}")
    opt = (batch, 3, h, w)
    if not dynamic:
        return {"min": opt, "opt": opt, "max": opt}
    if not 0 < min_scale <= 1 <= max_scale:
        raise RtsegError(f"profile scales must satisfy 0 < min <= 1 <= max, got {min_scale}, {max_scale}")

    def down(v):
        return max(multiple, int(v * min_scale) // multiple * multiple)

    def up(v):
        return -(-int(round(v * max_scale)) // multiple) * multiple

    return {"min": (1, 3, min(down(h), h), min(down(w), w)), "opt": opt,
            "max": (batch, 3, max(up(h), h), max(up(w), w))}


def profile_tag(profile: dict) -> str:
    """``1x3x360x480`` for a static profile, ``min-opt-max`` otherwise (part of the cache key)."""
    shapes = ["x".join(map(str, profile[k])) for k in ("min", "opt", "max")]
    return shapes[1] if len(set(shapes)) == 1 else "-".join(shapes)


def layer_precisions(inspector_json: str) -> Counter:
    """Counts engine layers by output data type from ``IEngineInspector`` JSON.

    Reads both schemas: TensorRT 10's ``"Format/Datatype"`` strings and TensorRT 11's separate
    ``"DataType"``. Reformat layers only convert between layouts and are not counted. Needs an
    engine built with ``ProfilingVerbosity.DETAILED``; otherwise layers are bare names and the
    count is empty.
    """
    info = json.loads(inspector_json)
    counts: Counter = Counter()
    for layer in info.get("Layers", []):
        if not isinstance(layer, dict) or layer.get("LayerType") == "Reformat":
            continue
        outs = layer.get("Outputs") or []
        text = " ".join(str(o.get(k, "")) for o in outs if isinstance(o, dict)
                        for k in ("DataType", "Format/Datatype"))
        for name, pattern in DTYPE_PATTERNS:
            if pattern.search(text):
                counts[name] += 1
                break
    return counts


def strongly_typed_only(trt) -> bool:
    """TensorRT 11 removed the weak-typing precision flags."""
    return not hasattr(trt.BuilderFlag, "FP16")


def build_engine(onnx_path: str | Path, precision: str, profile: dict, timing_cache: str | Path | None = None,
                 workspace_gb: float = 4.0) -> tuple[bytes, dict]:
    """Builds a serialized engine from ``onnx_path``.

    Args:
        onnx_path: FP32 ONNX (``fp32``; ``fp16`` on TensorRT 10), FP16 ONNX (``fp16`` on
            TensorRT 11) or zero-zero-point Q/DQ ONNX (``int8``).
        precision: ``fp32``, ``fp16`` or ``int8``; the built engine is checked for it.
        profile: :func:`shape_profile` output.
        timing_cache: file read before and written after the build (created if missing).
        workspace_gb: builder workspace limit.

    Returns:
        (plan bytes, build report: layer counts by data type, strongly typed or not).
    """
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RtsegError(f"TensorRT's ONNX parser rejects {onnx_path}: {errors[:400]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # for the precision check below
    strong = strongly_typed_only(trt)
    if not strong:
        if precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)  # INT8: layers left in float may use FP16
        if precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)  # explicit Q/DQ in the graph; no calibrator
    input_name = network.get_input(0).name
    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(input_name, profile["min"], profile["opt"], profile["max"])
    config.add_optimization_profile(opt_profile)
    cache_path = Path(timing_cache) if timing_cache else None
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path and cache_path.is_file() else b"")
    config.set_timing_cache(cache, False)  # ignore_mismatch=False: a foreign cache is an error
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RtsegError(f"TensorRT failed to build an engine from {onnx_path} (see the log above)")
    if cache_path:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    plan = bytes(plan)
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
    info = engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON)
    counts = layer_precisions(info)
    if precision != "fp32" and counts and counts[precision] == 0:
        raise RtsegError(f"asked for {precision.upper()} but TensorRT built no {precision.upper()} layer "
                         f"(layers by type: {dict(counts)}); the engine is not kept")
    return plan, {"layers": dict(counts), "strongly_typed": strong, "tensorrt": trt.__version__}


def onnx_for_engine_fp16(trt) -> str:
    """Which ONNX an FP16 engine is built from: ``fp32`` + flag (TensorRT 10) or ``fp16`` (11)."""
    return "fp16" if strongly_typed_only(trt) else "fp32"
