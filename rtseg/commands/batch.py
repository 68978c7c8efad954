"""``rtseg batch --source DIR|VIDEO|GLOB|LIST.txt [--source ...] --out DIR [--ray [ADDRESS]]``:
offline inference for heavy models, on this machine or a Ray cluster.

Multi-scale and flip test-time augmentation, sliding-window tiles and a fully-connected CRF,
several frames per model call; writes OUT/masks/<name>.png, OUT/overlays/<name>.jpg and
OUT/summary.json (with several sources, one subfolder per source). Frames whose mask exists are
skipped, so re-running continues an interrupted job. An unreadable input or frame is reported and
skipped; the job goes on.

Examples:
    rtseg batch --source frames/ --out out/ --scales 0.75,1,1.25 --flip
    rtseg batch --source drive.mp4 --out out/ --tile 512x512 --overlap 128 --no-overlay
    rtseg batch --source "shots/*.jpg" --out out/ --crf --batch-size 8

    # two videos and a folder on a local Ray instance, two model replicas; or join a cluster
    rtseg batch --source a.mp4 --source b.mp4 --source frames/ --out out/ --ray --workers 2
    rtseg batch --source inputs.txt --out /shared/out --ray auto --workers 8 --num-gpus 1

    # the exported OpenVINO INT8 model (built once, used only if its accuracy gate passes)
    rtseg batch --source drive.mp4 --out out/ --backend openvino --precision int8 --calib drive.mp4

    # CamVid val, scored: the masks reproduce `rtseg eval` of that model with the same --scales and --flip
    rtseg batch --source ../shared/data/camvid/val --out batch_out \\
        --scales 0.75,1,1.25 --flip --score-root ../shared/data/camvid --score-split val
"""
from __future__ import annotations

import argparse

from rtseg import signals
from rtseg.signals import ENDINGS

from rtseg.commands import engines_arg, floats_arg, size_arg
from rtseg.runtimes import BACKEND_CHOICES, PRECISIONS


EXIT_CODES = """exit codes:
  0    every frame written (or already there)
  1    finished, but an input, a frame or a chunk failed (reported, listed in summary.json)
  2    bad input, refused before the first frame: source, model, option, output, Ray address
  130  interrupted (143: SIGTERM, 129: SIGHUP); the finished frames are kept, re-run to continue"""


def register(sub) -> None:
    p = sub.add_parser("batch", help="offline segmentation of folders and videos (TTA, tiles, CRF, resumable, Ray)",
                       description=__doc__, epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None,
                   help="shipped name or model file: .safetensors, .onnx, .xml, .engine (default: the shipped batch model "
                        "deeplabv3plus_hires_camvid, or deeplabv3plus_camvid where it is not installed)")
    p.add_argument("--source", required=True, action="append",
                   help="folder of images, glob of images (quoted), image or video file, or a .txt file listing "
                        "them one per line; repeat for several inputs")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (masks/, overlays/, summary.json)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cpu; cuda for .engine files)")
    p.add_argument("--batch-size", type=int, default=4, help="frames of one size per model call (default 4)")
    p.add_argument("--max-frames", type=int, help="only the first N frames")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice; with --ray: --num-cpus)")
    p.add_argument("--backend", choices=BACKEND_CHOICES,
                   help="runtime, chosen and exported as by rtseg run (default: the model as given: torch for a "
                        "torch model, an exported file's own runtime)")
    engines_arg(p)
    p.add_argument("--precision", choices=PRECISIONS,
                   help="int8: exported with the accuracy gate (on --calib, else frames that ship with rtseg)")
    p.add_argument("--calib", metavar="DIR|VIDEO", help="calibration frames for --precision int8")
    p.add_argument("--chunk-frames", type=int, default=16,
                   help="frames per unit of work: a video is cut into ranges of this many frames (default 16)")
    ray = p.add_argument_group("ray (pip install 'rtseg[ray]')")
    ray.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                     help="spread the chunks over Ray workers: alone, a local Ray instance; 'auto' or "
                          "ray://host:port joins a cluster (OUT must then be a path every node sees)")
    ray.add_argument("--workers", type=int, default=2, help="model replicas (Ray actors) (default 2)")
    ray.add_argument("--num-cpus", type=float, default=1.0, help="CPUs each worker reserves (default 1)")
    ray.add_argument("--num-gpus", type=float, default=0.0, help="GPUs each worker reserves (default 0; 1 runs it on CUDA)")
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
        score_data=args.score_data, backend=args.backend, precision=args.precision, calib=args.calib,
        engines_dir=args.engines, chunk_frames=args.chunk_frames, ray=args.ray, workers=args.workers,
        num_cpus=args.num_cpus, num_gpus=args.num_gpus, **chosen))
    if not args.quiet:
        print(format_summary(summary))
    # 128 + the signal's number (130 for Ctrl+C, 143 for SIGTERM): the finished frames are kept.
    if summary["interrupted"]:
        return ENDINGS[signals.received() or "SIGINT"][1]
    # 1: the job finished, but an input, a frame or a chunk failed (listed in summary.json).
    return 1 if summary["failed_inputs"] or summary["frames_failed"] or summary["errors"] else 0
