"""One shipped model's whole training recipe, stage after stage, under the held-out-drive protocol
or on every labelled frame, then scored; resumable (run the same command again).

    python scripts/train_protocol.py deeplabv3plus_camvid --holdout 0006R0
    python scripts/train_protocol.py deeplabv3plus_camvid --train-split train+val

Each stage is ``rtseg train --config configs/train/<stage>.yaml`` with the same ``--holdout`` or
``--train-split`` and ``--init-from`` the previous stage's ``best.safetensors`` of the same
protocol (a held-out chain never starts from weights that saw the drive). A finished stage returns
at once when run again. The last stage's weights are scored with ``rtseg eval`` on the held-out
drive (if any) and on val, and the figures written to ``<out>/<model>_<protocol>.json``. The class
offsets the shipped weights carry (``rtseg tune-bias``) are a separate step after this.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Shipped model -> its training stages (configs/train/<stage>.yaml), each starting from the last.
RECIPES = {
    "deeplabv3plus_camvid": ["deeplabv3plus_camvid", "deeplabv3plus_camvid_stage2", "deeplabv3plus_camvid_stage3"],
    "icnet_camvid": ["icnet_camvid", "icnet_camvid_stage2"],
    "enet_camvid": ["enet_camvid", "enet_camvid_stage2", "enet_camvid_stage3", "enet_camvid_stage4"],
    "deeplabv3plus_hires_camvid": ["deeplabv3plus_camvid", "deeplabv3plus_camvid_stage2",
                                   "deeplabv3plus_camvid_stage3", "deeplabv3plus_hires_camvid"],
    "deeplabv3plus_lite2_camvid": ["deeplabv3plus_lite2_camvid"],
}


def rtseg(*args: str) -> None:
    cmd = [sys.executable, "-m", "rtseg", *args]
    print("+ rtseg " + " ".join(args), flush=True)
    if subprocess.run(cmd, cwd=REPO).returncode:
        sys.exit(f"failed: rtseg {' '.join(args)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", choices=sorted(RECIPES))
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--holdout", metavar="DRIVE", help="leave this drive out (e.g. 0006R0) and score on it")
    mode.add_argument("--train-split", metavar="SPLIT", help="train on this split, e.g. train+val")
    ap.add_argument("--out", default="runs", help="run folders go here (default runs/)")
    ap.add_argument("--root", default="../shared/data/camvid", help="CamVid (default ../shared/data/camvid)")
    ap.add_argument("--epochs", help="override every stage's epochs (a quick check of the chain)")
    ap.add_argument("--threads", help="torch intra-op threads")
    ap.add_argument("--amp", choices=["bf16", "fp32"], help="every stage's precision (default: each config's own)")
    ap.add_argument("--grad-clip", help="every stage's gradient-norm clip (default: each config's own)")
    args = ap.parse_args()

    suffix = f"_holdout-{args.holdout}" if args.holdout else f"_{args.train_split.replace('+', '-')}"
    common = ["--out", args.out, "--root", args.root]
    common += ["--holdout", args.holdout] if args.holdout else ["--train-split", args.train_split]
    common += ["--epochs", args.epochs] if args.epochs else []
    common += ["--threads", args.threads] if args.threads else []
    common += ["--amp", args.amp] if args.amp else []
    common += ["--grad-clip", args.grad_clip] if args.grad_clip else []
    out = Path(args.out) if Path(args.out).is_absolute() else REPO / args.out
    previous = None
    for stage in RECIPES[args.model]:
        init = ["--init-from", str(previous)] if previous else []
        rtseg("train", "--config", f"configs/train/{stage}.yaml", *common, *init)
        previous = out / f"{stage}{suffix}" / "best.safetensors"

    scores = {}
    sets = ([("heldout", ["--split", "train", "--sequences", args.holdout])] if args.holdout else []) + \
        [("val", ["--split", "val"])]
    for name, split in sets:
        report = out / f"{args.model}{suffix}_{name}.json"
        rtseg("eval", "--model", str(previous), "--data", "camvid", "--root", args.root, *split, "--json", str(report))
        scores[name] = json.loads(report.read_text())
    summary = {"model": args.model, "stages": RECIPES[args.model], "weights": str(previous),
               "holdout": args.holdout, "train_split": args.train_split or "train",
               **{f"{k}_miou": v["miou"] for k, v in scores.items()}}
    (out / f"{args.model}{suffix}.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
