"""Alignment: masks saved by `rtseg run` score the mIoU `rtseg eval` reports on the same frames.

Run on CamVid val frames as an image folder and as a losslessly encoded video (FFV1 in Matroska:
OpenCV's FFmpeg writes and reads it back bit-exactly), this catches BGR/RGB swaps, resizing
mistakes (wrong size, interpolation, transposed H/W) and off-by-one frame naming.
"""
import shutil

import cv2
import numpy as np
import pytest
from conftest import CAMVID

from rtseg.backends import open_backend
from rtseg.data import FolderDataset, read_mask
from rtseg.evaluate import evaluate, predict_probs
from rtseg.metrics import ConfusionMatrix
from rtseg.pipeline import RunOptions, run

SIZE = (180, 240)


@pytest.fixture(scope="module")
def val_frames(tmp_path_factory):
    """12 val frames, every 8th (far enough apart that neighbours differ), as folders and a video."""
    root = tmp_path_factory.mktemp("align")
    files = sorted((CAMVID / "val").glob("*.png"))[:12]
    for sub, src in (("images", "val"), ("masks", "valannot")):
        (root / sub).mkdir()
        for f in files:
            shutil.copy(CAMVID / src / f.name, root / sub / f.name)
    frames = [cv2.imread(str(f)) for f in files]
    video = root / "val.mkv"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"FFV1"), 1.0, frames[0].shape[1::-1])
    for f in frames:
        writer.write(f)
    writer.release()
    cap = cv2.VideoCapture(str(video))
    decoded = [cap.read()[1] for _ in frames]
    assert all(np.array_equal(a, b) for a, b in zip(frames, decoded)), "FFV1 round trip is not lossless"
    return root, [f.stem for f in files]


def miou(mask_dir, names, stems):
    cm = ConfusionMatrix(11, 11)
    for name, stem in zip(names, stems):
        target = read_mask(CAMVID / "valannot" / f"{stem}.png")
        cm.update(cv2.imread(str(mask_dir / f"{name}.png"), cv2.IMREAD_UNCHANGED), target)
    return cm.compute()["miou"]


@pytest.mark.slow
def test_run_masks_match_eval_on_images_and_lossless_video(tiny_enet, val_frames, tmp_path, one_torch_thread):
    root, stems = val_frames
    backend = open_backend(str(tiny_enet))
    reference = evaluate(backend, FolderDataset(root / "images", root / "masks", ignore_index=11), SIZE,
                         progress=False)["miou"]
    expected = {s: predict_probs(backend, cv2.imread(str(root / "images" / f"{s}.png"))[..., ::-1].copy(),
                                 SIZE).argmax(0).numpy() for s in stems}
    for source, names in ((root / "images", stems), (root / "val.mkv", [f"{i:06d}" for i in range(len(stems))])):
        out = tmp_path / source.name
        summary = run(RunOptions(source=str(source), model=str(tiny_enet), size=SIZE, threads=1, precision="fp32",
                                 save_masks=str(out), quiet=True))
        assert summary["frames"] == len(stems)
        got = miou(out, names, stems)
        assert abs(got - reference) * 100 < 0.5, (source.name, got, reference)
        saved = [cv2.imread(str(out / f"{name}.png"), cv2.IMREAD_UNCHANGED) for name in names]
        for mask, stem in zip(saved, stems):
            assert mask.shape == (360, 480) and (mask == expected[stem]).mean() > 0.995, (source.name, stem)
        # The per-frame check can fail: the same masks paired one frame off agree far less. (The
        # tiny model predicts mostly the scene layout, so its mIoU alone barely notices a shift.)
        shifted = [(m == expected[s]).mean() for m, s in zip(saved[:-1], stems[1:])]
        assert max(shifted) < 0.99
