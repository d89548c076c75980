"""CAMs and their labels (spec §3) and the PAR refinements of CAMs into pseudo labels (spec §4.4-4.5)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from model.afa import CAMOutput
from model.cam import (
    box_mask,
    cam_to_label,
    cam_to_pseudo_label,
    denormalize,
    ignore_outside_box,
    multi_scale_cam,
    normalize_cam,
)
from model.par import pixel_adaptive_refine
from model.refine import (
    combine_high_low,
    foreground_with_background,
    gather_channels,
    masked_channel_softmax,
    refine_cams_with_bkg,
    refine_cams_with_cls_label,
    valid_channels,
)

# ----------------------------------------------------------------------------- thresholds


def test_cam_to_pseudo_label_thresholds():
    """Class 1 present, class 2 absent (its 0.99 is masked): fg if > 0.55, 255 in (0.35, 0.55], bg ≤ 0.35.

    The box [0, 2, 0, 3] leaves column 3 outside: 255 there whatever the score.
    """
    scores = torch.tensor([[0.90, 0.56, 0.55, 0.9], [0.50, 0.36, 0.35, 0.1]])
    cam = torch.stack([scores, torch.full_like(scores, 0.99)])[None]  # (1, 2, 2, 4)
    valid, label = cam_to_pseudo_label(cam, torch.tensor([[1.0, 0.0]]), torch.tensor([[0, 2, 0, 3]]))
    assert torch.equal(label[0], torch.tensor([[1, 1, 255, 255], [255, 255, 0, 255]]))
    assert torch.equal(valid[0, 0], scores) and bool((valid[0, 1] == 0).all())


def test_cam_to_pseudo_label_argmax_of_present_classes():
    """Two present classes: the larger score wins (label = index + 1); ignore_mid=False uses 0.45."""
    cam = torch.tensor([[[[0.7, 0.2, 0.46]], [[0.6, 0.8, 0.3]]]])  # (1, 2, 1, 3)
    box = torch.tensor([[0, 1, 0, 3]])
    _, label = cam_to_pseudo_label(cam, torch.tensor([[1.0, 1.0]]), box)
    assert label[0, 0].tolist() == [1, 2, 255]
    _, label = cam_to_pseudo_label(cam, torch.tensor([[1.0, 1.0]]), box, ignore_mid=False)
    assert label[0, 0].tolist() == [1, 2, 1]


def test_cam_to_label_background_threshold():
    """Validation path: class if its score > 0.45, else background; no box, no ignore."""
    cam = torch.tensor([[[[0.46, 0.45, 0.9, 0.2]], [[0.1, 0.3, 0.95, 0.44]]]])
    assert cam_to_label(cam, torch.tensor([[1.0, 1.0]]))[0, 0].tolist() == [1, 0, 2, 0]
    assert cam_to_label(cam, torch.tensor([[1.0, 0.0]]))[0, 0].tolist() == [1, 0, 1, 0]


def test_normalize_cam_min_zero_max_below_one():
    """(cam − min) / (max − min + 1e-5) per image and class: min 0, max = range / (range + 1e-5) < 1."""
    torch.manual_seed(0)
    cam = torch.rand(2, 3, 5, 6) * torch.tensor([1.0, 5.0, 1e-3]).view(1, 3, 1, 1)
    out = normalize_cam(cam)
    flat, raw = out.flatten(2), cam.flatten(2)
    rng = raw.amax(-1) - raw.amin(-1)
    torch.testing.assert_close(flat.amin(-1), torch.zeros(2, 3))
    torch.testing.assert_close(flat.amax(-1), rng / (rng + 1e-5))
    assert bool((flat.amax(-1) < 1).all())


def test_box_mask_and_ignore_outside_box():
    """Rows [h0, h1) × columns [w0, w1), half-open, in crop coordinates."""
    box = torch.tensor([[1, 3, 2, 5], [0, 4, 0, 6]])
    inside = box_mask(box, 4, 6)
    expected = torch.zeros(4, 6, dtype=torch.bool)
    expected[1:3, 2:5] = True
    assert torch.equal(inside[0], expected)
    assert bool(inside[1].all())
    label = torch.arange(48).view(2, 4, 6)
    out = ignore_outside_box(label, box)
    assert torch.equal(out[0][expected], label[0][expected]) and bool((out[0][~expected] == 255).all())
    assert torch.equal(out[1], label[1])


def test_denormalize_truncates_to_uint8():
    """x·std + mean, truncated (not rounded) to uint8, divided by 255: 100.9 -> 100, 255.5 -> 255."""
    mean, std = torch.tensor([123.675, 116.28, 103.53]), torch.tensor([58.395, 57.12, 57.375])
    raw = torch.tensor([100.9, 7.2, 255.5]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    x = (raw - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    out = denormalize(x)
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor([100.0, 7.0, 255.0]) / 255)


# ----------------------------------------------------------------------------- multi-scale CAM


class RecordingModel(torch.nn.Module):
    """forward_cam stub: cam = channel 0 of the input at 1/4 resolution; aff_pred filled with the input
    height (non-flipped half) or −height (flipped half), so the source of the affinity is visible."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int, ...]] = []
        self.flip_ok: list[bool] = []
        self.logit_batches: list[int | None] = []

    def forward_cam(
        self,
        x: torch.Tensor,
        run_decoder: bool = True,
        with_affinity: bool = True,
        logit_batch: int | None = None,
    ) -> CAMOutput:
        self.calls.append(tuple(x.shape))
        self.logit_batches.append(logit_batch)
        b = x.shape[0] // 2
        self.flip_ok.append(torch.equal(x[b:], x[:b].flip(-1)))
        cam = F.avg_pool2d(x[:, :1], 4)
        n = cam.shape[-2] * cam.shape[-1]
        aff = torch.full((2 * b, n, n), float(x.shape[-2]))
        aff[b:] *= -1
        return CAMOutput(cam, aff[:logit_batch], [])


def test_multi_scale_cam_order_and_largest_scale_affinity():
    """Scales [0.5, 1.5, 1.0] run as 1.0, 0.5, 1.5 on (int(s·H), int(s·W)); flip in the second half;
    the affinity comes from the 1.5 pass, non-flipped half only."""
    torch.manual_seed(0)
    model = RecordingModel()
    x = torch.rand(2, 3, 32, 48)
    out = multi_scale_cam(model, x, (0.5, 1.5, 1.0))
    assert model.calls == [(4, 3, 32, 48), (4, 3, 16, 24), (4, 3, 48, 72)]
    assert all(model.flip_ok)
    assert model.logit_batches == [2, 2, 2]  # attention logits of the non-flipped half only
    assert out.aff_grid == (12, 18)
    assert out.aff_pred.shape == (2, 216, 216) and bool((out.aff_pred == 48).all())
    assert out.cam.shape == (2, 1, 32, 48)


def test_multi_scale_cam_fuses_relu_sums_and_normalises():
    """cam = normalise(Σ_s relu(max(up(cam_s), flip(up(cam_s_flipped))))); with this stub both halves
    agree after flipping back, so it is Σ_s up(avg_pool4(resize_s(x))) min-max normalised."""
    torch.manual_seed(0)
    x = torch.rand(1, 3, 32, 32)
    out = multi_scale_cam(RecordingModel(), x, (1.0, 0.5))
    total = torch.zeros(1, 1, 32, 32)
    for size in (32, 16):
        xs = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        total += F.interpolate(
            F.avg_pool2d(xs[:, :1], 4), size=(32, 32), mode="bilinear", align_corners=False
        )
    expected = (total - total.amin()) / (total.amax() - total.amin() + 1e-5)
    torch.testing.assert_close(out.cam, expected, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- refinements


def test_combine_high_low_table():
    """(h, l) -> out: (c, *) -> c for c > 0; (0, 0) -> 0; (0, c) -> 255."""
    high = torch.tensor([3, 3, 2, 0, 0, 0])
    low = torch.tensor([3, 0, 5, 0, 4, 1])
    assert combine_high_low(high, low).tolist() == [3, 3, 2, 0, 255, 255]


def test_refine_cams_with_bkg_constant_cams():
    """Constant CAMs make PAR keep each channel's ranking, so the table applies image-wide:

    image 0: present class 1 at 0.9 beats both 0.55 and 0.35 -> 1; image 1: 0.45 loses to 0.55 but
    beats 0.35 -> (0, 1) -> 255; image 2: 0.1 loses to both -> 0. Outside the box always 255. Absent
    class 2 (0.99) never wins.
    """
    torch.manual_seed(0)
    images01 = torch.rand(3, 3, 16, 20)
    cams = torch.zeros(3, 2, 16, 20)
    cams[:, 0] = torch.tensor([0.9, 0.45, 0.1]).view(3, 1, 1)
    cams[:, 1] = 0.99
    cls_label = torch.tensor([[1.0, 0.0]] * 3)
    box = torch.tensor([[0, 16, 0, 20], [2, 12, 4, 18], [4, 16, 0, 10]])
    out = refine_cams_with_bkg(images01, cams, cls_label, box, num_iter=3)
    inside = box_mask(box, 16, 20)
    assert bool((out[~inside] == 255).all())
    for i, value in enumerate([1, 255, 0]):
        assert bool((out[i][inside[i]] == value).all())


def test_valid_channel_slots_match_a_per_image_loop():
    """Slot m of image b holds the m-th present channel; softmax over exactly those; padding is 0."""
    labels = torch.tensor([[1, 0, 1, 0, 0, 1], [1, 1, 1, 1, 0, 0], [1, 0, 0, 0, 0, 0]])
    torch.manual_seed(0)
    x = torch.randn(3, 6, 4, 5)
    slots = valid_channels(labels)
    assert slots.index.shape == (3, 4)
    compact = masked_channel_softmax(gather_channels(x, slots), slots.valid)
    for b in range(3):
        present = [c for c in range(6) if labels[b, c] > 0]
        n = len(present)
        assert slots.index[b, :n].tolist() == present and slots.valid[b].tolist() == [True] * n + [False] * (
            4 - n
        )
        torch.testing.assert_close(gather_channels(x, slots)[b, :n], x[b, present])
        torch.testing.assert_close(compact[b, :n], torch.softmax(x[b, present], dim=0))
        assert bool((compact[b, n:] == 0).all())


def test_refine_cams_with_cls_label_matches_the_reference_loop():
    """Spec §4.5 per image: crop to the box, halve the image (bilinear), PAR on the valid channels (no
    softmax), upsample to the box, write into zeros."""
    torch.manual_seed(0)
    images01 = torch.rand(3, 3, 32, 40)
    cams = torch.rand(3, 5, 32, 40)
    cls_label = torch.tensor([[1.0, 0, 1, 0], [0, 1, 1, 1], [0, 0, 0, 0]])
    labels = foreground_with_background(cls_label)
    box = torch.tensor([[0, 32, 0, 40], [4, 30, 6, 40], [10, 32, 0, 21]])
    out = refine_cams_with_cls_label(images01, cams, labels, box, num_iter=3)
    expected = torch.zeros_like(cams)
    for b in range(3):
        h0, h1, w0, w1 = box[b].tolist()
        keep = labels[b].nonzero().flatten()
        img = F.interpolate(
            images01[b : b + 1, :, h0:h1, w0:w1],
            size=((h1 - h0) // 2, (w1 - w0) // 2),
            mode="bilinear",
            align_corners=False,
        )
        refined = pixel_adaptive_refine(img, cams[b : b + 1, keep, h0:h1, w0:w1], num_iter=3)
        up = F.interpolate(refined, size=(h1 - h0, w1 - w0), mode="bilinear", align_corners=False)
        expected[b, keep, h0:h1, w0:w1] = up[0]
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    assert bool((out[0, [2, 4]] == 0).all()) and bool((out[2, 1:] == 0).all())
    assert bool((out[1, :, :4] == 0).all()) and bool((out[1, [0, 2, 3, 4], 4:30, 6:] > 0).all())


def test_foreground_with_background_prepends_a_valid_background():
    labels = foreground_with_background(torch.tensor([[0.0, 1.0, 0.0]]))
    assert labels.tolist() == [[1.0, 0.0, 1.0, 0.0]]
