"""The permutohedral-lattice Gaussian filter of the regularised loss (spec Appendix B.3-B.4).

Adams et al. 2010 in Krähenbühl's variant, as the reference's rloss extension runs it: each d = 5
feature vector (x/σ_xy, y/σ_xy, r/σ_rgb, g/σ_rgb, b/σ_rgb) is lifted onto the d-dimensional
permutohedral lattice, its value is **splatted** onto the d + 1 vertices of its enclosing simplex with
barycentric weights, the lattice is **blurred** with the [1/2, 1, 1/2] kernel along each of the
d + 1 lattice directions, and the result is **sliced** back with the same weights, scaled by
α = 1 / (1 + 2^−d). There is no normalisation: the output approximates about half of the exact
dense sum Σ_j exp(−½‖f_i − f_j‖²)·in_j (``dense_gaussian_filter``, a documented comparison only).

Everything is batched tensor code, float32, with no loop over pixels or lattice points: the
lattice points of all images are hashed together by packing (image, key) into one int64 and sorting
(``hash_codes``); splat and slice are products with two sparse CSR matrices of the barycentric
weights; blur neighbours are found with ``searchsorted`` on the sorted codes. The only host
synchronisation is reading the number of lattice points.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch
from torch import Tensor


class Lattice(NamedTuple):
    """A built lattice for P points (all images together) with M distinct lattice points.

    Attributes:
        vertex: (d + 1, P) int64, the lattice point of each simplex vertex r of each input point.
        weight: (d + 1, P) float32 barycentric weights b[r] (each column sums to 1).
        neighbours: (d + 1, 2, M + 1) int64, per blur direction the two neighbours of every lattice
            point; index M means "absent" and addresses a row of zeros (which is its own neighbour).
        splat_matrix: (M + 1, P) sparse CSR, entry (vertex[r, p], p) = weight[r, p]; row M empty.
        slice_matrix: (P, M + 1) sparse CSR, its transpose.
    """

    vertex: Tensor
    weight: Tensor
    neighbours: Tensor
    splat_matrix: Tensor
    slice_matrix: Tensor

    @property
    def num_points(self) -> int:
        """The number of lattice points per position (d + 1 for d feature dimensions)."""
        return self.neighbours.shape[-1] - 1


def scale_factors(d: int) -> list[float]:
    """s_i = sqrt(2/3)·(d+1) / sqrt((i+1)(i+2)), i = 0..d−1, the lattice's feature scaling."""
    inv_std = math.sqrt(2.0 / 3.0) * (d + 1)
    return [inv_std / math.sqrt((i + 1) * (i + 2)) for i in range(d)]


def elevate(features: Tensor) -> Tensor:
    """Lift features onto the hyperplane Σ e = 0 of R^(d+1), in the reference's float32 order.

    Args:
        features: (d, P) float32, coordinate-major.

    Returns:
        (d + 1, P) float32: running sum sm = 0; for j = d..1: c = f[j−1]·s[j−1], e[j] = sm − j·c,
        sm += c; e[0] = sm.
    """
    d = features.shape[0]
    scale = torch.tensor(scale_factors(d), dtype=torch.float32, device=features.device)
    scaled = features * scale[:, None]
    elevated = torch.empty(d + 1, features.shape[1], dtype=torch.float32, device=features.device)
    running = torch.zeros_like(scaled[0])
    for j in range(d, 0, -1):
        elevated[j] = running - j * scaled[j - 1]
        running = running + scaled[j - 1]
    elevated[0] = running
    return elevated


def round_half_away(x: Tensor) -> Tensor:
    """C ``round``: halves away from zero (torch.round rounds halves to even), exact in float."""
    whole = x.trunc()
    return torch.where((x - whole).abs() == 0.5, whole + x.sign(), x.round())


def simplex(elevated: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The enclosing simplex of each elevated point (spec B.4: rounding, ranking, barycentrics).

    Args:
        elevated: (d + 1, P) float32.

    Returns:
        rem0: (d + 1, P) int64, the nearest remainder-0 lattice point after the wrap-around fix;
        rank: (d + 1, P) int64, a permutation of 0..d per point;
        weight: (d + 1, P) float32 barycentric weights b[0..d].
    """
    d1, p = elevated.shape
    d = d1 - 1
    down = 1.0 / d1
    rd = round_half_away(elevated * down)
    rem0 = rd * d1
    rest = elevated - rem0
    rank = rd.sum(dim=0).long().expand(d1, p).clone()  # rank_i starts at Σ rd
    for i in range(d):  # the reference's pair loop: the smaller remainder of a pair gains a rank
        for j in range(i + 1, d1):
            smaller = (rest[i] < rest[j]).long()
            rank[i] += smaller
            rank[j] += 1 - smaller
    rem0 = rem0.long()
    shift = (rank < 0).long() - (rank > d).long()  # wrap back onto the plane
    rank += d1 * shift
    rem0 += d1 * shift
    v = (elevated - rem0.to(elevated.dtype)) * down
    bary = torch.zeros(d + 2, p, dtype=torch.float32, device=elevated.device)
    bary.scatter_add_(0, d - rank, v)
    bary.scatter_add_(0, d - rank + 1, -v)
    bary[0] += 1.0 + bary[d + 1]
    return rem0, rank, bary[: d + 1]


def vertex_codes(rem0: Tensor, rank: Tensor, image: Tensor) -> tuple[Tensor, Tensor]:
    """Mixed-radix int64 codes of (image, key) of every simplex vertex, and the coordinate strides.

    Vertex r has key_i = rem0_i + canonical[r][rank_i] for i < d, with canonical[r][j] = r for
    j ≤ d − r and r − (d + 1) otherwise (the first d coordinates identify a lattice point). Codes
    are Σ_i (key_i − low_i)·stride_i + image·image_stride, with a margin of d + 1 around the range
    of each coordinate so that blur neighbours (±1, ±d) never carry into another coordinate.

    Args:
        rem0, rank: (d + 1, P) int64 from ``simplex``; image: (P,) int64 image index.

    Returns:
        codes: (d + 1, P) int64; strides: (d,) int64.
    """
    d1 = rem0.shape[0]
    d = d1 - 1
    margin = 2 * d1  # canonical offsets lie in [−d, d]; neighbours move by at most d more
    low = rem0[:d].amin(dim=1) - margin
    radix = rem0[:d].amax(dim=1) - low + margin + 1
    strides = torch.cumprod(torch.cat([radix.new_ones(1), radix[1:].flip(0)]), 0).flip(0)
    image_stride = strides[0] * radix[0]
    limit = (image.max() + 1).double() * image_stride.double()
    torch._assert_async(limit < 2.0**62, "permutohedral lattice keys do not fit in int64")
    base = ((rem0[:d] - low[:, None]) * strides[:, None]).sum(dim=0) + image * image_stride  # (P,)
    # canonical[r][rank_i] = r − (d+1)·[rank_i ≥ d − r + 1]: vertex r subtracts (d+1)·stride of the
    # coordinates ranked d − r + 1 .. d; by_rank[k] = (d+1)·stride of the coordinate of rank k
    step = torch.cat([strides, strides.new_zeros(1)]) * d1  # the implicit last coordinate has none
    by_rank = torch.empty_like(rank).scatter_(0, rank, step[:, None].expand_as(rank))
    dropped = torch.cat([torch.zeros_like(base)[None], by_rank.flip(0).cumsum(0)[:-1]])  # (d+1, P)
    r = torch.arange(d1, device=rem0.device)
    codes = base + (r * strides.sum())[:, None] - dropped
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


def hash_codes(codes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Sort-based hashing of (V,) int64 codes: the distinct codes and where each entry went.

    Returns:
        table: (M,) sorted distinct codes; inverse: (V,) index of each entry's code in ``table``;
        order: (V,) the stable sorting permutation (entries grouped by lattice point, in order);
        crow: (M + 2,) start of each lattice point's group in ``order`` (CSR row pointers of M + 1
        rows, the last one empty).
    """
    ordered, order = torch.sort(codes, stable=True)
    first = torch.ones_like(ordered, dtype=torch.bool)
    first[1:] = ordered[1:] != ordered[:-1]
    group = torch.cumsum(first, 0) - 1  # (V,) sorted lattice-point index of each sorted entry
    table = ordered[first]  # the one host synchronisation: M
    inverse = torch.empty_like(group).scatter_(0, order, group)
    crow = torch.searchsorted(group, torch.arange(table.shape[0] + 2, device=codes.device))
    return table, inverse, order, crow


def _csr(crow: Tensor, col: Tensor, values: Tensor, size: tuple[int, int]) -> Tensor:
    """A (rows, cols) sparse CSR tensor of ``values`` without the beta-feature warning."""
    with warnings.catch_warnings():  # "sparse CSR support is in beta": stable for mm since torch 2.0
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, size, check_invariants=False)


def sparse_matrices(vertex: Tensor, weight: Tensor, order: Tensor, crow: Tensor) -> tuple[Tensor, Tensor]:
    """The splat (M + 1, P) and slice (P, M + 1) CSR matrices of the barycentric weights.

    Args:
        vertex, weight: (d + 1, P); order, crow: from ``hash_codes`` of the point-major entries
            p·(d+1) + r.
    """
    d1, p = vertex.shape
    rows = crow.shape[0] - 1
    values = weight.T.reshape(-1)
    splat_m = _csr(crow, order // d1, values[order], (rows, p))
    slice_crow = torch.arange(0, d1 * p + 1, d1, device=vertex.device)
    slice_m = _csr(slice_crow, vertex.T.reshape(-1), values, (p, rows))
    return splat_m, slice_m


def build_lattice(features: Tensor, image: Tensor | None = None) -> Lattice:
    """Hash all points' simplex vertices into one lattice (images kept apart by ``image``).

    Args:
        features: (P, d) float32 feature vectors (already divided by their σ).
        image: (P,) int64 image index of each point (default: all one image).
    """
    if image is None:
        image = torch.zeros(features.shape[0], dtype=torch.long, device=features.device)
    rem0, rank, weight = simplex(elevate(features.float().T.contiguous()))
    codes, strides = vertex_codes(rem0, rank, image)
    table, inverse, order, crow = hash_codes(codes.T.reshape(-1))  # point-major entries p·(d+1) + r
    vertex = inverse.view(-1, codes.shape[0]).T
    m = table.shape[0]
    offsets = blur_offsets(strides)  # (d+1,)
    first = lookup(table, table[None] + offsets[:, None])  # (d+1, M)
    second = lookup(table, table[None] - offsets[:, None])
    neighbours = torch.stack([first, second], dim=1)
    neighbours = torch.cat([neighbours, neighbours.new_full((neighbours.shape[0], 2, 1), m)], dim=2)
    return Lattice(vertex, weight, neighbours, *sparse_matrices(vertex, weight, order, crow))


def splat(lattice: Lattice, values: Tensor) -> Tensor:
    """(M + 1, C): Σ over points and vertices of b[r]·value; the last row is 0 (absent points).

    Args:
        values: (P, C) float32.
    """
    return lattice.splat_matrix @ values


def blur(lattice: Lattice, grid: Tensor) -> Tensor:
    """new[p] = old[p] + ½(old[n1] + old[n2]) along each direction j = 0..d in turn; (M + 1, C)."""
    for n1, n2 in lattice.neighbours:
        grid = grid + 0.5 * (grid.index_select(0, n1) + grid.index_select(0, n2))
    return grid


def slice_lattice(lattice: Lattice, grid: Tensor) -> Tensor:
    """(P, C) = α·Σ_r b[r]·grid[vertex_r], α = 1 / (1 + 2^−d); no normalisation."""
    d1 = lattice.weight.shape[0]
    return (lattice.slice_matrix @ grid) * (1.0 / (1.0 + 2.0 ** -(d1 - 1)))


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
