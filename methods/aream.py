"""The AReAM mode (S002, spec §8.5) on AFA: its settings, pseudo labels, loss term and method class.

``aream.enabled`` makes the registry build ``AReAMOnAFA`` instead of ``AFA`` (``aream_variant``; for
``MCTformerV2`` it builds ``methods/aream_mct.py: AReAMOnMCTformer``). The AFA class replaces three
hooks of AFA's step: the training forward also returns the deep blocks' logits
(``AReAMSettings.deep_blocks``), the iteration's targets come from ``make_aream_targets``, and the
Eq. 16 term ``aream`` is added (``aream_loss``).

- The AReAM label: a no-grad CAM pass at scale 1.0 with flip that also returns the shallow blocks'
  logits; the CAM refined by the entropy-weighted shallow attention (Eq. 9, ``model.aream.aream_cam``),
  then PAR with the low/high background scores (``refine_cams_with_bkg``, as AFA's refined label).
- ``add``: AFA's targets and losses unchanged, plus ``aream`` = Eq. 16 on the deep blocks, supervised
  by affinity labels from the AReAM label.
- ``replace``: the AReAM label takes the place of AFA's propagated label (the segmentation target
  after ``afa.seg_label_switch_iter``), AFA's random walk is not run, and the ``aff`` term is logged with
  weight 0 (the affinity head then gets zero gradients, so DDP still sees every parameter used).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from common.errors import ConfigError
from methods.afa import AFA
from methods.aream_entropy import LayerSplit, checked_split
from methods.aream_mct import AReAMOnMCTformer
from methods.base import Method, unwrap
from methods.mctformer import MCTformerV2
from model import aream
from model.afa import AFAOutput
from model.affinity import affinity_labels, radius_mask
from model.cam import cam_to_pseudo_label, denormalize, hflip, maybe_autocast
from model.mit import MIT_VARIANTS
from model.pseudo_labels import AFATargets, PseudoLabelSettings, cam_passes, make_targets
from model.refine import refine_cams_with_bkg


@dataclass(frozen=True)
class AReAMSettings(LayerSplit):
    """The mode's constants.

    Attributes:
        layer_index: first deep block; blocks [0, layer_index) refine, [layer_index, num_blocks) are
            supervised.
        num_blocks: encoder blocks over all stages.
        mode: ``add`` or ``replace``.
        grid_conversion: ``expand`` or ``reduce`` (``model.aream``).
        entropy: the normalised per-block entropies e (one per block), or None for uniform weights.
        loss_weight: weight of the Eq. 16 term.
    """

    layer_index: int
    num_blocks: int
    mode: str = "add"
    grid_conversion: str = "expand"
    entropy: tuple[float, ...] | None = None
    loss_weight: float = 0.1

    def loss_weights(self, afa_weights: dict[str, float]) -> dict[str, float]:
        """AFA's term weights plus ``aream``; ``replace`` keeps ``aff`` for the log only (weight 0)."""
        weights = dict(afa_weights, aream=self.loss_weight)
        if self.mode == "replace":
            weights["aff"] = 0.0
        return weights


def default_layer_index(backbone: str) -> int:
    """The stage-3/stage-4 boundary: the index of the first stage-4 block (6 on mit_b0/b1)."""
    return sum(MIT_VARIANTS[backbone].depths[:3])


def aream_settings(cfg: DictConfig) -> AReAMSettings | None:
    """The mode's settings from ``cfg.aream`` (None when it is off); reads the entropy file.

    Raises:
        ConfigError: (a ValueError) if ``layer_index`` leaves either layer set empty.
    """
    a = cfg.aream
    if not a.enabled:
        return None
    num_blocks = sum(MIT_VARIANTS[cfg.backbone.config].depths)
    layer_index = default_layer_index(cfg.backbone.config) if a.layer_index is None else a.layer_index
    entropy = checked_split(layer_index, num_blocks, a.entropy_file)
    return AReAMSettings(layer_index, num_blocks, a.mode, a.grid_conversion, entropy, a.loss_weight)


def describe(s: AReAMSettings, entropy_file: str | None) -> str:
    """The training log's line on the layer weights the mode uses."""
    if s.entropy is None:
        return "aream: no aream.entropy_file, uniform layer weights (the paper's 'agg.' baseline)"
    return f"aream: normalised layer entropies from {entropy_file}: {[round(e, 3) for e in s.entropy]}"


@contextlib.contextmanager
def cam_mode(model: nn.Module, train_mode: bool) -> Iterator[None]:
    """The model's current mode for ``train_mode`` (the reference's CAM passes), else eval, restored after."""
    was_training = model.training
    if not train_mode:
        model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@torch.no_grad()
def aream_cam_pass(
    model: nn.Module, x: Tensor, s: AReAMSettings, train_mode: bool, amp_dtype: torch.dtype | None = None
) -> Tensor:
    """The AReAM CAM of a batch: scale 1.0 with flip, refined by the fused shallow attention (Eq. 9).

    The decoder is not run (its output is unused; in train mode it would update BatchNorm once more).

    Args:
        model: an ``AFANetwork`` (unwrapped).
        x: (B, 3, H, W) normalised.

    Returns:
        (B, K, H, W) in [0, 1).
    """
    h, w = x.shape[-2:]
    with cam_mode(model, train_mode), maybe_autocast(x.device, amp_dtype):
        out = model.forward_cam(
            torch.cat([x, hflip(x)]), run_decoder=False, with_affinity=False, logit_blocks=s.shallow_blocks
        )
    scales, grids = aream.block_scales(model.encoder), aream.block_grids(model.encoder, h, w)
    attns = [aream.head_mean_attention(out.attn_logits[i], scales[i]) for i in s.shallow_blocks]
    weights = s.propagation_weights().to(x.device)
    shallow_grids = [grids[i] for i in s.shallow_blocks]
    return aream.aream_cam(out.cam.float(), attns, shallow_grids, weights, (h, w), s.grid_conversion)


@torch.no_grad()
def make_aream_targets(
    model: nn.Module,
    x: Tensor,
    cls_label: Tensor,
    img_box: Tensor,
    n_iter: int,
    p: PseudoLabelSettings,
    s: AReAMSettings,
    amp_dtype: torch.dtype | None = None,
) -> tuple[AFATargets, Tensor]:
    """The iteration's targets in AReAM mode and the AReAM label that supervises the deep blocks.

    Args:
        model: an ``AFANetwork`` (unwrapped); x: (B, 3, H, W); cls_label: (B, K); img_box: (B, 4).

    Returns:
        AFATargets (``add``: exactly AFA's; ``replace``: AReAM's label in place of the propagated one,
        ``aff_cam`` = [high background | AReAM CAM]) and the AReAM label (B, H, W).
    """
    images01 = denormalize(x)
    cam = aream_cam_pass(model, x, s, p.cam_train_mode, amp_dtype)
    label = refine_cams_with_bkg(
        images01, cam, cls_label, img_box, p.high_thre, p.low_thre, p.par_dilations, p.par_num_iter,
        ignore_index=p.ignore_index,
    )  # fmt: skip
    if s.mode == "add":
        return make_targets(model, x, cls_label, img_box, n_iter, p, amp_dtype), label
    msc = cam_passes(model, x, p, amp_dtype)
    _, pseudo_label = cam_to_pseudo_label(
        msc.cam, cls_label, img_box, p.bkg_score, p.high_thre, p.low_thre, True, p.ignore_index
    )
    refined = refine_cams_with_bkg(
        images01, msc.cam, cls_label, img_box, p.high_thre, p.low_thre, p.par_dilations, p.par_num_iter,
        ignore_index=p.ignore_index,
    )  # fmt: skip
    grid = model.encoder.token_grid(*x.shape[-2:])
    aff_label = affinity_labels(refined, radius_mask(*grid, p.radius, device=x.device), grid, p.ignore_index)
    seg_label = refined if n_iter <= p.seg_switch_iter else label
    aff_cam = torch.cat([torch.full_like(cam[:, :1], p.high_thre), cam], dim=1)
    return AFATargets(
        msc.cam, msc.aff_pred, pseudo_label, refined, label, aff_cam, aff_label, seg_label
    ), label


def aream_loss(
    model: nn.Module, output: AFAOutput, label: Tensor, s: AReAMSettings, ignore_index: int = 255
) -> Tensor:
    """Eq. 16: the entropy-weighted mean of the deep blocks' affinity losses (spec §8.5).

    Args:
        model: the unwrapped ``AFANetwork`` (for the blocks' scales and grids).
        output: the training forward, whose ``attn_logits`` hold the deep blocks' logits (with grad).
        label: (B, H, W) the AReAM label.

    Returns:
        scalar.
    """
    h, w = label.shape[-2:]
    scales, grids = aream.block_scales(model.encoder), aream.block_grids(model.encoder, h, w)
    deep = list(s.deep_blocks)
    _, loss = aream.deep_layer_loss(
        [output.attn_logits[i] for i in deep],
        [scales[i] for i in deep],
        [grids[i] for i in deep],
        label,
        s.supervision_weights().to(label.device),
        ignore_index,
    )
    return loss


class AReAMOnAFA(AFA):
    """AFA with the AReAM mode (``aream.enabled``): the deep blocks' logits in the forward, the
    AReAM targets, and the ``aream`` term (weight ``aream.loss_weight``)."""

    def __init__(self, cfg: DictConfig) -> None:
        """AFA's settings with the mode's: the ``aream`` weight added (and ``aff`` logged at weight 0 in
        ``replace``)."""
        super().__init__(cfg)
        self.aream = aream_settings(cfg)
        self.step = replace(self.step, loss_weights=self.aream.loss_weights(self.step.loss_weights))

    def setup_lines(self) -> list[str]:
        """Which layer weights the mode uses (entropy file or uniform)."""
        return [describe(self.aream, self.cfg.aream.entropy_file)]

    def forward(self, model: nn.Module, x: Tensor) -> AFAOutput:
        """The training forward, returning the deep blocks' attention logits too."""
        return model(x, logit_blocks=self.aream.deep_blocks, with_cam=self.step.pseudo.cam_from_forward)

    def step_targets(
        self, model: nn.Module, x: Tensor, cls_label: Tensor, img_box: Tensor, n_iter: int, output: AFAOutput
    ) -> tuple[AFATargets, Tensor]:
        """AFA's targets (``add``) or the AReAM label's (``replace``), and the AReAM label (B, H, W)."""
        s = self.step
        return make_aream_targets(
            unwrap(model), x, cls_label, img_box, n_iter, s.pseudo, self.aream, s.amp_dtype
        )

    def extra_losses(self, model: nn.Module, output: AFAOutput, extra: Any) -> dict[str, Tensor]:
        """``aream``: Eq. 16 on the deep blocks, supervised by the AReAM label."""
        return {"aream": aream_loss(unwrap(model), output, extra, self.aream, self.step.pseudo.ignore_index)}


AREAM_VARIANTS: dict[type[Method], type[Method]] = {AFA: AReAMOnAFA, MCTformerV2: AReAMOnMCTformer}


def aream_variant(method: type[Method]) -> type[Method]:
    """The class of ``method`` in the AReAM mode.

    Raises:
        ConfigError: the method has no AReAM mode.
    """
    if method not in AREAM_VARIANTS:
        known = ", ".join(sorted(cls.__name__ for cls in AREAM_VARIANTS))
        raise ConfigError(f"aream.enabled: {method.__name__} has no AReAM mode (methods with one: {known})")
    return AREAM_VARIANTS[method]
