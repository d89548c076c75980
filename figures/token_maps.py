"""Token maps as pictures: which token covers a pixel, one token's attention, maps scaled over the image."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from model.cam import resize


def token_index(row: int, col: int, size: tuple[int, int], grid: tuple[int, int]) -> int:
    """Flat index of the token of ``grid`` (h, w) covering pixel (row, col) of an image of ``size`` (H, W)."""
    (height, width), (h, w) = size, grid
    if not (0 <= row < height and 0 <= col < width):
        raise ValueError(f"pixel ({row}, {col}) lies outside the {height}×{width} image")
    return min(row * h // height, h - 1) * w + min(col * w // width, w - 1)


def attention_of_token(attn_logits: Tensor, scale: float, index: int) -> Tensor:
    """Head-mean attention of one query token over all keys.

    Args:
        attn_logits: (1, nh, N, N) unscaled q·kᵀ logits of a block without spatial reduction.
        scale: the block's d^-½.

    Returns:
        (N,), summing to 1.
    """
    return torch.softmax(attn_logits[0, :, index].float() * scale, dim=-1).mean(dim=0)


def unit_range(values: Tensor) -> np.ndarray:
    """Min-max scaling of a map to [0, 1] (a constant map becomes 0), as a numpy array."""
    values = values.detach().float() - values.min()
    return (values / values.max().clamp(min=1e-12)).cpu().numpy()


def token_map_to_image(values: Tensor, grid: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """(N,) token values -> (H, W) float in [0, 1]: bilinear upsampling, then min-max scaling."""
    return unit_range(resize(values.detach().float().view(1, 1, *grid), size)[0, 0])


def mark_pixel(picture: np.ndarray, row: int, col: int, arm: int = 6) -> np.ndarray:
    """A white cross with a black outline centred on (row, col) of an (H, W, 3) uint8 picture."""
    out = picture.copy()
    h, w = out.shape[:2]
    for colour, half in (((0, 0, 0), 1), ((255, 255, 255), 0)):
        r0, r1 = max(row - half, 0), min(row + half + 1, h)
        c0, c1 = max(col - half, 0), min(col + half + 1, w)
        out[max(row - arm, 0) : min(row + arm + 1, h), c0:c1] = colour
        out[r0:r1, max(col - arm, 0) : min(col + arm + 1, w)] = colour
    return out


def cam_peak(cam: Tensor) -> tuple[int, int]:
    """(row, col) of the largest value of an (H, W) map (the first one in row-major order)."""
    index = int(cam.flatten().argmax())
    return index // cam.shape[-1], index % cam.shape[-1]
