"""Per-frame, per-stage timing and the run's summary.

``fps`` is frames delivered per second of wall time from the first capture to the last sink.
``model_fps_in_pipeline`` is 1000 / mean inference milliseconds inside the run, where the model
shares the cores with the other stages; what the model does alone is measured separately after
the run (``rtseg.pipeline.costs``) and reported as ``model_fps``.
"""
from __future__ import annotations

import threading
import time

import numpy as np

STAGES = ("capture", "preprocess", "inference", "postprocess", "overlay", "sink")


def percentiles(values: list[float]) -> dict[str, float]:
    """mean, p50, p95, p99 and max of ``values`` (milliseconds), rounded to 0.01."""
    if not values:
        return {"mean": 0.0, "p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
    a = np.asarray(values, np.float64)
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {k: round(float(v), 2) for k, v in
            (("mean", a.mean()), ("p50", p50), ("p95", p95), ("p99", p99), ("max", a.max()))}


class Stats:
    """Collects frame records from the sink thread; the overlay thread reads the rolling figures.

    Attributes:
        drops: stage -> frames of a live source that stage replaced by a newer one before the next
            stage took them. Each key is written by one thread only, so no lock is needed.
    """

    def __init__(self, window: int = 30):
        self.records: list[dict] = []
        self.drops = {"capture": 0, "preprocess": 0}
        self.window = window
        self.t_start: float | None = None
        self.t_end: float | None = None
        self._recent: list[float] = []   # completion times of the last `window` frames
        self._lock = threading.Lock()
        self.rolling_fps = 0.0
        self.rolling_latency = 0.0

    @property
    def dropped(self) -> int:
        return sum(self.drops.values())

    def start(self) -> None:
        self.t_start = time.perf_counter()

    def add(self, index: int, name: str, times: dict[str, float], t_capture: float) -> dict:
        """Records a finished frame; returns its record (milliseconds per stage and ``latency``)."""
        now = time.perf_counter()
        rec = {"index": index, "name": name, **{k: round(times.get(k, 0.0), 3) for k in STAGES},
               "latency": round((now - t_capture) * 1000, 3),
               # capture time since the start of the run: the recording's own clock, in seconds
               "t": round(t_capture - self.t_start, 3) if self.t_start is not None else None}
        with self._lock:
            self.records.append(rec)
            self.t_end = now
            self._recent.append(now)
            del self._recent[:-self.window]
            if len(self._recent) > 1:
                self.rolling_fps = (len(self._recent) - 1) / max(self._recent[-1] - self._recent[0], 1e-9)
            self.rolling_latency = rec["latency"] if len(self.records) == 1 else \
                0.9 * self.rolling_latency + 0.1 * rec["latency"]
        return rec

    def recent(self, n: int) -> tuple[list[dict], float, int]:
        """The last ``n`` records, the rolling FPS and the number of frames, read together (the
        live view's figures come from another thread)."""
        with self._lock:
            return self.records[-n:], self.rolling_fps, len(self.records)

    def hud_text(self) -> str:
        """``"12.3 FPS  latency 85 ms"`` for the overlay (figures of frames already delivered)."""
        if not self.records:
            return "FPS --  latency --"
        return f"{self.rolling_fps:.1f} FPS  latency {self.rolling_latency:.0f} ms"

    def summary(self) -> dict:
        """frames, dropped, elapsed_s, fps (end to end), model_fps_in_pipeline, latency_ms and stages_ms."""
        with self._lock:
            records = list(self.records)
        n = len(records)
        elapsed = (self.t_end - self.t_start) if (n and self.t_start is not None) else 0.0
        infer = percentiles([r["inference"] for r in records])
        return {
            "frames": n,
            "dropped": self.dropped,
            "elapsed_s": round(elapsed, 3),
            "fps": round(n / elapsed, 3) if elapsed > 0 else 0.0,
            "model_fps_in_pipeline": round(1000.0 / infer["mean"], 3) if infer["mean"] > 0 else 0.0,
            "latency_ms": percentiles([r["latency"] for r in records]),
            "stages_ms": {s: percentiles([r[s] for r in records]) for s in STAGES},
        }


def _ending_note(summary: dict) -> str:
    """``"  skipped 1  (interrupted by SIGTERM)"``: what the frame counts alone do not say."""
    note = f"  skipped {summary['skipped_frames']}" if summary.get("skipped_frames") else ""
    if summary.get("truncated"):
        note += f"  truncated: {summary['truncated']['read']} of {summary['truncated']['declared']} frames"
    ending = summary.get("ending") or ("interrupted" if summary.get("interrupted") else "completed")
    if ending == "interrupted":
        signal = summary.get("signal")
        note += "  (interrupted)" if signal in (None, "SIGINT") else f"  (interrupted by {signal})"
    elif ending != "completed":
        note += f"  ({ending.replace('_', ' ')})"
    return note


def format_summary(summary: dict) -> str:
    """A few lines for the terminal at the end of a run."""
    lat = summary["latency_ms"]
    stages = summary["stages_ms"]
    model = summary.get("model_fps")
    if model:
        speed = (f"FPS end-to-end {summary['fps']:.2f}  model-only {model:.2f} (measured alone)  "
                 f"ratio {summary['fps'] / model:.2f}")
    else:
        speed = f"FPS end-to-end {summary['fps']:.2f}  (model-only not measured)"
    lines = [
        f"frames {summary['frames']}  dropped {summary['dropped']}  "
        f"elapsed {summary['elapsed_s']:.1f} s" + _ending_note(summary),
        f"{speed}  latency p50 {lat['p50']:.0f} ms  p99 {lat['p99']:.0f} ms",
        "stage mean ms in the pipeline: " + "  ".join(f"{s} {stages[s]['mean']:.1f}" for s in STAGES),
    ]
    cpu = summary.get("stage_cpu_ms")
    if cpu:
        lines.append("CPU ms per frame, each stage alone: "
                     + "  ".join(f"{s} {'--' if cpu.get(s) is None else f'{cpu[s]:.1f}'}" for s in STAGES))
    flicker = summary.get("flicker")
    if flicker and flicker["pairs"]:
        smooth = summary.get("smooth") or {}
        tc = "--" if flicker["tc"] is None else f"{flicker['tc']:.2f} %"
        lines.append(f"flicker: TC {tc}  changed pixels {flicker['changed']:.3f} %  over {flicker['pairs']} "
                     f"frame pairs  (smoothing {smooth.get('mode', 'off')})")
    return "\n".join(lines)
