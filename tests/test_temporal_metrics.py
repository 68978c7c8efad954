"""The flicker metric on hand-made sequences whose changed pixels and TC are known exactly."""
import math

import cv2
import numpy as np
import pytest

from rtseg.temporal import FlickerMeter, changed_share, flicker, temporal_consistency
from rtseg.temporal.metrics import pair_miou, warp_mask


def texture(h=120, w=160, seed=0):
    """A smooth random BGR texture: optical flow has something to lock on to everywhere."""
    noise = np.random.default_rng(seed).uniform(0, 255, (h // 4, w // 4)).astype(np.float32)
    g = cv2.resize(cv2.GaussianBlur(noise, (0, 0), 1.0), (w, h), interpolation=cv2.INTER_CUBIC)
    return np.repeat(np.clip(g, 0, 255).astype(np.uint8)[..., None], 3, 2)


def blocks(h=120, w=160, seed=1):
    """A mask of 8x8-pixel blocks of 4 classes: every shift changes many pixels."""
    ids = np.random.default_rng(seed).integers(0, 4, (h // 8, w // 8)).astype(np.uint8)
    return np.kron(ids, np.ones((8, 8), np.uint8))


def test_static_scene_gives_tc_100_and_no_changed_pixels():
    image, mask = texture(), blocks()
    result = flicker([image] * 5, [mask] * 5)
    assert result == {"pairs": 4, "tc": 100.0, "changed": 0.0}


def test_known_shift_with_its_known_flow_is_fully_consistent():
    prev = blocks()
    cur = np.zeros_like(prev)
    cur[:, 7:] = prev[:, :-7]  # the scene moved 7 px to the right
    flow = np.zeros((*prev.shape, 2), np.float32)
    flow[..., 0] = -7.0        # t -> t-1: pixel x of t came from x - 7 in t-1
    warped, inside = warp_mask(prev, flow)
    assert inside.sum() == prev.shape[0] * (prev.shape[1] - 7)  # the first 7 columns came from outside
    assert np.array_equal(warped[inside], cur[inside])
    assert temporal_consistency(prev, cur, flow) == 1.0
    # Without motion compensation the same pair looks inconsistent, and most pixels changed.
    assert temporal_consistency(prev, cur, np.zeros_like(flow)) < 0.5
    assert changed_share(prev, cur) == pytest.approx(np.mean(prev != cur))
    assert changed_share(prev, cur) > 0.5
    # The wrong direction of the same flow is as bad as no flow.
    assert temporal_consistency(prev, cur, -flow) < 0.5


def test_dis_flow_recovers_a_real_shift_of_picture_and_mask():
    image, mask = texture(), blocks()
    moved_image, moved_mask = np.roll(image, 5, axis=1), np.roll(mask, 5, axis=1)
    result = flicker([image, moved_image], [mask, moved_mask])
    assert result["changed"] > 40          # what the viewer sees change...
    assert result["tc"] > 95               # ...is explained by the motion


def test_a_class_swapped_on_half_the_frame():
    image = texture()
    prev = np.zeros((120, 160), np.uint8)
    prev[:, 80:] = 1
    cur = prev.copy()
    cur[:, 80:] = 2                        # the right half's class changes, nothing moves
    result = flicker([image, image], [prev, cur])
    # Classes 0 (IoU 1), 1 and 2 (IoU 0 each): mIoU 1/3; half of the pixels changed.
    assert result["changed"] == 50.0
    assert result["tc"] == pytest.approx(100 / 3, abs=1e-3)
    # Swapped back and forth over three frames: two pairs, each the same figures.
    result = flicker([image] * 3, [prev, cur, prev])
    assert result["pairs"] == 2 and result["changed"] == 50.0 and result["tc"] == pytest.approx(100 / 3, abs=1e-3)


def test_pair_miou_counts_only_classes_present():
    a = np.array([0, 0, 1, 1])
    assert pair_miou(a, a) == 1.0
    assert pair_miou(a, np.array([0, 1, 1, 1])) == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert math.isnan(pair_miou(a[:0], a[:0]))


def test_meter_deferred_equals_immediate_and_skips_size_changes():
    frames = [texture(seed=s) for s in range(3)]
    masks = [blocks(seed=s) for s in range(3)]
    now, later = FlickerMeter(), FlickerMeter(defer=True)
    for f, m in zip(frames, masks):
        now.update(f, m)
        later.update(f, m)
    assert later.summary() == now.summary()
    now.update(texture(60, 80), blocks(60, 80))  # a new size: no pair with the previous frame
    assert now.summary()["pairs"] == 2


def test_meter_with_no_pairs_reports_none():
    meter = FlickerMeter()
    meter.update(texture(), blocks())
    assert meter.summary() == {"pairs": 0, "tc": None, "changed": None}
