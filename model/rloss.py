"""The regularised loss L_reg: Tang et al.'s dense-CRF energy loss, as AFA's first version ran it.

Spec Appendix B, §6.4. The published VOC log and the paper's "+ L_reg" row (62.6 → 63.8) were
trained with ``loss = L_cls + 0.1·L_seg + 0.1·L_aff + 0.01·L_reg`` after the warm phase, where

    L_reg = DenseEnergyLoss(weight=1e-7, sigma_rgb=15, sigma_xy=100, scale_factor=0.5)

on the softmax of the crop-size segmentation logits, the de-normalised float image, the crop mask
of ``img_box`` and the step's segmentation target. The filter is the permutohedral lattice of
``model/lattice.py``; the backward is the reference's hand-written one (B.2.7), not autograd of
the forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from model.cam import IMAGENET_MEAN, IMAGENET_STD, box_mask
from model.lattice import bilateral_filter

REG_WEIGHT = 1e-7  # DenseEnergyLoss(weight=1e-7) [C@b174069 dist_train_voc.py]
SIGMA_RGB = 15.0
SIGMA_XY = 100.0  # on the crop grid; 50 after the 0.5 downscale
SCALE_FACTOR = 0.5


def denormalize_float(x: Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> Tensor:
    """x·std + mean per channel, kept float on the 0-255 scale (no uint8 cast, unlike PAR's image).

    Args:
        x: (B, 3, H, W) normalised image.
    """
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return x * s + m


def energy_gate(prob: Tensor, crop_mask: Tensor, unlabeled: Tensor) -> Tensor:
    """Gate = R − max_k S, set to 1 on unlabelled pixels, clipped below at 0 (spec B.2.3).

    Args:
        prob: (N, K, h, w); crop_mask: (N, h, w) in {0, 1}; unlabeled: (N, h, w) bool.

    Returns:
        (N, h, w), broadcast over K by the caller.
    """
    gate = crop_mask - prob.amax(dim=1)
    gate = torch.where(unlabeled, torch.ones_like(gate), gate)
    return gate.clamp(min=0)


class _DenseEnergy(torch.autograd.Function):
    """−Σ(S·R · gated filter(S·R)) / N with the reference's backward dL/dS = −2·AS·R / N."""

    @staticmethod
    def forward(ctx, prob, image, crop_mask, unlabeled, sigma_rgb, sigma_xy):
        """The energy −Σ S'·AS' / N of prob (B, C, H, W) on image (B, 3, H, W), crop_mask (B, H, W)."""
        n = prob.shape[0]
        masked = prob * crop_mask[:, None]  # S' = S·R
        filtered = bilateral_filter(image, masked, sigma_rgb, sigma_xy)
        filtered = filtered * energy_gate(prob, crop_mask, unlabeled)[:, None]  # AS, gated
        ctx.save_for_backward(filtered, crop_mask)
        ctx.n = n
        return -(masked * filtered).sum() / n

    @staticmethod
    def backward(ctx, grad_output):
        """dL/dprob = −2·AS'·R / N (the reference's gradient); none for the other inputs."""
        filtered, crop_mask = ctx.saved_tensors
        grad = -2.0 * grad_output * filtered * crop_mask[:, None] / ctx.n
        return grad, None, None, None, None, None


def dense_energy_loss(
    image: Tensor,
    prob: Tensor,
    crop_mask: Tensor,
    label: Tensor,
    weight: float = REG_WEIGHT,
    sigma_rgb: float = SIGMA_RGB,
    sigma_xy: float = SIGMA_XY,
    scale_factor: float = SCALE_FACTOR,
    ignore_index: int = 255,
) -> Tensor:
    """The reference ``DenseEnergyLoss.forward`` (spec B.2): downscale, gate, crop mask, filter.

    Downscaling by ``scale_factor``: the image and the crop mask and label nearest (F.interpolate's
    default), the probabilities bilinearly (align_corners False); σ_xy is scaled with it.

    Args:
        image: (N, 3, H, W) float on the 0-255 scale.
        prob: (N, K, H, W) class probabilities (gradients flow back through it).
        crop_mask: (N, H, W) float, 1 inside the image box.
        label: (N, H, W) int, ``ignore_index`` marks unlabelled pixels.

    Returns:
        Scalar: weight · (−Σ S'·AS / N).
    """
    small_image = F.interpolate(image.float(), scale_factor=scale_factor)
    small_prob = F.interpolate(prob.float(), scale_factor=scale_factor, mode="bilinear", align_corners=False)
    small_mask = F.interpolate(crop_mask[:, None].float(), scale_factor=scale_factor)[:, 0]
    small_label = F.interpolate(label[:, None].float(), scale_factor=scale_factor)[:, 0]
    unlabeled = small_label.long() == ignore_index
    energy = _DenseEnergy.apply(
        small_prob, small_image, small_mask, unlabeled, sigma_rgb, sigma_xy * scale_factor
    )
    return weight * energy


def regularised_loss(
    seg_logits: Tensor, x: Tensor, img_box: Tensor, seg_label: Tensor, ignore_index: int = 255
) -> Tensor:
    """L_reg of a training step, as the reference ``get_energy_loss`` computes it (spec B.1).

    Args:
        seg_logits: (B, K, H, W) segmentation logits upsampled to crop size.
        x: (B, 3, H, W) normalised crops.
        img_box: (B, 4) rows [h0, h1, w0, w1], the valid region of each crop.
        seg_label: (B, H, W) int64, the step's segmentation target (``ignore_index`` unlabelled).

    Returns:
        Scalar (weight 1e-7 included; the step multiplies it by ``loss.reg``).
    """
    prob = F.softmax(seg_logits.float(), dim=1)
    crop_mask = box_mask(img_box, x.shape[-2], x.shape[-1]).to(prob.dtype)
    image = denormalize_float(x.float())
    return dense_energy_loss(image, prob, crop_mask, seg_label, ignore_index=ignore_index)
