"""The three losses (spec §5.3, 6.1, 6.2), against numbers computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from model.losses import affinity_loss, affinity_pair_counts, classification_loss, segmentation_loss


def ce(logits: list[float], target: int) -> float:
    """−log softmax(logits)[target]."""
    return -(logits[target] - math.log(sum(math.exp(v) for v in logits)))


def seg_input(pixels: list[list[float]], labels: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """One image of 1 × len(pixels) pixels: logits (1, C, 1, W) and label (1, 1, W)."""
    logits = torch.tensor(pixels).T.reshape(1, len(pixels[0]), 1, len(pixels))
    return logits, torch.tensor(labels).view(1, 1, -1)


# ----------------------------------------------------------------------------- segmentation


def test_seg_loss_2x2_by_hand():
    """label [[0, 1], [2, 255]]: 0.5·CE(p00, 0) + 0.5·mean(CE(p01, 1), CE(p10, 2)); 255 is ignored."""
    p = [[2.0, 0.5, -1.0], [0.1, 1.5, 0.3], [-0.4, 0.2, 0.9], [5.0, -5.0, 0.0]]
    logits = torch.tensor(p).T.reshape(1, 3, 2, 2)
    label = torch.tensor([[[0, 1], [2, 255]]])
    expected = 0.5 * ce(p[0], 0) + 0.5 * (ce(p[1], 1) + ce(p[2], 2)) / 2
    assert float(segmentation_loss(logits, label)) == pytest.approx(expected, rel=1e-6)


def test_seg_loss_is_balanced_between_background_and_foreground():
    """A second background pixel with the same logits leaves the bg term (and the loss) unchanged;
    an unbalanced mean CE over all labelled pixels would change."""
    bg, fg = [1.0, 0.2], [0.3, 0.4]
    one = segmentation_loss(*seg_input([bg, bg, fg], [0, 255, 1]))
    two = segmentation_loss(*seg_input([bg, bg, fg], [0, 0, 1]))
    expected = 0.5 * ce(bg, 0) + 0.5 * ce(fg, 1)
    assert float(one) == pytest.approx(expected, rel=1e-6)
    assert float(two) == pytest.approx(expected, rel=1e-6)
    unbalanced = (2 * ce(bg, 0) + ce(fg, 1)) / 3
    assert float(two) != pytest.approx(unbalanced, rel=1e-3)


def test_seg_loss_terms_average_over_the_whole_batch():
    """CE_fg averages all foreground pixels of the batch, not per image first."""
    logits = torch.tensor([[[[0.0, 2.0]], [[1.0, 0.0]]], [[[0.0, 0.0]], [[3.0, 0.0]]]])  # (2, 2, 1, 2)
    label = torch.tensor([[[1, 0]], [[1, 1]]])
    fg = (ce([0.0, 1.0], 1) + ce([0.0, 3.0], 1) + ce([0.0, 0.0], 1)) / 3
    expected = 0.5 * ce([2.0, 0.0], 0) + 0.5 * fg
    assert float(segmentation_loss(logits, label)) == pytest.approx(expected, rel=1e-6)


def test_seg_loss_empty_terms_are_zero_not_nan():
    """Deliberate deviation from the reference (NaN): a term without pixels contributes 0."""
    logits = torch.tensor([[[[1.0, 0.2]], [[0.3, 0.4]]]])
    all_ignored = segmentation_loss(logits, torch.tensor([[[255, 255]]]))
    assert torch.isfinite(all_ignored) and float(all_ignored) == 0.0
    no_bg = segmentation_loss(logits, torch.tensor([[[1, 255]]]))
    assert float(no_bg) == pytest.approx(0.5 * ce([1.0, 0.3], 1), rel=1e-6)
    no_fg = segmentation_loss(logits, torch.tensor([[[255, 0]]]))
    assert float(no_fg) == pytest.approx(0.5 * ce([0.2, 0.4], 0), rel=1e-6)


def test_seg_loss_gradient_is_finite_without_background():
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    segmentation_loss(logits, torch.tensor([[[1, 2], [255, 1]]])).backward()
    assert torch.isfinite(logits.grad).all()


# ----------------------------------------------------------------------------- classification


def test_cls_loss_is_mean_sigmoid_bce():
    """mean over batch and classes of −[y·log σ(x) + (1 − y)·log(1 − σ(x))]."""
    logits = [[2.0, -1.0, 0.0], [0.5, 3.0, -2.0]]
    labels = [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]

    def bce(x: float, y: float) -> float:
        s = 1 / (1 + math.exp(-x))
        return -(y * math.log(s) + (1 - y) * math.log(1 - s))

    expected = sum(bce(x, y) for row, ys in zip(logits, labels) for x, y in zip(row, ys)) / 6
    loss = classification_loss(torch.tensor(logits), torch.tensor(labels))
    assert float(loss) == pytest.approx(expected, rel=1e-6)


# ----------------------------------------------------------------------------- affinity


def test_aff_loss_by_hand():
    """pred [[0.9, 0.2], [0.2, 0.6]], label [[1, 0], [0, 255]]:
    0.5·(1 − 0.9)/(1 + 1) + 0.5·(0.2 + 0.2)/(2 + 1) = 0.025 + 0.0666… ; counts (2, 3)."""
    pred = torch.tensor([[[0.9, 0.2], [0.2, 0.6]]])
    label = torch.tensor([[[1, 0], [0, 255]]])
    assert float(affinity_loss(pred, label)) == pytest.approx(0.025 + 0.4 / 6, rel=1e-6)
    assert [int(n) for n in affinity_pair_counts(label)] == [2, 3]


def _random_labels(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    label = torch.randint(0, 2, (2, 9, 9), generator=gen)
    label[torch.rand(2, 9, 9, generator=gen) < 0.3] = 255
    return label, torch.rand(2, 9, 9, generator=gen)


def test_aff_loss_perfect_prediction_is_zero():
    """pred = target on the 0/1 pairs (anything on 255 pairs) gives 0."""
    label, pred = _random_labels(0)
    pred = torch.where(label == 255, pred, label.float())
    assert float(affinity_loss(pred, label)) == 0.0


def test_aff_loss_worst_prediction():
    """pred = 1 − target gives 0.5·|P|/(|P| + 1) + 0.5·|Q|/(|Q| + 1), counted over the whole batch."""
    label, pred = _random_labels(1)
    pred = torch.where(label == 255, pred, 1 - label.float())
    n_pos, n_neg = int((label == 1).sum()), int((label == 0).sum())
    expected = 0.5 * n_pos / (n_pos + 1) + 0.5 * n_neg / (n_neg + 1)
    assert float(affinity_loss(pred, label)) == pytest.approx(expected, rel=1e-6)


def test_aff_loss_ignores_255_pairs():
    label, pred = _random_labels(2)
    changed = torch.where(label == 255, 1 - pred, pred)
    assert not torch.equal(changed, pred)
    assert float(affinity_loss(changed, label)) == float(affinity_loss(pred, label))
