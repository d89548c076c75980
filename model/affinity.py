"""Affinity labels and random-walk propagation on the stage-4 token grid (spec §5.1, 5.2, 5.4)."""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor


@lru_cache(maxsize=32)
def _radius_mask_cpu(h: int, w: int, radius: int) -> Tensor:
    """Cached (h·w, h·w) bool mask of position pairs within ``radius`` on an h×w grid (CPU)."""
    rows = torch.arange(h).repeat_interleave(w)
    cols = torch.arange(w).repeat(h)
    near_r = (rows[:, None] - rows[None, :]).abs() <= radius
    near_c = (cols[:, None] - cols[None, :]).abs() <= radius
    return near_r & near_c


def radius_mask(h: int, w: int, radius: int = 8, device: torch.device | str | None = None) -> Tensor:
    """Local window over an h×w token grid (reference ``get_mask_by_radius``, vectorised and cached).

    mask[i, j] is True iff tokens i and j (row-major) are within ``radius`` in both row and column:
    a (2r+1)² Chebyshev window, clipped at the borders, symmetric, diagonal included.

    Returns:
        (h·w, h·w) bool.
    """
    return _radius_mask_cpu(h, w, radius).to(device)


def affinity_labels(
    label: Tensor, mask: Tensor, grid: tuple[int, int] | None = None, ignore_index: int = 255
) -> Tensor:
    """Pairwise affinity labels from a pseudo label map (reference ``cams_to_affinity_label``).

    The label is downsampled by nearest neighbour to the token grid (default (H//16, W//16), which
    picks pixel (16i, 16j)); pair (i, j) is 1 if both tokens carry the same label (background pairs
    included), 0 otherwise, and ``ignore_index`` outside the radius mask or when either token is
    ``ignore_index``.

    Args:
        label: (B, H, W) pseudo label with ``ignore_index`` for uncertain pixels.
        mask: (N, N) radius mask of the grid, N = h·w.
        grid: (h, w) token grid.

    Returns:
        (B, N, N) int64 in {0, 1, ignore_index}.
    """
    b, h, w = label.shape
    grid = grid or (h // 16, w // 16)
    tokens = F.interpolate(label[:, None].float(), size=grid, mode="nearest").flatten(1).long()  # (B, N)
    aff = (tokens[:, :, None] == tokens[:, None, :]).long()
    ignored = tokens == ignore_index
    aff[~mask.bool().expand_as(aff)] = ignore_index
    aff[ignored[:, :, None].expand_as(aff)] = ignore_index
    aff[ignored[:, None, :].expand_as(aff)] = ignore_index
    return aff


def transition_matrix(aff: Tensor, mask: Tensor, power: int = 2, eps: float = 0.1) -> Tensor:
    """Random-walk transition T[i, j] = A[i, j]^power / (Σ_i' A[i', j]^power + eps), A masked to the radius.

    Args:
        aff: (B, N, N) predicted affinity (not modified).
        mask: (N, N) radius mask.

    Returns:
        (B, N, N), columns summing to slightly less than 1 (the reference's +0.1 "avoid nan").
    """
    a = aff.detach().masked_fill(~mask.bool(), 0.0) ** power
    return a / (a.sum(dim=1, keepdim=True) + eps)


def propagate_with_bkg(
    cams: Tensor, aff: Tensor, mask: Tensor, cls_label: Tensor, bkg_score: float
) -> Tensor:
    """Random-walk propagation of CAMs with a background channel (reference ``propagte_aff_cam_with_bkg``).

    A constant ``bkg_score`` channel is prepended; the valid channels (background and present classes)
    are softmaxed per token and propagated one step: rw = v @ T (spec §5.4). Invalid channels are 0.
    Unlike the reference, ``aff`` is not modified in place.

    Args:
        cams: (B, K, h, w) class-masked CAMs on the grid of ``aff``.
        aff: (B, N, N) affinity of the non-flipped images, N = h·w.
        mask: (N, N) radius mask.
        cls_label: (B, K).
        bkg_score: background score (0.35 low, 0.55 high).

    Returns:
        (B, K + 1, h, w).
    """
    b, k, h, w = cams.shape
    stacked = torch.cat([torch.full_like(cams[:, :1], bkg_score), cams], dim=1).flatten(2)  # (B, K+1, N)
    valid = torch.cat([torch.ones_like(cls_label[:, :1]), cls_label], dim=1) > 0  # (B, K+1)
    v = torch.softmax(stacked.masked_fill(~valid[:, :, None], float("-inf")), dim=1)
    rw = torch.bmm(v, transition_matrix(aff, mask))
    return rw.view(b, k + 1, h, w)
