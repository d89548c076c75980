"""Training-time augmentation of the classification dataset (spec §3.3, §6.7).

Order, as in the reference: random rescale, horizontal flip, random crop with black padding,
normalisation, HWC -> CHW. No colour jitter.

Random draws come from generator objects passed in: ``py_rng`` has the interface of Python's
``random`` module (``uniform``, ``random``, ``randrange``) and ``np_rng`` that of ``np.random``
(``randint``). Passing the modules themselves reproduces the reference's global-state draws;
passing ``random.Random(seed)`` and ``np.random.RandomState(seed)`` gives the same draw order from
private, seedable generators.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

IMAGENET_MEAN: tuple[float, float, float] = (123.675, 116.28, 103.53)  # 0..255 RGB
IMAGENET_STD: tuple[float, float, float] = (58.395, 57.12, 57.375)  # 0..255 RGB


def random_rescale(image: np.ndarray, scale_range: tuple[float, float], rng: Any) -> np.ndarray:
    """Resize by a ratio r ~ U(lo, hi) with PIL bilinear interpolation.

    Args:
        image: (H, W, 3) uint8 RGB.
        scale_range: (lo, hi) bounds of the ratio.
        rng: Python-``random``-style generator; one ``uniform`` draw.

    Returns:
        (int(r·H), int(r·W), 3) float32 (values still 0..255).
    """
    if image.dtype != np.uint8:
        raise TypeError(f"random_rescale expects a uint8 image, got {image.dtype}")
    ratio = rng.uniform(scale_range[0], scale_range[1])
    height, width = image.shape[:2]
    new_size = (int(width * ratio), int(height * ratio))  # PIL size is (w, h)
    resized = Image.fromarray(image).resize(new_size, resample=Image.BILINEAR)
    return np.asarray(resized, dtype=np.float32)


def random_fliplr(image: np.ndarray, rng: Any) -> np.ndarray:
    """Flip left-right when ``rng.random() > 0.5``.

    Args:
        image: (H, W, ...) array.
        rng: Python-``random``-style generator; one ``random`` draw.

    Returns:
        (H, W, ...) array, flipped or unchanged (contiguous).
    """
    if rng.random() > 0.5:
        image = image[:, ::-1]
    return np.ascontiguousarray(image)


def random_crop(image: np.ndarray, crop_size: int, py_rng: Any, np_rng: Any) -> tuple[np.ndarray, np.ndarray]:
    """Pad with raw 0 to at least crop×crop at a random offset, then cut a random crop×crop window.

    The image (h, w) is pasted into a zero canvas of max(crop, h) × max(crop, w) at
    H_pad = np_rng.randint(H − h + 1), then W_pad = np_rng.randint(W − w + 1); the window starts at
    H_start = py_rng.randrange(0, H − crop + 1), then W_start = py_rng.randrange(0, W − crop + 1).

    Args:
        image: (h, w, 3) array (uint8 or float, 0..255).
        crop_size: Side of the square crop.
        py_rng: Python-``random``-style generator for the window.
        np_rng: ``np.random``-style generator for the paste offset.

    Returns:
        crop: (crop, crop, 3) float32.
        img_box: (4,) int64 [h0, h1, w0, w1] in crop coordinates, the region holding real pixels:
            h0 = max(H_pad − H_start, 0), h1 = min(H_pad + h − H_start, crop), w0/w1 likewise.
    """
    height, width = image.shape[:2]
    canvas_h, canvas_w = max(crop_size, height), max(crop_size, width)
    h_pad = int(np_rng.randint(canvas_h - height + 1))
    w_pad = int(np_rng.randint(canvas_w - width + 1))
    canvas = np.zeros((canvas_h, canvas_w) + image.shape[2:], dtype=np.float32)
    canvas[h_pad : h_pad + height, w_pad : w_pad + width] = image
    h_start = py_rng.randrange(0, canvas_h - crop_size + 1)
    w_start = py_rng.randrange(0, canvas_w - crop_size + 1)
    crop = canvas[h_start : h_start + crop_size, w_start : w_start + crop_size]
    img_box = np.array(
        [
            max(h_pad - h_start, 0),
            min(h_pad + height - h_start, crop_size),
            max(w_pad - w_start, 0),
            min(w_pad + width - w_start, crop_size),
        ],
        dtype=np.int64,
    )
    return np.ascontiguousarray(crop), img_box


def normalize(image: np.ndarray) -> np.ndarray:
    """ImageNet normalisation on 0..255 RGB.

    Args:
        image: (H, W, 3) array, 0..255 RGB.

    Returns:
        (H, W, 3) float32, (x − IMAGENET_MEAN) / IMAGENET_STD.
    """
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)
    std = np.asarray(IMAGENET_STD, dtype=np.float32)
    return (np.asarray(image, dtype=np.float32) - mean) / std


def to_chw(image: np.ndarray) -> np.ndarray:
    """(H, W, C) -> contiguous (C, H, W)."""
    return np.ascontiguousarray(image.transpose(2, 0, 1))


def train_transform(
    image: np.ndarray,
    crop_size: int | None,
    scale_range: tuple[float, float] | None,
    flip: bool,
    py_rng: Any,
    np_rng: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """The classification dataset's augmentation: rescale, flip, crop, normalise, HWC -> CHW.

    Args:
        image: (H, W, 3) uint8 RGB.
        crop_size: Crop side, or None for no crop (the box is then the whole image).
        scale_range: Rescale ratio bounds, or None for no rescale.
        flip: Whether to apply the random horizontal flip.
        py_rng: Python-``random``-style generator.
        np_rng: ``np.random``-style generator.

    Returns:
        image: (3, crop, crop) float32, normalised.
        img_box: (4,) int64 [h0, h1, w0, w1], see :func:`random_crop`.
    """
    if scale_range is not None:
        image = random_rescale(image, scale_range, py_rng)
    if flip:
        image = random_fliplr(image, py_rng)
    if crop_size is not None:
        image, img_box = random_crop(image, crop_size, py_rng, np_rng)
    else:
        img_box = np.array([0, image.shape[0], 0, image.shape[1]], dtype=np.int64)
    return to_chw(normalize(image)), img_box
