"""CPU milliseconds of the per-frame stages around the model, for two checkouts, in one process.

Loads ``rtseg.pipeline.stages`` and ``rtseg.pipeline.overlay`` from each checkout under its own
name and times both on the same frames of the sample clip, alternately, with the default model's
cached artifact (run `rtseg run` once first). Usage:
    python scripts/bench_stages_ab.py OLD_CHECKOUT NEW_CHECKOUT [--artifact FILE.xml]
"""
from __future__ import annotations

import argparse
import glob
import importlib
import os
import sys
import time

import numpy as np
import torch


def load(checkout: str):
    """The stages, overlay and backend modules of ``checkout`` (a fresh import of the package)."""
    for name in [m for m in sys.modules if m == "rtseg" or m.startswith("rtseg.")]:
        del sys.modules[name]
    sys.path.insert(0, checkout)
    try:
        mods = {n: importlib.import_module(f"rtseg.{n}") for n in ("pipeline.stages", "pipeline.overlay", "backends")}
    finally:
        sys.path.pop(0)
    return mods


def cpu_ms(fn, runs: int = 20) -> float:
    fn()
    t = time.process_time()
    for _ in range(runs):
        fn()
    return (time.process_time() - t) * 1000 / runs


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--artifact", help="default: the newest cached deeplabv3plus_camvid INT8 IR")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads (both sides)")
    args = p.parse_args()
    cache = os.path.expanduser("~/.cache/rtseg/engines")
    artifact = args.artifact or max(glob.glob(f"{cache}/deeplabv3plus_camvid_int8_360x480_*.xml"), key=os.path.getmtime)
    torch.set_num_threads(args.threads)
    sides = {}
    for side in ("old", "new"):
        m = load(getattr(args, side))
        backend = m["backends"].open_backend(artifact, runtime="openvino")
        ov = m["pipeline.overlay"]
        sides[side] = (m["pipeline.stages"], backend, ov.Renderer(backend.meta.colors, backend.meta.class_names, ov.Style()))
    from rtseg.assets import SAMPLE_CLIP
    from rtseg.pipeline.sources import open_source
    source = open_source(str(SAMPLE_CLIP), stride=20, max_frames=5)
    frames = [f.image for f in iter(lambda: source.read(None), None)]
    source.close()
    rows = {s: {"preprocess": [], "postprocess": [], "overlay": []} for s in sides}
    for image in frames:
        for side, (st, backend, renderer) in sides.items():
            tensor = st.preprocess(backend, image, None)
            logits = st.infer(backend, tensor)
            with torch.inference_mode():
                mask = st.to_mask(backend, logits, image.shape[:2])
                rows[side]["preprocess"].append(cpu_ms(lambda: st.preprocess(backend, image, None)))
                rows[side]["postprocess"].append(cpu_ms(lambda: st.to_mask(backend, logits, image.shape[:2])))
                rows[side]["overlay"].append(cpu_ms(lambda: renderer.render(image, mask, "12.3 FPS  latency 85 ms")))
    print(f"CPU ms per frame, mean over {len(frames)} frames of the sample clip, torch threads {args.threads}")
    for stage in ("preprocess", "postprocess", "overlay"):
        o, n = np.mean(rows["old"][stage]), np.mean(rows["new"][stage])
        print(f"{stage:12s} old {o:6.2f}  new {n:6.2f}  ({n / o:.2f}x)")


if __name__ == "__main__":
    main()
