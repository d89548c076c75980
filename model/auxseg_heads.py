"""AuxSegNet's head equations as pure functions (AuxSegNet spec §2, §9).

Positions are flattened row-major (i = y·w + x). In an affinity ``A[b, i, j]`` row i is the query and
column j the key; task affinities have rows summing to 1, the cross-task affinity does not (spec §2.5).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def pairwise_affinity(
    theta: Tensor, phi: Tensor, whiten: bool = False, temperature: float | None = None
) -> Tensor:
    """Embedded-Gaussian non-local affinity, spec §2.3: A[i, j] = softmax_j ⟨θ_i, φ_j⟩.

    As released: no 1/√d scaling and no mean subtraction (spec §11, item 6). The AuxSegNet+ options of
    spec §9.6 (our reading, off by default): ``whiten`` subtracts each image's mean of θ and φ over
    positions (DNL); ``temperature`` τ divides the logits by τ·√M.

    Args:
        theta: (B, M, h, w) query embedding θ(T).
        phi: (B, M, h, w) key embedding φ(T).
        whiten: subtract the per-image position means first.
        temperature: τ, or None for no scaling.

    Returns:
        (B, N, N) with N = h·w; every row sums to 1.
    """
    q = theta.flatten(2)  # (B, M, N)
    k = phi.flatten(2)  # (B, M, N)
    if whiten:
        q, k = q - q.mean(dim=2, keepdim=True), k - k.mean(dim=2, keepdim=True)
    logits = torch.bmm(q.transpose(1, 2), k)  # (B, N, N)
    if temperature is not None:
        logits = logits / (temperature * q.shape[1] ** 0.5)
    return torch.softmax(logits, dim=-1)


def aggregate(aff: Tensor, values: Tensor) -> Tensor:
    """Row-wise aggregation out[:, i] = Σ_j A[i, j] · values[:, j] (spec §2.4, §2.6, §3).

    Args:
        aff: (B, N, N) affinity, rows are queries.
        values: (B, C, h, w) with h·w = N.

    Returns:
        (B, C, h, w).
    """
    b, c, h, w = values.shape
    out = torch.bmm(values.flatten(2), aff.transpose(1, 2))  # (B, C, N)
    return out.reshape(b, c, h, w)


def cross_task_weights(seg_aff: Tensor, sal_aff: Tensor, fusion: nn.Module) -> Tensor:
    """Per-entry fusion weights of the cross-task affinity, spec §2.5.

    The stack [A_seg, A_sal] is treated as a 2-channel N×N image (so the 3×3 conv of ``fusion`` mixes
    raster-order neighbours, row wrap included, spec §11 item 8).

    Args:
        seg_aff: (B, N, N) segmentation affinity.
        sal_aff: (B, N, N) saliency affinity.
        fusion: maps (B, 2, N, N) to (B, 2, N, N) logits (``cross_att``).

    Returns:
        (B, 2, N, N) weights w, softmax over the 2 channels (w₀ + w₁ = 1).
    """
    return torch.softmax(fusion(torch.stack([seg_aff, sal_aff], dim=1)), dim=1)


def convex_mix(weights: Tensor, first: Tensor, second: Tensor) -> Tensor:
    """w₀ ⊙ first + w₁ ⊙ second (spec §2.5 for pairwise maps, §9.2 for unary ones).

    Args:
        weights: (B, 2, *S) with w₀ + w₁ = 1.
        first, second: (B, *S).

    Returns:
        (B, *S).
    """
    return weights[:, 0] * first + weights[:, 1] * second


def unary_affinity(logits: Tensor) -> Tensor:
    """Query-independent (unary) affinity of AuxSegNet+ as we read it (spec §9.1): softmax over positions.

    Args:
        logits: (B, 1, h, w) output of a 1×1 conv M → 1 on the task feature.

    Returns:
        (B, N), each row summing to 1.
    """
    return torch.softmax(logits.flatten(1), dim=-1)


def unary_context(unary: Tensor, values: Tensor) -> Tensor:
    """Σ_j u[j] · values[:, j], the same vector at every position (spec §9.3, §9.4).

    Args:
        unary: (B, N) weights over positions.
        values: (B, C, h, w) with h·w = N.

    Returns:
        (B, C, 1, 1), broadcastable against ``values``.
    """
    ctx = torch.bmm(values.flatten(2), unary.unsqueeze(-1))  # (B, C, 1)
    return ctx.unsqueeze(-1)


def build_fusion() -> nn.Sequential:
    """The authors' ``cross_att`` layout: 3×3 conv 2 → 2 (no bias), ReLU, 1×1 conv 2 → 2 (bias).

    Keys ``0.weight``, ``2.weight``, ``2.bias`` as in their state dict; default initialisation.
    """
    return nn.Sequential(
        nn.Conv2d(2, 2, 3, padding=1, bias=False),
        nn.ReLU(inplace=False),
        nn.Conv2d(2, 2, 1, bias=True),
    )


def upsample(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize with align_corners False, (B, C, h, w) -> (B, C, *size)."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
