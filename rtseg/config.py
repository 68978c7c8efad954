"""YAML configuration -> small dataclasses.

Files are flat (no inheritance); every key must be a field of the target dataclass, so a typo is
an error with a "did you mean" suggestion instead of a silently ignored setting.

Configs are looked up in, in order: ``$RTSEG_CONFIG_DIR``, the ``configs/`` folder next to the
package (a source checkout or editable install), and ``<prefix>/share/rtseg/configs`` (where a
regular ``pip install`` puts them).
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from rtseg.errors import RtsegError
from rtseg.runtimes import CPU_RUNTIMES

T = TypeVar("T")


class ConfigError(RtsegError, ValueError):
    """A configuration file is missing, unreadable, or has unknown or invalid keys."""


def config_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("RTSEG_CONFIG_DIR"):
        dirs.append(Path(os.environ["RTSEG_CONFIG_DIR"]))
    dirs.append(Path(__file__).resolve().parents[1] / "configs")
    dirs.append(Path(sys.prefix) / "share" / "rtseg" / "configs")
    return dirs


def find_config(kind: str, name: str) -> Path:
    """Path of ``<kind>/<name>.yaml`` (e.g. ``models/enet_camvid``), or ``name`` itself if it is a file."""
    if name.endswith((".yaml", ".yml")) and Path(name).is_file():
        return Path(name)
    for d in config_dirs():
        p = d / kind / f"{name}.yaml"
        if p.is_file():
            return p
    valid = list_configs(kind)
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise ConfigError(f"unknown {kind[:-1] if kind.endswith('s') else kind} '{name}'.{hint} "
                      f"Valid: {', '.join(valid) or '(none found)'}")


def list_configs(kind: str) -> list[str]:
    """Names of the YAML files under ``<config dir>/<kind>/``, first directory wins."""
    names: dict[str, None] = {}
    for d in config_dirs():
        if (d / kind).is_dir():
            for p in sorted((d / kind).glob("*.yaml")):
                names.setdefault(p.stem, None)
    return list(names)


def from_dict(cls: type[T], data: dict[str, Any], source: str = "config") -> T:
    """Builds dataclass ``cls`` from ``data``; unknown or missing required keys are errors."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{source}: unknown key '{key}'{hint}")
    required = [n for n, f in fields.items()
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [n for n in required if n not in data]
    if missing:
        raise ConfigError(f"{source}: missing required key(s) {', '.join(missing)}")
    try:
        return cls(**data)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{source}: {e}") from None


def load_yaml(path: Path | str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
    return data if data is not None else {}


@dataclass
class DatasetConfig:
    """Classes of a dataset and how they are drawn.

    ``colors`` are RGB. ``label_map`` maps raw label ids to train ids (Cityscapes);
    ``cityscapes_ids`` maps each class to the Cityscapes train id whose colour it borrows.
    """

    name: str
    num_classes: int
    ignore_index: int
    class_names: list[str]
    colors: list[list[int]]
    label_map: dict[int, int] | None = None
    cityscapes_ids: list[int] | None = None

    def __post_init__(self):
        if len(self.class_names) != self.num_classes or len(self.colors) != self.num_classes:
            raise ValueError(f"{self.name}: need {self.num_classes} class_names and colors, got "
                             f"{len(self.class_names)} and {len(self.colors)}")
        if any(len(c) != 3 or not all(0 <= v <= 255 for v in c) for c in self.colors):
            raise ValueError(f"{self.name}: every colour must be [R, G, B] in 0..255")
        if self.cityscapes_ids is not None and len(self.cityscapes_ids) != self.num_classes:
            raise ValueError(f"{self.name}: cityscapes_ids needs {self.num_classes} entries")


@dataclass
class ModelPreset:
    """A named, ready-to-use model: architecture, options, the dataset it predicts, its input.

    ``weights`` names a file in ``rtseg/weights/`` when trained weights ship with rtseg.
    ``mean``/``std`` are per RGB channel on [0, 1] pixels.
    """

    name: str
    arch: str
    dataset: str
    input_size: list[int]
    options: dict[str, Any] = field(default_factory=dict)
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    weights: str | None = None
    description: str = ""
    # Where `rtseg run --backend auto` runs it on a CPU: torch, or a runtime it is exported to once.
    # Set from `rtseg bench` measurements, per architecture (OpenVINO is slower for some ops).
    cpu_runtime: str = "torch"

    def __post_init__(self):
        if self.cpu_runtime not in CPU_RUNTIMES:
            raise ValueError(f"cpu_runtime must be {', '.join(CPU_RUNTIMES[:-1])} or {CPU_RUNTIMES[-1]}, "
                             f"got '{self.cpu_runtime}'")
        if len(self.input_size) != 2 or min(self.input_size) < 8:
            raise ValueError(f"input_size must be [H, W] >= 8, got {self.input_size}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("mean and std need three values, std > 0")


def load_dataset_config(name: str) -> DatasetConfig:
    path = find_config("datasets", name)
    return from_dict(DatasetConfig, load_yaml(path), str(path))


def load_preset(name: str) -> ModelPreset:
    path = find_config("models", name)
    return from_dict(ModelPreset, load_yaml(path), str(path))
