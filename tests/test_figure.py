"""figures.figure: captioned, enlarged tiles and the class-colour legend of the pictures."""

from __future__ import annotations

import numpy as np
import pytest

from datasets.classes import voc_palette
from figures.figure import Tile, captioned_grid, class_legend, enlarge, legend_strip, present_label_ids
from figures.visual import grey


def test_present_ids_and_legend_entries_by_hand():
    labels = [np.array([[0, 2], [2, 255]]), np.array([[4, 0], [0, 0]])]
    assert present_label_ids(labels) == [0, 2, 4, 255]
    assert present_label_ids([np.full((2, 2), 3)]) == [0, 3]  # background always listed
    names = ["background", "disc", "square", "triangle", "cross"]
    entries = class_legend([0, 2, 4, 255, 7], names)
    assert [e[0] for e in entries] == [
        "background (image left untinted)",
        "square",
        "cross",
        "ignore",
        "class 7",
    ]
    assert entries[1][1] == tuple(int(c) for c in voc_palette()[2]) == (0, 128, 0)
    assert entries[3][1] == (224, 224, 192)


def test_enlarge_repeats_pixels():
    picture = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    big = enlarge(picture, 3)
    assert (
        big.shape == (6, 6, 3)
        and (big[:3, :3] == picture[0, 0]).all()
        and (big[3:, 3:] == picture[1, 1]).all()
    )


def test_grid_layout_captions_and_legend_swatches():
    red = np.zeros((50, 80, 3), dtype=np.uint8)
    red[..., 0] = 200
    tiles = [Tile(f"tile {i}", red) for i in range(5)]
    legend = class_legend([0, 1, 3], ["background", "disc", "square", "triangle", "cross"])
    picture = captioned_grid(tiles, legend, columns=3, min_height=120)
    # 50 px -> 150 px (factor 3); 3 columns of 240 px with 8 px gaps; 2 rows of caption + tile + gap
    grid_height = 2 * (24 + 150 + 8) + 8
    assert picture.shape[1] == 3 * 240 + 4 * 8 and picture.shape[0] > grid_height
    first = picture[8 + 24 : 8 + 24 + 150, 8 : 8 + 240]
    assert (first == red[0, 0]).all()  # the tile itself, untouched
    caption = picture[8 : 8 + 24, 8 : 8 + 240]
    assert (caption < 100).any() and (caption == 255).mean() > 0.5  # dark text on white
    strip = picture[grid_height:]
    for colour in ((128, 0, 0), (128, 128, 0)):  # disc and triangle swatches
        assert (strip == colour).all(axis=-1).sum() == 15 * 15  # a 16 px swatch inside its outline
    assert picture[8 + 2 * (24 + 150 + 8) - 10, -20].tolist() == [255, 255, 255]  # empty 6th cell


def test_legend_wraps_to_the_width_and_tiles_must_match():
    entries = [(f"class number {i}", (i, i, i)) for i in range(12)]
    narrow, wide = legend_strip(entries, 300), legend_strip(entries, 3000)
    assert narrow.shape[1] == 300 and wide.shape[1] == 3000 and narrow.shape[0] > 2 * wide.shape[0]
    with pytest.raises(ValueError, match="one size"):
        captioned_grid([Tile("a", np.zeros((4, 4, 3), np.uint8)), Tile("b", np.zeros((4, 5, 3), np.uint8))])


def test_grey_keeps_shape_and_luma():
    picture = np.array([[[255, 0, 0], [0, 0, 255]]], dtype=np.uint8)
    out = grey(picture)
    assert (
        out.shape == (1, 2, 3) and out[0, 0].tolist() == [76, 76, 76] and out[0, 1].tolist() == [29, 29, 29]
    )
