"""The CRF export of MCTformer seed maps for an affinity (PSA) stage, spec §4.5 (``mct_attention_maps``).

For α ∈ {1, 12}: bg = (1 − max_c map_c)^α, the rows [bg; maps of the present classes] are given
**unnormalised** to a dense CRF as probabilities (unary −log clip(p, 1e-5, 1); Gaussian sxy 3,
compat 3; bilateral sxy 80, srgb 13, compat 10; 10 iterations) on the image rebuilt from the
normalised scale-1 tensor as (x·std + mean)·255 truncated to uint8. Row 0 is the background, row
r ≥ 1 the class ``keys[r − 1]`` (written as ``c + 1``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from model.mct_seeds import background_score
from utils.evaluation.crf import CRFParams, dense_crf

SEED_CRF = CRFParams(iter_max=10, pos_xy_std=3, pos_w=3, bi_xy_std=80, bi_rgb_std=13, bi_w=10)
TIMM_MEAN = (0.485, 0.456, 0.406)
TIMM_STD = (0.229, 0.224, 0.225)


def rebuild_image(
    x: Tensor, mean: tuple[float, ...] = TIMM_MEAN, std: tuple[float, ...] = TIMM_STD
) -> np.ndarray:
    """(x·std + mean)·255 truncated to uint8: (3, H, W) or (1, 3, H, W) normalised -> (H, W, 3) uint8."""
    img = x.reshape(3, *x.shape[-2:]).permute(1, 2, 0).cpu().numpy()
    img = (img * np.asarray(std, np.float32) + np.asarray(mean, np.float32)) * 255.0
    return img.astype(np.uint8)


def crf_seed_scores(
    image: np.ndarray, keys: Tensor, maps: Tensor, alpha: float, params: CRFParams = SEED_CRF
) -> tuple[np.ndarray, np.ndarray]:
    """The CRF marginals of [bg^α; maps] (spec §4.5).

    Args:
        image: (H, W, 3) uint8; keys: (k,) present classes; maps: (k, H, W) seed maps in [0, 1].

    Returns:
        keys (1 + k,) int64 = [0, keys + 1] and probabilities (1 + k, H, W) float32.
    """
    bg = background_score(maps, alpha)
    prob = torch.cat([bg[None], maps]).float().cpu().numpy()
    out_keys = np.concatenate([[0], keys.cpu().numpy() + 1]).astype(np.int64)
    return out_keys, dense_crf(image, prob, params)
