"""RandAugment ``rand-m9-mstd0.5-inc1`` (datasets/rand_augment.py) against the definitions of timm 0.4.12.

Each op is compared on a small image with a numpy computation of what it does; the level functions
with hand-computed arguments at magnitude 9; the draws (op choice, p 0.5, magnitude noise, sign)
with distribution checks whose bounds fail for a wrong probability.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from PIL import Image

from common.errors import ConfigError
from datasets import rand_augment as ra

FILL = (124, 116, 104)
BICUBIC = Image.BICUBIC
TIMM_INCREASING = [
    "AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing",
    "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing",
    "ShearX", "ShearY", "TranslateXRel", "TranslateYRel",
]  # fmt: skip


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    """(12, 10, 3) uint8 random image (H 12, W 10)."""
    return np.random.RandomState(0).randint(0, 256, (12, 10, 3)).astype(np.uint8)


def run(op, array: np.ndarray, *args) -> np.ndarray:
    """Apply a PIL op to an (H, W, 3) uint8 array; int64 result."""
    return np.asarray(op(Image.fromarray(array), *args)).astype(np.int64)


def luma(a: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma as PIL's "L" conversion: (19595 R + 38470 G + 7471 B + 2^15) >> 16."""
    a = a.astype(np.int64)
    return (a[..., 0] * 19595 + a[..., 1] * 38470 + a[..., 2] * 7471 + 0x8000) >> 16


class ScriptedRng:
    """A ``random``-style generator that returns scripted values (``random``, ``gauss``, ``randrange``)."""

    def __init__(self, randoms=(), gausses=(), ranges=()) -> None:
        self.randoms, self.gausses, self.ranges = list(randoms), list(gausses), list(ranges)

    def random(self) -> float:
        return self.randoms.pop(0)

    def gauss(self, mu: float, sigma: float) -> float:
        return self.gausses.pop(0)

    def randrange(self, n: int) -> int:
        return self.ranges.pop(0)


# ---- parsing and op sets -----------------------------------------------------------------------------


def test_parse_authors_policy():
    assert ra.parse_policy("rand-m9-mstd0.5-inc1") == ra.RandAugmentPolicy(9, 2, 0.5, True)
    assert ra.parse_policy("rand-m5-n3") == ra.RandAugmentPolicy(5, 3, 0.0, False)
    assert ra.parse_policy("rand-m9-inc0").increasing  # timm 0.4.12 tests bool("0"), which is True


@pytest.mark.parametrize("text", ["auto-m9", "rand-m9-w0", "rand-m9.5", "rand-m11", "rand-mx"])
def test_parse_rejects(text):
    with pytest.raises(ConfigError, match="augment.auto_augment"):
        ra.parse_policy(text)


def test_op_sets_are_timms():
    assert ra.op_names(True) == TIMM_INCREASING
    plain = [n.replace("Increasing", "") for n in TIMM_INCREASING]
    assert ra.op_names(False) == plain
    assert set(ra.OPS) == set(TIMM_INCREASING) | set(plain)


# ---- each op against its definition -------------------------------------------------------------------


def test_invert_posterize_solarize(rgb):
    a = rgb.astype(np.int64)
    np.testing.assert_array_equal(run(ra.invert, rgb), 255 - a)
    np.testing.assert_array_equal(run(ra.posterize, rgb, 0), 0 * a)  # increasing level at m 10
    for bits in (1, 3):
        np.testing.assert_array_equal(run(ra.posterize, rgb, bits), a & (0xFF ^ (2 ** (8 - bits) - 1)))
    np.testing.assert_array_equal(run(ra.posterize, rgb, 8), a)
    np.testing.assert_array_equal(run(ra.solarize, rgb, 100), np.where(a >= 100, 255 - a, a))
    np.testing.assert_array_equal(run(ra.solarize, rgb, 256), a)  # increasing level 0: unchanged
    np.testing.assert_array_equal(
        run(ra.solarize_add, rgb, 99), np.where(a < 128, np.minimum(a + 99, 255), a)
    )


def test_auto_contrast_and_equalize(rgb):
    a = rgb.astype(np.int64)
    lo, hi = a.min(axis=(0, 1)), a.max(axis=(0, 1))
    np.testing.assert_array_equal(run(ra.auto_contrast, rgb), (a - lo) * 255 // (hi - lo))
    flat = np.full((4, 4, 3), 77, np.uint8)
    np.testing.assert_array_equal(run(ra.auto_contrast, flat), flat)

    def equalized(channel: np.ndarray) -> np.ndarray:
        """PIL's equalisation: step = (N − count of the last level) // 255; lut = (step//2 + cdf⁻) // step."""
        hist = np.bincount(channel.ravel(), minlength=256)
        step = (hist.sum() - hist[hist > 0][-1]) // 255
        if step == 0:
            return channel
        lut = (step // 2 + np.concatenate([[0], np.cumsum(hist)[:-1]])) // step
        return np.minimum(lut, 255)[channel]

    big = np.random.RandomState(1).randint(0, 256, (40, 40, 3)).astype(np.uint8)  # step 6
    big[..., 2] //= 4  # a channel that uses a quarter of the range
    expected = np.stack([equalized(big[..., c]) for c in range(3)], axis=-1)
    np.testing.assert_array_equal(run(ra.equalize, big), expected)
    np.testing.assert_array_equal(run(ra.equalize, rgb), a)  # 120 pixels: step 0, unchanged


def test_enhance_ops_blend_with_their_degenerate(rgb):
    a = rgb.astype(np.int64)
    grey = luma(rgb)[..., None]
    np.testing.assert_array_equal(run(ra.brightness, rgb, 1.5), np.clip(np.floor(1.5 * a), 0, 255))
    np.testing.assert_array_equal(run(ra.color, rgb, 0.5), np.floor(grey + 0.5 * (a - grey)))
    mean = int(grey.mean() + 0.5)
    np.testing.assert_array_equal(
        run(ra.contrast, rgb, 1.5), np.clip(np.floor(mean + 1.5 * (a - mean)), 0, 255)
    )
    kernel = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]])
    smooth = sum(kernel[dy, dx] * a[dy : dy + 10, dx : dx + 8] for dy in range(3) for dx in range(3)) / 13
    sharp0 = run(ra.sharpness, rgb, 0.0)
    np.testing.assert_array_equal(sharp0[1:-1, 1:-1], np.floor(smooth + 0.5))
    np.testing.assert_array_equal(sharp0[[0, -1]], a[[0, -1]])  # the border keeps the original
    for op in (ra.brightness, ra.color, ra.contrast, ra.sharpness):
        np.testing.assert_array_equal(run(op, rgb, 1.0), a)


def test_geometric_ops_shift_and_fill(rgb):
    fill = np.array(FILL)
    moved_x = np.tile(fill, (12, 10, 1))
    moved_x[:, :7] = rgb[:, 3:]  # pct 0.3 of width 10: content moves left by 3 px
    np.testing.assert_array_equal(run(ra.translate_x_rel, rgb, 0.3, FILL, BICUBIC), moved_x)
    moved_y = np.tile(fill, (12, 10, 1))
    moved_y[3:] = rgb[:-3]  # pct −0.25 of height 12: content moves down by 3 px
    np.testing.assert_array_equal(run(ra.translate_y_rel, rgb, -0.25, FILL, BICUBIC), moved_y)
    # shear_x: output (x, y) samples input (x + 2·y, y) in continuous coordinates; with pixel centres
    # at +0.5 that is pixel x + 2y + 1 of row y
    sheared = np.tile(fill, (12, 10, 1))
    for y in range(12):
        for x in range(10):
            if x + 2 * y + 1 < 10:
                sheared[y, x] = rgb[y, x + 2 * y + 1]
    np.testing.assert_array_equal(run(ra.shear_x, rgb, 2.0, FILL, BICUBIC), sheared)
    np.testing.assert_array_equal(
        run(ra.shear_y, rgb.transpose(1, 0, 2).copy(), 2.0, FILL, BICUBIC), sheared.transpose(1, 0, 2)
    )


def test_rotate(rgb):
    square = np.ascontiguousarray(rgb[:10])
    np.testing.assert_array_equal(run(ra.rotate, square, 90, FILL, BICUBIC), np.rot90(square))  # CCW
    np.testing.assert_array_equal(run(ra.rotate, square, -90, FILL, BICUBIC), np.rot90(square, -1))
    turned = run(ra.rotate, np.zeros((21, 21, 3), np.uint8), 30, FILL, BICUBIC)
    np.testing.assert_array_equal(turned[0, 0], FILL)  # a corner leaves the rotated square: filled
    np.testing.assert_array_equal(turned[10, 10], 0)


# ---- level functions and draws ------------------------------------------------------------------------


def test_levels_at_magnitude_9():
    """m = 9: rotate 27°, shear 0.27, translate 0.405, enhance 1 ± 0.81, posterize 4 − ⌊3.6⌋ = 1 bit,
    solarize 256 − ⌊230.4⌋ = 26, solarize-add ⌊99.0⌋ = 99; sign − when random() > 0.5."""
    expected = {
        "Rotate": 27.0, "ShearX": 0.27, "TranslateXRel": 0.405, "ColorIncreasing": 1.81,
        "PosterizeIncreasing": 1, "SolarizeIncreasing": 26, "SolarizeAdd": 99, "Posterize": 3,
        "Solarize": 230, "Color": 1.72,
    }  # fmt: skip
    for name, value in expected.items():
        (arg,) = ra.OPS[name][1](9.0, ScriptedRng(randoms=[0.3]))
        assert arg == pytest.approx(value), name
    assert ra.OPS["Rotate"][1](9.0, ScriptedRng(randoms=[0.7]))[0] == pytest.approx(-27.0)
    assert ra.OPS["BrightnessIncreasing"][1](9.0, ScriptedRng(randoms=[0.7]))[0] == pytest.approx(0.19)
    assert ra.OPS["Equalize"][1](9.0, ScriptedRng()) == ()


def test_magnitude_noise_is_clipped():
    assert ra.noisy_magnitude(9, 0.5, ScriptedRng(gausses=[12.3])) == 10.0
    assert ra.noisy_magnitude(9, 0.5, ScriptedRng(gausses=[-1.0])) == 0.0
    assert ra.noisy_magnitude(9, 0.0, ScriptedRng()) == 9  # no draw without noise
    draws = np.array([ra.noisy_magnitude(9, 0.5, random.Random(s)) for s in range(4000)])
    assert draws.max() == 10.0 and draws.min() >= 0.0
    # P(N(9, 0.5) > 10) = P(Z > 2) = 0.0228: all those land on 10 exactly; as many fall below 8
    assert 0.013 < np.mean(draws == 10.0) < 0.033
    assert 0.013 < np.mean(draws < 8.0) < 0.033
    assert abs(np.median(draws) - 9.0) < 0.05


def test_apply_op_draw_order_and_probability(rgb):
    """random() <= 0.5 applies; then gauss; then the sign draw."""
    policy = ra.parse_policy("rand-m9-mstd0.5-inc1")
    img = Image.fromarray(rgb)
    assert ra.apply_op(img, "Invert", policy, FILL, BICUBIC, ScriptedRng(randoms=[0.51])) is img
    rng = ScriptedRng(randoms=[0.5, 0.9], gausses=[10.0])  # applied, m 10, sign −
    out = ra.apply_op(img, "TranslateXRel", policy, FILL, BICUBIC, rng)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(ra.translate_x_rel(img, -0.45, FILL, BICUBIC)))
    assert not rng.randoms and not rng.gausses
    applied = [
        ra.apply_op(img, "Invert", policy, FILL, BICUBIC, random.Random(s)) is not img for s in range(3000)
    ]
    assert 0.46 < np.mean(applied) < 0.54  # p 0.5 (binomial sd 0.009)


def test_op_choice_uniform_with_replacement():
    policy = ra.parse_policy("rand-m9-mstd0.5-inc1")
    picks = [ra.choose_ops(policy, random.Random(s)) for s in range(3000)]
    assert all(len(p) == 2 for p in picks)
    counts = np.array([sum(p.count(name) for p in picks) for name in TIMM_INCREASING])
    assert counts.sum() == 6000 and counts.min() > 300 and counts.max() < 500  # 400 each expected
    same = np.mean([p[0] == p[1] for p in picks])
    assert 0.04 < same < 0.095  # with replacement: 1/15 = 0.067; without it would be 0


def test_rand_augment_is_a_function_of_the_seed(rgb):
    policy = ra.parse_policy("rand-m9-mstd0.5-inc1")
    img = Image.fromarray(rgb)
    outs = [np.asarray(ra.rand_augment(img, policy, FILL, BICUBIC, random.Random(s))) for s in (5, 5, 6)]
    np.testing.assert_array_equal(outs[0], outs[1])
    assert outs[0].shape == rgb.shape
    changed = [
        not np.array_equal(np.asarray(ra.rand_augment(img, policy, FILL, BICUBIC, random.Random(s))), rgb)
        for s in range(400)
    ]
    # unchanged only when both ops are skipped (0.25) or hit a no-op: well under 0.35
    assert 0.65 < np.mean(changed) < 0.85


# (seed, op indices that np.random.RandomState(seed).randint(0, 15, 2) draws, sum and sum of squares of
# the output) of timm 0.4.12's rand_augment_transform("rand-m9-mstd0.5-inc1", fill (124, 116, 104),
# bicubic) on the (24, 20, 3) image of RandomState(0) after random.seed(seed) and np.random.seed(seed);
# recorded once from the timm 0.4.12 wheel's auto_augment.py with Pillow 13 (timm cannot be imported here)
TIMM_0412_RECORD = [
    (1, [5, 11], 167595, 24905589), (3, [10, 8], 180631, 25813381), (4, [10, 14], 176346, 28014888),
    (7, [4, 9], 11866, 201722), (8, [3, 4], 75008, 9601024), (11, [9, 0], 259823, 56846133),
    (12, [11, 11], 173995, 25416981), (13, [2, 0], 186619, 31470093), (21, [9, 8], 265233, 49468229),
    (25, [4, 14], 121636, 14022750), (28, [1, 9], 313328, 75433272), (29, [5, 3], 175613, 26356219),
]  # fmt: skip


def test_ops_match_timm_0412_draw_for_draw():
    """Fed timm's draws (op choice from numpy, the rest from ``random``), the ops give timm's images."""
    image = Image.fromarray(np.random.RandomState(0).randint(0, 256, (24, 20, 3)).astype(np.uint8))
    policy = ra.parse_policy("rand-m9-mstd0.5-inc1")
    for seed, indices, total, squares in TIMM_0412_RECORD:
        assert np.random.RandomState(seed).randint(0, 15, 2).tolist() == indices
        rng, out = random.Random(seed), image
        for index in indices:
            out = ra.apply_op(out, ra.INCREASING_OPS[index], policy, FILL, BICUBIC, rng)
        values = np.asarray(out).astype(np.int64)
        assert (int(values.sum()), int((values**2).sum())) == (total, squares), seed
