"""AuxSegNet network (spec §2, §9, Appendix A): invariants of the affinities and their fusion, the
unary (AuxSegNet+) option, parameter groups, key mapping and the builder's backbones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.errors import ConfigError
from model import auxseg_heads as heads
from model.auxseg_infer import refine_from_output
from model.auxsegnet import AuxSegNet, authors_state_to_ours, build_auxsegnet, param_groups
from model.mit import build_mit
from utils.golden.auxseg import heads_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def golden(golden_dir) -> tuple[AuxSegNet, torch.Tensor]:
    """The golden heads (discriminative weights) and their input feature (2, 64, 9, 20)."""
    path = golden_dir / "auxseg_heads.npz"
    return heads_model(path), torch.from_numpy(np.load(path)["in/feat"])


def test_affinity_invariants(golden) -> None:
    """Rows of A_seg, A_sal sum to 1; w ∈ [0, 1]; A_CT lies between A_seg and A_sal entrywise."""
    model, feat = golden
    with torch.no_grad():
        out = model(feat)
    n = feat.shape[-2] * feat.shape[-1]
    assert out.seg_aff.shape == out.cross_aff.shape == (2, n, n)
    for aff in (out.seg_aff, out.sal_aff):
        assert torch.allclose(aff.sum(-1), torch.ones(2, n), atol=1e-5)
    assert out.cross_w_seg.min() >= 0 and out.cross_w_seg.max() <= 1
    lo, hi = torch.minimum(out.seg_aff, out.sal_aff), torch.maximum(out.seg_aff, out.sal_aff)
    assert (out.cross_aff >= lo - 1e-7).all() and (out.cross_aff <= hi + 1e-7).all()
    rows = out.cross_aff.sum(-1)
    assert rows.min() < 0.9 and rows.max() > 1.1  # A_CT's rows do not sum to 1 (spec §2.5)


def test_refinement_with_identity_and_constant_maps(golden) -> None:
    model, feat = golden
    pred = torch.randn(2, 21, 9, 20)
    eye = torch.eye(180).expand(2, 180, 180)
    assert torch.equal(model.refine(pred, eye), pred)
    with torch.no_grad():
        cross = model(feat).cross_aff
    const = torch.full((2, 1, 9, 20), 0.7)
    expected = 0.7 * cross.sum(-1).reshape(2, 1, 9, 20)
    assert torch.allclose(heads.aggregate(cross, const), expected, atol=1e-6)


def test_forward_shapes_on_resnet38_backbone() -> None:
    torch.manual_seed(0)
    model = build_auxsegnet("resnet38", num_classes=21, width_divisor=32, mid=8).eval()
    out = model(torch.randn(2, 3, 33, 41))
    assert out.x_cls.shape == (2, 20) and out.cam.shape == (2, 20, 5, 6)
    assert out.init_seg.shape == out.refined_seg.shape == (2, 21, 5, 6)
    assert out.init_sal.shape == out.refined_sal.shape == (2, 1, 5, 6)
    assert out.cross_aff.shape == (2, 30, 30) and out.cross_unary is None
    assert model.train() is model and not model.backbone.bn7.training  # BN stays frozen
    a, b = model(torch.ones(1, 3, 16, 16)).x_cls, model(torch.ones(1, 3, 16, 16)).x_cls
    assert not torch.equal(a, b)  # dropout7 and the backbone's dropouts are active in train mode


def test_mit_backbone_gives_one_stride_8_map() -> None:
    torch.manual_seed(0)
    model = build_auxsegnet("mit_tiny", num_classes=5, mid=8).eval()
    assert model.fc8.in_channels == 64
    out = model(torch.randn(1, 3, 64, 48))
    assert out.refined_seg.shape == (1, 5, 8, 6) and out.x_cls.shape == (1, 4)
    with pytest.raises(ConfigError, match="model.backbone"):
        build_auxsegnet("resnet101")


def test_unary_at_init_equals_iccv_exactly(golden, golden_dir) -> None:
    """Spec §9: with W_u = 0 and λ = 0 the plus_unary network reproduces the ICCV forward."""
    model, feat = golden
    plus = heads_model(golden_dir / "auxseg_heads.npz", unary=True)
    with torch.no_grad():
        ref, out = model(feat), plus(feat)
    for name in ("x_cls", "cam", "init_sal", "refined_sal", "init_seg", "refined_seg", "cross_aff"):
        assert torch.equal(getattr(out, name), getattr(ref, name)), name
    u = out.cross_unary
    assert u.shape == (2, 180) and (u >= 0).all()
    assert torch.allclose(u.sum(-1), torch.ones(2), atol=1e-6)


def test_unary_terms_are_query_independent_and_learn(golden_dir) -> None:
    plus = heads_model(golden_dir / "auxseg_heads.npz", unary=True)
    feat = torch.from_numpy(np.load(golden_dir / "auxseg_heads.npz")["in/feat"])
    out = plus(feat)
    loss = out.refined_seg.square().mean() + out.refined_sal.square().mean()
    loss.backward()
    assert plus.unary_lambda.grad.abs() > 0 and plus.seg_Wu.weight.grad.abs().sum() > 0
    with torch.no_grad():
        torch.nn.init.normal_(plus.seg_Wu.weight)
        t = torch.relu(plus.task_trunk("seg", feat))
        term = plus.unary_term("seg", t, torch.full((2, 180), 1 / 180))
        assert term.shape == (2, 32, 1, 1)  # one vector added at every position
        plus.unary_lambda.fill_(0.5)
        pred = torch.randn(2, 21, 9, 20)
        extra = plus.refine(pred, out.cross_aff, out.cross_unary) - plus.refine(pred, out.cross_aff)
        assert torch.allclose(extra, extra[..., :1, :1].expand_as(extra), atol=1e-6)
        expected = 0.5 * (pred.flatten(2) * out.cross_unary[:, None]).sum(-1)
        assert torch.allclose(extra[..., 0, 0], expected, atol=1e-5)


def test_param_groups_follow_the_authors_split() -> None:
    """10×: fc8, seg_*, sal_*; 1×: backbone and the cross-task modules (spec §2.8, §11 item 3, §9.7)."""
    model = build_auxsegnet("resnet38", width_divisor=32, mid=8, unary=True)
    one_x, ten_x = param_groups(model)
    names = {id(p): n for n, p in model.named_parameters()}
    assert len(one_x) + len(ten_x) == len(names) and not {id(p) for p in one_x} & {id(p) for p in ten_x}
    ten = {names[id(p)] for p in ten_x}
    one = {names[id(p)] for p in one_x}
    assert {"fc8.weight", "seg_att.phi.bias", "sal_W.weight", "seg_Wu.weight", "sal_unary.bias"} <= ten
    assert {"cross_att.0.weight", "cross_att.2.bias", "cross_unary.0.weight", "unary_lambda"} <= one
    assert all(n.startswith(("fc8", "seg_", "sal_")) for n in ten)
    assert "backbone.conv1a.weight" in one


def test_authors_keys_map_and_drop_dead_nlblock_parts() -> None:
    state = {
        "module.b2.conv_branch1.weight": torch.zeros(1),
        "seg_att.theta.weight": torch.zeros(1),
        "seg_att.g.weight": torch.zeros(1),
        "sal_att.W_z.1.running_mean": torch.zeros(1),
        "seg_g.weight": torch.zeros(1),
        "cross_att.0.weight": torch.zeros(1),
    }
    ours = authors_state_to_ours(state, with_backbone=True)
    assert set(ours) == {
        "backbone.b2.conv_branch1.weight",
        "seg_att.theta.weight",
        "seg_g.weight",
        "cross_att.0.weight",
    }


def test_plus_pairwise_options() -> None:
    """Spec §9.6: whitening makes A invariant to a shift of θ or φ; the temperature divides by τ·√M."""
    theta, phi = torch.randn(2, 4, 3, 5), torch.randn(2, 4, 3, 5)
    plain = heads.pairwise_affinity(theta, phi)
    shift = torch.randn(2, 4, 1, 1)
    assert not torch.allclose(heads.pairwise_affinity(theta + shift, phi), plain, atol=1e-4)
    white = heads.pairwise_affinity(theta, phi, whiten=True)
    assert torch.allclose(heads.pairwise_affinity(theta + shift, phi - shift, whiten=True), white, atol=1e-6)
    tempered = heads.pairwise_affinity(theta, phi, temperature=0.05)
    logits = theta.flatten(2).transpose(1, 2) @ phi.flatten(2) / (0.05 * 2.0)
    assert torch.allclose(tempered, torch.softmax(logits, -1), atol=1e-6)
    model = build_auxsegnet("mit_tiny", num_classes=3, mid=4, whiten_pairwise=True, pairwise_temperature=0.5)
    assert model.seg_att.whiten and model.sal_att.temperature == 0.5


def test_unary_in_cam_adds_the_unary_context() -> None:
    """A constant CAM c propagates to c·(row sums of A_CT + 1) with ``unary_in_cam`` (u sums to 1)."""
    torch.manual_seed(0)
    model = AuxSegNet(num_classes=3, feat_channels=6, mid=4, unary=True).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 6, 3, 4))
    out = out._replace(cam=torch.full((1, 2, 3, 4), 2.0))
    plain = refine_from_output(out, (3, 4))
    plus = refine_from_output(out, (3, 4), unary_in_cam=True)
    rows = out.cross_aff.sum(-1).reshape(1, 1, 3, 4)
    assert torch.allclose(plain.refined_cam, plain.cam_norm * rows, atol=1e-6)
    assert torch.allclose(plus.refined_cam, plain.cam_norm * (rows + 1), atol=1e-6)
    with pytest.raises(ValueError, match="unary=True"):
        refine_from_output(out._replace(cross_unary=None), (3, 4), unary_in_cam=True)


def test_mit_backbone_loads_segformer_weights_unchanged(tmp_path) -> None:
    torch.manual_seed(1)
    state = build_mit("mit_tiny").state_dict()
    torch.save(state | {"head.weight": torch.zeros(3, 64), "head.bias": torch.zeros(3)}, tmp_path / "m.pth")
    model = build_auxsegnet("mit_tiny", num_classes=3, mid=4, pretrained=tmp_path / "m.pth")
    assert all(torch.equal(v, model.backbone.encoder.state_dict()[k]) for k, v in state.items())
    assert model.backbone.encoder.strides == (4, 2, 1, 1)
