"""The ``rtseg`` command. Each handler parses its arguments and calls one library function."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from rtseg import __version__
from rtseg.errors import RtsegError


def _cmd_models(args: argparse.Namespace) -> int:
    from rtseg.models import available, check_name
    from rtseg.models.info import model_info
    from rtseg.zoo import shipped_by_arch

    names = args.names or available()
    for name in names:
        check_name(name, available(), "model")
    shipped = shipped_by_arch()
    infos = [model_info(n, weights=shipped.get(n, [])) for n in names]
    if args.json:
        print(json.dumps([asdict(i) for i in infos], indent=2))
        return 0
    print(f"{'name':<15}{'params (M)':>11}{'GFLOPs 360x480':>16}{'GFLOPs 1024x2048':>18}  weights")
    for i in infos:
        print(f"{i.name:<15}{i.params / 1e6:>11.2f}{i.gflops_360x480:>16.1f}{i.gflops_1024x2048:>18.1f}"
              f"  {', '.join(i.weights) or '-'}")
    print("GFLOPs: torch.utils.flop_counter, 1 multiply-add = 2 FLOPs, batch 1, 19 classes.")
    return 0


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HxW, e.g. 360x480, got '{text}'") from None
    if h < 8 or w < 8:
        raise argparse.ArgumentTypeError(f"size must be at least 8x8, got '{text}'")
    return h, w


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got '{text}'") from None


def _cmd_train(args: argparse.Namespace) -> int:
    from rtseg.train import fit, load_train_config

    cfg = load_train_config(args.config, epochs=args.epochs, root=args.root, out=args.out)
    result = fit(cfg)
    print(json.dumps(result))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from rtseg.evaluate import eval_command

    eval_command(args.model, args.data, args.root, args.split, args.size, args.scales, args.flip,
                 args.json, args.limit)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rtseg", description="Real-time video semantic segmentation (Cityscapes style).")
    parser.add_argument("--version", action="version", version=f"rtseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("models", help="list the model zoo: parameters, GFLOPs, shipped weights")
    p.add_argument("names", nargs="*", help="architectures to show (default: all)")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("train", help="train a model preset (resumes from its last checkpoint)")
    p.add_argument("--config", required=True, help="training YAML, e.g. configs/train/enet_camvid.yaml")
    p.add_argument("--epochs", type=int, help="override the number of epochs")
    p.add_argument("--root", help="override the dataset root")
    p.add_argument("--out", help="override the output folder (default runs/)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="score a model on a labelled dataset (per-class IoU, mIoU, ...)")
    p.add_argument("--model", required=True, help="shipped name or weight file (.safetensors)")
    p.add_argument("--data", default="camvid", help="camvid | cityscapes | folder")
    p.add_argument("--root", required=True, help="dataset root folder")
    p.add_argument("--split", default="val")
    p.add_argument("--size", type=_size, help="inference size HxW (default: the model's input size)")
    p.add_argument("--scales", type=_floats, default=[1.0], help="multi-scale TTA, e.g. 0.75,1,1.25")
    p.add_argument("--flip", action="store_true", help="add horizontally flipped inputs (TTA)")
    p.add_argument("--json", help="write the results to this JSON file")
    p.add_argument("--limit", type=int, help="only the first N images")
    p.set_defaults(func=_cmd_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except RtsegError as e:
        print(f"rtseg {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rtseg {args.command}: interrupted", file=sys.stderr)
        return 130
