"""DeiT backbone and MCTformer model: fused attention, position interpolation, weight loading, sizes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from common.errors import CheckpointError, DataError, MissingFileError
from model import deit
from model.deit import interpolate_pos_embed
from model.mctformer import MCTformer, build_mctformer, load_deit_checkpoint


def tiny(version: str = "v2", classes: int = 3, img: int = 64) -> MCTformer:
    """A 2-block D=32 model with spread-out weights (attention far from uniform)."""
    torch.manual_seed(0)
    model = MCTformer(version, classes, embed_dim=32, depth=2, num_heads=2, img_size=img)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model.eval()


def test_fused_attention_equals_explicit_forward_and_backward():
    model = tiny()
    x = torch.randn(2, 3, 48, 80, requires_grad=True)
    fused, grid, stack = model.forward_features(x)
    explicit, _, weights = model.forward_features(x, attn="weights")
    assert stack == [] and grid == (3, 5) and len(weights) == 2
    assert weights[0].shape == (2, 2, 3 + 15, 3 + 15)
    torch.testing.assert_close(weights[1].sum(-1), torch.ones(2, 2, 18))
    torch.testing.assert_close(fused, explicit, rtol=1e-5, atol=1e-5)
    (g_fused,) = torch.autograd.grad(fused.square().sum(), x)
    (g_explicit,) = torch.autograd.grad(explicit.square().sum(), x)
    torch.testing.assert_close(g_fused, g_explicit, rtol=1e-4, atol=1e-5)


def test_training_forward_builds_no_attention_weights(monkeypatch):
    model = tiny().train()
    calls = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(deit.F, "scaled_dot_product_attention", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(torch.Tensor, "softmax", lambda *a, **k: pytest.fail("softmax built in training"))
    cls_logits, patch_logits = model(torch.randn(2, 3, 64, 64))
    assert len(calls) == 2 and cls_logits.shape == patch_logits.shape == (2, 3)


def test_v1_and_v2_outputs_and_logit_definitions():
    x = torch.randn(1, 3, 64, 48)
    v1 = tiny("v1")
    cls_logits, patch_logits = v1(x)
    tokens, _, _ = v1.forward_features(x)
    assert patch_logits is None
    torch.testing.assert_close(cls_logits, tokens[:, :3].mean(-1))  # no classifier, no final norm
    v2 = tiny("v2")
    cls_logits, patch_logits = v2(x)
    maps = v2.forward_attention(x, 2, "patchcam")
    torch.testing.assert_close(maps.cls_logits, cls_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(maps.patch_logits, patch_logits, rtol=1e-5, atol=1e-5)
    assert maps.cams.shape == (1, 3, 4, 3) and maps.patch_attn.shape == (2, 1, 12, 12)
    assert (maps.cams >= 0).all() and not maps.cams.requires_grad


def test_parameter_counts_of_the_spec():
    with torch.device("meta"):  # shapes only
        v1, v2 = build_mctformer("v1", 20), build_mctformer("v2", 20)
    assert sum(p.numel() for p in v1.parameters()) == 21_687_956
    assert sum(p.numel() for p in v2.parameters()) == 21_749_396


def test_pos_interp_identity_and_resampling_cases():
    torch.manual_seed(1)
    pos = torch.randn(1, 2 + 16, 8)
    assert interpolate_pos_embed(pos, 2, 64, 64, 16) is pos  # grid = G×G and H = W
    same_grid = interpolate_pos_embed(pos, 2, 64, 70, 16)  # still 4×4 but H ≠ W: resampled (spec §1.3)
    assert same_grid.shape == pos.shape and not torch.allclose(same_grid, pos)
    torch.testing.assert_close(same_grid[:, :2], pos[:, :2])  # class positions kept
    const = torch.ones(1, 2 + 16, 8)
    out = interpolate_pos_embed(const, 2, 16 * 7, 16 * 3, 16)
    assert out.shape == (1, 2 + 21, 8)
    torch.testing.assert_close(out, torch.ones_like(out))  # bicubic weights sum to 1
    by_size = F.interpolate(pos[:, 2:].reshape(1, 4, 4, 8).permute(0, 3, 1, 2), size=(7, 3), mode="bicubic")
    scaled = interpolate_pos_embed(pos, 2, 16 * 7, 16 * 3, 16)[:, 2:]
    assert not torch.allclose(scaled, by_size.permute(0, 2, 3, 1).reshape(1, 21, 8))  # scale ≠ size


def test_image_smaller_than_a_patch_is_one_clear_error():
    with pytest.raises(DataError, match="smaller than one 16×16 patch"):
        tiny()(torch.randn(1, 3, 15, 40))


def deit_state(dim: int, depth: int, heads: int, grid: int = 14) -> dict[str, torch.Tensor]:
    """A random state dict with the real DeiT key names and shapes (timm ``VisionTransformer``)."""
    g = torch.Generator().manual_seed(dim)

    def r(*shape):
        return torch.randn(*shape, generator=g)

    state = {
        "cls_token": r(1, 1, dim),
        "pos_embed": r(1, 1 + grid * grid, dim),
        "patch_embed.proj.weight": r(dim, 3, 16, 16),
        "patch_embed.proj.bias": r(dim),
    }
    for i in range(depth):
        for name, shape in [
            ("norm1.weight", (dim,)),
            ("norm1.bias", (dim,)),
            ("attn.qkv.weight", (3 * dim, dim)),
            ("attn.qkv.bias", (3 * dim,)),
            ("attn.proj.weight", (dim, dim)),
            ("attn.proj.bias", (dim,)),
            ("norm2.weight", (dim,)),
            ("norm2.bias", (dim,)),
            ("mlp.fc1.weight", (4 * dim, dim)),
            ("mlp.fc1.bias", (4 * dim,)),
            ("mlp.fc2.weight", (dim, 4 * dim)),
            ("mlp.fc2.bias", (dim,)),
        ]:
            state[f"blocks.{i}.{name}"] = r(*shape)
    state |= {"norm.weight": r(dim), "norm.bias": r(dim), "head.weight": r(1000, dim), "head.bias": r(1000)}
    return state


@pytest.fixture(scope="module")
def small_deit_file(tmp_path_factory):
    state = deit_state(64, 2, 2)
    path = tmp_path_factory.mktemp("deit") / "deit_small_variant.pth"
    torch.save({"model": state}, path)
    return path, state


def test_local_deit_file_loads_through_the_surgery(small_deit_file):
    path, state = small_deit_file
    model = MCTformer("v2", 20, embed_dim=64, depth=2, num_heads=2, img_size=224)
    head = model.head.weight.detach().clone()
    kept = load_deit_checkpoint(model, path)
    assert kept == ["head.bias", "head.weight"]
    ours = model.state_dict()
    torch.testing.assert_close(ours["cls_token"], state["cls_token"].repeat(1, 20, 1))
    torch.testing.assert_close(ours["pos_embed"][:, :20], state["pos_embed"][:, :1].repeat(1, 20, 1))
    torch.testing.assert_close(ours["pos_embed"][:, 20:], state["pos_embed"][:, 1:])  # 14 -> 14: identity
    for key in ("patch_embed.proj.weight", "blocks.1.mlp.fc2.weight", "norm.bias"):
        assert torch.equal(ours[key], state[key])
    assert torch.equal(model.head.weight, head)


def test_deit_of_another_size_is_refused_in_one_line(tmp_path):
    tiny_keys = {"cls_token": torch.zeros(1, 1, 192), "pos_embed": torch.zeros(1, 197, 192)}
    tiny_keys["patch_embed.proj.weight"] = torch.zeros(192, 3, 16, 16)
    tiny_keys |= {f"blocks.{i}.norm1.bias": torch.zeros(192) for i in range(12)}
    path = tmp_path / "deit_tiny.pth"
    torch.save({"model": tiny_keys}, path)
    with torch.device("meta"):
        small = build_mctformer("v1", 20)
    with pytest.raises(CheckpointError, match=r"width 192, depth 12 \(deit_tiny\).*width 384.*deit_small"):
        load_deit_checkpoint(small, path)
    bare = tmp_path / "bare.pth"
    torch.save(deit_state(32, 1, 2, grid=4), bare)  # a bare state dict also works
    model = MCTformer("v1", 3, embed_dim=32, depth=1, num_heads=2, img_size=32)  # grid 4 -> 2: resized
    assert load_deit_checkpoint(model, bare) == ["head.bias", "head.weight"]
    with pytest.raises(MissingFileError, match="does not exist"):
        load_deit_checkpoint(model, tmp_path / "absent.pth")
    distilled = deit_state(32, 1, 2, grid=4) | {"dist_token": torch.zeros(1, 1, 32)}
    distilled["pos_embed"] = torch.zeros(1, 2 + 16, 32)
    torch.save(distilled, bare)
    with pytest.raises(CheckpointError, match="not a plain DeiT"):
        load_deit_checkpoint(model, bare)
    torch.save({"model": {"weight": torch.zeros(1)}}, bare)
    with pytest.raises(CheckpointError, match="is not a DeiT checkpoint"):
        load_deit_checkpoint(model, bare)


def test_kept_residual_equals_drop_path_of_the_full_branch():
    """The CPU training block runs branches on kept samples only; values, gradients and the generator
    state equal ``x + DropPath(branch(x))`` computed on the whole batch (the ``attn="weights"`` path)."""
    torch.manual_seed(0)
    block = deit.Block(32, 4, drop_path=0.5).train()
    x = torch.randn(6, 10, 32, requires_grad=True)
    results = []
    for attn in ("none", "weights"):
        block.zero_grad()
        torch.manual_seed(3)
        y, _ = block(x, attn)
        (gx,) = torch.autograd.grad(y.square().sum(), x, retain_graph=True)
        y.square().sum().backward()
        results.append((y, gx, block.mlp.fc1.weight.grad.clone(), torch.rand(1)))
    torch.manual_seed(3)
    masks = torch.floor(0.5 + torch.rand(2, 6))  # the two draws of the block: attention, MLP
    assert 0 < masks.sum() < 12  # some branches of the case are dropped, some kept
    for fast, full in zip(*results):
        torch.testing.assert_close(fast, full, rtol=1e-6, atol=1e-6)
    dropped = masks[0] + masks[1] == 0  # neither branch: the sample passes through unchanged
    assert dropped.any() and masks[0].sum() == 0  # also the case of a branch dropped for every sample
    torch.testing.assert_close(results[0][0][dropped], x[dropped])


def test_kept_residual_runs_the_branch_on_kept_samples_only():
    x = torch.arange(4.0).reshape(4, 1, 1).expand(4, 2, 3).contiguous()
    seen = []
    torch.manual_seed(5)
    mask = torch.floor(0.5 + torch.rand(4, 1, 1))
    torch.manual_seed(5)
    out = deit.kept_residual(x, lambda t: seen.append(t.shape[0]) or 2 * t, 0.5)
    assert seen == [int(mask.sum())] and 0 < seen[0] < 4
    torch.testing.assert_close(out, x + 2 * x / 0.5 * mask)
    assert not deit.skip_dropped(torch.zeros(1, device="meta"))  # off the CPU: the plain DropPath
