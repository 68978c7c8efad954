"""Where frames come from: video files, image files and folders, webcams and network streams.

Every source returns :class:`Frame`s: a BGR uint8 image (OpenCV's order; the preprocess stage
converts to RGB once), its capture time, its index in the source and a stable name: the file stem
for images, the zero-padded source frame index for videos, so that ``--save-masks`` files line up
with the input.

Files are *not live*: the pipeline must process every frame, so the capture thread blocks when the
queues are full. Webcams and streams are *live*: frames arrive at the sensor's pace whether we keep
up or not, so the capture thread only ever keeps the newest one (see ``runner.py``).

Bad frames are skipped, counted (``skipped``) and reported in one line through ``warn``: an
undecodable image in a folder, a run of corrupt packets in a video. ``strict=True`` makes the first
one an error instead. A video that ends before the frame count its container declares is reported
once and recorded in ``truncated``.
"""
from __future__ import annotations

import contextlib
import glob
import os
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from rtseg.data.datasets import IMAGE_EXTS
from rtseg.errors import RtsegError
from rtseg.progress import notice

LIVE_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
DEFAULT_FPS = 25.0  # image sequences and cameras that report no rate
# FFmpeg would otherwise wait ~30 s on a dead network peer; this keeps "never hang" true.
STREAM_TIMEOUT_MS = 5000
# Failed reads in a row after which a video without a declared frame count is taken to have ended;
# at a real end each extra attempt returns at once.
VIDEO_RETRIES = 8
# A declared frame count is an estimate in some containers (Matroska, AVI): only a shortfall
# larger than this share (and than 2 frames) is called truncation.
TRUNCATION_SLACK = 0.02


class SourceError(RtsegError):
    """The input cannot be opened or read: missing, corrupt, empty, an absent camera, a lost stream."""


class StreamLost(SourceError):
    """A live source went away for good: its reconnect attempts failed, or it stalled."""


@contextlib.contextmanager
def quiet_stderr():
    """Silences file descriptor 2, where OpenCV and its FFmpeg log failed opens and probes on
    their own; our one-line error says what went wrong. Only used before the pipeline's threads
    start, so no other output can be swallowed."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@dataclass
class Frame:
    """One frame travelling through the pipeline; each stage fills in its part.

    Attributes:
        index: position in the source (source frame index for videos, so strides keep gaps).
        name: output file stem.
        image: BGR uint8 (H, W, 3) as captured.
        t_capture: ``time.perf_counter()`` when the frame was read.
        times: stage name -> milliseconds spent on this frame.
    """

    index: int
    name: str
    image: np.ndarray
    t_capture: float
    times: dict[str, float] = field(default_factory=dict)
    tensor: np.ndarray | None = None      # (3, h, w) normalized float32
    logits: object = None                 # torch (1, C, h, w)
    mask: np.ndarray | None = None        # (H, W) uint8 class ids at the source resolution
    view: np.ndarray | None = None        # BGR uint8 rendered overlay


class Source:
    """Base class. ``read(stop)`` returns the next :class:`Frame`, or ``None`` at the end of the input.

    Attributes:
        live: frames arrive in real time (keep the newest, count drops) rather than from a file.
        fps: frame rate to write output video at.
        total: number of frames that will be read, when known.
        description: for messages and the JSON summary.
    """

    live = False
    fps = DEFAULT_FPS
    total: int | None = None
    description = ""
    skipped = 0                     # bad frames skipped
    truncated: dict | None = None   # {"declared": N, "read": M} for a video that ended early
    strict = False                  # the first bad frame is an error instead of a skip
    warn: Callable[[str], None] = staticmethod(notice)

    def bad_frame(self, message: str, count: int = 1) -> None:
        """Skips ``count`` bad frames with one line, or raises under ``strict``."""
        if self.strict:
            raise SourceError(message)
        self.skipped += count
        self.warn(f"warning: skipped {message}")

    def read(self, stop: threading.Event | None) -> Frame | None:
        raise NotImplementedError

    @staticmethod
    def frame(index: int, name: str, image: np.ndarray) -> Frame:
        """A frame read just now: its capture time is this moment."""
        return Frame(index, name, image, time.perf_counter())

    def close(self) -> None:
        pass


def _count_limit(total: int | None, stride: int, max_frames: int | None) -> int | None:
    n = None if total is None else (total + stride - 1) // stride
    if max_frames is not None:
        n = max_frames if n is None else min(n, max_frames)
    return n


class VideoFileSource(Source):
    """A video file, every ``stride``-th frame, at most ``max_frames`` of them.

    ``start``/``end`` read only source frames ``start`` up to ``end`` (a chunk of ``rtseg batch``):
    the file is seeked to ``start``, and every frame short of ``end`` that cannot be decoded is
    reported, since the caller asked for exactly those.
    """

    def __init__(self, path: str, stride: int = 1, max_frames: int | None = None, strict: bool = False,
                 start: int = 0, end: int | None = None):
        self.path, self.stride, self.max_frames, self.strict = path, stride, max_frames, strict
        self.start, self.end = start, end
        self.description = path
        with quiet_stderr():
            self.cap = cv2.VideoCapture(path)
            if start and self.cap.isOpened():
                self.cap.set(cv2.CAP_PROP_POS_FRAMES, start)  # FFmpeg seeks to a key frame and decodes on
            ok, first = self.cap.read() if self.cap.isOpened() else (False, None)
        if not self.cap.isOpened():
            raise SourceError(f"cannot open video {path} (corrupt or unsupported format)")
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if 0 < fps < 1000 else DEFAULT_FPS
        # The first frame was read above: a zero-frame or undecodable file must fail before the
        # model is loaded, not as an empty output minutes later. A later chunk that cannot be
        # read is a damaged part of a file that opened before: reported as its frames are read.
        if (not ok or first is None) and not start:
            self.cap.release()
            raise SourceError(f"no decodable frame in {path} (zero-frame or corrupt video)")
        self._pending: np.ndarray | None = first if ok else None
        count = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self._container = count if count > 0 else None
        self._declared = end if end is not None else self._container
        known = None if self._declared is None else self._declared - start
        self.total = _count_limit(known, stride, max_frames)
        self._index = start  # source index of the next frame returned
        self._returned = 0

    @property
    def position(self) -> int:
        """Source index of the next frame (after the end: how far decoding got)."""
        return self._index

    def read(self, stop):
        if self.max_frames is not None and self._returned >= self.max_frames:
            return None
        if self.end is not None and self._index >= self.end:
            return None
        if self._pending is not None:
            image, self._pending = self._pending, None
        else:
            # grab() demuxes and decodes without the colour conversion retrieve() does, so skipped
            # frames of a stride cost less.
            for _ in range(self.stride - 1):
                if not self.cap.grab() and not self._recover():
                    return None
                self._index += 1
            ok, image = self.cap.read()
            if not ok:
                image = self._recover(retrieve=True)
                if image is None:
                    return None
        index = self._index
        self._index += 1
        self._returned += 1
        return self.frame(index, f"{index:06d}", image)

    def _recover(self, retrieve: bool = False):
        """After a failed read: skips a run of undecodable frames, or reports the end of the video
        (and whether it came before the declared frame count). Returns the next frame (or True
        for a grab) once decoding resumes, None at the end."""
        # Up to the declared end a failed grab is a damaged frame (each one consumes a packet), past
        # it the end of the file; without a declared count, a fixed number of tries.
        budget = max(VIDEO_RETRIES, (self._declared or 0) - self._index)
        for attempt in range(budget):
            ok = self.cap.grab()
            if ok:
                image = self.cap.retrieve()[1] if retrieve else True
                if image is not None:
                    self.bad_frame(f"{attempt + 1} undecodable frame(s) at frame {self._index} of {self.path}",
                                   attempt + 1)
                    self._index += attempt + 1
                    return image
        self._check_truncated()
        return None

    def _check_truncated(self) -> None:
        declared, read = self._declared, self._index
        # A container's count is an estimate (slack); an explicit ``end`` is not.
        slack = 0 if self.end is not None else max(2, TRUNCATION_SLACK * (declared or 0))
        if declared and declared - read > slack:
            self.truncated = {"declared": declared, "read": read}
            of = max(self._container or 0, declared)
            self.warn(f"warning: {self.path} ended after {read} of the {of} frames its container "
                      f"declares (truncated or damaged file)")

    def close(self):
        self.cap.release()


def check_stems(files: list, spec: str) -> None:
    """Raises :class:`SourceError` if two images share a file stem: their outputs would collide."""
    seen: dict[str, object] = {}
    for f in files:
        stem = Path(f).stem
        if stem in seen:
            raise SourceError(f"two input images of {spec} share the stem '{stem}' ({seen[stem]}, {f}); "
                              f"their outputs would overwrite each other")
        seen[stem] = f


class ImageSource(Source):
    """A list of image files, named by stem (duplicate stems would overwrite each other's masks)."""

    def __init__(self, files: list[Path], description: str, stride: int = 1, max_frames: int | None = None,
                 strict: bool = False):
        self.strict = strict
        files = files[::stride][:max_frames]
        check_stems(files, description)
        self.files, self.description, self.total = files, description, len(files)
        self._i = 0

    def read(self, stop):
        while self._i < len(self.files):
            path = self.files[self._i]
            self._i += 1
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is not None:
                return self.frame(self._i - 1, path.stem, image)
            self.bad_frame(f"cannot decode image (corrupt or unsupported format): {path}")
        return None


class LiveSource(Source):
    """A webcam or network stream; a failed read reopens it up to ``reconnect`` times.

    Backoff doubles from 0.5 s up to 8 s between attempts, and waits on the stop event so that
    Ctrl+C during a reconnect is immediate.

    When is a stream lost, and when has it ended? A server that closes the stream makes the next
    read fail at once; a network that drops makes it time out. Without ``reconnect`` a stream that
    closes after delivering frames has *ended* (``read`` returns None); one that times out, or
    fails before its first frame, is *lost* (:class:`StreamLost`). With ``reconnect`` N every
    failure is retried, and the stream is lost when N attempts in a row fail. A server that was
    killed closes its connections just like one that finished, so the two read the same.
    """

    live = True

    def __init__(self, target: int | str, reconnect: int = 0, max_frames: int | None = None):
        self.target, self.reconnect, self.max_frames = target, reconnect, max_frames
        self.total = max_frames
        self.description = f"camera {target}" if isinstance(target, int) else _redact(target)
        with quiet_stderr():
            self.cap = self._open()
        if self.cap is None:
            # A camera's description already says "camera N"; a URL needs the word.
            what = self.description if isinstance(target, int) else f"stream {self.description}"
            raise SourceError(f"{what} is not available (cannot open it)")
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if 0 < fps < 1000 else DEFAULT_FPS
        self.reconnects = 0
        self._index = 0

    def _open(self) -> cv2.VideoCapture | None:
        if isinstance(self.target, int):
            cap = cv2.VideoCapture(self.target)
        else:
            cap = cv2.VideoCapture(self.target, cv2.CAP_FFMPEG,
                                   [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_TIMEOUT_MS,
                                    cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_TIMEOUT_MS])
        if cap.isOpened():
            return cap
        cap.release()
        return None

    def read(self, stop):
        if self.max_frames is not None and self._index >= self.max_frames:
            return None
        t = time.monotonic()
        ok, image = self.cap.read()
        stalled = time.monotonic() - t > 0.8 * STREAM_TIMEOUT_MS / 1000
        attempt = 0
        while not ok:
            if attempt >= self.reconnect:
                if not self.reconnect and self._index > 0 and not stalled:
                    return None  # the server closed the stream: it has ended
                raise StreamLost(f"lost {self.description}" + (
                    f" ({self.reconnect} reconnect attempts failed)" if self.reconnect else
                    " (use --reconnect N to retry)"))
            if stop.wait(min(0.5 * 2 ** attempt, 8.0)):
                return None
            attempt += 1
            self.cap.release()
            cap = self._open()
            if cap is not None:
                self.cap = cap
                self.reconnects += 1
                ok, image = self.cap.read()
        self._index += 1
        return self.frame(self._index - 1, f"{self._index - 1:06d}", image)

    def close(self):
        self.cap.release()


def _redact(url: str) -> str:
    """Stream URL without its password (rtsp://user:pass@host -> rtsp://user:***@host)."""
    return re.sub(r"(//[^:/@]+:)[^@/]+@", r"\1***@", url)


def open_source(spec: str, stride: int = 1, max_frames: int | None = None, reconnect: int = 0,
                strict: bool = False) -> Source:
    """Opens ``spec``: webcam index (``0``), stream URL, image file, folder or glob of images, video.

    Raises:
        SourceError: missing, unreadable or empty input, absent camera, unreachable stream.
    """
    if stride < 1:
        raise SourceError(f"--vid-stride must be >= 1, got {stride}")
    if max_frames is not None and max_frames < 1:
        raise SourceError(f"--max-frames must be >= 1, got {max_frames}")
    if spec.isdigit():
        return LiveSource(int(spec), reconnect, max_frames)
    if spec.lower().startswith(LIVE_SCHEMES):
        return LiveSource(spec, reconnect, max_frames)
    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())
        if not files:
            raise SourceError(f"no images ({', '.join(IMAGE_EXTS)}) in folder {spec}")
        return ImageSource(files, spec, stride, max_frames, strict)
    if glob.has_magic(spec):
        files = sorted(Path(p) for p in glob.glob(spec) if Path(p).suffix.lower() in IMAGE_EXTS)
        if not files:
            raise SourceError(f"no images match {spec}")
        return ImageSource(files, spec, stride, max_frames, strict)
    if not path.exists():
        raise SourceError(f"source not found: {spec}")
    if path.suffix.lower() in IMAGE_EXTS:
        return ImageSource([path], spec, 1, max_frames, strict)
    return VideoFileSource(spec, stride, max_frames, strict)


__all__ = ["Frame", "Source", "SourceError", "StreamLost", "VideoFileSource", "ImageSource", "LiveSource",
           "open_source", "check_stems", "LIVE_SCHEMES", "DEFAULT_FPS"]
