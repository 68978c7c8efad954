"""Ctrl+C, ``kill`` and a closed terminal: SIGINT, SIGTERM and SIGHUP, handled the same way.

The CLI installs the handlers before it imports anything heavy, so a signal is never lost to an
import, to model loading or to an export. What the first signal does depends on the phase:

* while the pipeline runs, it asks the pipeline to stop gracefully (the frames in flight are
  finished and every output is finalized); a second one makes every stage leave at once (the
  files written so far are still finalized);
* while finalizing outputs, it is recorded and the outputs are finished first;
* at any other time (start-up, model loading, export) it raises :class:`StopRequested`, which
  unwinds like ``KeyboardInterrupt`` and ends the command with the signal's exit code.

A third signal exits at once. Code that swallowed the exception cannot make the signal be
ignored: :func:`check` raises again at the next checkpoint.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

# signal -> (how the run ended, exit code): 128 + the signal number, the shells' convention.
ENDINGS = {"SIGINT": ("interrupted", 130), "SIGTERM": ("terminated", 143), "SIGHUP": ("hangup", 129)}


class StopRequested(KeyboardInterrupt):
    """A stop signal arrived outside the pipeline. A ``KeyboardInterrupt``, so that ``except
    Exception`` in library code does not swallow it and the loops that already stop cleanly on
    Ctrl+C (``rtseg batch`` keeps its finished frames, for one) do the same for SIGTERM and SIGHUP."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name

    @property
    def exit_code(self) -> int:
        return ENDINGS[self.name][1]


class _State:
    def __init__(self):
        self.name: str | None = None      # the first signal received
        self.count = 0
        self.mode = "raise"                 # raise | pipeline | defer
        self.stop: threading.Event | None = None
        self.abort: threading.Event | None = None
        self.pid = os.getpid()              # the process that installed the handlers


state = _State()


def _say(line: str) -> None:
    # os.write, not print: a handler may run while the main thread is inside a print to stderr,
    # and re-entering a buffered stream raises.
    try:
        os.write(2, f"rtseg: {line}\n".encode())
    except OSError:
        pass


def _handle(signum, _frame) -> None:
    name = signal.Signals(signum).name
    if os.getpid() != state.pid:
        # A process a library forked from rtseg (OpenVINO's telemetry sender, a multiprocessing
        # worker) inherits these handlers, and Ctrl+C reaches the whole process group: the child
        # ends quietly with the signal's code instead of printing a StopRequested traceback.
        os._exit(ENDINGS[name][1])
    state.count += 1
    if state.name is None:
        state.name = name
    if state.count >= 3:
        _say(f"{name} again: exiting now")
        os._exit(ENDINGS[state.name][1])
    if state.mode == "pipeline":
        if state.count == 1:
            _say(f"{name}: finishing the frames in flight and the outputs (send it again to stop at once)")
            state.stop.set()
        else:
            _say(f"{name} again: stopping at once; the outputs written so far are kept")
            state.abort.set()
        return
    if state.mode == "defer":
        _say(f"{name}: finishing the outputs first")
        return
    raise StopRequested(state.name)


def _unraisable(args) -> None:
    # A signal can land while Python runs code whose exceptions it cannot propagate (a weakref
    # callback inside the import system, a __del__): Python would print the StopRequested with a
    # traceback and go on. The signal is recorded in `state`, and check() raises it again at the
    # next checkpoint, so nothing is lost by staying quiet here.
    if isinstance(args.exc_value, StopRequested):
        return
    _previous_unraisable(args)


_previous_unraisable = sys.unraisablehook


def install() -> None:
    """Installs the handlers (main thread only); called first thing by the CLI."""
    state.pid = os.getpid()
    if sys.unraisablehook is not _unraisable:
        global _previous_unraisable
        _previous_unraisable = sys.unraisablehook
        sys.unraisablehook = _unraisable
    for name in ENDINGS:
        sig = getattr(signal, name, None)
        if sig is not None:  # no SIGHUP on Windows
            signal.signal(sig, _handle)


def received() -> str | None:
    """The name of the first stop signal received, if any."""
    return state.name


def check() -> None:
    """A checkpoint: raises :class:`StopRequested` if a signal arrived (even one whose exception
    some library code caught and dropped)."""
    if state.name is not None:
        raise StopRequested(state.name)


@contextlib.contextmanager
def pipeline_phase(stop: threading.Event, abort: threading.Event):
    """While the block runs, signals stop (first) or abort (second) the pipeline instead of raising."""
    if state.name is not None:  # a signal arrived just before: stop before the first frame
        stop.set()
    previous = state.mode, state.stop, state.abort
    state.mode, state.stop, state.abort = "pipeline", stop, abort
    try:
        yield
    finally:
        state.mode, state.stop, state.abort = previous


@contextlib.contextmanager
def deferred():
    """While the block runs (finalizing outputs), signals are recorded but wait for it to end."""
    previous = state.mode
    state.mode = "defer"
    try:
        yield
    finally:
        state.mode = previous
