"""Dense CRF post-processing with pydensecrf (spec §7.3), the authors' parameters as defaults."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CRFParams:
    """Fully connected CRF settings of the authors' ``DenseCRF`` (spec §7.3)."""

    iter_max: int = 10
    pos_xy_std: float = 3
    pos_w: float = 3
    bi_xy_std: float = 64
    bi_rgb_std: float = 5
    bi_w: float = 4


def dense_crf(image: np.ndarray, prob: np.ndarray, params: CRFParams = CRFParams()) -> np.ndarray:
    """Mean-field inference of a dense CRF with unary −log p, a Gaussian and a bilateral kernel.

    Args:
        image: (H, W, 3) uint8 RGB at the resolution of ``prob``.
        prob: (C, H, W) float class probabilities.

    Returns:
        (C, H, W) float32 marginals Q.
    """
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    c, h, w = prob.shape
    crf = dcrf.DenseCRF2D(w, h, c)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(prob.astype(np.float32))))
    crf.addPairwiseGaussian(sxy=params.pos_xy_std, compat=params.pos_w)
    crf.addPairwiseBilateral(
        sxy=params.bi_xy_std,
        srgb=params.bi_rgb_std,
        rgbim=np.ascontiguousarray(image, dtype=np.uint8),
        compat=params.bi_w,
    )
    q = crf.inference(params.iter_max)
    return np.asarray(q, dtype=np.float32).reshape(c, h, w)
