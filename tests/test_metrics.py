"""Evaluation metrics (spec §7.1-7.2): confusion matrix, pAcc / mAcc / IoU / mIoU, multi-label F1."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from utils.evaluation.metrics import confusion_matrix, multilabel_f1, scores, scores_from_confusion

GT = torch.tensor([0, 0, 1, 1, 2, 2, 255])
PRED = torch.tensor([0, 1, 1, 1, 2, 0, 1])


def test_confusion_matrix_3_classes_by_hand():
    """hist[g, p] counts pixels; the GT-255 pixel is dropped."""
    expected = [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert confusion_matrix(GT, PRED, 3).tolist() == expected


def test_scores_3_classes_by_hand():
    """pAcc = 4/6; mAcc = mean(1/2, 2/2, 1/2) = 2/3; IoU = diag/(row + col − diag) = 1/3, 2/3, 1/2."""
    s = scores([GT.numpy()], [PRED.numpy()], 3)
    assert s["pAcc"] == pytest.approx(4 / 6)
    assert s["mAcc"] == pytest.approx(2 / 3)
    np.testing.assert_allclose(s["iou"], [1 / 3, 2 / 3, 1 / 2])
    assert s["miou"] == pytest.approx(0.5)


def test_miou_excludes_classes_absent_from_ground_truth():
    """GT {0, 1}, class 2 only predicted, class 3 nowhere: mIoU = mean(IoU_0, IoU_1) = (1/2 + 1)/2."""
    gt, pred = np.array([[0, 0, 1, 1]]), np.array([[0, 2, 1, 1]])
    s = scores([gt], [pred], 4)
    assert s["miou"] == pytest.approx(0.75)
    assert s["iou"][:2].tolist() == [0.5, 1.0] and math.isnan(s["iou"][3])
    assert s["mAcc"] == pytest.approx(0.75)  # nanmean of 1/2 and 1


def test_iou_of_a_class_only_predicted_is_zero():
    """Class 2: diag 0, row 0, column 1 -> 0/(0 + 1 − 0) = 0 (only 0/0 classes are NaN)."""
    s = scores([np.array([[0, 0, 1, 1]])], [np.array([[0, 2, 1, 1]])], 4)
    assert s["iou"][2] == 0.0


def test_predictions_outside_the_classes_are_dropped():
    """A 255 (or negative) prediction is not counted anywhere, as the reference's pseudo_scores."""
    gt = torch.tensor([0, 1, 1, 2])
    pred = torch.tensor([0, 255, 1, -1])
    assert confusion_matrix(gt, pred, 3).tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 0]]


def test_scores_accumulate_over_images():
    """One confusion matrix over all images, not a mean of per-image scores."""
    gts = [np.array([[0, 0, 0, 1]]), np.array([[1, 1]])]
    preds = [np.array([[0, 0, 0, 0]]), np.array([[1, 1]])]
    s = scores(gts, preds, 2)
    # hist [[3, 0], [1, 2]]: IoU_0 = 3/4, IoU_1 = 2/3
    np.testing.assert_allclose(s["iou"], [3 / 4, 2 / 3])
    assert s["pAcc"] == pytest.approx(5 / 6)
    assert scores_from_confusion(np.array([[3, 0], [1, 2]]))["miou"] == pytest.approx((3 / 4 + 2 / 3) / 2)


@pytest.mark.parametrize(
    ("y_true", "y_pred", "f1"),
    [
        ([1, 0, 1, 0], [1, 1, 0, 0], 0.5),  # tp 1, fp 1, fn 1: 2/(2 + 1 + 1)
        ([1, 1, 0, 0], [1, 1, 0, 0], 1.0),
        ([1, 1, 1, 0], [1, 0, 0, 0], 0.5),  # 2·1/(2·1 + 0 + 2)
        ([0, 0, 0, 0], [0, 0, 0, 0], 0.0),  # sklearn: no positives at all -> 0
        ([0, 0, 0, 0], [0, 1, 0, 0], 0.0),
        ([0, 1, 0, 0], [0, 0, 0, 0], 0.0),
    ],
)
def test_multilabel_f1_sklearn_binary_semantics(y_true, y_pred, f1):
    """F1 = 2·tp / (2·tp + fp + fn) per image, 0 when the denominator is 0."""
    out = multilabel_f1(torch.tensor([y_true]), torch.tensor([y_pred]))
    assert out.shape == (1,)
    assert float(out[0]) == pytest.approx(f1)


def test_multilabel_f1_is_per_row():
    out = multilabel_f1(torch.tensor([[1, 0], [1, 1]]), torch.tensor([[1, 0], [0, 1]]))
    torch.testing.assert_close(out, torch.tensor([1.0, 2 / 3], dtype=out.dtype))
