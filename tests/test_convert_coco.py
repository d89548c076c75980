"""COCO instance JSON -> class-index masks (datasets.convert_coco), checked against pycocotools."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from datasets.classes import COCO_CATEGORY_TO_CONTIGUOUS, COCO_CATEGORY_TO_VOC
from datasets.convert_coco import (
    annotation_mask,
    category_id_map,
    convert_coco,
    default_split_name,
    render_mask,
)
from datasets.io import read_image, read_label
from datasets.voc import VOCClsDataset, VOCSegDataset, read_cls_labels, read_name_list

REPO = Path(__file__).resolve().parents[1]
COCO_MINI = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "coco_mini"
needs_coco_mini = pytest.mark.skipif(
    not COCO_MINI.is_dir(), reason=f"real COCO subset ../shared/data/real/coco_mini not found: {COCO_MINI}"
)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")  # numpy-2 copy= notice
# two val2017 images with crowd regions (one with 2 isolated single instances), one with 6 such instances
CHECKED = ("000000034417", "000000255165", "000000135561")


def _load_coco(split: str) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(COCO_MINI / "annotations" / f"instances_{split}.json"))


@pytest.fixture(scope="module")
def coco_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("coco_layout")
    convert_coco(COCO_MINI / "annotations" / "instances_val2017.json", COCO_MINI / "val2017", out)
    return out


@pytest.fixture(scope="module")
def voc_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("voc_layout")
    for split in ("train2017", "val2017"):
        annotations = COCO_MINI / "annotations" / f"instances_{split}.json"
        convert_coco(annotations, COCO_MINI / split, out, voc_classes=True)
    return out


def _indices(vector) -> list[int]:
    return np.flatnonzero(vector.numpy()).tolist()


def _rle(mask: np.ndarray) -> dict:
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))


def test_default_split_name():
    assert default_split_name("/x/instances_val2017.json") == "val2017"
    assert default_split_name("mine.json") == "mine"


def test_category_map_checks_names():
    categories = [{"id": 1, "name": "person"}, {"id": 13, "name": "stop sign"}]
    assert category_id_map(categories, voc_classes=False)[13] == 12
    assert category_id_map(categories, voc_classes=True) == COCO_CATEGORY_TO_VOC
    with pytest.raises(ValueError, match="'bicycle'"):
        category_id_map([{"id": 1, "name": "bicycle"}], voc_classes=False)


def test_uncompressed_rle_and_polygon_decoding():
    rle = {"size": [3, 4], "counts": [3, 3, 6]}  # column-major: column 0 empty, column 1 full
    expected = np.zeros((3, 4), bool)
    expected[:, 1] = True
    np.testing.assert_array_equal(annotation_mask(rle, 3, 4), expected)
    square = annotation_mask([[2.0, 2.0, 8.0, 2.0, 8.0, 8.0, 2.0, 8.0]], 10, 10)
    assert square[3:8, 3:8].all() and not square[:2].any() and not square[:, 9].any()


def test_rasterisation_order_hand_case():
    big, small, crowd = (np.zeros((10, 10), bool) for _ in range(3))
    big[0:8, 0:8] = True  # 64 px, category 3 (car, contiguous 3)
    small[2:4, 2:4] = True  # 4 px, category 1 (person, contiguous 1), on top of the big one
    crowd[6:10, 6:10] = True  # 16 px crowd of dogs (18), half under the big car
    anns = [
        {"segmentation": _rle(small), "category_id": 1, "iscrowd": 0},
        {"segmentation": _rle(crowd), "category_id": 18, "iscrowd": 1},
        {"segmentation": _rle(big), "category_id": 3, "iscrowd": 0},
        {"segmentation": _rle(big), "category_id": 28, "iscrowd": 0},  # umbrella: not a VOC class
    ]
    label = render_mask(anns, 10, 10, COCO_CATEGORY_TO_CONTIGUOUS)
    assert (label == 1).sum() == 4 and label[2:4, 2:4].min() == 1
    assert (label == 255).sum() == 16 - 4  # the car covers rows/cols 6-7 of the crowd
    assert (label == 26).sum() == 60  # umbrella (contiguous 26) wins the tie with the car: later in JSON
    voc = render_mask(anns, 10, 10, COCO_CATEGORY_TO_VOC)
    assert (voc == 15).sum() == 4 and (voc == 7).sum() == 60 and (voc == 255).sum() == 12
    assert (voc == 0).sum() == 100 - 4 - 60 - 12


@needs_coco_mini
def test_masks_agree_with_pycocotools(coco_out):
    coco = _load_coco("val2017")
    by_name = {Path(info["file_name"]).stem: info for info in coco.dataset["images"]}
    single_checks = 0
    for name in CHECKED:
        info = by_name[name]
        label = read_label(coco_out / "SegmentationClass" / "val" / f"{name}.png")
        assert label.shape == (info["height"], info["width"])
        anns = coco.loadAnns(coco.getAnnIds(imgIds=info["id"], iscrowd=None))
        masks = [coco.annToMask(ann).astype(bool) for ann in anns]
        union = np.logical_or.reduce(masks)
        assert not label[~union].any()  # nothing painted outside the annotations
        instances, crowd = np.zeros_like(union), np.zeros_like(union)
        for mask, ann in zip(masks, anns):
            if ann["iscrowd"]:
                crowd |= mask
            else:
                instances |= mask
        assert (label == 255).sum() == (crowd & ~instances).sum()
        for mask, ann in zip(masks, anns):
            others = np.logical_or.reduce([m for m, a in zip(masks, anns) if a is not ann])
            cat = COCO_CATEGORY_TO_CONTIGUOUS[ann["category_id"]]
            same = [a for a in anns if a["category_id"] == ann["category_id"]]
            if not ann["iscrowd"] and len(same) == 1 and not (mask & others).any():
                assert (label == cat).sum() == mask.sum()
                single_checks += 1
    assert single_checks == 8


@needs_coco_mini
def test_coco_layout_outputs(coco_out):
    data = json.loads((COCO_MINI / "annotations" / "instances_val2017.json").read_text())
    names = read_name_list(coco_out, "val2017")
    assert len(names) == len(data["images"]) == 79
    labels = read_cls_labels(coco_out / "cls_labels.txt", 81)
    for info in data["images"][:20]:
        name = Path(info["file_name"]).stem
        image = read_image(coco_out / "JPEGImages" / "val" / info["file_name"])
        assert image.shape == (info["height"], info["width"], 3)
        assert (coco_out / "JPEGImages" / "val" / info["file_name"]).read_bytes() == (
            COCO_MINI / "val2017" / info["file_name"]
        ).read_bytes()
        label = read_label(coco_out / "SegmentationClass" / "val" / f"{name}.png")
        present = sorted(set(np.unique(label).tolist()) - {0, 255})
        assert np.flatnonzero(labels[name]).tolist() == [v - 1 for v in present]


@needs_coco_mini
def test_voc_layout_loads_through_voc_datasets(voc_out):
    assert len(read_name_list(voc_out, "train2017")) == 80
    labels = read_cls_labels(voc_out / "cls_labels.txt", 21)
    assert len(labels) == 159  # both splits merged
    cls_set = VOCClsDataset(voc_out, voc_out, split="train2017", crop_size=64)
    sample = cls_set[(0, 0)]
    assert sample["image"].shape == (3, 64, 64) and sample["cls_label"].shape == (20,)
    seg_set = VOCSegDataset(voc_out, voc_out, split="val2017")
    for index in range(0, len(seg_set), 10):
        sample = seg_set[index]
        values = set(sample["label"].unique().tolist())
        assert values <= set(range(21)) | {255}
        assert sorted(v - 1 for v in values - {0, 255}) == _indices(sample["cls_label"])
    with Image.open(voc_out / "SegmentationClassAug" / "000000034417.png") as mask:
        assert mask.mode == "P"


@needs_coco_mini
def test_cli_voc_classes(tmp_path):
    args = ["--annotations", str(COCO_MINI / "annotations" / "instances_val2017.json")]
    args += ["--images", str(COCO_MINI / "val2017"), "--out", str(tmp_path), "--voc-classes"]
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "make_coco_masks.py"), *args],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "split val: 79 images, 15 without foreground" in result.stdout  # named train/val by default
    assert len(list((tmp_path / "SegmentationClassAug").iterdir())) == 79
    assert (tmp_path / "JPEGImages" / "000000034417.jpg").is_file()
