"""AuxSegNet's pseudo labels: CAM refinement with the cross-task affinity, the saliency update and the
segmentation label rule (AuxSegNet spec §3, §4; the authors' ``gen_pgt.py`` and ``tool/imutils.py``).

Pure functions on tensors / arrays, except ``saliency_crf``, which runs pydensecrf (imported on use).
The authors' ``fusion_cam`` also writes a PNG; ours returns the label (spec §11 item 17).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from model.auxseg_heads import aggregate, unary_context, upsample

CAM_EPS = 1e-5  # spec §3.1: ĉ_k / (max ĉ_k + 1e-5)
CAM_THRESHOLD = 0.2  # spec §4.2: O_cam = max_k c_k > 0.2
SAL_THRESHOLD = 0.06  # spec §4.2: O_sal = S > 0.06
IGNORE_INDEX = 255


def normalise_cam(cam: Tensor) -> Tensor:
    """ReLU, then each channel divided by (its spatial max + 1e-5), for every class (spec §3.1).

    Args:
        cam: (B, K, h, w) raw CAM (fc8 on the feature).

    Returns:
        (B, K, h, w) in [0, 1).
    """
    cam = torch.relu(cam)
    return cam / (cam.amax(dim=(2, 3), keepdim=True) + CAM_EPS)


def propagate_cam(cam_norm: Tensor, cross_aff: Tensor, cross_unary: Tensor | None = None) -> Tensor:
    """One product with the cross-task affinity, ĉ_ref[:, i] = Σ_j A_CT[i, j] ĉ[:, j] (spec §3.2).

    No power, no iteration and no renormalisation, so values may exceed 1 (spec §11 item 9). With
    ``cross_unary`` (the AuxSegNet+ option ``unary_in_cam`` of spec §9.6, our reading) the affinity is
    A_CT + 1·u_CTᵀ, i.e. Σ_j u_CT[j] ĉ[:, j] is added at every position.

    Args:
        cam_norm: (B, K, h, w) normalised CAM.
        cross_aff: (B, N, N) cross-task affinity, N = h·w.
        cross_unary: (B, N) fused unary affinity, or None (ICCV: pairwise only).

    Returns:
        (B, K, h, w).
    """
    out = aggregate(cross_aff, cam_norm)
    if cross_unary is not None:
        out = out + unary_context(cross_unary, cam_norm)
    return out


def saliency_prob_up(refined_sal: Tensor, size: tuple[int, int]) -> Tensor:
    """Sigmoid of the refined saliency logit, **then** bilinear upsampling (spec §3.4).

    Args:
        refined_sal: (B, 1, h, w) logits.
        size: (H, W).

    Returns:
        (B, 1, H, W) in [0, 1].
    """
    return upsample(torch.sigmoid(refined_sal), size)


def fuse_saliency(sal_refined: np.ndarray, sal0_u8: np.ndarray) -> np.ndarray:
    """(S_ref + S₀/255) / 2 in float64, S₀ the original off-the-shelf map as stored (spec §4.1.1).

    Args:
        sal_refined: (H, W) the model's upsampled saliency probability.
        sal0_u8: (H, W) uint8 off-the-shelf map (always the original, spec §11 item 11).

    Returns:
        (H, W) float64 in [0, 1].
    """
    return (np.asarray(sal_refined, np.float64) + np.asarray(sal0_u8, np.float64) / 255.0) / 2.0


@dataclass(frozen=True)
class SaliencyCRF:
    """The authors' ``crf_for_sal`` settings (spec §4.1.2)."""

    gauss_sxy: float = 3
    gauss_compat: float = 3
    bilateral_sxy: float = 60
    bilateral_srgb: float = 5
    bilateral_compat: float = 5
    iterations: int = 1
    eps: float = 1e-8
    temperature: float = 1.05


def saliency_unary(fg: np.ndarray, settings: SaliencyCRF = SaliencyCRF()) -> np.ndarray:
    """The 2-label unary of ``crf_for_sal``: −log(p + ε) / (1.05·σ(p)) for p = 1 − a (background), a (fg).

    Args:
        fg: (H, W) foreground probability a in [0, 1].

    Returns:
        (2, H·W) float32 energies, background first.
    """
    a = np.asarray(fg, np.float64).reshape(1, -1)
    probs = np.concatenate([1.0 - a, a], axis=0)
    sigmoid = 1.0 / (1.0 + np.exp(-probs))
    unary = -np.log(probs + settings.eps) / (settings.temperature * sigmoid)
    return np.ascontiguousarray(unary, dtype=np.float32)


def saliency_crf(image: np.ndarray, fg: np.ndarray, settings: SaliencyCRF = SaliencyCRF()) -> np.ndarray:
    """Dense CRF on the fused saliency (spec §4.1.2): 2 labels, one mean-field iteration.

    Args:
        image: (H, W, 3) uint8 RGB.
        fg: (H, W) fused foreground probability.

    Returns:
        (1, H, W) float32 foreground marginal in [0, 1].
    """
    import pydensecrf.densecrf as dcrf

    h, w = fg.shape
    crf = dcrf.DenseCRF2D(w, h, 2)
    crf.setUnaryEnergy(saliency_unary(fg, settings))
    crf.addPairwiseGaussian(sxy=settings.gauss_sxy, compat=settings.gauss_compat)
    rgb = np.ascontiguousarray(image, dtype=np.uint8)
    crf.addPairwiseBilateral(
        sxy=settings.bilateral_sxy, srgb=settings.bilateral_srgb, rgbim=rgb, compat=settings.bilateral_compat
    )
    q = np.asarray(crf.inference(settings.iterations), dtype=np.float32).reshape(2, h, w)
    return q[1:2]


def saliency_label_u8(marginal: np.ndarray) -> np.ndarray:
    """The new saliency pseudo label uint8(255 · marginal), truncated (spec §4.1.3); any shape."""
    return (np.asarray(marginal, np.float32) * 255).astype(np.uint8)


def segmentation_label(
    cam: Tensor,
    sal: Tensor,
    cls_label: Tensor,
    cam_threshold: float = CAM_THRESHOLD,
    sal_threshold: float = SAL_THRESHOLD,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """The authors' ``fusion_cam`` rule (spec §4.2).

    c = cam ⊙ y; O_cam = max_k c_k > 0.2; O_sal = S > 0.06 (strict, float32). Label argmax_k c_k + 1
    (ties to the lower class) where both hold, 0 where neither holds, ``ignore_index`` where exactly one.

    Args:
        cam: (B, K, H, W) refined CAM at image size.
        sal: (B, H, W) saliency in [0, 1] (the CRF marginal, not the uint8 file).
        cls_label: (B, K) image labels in {0, 1}.

    Returns:
        (B, H, W) int64 in {0, 1 … K, ignore_index}.
    """
    c = cam.float() * cls_label.float()[:, :, None, None]
    best, idx = c.max(dim=1)  # first maximum on ties
    o_cam = best > cam_threshold
    o_sal = sal.float() > sal_threshold
    label = torch.where(o_cam & o_sal, idx + 1, torch.zeros_like(idx))
    return torch.where(o_cam ^ o_sal, torch.full_like(idx, ignore_index), label)


def initial_cam_up(cam: Tensor, size: tuple[int, int]) -> Tensor:
    """Round-0 CAM (spec §4.4, our choice): the §3.1 normalisation at one scale, no propagation, upsampled.

    Args:
        cam: (B, K, h, w) raw CAM of the classification network.
        size: (H, W).

    Returns:
        (B, K, H, W), to be labelled with ``segmentation_label`` and S = S₀.
    """
    return upsample(normalise_cam(cam), size)
