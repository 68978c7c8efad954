"""``rtseg models``: the zoo with parameters, GFLOPs and shipped weights."""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict


def register(sub) -> None:
    p = sub.add_parser("models", help="list the model zoo: parameters, GFLOPs, shipped weights")
    p.add_argument("names", nargs="*", help="architectures to show (default: all)")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
