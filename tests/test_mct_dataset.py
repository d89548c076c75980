"""MCTformer's dataset (datasets/mct.py) on demo_data/ and on a two-image COCO layout."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from common.errors import ConfigError, DataError
from datasets.checks import check_split
from datasets.demo import write_demo_dataset
from datasets.io import read_image
from datasets.mct import MCTClsDataset
from datasets.mct_transforms import AugmentConfig, eval_transform, train_transform
from datasets.voc import VOCClsDataset

SMALL = AugmentConfig(crop_size=64)


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    """A small generated demo dataset (the layout of ``demo_data/``): 4 train, 2 val images."""
    root = tmp_path_factory.mktemp("demo")
    write_demo_dataset(root, num_train=4, num_val=2, seed=2)
    return root


@pytest.fixture(scope="module")
def demo(demo_root) -> MCTClsDataset:
    """The demo train split (4 foreground classes, num_classes 5) with 64-pixel crops."""
    return MCTClsDataset(demo_root, demo_root, "train", 5, "voc", SMALL)


def test_item_layout_and_labels(demo, demo_root):
    voc = VOCClsDataset(demo_root, demo_root, "train", None, None, False, 5)
    assert demo.names == voc.names and len(demo) == len(voc)
    item = demo[(1, 7)]
    assert item["name"] == voc.names[1]
    assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.float32
    assert item["cls_label"].dtype == torch.float32
    np.testing.assert_array_equal(item["cls_label"].numpy(), voc.cls_labels[voc.names[1]])
    line = next(
        row.split()
        for row in (demo_root / "cls_labels.txt").read_text().splitlines()
        if row.split()[:1] == [item["name"]]
    )
    assert item["cls_label"].tolist() == [float(str(k) in line[1:]) for k in range(4)]  # "<id> 0-based ids"
    assert item["img_box"].dtype == torch.int64 and item["img_box"].tolist() == [0, 64, 0, 64]
    check_split(demo)


def test_item_is_the_transform_of_its_seed(demo):
    image = Image.fromarray(read_image(demo.image_path(demo.names[2])))
    expected = train_transform(image, SMALL, random.Random(11))
    np.testing.assert_array_equal(demo[(2, 11)]["image"].numpy(), expected)
    assert not torch.equal(demo[(2, 11)]["image"], demo[(2, 12)]["image"])
    state = random.getstate()
    demo[(2, 11)]
    assert random.getstate() == state  # seeded items leave the global generator alone
    assert demo[2]["image"].shape == (3, 64, 64)  # plain indices draw from the global generator


def test_validation_items_are_deterministic(demo_root):
    val = MCTClsDataset(demo_root, demo_root, "val", 5, "voc", SMALL, train=False)
    image = Image.fromarray(read_image(val.image_path(val.names[0])))
    np.testing.assert_array_equal(val[(0, 1)]["image"].numpy(), eval_transform(image, SMALL))
    assert torch.equal(val[(0, 1)]["image"], val[(0, 2)]["image"])


def test_augment_section_from_omegaconf(demo_root):
    node = OmegaConf.merge(OmegaConf.structured(AugmentConfig), {"crop_size": 64, "scale": [0.5, 1.0]})
    data = MCTClsDataset(demo_root, demo_root, "train", 5, "voc", node)
    assert data.augment == AugmentConfig(crop_size=64, scale=[0.5, 1.0])
    assert type(data.augment.scale) is list
    assert data[(0, 3)]["image"].shape == (3, 64, 64)
    wrapped = AugmentConfig(**{k: node[k] for k in node})  # as methods/mctformer.py builds it
    assert type(MCTClsDataset(demo_root, demo_root, "train", 5, "voc", wrapped).augment.mean) is list


def test_coco_layout(tmp_path):
    folder = tmp_path / "JPEGImages" / "train"
    folder.mkdir(parents=True)
    for name in ("a", "b"):
        Image.fromarray(np.full((40, 50, 3), 90, np.uint8)).save(folder / f"{name}.jpg")
    (tmp_path / "train.txt").write_text("a\nb\n")
    (tmp_path / "cls_labels.txt").write_text("a 0 79\nb 5\n")
    data = MCTClsDataset(tmp_path, tmp_path, "train", 81, "coco", SMALL)
    assert data.image_path("a") == folder / "a.jpg" and data.image_folder() == folder
    item = data[(0, 0)]
    assert item["cls_label"].shape == (80,) and item["cls_label"].nonzero().flatten().tolist() == [0, 79]
    check_split(data)


def test_errors(tmp_path, demo_root):
    with pytest.raises(ConfigError, match="dataset.name"):
        MCTClsDataset(demo_root, demo_root, "train", 5, "cityscapes", SMALL)
    with pytest.raises(ConfigError, match="augment.remode"):
        MCTClsDataset(demo_root, demo_root, "train", 5, "voc", AugmentConfig(remode="noise"))
    (tmp_path / "JPEGImages").mkdir()
    Image.fromarray(np.zeros((10, 30, 3), np.uint8)).save(tmp_path / "JPEGImages" / "tiny.png")
    (tmp_path / "train.txt").write_text("tiny\n")
    (tmp_path / "cls_labels.txt").write_text("tiny 0\n")
    tiny = MCTClsDataset(tmp_path, tmp_path, "train", 21, "voc", SMALL)
    with pytest.raises(DataError, match="tiny.png is 10x30 pixels"):
        tiny[0]
