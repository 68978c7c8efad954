"""The pipeline's boundary-only bilinear argmax gives the ids of upsampling every class."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rtseg.pipeline import upsample
from rtseg.pipeline.upsample import bilinear_argmax


def dense(scores: torch.Tensor, out_hw) -> np.ndarray:
    up = F.interpolate(scores[None], size=out_hw, mode="bilinear", align_corners=False)
    return up[0].max(0).indices.to(torch.uint8).numpy()


def smooth_scores(c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Blob-shaped class regions like a real segmentation: low-frequency random fields."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, c, max(2, h // 12), max(2, w // 12), generator=g) * 4
    return F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)[0]


@pytest.mark.parametrize("src,dst", [((36, 48), (54, 96)), ((45, 60), (45, 61)), ((37, 53), (101, 77)),
                                     ((60, 80), (31, 43)), ((24, 32), (24, 32))])
def test_matches_dense_upsampling(src, dst):
    scores = smooth_scores(11, *src)
    ours, ref = bilinear_argmax(scores, dst), dense(scores, dst)
    assert ours.shape == dst and ours.dtype == np.uint8
    # Exact but for float rounding at exact ties between two classes.
    assert (ours != ref).sum() <= 2


def test_boundary_path_is_the_one_taken_on_segmentation_like_scores(monkeypatch):
    scores = smooth_scores(5, 40, 60, seed=3)
    ids = scores.max(0).indices
    assert (ids[1:] != ids[:-1]).any(), "the fixture must have class boundaries"
    monkeypatch.setattr(upsample.F, "interpolate", lambda *a, **k: pytest.fail("took the dense path"))
    bilinear_argmax(scores, (80, 120))


def test_noise_falls_back_to_dense_and_is_still_right():
    scores = torch.randn(7, 20, 30, generator=torch.Generator().manual_seed(1))
    assert (bilinear_argmax(scores, (41, 59)) == dense(scores, (41, 59))).all()


def test_real_model_logits(one_torch_thread):
    import cv2

    from conftest import CAMVID
    from rtseg.backends import open_backend

    backend = open_backend("deeplabv3plus_camvid")
    image = cv2.cvtColor(cv2.imread(str(sorted((CAMVID / "val").glob("*.png"))[0])), cv2.COLOR_BGR2RGB)
    logits = backend.infer(backend.preprocess(image, (180, 240))[None])[0]
    ours, ref = bilinear_argmax(logits, (540, 960)), dense(logits, (540, 960))
    assert (ours != ref).mean() < 1e-5
