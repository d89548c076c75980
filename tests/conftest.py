"""Shared fixtures: the golden case directory and network, a tiny random AFA network, CPU numerics."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from model.afa import AFANetwork
from model.weights import build_from_golden_state
from utils.runtime.dist import configure_runtime

GOLDEN_DIR = Path(__file__).parent / "golden"


@pytest.fixture(autouse=True, scope="session")
def _runtime() -> None:
    """Flush subnormal floats, as training and ``check_golden`` do (PAR and random walks stay fast)."""
    configure_runtime()


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return GOLDEN_DIR


@pytest.fixture(scope="session")
def golden_model() -> AFANetwork:
    """The golden cases' network (mit_b0, 21 classes), in eval mode. Do not train it in a test."""
    return build_from_golden_state(GOLDEN_DIR / "model_state.npz")


@pytest.fixture
def tiny_model() -> Callable[..., AFANetwork]:
    """Factory of seeded random ``mit_tiny`` networks: ``tiny_model(num_classes=5, **kwargs)``."""

    def make(num_classes: int = 5, seed: int = 0, **kwargs) -> AFANetwork:
        torch.manual_seed(seed)
        kwargs.setdefault("embed_dim", 16)
        return AFANetwork("mit_tiny", num_classes=num_classes, **kwargs)

    return make


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models: one thread is as fast and does not stall when other processes share the CPUs.

    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``; the thread count is restored.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def subprocess_env() -> dict[str, str]:
    """Environment for command-line tests: one OpenMP thread per process."""
    return dict(os.environ, OMP_NUM_THREADS="1")
