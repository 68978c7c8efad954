"""Joint image/mask transforms in numpy and OpenCV.

Every transform is a callable ``t(image, mask, rng) -> (image, mask)``:

* ``image`` is an H x W x 3 **RGB** uint8 array until :class:`Normalize` turns it into float32;
* ``mask`` is an H x W integer label map (uint8 as the datasets produce it) or ``None`` when there
  is no label (video frames); geometric transforms move it with the image, photometric ones leave
  it alone;
* ``rng`` is a :class:`numpy.random.Generator`. Random transforms draw every random number from it
  and refuse to run without one, so that a seeded generator reproduces an augmentation exactly.
  Datasets pass their own per-worker generator (see :class:`rtseg.data.datasets.SegDataset`).

Mean and std are in [0, 1] units: ``Normalize`` computes ``(image / 255 - mean) / std``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# OpenCV's INTER_NEAREST samples at floor(x * scale) and so shifts the mask by up to half a
# pixel against the INTER_LINEAR image; INTER_NEAREST_EXACT uses pixel centres like the image.
MASK_INTERP = cv2.INTER_NEAREST_EXACT

Array = np.ndarray
Transform = Callable[[Array, "Array | None", "np.random.Generator | None"], tuple]


def _need_rng(rng: np.random.Generator | None, who: str) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"{who} is random and needs a numpy.random.Generator, got {type(rng).__name__}")
    return rng


def _pair(size: int | Sequence[int], what: str) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h < 1 or w < 1:
        raise ValueError(f"{what} must be positive, got {size}")
    return int(h), int(w)


def _mask_for_cv2(mask: Array) -> Array:
    """cv2.resize does not take int64; every label value we use fits in uint8."""
    if mask.dtype == np.uint8:
        return mask
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise ValueError(f"mask values must lie in 0..255 to be resized, got {mask.min()}..{mask.max()}")
    return mask.astype(np.uint8)


def _resize(image: Array, mask: Array | None, h: int, w: int) -> tuple[Array, Array | None]:
    if image.shape[:2] == (h, w):
        return image, mask
    image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    if mask is not None:
        mask = cv2.resize(_mask_for_cv2(mask), (w, h), interpolation=MASK_INTERP)
    return image, mask


class Compose:
    """Applies transforms in order, threading the same generator through all of them."""

    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = list(transforms)

    def __call__(self, image, mask=None, rng=None):
        for t in self.transforms:
            image, mask = t(image, mask, rng)
        return image, mask

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(repr(t) for t in self.transforms) + ")"


class RandomScale:
    """Rescales image and mask by one factor drawn uniformly from ``[min_scale, max_scale]``."""

    def __init__(self, min_scale: float, max_scale: float):
        if not 0 < min_scale <= max_scale:
            raise ValueError(f"need 0 < min_scale <= max_scale, got {min_scale}, {max_scale}")
        self.min_scale, self.max_scale = float(min_scale), float(max_scale)

    def __call__(self, image, mask=None, rng=None):
        s = _need_rng(rng, "RandomScale").uniform(self.min_scale, self.max_scale)
        h, w = image.shape[:2]
        return _resize(image, mask, max(1, round(h * s)), max(1, round(w * s)))

    def __repr__(self) -> str:
        return f"RandomScale({self.min_scale}, {self.max_scale})"


class RandomCrop:
    """Crops a random ``(h, w)`` window; a side shorter than the crop is padded instead.

    The image is placed at a random offset on a canvas filled with ``fill`` (an RGB uint8 colour;
    :func:`train_transform` passes the dataset mean so padding normalizes to ~0) and the mask's
    padding is ``ignore_index`` so it never reaches the loss.

    Rare-class focus: with probability ``focus_p``, when the mask holds any of ``focus_classes``,
    one of those present is drawn uniformly, then one of its pixels, and the window is drawn among
    those containing that pixel. Thin, rare classes (poles, signs, cyclists) cover about 1 % or less of
    CamVid's pixels, so uniform crops of a quarter frame often hold none of them; a small network
    trained from scratch then never learns to predict them. (Sampling by rare class follows the
    idea of DAFormer's rare-class sampling, Hoyer et al. 2022, applied to the crop window.)
    """

    def __init__(self, h: int, w: int, ignore_index: int, fill: Sequence[int] = (0, 0, 0),
                 focus_classes: Sequence[int] = (), focus_p: float = 0.0):
        self.h, self.w = _pair((h, w), "crop size")
        self.ignore_index = int(ignore_index)
        self.fill = tuple(int(v) for v in fill)
        if not 0.0 <= focus_p <= 1.0:
            raise ValueError(f"focus_p must lie in [0, 1], got {focus_p}")
        self.focus_classes = tuple(int(c) for c in focus_classes)
        self.focus_p = float(focus_p) if self.focus_classes else 0.0

    @staticmethod
    def _window(size: int, crop: int, rng: np.random.Generator,
                must_hold: int | None = None) -> tuple[int, int, int]:
        """(source start, canvas start, length) along one axis; the window holds ``must_hold``."""
        if size >= crop:
            lo, hi = 0, size - crop
            if must_hold is not None:
                lo, hi = max(lo, must_hold - crop + 1), min(hi, must_hold)
            return int(rng.integers(lo, hi + 1)), 0, crop
        return 0, int(rng.integers(0, crop - size + 1)), size

    def _focus_pixel(self, mask: Array | None, rng: np.random.Generator) -> tuple[int | None, int | None]:
        """A pixel (y, x) of a randomly chosen focus class present in ``mask``, or (None, None)."""
        # No draw at all when focus is off, so seeded runs without it augment exactly as before.
        if not self.focus_p or mask is None or rng.random() >= self.focus_p:
            return None, None
        present = [c for c in self.focus_classes if (mask == c).any()]
        if not present:
            return None, None
        ys, xs = np.nonzero(mask == present[int(rng.integers(len(present)))])
        k = int(rng.integers(len(ys)))
        return int(ys[k]), int(xs[k])

    def __call__(self, image, mask=None, rng=None):
        rng = _need_rng(rng, "RandomCrop")
        h, w = image.shape[:2]
        fy, fx = self._focus_pixel(mask, rng)
        sy, dy, ly = self._window(h, self.h, rng, fy)
        sx, dx, lx = self._window(w, self.w, rng, fx)
        if h >= self.h and w >= self.w:  # the common case: a view, no copy
            image = image[sy:sy + ly, sx:sx + lx]
            mask = None if mask is None else mask[sy:sy + ly, sx:sx + lx]
            return image, mask
        canvas = np.empty((self.h, self.w, image.shape[2]), image.dtype)
        canvas[...] = np.asarray(self.fill, image.dtype)
        canvas[dy:dy + ly, dx:dx + lx] = image[sy:sy + ly, sx:sx + lx]
        if mask is not None:
            padded = np.full((self.h, self.w), self.ignore_index, mask.dtype)
            padded[dy:dy + ly, dx:dx + lx] = mask[sy:sy + ly, sx:sx + lx]
            mask = padded
        return canvas, mask

    def __repr__(self) -> str:
        focus = f", focus_classes={list(self.focus_classes)}, focus_p={self.focus_p}" if self.focus_p else ""
        return f"RandomCrop({self.h}, {self.w}, ignore_index={self.ignore_index}{focus})"


class RandomHorizontalFlip:
    """Mirrors image and mask left-right with probability ``p``."""

    def __init__(self, p: float = 0.5):
        self.p = float(p)

    def __call__(self, image, mask=None, rng=None):
        if _need_rng(rng, "RandomHorizontalFlip").random() < self.p:
            image = image[:, ::-1]
            mask = None if mask is None else mask[:, ::-1]
        return image, mask

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class ColorJitter:
    """Random brightness, contrast, saturation and hue, in random order; the mask is untouched.

    Factors follow the usual convention: brightness ``b`` scales by a factor drawn from
    ``[max(0, 1 - b), 1 + b]`` (contrast and saturation likewise, blending towards the mean grey
    and the per-pixel grey), and ``hue`` in [0, 0.5] rotates hue by up to that fraction of a turn.
    """

    def __init__(self, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0,
                 hue: float = 0.0):
        for name, v in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
            if v < 0:
                raise ValueError(f"{name} must be >= 0, got {v}")
        if not 0 <= hue <= 0.5:
            raise ValueError(f"hue must lie in [0, 0.5], got {hue}")
        self.brightness, self.contrast = float(brightness), float(contrast)
        self.saturation, self.hue = float(saturation), float(hue)

    @staticmethod
    def _gray(img: Array) -> Array:
        return img @ np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601 luma, RGB order

    def _factor(self, rng: np.random.Generator, amount: float) -> float:
        return float(rng.uniform(max(0.0, 1.0 - amount), 1.0 + amount))

    def __call__(self, image, mask=None, rng=None):
        rng = _need_rng(rng, "ColorJitter")
        img = image.astype(np.float32)
        for op in rng.permutation(4):
            if op == 0 and self.brightness > 0:
                img = img * self._factor(rng, self.brightness)
            elif op == 1 and self.contrast > 0:
                m = float(self._gray(img).mean())
                img = (img - m) * self._factor(rng, self.contrast) + m
            elif op == 2 and self.saturation > 0:
                g = self._gray(img)[..., None]
                img = (img - g) * self._factor(rng, self.saturation) + g
            elif op == 3 and self.hue > 0:
                # HSV_FULL spreads hue over 0..255, so a fraction of a turn is a uint8 offset.
                shift = round(rng.uniform(-self.hue, self.hue) * 256)
                hsv = cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV_FULL)
                hsv[..., 0] = (hsv[..., 0].astype(np.int16) + shift) % 256
                img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL).astype(np.float32)
            img = np.clip(img, 0, 255)
        return np.rint(img).astype(np.uint8), mask

    def __repr__(self) -> str:
        return f"ColorJitter({self.brightness}, {self.contrast}, {self.saturation}, {self.hue})"


class _Sometimes:
    """A photometric effect applied with probability ``p``; subclasses give ``apply(image, rng)``.
    The mask is never touched."""

    p: float

    def __call__(self, image, mask=None, rng=None):
        rng = _need_rng(rng, type(self).__name__)
        if rng.random() >= self.p:
            return image, mask
        return self.apply(image, rng), mask

    def apply(self, image: Array, rng: np.random.Generator) -> Array:
        raise NotImplementedError


class RandomGamma(_Sometimes):
    """``255 * (x / 255) ** g`` with ``g`` log-uniform in ``[lo, hi]``: exposure and tone curves
    differ between cameras far more than a linear brightness factor models (shadows lift or sink
    while highlights stay)."""

    def __init__(self, lo: float = 0.7, hi: float = 1.5, p: float = 0.5):
        if not 0 < lo <= hi:
            raise ValueError(f"gamma range must satisfy 0 < lo <= hi, got {lo}, {hi}")
        self.lo, self.hi, self.p = float(lo), float(hi), float(p)

    def apply(self, image, rng):
        g = float(np.exp(rng.uniform(np.log(self.lo), np.log(self.hi))))
        table = np.rint(255.0 * (np.arange(256) / 255.0) ** g).astype(np.uint8)
        return table[image]  # one lookup per pixel

    def __repr__(self) -> str:
        return f"RandomGamma({self.lo}, {self.hi}, p={self.p})"


class RandomBlur(_Sometimes):
    """A Gaussian blur of sigma uniform in ``(0.3, max_sigma]`` pixels: defocus, a dirty
    windscreen and the softer optics of cheap dashcams."""

    def __init__(self, max_sigma: float = 1.5, p: float = 0.3):
        if max_sigma <= 0.3:
            raise ValueError(f"max_sigma must exceed 0.3, got {max_sigma}")
        self.max_sigma, self.p = float(max_sigma), float(p)

    def apply(self, image, rng):
        return cv2.GaussianBlur(image, (0, 0), sigmaX=float(rng.uniform(0.3, self.max_sigma)))

    def __repr__(self) -> str:
        return f"RandomBlur(max_sigma={self.max_sigma}, p={self.p})"


class RandomNoise(_Sometimes):
    """Additive Gaussian noise of std uniform in ``[0, max_std]`` grey levels per pixel and
    channel: sensor noise of small sensors at dusk."""

    def __init__(self, max_std: float = 8.0, p: float = 0.3):
        if max_std <= 0:
            raise ValueError(f"max_std must be positive, got {max_std}")
        self.max_std, self.p = float(max_std), float(p)

    def apply(self, image, rng):
        std = float(rng.uniform(0.0, self.max_std))
        noisy = image.astype(np.float32) + rng.standard_normal(image.shape, dtype=np.float32) * std
        return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)

    def __repr__(self) -> str:
        return f"RandomNoise(max_std={self.max_std}, p={self.p})"


class RandomJpeg(_Sometimes):
    """A JPEG round trip at a quality uniform in ``[lo, hi]``: the block and ringing artefacts of
    compressed dashcam and stream footage, which CamVid's PNGs lack."""

    def __init__(self, lo: int = 30, hi: int = 90, p: float = 0.3):
        if not 1 <= lo <= hi <= 100:
            raise ValueError(f"JPEG quality range must satisfy 1 <= lo <= hi <= 100, got {lo}, {hi}")
        self.lo, self.hi, self.p = int(lo), int(hi), float(p)

    def apply(self, image, rng):
        quality = int(rng.integers(self.lo, self.hi + 1))
        # The codec works on BGR; the round trip must come back in the channel order it went in.
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise RuntimeError("OpenCV could not encode a JPEG")
        return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

    def __repr__(self) -> str:
        return f"RandomJpeg({self.lo}, {self.hi}, p={self.p})"


# ``appearance:`` keys of a training recipe -> the transform each builds (its arguments as a mapping).
APPEARANCE = {"gamma": RandomGamma, "blur": RandomBlur, "noise": RandomNoise, "jpeg": RandomJpeg}


def appearance_transforms(spec: dict | None) -> list[Transform]:
    """``{"gamma": {"lo": 0.7, "hi": 1.5, "p": 0.5}, "jpeg": {...}}`` -> transforms in a fixed
    order (tone, blur, noise, compression: the order a camera applies them).

    Raises:
        ValueError: an unknown key or argument (with a "did you mean" suggestion for keys).
    """
    import difflib
    import inspect

    spec = dict(spec or {})
    for key in spec:
        if key not in APPEARANCE:
            close = difflib.get_close_matches(str(key), list(APPEARANCE), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ValueError(f"appearance: unknown key '{key}'{hint}; valid: {', '.join(APPEARANCE)}")
    out = []
    for key, cls in APPEARANCE.items():
        if key in spec:
            args = spec[key] or {}
            allowed = list(inspect.signature(cls).parameters)
            bad = [a for a in args if a not in allowed]
            if bad:
                raise ValueError(f"appearance.{key}: unknown argument {', '.join(bad)}; valid: {', '.join(allowed)}")
            out.append(cls(**args))
    return out


class Resize:
    """Resizes to a fixed ``(h, w)``: bilinear for the image, nearest for the mask."""

    def __init__(self, h: int, w: int):
        self.h, self.w = _pair((h, w), "resize size")

    def __call__(self, image, mask=None, rng=None):
        return _resize(image, mask, self.h, self.w)

    def __repr__(self) -> str:
        return f"Resize({self.h}, {self.w})"


class Normalize:
    """uint8 RGB -> float32 ``(image / 255 - mean) / std``, per channel."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.mean = np.asarray(mean, np.float32).reshape(3)
        self.std = np.asarray(std, np.float32).reshape(3)
        if np.any(self.std <= 0):
            raise ValueError(f"std must be positive, got {std}")
        # Folded into one multiply-add per pixel: x * scale + shift.
        self._scale = 1.0 / (255.0 * self.std)
        self._shift = -self.mean / self.std

    def __call__(self, image, mask=None, rng=None):
        if image.dtype != np.uint8:
            raise TypeError(f"Normalize expects a uint8 image, got {image.dtype}")
        return image.astype(np.float32) * self._scale + self._shift, mask

    def __repr__(self) -> str:
        mean = [round(float(v), 4) for v in self.mean]
        std = [round(float(v), 4) for v in self.std]
        return f"Normalize(mean={mean}, std={std})"


class ToTensor:
    """float32 H x W x 3 image -> (3, H, W) float32 tensor; mask -> (H, W) int64 tensor."""

    def __call__(self, image, mask=None, rng=None):
        if image.dtype != np.float32:
            raise TypeError(f"ToTensor expects a float32 (normalized) image, got {image.dtype}; "
                            "put Normalize before it")
        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if mask is not None:
            mask = torch.from_numpy(np.ascontiguousarray(mask).astype(np.int64))
        return tensor, mask

    def __repr__(self) -> str:
        return "ToTensor()"


def train_transform(crop_size: int | Sequence[int], scale_range: Sequence[float] = (0.5, 2.0),
                    mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD, *,
                    ignore_index: int, hflip: float = 0.5,
                    jitter: Sequence[float] | None = (0.3, 0.3, 0.3, 0.0),
                    focus_classes: Sequence[int] = (), focus_p: float = 0.0,
                    appearance: dict | None = None) -> Compose:
    """Standard training augmentation: scale, crop (pad), flip, colour jitter, camera appearance
    (optional), normalize.

    Args:
        crop_size: ``(h, w)`` of the crops (an int for a square).
        scale_range: ``(min, max)`` random rescale factor, applied before cropping.
        mean: RGB mean in [0, 1] units; padding uses this colour so it normalizes to ~0.
        std: RGB std in [0, 1] units.
        ignore_index: label written into padded mask pixels.
        hflip: probability of a horizontal flip.
        jitter: ``(brightness, contrast, saturation, hue)`` for :class:`ColorJitter`, or ``None``.
        focus_classes: class ids that :class:`RandomCrop` centres crops on with probability ``focus_p``.
        focus_p: probability of a rare-class crop (0 = uniform crops only).
        appearance: gamma / blur / noise / JPEG settings (see :func:`appearance_transforms`),
            applied after the colour jitter; ``None`` adds none.
    """
    h, w = _pair(crop_size, "crop_size")
    fill = [int(round(255 * m)) for m in mean]
    ts: list[Transform] = [RandomScale(*scale_range), RandomCrop(h, w, ignore_index, fill, focus_classes, focus_p),
                           RandomHorizontalFlip(hflip)]
    if jitter is not None and any(jitter):
        ts.append(ColorJitter(*jitter))
    ts += appearance_transforms(appearance)
    ts += [Normalize(mean, std), ToTensor()]
    return Compose(ts)


def val_transform(mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                  size: int | Sequence[int] | None = None) -> Compose:
    """Deterministic evaluation transform: optional :class:`Resize` to ``size`` ``(h, w)``, then
    normalize. With a ``size`` the mask is resized too; score at the original resolution with the
    dataset's ``load_raw`` instead."""
    ts: list[Transform] = [] if size is None else [Resize(*_pair(size, "size"))]
    return Compose(ts + [Normalize(mean, std), ToTensor()])
