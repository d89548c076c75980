"""AuxSegNet's optimiser (spec §7.2, §7.3): SGD over two learning-rate groups with poly decay.

The authors' ``PolyOptimizer_cls`` passes ``(params, lr, weight_decay)`` positionally to
``torch.optim.SGD``, whose third positional parameter is ``momentum``: what runs is SGD with momentum =
the weight-decay argument (1e-5) and no weight decay (spec §11 item 1). ``sgd_settings`` gives both
readings; ``released_quirk=True`` reproduces the golden cases ``auxseg_poly_sgd`` and
``auxseg_train_step``, ``False`` (our default) is what the argument names intend: momentum 0.9, weight
decay 1e-5.

Schedule: before step t the lr of each group is lr₀·(1 − t/T)^power while t < T and keeps its
t = T − 1 value from then on (the authors' loop runs T + 1 iterations): ``methods.optim.poly_factor``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from methods.optim import poly_factor


def sgd_settings(weight_decay_arg: float, momentum: float, released_quirk: bool) -> tuple[float, float]:
    """(momentum, weight decay) of the SGD that runs.

    Args:
        weight_decay_arg: the recipe's ``--wt_dec`` (1e-5).
        momentum: the intended momentum (0.9).
        released_quirk: the authors' positional call: the decay argument becomes the momentum.
    """
    return (weight_decay_arg, 0.0) if released_quirk else (momentum, weight_decay_arg)


def lr_groups(groups: Sequence[Sequence[nn.Parameter]], lr: float, head_lr_mult: float) -> list[dict]:
    """The optimiser's parameter groups: (params_1x at ``lr``, params_10x at ``head_lr_mult``·``lr``).

    Raises:
        ValueError: not the two groups of spec §2.8.
    """
    if len(groups) != 2:
        raise ValueError(f"expected the two lr groups of spec §2.8, got {len(groups)}")
    return [{"params": list(groups[0]), "lr": lr}, {"params": list(groups[1]), "lr": lr * head_lr_mult}]


def build_poly_sgd(
    groups: Sequence[Sequence[nn.Parameter]],
    lr: float,
    max_step: int,
    weight_decay_arg: float = 1e-5,
    momentum: float = 0.9,
    power: float = 0.9,
    head_lr_mult: float = 10.0,
    released_quirk: bool = False,
) -> tuple[torch.optim.SGD, LambdaLR]:
    """SGD over (1× group, ``head_lr_mult``× group) and its poly schedule of ``max_step`` = T steps.

    Args:
        groups: (params_1x, params_10x), e.g. ``model.auxsegnet.param_groups``.
        lr: the 1× group's initial lr (authors 7e-4). max_step: T of the poly decay.
        weight_decay_arg, momentum, released_quirk: see ``sgd_settings``. power: poly power (0.9).

    Returns:
        (optimizer, scheduler); step the scheduler once after every ``optimizer.step()``.
    """
    mom, decay = sgd_settings(weight_decay_arg, momentum, released_quirk)
    optimizer = torch.optim.SGD(
        lr_groups(groups, lr, head_lr_mult),
        lr=lr,
        momentum=mom,
        weight_decay=decay,
        dampening=0.0,
        nesterov=False,
    )
    return optimizer, LambdaLR(optimizer, lambda t: poly_factor(t, max_step, power))


def build_poly_adamw(
    groups: Sequence[Sequence[nn.Parameter]],
    lr: float,
    max_step: int,
    weight_decay: float = 1e-5,
    power: float = 0.9,
    head_lr_mult: float = 10.0,
) -> tuple[torch.optim.AdamW, LambdaLR]:
    """AdamW over (1× group, ``head_lr_mult``× group) with the poly schedule of ``build_poly_sgd``
    (``optim.kind: adamw``, not the authors': for a backbone trained from random weights, e.g. the demo).

    Args:
        groups: (params_1x, params_10x). lr: the 1× group's initial lr. max_step: T of the poly decay.
    """
    optimizer = torch.optim.AdamW(
        lr_groups(groups, lr, head_lr_mult),
        lr=lr,
        weight_decay=weight_decay,
    )
    return optimizer, LambdaLR(optimizer, lambda t: poly_factor(t, max_step, power))
