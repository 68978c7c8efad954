"""``rtseg bench``: speed measurements. Each mode is one flag of a required, exclusive group, so
new modes (a models x backends x precisions sweep) add a flag and a handler, not a new command.

Example:
    rtseg bench --pipeline --model deeplabv3plus_camvid --source clip.mp4 --frames 100 --json b.json
"""
from __future__ import annotations

import argparse

from rtseg.commands import size_arg


def register(sub) -> None:
    p = sub.add_parser("bench", help="measure speed (--pipeline: threaded pipeline vs model-only vs naive loop)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--pipeline", action="store_true",
                      help="end-to-end FPS and latency of `rtseg run` vs model-only and a naive loop")
    p.add_argument("--model", help="shipped name or model file (default: deeplabv3plus_camvid)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cpu; cuda for .engine files)")
    p.add_argument("--source", default=None,
                   help="video file (default: ../shared/data/video/highway_960x540_25fps.mp4)")
    p.add_argument("--frames", type=int, help="use the first N frames (default: the whole clip)")
    p.add_argument("--size", type=size_arg, help="inference size HxW (default: the model's input size)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--warmup", type=int, default=5, help="untimed model runs first")
    p.add_argument("--json", metavar="FILE", help="write the results to this JSON file")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.pipeline:
        from rtseg.pipeline.bench import DEFAULT_CLIP, format_benchmark, pipeline_benchmark

        result = pipeline_benchmark(args.model, args.source or DEFAULT_CLIP, args.frames, args.size,
                                    args.threads, args.warmup, args.json, args.quiet, args.device)
        print(format_benchmark(result))
    return 0
