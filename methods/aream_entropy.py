"""AReAM's layer entropies as training reads them (spec §8.5): one image's CAM and per-block
attention, and the entropy file (written by ``utils/diagnostics/layer_entropy.py``, read by
``aream.entropy_file``)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn

from common.errors import ConfigError
from model import aream
from model.mctformer import MCTformer

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
        model: an ``AFANetwork`` or an ``MCTformer`` V2 in eval mode; image: (1, 3, H, W) normalised.
    """
    if isinstance(model, MCTformer):
        return mct_image_attention(model, image)
    enc = model.encoder
    out = model.forward_cam(image, run_decoder=False, with_affinity=False, logit_blocks=range(enc.num_blocks))
    scales = aream.block_scales(enc)
    attns = [aream.head_mean_attention(a, s) for a, s in zip(out.attn_logits, scales)]
    return ImageAttention(out.cam.float(), attns, aream.block_grids(enc, *image.shape[-2:]))


@torch.no_grad()
def mct_image_attention(model: MCTformer, image: Tensor) -> ImageAttention:
    """``image_attention`` of MCTformer-V2 (golden ``aream_entropy_mct``): the raw conv map as the CAM and
    the patch block [:, C:, C:] of every block's head-mean softmax attention, all on the patch grid.

    Raises:
        ValueError: a V1 model (no conv map).
    """
    if model.version != "v2":
        raise ValueError("layer entropies need MCTformer-V2 (its conv map is the CAM); this is V1")
    out = model.forward_logits(image, range(len(model.blocks)))
    c = model.num_classes
    attns = [aream.patch_block(aream.head_mean_attention(a, 1.0), c) for a in out.logits]  # already scaled
    return ImageAttention(out.fmap.float(), attns, [tuple(out.fmap.shape[-2:])] * len(attns))


@torch.no_grad()
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


def checked_split(layer_index: int, num_blocks: int, entropy_file: str | None) -> tuple[float, ...] | None:
    """The normalised entropy weights of ``entropy_file`` (None: uniform, the "agg." baseline), after
    checking that block ``layer_index`` splits the ``num_blocks`` blocks into two non-empty sets.

    Raises:
        ConfigError: ``layer_index`` outside 1..num_blocks − 1.
    """
    if not 0 < layer_index < num_blocks:
        raise ConfigError(
            f"aream.layer_index={layer_index} must be in 1..{num_blocks - 1} (both sets non-empty)"
        )
    if entropy_file is None:
        return None
    return tuple(load_entropy_file(entropy_file, num_blocks)["normalised"])


class LayerSplit:
    """The split of a mode's settings at ``layer_index`` and the entropy weights of each side.

    A mixin of the AReAM settings dataclasses (on AFA and on MCTformer): they hold ``layer_index``,
    ``num_blocks`` and ``entropy`` (the normalised per-block entropies e, or None for uniform weights).
    """

    layer_index: int
    num_blocks: int
    entropy: tuple[float, ...] | None

    @property
    def shallow_blocks(self) -> range:
        """Blocks [0, layer_index): their attention refines the CAM (Eq. 9)."""
        return range(self.layer_index)

    @property
    def deep_blocks(self) -> range:
        """Blocks [layer_index, num_blocks): supervised by Eq. 16."""
        return range(self.layer_index, self.num_blocks)

    def propagation_weights(self) -> Tensor:
        """(layer_index,) w = 1 − e of the shallow blocks (ones without an entropy file)."""
        if self.entropy is None:
            return torch.ones(self.layer_index)
        return aream.propagation_weights(torch.tensor(self.entropy[: self.layer_index]))

    def supervision_weights(self) -> Tensor:
        """(num_blocks − layer_index,) e of the deep blocks (ones without an entropy file)."""
        if self.entropy is None:
            return torch.ones(self.num_blocks - self.layer_index)
        return torch.tensor(self.entropy[self.layer_index :])
