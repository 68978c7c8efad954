"""Datasets and joint image/mask augmentation.

``build_dataset(name, root, split, transform, **kw)`` returns a dataset whose items are
``(image, mask)``: a normalized float32 (3, H, W) RGB tensor and an int64 (H, W) label tensor.
``train_transform`` / ``val_transform`` build the standard pipelines.
"""
from rtseg.data.datasets import (
    DATASETS,
    CamVid,
    Cityscapes,
    DatasetError,
    FolderDataset,
    SegDataset,
    build_dataset,
    label_lut,
    labelled_dataset,
    pair_by_stem,
    read_image_rgb,
    read_mask,
    select_sequences,
    sequence_of,
    split_parts,
)
from rtseg.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ColorJitter,
    Compose,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    RandomScale,
    Resize,
    ToTensor,
    train_transform,
    val_transform,
)

__all__ = [
    "DATASETS", "CamVid", "Cityscapes", "DatasetError", "FolderDataset", "SegDataset",
    "build_dataset", "label_lut", "labelled_dataset", "pair_by_stem", "read_image_rgb", "read_mask", "select_sequences",
    "sequence_of", "split_parts",
    "IMAGENET_MEAN", "IMAGENET_STD", "ColorJitter", "Compose", "Normalize", "RandomCrop",
    "RandomHorizontalFlip", "RandomScale", "Resize", "ToTensor", "train_transform", "val_transform",
]
