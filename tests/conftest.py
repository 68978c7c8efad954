"""Shared fixtures: the real data, a small trained ENet, and a fast deterministic fake backend."""
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from rtseg.assets import SAMPLE_CLIP
from rtseg.backends.base import Backend, ModelMeta

REPO = Path(__file__).resolve().parents[1]
CLIP = SAMPLE_CLIP                          # the real dashcam clip that ships with the package
CAMVID = REPO / "tests" / "data" / "camvid"  # 24 real CamVid frames with labels (tests/data/README.md)
CAMVID_FULL = REPO.parent / "shared" / "data" / "camvid"  # the whole split, beside the repository


def pytest_collection_modifyitems(config, items):
    """``camvid_full`` tests need the whole CamVid split, ``browser`` tests a chromium. A fresh
    clone may have neither: skip them there and say why; in CI (``CI`` set) both must be present,
    so the tests run and fail without them."""
    if os.environ.get("CI"):
        return
    skips = {}
    if not (CAMVID_FULL / "train").is_dir():
        skips["camvid_full"] = pytest.mark.skip(reason=f"needs the whole CamVid split at {CAMVID_FULL} (run in CI)")
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        # The same rule for the browser tests: CI installs chromium (.ci/run) and runs them.
        skips["browser"] = pytest.mark.skip(reason="needs Debian's chromium (apt-get install -y chromium; run in CI)")
    for item in items:
        for marker, skip in skips.items():
            if marker in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def private_export_cache(tmp_path_factory):
    """Exports go to a temporary cache, never the user's real one (subprocesses inherit it)."""
    import os

    saved = os.environ.get("RTSEG_CACHE")
    os.environ["RTSEG_CACHE"] = str(tmp_path_factory.mktemp("rtseg_cache"))
    yield Path(os.environ["RTSEG_CACHE"])
    if saved is None:
        os.environ.pop("RTSEG_CACHE", None)
    else:
        os.environ["RTSEG_CACHE"] = saved


@pytest.fixture(scope="session")
def tiny_enet(tmp_path_factory) -> Path:
    """``best.safetensors`` of an ENet trained for 30 iterations on 8 CamVid frames at 1/2 scale.

    Weak (about 0.15 val mIoU at 180x240) but its predictions follow the scene — sky on top, road
    below, buildings and cars where they are — so a shifted, flipped, colour-swapped or
    off-by-one mask scores visibly differently. One torch thread: on two shared cores a second
    intra-op thread waiting at barriers makes training many times slower, not faster.
    """
    from rtseg.train import TrainConfig, fit

    root = tmp_path_factory.mktemp("tiny_enet")
    for split, src, n in (("train", "train", 8), ("val", "val", 1)):
        files = sorted((CAMVID / src).glob("*.png"))
        for sub, folder in (("images", src), ("masks", f"{src}annot")):
            (root / "data" / split / sub).mkdir(parents=True)
            for f in files[::len(files) // n][:n]:
                shutil.copy(CAMVID / folder / f.name, root / "data" / split / sub / f.name)
    cfg = TrainConfig(name="enet", preset="enet_camvid", root=str(root / "data"), data="folder",
                      crop_size=[176, 240], scale_range=[0.5, 0.5], jitter=[0, 0, 0, 0], epochs=15,
                      batch_size=4, optimizer="adamw", lr=1e-2, weight_decay=1e-4, warmup_epochs=0,
                      poly_power=0.0, loss="ce", ema_decay=0, val_every=15, val_limit=1, workers=0,
                      threads=1, out=str(root))
    threads = torch.get_num_threads()
    try:
        fit(cfg, progress=False)
    finally:
        torch.set_num_threads(threads)
    return root / "enet" / "best.safetensors"


@pytest.fixture
def one_torch_thread():
    """Direct model calls in a test (reference predictions) on one intra-op thread, restored after:
    on two cores shared with other work, two threads spinning at barriers are many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class FakeBackend(Backend):
    """Classes by brightness: class c wins where the grey level is nearest ``c / (C - 1)``.

    Deterministic, structured like the picture, and as fast or as slow (``delay``) as a test
    needs. ``fail_at`` raises on that call; ``ids`` makes it an argmax-in-graph artifact.
    """

    runtime = "fake"

    def __init__(self, num_classes: int = 4, delay: float = 0.0, fail_at: int | None = None,
                 ids: bool = False, input_size=(24, 32)):
        names = [f"class{c}" for c in range(num_classes)]
        colors = [[(37 * c) % 256, (91 * c + 40) % 256, (151 * c + 80) % 256] for c in range(num_classes)]
        self.meta = ModelMeta("fake", names, colors, [0.0] * 3, [1.0] * 3, tuple(input_size), 255,
                              argmax_in_graph=ids)
        self.delay, self.fail_at = delay, fail_at
        self.calls = 0
        self.threads: set[str] = set()

    def infer(self, batch: np.ndarray) -> torch.Tensor:
        self.calls += 1
        self.threads.add(threading.current_thread().name)
        if self.fail_at is not None and self.calls >= self.fail_at:
            raise RuntimeError("boom")
        if self.delay:
            time.sleep(self.delay)
        grey = torch.from_numpy(np.ascontiguousarray(batch)).mean(1, keepdim=True)  # (N, 1, h, w)
        centers = torch.linspace(0, 1, self.meta.num_classes).view(1, -1, 1, 1)
        logits = -(grey - centers) ** 2                                               # (N, C, h, w)
        return logits.argmax(1).to(torch.uint8) if self.meta.argmax_in_graph else logits


@pytest.fixture
def fake_backend():
    return FakeBackend
