"""MCTformer's training pieces as pure functions (spec §2, §3.2, §3.3, §3.6): the losses, timm's
no-decay parameter groups, the per-epoch cosine rate as used per iteration, and the validation mAP.

Shapes: B images, C foreground classes (MCTformer has no background class in its classifier).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from methods.optim import cosine_epoch_lr, epoch_schedule_factor

NO_DECAY_NAMES = ("pos_embed", "cls_token")  # the model's no_weight_decay() (spec §3.2)


def mlsm(logits: Tensor, labels: Tensor) -> Tensor:
    """Multi-label soft margin: −mean over batch of (1/C)·Σ_c [y log σ(z) + (1 − y) log σ(−z)] (spec §2).

    Args:
        logits: (B, C); labels: (B, C) multi-hot (float).

    Returns:
        a scalar.
    """
    return F.multilabel_soft_margin_loss(logits, labels)


def mct_losses(cls_logits: Tensor, patch_logits: Tensor | None, labels: Tensor) -> dict[str, Tensor]:
    """The named loss terms of one step (spec §2): ``cls`` = MLSM(class-token logits) for V1 and V2, and
    V2's ``patch`` = MLSM(patch logits); the total is their unweighted sum (1 : 1).

    Args:
        cls_logits: (B, C); patch_logits: (B, C), or None for V1; labels: (B, C).
    """
    losses = {"cls": mlsm(cls_logits, labels)}
    if patch_logits is not None:
        losses["patch"] = mlsm(patch_logits, labels)
    return losses


def no_decay(name: str, param: Tensor) -> bool:
    """timm's ``add_weight_decay`` rule (spec §3.2): 1-D tensors, biases, ``pos_embed`` and ``cls_token``
    get no weight decay."""
    return param.ndim <= 1 or name.endswith(".bias") or name in NO_DECAY_NAMES


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """[no-decay group (weight decay 0), decay group (``weight_decay``)], in timm's order, over the
    parameters that require a gradient (frozen ones are left out, as timm does)."""
    skip, decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (skip if no_decay(name, param) else decay).append(param)
    return [{"params": skip, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def group_names(model: nn.Module) -> tuple[list[str], list[str]]:
    """The parameter names of ``param_groups``' (no-decay, decay) groups, in order."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [n for n, p in named if no_decay(n, p)], [n for n, p in named if not no_decay(n, p)]


def build_adamw(
    model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float], eps: float
) -> torch.optim.AdamW:
    """torch's AdamW over ``param_groups`` (timm ``create_optimizer`` with ``opt='adamw'``, spec §3.1):
    the decay is decoupled, p ← p·(1 − lr·wd) before the Adam update; parameters without a gradient in
    a step are skipped."""
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, eps=eps)


def scaled_lr(lr: float, batch_size: int, reference_batch: int = 512) -> float:
    """main.py's linear scaling: lr·batch/512 (5e-4·64/512 = 6.25e-5, spec §3.1)."""
    return lr * batch_size / reference_batch


def lr_used_in_epoch(
    epoch: int, base_lr: float, epochs: int, warmup_epochs: int, warmup_lr: float, min_lr: float
) -> float:
    """The rate epoch ``epoch`` (0-based) trains with (spec §3.3): timm's cosine stepped **after** each
    epoch, so epoch e uses lr(e − 1), and epochs 0 and 1 both use lr(0) = ``warmup_lr``."""
    return cosine_epoch_lr(max(epoch - 1, 0), base_lr, epochs, warmup_epochs, warmup_lr, min_lr)


def schedule_factor(
    t: int,
    iters_per_epoch: int,
    base_lr: float,
    epochs: int,
    warmup_epochs: int,
    warmup_lr: float,
    min_lr: float,
) -> float:
    """The multiplier of ``base_lr`` at iteration t (0-based) for ``LambdaLR``: the rate of epoch
    t // iters_per_epoch, as ``lr_used_in_epoch``."""

    def lr_of_epoch(epoch: int) -> float:
        """timm's cosine at ``epoch``."""
        return cosine_epoch_lr(epoch, base_lr, epochs, warmup_epochs, warmup_lr, min_lr)

    return epoch_schedule_factor(t, iters_per_epoch, lr_of_epoch, base_lr, lag=1)


def average_precision(scores: Tensor, labels: Tensor) -> Tensor:
    """Average precision of one image's C scores against its labels, as sklearn's
    ``average_precision_score``: Σ_k (R_k − R_{k−1})·P_k over the distinct score thresholds, from the
    highest down (tied scores enter together).

    Args:
        scores: (C,); labels: (C,) in {0, 1} with at least one positive.

    Returns:
        a float64 scalar.
    """
    scores, labels = scores.double(), labels.double()
    order = torch.argsort(scores, descending=True, stable=True)
    s, y = scores[order], labels[order]
    last_of_tie = torch.ones_like(s, dtype=torch.bool)
    last_of_tie[:-1] = s[1:] != s[:-1]
    tp = torch.cumsum(y, 0)[last_of_tie]
    seen = torch.arange(1, len(s) + 1, dtype=torch.float64, device=s.device)[last_of_tie]
    precision, recall = tp / seen, tp / y.sum()
    steps = torch.diff(recall, prepend=recall.new_zeros(1))
    return (steps * precision).sum()


def per_image_ap(cls_logits: Tensor, labels: Tensor) -> Tensor:
    """The per-image AP of σ(cls logits) over the C classes (spec §3.6), NaN for an image without a
    positive label (the authors skip it).

    Args:
        cls_logits: (B, C); labels: (B, C).

    Returns:
        (B,) float64.
    """
    probs = torch.sigmoid(cls_logits.float())
    rows = [
        average_precision(p, y) if y.sum() > 0 else probs.new_tensor(float("nan"), dtype=torch.float64)
        for p, y in zip(probs, labels)
    ]
    return torch.stack(rows)


def batch_weighted_map(batches: Iterable[Tensor]) -> float:
    """``engine.evaluate``'s mAP over batches of per-image APs (NaN = skipped image): each batch's mean
    over its scored images, weighted by the **whole** batch size (spec §3.6, quirk Q17)."""
    total, count = 0.0, 0
    for ap in batches:
        scored = ap[~torch.isnan(ap)]
        if len(scored):
            total += float(scored.mean()) * len(ap)
        count += len(ap)
    return total / max(count, 1)
