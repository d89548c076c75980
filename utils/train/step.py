"""One training iteration of any method: its losses, then backward, the finiteness check and the update.

The engine calls ``train_step`` once per iteration; the golden ``train_iteration_*`` cases call the
same function with AFA, so the parity suite checks exactly what training runs.
"""

from __future__ import annotations

from typing import Any

import torch

from common.profiling import region
from methods.base import Method, StepResult
from utils.train.nonfinite import all_finite, nonfinite_error


def train_step(
    method: Method,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    batch: dict[str, Any],
    n_iter: int,
) -> StepResult:
    """One full iteration: ``method.training_losses``, backward, optimiser and scheduler step.

    Args:
        batch: on the model's device; see ``Method.training_losses``.
        n_iter: 0-based iteration.

    Raises:
        NonFiniteLossError: (a FloatingPointError) before any update if the total loss is not finite on
            any process; names the iteration, the terms and the batch's image ids.
    """
    result = method.training_losses(model, batch, n_iter)
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
