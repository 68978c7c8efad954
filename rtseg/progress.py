"""The one place where library code reports progress (a bar on a terminal, periodic lines otherwise)."""
from __future__ import annotations

import sys
import time
from typing import TextIO


def log_stderr(line: str) -> None:
    """Status line for a human: stderr, so that stdout stays the command's result."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def log_silent(_: str) -> None:
    """A ``log`` callback that drops the line (``--quiet``, library use)."""


def _fmt_time(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """A progress bar with rate and ETA: ``[#####.....] 120/221  9.8 it/s  ETA 00:10  loss 0.31``.

    On a terminal it redraws one line; elsewhere (CI logs, files) it prints a line every
    ``interval`` seconds so logs stay readable. ``total=None`` gives a status line without ETA.
    """

    def __init__(self, total: int | None, desc: str = "", unit: str = "it", stream: TextIO | None = None,
                 interval: float = 10.0, enabled: bool = True):
        self.total, self.desc, self.unit = total, desc, unit
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.interval = 0.1 if self.tty else interval
        self.enabled = enabled
        self.n = 0
        self.start = self._last = time.perf_counter()
        self.fields: dict[str, str] = {}

    def update(self, n: int = 1, **fields) -> None:
        self.n += n
        self.fields.update({k: (f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in fields.items()})
        now = time.perf_counter()
        if now - self._last >= self.interval:
            self._last = now
            self._draw(final=False)

    def rate(self) -> float:
        return self.n / max(time.perf_counter() - self.start, 1e-9)

    def _draw(self, final: bool) -> None:
        if not self.enabled:
            return
        rate = self.rate()
        parts = [self.desc] if self.desc else []
        if self.total:
            frac = min(self.n / self.total, 1.0)
            parts.append(f"[{'#' * int(20 * frac):<20}] {self.n}/{self.total}")
            eta = (self.total - self.n) / rate if rate > 0 else 0
            parts.append(f"{rate:.3g} {self.unit}/s")
            parts.append(f"{'elapsed' if final else 'ETA'} {_fmt_time(time.perf_counter() - self.start if final else eta)}")
        else:
            parts.append(f"{self.n} {self.unit}  {rate:.3g} {self.unit}/s")
        parts += [f"{k} {v}" for k, v in self.fields.items()]
        line = "  ".join(parts)
        if self.tty:
            self.stream.write("\r\033[K" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        self._draw(final=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def notice(message: str, stream: TextIO | None = None) -> None:
    """One line for the user that is not progress: a fallback taken, an option adjusted."""
    stream = stream or sys.stderr
    stream.write(f"rtseg: {message}\n")
    stream.flush()
