"""Checkpoints that resume exactly: weights, optimiser, scheduler, step, data position, RNG states.

One file per checkpoint, written atomically (temporary file, fsync, rename), readable with
``torch.load(..., weights_only=True)``: only tensors, numbers, strings, lists and dicts are stored.
The RNG states are a list with one entry per rank (Python, NumPy, torch CPU and that rank's own CUDA
device), gathered to rank 0 before it writes, so that every rank resumes its own random stream.

A process killed at any moment (SIGKILL, node failure, Slurm requeue) leaves either the previous or
the new ``last.pt``, never a torn one; should one be torn anyway (a copy, a full disk, a file system
without atomic rename), ``find_resume_checkpoint`` falls back to the newest intact ``iter_<n>.pt``.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
import torch.distributed as dist

from common.errors import MissingFileError
from common.torch_io import torch_load_checked

LOG = logging.getLogger("afa")  # the run log (utils/runtime/logger.py)
REQUIRED_KEYS = ("model", "optimizer", "scheduler", "step", "epoch", "batch_in_epoch", "rng")


def rng_states(device: torch.device | None = None) -> dict[str, Any]:
    """This process's Python, NumPy and torch CPU states, and ``device``'s CUDA state if it is a GPU."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if device is not None and device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def set_rng_states(states: dict[str, Any], device: torch.device | None = None) -> None:
    """Restore the generators saved by ``rng_states`` (the CUDA state onto ``device``)."""
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda"], device)


def umask_mode(mode: int = 0o666) -> int:
    """``mode`` as the user's umask leaves it (what ``open`` would create)."""
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


def gather_rng_states(device: torch.device | None = None) -> list[dict[str, Any]]:
    """Every rank's ``rng_states``, indexed by rank. A collective: all ranks must call it."""
    mine = rng_states(device)
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [mine]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, mine)
    return gathered


def restore_rank_rng(saved: list | dict, rank: int, world_size: int, device: torch.device | None) -> None:
    """Set this rank's generators from a checkpoint's ``rng`` entry (a per-rank list, or one dict).

    Resuming on as many ranks as saved is exact. On a different number of ranks the run continues
    (each rank takes the state of the saved rank ``rank mod saved``) with a warning: the per-rank
    random streams, and the BatchNorm statistics, then differ from the uninterrupted run.
    """
    per_rank = [saved] if isinstance(saved, dict) else list(saved)
    if len(per_rank) != world_size:
        LOG.warning(
            f"checkpoint saved on {len(per_rank)} process(es), resuming on {world_size}: "
            "the run continues but is not bit-identical to an uninterrupted one"
        )
    set_rng_states(per_rank[rank % len(per_rank)], device)


def _write_atomic(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write through ``write(file)`` into a temporary file beside ``path``, fsync, rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, umask_mode())  # a plainly written file's mode, not mkstemp's 0600
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a crash
    finally:
        os.close(dir_fd)


def save_atomic(obj: dict[str, Any], path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``.

    The file gets the permissions of a plainly written one (0666 less the umask), not ``mkstemp``'s
    0600, so that a team can read the checkpoints of a shared work directory.
    """
    _write_atomic(Path(path), lambda f: torch.save(obj, f))


def copy_atomic(src: str | Path, dst: str | Path) -> None:
    """Copy ``src`` to ``dst`` so that ``dst`` is either absent, its old version, or complete."""
    with open(src, "rb") as source:
        _write_atomic(Path(dst), lambda f: shutil.copyfileobj(source, f))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by ``save_atomic`` (``weights_only=True``; errors name the file)."""
    return torch_load_checked(path, map_location)


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete the ``.<name>.*.tmp`` files a killed writer left behind; returns them."""
    stale = sorted(Path(directory).glob(".*.pt.*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def resume_candidates(directory: str | Path) -> list[Path]:
    """``last.pt``, then the ``iter_<n>.pt`` files from the newest (largest n) down."""
    directory = Path(directory)
    numbered = []
    for path in directory.glob("iter_*.pt"):
        match = re.fullmatch(r"iter_(\d+)\.pt", path.name)
        if match:
            numbered.append((int(match.group(1)), path))
    return [directory / "last.pt"] + [p for _, p in sorted(numbered, reverse=True)]


def find_resume_checkpoint(directory: str | Path, warn: bool = True) -> tuple[Path, dict[str, Any]]:
    """The newest intact checkpoint of ``directory`` and its contents.

    ``last.pt`` if it loads and holds every key of a training checkpoint; otherwise, with a warning
    naming what was wrong (unless ``warn`` is False), the newest ``iter_<n>.pt`` that does. Raises
    MissingFileError when none is usable.
    """
    problems = []
    for path in resume_candidates(directory):
        if not path.is_file():
            problems.append(f"{path.name}: missing")
            continue
        try:
            state = load_checkpoint(path)
            missing = [k for k in REQUIRED_KEYS if k not in state]
            if missing:
                raise KeyError(f"no {missing}")
        except Exception as err:  # torn zip, truncated pickle, wrong content: try the next one
            problems.append(f"{path.name}: unreadable ({type(err).__name__}: {str(err)[:120]})")
            continue
        if problems and warn:
            LOG.warning(f"resuming from {path} because " + "; ".join(problems))
        return path, state
    raise MissingFileError(
        f"no intact checkpoint to resume from in {directory}: " + "; ".join(problems),
        hint="start without --resume (train.overwrite=true replaces what is there)",
    )
