"""Pictures for TensorBoard and ``scripts/visualize.py``: label colouring, heat-map overlays, panels."""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps

from datasets.classes import colorize


def heatmap(values: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """(H, W) values in [0, 1] -> (H, W, 3) uint8 colours."""
    rgb = colormaps[cmap](np.clip(values, 0.0, 1.0))[..., :3]
    return (rgb * 255).astype(np.uint8)


def blend(image: np.ndarray, overlay: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Alpha-blend two (H, W, 3) uint8 pictures."""
    out = (1 - alpha) * image.astype(np.float32) + alpha * overlay.astype(np.float32)
    return out.clip(0, 255).astype(np.uint8)


def overlay_label(image: np.ndarray, label: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Image with its label map in VOC palette colours on top (background and ignore kept visible)."""
    colours = colorize(label)
    keep = (label == 0)[..., None]
    return np.where(keep, image, blend(image, colours, alpha))


def overlay_heatmap(image: np.ndarray, values: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Image with a [0, 1] heat map on top."""
    return blend(image, heatmap(values), alpha)


def panel(pictures: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """Side-by-side (H, W, 3) uint8 pictures of equal height, separated by white gaps."""
    h = pictures[0].shape[0]
    spacer = np.full((h, gap, 3), 255, dtype=np.uint8)
    parts: list[np.ndarray] = []
    for i, pic in enumerate(pictures):
        if pic.shape[0] != h:
            raise ValueError("panel pictures must share the same height")
        parts.extend([spacer, pic] if i else [pic])
    return np.concatenate(parts, axis=1)


def grey(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> the same picture in grey (luma), still (H, W, 3) uint8, so that colours
    drawn over it stand out."""
    luma = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.repeat(luma.clip(0, 255).astype(np.uint8)[..., None], 3, axis=2)
