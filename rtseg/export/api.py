"""``export(request)``: a model -> a cached, self-describing artifact in the export cache.

Every format starts from the same FP32 ONNX, exported once per cache key and checked against
torch. A cache lookup reads only the weight file's header and a remembered digest of its bytes:
the torch model is loaded when something has to be built, never to find what already is. INT8 artifacts are calibrated on the user's frames and must pass the accuracy gate;
if they fail it, one fallback (classifier head left in float) is tried before refusing.
Status lines go to ``log`` and results (the gate table) to ``show``; both default to silence,
and the CLI wires them to stderr and stdout.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

from rtseg.backends import open_backend
from rtseg.backends.base import ModelMeta, normalize_image
from rtseg.errors import RtsegError
from rtseg.export.artifacts import read_meta, restamp
from rtseg.export.cache import (CacheKey, artifact_path, code_digest, engines_dir, remembered_digest, safe_stem,
                                sha256_file, sha256_files)
from rtseg.io import file_lock
from rtseg.export.gate import DEFAULT_BUDGET, GateRefused, GateResult, run_gate
from rtseg.progress import log_silent
from rtseg.runtimes import FORMATS, PRECISIONS


@dataclass
class ExportRequest:
    """What ``rtseg export`` was asked for. ``size`` defaults to the model's input size."""

    model: str
    format: str = "onnx"
    precision: str = "fp32"
    size: tuple[int, int] | None = None
    dynamic: bool = False
    argmax: bool = False
    calib: str | None = None
    calib_frames: int = 64
    val: str | None = None
    gate_frames: int = 100
    max_drop: float = DEFAULT_BUDGET
    force: bool = False
    out_dir: str | None = None      # None: the user's cache (``cache.engines_dir``)
    workspace_gb: float = 4.0


@dataclass
class ExportResult:
    path: Path
    reused: bool
    meta: ModelMeta
    gate: dict | None = None


def check_request(req: ExportRequest) -> None:
    if req.format not in FORMATS:
        raise RtsegError(f"--format must be one of {', '.join(FORMATS)}, got '{req.format}'")
    if req.precision not in PRECISIONS:
        raise RtsegError(f"--precision must be one of {', '.join(PRECISIONS)}, got '{req.precision}'")
    if req.precision == "int8" and not req.calib:
        raise RtsegError("INT8 needs calibration frames: --calib DIR|VIDEO (a folder of images or a "
                         "video from the footage the model will see)")
    if req.calib_frames < 1 or req.gate_frames < 1:
        raise RtsegError("--calib-frames and --gate-frames must be at least 1")


class Exporter:
    """One export request: builds what the request needs, reusing the cache; the torch model is
    loaded (once) only when something has to be built from it."""

    def __init__(self, req: ExportRequest, log: Callable[[str], None] = log_silent,
                 show: Callable[[str], None] = log_silent, progress: bool = False):
        check_request(req)
        self.req, self.log, self.show, self.progress = req, log, show, progress
        self.out_dir = engines_dir(req.out_dir)
        self._header = self._model = self._frames = self._weights_digest = None
        self.hit = False  # whether the last artifact looked up was a cache hit
        self._onnx_keys: dict[tuple, CacheKey] = {}

    # -- inputs ---------------------------------------------------------------------------------
    def header(self) -> tuple[ModelMeta, Path]:
        """The model's metadata and weight file, from the file's header (no tensor is read)."""
        if self._header is None:
            from rtseg.zoo import model_header

            preset, dataset, path = model_header(self.req.model)
            self._header = ModelMeta.from_preset(preset, dataset, source=self.req.model), path
        return self._header

    @property
    def meta(self) -> ModelMeta:
        return self.header()[0]

    def _load(self):
        """The torch model, loaded only when an artifact has to be built from it."""
        if self._model is None:
            from rtseg.zoo import load_model

            self._model = load_model(self.req.model).model
        return self._model

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.req.size or self.meta.input_size)

    def fresh_meta(self) -> ModelMeta:
        return replace(self.meta, input_size=self.size, info={})

    def weights_digest(self) -> str:
        """sha256 of the weight file and of the model/export code (the file's remembered in the cache)."""
        if self._weights_digest is None:
            memo = self.out_dir / "digests.json"
            self._weights_digest = sha256_files([self.header()[1]], extra=code_digest(),
                                                digest=lambda p: remembered_digest(p, memo))
        return self._weights_digest

    def toolchain(self) -> str:
        import onnx
        import onnxruntime
        import torch

        import rtseg

        return (f"rtseg {rtseg.__version__}; torch {torch.__version__}; onnx {onnx.__version__}; "
                f"onnxruntime {onnxruntime.__version__}")

    def frames(self):
        if self._frames is None:
            from rtseg.export.frames import load_frames

            self.log(f"reading calibration frames from {self.req.calib}")
            self._frames = load_frames(self.req.calib, self.req.calib_frames, self.req.gate_frames)
        return self._frames

    def held_out(self) -> tuple[list, str]:
        if self.req.val:
            from rtseg.export.frames import load_labelled

            return load_labelled(self.req.val, self.req.gate_frames), self.req.val
        return self.frames().held_out, str(self.req.calib)

    def _flags(self, argmax: bool) -> tuple[str, ...]:
        return tuple(f for f, on in (("argmax", argmax), ("dynamic", self.req.dynamic)) if on)

    def _shape(self) -> str:
        return f"1x3x{self.size[0]}x{self.size[1]}"

    def _cached(self, path: Path, key: CacheKey) -> ModelMeta | None:
        """The artifact's metadata if ``path`` holds a build with this exact key; sets ``hit``."""
        self.hit = False
        if not path.is_file():
            return None
        try:
            meta = read_meta(path)
        except RtsegError:
            meta = None
        self.hit = meta is not None and meta.info.get("cache_key") == key.digest()
        if self.hit:
            self.log(f"cache hit: reusing {path} (key {key.digest()[:12]} matches)")
            return meta
        self.log(f"{path} does not match its cache key (stale or foreign): rebuilding")
        return None

    # -- ONNX -----------------------------------------------------------------------------------
    def onnx_key(self, argmax: bool = False, half: bool = False) -> CacheKey:
        """The key of the ONNX that :meth:`onnx` builds, known without building it."""
        if (argmax, half) not in self._onnx_keys:
            self._onnx_keys[(argmax, half)] = CacheKey(
                "onnx", self.weights_digest(), "fp16" if half else "fp32", self._shape(),
                runtime=self.toolchain(), flags=self._flags(argmax))
        return self._onnx_keys[(argmax, half)]

    def onnx(self, argmax: bool = False, half: bool = False) -> Path:
        """FP32 (or FP16) ONNX, exported and checked against torch unless cached."""
        from rtseg.export.onnx import export_onnx

        precision = "fp16" if half else "fp32"
        key = self.onnx_key(argmax, half)
        path = artifact_path(self.out_dir, safe_stem(self.meta.name), key, self.size, FORMATS["onnx"])
        if self._cached(path, key):
            return path
        self.log(f"exporting {self.req.model} to ONNX ({precision}, {self.size[0]}x{self.size[1]}"
                 f"{', dynamic H/W' if self.req.dynamic else ''}{', argmax in graph' if argmax else ''})")
        meta = self.fresh_meta()
        meta.source = self.req.model
        meta.info = {"cache_key": key.digest(), "cache": key.as_dict()}
        _, check = export_onnx(self._load(), meta, path, self.size, self.req.dynamic, argmax, half)
        self.log(f"checked in ONNX Runtime against torch: max |diff| {check['max_abs']:.2g} "
                 f"({100 * check['rel']:.2g} % of range), argmax agreement {100 * check['agreement']:.2f} % "
                 f"at {', '.join('x'.join(map(str, s)) for s in check['sizes'])}")
        return path

    # -- INT8 -----------------------------------------------------------------------------------
    def int8(self, fmt: str) -> Path:
        """INT8 artifact: ``onnx`` (U8/S8 QDQ), ``onnx-trt`` (symmetric QDQ) or ``openvino`` (IR)."""
        src_key = self.onnx_key(argmax=False)
        frames = self.frames()
        kind, suffix, runtime = {"onnx": ("onnx-int8", FORMATS["onnx"], ""),
                                 "onnx-trt": ("onnx-int8-trt", FORMATS["onnx"], ""),
                                 "openvino": ("openvino-int8", FORMATS["openvino"], self._ov_version())}[fmt]
        key = CacheKey(kind, src_key.digest(), "int8", self._shape(), calib=frames.digest,
                       runtime=f"{self.toolchain()}{runtime}", flags=self._flags(self.req.argmax))
        path = artifact_path(self.out_dir, safe_stem(self.meta.name), key, self.size, suffix)
        meta = self._cached(path, key)
        if meta is not None:
            gate = meta.info.get("int8_gate") or {}
            self.log(f"INT8 gate measured when built: mIoU drop {gate.get('drop', float('nan')):+.2f} points "
                     f"({gate.get('reference')}, {gate.get('frames')} frames)")
            if not gate.get("passed") and not self.req.force:
                raise GateRefused(f"cached INT8 artifact {path} failed the accuracy gate "
                                  f"(drop {gate.get('drop'):.2f} points); pass --force to use it anyway")
            return path
        fp32_path = self.onnx(argmax=False)
        held, source = self.held_out()
        fp32 = open_backend(str(fp32_path))
        calib = [normalize_image(f, self.size, self.meta.mean, self.meta.std) for f in frames.calib]
        attempts: list[tuple[Path, dict, GateResult]] = []
        try:
            for keep_head in (False, True):
                tmp = path.with_name(f".{path.stem}.try{len(attempts)}.{os.getpid()}{suffix}")
                what = "classifier head kept in float" if keep_head else "all layers"
                self.log(f"quantizing to INT8 ({fmt}, {what}) on {len(calib)} calibration frames")
                report = self._quantize(fmt, fp32_path, tmp, calib, keep_head)
                gate = run_gate(open_backend(str(tmp)), fp32, held, self.req.max_drop, source, self.progress)
                attempts.append((tmp, report, gate))
                self.show(gate.format())
                if gate.passed:
                    break
            tmp, report, gate = min(attempts, key=lambda a: a[2].drop)
            if not gate.passed and not self.req.force:
                raise GateRefused(f"INT8 accuracy gate: mIoU drop {gate.drop:.2f} points > budget "
                                  f"{self.req.max_drop:.1f}; artifact not kept (--force keeps it and "
                                  f"records the drop)")
            meta = self.fresh_meta()
            meta.source, meta.precision, meta.argmax_in_graph = self.req.model, "int8", self.req.argmax
            meta.info = {"cache_key": key.digest(), "cache": key.as_dict(), "quantization": report,
                         "int8_gate": gate.as_dict(), "forced": not gate.passed}
            restamp(tmp, path, meta)
            self.hit = False  # the quantizer may have reused an FP32 source; this artifact is new
        finally:
            for t, _, _ in attempts:
                for f in (t, t.with_suffix(".bin")):
                    f.unlink(missing_ok=True)
        from rtseg.export.quantize import describe_float_nodes

        self.log(describe_float_nodes(report) + (f"; excluded: {', '.join(report['excluded'])}"
                                                 if report.get("excluded") else ""))
        return path

    def _quantize(self, fmt: str, fp32_path: Path, tmp: Path, calib: list, keep_head: bool) -> dict:
        import onnx

        from rtseg.export.onnx import add_argmax, save_checked, set_meta
        from rtseg.export.quantize import quantize_onnx

        placeholder = replace(self.fresh_meta(), precision="int8", argmax_in_graph=self.req.argmax)
        if fmt == "openvino":
            from rtseg.export.openvino import has_nncf, ir_float_report, onnx_to_ir, quantize_nncf

            if has_nncf():
                src = self.onnx(argmax=self.req.argmax)
                return quantize_nncf(src, tmp, placeholder, calib, keep_head)
            qdq = tmp.with_suffix(".qdq.onnx")
            try:
                report = quantize_onnx(fp32_path, qdq, calib, "openvino", keep_head=keep_head)
                proto = onnx.load(str(qdq))
                if self.req.argmax:
                    add_argmax(proto, placeholder.num_classes)
                save_checked(set_meta(proto, placeholder), qdq)
                onnx_to_ir(qdq, tmp, placeholder)
            finally:
                qdq.unlink(missing_ok=True)
            return {**report, **ir_float_report(tmp), "method": "ort-qdq"}
        report = quantize_onnx(fp32_path, tmp, calib, "tensorrt" if fmt == "onnx-trt" else "cpu",
                               keep_head=keep_head)
        proto = onnx.load(str(tmp))
        if self.req.argmax:
            add_argmax(proto, placeholder.num_classes)
        save_checked(set_meta(proto, placeholder), tmp)
        return report

    # -- OpenVINO -------------------------------------------------------------------------------
    def _ov_version(self) -> str:
        from rtseg.backends.openvino_backend import import_openvino
        from rtseg.export.openvino import has_nncf

        version = f"; openvino {import_openvino().__version__}"
        if has_nncf():
            import nncf

            version += f"; nncf {nncf.__version__}"
        return version

    def openvino(self) -> Path:
        from rtseg.export.openvino import onnx_to_ir

        if self.req.precision == "int8":
            return self.int8("openvino")
        src_key = self.onnx_key(argmax=self.req.argmax)
        key = CacheKey("openvino", src_key.digest(), self.req.precision, self._shape(),
                       runtime=self.toolchain() + self._ov_version(), flags=self._flags(self.req.argmax))
        path = artifact_path(self.out_dir, safe_stem(self.meta.name), key, self.size, FORMATS["openvino"])
        if self._cached(path, key):
            return path
        src = self.onnx(argmax=self.req.argmax)
        meta = read_meta(src)
        meta.precision = self.req.precision
        meta.info = {**meta.info, "cache_key": key.digest(), "cache": key.as_dict()}
        self.log(f"converting to OpenVINO IR ({self.req.precision})")
        return onnx_to_ir(src, path, meta, fp16_weights=self.req.precision == "fp16")

    # -- TensorRT -------------------------------------------------------------------------------
    def engine(self) -> Path:
        from rtseg.backends.tensorrt_backend import (check_compatible, import_tensorrt, read_engine_header,
                                                     trt_environment, write_engine)
        from rtseg.export.tensorrt import build_engine, onnx_for_engine_fp16, profile_tag, shape_profile

        env = trt_environment()  # fail before any work on a machine without TensorRT or a GPU
        trt = import_tensorrt()
        p = self.req.precision
        if p == "int8":
            src = self.int8("onnx-trt")
        else:
            src = self.onnx(argmax=self.req.argmax, half=p == "fp16" and onnx_for_engine_fp16(trt) == "fp16")
        profile = shape_profile(self.size, self.req.dynamic)
        key = CacheKey("engine", sha256_file(src), p, profile_tag(profile),
                       calib=self.frames().digest if p == "int8" else "", runtime=f"tensorrt {env['tensorrt']}",
                       device=env["gpu"], capability=env["capability"],
                       flags=self._flags(self.req.argmax) + ("hardware_compat=none", "version_compat=false"))
        path = artifact_path(self.out_dir, safe_stem(self.meta.name), key, self.size, FORMATS["engine"])
        if path.is_file():
            header, _ = read_engine_header(path)
            self.hit = header.get("cache_key") == key.digest()
            if self.hit:
                check_compatible(header, env, str(path))
                self.log(f"cache hit: reusing {path} (key {key.digest()[:12]} matches)")
                return path
            self.log(f"{path} does not match its cache key (stale or foreign): rebuilding")
        gpu = safe_stem(env["gpu"].replace(" ", "-"))
        timing = self.out_dir / f"timing_{gpu}_sm{env['capability']}_trt{env['tensorrt']}.cache"
        self.log(f"building a TensorRT {env['tensorrt']} {p.upper()} engine for {env['gpu']} "
                 f"(profile {profile_tag(profile)})")
        self.hit = False
        plan, report = build_engine(src, p, profile, timing, self.req.workspace_gb)
        meta = read_meta(src)
        meta.precision = p
        meta.info = {**meta.info, "onnx_cache_key": meta.info.get("cache_key"), "cache_key": key.digest(),
                     "cache": key.as_dict(), "build": report}
        self.log(f"built: layers by output type {report['layers']}")
        write_engine(path, {"meta": asdict(meta), "cache_key": key.digest(), **env}, plan)
        self.log(f"engine vs FP32 ONNX Runtime: same class on {100 * self._agreement(path):.2f} % of pixels")
        return path

    def _agreement(self, path: Path) -> float:
        """Pixel agreement of an artifact's class ids with the FP32 ONNX (held-out or random frames)."""
        import numpy as np

        ref, test = open_backend(str(self.onnx(argmax=False))), open_backend(str(path))
        if self.req.calib:
            xs = [ref.preprocess(f)[None] for f, _ in self.held_out()[0][:4]]
        else:
            xs = list(np.random.default_rng(0).standard_normal((4, 1, 3, *self.size), dtype=np.float32))
        same = [(ref.predict_ids(x) == test.predict_ids(x)).float().mean().item() for x in xs]
        return sum(same) / max(len(same), 1)

    # -- entry ----------------------------------------------------------------------------------
    def run(self) -> ExportResult:
        if self.req.format == "engine":
            from rtseg.backends.tensorrt_backend import trt_environment

            trt_environment()  # no TensorRT or GPU: say so before reading or exporting anything
        self.header()  # an unknown model or an unreadable weight file: say so before any work
        fmt, p = self.req.format, self.req.precision
        if fmt == "engine":
            path = self.engine()
        elif fmt == "openvino":
            path = self.openvino()
        elif p == "int8":
            path = self.int8("onnx")
        else:
            path = self.onnx(argmax=self.req.argmax, half=p == "fp16")
        meta = read_meta(path)
        return ExportResult(path, self.hit, meta, meta.info.get("int8_gate"))


def export(req: ExportRequest, log: Callable[[str], None] = log_silent, show: Callable[[str], None] = log_silent,
           progress: bool = False) -> ExportResult:
    """Builds (or reuses) the artifact ``req`` describes and returns its path and metadata.

    Raises:
        RtsegError: bad request, missing runtime, model that cannot be exported or whose dynamic
            shapes are not proven right; GateRefused when INT8 loses more than ``max_drop``.
    """
    exporter = Exporter(req, log, show, progress)
    try:
        exporter.out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RtsegError(f"cannot create the export cache {exporter.out_dir}: {e.strerror or e}") from None
    # One build of a model at a time per cache: a second process exporting the same model waits,
    # then finds the first one's artifact (the key check) instead of writing over it half-way.
    with file_lock(exporter.out_dir / f".{safe_stem(req.model)}.lock"):
        return exporter.run()
