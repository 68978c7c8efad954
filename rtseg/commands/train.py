"""``rtseg train --config configs/train/<name>.yaml``: resumable training."""
from __future__ import annotations

import argparse
import json
from dataclasses import replace


def register(sub) -> None:
    p = sub.add_parser("train", help="train a model preset (resumes from its last checkpoint)")
    p.add_argument("--config", required=True, help="training YAML, e.g. configs/train/enet_camvid.yaml")
    p.add_argument("--epochs", type=int, help="override the number of epochs")
    p.add_argument("--root", help="override the dataset root")
    p.add_argument("--out", help="override the output folder (default runs/)")
    p.add_argument("--holdout", metavar="DRIVE",
                   help="leave this drive (file-stem prefix, e.g. CamVid's 0006R0) out of training and pick "
                        "checkpoints on it; val is scored beside it. The run goes to <name>_holdout-<DRIVE>")
    p.add_argument("--train-split", metavar="SPLIT",
                   help="override the training split, e.g. train+val for final weights on every labelled frame; "
                        "the run goes to <name>_<SPLIT> (+ written as -)")
    p.add_argument("--init-from", metavar="FILE",
                   help="override the config's init_from weights (e.g. a later stage of a held-out run "
                        "starting from that run's earlier stage)")
    p.add_argument("--threads", type=int, metavar="N", help="override the torch intra-op thread count")
    p.add_argument("--amp", choices=["bf16", "fp32"],
                   help="override the config's precision: bf16 autocast (about 2x faster steps on CPUs with "
                        "AVX512-BF16 or AMX) or fp32")
    p.add_argument("--grad-clip", type=float, metavar="NORM",
                   help="override the config's gradient-norm clip (bf16 runs need one: a single overflowing "
                        "step can turn the weights to NaN)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rtseg.train import fit, load_train_config

    cfg = load_train_config(args.config, epochs=args.epochs, root=args.root, out=args.out,
                            init_from=args.init_from, threads=args.threads, grad_clip=args.grad_clip)
    if args.amp:
        # Not one of the overrides above: those skip None, and None is how a config says fp32.
        cfg = replace(cfg, amp=None if args.amp == "fp32" else args.amp)
    if args.train_split and args.train_split != cfg.train_split:
        # Its own run folder for the same reason as --holdout below.
        cfg = replace(cfg, train_split=args.train_split, name=f"{cfg.name}_{args.train_split.replace('+', '-')}")
    if args.holdout:
        # Its own run folder: resuming a full-data run's last.pt under the protocol would mix the two.
        cfg = replace(cfg, holdout=args.holdout, name=f"{cfg.name}_holdout-{args.holdout}")
    # Notices and epoch lines on stdout beside the result, so `rtseg train ... > log` keeps the whole run.
    print(json.dumps(fit(cfg, log=lambda line: print(line, flush=True))))
    return 0
