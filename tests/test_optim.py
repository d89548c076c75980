"""PolyWarmupAdamW (spec §2.6, §6.5): the lr factor, the four groups, AdamW, resuming the schedule."""

from __future__ import annotations

import copy
import functools
import math

import pytest
import torch

from methods.optim import (
    build_optimizer,
    build_scheduler,
    cosine_epoch_lr,
    epoch_schedule_factor,
    poly_factor,
    poly_warmup_factor,
)

BASE_LR = 6e-5


@pytest.mark.parametrize(
    ("t", "lr"),
    [
        (0, 6.0e-11),
        (199, 7.960e-06),
        (1499, 5.996e-05),
        (1500, 5.550e-05),
        (1599, 5.520e-05),
        (1999, 5.400e-05),
        (9999, 3.000e-05),
        (19999, 3.0e-09),
    ],
)
def test_backbone_lr_table_voc(t, lr):
    """Spec §6.5 (= the published VOC log): warm-up 1 − (1 − t/1500)(1 − 1e-6), then (1 − t/20000)."""
    assert BASE_LR * poly_warmup_factor(t, 1500, 20000) == pytest.approx(lr, rel=5e-4)


def test_factor_by_hand_around_the_warmup_end():
    """Not re-based: 0.99933… at t = 1499, then 1 − 1500/20000 = 0.925 at t = 1500 (COCO: 0.98125)."""
    assert poly_warmup_factor(1499, 1500, 20000) == pytest.approx(1 - (1 / 1500) * (1 - 1e-6), rel=1e-12)
    assert poly_warmup_factor(1500, 1500, 20000) == pytest.approx(0.925, rel=1e-12)
    assert poly_warmup_factor(1500, 1500, 80000) == pytest.approx(0.98125, rel=1e-12)
    assert poly_warmup_factor(5, 3, 8, power=0.9) == pytest.approx((3 / 8) ** 0.9, rel=1e-12)


def test_lr_is_held_after_max_iter():
    """The reference stops updating the lr at t = max_iter: the value of t = max_iter − 1 stays."""
    last = poly_warmup_factor(19999, 1500, 20000)
    assert last == pytest.approx(1 / 20000, rel=1e-9)
    for t in (20000, 20001, 30000):
        assert poly_warmup_factor(t, 1500, 20000) == last


def _optimizer(lr: float = 1e-3, seed: int = 0) -> tuple[torch.optim.AdamW, list[torch.Tensor]]:
    torch.manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(3)) for _ in range(4)]
    return build_optimizer([[p] for p in params], lr), params


def test_group_lrs_through_the_scheduler():
    """lr used by step t: [lr, 0, 10·lr, 10·lr] · factor(t); warm-up 3, max 8, held after (hand table)."""
    opt, params = _optimizer()
    sched = build_scheduler(opt, warmup_iter=3, max_iter=8)
    factors = [1e-6, 1 / 3 + 2e-6 / 3, 2 / 3 + 1e-6 / 3, 0.625, 0.5, 0.375, 0.25, 0.125, 0.125, 0.125]
    for factor in factors:
        lrs = [g["lr"] for g in opt.param_groups]
        assert lrs == pytest.approx([1e-3 * factor, 0.0, 1e-2 * factor, 1e-2 * factor], rel=1e-9, abs=0)
        for p in params:
            p.grad = torch.ones_like(p)
        opt.step()
        sched.step()


def test_group_settings():
    """Weight decay 0.01 except the frozen norm group (0); AdamW betas (0.9, 0.999), eps 1e-8."""
    opt, _ = _optimizer()
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0, 0.01, 0.01]
    assert all(g["betas"] == (0.9, 0.999) and g["eps"] == 1e-8 and not g["amsgrad"] for g in opt.param_groups)
    with pytest.raises(ValueError, match="4 parameter groups"):
        build_optimizer([[torch.nn.Parameter(torch.zeros(1))]] * 3, 1e-3)


def test_first_adamw_step_by_hand():
    """Step 1 (bias-corrected m̂ = g, v̂ = g²): p ← p·(1 − lr·wd) − lr·g/(|g| + eps), decoupled decay."""
    opt, params = _optimizer(lr=1e-3)
    build_scheduler(opt, warmup_iter=0, max_iter=100)  # factor(0) = 1
    before = [p.detach().clone() for p in params]
    grads = [torch.tensor([0.5, -2.0, 1e-3]) * (i + 1) for i in range(4)]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    opt.step()
    for p0, p, g, (lr, wd) in zip(
        before, params, grads, [(1e-3, 0.01), (0.0, 0.0), (1e-2, 0.01), (1e-2, 0.01)]
    ):
        expected = p0 * (1 - lr * wd) - lr * g / (g.abs() + 1e-8)
        torch.testing.assert_close(p.detach(), expected, rtol=1e-6, atol=1e-9)
    assert torch.equal(params[1].detach(), before[1])


def test_scheduler_state_dict_round_trip():
    """Resuming from optimizer + scheduler state dicts continues the same lr sequence and parameters."""

    def run(opt, sched, params, steps, start):
        lrs = []
        for t in range(start, start + steps):
            lrs.append([g["lr"] for g in opt.param_groups])
            for i, p in enumerate(params):
                p.grad = torch.full_like(p, 0.1 * (t + 1) * (i + 1))
            opt.step()
            sched.step()
        return lrs

    opt, params = _optimizer()
    sched = build_scheduler(opt, warmup_iter=3, max_iter=8)
    run(opt, sched, params, 4, 0)
    saved_opt, saved_sched = copy.deepcopy(opt.state_dict()), copy.deepcopy(sched.state_dict())  # as on disk
    saved_params = [p.detach().clone() for p in params]
    expected = run(opt, sched, params, 5, 4)

    fresh, fresh_params = _optimizer(seed=1)
    with torch.no_grad():
        for p, value in zip(fresh_params, saved_params):
            p.copy_(value)
    fresh_sched = build_scheduler(fresh, warmup_iter=3, max_iter=8)
    fresh.load_state_dict(saved_opt)
    fresh_sched.load_state_dict(saved_sched)
    assert run(fresh, fresh_sched, fresh_params, 5, 4) == expected
    for p, q in zip(params, fresh_params):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_poly_factor_holds_its_last_value_from_max_iter_on():
    """(1 − t/T)^0.9, kept at t = T − 1 from T on (the reference SGD stops updating the lr there)."""
    assert poly_factor(0, 10) == 1.0
    assert poly_factor(5, 10) == pytest.approx(0.5**0.9)
    assert poly_factor(9, 10) == poly_factor(10, 10) == poly_factor(50, 10) == pytest.approx(0.1**0.9)
    assert poly_factor(3, 4, power=1.0) == pytest.approx(0.25)


def test_cosine_epoch_schedule_matches_timm_as_mctformer_steps_it():
    """MCTformer's schedule (spec MCTFORMER §3.3): 60 epochs, 5 warm-up from 1e-6, min 1e-5, peak
    6.25e-5, the cosine measured from epoch 0; stepped after each epoch, so epoch e trains with
    lr(e − 1) and epoch 0 with 1e-6 (the spec's table of the rates used)."""
    base, per_epoch = 6.25e-5, 165
    lr = functools.partial(
        cosine_epoch_lr, base_lr=base, epochs=60, warmup_epochs=5, warmup_lr=1e-6, min_lr=1e-5
    )
    used = [base * epoch_schedule_factor(e * per_epoch, per_epoch, lr, base, lag=1) for e in range(60)]
    expected = [1e-6, 1e-6, 1.33e-5, 2.56e-5, 3.79e-5, 5.02e-5, 6.161e-5, 6.122e-5, 6.076e-5, 6.023e-5]
    assert used[:10] == pytest.approx(expected, rel=2e-3)
    assert used[59] == pytest.approx(1.014e-5, rel=1e-3)
    assert max(used) < base  # the nominal peak is never used
    inside = [base * epoch_schedule_factor(t, per_epoch, lr, base, lag=1) for t in range(7 * 165, 8 * 165)]
    assert len(set(inside)) == 1  # constant within an epoch
    assert lr(5) == pytest.approx(1e-5 + 0.5 * (base - 1e-5) * (1 + math.cos(math.pi * 5 / 60)))
    assert lr(60) == lr(100) == 1e-5
