"""Where rendered frames go: a video file, mask and overlay folders, a window.

Every file is written under a temporary name in its destination folder and renamed when it is
complete, so an interrupted or failed run never leaves a file that looks finished. Sinks run in
the pipeline's sink thread only; the window is the one place that makes UI calls.

H.264: the OpenCV wheels on PyPI ship an FFmpeg without an H.264 encoder (``avc1`` does not open),
so browser-playable MP4 comes from piping raw frames to the ffmpeg binary of ``imageio-ffmpeg``
(``pip install rtseg[video]``, libx264). Without it an OpenCV build that can write ``avc1`` is
used, and otherwise MPEG-4 Part 2 (``mp4v``), which most browsers refuse, with a notice.

Timing: a file source's frames are written at its own frame rate, one for one (221 in, 221 out).
A live source delivers fewer frames than its nominal rate when the model is slower than the
camera, so writing those at the nominal rate would make a time-lapse; instead each frame is
stamped with the wall-clock time it reaches the encoder (capture time plus a steady pipeline
latency) and the file has a variable frame rate, so it plays at the speed it happened.
"""
from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from rtseg.io import OutputError, atomic_write_bytes, check_writable, ensure_dir, rename_into_place, temp_path
from rtseg.pipeline.overlay import Style
from rtseg.pipeline.sources import Frame, quiet_stderr
from rtseg.progress import notice

VIDEO_SUFFIXES = {".mp4": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "MJPG"}  # -> fallback fourcc


class SinkError(OutputError):
    """An output cannot be created or written."""


def check_video_path(path: Path) -> None:
    """A supported container that can be written; called before any work starts."""
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise SinkError(f"--output must end in {', '.join(VIDEO_SUFFIXES)}, got '{path.name}'")
    check_writable(path)


def ffmpeg_exe() -> str | None:
    """The ffmpeg binary of ``imageio-ffmpeg`` (or ``IMAGEIO_FFMPEG_EXE``), if installed."""
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError:
        return None


def _cv2_can_write(path: Path, fourcc: str) -> bool:
    with quiet_stderr():
        w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 25.0, (64, 64))
        ok = w.isOpened()
        w.release()
    path.unlink(missing_ok=True)
    return ok


@functools.lru_cache(maxsize=None)
def _fallback_notice(fourcc: str) -> None:
    """Once per process and codec (a benchmark opens several writers)."""
    notice(f"no H.264 encoder: writing video as {fourcc}, which browsers may not play; "
           f"pip install imageio-ffmpeg (rtseg[video]) for H.264")


# libx264 for a process that shares the CPU with the model. Measured on the highway clip (221
# frames of 960x540, docs/results.md#pipeline): preset veryfast crf 20 costs 20 ms of CPU a frame,
# ultrafast + zerolatency crf 23 a quarter of that at 42.5 dB PSNR against the source (veryfast:
# 43.2) in a larger file; on two cores the encoder's CPU is frames the model does not get, so the
# file size gives way. zerolatency also drops the lookahead and B-frames, so a frame leaves the
# encoder when it arrives (live recordings end with everything written). Two slice threads: the
# encoder never needs more than one core here, and on a many-core machine x264's default of
# 1.5 threads per core would compete with the inference threads.
X264_LIVE = ("-preset", "ultrafast", "-tune", "zerolatency", "-crf", "23", "-threads", "2")


def _children_cpu_s() -> float | None:
    """User + system CPU seconds of this process's reaped children (None where not available)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class _FfmpegWriter:
    """Raw BGR frames piped to ffmpeg/libx264: yuv420p and ``+faststart`` for browsers."""

    cpu_s: float | None = None  # the encoder's CPU seconds, known once it finished

    def __init__(self, exe: str, path: Path, size: tuple[int, int], fps: float, timestamps: bool = False):
        w, h = size
        self.path = path
        self.log = tempfile.TemporaryFile()
        # Live: ffmpeg stamps each raw frame with the wall clock when it reads it from the pipe,
        # which is when the sink writes it (the pipe holds far less than a frame), and passes
        # those stamps through (variable frame rate, millisecond track timescale). Not
        # `-fps_mode vfr`: it drops frames whose stamps nearly coincide, and on a busy CPU ffmpeg
        # reads several queued frames at once (12 of 30 frames kept in a burst test, 30 with
        # passthrough, same duration).
        timing = (["-use_wallclock_as_timestamps", "1"] if timestamps else ["-r", f"{fps:.6g}"])
        vfr = ["-fps_mode", "passthrough", "-video_track_timescale", "1000"] if timestamps else []
        cmd = [exe, "-hide_banner", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{w}x{h}", *timing, "-i", "-", *vfr,
               "-an", "-c:v", "libx264", *X264_LIVE, "-pix_fmt", "yuv420p",
               # 4:2:0 needs even sides; odd ones get one padded pixel rather than a failed encode.
               "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-movflags", "+faststart", str(path)]
        # A new session keeps the terminal's Ctrl+C away from ffmpeg: the pipeline decides when
        # the file ends, and ffmpeg dying first would lose the frames still in the queues.
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     stderr=self.log, start_new_session=True)
        if hasattr(os, "setpriority"):  # the encoder, like the other stages, yields to inference
            try:
                os.setpriority(os.PRIO_PROCESS, self.proc.pid, 10)
            except OSError:
                pass

    def _error(self) -> str:
        self.log.seek(0)
        lines = self.log.read().decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else f"exit code {self.proc.returncode}"

    def write(self, image: np.ndarray) -> None:
        try:
            self.proc.stdin.write(memoryview(np.ascontiguousarray(image)).cast("B"))
        except (BrokenPipeError, OSError):
            self.proc.wait()
            raise SinkError(f"ffmpeg stopped while writing {self.path}: {self._error()}") from None

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        before = _children_cpu_s()
        if self.proc.wait() != 0:
            raise SinkError(f"ffmpeg failed to finish {self.path}: {self._error()}")
        after = _children_cpu_s()
        # The kernel adds a child's CPU time to RUSAGE_CHILDREN when it is reaped: the encoder's
        # whole cost, in its own process, for the summary's per-stage figures.
        self.cpu_s = after - before if before is not None and after is not None else None
        self.log.close()

    def abort(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.log.close()


class _Cv2Writer:
    def __init__(self, fourcc: str, path: Path, size: tuple[int, int], fps: float):
        self.path = path
        self.writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
        if not self.writer.isOpened():
            raise SinkError(f"OpenCV cannot open a {fourcc} writer for {path}")

    def write(self, image: np.ndarray) -> None:
        self.writer.write(image)

    def close(self) -> None:
        self.writer.release()

    abort = close


class VideoSink:
    """``--output``: the size of the first frame is kept throughout.

    Args:
        path: destination (.mp4, .mov, .mkv or .avi).
        fps: frame rate written into the file (of a file source), or the nominal rate of a live one.
        timestamps: live source: write each frame at the time it arrives (variable frame rate with
            ffmpeg; OpenCV's writers have a fixed rate, so frames are repeated to keep time).
    """

    def __init__(self, path: str | Path, fps: float, timestamps: bool = False):
        self.path = Path(path)
        check_video_path(self.path)
        self.fps, self.timestamps = fps, timestamps
        self.frames = 0          # frames written to the file (repeats included)
        self.discarded = False   # the unfinished file was removed after a failure of its own
        self._t0 = self._t_last = None
        self.tmp = temp_path(self.path, unique=False)
        self.exe = ffmpeg_exe()
        self.fourcc = None
        if self.exe is None:
            if _cv2_can_write(self.tmp, "avc1"):
                self.fourcc = "avc1"
            else:
                self.fourcc = VIDEO_SUFFIXES[self.path.suffix.lower()]
                _fallback_notice(self.fourcc)
        self.codec = "h264 (ffmpeg)" if self.exe else self.fourcc
        self.writer = None
        self.size: tuple[int, int] | None = None  # (w, h)

    def write(self, frame: Frame) -> None:
        image = frame.view
        if self.writer is None:
            self.size = (image.shape[1], image.shape[0])
            self.writer = (_FfmpegWriter(self.exe, self.tmp, self.size, self.fps, self.timestamps) if self.exe
                           else _Cv2Writer(self.fourcc, self.tmp, self.size, self.fps))
        if (image.shape[1], image.shape[0]) != self.size:
            # Image folders of mixed sizes, or a mode switch to side-by-side in the window.
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        now = time.monotonic()
        self._t0 = now if self._t0 is None else self._t0
        self._t_last = now
        repeats = 1
        if self.timestamps and not self.exe:
            # A fixed-rate writer keeps time by repeating frames up to where the clock is.
            repeats = max(1, round((now - self._t0) * self.fps) + 1 - self.frames) if self.frames else 1
        for _ in range(repeats):
            self.writer.write(image)
        self.frames += repeats

    @property
    def duration_s(self) -> float | None:
        """How long the written video plays (seconds), None before the first frame."""
        if self._t0 is None:
            return None
        if self.timestamps and self.exe:
            return round(self._t_last - self._t0 + 1 / self.fps, 3)
        return round(self.frames / self.fps, 3)

    def close(self, commit: bool) -> None:
        if self.writer is None:
            return
        if not commit:
            self.writer.abort()
            self.tmp.unlink(missing_ok=True)
            self.discarded = True
            return
        self.writer.close()
        rename_into_place(self.tmp, self.path)

    def cpu_ms_per_frame(self, mask, view) -> float | None:
        """The encoder's CPU milliseconds per frame over the run (ffmpeg's own process)."""
        cpu_s = getattr(self.writer, "cpu_s", None)
        return round(cpu_s * 1000 / self.frames, 2) if cpu_s is not None and self.frames else None


class ImageDirSink:
    """``--save-masks`` (single-channel PNG of class ids) or ``--save-overlay`` (JPEG, quality 95)."""

    def __init__(self, directory: str | Path, kind: str):
        self.dir = ensure_dir(Path(directory), "--save-masks" if kind == "mask" else "--save-overlay")
        self.kind = kind
        self.needs_view = kind != "mask"  # masks alone: the pipeline skips drawing the overlay

    def _encode(self, mask: np.ndarray, view: np.ndarray):
        if self.kind == "mask":
            return cv2.imencode(".png", mask)
        return cv2.imencode(".jpg", view, [cv2.IMWRITE_JPEG_QUALITY, 95])

    def write(self, frame: Frame) -> None:
        name = f"{frame.name}.{'png' if self.kind == 'mask' else 'jpg'}"
        ok, data = self._encode(frame.mask, frame.view)
        if not ok:
            raise SinkError(f"cannot encode {name}")
        atomic_write_bytes(self.dir / name, data.tobytes())

    def cpu_ms_per_frame(self, mask, view) -> float:
        """CPU milliseconds of encoding one image, measured alone (the file write is not counted)."""
        self._encode(mask, view)
        t = time.process_time()
        for _ in range(3):
            self._encode(mask, view)
        return round((time.process_time() - t) * 1000 / 3, 2)

    def close(self, commit: bool) -> None:
        pass


def check_display() -> None:
    """Fails with one line where a window cannot open (headless OpenCV, no display server)."""
    gui = next((ln.split(":", 1)[1].strip() for ln in cv2.getBuildInformation().splitlines()
                if ln.strip().startswith("GUI:")), "")
    if gui.upper() == "NONE":
        raise SinkError("--show needs OpenCV with GUI support; this one is headless "
                        "(pip install opencv-python instead of opencv-python-headless)")
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise SinkError("--show needs a display (DISPLAY is not set)")


def handle_key(key: int, style: Style, stop: threading.Event) -> bool:
    """The window's keys: q/Esc stop, m next mode, +/- alpha; returns True for space (pause/resume)."""
    if key in (ord("q"), 27):
        stop.set()
    elif key == ord("m"):
        style.next_mode()
    elif key in (ord("+"), ord("=")):
        style.change_alpha(0.1)
    elif key == ord("-"):
        style.change_alpha(-0.1)
    return key == ord(" ")


class DisplaySink:
    """``--show``: a window. Keys: q/Esc quit, space pause, m overlay/mask/side, +/- alpha.

    Args:
        style: the shared drawing style the keys change.
        stop: set on q, Esc or a closed window; the pipeline then finishes what is in flight.
    """

    TITLE = "rtseg"

    def __init__(self, style: Style, stop: threading.Event):
        check_display()
        self.style, self.stop = style, stop
        self.opened = False

    def _key(self, key: int) -> bool:
        return handle_key(key, self.style, self.stop)

    def write(self, frame: Frame) -> None:
        if not self.opened:
            cv2.namedWindow(self.TITLE, cv2.WINDOW_NORMAL)
            self.opened = True
        cv2.imshow(self.TITLE, frame.view)
        if self._key(cv2.waitKey(1) & 0xFF):
            # Paused: the sink thread blocks here, so back-pressure holds file sources where they
            # are and live sources keep only their newest frame.
            while not self.stop.is_set() and not self._key(cv2.waitKey(50) & 0xFF):
                pass
        if cv2.getWindowProperty(self.TITLE, cv2.WND_PROP_VISIBLE) < 1:
            self.stop.set()

    def close(self, commit: bool) -> None:
        if self.opened:
            cv2.destroyWindow(self.TITLE)
