"""AReAM: entropy-weighted layer affinities (S002, "Mitigating Undisciplined Over-Smoothing"), spec §8.

Small pure functions on tensors, in the order the method uses them. What the AReAM authors' code
does (spec §8.5) decides where the paper is ambiguous: the layers split at ``layer_index`` into a
*shallow* set that refines the CAM (Eq. 9) and a *deep* set that is supervised (Eq. 15-16); the
attention of a layer is the head-mean of softmax(q·kᵀ·d^-0.5); the entropy weights are offline,
dataset-level constants min-max normalised across layers (w = 1 − e refines, e supervises); means,
not sums; no radius mask.

MiT is not a plain ViT: its blocks with spatial reduction (stages 1-3 of every variant) return
query-pooled logits on a coarser grid (spec §1.4): (B, nh, N_kv, N_kv), N_kv = ⌊h/sr⌋·⌊w/sr⌋, which
is the 1/32 grid for the stride-(4, 2, 2, 1) backbone. ``GRID_CONVERSIONS`` says how such a map
meets the CAM's 1/16 grid (our choice, spec §8.3-6; docs/DEVIATIONS.md):

- ``expand`` (default): the attention is brought to the CAM grid, queries by nearest neighbour and
  each key's weight split evenly over the fine keys that map to it, so every row keeps its sum.
- ``reduce``: the CAM is resized (bilinear) to the attention's grid, propagated there, and the result
  resized back.

Both are identical for layers already on the CAM grid (the stage-4 blocks, and the golden cases).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from model.affinity import affinity_labels
from model.cam import hflip, resize
from model.losses import affinity_loss

GRID_CONVERSIONS = ("expand", "reduce")
Grid = tuple[int, int]


# --------------------------------------------------------------------------- attention of a layer


def head_mean_attention(logits: Tensor, scale: float) -> Tensor:
    """Â^(l) = mean over heads of softmax(A^(l,h)·scale) over keys (S002 text before Eq. 6, Eq. 3-4).

    Args:
        logits: (B, nh, N, M) unscaled q·kᵀ logits of one block (our encoder's output).
        scale: d^-0.5 of that block's heads (1.0 for logits that are already scaled).

    Returns:
        (B, N, M), every row summing to 1.
    """
    return torch.softmax(logits.float() * scale, dim=-1).mean(dim=1)


def head_mean_logits(logits: Tensor, scale: float) -> Tensor:
    """The head-mean of the scaled logits, whose sigmoid the per-layer loss supervises (spec §8.5).

    Args:
        logits: (B, nh, N, N) unscaled q·kᵀ logits.

    Returns:
        (B, N, N).
    """
    return logits.float().mul(scale).mean(dim=1)


def block_scales(encoder: torch.nn.Module) -> list[float]:
    """d^-0.5 of every encoder block, in execution order (one entry per ``attn_logits`` entry)."""
    return [block.attn.scale for i in range(4) for block in encoder.stage(i)[1]]


def block_grids(encoder: torch.nn.Module, height: int, width: int) -> list[Grid]:
    """The token grid of every block's returned logits for an input of height × width.

    Blocks with spatial reduction sr return query-pooled maps on (⌊h/sr⌋, ⌊w/sr⌋) (spec §1.4).

    Returns:
        one (h, w) per block, in execution order.
    """
    grids = []
    for i, (depth, sr) in enumerate(zip(encoder.variant.depths, encoder.variant.sr_ratios)):
        h, w = encoder.token_grid(height, width, stage=i)
        grids += [(h // sr, w // sr) if sr > 1 else (h, w)] * depth
    return grids


# --------------------------------------------------------------------------- grids


def nearest_index(src: int, dst: int, device: torch.device | None = None) -> Tensor:
    """For each of ``dst`` fine positions, the nearest-neighbour source position ⌊i·src/dst⌋: (dst,) int64."""
    return torch.arange(dst, device=device) * src // dst


def expand_attention(attn: Tensor, src: Grid, dst: Grid) -> Tensor:
    """Bring a row-stochastic attention on grid ``src`` to the finer grid ``dst``, keeping row sums.

    A fine query takes the row of its nearest coarse query; a coarse key's weight is split evenly over
    the fine keys that map to it (÷4 for an exact 2× grid), so Σ_j out[i, j] = Σ_k attn[q(i), k].

    Args:
        attn: (B, Ns, Ns), Ns = src[0]·src[1].
        src, dst: (h, w) grids with dst ≥ src in both directions.

    Returns:
        (B, Nd, Nd), Nd = dst[0]·dst[1].
    """
    if dst[0] < src[0] or dst[1] < src[1]:
        raise ValueError(f"cannot expand attention from grid {src} to the coarser grid {dst}")
    rows = nearest_index(src[0], dst[0], attn.device)
    cols = nearest_index(src[1], dst[1], attn.device)
    index = (rows[:, None] * src[1] + cols[None, :]).flatten()  # (Nd,) coarse token of each fine token
    count = torch.bincount(index, minlength=src[0] * src[1]).to(attn.dtype)  # fine tokens per coarse
    return attn[:, index][:, :, index] / count[index]


# --------------------------------------------------------------------------- propagation (Eq. 7, 9)


def propagate(cam: Tensor, attn: Tensor) -> Tensor:
    """cam_m ← Σ_n attn[m, n]·cam_n per class: Γ⁻¹(Γ(M̂_c)·Âᵀ) (S002 Eq. 7 without σ, Eq. 9).

    Args:
        cam: (B, K, h, w); attn: (B, N, N) with N = h·w.

    Returns:
        (B, K, h, w).
    """
    b, k, h, w = cam.shape
    return torch.bmm(cam.flatten(2), attn.transpose(1, 2)).view(b, k, h, w)


def propagate_on_grid(cam: Tensor, attn: Tensor, grid: Grid, conversion: str = "expand") -> Tensor:
    """Propagate a CAM on its own grid by an attention on ``grid`` (module docstring: conversions).

    Args:
        cam: (B, K, h, w); attn: (B, N', N'), N' = grid[0]·grid[1].
        conversion: ``expand`` or ``reduce``.

    Returns:
        (B, K, h, w).
    """
    cam_grid = tuple(cam.shape[-2:])
    if tuple(grid) == cam_grid:
        return propagate(cam, attn)
    if conversion == "expand":
        return propagate(cam, expand_attention(attn, grid, cam_grid))
    if conversion == "reduce":
        return resize(propagate(resize(cam, grid), attn), cam_grid)
    raise ValueError(f"unknown grid conversion {conversion!r}; choose one of {GRID_CONVERSIONS}")


def fused_propagation(
    cam: Tensor, attns: Sequence[Tensor], grids: Sequence[Grid], weights: Tensor, conversion: str = "expand"
) -> Tensor:
    """Eq. 9 as the authors' code: cam ← ((1/L)·Σ_l w_l·Â^(l))·cam over the given (shallow) layers.

    Layers on one grid are fused into one matrix first (with ``expand`` every layer is on the CAM grid
    then); by linearity the result is the mean of the weighted single-layer propagations.

    Args:
        cam: (B, K, h, w).
        attns: L head-mean attentions, each (B, N_l, N_l) on ``grids[l]``.
        weights: (L,) per-layer weights (1 − e_l; ones for the uniform "agg." baseline).

    Returns:
        (B, K, h, w).
    """
    if not len(attns) == len(grids) == len(weights) > 0:
        raise ValueError(
            f"need matching non-empty layers: {len(attns)} maps, {len(grids)} grids, {len(weights)} weights"
        )
    cam_grid = tuple(cam.shape[-2:])
    fused: dict[Grid, Tensor] = {}
    for attn, grid, w in zip(attns, grids, weights):
        grid = tuple(grid)
        if conversion == "expand" and grid != cam_grid:
            attn, grid = expand_attention(attn, grid, cam_grid), cam_grid
        fused[grid] = fused.get(grid, 0) + w * attn
    return sum(propagate_on_grid(cam, a / len(attns), g, conversion) for g, a in fused.items())


def aream_cam(
    cam: Tensor,
    attns: Sequence[Tensor],
    grids: Sequence[Grid],
    weights: Tensor,
    size: tuple[int, int],
    conversion: str = "expand",
) -> Tensor:
    """The training-time AReAM CAM (spec §8.5; golden ``aream_propagation``).

    The scale-1.0 CAM of [x, flip(x)] is refined by the fused shallow attention (Eq. 9), resized
    bilinearly to ``size``, the flipped half flipped back and summed with the other, ReLU, then
    per-class min-max (``minmax_per_class``, eps 1e-6 as the authors' code).

    Args:
        cam: (2B, K, h, w) raw CAM of the flip-concatenated batch (rows B..2B−1 flipped).
        attns, grids, weights: as in ``fused_propagation`` (attentions of the 2B batch).
        size: (H, W) crop size.

    Returns:
        (B, K, H, W) in [0, 1).
    """
    b = cam.shape[0] // 2
    refined = resize(fused_propagation(cam, attns, grids, weights, conversion), size)
    return minmax_per_class(torch.relu(refined[:b] + hflip(refined[b:])))


def patch_block(attn: Tensor, num_class_tokens: int = 0) -> Tensor:
    """The patch-to-patch block [..., C:, C:] of (…, C + N, C + N) attention or logits (C class tokens
    first, MCTformer; C = 0 returns ``attn``)."""
    return attn[..., num_class_tokens:, num_class_tokens:]


def class_weighted_cam(cam: Tensor, attns: Sequence[Tensor], num_class_tokens: int) -> Tensor:
    """AReAM on MCTformer: cam ⊙ mean over the given layers of Â[:, :C, C:] (golden ``aream_*_mct``).

    Args:
        cam: (B, C, h, w); attns: L head-mean attentions (B, C + h·w, C + h·w), C = ``num_class_tokens``.
    """
    c = num_class_tokens
    return cam * torch.stack([a[:, :c, c:] for a in attns]).mean(dim=0).reshape(cam.shape)


def minmax_per_class(cam: Tensor, eps: float = 1e-6) -> Tensor:
    """(cam − min) / (max − min + eps) per image and class; AReAM's code uses eps 1e-6 (AFA's 1e-5).

    Args:
        cam: (B, K, H, W).

    Returns:
        (B, K, H, W) in [0, 1).
    """
    cam = cam - cam.amin(dim=(-2, -1), keepdim=True)
    return cam / (cam.amax(dim=(-2, -1), keepdim=True) + eps)


# --------------------------------------------------------------------------- diagnostics (Eq. 5, 6)


def hellinger_distances(attn: Tensor) -> Tensor:
    """Eq. 6 between every pair of rows: H(a_i, a_j) = (1/√2)·‖√a_i − √a_j‖₂.

    Computed as √(½(Σ_k a_ik + Σ_k a_jk) − Σ_k √(a_ik·a_jk)) in float64 (one matrix product; the
    row sums are kept exact rather than taken as 1, so small distances do not drown in rounding).

    Args:
        attn: (B, N, M) row-stochastic attention.

    Returns:
        (B, N, N) in [0, 1], zero on the diagonal.
    """
    attn = attn.double().clamp(min=0)
    root = attn.sqrt()
    coefficient = torch.bmm(root, root.transpose(1, 2))  # Bhattacharyya coefficients
    mass = attn.sum(dim=-1)  # (B, N)
    return (0.5 * (mass[:, :, None] + mass[:, None, :]) - coefficient).clamp(min=0).sqrt()


def mean_hellinger(attn: Tensor) -> Tensor:
    """Mean Eq. 6 distance over all pairs of distinct rows (the paper's Fig. 4b). (B, N, M) -> (B,)."""
    n = attn.shape[1]
    return hellinger_distances(attn).sum(dim=(1, 2)) / max(n * (n - 1), 1)


# --------------------------------------------------------------------------- entropy (Eq. 8)


def spatial_entropy(score: Tensor) -> Tensor:
    """Entropy in bits of softmax over all positions: −Σ p·log2 p.

    Args:
        score: (B, N).

    Returns:
        (B,) in [0, log2 N]: log2 N for a constant score, → 0 as one position dominates.
    """
    logp = torch.log_softmax(score.double(), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1) / torch.log(torch.tensor(2.0, dtype=torch.float64))


def layer_entropy(
    cam: Tensor, attn: Tensor, grid: Grid, cls_label: Tensor, conversion: str = "expand"
) -> Tensor:
    """Entropy of the CAM propagated by one layer (S002 Eq. 7-8 as the authors' offline pass).

    The CAM of the present classes is propagated by the layer's head-mean softmax attention, summed
    over those classes, softmaxed over all positions; its entropy in bits.

    Args:
        cam: (B, K, h, w) raw CAM; attn: (B, N', N') on ``grid``; cls_label: (B, K) in {0, 1}.

    Returns:
        (B,) bits.
    """
    present = cam * cls_label[:, :, None, None].to(cam.dtype)
    refined = propagate_on_grid(present, attn, grid, conversion)
    return spatial_entropy(refined.sum(dim=1).flatten(1))


def normalise_entropies(entropy: Tensor) -> Tensor:
    """Min-max across layers: e = (H − min H) / max(H − min H) ∈ [0, 1], 0 and 1 at the extremes.

    Args:
        entropy: (L,) dataset-mean entropies.

    Raises:
        ValueError: if all layers have the same entropy (the normalisation is undefined).
    """
    shifted = entropy - entropy.min()
    if not shifted.max() > 0:
        raise ValueError("all layers have the same entropy; min-max normalisation is undefined")
    return shifted / shifted.max()


def propagation_weights(normalised: Tensor) -> Tensor:
    """w_l = 1 − e_l: inferior weights for high-entropy layers in Eq. 9. (L,) -> (L,)."""
    return 1.0 - normalised


# --------------------------------------------------------------------------- losses (Eq. 14-16)


def layer_affinity_losses(
    logits: Sequence[Tensor], scales: Sequence[float], labels: Sequence[Tensor]
) -> Tensor:
    """Eq. 15 per deep layer: AFA's affinity loss on sigmoid(head-mean of the scaled logits).

    Args:
        logits: L unscaled logit maps, each (B, nh, N_l, N_l).
        scales: their d^-0.5.
        labels: matching affinity labels (B, N_l, N_l) in {0, 1, 255} (no radius mask, spec §8.5).

    Returns:
        (L,) per-layer losses (``model.losses.affinity_loss`` each, 0.5/0.5 and +1 counts included).
    """
    return torch.stack(
        [affinity_loss(torch.sigmoid(head_mean_logits(a, s)), y) for a, s, y in zip(logits, scales, labels)]
    )


def weighted_layer_loss(per_layer: Tensor, weights: Tensor) -> Tensor:
    """Eq. 16 as the authors' code: mean over the deep layers of e_l·L_aff^(l). (L,), (L,) -> scalar."""
    return (per_layer * weights.to(per_layer)).mean()


def dense_affinity_labels(label: Tensor, grid: Grid, ignore_index: int = 255) -> Tensor:
    """Eq. 14 without AFA's radius window: ``model.affinity.affinity_labels`` with an all-ones mask.

    Args:
        label: (B, H, W) segmentation pseudo label; grid: (h, w) token grid of the supervised layer.

    Returns:
        (B, N, N) int64 in {0, 1, ignore_index}, N = h·w.
    """
    n = grid[0] * grid[1]
    everywhere = torch.ones(n, n, dtype=torch.bool, device=label.device)
    return affinity_labels(label, everywhere, tuple(grid), ignore_index)


def deep_layer_loss(
    logits: Sequence[Tensor],
    scales: Sequence[float],
    grids: Sequence[Grid],
    label: Tensor,
    weights: Tensor,
    ignore_index: int = 255,
) -> tuple[Tensor, Tensor]:
    """Eq. 14-16 for the deep layers: dense affinity labels per grid, per-layer losses, weighted mean.

    Args:
        logits: the deep layers' unscaled logits, each (B, nh, N_l, N_l) on ``grids[l]``.
        scales: their d^-0.5.
        label: (B, H, W) the AReAM segmentation pseudo label (``ignore_index`` where uncertain).
        weights: (L,) e_l of the deep layers (ones for the uniform baseline).

    Returns:
        per-layer losses (L,) and the weighted mean (scalar).
    """
    labels = {tuple(g): dense_affinity_labels(label, tuple(g), ignore_index) for g in grids}
    per_layer = layer_affinity_losses(logits, scales, [labels[tuple(g)] for g in grids])
    return per_layer, weighted_layer_loss(per_layer, weights)


def layer_entropies(
    cam: Tensor, attns: Sequence[Tensor], grids: Sequence[Grid], cls_label: Tensor, conversion: str = "expand"
) -> Tensor:
    """``layer_entropy`` of every given layer: (B, K, h, w) CAM, L attentions -> (L, B) bits."""
    return torch.stack([layer_entropy(cam, a, g, cls_label, conversion) for a, g in zip(attns, grids)])
