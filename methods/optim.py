"""Optimisers and learning-rate schedules; a method chooses its own (``Method.configure_optimizers``).

Every schedule is a pure function of the 0-based iteration t (or epoch) that returns the multiplier
(or the rate); ``LambdaLR`` applies it, and the engine steps the scheduler once per iteration.

- AFA (spec §2.6, §6.5): AdamW with the authors' poly decay and linear warm-up. The reference's
  ``PolyWarmupAdamW`` sets every group's lr inside ``step()`` from a counter t that starts at 0; here
  ``poly_warmup_factor(t)``: the lr used by the t-th ``optimizer.step()`` is ``initial_lr · factor(t)``.
- SGD with poly decay (DeepLab-style second stages, AuxSegNet): ``poly_factor``.
- Epoch-based cosine with warm-up (timm's ``CosineLRScheduler``, MCTformer): ``cosine_epoch_lr`` per
  epoch, ``epoch_schedule_factor`` expresses it per iteration.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR


def poly_warmup_factor(
    t: int, warmup_iter: int, max_iter: int, warmup_ratio: float = 1e-6, power: float = 1.0
) -> float:
    """Learning-rate multiplier at step t (0-based).

    Warm-up: 1 − (1 − t/warmup_iter)·(1 − warmup_ratio) for t < warmup_iter, a ramp from
    ``warmup_ratio`` to ≈1. Then (1 − t/max_iter)^power, **not** re-based at the end of warm-up, so
    the lr drops at t = warmup_iter (to 0.925× for VOC), as in the reference. From t = max_iter on
    the reference stops updating the lr, so the last value, at t = max_iter − 1, is kept.
    """
    if t < warmup_iter:
        return 1.0 - (1.0 - t / warmup_iter) * (1.0 - warmup_ratio)
    t = min(t, max_iter - 1)
    return (1.0 - t / max_iter) ** power


def build_optimizer(
    param_groups: Sequence[Sequence[nn.Parameter]],
    lr: float,
    weight_decay: float = 0.01,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    head_lr_mult: float = 10.0,
) -> torch.optim.AdamW:
    """AdamW over the four groups of ``AFANetwork.param_groups()`` (spec §2.6).

    Group 0 (encoder weights): lr, weight decay. Group 1 (encoder norms): lr 0 and no decay, i.e.
    frozen. Groups 2 and 3 (classifier + affinity projection, decoder): ``head_lr_mult``·lr, weight
    decay (biases and BatchNorm affine parameters included, as in the reference).
    """
    if len(param_groups) != 4:
        raise ValueError(f"expected the 4 parameter groups of spec §2.6, got {len(param_groups)}")
    groups = [
        {"params": list(param_groups[0]), "lr": lr, "weight_decay": weight_decay},
        {"params": list(param_groups[1]), "lr": 0.0, "weight_decay": 0.0},
        {"params": list(param_groups[2]), "lr": lr * head_lr_mult, "weight_decay": weight_decay},
        {"params": list(param_groups[3]), "lr": lr * head_lr_mult, "weight_decay": weight_decay},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    warmup_iter: int,
    max_iter: int,
    warmup_ratio: float = 1e-6,
    power: float = 1.0,
) -> LambdaLR:
    """The poly-warm-up schedule; call ``scheduler.step()`` after every ``optimizer.step()``."""

    def factor(t: int) -> float:
        """The multiplier of the lr at step t."""
        return poly_warmup_factor(t, warmup_iter, max_iter, warmup_ratio, power)

    return LambdaLR(optimizer, factor)


def poly_factor(t: int, max_iter: int, power: float = 0.9) -> float:
    """(1 − t/max_iter)^power at step t (0-based); from t = max_iter on the last value, at t = max_iter
    − 1, is kept (as the reference optimisers, which stop updating the lr there)."""
    t = min(t, max_iter - 1)
    return (1.0 - t / max_iter) ** power


def cosine_epoch_lr(
    epoch: int,
    base_lr: float,
    epochs: int,
    warmup_epochs: int = 0,
    warmup_lr: float = 0.0,
    min_lr: float = 0.0,
) -> float:
    """timm's ``CosineLRScheduler`` at ``epoch`` (one cycle, no noise, no warm-up prefix).

    Warm-up (epoch < warmup_epochs): warmup_lr + epoch·(base_lr − warmup_lr)/warmup_epochs. Then
    min_lr + ½·(base_lr − min_lr)·(1 + cos(π·epoch/epochs)): the cosine is measured from epoch 0, not
    from the end of the warm-up. From ``epochs`` on: min_lr.
    """
    if epoch < warmup_epochs:
        return warmup_lr + epoch * (base_lr - warmup_lr) / warmup_epochs
    if epoch >= epochs:
        return min_lr
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * epoch / epochs))


def epoch_schedule_factor(
    t: int, iters_per_epoch: int, lr_of_epoch: Callable[[int], float], base_lr: float, lag: int = 0
) -> float:
    """An epoch schedule per iteration: the multiplier of ``base_lr`` at iteration t is
    ``lr_of_epoch(t // iters_per_epoch − lag) / base_lr``.

    ``lag=1`` is timm's order when the scheduler is stepped after each epoch: epoch e trains with the
    rate of e − 1, and epoch 0 with the rate set at creation, ``lr_of_epoch(0)``.
    """
    epoch = max(t // iters_per_epoch - lag, 0)
    return lr_of_epoch(epoch) / base_lr
