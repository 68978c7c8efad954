"""One module per ``rtseg`` subcommand; argument types shared by several live here."""
from __future__ import annotations

import argparse

from rtseg.runtimes import CACHE_FOLDER


def size_arg(text: str) -> tuple[int, int]:
    """``HxW`` -> (H, W)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HxW, e.g. 360x480, got '{text}'") from None
    if h < 8 or w < 8:
        raise argparse.ArgumentTypeError(f"size must be at least 8x8, got '{text}'")
    return h, w


def names_arg(text: str) -> list[str]:
    """``0001TP,0006R0`` -> ['0001TP', '0006R0']."""
    names = [v.strip() for v in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got '{text}'")
    return names


def floats_arg(text: str) -> list[float]:
    """``0.75,1,1.25`` -> [0.75, 1.0, 1.25]."""
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got '{text}'") from None


def engines_arg(parser: argparse.ArgumentParser, flag: str = "--engines", dest: str = "engines") -> None:
    """``--engines DIR``: the export cache of a command that exports models."""
    parser.add_argument(flag, dest=dest, metavar="DIR", default=None,
                        help=f"export cache folder (default: $RTSEG_CACHE, else ~/.cache/rtseg/{CACHE_FOLDER} "
                             "or the platform's user cache)")
