"""Test-time segmentation: long-side resize, multi-scale flip inference (spec §7.3)."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from model.cam import hflip, resize

AUTHORS_TEST_SCALES = (1.0, 0.5, 0.75)  # scripts/test_msc_flip.py
PAPER_TEST_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5)  # the maintainer's answer in the authors' issue #6


class SegPrediction(NamedTuple):
    """Attributes:
    seg: (B, C, h, w) single-scale, non-flipped logits of the long-side-resized image (stride 4).
    msc_seg: (B, C, h, w) maximum over scales of the flip-averaged logits, on the same grid.
    """

    seg: Tensor
    msc_seg: Tensor


def long_side_size(size: tuple[int, int], resize_long: int | None) -> tuple[int, int]:
    """(H, W) with the long side resized to ``resize_long`` (None keeps it): (int(H·r), int(W·r))."""
    if resize_long is None:
        return size
    ratio = resize_long / max(size)
    return int(size[0] * ratio), int(size[1] * ratio)


def resize_long_side(x: Tensor, resize_long: int) -> Tensor:
    """Bilinear resize of (B, 3, H, W) so that the long side is ``resize_long``: (int(H·r), int(W·r))."""
    return resize(x, long_side_size(tuple(x.shape[-2:]), resize_long))


def smallest_inference_side(size: tuple[int, int], scales: tuple[float, ...], resize_long: int | None) -> int:
    """The shortest side (px) any pass of ``msc_flip_inference`` sees for an (H, W) image."""
    h, w = long_side_size(size, resize_long)
    return min(int(d * s) for d in (h, w) for s in (1.0, *scales))  # floor, as scale_factor does


@torch.no_grad()
def msc_flip_inference(
    segment: Callable[[Tensor], Tensor], x: Tensor, scales: tuple[float, ...], resize_long: int | None = 512
) -> SegPrediction:
    """The authors' test-time inference (``scripts/test_msc_flip.py``).

    The image is resized to ``resize_long`` on its long side (None keeps it); for every scale the
    input is rescaled by that factor (``scale_factor`` semantics of ``F.interpolate``), the logits of
    the image and its flip are resized to the scale-1 logit grid and averaged, and the maximum over
    scales is taken.

    Args:
        segment: (B, 3, h, w) normalised images -> (B, C, h', w') logits of a network in eval mode
            (e.g. ``AFANetwork.segment``: no attention logits, no affinity).
        x: (B, 3, H, W) normalised images.
        scales: e.g. ``AUTHORS_TEST_SCALES``.

    Returns:
        SegPrediction on the stride-4 grid of the resized image; upsample to (H, W) before argmax.
    """
    if resize_long is not None:
        x = resize_long_side(x, resize_long)
    b = x.shape[0]
    logits = segment(torch.cat([x, hflip(x)], dim=0))
    seg = logits[:b]
    grid = tuple(seg.shape[-2:])
    msc = None
    for s in scales:
        xs = F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
        out = resize(segment(torch.cat([xs, hflip(xs)], dim=0)), grid)
        avg = (out[:b] + hflip(out[b:])) / 2
        msc = avg if msc is None else torch.maximum(msc, avg)
    return SegPrediction(seg, msc)
