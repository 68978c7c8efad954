"""ICNet (Zhao et al. 2018, "ICNet for Real-Time Semantic Segmentation on High-Resolution Images").

An image cascade: the full image only passes a light three-conv branch (stride 8), the 1/2-scale
image passes the first stages of the backbone (to 1/16 of the original), and only the 1/4-scale
image goes through the whole dilated backbone and pyramid pooling (to 1/32). The 1/2 and 1/4
branches share the first stages' weights. Cascade feature fusion (CFF) units merge the branches
from coarse to fine, and each CFF's upsampled coarse input gets its own classifier in training:
the cascade label guidance losses at 1/16 and 1/8 (weights 0.4 each in the paper).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from rtseg.models._blocks import ConvBNAct, init_weights, resize_to
from rtseg.models._ppm import PyramidPooling
from rtseg.models.backbones import build_backbone


class CascadeFeatureFusion(nn.Module):
    """CFF unit (Fig. 3 of the paper): fuse a coarse map F1 with a map F2 of twice its resolution.

    F1 is upsampled x2 and passed through a 3x3 conv with dilation 2, which enlarges its context
    at no extra cost; F2 is projected by a 1x1 conv; both are batch-normalized, summed, ReLU'd.
    """

    def __init__(self, low_ch: int, high_ch: int, out_ch: int, num_classes: int):
        super().__init__()
        self.low = ConvBNAct(low_ch, out_ch, 3, dilation=2, act=None)
        self.high = ConvBNAct(high_ch, out_ch, 1, act=None)
        self.guide = nn.Conv2d(low_ch, num_classes, 1)  # label guidance classifier

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        low = resize_to(low, high.shape[-2:])
        fused = F.relu(self.low(low) + self.high(high))
        return fused, (self.guide(low) if self.training else None)


class ICNet(nn.Module):
    """ICNet with a mobile backbone.

    Args:
        num_classes: output classes.
        backbone: backbone whose stages 0-2 (stride 8) are shared by the 1/2 and 1/4 branches and
            whose stages 3-4 run dilated (output stride 8) on the 1/4 branch only.
        pretrained: load the backbone's ImageNet weights.
        ppm_bins: pyramid pooling bins (1, 2, 3, 6 as in PSPNet).
        low_channels: width of the 1/32 branch after pyramid pooling (256 in the paper).
        cff_channels: width of the fused maps (128 in the paper).
    """

    def __init__(self, num_classes: int, backbone: str = "efficientnet_lite0", pretrained: bool = False,
                 ppm_bins: tuple[int, ...] = (1, 2, 3, 6), low_channels: int = 256,
                 cff_channels: int = 128):
        super().__init__()
        net = build_backbone(backbone, output_stride=8, pretrained=pretrained)
        self.shared = nn.Sequential(*net.stages[:3])      # image -> 1/8 of that image
        self.deep = nn.Sequential(*net.stages[3:])        # dilated: keeps the 1/8 resolution
        self.ppm = PyramidPooling(net.channels[4], bins=ppm_bins, mode="sum")
        self.low_proj = ConvBNAct(net.channels[4], low_channels, 1)
        self.light = nn.Sequential(                       # full-resolution branch, three stride-2 convs
            ConvBNAct(3, 32, 3, stride=2), ConvBNAct(32, 32, 3, stride=2), ConvBNAct(32, 64, 3, stride=2))
        self.cff_low = CascadeFeatureFusion(low_channels, net.channels[2], cff_channels, num_classes)
        self.cff_high = CascadeFeatureFusion(cff_channels, 64, cff_channels, num_classes)
        self.classifier = nn.Conv2d(cff_channels, num_classes, 1)
        for m in (self.ppm, self.low_proj, self.light, self.cff_low, self.cff_high, self.classifier):
            init_weights(m)

    def forward(self, x: torch.Tensor):
        h, w = int(x.shape[-2]), int(x.shape[-1])
        x2 = resize_to(x, ((h + 1) // 2, (w + 1) // 2))
        x4 = resize_to(x, ((h + 3) // 4, (w + 3) // 4))
        med = self.shared(x2)                                       # (N, c2, H/16, W/16)
        low = self.low_proj(self.ppm(self.deep(self.shared(x4))))   # (N, 256, H/32, W/32)
        high = self.light(x)                                        # (N, 64, H/8, W/8)
        f16, aux16 = self.cff_low(low, med)                         # (N, 128, H/16, W/16)
        f8, aux8 = self.cff_high(f16, high)                         # (N, 128, H/8, W/8)
        # The paper's last step: x2 upsampling to 1/4 and a classifier, then x4 at inference.
        f4 = resize_to(f8, (2 * f8.shape[-2], 2 * f8.shape[-1]))
        out = resize_to(self.classifier(f4), (h, w))
        if self.training:
            return out, aux8, aux16
        return out


def build_icnet(num_classes: int, **options) -> ICNet:
    return ICNet(num_classes, **options)
