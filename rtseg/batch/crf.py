"""Fully-connected CRF refinement of class probabilities (Krähenbühl & Koltun, NIPS 2011), as
DeepLab v1/v2 (Chen et al., ICLR 2015 / TPAMI 2017) apply it after the network.

Energy: ``E(x) = sum_i U_i(x_i) + sum_{i<j} mu(x_i, x_j) k(f_i, f_j)`` with

* unary ``U_i(l) = -log p_i(l)`` from the (test-time-augmented) softmax probabilities;
* Potts compatibility ``mu(l, l') = [l != l']``;
* ``k = w_a exp(-|p_i-p_j|^2 / 2 theta_alpha^2 - |I_i-I_j|^2 / 2 theta_beta^2)`` (appearance:
  nearby pixels of similar colour tend to share a label) ``+ w_s exp(-|p_i-p_j|^2 / 2
  theta_gamma^2)`` (smoothness: removes small isolated regions).

Mean-field inference repeats ``Q <- softmax(log p + sum_m w_m K_m Q)``: with Potts, the message a
pixel gets for label ``l`` is the kernel-weighted mass of ``l`` around it (the ``-w`` for every
*other* label differs from it by a per-pixel constant, which the softmax removes). As in
Krähenbühl's released code, which DeepLab used, each kernel is normalized per pixel (its
weights around a pixel, itself included as in that code, sum to 1), so the weights are relative
to a unit of neighbour agreement rather than to the number of pixels in the image.

Exact filtering with the appearance kernel is O(N^2) for N pixels (3 * 10^10 pairs at 360x480).
It is approximated the way the paper does, with the **permutohedral lattice** (Adams, Baek &
Davis, Eurographics 2010): each pixel's 5-D feature (x, y, r, g, b scaled by the thetas) is
splatted onto the d+1 vertices of its enclosing simplex with barycentric weights, the lattice is
blurred with a [1 2 1] kernel along each of its d+1 axes, and values are sliced back with the
same weights. Cost is O(N d^2) and independent of theta_alpha; the approximation's kernel is a
slightly non-isotropic near-Gaussian (``tests/test_batch.py`` compares it with brute force). The
smoothness kernel is a plain spatial Gaussian, so it is computed exactly with a separable
convolution instead.

Cost on one CPU thread at 360x480 with 11 classes and 10 iterations: about 0.4 s to build the
lattice and 25-40 ms per iteration, 0.6-1.3 s in all; memory about 1.2 GB per megapixel.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import cv2
import numpy as np
import torch

from rtseg.errors import RtsegError

# Defaults (DeepLab). The smoothness kernel is fixed in both DeepLab papers to w = 3, theta_gamma
# = 3 px; the appearance kernel is the setting the DeepLab v2 authors released for their
# ResNet-101 PASCAL VOC model (bi_w 4, bi_xy_std 67, bi_rgb_std 3), chosen there by
# cross-validation on val images; 10 mean-field iterations as in both papers. RGB distances are
# on 0..255 values, positions in pixels of the image the CRF runs on.
DEFAULTS = {"w_appearance": 4.0, "theta_alpha": 67.0, "theta_beta": 3.0,
            "w_smooth": 3.0, "theta_gamma": 3.0, "iterations": 10}


@dataclass(frozen=True)
class CRFParams:
    """Kernel weights, widths and iterations; defaults from DeepLab (see :data:`DEFAULTS`)."""

    w_appearance: float = DEFAULTS["w_appearance"]
    theta_alpha: float = DEFAULTS["theta_alpha"]
    theta_beta: float = DEFAULTS["theta_beta"]
    w_smooth: float = DEFAULTS["w_smooth"]
    theta_gamma: float = DEFAULTS["theta_gamma"]
    iterations: int = DEFAULTS["iterations"]

    def __post_init__(self):
        if self.iterations < 1:
            raise RtsegError(f"--crf-iters must be >= 1, got {self.iterations}")
        for name in ("theta_alpha", "theta_beta", "theta_gamma"):
            if not getattr(self, name) > 0:
                raise RtsegError(f"CRF {name} must be > 0, got {getattr(self, name)}")
        if self.w_appearance < 0 or self.w_smooth < 0:
            raise RtsegError("CRF kernel weights must be >= 0")

    def to_dict(self) -> dict:
        return asdict(self)


class Permutohedral:
    """Gaussian filtering ``out_i = sum_j exp(-|f_i - f_j|^2 / 2) v_j`` (approximately) of values
    attached to N points with d-dimensional features already divided by their standard deviations.

    The lattice depends on the features only, so it is built once per image and reused by every
    mean-field iteration; splatting, each axis of the blur and slicing are then sparse matrix
    products (torch's CSR kernels are several times faster than numpy scatter-adds here).

    Args:
        features: (N, d) float array.
    """

    def __init__(self, features: np.ndarray):
        n, d = features.shape
        self.n, self.d = n, d
        f = np.asarray(features, np.float64)
        # Elevate onto the hyperplane sum(x) = 0 in d+1 dimensions (the matrix E of Adams et al.),
        # scaled so that the lattice blur below matches a unit-variance Gaussian.
        inv_std = math.sqrt(2.0 / 3.0) * (d + 1)
        cf = f * (inv_std / np.sqrt((np.arange(d) + 1.0) * (np.arange(d) + 2.0)))   # (N, d)
        elevated = np.zeros((n, d + 1))
        elevated[:, :d] = np.cumsum(cf[:, ::-1], axis=1)[:, ::-1]                    # sum_{k>=j} cf_k
        elevated[:, 1:] -= np.arange(1, d + 1) * cf                                  # (N, d+1)

        # Nearest "remainder-0" lattice point by rounding, then the simplex containing the point
        # from the ordering of the residuals (rank 0 = largest; ties: lower index first), fixed
        # so that the point lies in the plane.
        down = np.round(elevated / (d + 1))
        rem0 = (down * (d + 1)).astype(np.int64)
        total = down.sum(1).astype(np.int64)
        res = elevated - rem0
        before = np.tril(np.ones((d + 1, d + 1), bool), -1)                          # j < i
        rank = ((res[:, None, :] > res[:, :, None]) |
                ((res[:, None, :] == res[:, :, None]) & before)).sum(2) + total[:, None]
        low, high = rank < 0, rank > d
        rank[low] += d + 1
        rem0[low] += d + 1
        rank[high] -= d + 1
        rem0[high] -= d + 1

        # Barycentric coordinates of the point in its simplex.
        v = (elevated - rem0) / (d + 1)
        bary = np.zeros((n, d + 2))
        np.put_along_axis(bary, d - rank, v, axis=1)
        minus = np.zeros((n, d + 2))
        np.put_along_axis(minus, d - rank + 1, -v, axis=1)
        bary += minus
        bary[:, 0] += 1.0 + bary[:, d + 1]
        weights = bary[:, :d + 1]                                                    # (N, d+1)

        # Vertex r of the simplex is rem0 + canonical[r][rank], canonical[r][k] = r - (d+1)[k > d-r];
        # only d coordinates are kept (the last follows from the plane), packed into one int64
        # code so that finding and numbering the vertices is a 1-D sort.
        margin = 2 * (d + 1)   # vertex and neighbour coordinates stay this close to rem0
        lo = rem0[:, :d].min(0) - margin
        radix = rem0[:, :d].max(0) + margin - lo + 1
        if math.prod(int(x) for x in radix) >= 2 ** 62:
            raise RtsegError("CRF features span too wide a range for the lattice; "
                             "use larger theta_alpha / theta_beta")
        mult = _place_values(radix)
        r = np.arange(d + 1)
        base = (rem0[:, :d] - lo) @ mult                                             # (N,)
        above = (rank[:, None, :d] > d - r[None, :, None])                           # (N, d+1, d)
        codes = base[:, None] + r * mult.sum() - (d + 1) * (above @ mult)            # (N, d+1)
        codes = codes.ravel()
        # One stable sort numbers the vertices and orders the splat matrix (by vertex, pixels
        # ascending within one).
        by_vertex = np.argsort(codes, kind="stable")
        sorted_codes = codes[by_vertex]
        first = np.r_[True, sorted_codes[1:] != sorted_codes[:-1]]
        lattice = sorted_codes[first]
        inverse = np.empty(len(codes), np.int64)
        inverse[by_vertex] = np.cumsum(first) - 1
        m = len(lattice)
        self.m = m

        # Neighbours along each of the d+1 lattice axes: -1 on every coordinate except +d on the
        # axis (and the mirror image); axis d changes every kept coordinate by one.
        blurs = []
        for j in range(d + 1):
            step = mult.sum() - (d + 1) * (mult[j] if j < d else 0)
            rows, cols, vals = [np.arange(m)], [np.arange(m)], [np.ones(m)]
            for nb in (lattice - step, lattice + step):
                at = np.minimum(np.searchsorted(lattice, nb), m - 1)
                found = np.flatnonzero(lattice[at] == nb)  # absent neighbours add nothing
                rows.append(found)
                cols.append(at[found])
                vals.append(np.full(len(found), 0.5))
            rows, cols, vals = (np.concatenate(a) for a in (rows, cols, vals))
            order = np.lexsort((cols, rows))
            blurs.append(_csr(rows[order], cols[order], vals[order], (m, m)))
        self.blurs = blurs
        # Splat (M, N) and slice (N, M) with the barycentric weights.
        weights = weights.ravel()
        pixel = np.arange(n).repeat(d + 1)
        self.splat = _csr(inverse[by_vertex], pixel[by_vertex], weights[by_vertex], (m, n))
        self.slice = _csr(pixel, inverse, weights, (n, m))

    def filter(self, values: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """(N, C) -> (N, C) float32 of the same kind: splat, blur along every axis, slice
        (unnormalized)."""
        if isinstance(values, np.ndarray):
            return self.filter(torch.from_numpy(np.ascontiguousarray(values, np.float32))).numpy()
        grid = self.splat @ values.float().contiguous()                              # (M, C)
        for b in self.blurs:
            grid = b @ grid
        return self.slice @ grid


def _place_values(radix: np.ndarray) -> np.ndarray:
    """Mixed-radix place values, most significant first: (r1 r2 r3) -> (r2 r3, r3, 1)."""
    return np.cumprod(np.r_[radix[1:], 1][::-1])[::-1].astype(np.int64)


def _csr(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """A float32 CSR matrix from COO entries sorted by row."""
    crow = torch.zeros(size[0] + 1, dtype=torch.int64)
    crow[1:] = torch.from_numpy(np.cumsum(np.bincount(rows, minlength=size[0])))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta": it is used read-only here
        return torch.sparse_csr_tensor(crow, torch.from_numpy(np.asarray(cols, np.int64)),
                                       torch.from_numpy(np.asarray(vals, np.float32)), size,
                                       check_invariants=False)


def _gauss_blur(values: np.ndarray, sigma: float) -> np.ndarray:
    """Exact spatial Gaussian over (H, W, C), zero outside the image (no mirrored pixels)."""
    radius = max(1, int(math.ceil(3 * sigma)))
    k = np.exp(-np.arange(-radius, radius + 1) ** 2 / (2 * sigma ** 2)).astype(np.float32)
    return cv2.sepFilter2D(values, cv2.CV_32F, k, k, borderType=cv2.BORDER_CONSTANT)


def _channels(x: np.ndarray, fn) -> np.ndarray:
    """Applies an OpenCV filter to (H, W, C) in groups of 64 channels (OpenCV 5 allows at most
    128 per array; it also drops the channel axis of a one-channel result)."""
    if x.shape[2] <= 64:
        return np.atleast_3d(fn(x))
    return np.concatenate([np.atleast_3d(fn(np.ascontiguousarray(x[..., k:k + 64])))
                           for k in range(0, x.shape[2], 64)], axis=2)


def dense_crf(probs: np.ndarray, image_rgb: np.ndarray, params: CRFParams = CRFParams()) -> np.ndarray:
    """Mean-field inference of the fully-connected CRF.

    Args:
        probs: (C, H, W) class probabilities (each pixel sums to 1).
        image_rgb: (H, W, 3) uint8, the image at the same resolution.
        params: kernel settings.

    Returns:
        (C, H, W) float32 marginals Q; take ``argmax(0)`` for the labels.
    """
    c, h, w = probs.shape
    if image_rgb.shape[:2] != (h, w):
        raise ValueError(f"image {image_rgb.shape[:2]} and probabilities {(h, w)} differ in size")
    p = np.ascontiguousarray(np.asarray(probs, np.float32).transpose(1, 2, 0))     # (H, W, C)
    log_p = torch.from_numpy(np.log(np.clip(p, 1e-8, 1.0)).reshape(-1, c))          # -unary
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    feats = np.concatenate([np.stack([xs, ys], -1) / params.theta_alpha,
                            image_rgb.astype(np.float32) / params.theta_beta], -1).reshape(-1, 5)
    lattice = Permutohedral(feats) if params.w_appearance > 0 else None
    # Per-pixel normalization: each kernel's weights around a pixel sum to one.
    if lattice is not None:
        norm_a = params.w_appearance / lattice.filter(torch.ones(h * w, 1))                  # (N, 1)

    def smooth(q: torch.Tensor) -> torch.Tensor:  # (N, C') -> (N, C'), zero-copy to OpenCV and back
        out = _channels(q.numpy().reshape(h, w, -1), lambda y: _gauss_blur(y, params.theta_gamma))
        return torch.from_numpy(out.reshape(h * w, -1))

    norm_s = params.w_smooth / smooth(torch.ones(h * w, 1))

    q = torch.from_numpy(p.reshape(-1, c))
    for _ in range(params.iterations):
        energy = log_p.clone()
        if lattice is not None:
            energy += norm_a * lattice.filter(q)
        if params.w_smooth > 0:
            energy += norm_s * smooth(q)
        q = energy.softmax(1)
    return np.ascontiguousarray(q.numpy().reshape(h, w, c).transpose(2, 0, 1))


__all__ = ["CRFParams", "DEFAULTS", "Permutohedral", "dense_crf"]
