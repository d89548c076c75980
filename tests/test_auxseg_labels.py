"""AuxSegNet pseudo labels, losses and inference (spec §3, §4, §6, §8, Appendix A): hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from model import auxseg_labels as labels
from model.auxseg_infer import refine_from_output, segment_image
from model.auxseg_losses import loss_terms, loss_weights, total_loss
from model.auxsegnet import AuxSegNet

pytestmark = pytest.mark.usefixtures("one_thread")


def _cam(values: list[float]) -> torch.Tensor:
    """(1, K, 1, len) with K = len(values[0]) classes: one pixel per column."""
    return torch.tensor(values, dtype=torch.float32).T[None, :, None, :]


def test_fusion_rule_table() -> None:
    """O_cam ∧ O_sal → class; neither → 0; exactly one → 255; strict thresholds; ties → lower class;
    an absent class never appears even with the highest score."""
    cam = _cam([[0.9, 0.1, 0.0], [0.9, 0.1, 0.0], [0.1, 0.1, 0.0], [0.1, 0.1, 0.0], [0.2, 0.0, 0.0],
                [0.5, 0.5, 0.0], [0.3, 0.1, 0.99]])  # fmt: skip
    sal = torch.tensor([[[0.5, 0.0, 0.5, 0.06, 0.5, 0.5, 0.5]]])  # (1, 1, 7)
    label = labels.segmentation_label(cam, sal, torch.tensor([[1.0, 1.0, 0.0]]))
    assert label[0, 0].tolist() == [1, 255, 255, 0, 255, 1, 1]


def test_fusion_rule_with_constant_saliency() -> None:
    """S ≡ 1 leaves no background, S ≡ 0 no foreground (spec §10.3)."""
    cam = torch.rand(2, 4, 5, 6)
    y = torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 0]])
    ones = labels.segmentation_label(cam, torch.ones(2, 5, 6), y)
    zeros = labels.segmentation_label(cam, torch.zeros(2, 5, 6), y)
    assert set(ones.unique().tolist()) <= {1, 3, 2, 255} and (ones != 0).all()
    assert set(zeros.unique().tolist()) <= {0, 255}
    assert not ((ones[0] == 2) | (ones[0] == 4)).any() and not (ones[1] == 1).any()


def test_cam_normalisation_and_propagation() -> None:
    cam = torch.tensor([[[[2.0, -1.0], [1.0, 0.5]]]])  # (1, 1, 2, 2)
    norm = labels.normalise_cam(cam)
    expected = torch.tensor([[[[2.0, 0.0], [1.0, 0.5]]]]) / (2.0 + 1e-5)
    assert torch.allclose(norm, expected)
    aff = torch.rand(1, 4, 4)
    const = torch.full((1, 3, 2, 2), 0.4)
    assert torch.allclose(
        labels.propagate_cam(const, aff), 0.4 * aff.sum(-1).reshape(1, 1, 2, 2).expand(1, 3, 2, 2)
    )


def test_saliency_sigmoid_before_upsampling() -> None:
    logit = torch.tensor([[[[-4.0, 4.0]]]])
    up = labels.saliency_prob_up(logit, (1, 4))
    expected = F.interpolate(torch.sigmoid(logit), size=(1, 4), mode="bilinear", align_corners=False)
    assert torch.allclose(up, expected)
    assert not torch.allclose(up, torch.sigmoid(F.interpolate(logit, size=(1, 4), mode="bilinear")))


def test_saliency_fusion_unary_and_crf() -> None:
    fused = labels.fuse_saliency(np.array([[0.2, 1.0]], np.float32), np.array([[51, 0]], np.uint8))
    assert fused.dtype == np.float64 and np.allclose(fused, [[0.2, 0.5]])
    unary = labels.saliency_unary(np.array([[0.5, 0.9]]))
    sig = 1 / (1 + math.exp(-0.9))
    assert unary.shape == (2, 2) and math.isclose(
        unary[1, 1], -math.log(0.9 + 1e-8) / (1.05 * sig), rel_tol=1e-6
    )
    assert math.isclose(unary[0, 0], unary[1, 0])
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    fg = rng.random((12, 16))
    a, b = labels.saliency_crf(image, fg), labels.saliency_crf(image, fg)
    assert a.shape == (1, 12, 16) and np.array_equal(a, b) and a.min() >= 0 and a.max() <= 1


def test_saliency_label_png_round_trip(tmp_path) -> None:
    """Written as an 'L' PNG (the fix of spec §11 item 10) and read as grey/255: uint8(255·S)/255."""
    s = np.array([[0.0, 0.3333, 0.999, 1.0]], np.float32)
    u8 = labels.saliency_label_u8(s)
    assert u8.tolist() == [[0, 84, 254, 255]]
    png = Image.fromarray(u8)
    assert png.mode == "L"
    png.save(tmp_path / "x.png")
    back = np.asarray(Image.open(tmp_path / "x.png")) / 255.0
    assert np.array_equal(back, u8 / 255.0)


def test_losses_by_hand() -> None:
    out = type("Out", (), {})()
    out.x_cls = torch.zeros(1, 2)
    out.init_sal = out.refined_sal = torch.zeros(1, 1, 2, 2)
    out.init_seg = torch.zeros(1, 3, 2, 2)
    out.refined_seg = torch.tensor([2.0, 0.0, 0.0]).reshape(1, 3, 1, 1).expand(1, 3, 2, 2)
    seg = torch.tensor([[[0, 255, 255, 255]]]).reshape(1, 2, 2)
    terms = loss_terms(
        out,
        torch.tensor([[1.0, 0.0]]),
        torch.ones(1, 4, 4),
        seg.repeat_interleave(2, 1).repeat_interleave(2, 2),
    )
    assert math.isclose(terms["cls"].item(), math.log(2), rel_tol=1e-6)
    assert math.isclose(terms["init_sal"].item(), math.log(2), rel_tol=1e-6)
    assert math.isclose(terms["init_seg"].item(), math.log(3), rel_tol=1e-6)  # only valid pixels count
    assert math.isclose(terms["refined_seg"].item(), math.log(1 + 2 * math.exp(-2)), rel_tol=1e-6)
    total = total_loss(terms, loss_weights(cls=2.0, sal=0.5, seg=1.0))
    expected = 2 * terms["cls"] + 0.5 * 2 * math.log(2) + terms["init_seg"] + terms["refined_seg"]
    assert torch.allclose(total, expected)


def test_inference_and_refinement_from_one_forward() -> None:
    torch.manual_seed(0)
    model = AuxSegNet(num_classes=4, feat_channels=6, mid=4).eval()
    feat = torch.rand(1, 6, 3, 4)
    image = np.zeros((11, 13, 3), np.uint8)
    seg = segment_image(model, feat, image)
    assert seg.prob.shape == (4, 11, 13) and np.allclose(seg.prob.sum(0), 1, atol=1e-5)
    assert np.array_equal(seg.pred, seg.prob.argmax(0)) and seg.pred.dtype == np.uint8
    calls = []
    flat = segment_image(
        model,
        feat,
        image,
        lambda img, p: calls.append(p.shape) or np.eye(4)[[2]].T[:, :, None] * np.ones_like(p),
    )
    assert calls == [(4, 11, 13)] and (flat.pred == 2).all()
    with torch.no_grad():
        ref = refine_from_output(model(feat), (11, 13))
    assert ref.refined_cam_up.shape == (1, 3, 11, 13) and ref.sal_prob_up.shape == (1, 1, 11, 13)
    assert ref.cam_norm.max() < 1
