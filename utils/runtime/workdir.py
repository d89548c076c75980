"""Work directories that are never damaged silently (checked before the trainer writes anything).

- Training again into a work directory that holds checkpoints, without ``--resume``, is refused:
  its ``best.pt`` may be better than anything the new run will write. ``train.overwrite=true``
  deletes the old checkpoints once the new run is sure to start.
- ``--resume`` first compares the config saved in ``last.pt`` with this one: every network key that
  differs is named in one error, before a file is written; a changed ``train.max_iters`` (the
  learning-rate schedule) and other changed keys are reported as warnings.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from omegaconf import DictConfig

from common.errors import UserError, WorkDirError
from utils.config import schema_keys
from utils.runtime.checkpoint import find_resume_checkpoint
from utils.runtime.checkpoint_config import config_differences, network_keys, saved_config

# keys that may change between a run and its resumption without remark
FREE_ON_RESUME = frozenset({"train.stop_iter", "train.overwrite", "device", "dataset.num_workers"})


def checkpoint_dir(cfg: DictConfig) -> Path:
    """``<work_dir.dir>/<work_dir.ckpt_dir>``."""
    return Path(cfg.work_dir.dir) / cfg.work_dir.ckpt_dir


def existing_checkpoints(cfg: DictConfig) -> list[Path]:
    """The ``*.pt`` files of the work directory's checkpoint folder, sorted."""
    folder = checkpoint_dir(cfg)
    return sorted(folder.glob("*.pt")) if folder.is_dir() else []


def check_work_dir(cfg: DictConfig, resume: bool) -> list[str]:
    """Refuse a run that would damage the work directory; reads only.

    Returns:
        Warnings to print (resume with a changed schedule or other changed keys).

    Raises:
        WorkDirError: checkpoints present without ``--resume``/``train.overwrite``; ``--resume``
            without a checkpoint; ``--resume`` with other network keys (all of them named).
        MissingFileError: ``--resume`` where no checkpoint is intact.
    """
    ensure_writable(cfg.work_dir.dir, "work_dir.dir")
    found = existing_checkpoints(cfg)
    if not resume:
        if found and not cfg.train.overwrite:
            names = ", ".join(p.name for p in found[:4]) + (" ..." if len(found) > 4 else "")
            raise WorkDirError(
                f"{checkpoint_dir(cfg)} already holds checkpoints ({names}); a new run would replace them",
                hint="continue that run with --resume, or start afresh with train.overwrite=true "
                "(deletes them), or choose another work_dir.dir",
            )
        return []
    if not found:
        raise WorkDirError(
            f"--resume: no checkpoint in {checkpoint_dir(cfg)}",
            hint="check work_dir.dir, or train without --resume",
        )
    # last.pt, or the newest intact iter_<n>.pt (the resume itself warns about a fallback)
    path, state = find_resume_checkpoint(checkpoint_dir(cfg), warn=False)
    saved = saved_config(state)
    return [] if saved is None else resume_warnings(saved, cfg, path, int(state.get("step", 0)))


def resume_warnings(saved: DictConfig, cfg: DictConfig, path: Path, step: int = 0) -> list[str]:
    """Compare a checkpoint's saved config with this run's; raise on network keys, warn on the rest."""
    network = config_differences(saved, cfg, network_keys(cfg))
    if network:
        listed = "; ".join(
            f"{k}: {theirs} in the checkpoint, {ours} now" for k, (theirs, ours) in network.items()
        )
        raise WorkDirError(
            f"--resume: {path} was trained with another network: {listed}",
            hint="resume with the checkpoint's values, or train into another work_dir.dir",
        )
    warnings = []
    others = config_differences(saved, cfg, [k for k in schema_keys(cfg) if k not in FREE_ON_RESUME])
    if "train.max_iters" in others:
        before, now = others.pop("train.max_iters")
        warnings.append(
            f"--resume: train.max_iters was {before}, now {now}: the learning-rate schedule (poly decay "
            f"to max_iters) changes from iteration {step} on"
        )
    if others:
        listed = ", ".join(f"{k} {theirs} -> {ours}" for k, (theirs, ours) in others.items())
        warnings.append(f"--resume with changed keys: {listed}")
    return warnings


def clear_checkpoints(cfg: DictConfig) -> list[Path]:
    """Delete the old checkpoints (``train.overwrite=true``); returns what was deleted."""
    found = existing_checkpoints(cfg)
    for path in found:
        path.unlink()
    return found


def ensure_writable(folder: str | Path, what: str) -> None:
    """Stop before any work if ``folder`` (or, when it does not exist yet, its nearest existing parent)
    cannot take a new file; leaves nothing behind.

    Args:
        folder: an output folder.
        what: how the user sets it, for the message, e.g. "--out" or "work_dir.dir".
    """
    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        if not probe.is_dir():
            raise NotADirectoryError(f"{probe} is not a folder")
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as err:
        reason = err.strerror or str(err)
        raise UserError(
            f"cannot write to {folder} ({what}): {reason}", hint=f"choose a writable folder with {what}"
        ) from None
