"""PAR refinements of CAMs into pseudo labels (spec §4.4-4.5).

Both reference functions loop over images and select each image's valid channels (background plus
the classes present). Here the valid channels of the whole batch are gathered into one compact
(B, M, ·, ·) tensor, M = 1 + the largest number of present classes, padded with masked channels, so
PAR runs once per batch on M channels instead of once per image.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from model.cam import box_mask, channel_argmax, resize
from model.par import DEFAULT_DILATIONS, par_affinity, pixel_adaptive_refine


class ValidChannels(NamedTuple):
    """Attributes:
    index: (B, M) channel index of each compact slot (padding slots point at channel 0).
    valid: (B, M) bool, False for padding slots.
    """

    index: Tensor
    valid: Tensor


def valid_channels(labels: Tensor) -> ValidChannels:
    """Compact slots of the nonzero entries of ``labels`` (B, C), in increasing channel order."""
    present = labels > 0
    m = int(present.sum(dim=1).max().item())
    order = torch.argsort((~present).to(torch.int8), dim=1, stable=True)[:, :m]  # present channels first
    valid = torch.gather(present, 1, order)
    return ValidChannels(torch.where(valid, order, torch.zeros_like(order)), valid)


def gather_channels(x: Tensor, slots: ValidChannels) -> Tensor:
    """x (B, C, H, W) -> (B, M, H, W) holding each image's valid channels (padding slots copy channel 0)."""
    idx = slots.index[:, :, None, None].expand(-1, -1, *x.shape[-2:])
    return torch.gather(x, 1, idx)


def masked_channel_softmax(x: Tensor, valid: Tensor) -> Tensor:
    """Softmax over the channel axis of (B, M, H, W) restricted to valid slots; padding slots become 0."""
    x = x.masked_fill(~valid[:, :, None, None], float("-inf"))
    return torch.softmax(x, dim=1)


def foreground_with_background(cls_label: Tensor) -> Tensor:
    """[1 | cls_label]: (B, K) -> (B, K + 1), background always valid."""
    return torch.cat([torch.ones_like(cls_label[:, :1]), cls_label], dim=1)


def refine_cams_with_bkg(
    images01: Tensor,
    cams: Tensor,
    cls_label: Tensor,
    img_box: Tensor,
    high_thre: float = 0.55,
    low_thre: float = 0.35,
    dilations: tuple[int, ...] = DEFAULT_DILATIONS,
    num_iter: int = 10,
    down_scale: int = 2,
    ignore_index: int = 255,
    image_affinity: Tensor | None = None,
) -> Tensor:
    """PAR-refined CAM label, the reference ``refine_cams_with_bkg_v2`` (spec §4.4).

    For each background score (high, low) a constant background channel is prepended to the CAMs,
    the valid channels are softmaxed, refined by PAR at 1/``down_scale`` resolution, upsampled and
    arg-maxed inside the image box. The two labels combine to: foreground class where the high map
    says so, background where both say background, ``ignore_index`` where they disagree or outside
    the box.

    Args:
        images01: (B, 3, H, W) in [0, 1].
        cams: (B, K, H, W) multi-scale CAMs of all classes.
        cls_label: (B, K) image-level labels.
        img_box: (B, 4) valid regions.
        image_affinity: ``downscaled_image_affinity(images01, dilations, down_scale)`` if at hand.

    Returns:
        (B, H, W) int64 label.
    """
    b, _, h, w = images01.shape
    small = (h // down_scale, w // down_scale)
    slots = valid_channels(foreground_with_background(cls_label))
    masks = []
    for bkg in (high_thre, low_thre):
        stacked = torch.cat([torch.full_like(cams[:, :1], bkg), cams], dim=1)
        masks.append(masked_channel_softmax(gather_channels(resize(stacked, small), slots), slots.valid))
    # PAR acts on each channel alone: the high and low stacks share one pass and one image kernel.
    refined = pixel_adaptive_refine(
        resize(images01, small), torch.cat(masks, dim=1), dilations, num_iter, affinity=image_affinity
    )
    inside = box_mask(img_box, h, w)
    labels = []
    for part in resize(refined, (h, w)).chunk(2, dim=1):
        label = torch.gather(slots.index, 1, channel_argmax(part).flatten(1)).view(b, h, w)
        labels.append(torch.where(inside, label, torch.full_like(label, ignore_index)))
    return combine_high_low(labels[0], labels[1], ignore_index)


def combine_high_low(label_h: Tensor, label_l: Tensor, ignore_index: int = 255) -> Tensor:
    """out = label_h; ignore where label_h is background; background where both are (spec §4.4-4)."""
    out = label_h.clone()
    out[label_h == 0] = ignore_index
    out[(label_h + label_l) == 0] = 0
    return out


def refine_cams_with_cls_label(
    images01: Tensor,
    cams: Tensor,
    labels: Tensor,
    img_box: Tensor,
    dilations: tuple[int, ...] = DEFAULT_DILATIONS,
    num_iter: int = 10,
    down_scale: int = 2,
    image_affinity: Tensor | None = None,
) -> Tensor:
    """PAR on propagated CAMs inside each image box (spec §4.5).

    The box is cropped, the image downsampled to half the box, the valid channels (no softmax) refined
    by PAR and upsampled back; everything outside the box and in invalid channels is 0. Images whose
    boxes have the same size are refined together. PAR treats channels independently, so several
    maps of one image (e.g. low and high background) can be refined in one call by concatenating
    them on the channel axis together with their labels.

    Args:
        images01: (B, 3, H, W) in [0, 1].
        cams: (B, C, H, W) propagated CAMs with the background channel.
        labels: (B, C) valid channels, background included.
        img_box: (B, 4).
        image_affinity: ``downscaled_image_affinity(images01, dilations, down_scale)`` if at hand:
            images whose box is the whole crop reuse it (the same kernel, not recomputed).

    Returns:
        (B, C, H, W).
    """
    out = torch.zeros_like(cams)
    full = tuple(images01.shape[-2:])
    boxes = img_box.long().tolist()
    sizes = [(h1 - h0, w1 - w0) for h0, h1, w0, w1 in boxes]
    for size in dict.fromkeys(sizes):
        members = [i for i, s in enumerate(sizes) if s == size]
        crops_img = torch.stack([_crop(images01[i], boxes[i]) for i in members])
        crops_cam = torch.stack([_crop(cams[i], boxes[i]) for i in members])
        slots = valid_channels(labels[members])
        small = (size[0] // down_scale, size[1] // down_scale)
        masks = gather_channels(crops_cam, slots) * slots.valid[:, :, None, None]
        affinity = None
        if image_affinity is not None and size == full:  # the box is the whole crop
            affinity = image_affinity[members]
        refined = pixel_adaptive_refine(
            resize(crops_img, small), masks, dilations, num_iter, affinity=affinity
        )
        refined = resize(refined, size)
        for j, i in enumerate(members):
            h0, h1, w0, w1 = boxes[i]
            keep = slots.index[j][slots.valid[j]]
            out[i, keep, h0:h1, w0:w1] = refined[j, : len(keep)]
    return out


def downscaled_image_affinity(images01: Tensor, dilations: tuple[int, ...], down_scale: int = 2) -> Tensor:
    """PAR's image kernel of the whole crops at 1/``down_scale``, shared by both refinements.

    Args:
        images01: (B, 3, H, W) in [0, 1].

    Returns:
        (B, 8·len(dilations), H/down_scale, W/down_scale).
    """
    h, w = images01.shape[-2:]
    return par_affinity(resize(images01, (h // down_scale, w // down_scale)), dilations)


def _crop(x: Tensor, box: list[int]) -> Tensor:
    """x (C, H, W) cropped to [h0:h1, w0:w1]."""
    h0, h1, w0, w1 = box
    return x[:, h0:h1, w0:w1]
