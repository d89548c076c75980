"""The AReAM mode on MCTformer-V2, as the AReAM authors train it (``main_voc_mctformer.py``, AFA_SPEC §8.5).

``method: mctformer_v2`` with ``aream.enabled`` builds ``AReAMOnMCTformer`` (``methods/aream.py:
AREAM_VARIANTS``). Its step is MCTformer-V2's (class-token and patch MLSM, 1 : 1) plus, once the
classification-only warm phase (``aream.warmup_epochs``, 10 of 60 epochs) is over:

- the AReAM label, without grad (``aream_mct_cam``, ``aream_mct_label``): the V2 conv map of [x, flip(x)]
  at scale 1.0, weighted by the class-to-patch attention (head-mean softmax, mean over all L blocks,
  block [:, :C, C:]; ``model.aream.class_weighted_cam``), propagated by the shallow blocks' patch blocks
  [:, C:, C:] weighted by 1 − e (uniform without an entropy file; ``model.aream.aream_cam``: mean over
  those blocks, upsampling, flip-sum, ReLU, min-max), masked by the image labels, then AFA's PAR step
  with the low/high background scores (``model.refine.refine_cams_with_bkg``): one label, 255 where
  uncertain;
- ``aream`` = Eq. 16 on the deep blocks [layer_index, L): each block's head-mean scaled logits cut to
  the patch block, AFA's affinity loss against dense affinity labels, weighted by e and averaged
  (``model.aream.deep_layer_loss``), weight ``aream.loss_weight`` 0.1.

The training forward returns the deep blocks' scaled logits only in this mode (``MCTformer.forward``
with ``logit_blocks``; the other blocks keep fused attention). The CAM pass runs in the model's current
mode (train: drop-path active), as the step's own forward. V1 has no conv map: no AReAM mode.

The settings are this file's own record (``MCTAReAMSettings``: ``methods/aream.py`` registers this class,
so importing its ``AReAMSettings`` here would make an import cycle); both share the layer split and its
entropy weights (``methods.aream_entropy.LayerSplit``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from methods.aream_entropy import LayerSplit, checked_split
from methods.base import StepResult, unwrap
from methods.mctformer import MCTformerV2
from methods.mctformer_parts import mct_losses
from model import aream
from model.cam import denormalize, hflip, maybe_autocast
from model.mctformer import DEIT_SIZES, BlockLogits
from model.refine import refine_cams_with_bkg

AUTHORS_SPLIT = (7, 12)  # layer_index 7 of 12 DeiT blocks (the AReAM authors' main_voc_mctformer.sh)


@dataclass(frozen=True)
class MCTAReAMSettings(LayerSplit):
    """The mode's constants on MCTformer.

    Attributes:
        layer_index: first deep block; [0, layer_index) refine the CAM, [layer_index, num_blocks) are
            supervised.
        num_blocks: L, the DeiT depth.
        num_tokens: C, the class tokens before the patch tokens.
        entropy: normalised per-block entropies e (L values), or None for uniform weights.
        loss_weight: weight of the Eq. 16 term.
        warmup_epochs: epochs of classification only.
    """

    layer_index: int
    num_blocks: int
    num_tokens: int
    entropy: tuple[float, ...] | None = None
    loss_weight: float = 0.1
    warmup_epochs: int = 10


def default_layer_index(num_blocks: int) -> int:
    """7 for 12 blocks (the authors'); the same fraction, rounded, at least 1, for other depths."""
    return min(max(round(num_blocks * AUTHORS_SPLIT[0] / AUTHORS_SPLIT[1]), 1), num_blocks - 1)


def mct_aream_settings(cfg: DictConfig) -> MCTAReAMSettings:
    """The mode's settings from ``cfg.aream`` and the DeiT size; reads the entropy file (L blocks).

    Raises:
        ConfigError: ``layer_index`` leaves either block set empty.
    """
    a, b = cfg.aream, cfg.backbone
    num_blocks = b.dims[1] if b.dims is not None else DEIT_SIZES[b.config][1]
    layer_index = default_layer_index(num_blocks) if a.layer_index is None else a.layer_index
    entropy = checked_split(layer_index, num_blocks, a.entropy_file)
    c = cfg.dataset.num_classes - 1
    return MCTAReAMSettings(layer_index, num_blocks, c, entropy, a.loss_weight, a.warmup_epochs)


@torch.no_grad()
def aream_mct_cam(
    net: nn.Module, x: Tensor, s: MCTAReAMSettings, amp_dtype: torch.dtype | None = None
) -> Tensor:
    """The AReAM CAM of a batch on MCTformer-V2 (golden ``aream_propagation_mct``), without grad.

    Args:
        net: an ``MCTformer`` V2 (unwrapped); x: (B, 3, H, W) normalised.
        amp_dtype: autocast of the network pass only (the maps are float32).

    Returns:
        (B, C, H, W) in [0, 1), not yet masked by the image labels.
    """
    with maybe_autocast(x.device, amp_dtype):
        out: BlockLogits = net.forward_logits(torch.cat([x, hflip(x)]), range(s.num_blocks))
    attns = [aream.head_mean_attention(logits, 1.0) for logits in out.logits]  # logits already scaled
    weighted = aream.class_weighted_cam(out.fmap.float(), attns, s.num_tokens)
    shallow = [aream.patch_block(a, s.num_tokens) for a in attns[: s.layer_index]]
    grid = tuple(out.fmap.shape[-2:])
    weights = s.propagation_weights().to(x.device)
    return aream.aream_cam(weighted, shallow, [grid] * s.layer_index, weights, tuple(x.shape[-2:]))


@torch.no_grad()
def aream_mct_label(
    net: nn.Module, x: Tensor, cls_label: Tensor, s: MCTAReAMSettings, amp_dtype: torch.dtype | None = None
) -> Tensor:
    """The AReAM label: the masked AReAM CAM refined by PAR with the background scores 0.55 / 0.35.

    Args:
        net: an ``MCTformer`` V2; x: (B, 3, H, W) normalised (timm's mean/std, the same as AFA's);
        cls_label: (B, C) multi-hot; amp_dtype: as ``aream_mct_cam``.

    Returns:
        (B, H, W) int64: 0 background, c + 1 class c, 255 where the two scores disagree.
    """
    cam = aream_mct_cam(net, x, s, amp_dtype) * cls_label[:, :, None, None].to(x.dtype)
    b, _, h, w = x.shape
    box = torch.tensor([0, h, 0, w], device=x.device).expand(b, 4)
    return refine_cams_with_bkg(denormalize(x), cam, cls_label, box)


def aream_mct_loss(out: BlockLogits, label: Tensor, s: MCTAReAMSettings) -> Tensor:
    """Eq. 16 on the deep blocks' patch blocks (golden ``aream_aff_loss_mct``).

    Args:
        out: the training forward with the deep blocks' scaled logits (B, nh, C + N, C + N).
        label: (B, H, W) the AReAM label.

    Returns:
        scalar.
    """
    grid = (label.shape[-2] // 16, label.shape[-1] // 16)
    deep = [aream.patch_block(logits, s.num_tokens) for logits in out.logits]
    weights = s.supervision_weights().to(label.device)
    _, loss = aream.deep_layer_loss(deep, [1.0] * len(deep), [grid] * len(deep), label, weights)
    return loss


class AReAMOnMCTformer(MCTformerV2):
    """MCTformer-V2 with the AReAM mode (``aream.enabled``): the ``aream`` term after the warm phase."""

    def __init__(self, cfg: DictConfig) -> None:
        """MCTformer-V2's settings plus the mode's (``mct_aream_settings``)."""
        super().__init__(cfg)
        self.aream = mct_aream_settings(cfg)
        self._per_epoch: int | None = None

    def setup_lines(self) -> list[str]:
        """The recipe line, the block split, the warm phase and the layer weights."""
        s, path = self.aream, self.cfg.aream.entropy_file
        weights = (
            "uniform layer weights (no aream.entropy_file)" if s.entropy is None else f"entropies of {path}"
        )
        return super().setup_lines() + [
            f"aream: blocks 0-{s.layer_index - 1} refine, {s.layer_index}-{s.num_blocks - 1} supervised "
            f"(weight {s.loss_weight}) after {s.warmup_epochs} warm-up epochs; {weights}"
        ]

    def aream_active(self, n_iter: int) -> bool:
        """Whether iteration ``n_iter`` (0-based) is past the warm phase: epoch ≥ ``warmup_epochs``."""
        if self._per_epoch is None:
            self._per_epoch = self.iters_per_epoch()
        return n_iter // self._per_epoch >= self.aream.warmup_epochs

    def training_losses(self, model: nn.Module, batch: dict[str, Any], n_iter: int) -> StepResult:
        """MCTformer-V2's losses; ``aream`` 0 (weight 0) in the warm phase, Eq. 16 (weight 0.1) after."""
        if not self.aream_active(n_iter):
            r = super().training_losses(model, batch, n_iter)
            zero = r.total.detach().new_zeros(())
            return r._replace(losses={**r.losses, "aream": zero}, weights={**r.weights, "aream": 0.0})
        x, labels = batch["image"], batch["cls_label"].float()
        s = self.aream
        amp = torch.bfloat16 if self.cfg.train.amp == "bf16" else None
        label = aream_mct_label(unwrap(model), x, labels, s, amp)
        with maybe_autocast(x.device, amp):
            out: BlockLogits = model(x, logit_blocks=s.deep_blocks)
        losses = mct_losses(out.cls_logits.float(), out.patch_logits.float(), labels)
        losses["aream"] = aream_mct_loss(out, label, s)
        weights = {**dict.fromkeys(losses, 1.0), "aream": s.loss_weight}
        total = sum(weights[k] * v for k, v in losses.items())
        return StepResult(losses, weights, total, (out.cls_logits, out.patch_logits), label)
