"""Trained weights that ship inside the package, one ``<preset>.safetensors`` per model preset.

safetensors holds plain tensors only, so loading a weight file can never execute code.
"""
from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent


def weight_path(filename: str) -> Path:
    return WEIGHTS_DIR / filename


def is_shipped(filename: str | None) -> bool:
    return bool(filename) and weight_path(filename).is_file()
