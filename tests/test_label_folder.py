"""The label-folder training set of the second stage (``datasets/label_folder.py``): image and label
augmented together, seeded items, palette and grey PNGs, and every bad folder refused in one line
naming the id or the file, before anything is written."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.errors import DataError, MissingFileError
from datasets.classes import save_label_png
from datasets.demo import write_demo_dataset
from datasets.io import read_label
from datasets.label_folder import LabelFolderDataset, pair_transform, rescale_pair
from datasets.transforms import IMAGENET_MEAN, IMAGENET_STD
from datasets.voc import VOCClsDataset

NUM_CLASSES = 5


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("label_folder_demo")
    write_demo_dataset(root, num_train=6, num_val=2, seed=3)
    return root


def images_of(root: Path) -> VOCClsDataset:
    return VOCClsDataset(root, root, split="train", crop_size=None, scale_range=None, num_classes=NUM_CLASSES)


def label_copy(root: Path, dest: Path) -> Path:
    """The ground-truth masks of the train split copied to ``dest`` (a label folder to damage)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in images_of(root).names:
        shutil.copy(root / "SegmentationClassAug" / f"{name}.png", dest / f"{name}.png")
    return dest


def denormalised(image: np.ndarray) -> np.ndarray:
    """(3, H, W) normalised -> (H, W, 3) 0..255."""
    return image.transpose(1, 2, 0) * np.asarray(IMAGENET_STD) + np.asarray(IMAGENET_MEAN)


def test_pair_transform_moves_image_and_label_together_and_pads_label_255():
    """Without rescale, the image's red channel (= 40·label) follows the label through flip and crop;
    the padding is raw 0 in the image and 255 in the label, exactly outside img_box."""
    rng = np.random.RandomState(0)
    label = rng.randint(0, NUM_CLASSES, (20, 30))
    image = np.zeros((20, 30, 3), np.uint8)
    image[..., 0] = label * 40
    for seed in range(6):
        py, npr = random.Random(seed), np.random.RandomState(seed)
        img, lab, box = pair_transform(image, label, 32, None, True, py, npr)
        assert img.shape == (3, 32, 32) and lab.shape == (32, 32) and lab.dtype == np.int64
        inside = np.zeros((32, 32), bool)
        inside[box[0] : box[1], box[2] : box[3]] = True
        assert (box[1] - box[0], box[3] - box[2]) == (20, 30)
        assert (lab[~inside] == 255).all() and (lab[inside] != 255).all()
        red = denormalised(img)[..., 0]
        np.testing.assert_allclose(red[inside], lab[inside] * 40.0, atol=1e-3)
        np.testing.assert_allclose(denormalised(img)[~inside], 0.0, atol=1e-3)
        window = lab[box[0] : box[1], box[2] : box[3]]
        assert (window == label).all() or (window == label[:, ::-1]).all()


def test_rescale_is_bilinear_for_the_image_and_nearest_for_the_label():
    label = np.kron(np.array([[0, 1], [2, 255]]), np.ones((8, 8), np.int64))  # 16x16 blocks
    image = np.zeros((16, 16, 3), np.uint8)
    img, lab = rescale_pair(image, label, 1.5)
    assert img.shape == (24, 24, 3) and img.dtype == np.float32 and lab.shape == (24, 24)
    assert set(np.unique(lab).tolist()) == {0, 1, 2, 255}  # nearest: no value in between
    assert (lab[:11, :11] == 0).all() and (lab[13:, 13:] == 255).all()


def test_items_are_seeded_crops_with_labels_from_the_folder(demo_root, tmp_path):
    labels = label_copy(demo_root, tmp_path / "labels")
    first = images_of(demo_root).names[0]
    grey = read_label(labels / f"{first}.png")
    Image.fromarray(grey, mode="L").save(labels / f"{first}.png")  # a grey PNG is accepted too
    data = LabelFolderDataset(images_of(demo_root), labels, 48, (0.5, 1.5), num_classes=NUM_CLASSES)
    a, b, c = data[(0, 7)], data[(0, 7)], data[(0, 8)]
    assert a["image"].shape == (3, 48, 48) and a["label"].shape == (48, 48) and a["img_box"].shape == (4,)
    assert (a["image"] == b["image"]).all() and (a["label"] == b["label"]).all()
    assert not (a["image"] == c["image"]).all()
    present = set(np.unique(grey).tolist()) - {0, 255}
    assert set((np.flatnonzero(a["cls_label"].numpy()) + 1).tolist()) == present
    assert set(a["label"].unique().tolist()) <= set(np.unique(grey).tolist()) | {255}
    assert data.label_path(first) == labels / f"{first}.png" and data.split == "train"


def test_missing_ids_are_named_and_nothing_is_read_further(demo_root, tmp_path):
    labels = label_copy(demo_root, tmp_path / "labels")
    names = images_of(demo_root).names
    for name in names[:2]:
        (labels / f"{name}.png").unlink()
    with pytest.raises(MissingFileError, match=f"lacks 2 of the {len(names)} ids of split train: {names[0]}"):
        LabelFolderDataset(images_of(demo_root), labels, 48, num_classes=NUM_CLASSES)
    with pytest.raises(MissingFileError, match="label folder not found"):
        LabelFolderDataset(images_of(demo_root), tmp_path / "nowhere", 48, num_classes=NUM_CLASSES)


def test_a_value_outside_the_classes_names_the_file(demo_root, tmp_path):
    labels = label_copy(demo_root, tmp_path / "labels")
    name = images_of(demo_root).names[3]
    bad = read_label(labels / f"{name}.png").copy()
    bad[0, 0] = 7  # 5 classes: 0..4 and 255 only
    save_label_png(labels / f"{name}.png", bad)
    with pytest.raises(DataError, match=rf"mask {labels / name}\.png holds value\(s\) \[7\] outside"):
        LabelFolderDataset(images_of(demo_root), labels, 48, num_classes=NUM_CLASSES)


def test_a_label_of_another_size_names_the_file(demo_root, tmp_path):
    labels = label_copy(demo_root, tmp_path / "labels")
    name = images_of(demo_root).names[1]
    label = read_label(labels / f"{name}.png")
    save_label_png(labels / f"{name}.png", label[:-3])
    h, w = label.shape
    with pytest.raises(DataError, match=rf"label {labels / name}\.png is {h - 3}x{w}, its image is {h}x{w}"):
        LabelFolderDataset(images_of(demo_root), labels, 48, num_classes=NUM_CLASSES)


def test_colour_png_is_refused_naming_the_file(demo_root, tmp_path):
    labels = label_copy(demo_root, tmp_path / "labels")
    name = images_of(demo_root).names[2]
    Image.open(labels / f"{name}.png").convert("RGB").save(labels / f"{name}.png")
    with pytest.raises(DataError, match=rf"label file {labels / name}\.png has mode 'RGB'"):
        LabelFolderDataset(images_of(demo_root), labels, 48, num_classes=NUM_CLASSES)
