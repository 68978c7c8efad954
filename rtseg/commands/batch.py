"""``rtseg batch --source DIR|VIDEO|GLOB --out DIR``: offline inference for heavy models.

Multi-scale and flip test-time augmentation, sliding-window tiles and a fully-connected CRF,
several frames per model call; writes OUT/masks/<name>.png, OUT/overlays/<name>.jpg and
OUT/summary.json. Frames whose mask exists are skipped, so re-running continues an interrupted job.

Examples:
    rtseg batch --source frames/ --out out/ --scales 0.75,1,1.25 --flip
    rtseg batch --source drive.mp4 --out out/ --tile 512x512 --overlap 128 --no-overlay
    rtseg batch --source "shots/*.jpg" --out out/ --crf --batch-size 8

    # CamVid val, scored: the masks reproduce `rtseg eval` of that model with the same --scales and --flip
    rtseg batch --source ../shared/data/camvid/val --out batch_out \\
        --scales 0.75,1,1.25 --flip --score-root ../shared/data/camvid --score-split val
"""
from __future__ import annotations

import argparse

from rtseg import signals
from rtseg.signals import ENDINGS

from rtseg.commands import floats_arg, size_arg


def register(sub) -> None:
    p = sub.add_parser("batch", help="offline segmentation of folders and videos (TTA, tiles, CRF, resumable)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None,
                   help="shipped name or model file: .safetensors, .onnx, .xml, .engine (default: the shipped batch model "
                        "deeplabv3plus_hires_camvid, or deeplabv3plus_camvid where it is not installed)")
    p.add_argument("--source", required=True, help="folder of images, glob of images (quoted), image or video file")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (masks/, overlays/, summary.json)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cpu; cuda for .engine files)")
    p.add_argument("--batch-size", type=int, default=4, help="frames of one size per model call (default 4)")
    p.add_argument("--max-frames", type=int, help="only the first N frames")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    tta = p.add_argument_group("inference")
    tta.add_argument("--size", type=size_arg,
                     help="inference size HxW at scale 1 (default: the model's input size; with --tile the frame's own size)")
    tta.add_argument("--scales", type=floats_arg, default=[1.0], help="multi-scale TTA, e.g. 0.75,1,1.25")
    tta.add_argument("--flip", action="store_true", help="add horizontally flipped inputs (TTA)")
    tta.add_argument("--tile", type=size_arg, metavar="HxW", help="sliding-window inference with tiles of this size")
    tta.add_argument("--overlap", type=int, metavar="PX", help="pixels shared by neighbouring tiles (default: a third of the tile)")
    tta.add_argument("--crf", action="store_true", help="refine with a fully-connected CRF (DeepLab settings)")
    tta.add_argument("--crf-iters", type=int, default=10, help="mean-field iterations of --crf (default 10)")
    out = p.add_argument_group("outputs")
    out.add_argument("--no-overlay", action="store_true", help="masks only")
    out.add_argument("--overlay-ext", choices=["jpg", "png"], default="jpg", help="overlay format (default jpg)")
    out.add_argument("--score-root", metavar="DIR", help="score the masks against this dataset's labels (mIoU in summary.json)")
    out.add_argument("--score-split", default="val", help="split of --score-root (default val)")
    out.add_argument("--score-data", default="camvid", help="camvid | cityscapes | folder (default camvid)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rtseg.batch import BatchOptions, CRFParams, format_summary, run_batch

    if args.overlap is not None and not args.tile:
        from rtseg.errors import RtsegError

        raise RtsegError("--overlap needs --tile")
    # Without --model, BatchOptions picks the shipped batch model (rtseg.zoo.default_batch_model).
    chosen = {"model": args.model} if args.model else {}
    summary = run_batch(BatchOptions(
        source=args.source, out=args.out, device=args.device,
        batch_size=args.batch_size, size=args.size, scales=tuple(args.scales), flip=args.flip,
        tile=args.tile, overlap=args.overlap, crf=CRFParams(iterations=args.crf_iters) if args.crf else None,
        overlay=not args.no_overlay, overlay_ext=args.overlay_ext, max_frames=args.max_frames,
        threads=args.threads, quiet=args.quiet, score_root=args.score_root, score_split=args.score_split,
        score_data=args.score_data, **chosen))
    if not args.quiet:
        print(format_summary(summary))
    # 128 + the signal's number (130 for Ctrl+C, 143 for SIGTERM): the finished frames are kept.
    return ENDINGS[signals.received() or "SIGINT"][1] if summary["interrupted"] else 0
