"""Heads on top of the MiT features: the CAM classifier and the SegFormer MLP decoder (spec §2.1-2.3)."""

from __future__ import annotations

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
        """A linear projection of ``in_dim`` token channels to ``embed_dim``."""
        super().__init__()
        self.proj = nn.Linear(in_dim, embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, C, h, w) -> (B, embed_dim, h, w)."""
        return self.proj(x.flatten(2).transpose(1, 2))


class ConvBNReLU(nn.Module):
    """1×1 conv without bias, BatchNorm (SyncBN under DDP), ReLU: mmcv's ConvModule as the authors use it."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        """1×1 convolution without bias, BatchNorm, ReLU."""
        super().__init__()
        self.conv = nn.Conv2d(in_dim, out_dim, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_dim)
        self.relu = nn.ReLU(inplace=True)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        """x (B, C_in, h, w) -> (B, C_out, h, w)."""
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
        """Per-stage projections to ``embed_dim``, their fusion and the classifier of ``num_classes``."""
        super().__init__()
        for i, dim in enumerate(in_dims):
            self.add_module(f"linear_c{i + 1}", TokenMLP(dim, embed_dim))
        self.linear_fuse = ConvBNReLU(len(in_dims) * embed_dim, embed_dim)
        self.dropout = nn.Dropout2d(dropout)
        self.linear_pred = nn.Conv2d(embed_dim, num_classes, 1)

    def fused_projection(self, features: list[Tensor]) -> Tensor:
        """The input of the fuse BatchNorm: conv_fuse(cat[up(P_4 c4 + b_4), …, P_1 c1 + b_1]).

        Bilinear resizing and the 1×1 convolution are both linear (and resizing keeps constants), so
        the fuse convolution is folded into each stage's projection: Σ_i up(W_i P_i c_i) + Σ_i W_i b_i,
        with W_i the conv's block of columns for stage i. The same map up to float rounding, without
        the (B, 4E, H1, W1) concatenation and its 4E×E convolution (docs/DEVIATIONS.md).

        Args:
            features: [c1..c4], each (B, C_i, H_i, W_i).

        Returns:
            (B, E, H1, W1).
        """
        size = features[0].shape[-2:]
        weight = self.linear_fuse.conv.weight.flatten(1)  # (E, 4E), column blocks in order c4..c1
        e = weight.shape[0]
        out = None
        for j, i in enumerate(reversed(range(len(features)))):
            block = weight[:, j * e : (j + 1) * e]
            proj = getattr(self, f"linear_c{i + 1}").proj
            feat = features[i]
            b, _, h, w = feat.shape
            tokens = F.linear(feat.flatten(2).transpose(1, 2), block @ proj.weight, block @ proj.bias)
            x = tokens.transpose(1, 2).reshape(b, e, h, w)
            if i > 0:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            out = x if out is None else out.add_(x)  # in place: out is a fresh map, not a view
        return out

    def forward(self, features: list[Tensor]) -> Tensor:
        """features [c1..c4] -> logits (B, num_classes, H1, W1) at c1's resolution."""
        fuse = self.linear_fuse
        fused = fuse.relu(fuse.bn(self.fused_projection(features)))
        return self.linear_pred(self.dropout(fused))

    def update_statistics(self, features: list[Tensor]) -> None:
        """The side effects of ``forward`` without its output: in train mode, the fuse BatchNorm's
        running statistics and the Dropout2d draw (so the random stream stays that of ``forward``).

        The reference runs the whole decoder in its CAM passes and discards the logits; this is what
        remains of that work. A no-op in eval mode.
        """
        if not self.training:
            return
        y = self.fused_projection(features)
        self.linear_fuse.bn(y)
        self.dropout(y.new_zeros(y.shape[0], y.shape[1], 1, 1))
