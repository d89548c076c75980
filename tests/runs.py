"""Config overrides and data for the few-iteration CPU training runs of the engine tests (imported by
test files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datasets.classes import save_label_png
from datasets.demo import write_demo_dataset
from datasets.io import read_label
from datasets.saliency import write_saliency_png

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


def write_auxseg_demo(root: Path, seed: int) -> Path:
    """Four demo training images and one validation image at ``root``, with saliency maps
    (``sal/``: 230 on the shapes, 10 elsewhere) and segmentation labels = the masks (``seg/``)."""
    write_demo_dataset(root, num_train=4, num_val=1, seed=seed)
    for path in (root / "SegmentationClassAug").glob("*.png"):
        mask = read_label(path)
        write_saliency_png(
            root / "sal" / path.name, np.where((mask > 0) & (mask < 255), 230, 10).astype(np.uint8)
        )
        save_label_png(root / "seg" / path.name, mask)
    return root
