"""``rtseg bench``: the FPS / mIoU trade-off of models, backends, precisions and sizes on this
machine, in one run. ``--pipeline`` instead measures what the threaded pipeline buys on one model.

Examples:
    rtseg bench                                   # shipped live models, CPU backends, fp32 + int8
    rtseg bench --models enet_camvid,deeplabv3plus_camvid --backends onnxruntime,openvino \\
        --precisions fp32,int8 --sizes 360x480,720x960 --out bench/
    rtseg bench --device cuda --backends torch,tensorrt --precisions fp32,fp16,int8 --out bench-gpu/
    rtseg bench --models deeplabv3plus_camvid --backends onnxruntime,openvino --precisions int8 --argmax
    rtseg bench --pipeline                        # what `rtseg run` does vs the model alone, sample clip
    rtseg bench --pipeline --model deeplabv3plus_camvid --source clip.mp4 --frames 100 --json b.json
"""
from __future__ import annotations

import argparse

from rtseg.commands import engines_arg, size_arg
from rtseg.progress import log_silent, log_stderr
from rtseg.runtimes import BACKEND_CHOICES, PRECISIONS, RUNTIMES

DEFAULT_ROOT = "../shared/data/camvid"  # where a checkout of this project finds CamVid


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _sizes(text: str) -> list[tuple[int, int]]:
    return [size_arg(t) for t in _names(text)]


def register(sub) -> None:
    p = sub.add_parser("bench", help="FPS/mIoU trade-off sweep (or --pipeline: threads vs model-only)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pipeline", action="store_true",
                   help="end-to-end FPS and latency of `rtseg run` vs the model alone and a naive loop (one model, "
                        "the runtime and precision `rtseg run` uses by default)")
    s = p.add_argument_group("sweep")
    s.add_argument("--models", type=_names, help="comma-separated names or files (default: the shipped live models)")
    s.add_argument("--backends", type=_names, default=list(RUNTIMES),
                   help=f"comma-separated: {', '.join(RUNTIMES)} (default: all; missing ones "
                        "are reported, not fatal)")
    s.add_argument("--precisions", type=_names, default=["fp32", "int8"], help=f"{', '.join(PRECISIONS)} (default fp32,int8)")
    s.add_argument("--sizes", type=_sizes, default=None, help="comma-separated HxW (default: each model's input size)")
    s.add_argument("--data", default="camvid", help="labelled dataset for mIoU: camvid, cityscapes, folder")
    s.add_argument("--root", help=f"its root (default {DEFAULT_ROOT} if present; 'none' skips mIoU)")
    s.add_argument("--split", default="val")
    s.add_argument("--limit", type=int, default=None, help="score the first N images (default: the whole split)")
    s.add_argument("--video", help="clip for end-to-end FPS (default: the sample clip that ships with rtseg; 'none' skips)")
    s.add_argument("--video-frames", type=int, default=60, help="frames of the clip to run (default 60)")
    s.add_argument("--calib", help="INT8 calibration frames, folder or video (sweep default: ROOT/train; "
                                   "--pipeline default: the frames that ship with rtseg)")
    s.add_argument("--calib-frames", type=int, default=32)
    s.add_argument("--repeats", type=int, default=30, help="timed model-only runs (default 30, after 5 warm-up)")
    s.add_argument("--argmax", action="store_true",
                   help="also measure each exported combination with argmax inside its graph (class ids out), "
                        "beside the one that outputs logits: does moving the argmax into the runtime pay?")
    engines_arg(s)
    s.add_argument("--out", help="write results.csv, results.json and pareto.png (needs the 'plot' extra) here")
    o = p.add_argument_group("--pipeline")
    o.add_argument("--model", help="shipped name or model file (default: deeplabv3plus_camvid)")
    o.add_argument("--backend", default="auto", choices=BACKEND_CHOICES,
                   help="runtime, as rtseg run chooses it (default auto: what `rtseg run` uses)")
    o.add_argument("--precision", choices=PRECISIONS,
                   help="as rtseg run (default: int8 on OpenVINO / ONNX Runtime when its gate passes, "
                        "calibrated on the shipped frames or on --calib)")
    o.add_argument("--source", default=None,
                   help="video file (default: the sample clip that ships with rtseg)")
    o.add_argument("--frames", type=int, help="use the first N frames (default: the whole clip)")
    o.add_argument("--size", type=size_arg, help="inference size HxW (default: the model's input size)")
    o.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    o.add_argument("--warmup", type=int, default=5, help="untimed model runs first")
    o.add_argument("--json", metavar="FILE", help="write the results to this JSON file")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.pipeline:
        from rtseg.pipeline.bench import DEFAULT_CLIP, format_benchmark, pipeline_benchmark

        result = pipeline_benchmark(args.model, args.source or DEFAULT_CLIP, args.frames, args.size,
                                    args.threads, args.warmup, args.json, args.quiet, args.device,
                                    runtime=args.backend, precision=args.precision, calib=args.calib,
                                    engines_dir=args.engines)
        print(format_benchmark(result))
        return 0
    from rtseg.tradeoff import default_options, machine_context, mark_pareto, format_table, sweep, write_outputs

    opts = default_options(models=args.models, backends=args.backends, precisions=args.precisions,
                           sizes=args.sizes, data=args.data, root=args.root, split=args.split, limit=args.limit,
                           video=args.video, video_frames=args.video_frames, calib=args.calib,
                           calib_frames=args.calib_frames, repeats=args.repeats, argmax=args.argmax,
                           device=args.device or "cpu",
                           engines_dir=args.engines, default_root=DEFAULT_ROOT, log=log_stderr)
    rows = mark_pareto(sweep(opts, log=log_stderr if not args.quiet else log_silent, progress=not args.quiet))
    print(format_table(rows))
    if args.out:
        written = write_outputs(rows, args.out, machine_context(opts))
        if "plot" not in written:
            log_stderr("pareto.png not written: matplotlib is missing (pip install 'rtseg[plot]')")
        print("wrote " + ", ".join(written.values()))
    # Non-zero only when nothing at all could be measured: a missing runtime is a row, not a failure.
    return 0 if any(r.get("fps") is not None for r in rows) else 1
