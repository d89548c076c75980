"""A small generated dataset in exact VOC layout, for ``make demo`` and end-to-end tests.

Four foreground classes that differ in shape and in the colour of their core: discs with a red core,
squares with a green one, triangles with an orange one and crosses with a yellow one (num_classes 5 with
background). Like the objects of real photographs, only part of each object says which class it is:
the class colour is full in a core around a random inner point and fades into a pale rim that every
class shares (35 % of the class colour left), so a CAM, which follows the most discriminative
evidence, covers the core well and the rim weakly; the rim has to be reached by AFA's affinity.
Each image (sides 144..224 px, not square) shows 1-4 objects of 1-3 classes, each sized 25-55 % of
the shorter side and covering at most 15 % of itself and of every earlier object, with per-object
colour jitter and a striped, noisy texture, on a cluttered, nearly grey background (stripes, blobs,
noise). Masks are palette PNGs with a 2-3 px void (255) band on every object boundary, like VOC.
Images are JPEG quality 95.

Written under ``out_dir``: ``JPEGImages/<id>.jpg``, ``SegmentationClassAug/<id>.png``,
``train.txt``, ``train_aug.txt`` (= train), ``val.txt``, ``cls_labels.txt`` (classes present in
the final mask), ``class_names.txt`` and ``demo_version.txt`` (:data:`DEMO_DATA_VERSION`, so that a
set written by an older generator is recognised and replaced). Every image comes from its own
generator seeded with (seed, split, index), so the same seed gives byte-identical files.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from datasets.classes import IGNORE_INDEX, save_label_png
from datasets.voc import CLASS_NAMES_FILE, CLS_LABELS_FILE, write_cls_labels
from datasets.voc_labels import mask_class_indices

DEMO_CLASSES: tuple[str, ...] = ("disc", "square", "triangle", "cross")
DEMO_NUM_CLASSES = len(DEMO_CLASSES) + 1
# 1: 96-160 px, objects 20-50 %; 2: 144-224 px, 25-55 %, uniform class colour
DEMO_DATA_VERSION = "3: class colour in a core fading into a shared pale rim; grey background"
DEMO_VERSION_FILE = "demo_version.txt"
# Core colours keep the blue channel low: the demo network learned a class with a blue core (at any
# class index), and equally one with a magenta or a cyan core, far worse than the others (issue 13).
_CLASS_RGB = np.array([(205, 45, 40), (45, 165, 60), (240, 125, 25), (230, 205, 35)], dtype=np.float32)
_RIM_RGB = np.array((230, 230, 230), dtype=np.float32)  # the pale rim every class fades into
_CORE = (0.15, 0.5)  # class colour in full up to 0.15 · size from the core point, fading until 0.5
_RIM_WEIGHT = 0.35  # share of the class colour that is left in the rim
_BG_TINT = (2, 2)  # per-channel tint of the background base and blobs: nearly grey
_SIDE_RANGE = (144, 224)
_OBJECT_FRACTION = (0.25, 0.55)
_MAX_OVERLAP = 0.15
# circumradius / size: disc, square (side 0.85·size), triangle (side 1.3·size), cross (bars size × 0.4·size)
_CIRCUMRADIUS = (0.5, 0.85 / np.sqrt(2), 1.3 / np.sqrt(3), np.sqrt(0.25 + 0.04))
_SPLIT_CODES = {"train": 0, "val": 1}


@dataclass
class DemoSummary:
    """What :func:`write_demo_dataset` wrote."""

    num_train: int
    num_val: int
    num_objects: int
    seconds: float


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Low-saturation clutter: grey base, oriented stripes, soft blobs and noise. (H, W, 3) float32."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(70, 170) + rng.uniform(-_BG_TINT[0], _BG_TINT[0], size=3)
    angle, period = rng.uniform(0, np.pi), rng.uniform(6, 24)
    stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
    image = base + rng.uniform(5, 18) * stripes[..., None]
    for _ in range(rng.integers(2, 6)):
        cy, cx, radius = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(8, 35)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2))
        tint = rng.uniform(-40, 40) + rng.uniform(-_BG_TINT[1], _BG_TINT[1], size=3)
        image += blob[..., None] * tint
    image += rng.normal(0, 5, size=image.shape)
    return image.astype(np.float32)


def _polygon(center: np.ndarray, radius: float, angles: np.ndarray) -> np.ndarray:
    """Integer vertices at ``radius`` around ``center`` for the given angles. (N, 2) int32 (x, y)."""
    points = center + radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return np.round(points).astype(np.int32)


def _shape_mask(rng: np.random.Generator, cls: int, height: int, width: int, size: float) -> np.ndarray:
    """One filled shape of class ``cls`` and side/diameter ``size``, placed fully inside the image.

    Disc: diameter ``size`` (slightly elliptic); square: side 0.85·size; triangle: equilateral with
    side 1.3·size (about the area of the others); cross: two bars size × 0.4·size. Each is rotated at random.

    Returns:
        (H, W) bool mask.
    """
    radius = size * _CIRCUMRADIUS[cls]
    center = np.array([rng.uniform(radius, width - radius), rng.uniform(radius, height - radius)])
    theta = rng.uniform(0, 2 * np.pi)
    canvas = np.zeros((height, width), dtype=np.uint8)
    if cls == 0:  # disc
        axes = (int(round(radius)), int(round(radius * rng.uniform(0.85, 1.0))))
        cv2.ellipse(canvas, tuple(int(round(c)) for c in center), axes, np.degrees(theta), 0, 360, 1, -1)
    elif cls == 1:  # square
        cv2.fillPoly(canvas, [_polygon(center, radius, theta + np.pi / 2 * np.arange(4))], 1)
    elif cls == 2:  # triangle
        cv2.fillPoly(canvas, [_polygon(center, radius, theta + 2 * np.pi / 3 * np.arange(3))], 1)
    else:  # cross
        half = size / 2
        arm = np.array([[half, 0.2 * size], [-half, 0.2 * size], [-half, -0.2 * size], [half, -0.2 * size]])
        for rot in (theta, theta + np.pi / 2):
            matrix = np.array([[np.cos(rot), -np.sin(rot)], [np.sin(rot), np.cos(rot)]])
            cv2.fillPoly(canvas, [np.round(center + arm @ matrix.T).astype(np.int32)], 1)
    return canvas.astype(bool)


def _class_weight(rng: np.random.Generator, mask: np.ndarray, size: float) -> np.ndarray:
    """How much of the class colour each pixel shows: 1 in a core around a random point of the inner
    half of ``mask`` (by distance to its edge), fading linearly to _RIM_WEIGHT between _CORE[0] and
    _CORE[1] · size from that point. (H, W) float32 in [_RIM_WEIGHT, 1]."""
    inner = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 3)
    ys, xs = np.nonzero(inner >= 0.5 * inner.max())
    pick = int(rng.integers(ys.size))
    yy, xx = np.mgrid[0 : mask.shape[0], 0 : mask.shape[1]].astype(np.float32)
    dist = np.hypot(yy - ys[pick], xx - xs[pick])
    near, far = _CORE[0] * size, _CORE[1] * size
    fade = np.clip((far - dist) / (far - near), 0, 1)
    return (_RIM_WEIGHT + (1 - _RIM_WEIGHT) * fade).astype(np.float32)


def _object_texture(rng: np.random.Generator, cls: int, weight: np.ndarray) -> np.ndarray:
    """Jittered class colour blended by ``weight`` (H, W) into the pale rim colour every class shares,
    with stripes and noise. (H, W, 3) float32."""
    height, width = weight.shape
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    colour = _CLASS_RGB[cls] + rng.uniform(-25, 25, size=3)
    rim = _RIM_RGB + rng.uniform(-20, 20, size=3)
    base = weight[..., None] * colour + (1 - weight[..., None]) * rim
    angle, period = rng.uniform(0, np.pi), rng.uniform(4, 12)
    stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
    shade = 1 + rng.uniform(0.05, 0.15) * stripes
    return (base * shade[..., None] + rng.normal(0, 6, size=(height, width, 3))).astype(np.float32)


def _void_border(label: np.ndarray, width: int) -> np.ndarray:
    """Set a ``width`` (2 or 3) px band on every boundary between different ids to 255."""
    kernel = np.ones((3, 3), dtype=np.uint8)
    edge = cv2.dilate(label, kernel) != cv2.erode(label, kernel)  # 2 px: one on each side
    if width > 2:
        edge = cv2.dilate(edge.astype(np.uint8), np.ones((2, 2), dtype=np.uint8)).astype(bool)
    out = label.copy()
    out[edge] = IGNORE_INDEX
    return out


def _plan_objects(rng: np.random.Generator) -> list[int]:
    """Classes of the objects of one image: 1-3 distinct classes, 1-4 objects, required ones first."""
    num_classes = int(rng.choice([1, 2, 3], p=[0.4, 0.4, 0.2]))
    classes = [int(c) for c in rng.choice(len(DEMO_CLASSES), size=num_classes, replace=False)]
    extra = int(rng.integers(0, 4 - num_classes + 1))
    return classes + [int(c) for c in rng.choice(classes, size=extra)]


def make_demo_sample(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """Draw one image and its mask.

    Args:
        rng: The image's generator.

    Returns:
        image: (H, W, 3) uint8 RGB.
        label: (H, W) uint8 ids in {0..4, 255}.
        num_objects: How many objects were placed.
    """
    height, width = (int(v) for v in rng.integers(_SIDE_RANGE[0], _SIDE_RANGE[1] + 1, size=2))
    if height == width:
        width += 8
    image = _background(rng, height, width)
    label = np.zeros((height, width), dtype=np.uint8)
    instances = np.zeros((height, width), dtype=np.int32)  # 0 none, k the k-th placed object
    for cls in _plan_objects(rng):
        size = rng.uniform(*_OBJECT_FRACTION) * min(height, width)
        for _ in range(30):
            mask = _shape_mask(rng, cls, height, width, size)
            if _overlap_ok(mask, instances):
                image[mask] = _object_texture(rng, cls, _class_weight(rng, mask, size))[mask]
                label[mask] = cls + 1
                instances[mask] = instances.max() + 1
                break
            size = max(size * 0.9, _OBJECT_FRACTION[0] * min(height, width))
    image = cv2.GaussianBlur(image, (3, 3), 0.7)
    label = _void_border(label, int(rng.integers(2, 4)))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), label, int(instances.max())


def _overlap_ok(mask: np.ndarray, instances: np.ndarray) -> bool:
    """Whether a new object covers at most _MAX_OVERLAP of itself and of every visible older object."""
    area = np.bincount(instances.ravel())
    covered = np.bincount(instances[mask], minlength=area.size)
    if covered[1:].sum() > _MAX_OVERLAP * mask.sum():
        return False
    return bool(np.all(covered[1:] <= _MAX_OVERLAP * area[1:]))


def write_demo_dataset(
    out_dir: str | Path, num_train: int = 240, num_val: int = 60, seed: int = 0
) -> DemoSummary:
    """Generate the demo dataset (see the module docstring).

    Args:
        out_dir: Output root (created).
        num_train: Number of training images.
        num_val: Number of validation images.
        seed: Base seed.

    Returns:
        Counts and generation time.
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    (out_dir / "JPEGImages").mkdir(parents=True, exist_ok=True)
    labels: dict[str, list[int]] = {}
    splits: dict[str, list[str]] = {"train": [], "val": []}
    num_objects = 0
    for split, count in (("train", num_train), ("val", num_val)):
        for index in range(count):
            rng = np.random.default_rng([seed, _SPLIT_CODES[split], index])
            image, label, placed = make_demo_sample(rng)
            name = f"{split}_{index:04d}"
            Image.fromarray(image).save(out_dir / "JPEGImages" / f"{name}.jpg", quality=95)
            save_label_png(out_dir / "SegmentationClassAug" / f"{name}.png", label)
            labels[name] = mask_class_indices(label, DEMO_NUM_CLASSES)
            splits[split].append(name)
            num_objects += placed
    for list_name, names in (
        ("train", splits["train"]),
        ("train_aug", splits["train"]),
        ("val", splits["val"]),
    ):
        (out_dir / f"{list_name}.txt").write_text("".join(f"{name}\n" for name in names))
    header = "image_id followed by the indices (0-3: disc, square, triangle, cross) of the classes present"
    write_cls_labels(out_dir / CLS_LABELS_FILE, labels, header)
    (out_dir / CLASS_NAMES_FILE).write_text("\n".join(["background", *DEMO_CLASSES]) + "\n")
    (out_dir / DEMO_VERSION_FILE).write_text(DEMO_DATA_VERSION + "\n")
    return DemoSummary(num_train, num_val, num_objects, time.perf_counter() - start)
