"""The AFA network (spec §2): heads, affinity prediction, CAM pass, parameter groups."""

from __future__ import annotations

import pytest
import torch

from methods.optim import build_optimizer, build_scheduler
from model.afa import AFANetwork


def test_output_shapes(tiny_model):
    """cls (B, K), seg (B, C, H/4, W/4), aff_pred (B, N, N) with N = ceil(H/16)·ceil(W/16)."""
    model = tiny_model(num_classes=5).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 48, 80))
    assert out.cls_logits.shape == (2, 4)
    assert out.seg_logits.shape == (2, 5, 12, 20)
    assert out.aff_pred.shape == (2, 15, 15)
    assert len(out.attn_logits) == 5  # mit_tiny depths (1, 1, 1, 2)
    assert [a is not None for a in out.attn_logits] == [False, False, False, True, True]


def test_network_logit_request_adds_blocks_and_cam_pass_can_skip_affinity(tiny_model):
    """``logit_blocks`` adds blocks to the affinity head's two; ``with_affinity=False`` asks for none
    and leaves the CAM unchanged."""
    model = tiny_model(num_classes=5).eval()
    x = torch.randn(2, 3, 48, 80)
    with torch.no_grad():
        out = model(x, logit_blocks=range(5))
        plain = model.forward_cam(x)
        bare = model.forward_cam(x, with_affinity=False)
    assert all(a is not None for a in out.attn_logits)
    assert bare.aff_pred is None and all(a is None for a in bare.attn_logits)
    torch.testing.assert_close(bare.cam, plain.cam, rtol=1e-5, atol=1e-6)


def test_logit_batch_returns_the_first_samples_logits_and_changes_no_output(tiny_model):
    """``logit_batch`` = m: logits and affinity of the first m samples only, equal to the full pass's
    (blocks with and without spatial reduction); the CAM of every sample unchanged."""
    torch.manual_seed(0)
    model = tiny_model(num_classes=5).eval()
    x = torch.randn(4, 3, 48, 80)
    with torch.no_grad():
        full = model.forward_cam(x, logit_blocks=range(5))
        part = model.forward_cam(x, logit_blocks=range(5), logit_batch=2)
    assert part.aff_pred.shape == (2, 15, 15)
    torch.testing.assert_close(part.aff_pred, full.aff_pred[:2], rtol=1e-5, atol=1e-6)
    for got, want in zip(part.attn_logits, full.attn_logits, strict=True):
        assert got.shape[0] == 2
        torch.testing.assert_close(got, want[:2], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(part.cam, full.cam, rtol=1e-5, atol=1e-5)


def test_segment_is_the_forwards_segmentation_without_any_logits(tiny_model, monkeypatch):
    model = tiny_model(num_classes=5).eval()
    x = torch.randn(2, 3, 48, 80)
    asked = []
    original = model.encoder.forward
    def recording(x, blocks=None):
        asked.append(blocks)
        return original(x, blocks)

    monkeypatch.setattr(model.encoder, "forward", recording)
    with torch.no_grad():
        seg = model.segment(x)
        full = model(x).seg_logits
    assert asked[0] == ()  # fused attention in every block
    torch.testing.assert_close(seg, full, rtol=1e-5, atol=1e-6)


def test_aff_pred_is_symmetric_and_in_open_unit_interval(golden_model):
    """A = sigmoid(proj(S + Sᵀ)) is symmetric, strictly inside (0, 1) (spec Appendix A)."""
    torch.manual_seed(0)
    with torch.no_grad():
        aff = golden_model(torch.randn(2, 3, 64, 96)).aff_pred
    assert aff.shape == (2, 24, 24)
    torch.testing.assert_close(aff, aff.transpose(1, 2), rtol=0, atol=1e-6)
    assert bool((aff > 0).all() and (aff < 1).all())
    assert not torch.allclose(aff, aff[:, :1, :1].expand_as(aff))  # not a constant map


@pytest.mark.parametrize("aff_blocks", [1, 2])
def test_aff_pred_from_the_last_blocks_by_hand(tiny_model, aff_blocks):
    """A[b, i, j] = sigmoid(Σ_c w_c·(S_c[i, j] + S_c[j, i]) + bias), S = the last ``aff_blocks`` maps."""
    model = tiny_model(aff_blocks=aff_blocks).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
        s = torch.cat(out.attn_logits[-aff_blocks:], dim=1)  # (B, aff_blocks·heads, N, N)
        w = model.attn_proj.weight.flatten()
        expected = torch.sigmoid(
            torch.einsum("c,bcij->bij", w, s + s.transpose(-2, -1)) + model.attn_proj.bias
        )
    torch.testing.assert_close(out.aff_pred, expected, rtol=1e-5, atol=1e-6)


def test_affinity_head_width_is_blocks_times_stage4_heads(tiny_model, golden_model):
    """attn_proj in-channels = aff_blocks × stage-4 heads: mit_tiny 4·k; mit_b0 (golden) 2·8 = 16."""
    assert tiny_model(aff_blocks=1).attn_proj.in_channels == 4
    assert tiny_model(aff_blocks=2).attn_proj.in_channels == 8
    assert golden_model.attn_proj.in_channels == 16
    assert golden_model.attn_proj.bias is not None


@pytest.mark.parametrize("aff_blocks", [0, 3])
def test_aff_blocks_outside_stage4_is_rejected(aff_blocks):
    """mit_tiny has 2 stage-4 blocks: 0 and 3 are invalid."""
    with pytest.raises(ValueError, match="aff_blocks"):
        AFANetwork("mit_tiny", num_classes=5, aff_blocks=aff_blocks)


def test_forward_cam_is_the_classifier_on_c4(tiny_model):
    """cam[b, k] = Σ_c W[k, c]·c4[b, c] (1×1 conv, no bias, no ReLU), detached (spec §2.2)."""
    model = tiny_model(num_classes=5).eval()
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        c4 = model.encoder(x).features[3]
        expected = torch.einsum("kc,bchw->bkhw", model.classifier.weight[:, :, 0, 0], c4)
    out = model.forward_cam(x)
    assert out.cam.shape == (2, 4, 4, 3)
    assert not out.cam.requires_grad
    torch.testing.assert_close(out.cam, expected, rtol=1e-5, atol=1e-5)
    assert (out.cam < 0).any()  # no ReLU
    with torch.no_grad():
        torch.testing.assert_close(out.aff_pred, model(x).aff_pred)


@pytest.mark.parametrize("pooling", ["gmp", "gap"])
def test_class_logits_pool_c4_then_classify(tiny_model, pooling):
    """cls[b, k] = Σ_c W[k, c]·pool_hw(c4[b, c]); gmp = max (the paper's), gap = mean."""
    model = tiny_model(num_classes=5, pooling=pooling).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        c4 = model.encoder(x).features[3]
        pooled = c4.amax(dim=(2, 3)) if pooling == "gmp" else c4.mean(dim=(2, 3))
        expected = pooled @ model.classifier.weight[:, :, 0, 0].T
        torch.testing.assert_close(model(x).cls_logits, expected, rtol=1e-5, atol=1e-5)


def test_param_groups_partition_and_norm_group(golden_model):
    """Group 1 = exactly the encoder parameters with "norm" in the name; the 4 groups partition all."""
    model = golden_model
    groups = model.param_groups()
    assert len(groups) == 4
    ids = [[id(p) for p in g] for g in groups]
    all_ids = [id(p) for p in model.parameters()]
    assert sorted(sum(ids, [])) == sorted(all_ids)  # every parameter exactly once
    encoder = dict(model.encoder.named_parameters())
    assert set(ids[1]) == {id(p) for n, p in encoder.items() if "norm" in n}
    assert set(ids[0]) == {id(p) for n, p in encoder.items() if "norm" not in n}
    assert set(ids[2]) == {id(model.classifier.weight), id(model.attn_proj.weight), id(model.attn_proj.bias)}
    assert set(ids[3]) == {id(p) for p in model.decoder.parameters()}
    names = {n for n in encoder if "norm" in n}
    assert {
        "patch_embed1.norm.weight",
        "block1.0.norm1.bias",
        "block1.0.attn.norm.weight",
        "norm4.bias",
    } <= names


def test_norm_group_stays_frozen_under_the_optimiser(tiny_model):
    """With build_optimizer/build_scheduler, group 1's lr is 0 and its parameters never move."""
    model = tiny_model().train()
    opt = build_optimizer(model.param_groups(), lr=1e-3)
    sched = build_scheduler(opt, warmup_iter=2, max_iter=10)
    frozen = [p.detach().clone() for p in opt.param_groups[1]["params"]]
    trained = [p.detach().clone() for p in opt.param_groups[0]["params"]]
    torch.manual_seed(1)
    for _ in range(4):
        out = model(torch.randn(2, 3, 32, 32))
        loss = out.cls_logits.square().mean() + out.seg_logits.square().mean() + out.aff_pred.mean()
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is not None for p in opt.param_groups[1]["params"])
        assert sum(float(p.grad.abs().sum()) for p in opt.param_groups[1]["params"]) > 0
        opt.step()
        sched.step()
        assert opt.param_groups[1]["lr"] == 0.0 and opt.param_groups[0]["lr"] > 0
    for before, p in zip(frozen, opt.param_groups[1]["params"]):
        assert torch.equal(before, p)
    assert any(not torch.equal(before, p) for before, p in zip(trained, opt.param_groups[0]["params"]))
