"""Cache keys of exported artifacts, and the file names derived from them.

An artifact's key holds everything that changes the bytes (or the validity) of what is built: the
model weights or input ONNX, precision, shape profile, calibration set, the versions of the tools
that build and run it, the device it is built for and any flags. Its file name ends in the key's
digest, so a different key can never find a file built for another one, and the full key is also
stored inside the artifact (ONNX ``metadata_props``, OpenVINO ``rt_info``, engine header) so a
file that was renamed or copied in by hand is checked, not trusted.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from rtseg.errors import RtsegError
from rtseg.io import atomic_write_text
from rtseg.runtimes import CACHE_FOLDER

CHUNK = 1 << 20
RTSEG_DIR = Path(__file__).resolve().parents[1]
CACHE_ENV = "RTSEG_CACHE"


def engines_dir(override: str | Path | None = None) -> Path:
    """Where exported models are cached: ``override`` (``--engines DIR``), else ``$RTSEG_CACHE``,
    else the user's cache folder: ``$XDG_CACHE_HOME/rtseg/engines`` (default ``~/.cache``) on
    Linux, ``~/Library/Caches/rtseg/engines`` on macOS, ``%LOCALAPPDATA%\\rtseg\\engines`` on Windows.

    Per user, not per working directory: a model exported once is found again from any folder.
    """
    if override:
        return Path(override).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    home = Path.home()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = home / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or home / ".cache")
    return base / "rtseg" / CACHE_FOLDER


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def sha256_files(paths: Iterable[str | Path], extra: str = "",
                 digest: Callable[[Path], str] = sha256_file) -> str:
    """One digest over the names and bytes of ``paths`` (in the given order) and ``extra``;
    ``digest`` gives each file's sha256 (:func:`remembered_digest` to skip rereading it)."""
    h = hashlib.sha256(extra.encode())
    for p in paths:
        h.update(Path(p).name.encode() + b"\0" + bytes.fromhex(digest(Path(p))))
    return h.hexdigest()


def remembered_digest(path: str | Path, memo: Path) -> str:
    """sha256 of ``path``, remembered in the JSON file ``memo`` against the file's size,
    modification time and inode.

    Export-cache keys start from the weights' digest; hashing them on every ``rtseg run`` would
    read the whole file (0.5 GB for FCN-8s) only to find an artifact that already exists. A file
    whose size, mtime and inode are unchanged is taken to be unchanged, as git's index and make do.
    Two processes updating ``memo`` at once may drop each other's entry: that costs one hash later.
    """
    path = Path(path).resolve()
    st = path.stat()
    stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
    try:
        known = json.loads(memo.read_text())
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    entry = known.get(str(path))
    if isinstance(entry, dict) and entry.get("stat") == stamp and isinstance(entry.get("sha256"), str):
        return entry["sha256"]
    digest = sha256_file(path)
    known[str(path)] = {"stat": stamp, "sha256": digest}
    try:
        atomic_write_text(memo, json.dumps(known, indent=1, sort_keys=True))
    except RtsegError:
        pass  # a read-only cache folder only means hashing again next time
    return digest


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """Digest of the sources that shape an export: the models and the exporters themselves.

    Weights alone do not pin the graph: editing an architecture's forward changes the ONNX while
    the weight file stays the same, so the code is part of the key. Computed once per process, so
    that it describes the code that is running, not files edited since.
    """
    files = sorted(p for sub in ("models", "export") for p in (RTSEG_DIR / sub).rglob("*.py"))
    h = hashlib.sha256()
    for p in files:
        h.update(str(p.relative_to(RTSEG_DIR)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


@dataclass(frozen=True)
class CacheKey:
    """Everything an artifact depends on. Two builds with equal keys produce interchangeable files.

    Attributes:
        kind: what is built (``onnx``, ``onnx-int8``, ``onnx-int8-trt``, ``openvino``, ``engine``).
        source: sha256 of the input: model weights (+ code) for ONNX, the input ONNX otherwise.
        precision: ``fp32``, ``fp16`` or ``int8``.
        shape: input shape or optimization profile, e.g. ``1x3x360x480``.
        calib: sha256 of the calibration frames ("" without calibration).
        runtime: versions of the tools that build the artifact (torch, onnx, TensorRT, ...).
        device: GPU name for TensorRT engines ("" for portable artifacts).
        capability: CUDA compute capability, e.g. ``8.9``.
        flags: anything else that changes the result (``argmax``, ``dynamic``, ...).
    """

    kind: str
    source: str
    precision: str
    shape: str
    calib: str = ""
    runtime: str = ""
    device: str = ""
    capability: str = ""
    flags: tuple[str, ...] = field(default_factory=tuple)

    def digest(self) -> str:
        data = asdict(self)
        data["flags"] = sorted(self.flags)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()

    def as_dict(self) -> dict:
        return {**asdict(self), "flags": sorted(self.flags), "digest": self.digest()}


def artifact_path(out_dir: str | Path, stem: str, key: CacheKey, size: tuple[int, int], suffix: str) -> Path:
    """``<out_dir>/<stem>_<precision>_<H>x<W>[_dyn][_argmax]_<digest12><suffix>``.

    The readable part says what the file is; the digest says exactly which build it is.
    """
    tags = [stem, key.precision + ("trt" if key.kind.endswith("-trt") else ""), f"{size[0]}x{size[1]}"]
    tags += [f for f in ("dynamic", "argmax") if f in key.flags]
    return Path(out_dir) / f"{'_'.join(tags)}_{key.digest()[:12]}{suffix}"


def safe_stem(text: str) -> str:
    """A file-name-safe stem from a preset name or a weight file path."""
    stem = Path(text).stem if text.endswith(".safetensors") else text
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in stem) or "model"
