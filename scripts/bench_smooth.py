"""Temporal smoothing benchmark: flicker (TC, changed pixels) and end-to-end FPS on the highway
clip, mIoU on CamVid val, and the README's strip of frames.

    python scripts/bench_smooth.py --out results/smooth            # ~10 min on 2 CPU cores

Every setting runs on one backend in one process, round after round, so FPS ratios between
settings share the machine's conditions; the FPS of a setting is its median over the rounds.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import cv2

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def parse_settings(text: str) -> list[tuple[str, float, float]]:
    """``off,flow,flow:0.3:0`` -> [("off", 1.0, 0.0), ("flow", 0.5, 0.15), ("flow", 0.3, 0.0)]: mode,
    alpha and hold margin, each defaulting to ``rtseg run``'s (``off`` smooths nothing)."""
    from rtseg.temporal.smooth import DEFAULT_ALPHA, DEFAULT_HOLD

    out = []
    for item in text.split(","):
        mode, alpha, hold = (item.split(":") + ["", ""])[:3]
        if mode == "off":
            out.append((mode, 1.0, 0.0))
        else:
            out.append((mode, float(alpha) if alpha else DEFAULT_ALPHA, float(hold) if hold else DEFAULT_HOLD))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="deeplabv3plus_camvid")
    p.add_argument("--backend", default="auto", help="runtime as for `rtseg run --backend` (default: auto)")
    p.add_argument("--clip", default=str(DATA / "video" / "highway_960x540_25fps.mp4"))
    p.add_argument("--camvid", default=str(DATA / "camvid"), help="CamVid root; 'none' skips mIoU")
    p.add_argument("--settings", type=parse_settings, default="off,ema,flow",
                   help="mode[:alpha[:hold]] list, run in this order each round (repeat 'off' at the end to see drift)")
    p.add_argument("--rounds", type=int, default=2, help="clip runs per setting (FPS: median)")
    p.add_argument("--strip", default="flow", help="the smoothing setting of the strip's lower rows")
    p.add_argument("--out", required=True, help="folder for results.json and strip.png")
    args = p.parse_args()

    from rtseg.data import labelled_dataset
    from rtseg.resolve import open_for_run
    from rtseg.progress import log_stderr
    from rtseg.temporal.bench import clip_runs, sequence_miou, strip

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    backend = open_for_run(args.model, None, args.backend, log=log_stderr)
    rounds = [clip_runs(backend, args.clip, args.settings, log=log_stderr) for _ in range(args.rounds)]
    clip = []
    for i, row in enumerate(rounds[0]):
        fps = [r[i]["fps"] for r in rounds]
        clip.append(row | {"fps": statistics.median(fps), "fps_rounds": fps})
    base = clip[0]["fps"]
    for row in clip:
        row["fps_ratio"] = round(row["fps"] / base, 3) if base else None
    miou = []
    if args.camvid != "none":
        ds = labelled_dataset("camvid", args.camvid, "val", ignore_index=backend.meta.ignore_index)
        for mode, alpha, hold in dict.fromkeys(args.settings):  # a setting repeated for FPS drift: once
            miou.append(sequence_miou(backend, ds, mode, alpha, hold))
            log_stderr(f"camvid val: {miou[-1]}")
    result = {"model": backend.meta.name, "runtime": backend.runtime, "clip": args.clip, "clip_runs": clip,
              "camvid_val": miou}
    (out / "results.json").write_text(json.dumps(result, indent=1))
    mode, alpha, hold = parse_settings(args.strip)[0]
    img = strip(backend, args.clip, 120, 4, ["off", mode], alpha, hold)
    cv2.imwrite(str(out / "strip.png"), img, [cv2.IMWRITE_PNG_COMPRESSION, 9])

    print(f"{backend.meta.name} ({backend.runtime}), {Path(args.clip).name}, {clip[0]['frames']} frames")
    print("| smoothing | alpha | hold | TC % | changed px % | e2e FPS | FPS ratio | val mIoU seq % | val mIoU single % |")
    print("|---|---|---|---|---|---|---|---|---|")
    by_setting = {(m["mode"], m["alpha"], m["hold"]): m for m in miou}
    for row in clip:
        m = by_setting.get((row["mode"], row["alpha"], row["hold"]))
        seq = f"{100 * m['miou_sequence']:.2f}" if m else "-"
        single = f"{100 * m['miou_single']:.2f}" if m else "-"
        print(f"| {row['mode']} | {row['alpha'] or '-'} | {row['hold'] if row['hold'] is not None else '-'} | {row['tc']:.2f} | {row['changed']:.3f} | "
              f"{row['fps']:.2f} | {row['fps_ratio']:.3f} | {seq} | {single} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
