"""DeepLabv3: dilated ResNet + ASPP."""
from __future__ import annotations

import torch
import torch.nn as nn

from rtseg.models._aspp import ASPP
from rtseg.models._blocks import conv_head, init_weights, resize_to
from rtseg.models.backbones import build_backbone

# ASPP rates at output stride 16 (paper, Sec. 3.3); they scale inversely with the output stride
# so the branches keep covering the same image area: (12, 24, 36) at 8.
_RATES_OS16 = (6, 12, 18)


class DeepLabV3(nn.Module):
    """DeepLabv3 (Chen, Papandreou, Schroff & Adam, "Rethinking Atrous Convolution for Semantic
    Image Segmentation", 2017).

    A dilated backbone (ResNet-50 at output stride 8 by default), ASPP (1x1 conv, three 3x3 atrous
    convs, image-level pooling; 256 channels each with BN; concatenated and projected to 256), a
    1x1 classifier, and bilinear upsampling to the input size. The paper's multi-grid rates inside
    the last block are not used; the dilated backbone is the same one PSPNet uses (without its deep
    stem). With ``aux=True`` an FCN-style auxiliary head on the stage-3 output (3x3 conv 256 ->
    dropout -> 1x1) adds deep supervision; it only runs in training mode, where ``forward``
    returns ``(main, aux)``.

    Args:
        num_classes: output channels.
        backbone: any name of :func:`rtseg.models.backbones.build_backbone`.
        output_stride: 8, 16 or 32; ASPP rates are ``(6, 12, 18) * 16 / output_stride``.
        pretrained: ImageNet backbone weights (raises ``PretrainedUnavailableError`` if missing).
        aux: build the auxiliary head.
    """

    def __init__(self, num_classes: int, backbone: str = "resnet50", output_stride: int = 8,
                 pretrained: bool = False, aux: bool = False):
        super().__init__()
        self.backbone = build_backbone(backbone, output_stride, pretrained)
        c3, c4 = self.backbone.channels[3], self.backbone.channels[4]
        rates = tuple(r * 16 // output_stride for r in _RATES_OS16)
        self.aspp = ASPP(c4, 256, rates=rates, separable=False, dropout=0.1)
        self.classifier = nn.Conv2d(self.aspp.out_channels, num_classes, 1)
        self.aux_head = conv_head(c3, 256, num_classes) if aux else None
        # The backbone initialises itself (or holds pretrained weights): only init the new layers.
        init_weights(self.aspp)
        init_weights(self.classifier)
        if self.aux_head is not None:
            init_weights(self.aux_head)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        feats = self.backbone(x)
        y = self.classifier(self.aspp(feats[4]))       # (N, K, H/OS, W/OS)
        main = resize_to(y, x.shape[-2:])              # (N, K, H, W)
        if self.training and self.aux_head is not None:
            return main, self.aux_head(feats[3])
        return main


def build_deeplabv3(num_classes: int, backbone: str = "resnet50", output_stride: int = 8,
                    pretrained: bool = False, aux: bool = False) -> DeepLabV3:
    """Builds DeepLabv3 (Chen et al. 2017); see :class:`DeepLabV3`."""
    return DeepLabV3(num_classes, backbone=backbone, output_stride=output_stride,
                     pretrained=pretrained, aux=aux)
