"""PAR, pixel-adaptive refinement (spec §4.1-4.3): kernel constants, invariants, a loop re-implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from model.par import (
    DEFAULT_DILATIONS,
    gather_neighbours,
    neighbour_offsets,
    par_affinity,
    par_propagate,
    pixel_adaptive_refine,
    position_kernel,
)

W1, W2 = 0.3, 0.01
ORDER = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]  # spec §4.1


def test_neighbour_order():
    """Dilations outer, then the 3×3 grid row-major without the centre, scaled by d."""
    expected = [(d * dy, d * dx) for d in (1, 2, 24) for dy, dx in ORDER]
    assert neighbour_offsets((1, 2, 24)) == expected
    assert len(neighbour_offsets(DEFAULT_DILATIONS)) == 48


def test_position_sigma_and_kernel_values():
    """σ_pos = unbiased std of the 48 distances (d axial, d·√2 diagonal) = 9.900305.

    softmax_k −(ρ_k / (σ_pos·w1))² is 0.0765 on the axial and 0.0683 on the diagonal d=1 neighbours.
    """
    rho = [d * (math.sqrt(2) if dy and dx else 1.0) for d in DEFAULT_DILATIONS for dy, dx in ORDER]
    sigma = float(np.std(rho, ddof=1))
    assert sigma == pytest.approx(9.900305, abs=1e-6)
    kernel = position_kernel(DEFAULT_DILATIONS, W1)
    assert kernel.shape == (48,)
    assert float(kernel.sum()) == pytest.approx(1.0, abs=1e-6)
    d1 = kernel[:8].tolist()
    axial, diagonal = [d1[i] for i in (1, 3, 4, 6)], [d1[i] for i in (0, 2, 5, 7)]
    assert [round(v, 4) for v in axial] == [0.0765] * 4
    assert [round(v, 4) for v in diagonal] == [0.0683] * 4
    assert float(kernel[:8].sum()) == pytest.approx(0.579, abs=1e-3)  # spec: 57.9 % at d = 1
    assert float(kernel[8:16].sum()) == pytest.approx(0.356, abs=1e-3)  # 35.6 % at d = 2


def test_constant_image_gives_the_pixel_independent_kernel():
    """No colour difference: κ_rgb = 0 so its softmax is 1/48, and a = 1/48 + w2·softmax(κ_pos) everywhere."""
    image = torch.full((1, 3, 9, 11), 0.4)
    aff = par_affinity(image, DEFAULT_DILATIONS, W1, W2)
    expected = 1 / 48 + W2 * position_kernel(DEFAULT_DILATIONS, W1)
    torch.testing.assert_close(aff, expected.view(1, 48, 1, 1).expand_as(aff), rtol=1e-6, atol=1e-7)


def test_kernel_sums_to_1_01():
    torch.manual_seed(0)
    aff = par_affinity(torch.rand(2, 3, 13, 17))
    assert aff.shape == (2, 48, 13, 17)
    torch.testing.assert_close(aff.sum(dim=1), torch.full((2, 13, 17), 1.01), rtol=1e-5, atol=1e-6)
    assert (aff >= 0).all()


@pytest.mark.parametrize("num_iter", [1, 4])
def test_constant_mask_grows_by_1_01_per_iteration(num_iter):
    """m ← Σ_k a(x, k)·m(y_k) with Σ_k a = 1.01 and replicate padding: a constant c becomes c·1.01^T."""
    torch.manual_seed(0)
    image = torch.rand(1, 3, 20, 24)
    masks = torch.full((1, 2, 20, 24), 0.3)
    out = pixel_adaptive_refine(image, masks, num_iter=num_iter)
    torch.testing.assert_close(out, torch.full_like(out, 0.3 * 1.01**num_iter), rtol=1e-5, atol=1e-7)


def test_masks_resized_with_align_corners_to_image_size():
    """Output (B, M, H, W); with T = 0 it is the align_corners=True resize: corners are kept exactly and a
    linear ramp v(j) = j / (w − 1) stays the ramp j' / (W − 1) on the image grid."""
    torch.manual_seed(0)
    image = torch.rand(1, 3, 21, 29)
    ramp = torch.linspace(0, 1, 8).view(1, 1, 1, 8).expand(1, 1, 5, 8)
    corners = torch.rand(1, 1, 5, 8)
    out = pixel_adaptive_refine(image, torch.cat([ramp, corners], dim=1), num_iter=0)
    assert out.shape == (1, 2, 21, 29)
    torch.testing.assert_close(out[0, 0], torch.linspace(0, 1, 29).expand(21, 29), rtol=0, atol=1e-6)
    for i, j, y, x in [(0, 0, 0, 0), (0, -1, 0, -1), (-1, 0, -1, 0), (-1, -1, -1, -1)]:
        assert float(out[0, 1, y, x]) == pytest.approx(float(corners[0, 0, i, j]), abs=1e-6)
    assert pixel_adaptive_refine(image, corners, num_iter=2).shape == (1, 1, 21, 29)


def test_gather_neighbours_offsets_and_replicate_padding():
    """Channel k of pixel (y, x) holds x[clamp(y + dy_k), clamp(x + dx_k)]."""
    h, w = 6, 7
    grid = (torch.arange(h)[:, None] * 100 + torch.arange(w)[None, :]).float().view(1, 1, h, w)
    neigh = gather_neighbours(grid, (1, 3))
    assert neigh.shape == (1, 1, 16, h, w)
    for k, (dy, dx) in enumerate(neighbour_offsets((1, 3))):
        for y, x in [(0, 0), (2, 3), (5, 6), (1, 5)]:
            yy, xx = min(max(y + dy, 0), h - 1), min(max(x + dx, 0), w - 1)
            assert float(neigh[0, 0, k, y, x]) == yy * 100 + xx


def test_one_hot_corner_spreads_through_replicate_padding():
    """All weight on the (−1, −1) neighbour: m'(y, x) = m(max(y−1, 0), max(x−1, 0)).

    A one-hot at the corner (0, 0) then covers the 2×2 top-left block after one step (the clamped
    neighbours of (0, 1), (1, 0) and (0, 0) are all (0, 0)), and the 3×3 block after two.
    """
    mask = torch.zeros(1, 1, 5, 6)
    mask[0, 0, 0, 0] = 1
    weights = torch.zeros(1, 8, 5, 6)
    weights[:, 0] = 1
    one = par_propagate(mask, weights, (1,), 1)
    expected = torch.zeros(5, 6)
    expected[:2, :2] = 1
    torch.testing.assert_close(one[0, 0], expected)
    expected[:3, :3] = 1
    torch.testing.assert_close(par_propagate(mask, weights, (1,), 2)[0, 0], expected)


def loop_par(image: np.ndarray, masks: np.ndarray, dilations: tuple[int, ...], num_iter: int) -> np.ndarray:
    """PAR written pixel by pixel from spec §4.2-4.3 (float64), for masks already at image size."""
    c, h, w = image.shape
    offsets = [(d * dy, d * dx) for d in dilations for dy, dx in ORDER]
    rho = np.array([math.hypot(dy, dx) for dy, dx in offsets])
    pos = -((rho / ((rho.std(ddof=1) + 1e-8) * W1)) ** 2)
    pos = np.exp(pos - pos.max()) / np.exp(pos - pos.max()).sum()

    def at(y: int, x: int, dy: int, dx: int) -> tuple[int, int]:
        return min(max(y + dy, 0), h - 1), min(max(x + dx, 0), w - 1)

    aff = np.zeros((h, w, len(offsets)))
    for y in range(h):
        for x in range(w):
            neigh = np.stack([image[:, yy, xx] for yy, xx in (at(y, x, dy, dx) for dy, dx in offsets)], 1)
            sigma = neigh.std(axis=1, ddof=1, keepdims=True)
            kappa = -(((np.abs(image[:, y, x][:, None] - neigh) / ((sigma + 1e-8) * W1)) ** 2).mean(0))
            soft = np.exp(kappa - kappa.max()) / np.exp(kappa - kappa.max()).sum()
            aff[y, x] = soft + W2 * pos
    for _ in range(num_iter):
        new = np.zeros_like(masks)
        for y in range(h):
            for x in range(w):
                for k, (dy, dx) in enumerate(offsets):
                    new[:, y, x] += aff[y, x, k] * masks[(slice(None), *at(y, x, dy, dx))]
        masks = new
    return masks


def test_par_matches_a_pixel_loop():
    """Unbiased σ over the neighbours (centre excluded), squared ratios, softmaxes, 1.01 mass, 2 steps."""
    torch.manual_seed(0)
    image = torch.rand(1, 3, 7, 8)
    masks = torch.rand(1, 2, 7, 8)
    dilations = (1, 2)
    ours = pixel_adaptive_refine(image, masks, dilations, num_iter=2)
    expected = loop_par(image[0].double().numpy(), masks[0].double().numpy(), dilations, 2)
    np.testing.assert_allclose(ours[0].numpy(), expected, rtol=1e-4, atol=1e-6)
