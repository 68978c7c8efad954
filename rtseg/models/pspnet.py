"""PSPNet: dilated ResNet + pyramid pooling module."""
from __future__ import annotations

import torch
import torch.nn as nn

from rtseg.models._blocks import conv_head, init_weights, resize_to
from rtseg.models._ppm import PyramidPooling
from rtseg.models.backbones import StagedBackbone, build_backbone
from rtseg.models.backbones.resnet import resnet

_RESNETS = {"resnet50": 50, "resnet101": 101}


def _build_backbone(name: str, output_stride: int, pretrained: bool) -> StagedBackbone:
    if name in _RESNETS:
        # PSPNet's ResNet has the three-conv deep stem, which build_backbone does not expose.
        return resnet(_RESNETS[name], output_stride, pretrained, deep_stem=True)
    return build_backbone(name, output_stride, pretrained)


class PSPNet(nn.Module):
    """PSPNet (Zhao, Shi, Qi, Wang & Jia, "Pyramid Scene Parsing Network", CVPR 2017).

    A dilated backbone (ResNet-50 with deep stem at output stride 8 by default) feeds a pyramid
    pooling module (bins 1, 2, 3, 6, each reduced to 1/4 of the channels and concatenated with the
    features), then 3x3 conv (512) -> BN -> ReLU -> dropout 0.1 -> 1x1 classifier, upsampled to the
    input size. The auxiliary head of the paper (deep supervision on the stage-3 / conv4_x output:
    3x3 conv 256 -> dropout -> 1x1) only runs in training mode, where ``forward`` returns
    ``(main, aux)`` with ``aux`` at the backbone's stage-3 resolution.

    Any :mod:`rtseg.models.backbones` backbone works: the heads read ``backbone.channels[3]`` and
    ``[4]``.

    Args:
        num_classes: output channels.
        backbone: backbone name (``"resnet50"``, ``"resnet101"``, or any name of
            :func:`rtseg.models.backbones.build_backbone`).
        output_stride: backbone output stride (8, 16 or 32).
        pretrained: ImageNet backbone weights (raises ``PretrainedUnavailableError`` if missing).
        aux: build the auxiliary head.
    """

    def __init__(self, num_classes: int, backbone: str = "resnet50", output_stride: int = 8,
                 pretrained: bool = False, aux: bool = True):
        super().__init__()
        self.backbone = _build_backbone(backbone, output_stride, pretrained)
        c3, c4 = self.backbone.channels[3], self.backbone.channels[4]
        self.ppm = PyramidPooling(c4, c4 // 4, bins=(1, 2, 3, 6), mode="concat")
        self.head = conv_head(self.ppm.out_channels, 512, num_classes)
        self.aux_head = conv_head(c3, 256, num_classes) if aux else None
        # The backbone initialises itself (or holds pretrained weights): only init the new layers.
        init_weights(self.ppm)
        init_weights(self.head)
        if self.aux_head is not None:
            init_weights(self.aux_head)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        feats = self.backbone(x)
        y = self.head(self.ppm(feats[4]))              # (N, K, H/OS, W/OS)
        main = resize_to(y, x.shape[-2:])              # (N, K, H, W)
        if self.training and self.aux_head is not None:
            return main, self.aux_head(feats[3])       # aux: (N, K, H/16|8, W/16|8)
        return main


def build_pspnet(num_classes: int, backbone: str = "resnet50", output_stride: int = 8,
                 pretrained: bool = False, aux: bool = True) -> PSPNet:
    """Builds PSPNet (Zhao et al. 2017); see :class:`PSPNet`."""
    return PSPNet(num_classes, backbone=backbone, output_stride=output_stride,
                  pretrained=pretrained, aux=aux)
