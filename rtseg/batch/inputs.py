"""What ``rtseg batch`` reads, and how the work is cut into chunks.

``--source`` may be given several times; each is a folder of images, a glob of images, an image,
a video, or a ``.txt`` file listing such sources one per line (``#`` comments, blank lines and
paths relative to the list's folder allowed). With one input the outputs are named as before
(``masks/<name>.png``); with several, each input writes into its own subfolder
(``masks/<label>/<name>.png``, the label being the video's stem or the folder's name, made
unique), so two videos' ``000000.png`` never collide.

A missing path, an empty folder or a glob that matches nothing is a usage error (nothing runs).
A file that exists but cannot be decoded (a corrupt video) is reported and skipped; the other
inputs still run.

Chunks: an image input is cut into runs of ``chunk`` files, a video into frame ranges of
``chunk`` frames, so one long video spreads over many workers. Local and Ray runs process the
same chunks, and a chunk's frames are grouped into model calls the same way in both, which is what
makes their masks identical.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2

from rtseg.data.datasets import IMAGE_EXTS
from rtseg.pipeline.sources import LIVE_SCHEMES, SourceError, check_stems, quiet_stderr


@dataclass
class Input:
    """One source: its image files, or a video and the frames its container declares."""

    spec: str
    kind: str                       # "images" | "video"
    label: str = ""                 # output subfolder ("" with a single input)
    files: list[str] = field(default_factory=list)
    frames: int | None = None       # declared frame count of a video (None: unknown)


@dataclass
class Chunk:
    """A unit of work for one worker: image files, or video frames ``start`` up to ``end``.

    ``end=None`` reads to the end of the video (the last range of each video, so that frames past
    a container's estimated count are not lost).
    """

    id: int
    kind: str
    label: str
    spec: str
    files: list[str] = field(default_factory=list)
    start: int = 0
    end: int | None = None
    total: int = 0                  # frames expected (for the progress bar)

    def names(self) -> list[str] | None:
        """Output names of the frames expected (None for a video of unknown length)."""
        if self.kind == "images":
            return [Path(f).stem for f in self.files]
        if self.end is None and not self.total:
            return None
        return [f"{i:06d}" for i in range(self.start, self.start + self.total)]


def read_list(path: Path) -> list[str]:
    """The sources a ``.txt`` list names, relative paths taken from the list's folder."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise SourceError(f"cannot read source list {path}: {getattr(e, 'strerror', None) or e}") from None
    specs = []
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            specs.append(line if os.path.isabs(line) else str(path.parent / line))
    if not specs:
        raise SourceError(f"source list {path} names no sources")
    return specs


def _image_files(spec: str) -> list[str] | None:
    """The images ``spec`` names (folder, glob, image file), None for a video; errors if empty."""
    path = Path(spec)
    if path.is_dir():
        files = sorted(str(p) for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())
        if not files:
            raise SourceError(f"no images ({', '.join(IMAGE_EXTS)}) in folder {spec}")
        return files
    if glob.has_magic(spec):
        files = sorted(p for p in glob.glob(spec) if Path(p).suffix.lower() in IMAGE_EXTS)
        if not files:
            raise SourceError(f"no images match {spec}")
        return files
    if not path.exists():
        raise SourceError(f"source not found: {spec}")
    return [spec] if path.suffix.lower() in IMAGE_EXTS else None


def probe_video(spec: str) -> int | None:
    """The declared frame count of a video (None if unknown), after decoding its first frame.

    Raises:
        SourceError: the file cannot be opened or has no decodable frame.
    """
    with quiet_stderr():
        cap = cv2.VideoCapture(spec)
        try:
            ok = cap.isOpened() and cap.read()[0]
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if ok else 0
        finally:
            cap.release()
    if not ok:
        raise SourceError(f"cannot decode video {spec} (corrupt, zero-frame or unsupported format)")
    return count if count > 0 else None


def expand_sources(specs: list[str], max_frames: int | None = None,
                   warn: Callable[[str], None] = lambda _: None) -> tuple[list[Input], list[dict]]:
    """Resolves ``--source`` values into inputs; returns ``(inputs, failed)``.

    ``failed`` lists ``{"source", "error"}`` for files that exist but cannot be decoded; each is
    also reported through ``warn``.

    Raises:
        SourceError: a missing path, empty folder, unmatched glob, live source or bad list; or no
            input left that can be read.
    """
    if max_frames is not None and max_frames < 1:
        raise SourceError(f"--max-frames must be >= 1, got {max_frames}")
    flat: list[str] = []
    for spec in specs:
        if spec.lower().startswith(LIVE_SCHEMES) or spec.isdigit():
            raise SourceError(f"rtseg batch reads files (folder, glob, video), not {spec}; "
                              f"use rtseg run for cameras and streams")
        flat.extend(read_list(Path(spec)) if spec.lower().endswith(".txt") and Path(spec).is_file() else [spec])
    inputs, failed = [], []
    for spec in flat:
        files = _image_files(spec)
        if files is not None:
            files = files[:max_frames]
            check_stems(files, spec)
            inputs.append(Input(spec, "images", files=files))
            continue
        try:
            inputs.append(Input(spec, "video", frames=probe_video(spec)))
        except SourceError as e:
            warn(f"warning: skipped input: {e}")
            failed.append({"source": spec, "error": str(e)})
    if not inputs:
        raise SourceError("no readable input: " + "; ".join(f["error"] for f in failed))
    _label(inputs, single=len(flat) == 1)
    return inputs, failed


def _label(inputs: list[Input], single: bool) -> None:
    """Output subfolders: none for a single input, else the stem or folder name, made unique."""
    if single:
        return
    used: set[str] = set()
    for inp in inputs:
        base = Path(inp.spec.rstrip("/")).stem if inp.kind == "video" or not glob.has_magic(inp.spec) else "glob"
        base = base or "input"
        label, n = base, 2
        while label in used:
            label, n = f"{base}_{n}", n + 1
        used.add(label)
        inp.label = label


def plan_chunks(inputs: list[Input], chunk: int, max_frames: int | None = None) -> list[Chunk]:
    """Cuts every input into chunks of at most ``chunk`` frames, in input order."""
    if chunk < 1:
        raise SourceError(f"--chunk-frames must be >= 1, got {chunk}")
    chunks: list[Chunk] = []
    for inp in inputs:
        if inp.kind == "images":
            for i in range(0, len(inp.files), chunk):
                part = inp.files[i:i + chunk]
                chunks.append(Chunk(len(chunks), "images", inp.label, inp.spec, files=part, total=len(part)))
            continue
        n = inp.frames if max_frames is None else min(inp.frames or max_frames, max_frames)
        if n is None:  # unknown length: one worker reads it all
            chunks.append(Chunk(len(chunks), "video", inp.label, inp.spec, start=0, end=max_frames))
            continue
        for start in range(0, n, chunk):
            last = start + chunk >= n
            # A declared count may be an estimate: the last range reads on to the real end.
            end = (max_frames if max_frames is not None else None) if last else start + chunk
            chunks.append(Chunk(len(chunks), "video", inp.label, inp.spec, start=start, end=end,
                                total=min(chunk, n - start)))
    return chunks


__all__ = ["Chunk", "Input", "expand_sources", "plan_chunks", "probe_video", "read_list"]
