"""Writing files so that a reader never sees half of one: temp-then-rename, the early "can I write
this" check, and a lock for builds.

Every output rtseg finishes (JSON summaries, exported models) is written under a hidden temporary
name in its destination folder and renamed when complete: a rename within one folder is atomic, so
a crash, a kill or a full disk leaves either the old file or the new one, never a torn one.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from rtseg.errors import RtsegError


class OutputError(RtsegError):
    """An output cannot be created or written."""


def temp_path(path: str | Path, unique: bool = True) -> Path:
    """``dir/out.mp4`` -> ``dir/.out.incomplete-<pid>.mp4``: hidden, clearly unfinished, with the
    same suffix (writers pick the format from it) in the same folder (so the final rename is
    atomic). ``unique=False`` drops the process id, for a file whose name the user should find
    (the video being recorded)."""
    path = Path(path)
    tag = f"incomplete.{os.getpid()}" if unique else "incomplete"
    return path.with_name(f".{path.stem}.{tag}{path.suffix}")


def _cannot_write(path: Path, e: OSError) -> OutputError:
    return OutputError(f"cannot write {path}: {e.strerror or e}")


def rename_into_place(tmp: str | Path, path: str | Path) -> None:
    """Renames a finished temporary file into place (for files written over a whole run, such as
    the recorded video, that :func:`atomic_output` cannot wrap)."""
    try:
        os.replace(tmp, path)
    except OSError as e:
        raise _cannot_write(Path(path), e) from None


@contextlib.contextmanager
def atomic_output(path: str | Path, also: tuple[str, ...] = ()):
    """Yields a temporary path to write ``path`` under; renames it into place when the block ends
    without an error, and removes it otherwise. ``also``: suffixes of companion files written
    beside it (OpenVINO's ``.bin``), renamed before the main file so that the main file's
    presence means the set is whole.

    Raises:
        OutputError: the folder cannot be created or the rename fails (one line, the file named).
    """
    path = Path(path)
    ensure_dir(path.parent, "output")
    tmp = temp_path(path)
    moves = [(tmp.with_suffix(s), path.with_suffix(s)) for s in also] + [(tmp, path)]
    try:
        yield tmp
        for src, dest in moves:
            os.replace(src, dest)
    except OSError as e:
        raise _cannot_write(path, e) from None
    finally:
        for src, _ in moves:
            src.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` via a temporary file and a rename.

    Raises:
        OutputError: the folder is not writable or the disk is full (one line, the file named).
    """
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: str | Path, data: dict) -> None:
    """``data`` as indented JSON, written atomically (summaries, results)."""
    atomic_write_text(path, json.dumps(data, indent=1))


def ensure_dir(path: str | Path, what: str) -> Path:
    """Creates the folder ``path`` (``what`` names it in the error, e.g. ``--save-masks``)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create {what} folder {path}: {e.strerror}") from None
    return path


def check_writable(path: str | Path) -> None:
    """Creates and removes a temporary file beside ``path``, so that an output that cannot be
    written fails before any work, not after minutes of it."""
    path = Path(path)
    ensure_dir(path.parent, "output")
    tmp = temp_path(path)
    try:
        tmp.open("wb").close()
        tmp.unlink()
    except OSError as e:
        raise _cannot_write(path, e) from None


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
