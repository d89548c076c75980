"""The three training losses of AFA (spec §5.3, 6.1, 6.2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def classification_loss(cls_logits: Tensor, cls_label: Tensor) -> Tensor:
    """Multi-label soft-margin loss: mean over batch and classes of the per-class sigmoid BCE.

    Args:
        cls_logits: (B, K); cls_label: (B, K) in {0, 1}.
    """
    return F.multilabel_soft_margin_loss(cls_logits, cls_label)


def _masked_ce(logits: Tensor, target: Tensor, ignore_index: int) -> Tensor:
    """Mean cross-entropy over non-ignored pixels, 0 (not NaN) when there are none."""
    count = (target != ignore_index).sum()
    total = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="sum")
    return total / count.clamp(min=1)


def segmentation_loss(seg_logits: Tensor, label: Tensor, ignore_index: int = 255) -> Tensor:
    """Background/foreground balanced cross-entropy: 0.5·CE_bg + 0.5·CE_fg (spec §6.2).

    CE_bg averages over pixels labelled 0, CE_fg over pixels labelled 1..K, each over the whole batch.
    Deviation (docs/DEVIATIONS.md): a term with no pixels is 0, where the reference gives NaN.

    Args:
        seg_logits: (B, C, H, W) at label resolution.
        label: (B, H, W) int64 with ``ignore_index`` for unlabelled pixels.
    """
    bg = torch.where(label == 0, label, torch.full_like(label, ignore_index))
    fg = torch.where(label == 0, torch.full_like(label, ignore_index), label)
    return 0.5 * _masked_ce(seg_logits, bg, ignore_index) + 0.5 * _masked_ce(seg_logits, fg, ignore_index)


def affinity_pair_counts(aff_label: Tensor) -> tuple[Tensor, Tensor]:
    """(|positive pairs| + 1, |negative pairs| + 1) over the whole batch, as the reference divides by."""
    return (aff_label == 1).sum() + 1, (aff_label == 0).sum() + 1


def affinity_loss(aff_pred: Tensor, aff_label: Tensor) -> Tensor:
    """Balanced L1-type affinity loss on probabilities (spec §5.3).

    L = 0.5·Σ_{label=1}(1 − p)/(n⁺ + 1) + 0.5·Σ_{label=0} p/(n⁻ + 1); pairs labelled 255 never count.

    Args:
        aff_pred: (B, N, N) in [0, 1].
        aff_label: (B, N, N) in {0, 1, 255}.
    """
    n_pos, n_neg = affinity_pair_counts(aff_label)
    pos = ((1 - aff_pred) * (aff_label == 1)).sum() / n_pos
    neg = (aff_pred * (aff_label == 0)).sum() / n_neg
    return 0.5 * pos + 0.5 * neg
