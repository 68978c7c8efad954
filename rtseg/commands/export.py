"""``rtseg export``: ONNX / OpenVINO / TensorRT artifacts in the export cache
(``--engines``, default ``$RTSEG_CACHE`` or ``~/.cache/rtseg/engines``); the last stdout line is the path."""
from __future__ import annotations

import argparse

from rtseg.commands import engines_arg, size_arg
from rtseg.progress import log_stderr
from rtseg.runtimes import FORMATS, PRECISIONS


def register(sub) -> None:
    p = sub.add_parser("export", help="export a model to ONNX, OpenVINO or a TensorRT engine (FP32/FP16/INT8)")
    p.add_argument("--model", required=True, help="shipped name or weight file (.safetensors)")
    p.add_argument("--format", default="onnx", choices=list(FORMATS))
    p.add_argument("--precision", default="fp32", choices=PRECISIONS)
    p.add_argument("--size", type=size_arg, help="input size HxW (default: the model's input size)")
    p.add_argument("--dynamic", action="store_true",
                   help="dynamic H/W (refused unless ONNX Runtime matches torch at three sizes)")
    p.add_argument("--argmax", action="store_true", help="put argmax in the graph: output uint8 class ids")
    p.add_argument("--calib", metavar="DIR|VIDEO", help="calibration frames for INT8: image folder or video")
    p.add_argument("--calib-frames", type=int, default=64, metavar="N", help="calibration frames (default 64)")
    p.add_argument("--val", metavar="DIR", help="labelled held-out frames for the INT8 gate (images/ + masks/, "
                   "a CamVid split with <split>annot beside it, or a CamVid root); default: the frames "
                   "of --calib not used for calibration")
    p.add_argument("--gate-frames", type=int, default=100, metavar="N",
                   help="at most N held-out frames for the INT8 gate (default 100)")
    p.add_argument("--max-drop", type=float, default=1.0, metavar="POINTS",
                   help="INT8 gate budget in mIoU points (default 1.0)")
    p.add_argument("--force", action="store_true", help="keep an INT8 artifact over budget (the drop is recorded)")
    engines_arg(p)
    # The older spelling of --engines, kept so that scripts using it keep working.
    p.add_argument("--out-dir", dest="engines", help=argparse.SUPPRESS)
    p.add_argument("--workspace-gb", type=float, default=4.0, help="TensorRT builder workspace (GiB)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rtseg.export import ExportRequest, export

    req = ExportRequest(model=args.model, format=args.format, precision=args.precision, size=args.size,
                        dynamic=args.dynamic, argmax=args.argmax, calib=args.calib, calib_frames=args.calib_frames,
                        val=args.val, gate_frames=args.gate_frames, max_drop=args.max_drop, force=args.force,
                        out_dir=args.engines, workspace_gb=args.workspace_gb)
    result = export(req, log=log_stderr, show=print, progress=True)
    print(result.path)
    return 0
