"""The step's speed-ups compute the same numbers as the straightforward forms they replace."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from model import par, refine
from model.cam import multi_scale_cam
from utils import profiling
from utils.dist import configure_runtime
from utils.infer import default_crf_workers


def concat_then_fuse(decoder, features):
    """The SegFormer decoder as written (resize, concatenate [c4..c1], 1×1 conv): the fold's reference."""
    size = features[0].shape[-2:]
    maps = []
    for i in reversed(range(len(features))):
        b, _, h, w = features[i].shape
        x = getattr(decoder, f"linear_c{i + 1}")(features[i]).transpose(1, 2).reshape(b, -1, h, w)
        maps.append(F.interpolate(x, size=size, mode="bilinear", align_corners=False) if i > 0 else x)
    return decoder.linear_fuse.conv(torch.cat(maps, dim=1))


def test_folded_fuse_convolution_equals_concat_then_conv(tiny_model):
    model = tiny_model(num_classes=5).eval()
    with torch.no_grad():
        feats = model.encoder(torch.randn(2, 3, 48, 80), logit_blocks=()).features
        ours = model.decoder.fused_projection(feats)
        ref = concat_then_fuse(model.decoder, feats)
    assert ours.shape == ref.shape == (2, 16, 12, 20)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_folded_decoder_gradients_match(tiny_model):
    """The fold is differentiated through: the projection and fuse weights get the same gradients."""
    model = tiny_model(num_classes=5).eval()
    feats = [f.detach() for f in model.encoder(torch.randn(2, 3, 32, 32), logit_blocks=()).features]
    grads = []
    for fn in (model.decoder.fused_projection, lambda f: concat_then_fuse(model.decoder, f)):
        model.zero_grad()
        (fn(feats) ** 2).sum().backward()
        grads.append(
            [
                p.grad.clone()
                for p in (model.decoder.linear_c1.proj.weight, model.decoder.linear_fuse.conv.weight)
            ]
        )
    for ours, ref in zip(*grads):
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)


def test_cam_pass_statistics_and_random_stream_match_the_whole_decoder(tiny_model):
    """In train mode the CAM pass's decoder leaves the BatchNorm statistics and the RNG as ``forward``."""
    model = tiny_model(num_classes=5).train()
    feats = [f.detach() for f in model.encoder(torch.randn(2, 3, 48, 48), logit_blocks=()).features]
    bn = model.decoder.linear_fuse.bn
    start = {k: v.clone() for k, v in bn.state_dict().items()}
    torch.manual_seed(3)
    with torch.no_grad():
        model.decoder(feats)
    ref_state, ref_rng = {k: v.clone() for k, v in bn.state_dict().items()}, torch.rand(4)
    bn.load_state_dict(start)
    torch.manual_seed(3)
    with torch.no_grad():
        model.decoder.update_statistics(feats)
    assert not torch.equal(ref_state["running_mean"], start["running_mean"])
    for key, value in bn.state_dict().items():
        torch.testing.assert_close(value, ref_state[key], rtol=1e-5, atol=1e-6)
    assert torch.equal(torch.rand(4), ref_rng)
    model.eval()
    model.decoder.update_statistics(feats)  # eval mode: nothing to update
    for key, value in bn.state_dict().items():
        torch.testing.assert_close(value, ref_state[key], rtol=1e-5, atol=1e-6)


def test_multi_scale_cam_asks_for_the_affinity_at_the_largest_scale_only(tiny_model):
    model = tiny_model(num_classes=5).eval()
    asked = []
    original = model.forward_cam

    def recording(x, run_decoder=True, with_affinity=True, logit_batch=None):
        asked.append((x.shape[-1], with_affinity, logit_batch))
        return original(x, run_decoder, with_affinity, logit_batch=logit_batch)

    model.forward_cam = recording
    msc = multi_scale_cam(model, torch.randn(1, 3, 64, 64), (1.0, 0.5, 1.5))
    assert asked == [(64, False, 1), (32, False, 1), (96, True, 1)]  # never the flipped half's logits
    assert msc.aff_pred.shape == (1, 36, 36) and msc.aff_grid == (6, 6)


def test_in_place_par_matches_the_out_of_place_sum():
    torch.manual_seed(0)
    dil = (1, 2, 4)
    masks, aff = torch.rand(2, 3, 20, 24), torch.rand(2, 24, 20, 24)
    out = masks
    pad = max(dil)
    for _ in range(3):
        padded = F.pad(out, (pad,) * 4, mode="replicate")
        out = sum(
            aff[:, k : k + 1] * padded[..., pad + dy : pad + dy + 20, pad + dx : pad + dx + 24]
            for k, (dy, dx) in enumerate(par.neighbour_offsets(dil))
        )
    torch.testing.assert_close(par.par_propagate(masks, aff, dil, 3), out, rtol=1e-5, atol=1e-6)


def test_position_kernel_is_cached_per_device():
    a = par.position_kernel((1, 2), 0.3)
    assert a is par.position_kernel((1, 2), 0.3, "cpu") and a.shape == (16,)
    torch.testing.assert_close(a.sum(), torch.tensor(1.0))


def test_shared_image_kernel_gives_the_same_refinements():
    """Both refinements with the precomputed whole-crop kernel equal those computing their own."""
    torch.manual_seed(1)
    images01 = torch.rand(3, 3, 32, 32)
    cams = torch.rand(3, 4, 32, 32)
    cls_label = torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 0], [1, 1, 1, 0]])
    box = torch.tensor([[0, 32, 0, 32], [0, 24, 4, 32], [0, 32, 0, 32]])
    kernel = refine.downscaled_image_affinity(images01, par.DEFAULT_DILATIONS)
    assert kernel.shape == (3, 48, 16, 16)
    plain = refine.refine_cams_with_bkg(images01, cams, cls_label, box)
    shared = refine.refine_cams_with_bkg(images01, cams, cls_label, box, image_affinity=kernel)
    assert torch.equal(plain, shared)
    labels = refine.foreground_with_background(cls_label)
    cams5 = torch.rand(3, 5, 32, 32)
    plain = refine.refine_cams_with_cls_label(images01, cams5, labels, box)
    shared = refine.refine_cams_with_cls_label(images01, cams5, labels, box, image_affinity=kernel)
    torch.testing.assert_close(plain, shared, rtol=0, atol=0)


def test_regions_are_a_shared_no_op_unless_recording(tiny_model):
    assert profiling.region("cam") is profiling.region("par")  # the one null context, nothing timed
    with profiling.record_regions("cpu") as rec:
        with profiling.region("outer"):
            with profiling.region("inner"):
                sum(range(10000))
    assert set(rec.seconds) == {"outer", "inner"} and min(rec.seconds.values()) >= 0.0
    assert profiling._recorder is None


def test_crf_pool_follows_the_affinity_mask_and_the_node_processes(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(10)))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert default_crf_workers() == 8
    assert default_crf_workers(world_size=2) == 4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert default_crf_workers(world_size=16) == 2


def test_tf32_is_off_unless_asked():
    try:
        configure_runtime(tf32=True)
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        configure_runtime()
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32


def test_non_finite_loss_raises_before_any_update(tiny_model, monkeypatch):
    """The finiteness check runs after the backward is queued, still before the optimiser step."""
    from utils import train_step as ts
    from utils.optim import build_optimizer, build_scheduler

    model = tiny_model(num_classes=5)
    opt = build_optimizer(model.param_groups(), 1e-3)
    sched = build_scheduler(opt, 1, 10)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def nan_losses(model, x, cls_label, img_box, n_iter, settings):
        total = sum(p.sum() for p in model.parameters()) * float("nan")
        return ts.StepResult({"cls": total.detach()}, {"cls": 1.0}, total, None, None)

    monkeypatch.setattr(ts, "forward_losses", nan_losses)
    batch = {"image": torch.zeros(1, 3, 32, 32), "cls_label": torch.zeros(1, 4), "img_box": torch.zeros(1, 4)}
    with pytest.raises(FloatingPointError, match="non-finite loss at iteration 7"):
        ts.train_step(model, opt, sched, batch, 7, ts.StepSettings())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
