"""Mix Transformer encoder (spec §1): grid sizes, returned attention logits, drop path, B1 shapes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from model.mit import MIT_VARIANTS, DropPath, build_mit


def side(n: int, stage: int, strides: tuple[int, ...]) -> int:
    """Token-grid side after ``stage`` (0-based): each patch embedding maps n -> ceil(n / s) (spec §1.2)."""
    for s in strides[: stage + 1]:
        n = math.ceil(n / s)
    return n


def test_stage_sides_and_block1_attention_for_375x500():
    """Spec Appendix A: sides (94,125), (47,63), (24,32), (24,32); block 1 has ⌊94/8⌋·⌊125/8⌋ = 165 keys."""
    torch.manual_seed(0)
    enc = build_mit("mit_b0").eval()
    with torch.no_grad():
        out = enc(torch.randn(1, 3, 375, 500))
    assert [tuple(f.shape[-2:]) for f in out.features] == [(94, 125), (47, 63), (24, 32), (24, 32)]
    assert [f.shape[1] for f in out.features] == [32, 64, 160, 256]
    assert out.attn_logits[0].shape == (1, 1, 165, 165)
    assert out.attn_logits[-1].shape == (1, 8, 768, 768)  # 24·32 tokens, no reduction
    assert enc.token_grid(375, 500) == (24, 32)


@pytest.mark.parametrize("strides", [(4, 2, 2, 1), (4, 2, 2, 2)])
@pytest.mark.parametrize(("height", "width"), [(64, 64), (33, 47), (70, 41), (96, 130)])
def test_token_grid_matches_feature_shapes(strides, height, width):
    """token_grid(h, w, i) = the real stage-i feature size = ceil applied once per stride."""
    torch.manual_seed(0)
    enc = build_mit("mit_tiny", strides).eval()
    with torch.no_grad():
        features = enc(torch.randn(1, 3, height, width)).features
    for i, feat in enumerate(features):
        expected = (side(height, i, strides), side(width, i, strides))
        assert tuple(feat.shape[-2:]) == expected
        assert enc.token_grid(height, width, i) == expected


@pytest.mark.parametrize("name", ["mit_tiny", "mit_b0"])
def test_every_block_returns_its_logits(name):
    """One map per block, in execution order: (B, heads, N_kv, N_kv) for sr > 1, (B, heads, N, N) else."""
    torch.manual_seed(0)
    enc = build_mit(name).eval()
    v = MIT_VARIANTS[name]
    with torch.no_grad():
        out = enc(torch.randn(2, 3, 64, 96))
    assert len(out.attn_logits) == sum(v.depths)
    expected = []
    for i in range(4):
        h, w = side(64, i, (4, 2, 2, 1)), side(96, i, (4, 2, 2, 1))
        n = (h // v.sr_ratios[i]) * (w // v.sr_ratios[i])
        expected += [(2, v.num_heads[i], n, n)] * v.depths[i]
    assert [tuple(a.shape) for a in out.attn_logits] == expected


def _heads(x: torch.Tensor, nh: int) -> torch.Tensor:
    """(B, N, C) -> (B, nh, N, C / nh)."""
    b, n, c = x.shape
    return x.reshape(b, n, nh, c // nh).permute(0, 2, 1, 3)


def test_sr1_logits_are_unscaled_qk_and_reproduce_the_output():
    """sr = 1: logits = q·kᵀ, and out = proj(softmax(logits·d^-1/2)·v) with q, k, v from the Linears."""
    torch.manual_seed(0)
    attn = build_mit("mit_tiny").block4[0].attn.eval()
    nh, c, (h, w) = attn.num_heads, attn.q.in_features, (3, 5)
    x = torch.randn(2, h * w, c)
    with torch.no_grad():
        out, logits = attn(x, h, w)
        q = _heads(x @ attn.q.weight.T + attn.q.bias, nh)
        kv = x @ attn.kv.weight.T + attn.kv.bias
        k, v = _heads(kv[..., :c], nh), _heads(kv[..., c:], nh)
        d = c // nh
        torch.testing.assert_close(logits, q @ k.transpose(-2, -1), rtol=1e-5, atol=1e-5)
        mixed = torch.softmax(logits * d**-0.5, dim=-1) @ v  # (B, nh, N, d)
        expected = attn.proj(mixed.permute(0, 2, 1, 3).reshape(2, h * w, c))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("h", "w"), [(16, 24), (18, 27)])
def test_pooled_query_logits_average_the_full_map(h, w):
    """sr = 8: logits = the full q·kᵀ (h·w, N_kv) averaged over 8×8 query windows (trailing rows dropped).

    The attention output uses the full map: proj(softmax(q·kᵀ·d^-1/2)·v).
    """
    torch.manual_seed(0)
    attn = build_mit("mit_tiny").block1[0].attn.eval()
    sr, nh, c = attn.sr_ratio, attn.num_heads, attn.q.in_features
    x = torch.randn(2, h * w, c)
    with torch.no_grad():
        out, logits = attn(x, h, w)
        q = _heads(attn.q(x), nh)
        reduced = attn.sr(x.transpose(1, 2).reshape(2, c, h, w)).flatten(2).transpose(1, 2)
        kv = attn.kv(F.layer_norm(reduced, (c,), attn.norm.weight, attn.norm.bias, 1e-5))
        k, v = _heads(kv[..., :c], nh), _heads(kv[..., c:], nh)
        full = q @ k.transpose(-2, -1)  # (B, nh, h·w, N_kv)
        hp, wp = h // sr, w // sr
        n_kv = k.shape[2]
        assert n_kv == hp * wp
        grid = full.reshape(2, nh, h, w, n_kv)[:, :, : hp * sr, : wp * sr]
        pooled = torch.zeros(2, nh, hp, wp, n_kv)
        for i in range(hp):
            for j in range(wp):
                window = grid[:, :, i * sr : (i + 1) * sr, j * sr : (j + 1) * sr]
                pooled[:, :, i, j] = window.mean(dim=(2, 3))
        torch.testing.assert_close(logits, pooled.reshape(2, nh, n_kv, n_kv), rtol=1e-5, atol=1e-5)
        mixed = torch.softmax(full * (c // nh) ** -0.5, dim=-1) @ v
        expected = attn.proj(mixed.permute(0, 2, 1, 3).reshape(2, h * w, c))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_logit_request_returns_only_the_asked_blocks_and_keeps_the_features():
    """``logit_blocks`` is per call: asked blocks (negative from the end) carry logits, the others None
    (fused attention); the features equal those of the all-logits forward up to float rounding."""
    torch.manual_seed(0)
    enc = build_mit("mit_b0").eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        full = enc(x)
        part = enc(x, logit_blocks=(0, -1))
        none = enc(x, logit_blocks=())
    assert [a is not None for a in part.attn_logits] == [True] + [False] * 6 + [True]
    assert all(a is None for a in none.attn_logits)
    assert torch.equal(part.attn_logits[0], full.attn_logits[0])
    torch.testing.assert_close(part.attn_logits[-1], full.attn_logits[-1], rtol=1e-4, atol=1e-5)
    for ours, ref in zip(none.features, full.features):
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="outside the encoder's 8 blocks"):
        enc(x, logit_blocks=(8,))


def test_drop_path_rates():
    """Spec §1.6: rate of block i (over all blocks) = 0.1·i / (Σ depths − 1); rate 0 is an Identity."""
    enc = build_mit("mit_b0")
    blocks = [b for i in range(4) for b in enc.stage(i)[1]]
    expected = [0, 0.0143, 0.0286, 0.0429, 0.0571, 0.0714, 0.0857, 0.1]  # spec, 4 decimals
    assert len(blocks) == len(expected)
    assert isinstance(blocks[0].drop_path, nn.Identity)
    for block, rate in zip(blocks[1:], expected[1:]):
        assert isinstance(block.drop_path, DropPath)
        assert block.drop_path.p == pytest.approx(rate, abs=5e-5)


def test_drop_path_is_per_sample_and_off_in_eval():
    """Train mode: each sample's residual is either 0 or x / keep; eval mode: identity."""
    torch.manual_seed(0)
    drop = DropPath(0.5)
    x = torch.ones(400, 3, 2)
    y = drop(x)
    per_sample = y.flatten(1)
    assert set(per_sample.unique().tolist()) == {0.0, 2.0}
    assert (per_sample == per_sample[:, :1]).all()
    assert 120 < int((per_sample[:, 0] == 0).sum()) < 280
    assert torch.equal(drop.eval()(x), x)


def test_b1_shapes_on_scaled_down_input():
    """Spec Appendix A's MiT-B1 table at 128×128 instead of 512×512.

    Sides ceil(128/4) = 32, 16, 8, 8 (stride-1 stage 4); widths 64, 128, 320, 512. Stages 1-3 keys
    (32/8)² = (16/4)² = (8/2)² = 16, queries pooled to the same 16; stage 4 has 8·8 = 64 tokens.
    """
    torch.manual_seed(0)
    enc = build_mit("mit_b1").eval()
    with torch.no_grad():
        out = enc(torch.randn(2, 3, 128, 128))
    v = MIT_VARIANTS["mit_b1"]
    sides = [side(128, i, (4, 2, 2, 1)) for i in range(4)]
    assert sides == [32, 16, 8, 8]
    assert [tuple(f.shape) for f in out.features] == [(2, c, s, s) for c, s in zip(v.embed_dims, sides)]
    keys = [(s // sr) ** 2 for s, sr in zip(sides, v.sr_ratios)]
    assert keys == [16, 16, 16, 64]
    expected = [(2, v.num_heads[i], keys[i], keys[i]) for i in range(4) for _ in range(v.depths[i])]
    assert [tuple(a.shape) for a in out.attn_logits] == expected
    assert expected[0] == (2, 1, 16, 16) and expected[-1] == (2, 8, 64, 64)
