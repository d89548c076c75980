"""The permutohedral lattice filter (spec B.4): hand cases and invariants, beside its golden case."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model import lattice

ALPHA = 1.0 / (1.0 + 2.0**-5)
pytestmark = pytest.mark.usefixtures("one_thread")


def smooth_image(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    """(batch, 3, size, size) on 0-255 with a few colour regions (many distinct lattice points)."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, 4, 4, generator=gen) * 255
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="nearest")


def test_filter_is_linear_in_its_input():
    image = smooth_image(2, 16)
    gen = torch.Generator().manual_seed(1)
    a, b = torch.rand(2, 2, 3, 16, 16, generator=gen)
    fa = lattice.bilateral_filter(image, a, 15.0, 5.0)
    fb = lattice.bilateral_filter(image, b, 15.0, 5.0)
    combined = lattice.bilateral_filter(image, 2.0 * a - 3.0 * b, 15.0, 5.0)
    torch.testing.assert_close(combined, 2.0 * fa - 3.0 * fb, rtol=1e-5, atol=1e-5)


def test_splat_weights_of_every_point_sum_to_one_and_lie_in_the_simplex():
    feats = torch.randn(500, 5, generator=torch.Generator().manual_seed(2)) * 3
    lat = lattice.build_lattice(feats)
    torch.testing.assert_close(lat.weight.sum(dim=0), torch.ones(500), rtol=0, atol=1e-5)
    assert (lat.weight >= -1e-6).all() and (lat.weight <= 1 + 1e-6).all()
    ranks = lattice.simplex(lattice.elevate(feats.T.contiguous()))[1]
    assert (ranks.sort(dim=0).values == torch.arange(6)[:, None]).all()  # a permutation per point
    # the splat matrix holds exactly these weights
    dense = lat.splat_matrix.to_dense()
    assert dense.shape == (lat.num_points + 1, 500)
    torch.testing.assert_close(dense.sum(dim=0), torch.ones(500), rtol=0, atol=1e-5)


def test_a_point_on_the_lattice_origin():
    """Features 0: rem0 = 0, all remainders tie, so rank = (0..5) and b = (1, 0, …, 0). Blur direction
    j joins simplex vertices 5 − j and 6 − j (mod 6); in the order j = 0..5 half of vertex 0's value
    walks once round the simplex and comes back halved six times: out = α·(1 + 2^−6)·v."""
    values = torch.tensor([[2.0, -1.0, 0.5]])
    out = lattice.permutohedral_filter(torch.zeros(1, 5), values)
    torch.testing.assert_close(out, ALPHA * (1 + 2.0**-6) * values, rtol=1e-6, atol=0)


def one_point_by_its_simplex(feature: torch.Tensor) -> float:
    """The filter of one point with value 1, without hashing: its 6 simplex vertices form a cycle in
    which direction j joins vertex d − rank_j to the next one; blur along that cycle, then slice."""
    _, rank, weight = lattice.simplex(lattice.elevate(feature[:, None]))
    rank, b = rank[:, 0].tolist(), weight[:, 0].double()
    g = b.clone()
    for j in range(6):
        a, c = 5 - rank[j], (6 - rank[j]) % 6
        g[a], g[c] = g[a] + 0.5 * g[c], g[c] + 0.5 * g[a]
    return ALPHA * float((b * g).sum())


def test_a_single_point_matches_its_simplex_cycle():
    feats = torch.randn(20, 5, generator=torch.Generator().manual_seed(3)) * 4
    for f in feats:
        out = lattice.permutohedral_filter(f[None], torch.ones(1, 1))
        assert out.item() == pytest.approx(one_point_by_its_simplex(f), rel=1e-5)


def test_identical_points_give_a_constant_equal_to_n_times_one_point():
    """A constant image with σ_xy → ∞: every pixel has the same feature, so the output is constant and
    equals (number of pixels) × the filter of a single point."""
    image = torch.full((1, 3, 6, 7), 100.0)
    values = torch.full((1, 2, 6, 7), 0.25)
    out = lattice.bilateral_filter(image, values, 15.0, 1e9)
    single = lattice.bilateral_filter(image[..., :1, :1], values[..., :1, :1], 15.0, 1e9)
    torch.testing.assert_close(out, (42 * single).expand_as(out), rtol=1e-5, atol=0)


def test_images_of_a_batch_have_independent_lattices():
    image = smooth_image(3, 12, seed=4)
    values = torch.rand(3, 2, 12, 12, generator=torch.Generator().manual_seed(5))
    together = lattice.bilateral_filter(image, values, 15.0, 4.0)
    alone = [lattice.bilateral_filter(image[i : i + 1], values[i : i + 1], 15.0, 4.0) for i in range(3)]
    torch.testing.assert_close(together, torch.cat(alone), rtol=1e-6, atol=1e-6)


def test_round_half_away_from_zero_like_c():
    x = torch.tensor([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.49999997, -0.49999997, 2.4, -2.6])
    expected = torch.tensor([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0, 0.0, 0.0, 2.0, -3.0])
    assert torch.equal(lattice.round_half_away(x), expected)


def test_dense_gaussian_filter_is_the_exact_sum():
    image = smooth_image(1, 5, seed=6)
    values = torch.rand(1, 2, 5, 5, generator=torch.Generator().manual_seed(7))
    feats = lattice.bilateral_features(image, 15.0, 3.0)[0].double()  # (25, 5)
    kernel = torch.exp(-0.5 * ((feats[:, None] - feats[None]) ** 2).sum(-1))
    expected = torch.einsum("ij,cj->ci", kernel, values[0].reshape(2, 25).double()).reshape(1, 2, 5, 5)
    out = lattice.dense_gaussian_filter(image, values, 15.0, 3.0, chunk=7)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)


def test_lattice_is_about_half_the_dense_sum_on_the_golden_case(golden_dir):
    """Spec B.4: the reference's lattice gives ~0.5 of the exact sum with ~10 % spread, which is why
    the dense filter is only a comparison."""
    with np.load(golden_dir / "rloss_bilateral_filter.npz") as case:
        image, values, ref = (torch.from_numpy(case[k]) for k in ("in/image", "in/input", "out/filtered"))
    image, values, ref = image[:1, :, :32, :32], values[:1, :2, :32, :32], ref[:1, :2]
    dense = lattice.dense_gaussian_filter(image, values, 15.0, 50.0)
    ratio = lattice.bilateral_filter(image, values, 15.0, 50.0) / dense
    assert 0.4 < float(ratio.mean()) < 0.65 and 0.02 < float(ratio.std()) < 0.2
