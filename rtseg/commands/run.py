"""``rtseg run --source video.mp4|0|rtsp://...|images/``: live segmentation overlay.

Examples:
    rtseg run                                     # the shipped sample clip, window-free, summary only
    rtseg run --source clip.mp4 --output out.mp4 --save-masks masks/ --json stats.json
    rtseg run --source 0 --show                   # webcam, newest frame only, window
    rtseg run --source "rtsp://cam/stream" --reconnect 5 --output rec.mp4
    rtseg run --source clip.mp4 --smooth flow --json s.json   # steadier masks; TC in the summary
    rtseg run --source 0 --serve 8080             # live view in a browser: http://127.0.0.1:8080/
"""
from __future__ import annotations

import argparse
import os
import sys

from rtseg.commands import engines_arg, size_arg
from rtseg.runtimes import BACKEND_CHOICES, PRECISIONS


def register(sub) -> None:
    from rtseg.pipeline.ending import EXIT_CODES_HELP

    p = sub.add_parser("run", help="segment a video, images, a webcam or a stream (threaded, real time)",
                       description=__doc__, epilog=EXIT_CODES_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default="sample",
                   help="video file, image file, folder or glob of images, webcam index (0), rtsp:// or http(s):// URL; "
                        "default 'sample': the dashcam clip shipped with rtseg")
    p.add_argument("--model", default=None, help="shipped name or model file: .safetensors, .onnx, .xml, .engine (default: deeplabv3plus_camvid)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cpu; cuda for .engine files)")
    p.add_argument("--backend", default="auto", choices=BACKEND_CHOICES,
                   help="runtime; auto: the model's preferred CPU runtime (OpenVINO for DeepLabv3+ and ICNet, "
                        "exported once into the cache, see --engines), torch on CUDA, an exported file's own runtime")
    engines_arg(p)
    p.add_argument("--precision", default=None, choices=PRECISIONS,
                   help="default: int8 on OpenVINO / ONNX Runtime (built once, calibrated on frames that ship "
                        "with rtseg, used only if its accuracy gate passes; fp32 otherwise), fp32 in torch; "
                        "fp32 opts out; fp16: CUDA only. An exported file runs in the precision it was exported in")
    p.add_argument("--calib", metavar="DIR|VIDEO", help="calibrate INT8 on these frames instead, e.g. the source itself")
    p.add_argument("--size", type=size_arg, help="inference size HxW (default: the model's input size)")
    p.add_argument("--max-frames", type=int, help="stop after N frames")
    p.add_argument("--vid-stride", type=int, default=1, help="process every N-th frame of a file")
    p.add_argument("--reconnect", type=int, default=0, help="reopen a dropped stream/camera up to N times (backoff)")
    p.add_argument("--strict", action="store_true",
                   help="stop at the first undecodable image or video frame (default: skip it with a warning)")
    out = p.add_argument_group("outputs")
    out.add_argument("--output", help="overlay video (.mp4 H.264 with imageio-ffmpeg installed; .mov .mkv .avi)")
    out.add_argument("--save-masks", metavar="DIR", help="class-id PNG per frame at the source resolution")
    out.add_argument("--save-overlay", metavar="DIR", help="rendered JPEG per frame")
    out.add_argument("--show", action="store_true",
                     help="open a window (keys: q quit, space pause, m overlay/mask/side, +/- alpha)")
    out.add_argument("--json", metavar="FILE", help="per-frame stage latencies and the summary")
    out.add_argument("--serve", metavar="[HOST:]PORT",
                     help="live view in a browser at http://HOST:PORT/ with figures and controls (mode, alpha, "
                          "pause, snapshot); HOST defaults to 127.0.0.1 (this machine only). 0.0.0.0 serves every "
                          "network interface: anyone who can reach the port sees the camera and can steer the run "
                          "(no authentication; prefer an SSH tunnel)")
    out.add_argument("--snapshot-dir", metavar="DIR", default="snapshots",
                     help="where the page's snapshot button writes frame, overlay and mask (default ./snapshots)")
    look = p.add_argument_group("drawing")
    look.add_argument("--mode", choices=["overlay", "mask", "side"], default="overlay")
    look.add_argument("--alpha", type=float, default=0.5, help="palette weight in overlay mode (0..1)")
    look.add_argument("--ignore-class", metavar="NAME[,NAME]", help="classes left undrawn, e.g. Sky,Road")
    look.add_argument("--no-hud", action="store_true", help="no FPS/latency text")
    look.add_argument("--no-legend", action="store_true", help="no list of the classes present")
    tm = p.add_argument_group("temporal")
    tm.add_argument("--smooth", choices=["off", "ema", "flow"], default="off",
                    help="average class probabilities over frames: flow (motion-compensated by optical flow), "
                         "ema (no flow, static cameras); reset on scene cuts and dropped live frames (default off)")
    tm.add_argument("--smooth-alpha", type=float,
                    help="the new frame's weight, 0 < a <= 1 (default: the README's Flicker table; lower: "
                         "steadier, slower to follow)")
    tm.add_argument("--smooth-hold", type=float, metavar="MARGIN",
                    help="hysteresis: a pixel keeps the class it showed until another class's averaged "
                         "probability leads by MARGIN, 0 <= m < 1 (default: the README's Flicker table)")
    tm.add_argument("--flicker", action="store_true",
                    help="report temporal consistency (TC) and changed pixels in the summary (on with --smooth)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--no-costs", action="store_true",
                   help="skip measuring, after the last frame, the model alone (model-only FPS) and each "
                        "stage's CPU ms per frame (about 2 s)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    p.set_defaults(func=run)


def _given(**options) -> dict:
    """The options set on the command line; the rest keep RunOptions' measured defaults (importing
    them here would load torch for ``--help``)."""
    return {k: v for k, v in options.items() if v is not None}


def run(args: argparse.Namespace) -> int:
    # FFmpeg inside OpenCV logs every damaged packet on its own; rtseg reports skipped frames and
    # truncated files in one line each instead. OPENCV_FFMPEG_LOGLEVEL=16 (error) brings it back.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    from rtseg.assets import resolve_source
    from rtseg.pipeline import DEFAULT_MODEL, PipelineError, RunOptions, format_summary
    from rtseg.pipeline import run as run_pipeline
    from rtseg.pipeline.ending import exit_code

    try:
        summary = run_pipeline(RunOptions(
            source=resolve_source(args.source), model=args.model or DEFAULT_MODEL, device=args.device,
            backend=args.backend, precision=args.precision, calib=args.calib and resolve_source(args.calib),
            engines_dir=args.engines, output=args.output,
            save_masks=args.save_masks, save_overlay=args.save_overlay, show=args.show, json=args.json,
            max_frames=args.max_frames, vid_stride=args.vid_stride, reconnect=args.reconnect,
            alpha=args.alpha, mode=args.mode, ignore_class=args.ignore_class, size=args.size,
            hud=not args.no_hud, legend=not args.no_legend, threads=args.threads, quiet=args.quiet,
            strict=args.strict, smooth=args.smooth,
            **_given(smooth_alpha=args.smooth_alpha, smooth_hold=args.smooth_hold),
            flicker=args.flicker or None, costs=not args.no_costs, serve=args.serve,
            snapshot_dir=args.snapshot_dir))
    except PipelineError as e:
        if e.summary is None:
            raise  # nothing ran: a one-line error, exit 2
        summary = e.summary
        print(f"rtseg run: error: {e}", file=sys.stderr)
    if not args.quiet:
        print(format_summary(summary))
    # Distinct codes per ending (see the epilog); the outputs are finalized in every one of them.
    return exit_code(summary)
