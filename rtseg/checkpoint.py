"""Weight files that describe themselves, and resumable training state.

A weight file is safetensors (plain tensors: loading one can never run code) whose header holds
the model preset and class table as JSON under the key ``rtseg``, so ``rtseg eval --model
file.safetensors`` needs nothing else. Training state (optimizer, EMA, epoch) goes to a ``.pt``
file read back with ``torch.load(weights_only=True)``, which refuses pickled code as well.
Both are written to a temporary name and renamed, so an interrupted save never leaves a file
that looks complete.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from rtseg.config import DatasetConfig, ModelPreset, from_dict
from rtseg.errors import RtsegError
from rtseg.io import atomic_output, atomic_write_bytes


class CheckpointError(RtsegError):
    """A weight or state file is missing, corrupt, or not an rtseg file."""


def save_weights(path: str | Path, model: nn.Module, preset: ModelPreset, dataset: DatasetConfig,
                 info: dict[str, Any] | None = None) -> Path:
    """Writes ``model``'s state dict with its preset, classes and ``info`` (e.g. val mIoU)."""
    from safetensors.torch import save

    path = Path(path)
    meta = {"preset": asdict(preset), "dataset": asdict(dataset), "info": info or {}}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    # Serialised in memory and written with open(): safetensors' save_file creates its file
    # mode 0600 whatever the umask, so weights for a shared machine or a container came out
    # readable by their owner only.
    atomic_write_bytes(path, save(state, metadata={"rtseg": json.dumps(meta)}))
    return path


def read_header(path: str | Path) -> tuple[ModelPreset, DatasetConfig, dict]:
    """The preset, dataset and info of a file written by :func:`save_weights`, from its JSON
    header alone: no tensor is read, so learning what a model is costs milliseconds, not the
    seconds that materialising FCN-8s's 0.5 GB of weights takes."""
    from safetensors import SafetensorError
    from safetensors.torch import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weight file not found: {path}")
    try:
        with safe_open(str(path), "pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({e})") from None
    if "rtseg" not in header:
        raise CheckpointError(f"{path} has no rtseg metadata (was it written by rtseg train?)")
    meta = json.loads(header["rtseg"])
    preset = from_dict(ModelPreset, meta["preset"], f"{path} preset")
    dataset = from_dict(DatasetConfig, _int_keys(meta["dataset"]), f"{path} dataset")
    return preset, dataset, meta.get("info", {})


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], ModelPreset, DatasetConfig, dict]:
    """Reads a file written by :func:`save_weights`: state dict, preset, dataset, info."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    preset, dataset, info = read_header(path)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({e})") from None
    return state, preset, dataset, info


def _int_keys(d: dict) -> dict:
    # JSON turns the int keys of label_map into strings.
    if d.get("label_map"):
        d = {**d, "label_map": {int(k): v for k, v in d["label_map"].items()}}
    return d


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    """Saves training state (tensors, numbers, strings, nested dicts/lists only)."""
    path = Path(path)
    with atomic_output(path) as tmp:
        torch.save(state, tmp)


def load_state(path: str | Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means the file cannot be trusted
        raise CheckpointError(f"cannot load training state {path}: {str(e).splitlines()[0]}") from None
