"""Image/label reading (datasets.io) and the class tables and palette (datasets.classes)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from datasets.classes import (
    COCO_CATEGORY_IDS,
    COCO_CATEGORY_TO_CONTIGUOUS,
    COCO_CATEGORY_TO_VOC,
    COCO_CLASSES,
    COCO_UNUSED_CATEGORY_IDS,
    VOC_CLASSES,
    colorize,
    save_label_png,
    voc_palette,
)
from datasets.io import read_image, read_label


def test_grey_image_replicated(tmp_path):
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(grey).save(tmp_path / "g.png")
    rgb = read_image(tmp_path / "g.png")
    assert rgb.shape == (3, 4, 3) and rgb.dtype == np.uint8
    for channel in range(3):
        np.testing.assert_array_equal(rgb[..., channel], grey)


def test_grey_alpha_drops_alpha(tmp_path):
    Image.new("LA", (5, 2), (77, 0)).save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_image(tmp_path / "la.png"), np.full((2, 5, 3), 77, np.uint8))


def test_rgba_alpha_dropped_without_compositing(tmp_path):
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., :3] = (10, 200, 30)
    rgba[0, 0, 3] = 255  # everything else fully transparent: the colour must survive
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), np.broadcast_to([10, 200, 30], (2, 3, 3)))


def test_palette_image_to_colours(tmp_path):
    save_label_png(tmp_path / "p.png", np.array([[0, 1], [15, 255]]))
    expected = np.array([[[0, 0, 0], [128, 0, 0]], [[192, 128, 128], [224, 224, 192]]], np.uint8)
    np.testing.assert_array_equal(read_image(tmp_path / "p.png"), expected)


def test_cmyk_jpeg(tmp_path):
    Image.new("RGB", (8, 8), (200, 30, 60)).convert("CMYK").save(tmp_path / "c.jpg", quality=100)
    assert Image.open(tmp_path / "c.jpg").mode == "CMYK"
    rgb = read_image(tmp_path / "c.jpg")
    assert rgb.shape == (8, 8, 3)
    assert np.abs(rgb.astype(int) - [200, 30, 60]).max() <= 2


def test_sixteen_bit_grey_scaled(tmp_path):
    values = np.array([[0, 2570, 65535, 1000]], np.uint16)
    cv2.imwrite(str(tmp_path / "g16.png"), values)
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    rgb = read_image(tmp_path / "g16.png")
    np.testing.assert_array_equal(rgb[..., 1], [[0, 10, 255, 4]])  # round(v / 257)
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])


def test_sixteen_bit_rgb_high_byte(tmp_path):
    values = np.zeros((2, 2, 3), np.uint16)
    values[...] = (65535, 1000, 30000)  # RGB
    cv2.imwrite(str(tmp_path / "rgb16.png"), values[..., ::-1])  # cv2 writes BGR
    rgb = read_image(tmp_path / "rgb16.png")
    assert rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[0, 0], [255, 3, 117])  # v >> 8


def test_read_label_palette_indices(tmp_path):
    label = np.array([[0, 3, 255], [20, 7, 0]])
    save_label_png(tmp_path / "m.png", label)
    assert Image.open(tmp_path / "m.png").mode == "P"
    np.testing.assert_array_equal(read_label(tmp_path / "m.png"), label)


def test_read_label_grey(tmp_path):
    label = np.array([[0, 80], [255, 5]], np.uint8)
    Image.fromarray(label).save(tmp_path / "l.png")
    out = read_label(tmp_path / "l.png")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, label)


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_read_label_rejects_colour_masks(tmp_path, mode):
    path = tmp_path / "colour.png"
    Image.new(mode, (4, 4)).save(path)
    with pytest.raises(ValueError, match="colour-coded masks are not class ids") as info:
        read_label(path)
    assert str(path) in str(info.value) and "make_coco_masks.py" in info.value.hint


@pytest.mark.parametrize("reader", [read_image, read_label])
def test_missing_file_names_path(tmp_path, reader):
    path = tmp_path / "nope" / "x.png"
    with pytest.raises(FileNotFoundError) as info:
        reader(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("reader", [read_image, read_label])
def test_corrupt_file_names_path(tmp_path, reader):
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(ValueError) as info:
        reader(path)
    assert str(path) in str(info.value)


def test_truncated_png_names_path(tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (64, 64, 3), np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="cut.png"):
        read_image(path)


def test_voc_palette_entries():
    palette = voc_palette()
    assert palette.shape == (256, 3) and palette.dtype == np.uint8
    expected = {0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0), 3: (128, 128, 0), 4: (0, 0, 128)}
    expected.update({15: (192, 128, 128), 20: (0, 64, 128), 255: (224, 224, 192)})
    for index, rgb in expected.items():
        assert tuple(palette[index]) == rgb
    assert len({tuple(c) for c in palette}) == 256


def test_colorize_and_saved_palette(tmp_path):
    label = np.array([[1, 2], [20, 255]])
    np.testing.assert_array_equal(colorize(label)[1, 0], [0, 64, 128])
    save_label_png(tmp_path / "x.png", label)
    stored = np.array(Image.open(tmp_path / "x.png").getpalette()[: 256 * 3], np.uint8).reshape(256, 3)
    np.testing.assert_array_equal(stored, voc_palette())
    with pytest.raises(ValueError):
        colorize(np.array([[256]]))


def test_class_tables():
    assert len(VOC_CLASSES) == 20 and VOC_CLASSES[0] == "aeroplane" and VOC_CLASSES[19] == "tvmonitor"
    assert len(COCO_CLASSES) == 80 and COCO_CLASSES[0] == "person" and COCO_CLASSES[-1] == "toothbrush"
    assert len(COCO_CATEGORY_IDS) == 80 and len(COCO_UNUSED_CATEGORY_IDS) == 10
    assert set(COCO_CATEGORY_IDS) | set(COCO_UNUSED_CATEGORY_IDS) == set(range(1, 91))
    # contiguous ids: 11 fire hydrant -> 11, 13 stop sign -> 12, 90 toothbrush -> 80
    assert COCO_CATEGORY_TO_CONTIGUOUS[11] == 11 and COCO_CATEGORY_TO_CONTIGUOUS[13] == 12
    assert COCO_CATEGORY_TO_CONTIGUOUS[90] == 80
    assert sorted(COCO_CATEGORY_TO_CONTIGUOUS.values()) == list(range(1, 81))
    # COCO -> VOC: airplane 5 -> 1, person 1 -> 15, chair 62 -> 9, couch 63 -> 18, tv 72 -> 20
    assert COCO_CATEGORY_TO_VOC[5] == 1 and COCO_CATEGORY_TO_VOC[1] == 15
    assert COCO_CATEGORY_TO_VOC[62] == 9 and COCO_CATEGORY_TO_VOC[63] == 18 and COCO_CATEGORY_TO_VOC[72] == 20
    assert sorted(COCO_CATEGORY_TO_VOC.values()) == list(range(1, 21))
