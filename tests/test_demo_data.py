"""The generated demo dataset (datasets.demo): determinism, layout, label consistency, content."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import datasets.demo as demo_module
from datasets.demo import DEMO_CLASSES, DEMO_DATA_VERSION, DEMO_NUM_CLASSES, write_demo_dataset
from datasets.io import read_image, read_label
from datasets.voc import VOCClsDataset, VOCSegDataset, class_names, read_cls_labels, read_name_list


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    summary = write_demo_dataset(out)  # defaults: 240 train, 60 val, seed 0
    assert (summary.num_train, summary.num_val) == (240, 60)
    assert summary.num_objects / 300 > 2.0  # several objects per image on average
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes(tmp_path, demo):
    first, second, other = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    write_demo_dataset(first, num_train=6, num_val=3, seed=0)
    write_demo_dataset(second, num_train=6, num_val=3, seed=0)
    write_demo_dataset(other, num_train=6, num_val=3, seed=1)
    files = _files(first)
    assert len(files) == 2 * 9 + 6 and files == _files(second)
    assert files["JPEGImages/train_0000.jpg"] != _files(other)["JPEGImages/train_0000.jpg"]
    # per-image generators: the first images do not depend on how many are generated
    for name in ("JPEGImages/train_0005.jpg", "SegmentationClassAug/val_0002.png"):
        assert files[name] == (demo / name).read_bytes()


def test_layout_and_lists(demo):
    train, val = read_name_list(demo, "train"), read_name_list(demo, "val")
    assert len(train) == 240 and len(val) == 60 and read_name_list(demo, "train_aug") == train
    assert class_names(demo, DEMO_NUM_CLASSES) == ["background", *DEMO_CLASSES]
    assert (demo / "demo_version.txt").read_text() == DEMO_DATA_VERSION + "\n"
    labels = read_cls_labels(demo / "cls_labels.txt", DEMO_NUM_CLASSES)
    assert set(labels) == set(train) | set(val)


def test_masks_images_and_labels_consistent(demo):
    labels = read_cls_labels(demo / "cls_labels.txt", DEMO_NUM_CLASSES)
    components, class_counts = [], np.zeros(4)
    for name in read_name_list(demo, "train")[:80] + read_name_list(demo, "val")[:20]:
        image = read_image(demo / "JPEGImages" / f"{name}.jpg")
        mask = read_label(demo / "SegmentationClassAug" / f"{name}.png")
        height, width = mask.shape
        assert image.shape == (height, width, 3) and 144 <= height <= 232 and 144 <= width <= 232
        assert height != width
        values = set(np.unique(mask).tolist())
        assert values <= {0, 1, 2, 3, 4, 255} and 255 in values and 0 in values
        present = sorted(v - 1 for v in values - {0, 255})
        assert np.flatnonzero(labels[name]).tolist() == present and 1 <= len(present) <= 3
        class_counts[present] += 1
        for cls in present:  # every present object class covers a visible area
            assert (mask == cls + 1).sum() >= 0.01 * height * width
        objects = ((mask != 0) & (mask != 255)).astype(np.uint8)
        components.append(cv2.connectedComponents(objects, connectivity=4)[0] - 1)
    assert np.mean(components) >= 2.0 and max(components) >= 4
    assert class_counts.min() >= 15  # all four classes are common


def test_classes_have_distinct_colours(demo):
    """Mean RGB of each class's pixels (full-colour core and pale rim together) lies near its family."""
    sums, counts = np.zeros((4, 3)), np.zeros(4)
    for name in read_name_list(demo, "val"):
        image = read_image(demo / "JPEGImages" / f"{name}.jpg").astype(np.float64)
        mask = read_label(demo / "SegmentationClassAug" / f"{name}.png")
        for cls in range(4):
            sums[cls] += image[mask == cls + 1].sum(axis=0)
            counts[cls] += (mask == cls + 1).sum()
    red, green, orange, yellow = sums / counts[:, None]  # measured: 216/109/108, 109/188/121, ...
    assert red[0] > 200 and red[1] < 130 and red[2] < 130
    assert green[1] > 170 and green[0] < 135 and green[2] < 135
    assert orange[0] > 220 and 140 < orange[1] < 190 and orange[2] < 120
    assert yellow[0] > 200 and yellow[1] > 200 and yellow[2] < 120


def test_class_colour_fills_a_core_and_fades_into_the_rim():
    """The class colour's weight: 1 at the core point, _RIM_WEIGHT beyond _CORE[1] · size from it,
    never increasing with the distance; the core lies in the inner half of the object."""
    mask = np.zeros((120, 160), dtype=bool)
    mask[10:110, 20:140] = True  # a 100 × 120 rectangle
    size = 100.0
    weight = demo_module._class_weight(np.random.default_rng(0), mask, size)
    core = tuple(int(round(c.mean())) for c in np.nonzero(weight == 1.0))  # centre of the full-colour disc
    inner = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 3)
    assert weight.max() == 1.0 and inner[core] >= 0.5 * inner.max()
    yy, xx = np.mgrid[0:120, 0:160]
    dist = np.hypot(yy - core[0], xx - core[1])
    assert np.allclose(weight[dist <= demo_module._CORE[0] * size], 1.0)
    assert np.allclose(weight[dist >= demo_module._CORE[1] * size], demo_module._RIM_WEIGHT)
    order = np.argsort(dist, axis=None)
    assert np.all(np.diff(weight.ravel()[order]) <= 1e-6)
    # about a third of this object shows the class colour at more than half strength
    assert 0.15 < (weight[mask] > 0.5 + demo_module._RIM_WEIGHT / 2).mean() < 0.5


def test_loads_through_voc_datasets(demo):
    cls_set = VOCClsDataset(demo, demo, split="train", crop_size=96, num_classes=DEMO_NUM_CLASSES)
    sample = cls_set[(3, 0)]
    assert sample["image"].shape == (3, 96, 96) and sample["cls_label"].shape == (4,)
    seg_set = VOCSegDataset(demo, demo, split="val", num_classes=DEMO_NUM_CLASSES)
    sample = seg_set[0]
    assert sample["image"].shape[1:] == sample["label"].shape and sample["label"].dtype == torch.int64
