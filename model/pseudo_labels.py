"""One iteration's pseudo labels, in the order of the reference training step (spec §5.5-5.6).

Everything here runs without gradients on detached tensors: the multi-scale CAM, its thresholded
label (logged only), the PAR-refined CAM label, the affinity-propagated and refined label, and the
affinity labels. The gradient reaches the network only through the training forward's outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
from torch import Tensor, nn

from common.profiling import timed
from model.affinity import affinity_labels, propagate_with_bkg, radius_mask
from model.cam import (
    MultiScaleCAM,
    cam_to_pseudo_label,
    channel_argmax,
    denormalize,
    ignore_outside_box,
    multi_scale_cam,
    resize,
)
from model.par import DEFAULT_DILATIONS
from model.refine import (
    combine_high_low,
    downscaled_image_affinity,
    foreground_with_background,
    refine_cams_with_bkg,
    refine_cams_with_cls_label,
)


@dataclass(frozen=True)
class PseudoLabelSettings:
    """The reference's constants for pseudo-label generation (defaults: VOC).

    Attributes:
        cam_scales: multi-scale CAM scales (1.0 always runs first).
        bkg_score: CAM background threshold when no uncertain band is used.
        high_thre, low_thre: the two background scores / thresholds.
        par_dilations, par_num_iter: PAR neighbourhood and iterations (VOC 10, COCO 15).
        radius: affinity window radius on the token grid.
        seg_switch_iter: the segmentation target is the PAR-refined CAM label while n_iter ≤ this,
            then the propagated label (VOC 6000, COCO 15000).
        aff_switch_iter: if set, affinity labels come from the propagated label once n_iter > this
            (COCO 15000); None keeps the PAR-refined CAM label throughout (VOC).
        cam_train_mode: True runs the CAM passes as the reference does: in the model's current (train)
            mode, with DropPath active and the decoder run so that BatchNorm statistics are updated.
            False runs them in eval mode without the decoder (faster; a documented deviation).
        cam_from_forward: no CAM passes at all: the CAM and the propagation affinity are the training
            forward's (one scale, no flip; the fastest option, not the reference).
        ignore_index: the ignore label.
    """

    cam_scales: tuple[float, ...] = (1.0, 0.5, 1.5)
    bkg_score: float = 0.45
    high_thre: float = 0.55
    low_thre: float = 0.35
    par_dilations: tuple[int, ...] = DEFAULT_DILATIONS
    par_num_iter: int = 10
    radius: int = 8
    seg_switch_iter: int = 6000
    aff_switch_iter: int | None = None
    cam_train_mode: bool = True
    cam_from_forward: bool = False
    ignore_index: int = 255


class AFATargets(NamedTuple):
    """Pseudo labels of one batch (crop size H×W, K foreground classes).

    Attributes:
        cam: (B, K, H, W) multi-scale CAM in [0, 1).
        cam_aff: (B, N', N') affinity of the largest CAM scale, used for propagation.
        pseudo_label: (B, H, W) thresholded CAM label (logged only; supervises nothing).
        refined_pseudo_label: (B, H, W) PAR-refined CAM label.
        refined_aff_label: (B, H, W) propagated then PAR-refined label.
        aff_cam: (B, K + 1, H, W) the CAM propagated by the affinity with the high background score
            (before PAR), kept for display.
        aff_label: (B, N, N) affinity labels for the training forward's affinity.
        seg_label: (B, H, W) the segmentation target of this iteration.
    """

    cam: Tensor
    cam_aff: Tensor
    pseudo_label: Tensor
    refined_pseudo_label: Tensor
    refined_aff_label: Tensor
    aff_cam: Tensor
    aff_label: Tensor
    seg_label: Tensor


def propagated_label(
    images01: Tensor,
    valid_cam: Tensor,
    cam_aff: Tensor,
    aff_grid: tuple[int, int],
    cls_label: Tensor,
    img_box: Tensor,
    s: PseudoLabelSettings,
    image_affinity: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """AFA's label: random walk with low and high background, PAR in the box, combined (spec §5.5).

    Args:
        images01: (B, 3, H, W); valid_cam: (B, K, H, W).
        cam_aff: (B, N', N') affinity on the (h', w') token grid ``aff_grid``.
        image_affinity: PAR's kernel of the whole half-size crops (``downscaled_image_affinity``).

    Returns:
        The label (B, H, W) int64 with ``ignore_index`` where uncertain or outside the box, and the
        propagated CAM with the high background score (B, K + 1, H, W).
    """
    h, w = images01.shape[-2:]
    cams = resize(valid_cam, aff_grid)
    mask = radius_mask(*aff_grid, s.radius, device=cams.device)
    labels = foreground_with_background(cls_label)
    rws = [
        resize(propagate_with_bkg(cams, cam_aff, mask, cls_label, bkg), (h, w))
        for bkg in (s.low_thre, s.high_thre)
    ]
    both = refine_cams_with_cls_label(
        images01,
        torch.cat(rws, dim=1),
        torch.cat([labels, labels], dim=1),
        img_box,
        s.par_dilations,
        s.par_num_iter,
        image_affinity=image_affinity,
    )
    low, high = (channel_argmax(p) for p in both.chunk(2, dim=1))
    label = combine_high_low(high, low, s.ignore_index)
    return ignore_outside_box(label, img_box, s.ignore_index), rws[1]


@timed("cam")
def cam_passes(
    model: nn.Module, x: Tensor, s: PseudoLabelSettings, amp_dtype: torch.dtype | None
) -> MultiScaleCAM:
    """The multi-scale CAM in the reference's (train) mode, or in eval mode without the decoder."""
    if s.cam_train_mode:
        return multi_scale_cam(model, x, s.cam_scales, True, amp_dtype)
    was_training = model.training
    model.eval()
    try:
        return multi_scale_cam(model, x, s.cam_scales, False, amp_dtype)
    finally:
        model.train(was_training)


@torch.no_grad()
@timed("propagation")  # what the CAM passes and PAR leave: thresholds, random walk, affinity labels
def make_targets(
    model: nn.Module,
    x: Tensor,
    cls_label: Tensor,
    img_box: Tensor,
    n_iter: int,
    s: PseudoLabelSettings,
    amp_dtype: torch.dtype | None = None,
    msc: MultiScaleCAM | None = None,
) -> AFATargets:
    """All pseudo labels of one training iteration (spec §5.6), in the model's current mode.

    Args:
        model: an ``AFANetwork`` (``forward_cam`` is used; pass the unwrapped module under DDP).
        x: (B, 3, H, W) normalised crops.
        cls_label: (B, K) image-level labels.
        img_box: (B, 4) valid regions [h0, h1, w0, w1].
        n_iter: 0-based iteration, for the label-source switches.
        amp_dtype: autocast dtype for the CAM passes only; labels are computed in float32.
        msc: the CAM and affinity to use instead of running the CAM passes (``single_pass_cam`` of
            the training forward, for ``cam_from_forward``).
    """
    h, w = x.shape[-2:]
    images01 = denormalize(x)
    msc = msc if msc is not None else cam_passes(model, x, s, amp_dtype)
    valid_cam, pseudo_label = cam_to_pseudo_label(
        msc.cam, cls_label, img_box, s.bkg_score, s.high_thre, s.low_thre, True, s.ignore_index
    )
    image_affinity = downscaled_image_affinity(images01, s.par_dilations)  # shared by both refinements
    refined_aff_label, aff_cam = propagated_label(
        images01, valid_cam, msc.aff_pred, msc.aff_grid, cls_label, img_box, s, image_affinity
    )
    refined_pseudo_label = refine_cams_with_bkg(
        images01, msc.cam, cls_label, img_box, s.high_thre, s.low_thre, s.par_dilations, s.par_num_iter,
        ignore_index=s.ignore_index, image_affinity=image_affinity,
    )  # fmt: skip
    use_aff = s.aff_switch_iter is not None and n_iter > s.aff_switch_iter
    aff_source = refined_aff_label if use_aff else refined_pseudo_label
    grid = model.encoder.token_grid(h, w)  # the training forward's affinity grid, crop // 16
    aff_label = affinity_labels(
        aff_source, radius_mask(*grid, s.radius, device=x.device), grid, s.ignore_index
    )
    seg_label = refined_pseudo_label if n_iter <= s.seg_switch_iter else refined_aff_label
    labels = (pseudo_label, refined_pseudo_label, refined_aff_label, aff_cam, aff_label, seg_label)
    return AFATargets(msc.cam, msc.aff_pred, *labels)


def whole_image_targets(
    model: nn.Module, image: Tensor, cls_label: Tensor, s: PseudoLabelSettings
) -> AFATargets:
    """The training step's pseudo labels of one whole image (its box is the image), CAMs in eval mode.

    Used to export pseudo labels and to draw them; ``model`` is expected in eval mode.

    Args:
        image: (1, 3, H, W) normalised; cls_label: (1, K) image-level labels.
    """
    h, w = image.shape[-2:]
    box = torch.tensor([[0, h, 0, w]], device=image.device)
    return make_targets(model, image, cls_label, box, 0, replace(s, cam_train_mode=False))
