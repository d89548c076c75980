"""AdamW with the authors' poly learning rate and linear warm-up (spec §2.6, §6.5).

The reference's ``PolyWarmupAdamW`` sets every group's lr inside ``step()`` from a counter t that
starts at 0. Here the same factor is a pure function, ``poly_warmup_factor(t)``, applied by a
standard ``LambdaLR``: the lr used by the t-th ``optimizer.step()`` is ``initial_lr · factor(t)``.
"""

from __future__ import annotations

from collections.abc import Sequence

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
        return poly_warmup_factor(t, warmup_iter, max_iter, warmup_ratio, power)

    return LambdaLR(optimizer, factor)
