"""Config overrides for the few-iteration CPU training runs of the engine tests (imported by test files)."""

from __future__ import annotations

from pathlib import Path

# Shared by every tiny run: generated data at ``root``, 64 px crops, no loader workers, the CPU.
BASE = {
    "dataset.crop_size": 64,
    "dataset.num_workers": 0,
    "train.batch_size": 2,
    "train.max_iters": 2,
    "train.cam_iters": 0,
    "train.eval_iters": 2,
    "train.log_iters": 1,
    "device": "cpu",
}


def tiny_overrides(root: Path, work: Path, **extra) -> list[str]:
    """``key=value`` overrides of ``configs/demo.yaml`` for a tiny run on the demo data in ``root``
    writing to ``work``; ``extra`` (dotted keys) replaces or adds to :data:`BASE`."""
    items = {"dataset.root_dir": root, "dataset.name_list_dir": root, **BASE, "work_dir.dir": work}
    items.update(extra)
    return [f"{k}={v}" for k, v in items.items()]
