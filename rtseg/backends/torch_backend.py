"""PyTorch eager runtime (CPU; CUDA where present)."""
from __future__ import annotations

import numpy as np
import torch

from rtseg.backends.base import Backend, ModelMeta


class TorchBackend(Backend):
    runtime = "torch"

    def __init__(self, model: torch.nn.Module, meta: ModelMeta, device: str = "cpu"):
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.meta = meta

    @classmethod
    def load(cls, spec: str, device: str = "cpu") -> "TorchBackend":
        from rtseg.zoo import load_model

        lm = load_model(spec)
        p, d = lm.preset, lm.dataset
        meta = ModelMeta(p.name, list(d.class_names), [list(c) for c in d.colors], list(p.mean),
                         list(p.std), (int(p.input_size[0]), int(p.input_size[1])), d.ignore_index)
        return cls(lm.model, meta, device)

    @torch.inference_mode()
    def infer(self, batch: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(batch).to(self.device, non_blocking=True)
        return self.model(x).float().cpu()
