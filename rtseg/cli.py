"""The ``rtseg`` command. Each subcommand lives in ``rtseg/commands/<name>.py`` and exposes
``register(subparsers)``; its handler parses arguments and calls one library function."""
from __future__ import annotations

import argparse
import importlib
import sys
import threading

from rtseg import __version__, signals
from rtseg.errors import RtsegError

# Order is the order of `rtseg --help`.
COMMANDS = ["models", "train", "tune_bias", "eval", "export", "run", "batch", "bench"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rtseg", description="Real-time video semantic segmentation (Cityscapes style).")
    parser.add_argument("--version", action="version", version=f"rtseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"rtseg.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    if threading.current_thread() is threading.main_thread():
        # First, before the imports below and any model loading: a signal is never lost.
        signals.install()
    # The subcommand's name for messages, known before the parser is built (a signal may come first).
    name = next((a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")), None)
    command = f"rtseg {name}" if name in COMMANDS or name == "tune-bias" else "rtseg"
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 0
        return int(args.func(args) or 0)
    except RtsegError as e:
        print(f"{command}: error: {e}", file=sys.stderr)
        return 2
    except signals.StopRequested as e:
        # `run` only lets this escape before its pipeline starts: from then on signals stop the
        # pipeline and the outputs are finalized instead.
        where = " before the first frame; no output was written" if name == "run" else ""
        print(f"{command}: stopped by {e.name}{where}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
