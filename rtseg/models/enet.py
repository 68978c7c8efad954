"""ENet (Paszke et al. 2016, "ENet: A Deep Neural Network Architecture for Real-Time Semantic
Segmentation", arXiv:1606.02147).

A large encoder (stages 1-3, output stride 8) and a small decoder (stages 4-5) built from ResNet-like
bottlenecks with a 4x channel reduction; about 0.37 M parameters.

Activations: the paper states that PReLU sits between all convolutions, but the authors' released
Torch implementation (the one that produced the paper's numbers) uses PReLU only in the initial block
and the encoder and plain ReLU in the decoder. We follow the released implementation: the decoder
only upsamples and refines, and ReLU there exports to the cheapest ONNX op.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from rtseg.models._blocks import init_weights, pad_to_multiple, resize_to

UPSAMPLE_MODES = ("unpool", "bilinear")

# Three stride-2 steps (initial block, bottleneck1.0, bottleneck2.0) before the decoder.
_STRIDE = 8


def _act(kind: str, ch: int) -> nn.Module:
    """Channel-wise PReLU (encoder) or ReLU (decoder)."""
    return nn.PReLU(ch) if kind == "prelu" else nn.ReLU(inplace=True)


class InitialBlock(nn.Module):
    """3x3 stride-2 conv with 13 filters concatenated with a 2x2 max-pool of the RGB input (Fig. 2a).

    The pooled branch passes the image itself on at half resolution, so 13 filters suffice for 16
    output channels.
    """

    def __init__(self, out_ch: int = 16):
        super().__init__()
        self.conv = nn.Conv2d(3, out_ch - 3, 3, stride=2, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2, 2)
        self.bn = nn.BatchNorm2d(out_ch)
        self.act = nn.PReLU(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Both branches give H/2 x W/2 only for even H, W: ENet.forward pads to a multiple of 8.
        x = torch.cat([self.conv(x), self.pool(x)], dim=1)  # (N, 16, H/2, W/2)
        return self.act(self.bn(x))


class Bottleneck(nn.Module):
    """Non-strided bottleneck (Fig. 2b): 1x1 projection -> main conv -> 1x1 expansion -> dropout,
    added to the identity.

    Args:
        ch: input and output channels.
        kind: main conv: ``"regular"`` 3x3, ``"dilated"`` 3x3 with ``dilation``, or
            ``"asymmetric"`` 5x1 then 1x5 (a 5x5 receptive field at the cost of ~2/5 of a 5x5 conv).
        dilation: dilation of the ``"dilated"`` kind.
        dropout: spatial dropout probability on the extension branch.
        act: ``"prelu"`` (encoder) or ``"relu"`` (decoder).
        ratio: internal projection ratio.
    """

    def __init__(self, ch: int, kind: str = "regular", dilation: int = 1, dropout: float = 0.1,
                 act: str = "prelu", ratio: int = 4):
        super().__init__()
        mid = ch // ratio
        if kind == "regular":
            main: list[nn.Module] = [nn.Conv2d(mid, mid, 3, padding=1, bias=False)]
        elif kind == "dilated":
            main = [nn.Conv2d(mid, mid, 3, padding=dilation, dilation=dilation, bias=False)]
        elif kind == "asymmetric":
            main = [nn.Conv2d(mid, mid, (5, 1), padding=(2, 0), bias=False),
                    nn.Conv2d(mid, mid, (1, 5), padding=(0, 2), bias=False)]
        else:
            raise ValueError(f"unknown bottleneck kind {kind!r}")
        # No biases anywhere: every conv is followed by BN (the paper drops projection biases too).
        self.ext = nn.Sequential(
            nn.Conv2d(ch, mid, 1, bias=False), nn.BatchNorm2d(mid), _act(act, mid),
            *main, nn.BatchNorm2d(mid), _act(act, mid),
            nn.Conv2d(mid, ch, 1, bias=False), nn.BatchNorm2d(ch),
            nn.Dropout2d(dropout),
        )
        self.act = _act(act, ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.ext(x))


class DownsamplingBottleneck(nn.Module):
    """Stride-2 bottleneck (Fig. 2b with max-pooling on the main branch).

    The 1x1 projection becomes a 2x2 stride-2 conv so the projection sees every input pixel (a 1x1
    stride-2 conv would drop 3/4 of them). The main branch max-pools and zero-pads the extra channels,
    which keeps it parameter-free.

    Args:
        in_ch: input channels.
        out_ch: output channels (> ``in_ch``).
        dropout: spatial dropout probability on the extension branch.
        return_indices: also return the max-pool indices for a later max-unpooling.
        ratio: internal projection ratio, relative to ``out_ch`` as in the released implementation.
    """

    def __init__(self, in_ch: int, out_ch: int, dropout: float, return_indices: bool = True,
                 ratio: int = 4):
        super().__init__()
        mid = out_ch // ratio
        self.pad_ch = out_ch - in_ch
        self.return_indices = return_indices
        self.pool = nn.MaxPool2d(2, 2, return_indices=return_indices)
        self.ext = nn.Sequential(
            nn.Conv2d(in_ch, mid, 2, stride=2, bias=False), nn.BatchNorm2d(mid), nn.PReLU(mid),
            nn.Conv2d(mid, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid), nn.PReLU(mid),
            nn.Conv2d(mid, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch),
            nn.Dropout2d(dropout),
        )
        self.act = nn.PReLU(out_ch)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.return_indices:
            main, indices = self.pool(x)  # (N, in_ch, H/2, W/2)
        else:
            main, indices = self.pool(x), None
        # Pad (W, W, H, H, C, C): zeros appended after the existing channels -> ONNX Pad.
        main = F.pad(main, (0, 0, 0, 0, 0, self.pad_ch))  # (N, out_ch, H/2, W/2)
        return self.act(main + self.ext(x)), indices


class UpsamplingBottleneck(nn.Module):
    """Stride-1/2 bottleneck of the decoder.

    Main branch: 1x1 conv + BN to ``out_ch``, then max-unpooling with the indices of the matching
    encoder max-pool (SegNet-style, so boundaries land where the encoder found its maxima), or a
    bilinear resize in ``"bilinear"`` mode. Extension branch: 1x1 projection, 3x3 stride-2 transposed
    conv, 1x1 expansion.

    Args:
        in_ch: input channels.
        out_ch: output channels.
        dropout: spatial dropout probability on the extension branch.
        upsample: ``"unpool"`` or ``"bilinear"``.
        ratio: internal projection ratio, relative to ``out_ch``.
    """

    def __init__(self, in_ch: int, out_ch: int, dropout: float, upsample: str = "unpool",
                 ratio: int = 4):
        super().__init__()
        mid = out_ch // ratio
        self.upsample = upsample
        self.main = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch))
        self.ext = nn.Sequential(
            nn.Conv2d(in_ch, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            # output_padding=1 makes the output exactly 2x: the input was padded to a multiple of 8.
            nn.ConvTranspose2d(mid, mid, 3, stride=2, padding=1, output_padding=1, bias=False),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch),
            nn.Dropout2d(dropout),
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, indices: torch.Tensor | None,
                size: tuple[int, int] | torch.Size) -> torch.Tensor:
        main = self.main(x)  # (N, out_ch, h, w)
        if self.upsample == "unpool":
            # output_size removes max_unpool2d's guess of the pre-pool size.
            main = F.max_unpool2d(main, indices, 2, 2, output_size=list(size))  # (N, out_ch, 2h, 2w)
        else:
            main = resize_to(main, size)  # (N, out_ch, 2h, 2w)
        return self.act(main + self.ext(x))


def _stage(act: str, dropout: float) -> nn.Sequential:
    """The eight non-strided bottlenecks shared by stages 2 and 3 (Table 1)."""
    specs = [("regular", 1), ("dilated", 2), ("asymmetric", 1), ("dilated", 4),
             ("regular", 1), ("dilated", 8), ("asymmetric", 1), ("dilated", 16)]
    return nn.Sequential(*[Bottleneck(128, kind, d, dropout, act) for kind, d in specs])


class ENet(nn.Module):
    """ENet of Paszke et al. 2016 (Table 1), for any input size.

    Args:
        num_classes: number of output classes.
        upsample: ``"unpool"`` (the paper: max-unpooling with the encoder's pooling indices) or
            ``"bilinear"`` (bilinear resize instead; no pooling indices are computed). onnx-tensorrt
            supports neither MaxPool's ``Indices`` output nor ``MaxUnpool``, so ``"bilinear"`` is the
            variant to deploy with TensorRT.
    """

    def __init__(self, num_classes: int, upsample: str = "unpool"):
        super().__init__()
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}")
        self.upsample = upsample
        unpool = upsample == "unpool"
        self.initial = InitialBlock(16)
        # Stage 1: dropout 0.01 (the paper's p before bottleneck2.0), 0.1 everywhere after.
        self.down1 = DownsamplingBottleneck(16, 64, 0.01, return_indices=unpool)
        self.stage1 = nn.Sequential(*[Bottleneck(64, dropout=0.01) for _ in range(4)])
        self.down2 = DownsamplingBottleneck(64, 128, 0.1, return_indices=unpool)
        self.stage2 = _stage("prelu", 0.1)
        self.stage3 = _stage("prelu", 0.1)
        self.up4 = UpsamplingBottleneck(128, 64, 0.1, upsample)
        self.stage4 = nn.Sequential(*[Bottleneck(64, dropout=0.1, act="relu") for _ in range(2)])
        self.up5 = UpsamplingBottleneck(64, 16, 0.1, upsample)
        self.stage5 = Bottleneck(16, dropout=0.1, act="relu")
        # kernel 2 = stride 2: every input pixel maps to its own 2x2 output block, exactly 2x.
        self.fullconv = nn.ConvTranspose2d(16, num_classes, 2, stride=2)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The conv and max-pool branches of the initial and downsampling blocks only agree in size
        # for even inputs (a padded 3x3/2 conv rounds up, a 2x2/2 pool rounds down), and that holds
        # at all three stride-2 steps only for multiples of 8. The padded logits are cropped below.
        x, (h, w) = pad_to_multiple(x, _STRIDE)
        x = self.initial(x)                 # (N, 16, H/2, W/2)
        size1 = x.shape[-2:]
        x, idx1 = self.down1(x)             # (N, 64, H/4, W/4)
        x = self.stage1(x)
        size2 = x.shape[-2:]
        x, idx2 = self.down2(x)             # (N, 128, H/8, W/8)
        x = self.stage3(self.stage2(x))
        x = self.stage4(self.up4(x, idx2, size2))  # (N, 64, H/4, W/4)
        x = self.stage5(self.up5(x, idx1, size1))  # (N, 16, H/2, W/2)
        x = self.fullconv(x)                # (N, num_classes, H, W)
        return x[:, :, :h, :w]


def build_enet(num_classes: int, upsample: str = "unpool") -> ENet:
    """Builds :class:`ENet` (Paszke et al. 2016) with ``num_classes`` outputs.

    Args:
        num_classes: number of output classes.
        upsample: ``"unpool"`` (default, as in the paper) or ``"bilinear"`` (TensorRT-friendly).
    """
    return ENet(num_classes, upsample=upsample)
