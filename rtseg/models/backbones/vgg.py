"""VGG16 (Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
Recognition", ICLR 2015) as a five-stage backbone: the 13 conv layers, without the classifier.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from rtseg.models._blocks import ConvBNAct, init_weights
from rtseg.models.backbones import PretrainedUnavailableError, StagedBackbone

# Widths of the 3x3 convs of each block (configuration "D" of the paper).
_VGG16 = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))

PoolOutput = tuple[torch.Tensor, torch.Tensor, tuple[int, int]]


class VGGStage(nn.Module):
    """One VGG block: 3x3 convs (+BN) + ReLU, then a 2x2/2 max-pool.

    The convs and the pool are separate attributes (``convs``, ``pool``) so that a model can also
    run them one at a time.

    Args:
        in_ch: input channels.
        widths: output channels of each conv.
        batch_norm: BN after each conv (VGG16-BN); without it, convs carry a bias.
        return_indices: see :meth:`forward`.
    """

    def __init__(self, in_ch: int, widths: tuple[int, ...], batch_norm: bool,
                 return_indices: bool):
        super().__init__()
        layers: list[nn.Module] = []
        for w in widths:
            if batch_norm:
                layers.append(ConvBNAct(in_ch, w, 3))
            else:
                layers += [nn.Conv2d(in_ch, w, 3, padding=1), nn.ReLU(inplace=True)]
            in_ch = w
        self.convs = nn.Sequential(*layers)
        # Floor mode: 45 -> 22; SegNet recovers the odd size from the returned pre-pool size.
        self.pool = nn.MaxPool2d(2, stride=2, return_indices=return_indices)
        self.return_indices = return_indices

    def forward(self, x: torch.Tensor) -> torch.Tensor | PoolOutput:
        """Returns the pooled features, or with ``return_indices`` a tuple
        ``(pooled, indices, (H, W))`` where ``indices`` are the argmax positions of the pool
        (as for ``F.max_unpool2d``) and ``(H, W)`` is the size before pooling (its
        ``output_size``)."""
        x = self.convs(x)
        if not self.return_indices:
            return self.pool(x)
        size = (x.shape[-2], x.shape[-1])
        pooled, indices = self.pool(x)
        return pooled, indices, size


class VGG16(StagedBackbone):
    """The five VGG16 conv blocks, outputs at strides 2, 4, 8, 16, 32 (pool1 .. pool5).

    With ``return_indices=True`` ``forward`` returns, per stage, the ``(pooled, indices, (H, W))``
    tuple of :meth:`VGGStage.forward` instead of the pooled tensor alone (SegNet's encoder).
    """

    def __init__(self, batch_norm: bool = True, return_indices: bool = False):
        super().__init__()
        stages, in_ch = [], 3
        for widths in _VGG16:
            stages.append(VGGStage(in_ch, widths, batch_norm, return_indices))
            in_ch = widths[-1]
        self.stages = nn.ModuleList(stages)
        self.channels = [w[-1] for w in _VGG16]  # [64, 128, 256, 512, 512]
        self.return_indices = return_indices
        init_weights(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor] | list[PoolOutput]:
        if not self.return_indices:
            return super().forward(x)
        outs: list[PoolOutput] = []
        for stage in self.stages:
            out = stage(x)
            outs.append(out)
            x = out[0]
        return outs


def vgg16(output_stride: int = 32, pretrained: bool = False, batch_norm: bool = True,
          return_indices: bool = False) -> StagedBackbone:
    """Builds the VGG16 backbone.

    Args:
        output_stride: must be 32. Dilating VGG would leave pool4/pool5 doing nothing but
            shifting the grid, and no model here wants it.
        pretrained: must be False: no ImageNet weights ship offline.
        batch_norm: VGG16-BN (default) or the original VGG16 without BN.
        return_indices: stages also return max-pool indices and pre-pool sizes (for SegNet).

    Raises:
        ValueError: ``output_stride`` other than 32.
        PretrainedUnavailableError: ``pretrained=True``.
    """
    if output_stride != 32:
        raise ValueError(f"vgg16 only supports output_stride=32, got {output_stride}")
    if pretrained:
        raise PretrainedUnavailableError(
            "no pretrained weights are available offline for vgg16; use pretrained=False")
    return VGG16(batch_norm=batch_norm, return_indices=return_indices)
