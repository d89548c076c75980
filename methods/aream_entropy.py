"""The offline layer-entropy pass of AReAM (spec §8.5) and its JSON file.

For each image of a split (batch 1, single scale, no flip, model in eval mode): the raw CAM of the
present classes refined by each block's head-mean softmax attention, summed over those classes,
softmaxed over all positions, entropy in bits (``model.aream.layer_entropies``); the mean over images
per block, then min-max normalised across blocks. ``aream.entropy_file`` reads the result.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import NamedTuple

import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.utils.data import DataLoader

from model import aream
from utils.runtime.progress import progress

FORMAT = "afa-aream-layer-entropy"
VERSION = 1


class ImageAttention(NamedTuple):
    """One image's single-scale CAM and every block's head-mean attention.

    Attributes:
        cam: (1, K, h, w) raw CAM (before ReLU) on the stage-4 grid.
        attns: one (1, N_l, N_l) row-stochastic map per block.
        grids: the (h_l, w_l) grid of each map.
    """

    cam: Tensor
    attns: list[Tensor]
    grids: list[tuple[int, int]]


@torch.no_grad()
def image_attention(model: nn.Module, image: Tensor) -> ImageAttention:
    """The CAM pass with every block's logits, turned into head-mean softmax attentions.

    Args:
        model: an ``AFANetwork`` in eval mode; image: (1, 3, H, W) normalised.
    """
    enc = model.encoder
    out = model.forward_cam(image, run_decoder=False, with_affinity=False, logit_blocks=range(enc.num_blocks))
    scales = aream.block_scales(enc)
    attns = [aream.head_mean_attention(a, s) for a, s in zip(out.attn_logits, scales)]
    return ImageAttention(out.cam.float(), attns, aream.block_grids(enc, *image.shape[-2:]))


@torch.no_grad()
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


def load_entropy_file(path: str | Path, num_blocks: int) -> dict:
    """Read and check an entropy file for an encoder of ``num_blocks`` blocks.

    Raises:
        FileNotFoundError: if there is no such file.
        ValueError: if it is not an entropy file, has the wrong number of blocks, or values out of range.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"aream.entropy_file not found: {path} (write it with scripts/layer_entropy.py)"
        )
    record = json.loads(path.read_text())
    if record.get("format") != FORMAT:
        raise ValueError(f"{path} is not a layer-entropy file (format {record.get('format')!r})")
    values = record.get("normalised", [])
    if len(values) != num_blocks or len(record.get("entropy_bits", [])) != num_blocks:
        raise ValueError(f"{path} has {len(values)} blocks; the encoder has {num_blocks}")
    if not all(isinstance(v, (int, float)) and math.isfinite(v) and 0.0 <= v <= 1.0 for v in values):
        raise ValueError(f"{path}: normalised entropies must lie in [0, 1], got {values}")
    return record
