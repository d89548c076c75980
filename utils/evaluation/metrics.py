"""Segmentation and classification metrics (spec §7.1-7.2).

The confusion matrix is accumulated over a whole split (and all-reduced across ranks by the
engine); the scores follow the reference ``evaluate.scores``: classes absent from the ground truth
are excluded from the mean IoU.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def confusion_matrix(gt: Tensor, pred: Tensor, num_classes: int) -> Tensor:
    """Confusion matrix hist[g, p] of pixels with ground truth in [0, num_classes).

    Args:
        gt: (...) int ground truth; pixels with values outside [0, C) (e.g. 255) are dropped.
        pred: same shape, predicted ids; pixels predicted outside [0, C) (an ignore label in a pseudo
            label) are dropped too, as the reference ``pseudo_scores`` does.

    Returns:
        (C, C) int64.
    """
    gt, pred = gt.reshape(-1).long(), pred.reshape(-1).long()
    keep = (gt >= 0) & (gt < num_classes) & (pred >= 0) & (pred < num_classes)
    idx = num_classes * gt[keep] + pred[keep]
    return torch.bincount(idx, minlength=num_classes**2).reshape(num_classes, num_classes)


def scores_from_confusion(hist: Tensor | np.ndarray) -> dict:
    """pAcc, mAcc, per-class IoU and mIoU from a confusion matrix.

    mIoU is the mean of IoU over classes whose ground-truth row is non-empty (the reference's
    ``nanmean`` over ``valid = hist.sum(1) > 0``). Per-class IoU is diag / (row + col − diag): 0 for a
    class that is only predicted, NaN for a class absent from both ground truth and prediction.

    Returns:
        {"pAcc": float, "mAcc": float, "iou": np.ndarray (C,), "miou": float}, fractions in [0, 1].
    """
    hist = np.asarray(hist.cpu() if isinstance(hist, Tensor) else hist, dtype=np.float64)
    diag = np.diag(hist)
    gt_count, pred_count = hist.sum(axis=1), hist.sum(axis=0)
    present = gt_count > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        acc_cls = diag / gt_count
        iou = diag / (gt_count + pred_count - diag)
    total = hist.sum()
    return {
        "pAcc": float(diag.sum() / total) if total > 0 else float("nan"),
        "mAcc": float(np.nanmean(acc_cls)) if present.any() else float("nan"),
        "iou": iou,
        "miou": float(np.nanmean(iou[present])) if present.any() else float("nan"),
    }


def scores(gts: list | Tensor, preds: list | Tensor, num_classes: int = 21) -> dict:
    """Scores of label maps (lists of (H, W) arrays/tensors, or stacked tensors)."""
    hist = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    for gt, pred in zip(gts, preds):
        hist += confusion_matrix(
            torch.as_tensor(np.asarray(gt)), torch.as_tensor(np.asarray(pred)), num_classes
        )
    return scores_from_confusion(hist)


def multilabel_f1(y_true: Tensor, y_pred: Tensor) -> Tensor:
    """Binary F1 of each row (sklearn ``f1_score`` semantics: 0 when there is no positive at all).

    Args:
        y_true, y_pred: (B, K) in {0, 1}.

    Returns:
        (B,) F1 per image.
    """
    y_true, y_pred = y_true.bool(), y_pred.bool()
    tp = (y_true & y_pred).sum(dim=1).double()
    denom = y_true.sum(dim=1).double() + y_pred.sum(dim=1).double()
    return torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.zeros_like(tp))
