"""Shared by the export tests: a small ENet trained briefly on real CamVid frames, so that INT8 and
argmax comparisons see a model with confident, structured predictions rather than random weights."""
import os
import shutil
from pathlib import Path

from conftest import CAMVID, CLIP as VIDEO


def camvid_subset(root: Path, n_train: int = 6, n_val: int = 4) -> Path:
    """A `folder` dataset of real CamVid frames (copies)."""
    for split, n in (("train", n_train), ("val", n_val)):
        for sub, src in (("images", split), ("masks", f"{split}annot")):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
            for f in sorted((CAMVID / src).glob("*.png"))[:n]:
                shutil.copy(f, root / split / sub / f.name)
    return root


def trained_enet(base: Path) -> Path:
    """Trains ENet for 40 iterations on 6 CamVid frames once per session; returns its weight file.

    ``RTSEG_TEST_CACHE=<dir>`` keeps the weights between sessions (for repeated local runs).
    """
    from rtseg.train import TrainConfig, fit

    base = Path(os.environ.get("RTSEG_TEST_CACHE") or base)
    weights = base / "enet_run" / "best.safetensors"
    if weights.is_file():
        return weights
    data = camvid_subset(base / "enet_data")
    cfg = TrainConfig(name="enet_run", preset="enet_camvid", root=str(data), data="folder",
                      crop_size=[120, 160], scale_range=[0.4, 0.5], jitter=[0, 0, 0, 0], epochs=20,
                      batch_size=3, optimizer="adamw", lr=5e-3, weight_decay=1e-4, warmup_epochs=0,
                      poly_power=0.0, loss="ce", class_weights=None, ema_decay=0.0, val_every=20,
                      workers=0, out=str(base), val_limit=2)
    fit(cfg, progress=False)
    return weights
