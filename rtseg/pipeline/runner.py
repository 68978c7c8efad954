"""The threaded pipeline: capture -> preprocess -> inference -> postprocess/overlay -> sinks.

One thread per stage, joined by bounded ``queue.Queue``s, so while the network runs on frame t the
capture thread decodes t+2, preprocessing resizes t+1 and the sinks encode t-1; on two cores the
end-to-end rate approaches the model-only rate instead of being their sum. A backend that runs
several requests at once (``Backend.inflight``, OpenVINO streams) gets that many frames of a file
at a time from the inference thread, which still passes them on in order. OpenCV, numpy and
torch release the GIL inside their kernels, which is what lets Python threads overlap here.

Frame policy:
    * files: the capture thread blocks on a full queue (back-pressure), so no frame is lost;
    * live sources: the capture thread overwrites a one-slot buffer, keeping only the newest frame
      and counting the ones it replaced; the preprocess thread does the same with the one-slot
      queue in front of the model, so the network always starts on the freshest frame instead of
      one that waited a whole inference behind the previous one. Every queue holds one frame:
      latency stays near capture + one inference + postprocess + sink, never a backlog. The
      price is preprocessing some frames that are then dropped (a few ms each).

Shutdown: ``stop`` asks the capture thread to end; it sends ``SENTINEL`` downstream and every
stage passes it on after the frames in flight, so the sinks finish a playable file (a first
signal, q, end of input, a stream lost for good). ``abort`` makes every stage leave at once (an
exception in any stage, a second signal). Every blocking queue operation has a timeout and
rechecks ``abort``; nothing spins. Either way the sinks commit what they hold; only a failure of
the sink stage itself (encoder crash, full disk) discards the unfinished video.
"""
from __future__ import annotations

import os
import queue
import sys
import threading
import time
from collections import deque
from typing import Callable

import torch

from rtseg import signals
from rtseg.backends.base import Backend
from rtseg.errors import RtsegError
from rtseg.pipeline import stages
from rtseg.pipeline.ending import COMPLETED, ERROR, INTERRUPTED, SOURCE_LOST
from rtseg.pipeline.overlay import Renderer
from rtseg.pipeline.sources import Frame, Source, StreamLost
from rtseg.pipeline.stats import Stats
from rtseg.progress import Progress

SENTINEL = object()   # end of stream, passed from stage to stage
POLL_S = 0.1          # how often a thread blocked on a queue rechecks `abort`
JOIN_GRACE_S = 30.0   # after `abort`, how long the slowest call (one inference) may take to return


# Niceness added to every stage thread but inference. On a machine with few cores the other stages
# take CPU from the inference thread's intra-op workers, and a worker that loses its core stalls
# the others at the next barrier; lower priority for the cheap stages lets the model keep the
# cores while it runs, and they catch up in its gaps (measured: README, `rtseg bench --pipeline`).
BACKGROUND_NICE = 10


def yield_to_inference(nice: int = BACKGROUND_NICE) -> None:
    """Lowers the calling thread's scheduling priority (Linux: per-thread niceness); no-op elsewhere."""
    if not hasattr(os, "setpriority") or not sys.platform.startswith("linux"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError:
        pass  # not permitted in this sandbox: run at normal priority


class PipelineError(RtsegError):
    """A stage failed, or the source was lost; the message names the stage and the cause in one
    line. ``summary`` is the run's summary when the run got far enough to have one (its outputs
    were finalized and its JSON written before this was raised)."""

    def __init__(self, message: str, summary: dict | None = None):
        super().__init__(message)
        self.summary = summary


class SourceLost(PipelineError):
    """The stream or camera went away for good (after its reconnect attempts)."""


class Pipeline:
    """Runs ``source`` through ``backend`` into ``sinks`` on five threads.

    Args:
        source: an opened :class:`~rtseg.pipeline.sources.Source`.
        backend: called from the inference thread only.
        renderer: draws the overlay in the postprocess thread.
        sinks: objects with ``write(frame)`` and ``close(commit)``, all driven by the sink thread.
        size: inference (h, w); default the model's input size.
        progress: updated by the sink thread once per frame.
        queue_size: capacity of each queue for file sources (live sources always use 1).
        stop: the event that ends the run gracefully; pass one to let a sink (the window's q key)
            or another thread request it.
        smoother: a :class:`rtseg.temporal.Smoother` applied to the network's output in the
            postprocess thread (which sees frames in order); its time counts as postprocess.
    """

    def __init__(self, source: Source, backend: Backend, renderer: Renderer, sinks: list,
                 size: tuple[int, int] | None = None, progress: Progress | None = None,
                 queue_size: int = 2, stop: threading.Event | None = None, smoother=None):
        self.source, self.backend, self.renderer, self.sinks = source, backend, renderer, sinks
        self.smoother = smoother
        self.size = size
        self.progress = progress
        depth = 1 if source.live else queue_size
        self.queues = [queue.Queue(maxsize=depth) for _ in range(4)]
        self.stop = stop or threading.Event()
        self.abort = threading.Event()
        self.stats = Stats()
        self.error: tuple[str, BaseException] | None = None
        self.lost: str | None = None  # why the source was lost, if it was
        self.last: Frame | None = None  # the last frame the sinks wrote
        # The overlay is drawn only for a sink that shows or stores it (a sink says
        # ``needs_view = False`` otherwise): masks alone save its 3 ms of CPU a frame.
        self.draw = any(getattr(s, "needs_view", True) for s in sinks)
        self._lock = threading.Lock()

    # -- queue helpers -------------------------------------------------------------------------

    def _get(self, q: queue.Queue):
        """Next item, or SENTINEL once ``abort`` is set."""
        while not self.abort.is_set():
            try:
                return q.get(timeout=POLL_S)
            except queue.Empty:
                continue
        return SENTINEL

    def _put(self, q: queue.Queue, item) -> bool:
        """Blocks while ``q`` is full (back-pressure); False if ``abort`` was set meanwhile."""
        while not self.abort.is_set():
            try:
                q.put(item, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _put_newest(self, q: queue.Queue, frame: Frame, stage: str) -> bool:
        """Live sources: replace the waiting frame, if any, and count it as dropped by ``stage``."""
        while True:
            try:
                q.put_nowait(frame)
                return True
            except queue.Full:
                try:
                    q.get_nowait()
                    self.stats.drops[stage] += 1  # only this stage's thread writes its count
                except queue.Empty:
                    pass  # the consumer took it meanwhile; the slot is free now

    def _fail(self, stage: str, exc: BaseException) -> None:
        with self._lock:
            if self.error is None:
                self.error = (stage, exc)
        self.stop.set()
        self.abort.set()

    # -- stages ----------------------------------------------------------------------------------

    def _capture(self) -> None:
        out = self.queues[0]
        yield_to_inference()
        try:
            while not self.stop.is_set():
                t0 = time.perf_counter()
                try:
                    frame = self.source.read(self.stop)
                except StreamLost as e:
                    # Not a failure of the run: what was captured is finished and kept.
                    self.lost = str(e)
                    self.stop.set()
                    break
                if frame is None:
                    break
                frame.times["capture"] = (frame.t_capture - t0) * 1000
                if self.source.live:
                    self._put_newest(out, frame, "capture")
                elif not self._put(out, frame):
                    break
        except BaseException as e:  # noqa: BLE001 - any failure must stop the pipeline, not hang it
            self._fail("capture", e)
        finally:
            self._put(out, SENTINEL)

    def _stage(self, q_in: queue.Queue, q_out: queue.Queue, name: str, work: Callable[[Frame], None],
               newest: bool = False) -> None:
        yield_to_inference()
        try:
            while (frame := self._get(q_in)) is not SENTINEL:
                work(frame)
                sent = self._put_newest(q_out, frame, name) if newest else self._put(q_out, frame)
                if not sent:
                    break
        except BaseException as e:  # noqa: BLE001
            self._fail(name, e)
        finally:
            self._put(q_out, SENTINEL)

    @staticmethod
    def _timed(frame: Frame, name: str, fn: Callable, *args):
        t = time.perf_counter()
        out = fn(*args)
        frame.times[name] = (time.perf_counter() - t) * 1000
        return out

    def _preprocess(self, frame: Frame) -> None:
        frame.tensor = self._timed(frame, "preprocess", stages.preprocess, self.backend, frame.image, self.size)

    def _inference(self) -> None:
        """Keeps up to ``backend.inflight`` frames in the model (one for live sources, whose newest
        frame should not wait behind another) and passes them on in order; a frame's inference
        time runs from its submission to its result."""
        q_in, q_out = self.queues[1], self.queues[2]
        depth = 1 if self.source.live else max(1, self.backend.inflight)
        pending: deque = deque()

        def collect() -> bool:
            frame, started, result = pending.popleft()
            frame.logits = result()
            frame.times["inference"] = (time.perf_counter() - started) * 1000
            return self._put(q_out, frame)

        try:
            while (frame := self._get(q_in)) is not SENTINEL:
                pending.append((frame, time.perf_counter(), stages.submit(self.backend, frame.tensor)))
                frame.tensor = None
                if len(pending) >= depth and not collect():
                    break
            while pending and not self.abort.is_set():
                if not collect():
                    break
        except BaseException as e:  # noqa: BLE001
            self._fail("inference", e)
        finally:
            # After an abort, frames may still be in the runtime: wait for them (one inference at
            # most), so that no request is still writing when the backend is released.
            for _frame, _started, result in pending:
                try:
                    result()
                except BaseException:  # noqa: BLE001 - the run has already failed or stopped
                    pass
            self._put(q_out, SENTINEL)

    def _postprocess(self, frame: Frame) -> None:
        with torch.inference_mode():
            frame.mask = self._timed(frame, "postprocess", self._to_mask, frame)
        frame.logits = None
        if self.draw:
            frame.view = self._timed(frame, "overlay", self.renderer.render, frame.image, frame.mask,
                                     self.stats.hud_text())

    def _to_mask(self, frame: Frame):
        output = frame.logits
        if self.smoother is not None:
            output = self.smoother.update(frame.index, frame.image, output)
        return stages.to_mask(self.backend, output, frame.image.shape[:2])

    def _sink(self) -> None:
        yield_to_inference()
        try:
            while (frame := self._get(self.queues[3])) is not SENTINEL:
                t = time.perf_counter()
                for sink in self.sinks:
                    sink.write(frame)
                frame.times["sink"] = (time.perf_counter() - t) * 1000
                self.last = frame  # what the costs measured after the run are measured on
                rec = self.stats.add(frame.index, frame.name, frame.times, frame.t_capture)
                if self.progress is not None:
                    fields = {"latency": f"{rec['latency']:.0f}ms"}
                    if self.source.live:
                        fields["dropped"] = self.stats.dropped
                    self.progress.update(1, **fields)
        except BaseException as e:  # noqa: BLE001
            self._fail("sink", e)
        finally:
            # Outputs survive every ending but a failure of the outputs themselves: an encoder
            # that crashed or a full disk leaves nothing worth keeping in the unfinished video.
            commit = self.error is None or self.error[0] != "sink"
            for sink in self.sinks:
                try:
                    sink.close(commit=commit)
                except BaseException as e:  # noqa: BLE001
                    self._fail("sink", e)

    # -- driver ----------------------------------------------------------------------------------

    def _join(self, threads: list[threading.Thread], timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in threads:
            # Short timed joins keep the main thread responsive to Ctrl+C on every platform.
            while t.is_alive() and (deadline is None or time.monotonic() < deadline):
                t.join(POLL_S)

    def run(self) -> dict:
        """Runs to the end of the input, a stop request, a lost source or an error; returns the
        summary, whose ``ending`` says which (``error`` then names the cause).

        A signal (or Ctrl+C without the CLI's handlers) finishes the frames in flight and the
        outputs (a second one stops at once, still finalizing the files written so far); the
        summary then says ``interrupted`` and which signal.

        Raises:
            PipelineError: threads that did not stop after an abort.
        """
        q = self.queues
        threads = [threading.Thread(target=fn, args=args, name=f"rtseg-{name}", daemon=True)
                   for name, fn, args in (
                       ("capture", self._capture, ()),
                       ("preprocess", self._stage, (q[0], q[1], "preprocess", self._preprocess, self.source.live)),
                       ("inference", self._inference, ()),
                       ("postprocess", self._stage, (q[2], q[3], "postprocess", self._postprocess)),
                       ("sink", self._sink, ()))]
        self.stats.start()
        for t in threads:
            t.start()
        keyboard = False
        try:
            with signals.pipeline_phase(self.stop, self.abort):
                try:
                    self._join(threads)
                except KeyboardInterrupt:  # library use without the CLI's signal handlers
                    keyboard = True
                    self.stop.set()
                    try:
                        self._join(threads)
                    except KeyboardInterrupt:
                        self.abort.set()
                if self.abort.is_set():
                    self._join(threads, JOIN_GRACE_S)
        finally:
            if not threads[0].is_alive():  # never release a capture device mid-read
                self.source.close()
        stuck = [t.name for t in threads if t.is_alive()]
        if stuck:
            raise PipelineError(f"threads did not stop within {JOIN_GRACE_S:.0f} s: {', '.join(stuck)}")
        return self._summary("SIGINT" if keyboard else signals.received())

    def error_message(self) -> str | None:
        """One line naming the failed stage and the cause, or None."""
        if self.error is None:
            return None
        stage, exc = self.error
        msg = str(exc) if isinstance(exc, RtsegError) else f"{type(exc).__name__}: {exc}"
        return f"{stage} stage: {msg.splitlines()[0] if msg else type(exc).__name__}"

    def _summary(self, signal_name: str | None) -> dict:
        summary = self.stats.summary()
        # The first cause wins: a stage failure, then a signal, then a lost source.
        if self.error is not None:
            ending = ERROR
        elif signal_name is not None:
            ending = INTERRUPTED
        elif self.lost is not None:
            ending = SOURCE_LOST
        else:
            ending = COMPLETED
        summary.update(ending=ending, interrupted=ending == INTERRUPTED,
                       signal=signal_name if ending == INTERRUPTED else None,
                       error=self.error_message() or (f"capture stage: {self.lost}" if self.lost else None))
        return summary
