"""Checkpoints that resume exactly: weights, optimiser, scheduler, step, data position, RNG states.

One file per checkpoint, written atomically (temporary file + rename), readable with
``torch.load(..., weights_only=True)``: only tensors, numbers, strings, lists and dicts are stored.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from utils.errors import CheckpointError, MissingFileError


def rng_states() -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA generator states in a ``weights_only``-loadable form."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore the generators saved by ``rng_states``."""
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def umask_mode(mode: int = 0o666) -> int:
    """``mode`` as the user's umask leaves it (what ``open`` would create)."""
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


def save_atomic(obj: dict[str, Any], path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``.

    The file gets the permissions of a plainly written one (0666 less the umask), not ``mkstemp``'s
    0600, so that a team can read the checkpoints of a shared work directory.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, umask_mode())
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def torch_load_checked(path: str | Path, map_location: str | torch.device = "cpu") -> object:
    """``torch.load(..., weights_only=True)`` with one-line errors naming the file.

    Raises:
        MissingFileError: no such file.
        CheckpointError: the file is truncated, not a torch file, or holds objects other than tensors,
            numbers, strings, lists and dicts (``weights_only`` refuses to run its code).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for bad files
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"cannot read checkpoint {path}: {first}",
            hint="a truncated copy, or not a torch checkpoint of this project (nor the authors')",
        ) from err


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by ``save_atomic`` (``weights_only=True``; errors name the file)."""
    return torch_load_checked(path, map_location)
