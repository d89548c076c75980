"""MCTformer's training pieces (``methods/mctformer_parts.py``): losses, no-decay groups, the epoch
schedule as used per iteration, per-image AP and its batch weighting, against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from methods.mctformer_parts import (
    average_precision,
    batch_weighted_map,
    group_names,
    lr_used_in_epoch,
    mct_losses,
    no_decay,
    per_image_ap,
    scaled_lr,
    schedule_factor,
)
from model.mctformer import build_mctformer

BASE = 6.25e-5
SCHED = {"epochs": 60, "warmup_epochs": 5, "warmup_lr": 1e-6, "min_lr": 1e-5}


def test_losses_by_hand() -> None:
    """MLSM = −mean_b mean_c [y log σ(z) + (1 − y) log σ(−z)]; V2 adds the patch term, V1 has none."""
    z = torch.tensor([[2.0, -1.0], [0.0, 3.0]])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    sig = torch.sigmoid
    hand = (
        -(
            (torch.log(sig(torch.tensor(2.0))) + torch.log(sig(torch.tensor(1.0)))) / 2
            + (torch.log(sig(torch.tensor(0.0))) + torch.log(sig(torch.tensor(3.0)))) / 2
        )
        / 2
    )
    v1 = mct_losses(z, None, y)
    v2 = mct_losses(z, -z, y)
    assert set(v1) == {"cls"} and set(v2) == {"cls", "patch"}
    assert float(v1["cls"]) == pytest.approx(float(hand), rel=1e-6)
    flipped = -((torch.log(sig(torch.tensor(-2.0))) + torch.log(sig(torch.tensor(-1.0)))) / 2)
    flipped = (flipped - (torch.log(sig(torch.tensor(0.0))) + torch.log(sig(torch.tensor(-3.0)))) / 2) / 2
    assert float(v2["patch"]) == pytest.approx(float(flipped), rel=1e-6)


def test_average_precision_by_hand() -> None:
    """Positives at ranks 2 and 4: AP = ½·½ + ½·(2/4) = 0.5; a tie enters as one threshold."""
    ap = average_precision(torch.tensor([0.9, 0.8, 0.7, 0.1]), torch.tensor([0.0, 1.0, 0.0, 1.0]))
    assert float(ap) == pytest.approx(0.5, abs=1e-12)
    tied = average_precision(torch.tensor([0.5, 0.5, 0.1]), torch.tensor([1.0, 0.0, 1.0]))
    assert float(tied) == pytest.approx(0.5 * 0.5 + 0.5 * (2 / 3), abs=1e-12)
    perfect = average_precision(torch.tensor([3.0, 2.0, 1.0]), torch.tensor([1.0, 1.0, 0.0]))
    assert float(perfect) == 1.0


def test_per_image_ap_skips_images_without_positives_and_batches_weigh_their_size() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.0], [1.0, 1.0, 1.0]])
    ap = per_image_ap(logits, torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]))
    assert float(ap[0]) == pytest.approx(1 / 3, abs=1e-12) and math.isnan(float(ap[1]))
    # batch 1: mean of its one scored image (1/3), weighted by both images; batch 2: one image of AP 1
    got = batch_weighted_map([ap, torch.tensor([1.0], dtype=torch.float64)])
    assert got == pytest.approx((1 / 3 * 2 + 1.0) / 3, abs=1e-12)


def test_no_decay_rule_and_deit_small_group_sizes() -> None:
    """timm's rule: 1-D, ``.bias``, ``cls_token``, ``pos_embed`` (spec §3.2: 102 / 50 tensors on DeiT-S)."""
    assert no_decay("cls_token", torch.zeros(1, 20, 4)) and no_decay("pos_embed", torch.zeros(1, 5, 4))
    assert no_decay("head.bias", torch.zeros(3)) and no_decay("blocks.0.norm1.weight", torch.zeros(4))
    assert not no_decay("head.weight", torch.zeros(20, 4, 3, 3))
    model = build_mctformer("v2", 20, "deit_tiny", 224, 0.1)  # the same 12 blocks as DeiT-S, 4× fewer weights
    skip, decay = group_names(model)
    assert (len(skip), len(decay)) == (102, 50)
    assert "head.weight" in decay and "patch_embed.proj.weight" in decay and "norm.weight" in skip


def test_scaled_lr_and_epoch_rates_of_the_spec() -> None:
    """lr 5e-4·64/512; epochs 0…9 train with the rates of spec §3.3 (the scheduler lags one epoch)."""
    assert scaled_lr(5e-4, 64) == pytest.approx(BASE, rel=1e-15)
    spec = [1e-6, 1e-6, 1.33e-5, 2.56e-5, 3.79e-5, 5.02e-5, 6.161e-5, 6.122e-5, 6.076e-5, 6.023e-5]
    ours = [lr_used_in_epoch(e, BASE, **SCHED) for e in range(10)]
    assert ours == pytest.approx(spec, rel=2e-3)
    assert lr_used_in_epoch(59, BASE, **SCHED) == pytest.approx(1.014e-5, rel=1e-3)
    assert max(lr_used_in_epoch(e, BASE, **SCHED) for e in range(60)) < BASE  # the peak is never used


def test_schedule_factor_is_constant_within_an_epoch() -> None:
    """Iterations 0…164 of a 165-iteration epoch use epoch 0's rate; 165 starts epoch 1, 990 epoch 6."""

    def lr(t: int) -> float:
        return BASE * schedule_factor(t, 165, BASE, **SCHED)

    assert lr(0) == lr(164) == pytest.approx(1e-6, rel=1e-12)
    assert lr(165) == pytest.approx(1e-6, rel=1e-12)  # epoch 1: still lr(0)
    assert lr(2 * 165) == pytest.approx(1e-6 + (BASE - 1e-6) / 5, rel=1e-12)
    assert lr(6 * 165) == pytest.approx(lr_used_in_epoch(6, BASE, **SCHED), rel=1e-12)
    assert lr(6 * 165) != lr(7 * 165)
