"""U-Net: contracting path, expanding path, skip concatenation at every scale."""
from __future__ import annotations

import torch
import torch.nn as nn

from rtseg.models._blocks import ConvBNAct, init_weights, resize_to


def _double_conv(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(ConvBNAct(in_ch, out_ch, 3), ConvBNAct(out_ch, out_ch, 3))


class _Up(nn.Module):
    """Upsamples 2x halving the channels, concatenates the skip, then two 3x3 convs."""

    def __init__(self, in_ch: int, out_ch: int, bilinear: bool):
        super().__init__()
        if bilinear:
            # 1x1 conv at the low resolution, then resize: 4x cheaper than convolving after.
            self.up = ConvBNAct(in_ch, in_ch // 2, 1)
        else:
            self.up = nn.ConvTranspose2d(in_ch, in_ch // 2, 2, stride=2)
        self.conv = _double_conv(in_ch // 2 + out_ch, out_ch)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        # Bilinear mode upsamples here; for the up-convolution 2h can be one pixel short of an
        # odd skip (45 -> 22 -> 44), and the resize stretches it to fit (a no-op otherwise).
        x = resize_to(self.up(x), skip.shape[-2:])
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    """U-Net (Ronneberger, Fischer & Brox, "U-Net: Convolutional Networks for Biomedical Image
    Segmentation", MICCAI 2015).

    Four 2x2 max-pool downsamplings with two 3x3 convs per scale (``base`` .. ``16 * base``
    channels), four 2x2 up-convolutions, each followed by concatenation with the same-scale encoder
    features and two 3x3 convs, then a 1x1 classifier.

    The paper used unpadded ("valid") convs, so the output was smaller than the input and skips were
    centre-cropped; it tiled large images with an overlap to compensate. Here the convs are padded
    ("same") and followed by BN, so the output covers the whole frame at the input size, which is
    what a per-frame video model needs, and the skips align without cropping.

    Args:
        num_classes: output channels.
        base: channels of the first scale; doubled at each downsampling.
        bilinear: upsample by bilinear resize + 1x1 conv instead of ``ConvTranspose2d`` (cheaper
            and free of checkerboard artefacts).
    """

    def __init__(self, num_classes: int, base: int = 64, bilinear: bool = False):
        super().__init__()
        if base < 1:
            raise ValueError(f"base must be a positive channel count, got {base}")
        widths = [base * 2 ** i for i in range(5)]  # 64, 128, 256, 512, 1024
        self.inc = _double_conv(3, widths[0])
        self.downs = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), _double_conv(widths[i], widths[i + 1]))
            for i in range(4))
        self.ups = nn.ModuleList(
            _Up(widths[i + 1], widths[i], bilinear) for i in reversed(range(4)))
        self.classifier = nn.Conv2d(widths[0], num_classes, 1)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.inc(x)]                          # (N, base, H, W)
        for down in self.downs:
            skips.append(down(skips[-1]))              # ... (N, 16*base, H/16, W/16)
        y = skips.pop()
        for up in self.ups:
            y = up(y, skips.pop())
        return self.classifier(y)                      # (N, K, H, W)


def build_unet(num_classes: int, base: int = 64, bilinear: bool = False) -> UNet:
    """Builds U-Net (Ronneberger et al. 2015); see :class:`UNet`."""
    return UNet(num_classes, base=base, bilinear=bilinear)
