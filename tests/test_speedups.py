"""The step's speed-ups compute the same numbers as the straightforward forms they replace."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from common import profiling
from model import par, refine
from model.cam import multi_scale_cam
from utils.evaluation.infer import default_crf_workers
from utils.runtime.dist import configure_runtime


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
    from methods.afa import AFA
    from methods.base import StepResult
    from methods.optim import build_optimizer, build_scheduler
    from utils.train import step as ts

    model = tiny_model(num_classes=5)
    opt = build_optimizer(model.param_groups(), 1e-3)
    sched = build_scheduler(opt, 1, 10)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    class NaNMethod(AFA):
        def training_losses(self, model, batch, n_iter):
            total = sum(p.sum() for p in model.parameters()) * float("nan")
            return StepResult({"cls": total.detach()}, {"cls": 1.0}, total)

    batch = {"image": torch.zeros(1, 3, 32, 32), "cls_label": torch.zeros(1, 4), "img_box": torch.zeros(1, 4)}
    with pytest.raises(FloatingPointError, match="non-finite loss at iteration 7"):
        ts.train_step(NaNMethod.from_settings(), model, opt, sched, batch, 7)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_head_mixing_per_block_equals_the_projection_of_the_concatenation():
    """affinity_from_attention's per-block bmm = sigmoid(conv1x1(cat(S) + cat(S)ᵀ)), values and grads."""
    from model.afa import affinity_from_attention

    torch.manual_seed(0)
    proj = torch.nn.Conv2d(6, 1, 1)
    logits = [torch.randn(2, 3, 10, 10, requires_grad=True) for _ in range(3)]
    got = affinity_from_attention(logits, proj, num_blocks=2)
    s = torch.cat(logits[-2:], dim=1)
    expected = torch.sigmoid(proj(s + s.transpose(-2, -1)))[:, 0]
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    weights = torch.randn_like(got)
    grads = torch.autograd.grad((got * weights).sum(), [*logits[-2:], proj.weight, proj.bias])
    grads_ref = torch.autograd.grad((expected * weights).sum(), [*logits[-2:], proj.weight, proj.bias])
    for g, r in zip(grads, grads_ref):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-6)
    assert logits[0].grad is None  # the first block is not one of the last two


def test_channel_argmax_is_argmax_first_index_on_ties():
    from model.cam import channel_argmax

    torch.manual_seed(0)
    ties = torch.randint(0, 3, (2, 7, 9, 11)).float()  # many equal maxima per pixel
    for x in (ties, ties.contiguous(memory_format=torch.channels_last), torch.randn(2, 21, 8, 8)):
        assert torch.equal(channel_argmax(x), x.argmax(dim=1))
    assert channel_argmax(torch.tensor([[[[1.0]], [[3.0]], [[3.0]]]])).item() == 1


def test_neighbour_std_is_the_unbiased_std_over_the_neighbours():
    torch.manual_seed(0)
    neigh = par.gather_neighbours(torch.rand(2, 3, 12, 14), par.DEFAULT_DILATIONS)
    torch.testing.assert_close(par.neighbour_std(neigh), neigh.std(dim=2, keepdim=True), rtol=1e-5, atol=1e-7)
    constant = torch.full((1, 3, 48, 2, 2), 0.25)
    assert torch.equal(par.neighbour_std(constant), torch.zeros(1, 3, 1, 2, 2))


FAULTS_OF_REUSE = """
import resource, sys, torch
if sys.argv[1] == "retain":
    from utils.runtime.dist import retain_freed_memory
    assert retain_freed_memory()
torch.set_num_threads(1)
faults = []
for _ in range(16):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.empty(12_000_000)  # 48 MB: above glibc's largest automatic mmap threshold (32 MiB)
    x.fill_(1.0)
    del x
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(min(faults[-3:]))
"""


@pytest.mark.skipif(
    __import__("platform").libc_ver()[0] != "glibc", reason="mallopt settings are glibc's"
)
def test_retained_memory_is_reused_without_page_faults(monkeypatch):
    """Without the settings each 48 MB tensor faults in its ~11,700 pages again; with them, none."""
    import subprocess
    import sys

    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)

    def faults(mode: str) -> int:
        root = Path(__file__).resolve().parents[1]
        out = subprocess.run(
            [sys.executable, "-c", FAULTS_OF_REUSE, mode], capture_output=True, text=True, cwd=root
        )
        assert out.returncode == 0, out.stderr
        return int(out.stdout.split()[-1])

    assert faults("default") > 10_000
    assert faults("retain") < 100


def test_user_malloc_settings_win(monkeypatch):
    from utils.runtime.dist import retain_freed_memory

    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert retain_freed_memory() is False
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=65536")
    assert retain_freed_memory() is False
