"""DeepLabv3+ (Chen et al. 2018, "Encoder-Decoder with Atrous Separable Convolution for Semantic
Image Segmentation") on a mobile backbone: rtseg's default live model.

Encoder: backbone at output stride 16 + ASPP with image pooling, both with depthwise-separable
atrous convolutions. Decoder: the ASPP output upsampled x4 and concatenated with a 1x1-reduced
low-level (stride-4) feature, refined by two separable 3x3 convs, then upsampled x4 to the input.
The low-level projection is small (48 channels in the paper) so the encoder's semantics dominate.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from rtseg.models._aspp import ASPP
from rtseg.models._blocks import ConvBNAct, SeparableConv, init_weights, resize_to
from rtseg.models.backbones import build_backbone


class DeepLabV3Plus(nn.Module):
    """DeepLabv3+ with any :class:`~rtseg.models.backbones.StagedBackbone`.

    Args:
        num_classes: output classes.
        backbone: backbone name (``efficientnet_lite0`` pretrained is the shipped choice).
        pretrained: load the backbone's ImageNet weights (offline package).
        output_stride: 16 as in the paper's speed/accuracy trade-off, or 8 for denser features.
        aspp_channels: width of ASPP (256 in the paper; less makes the live model faster).
        decoder_channels: width of the decoder's separable convs (256 in the paper).
        low_level_channels: width of the projected stride-4 skip (48 in the paper).
        aspp_rates: atrous rates at output stride 16; doubled automatically at output stride 8.
        drop_path: backbone stochastic-depth rate (EfficientNet-Lite only).
    """

    def __init__(self, num_classes: int, backbone: str = "efficientnet_lite0", pretrained: bool = False,
                 output_stride: int = 16, aspp_channels: int = 256, decoder_channels: int = 256,
                 low_level_channels: int = 48, aspp_rates: tuple[int, ...] = (6, 12, 18),
                 drop_path: float = 0.0):
        super().__init__()
        extra = {"drop_path": drop_path} if drop_path else {}
        self.backbone = build_backbone(backbone, output_stride, pretrained, **extra)
        rates = tuple(r * 16 // output_stride for r in aspp_rates)
        self.aspp = ASPP(self.backbone.channels[4], aspp_channels, rates, separable=True)
        self.low_proj = ConvBNAct(self.backbone.channels[1], low_level_channels, 1)
        self.decoder = nn.Sequential(
            SeparableConv(aspp_channels + low_level_channels, decoder_channels),
            SeparableConv(decoder_channels, decoder_channels),
        )
        self.classifier = nn.Conv2d(decoder_channels, num_classes, 1)
        # The backbone keeps its own (possibly pretrained) initialisation.
        for m in (self.aspp, self.low_proj, self.decoder, self.classifier):
            init_weights(m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        feats = self.backbone(x)
        low = self.low_proj(feats[1])                          # (N, 48, H/4, W/4)
        high = resize_to(self.aspp(feats[4]), low.shape[-2:])  # (N, A, H/4, W/4)
        y = self.decoder(torch.cat([high, low], dim=1))
        return resize_to(self.classifier(y), size)             # (N, C, H, W)


def build_deeplabv3plus(num_classes: int, **options) -> DeepLabV3Plus:
    return DeepLabV3Plus(num_classes, **options)
