"""The permutohedral-lattice Gaussian filter of the regularised loss (spec Appendix B.3-B.4).

Adams et al. 2010 in Krähenbühl's variant, as the reference's rloss extension runs it: each d = 5
feature vector (x/σ_xy, y/σ_xy, r/σ_rgb, g/σ_rgb, b/σ_rgb) is lifted onto the d-dimensional
permutohedral lattice, its value is **splatted** onto the d + 1 vertices of its enclosing simplex with
barycentric weights, the lattice is **blurred** with the [1/2, 1, 1/2] kernel along each of the
d + 1 lattice directions, and the result is **sliced** back with the same weights, scaled by
α = 1 / (1 + 2^−d). There is no normalisation: the output approximates about half of the exact
dense sum Σ_j exp(−½‖f_i − f_j‖²)·in_j (``dense_gaussian_filter``, a documented comparison only).

Everything is batched tensor code: the lattice points of all images are hashed together by packing
(image, key) into one int64 and ``torch.unique``; splat is one ``index_add_``, slice a gather per
simplex vertex, and blur neighbours are found with ``searchsorted`` on the sorted packed keys. The
only host synchronisation is the one ``torch.unique`` needs for its output size.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor


class Lattice(NamedTuple):
    """A built lattice for P points (all images together) with M distinct lattice points.

    Attributes:
        vertex: (P, d + 1) int64, the lattice point of each simplex vertex of each input point.
        weight: (P, d + 1) float32 barycentric weights (each row sums to 1).
        neighbours: (d + 1, 2, M) int64, per blur direction the two neighbours of every lattice
            point; the index M means "absent" (it addresses a row of zeros).
        num_points: M.
    """

    vertex: Tensor
    weight: Tensor
    neighbours: Tensor
    num_points: int


def scale_factors(d: int) -> Tensor:
    """(d,) float32 s_i = sqrt(2/3)·(d+1) / sqrt((i+1)(i+2)), the lattice's feature scaling."""
    inv_std = math.sqrt(2.0 / 3.0) * (d + 1)
    return torch.tensor([inv_std / math.sqrt((i + 1) * (i + 2)) for i in range(d)], dtype=torch.float32)


def elevate(features: Tensor) -> Tensor:
    """Lift features onto the hyperplane Σ e = 0 of R^(d+1), in the reference's float32 order.

    Args:
        features: (P, d) float32.

    Returns:
        (P, d + 1) float32: running sum sm = 0; for j = d..1: c = f[j−1]·s[j−1], e[j] = sm − j·c,
        sm += c; e[0] = sm.
    """
    d = features.shape[1]
    scaled = features * scale_factors(d).to(features.device)
    elevated = torch.empty(features.shape[0], d + 1, dtype=torch.float32, device=features.device)
    running = torch.zeros_like(scaled[:, 0])
    for j in range(d, 0, -1):
        c = scaled[:, j - 1]
        elevated[:, j] = running - j * c
        running = running + c
    elevated[:, 0] = running
    return elevated


def round_half_away(x: Tensor) -> Tensor:
    """C ``round``: halves away from zero (torch.round rounds halves to even)."""
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


def simplex(elevated: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The enclosing simplex of each elevated point (spec B.4: rounding, ranking, barycentrics).

    Args:
        elevated: (P, d + 1) float32.

    Returns:
        rem0: (P, d + 1) int64, the nearest remainder-0 lattice point after the wrap-around fix;
        rank: (P, d + 1) int64, a permutation of 0..d per point;
        weight: (P, d + 1) float32 barycentric weights b[0..d].
    """
    p, d1 = elevated.shape
    d = d1 - 1
    down = 1.0 / d1
    rd = round_half_away(elevated * down)
    rem0 = rd * d1
    total = rd.sum(dim=1, keepdim=True).long()
    rest = elevated - rem0  # (P, d+1)
    # rank_i = #{j > i: rest_i < rest_j} + #{j < i: rest_i <= rest_j}  (the reference's pair loop)
    less = rest[:, :, None] < rest[:, None, :]  # [p, i, j]: rest_i < rest_j
    less_eq = rest[:, :, None] <= rest[:, None, :]
    upper = torch.ones(d1, d1, dtype=torch.bool, device=elevated.device).triu(1)  # j > i
    rank = ((less & upper) | (less_eq & upper.T)).sum(dim=2) + total
    rem0 = rem0.long()
    low, high = rank < 0, rank > d
    rank = rank + d1 * low.long() - d1 * high.long()
    rem0 = rem0 + d1 * low.long() - d1 * high.long()
    v = (elevated - rem0.to(elevated.dtype)) * down
    bary = torch.zeros(p, d + 2, dtype=torch.float32, device=elevated.device)
    bary.scatter_add_(1, d - rank, v)
    bary.scatter_add_(1, d - rank + 1, -v)
    bary[:, 0] += 1.0 + bary[:, d + 1]
    return rem0, rank, bary[:, : d + 1]


def vertex_keys(rem0: Tensor, rank: Tensor) -> Tensor:
    """(P, d + 1, d) int64 keys of the simplex vertices: key_i = rem0_i + canonical[r][rank_i].

    canonical[r][j] = r for j ≤ d − r and r − (d + 1) otherwise; only the first d coordinates
    identify a lattice point (their sum fixes the last).
    """
    d1 = rem0.shape[1]
    d = d1 - 1
    r = torch.arange(d1, device=rem0.device).view(1, d1, 1)  # vertex index
    rk = rank[:, None, :d]  # (P, 1, d)
    canonical = r - d1 * (rk > d - r).long()
    return rem0[:, None, :d] + canonical


def pack_keys(keys: Tensor, image: Tensor) -> tuple[Tensor, Tensor]:
    """Mixed-radix int64 codes of (image, key) with a margin so blur neighbours never wrap.

    Args:
        keys: (P, V, d) int64; image: (P,) int64 image index of each point.

    Returns:
        codes: (P, V) int64; strides: (d,) int64, the code step of a unit change of each coordinate.
    """
    d = keys.shape[-1]
    margin = d + 1
    flat = keys.reshape(-1, d)
    low = flat.amin(dim=0) - margin
    radix = flat.amax(dim=0) - low + margin + 1  # (d,)
    strides = torch.cumprod(torch.cat([radix.new_ones(1), radix[1:].flip(0)]), 0).flip(0)  # (d,)
    image_stride = strides[0] * radix[0]
    limit = (image.max() + 1).double() * image_stride.double()
    torch._assert_async(limit < 2.0**62, "permutohedral lattice keys do not fit in int64")
    codes = ((keys - low) * strides).sum(dim=-1) + image[:, None] * image_stride
    return codes, strides


def blur_offsets(strides: Tensor) -> Tensor:
    """(d + 1,) int64 code offset of the first neighbour along each lattice direction.

    Direction j < d: every key coordinate − 1 except coordinate j, + d; direction d: all − 1 (its
    change is in the implicit last coordinate). The second neighbour is the negated offset.
    """
    d = strides.shape[0]
    steps = -torch.ones(d + 1, d, dtype=torch.long, device=strides.device)
    steps[torch.arange(d), torch.arange(d)] = d
    return (steps * strides).sum(dim=1)


def lookup(table: Tensor, codes: Tensor) -> Tensor:
    """Index of each code in the sorted ``table`` (M,), or M where it is absent."""
    m = table.shape[0]
    index = torch.searchsorted(table, codes).clamp_(max=m - 1)
    return torch.where(table[index] == codes, index, torch.full_like(index, m))


def build_lattice(features: Tensor, image: Tensor | None = None) -> Lattice:
    """Hash all points' simplex vertices into one lattice (images kept apart by ``image``).

    Args:
        features: (P, d) float32 feature vectors (already divided by their σ).
        image: (P,) int64 image index of each point (default: all one image).
    """
    if image is None:
        image = torch.zeros(features.shape[0], dtype=torch.long, device=features.device)
    rem0, rank, weight = simplex(elevate(features.float()))
    codes, strides = pack_keys(vertex_keys(rem0, rank), image)
    table, vertex = torch.unique(codes, sorted=True, return_inverse=True)
    offsets = blur_offsets(strides)  # (d+1,)
    first = lookup(table, table[None] + offsets[:, None])  # (d+1, M)
    second = lookup(table, table[None] - offsets[:, None])
    return Lattice(vertex, weight, torch.stack([first, second], dim=1), table.shape[0])


def splat(lattice: Lattice, values: Tensor) -> Tensor:
    """(M + 1, C): Σ over points and vertices of b[r]·value; the last row stays 0 (absent points).

    Args:
        values: (P, C) float32.
    """
    out = values.new_zeros(lattice.num_points + 1, values.shape[1])
    contrib = lattice.weight[:, :, None] * values[:, None, :]  # (P, d+1, C)
    out.index_add_(0, lattice.vertex.reshape(-1), contrib.reshape(-1, values.shape[1]))
    return out


def blur(lattice: Lattice, grid: Tensor) -> Tensor:
    """new[p] = old[p] + ½(old[n1] + old[n2]) along each direction j = 0..d in turn; (M + 1, C)."""
    m = lattice.num_points
    for j in range(lattice.neighbours.shape[0]):
        n1, n2 = lattice.neighbours[j]
        new = grid.clone()
        new[:m] += 0.5 * (grid[n1] + grid[n2])
        grid = new
    return grid


def slice_lattice(lattice: Lattice, grid: Tensor) -> Tensor:
    """(P, C) = α·Σ_r b[r]·grid[vertex_r], α = 1 / (1 + 2^−d); no normalisation."""
    d1 = lattice.weight.shape[1]
    alpha = 1.0 / (1.0 + 2.0 ** -(d1 - 1))
    out = lattice.weight[:, :1] * grid[lattice.vertex[:, 0]]
    for r in range(1, d1):
        out = out + lattice.weight[:, r : r + 1] * grid[lattice.vertex[:, r]]
    return out * alpha


def permutohedral_filter(features: Tensor, values: Tensor, image: Tensor | None = None) -> Tensor:
    """The unnormalised lattice Gaussian filter: splat, blur, slice.

    Args:
        features: (P, d) float32; values: (P, C) float32; image: (P,) int64 image index or None.

    Returns:
        (P, C) float32.
    """
    lattice = build_lattice(features, image)
    return slice_lattice(lattice, blur(lattice, splat(lattice, values.float())))


def bilateral_features(image: Tensor, sigma_rgb: float, sigma_xy: float) -> Tensor:
    """(B, h·w, 5) float32 features (x/σ_xy, y/σ_xy, r/σ_rgb, g/σ_rgb, b/σ_rgb), row-major pixels.

    Args:
        image: (B, 3, h, w) on the 0-255 scale; x is the column index, y the row index.
    """
    b, _, h, w = image.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float32, device=image.device),
        torch.arange(w, dtype=torch.float32, device=image.device),
        indexing="ij",
    )
    xy = torch.stack([xs / sigma_xy, ys / sigma_xy], dim=0).expand(b, 2, h, w)
    feats = torch.cat([xy, image.float() / sigma_rgb], dim=1)  # (B, 5, h, w)
    return feats.flatten(2).transpose(1, 2)


def bilateral_filter(image: Tensor, values: Tensor, sigma_rgb: float, sigma_xy: float) -> Tensor:
    """The reference's ``bilateralfilter_batch``: the lattice filter per image, on every channel.

    Args:
        image: (B, 3, h, w) on the 0-255 scale (float).
        values: (B, C, h, w) float.

    Returns:
        (B, C, h, w) float32, unnormalised (spec B.4).
    """
    b, c, h, w = values.shape
    feats = bilateral_features(image, sigma_rgb, sigma_xy).reshape(b * h * w, -1)
    owner = torch.arange(b, device=values.device).repeat_interleave(h * w)
    flat = values.float().flatten(2).transpose(1, 2).reshape(b * h * w, c)
    out = permutohedral_filter(feats, flat, owner)
    return out.reshape(b, h * w, c).transpose(1, 2).reshape(b, c, h, w)


def dense_gaussian_filter(
    image: Tensor, values: Tensor, sigma_rgb: float, sigma_xy: float, chunk: int = 1024
) -> Tensor:
    """Exact Σ_j exp(−½‖f_i − f_j‖²)·in_j over each image's pixels, in chunks of ``chunk`` rows.

    A comparison for small images only (O((h·w)²) work); never what the loss uses: the lattice
    output is about half of this with ~10 % per-pixel spread (spec B.4).

    Args:
        image: (B, 3, h, w) on the 0-255 scale; values: (B, C, h, w).

    Returns:
        (B, C, h, w) float32.
    """
    b, c, h, w = values.shape
    feats = bilateral_features(image, sigma_rgb, sigma_xy)  # (B, P, 5)
    flat = values.float().flatten(2)  # (B, C, P)
    out = torch.empty_like(flat)
    for start in range(0, h * w, chunk):
        rows = feats[:, start : start + chunk]  # (B, n, 5)
        kernel = torch.exp(-0.5 * torch.cdist(rows, feats).square())  # (B, n, P)
        out[:, :, start : start + chunk] = torch.einsum("bnp,bcp->bcn", kernel, flat)
    return out.reshape(b, c, h, w)
