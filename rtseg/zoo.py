"""Model presets, and loading a ready-to-run model from a preset name or a weight file."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch.nn as nn

from rtseg.checkpoint import CheckpointError, load_weights, read_header
from rtseg.config import DatasetConfig, ModelPreset, list_configs, load_preset
from rtseg.models import build, check_name
from rtseg.weights import is_shipped, weight_path


@dataclass
class LoadedModel:
    """A model in eval mode with what it takes to feed it and draw its output."""

    model: nn.Module
    preset: ModelPreset
    dataset: DatasetConfig
    info: dict


def presets() -> list[ModelPreset]:
    return [load_preset(name) for name in list_configs("models")]


def shipped_by_arch() -> dict[str, list[str]]:
    """Architecture -> names of the presets of it whose trained weights ship with rtseg."""
    out: dict[str, list[str]] = {}
    for p in presets():
        if is_shipped(p.weights):
            out.setdefault(p.arch, []).append(p.name)
    return out


def shipped_names() -> list[str]:
    return [p.name for p in presets() if is_shipped(p.weights)]


def shipped_for(mode: str) -> list[str]:
    """Names of the shipped presets meant for ``mode`` (``live`` or ``batch``): a preset's
    description starts with its mode, and its weights must be installed."""
    return [p.name for p in presets() if is_shipped(p.weights) and p.description.startswith(mode)]


def default_batch_model(live_default: str) -> str:
    """The model ``rtseg batch`` uses when none is named: the first shipped batch preset, else
    ``live_default``. An install may lack the batch weights (a trimmed package, a user's own
    build), and batch mode still runs then."""
    return next(iter(shipped_for("batch")), live_default)


def build_from_preset(preset: ModelPreset, num_classes: int, pretrained: bool | None = None,
                      **overrides) -> nn.Module:
    """Builds the preset's architecture; ``pretrained`` and ``overrides`` replace preset options
    (training may run at another output stride than inference: the weights are the same)."""
    options = {**preset.options, **overrides}
    if pretrained is not None and "pretrained" in options:
        options["pretrained"] = pretrained
    return build(preset.arch, num_classes, **options)


def check_runnable(spec: str) -> None:
    """Fails unless ``spec`` is a model file or a preset whose trained weights are installed.

    The "Valid:" list of an unknown name holds only names that run as given; a preset that exists
    but ships no weights gets its own message instead of an "unknown" that contradicts the list.

    Raises:
        UnknownModelError: no such preset (with the runnable names).
        CheckpointError: a preset without trained weights in this install.
    """
    path = Path(spec)
    if path.suffix == ".safetensors" or path.is_file():
        return
    runnable = shipped_names()
    if spec in runnable:
        return
    if spec in list_configs("models"):
        raise CheckpointError(f"preset '{spec}' has no trained weights in this install; train it with "
                              f"`rtseg train` or pass a .safetensors file (shipped: {', '.join(runnable)})")
    check_name(spec, runnable, "model")


def model_header(spec: str) -> tuple[ModelPreset, DatasetConfig, Path]:
    """The preset, dataset and weight file of ``spec`` (as :func:`load_model` resolves it), read
    from headers only: what an export-cache lookup needs, without loading a tensor.

    Raises:
        RtsegError subclasses: as :func:`load_model`, except weights that do not fit their preset.
    """
    path = Path(spec)
    if path.suffix == ".safetensors" or path.is_file():
        preset, dataset, _ = read_header(path)
        return preset, dataset, path
    check_runnable(spec)
    preset = load_preset(spec)
    path = weight_path(preset.weights)
    return preset, read_header(path)[1], path


def load_model(spec: str) -> LoadedModel:
    """Loads ``spec``: a shipped preset name (``deeplabv3plus_camvid``) or a ``.safetensors`` file.

    Raises:
        RtsegError subclasses: unknown name (with the valid ones), preset without shipped
            weights, unreadable or foreign weight file.
    """
    preset, dataset, path = model_header(spec)
    state, _, _, info = load_weights(path)
    # Trained weights replace the backbone's ImageNet weights, so do not require that package.
    model = build_from_preset(preset, dataset.num_classes, pretrained=False)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"weights of '{spec}' do not fit {preset.arch} "
                              f"{preset.options}: {str(e).splitlines()[0]}") from None
    return LoadedModel(model.eval(), preset, dataset, info)
