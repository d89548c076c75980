"""Bad inputs stop before any work with an error naming the file or id, or are handled (and shown so)."""

from __future__ import annotations

import json
import runpy
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from runs import tiny_overrides

from common.errors import DataError, MissingFileError
from datasets.checks import check_split
from datasets.demo import write_demo_dataset
from datasets.voc import VOCClsDataset, VOCSegDataset
from utils.cli import error_lines
from utils.config import load_config
from utils.train.loop import train

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    write_demo_dataset(root, num_train=8, num_val=2, seed=4)
    return root


@pytest.fixture
def root(pristine, tmp_path) -> Path:
    """A private copy of the demo set that a test may damage."""
    return Path(shutil.copytree(pristine, tmp_path / "data"))


def ids(root: Path, split: str) -> list[str]:
    return (root / f"{split}.txt").read_text().split()


def config(root: Path, work: Path, **extra):
    overrides = tiny_overrides(root, work, **{"train.batch_size": 4, "train.log_iters": 50, **extra})
    return load_config(REPO / "configs/demo.yaml", overrides)


def test_listed_id_without_image_stops_before_the_work_dir_is_written(root, tmp_path):
    gone = ids(root, "train")[5]
    (root / "JPEGImages" / f"{gone}.jpg").unlink()
    with pytest.raises(MissingFileError, match=f"1 of 8 images missing .*ids {gone}"):
        train(config(root, tmp_path / "work"))
    assert not (tmp_path / "work").exists()


def test_wrong_root_dir_is_named_as_such(root, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingFileError, match="none of the 8 images of split train") as info:
        train(config(root, tmp_path / "work", **{"dataset.root_dir": tmp_path / "empty"}))
    assert "dataset.root_dir" in info.value.hint and not (tmp_path / "work").exists()


@pytest.mark.parametrize("split", ["train", "val"])
def test_empty_split_list_is_an_error(root, tmp_path, split):
    (root / f"{split}.txt").write_text("\n")
    with pytest.raises(DataError, match=f"split {split} lists no image"):
        train(config(root, tmp_path / "work"))
    assert not (tmp_path / "work").exists()


def test_duplicate_ids_are_an_error(root):
    names = ids(root, "val")
    (root / "val.txt").write_text("\n".join(names + names[:1]) + "\n")
    with pytest.raises(DataError, match=f"more than once: {names[0]}"):
        check_split(VOCSegDataset(root, root, "val", num_classes=5), with_labels=True)


def test_truncated_jpeg_inside_training_stops_naming_the_file(root, tmp_path):
    """Not among the probed first samples: read by a DataLoader worker, which must report, not hang."""
    bad = ids(root, "train")[6]
    path = root / "JPEGImages" / f"{bad}.jpg"
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(DataError) as info:
        train(config(root, tmp_path / "work", **{"dataset.num_workers": 1}))
    (line,) = error_lines(info.value)
    assert line.startswith(f"error: cannot read image file {path}")


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "I;16"])
def test_training_reads_grey_rgba_cmyk_and_16_bit_images(root, mode):
    name = ids(root, "train")[0]
    path = root / "JPEGImages" / f"{name}.jpg"
    image = Image.open(path).convert("L" if mode == "I;16" else mode)
    if mode == "I;16":
        image = Image.fromarray(np.asarray(image).astype(np.uint16) * 257)
    path.unlink()
    image.save(root / "JPEGImages" / f"{name}.{'jpg' if mode == 'CMYK' else 'png'}")
    sample = VOCClsDataset(root, root, "train", crop_size=64, num_classes=5)[(0, 1)]
    assert tuple(sample["image"].shape) == (3, 64, 64)


def test_image_smaller_than_the_crop_is_padded_and_a_degenerate_one_named(root):
    name = ids(root, "train")[0]
    path = root / "JPEGImages" / f"{name}.jpg"
    Image.new("RGB", (20, 12), (90, 10, 200)).save(path)
    dataset = VOCClsDataset(
        root, root, "train", crop_size=64, scale_range=(1.0, 1.0), flip=False, num_classes=5
    )
    sample = dataset[(0, 1)]
    h0, h1, w0, w1 = sample["img_box"].tolist()
    assert (h1 - h0, w1 - w0) == (12, 20)  # the real pixels; the rest of the 64 x 64 crop is padding
    Image.new("RGB", (1, 1)).save(path)
    with pytest.raises(DataError, match=f"{name}.jpg is 1x1 pixels"):
        VOCClsDataset(root, root, "train", crop_size=64, scale_range=(0.5, 2.0), num_classes=5)[(0, 1)]


def _first_val_mask(root: Path) -> Path:
    return root / "SegmentationClassAug" / f"{ids(root, 'val')[0]}.png"


def test_rgb_coloured_mask_is_an_error_naming_the_file(root, tmp_path):
    mask = _first_val_mask(root)
    Image.open(mask).convert("RGB").save(mask)
    with pytest.raises(DataError, match=f"label file {mask} has mode 'RGB'"):
        train(config(root, tmp_path / "work"))
    assert not (tmp_path / "work").exists()


def test_mask_value_outside_the_classes_is_an_error_naming_the_file(root):
    mask = _first_val_mask(root)
    values = np.asarray(Image.open(mask)).copy()
    values[0, 0] = 7  # 5 classes: 0..4, and 255
    Image.fromarray(values).save(mask)
    dataset = VOCSegDataset(root, root, "val", num_classes=5)
    with pytest.raises(DataError, match=rf"mask {mask} holds value\(s\) \[7\] outside the classes 0..4"):
        dataset[0]
    values[0, 0] = 255  # ignore is fine
    Image.fromarray(values).save(mask)
    assert int(dataset[0]["label"][0, 0]) == 255


def test_image_and_mask_of_different_sizes(root):
    mask = _first_val_mask(root)
    Image.open(mask).resize((7, 5)).save(mask)
    with pytest.raises(DataError, match=f"label {mask} is \\(5, 7\\)"):
        check_split(VOCSegDataset(root, root, "val", num_classes=5), with_labels=True)


def test_make_coco_masks_without_split_names_the_split_val(tmp_path, capsys):
    """``instances_val2017.json`` gives ``val.txt`` (the split name configs use), and says so."""
    coco_mini = REPO.parent / "shared" / "data" / "real" / "coco_mini"
    real = json.loads((coco_mini / "annotations" / "instances_val2017.json").read_text())
    image = real["images"][0]
    (tmp_path / "images").mkdir()
    shutil.copy(coco_mini / "val2017" / image["file_name"], tmp_path / "images")
    small = {"images": [image], "annotations": [], "categories": real["categories"]}
    (tmp_path / "instances_val2017.json").write_text(json.dumps(small))
    main = runpy.run_path(str(REPO / "scripts" / "make_coco_masks.py"), run_name="make_coco_masks")["main"]
    main(
        ["--annotations", str(tmp_path / "instances_val2017.json"), "--images", str(tmp_path / "images")]
        + ["--out", str(tmp_path / "out")]
    )
    assert (tmp_path / "out" / "val.txt").read_text().split() == [Path(image["file_name"]).stem]
    assert not (tmp_path / "out" / "val2017.txt").exists()
    assert "split val (from " in capsys.readouterr().out
