"""Segmentation losses, class weights and deep supervision.

Losses live here, in the training code, not inside the models: a model only returns logits
(or ``(main, *aux)`` in training mode) and :class:`DeepSupervisionLoss` combines them.

Every loss takes logits (N, C, H, W) and int64 targets (N, H, W) whose ``ignore_index`` pixels
(255 by default) do not count, and returns a scalar. A batch in which every pixel is ignored
gives exactly 0 with a (zero) gradient instead of the 0/0 NaN of a plain mean, so a crop that
lands on void never poisons the weights.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from rtseg.models import check_name
from rtseg.models._blocks import resize_to


# --------------------------------------------------------------------------- helpers

def _prepare(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Checks shapes and returns float32 logits: fp16 sums over a million pixels overflow."""
    if logits.dim() != 4 or target.dim() != 3 or logits.shape[0] != target.shape[0] \
            or logits.shape[2:] != target.shape[1:]:
        raise ValueError(f"expected logits (N, C, H, W) and target (N, H, W), got "
                         f"{tuple(logits.shape)} and {tuple(target.shape)}")
    return logits.float()


def _safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den, or num itself (0 when nothing was counted) where den == 0, without NaN grads."""
    return num / torch.where(den > 0, den, torch.ones_like(den))


def _weight_buffer(module: nn.Module, weight) -> None:
    w = None if weight is None else torch.as_tensor(weight, dtype=torch.float32).flatten()
    # A buffer follows `.to(device)` together with the model's loss, unlike a plain attribute.
    module.register_buffer("weight", w, persistent=False)


def _probs_onehot(logits: torch.Tensor, target: torch.Tensor, ignore_index: int):
    """Softmax probs (N, C, H, W), one-hot targets zeroed at ignored pixels, valid mask (N, 1, H, W)."""
    valid = (target != ignore_index).unsqueeze(1)                         # (N, 1, H, W)
    safe = torch.where(valid.squeeze(1), target, torch.zeros_like(target))
    onehot = F.one_hot(safe, logits.shape[1]).permute(0, 3, 1, 2).to(logits.dtype)
    return logits.softmax(1), onehot * valid, valid


# --------------------------------------------------------------------------- pixel-wise losses

class CrossEntropy(nn.Module):
    """Softmax cross-entropy, optionally class-weighted and label-smoothed.

    The mean is over valid pixels (weighted by ``weight[target]`` like ``F.cross_entropy``).

    Args:
        weight: optional (C,) class weights, e.g. from :func:`class_weights`.
        ignore_index: target value that does not count.
        label_smoothing: Szegedy et al. 2016; the target becomes ``(1 - eps) * onehot + eps / C``.
    """

    def __init__(self, weight=None, ignore_index: int = 255, label_smoothing: float = 0.0):
        super().__init__()
        _weight_buffer(self, weight)
        self.ignore_index = ignore_index
        self.label_smoothing = float(label_smoothing)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = _prepare(logits, target)
        total = F.cross_entropy(logits, target, weight=self.weight, ignore_index=self.ignore_index,
                                label_smoothing=self.label_smoothing, reduction="sum")
        valid = target != self.ignore_index
        if self.weight is None:
            den = valid.sum().to(total.dtype)
        else:
            den = (self.weight[torch.where(valid, target, 0)] * valid).sum()
        # Summing then dividing by a guarded count keeps the all-ignored batch at 0 (no 0/0).
        return _safe_div(total, den)


class OhemCrossEntropy(nn.Module):
    """Cross-entropy over hard pixels only (online hard example mining).

    Shrivastava et al. 2016 for detection; the segmentation variant of PSPNet/HRNet keeps the
    pixels whose predicted probability of the true class is below ``thresh``, and at least the
    ``min_kept`` hardest valid pixels so the loss never starves once the model is confident.

    Args:
        thresh: probability under which a pixel counts as hard.
        min_kept: lower bound on kept pixels per batch (all valid pixels if fewer).
        weight: optional (C,) class weights.
        ignore_index: target value that does not count.
    """

    def __init__(self, thresh: float = 0.7, min_kept: int = 100_000, weight=None,
                 ignore_index: int = 255):
        super().__init__()
        if not 0.0 < thresh <= 1.0 or min_kept < 0:
            raise ValueError(f"need 0 < thresh <= 1 and min_kept >= 0, got {thresh}, {min_kept}")
        _weight_buffer(self, weight)
        self.thresh = float(thresh)
        self.min_kept = int(min_kept)
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = _prepare(logits, target)
        pixel = F.cross_entropy(logits, target, weight=self.weight, ignore_index=self.ignore_index,
                                reduction="none").flatten()
        valid = (target != self.ignore_index).flatten()
        safe = torch.where(valid, target.flatten(), 0)
        with torch.no_grad():
            prob = logits.softmax(1).permute(0, 2, 3, 1).reshape(-1, logits.shape[1])
            prob = prob.gather(1, safe[:, None]).squeeze(1)
            # Ignored pixels get +inf so they are never among the k hardest.
            prob = torch.where(valid, prob, torch.full_like(prob, math.inf))
            keep = prob < self.thresh
            k = min(self.min_kept, prob.numel())
            if k > 0:
                keep |= prob <= prob.kthvalue(k).values
            keep &= valid
        w = torch.ones_like(pixel) if self.weight is None else self.weight[safe]
        return _safe_div((pixel * keep).sum(), (w * keep).sum())


class FocalLoss(nn.Module):
    """Focal loss, ``-alpha_t (1 - p_t)^gamma log p_t`` (Lin et al. 2017, RetinaNet).

    Down-weights easy, well-classified pixels. Averaged over valid pixels (the paper normalises
    by the number of anchors, not by the sum of alphas), so ``gamma=0, alpha=None`` is exactly
    cross-entropy.

    Args:
        gamma: focusing parameter, >= 0.
        alpha: optional (C,) per-class weights (the multi-class form of the paper's alpha).
        ignore_index: target value that does not count.
    """

    def __init__(self, gamma: float = 2.0, alpha=None, ignore_index: int = 255):
        super().__init__()
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)
        _weight_buffer(self, alpha)
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = _prepare(logits, target)
        valid = target != self.ignore_index                                   # (N, H, W)
        safe = torch.where(valid, target, 0)
        logp = logits.log_softmax(1).gather(1, safe.unsqueeze(1)).squeeze(1)  # (N, H, W)
        loss = -logp
        if self.gamma > 0:
            # clamp: 1 - p can round below 0, and pow(0, gamma - 1) would be inf for gamma < 1.
            loss = loss * (1.0 - logp.exp()).clamp_min(1e-12) ** self.gamma
        if self.weight is not None:
            loss = loss * self.weight[safe]
        return _safe_div((loss * valid).sum(), valid.sum().to(loss.dtype))


# --------------------------------------------------------------------------- region losses

class _SoftOverlapLoss(nn.Module):
    """1 - mean soft Dice (``_dice = True``) or Jaccard score per class, pooled over the batch."""

    _dice = True

    def __init__(self, smooth: float = 1.0, classes: str = "present", ignore_index: int = 255):
        super().__init__()
        if classes not in ("present", "all"):
            raise ValueError(f"classes must be 'present' or 'all', got '{classes}'")
        self.smooth = float(smooth)
        self.classes = classes
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = _prepare(logits, target)
        prob, onehot, valid = _probs_onehot(logits, target, self.ignore_index)
        prob = prob * valid                    # ignored pixels contribute neither FP nor TP
        inter = (prob * onehot).sum((0, 2, 3))                                # (C,)
        # clamp: with smooth=0 an empty class would be 0/0
        card = (prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3))).clamp_min(1e-7)  # (C,)
        s = self.smooth
        score = (2.0 * inter + s) / (card + s) if self._dice else (inter + s) / (card - inter + s)
        loss_c = 1.0 - score
        if self.classes == "present":
            use = onehot.sum((0, 2, 3)) > 0
        else:  # every class, unless the whole batch is ignored
            use = valid.any().expand_as(inter)
        use = use.to(loss_c.dtype)
        return _safe_div((loss_c * use).sum(), use.sum())


class SoftDiceLoss(_SoftOverlapLoss):
    """Soft Dice loss on softmax probabilities (Milletari et al. 2016, V-Net; multi-class form).

    ``dice_c = (2 sum(p_c g_c) + s) / (sum(p_c) + sum(g_c) + s)`` over all valid pixels of the
    batch; the loss is ``1 - mean_c dice_c``.

    Args:
        smooth: additive smoothing ``s`` that keeps empty classes finite.
        classes: ``"present"`` averages over classes present in the batch's target (so absent
            classes do not dominate small crops), ``"all"`` over every class.
        ignore_index: target value whose pixels are masked out of both p and g.
    """


class SoftJaccardLoss(_SoftOverlapLoss):
    """Soft Jaccard (IoU) loss on softmax probabilities (Rahman & Wang 2016).

    ``iou_c = (sum(p_c g_c) + s) / (sum(p_c) + sum(g_c) - sum(p_c g_c) + s)``; the loss is
    ``1 - mean_c iou_c``. Arguments as for :class:`SoftDiceLoss`.
    """

    _dice = False


def _lovasz_grad(fg_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovász extension of the Jaccard loss at a sorted error vector.

    Berman et al. 2018, Eq. 9 / Alg. 1: with pixels sorted by decreasing error, the i-th weight is
    ``Delta_J(first i) - Delta_J(first i-1)`` where treating the first i pixels as mistakes gives
    ``cumsum(fg)`` false negatives and ``cumsum(1 - fg)`` false positives, so
    ``Delta_J = 1 - (gts - FN) / (gts + FP)``.

    Args:
        fg_sorted: (..., P) 0/1 foreground indicators sorted by decreasing error along -1.
    """
    gts = fg_sorted.sum(-1, keepdim=True)
    inter = gts - fg_sorted.cumsum(-1)
    union = gts + (1.0 - fg_sorted).cumsum(-1)
    jac = 1.0 - inter / union.clamp_min(1.0)   # union >= 1 once a pixel is in; clamp for P = 0
    return torch.cat([jac[..., :1], jac[..., 1:] - jac[..., :-1]], -1)


class LovaszSoftmax(nn.Module):
    """Lovász-Softmax loss, a convex surrogate that optimises the mean IoU directly.

    Berman, Rannen Triki & Blaschko, "The Lovász-Softmax loss", CVPR 2018. For each class the
    pixel errors ``|g_c - p_c|`` are sorted in decreasing order and dotted with the gradient of
    the Lovász extension of the Jaccard loss (:func:`_lovasz_grad`).

    Args:
        per_image: average the loss over images (as in the paper's Pascal VOC runs) instead of
            computing it once over the whole batch.
        classes: ``"present"`` (classes in the target; the authors' default), ``"all"``, or a list
            of class indices.
        ignore_index: target value that does not count.
    """

    def __init__(self, per_image: bool = False, classes: str | Sequence[int] = "present",
                 ignore_index: int = 255):
        super().__init__()
        if isinstance(classes, str) and classes not in ("present", "all"):
            raise ValueError(f"classes must be 'present', 'all' or a list, got '{classes}'")
        self.per_image = bool(per_image)
        self.classes = classes
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = _prepare(logits, target)
        n, c = logits.shape[:2]
        prob, onehot, valid = _probs_onehot(logits, target, self.ignore_index)
        # Ignored pixels get error 0 and fg 0: they sort after every pixel with a nonzero error,
        # so the weights of the pixels that matter are unchanged and no boolean gather is needed.
        err = (onehot - prob).abs() * valid                                   # (N, C, H, W)
        if self.per_image:
            groups, err, fg = n, err.reshape(n, c, -1), onehot.reshape(n, c, -1)
        else:  # one group holding every pixel of the batch, class-major
            groups = 1
            err = err.transpose(0, 1).reshape(1, c, -1)                      # (1, C, N*H*W)
            fg = onehot.transpose(0, 1).reshape(1, c, -1)
        err_sorted, order = err.sort(-1, descending=True)
        grad = _lovasz_grad(fg.gather(-1, order))
        loss = (err_sorted * grad).sum(-1)                                    # (G, C)

        has_pixels = valid.reshape(groups, -1).any(-1, keepdim=True)          # (G, 1)
        if self.classes == "present":
            use = fg.sum(-1) > 0
        elif self.classes == "all":
            use = has_pixels.expand(groups, c)
        else:
            use = torch.zeros(groups, c, dtype=torch.bool, device=logits.device)
            use[:, list(self.classes)] = True
            use &= has_pixels
        use = use.to(loss.dtype)
        per_group = _safe_div((loss * use).sum(-1), use.sum(-1))              # (G,)
        counted = (use.sum(-1) > 0).to(loss.dtype)
        return _safe_div((per_group * counted).sum(), counted.sum())


# --------------------------------------------------------------------------- combining

class CombinedLoss(nn.Module):
    """Weighted sum of losses, e.g. ``CombinedLoss([(CrossEntropy(), 1.0), (LovaszSoftmax(), 0.5)])``."""

    def __init__(self, terms: Sequence[tuple[nn.Module, float]]):
        super().__init__()
        if not terms:
            raise ValueError("CombinedLoss needs at least one (loss, weight) term")
        self.losses = nn.ModuleList([t[0] for t in terms])
        self.weights = [float(t[1]) for t in terms]

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(w * loss(logits, target) for loss, w in zip(self.losses, self.weights))


class DeepSupervisionLoss(nn.Module):
    """Main loss plus weighted auxiliary-head losses (PSPNet, ICNet, BiSeNet style).

    Auxiliary logits at a lower resolution are upsampled bilinearly (``align_corners=False``, the
    same :func:`resize_to` the models use) to the target size, rather than the target being
    downsampled: nearest-neighbour downsampling of labels erases thin classes (poles, signs) and
    breaks ``ignore_index`` borders, while upsampled logits keep every labelled pixel in play.

    Args:
        base_loss: loss applied to the main and to every auxiliary output.
        aux_weights: one weight per auxiliary output.
    """

    def __init__(self, base_loss: nn.Module, aux_weights: Sequence[float]):
        super().__init__()
        self.base_loss = base_loss
        self.aux_weights = [float(w) for w in aux_weights]

    def forward(self, output, target: torch.Tensor) -> torch.Tensor:
        """Loss of ``output``: a tensor (eval mode, no auxiliary heads ran: main loss only) or a
        tuple ``(main, *aux)`` whose aux count must match ``aux_weights``."""
        if isinstance(output, torch.Tensor):
            return self.base_loss(output, target)
        main, *aux = output
        if len(aux) != len(self.aux_weights):
            raise ValueError(f"model returned {len(aux)} auxiliary outputs but "
                             f"{len(self.aux_weights)} aux_weights were given")
        if main.shape[-2:] != target.shape[-2:]:
            raise ValueError(f"main logits {tuple(main.shape)} must be at the target size "
                             f"{tuple(target.shape[-2:])}")
        total = self.base_loss(main, target)
        for w, a in zip(self.aux_weights, aux):
            total = total + w * self.base_loss(resize_to(a, target.shape[-2:]), target)
        return total


LOSSES: dict[str, type[nn.Module]] = {
    "ce": CrossEntropy,
    "ohem": OhemCrossEntropy,
    "focal": FocalLoss,
    "dice": SoftDiceLoss,
    "jaccard": SoftJaccardLoss,
    "lovasz": LovaszSoftmax,
}


def build_loss(name: str | Sequence[dict], **kwargs) -> nn.Module:
    """Builds a loss by name, or a weighted sum from a list of terms.

    Args:
        name: a key of :data:`LOSSES`, or a list of dicts such as
            ``[{"name": "ohem", "weight": 1.0}, {"name": "lovasz", "weight": 0.5}]`` (other keys
            of a dict are that loss's arguments).
        **kwargs: arguments of the loss; for a list, defaults shared by every term (e.g.
            ``ignore_index``) that a term's own keys override.

    Raises:
        UnknownModelError (a ValueError): unknown loss name, with the valid names.
        TypeError: an argument that the loss does not take.
    """
    if isinstance(name, str):
        check_name(name, list(LOSSES), "loss")
        return LOSSES[name](**kwargs)
    terms = []
    for spec in name:
        spec = dict(spec)
        if "name" not in spec:
            raise ValueError(f"loss term {spec} has no 'name'")
        term_name, weight = spec.pop("name"), spec.pop("weight", 1.0)
        terms.append((build_loss(term_name, **{**kwargs, **spec}), weight))
    return CombinedLoss(terms)
