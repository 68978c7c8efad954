"""``rtseg tune-bias --model M --root DIR --split train --out W.safetensors``: per-class logit
offsets tuned for mIoU on labelled (training) frames, folded into the model's last bias.

Example (how the shipped ENet's offsets were made; see configs/train/enet_camvid_stage4.yaml):
    rtseg tune-bias --model runs/enet_camvid_stage4/best.safetensors --data camvid \\
        --root ../shared/data/camvid --split train --out rtseg/weights/enet_camvid.safetensors
"""
from __future__ import annotations

import argparse

from rtseg.commands import names_arg


def register(sub) -> None:
    p = sub.add_parser("tune-bias", help="tune per-class logit offsets on training frames (rare classes)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="shipped name or weight file (.safetensors)")
    p.add_argument("--data", default="camvid", help="camvid | cityscapes | folder")
    p.add_argument("--root", required=True, help="dataset root folder")
    p.add_argument("--split", default="train", help="tune on this split; never the one you report (default train)")
    p.add_argument("--exclude-sequences", type=names_arg, metavar="DRIVE[,DRIVE]",
                   help="leave these drives out, e.g. the drive a --holdout run is scored on")
    p.add_argument("--every", type=int, default=3, help="use every N-th image (default 3)")
    p.add_argument("--out", required=True, help="weight file to write (.safetensors)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rtseg.class_bias import tune_bias_command

    tune_bias_command(args.model, args.data, args.root, args.split, args.out, args.every,
                      exclude_sequences=args.exclude_sequences)
    return 0
