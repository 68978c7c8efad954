"""The ``rtseg`` command. Each subcommand lives in ``rtseg/commands/<name>.py`` and exposes
``register(subparsers)``; its handler parses arguments and calls one library function."""
from __future__ import annotations

import argparse
import importlib
import sys

from rtseg import __version__
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
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except RtsegError as e:
        print(f"rtseg {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rtseg {args.command}: interrupted", file=sys.stderr)
        return 130
