"""Class activation maps and the initial pseudo labels (spec §3).

``multi_scale_cam`` is the no-grad multi-scale, flip CAM of the reference; ``cam_to_label`` and
``cam_to_pseudo_label`` threshold it. The reference's single ``cam_to_label`` returns a tensor or a
tuple depending on whether a box is passed (spec §9.2-14); here those are two functions.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


class MultiScaleCAM(NamedTuple):
    """Attributes:
    cam: (B, K, H, W) CAMs normalised to [0, 1) per image and class.
    aff_pred: (B, N, N) affinity predicted on the non-flipped input at the largest scale.
    aff_grid: (h, w) token grid of ``aff_pred``, N = h·w.
    """

    cam: Tensor
    aff_pred: Tensor
    aff_grid: tuple[int, int]


def hflip(x: Tensor) -> Tensor:
    """Horizontal flip of (..., H, W)."""
    return x.flip(-1)


def resize(x: Tensor, size: tuple[int, int], align_corners: bool = False) -> Tensor:
    """Bilinear resize of (B, C, h, w) to ``size``."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)


def channel_argmax(x: Tensor) -> Tensor:
    """Index of the largest channel of (B, C, H, W) -> (B, H, W) int64, the first one on ties.

    ``x.max(dim=1).indices``, which equals ``x.argmax(dim=1)`` (both return the first maximal index);
    on the CPU it is 3-14× faster for channel-first maps (argmax reduces the strided axis slowly).
    """
    return x.max(dim=1).indices


def maybe_autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast to ``dtype`` on ``device`` for the network passes, or a no-op when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def normalize_cam(cam: Tensor) -> Tensor:
    """Per image and class min-max: (cam − min) / (max − min + 1e-5), so values lie in [0, 1)."""
    cam = cam - cam.amin(dim=(-2, -1), keepdim=True)
    return cam / (cam.amax(dim=(-2, -1), keepdim=True) + 1e-5)


@torch.no_grad()
def multi_scale_cam(
    model: nn.Module,
    x: Tensor,
    scales: tuple[float, ...],
    run_decoder: bool = True,
    amp_dtype: torch.dtype | None = None,
    with_affinity: bool = True,
) -> MultiScaleCAM:
    """Multi-scale, flip CAM (spec §3.1).

    For each scale (1.0 first, always), the network's CAM pass runs on [x_s, flip(x_s)]; the maps are
    resized to (H, W), the flipped half is flipped back and combined by an element-wise max, and the
    ReLU'd maps are summed over scales, then min-max normalised. The model is used in whatever mode
    it is in (train mode during training, as the reference does).

    Args:
        model: an ``AFANetwork`` (anything with ``forward_cam``).
        x: (B, 3, H, W) normalised images.
        scales: e.g. (1.0, 0.5, 1.5).
        run_decoder: forwarded to ``forward_cam``.
        amp_dtype: autocast dtype for the network passes; the maps are returned in float32.
        with_affinity: False skips the affinity (``aff_pred`` and ``aff_grid`` are then None), for
            callers that take it from elsewhere (validation uses the single-scale forward's).

    Returns:
        MultiScaleCAM; ``aff_pred`` comes from the largest scale (the reference picks it by
        ``argmax(scales)`` into a list that starts with 1.0, which is only right when 1.0 is listed
        first; here it is selected by value).
    """
    b, _, h, w = x.shape
    ordered = [1.0] + [s for s in scales if s != 1.0]
    largest = max(ordered)
    cam_sum, aff_pred, aff_grid = None, None, None
    for s in ordered:
        xs = x if s == 1.0 else resize(x, (int(s * h), int(s * w)))
        with maybe_autocast(x.device, amp_dtype):
            need_aff = with_affinity and s == largest and aff_pred is None
            out = model.forward_cam(
                torch.cat([xs, hflip(xs)], dim=0),
                run_decoder=run_decoder,
                with_affinity=need_aff,
                logit_batch=b,  # the flipped half's affinity is never used
            )
        if need_aff:
            aff_pred, aff_grid = out.aff_pred[:b].float(), tuple(out.cam.shape[-2:])
        cam = resize(out.cam.float(), (h, w))
        cam = F.relu(torch.maximum(cam[:b], hflip(cam[b:])))
        cam_sum = cam if cam_sum is None else cam_sum + cam
    return MultiScaleCAM(normalize_cam(cam_sum), aff_pred, aff_grid)


def single_pass_cam(cam: Tensor, aff_pred: Tensor, size: tuple[int, int]) -> MultiScaleCAM:
    """The CAM of one pass, built as ``multi_scale_cam`` builds it for scale 1.0 without the flip:
    resized to ``size``, ReLU'd, min-max normalised (the ``cam.from_forward`` fast option).

    Args:
        cam: (B, K, h, w) CAM of the pass before ReLU.
        aff_pred: (B, h·w, h·w) affinity of the same pass.
        size: (H, W) of the input.

    Returns:
        MultiScaleCAM with ``cam`` (B, K, H, W), the detached ``aff_pred`` and its grid (h, w).
    """
    full = F.relu(resize(cam.detach().float(), size))
    return MultiScaleCAM(normalize_cam(full), aff_pred.detach().float(), tuple(cam.shape[-2:]))


def mask_absent_classes(cam: Tensor, cls_label: Tensor) -> Tensor:
    """valid_cam = cam · cls_label: zero the maps of classes absent from the image.

    Args:
        cam: (B, K, H, W); cls_label: (B, K) in {0, 1}.
    """
    return cam * cls_label[:, :, None, None]


def cam_to_label(cam: Tensor, cls_label: Tensor, bkg_score: float = 0.45) -> Tensor:
    """Label map from CAMs with a single background threshold (validation path, spec §3.2).

    Args:
        cam: (B, K, H, W) in [0, 1]; cls_label: (B, K).

    Returns:
        (B, H, W) int64: argmax class + 1 where its score exceeds ``bkg_score``, else 0.
    """
    score, idx = mask_absent_classes(cam, cls_label).max(dim=1)
    label = idx + 1
    label[score <= bkg_score] = 0
    return label


def box_mask(img_box: Tensor, height: int, width: int) -> Tensor:
    """Boolean (B, H, W) mask of the valid region [h0, h1) × [w0, w1) of each crop.

    Args:
        img_box: (B, 4) rows [h0, h1, w0, w1] in crop coordinates.
    """
    rows = torch.arange(height, device=img_box.device)
    cols = torch.arange(width, device=img_box.device)
    box = img_box.long()
    inside_r = (rows[None] >= box[:, 0:1]) & (rows[None] < box[:, 1:2])  # (B, H)
    inside_c = (cols[None] >= box[:, 2:3]) & (cols[None] < box[:, 3:4])  # (B, W)
    return inside_r[:, :, None] & inside_c[:, None, :]


def ignore_outside_box(label: Tensor, img_box: Tensor, ignore_index: int = 255) -> Tensor:
    """Copy of ``label`` (B, H, W) with ``ignore_index`` outside each image box."""
    inside = box_mask(img_box, label.shape[-2], label.shape[-1])
    return torch.where(inside, label, torch.full_like(label, ignore_index))


def cam_to_pseudo_label(
    cam: Tensor,
    cls_label: Tensor,
    img_box: Tensor,
    bkg_score: float = 0.45,
    high_thre: float = 0.55,
    low_thre: float = 0.35,
    ignore_mid: bool = True,
    ignore_index: int = 255,
) -> tuple[Tensor, Tensor]:
    """Training-time CAM label with an uncertain band and the padded region ignored (spec §3.2).

    With ``ignore_mid``: foreground if score > high_thre, ignore if low_thre < score ≤ high_thre,
    background if score ≤ low_thre (``bkg_score`` is then overridden, as in the reference).

    Args:
        cam: (B, K, H, W); cls_label: (B, K); img_box: (B, 4).

    Returns:
        valid_cam (B, K, H, W) with absent classes zeroed, and the label (B, H, W) int64.
    """
    valid_cam = mask_absent_classes(cam, cls_label)
    score, idx = valid_cam.max(dim=1)
    label = idx + 1
    label[score <= bkg_score] = 0
    if ignore_mid:
        label[score <= high_thre] = ignore_index
        label[score <= low_thre] = 0
    return valid_cam, ignore_outside_box(label, img_box, ignore_index)


def denormalize(
    x: Tensor, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD
) -> Tensor:
    """The image PAR sees: x·std + mean truncated to uint8, divided by 255 (spec "images01").

    Args:
        x: (B, 3, H, W) normalised.

    Returns:
        (B, 3, H, W) float in [0, 1].
    """
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x * s + m).to(torch.uint8).to(x.dtype) / 255.0
