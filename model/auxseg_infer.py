"""Full-image passes of AuxSegNet: CAM refinement for pseudo labels (spec §3, ``gen_pgt.py``) and
test-time segmentation (spec §8, ``infer_AuxAff.py``).

Both run the model once on the whole image (batch 1 in the authors' code), single scale, no flip, in
eval mode; the caller normalises the image ((x/255 − mean)/std, ImageNet statistics) and sets the mode.
The dense CRF lives in ``utils/evaluation/crf.py``; the segmentation pass takes it as a callable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from model.auxseg_heads import upsample
from model.auxseg_labels import normalise_cam, propagate_cam, saliency_prob_up
from model.auxsegnet import AuxSegNet, AuxSegOutput

# ``crf_inference_inf`` of the authors (spec §8), named as ``utils.evaluation.crf.CRFParams``' fields.
INFERENCE_CRF = {"iter_max": 10, "pos_xy_std": 4, "pos_w": 3, "bi_xy_std": 83, "bi_rgb_std": 5, "bi_w": 3}


class CamRefinement(NamedTuple):
    """The maps of spec §3 for B images of size H × W (features h × w).

    Attributes:
        cam_norm: (B, K, h, w) ReLU'd CAM, max-normalised per class.
        refined_cam: (B, K, h, w) after one product with A_CT.
        refined_cam_up: (B, K, H, W) bilinear upsampling of ``refined_cam``.
        sal_prob_up: (B, 1, H, W) sigmoid of the refined saliency logit, then upsampled.
    """

    cam_norm: Tensor
    refined_cam: Tensor
    refined_cam_up: Tensor
    sal_prob_up: Tensor


def refine_from_output(out: AuxSegOutput, size: tuple[int, int], unary_in_cam: bool = False) -> CamRefinement:
    """Spec §3 steps 1-4 on one forward's output.

    Args:
        out: the network's output (``cam`` (B, K, h, w), ``cross_aff`` (B, N, N), ``refined_sal``).
        size: the image size (H, W).
        unary_in_cam: AuxSegNet+ option (spec §9.6): propagate with A_CT + 1·u_CTᵀ (needs a unary model).
    """
    if unary_in_cam and out.cross_unary is None:
        raise ValueError("unary_in_cam needs a network built with unary=True")
    cam_norm = normalise_cam(out.cam)
    refined = propagate_cam(cam_norm, out.cross_aff, out.cross_unary if unary_in_cam else None)
    return CamRefinement(cam_norm, refined, upsample(refined, size), saliency_prob_up(out.refined_sal, size))


@torch.no_grad()
def refine_cams(model: AuxSegNet, x: Tensor, size: tuple[int, int]) -> CamRefinement:
    """Run the model (eval mode, set by the caller) and refine its CAM and saliency (spec §3).

    Args:
        model: the network.
        x: (B, 3, H, W) normalised images (or features when the model has no backbone).
        size: the image size (H, W) to upsample to.
    """
    return refine_from_output(model(x), size)


def seg_probs(refined_seg: Tensor, size: tuple[int, int]) -> Tensor:
    """Softmax over classes of the bilinear upsampling of P_ref_seg (spec §8); P_seg is not used.

    Args:
        refined_seg: (B, C, h, w) refined segmentation logits.
        size: (H, W).

    Returns:
        (B, C, H, W) probabilities.
    """
    return torch.softmax(upsample(refined_seg, size), dim=1)


class Segmentation(NamedTuple):
    """Test-time result for one image: ``prob`` (C, H, W) (after the CRF when one ran) and ``pred`` (H, W)
    uint8 class ids."""

    prob: np.ndarray
    pred: np.ndarray


def segment_image(
    model: AuxSegNet,
    x: Tensor,
    image: np.ndarray | None = None,
    crf: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> Segmentation:
    """Spec §8 for one image: softmax of the upsampled refined logits, optional CRF, argmax.

    Args:
        model: the network in eval mode.
        x: (1, 3, H, W) normalised image (or its feature without a backbone: then give ``image``).
        image: (H, W, 3) uint8 RGB; needed for the CRF and for the size when ``x`` is a feature.
        crf: (image (H, W, 3) uint8, prob (C, H, W)) -> marginals (C, H, W), e.g. ``dense_crf`` with
            ``CRFParams(**INFERENCE_CRF)``; None: no CRF.
    """
    size = tuple(image.shape[:2]) if image is not None else tuple(x.shape[-2:])
    with torch.no_grad():
        prob = seg_probs(model(x).refined_seg, size)[0].cpu().numpy()
    if crf is not None:
        if image is None:
            raise ValueError("the CRF needs the uint8 image")
        prob = np.asarray(crf(image, prob), dtype=np.float32)
    return Segmentation(prob, prob.argmax(axis=0).astype(np.uint8))
