"""CPU time stolen by the hypervisor during a measurement (Linux ``/proc/stat``).

On a shared virtual machine the host can run other guests on "our" cores; the guest sees that
time as *steal*. Benchmarks taken while steal is high are slower and, for the threaded pipeline,
less stable than the same code on a quiet host (on the development VM, runs of ``rtseg bench
--pipeline`` minutes apart saw 0.3 to 6 % steal and end-to-end / model-only ratios of 0.73 to
1.01), so benchmark reports carry it: a figure taken under heavy steal is not the code's.
"""
from __future__ import annotations

from pathlib import Path

PROC_STAT = Path("/proc/stat")


def parse_cpu_line(text: str) -> tuple[int, int] | None:
    """``(steal, total)`` jiffies from the aggregate ``cpu`` line of /proc/stat text.

    Fields: user nice system idle iowait irq softirq steal [guest guest_nice]; guest time is
    already counted in user/nice, so it is left out of the total. None without a steal field.
    """
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            values = [int(v) for v in parts[1:]]
            if len(values) < 8:
                return None
            return values[7], sum(values[:8])
    return None


def read_counters(path: Path = PROC_STAT) -> tuple[int, int] | None:
    """Current ``(steal, total)``, or None where /proc/stat does not exist (macOS, Windows)."""
    try:
        return parse_cpu_line(path.read_text())
    except OSError:
        return None


class StealMeter:
    """Share of CPU time stolen per lap: from construction to the first :meth:`lap`, then from
    each lap to the next."""

    def __init__(self, path: Path = PROC_STAT):
        self.path = path
        self.start = read_counters(path)

    def lap(self) -> float | None:
        """Stolen / all CPU time since the last lap, in 0..1 (None where it cannot be read);
        starts the next lap."""
        end = read_counters(self.path)
        start, self.start = self.start, end
        if start is None or end is None or end[1] <= start[1]:
            return None
        return round((end[0] - start[0]) / (end[1] - start[1]), 4)


__all__ = ["StealMeter", "parse_cpu_line", "read_counters"]
