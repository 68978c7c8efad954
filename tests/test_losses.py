"""Losses: basic properties, reference values, and hand-computed class weights."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rtseg.losses import (LOSSES, CombinedLoss, CrossEntropy, DeepSupervisionLoss, FocalLoss,
                          LovaszSoftmax, OhemCrossEntropy, SoftDiceLoss, build_loss)
from rtseg.data.stats import class_weights, count_pixels

C, IGNORE = 4, 255
OPTIONS = {"ohem": {"min_kept": 20}}   # small inputs: keep a handful of pixels, not 100k


def make_batch(seed=0, n=2, h=8, w=10):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, C, h, w, generator=g)
    target = torch.randint(0, C, (n, h, w), generator=g)
    target[:, 0, :3] = IGNORE
    return logits, target


def onehot_logits(target, margin):
    """Logits that favour the true class by ``margin`` (ignored pixels get class 0)."""
    safe = target.clamp(max=C - 1)
    return margin * F.one_hot(safe, C).permute(0, 3, 1, 2).float()


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_nonnegative_finite_grad_and_decreasing(name):
    loss_fn = build_loss(name, **OPTIONS.get(name, {}))
    logits, target = make_batch()
    logits.requires_grad_(True)
    loss = loss_fn(logits, target)
    loss.backward()
    assert loss.dim() == 0 and torch.isfinite(loss) and loss >= 0
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    # Ignored pixels must not receive gradient.
    assert logits.grad[:, :, 0, :3].abs().max() == 0
    better = logits.detach() + onehot_logits(target, 3.0)
    assert loss_fn(better, target) < loss.detach()


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_all_ignored_gives_zero_with_grad(name):
    loss_fn = build_loss(name, **OPTIONS.get(name, {}))
    logits = torch.randn(2, C, 5, 6, requires_grad=True)
    target = torch.full((2, 5, 6), IGNORE, dtype=torch.long)
    loss = loss_fn(logits, target)
    loss.backward()
    assert loss.item() == 0.0
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("name", ["lovasz", "dice", "jaccard"])
def test_region_losses_near_zero_on_perfect_prediction(name):
    _, target = make_batch()
    assert build_loss(name)(onehot_logits(target, 30.0), target).item() == pytest.approx(0, abs=1e-5)


def test_lovasz_per_image_and_batch():
    logits, target = make_batch()
    one = LovaszSoftmax(per_image=True)(logits[:1], target[:1]).item()
    assert one == pytest.approx(LovaszSoftmax(per_image=False)(logits[:1], target[:1]).item())
    per_image = LovaszSoftmax(per_image=True)(logits, target).item()
    mean_of_images = (LovaszSoftmax()(logits[:1], target[:1]) + LovaszSoftmax()(logits[1:], target[1:])) / 2
    assert per_image == pytest.approx(mean_of_images.item())
    # Batch mode pools every pixel: the same as one image holding both side by side.
    side_by_side = LovaszSoftmax()(torch.cat(list(logits), -1)[None], torch.cat(list(target), -1)[None])
    assert LovaszSoftmax()(logits, target).item() == pytest.approx(side_by_side.item())


def _jaccard_set_loss(mistakes, fg):
    """Delta_J of a set of mistaken pixels: 1 - |gt & pred| / |gt | pred|."""
    gts = sum(fg)
    fn = sum(1 for m, f in zip(mistakes, fg) if m and f)
    fp = sum(1 for m, f in zip(mistakes, fg) if m and not f)
    return 1.0 - (gts - fn) / (gts + fp) if gts + fp else 0.0


def test_lovasz_matches_threshold_integral():
    # Independent reference: the Lovász extension is the integral over t of Delta_J({e >= t}),
    # i.e. sum_i (e_(i) - e_(i+1)) Delta_J(top-i set) with errors sorted in decreasing order.
    logits, target = make_batch(seed=3, n=1, h=3, w=4)
    prob = logits.softmax(1)[0].reshape(C, -1)
    tgt = target.reshape(-1)
    valid = tgt != IGNORE
    expected = []
    for c in range(C):
        fg = (tgt[valid] == c).tolist()
        err = (torch.tensor(fg, dtype=torch.float) - prob[c][valid]).abs().tolist()
        order = sorted(range(len(err)), key=lambda i: -err[i])
        levels = [err[i] for i in order] + [0.0]
        total = 0.0
        for i in range(len(order)):
            mistakes = [j in order[:i + 1] for j in range(len(err))]
            total += (levels[i] - levels[i + 1]) * _jaccard_set_loss(mistakes, fg)
        expected.append(total)
    got = LovaszSoftmax(classes="all")(logits, target).item()
    assert got == pytest.approx(sum(expected) / C, rel=1e-5)


def test_focal_gamma_zero_is_cross_entropy():
    logits, target = make_batch()
    ce = F.cross_entropy(logits, target, ignore_index=IGNORE)
    assert FocalLoss(gamma=0.0)(logits, target).item() == pytest.approx(ce.item(), rel=1e-6)
    assert FocalLoss(gamma=2.0)(logits, target) < ce


@pytest.mark.parametrize("weight", [None, [1.0, 2.0, 0.5, 3.0]])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_matches_torch(weight, smoothing):
    logits, target = make_batch()
    w = None if weight is None else torch.tensor(weight)
    ref = F.cross_entropy(logits, target, weight=w, ignore_index=IGNORE, label_smoothing=smoothing)
    got = CrossEntropy(weight=weight, label_smoothing=smoothing)(logits, target)
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)


def test_label_smoothing_by_hand():
    logits = torch.tensor([2.0, 0.0, 0.0]).reshape(1, 3, 1, 1)
    target = torch.zeros(1, 1, 1, dtype=torch.long)
    logp = [2 - math.log(math.exp(2) + 2), -math.log(math.exp(2) + 2)]
    eps = 0.1
    expected = -((1 - eps + eps / 3) * logp[0] + 2 * (eps / 3) * logp[1])
    assert CrossEntropy(label_smoothing=eps)(logits, target).item() == pytest.approx(expected, rel=1e-6)
    # Smoothing pulls the loss of a confident correct pixel up.
    assert expected > CrossEntropy()(logits, target).item()


def test_ohem_keeps_hardest_pixels():
    logits, target = make_batch()
    pixel = F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="none")
    pixel = pixel[target != IGNORE]
    # thresh tiny: nothing is "hard" by probability, so exactly the min_kept hardest remain.
    got = OhemCrossEntropy(thresh=1e-9, min_kept=15)(logits, target)
    assert got.item() == pytest.approx(pixel.topk(15).values.mean().item(), rel=1e-5)
    # thresh 1 keeps every valid pixel: plain cross-entropy.
    full = OhemCrossEntropy(thresh=1.0, min_kept=0)(logits, target)
    assert full.item() == pytest.approx(pixel.mean().item(), rel=1e-5)


def test_class_weights_by_hand():
    w = class_weights([10, 30, 60, 0], "median_freq")
    # freq 0.1, 0.3, 0.6 (class 3 unseen) -> median 0.3
    assert w.tolist() == pytest.approx([3.0, 1.0, 0.5, 0.0])
    w = class_weights([10, 30, 60], "median_freq", present_pixels=[50, 100, 100])
    # freq 10/50, 30/100, 60/100 = 0.2, 0.3, 0.6 -> median 0.3
    assert w.tolist() == pytest.approx([1.5, 1.0, 0.5])
    w = class_weights([10, 30, 60], "enet")
    # 1 / ln(1.02 + p): ln 1.12 = 0.11333, ln 1.32 = 0.27763, ln 1.62 = 0.48243
    assert w.tolist() == pytest.approx([8.8238, 3.6019, 2.0728], rel=1e-4)
    with pytest.raises(ValueError):
        class_weights([1, 2], "inverse")


def test_count_pixels():
    a = np.array([[0, 0, 1], [1, 1, 255]])
    b = torch.tensor([[[2, 2, 2], [0, 2, 2]]])   # a batch of one
    counts, present = count_pixels([a, b], 4, ignore_index=255)
    assert counts.tolist() == [3, 3, 5, 0]
    # labelled pixels of the images containing c: a has 5, b has 6
    assert present.tolist() == [11, 5, 6, 0]


def test_deep_supervision_upsamples_aux():
    logits, target = make_batch()
    aux = torch.randn(2, C, 4, 5)
    base = CrossEntropy()
    loss = DeepSupervisionLoss(base, [0.4])
    up = F.interpolate(aux, size=target.shape[-2:], mode="bilinear", align_corners=False)
    expected = base(logits, target) + 0.4 * base(up, target)
    assert loss((logits, aux), target).item() == pytest.approx(expected.item(), rel=1e-6)
    assert loss(logits, target).item() == pytest.approx(base(logits, target).item())
    with pytest.raises(ValueError, match="auxiliary"):
        loss((logits, aux, aux), target)
    with pytest.raises(ValueError):
        loss((aux, aux), target)        # main must be at the target size


def test_build_loss_registry_and_combination():
    logits, target = make_batch()
    with pytest.raises(ValueError, match="lovasz"):
        build_loss("lovaz")
    with pytest.raises(TypeError):
        build_loss("ce", gamma=2.0)
    combo = build_loss([{"name": "ce"}, {"name": "dice", "weight": 0.5}], ignore_index=IGNORE)
    assert isinstance(combo, CombinedLoss)
    expected = CrossEntropy()(logits, target) + 0.5 * SoftDiceLoss()(logits, target)
    assert combo(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
