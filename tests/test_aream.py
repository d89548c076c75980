"""AReAM's pure functions (model/aream.py): the properties of spec §8.4-8.5 on hand-made tensors.

The golden cases ``aream_*`` (tests/test_golden.py) pin the numbers against the authors' code; these
tests pin the invariants and our MiT-specific choices (grid conversion, block grids).
"""

from __future__ import annotations

import math

import pytest
import torch

from model import aream
from model.losses import affinity_loss
from model.mit import build_mit


def random_attention(b: int, n: int, m: int | None = None, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(b, n, m or n, generator=gen) * 2, dim=-1)


def test_head_mean_attention_is_the_mean_of_scaled_softmaxes():
    logits = torch.randn(2, 3, 6, 4)
    ours = aream.head_mean_attention(logits, 0.25)
    manual = sum(torch.softmax(logits[:, h] * 0.25, dim=-1) for h in range(3)) / 3
    torch.testing.assert_close(ours, manual)
    torch.testing.assert_close(ours.sum(-1), torch.ones(2, 6))


def test_weights_lie_in_unit_interval_and_min_max_hits_both_ends():
    entropy = torch.tensor([4.1, 3.2, 5.0, 4.4, 3.9], dtype=torch.float64)
    e = aream.normalise_entropies(entropy)
    assert e[1] == 0.0 and e[2] == 1.0  # the lowest and highest entropy layers
    w = aream.propagation_weights(e)
    assert ((e >= 0) & (e <= 1)).all() and ((w >= 0) & (w <= 1)).all()
    torch.testing.assert_close(w + e, torch.ones_like(e))
    with pytest.raises(ValueError, match="same entropy"):
        aream.normalise_entropies(torch.full((4,), 2.0))


def test_uniform_distribution_has_maximal_entropy_and_a_peak_none():
    n = 12
    assert aream.spatial_entropy(torch.zeros(1, n)).item() == pytest.approx(math.log2(n))
    peak = torch.zeros(1, n)
    peak[0, 5] = 1e4
    assert aream.spatial_entropy(peak).item() == pytest.approx(0.0, abs=1e-9)
    scores = torch.randn(20, n)
    assert (aream.spatial_entropy(scores) < math.log2(n)).all()


def test_uniform_attention_gives_the_maximal_layer_entropy():
    """A layer attending everywhere equally turns any CAM into a constant map: log2(N) bits."""
    cam, cls_label = torch.rand(1, 3, 3, 4), torch.tensor([[1.0, 0.0, 1.0]])
    uniform = torch.full((1, 12, 12), 1 / 12)
    assert aream.layer_entropy(cam, uniform, (3, 4), cls_label).item() == pytest.approx(math.log2(12))
    identity = torch.eye(12)[None]
    assert aream.layer_entropy(cam, identity, (3, 4), cls_label).item() < math.log2(12)


def test_fused_propagation_with_equal_weights_is_the_plain_mean():
    cam = torch.randn(2, 3, 4, 5)
    attns = [random_attention(2, 20, seed=s) for s in range(3)]
    grids = [(4, 5)] * 3
    fused = aream.fused_propagation(cam, attns, grids, torch.ones(3))
    torch.testing.assert_close(fused, aream.propagate(cam, sum(attns) / 3))
    w = torch.tensor([0.2, 1.0, 0.5])
    weighted = aream.fused_propagation(cam, attns, grids, w)
    torch.testing.assert_close(weighted, sum(wi * aream.propagate(cam, a) for wi, a in zip(w, attns)) / 3)
    for conversion in aream.GRID_CONVERSIONS:  # same grid: the conversions agree
        torch.testing.assert_close(aream.fused_propagation(cam, attns, grids, w, conversion), weighted)


def test_propagate_is_row_weighted_average():
    """cam_m = Σ_n A[m, n]·cam_n: a one-hot row copies one token's value."""
    cam = torch.arange(6.0).view(1, 1, 2, 3)
    attn = torch.zeros(1, 6, 6)
    attn[0, :, 4] = 1.0  # every token attends to token 4
    assert torch.equal(aream.propagate(cam, attn), torch.full((1, 1, 2, 3), 4.0))


@pytest.mark.parametrize(("src", "dst"), [((2, 3), (4, 6)), ((4, 4), (9, 9)), ((3, 2), (3, 5))])
def test_grid_expansion_keeps_row_sums_and_maps_nearest(src, dst):
    attn = random_attention(2, src[0] * src[1], seed=1)
    big = aream.expand_attention(attn, src, dst)
    assert big.shape == (2, dst[0] * dst[1], dst[0] * dst[1])
    torch.testing.assert_close(big.sum(-1), torch.ones(2, dst[0] * dst[1]))
    # summing the fine keys of each coarse key gives back the coarse row of the nearest coarse query
    rows, cols = aream.nearest_index(src[0], dst[0]), aream.nearest_index(src[1], dst[1])
    index = (rows[:, None] * src[1] + cols[None, :]).flatten()
    pooled = torch.zeros(2, big.shape[1], attn.shape[2]).index_add_(2, index, big)
    torch.testing.assert_close(pooled, attn[:, index])
    with pytest.raises(ValueError, match="coarser"):
        aream.expand_attention(big, dst, src)


@pytest.mark.parametrize("conversion", aream.GRID_CONVERSIONS)
def test_both_grid_conversions_keep_a_constant_cam(conversion):
    """Row-stochastic attention on the 1/32 grid maps a constant CAM on the 1/16 grid to itself."""
    cam = torch.full((1, 2, 6, 8), 0.7)
    out = aream.propagate_on_grid(cam, random_attention(1, 12, seed=2), (3, 4), conversion)
    torch.testing.assert_close(out, cam)


def test_grid_conversions_differ_on_a_varying_cam():
    cam = torch.randn(1, 2, 6, 8)
    attn = random_attention(1, 12, seed=3)
    expand = aream.propagate_on_grid(cam, attn, (3, 4), "expand")
    reduce = aream.propagate_on_grid(cam, attn, (3, 4), "reduce")
    assert expand.shape == reduce.shape == cam.shape and not torch.allclose(expand, reduce)
    with pytest.raises(ValueError, match="unknown grid conversion"):
        aream.propagate_on_grid(cam, attn, (3, 4), "nearest")


def test_per_layer_loss_is_afas_affinity_loss_on_a_hand_case():
    """Two tokens, two heads: labels [[1, 0], [0, 255]]; the loss written out by hand."""
    logits = torch.tensor([[[[2.0, -2.0], [0.0, 4.0]], [[0.0, 2.0], [-4.0, 0.0]]]])  # (1, 2, 2, 2)
    label = torch.tensor([[[1, 0], [0, 255]]])
    p = torch.sigmoid(torch.tensor([[1.0, 0.0], [-2.0, 2.0]]) * 0.5)  # head mean, then the scale 0.5
    hand = 0.5 * (1 - p[0, 0]) / (1 + 1) + 0.5 * (p[0, 1] + p[1, 0]) / (2 + 1)
    per_layer = aream.layer_affinity_losses([logits, 2 * logits], [0.5, 0.25], [label, label])
    torch.testing.assert_close(per_layer, torch.stack([hand, hand]))
    torch.testing.assert_close(per_layer[0], affinity_loss(p[None], label))
    weights = torch.tensor([0.0, 1.0])
    assert aream.weighted_layer_loss(per_layer, weights) == pytest.approx(float(hand) / 2)


def test_dense_affinity_labels_have_no_radius_window():
    label = torch.zeros(1, 16 * 4, 16 * 5, dtype=torch.int64)
    label[0, :16, :16] = 3  # token 0
    label[0, 16:32, :16] = 255  # token 5
    y = aream.dense_affinity_labels(label, (4, 5))
    assert y.shape == (1, 20, 20)
    assert y[0, 0, 0] == 1 and y[0, 0, 19] == 0 and y[0, 1, 19] == 1  # far pairs are labelled
    assert (y[0, 5] == 255).all() and (y[0, :, 5] == 255).all()
    assert torch.equal(y, y.transpose(1, 2))


def test_hellinger_distance_matches_eq6_and_its_extremes():
    attn = random_attention(1, 5, 7, seed=4)
    d = aream.hellinger_distances(attn)[0]
    i, j = 1, 3
    literal = (attn[0, i].sqrt() - attn[0, j].sqrt()).pow(2).sum().sqrt() / math.sqrt(2)
    assert d[i, j].item() == pytest.approx(literal.item(), abs=1e-6)
    assert torch.allclose(d.diagonal(), torch.zeros(5, dtype=d.dtype), atol=1e-6)
    disjoint = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    assert aream.mean_hellinger(disjoint).item() == pytest.approx(1.0)
    same = torch.full((1, 4, 3), 1 / 3)
    assert aream.mean_hellinger(same).item() == pytest.approx(0.0, abs=1e-6)


def test_block_grids_and_scales_of_mit_b1():
    """Spec §1.4: stages 1-3 return 1/32-grid maps, stage 4 the 1/16 grid, for a 512 crop."""
    encoder = build_mit("mit_b1")
    assert aream.block_grids(encoder, 512, 512) == [(16, 16)] * 6 + [(32, 32)] * 2
    assert aream.block_grids(encoder, 512, 384) == [(16, 12)] * 6 + [(32, 24)] * 2
    assert aream.block_scales(encoder) == pytest.approx([64**-0.5] * 6 + [64**-0.5] * 2)
    tiny = build_mit("mit_tiny")
    assert aream.block_scales(tiny) == pytest.approx([16**-0.5, 16**-0.5, 24**-0.5, 16**-0.5, 16**-0.5])


def test_aream_cam_merges_the_flipped_half_and_normalises():
    cam = torch.rand(4, 2, 3, 4)
    attns = [torch.eye(12).expand(4, 12, 12)]
    out = aream.aream_cam(cam, attns, [(3, 4)], torch.ones(1), (6, 8))
    assert out.shape == (2, 2, 6, 8)
    assert out.amin(dim=(-2, -1)).eq(0).all() and (out.amax(dim=(-2, -1)) < 1).all()
    # identity attention: the result is the min-max of relu(up(cam) + flip(up(cam_flipped)))
    up = torch.nn.functional.interpolate(cam, size=(6, 8), mode="bilinear", align_corners=False)
    expected = aream.minmax_per_class(torch.relu(up[:2] + up[2:].flip(-1)))
    torch.testing.assert_close(out, expected)
