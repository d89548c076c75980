"""AuxSegNet's five losses (AuxSegNet spec §6, ``train_AuxAff.py``).

Every map is upsampled bilinearly (align_corners False) from stride 8 to the crop before its loss.
There is no affinity loss: the affinities learn only through the refined predictions' losses.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from model.auxseg_heads import upsample
from model.auxsegnet import AuxSegOutput

LOSS_NAMES = ("cls", "init_sal", "refined_sal", "init_seg", "refined_seg")
IGNORE_INDEX = 255


def classification_loss(x_cls: Tensor, cls_label: Tensor) -> Tensor:
    """L_cls: multilabel soft margin of (B, K) logits against (B, K) {0, 1} labels."""
    return F.multilabel_soft_margin_loss(x_cls, cls_label.float())


def saliency_loss(sal_logit: Tensor, sal_label: Tensor) -> Tensor:
    """L_sal: BCE-with-logits of the upsampled (B, 1, h, w) logit against the binary (B, H, W) map,
    mean over pixels."""
    up = upsample(sal_logit, tuple(sal_label.shape[-2:]))[:, 0]  # (B, H, W)
    return F.binary_cross_entropy_with_logits(up, sal_label.float())


def segmentation_loss(seg_logits: Tensor, seg_label: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """L_seg: cross-entropy of the upsampled (B, C, h, w) logits against (B, H, W) labels, ignoring
    ``ignore_index``, mean over valid pixels."""
    up = upsample(seg_logits, tuple(seg_label.shape[-2:]))
    return F.cross_entropy(up, seg_label.long(), ignore_index=ignore_index)


def loss_terms(
    out: AuxSegOutput, cls_label: Tensor, sal_label: Tensor, seg_label: Tensor
) -> dict[str, Tensor]:
    """The five terms of spec §6, named as ``LOSS_NAMES``.

    Args:
        out: the network's output (``x_cls`` (B, K), ``init_sal`` / ``refined_sal`` (B, 1, h, w),
            ``init_seg`` / ``refined_seg`` (B, C, h, w)); any object with those fields.
        cls_label: (B, K) image labels.
        sal_label: (B, H, W) binarised saliency pseudo label (0 / 1).
        seg_label: (B, H, W) segmentation pseudo label, 255 ignored.
    """
    return {
        "cls": classification_loss(out.x_cls, cls_label),
        "init_sal": saliency_loss(out.init_sal, sal_label),
        "refined_sal": saliency_loss(out.refined_sal, sal_label),
        "init_seg": segmentation_loss(out.init_seg, seg_label),
        "refined_seg": segmentation_loss(out.refined_seg, seg_label),
    }


def loss_weights(cls: float = 1.0, sal: float = 1.0, seg: float = 1.0) -> dict[str, float]:
    """Per-term weights from the three CLI weights (``--cls/sal/seg_loss_weight``, all 1.0 by default)."""
    return {"cls": cls, "init_sal": sal, "refined_sal": sal, "init_seg": seg, "refined_seg": seg}


def total_loss(terms: dict[str, Tensor], weights: dict[str, float]) -> Tensor:
    """L = w_cls·L_cls + w_sal·(L_sal1 + L_sal2) + w_seg·(L_seg1 + L_seg2) (spec §6); a scalar."""
    return sum(weights[k] * terms[k] for k in LOSS_NAMES)
