"""Frames for calibration and for the INT8 accuracy gate: from a folder of images or a video.

Users have frames, not dataset layouts, so ``--calib`` takes any folder of images or a video
file. Calibration frames are spread evenly over the source; the gate's held-out frames are the
ones calibration did not use. Labels are used when the folder has them (``<dir>annot`` beside a
CamVid-style split folder, or ``images/`` + ``masks/``); masks must hold class ids.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rtseg.data.datasets import IMAGE_EXTS, pair_by_stem, read_image_rgb, read_mask
from rtseg.errors import RtsegError
from rtseg.export.cache import sha256_file, sha256_files

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


@dataclass
class FrameSource:
    """Frames picked from one source.

    Attributes:
        source: the folder or video it came from.
        calib: RGB uint8 frames used for calibration.
        held_out: (RGB uint8 frame, uint8 mask or None) pairs not used for calibration.
        labelled: whether ``held_out`` has masks.
        digest: sha256 over the calibration frames' bytes (part of the cache key).
    """

    source: str
    calib: list[np.ndarray]
    held_out: list[tuple[np.ndarray, np.ndarray | None]] = field(default_factory=list)
    labelled: bool = False
    digest: str = ""


def spread(total: int, n: int) -> list[int]:
    """``n`` indices spread evenly over ``range(total)`` (all of them if ``n >= total``)."""
    if n >= total:
        return list(range(total))
    return sorted({int(round(i)) for i in np.linspace(0, total - 1, n)})


def image_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def labelled_pairs(directory: str | Path) -> list[tuple[Path, Path]] | None:
    """Image/mask pairs of a labelled folder, or None if ``directory`` has no labels.

    Layouts: ``<dir>/images`` + ``<dir>/masks``; a CamVid split ``<dir>`` with ``<dir>annot``
    beside it; a CamVid root holding ``val`` + ``valannot``.
    """
    d = Path(directory)
    for images, masks in ((d / "images", d / "masks"), (d, d.parent / f"{d.name}annot"),
                          (d / "val", d / "valannot")):
        if images.is_dir() and masks.is_dir():
            return pair_by_stem(images, masks)
    return None


def load_frames(source: str | Path, n_calib: int, n_held_out: int) -> FrameSource:
    """Picks ``n_calib`` calibration frames and up to ``n_held_out`` held-out frames from ``source``.

    Raises:
        RtsegError: missing source, no images, a video that cannot be decoded, too few frames.
    """
    path = Path(source)
    if path.is_dir():
        return _from_folder(path, n_calib, n_held_out)
    if path.is_file() and path.suffix.lower() in VIDEO_EXTS:
        return _from_video(path, n_calib, n_held_out)
    if path.is_file():
        raise RtsegError(f"--calib takes a folder of images or a video ({', '.join(VIDEO_EXTS)}), got {path}")
    raise RtsegError(f"calibration source not found: {path}")


def _from_folder(d: Path, n_calib: int, n_held_out: int) -> FrameSource:
    pairs = labelled_pairs(d)
    if pairs is not None:
        files = [img for img, _ in pairs]
    else:
        files = image_files(d / "images" if (d / "images").is_dir() else d)
    if len(files) < 2:
        raise RtsegError(f"calibration needs at least 2 images, found {len(files)} in {d}")
    # Keep at least one frame for the gate when the folder is small.
    chosen = spread(len(files), min(n_calib, len(files) - 1))
    rest = [i for i in range(len(files)) if i not in set(chosen)]
    held = [rest[i] for i in spread(len(rest), n_held_out)]
    calib = [read_image_rgb(files[i]) for i in chosen]
    if pairs is not None:
        held_out = [(read_image_rgb(pairs[i][0]), read_mask(pairs[i][1])) for i in held]
    else:
        held_out = [(read_image_rgb(files[i]), None) for i in held]
    return FrameSource(str(d), calib, held_out, pairs is not None, sha256_files([files[i] for i in chosen]))


def _from_video(path: Path, n_calib: int, n_held_out: int) -> FrameSource:
    import cv2

    total = _count_frames(path)
    if total < 2:
        raise RtsegError(f"cannot read at least 2 frames from {path}")
    chosen = spread(total, min(n_calib, total - 1))
    rest = [i for i in range(total) if i not in set(chosen)]
    held = [rest[i] for i in spread(len(rest), n_held_out)]
    want = {i: "c" for i in chosen} | {i: "h" for i in held}
    calib, held_out = [], []
    cap = cv2.VideoCapture(str(path))
    try:
        for i in range(total):
            ok, bgr = cap.read()
            if not ok:
                break
            if i in want:
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                if want[i] == "c":
                    calib.append(rgb)
                else:
                    held_out.append((rgb, None))
    finally:
        cap.release()
    if len(calib) < 1:
        raise RtsegError(f"cannot decode frames of {path}")
    # The file's bytes and the sampled indices pin the calibration set.
    digest = sha256_files([], extra=f"{sha256_file(path)}:{chosen}")
    return FrameSource(str(path), calib, held_out, False, digest)


def _count_frames(path: Path) -> int:
    """Frames actually decodable: container frame counts are estimates for some codecs."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise RtsegError(f"cannot open video {path}")
    n = 0
    try:
        while cap.grab():
            n += 1
    finally:
        cap.release()
    return n


def load_labelled(directory: str | Path, limit: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Up to ``limit`` image/mask pairs (spread evenly) of a labelled folder, for ``--val``."""
    pairs = labelled_pairs(directory)
    if pairs is None:
        raise RtsegError(f"--val needs labelled frames: {directory} has neither images/ + masks/, "
                         f"a '<dir>annot' folder beside it, nor val/ + valannot/")
    return [(read_image_rgb(pairs[i][0]), read_mask(pairs[i][1])) for i in spread(len(pairs), limit)]
