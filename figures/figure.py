"""Readable figures: captioned tiles, a class-colour legend and a heat-map scale, drawn with PIL.

A figure is a grid of equally sized tiles (each enlarged by an integer factor to at least
``min_height`` pixels, nearest neighbour so that label maps stay crisp), a caption above each tile
and, below the grid, a legend: one swatch per class shown in the label tiles (with the dataset's
class names) and the colour scale of the heat maps. Fonts come from matplotlib's bundled DejaVu Sans.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from matplotlib import colormaps, font_manager
from PIL import Image, ImageDraw, ImageFont

from datasets.classes import IGNORE_INDEX, voc_palette

BACKGROUND_NOTE = "(image left untinted)"
LABEL_ALPHA = 0.7  # label colours over the grey image: strong enough to read against the legend


@dataclass(frozen=True)
class Tile:
    """One captioned picture: ``image`` (H, W, 3) uint8 and the text above it."""

    caption: str
    image: np.ndarray


@lru_cache(maxsize=8)
def font(size: int) -> ImageFont.FreeTypeFont:
    """DejaVu Sans at ``size`` px (shipped with matplotlib), or PIL's default font at that size."""
    try:
        return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)
    except OSError:
        return ImageFont.load_default(size)


def enlarge(picture: np.ndarray, factor: int) -> np.ndarray:
    """(H, W, 3) -> (factor·H, factor·W, 3) by pixel repetition."""
    if factor == 1:
        return picture
    return np.repeat(np.repeat(picture, factor, axis=0), factor, axis=1)


def present_label_ids(labels: list[np.ndarray]) -> list[int]:
    """Sorted ids (0..255) that occur in any of the (H, W) label maps; background always listed."""
    ids = {0}
    for label in labels:
        ids |= {int(v) for v in np.unique(label)}
    return sorted(ids)


def class_legend(ids: list[int], names: list[str]) -> list[tuple[str, tuple[int, int, int]]]:
    """(name, VOC-palette colour) per label id; 0 is noted as untinted, 255 is "ignore"."""
    palette = voc_palette()
    entries = []
    for i in ids:
        if i == IGNORE_INDEX:
            name = "ignore"
        elif i < len(names):
            name = f"{names[i]} {BACKGROUND_NOTE}" if i == 0 else names[i]
        else:
            name = f"class {i}"
        entries.append((name, tuple(int(c) for c in palette[i])))
    return entries


def _text_width(draw: ImageDraw.ImageDraw, text: str, typeface: ImageFont.FreeTypeFont) -> int:
    """Width in pixels of ``text`` drawn in ``typeface``."""
    left, _, right, _ = draw.textbbox((0, 0), text, font=typeface)
    return int(right - left)


def legend_strip(
    entries: list[tuple[str, tuple[int, int, int]]],
    width: int,
    size: int = 16,
    heat_caption: str | None = "heat maps",
    cmap: str = "jet",
) -> np.ndarray:
    """A white strip ``width`` px wide: colour swatches with names, wrapped onto as many rows as needed,
    then (if ``heat_caption``) the heat-map colour scale from 0 to 1. (h, width, 3) uint8."""
    typeface, pad, swatch = font(size), size // 2, size
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    items = [("swatch", name, colour) for name, colour in entries]
    if heat_caption:
        items.append(("scale", heat_caption, (0, 0, 0)))
    rows, row, x = [], [], pad
    for kind, name, colour in items:
        extent = swatch + pad // 2 + _text_width(probe, name, typeface)
        if kind == "scale":
            extent += 6 * size + 2 * _text_width(probe, " 0 ", typeface)
        if row and x + extent > width - pad:
            rows.append(row)
            row, x = [], pad
        row.append((kind, name, colour, x))
        x += extent + 2 * pad
    rows.append(row)
    line = int(size * 1.6)
    canvas = Image.new("RGB", (width, line * len(rows) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for r, row in enumerate(rows):
        y = pad // 2 + r * line
        for kind, name, colour, x in row:
            if kind == "swatch":
                draw.rectangle([x, y + 2, x + swatch, y + 2 + swatch], fill=colour, outline=(0, 0, 0))
                draw.text((x + swatch + pad // 2, y), name, fill=(0, 0, 0), font=typeface)
                continue
            draw.text((x, y), name + " 0 ", fill=(0, 0, 0), font=typeface)
            x0 = x + _text_width(probe, name + " 0 ", typeface)
            ramp = (colormaps[cmap](np.linspace(0, 1, 6 * size))[:, :3] * 255).astype(np.uint8)
            bar = np.repeat(ramp[None], swatch, axis=0)
            canvas.paste(Image.fromarray(bar), (x0, y + 2))
            draw.text((x0 + 6 * size, y), " 1", fill=(0, 0, 0), font=typeface)
    return np.asarray(canvas)


def fit_caption(
    draw: ImageDraw.ImageDraw, text: str, width: int, size: int, smallest: int = 11
) -> tuple[str, ImageFont.FreeTypeFont]:
    """The caption and font that fit ``width`` px: the font shrinks from ``size`` to ``smallest``,
    then the text is shortened with an ellipsis."""
    for pt in range(size, smallest - 1, -1):
        if _text_width(draw, text, font(pt)) <= width:
            return text, font(pt)
    face = font(smallest)
    while _text_width(draw, text, face) > width and len(text) > 4:
        text = text[:-2] + "…"
    return text, face


def captioned_grid(
    tiles: list[Tile],
    legend: list[tuple[str, tuple[int, int, int]]] | None = None,
    columns: int | None = None,
    min_height: int = 192,
    size: int = 16,
    heat_caption: str | None = "heat maps",
) -> np.ndarray:
    """Tiles in rows of ``columns`` (default all in one row), each enlarged to ≥ ``min_height`` px and
    captioned, over a legend strip (see :func:`legend_strip`; none when ``legend`` is None).

    Returns:
        (H', W', 3) uint8 on a white background.
    """
    h, w = tiles[0].image.shape[:2]
    if any(t.image.shape[:2] != (h, w) for t in tiles):
        raise ValueError("all tiles must share one size")
    factor = max(1, -(-min_height // h))
    th, tw = h * factor, w * factor
    columns = min(columns or len(tiles), len(tiles))
    gap = max(4, size // 2)
    caption_h = int(size * 1.5)
    rows = -(-len(tiles) // columns)
    width = columns * tw + (columns + 1) * gap
    canvas = Image.new("RGB", (width, rows * (caption_h + th + gap) + gap), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, tile in enumerate(tiles):
        x = gap + (i % columns) * (tw + gap)
        y = gap + (i // columns) * (caption_h + th + gap)
        text, face = fit_caption(draw, tile.caption, tw, size)
        draw.text((x, y), text, fill=(0, 0, 0), font=face)
        canvas.paste(Image.fromarray(enlarge(tile.image, factor)), (x, y + caption_h))
    picture = np.asarray(canvas)
    if legend is None:
        return picture
    return np.concatenate([picture, legend_strip(legend, width, size, heat_caption)], axis=0)
