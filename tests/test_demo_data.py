"""The generated demo dataset (datasets.demo): determinism, layout, label consistency, content."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

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
    """Mean RGB of each class's interior pixels lies near its own colour family."""
    sums, counts = np.zeros((4, 3)), np.zeros(4)
    for name in read_name_list(demo, "val"):
        image = read_image(demo / "JPEGImages" / f"{name}.jpg").astype(np.float64)
        mask = read_label(demo / "SegmentationClassAug" / f"{name}.png")
        for cls in range(4):
            sums[cls] += image[mask == cls + 1].sum(axis=0)
            counts[cls] += (mask == cls + 1).sum()
    red, green, blue, yellow = sums / counts[:, None]
    assert red[0] > 150 and red[1] < 90 and red[2] < 90
    assert green[1] > 120 and green[0] < 90 and green[2] < 100
    assert blue[2] > 150 and blue[0] < 90 and blue[1] < 120
    assert yellow[0] > 170 and yellow[1] > 150 and yellow[2] < 90


def test_loads_through_voc_datasets(demo):
    cls_set = VOCClsDataset(demo, demo, split="train", crop_size=96, num_classes=DEMO_NUM_CLASSES)
    sample = cls_set[(3, 0)]
    assert sample["image"].shape == (3, 96, 96) and sample["cls_label"].shape == (4,)
    seg_set = VOCSegDataset(demo, demo, split="val", num_classes=DEMO_NUM_CLASSES)
    sample = seg_set[0]
    assert sample["image"].shape[1:] == sample["label"].shape and sample["label"].dtype == torch.int64
