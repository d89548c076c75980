"""AFA's validation predictions (spec §7.1): the class logits, segmentation, CAM and affinity labels.

Per image (original size, eval mode): the single-scale forward gives the class logits, the
segmentation and the affinity; the multi-scale CAM is thresholded at ``bkg_score``; the affinity
propagates the CAM with background 0.35 (no PAR). The engine's loop (``utils/evaluation/validate.py``)
scores the three maps and the F1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from model.affinity import propagate_with_bkg, radius_mask
from model.cam import cam_to_label, channel_argmax, multi_scale_cam, resize


@dataclass(frozen=True)
class EvalSettings:
    num_classes: int
    cam_scales: tuple[float, ...] = (1.0, 0.5, 1.5)
    bkg_score: float = 0.45  # CAM threshold (cfg.cam.bkg_score)
    aff_bkg_score: float = 0.35  # hard-coded in the reference validation
    radius: int = 8


@dataclass
class EvalPrediction:
    """Validation predictions of a batch of same-size images: (B, H, W) int64 label maps each, plus
    the class logits (B, K)."""

    cls_logits: Tensor
    seg: Tensor
    cam: Tensor
    aff: Tensor


@torch.no_grad()
def predict_for_validation(
    model: nn.Module, image: Tensor, cls_label: Tensor, s: EvalSettings
) -> EvalPrediction:
    """Predictions of spec §7.1 for images of one size (the reference validates one at a time; every
    step here is per image: eval mode, per-image CAM normalisation and walk).

    Args:
        model: an ``AFANetwork`` in eval mode.
        image: (B, 3, H, W) normalised; cls_label: (B, K) ground-truth image labels.
    """
    size = tuple(image.shape[-2:])
    out = model(image)
    seg = channel_argmax(resize(out.seg_logits, size))
    cam = multi_scale_cam(model, image, s.cam_scales, with_affinity=False).cam  # the walk uses out.aff_pred
    cam_label = cam_to_label(cam, cls_label, s.bkg_score)
    aff = walk_label(model, cam, out.aff_pred, cls_label, s)
    return EvalPrediction(out.cls_logits, seg, cam_label, aff)


def walk_label(model: nn.Module, cam: Tensor, aff: Tensor, cls_label: Tensor, s: EvalSettings) -> Tensor:
    """Validation's affinity label: the CAM resized to the token grid, walked one step with ``aff`` at
    background ``aff_bkg_score`` in the radius window, resized back, argmax (no PAR).

    Args:
        cam: (B, K, H, W) multi-scale CAM; aff: (B, N, N) on the encoder's grid for (H, W).
        cls_label: (B, K).

    Returns:
        (B, H, W) int64.
    """
    size = tuple(cam.shape[-2:])
    grid = model.encoder.token_grid(*size)
    mask = radius_mask(*grid, s.radius, cam.device)
    rw = propagate_with_bkg(resize(cam, grid), aff, mask, cls_label, s.aff_bkg_score)
    return channel_argmax(resize(rw, size))
