"""Non-finite training steps: one error naming the iteration, the loss terms and the images, or, with
``train.skip_nonfinite``, a skipped step that is counted (log and TensorBoard) until
``train.max_nonfinite_in_a_row`` follow each other.

A skipped step changes no weight and no optimiser moment; the learning-rate schedule and the data
still advance, so iteration n keeps the learning rate of iteration n. Under DDP every rank learns
whether any rank's loss is non-finite (one all-reduce of a flag), so all ranks stop or skip together
instead of hanging in the gradient all-reduce.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

from common.errors import UserError

T = TypeVar("T")


class NonFiniteLossError(UserError, FloatingPointError):
    """The total loss of a step is NaN or infinite."""


def all_finite(total: Tensor) -> bool:
    """Whether the scalar ``total`` is finite on every process (a MIN all-reduce under DDP)."""
    flag = torch.isfinite(total.detach()).to(torch.float32).reshape(1)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def nonfinite_error(
    n_iter: int, losses: dict[str, Tensor], names: Sequence[str] | None
) -> NonFiniteLossError:
    """The error of iteration ``n_iter`` (0-based), naming the unweighted terms and the batch's ids."""
    terms = ", ".join(f"{k} {float(v.detach()):.4g}" for k, v in losses.items())
    ids = ", ".join(names) if names else "unknown"
    return NonFiniteLossError(
        f"non-finite loss at iteration {n_iter}: {terms}; images {ids}",
        hint="lower optimizer.learning_rate or check the images; train.skip_nonfinite=true skips such a step",
    )


class NonFiniteGuard:
    """Runs training steps; with ``skip`` a non-finite step is skipped and counted, else it stops the run.

    Attributes:
        skipped: steps skipped so far in this process's run; in_a_row: the current streak.
        last: the message of the last skipped step.
    """

    def __init__(self, skip: bool, max_in_a_row: int) -> None:
        """``skip``: skip non-finite steps (else raise); stop after ``max_in_a_row`` skipped in a row."""
        self.skip = skip
        self.max_in_a_row = max_in_a_row
        self.skipped = 0
        self.in_a_row = 0
        self.last = ""

    def step(self, fn: Callable[[], T], scheduler: torch.optim.lr_scheduler.LRScheduler) -> T | None:
        """``fn()``'s result, or None for a skipped step (the scheduler is stepped in its place)."""
        try:
            result = fn()
        except NonFiniteLossError as err:
            if not self.skip:
                raise
            self.skipped, self.in_a_row, self.last = self.skipped + 1, self.in_a_row + 1, str(err)
            if self.in_a_row >= self.max_in_a_row:
                raise NonFiniteLossError(
                    f"{self.in_a_row} non-finite steps in a row (train.max_nonfinite_in_a_row); last: {err}",
                    hint="lower optimizer.learning_rate, or resume from an earlier checkpoints/iter_<n>.pt",
                ) from err
            scheduler.step()
            return None
        self.in_a_row = 0
        return result
