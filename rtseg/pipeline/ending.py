"""How a run ended, the exit code that says so, and the error that carries the summary.

Every ending finalizes what was recorded: the video is closed into a playable file, the masks stay
and the JSON is written with ``summary.ending``. Only a failure of an output itself (the encoder
crashed, the disk is full) removes that output, and the error says so.
"""
from __future__ import annotations

from rtseg.signals import ENDINGS

COMPLETED, INTERRUPTED, SOURCE_LOST, ERROR = "completed", "interrupted", "source_lost", "error"

EXIT_COMPLETED = 0
EXIT_ERROR = 1          # a stage failed mid-run; outputs up to that frame are kept
EXIT_BAD_INPUT = 2      # refused before the first frame: bad source, model, option or output path
EXIT_SOURCE_LOST = 3    # a stream or camera went away (after --reconnect attempts); outputs kept

EXIT_CODES_HELP = f"""\
exit codes:
  {EXIT_COMPLETED}    completed: the input ended (or q was pressed in the window)
  {EXIT_ERROR}    error: a stage failed mid-run; outputs up to that frame are kept
  {EXIT_BAD_INPUT}    bad input: source, model, option or output path refused before the first frame
  {EXIT_SOURCE_LOST}    source lost: the stream or camera went away (after --reconnect N attempts)
  {ENDINGS['SIGHUP'][1]}  hangup (SIGHUP: the terminal closed)
  {ENDINGS['SIGINT'][1]}  interrupted (SIGINT, Ctrl+C)
  {ENDINGS['SIGTERM'][1]}  terminated (SIGTERM: kill, container stop)
Every ending but a bad input finalizes the outputs: a playable video, the masks, and the JSON
whose summary.ending is completed, interrupted, source_lost or error. A first signal finishes
the frames in flight; a second stops at once (outputs still finalized); a third exits at once."""


def exit_code(summary: dict) -> int:
    """The exit code of a finished run from its summary."""
    ending = summary.get("ending", COMPLETED)
    if ending == INTERRUPTED:
        return ENDINGS.get(summary.get("signal") or "SIGINT", ENDINGS["SIGINT"])[1]
    return {COMPLETED: EXIT_COMPLETED, SOURCE_LOST: EXIT_SOURCE_LOST}.get(ending, EXIT_ERROR)
