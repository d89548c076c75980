"""One AFA training iteration (spec §5.6, §6.3): forward, pseudo labels, losses, optimiser step.

The engine calls ``train_step`` once per iteration; the golden ``train_iteration_*`` cases call the
same function, so the parity suite checks exactly what training runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor, nn

from model.afa import AFAOutput
from model.cam import maybe_autocast, resize, single_pass_cam
from model.losses import affinity_loss, classification_loss, segmentation_loss
from model.pseudo_labels import AFATargets, PseudoLabelSettings, make_targets
from model.rloss import regularised_loss
from utils.aream_step import AReAMSettings, aream_loss, make_aream_targets
from utils.nonfinite import all_finite, nonfinite_error
from utils.profiling import region, timed


@dataclass(frozen=True)
class StepSettings:
    """Everything a training step needs besides model, optimiser and batch.

    Attributes:
        pseudo: pseudo-label constants.
        cam_iters: classification-only warm phase: the seg and affinity terms are weighted 0 while
            n_iter ≤ cam_iters (0-based, so cam_iters + 1 warm iterations, as the reference).
        loss_weights: weights of the cls, seg, aff and reg terms after the warm phase (1.0/0.1/0.1
            and 0: the authors' current code; the paper's recipe has reg 0.01, spec §6.4). The
            regularised loss is computed only when its weight is positive.
        amp_dtype: autocast dtype for the network passes (None: full precision, the reference).
        aream: the optional AReAM mode (``utils/aream_step.py``); None is AFA exactly.
    """

    pseudo: PseudoLabelSettings = PseudoLabelSettings()
    cam_iters: int = 2000
    loss_weights: dict[str, float] = field(
        default_factory=lambda: {"cls": 1.0, "seg": 0.1, "aff": 0.1, "reg": 0.0}
    )
    amp_dtype: torch.dtype | None = None
    aream: AReAMSettings | None = None


class StepResult(NamedTuple):
    """Attributes:
    losses: unweighted loss terms {"cls", "seg", "aff"}, "reg" when its weight is positive and "aream"
        in AReAM mode (scalars, before the update).
    weights: the weight each term had in this iteration.
    total: the weighted sum that was back-propagated.
    output: the training forward's outputs.
    targets: the pseudo labels of this iteration.
    """

    losses: dict[str, Tensor]
    weights: dict[str, float]
    total: Tensor
    output: AFAOutput
    targets: AFATargets


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def phase_weights(n_iter: int, settings: StepSettings) -> dict[str, float]:
    """Loss weights of iteration n_iter: classification only during the warm phase (spec §6.3)."""
    warm = n_iter <= settings.cam_iters
    return {k: (0.0 if warm and k != "cls" else w) for k, w in settings.loss_weights.items()}


@timed("losses")  # exclusive of the forward and pseudo-label regions inside
def forward_losses(
    model: nn.Module, x: Tensor, cls_label: Tensor, img_box: Tensor, n_iter: int, settings: StepSettings
) -> StepResult:
    """Forward, pseudo labels and losses of one iteration, without the update.

    Args:
        model: the network, possibly DDP-wrapped.
        x: (B, 3, H, W) normalised crops; cls_label: (B, K); img_box: (B, 4).
        n_iter: 0-based iteration.
    """
    aream = settings.aream
    # forward
    with region("forward_backward"), maybe_autocast(x.device, settings.amp_dtype):
        output = model(
            x,
            logit_blocks=() if aream is None else aream.deep_blocks,
            with_cam=settings.pseudo.cam_from_forward,
        )
    # pseudo labels (no grad)
    if aream is None:
        own = None
        if settings.pseudo.cam_from_forward:
            own = single_pass_cam(output.cam, output.aff_pred, tuple(x.shape[-2:]))
        targets = make_targets(
            unwrap(model), x, cls_label, img_box, n_iter, settings.pseudo, settings.amp_dtype, own
        )
    else:
        targets, aream_label = make_aream_targets(
            unwrap(model), x, cls_label, img_box, n_iter, settings.pseudo, aream, settings.amp_dtype
        )
    # losses
    seg = resize(output.seg_logits.float(), tuple(x.shape[-2:]))
    losses = {
        "cls": classification_loss(output.cls_logits.float(), cls_label),
        "seg": segmentation_loss(seg, targets.seg_label, settings.pseudo.ignore_index),
        "aff": affinity_loss(output.aff_pred.float(), targets.aff_label),
    }
    if aream is not None:
        losses["aream"] = aream_loss(unwrap(model), output, aream_label, aream, settings.pseudo.ignore_index)
    weights = phase_weights(n_iter, settings)
    if settings.loss_weights.get("reg", 0.0) > 0:  # L_reg (spec B.1); during the warm phase only logged
        with torch.set_grad_enabled(torch.is_grad_enabled() and weights["reg"] > 0):
            losses["reg"] = regularised_loss(seg, x, img_box, targets.seg_label, settings.pseudo.ignore_index)
    total = sum(weights[k] * losses[k] for k in losses)
    return StepResult(losses, weights, total, output, targets)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    batch: dict[str, Tensor],
    n_iter: int,
    settings: StepSettings,
) -> StepResult:
    """One full iteration: losses, backward, optimiser and scheduler step.

    Raises:
        NonFiniteLossError: (a FloatingPointError) before any update if the total loss is not finite on
            any process; names the iteration, the terms and the batch's image ids.
    """
    result = forward_losses(model, batch["image"], batch["cls_label"], batch["img_box"], n_iter, settings)
    # step
    optimizer.zero_grad(set_to_none=True)
    with region("forward_backward"):
        result.total.backward()
    # checked once the backward is queued (on a GPU the check waits for the device), before any update
    if not all_finite(result.total):
        raise nonfinite_error(n_iter, result.losses, batch.get("name"))
    with region("optimizer"):
        optimizer.step()
        scheduler.step()
    return result
