"""Radius mask, affinity labels and random-walk propagation on the token grid (spec §5.1, 5.2, 5.4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.affinity import affinity_labels, propagate_with_bkg, radius_mask, transition_matrix


def test_radius_mask_counts_32x32():
    """Spec Appendix A: 222,784 ones; corner row 0 has 9·9 = 81; centre row 528 = (16, 16) has 17² = 289."""
    mask = radius_mask(32, 32, 8)
    assert mask.shape == (1024, 1024)
    assert int(mask.sum()) == 222_784
    assert int(mask[0].sum()) == 81
    assert 528 == 16 * 32 + 16 and int(mask[528].sum()) == 289
    assert torch.equal(mask, mask.T)
    assert bool(mask.diagonal().all())


def test_radius_mask_count_48x48():
    assert int(radius_mask(48, 48, 8).sum()) == 553_536


@pytest.mark.parametrize(("h", "w", "r"), [(7, 9, 2), (5, 3, 1), (4, 6, 8)])
def test_radius_mask_matches_the_reference_double_loop(h, w, r):
    """mask[i, j] = 1 iff |row_i − row_j| ≤ r and |col_i − col_j| ≤ r, tokens row-major."""
    expected = np.zeros((h * w, h * w), bool)
    for i in range(h * w):
        for j in range(h * w):
            expected[i, j] = abs(i // w - j // w) <= r and abs(i % w - j % w) <= r
    np.testing.assert_array_equal(radius_mask(h, w, r).numpy(), expected)


def block_label(tokens: torch.Tensor, filler: int) -> torch.Tensor:
    """(B, h, w) token values placed at pixel (16i, 16j) of a (B, 16h, 16w) map; ``filler`` elsewhere."""
    b, h, w = tokens.shape
    label = torch.full((b, 16 * h, 16 * w), filler, dtype=torch.long)
    label[:, ::16, ::16] = tokens
    return label


def test_affinity_labels_by_hand():
    """Tokens [[0, 1], [0, 255]], full mask: 1 if equal (bg–bg too), 0 if not, 255 if either is 255."""
    label = block_label(torch.tensor([[[0, 1], [0, 255]]]), filler=7)
    aff = affinity_labels(label, radius_mask(2, 2, 8))
    expected = torch.tensor([[1, 0, 1, 255], [0, 1, 0, 255], [1, 0, 1, 255], [255, 255, 255, 255]])
    assert torch.equal(aff[0], expected)


def test_affinity_labels_invariants():
    """Symmetric; 255 exactly where the mask is 0 or an endpoint is 255; elsewhere [L_i == L_j].

    The token values sit only at pixels (16i, 16j) (filler 9 elsewhere), so any other choice of
    source pixel than the top-left of each 16×16 block would change the labels.
    """
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 3, (2, 4, 5), generator=gen)
    tokens[torch.rand(2, 4, 5, generator=gen) < 0.25] = 255
    mask = radius_mask(4, 5, 1)
    aff = affinity_labels(block_label(tokens, filler=9), mask)
    assert aff.shape == (2, 20, 20)
    assert torch.equal(aff, aff.transpose(1, 2))
    flat = tokens.flatten(1)
    ignored = ~mask[None] | (flat[:, :, None] == 255) | (flat[:, None, :] == 255)
    assert torch.equal(aff == 255, ignored)
    same = (flat[:, :, None] == flat[:, None, :]).long()
    assert torch.equal(aff[~ignored], same[~ignored])
    bg = (flat[:, :, None] == 0) & (flat[:, None, :] == 0) & mask[None]
    assert bg.any() and bool((aff[bg] == 1).all())


def test_transition_matrix_by_hand():
    """T[i, j] = m·A[i, j]² / (Σ_i' m·A[i', j]² + 0.1), m the radius mask (pair (0, 2) masked out)."""
    aff = torch.tensor([[[0.5, 0.2, 0.9], [0.2, 1.0, 0.4], [0.9, 0.4, 0.3]]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [0, 1, 1]], dtype=torch.bool)
    a = np.array([[0.25, 0.04, 0.0], [0.04, 1.0, 0.16], [0.0, 0.16, 0.09]])
    expected = a / (a.sum(axis=0, keepdims=True) + 0.1)
    np.testing.assert_allclose(transition_matrix(aff, mask)[0].numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(transition_matrix(aff, mask, eps=0.0)[0].numpy(), a / a.sum(0), rtol=1e-6)


def _inputs(gen: torch.Generator, b: int = 2, k: int = 4, h: int = 3, w: int = 4):
    cls_label = torch.tensor([[1.0, 0, 1, 0], [0, 0, 0, 1]])[:b, :k]
    cams = torch.rand(b, k, h, w, generator=gen) * cls_label[:, :, None, None]
    aff = torch.rand(b, h * w, h * w, generator=gen)
    return cams, (aff + aff.transpose(1, 2)) / 2, cls_label


def valid_softmax(cams: torch.Tensor, cls_label: torch.Tensor, bkg: float) -> np.ndarray:
    """v: softmax over [bkg, present classes] per token, 0 in absent channels; (B, K + 1, N), by loops."""
    b, k = cls_label.shape
    flat = cams.flatten(2).double().numpy()
    v = np.zeros((b, k + 1, flat.shape[-1]))
    for i in range(b):
        keep = [0] + [c + 1 for c in range(k) if cls_label[i, c] > 0]
        stacked = np.concatenate([np.full((1, flat.shape[-1]), bkg), flat[i]])[keep]
        v[i, keep] = np.exp(stacked) / np.exp(stacked).sum(axis=0)
    return v


def test_propagation_matches_a_loop_and_zeroes_invalid_channels():
    """rw[:, j] = Σ_i v[:, i]·T[i, j] with v the softmax over valid channels; invalid channels are 0."""
    gen = torch.Generator().manual_seed(0)
    cams, aff, cls_label = _inputs(gen)
    mask = radius_mask(3, 4, 1)
    out = propagate_with_bkg(cams, aff, mask, cls_label, 0.35)
    assert out.shape == (2, 5, 3, 4)
    v = valid_softmax(cams, cls_label, 0.35)
    a = (aff.double().numpy() * mask.numpy()) ** 2
    t = a / (a.sum(axis=1, keepdims=True) + 0.1)
    expected = np.einsum("bci,bij->bcj", v, t).reshape(2, 5, 3, 4)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-7)
    assert bool((out[0, [2, 4]] == 0).all()) and bool((out[1, [1, 2, 3]] == 0).all())
    assert bool((out[0, [0, 1, 3]] > 0).all())


def test_identity_affinity_gives_softmax_over_1_1():
    """aff = I: column sums of T are 1/1.1, so rw = softmax(v)/1.1 token by token (spec Appendix A)."""
    gen = torch.Generator().manual_seed(1)
    cams, _, cls_label = _inputs(gen)
    eye = torch.eye(12).expand(2, 12, 12)
    mask = radius_mask(3, 4, 8)
    torch.testing.assert_close(transition_matrix(eye, mask).sum(dim=1), torch.full((2, 12), 1 / 1.1))
    out = propagate_with_bkg(cams, eye, mask, cls_label, 0.55)
    expected = valid_softmax(cams, cls_label, 0.55).reshape(2, 5, 3, 4) / 1.1
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-7)


def test_eps_does_not_change_the_argmax():
    """The +0.1 divides each column j by (s_j + 0.1) instead of s_j: every channel of token j alike."""
    gen = torch.Generator().manual_seed(2)
    cams, aff, cls_label = _inputs(gen, h=5, w=6)
    mask = radius_mask(5, 6, 2)
    out = propagate_with_bkg(cams, aff, mask, cls_label, 0.35).flatten(2)
    v = torch.from_numpy(valid_softmax(cams, cls_label, 0.35)).float()
    no_eps = torch.bmm(v, transition_matrix(aff, mask, eps=0.0))
    assert torch.equal(out.argmax(dim=1), no_eps.argmax(dim=1))
    assert not torch.allclose(out, no_eps)


def test_input_affinity_is_not_modified():
    """Unlike the reference (which masks ``aff`` in place), the caller's tensor is left alone."""
    gen = torch.Generator().manual_seed(3)
    cams, aff, cls_label = _inputs(gen)
    before = aff.clone()
    propagate_with_bkg(cams, aff, radius_mask(3, 4, 1), cls_label, 0.35)
    transition_matrix(aff, radius_mask(3, 4, 1))
    assert torch.equal(aff, before)
