"""Datasets, joint transforms and dataset configs.

CamVid tests read the real frames of the repository's fixture (``tests/data/camvid``); the one
that checks the whole split's sizes reads ``shared/data/camvid`` beside the repository
(``camvid_full``). Everything else builds tiny fixtures in ``tmp_path``.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from conftest import CAMVID, CAMVID_FULL
from rtseg.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CamVid,
    Cityscapes,
    ColorJitter,
    Compose,
    DatasetError,
    FolderDataset,
    RandomCrop,
    RandomHorizontalFlip,
    RandomScale,
    Resize,
    build_dataset,
    label_lut,
    read_image_rgb,
    train_transform,
    val_transform,
)

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "datasets"


@pytest.fixture(scope="module")
def camvid_root() -> Path:
    """The repository's 24-frame CamVid fixture (same layout and files as the real split)."""
    return CAMVID


def _write(path: Path, array: np.ndarray) -> Path:
    """Writes an RGB (H, W, 3) or label (H, W) array as PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = array[..., ::-1] if array.ndim == 3 else array  # cv2 writes BGR
    assert cv2.imwrite(str(path), np.ascontiguousarray(data))
    return path


def _colourful(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# --------------------------------------------------------------------------- configs

def _load(name: str) -> dict:
    with open(CONFIGS / f"{name}.yaml") as f:
        return yaml.safe_load(f)


CITYSCAPES_NAMES = ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
                    "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
                    "truck", "bus", "train", "motorcycle", "bicycle"]


def test_cityscapes_yaml():
    cfg = _load("cityscapes")
    assert list(cfg) == ["name", "num_classes", "ignore_index", "class_names", "colors", "label_map"]
    assert (cfg["name"], cfg["num_classes"], cfg["ignore_index"]) == ("cityscapes", 19, 255)
    assert cfg["class_names"] == CITYSCAPES_NAMES
    assert len(cfg["colors"]) == 19
    assert all(len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c) for c in cfg["colors"])
    assert cfg["colors"][0] == [128, 64, 128] and cfg["colors"][13] == [0, 0, 142]
    assert cfg["colors"][18] == [119, 11, 32] and cfg["colors"][10] == [70, 130, 180]
    lm = cfg["label_map"]
    assert set(lm) == set(range(34)) | {-1}
    for label_id, train_id in {7: 0, 8: 1, 11: 2, 24: 11, 26: 13, 33: 18, 0: 255, 9: 255,
                               18: 255, 29: 255, 23: 10, 31: 16, -1: 255}.items():
        assert lm[label_id] == train_id, label_id
    # Each train id 0..18 comes from exactly one label id; everything else is void.
    assert sorted(v for v in lm.values() if v != 255) == list(range(19))


def test_camvid_yaml():
    cfg = _load("camvid")
    city = _load("cityscapes")
    assert list(cfg) == ["name", "num_classes", "ignore_index", "class_names", "cityscapes_ids", "colors"]
    assert (cfg["name"], cfg["num_classes"], cfg["ignore_index"]) == ("camvid", 11, 11)
    assert cfg["class_names"] == ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol",
                                  "Fence", "Car", "Pedestrian", "Bicyclist"]
    assert cfg["cityscapes_ids"] == [10, 2, 5, 0, 1, 8, 7, 4, 13, 11, 18]
    assert [city["class_names"][i] for i in cfg["cityscapes_ids"]] == [
        "sky", "building", "pole", "road", "sidewalk", "vegetation", "traffic sign", "fence", "car",
        "person", "bicycle"]
    assert cfg["colors"] == [city["colors"][i] for i in cfg["cityscapes_ids"]]


# --------------------------------------------------------------------------- CamVid (real data)

@pytest.mark.camvid_full
def test_camvid_lengths():
    assert len(CamVid(CAMVID_FULL, "train")) == 367
    assert len(CamVid(CAMVID_FULL, "val")) == 101
    assert CamVid(CAMVID_FULL, "train").sequences() == {"0001TP": 62, "0006R0": 101, "0016E5": 204}
    ds = build_dataset("camvid", CAMVID_FULL, "val")
    assert isinstance(ds, CamVid) and len(ds) == 101
    assert all(i.stem == m.stem for i, m in ds.files)


def test_camvid_sample_and_labels(camvid_root):
    ds = CamVid(camvid_root, "val")
    image, mask = ds[0]
    assert image.shape == (3, 360, 480) and image.dtype == torch.float32
    assert mask.shape == (360, 480) and mask.dtype == torch.int64
    seen: set[int] = set()
    for i in range(len(ds)):
        seen |= set(np.unique(ds.load_raw(i)[1]).tolist())
    assert seen <= set(range(12))
    assert {0, 3, 11} <= seen  # sky, road and unlabelled occur in every sequence


def test_camvid_ignore_index_remap(camvid_root):
    raw = CamVid(camvid_root, "val").load_raw(0)[1]
    remapped = CamVid(camvid_root, "val", ignore_index=255).load_raw(0)[1]
    assert (raw == 11).any()
    np.testing.assert_array_equal(remapped, np.where(raw == 11, 255, raw))


def test_camvid_rgb_order(camvid_root):
    ds = CamVid(camvid_root, "train")
    rgb, _ = ds.load_raw(5)
    bgr = cv2.imread(str(ds.files[5][0]), cv2.IMREAD_COLOR)
    assert rgb.dtype == np.uint8 and rgb.shape == (360, 480, 3)
    np.testing.assert_array_equal(rgb, bgr[..., ::-1])
    assert not np.array_equal(rgb[..., 0], rgb[..., 2])  # a BGR mix-up would be visible


def test_camvid_normalization(camvid_root):
    mean, std = (0.3, 0.4, 0.5), (0.2, 0.25, 0.3)
    ds = CamVid(camvid_root, "val", transform=val_transform(mean, std))
    rgb, raw_mask = ds.load_raw(3)
    image, mask = ds[3]
    expected = (rgb.astype(np.float64) / 255 - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(image.numpy(), expected.transpose(2, 0, 1), atol=1e-5)
    np.testing.assert_array_equal(mask.numpy(), raw_mask)
    # transform=None normalizes with ImageNet statistics.
    default = CamVid(camvid_root, "val")[3][0].numpy()
    expected = (rgb / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(default, expected.transpose(2, 0, 1), atol=1e-5)


def test_camvid_errors(tmp_path, camvid_root):
    with pytest.raises(DatasetError, match="split"):
        CamVid(camvid_root, "tset")
    with pytest.raises(DatasetError, match="test"):  # the test split is not shipped here
        CamVid(camvid_root, "test")
    with pytest.raises(DatasetError, match=str(tmp_path / "nope")):
        CamVid(tmp_path / "nope", "train")


# --------------------------------------------------------------------------- Cityscapes (fixture)

def _cityscapes_fixture(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Two cities, 8x16 frames in the official layout; returns stem -> (rgb, labelIds)."""
    ids = np.array([7, 26, 0, 8, 24, 33, 4, 9, 11, 23, 1, 31, 19, 20, 21, 22], np.uint8)
    out = {}
    for k, (city, n) in enumerate([("aachen", "000000_000019"), ("aachen", "000001_000019"),
                                   ("bremen", "000000_000019")]):
        stem = f"{city}_{n}"
        labels = np.roll(np.tile(ids, (8, 1)), k, axis=1)
        labels[k] = 26
        rgb = _colourful(8, 16, seed=k)
        _write(root / "leftImg8bit" / "train" / city / f"{stem}_leftImg8bit.png", rgb)
        _write(root / "gtFine" / "train" / city / f"{stem}_gtFine_labelIds.png", labels)
        # Files of other kinds beside the labelIds must be ignored.
        _write(root / "gtFine" / "train" / city / f"{stem}_gtFine_color.png", rgb)
        out[stem] = (rgb, labels)
    return out


def test_cityscapes_train_ids(tmp_path):
    fixture = _cityscapes_fixture(tmp_path)
    label_map = _load("cityscapes")["label_map"]
    ds = Cityscapes(tmp_path, "train", label_map=label_map)
    assert len(ds) == 3
    assert [p.parent.name for p, _ in ds.files] == ["aachen", "aachen", "bremen"]
    for i, (image_path, mask_path) in enumerate(ds.files):
        stem = image_path.name[:-len("_leftImg8bit.png")]
        assert mask_path.name == f"{stem}_gtFine_labelIds.png"
        rgb, label_ids = fixture[stem]
        image, train_ids = ds.load_raw(i)
        np.testing.assert_array_equal(image, rgb)
        expected = np.vectorize(lambda v: label_map[int(v)])(label_ids)
        np.testing.assert_array_equal(train_ids, expected)
    _, train_ids = ds.load_raw(0)
    labels = fixture[ds.files[0][0].name[:-len("_leftImg8bit.png")]][1]
    assert (train_ids[labels == 7] == 0).all() and (train_ids[labels == 26] == 13).all()
    assert (train_ids[labels == 0] == 255).all() and (train_ids[labels == 33] == 18).all()
    image, mask = build_dataset("cityscapes", tmp_path, "train", label_map=label_map)[2]
    assert image.shape == (3, 8, 16) and mask.dtype == torch.int64
    assert set(mask.unique().tolist()) <= set(range(19)) | {255}


def test_cityscapes_errors(tmp_path):
    label_map = _load("cityscapes")["label_map"]
    with pytest.raises(DatasetError, match="leftImg8bit"):
        Cityscapes(tmp_path, "train", label_map=label_map)
    fixture = _cityscapes_fixture(tmp_path)
    with pytest.raises(DatasetError, match="val"):
        Cityscapes(tmp_path, "val", label_map=label_map)
    stem = sorted(fixture)[0]
    (tmp_path / "gtFine" / "train" / "aachen" / f"{stem}_gtFine_labelIds.png").unlink()
    with pytest.raises(DatasetError, match="1 of 3"):
        Cityscapes(tmp_path, "train", label_map=label_map)


def test_label_lut():
    lut = label_lut({0: 255, 7: 0, 26: 13, -1: -1, 5: -1})
    assert lut.dtype == np.uint8 and lut.shape == (256,)
    assert (lut[7], lut[26], lut[0], lut[5], lut[6], lut[200]) == (0, 13, 255, 255, 255, 255)
    np.testing.assert_array_equal(label_lut(None), np.arange(256))
    with pytest.raises(ValueError):
        label_lut({300: 1})


# --------------------------------------------------------------------------- FolderDataset, errors

def test_folder_pairing(tmp_path):
    images, masks = tmp_path / "img", tmp_path / "ann"
    for k, stem in enumerate(["b", "a", "c"]):
        _write(images / f"{stem}.png", _colourful(6, 10, seed=k))
        _write(masks / f"{stem}.png", np.full((6, 10), k, np.uint8))
    ds = FolderDataset(images, masks, label_map={0: 0, 1: 1}, ignore_index=9)
    assert [(i.stem, m.stem) for i, m in ds.files] == [("a", "a"), ("b", "b"), ("c", "c")]
    assert [int(ds.load_raw(i)[1][0, 0]) for i in range(3)] == [1, 0, 9]  # c's 2 is unmapped
    np.testing.assert_array_equal(ds.load_raw(1)[0], _colourful(6, 10, seed=0))
    _write(images / "d.png", _colourful(6, 10))
    with pytest.raises(DatasetError, match=r"4 images .*3 masks.*\['d'\]"):
        FolderDataset(images, masks)


def test_folder_registry_and_empty(tmp_path):
    _write(tmp_path / "val" / "images" / "x.png", _colourful(4, 4))
    _write(tmp_path / "val" / "masks" / "x.png", np.zeros((4, 4), np.uint8))
    assert len(build_dataset("folder", tmp_path, "val")) == 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no image files"):
        FolderDataset(tmp_path / "empty", tmp_path / "val" / "masks")
    with pytest.raises(DatasetError, match="Did you mean .camvid."):
        build_dataset("camvdi", tmp_path, "val")


def test_corrupt_and_missing_files(tmp_path):
    bad = tmp_path / "img" / "bad.png"
    bad.parent.mkdir()
    bad.write_bytes(b"\x89PNG not really an image")
    with pytest.raises(DatasetError, match="bad.png"):
        read_image_rgb(bad)
    with pytest.raises(DatasetError, match="not found"):
        read_image_rgb(tmp_path / "missing.png")
    _write(tmp_path / "ann" / "bad.png", np.zeros((4, 4), np.uint8))
    ds = FolderDataset(tmp_path / "img", tmp_path / "ann")
    with pytest.raises(DatasetError, match="cannot decode"):
        ds[0]


def test_size_mismatch(tmp_path):
    _write(tmp_path / "img" / "a.png", _colourful(4, 6))
    _write(tmp_path / "ann" / "a.png", np.zeros((4, 5), np.uint8))
    with pytest.raises(DatasetError, match="6x4"):
        FolderDataset(tmp_path / "img", tmp_path / "ann").load_raw(0)


# --------------------------------------------------------------------------- transforms

def _coded(h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Image whose channels are (label * 20, row, col) of a random label map."""
    mask = np.random.default_rng(seed).integers(0, 11, (h, w), dtype=np.uint8)
    rows, cols = np.mgrid[:h, :w]
    return np.stack([mask * 20, rows, cols], -1).astype(np.uint8), mask


def test_crop_and_flip_keep_alignment():
    image, mask = _coded(40, 60)
    t = Compose([RandomCrop(24, 32, ignore_index=255), RandomHorizontalFlip(0.5)])
    flips, offsets = 0, set()
    for seed in range(20):
        img, m = t(image, mask, np.random.default_rng(seed))
        assert img.shape == (24, 32, 3) and m.shape == (24, 32)
        np.testing.assert_array_equal(img[..., 0], m * 20)
        # Rows/cols recovered from the image must index the same labels in the original.
        np.testing.assert_array_equal(mask[img[..., 1], img[..., 2]], m)
        flipped = img[0, 0, 2] > img[0, -1, 2]
        flips += int(flipped)
        offsets.add((int(img[0, 0, 1]), int(img[0, -1 if flipped else 0, 2])))
    assert 0 < flips < 20 and len(offsets) > 5


def test_random_scale_uses_nearest_for_masks():
    mask = np.kron(np.array([[0, 5, 11], [3, 11, 7]], np.uint8), np.ones((7, 9), np.uint8))
    image = np.repeat(mask[..., None] * 20, 3, axis=2)
    t = RandomScale(0.5, 2.0)
    for seed in range(10):
        img, m = t(image, mask, np.random.default_rng(seed))
        assert img.shape[:2] == m.shape and m.dtype == np.uint8
        assert set(np.unique(m).tolist()) <= {0, 3, 5, 7, 11}
    img, m = RandomScale(2.0, 2.0)(image, mask, np.random.default_rng(0))
    np.testing.assert_array_equal(m, np.kron(mask, np.ones((2, 2), np.uint8)))
    assert len(np.unique(img)) > len(np.unique(image))  # the image is interpolated, the mask not


def test_crop_pads_with_ignore_index():
    image, mask = _coded(10, 12)
    for seed in range(5):
        img, m = RandomCrop(16, 20, ignore_index=11, fill=(1, 2, 3))(image, mask, np.random.default_rng(seed))
        pad = m == 11
        assert pad.sum() == 16 * 20 - 10 * 12  # the coded labels are 0..10, never 11
        assert (img[pad] == [1, 2, 3]).all()
        np.testing.assert_array_equal(img[~pad][:, 0], m[~pad] * 20)
    # train_transform pads with the mean colour, which normalizes to ~0.
    x, y = train_transform((16, 20), (1.0, 1.0), ignore_index=11, jitter=None)(image, mask, np.random.default_rng(0))
    assert x.shape == (3, 16, 20) and y.dtype == torch.int64
    assert x[:, y == 11].abs().max() < 0.02


def test_focus_crops_hold_a_rare_class():
    """A crop centred on a rare class holds it; without focus a seeded crop is what it always was."""
    image = np.zeros((90, 120, 3), np.uint8)
    mask = np.zeros((90, 120), np.uint8)
    mask[85, 3] = 9  # one pixel in a corner: a uniform 30x40 crop almost never holds it
    holds = lambda crop, n, seed: sum(  # noqa: E731
        bool((crop(image, mask, rng)[1] == 9).any()) for rng in [np.random.default_rng(seed)] for _ in range(n))
    assert holds(RandomCrop(30, 40, 255, focus_classes=[9], focus_p=1.0), 200, 0) == 200
    assert holds(RandomCrop(30, 40, 255), 200, 0) < 10
    assert 70 < holds(RandomCrop(30, 40, 255, focus_classes=[9], focus_p=0.5), 200, 1) < 130
    # focus_p = 0 draws nothing extra: identical crops to a plain RandomCrop with the same seed.
    coded, cmask = _coded(30, 50)
    for seed in range(3):
        a = RandomCrop(10, 20, 255)(coded, cmask, np.random.default_rng(seed))
        b = RandomCrop(10, 20, 255, focus_classes=[9], focus_p=0.0)(coded, cmask, np.random.default_rng(seed))
        np.testing.assert_array_equal(a[1], b[1])
    with pytest.raises(ValueError, match="focus_p must lie in"):
        RandomCrop(10, 20, 255, focus_classes=[1], focus_p=1.5)


def test_val_transform_is_deterministic():
    image, mask = _coded(30, 50)
    t = val_transform(size=(24, 40))
    a, b = t(image, mask), t(image, mask)
    assert a[0].shape == (3, 24, 40) and a[1].shape == (24, 40)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert set(a[1].unique().tolist()) <= set(range(11))
    x, y = val_transform()(image, None)
    assert x.shape == (3, 30, 50) and y is None  # frames without labels


def test_train_transform_reproducible():
    image, mask = _coded(48, 64)
    t = train_transform((32, 40), (0.75, 1.5), ignore_index=255)
    a = t(image, mask, np.random.default_rng(7))
    b = t(image, mask, np.random.default_rng(7))
    c = t(image, mask, np.random.default_rng(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    with pytest.raises(ValueError, match="Generator"):
        t(image, mask)


def test_color_jitter_is_photometric_only():
    image, mask = _coded(20, 30)
    rng = np.random.default_rng(0)
    img, m = ColorJitter(0.4, 0.4, 0.4, 0.1)(image, mask, rng)
    assert m is mask and img.dtype == np.uint8 and img.shape == image.shape
    assert not np.array_equal(img, image)
    grey = np.full((4, 4, 3), 100, np.uint8)
    out, _ = ColorJitter(hue=0.5)(grey, None, rng)
    np.testing.assert_array_equal(out, grey)  # hue cannot change a grey pixel
    out, _ = ColorJitter(brightness=0.5)(grey, None, np.random.default_rng(1))
    assert len(np.unique(out)) == 1 and out[0, 0, 0] != 100


def test_resize_mask_nearest():
    image, mask = _coded(10, 10)
    img, m = Resize(17, 23)(image, mask)
    assert img.shape == (17, 23, 3) and m.shape == (17, 23)
    assert set(np.unique(m).tolist()) <= set(np.unique(mask).tolist())


# --------------------------------------------------------------------------- worker seeding

def test_dataloader_workers_draw_distinct_augmentations(tmp_path):
    image = _colourful(40, 48)
    for k in range(4):  # identical samples: any difference comes from the augmentation
        _write(tmp_path / "img" / f"{k}.png", image)
        _write(tmp_path / "ann" / f"{k}.png", np.full((40, 48), 3, np.uint8))
    ds = FolderDataset(tmp_path / "img", tmp_path / "ann",
                       transform=train_transform((24, 24), (0.5, 1.5), ignore_index=255))

    def run() -> list[torch.Tensor]:
        loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=2,
                                             generator=torch.Generator().manual_seed(0))
        return [x for x, _ in loader]

    first, again = run(), run()
    assert all(torch.equal(a, b) for a, b in zip(first, again))  # seeded -> reproducible
    assert not torch.equal(first[0], first[1])  # samples 0 and 1 come from different workers
    # In the main process the dataset's own seed decides.
    assert torch.equal(ds[0][0], FolderDataset(tmp_path / "img", tmp_path / "ann",
                                               transform=ds.transform)[0][0])
