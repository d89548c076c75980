"""VOC/COCO datasets, split lists and cls_labels files (datasets.voc, datasets.coco)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from common.errors import DataError
from datasets.classes import COCO_CLASSES, VOC_CLASSES, save_label_png
from datasets.coco import COCO_LIST_DIR, COCOClsDataset, COCOSegDataset, coco_folder
from datasets.transforms import normalize
from datasets.voc import (
    VOC_LIST_DIR,
    VOCClsDataset,
    VOCSegDataset,
    class_names,
    read_cls_labels,
    read_name_list,
    write_cls_labels,
)

SIZES = {"a": (40, 56), "b": (70, 30), "c": (50, 50)}  # (H, W)
LABELS = {"a": [0, 14], "b": [], "c": [19]}


def _image(name: str) -> np.ndarray:
    height, width = SIZES[name]
    return np.random.RandomState(ord(name)).randint(0, 256, (height, width, 3)).astype(np.uint8)


def _mask(name: str) -> np.ndarray:
    mask = np.zeros(SIZES[name], np.uint8)
    for k, index in enumerate(LABELS[name]):
        mask[k * 5 : k * 5 + 4, :6] = index + 1
    mask[-1, :] = 255
    return mask


def _write_tree(root: Path, image_dir: Path, mask_dir: Path, split: str) -> None:
    """Images (b as PNG, the others JPEG), masks, split list and cls_labels.txt under ``root``."""
    image_dir.mkdir(parents=True)
    for name in SIZES:
        suffix = ".png" if name == "b" else ".jpg"
        Image.fromarray(_image(name)).save(image_dir / f"{name}{suffix}", quality=95)
        save_label_png(mask_dir / f"{name}.png", _mask(name))
    (root / f"{split}.txt").write_text("a\n\nb\nc\n")
    write_cls_labels(root / "cls_labels.txt", LABELS, "test labels")


@pytest.fixture
def voc_root(tmp_path: Path) -> Path:
    _write_tree(tmp_path, tmp_path / "JPEGImages", tmp_path / "SegmentationClassAug", "train")
    (tmp_path / "val.txt").write_text("a\nb\nc\n")
    return tmp_path


@pytest.fixture
def restore_global_rngs():
    py_state, np_state = random.getstate(), np.random.get_state()
    yield
    random.setstate(py_state)
    np.random.set_state(np_state)


def test_read_name_list_skips_blank_lines(voc_root):
    assert read_name_list(voc_root, "train") == ["a", "b", "c"]
    with pytest.raises(FileNotFoundError, match="nosplit.txt"):
        read_name_list(voc_root, "nosplit")


def test_packaged_split_lists():
    assert len(read_name_list(VOC_LIST_DIR, "train_aug")) == 10582
    assert len(read_name_list(VOC_LIST_DIR, "val")) == 1449
    assert len(read_name_list(VOC_LIST_DIR, "test")) == 1456
    assert len(read_name_list(COCO_LIST_DIR, "train")) == 82081
    assert len(read_name_list(COCO_LIST_DIR, "val_part")) == 5000


def test_packaged_cls_labels_spec_ids():
    labels = read_cls_labels(VOC_LIST_DIR / "cls_labels.txt", 21)
    assert len(labels) == 12031
    for name, present in {"2007_000032": [0, 14], "2007_000063": [8, 11], "2007_000039": [19]}.items():
        vector = labels[name]
        assert vector.dtype == np.float32 and vector.shape == (20,)
        assert np.flatnonzero(vector).tolist() == present
    names = read_name_list(VOC_LIST_DIR, "train_aug") + read_name_list(VOC_LIST_DIR, "val")
    assert set(labels) == set(names)
    assert not set(labels) & set(read_name_list(VOC_LIST_DIR, "test"))


def test_cls_labels_round_trip(tmp_path):
    path = tmp_path / "labels.txt"
    write_cls_labels(path, {"x": [3, 0, 3], "y": [], "z": range(5)}, "line one\nline two")
    text = path.read_text().splitlines()
    assert text == ["# line one", "# line two", "x 0 3", "y", "z 0 1 2 3 4"]
    labels = read_cls_labels(path, 6)
    np.testing.assert_array_equal(labels["x"], [1, 0, 0, 1, 0])
    np.testing.assert_array_equal(labels["y"], np.zeros(5))
    np.testing.assert_array_equal(labels["z"], np.ones(5))
    with pytest.raises(ValueError, match="labels.txt:5"):
        read_cls_labels(path, 5)  # index 4 does not fit 4 foreground classes


def test_class_names(tmp_path):
    assert class_names(tmp_path, 21) == ["background", *VOC_CLASSES]
    assert class_names(tmp_path, 81) == ["background", *COCO_CLASSES]
    with pytest.raises(FileNotFoundError, match="class_names.txt"):
        class_names(tmp_path, 5)
    (tmp_path / "class_names.txt").write_text("background\ndisc\nsquare\ntriangle\ncross\n")
    assert class_names(tmp_path, 5)[1:] == ["disc", "square", "triangle", "cross"]
    with pytest.raises(ValueError, match="num_classes=6"):
        class_names(tmp_path, 6)


def test_cls_dataset_sample(voc_root):
    dataset = VOCClsDataset(voc_root, voc_root, split="train", crop_size=48)
    assert len(dataset) == 3
    for index, name in enumerate(["a", "b", "c"]):
        sample = dataset[(index, 0)]
        assert sample["name"] == name
        assert sample["image"].shape == (3, 48, 48) and sample["image"].dtype == torch.float32
        assert sample["img_box"].dtype == torch.int64 and sample["img_box"].shape == (4,)
        assert sample["cls_label"].dtype == torch.float32
        assert torch.nonzero(sample["cls_label"]).flatten().tolist() == LABELS[name]


def test_cls_dataset_without_augmentation_is_the_normalised_image(voc_root):
    dataset = VOCClsDataset(voc_root, voc_root, "train", crop_size=None, scale_range=None, flip=False)
    sample = dataset[1]  # b is a lossless PNG
    expected = normalize(_image("b")).transpose(2, 0, 1)
    np.testing.assert_array_equal(sample["image"].numpy(), expected)
    np.testing.assert_array_equal(sample["img_box"].numpy(), [0, 70, 0, 30])


def test_seeded_items_are_deterministic_and_match_global_path(voc_root, restore_global_rngs):
    dataset = VOCClsDataset(voc_root, voc_root, split="train", crop_size=64)
    first, second = dataset[(2, 1234)], dataset[(2, 1234)]
    assert torch.equal(first["image"], second["image"]) and torch.equal(first["img_box"], second["img_box"])
    random.seed(1234)
    np.random.seed(1234)
    via_global = dataset[2]
    assert torch.equal(first["image"], via_global["image"])
    assert torch.equal(first["img_box"], via_global["img_box"])
    others = [dataset[(2, seed)]["image"] for seed in range(1, 5)]
    assert any(not torch.equal(first["image"], other) for other in others)


def test_missing_cls_label_names_id_and_file(voc_root):
    (voc_root / "extra.txt").write_text("a\nzzz_404\n")
    with pytest.raises(DataError) as info:
        VOCClsDataset(voc_root, voc_root, split="extra")
    assert "zzz_404" in str(info.value) and str(voc_root / "cls_labels.txt") in str(info.value)


def test_missing_image_names_jpg_path(voc_root):
    (voc_root / "JPEGImages" / "c.jpg").unlink()
    dataset = VOCClsDataset(voc_root, voc_root, split="train", crop_size=32)
    with pytest.raises(FileNotFoundError) as info:
        dataset[2]
    assert str(voc_root / "JPEGImages" / "c.jpg") in str(info.value)


def test_seg_dataset(voc_root):
    dataset = VOCSegDataset(voc_root, voc_root, split="val")
    sample = dataset[1]
    assert sample["name"] == "b"
    assert sample["image"].shape == (3, 70, 30) and sample["image"].dtype == torch.float32
    assert sample["label"].dtype == torch.int64
    np.testing.assert_array_equal(sample["label"].numpy(), _mask("b"))
    np.testing.assert_array_equal(dataset[0]["label"].numpy(), _mask("a"))
    assert torch.nonzero(dataset[2]["cls_label"]).flatten().tolist() == [19]


def test_seg_dataset_without_labels_reads_no_mask(voc_root):
    for path in (voc_root / "SegmentationClassAug").iterdir():
        path.unlink()
    (voc_root / "cls_labels.txt").unlink()
    dataset = VOCSegDataset(voc_root, voc_root, split="val", with_labels=False)
    sample = dataset[0]
    assert sample["image"].shape == (3, 40, 56)
    assert torch.all(sample["label"] == 255) and sample["label"].shape == (40, 56)
    assert sample["cls_label"].shape == (20,) and not sample["cls_label"].any()


def test_coco_folder_rule():
    assert coco_folder("train") == "train" and coco_folder("train2014") == "train"
    assert coco_folder("val") == "val" and coco_folder("val_part") == "val" and coco_folder("test") == "val"


def test_coco_datasets_use_the_coco_layout(tmp_path):
    for split in ("train", "val_part"):
        folder = coco_folder(split)
        _write_tree(tmp_path / split, tmp_path / split / "JPEGImages" / folder,
                    tmp_path / split / "SegmentationClass" / folder, split)  # fmt: skip
    cls_set = COCOClsDataset(tmp_path / "train", tmp_path / "train", crop_size=32)
    sample = cls_set[(0, 3)]
    assert sample["cls_label"].shape == (80,) and sample["image"].shape == (3, 32, 32)
    seg_set = COCOSegDataset(tmp_path / "val_part", tmp_path / "val_part", split="val_part")
    assert seg_set.label_path("c") == tmp_path / "val_part" / "SegmentationClass" / "val" / "c.png"
    np.testing.assert_array_equal(seg_set[2]["label"].numpy(), _mask("c"))
    assert torch.nonzero(seg_set[0]["cls_label"]).flatten().tolist() == [0, 14]
