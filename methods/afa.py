"""AFA, Learning Affinity from Attention (Ru et al., CVPR 2022), as a method of the engine.

One iteration (spec §5.6, §6.3): the training forward (class logits, segmentation, attention, the
affinity of the AFA head); the pseudo labels without grad (multi-scale CAM, PAR, the random walk
with the learned affinity, affinity labels; ``model/pseudo_labels.py``); the losses ``cls``, ``seg``,
``aff`` and, when weighted, ``reg`` (the dense-CRF energy, App. B). The seg and aff terms weigh 0 in
the classification-only warm phase. Validation scores the CAM, the propagated CAM and the
segmentation (``methods/afa_eval.py``); test time runs the decoder (``AFANetwork.segment``).

The AReAM mode (``aream.enabled``) is a subclass in ``methods/aream.py`` that replaces the hooks
``forward``, ``step_targets`` and ``extra_losses``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from common.profiling import region, timed
from methods.afa_config import AFAConfig
from methods.afa_eval import EvalSettings, predict_for_validation
from methods.afa_panel import training_panel
from methods.base import Method, StepResult, ValidationOutput, unwrap
from methods.optim import build_optimizer, build_scheduler
from model.afa import AFANetwork, AFAOutput
from model.cam import cam_to_label, maybe_autocast, resize, single_pass_cam
from model.losses import affinity_loss, classification_loss, segmentation_loss
from model.pseudo_labels import AFATargets, PseudoLabelSettings, make_targets, whole_image_targets
from model.rloss import regularised_loss
from model.weights import load_afa_checkpoint, load_mit_pretrained


@dataclass(frozen=True)
class StepSettings:
    """Everything a training step needs besides model, optimiser and batch.

    Attributes:
        pseudo: pseudo-label constants.
        cam_iters: classification-only warm phase: the seg and affinity terms are weighted 0 while
            n_iter ≤ cam_iters (0-based, so cam_iters + 1 warm iterations, as the reference).
        loss_weights: weights of the terms after the warm phase (cls/seg/aff/reg 1.0/0.1/0.1 and 0:
            the authors' current code; the paper's recipe has reg 0.01, spec §6.4). The regularised
            loss is computed only when its weight is positive.
        amp_dtype: autocast dtype for the network passes (None: full precision, the reference).
    """

    pseudo: PseudoLabelSettings = PseudoLabelSettings()
    cam_iters: int = 2000
    loss_weights: dict[str, float] = field(
        default_factory=lambda: {"cls": 1.0, "seg": 0.1, "aff": 0.1, "reg": 0.0}
    )
    amp_dtype: torch.dtype | None = None


def step_settings(cfg: DictConfig) -> StepSettings:
    """The per-iteration constants of an AFA config."""
    pseudo = PseudoLabelSettings(
        cam_scales=tuple(cfg.cam.scales),
        bkg_score=cfg.cam.bkg_score,
        high_thre=cfg.cam.high_thre,
        low_thre=cfg.cam.low_thre,
        par_dilations=tuple(cfg.par.dilations),
        par_num_iter=cfg.par.num_iter,
        radius=cfg.afa.radius,
        seg_switch_iter=cfg.afa.seg_label_switch_iter,
        aff_switch_iter=cfg.afa.aff_label_switch_iter,
        cam_train_mode=cfg.cam.train_mode,
        cam_from_forward=cfg.cam.from_forward,
        ignore_index=cfg.dataset.ignore_index,
    )
    amp = torch.bfloat16 if cfg.train.amp == "bf16" else None
    weights = {"cls": cfg.loss.cls, "seg": cfg.loss.seg, "aff": cfg.loss.aff, "reg": cfg.loss.reg}
    return StepSettings(pseudo=pseudo, cam_iters=cfg.train.cam_iters, loss_weights=weights, amp_dtype=amp)


def eval_settings(cfg: DictConfig) -> EvalSettings:
    """Validation's constants of an AFA config."""
    return EvalSettings(
        cfg.dataset.num_classes, tuple(cfg.cam.scales), cfg.cam.bkg_score, radius=cfg.afa.radius
    )


def phase_weights(n_iter: int, settings: StepSettings) -> dict[str, float]:
    """Loss weights of iteration n_iter: classification only during the warm phase (spec §6.3)."""
    warm = n_iter <= settings.cam_iters
    return {k: (0.0 if warm and k != "cls" else w) for k, w in settings.loss_weights.items()}


class AFA(Method):
    """``method: afa``. Built from a config, or from its settings alone (``from_settings``: for a
    network built elsewhere, as the golden cases do)."""

    schema = AFAConfig
    validation_maps = ("cam", "aff", "seg")
    best_map = "seg"
    network_keys = (
        "backbone.config",
        "backbone.stride",
        "dataset.num_classes",
        "model.embed_dim",
        "model.pooling",
        "model.aff_blocks",
    )
    pseudo_label_kinds = ("pseudo", "refined", "cam")

    def __init__(
        self, cfg: DictConfig | None, step: StepSettings | None = None, evaluation: EvalSettings | None = None
    ) -> None:
        """From a config, or (``cfg`` None) from its settings: ``step`` for training steps, ``evaluation`` for
        validation."""
        super().__init__(cfg)
        self.step = step if step is not None else step_settings(cfg)
        self.eval = evaluation if evaluation is not None or cfg is None else eval_settings(cfg)

    @classmethod
    def from_settings(
        cls, step: StepSettings = StepSettings(), evaluation: EvalSettings | None = None
    ) -> AFA:
        """The method without a config, for a network built elsewhere: training steps, and validation
        when ``evaluation`` is given (no network building, no optimiser)."""
        return cls(None, step, evaluation)

    # ------------------------------------------------------------------ network and optimiser
    def build_network(self, pretrained: bool = True) -> AFANetwork:
        """``AFANetwork`` of the config (backbone, classes, strides, decoder width, pooling, affinity blocks),
        with the MiT ImageNet weights when ``backbone.pretrained``."""
        cfg = self.cfg
        model = AFANetwork(
            backbone=cfg.backbone.config,
            num_classes=cfg.dataset.num_classes,
            strides=tuple(cfg.backbone.stride),
            embed_dim=cfg.model.embed_dim,
            pooling=cfg.model.pooling,
            aff_blocks=cfg.model.aff_blocks,
            drop_path_rate=cfg.backbone.drop_path_rate,
        )
        if pretrained and cfg.backbone.pretrained:
            path = cfg.backbone.pretrained_path or f"pretrained/{cfg.backbone.config}.pth"
            load_mit_pretrained(model.encoder, path)
        return model

    def load_weights(self, model: nn.Module, source: str | Path) -> None:
        """Our checkpoints and the authors' (``module.``-prefixed keys)."""
        load_afa_checkpoint(model, source)

    def configure_optimizers(self, model: nn.Module):
        """AdamW over the four groups of spec §2.6 with the poly warm-up schedule (spec §6.5)."""
        o, s = self.cfg.optimizer, self.cfg.scheduler
        optimizer = build_optimizer(
            model.param_groups(), o.learning_rate, o.weight_decay, tuple(o.betas), head_lr_mult=o.head_lr_mult
        )
        scheduler = build_scheduler(
            optimizer, s.warmup_iter, self.cfg.train.max_iters, s.warmup_ratio, s.power
        )
        return optimizer, scheduler

    # ------------------------------------------------------------------ training
    def training_losses(self, model: nn.Module, batch: dict[str, Any], n_iter: int) -> StepResult:
        """``step_losses`` of ``image`` (B, 3, H, W), ``cls_label`` (B, K) and ``img_box`` (B, 4)."""
        return self.step_losses(model, batch["image"], batch["cls_label"], batch["img_box"], n_iter)

    @timed("losses")  # exclusive of the forward and pseudo-label regions inside
    def step_losses(
        self, model: nn.Module, x: Tensor, cls_label: Tensor, img_box: Tensor, n_iter: int
    ) -> StepResult:
        """Forward, pseudo labels and losses of one iteration, without the update.

        Args:
            model: the network, possibly DDP-wrapped.
            x: (B, 3, H, W) normalised crops; cls_label: (B, K); img_box: (B, 4).
            n_iter: 0-based iteration.

        Returns:
            StepResult with losses {"cls", "seg", "aff"} (+ the mode's terms, + "reg" when weighted).
        """
        s = self.step
        # forward
        with region("forward_backward"), maybe_autocast(x.device, s.amp_dtype):
            output = self.forward(model, x)
        # pseudo labels (no grad)
        targets, extra = self.step_targets(model, x, cls_label, img_box, n_iter, output)
        # losses
        seg = resize(output.seg_logits.float(), tuple(x.shape[-2:]))
        losses = {
            "cls": classification_loss(output.cls_logits.float(), cls_label),
            "seg": segmentation_loss(seg, targets.seg_label, s.pseudo.ignore_index),
            "aff": affinity_loss(output.aff_pred.float(), targets.aff_label),
        }
        losses.update(self.extra_losses(model, output, extra))
        weights = phase_weights(n_iter, s)
        if s.loss_weights.get("reg", 0.0) > 0:  # L_reg (spec B.1); during the warm phase only logged
            with torch.set_grad_enabled(torch.is_grad_enabled() and weights["reg"] > 0):
                losses["reg"] = regularised_loss(seg, x, img_box, targets.seg_label, s.pseudo.ignore_index)
        total = sum(weights[k] * losses[k] for k in losses)
        return StepResult(losses, weights, total, output, targets)

    def forward(self, model: nn.Module, x: Tensor) -> AFAOutput:
        """The training forward of (B, 3, H, W) crops (its CAM too with ``cam.from_forward``)."""
        return model(x, with_cam=self.step.pseudo.cam_from_forward)

    def step_targets(
        self, model: nn.Module, x: Tensor, cls_label: Tensor, img_box: Tensor, n_iter: int, output: AFAOutput
    ) -> tuple[AFATargets, Any]:
        """The iteration's pseudo labels (no grad), and what ``extra_losses`` needs (None for AFA)."""
        s = self.step
        own = None
        if s.pseudo.cam_from_forward:
            own = single_pass_cam(output.cam, output.aff_pred, tuple(x.shape[-2:]))
        targets = make_targets(unwrap(model), x, cls_label, img_box, n_iter, s.pseudo, s.amp_dtype, own)
        return targets, None

    def extra_losses(self, model: nn.Module, output: AFAOutput, extra: Any) -> dict[str, Tensor]:
        """Terms a mode adds after ``cls``, ``seg`` and ``aff`` (none for AFA)."""
        return {}

    def training_warnings(self) -> list[str]:
        """A schedule that never leaves the classification-only warm phase."""
        t = self.cfg.train
        if t.cam_iters < t.max_iters:
            return []
        return [
            f"train.cam_iters={t.cam_iters} >= train.max_iters={t.max_iters}: a short schedule, "
            "classification only (no seg or affinity loss); fine for a smoke run"
        ]

    def training_panel(
        self, batch, result: StepResult, model: nn.Module, class_names: list[str]
    ) -> np.ndarray:
        """One crop's CAM, labels, prediction and attention (``methods/afa_panel.py``)."""
        return training_panel(batch, result, model, class_names)

    # ------------------------------------------------------------------ evaluation
    def validation_step(self, model: nn.Module, image: Tensor, cls_label: Tensor) -> ValidationOutput:
        """The ``cam``, ``aff`` and ``seg`` label maps (B, H, W) and the class logits (B, K) of spec §7.1."""
        pred = predict_for_validation(model, image, cls_label, self.eval)
        return ValidationOutput({"cam": pred.cam, "aff": pred.aff, "seg": pred.seg}, pred.cls_logits)

    def min_input_side(self, model: nn.Module) -> int:
        """The encoder's smallest input side (its spatial-reduction windows)."""
        return model.encoder.min_input_side()

    @torch.no_grad()
    def pseudo_labels(self, model: nn.Module, image: Tensor, cls_label: Tensor) -> dict[str, Tensor]:
        """The training step's labels of one whole image (its box is the image), CAMs in eval mode:
        ``pseudo`` the AFA label, ``refined`` the PAR-refined CAM label, ``cam`` the plain CAM label."""
        s = self.step.pseudo
        targets = whole_image_targets(model, image, cls_label, s)
        cam = cam_to_label(targets.cam, cls_label, s.bkg_score)
        return {
            "pseudo": targets.refined_aff_label[0],
            "refined": targets.refined_pseudo_label[0],
            "cam": cam[0],
        }

    def pseudo_label_report(self) -> dict[str, Any]:
        """The CAM scales of the exported labels."""
        return {"cam_scales": list(self.step.pseudo.cam_scales)}
