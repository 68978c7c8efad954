"""``rtseg train --config configs/train/<name>.yaml``: resumable training."""
from __future__ import annotations

import argparse
import json


def register(sub) -> None:
    p = sub.add_parser("train", help="train a model preset (resumes from its last checkpoint)")
    p.add_argument("--config", required=True, help="training YAML, e.g. configs/train/enet_camvid.yaml")
    p.add_argument("--epochs", type=int, help="override the number of epochs")
    p.add_argument("--root", help="override the dataset root")
    p.add_argument("--out", help="override the output folder (default runs/)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rtseg.train import fit, load_train_config

    cfg = load_train_config(args.config, epochs=args.epochs, root=args.root, out=args.out)
    print(json.dumps(fit(cfg)))
    return 0
