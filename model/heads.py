"""Heads on top of the MiT features: the CAM classifier and the SegFormer MLP decoder (spec §2.1-2.3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def pooled_class_logits(c4: Tensor, classifier: nn.Conv2d, pooling: str = "gmp") -> Tensor:
    """Image-level class logits: 1×1 classifier on globally pooled stage-4 features (spec §2.1).

    Args:
        c4: (B, C4, h, w) stage-4 features.
        classifier: 1×1 convolution C4 -> K, no bias.
        pooling: ``"gmp"`` (global max pooling, the paper's choice) or ``"gap"`` (average).

    Returns:
        (B, K) logits.
    """
    if pooling == "gmp":
        pooled = F.adaptive_max_pool2d(c4, 1)
    elif pooling == "gap":
        pooled = F.adaptive_avg_pool2d(c4, 1)
    else:
        raise ValueError(f"pooling must be 'gmp' or 'gap', got {pooling!r}")
    return classifier(pooled).flatten(1)


def class_activation_map(c4: Tensor, classifier: nn.Conv2d) -> Tensor:
    """CAM: the classifier weights applied at every position, before ReLU (spec §2.2).

    Args:
        c4: (B, C4, h, w).

    Returns:
        (B, K, h, w).
    """
    return F.conv2d(c4, classifier.weight)


class TokenMLP(nn.Module):
    """Per-position linear projection of a feature map: (B, C, h, w) -> (B, h·w, E)."""

    def __init__(self, in_dim: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x.flatten(2).transpose(1, 2))


class ConvBNReLU(nn.Module):
    """1×1 conv without bias, BatchNorm (SyncBN under DDP), ReLU: mmcv's ConvModule as the authors use it."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_dim, out_dim, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_dim)
        self.relu = nn.ReLU(inplace=True)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.conv(x)))


class SegFormerHead(nn.Module):
    """SegFormer's all-MLP decoder (spec §2.3).

    Each stage is projected to ``embed_dim`` channels, resized to the stride-4 grid, concatenated in
    the order [c4, c3, c2, c1], fused by a 1×1 ConvBNReLU, dropped out (p=0.1) and classified.

    Args:
        in_dims: channels of c1..c4.
        embed_dim: decoder width (256).
        num_classes: output classes including background.
        dropout: Dropout2d rate before the classifier.
    """

    def __init__(
        self, in_dims: tuple[int, ...], embed_dim: int, num_classes: int, dropout: float = 0.1
    ) -> None:
        super().__init__()
        for i, dim in enumerate(in_dims):
            self.add_module(f"linear_c{i + 1}", TokenMLP(dim, embed_dim))
        self.linear_fuse = ConvBNReLU(len(in_dims) * embed_dim, embed_dim)
        self.dropout = nn.Dropout2d(dropout)
        self.linear_pred = nn.Conv2d(embed_dim, num_classes, 1)

    def forward(self, features: list[Tensor]) -> Tensor:
        """features [c1..c4] -> logits (B, num_classes, H1, W1) at c1's resolution."""
        size = features[0].shape[-2:]
        projected = []
        for i in reversed(range(len(features))):
            feat = features[i]
            b, _, h, w = feat.shape
            x = getattr(self, f"linear_c{i + 1}")(feat).transpose(1, 2).reshape(b, -1, h, w)
            if i > 0:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            projected.append(x)
        fused = self.linear_fuse(torch.cat(projected, dim=1))
        return self.linear_pred(self.dropout(fused))
