"""Named timing regions inside the training step, off (and free) unless a benchmark turns them on.

The step marks its stages with ``with region("cam"): ...`` or the ``@timed("cam")`` decorator.
Normally ``region`` returns one shared no-op context manager (a global lookup and a call).
``record_regions()`` installs a recorder that times every region with ``time.perf_counter``,
synchronising the device on entry and exit so that asynchronous CUDA work is charged to the stage
that queued it. Regions nest: an inner region's time is subtracted from its enclosing one, so the
stages of a step add up to at most the step's time.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import TypeVar

import torch

F = TypeVar("F", bound=Callable)
_NULL = contextlib.nullcontext()
_recorder: RegionRecorder | None = None


class RegionRecorder:
    """Accumulates exclusive seconds per region name.

    Attributes:
        seconds: {name: exclusive seconds summed over all entries since the last ``reset``}.
    """

    def __init__(self, device: torch.device) -> None:
        """An empty recorder; ``sync`` waits for the device at every region boundary."""
        self.device = torch.device(device)
        self.seconds: dict[str, float] = defaultdict(float)
        self._stack: list[list[float]] = []  # [start, seconds spent in nested regions]

    def _sync(self) -> None:
        """Wait for queued CUDA work, so that it is charged to the region that queued it."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def reset(self) -> None:
        """Forget every recorded time."""
        self.seconds = defaultdict(float)

    @contextlib.contextmanager
    def region(self, name: str) -> Iterator[None]:
        """Time the block as ``name``, minus the regions nested inside it."""
        self._sync()
        entry = [time.perf_counter(), 0.0]
        self._stack.append(entry)
        try:
            yield
        finally:
            self._sync()
            self._stack.pop()
            total = time.perf_counter() - entry[0]
            self.seconds[name] += total - entry[1]
            if self._stack:
                self._stack[-1][1] += total


def region(name: str) -> contextlib.AbstractContextManager:
    """A timing region of the training step: a shared no-op unless ``record_regions`` is active."""
    if _recorder is None:
        return _NULL
    return _recorder.region(name)


def timed(name: str) -> Callable[[F], F]:
    """Decorator: the whole call is the region ``name`` (regions entered inside it are subtracted)."""

    def decorate(fn: F) -> F:
        """The decorator that wraps a function in ``region(name)``."""

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            """The function, timed."""
            with region(name):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


@contextlib.contextmanager
def record_regions(device: torch.device | str) -> Iterator[RegionRecorder]:
    """Time every ``region`` entered inside the block (device-synchronised; for benchmarks only)."""
    global _recorder
    previous, _recorder = _recorder, RegionRecorder(torch.device(device))
    try:
        yield _recorder
    finally:
        _recorder = previous
