"""Between the pipeline and the browsers: the newest frame, its JPEG, the viewers and the controls.

Frame policy: the pipeline's sink thread only swaps a reference to the newest frame (microseconds)
and never waits for a viewer. One encoder thread turns the newest frame into a JPEG, and only while
at least one viewer is connected; every viewer is sent the newest JPEG when it is ready for one,
so a slow viewer skips frames (counted in ``viewer_skipped``) instead of building a backlog, and a
closed one just leaves. Pause is the one control that holds the pipeline: the sink thread waits,
as it does for the window's space key, so a file stays where it is and a live source keeps only
its newest frame.

Thread safety: one ``Condition`` guards the newest frame, the JPEG, the viewer count and the
figures the server reads. Mode and alpha are single attribute stores on the shared ``Style`` that
the overlay thread reads (atomic in Python; a frame drawn with the previous value is harmless).
"""
from __future__ import annotations

import collections
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from rtseg.errors import RtsegError
from rtseg.io import atomic_write_bytes
from rtseg.pipeline.overlay import MODES, Style
from rtseg.pipeline.runner import POLL_S, yield_to_inference
from rtseg.pipeline.stats import percentiles

JPEG_QUALITY = 80       # the stream; snapshots are written at 95
SHARE_STEP = 4          # class shares from every 4th pixel each way: 1/16 of the work, +-0.1 %
STALL_S = 10.0          # /healthz says "stalled" when no frame arrived for this long while running


class Hub:
    """Shared state of one served run.

    Args:
        style: the drawing style the overlay thread reads; mode and alpha controls change it.
        snapshot_dir: where the snapshot control writes the current frame, overlay and mask.
    """

    def __init__(self, style: Style, snapshot_dir: str | Path):
        self.style = style
        self.snapshot_dir = Path(snapshot_dir)
        self.info: dict = {}                 # model, runtime, precision, source: set by attach()
        self.class_names: list[str] = []
        self.colors: list[list[int]] = []
        self.stats = None                    # the pipeline's Stats, read for the figures
        self.stop: threading.Event | None = None
        self.paused = False
        self.state = "starting"              # starting | running | ended
        self.encoded = 0                     # JPEGs made (0 while nobody watches)
        self.viewer_skipped = 0              # frames a viewer never got because a newer one was ready
        self._cond = threading.Condition()
        self._frame = None                   # newest Frame from the sink thread
        self._seq = 0                        # frames published
        self._jpeg: tuple[int, bytes, float] | None = None  # (seq, data, t_capture)
        self._shares: list[dict] = []
        self._t_frame: float | None = None   # monotonic time of the newest frame
        self._screen = collections.deque(maxlen=300)  # capture-to-viewer latencies (ms)
        self.viewers = 0
        self._closed = False
        self._encoder = threading.Thread(target=self._encode_loop, name="rtseg-serve-encoder", daemon=True)
        self._encoder.start()

    def attach(self, stats, stop: threading.Event, meta, info: dict) -> None:
        """Called once the model is loaded: the figures' sources and the pipeline's stop event."""
        with self._cond:
            self.stats, self.stop, self.info = stats, stop, dict(info)
            self.class_names, self.colors = list(meta.class_names), [list(c) for c in meta.colors]

    # -- the pipeline side (sink thread) -----------------------------------------------------------

    def publish(self, frame) -> None:
        """The newest frame; then, while paused, holds the sink thread until resumed or stopped."""
        with self._cond:
            self._frame, self._t_frame = frame, time.monotonic()
            self._seq += 1
            self.state = "running"
            self._cond.notify_all()
            while self.paused and not self._closed and not (self.stop is not None and self.stop.is_set()):
                # Stop is an Event, not this condition: recheck it every POLL_S (a signal, q, an error).
                self._cond.wait(POLL_S)

    def end(self) -> None:
        """The frames are over (any ending): the streams finish, the encoder leaves."""
        with self._cond:
            self.state = "ended"
            self._closed = True
            self._cond.notify_all()
        self._encoder.join(timeout=5)

    # -- the encoder thread ---------------------------------------------------------------------------

    def _encode_loop(self) -> None:
        yield_to_inference()
        done = 0
        while True:
            with self._cond:
                while not self._closed and (self.viewers == 0 or self._seq == done):
                    self._cond.wait()
                if self._closed:
                    return
                frame, done = self._frame, self._seq
            ok, data = cv2.imencode(".jpg", frame.view, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            shares = self._class_shares(frame.mask)
            with self._cond:
                if ok:
                    self._jpeg = (done, data.tobytes(), frame.t_capture)
                    self.encoded += 1
                self._shares = shares
                self._cond.notify_all()

    def _class_shares(self, mask: np.ndarray) -> list[dict]:
        counts = np.bincount(mask[::SHARE_STEP, ::SHARE_STEP].ravel(), minlength=len(self.class_names))
        total = max(int(counts.sum()), 1)
        return [{"name": self.class_names[c], "color": self.colors[c], "share": round(100.0 * counts[c] / total, 1)}
                for c in np.argsort(-counts) if counts[c] > 0 and c < len(self.class_names)]

    # -- the viewer side (server threads) ----------------------------------------------------------

    def frames(self):
        """Yields ``(jpeg, t_capture)``: the newest JPEG each time the viewer is ready for one."""
        with self._cond:
            self.viewers += 1
            self._cond.notify_all()
        try:
            sent = 0
            while True:
                with self._cond:
                    while not self._closed and (self._jpeg is None or self._jpeg[0] == sent):
                        self._cond.wait()
                    if self._closed:
                        return
                    seq, data, t_capture = self._jpeg
                    if sent:
                        self.viewer_skipped += max(0, seq - sent - 1)
                sent = seq
                yield data, t_capture
        finally:
            with self._cond:
                self.viewers -= 1

    def delivered(self, t_capture: float) -> None:
        """A JPEG was written to a viewer's socket: capture-to-screen latency, as the server sees it."""
        ms = (time.perf_counter() - t_capture) * 1000
        with self._cond:
            self._screen.append(ms)

    def control(self, changes: dict) -> dict:
        """Applies ``{"mode", "alpha", "paused"}`` (any subset); returns the current controls.

        Raises:
            RtsegError: an unknown key or a value out of range (one line, for the HTTP 400).
        """
        unknown = set(changes) - {"mode", "alpha", "paused"}
        if unknown:
            raise RtsegError(f"unknown control {sorted(unknown)[0]!r}; valid: mode, alpha, paused")
        mode, alpha, paused = changes.get("mode"), changes.get("alpha"), changes.get("paused")
        if mode is not None and mode not in MODES:
            raise RtsegError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, (int, float))
                                  or not 0.0 <= alpha <= 1.0):
            raise RtsegError(f"alpha must be a number in [0, 1], got {alpha!r}")
        if paused is not None and not isinstance(paused, bool):
            raise RtsegError(f"paused must be true or false, got {paused!r}")
        if mode is not None:
            self.style.mode = mode
        if alpha is not None:
            self.style.alpha = round(float(alpha), 2)
        with self._cond:
            if paused is not None:
                self.paused = paused
                self._cond.notify_all()
            return self._controls()

    def _controls(self) -> dict:
        return {"mode": self.style.mode, "alpha": self.style.alpha, "paused": self.paused}

    def snapshot(self) -> list[str]:
        """Writes the newest frame (PNG), its overlay as drawn (JPEG) and its class-id mask (PNG).

        Raises:
            RtsegError: no frame yet, or the folder cannot be written.
        """
        with self._cond:
            frame = self._frame
        if frame is None:
            raise RtsegError("no frame yet")
        try:
            self.snapshot_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RtsegError(f"cannot create snapshot folder {self.snapshot_dir}: {e.strerror}") from None
        stamp = time.strftime("%Y%m%d-%H%M%S")
        files = []
        for suffix, image, params in (("frame.png", frame.image, []), ("mask.png", frame.mask, []),
                                      ("overlay.jpg", frame.view, [cv2.IMWRITE_JPEG_QUALITY, 95])):
            path = self.snapshot_dir / f"{stamp}_{frame.name}_{suffix}"
            ok, data = cv2.imencode(Path(suffix).suffix, image, params)
            if not ok:
                raise RtsegError(f"cannot encode {path.name}")
            atomic_write_bytes(path, data.tobytes())
            files.append(str(path))
        return files

    def figures(self) -> dict:
        """What ``/stats`` returns: rates, latencies, drops, classes, runtime and the controls."""
        records, fps, total, dropped = [], 0.0, 0, 0
        if self.stats is not None:
            records, fps, total = self.stats.recent(60)
            dropped = self.stats.dropped
        infer = percentiles([r["inference"] for r in records])
        pipe = percentiles([r["latency"] for r in records])
        with self._cond:
            screen = percentiles(list(self._screen))
            age = None if self._t_frame is None else round(time.monotonic() - self._t_frame, 3)
            out = {"state": self.state, "frames": total, "fps": round(fps, 2),
                   # The inference stage inside the running pipeline (sharing the cores); the model
                   # measured alone comes with the run's summary at its end.
                   "model_fps_in_pipeline": round(1000.0 / infer["mean"], 2) if infer["mean"] > 0 else 0.0,
                   "latency_ms": {"screen": {"p50": screen["p50"], "p99": screen["p99"]},
                                  "pipeline": {"p50": pipe["p50"], "p99": pipe["p99"]}},
                   "dropped": dropped, "viewer_skipped": self.viewer_skipped, "viewers": self.viewers,
                   "encoded": self.encoded, "last_frame_age_s": age, "classes": self._shares,
                   **self.info, **self._controls()}
        return out

    def health(self) -> tuple[bool, dict]:
        """``(healthy, body)`` for ``/healthz``: unhealthy once ended or stalled while running."""
        with self._cond:
            age = None if self._t_frame is None else time.monotonic() - self._t_frame
            state = self.state
            if state == "running" and not self.paused and age is not None and age > STALL_S:
                state = "stalled"
            if state == "running" and self.paused:
                state = "paused"
            return state in ("starting", "running", "paused"), {"state": state, "frames": self._seq}


class ServeSink:
    """The pipeline sink that feeds a :class:`Hub` (first in the sink list: viewers see a frame
    before the files are encoded)."""

    def __init__(self, hub: Hub):
        self.hub = hub

    def write(self, frame) -> None:
        self.hub.publish(frame)

    def close(self, commit: bool) -> None:
        self.hub.end()
