"""Sweep rows out: a terminal table, CSV, JSON and the Pareto plot of mIoU against FPS.

The Pareto front is the set of measured combinations that no other one beats on both axes
(faster *and* more accurate): the only ones worth picking. Speed on the x axis is the model-only
FPS, the figure a backend and precision change; the end-to-end FPS is in the table and files.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from rtseg.io import atomic_output, atomic_write_text, write_json

COLUMNS = ["model", "backend", "precision", "argmax", "size", "device", "status", "miou", "mean_ms", "p50_ms", "p99_ms",
           "fps", "e2e_fps", "e2e_p50_ms", "e2e_p99_ms", "tc", "changed", "params", "gflops", "artifact_mb", "int8_gate_drop",
           "eval_images", "e2e_frames", "pareto", "artifact", "reason"]


def _measured(row: dict) -> bool:
    return row.get("fps") is not None and row.get("miou") is not None


def pareto_front(rows: list[dict], speed: str = "fps") -> list[int]:
    """Indices of the rows on the front of (``speed``, mIoU), slowest first.

    Only rows with both figures count; a row is dominated when another is at least as good on
    both axes and better on one.
    """
    pts = [(i, r[speed], r["miou"]) for i, r in enumerate(rows) if r.get(speed) is not None
           and r.get("miou") is not None]
    front = [i for i, f, m in pts
             if not any((f2 >= f and m2 >= m) and (f2 > f or m2 > m) for _, f2, m2 in pts)]
    return sorted(front, key=lambda i: rows[i][speed])


def mark_pareto(rows: list[dict]) -> list[dict]:
    front = set(pareto_front(rows))
    for i, r in enumerate(rows):
        r["pareto"] = i in front if _measured(r) else None
    return rows


def _cell(v, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "*" if v else ""
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:.{digits}f}"
    return str(v)


def format_table(rows: list[dict]) -> str:
    """Markdown table (readable on a terminal too); ``*`` marks the Pareto front."""
    head = ["model", "backend", "prec", "size", "mIoU %", "ms mean", "p50", "p99", "FPS", "e2e FPS",
            "TC %", "changed %", "GFLOPs", "MB", "front", "status"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 4 + "---:|" * 10 + "---|---|"]
    for r in rows:
        miou = None if r.get("miou") is None else 100 * r["miou"]
        status = r["status"] if r["status"] in ("ok",) else f"{r['status']}: {r.get('reason', '')}"
        backend = r["backend"] + (" +argmax" if r.get("argmax") else "")
        cells = [r["model"], backend, r["precision"], r["size"], _cell(miou), _cell(r.get("mean_ms")),
                 _cell(r.get("p50_ms")), _cell(r.get("p99_ms")), _cell(r.get("fps")), _cell(r.get("e2e_fps")),
                 _cell(r.get("tc")), _cell(r.get("changed"), 2), _cell(r.get("gflops")), _cell(r.get("artifact_mb")), _cell(r.get("pareto")), status]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in COLUMNS})
    return buf.getvalue()


def plot_pareto(rows: list[dict], path: Path, title: str) -> bool:
    """Writes the mIoU-vs-FPS scatter with the front drawn; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: never needs a display
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    pts = [r for r in rows if _measured(r)]
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    markers = {"torch": "o", "onnxruntime": "s", "openvino": "D", "tensorrt": "^"}
    models = sorted({r["model"] for r in pts})
    colors = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(models)}
    for r in pts:
        ax.scatter(r["fps"], 100 * r["miou"], marker=markers.get(r["backend"], "o"), color=colors[r["model"]],
                   s=55, edgecolors="black" if r.get("pareto") else "none", linewidths=1.2, zorder=3)
        ax.annotate(f"{r['backend']}:{r['precision']} {r['size']}", (r["fps"], 100 * r["miou"]),
                    textcoords="offset points", xytext=(5, 4), fontsize=7)
    front = [pts[i] for i in pareto_front(pts)]
    if front:
        ax.step([r["fps"] for r in front], [100 * r["miou"] for r in front], where="post", color="black",
                linestyle="--", linewidth=1, label="Pareto front", zorder=2)
    for m in models:
        ax.scatter([], [], color=colors[m], label=m)
    for b, mk in markers.items():
        if any(r["backend"] == b for r in pts):
            ax.scatter([], [], marker=mk, color="grey", label=b)
    ax.set_xlabel("model-only FPS (one frame, after warm-up)")
    ax.set_ylabel("mIoU %")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)
    return True


def write_outputs(rows: list[dict], out: str | Path, context: dict) -> dict[str, str]:
    """results.csv, results.json (rows + how they were measured) and pareto.png in ``out``."""
    out = Path(out)
    atomic_write_text(out / "results.csv", to_csv(rows))
    write_json(out / "results.json", {"context": context, "rows": rows})
    written = {"csv": str(out / "results.csv"), "json": str(out / "results.json")}
    title = f"{context.get('machine', '')}  {context.get('data', '')}".strip()
    if plot_pareto(rows, out / "pareto.png", title):
        written["plot"] = str(out / "pareto.png")
    return written


def load_rows(path: str | Path) -> list[dict]:
    return json.loads(Path(path).read_text())["rows"]
