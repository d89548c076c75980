"""Training augmentation (datasets.transforms): crop box semantics, draw order and statistics."""

from __future__ import annotations

import random

import numpy as np
import pytest

from datasets.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    normalize,
    random_crop,
    random_fliplr,
    random_rescale,
    train_transform,
)

NORMALISED_ZERO = np.array([-2.1179, -2.0357, -1.8044], np.float32)


def test_normalize_hand_values():
    image = np.array([[[0, 0, 0], [123.675, 116.28, 103.53], [255, 255, 255]]], np.float32)
    out = normalize(image)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0], NORMALISED_ZERO, atol=1e-4)
    np.testing.assert_allclose(out[0, 1], 0.0, atol=1e-6)
    np.testing.assert_allclose(out[0, 2], [2.2489, 2.4286, 2.6400], atol=1e-4)  # (255 − mean) / std


def test_random_crop_matches_hand_derivation():
    """Re-derive the crop from the documented draw order with fresh generators."""
    image = np.arange(4 * 6 * 3, dtype=np.float32).reshape(4, 6, 3) + 1  # no zero pixel
    crop, box = random_crop(image, 5, random.Random(11), np.random.RandomState(11))
    np_rng, py_rng = np.random.RandomState(11), random.Random(11)
    h_pad, w_pad = np_rng.randint(5 - 4 + 1), np_rng.randint(6 - 6 + 1)  # canvas 5 × 6
    h_start, w_start = py_rng.randrange(0, 5 - 5 + 1), py_rng.randrange(0, 6 - 5 + 1)
    canvas = np.zeros((5, 6, 3), np.float32)
    canvas[h_pad : h_pad + 4, w_pad : w_pad + 6] = image
    np.testing.assert_array_equal(crop, canvas[h_start : h_start + 5, w_start : w_start + 5])
    expected_box = [h_pad, h_pad + 4, max(w_pad - w_start, 0), min(w_pad + 6 - w_start, 5)]
    np.testing.assert_array_equal(box, expected_box)
    assert box.dtype == np.int64 and crop.dtype == np.float32


@pytest.mark.parametrize(
    ("height", "width", "extent"),
    [(30, 20, (30, 20)), (90, 120, (64, 64)), (40, 100, (40, 64)), (100, 40, (64, 40)), (64, 64, (64, 64))],
)
def test_img_box_marks_exactly_the_real_pixels(height, width, extent):
    """Constant image: inside the box the normalised colour, outside exactly the normalised zero."""
    crop_size = 64
    image = np.empty((height, width, 3), np.uint8)
    image[...] = (200, 100, 50)
    colour = normalize(np.array([[[200, 100, 50]]], np.float32))[0, 0]
    zero = normalize(np.zeros((1, 1, 3), np.float32))[0, 0]
    for seed in range(25):
        crop, box = random_crop(image, crop_size, random.Random(seed), np.random.RandomState(seed))
        out = normalize(crop)
        h0, h1, w0, w1 = box
        assert 0 <= h0 < h1 <= crop_size and 0 <= w0 < w1 <= crop_size
        assert (h1 - h0, w1 - w0) == extent
        inside = np.zeros((crop_size, crop_size), bool)
        inside[h0:h1, w0:w1] = True
        np.testing.assert_array_equal(out[inside], np.broadcast_to(colour, out[inside].shape))
        np.testing.assert_array_equal(out[~inside], np.broadcast_to(zero, out[~inside].shape))
        np.testing.assert_allclose(zero, NORMALISED_ZERO, atol=1e-4)


def test_random_rescale_size_and_ratio_statistics():
    image = np.full((50, 100, 3), 77, np.uint8)
    rng, replay = random.Random(0), random.Random(0)
    ratios = []
    for _ in range(1500):
        out = random_rescale(image, (0.5, 2.0), rng)
        ratio = replay.uniform(0.5, 2.0)
        assert out.shape == (int(50 * ratio), int(100 * ratio), 3)
        assert out.dtype == np.float32
        ratios.append(out.shape[1] / 100)
    np.testing.assert_array_equal(out, 77.0)  # bilinear keeps a constant image constant
    ratios = np.array(ratios)
    assert 0.5 <= ratios.min() < 0.55 and 1.95 < ratios.max() <= 2.0
    assert abs(ratios.mean() - 1.25) < 0.04  # U(0.5, 2) mean; standard error 0.011


def test_random_rescale_rejects_float_input():
    with pytest.raises(TypeError):
        random_rescale(np.zeros((4, 4, 3), np.float32), (0.5, 2.0), random.Random(0))


def test_random_fliplr_rate_and_content():
    image = np.arange(2 * 5 * 3).reshape(2, 5, 3)
    rng = random.Random(3)
    flips = 0
    for _ in range(4000):
        out = random_fliplr(image, rng)
        if not np.array_equal(out, image):
            np.testing.assert_array_equal(out, image[:, ::-1])
            flips += 1
    assert abs(flips / 4000 - 0.5) < 0.03


def test_train_transform_statistics_and_box_bounds():
    image = np.full((120, 90, 3), 255, np.uint8)
    py_rng, np_rng = random.Random(5), np.random.RandomState(5)
    for _ in range(200):
        out, box = train_transform(image, 96, (0.5, 2.0), True, py_rng, np_rng)
        assert out.shape == (3, 96, 96) and out.dtype == np.float32
        h0, h1, w0, w1 = box
        assert 0 <= h0 < h1 <= 96 and 0 <= w0 < w1 <= 96
        white = (255 - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
        np.testing.assert_allclose(out[:, h0:h1, w0:w1].mean(axis=(1, 2)), white, atol=1e-5)


def test_train_transform_equals_composition_in_order():
    image = np.random.RandomState(0).randint(0, 256, (37, 53, 3)).astype(np.uint8)
    out, box = train_transform(image, 48, (0.5, 2.0), True, random.Random(9), np.random.RandomState(9))
    py_rng, np_rng = random.Random(9), np.random.RandomState(9)
    step = random_fliplr(random_rescale(image, (0.5, 2.0), py_rng), py_rng)
    crop, expected_box = random_crop(step, 48, py_rng, np_rng)
    np.testing.assert_array_equal(out, normalize(crop).transpose(2, 0, 1))
    np.testing.assert_array_equal(box, expected_box)


@pytest.fixture
def restore_global_rngs():
    """Give the global ``random`` / ``np.random`` states back after the test."""
    py_state, np_state = random.getstate(), np.random.get_state()
    yield
    random.setstate(py_state)
    np.random.set_state(np_state)


def test_train_transform_global_generators_match_seeded_instances(restore_global_rngs):
    image = np.random.RandomState(1).randint(0, 256, (40, 30, 3)).astype(np.uint8)
    random.seed(123)
    np.random.seed(123)
    out_global, box_global = train_transform(image, 32, (0.5, 2.0), True, random, np.random)
    out_local, box_local = train_transform(
        image, 32, (0.5, 2.0), True, random.Random(123), np.random.RandomState(123)
    )
    np.testing.assert_array_equal(out_global, out_local)
    np.testing.assert_array_equal(box_global, box_local)
