"""Writing files so that a reader never sees half of one: temp-then-rename, and a lock for builds.

Every output rtseg finishes (JSON summaries, exported models) is written under a hidden temporary
name in its destination folder and renamed when complete: a rename within one folder is atomic, so
a crash, a kill or a full disk leaves either the old file or the new one, never a torn one.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

from rtseg.errors import RtsegError


def temp_path(path: str | Path, tag: str = "tmp") -> Path:
    """``dir/name`` -> ``dir/.name.<tag><pid>``: hidden, per process (two writers never share it),
    in the same folder so that the final rename is atomic."""
    path = Path(path)
    return path.with_name(f".{path.name}.{tag}{os.getpid()}")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` via a temporary file and a rename.

    Raises:
        RtsegError: the folder is not writable or the disk is full (one line, the file named).
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise RtsegError(f"cannot write {path}: {e.strerror or e}") from None


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


@contextlib.contextmanager
def file_lock(path: str | Path):
    """Holds an exclusive lock on ``path`` (created if needed) for the ``with`` block.

    Two processes that build the same artifact take turns: the second waits, then finds the first
    one's result in the cache instead of writing over it. The lock is released by the kernel if
    the holder dies, so a killed build never blocks the next one. No-op where ``fcntl`` is missing
    (Windows), where the atomic renames alone keep files whole.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
