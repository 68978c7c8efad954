"""``rtseg bench``'s sweep: what each model, backend, precision and size costs and scores here."""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Callable, Sequence

from rtseg.errors import RtsegError
from rtseg.tradeoff.report import format_table, mark_pareto, pareto_front, write_outputs
from rtseg.tradeoff.sweep import Combo, SweepOptions, measure, plan, sweep


def live_models() -> list[str]:
    """Shipped presets meant for live use (their description starts with ``live``)."""
    from rtseg.zoo import shipped_for

    return shipped_for("live")


def _none(value: str | None) -> bool:
    return value is not None and value.lower() == "none"


def default_options(models: Sequence[str] | None = None, sizes: Sequence[tuple[int, int]] | None = None,
                    root: str | None = None, video: str | None = None, calib: str | None = None,
                    default_root: str | None = None, log: Callable[[str], None] = lambda _: None,
                    **rest) -> SweepOptions:
    """:class:`SweepOptions` with the defaults of a bare ``rtseg bench`` filled in.

    Defaults are only taken when they exist on this machine (CamVid beside a checkout; the sample
    clip always ships); a path the user named that does not exist is an error, not a silent skip.
    """
    from rtseg.pipeline.bench import DEFAULT_CLIP

    models = list(models or live_models())
    if not models:
        raise RtsegError("no shipped live model in this install; name models with --models")
    if _none(root):
        root = None
    elif root is None:
        root = default_root if default_root and Path(default_root, rest.get("split", "val")).is_dir() else None
        if root is None:
            log("no labelled data found: mIoU not measured (pass --root DIR)")
    elif not Path(root).is_dir():
        raise RtsegError(f"--root {root} is not a folder")
    if _none(video):
        video = None
    elif video is None:
        video = DEFAULT_CLIP if Path(DEFAULT_CLIP).is_file() else None
    elif not Path(video).is_file():
        raise RtsegError(f"--video {video} does not exist")
    if calib is None and root and Path(root, "train").is_dir():
        calib = str(Path(root, "train"))
    elif calib is not None and not Path(calib).exists():
        raise RtsegError(f"--calib {calib} does not exist")
    from rtseg.zoo import load_model

    # Load each model once up front: a wrong name or an unreadable file is a one-line error
    # before minutes of exports, not a row of failures at the end.
    inputs = {tuple(load_model(m).preset.input_size) for m in models}
    sizes = list(sizes) if sizes else sorted(inputs)
    return SweepOptions(models=models, sizes=list(sizes), root=root, video=video, calib=calib, **rest)


def _cpu_name() -> str:
    try:  # Linux names the CPU model here; platform.processor() often says just "x86_64"
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_context(opts: SweepOptions) -> dict:
    """How and where the figures were measured, stored beside them in results.json."""
    import torch

    versions = {"torch": torch.__version__}
    for pkg in ("onnxruntime", "openvino"):
        try:
            versions[pkg] = __import__(pkg).__version__
        except ImportError:
            pass
    gpu = torch.cuda.get_device_name(0) if opts.device.startswith("cuda") and torch.cuda.is_available() else None
    cpu = _cpu_name()
    return {"machine": f"{gpu or cpu}, {os.cpu_count()} CPU threads", "device": opts.device,
            "versions": versions, "data": f"{opts.data}:{opts.split}" if opts.root else None,
            "eval_limit": opts.limit, "video": opts.video, "video_frames": opts.video_frames,
            "calib": opts.calib, "calib_frames": opts.calib_frames, "repeats": opts.repeats}


__all__ = ["Combo", "SweepOptions", "default_options", "format_table", "live_models", "machine_context",
           "mark_pareto", "measure", "pareto_front", "plan", "sweep", "write_outputs"]
