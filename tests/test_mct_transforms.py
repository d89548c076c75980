"""MCTformer's transforms (datasets/mct_transforms.py) against hand-computed expectations (spec §3.5).

Random-resized crop (its formula, bounds and central fallback), flip, ToTensor + Normalize, random
erasing (area, aspect, count, modes, probability), the evaluation resize + centre crop, determinism
from a seed, and the config rules.
"""

from __future__ import annotations

import dataclasses
import math
import random

import numpy as np
import pytest
from PIL import Image

from common.errors import ConfigError
from datasets import mct_transforms as mt
from datasets import rand_augment as ra

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


class Fraction:
    """A ``random``-style stub: ``uniform(a, b)`` = a + t·(b − a); ``randint(a, b)`` = a."""

    def __init__(self, t: float) -> None:
        self.t = t

    def uniform(self, a: float, b: float) -> float:
        return a + self.t * (b - a)

    def randint(self, a: int, b: int) -> int:
        return a


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A random RGB PIL image of size (width, height)."""
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (height, width, 3)).astype(np.uint8))


# ---- random-resized crop ------------------------------------------------------------------------------


def test_crop_box_formula():
    """t 0: area 0.08·10⁴ = 800, aspect 3/4: w = round(√600) = 24, h = round(√1066.7) = 33, at (0, 0)."""
    assert mt.crop_box(100, 100, [0.08, 1.0], [3 / 4, 4 / 3], Fraction(0.0)) == (0, 0, 33, 24)
    # t 0.5: area 0.54·10⁴, aspect exp(0) = 1: w = h = round(√5400) = 73
    assert mt.crop_box(100, 100, [0.08, 1.0], [3 / 4, 4 / 3], Fraction(0.5)) == (0, 0, 73, 73)


@pytest.mark.parametrize(
    ("width", "height", "box"),
    [
        (100, 100, (0, 0, 100, 100)),  # aspect within the range: the whole image
        (400, 100, (0, 133, 100, 133)),  # too wide: h = H, w = round(100·4/3) = 133, centred
        (100, 400, (133, 0, 133, 100)),  # too tall: w = W, h = round(100/(3/4)) = 133, centred
    ],
)
def test_crop_box_fallback(width, height, box):
    """t 1: area = W·H at aspect 4/3 never fits, so all 10 tries fail and the central box is used."""
    assert mt.crop_box(width, height, [0.08, 1.0], [3 / 4, 4 / 3], Fraction(1.0)) == box


def test_crop_box_bounds_and_placement():
    boxes = np.array(
        [mt.crop_box(1000, 1000, [0.08, 1.0], [3 / 4, 4 / 3], random.Random(s)) for s in range(3000)]
    )
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 1000).all() and (left + w <= 1000).all()
    area = h * w / 1000**2
    assert area.min() >= 0.08 - 0.002 and area.max() <= 1.0
    aspect = w / h
    assert aspect.min() >= 0.75 - 0.02 and aspect.max() <= 4 / 3 + 0.02
    assert 0.46 < np.mean(aspect < 1) < 0.54  # square image: the log-uniform aspect is symmetric about 1
    free = left / np.maximum(1000 - w, 1)
    assert 0.47 < free[w < 1000].mean() < 0.53  # left ~ U{0..W−w}


def test_crop_box_matches_timm_0412_draw_for_draw():
    """Boxes of timm 0.4.12 ``RandomResizedCropAndInterpolation.get_params`` after ``random.seed(seed)``,
    recorded once from the timm wheel's source (the same draws from ``random.Random(seed)``)."""
    record = [
        (0, 500, 375, (3, 5, 372, 432)), (1, 500, 375, (195, 32, 177, 216)), (2, 40, 300, (86, 5, 45, 35)),
        (3, 300, 20, (0, 136, 20, 27)), (4, 333, 500, (101, 122, 249, 198)),
    ]  # fmt: skip
    for seed, width, height, box in record:
        assert mt.crop_box(width, height, [0.08, 1.0], [3 / 4, 4 / 3], random.Random(seed)) == box


def test_random_resized_crop_resizes_the_box_bicubic():
    img = photo(60, 40)
    cfg = mt.AugmentConfig(crop_size=32)
    out = mt.random_resized_crop(img, cfg, Fraction(1.0))  # fallback: the whole image (aspect 1.5 > 4/3)
    # too wide (60/40 > 4/3): h = 40, w = round(40·4/3) = 53, left = (60 − 53) // 2 = 3
    assert mt.crop_box(60, 40, cfg.scale, cfg.ratio, Fraction(1.0)) == (0, 3, 40, 53)
    expected = img.crop((3, 0, 56, 40)).resize((32, 32), Image.BICUBIC)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(expected))


# ---- flip, colour jitter, normalisation ----------------------------------------------------------------


def test_hflip_exact_and_probability():
    img = photo(7, 5)
    flips = [mt.random_hflip(img, 0.5, random.Random(s)) for s in range(2000)]
    flipped = [f is not img for f in flips]
    assert 0.46 < np.mean(flipped) < 0.54
    mirrored = flips[flipped.index(True)]
    np.testing.assert_array_equal(np.asarray(mirrored), np.asarray(img)[:, ::-1])
    assert all(mt.random_hflip(img, 0.0, random.Random(s)) is img for s in range(50))


def test_color_jitter_factors_and_order():
    img = photo(8, 8)
    np.testing.assert_array_equal(np.asarray(mt.color_jitter(img, 0.0, random.Random(0))), np.asarray(img))
    grey = Image.new("RGB", (4, 4), (100, 100, 100))
    # on a flat grey image only brightness acts (contrast and saturation blend with the image itself)
    values = [np.asarray(mt.color_jitter(grey, 0.4, random.Random(s)))[0, 0, 0] for s in range(500)]
    assert min(values) >= 60 and max(values) <= 140  # 100·U(0.6, 1.4), truncated
    assert min(values) < 65 and max(values) > 135


def test_to_normalized_chw_hand_values():
    img = Image.fromarray(np.array([[[255, 0, 128]]], np.uint8))
    out = mt.to_normalized_chw(img, list(MEAN), list(STD))
    assert out.shape == (3, 1, 1) and out.dtype == np.float32
    expected = [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225]
    np.testing.assert_allclose(out[:, 0, 0], expected, rtol=1e-6)


def test_fill_colour_is_the_mean_in_bytes():
    assert mt.fill_colour(list(MEAN)) == (124, 116, 104)


# ---- random erasing ----------------------------------------------------------------------------------


def test_erase_boxes_area_aspect_and_count():
    for seed in range(1500):
        boxes = mt.erase_boxes(224, 224, 1, random.Random(seed))
        assert len(boxes) <= 1
        for top, left, h, w in boxes:
            assert 0 <= top and top + h <= 224 and 0 <= left and left + w <= 224 and h < 224 and w < 224
            assert 0.02 - 0.002 <= h * w / 224**2 <= 1 / 3 + 0.003
            assert 0.3 - 0.02 <= h / w <= 1 / 0.3 + 0.1
    counts = [len(mt.erase_boxes(224, 224, 3, random.Random(s))) for s in range(900)]
    assert set(counts) == {1, 2, 3} and all(200 < counts.count(n) < 400 for n in (1, 2, 3))  # U{1..3}
    triples = [b for s in range(300) if len(b := mt.erase_boxes(224, 224, 3, random.Random(s))) == 3]
    assert max(h * w for boxes in triples for _, _, h, w in boxes) <= 224**2 / 9 + 224  # area (1/3)/n, n 3


def test_erase_box_formula():
    """t 0: area 0.02·100² = 200, aspect 0.3: h = round(√60) = 8, w = round(√666.7) = 26."""
    assert mt.erase_boxes(100, 100, 1, Fraction(0.0)) == [(0, 0, 8, 26)]
    # t 1: area 33.3, aspect 1/0.3: h = round(√111.1) = 11 >= 10 on all 10 tries: the box is skipped
    assert mt.erase_boxes(10, 10, 1, Fraction(1.0)) == []


def test_random_erasing_modes_and_probability():
    x = np.random.RandomState(0).randn(3, 64, 64).astype(np.float32)
    fired = [
        not np.array_equal(mt.random_erasing(x, 0.25, "pixel", 1, random.Random(s)), x) for s in range(2000)
    ]
    assert 0.21 < np.mean(fired) < 0.29  # p 0.25 (binomial sd 0.0097)
    seed = fired.index(True)
    for mode in ("pixel", "rand", "const"):
        out = mt.random_erasing(x, 1.0, mode, 1, random.Random(seed))
        ((top, left, h, w),) = mt.erase_boxes(64, 64, 1, _after_first_draw(seed))
        inside = np.zeros((64, 64), bool)
        inside[top : top + h, left : left + w] = True
        np.testing.assert_array_equal(out[:, ~inside], x[:, ~inside])
        patch = out[:, inside]
        if mode == "const":
            assert (patch == 0).all()
        elif mode == "rand":
            assert (patch == patch[:, :1]).all() and not np.array_equal(patch, x[:, inside])
        else:
            assert abs(patch.mean()) < 4 / math.sqrt(patch.size) + 0.05 and 0.8 < patch.std() < 1.2
    again = [mt.random_erasing(x, 0.25, "pixel", 1, random.Random(seed)) for _ in range(2)]
    np.testing.assert_array_equal(again[0], again[1])
    assert not np.array_equal(again[0], x)


def test_erasing_matches_timm_0412_draw_for_draw():
    """Erased-pixel counts of timm 0.4.12 ``RandomErasing(1.0, mode="const", max_count=3)`` on a
    (1, 56, 72) tensor after ``random.seed(seed)``, recorded once from the timm wheel's source."""
    record = {0: 699, 1: 400, 2: 204, 3: 598, 4: 992, 5: 620, 6: 700, 7: 574}
    for seed, erased in record.items():
        out = mt.random_erasing(np.ones((1, 56, 72), np.float32), 1.0, "const", 3, random.Random(seed))
        assert int((out == 0).sum()) == erased, seed


def _after_first_draw(seed: int) -> random.Random:
    """``random.Random(seed)`` after the probability draw of ``random_erasing``."""
    rng = random.Random(seed)
    rng.random()
    return rng


# ---- whole transforms ---------------------------------------------------------------------------------


def test_train_transform_shape_and_seed():
    img = photo(90, 70)
    cfg = mt.AugmentConfig(crop_size=48)
    a, b, c = (mt.train_transform(img, cfg, random.Random(s)) for s in (3, 3, 4))
    assert a.shape == (3, 48, 48) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert mt.train_transform(img, cfg, random).shape == (3, 48, 48)  # the global generator works too


def test_train_transform_without_policy_is_crop_flip_jitter():
    """With auto_augment "" and no jitter or erasing, the output is the crop, maybe flipped, normalised."""
    img = photo(50, 50)
    cfg = mt.AugmentConfig(crop_size=16, auto_augment="", color_jitter=0.0, reprob=0.0, hflip=0.0)
    rng = random.Random(9)
    crop = mt.random_resized_crop(img, cfg, random.Random(9))
    np.testing.assert_array_equal(
        mt.train_transform(img, cfg, rng), mt.to_normalized_chw(crop, cfg.mean, cfg.std)
    )


def test_train_transform_order():
    """Crop, flip, RandAugment, normalise, erase: in that order, from one stream."""
    img = photo(80, 60)
    cfg = mt.AugmentConfig(crop_size=32, reprob=1.0)
    for seed in range(5):
        rng = random.Random(seed)
        step = mt.random_hflip(mt.random_resized_crop(img, cfg, rng), cfg.hflip, rng)
        policy = ra.parse_policy(cfg.auto_augment)
        step = ra.rand_augment(step, policy, (124, 116, 104), Image.BICUBIC, rng)
        step = mt.random_erasing(mt.to_normalized_chw(step, cfg.mean, cfg.std), 1.0, "pixel", 1, rng)
        np.testing.assert_array_equal(mt.train_transform(img, cfg, random.Random(seed)), step)


@pytest.mark.parametrize(
    ("size", "resized", "corner"),
    [((300, 200), (384, 256), (80, 16)), ((256, 260), None, (16, 18)), ((256, 257), None, (16, 17))],
)
def test_eval_transform_resize_and_centre_crop(size, resized, corner):
    """Short side -> int(256/224·224) = 256, long side int(256·long/short); crop at int((X − 224 + 1)/2)
    (torchvision 0.8: a margin of 33 starts the crop at 17, where round(16.5) would give 16)."""
    img = photo(*size)
    cfg = mt.AugmentConfig()
    scaled = img.resize(resized, Image.BICUBIC) if resized else img
    left, top = corner
    expected = mt.to_normalized_chw(scaled.crop((left, top, left + 224, top + 224)), cfg.mean, cfg.std)
    np.testing.assert_array_equal(mt.eval_transform(img, cfg), expected)


# ---- config --------------------------------------------------------------------------------------------


def test_config_defaults_are_the_recipe_and_plain_typed():
    cfg = mt.AugmentConfig()
    assert (cfg.crop_size, cfg.scale, cfg.interpolation, cfg.hflip) == (224, [0.08, 1.0], "bicubic", 0.5)
    assert cfg.ratio == pytest.approx([0.75, 4 / 3])
    assert (cfg.auto_augment, cfg.reprob, cfg.remode, cfg.recount) == (
        "rand-m9-mstd0.5-inc1",
        0.25,
        "pixel",
        1,
    )
    assert all(f.type in ("int", "float", "str", "bool", "list[float]") for f in dataclasses.fields(cfg))
    assert all(holds for holds, _ in mt.augment_checks(cfg))


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("scale", [0.5, 0.1], "augment.scale"),
        ("interpolation", "lanczos", "augment.interpolation"),
        ("remode", "noise", "augment.remode"),
        ("reprob", 1.5, "augment.reprob"),
        ("auto_augment", "rand-m9-w0", "augment.auto_augment"),
    ],
)
def test_config_errors_name_the_key(key, value, message):
    cfg = dataclasses.replace(mt.AugmentConfig(), **{key: value})
    with pytest.raises(ConfigError, match=message):
        mt.check_augment(cfg)
