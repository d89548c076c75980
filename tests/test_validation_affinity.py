"""The validation affinity path (utils.evaluation.validate) against a per-image loop written from the spec.

Spec §7.1 step 4 and §5.4: on the whole, non-square image, the single-scale forward's affinity
propagates the multi-scale CAM resized to the (ceil(H/s), ceil(W/s)) token grid, with a radius mask
built by a Python loop, background 0.35, squared affinities normalised by column sum + 0.1, one step,
softmax over the valid channels only and zeros in the others; the result is upsampled and argmaxed.
The review of issue 13 found this path identical to a port of the authors' ``validate()``; this test
keeps it so, for the paper's stride 16 and the demo's stride 8 (where the grid exceeds the window).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from methods.afa_eval import EvalSettings, predict_for_validation
from model.cam import multi_scale_cam

pytestmark = pytest.mark.usefixtures("one_thread")


def loop_radius_mask(h: int, w: int, radius: int) -> torch.Tensor:
    """Spec §5.1 literally: mask[i, j] = 1 iff |row_i − row_j| ≤ radius and |col_i − col_j| ≤ radius."""
    n = h * w
    mask = torch.zeros(n, n)
    for i in range(n):
        for j in range(n):
            if abs(i // w - j // w) <= radius and abs(i % w - j % w) <= radius:
                mask[i, j] = 1.0
    return mask


def loop_propagate(cams, aff, mask, cls_label, bkg_score):
    """Spec §5.4 per image: (1, K, h, w) CAMs, (1, N, N) affinity -> (1, K + 1, h, w)."""
    _, k, h, w = cams.shape
    stacked = torch.cat([torch.full((1, 1, h, w), bkg_score), cams], dim=1)
    aff = aff.clone()
    aff[0][mask == 0] = 0.0
    trans = aff[0] ** 2
    trans = trans / (trans.sum(dim=0, keepdim=True) + 0.1)
    valid = [0] + [c + 1 for c in range(k) if cls_label[0, c] > 0]
    out = torch.zeros(1, k + 1, h * w)
    v = torch.softmax(stacked[0, valid].reshape(len(valid), -1), dim=0)
    out[0, valid] = v @ trans
    return out.view(1, k + 1, h, w)


@pytest.mark.parametrize(("stride", "size"), [((4, 2, 2, 1), (72, 136)), ((4, 2, 1, 1), (104, 216))])
def test_validation_affinity_matches_the_spec_loop(tiny_model, stride, size):
    model = tiny_model(num_classes=5, seed=3, strides=stride).eval()
    torch.manual_seed(4)
    image = torch.randn(1, 3, *size)
    cls_label = torch.tensor([[1.0, 0.0, 1.0, 1.0]])
    s = EvalSettings(num_classes=5, radius=8)
    ours = predict_for_validation(model, image, cls_label, s)

    total_stride = math.prod(stride)
    grid = (math.ceil(size[0] / total_stride), math.ceil(size[1] / total_stride))  # get_down_size
    with torch.no_grad():
        attn_pred = model(image).aff_pred  # single scale, no flip
        cam = multi_scale_cam(model, image, (1.0, 0.5, 1.5)).cam
    assert attn_pred.shape[-1] == grid[0] * grid[1]
    cams = F.interpolate(cam, size=grid, mode="bilinear", align_corners=False)
    rw = loop_propagate(cams, attn_pred, loop_radius_mask(*grid, 8), cls_label, 0.35)
    label = F.interpolate(rw, size=size, mode="bilinear", align_corners=False).argmax(dim=1)[0]

    assert ours.aff.shape == (1, *size)
    assert torch.equal(ours.aff[0], label)
    assert set(label.unique().tolist()) <= {0, 1, 3, 4} and len(label.unique()) >= 2  # not constant
    if stride == (4, 2, 1, 1):
        assert min(grid) > 2 * 8 + 1 or max(grid) > 2 * 8 + 1  # the window is smaller than the grid
