"""MCTformer seed (localisation) maps, spec §4 (golden ``mct_attention_maps``, ``mct_attention_maps_v1``).

Per pass (each scale's image and its horizontal flip): the class maps M (V2: the fused class
attention × ReLU conv-CAM of the last K blocks, or another ``attention_type``; V1: the class
attention) are refined once by the summed patch-to-patch attention P of **all** blocks
(M_c ← P·vec M_c), upsampled bilinearly to the first scale's full H×W, multiplied by the label
vector and flipped back. The passes are summed, and each present class is min-max normalised.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from model.mctformer import MCTformer

EPS = 1e-8  # the authors' min-max epsilon


def refine_with_patch_attention(cams: Tensor, patch_attn: Tensor) -> Tensor:
    """M_c(i) ← Σ_j P(i, j)·M_c(j) with P = Σ_l A_l[patches, patches] (spec §4.3 step 2, Q9).

    Args:
        cams: (B, C, h, w); patch_attn: (L, B, Np, Np), rows the query patches, Np = h·w.

    Returns:
        (B, C, h, w).
    """
    b, c, h, w = cams.shape
    p = patch_attn.sum(dim=0)
    return torch.bmm(cams.reshape(b, c, h * w), p.transpose(1, 2)).reshape(b, c, h, w)


def pass_map(cams: Tensor, label: Tensor, size: tuple[int, int], flipped: bool) -> Tensor:
    """One pass's contribution (spec §4.3 steps 3-5): upsample, zero absent classes, undo the flip.

    Args:
        cams: (B, C, h, w); label: (B, C) multi-hot; size: (H, W) of the first scale.

    Returns:
        (B, C, H, W).
    """
    up = F.interpolate(cams, size=size, mode="bilinear", align_corners=False)
    up = up * label[:, :, None, None].to(up.dtype)
    return up.flip(-1) if flipped else up


def normalise_present(summed: Tensor, label: Tensor) -> tuple[Tensor, Tensor]:
    """Per-class min-max of the present classes (spec §4.4): (S − min)/(max − min + 1e-8).

    Args:
        summed: (C, H, W) the sum over passes; label: (C,) multi-hot.

    Returns:
        keys (k,) int64, the present classes (0-based foreground index), and maps (k, H, W).
    """
    keys = torch.nonzero(label > 0).flatten()
    maps = summed[keys]
    lo = maps.amin(dim=(-2, -1), keepdim=True)
    hi = maps.amax(dim=(-2, -1), keepdim=True)
    return keys, (maps - lo) / (hi - lo + EPS)


def background_score(maps: Tensor, alpha: float) -> Tensor:
    """bg = (1 − max_c map_c)^α over the present classes (spec §4.5 step 1): (k, H, W) -> (H, W)."""
    if maps.shape[0] == 0:
        return torch.ones(maps.shape[-2:], dtype=maps.dtype, device=maps.device)
    return (1.0 - maps.amax(dim=0)) ** alpha


@torch.no_grad()
def mct_seed_maps(
    model: MCTformer,
    images: Sequence[Tensor],
    label: Tensor,
    layers: int = 3,
    refine: bool = True,
    attention_type: str = "fused",
) -> tuple[Tensor, Tensor]:
    """Seed maps of one image (spec §4): every scale's image and its flip, summed, min-max per class.

    Args:
        model: an MCTformer in eval mode.
        images: per scale a (1, 3, H_s, W_s) normalised image, the first giving the output size.
        label: (C,) or (1, C) multi-hot image-level labels.
        layers: K, the last blocks of class attention; refine: the patch-to-patch refinement.
        attention_type: V2's class maps ("fused", "patchcam", "mct"); V1 ignores it.

    Returns:
        keys (k,) int64 of the present classes and maps (k, H, W) float in [0, 1].
    """
    label = label.reshape(1, -1).float()
    size = tuple(images[0].shape[-2:])
    total = None
    for image in images:
        for flipped in (False, True):
            x = image.flip(-1) if flipped else image
            out = model.forward_attention(x, layers, attention_type)
            cams = refine_with_patch_attention(out.cams, out.patch_attn) if refine else out.cams
            part = pass_map(cams.float(), label, size, flipped)
            total = part if total is None else total + part
    return normalise_present(total[0], label[0])
