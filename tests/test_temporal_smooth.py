"""Temporal smoothing: steady input stays as it is, a cut is followed at once, motion is followed
with flow (and lags without), flicker goes down, live gaps reset the state."""
import cv2
import numpy as np
import pytest
import torch
from test_temporal_metrics import blocks, texture

from rtseg.errors import RtsegError
from rtseg.pipeline.stages import ids_to_mask, logits_to_mask
from rtseg.temporal import Smoother, flicker


def logits_of(mask, num_classes=4, noise=0.0, seed=0):
    """(1, C, h, w) logits that pick ``mask``, with Gaussian noise of std ``noise``."""
    onehot = np.eye(num_classes, dtype=np.float32)[mask].transpose(2, 0, 1)
    rng = np.random.default_rng(seed)
    return torch.from_numpy(2 * onehot + noise * rng.standard_normal(onehot.shape).astype(np.float32))[None]


@pytest.mark.parametrize("mode", ["ema", "flow"])
def test_static_sequence_masks_are_unchanged(mode):
    image, mask = texture(), blocks()
    logits = logits_of(mask, noise=0.8)           # near ties: any drift in the average would show
    want = logits_to_mask(logits, (240, 320))     # upsampled 2x, as for a source larger than the model
    smoother = Smoother(mode, 0.3, 4)
    for i in range(6):
        assert np.array_equal(logits_to_mask(smoother.update(i, image, logits), (240, 320)), want)
    assert smoother.resets == 0


@pytest.mark.parametrize("mode", ["ema", "flow"])
def test_wide_logits_are_averaged_on_the_narrower_grid(mode):
    image, mask = texture(), blocks()
    logits = logits_of(mask, noise=0.8)                  # 4 x 120 x 160
    small = torch.from_numpy(np.stack([cv2.resize(p, (80, 60), interpolation=cv2.INTER_AREA)
                                       for p in logits[0].numpy()]))[None]
    want = logits_to_mask(small, (240, 320))
    smoother = Smoother(mode, 0.3, 4, avg_width=80)
    for i in range(6):                                   # a steady input: no drift on the small grid
        out = smoother.update(i, image, logits)
        assert out.shape == (1, 4, 60, 80)
        assert np.array_equal(logits_to_mask(out, (240, 320)), want)
    assert smoother.resets == 0


@pytest.mark.parametrize("mode", ["ema", "flow"])
def test_a_cut_is_followed_within_one_frame(mode):
    a, b = texture(seed=0), 255 - texture(seed=0)  # same structure, every grey level changed
    la, lb = logits_of(blocks(seed=1)), logits_of(blocks(seed=2))
    smoother = Smoother(mode, 0.2, 4)
    for i in range(4):
        smoother.update(i, a, la)
    # The first frame after the cut is its own prediction, not a blend with the old scene.
    assert np.array_equal(logits_to_mask(smoother.update(4, b, lb), (120, 160)), blocks(seed=2))
    assert smoother.resets == 1
    # Without the cut the same new logits are blended, and the old scene still shows.
    steady = Smoother(mode, 0.2, 4)
    for i in range(4):
        steady.update(i, a, la)
    assert not np.array_equal(logits_to_mask(steady.update(4, a, lb), (120, 160)), blocks(seed=2))


@pytest.mark.parametrize("avg_width", [160, 80])  # the logits' own grid, and half of it
def test_flow_follows_motion_and_denoises_while_ema_lags(avg_width):
    base_image, base_mask = texture(), blocks()
    agree = {}
    for mode in ("off", "ema", "flow"):
        smoother = Smoother(mode, 0.3, 4, avg_width=avg_width) if mode != "off" else None
        scores = []
        for t in range(10):  # the scene pans 3 px per frame; the network hesitates every frame
            image, mask = np.roll(base_image, 3 * t, axis=1), np.roll(base_mask, 3 * t, axis=1)
            logits = logits_of(mask, noise=1.2, seed=t)
            out = logits_to_mask(smoother.update(t, image, logits) if smoother else logits, mask.shape)
            scores.append(np.mean(out[:, 3 * t:] == mask[:, 3 * t:]))  # columns that wrapped around excluded
        agree[mode] = np.mean(scores[3:])
    # Per frame about 75 % of the pixels are right; warped by the flow the average sees the same
    # point several times (> 95 %); averaged in place it mixes neighbours and gets worse.
    assert agree["off"] < 0.8
    assert agree["flow"] > 0.95
    assert agree["ema"] < agree["off"]


def test_where_flow_fails_the_new_frame_wins():
    image, mask = texture(), blocks()
    smoother = Smoother("flow", 0.3, 4)
    for i in range(4):
        smoother.update(i, image, logits_of(mask))
    # An object appears: new picture and a new class in a 40x40 patch, too small for a cut.
    image2, mask2 = image.copy(), mask.copy()
    image2[40:80, 60:100] = 255 - image2[40:80, 60:100]
    mask2[40:80, 60:100] = 3
    out = logits_to_mask(smoother.update(4, image2, logits_of(mask2)), mask.shape)
    assert smoother.resets == 0
    # The forward-backward check fails there, so it shows at once instead of after several frames
    # (blended, weight 0.3 against 0.7, it would not show at all in this frame).
    assert np.mean(out[40:80, 60:100] == 3) > 0.9


@pytest.mark.parametrize("mode", ["ema", "flow"])
def test_smoothing_reduces_flicker_of_a_noisy_prediction(mode):
    image, mask = texture(), blocks()
    frames = [logits_of(mask, noise=1.2, seed=s) for s in range(12)]  # the network hesitates
    raw = [logits_to_mask(f, mask.shape) for f in frames]
    smoother = Smoother(mode, 0.3, 4)
    smooth = [logits_to_mask(smoother.update(i, image, f), mask.shape) for i, f in enumerate(frames)]
    before, after = flicker([image] * 12, raw), flicker([image] * 12, smooth)
    assert after["changed"] < before["changed"] / 2
    assert after["tc"] > before["tc"]


def _hovering(mask, t, margin):
    """Logits whose classes 0 and 1 swap the lead every frame by ``margin`` where ``mask`` is 0 or 1."""
    onehot = np.eye(4, dtype=np.float32)[mask].transpose(2, 0, 1)
    tie = (mask <= 1).astype(np.float32)
    lead = margin if t % 2 else -margin
    logits = 2 * onehot * (1 - tie)
    logits[0] += tie * (1 + lead)
    logits[1] += tie * (1 - lead)
    return torch.from_numpy(logits)[None]


@pytest.mark.parametrize("mode", ["ema", "flow"])
def test_hold_keeps_a_hovering_class_and_follows_a_clear_change(mode):
    image, mask = texture(), blocks()
    flips = {}
    for hold in (0.0, 0.1):
        smoother = Smoother(mode, 1.0, 4, hold=hold)  # alpha 1: no averaging, the margin alone
        shown = [logits_to_mask(smoother.update(t, image, _hovering(mask, t, 0.1)), mask.shape) for t in range(8)]
        flips[hold] = flicker([image] * 8, shown)["changed"]
    # Without the margin the hovering pixels switch every frame; with it they keep their first class.
    assert flips[0.0] > 10 and flips[0.1] == 0
    # A clear change (class 3 by a wide margin) is shown at once, and the margin does not build
    # up: after many held frames the next clear change is followed just as fast.
    smoother = Smoother(mode, 1.0, 4, hold=0.1)
    for t in range(10):
        smoother.update(t, image, _hovering(mask, t, 0.1))
    assert np.array_equal(logits_to_mask(smoother.update(10, image, logits_of(np.full_like(mask, 3))),
                                         mask.shape), np.full_like(mask, 3))


def test_live_gap_resets_and_file_gap_does_not():
    image = texture()
    la, lb = logits_of(blocks(seed=1)), logits_of(blocks(seed=2))
    live, files = Smoother("flow", 0.3, 4, live=True), Smoother("flow", 0.3, 4, live=False)
    for s in (live, files):
        s.update(0, image, la)
        s.update(1, image, la)
    # Frame 5 after frame 1: frames were dropped, the live state starts over.
    assert np.array_equal(logits_to_mask(live.update(5, image, lb), (120, 160)), blocks(seed=2))
    assert live.resets == 1
    # A file with --vid-stride has gaps too, but every frame of it is processed: keep smoothing.
    assert not np.array_equal(logits_to_mask(files.update(5, image, lb), (120, 160)), blocks(seed=2))
    assert files.resets == 0


def test_argmax_in_graph_ids_are_smoothed_as_votes():
    image, mask = texture(), blocks()
    smoother = Smoother("ema", 0.4, 4)
    ids = torch.from_numpy(mask)[None]
    for i in range(3):
        out = smoother.update(i, image, ids)
        assert out.shape == (1, 120, 160) and out.dtype == torch.uint8
        assert np.array_equal(ids_to_mask(out, (120, 160)), mask)
    # One frame of different ids does not outvote the history (weight 0.4 < 0.6).
    other = torch.from_numpy(blocks(seed=3))[None]
    assert np.array_equal(smoother.update(3, image, other)[0].numpy(), mask)


@pytest.mark.parametrize("mode, alpha, text", [("median", 0.5, "unknown --smooth 'median'"),
                                               ("flow", 0.0, "--smooth-alpha must be in (0, 1]"),
                                               ("ema", 1.5, "--smooth-alpha must be in (0, 1]")])
def test_bad_mode_or_alpha_is_a_one_line_error(mode, alpha, text):
    with pytest.raises(RtsegError, match=text.replace("(", r"\(").replace(")", r"\)").replace("]", r"\]")):
        Smoother(mode, alpha, 4)


def test_bad_hold_is_a_one_line_error():
    with pytest.raises(RtsegError, match=r"--smooth-hold must be in \[0, 1\)"):
        Smoother("flow", 0.3, 4, hold=1.0)
