"""The offline layer-entropy pass of AReAM (spec §8.5), behind ``scripts/layer_entropy.py``.

For each image of a split (batch 1, single scale, no flip, model in eval mode): the raw CAM of the
present classes refined by each block's head-mean softmax attention, summed over those classes,
softmaxed over all positions, entropy in bits (``model.aream.layer_entropies``); the mean over images
per block, then min-max normalised across blocks. Written as JSON that ``aream.entropy_file`` reads
(``methods/aream_entropy.py: load_entropy_file``).
"""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader

from methods.aream_entropy import FORMAT, VERSION, image_attention
from model import aream
from utils.runtime.progress import progress


def dataset_entropy(
    model: nn.Module, loader: DataLoader, conversion: str = "expand", show: bool = True
) -> dict:
    """Mean per-block entropy (bits) over the loader's images that have at least one class.

    Args:
        loader: batch-1 items with ``image`` (1, 3, H, W) and ``cls_label`` (1, K).

    Returns:
        {"entropy_bits": [L floats], "normalised": [L floats], "num_images": n, "skipped": m}.
    """
    device = next(model.parameters()).device
    total, count, skipped = None, 0, 0
    for batch in progress(loader, desc="layer entropy", disable=not show, dynamic_ncols=True):
        cls_label = batch["cls_label"].to(device).float()
        if not cls_label.any():
            skipped += 1
            continue
        a = image_attention(model, batch["image"].to(device))
        entropy = aream.layer_entropies(a.cam, a.attns, a.grids, cls_label, conversion)[:, 0]  # (L,)
        total = entropy if total is None else total + entropy
        count += 1
    if count == 0:
        raise ValueError("no image with a present class: nothing to measure")
    mean = total / count
    return {
        "entropy_bits": mean.tolist(),
        "normalised": aream.normalise_entropies(mean).tolist(),
        "num_images": count,
        "skipped": skipped,
    }


def save_entropy_file(path: str | Path, result: dict, cfg: DictConfig, checkpoint: str, split: str) -> dict:
    """Write ``result`` of ``dataset_entropy`` with its provenance as JSON; returns what was written."""
    record = {
        "format": FORMAT,
        "version": VERSION,
        "backbone": cfg.backbone.config,
        "num_blocks": len(result["entropy_bits"]),
        "checkpoint": str(checkpoint),
        "split": split,
        "grid_conversion": cfg.aream.grid_conversion,
        **result,
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(record, indent=2) + "\n")
    return record
