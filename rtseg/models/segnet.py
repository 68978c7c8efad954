"""SegNet: VGG16-BN encoder, mirrored decoder upsampling with the encoder's pooling indices."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from rtseg.models._blocks import ConvBNAct, init_weights, resize_to
from rtseg.models.backbones.vgg import vgg16

# Decoder conv widths, deepest block first: the encoder's 13 convs mirrored, each block ending
# with the width of the encoder block it upsamples into.
_DECODER = ((512, 512, 512), (512, 512, 256), (256, 256, 128), (128, 64), (64,))
_UPSAMPLE_MODES = ("unpool", "bilinear")


class SegNet(nn.Module):
    """SegNet (Badrinarayanan, Kendall & Cipolla, "SegNet: A Deep Convolutional Encoder-Decoder
    Architecture for Image Segmentation", TPAMI 2017).

    The encoder is VGG16-BN (13 convs, five 2x2 max-pools). Each decoder block upsamples with
    ``F.max_unpool2d`` using the indices of the matching encoder pool, which puts every value back
    where the maximum came from (sparse map) and lets the following 3x3 convs densify it. Unpooling
    to the stored pre-pool size makes odd sizes round-trip: 360 -> 180 -> 90 -> 45 -> 22 -> 11 and
    back 11 -> 22 -> 45 -> 90 -> 180 -> 360. Inputs need H, W >= 32 (five 2x2 pools).

    Deployment: MaxUnpool exports to ONNX with the dynamo exporter (as ScatterND), but TensorRT
    handles that poorly. ``upsample="bilinear"`` swaps each unpooling for a bilinear resize to the
    same size (no pooling indices at all), an engine-friendly variant with the same layers otherwise;
    its weights are not interchangeable with the unpooling model's.

    Args:
        num_classes: output channels.
        upsample: ``"unpool"`` (the paper) or ``"bilinear"``.
    """

    def __init__(self, num_classes: int, upsample: str = "unpool"):
        super().__init__()
        if upsample not in _UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {_UPSAMPLE_MODES}, got '{upsample}'")
        self.upsample = upsample
        self.encoder = vgg16(batch_norm=True, return_indices=upsample == "unpool")
        blocks, in_ch = [], 512
        for widths in _DECODER:
            layers = []
            for w in widths:
                layers.append(ConvBNAct(in_ch, w, 3))
                in_ch = w
            blocks.append(nn.Sequential(*layers))
        self.decoder = nn.ModuleList(blocks)
        # The paper feeds the last decoder output to a softmax classifier; a 3x3 conv as in its
        # released model gives the classifier a little spatial context.
        self.classifier = nn.Conv2d(64, num_classes, 3, padding=1)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample == "unpool":
            enc = self.encoder(x)                      # 5 x (pooled, indices, pre-pool (H, W))
            y = enc[-1][0]                             # (N, 512, H/32, W/32)
            for block, (_, indices, size) in zip(self.decoder, reversed(enc)):
                y = block(F.max_unpool2d(y, indices, 2, 2, output_size=size))
        else:
            feats = self.encoder(x)
            # Convs keep the size, so stage k's pre-pool size is stage k-1's output size.
            sizes = [x.shape[-2:]] + [f.shape[-2:] for f in feats[:-1]]
            y = feats[-1]
            for block, size in zip(self.decoder, reversed(sizes)):
                y = block(resize_to(y, size))
        return self.classifier(y)                      # (N, K, H, W)


def build_segnet(num_classes: int, upsample: str = "unpool") -> SegNet:
    """Builds SegNet (Badrinarayanan et al. 2017); see :class:`SegNet`."""
    return SegNet(num_classes, upsample=upsample)
