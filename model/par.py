"""PAR: Pixel-Adaptive Refinement (spec §4.1-4.3).

Each pixel's mask value is repeatedly replaced by an affinity-weighted sum of 48 dilated neighbours
(dilations d ∈ D, 8 neighbours each, centre excluded, replicate padding). The affinity mixes an
appearance term, softmax_k of −(|ΔI| / (σ_I·w1))² averaged over RGB with σ_I the per-pixel std of
the 48 neighbours, and a fixed position term w2·softmax_k −(ρ_k / (σ_ρ·w1))². Each pixel's weights
sum to 1 + w2 = 1.01 (no renormalisation, as in the reference).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

from common.profiling import timed

DEFAULT_DILATIONS = (1, 2, 4, 8, 12, 24)
# Neighbour order within one dilation, as (dy, dx): row-major over the 3×3 grid without the centre.
NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def neighbour_offsets(dilations: tuple[int, ...]) -> list[tuple[int, int]]:
    """The 8·len(dilations) (row, col) offsets in the reference order (dilations outer)."""
    return [(d * dy, d * dx) for d in dilations for dy, dx in NEIGHBOURS]


def _shift(padded: Tensor, pad: int, dy: int, dx: int, h: int, w: int) -> Tensor:
    """The neighbour at offset (dy, dx) of every pixel, from a replicate-padded map."""
    return padded[..., pad + dy : pad + dy + h, pad + dx : pad + dx + w]


def gather_neighbours(x: Tensor, dilations: tuple[int, ...]) -> Tensor:
    """Stack the dilated neighbours of every pixel.

    Args:
        x: (B, C, H, W).

    Returns:
        (B, C, 8·len(dilations), H, W), replicate padding at the borders.
    """
    pad = max(dilations)
    h, w = x.shape[-2:]
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    return torch.stack([_shift(padded, pad, dy, dx, h, w) for dy, dx in neighbour_offsets(dilations)], dim=2)


def position_kernel(
    dilations: tuple[int, ...], w1: float = 0.3, device: torch.device | str | None = None
) -> Tensor:
    """softmax_k of −(ρ_k / ((σ_ρ + 1e-8)·w1))², ρ_k the neighbour distance (d or d·√2).

    Computed once per (dilations, w1, device) and cached (read-only: do not modify the result).

    Returns:
        (8·len(dilations),) float32 weights summing to 1, the same for every pixel (spec §4.2).
    """
    return _position_kernel(tuple(dilations), float(w1), torch.device(device or "cpu"))


@lru_cache(maxsize=16)
def _position_kernel(dilations: tuple[int, ...], w1: float, device: torch.device) -> Tensor:
    """Cached (P,) softmax weights of the P neighbour offsets of ``dilations`` by their distance
    (PAR's position kernel, w1 its temperature)."""
    rho = torch.tensor([math.hypot(dy, dx) for dy, dx in neighbour_offsets(dilations)], dtype=torch.float32)
    sigma = rho.std()
    return torch.softmax(-((rho / (sigma + 1e-8) / w1) ** 2), dim=0).to(device)


def neighbour_std(neigh: Tensor) -> Tensor:
    """Unbiased std over the neighbour axis: sqrt(Σ_k (n_k − mean)² / (k − 1)).

    Written as two passes (mean, then the squared deviations) because ``Tensor.std`` over this
    non-innermost axis is ~5× slower on the CPU; the same value up to float rounding (~1e-7).

    Args:
        neigh: (B, C, k, H, W).

    Returns:
        (B, C, 1, H, W).
    """
    dev = neigh - neigh.mean(dim=2, keepdim=True)
    return dev.square().sum(dim=2, keepdim=True).div_(neigh.shape[2] - 1).sqrt_()


@timed("par")
def par_affinity(
    image: Tensor, dilations: tuple[int, ...] = DEFAULT_DILATIONS, w1: float = 0.3, w2: float = 0.01
) -> Tensor:
    """The per-pixel neighbour weights of PAR.

    Args:
        image: (B, 3, H, W) in [0, 1].

    Returns:
        (B, 8·len(dilations), H, W); each pixel's weights sum to 1 + w2.
    """
    neigh = gather_neighbours(image, dilations)  # (B, 3, k, H, W)
    sigma = neighbour_std(neigh)
    rgb = -(((image.unsqueeze(2) - neigh).abs() / (sigma + 1e-8) / w1) ** 2)
    rgb = rgb.mean(dim=1).softmax(dim=1)  # (B, k, H, W)
    pos = position_kernel(dilations, w1, rgb.device).to(rgb.dtype)
    return rgb + w2 * pos.view(1, -1, 1, 1)


@timed("par")
def par_propagate(masks: Tensor, affinity: Tensor, dilations: tuple[int, ...], num_iter: int) -> Tensor:
    """m(x) ← Σ_k a(x, k)·m(y_k), ``num_iter`` times.

    Args:
        masks: (B, M, H, W).
        affinity: (B, k, H, W) from ``par_affinity`` on the same grid.

    Returns:
        (B, M, H, W).
    """
    pad = max(dilations)
    h, w = masks.shape[-2:]
    offsets = neighbour_offsets(dilations)
    weights = [affinity[:, k : k + 1] for k in range(len(offsets))]
    for _ in range(num_iter):
        padded = F.pad(masks, (pad, pad, pad, pad), mode="replicate")
        out = torch.zeros_like(masks)
        for a, (dy, dx) in zip(weights, offsets):
            out.addcmul_(a, _shift(padded, pad, dy, dx, h, w))  # in place: no temporary per neighbour
        masks = out
    return masks


def pixel_adaptive_refine(
    image: Tensor,
    masks: Tensor,
    dilations: tuple[int, ...] = DEFAULT_DILATIONS,
    num_iter: int = 10,
    w1: float = 0.3,
    w2: float = 0.01,
    affinity: Tensor | None = None,
) -> Tensor:
    """PAR: resize masks to the image (bilinear, align_corners=True), then refine them.

    Args:
        image: (B, 3, H, W) in [0, 1].
        masks: (B, M, h, w) any resolution.
        num_iter: 10 for VOC, 15 for COCO in the reference.
        affinity: ``par_affinity(image, dilations, w1, w2)`` when the caller already has it.

    Returns:
        (B, M, H, W).
    """
    masks = F.interpolate(masks, size=image.shape[-2:], mode="bilinear", align_corners=True)
    if affinity is None:
        affinity = par_affinity(image, dilations, w1, w2)
    return par_propagate(masks, affinity, dilations, num_iter)
