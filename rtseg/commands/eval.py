"""``rtseg eval``: per-class IoU table and summary of a model on a labelled dataset."""
from __future__ import annotations

import argparse
import json

from rtseg.commands import floats_arg, names_arg, size_arg


def register(sub) -> None:
    p = sub.add_parser("eval", help="score a model on a labelled dataset (per-class IoU, mIoU, ...)")
    p.add_argument("--model", required=True, help="shipped name or weight file (.safetensors)")
    p.add_argument("--data", default="camvid", help="camvid | cityscapes | folder")
    p.add_argument("--root", required=True, help="dataset root folder")
    p.add_argument("--split", default="val", help="a split, or several joined by '+' (train+val)")
    p.add_argument("--size", type=size_arg, help="inference size HxW (default: the model's input size)")
    p.add_argument("--scales", type=floats_arg, default=[1.0], help="multi-scale TTA, e.g. 0.75,1,1.25")
    p.add_argument("--flip", action="store_true", help="add horizontally flipped inputs (TTA)")
    p.add_argument("--json", help="write the results to this JSON file: mIoU, pixel and mean accuracy, "
                   "FWIoU, Dice, per-class IoU / Dice / recall (fractions in 0..1) and the confusion matrix (pixels)")
    p.add_argument("--limit", type=int, help="only the first N images")
    p.add_argument("--sequences", type=names_arg, metavar="DRIVE[,DRIVE]",
                   help="score only these drives (file-stem prefix), e.g. --split train --sequences 0006R0 "
                        "for a model trained with --holdout 0006R0")
    p.add_argument("--exclude-sequences", type=names_arg, metavar="DRIVE[,DRIVE]", help="leave these drives out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rtseg.evaluate import evaluate_model
    from rtseg.io import atomic_write_text, check_writable

    if args.json:  # fail before the long part if the output cannot be written
        check_writable(args.json)
    report = evaluate_model(args.model, args.data, args.root, args.split, args.size, args.scales, args.flip,
                            args.limit, args.sequences, args.exclude_sequences)
    print(report.table())
    print(report.summary())
    if args.json:
        atomic_write_text(args.json, json.dumps(report.as_json(), indent=2))
    return 0
