"""FCN-8s on VGG16."""
from __future__ import annotations

import torch
import torch.nn as nn

from rtseg.models._blocks import ConvBNAct, init_weights, resize_to
from rtseg.models.backbones.vgg import vgg16


def bilinear_kernel(channels: int, kernel: int) -> torch.Tensor:
    """Weights (channels, channels, k, k) that make a ConvTranspose2d a per-channel bilinear upsampler.

    With ``kernel = 2 * stride`` and ``padding = stride // 2`` the result matches
    ``F.interpolate(mode="bilinear", align_corners=False)`` away from the borders.
    """
    factor = (kernel + 1) // 2
    center = factor - 1 if kernel % 2 == 1 else factor - 0.5
    taps = 1 - (torch.arange(kernel, dtype=torch.float32) - center).abs() / factor
    weight = torch.zeros(channels, channels, kernel, kernel)
    idx = torch.arange(channels)
    # Diagonal only: class c upsamples into class c, no mixing between classes.
    weight[idx, idx] = taps[:, None] * taps[None, :]
    return weight


def _fc(in_ch: int, out_ch: int, kernel: int, batch_norm: bool) -> nn.Sequential:
    conv = (ConvBNAct(in_ch, out_ch, kernel) if batch_norm else
            nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2),
                          nn.ReLU(inplace=True)))
    return nn.Sequential(conv, nn.Dropout(0.5))


class FCN8s(nn.Module):
    """FCN-8s (Long, Shelhamer & Darrell, "Fully Convolutional Networks for Semantic Segmentation",
    CVPR 2015).

    VGG16 with its classifier turned into convolutions (fc6 = 7x7 conv, fc7 = 1x1 conv, 4096
    channels each), class scores predicted from fc7, pool4 and pool3, and fused coarse-to-fine:
    the stride-32 scores are upsampled 2x (learned deconvolution initialised to bilinear) and added
    to the pool4 scores, that sum is upsampled 2x and added to the pool3 scores, and the stride-8
    result is upsampled 8x to the input size.

    fc6 uses "same" padding 3 instead of the paper's 100-pixel padding of conv1_1. The pad-100 trick
    existed so that fc6, a valid 7x7 conv, still had input on small images, at the price of output
    maps offset from the input that then need Caffe ``Crop`` layers with hand-computed offsets. With
    same padding every score map is aligned with the input grid, so fusing only needs a resize to
    the skip's size, and the network does not waste compute on 200 pixels of padding per axis.
    Inputs need H, W >= 32 so that pool5 is at least 1x1.

    Args:
        num_classes: output channels.
        batch_norm: VGG16-BN encoder and BN after fc6/fc7 (trains from scratch); ``False`` is the
            original VGG16 without BN.
    """

    def __init__(self, num_classes: int, batch_norm: bool = True):
        super().__init__()
        self.backbone = vgg16(batch_norm=batch_norm)
        self.fc6 = _fc(512, 4096, 7, batch_norm)
        self.fc7 = _fc(4096, 4096, 1, batch_norm)
        self.score_fr = nn.Conv2d(4096, num_classes, 1)
        self.score_pool4 = nn.Conv2d(512, num_classes, 1)
        self.score_pool3 = nn.Conv2d(256, num_classes, 1)
        # kernel 4, stride 2, padding 1 gives exactly 2h x 2w (the paper's padding 0 gives 2h + 2).
        self.up_fr = nn.ConvTranspose2d(num_classes, num_classes, 4, stride=2, padding=1,
                                        bias=False)
        self.up_pool4 = nn.ConvTranspose2d(num_classes, num_classes, 4, stride=2, padding=1,
                                           bias=False)
        init_weights(self)
        with torch.no_grad():
            for up in (self.up_fr, self.up_pool4):
                up.weight.copy_(bilinear_kernel(num_classes, 4))
            # Zero-initialised skip scores, as in the paper: training starts from the FCN-32s
            # prediction and the finer layers only add corrections.
            for score in (self.score_pool4, self.score_pool3):
                nn.init.zeros_(score.weight)
                nn.init.zeros_(score.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        pool3, pool4, pool5 = feats[2], feats[3], feats[4]
        s = self.score_fr(self.fc7(self.fc6(pool5)))                   # (N, K, H/32, W/32)
        # For sizes not divisible by 32 the 2x map can be one pixel short of the skip: resize it.
        s = resize_to(self.up_fr(s), pool4.shape[-2:]) + self.score_pool4(pool4)     # H/16
        s = resize_to(self.up_pool4(s), pool3.shape[-2:]) + self.score_pool3(pool3)  # H/8
        # The paper fixes the final 8x deconvolution to bilinear, which is what resize_to does.
        return resize_to(s, x.shape[-2:])                               # (N, K, H, W)


def build_fcn8s(num_classes: int, batch_norm: bool = True) -> FCN8s:
    """Builds FCN-8s (Long et al. 2015) with ``num_classes`` outputs; see :class:`FCN8s`."""
    return FCN8s(num_classes, batch_norm=batch_norm)
