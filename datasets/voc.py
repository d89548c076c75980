"""PASCAL VOC 2012 (+SBD) datasets, split lists and image-level label files (spec §6.7).

Layout under ``root_dir``: ``JPEGImages/<id>.jpg`` and ``SegmentationClassAug/<id>.png``. Split lists
and ``cls_labels.txt`` live in ``name_list_dir`` (the packaged ones in :data:`VOC_LIST_DIR`).

``cls_labels.txt`` format: lines starting with ``#`` are comments; every other line is an image id
followed by the 0-based foreground-class indices present (background excluded); an id with no index
has no foreground class.

The classification dataset reads only the image; unlike the reference it never opens the label PNG
of a training image, so training needs no masks.

Every ``__getitem__`` takes either an index (augmentation draws from the global ``random`` and
``np.random``, as the reference does) or a tuple ``(index, seed)`` (draws, in the same order, from
``random.Random(seed)`` and ``np.random.RandomState(seed)``; seed in 0..2**32−1), which makes the
augmentation of a sample a pure function of its seed.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from common.errors import DataError, MissingFileError
from datasets.checks import check_label_values, check_rescalable
from datasets.classes import COCO_CLASSES, IGNORE_INDEX, VOC_CLASSES
from datasets.io import image_size, read_image, read_label
from datasets.transforms import normalize, to_chw, train_transform

VOC_LIST_DIR = Path(__file__).resolve().parent / "voc"
CLS_LABELS_FILE = "cls_labels.txt"
CLASS_NAMES_FILE = "class_names.txt"

Item = Union[int, tuple[int, int]]


def read_name_list(name_list_dir: str | Path, split: str) -> list[str]:
    """Read ``<name_list_dir>/<split>.txt``: one image id per line, blank lines skipped."""
    path = Path(name_list_dir) / f"{split}.txt"
    if not path.is_file():
        raise MissingFileError(
            f"split list not found: {path}", hint="check dataset.name_list_dir and the split name"
        )
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def read_cls_labels(path: str | Path, num_classes: int) -> dict[str, np.ndarray]:
    """Read a ``cls_labels.txt`` file into multi-hot vectors.

    Args:
        path: The label file.
        num_classes: Number of classes including background (K + 1).

    Returns:
        Image id -> (K,) float32 multi-hot vector over the foreground classes.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"class-label file not found: {path}", hint="check dataset.name_list_dir")
    labels: dict[str, np.ndarray] = {}
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        vector = np.zeros(num_classes - 1, dtype=np.float32)
        for field in fields[1:]:
            index = int(field)
            if not 0 <= index < num_classes - 1:
                raise DataError(
                    f"{path}:{line_no}: class index {index} outside 0..{num_classes - 2}",
                    hint="check dataset.num_classes (background included)",
                )
            vector[index] = 1.0
        labels[fields[0]] = vector
    return labels


def write_cls_labels(
    path: str | Path, labels: Mapping[str, Iterable[int]], header: str | None = None
) -> None:
    """Write image-level labels in the ``cls_labels.txt`` text format (ids in the given order).

    Args:
        path: Output file (parent folders are created).
        labels: Image id -> 0-based foreground-class indices present.
        header: Optional comment text; each of its lines is written prefixed by ``# ``.
    """
    lines = [f"# {text}" for text in header.splitlines()] if header else []
    for name, indices in labels.items():
        lines.append(" ".join([name, *(str(i) for i in sorted({int(i) for i in indices}))]))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def class_names(name_list_dir: str | Path, num_classes: int) -> list[str]:
    """Class names, background first.

    Reads ``<name_list_dir>/class_names.txt`` (one name per line) when present; otherwise the VOC
    names (num_classes 21) or the COCO names (81) with "background" prepended.
    """
    path = Path(name_list_dir) / CLASS_NAMES_FILE
    if path.is_file():
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if len(names) != num_classes:
            raise DataError(f"{path} lists {len(names)} names, expected num_classes={num_classes}")
        return names
    defaults = {len(VOC_CLASSES) + 1: VOC_CLASSES, len(COCO_CLASSES) + 1: COCO_CLASSES}
    if num_classes not in defaults:
        raise MissingFileError(f"no built-in class names for num_classes={num_classes}; missing {path}")
    return ["background", *defaults[num_classes]]


def find_image(stem: Path) -> Path:
    """Return ``<stem>.jpg`` if it exists, else ``<stem>.png``; error naming the jpg otherwise."""
    jpg = stem.with_name(stem.name + ".jpg")
    if jpg.is_file():
        return jpg
    png = stem.with_name(stem.name + ".png")
    if png.is_file():
        return png
    raise MissingFileError(f"image file not found: {jpg} (nor {png.name})")


def labels_for_names(names: list[str], path: Path, num_classes: int) -> dict[str, np.ndarray]:
    """Image-level labels of ``names`` from ``path``; ``DataError`` naming the first missing id."""
    labels = read_cls_labels(path, num_classes)
    missing = [name for name in names if name not in labels]
    if missing:
        raise DataError(f"image id {missing[0]!r} ({len(missing)} ids in all) is missing from {path}")
    return {name: labels[name] for name in names}


def resolve_item(item: Item) -> tuple[int, Any, Any]:
    """Split a dataset item into (index, python-style rng, numpy-style rng).

    Args:
        item: An index (global generators) or ``(index, seed)`` (private seeded generators).

    Returns:
        index, ``random`` or ``random.Random(seed)``, ``np.random`` or ``np.random.RandomState(seed)``.
    """
    if isinstance(item, (tuple, list)):
        index, seed = item
        return int(index), random.Random(int(seed)), np.random.RandomState(int(seed))
    return int(item), random, np.random


class VOCLayout:
    """The VOC image layout (``root_dir/JPEGImages/<name>.jpg``) and the split's length, mixed into the
    datasets that list ``names``; the COCO layout (``datasets/coco.py``) overrides the paths."""

    root_dir: Path
    names: list[str]

    def image_folder(self) -> Path:
        """Folder of the split's images."""
        return self.root_dir / "JPEGImages"

    def image_path(self, name: str) -> Path:
        """Path of the image file of ``name``."""
        return find_image(self.image_folder() / name)

    def __len__(self) -> int:
        """Number of images of the split."""
        return len(self.names)


class VOCClsDataset(VOCLayout, Dataset):
    """Training set for the classification branch: augmented crops with image-level labels.

    Each sample is a dict: ``name`` str, ``image`` (3, crop, crop) float32 normalised,
    ``cls_label`` (K,) float32 multi-hot, ``img_box`` (4,) int64 [h0, h1, w0, w1].
    """

    def __init__(
        self,
        root_dir: str | Path,
        name_list_dir: str | Path,
        split: str = "train_aug",
        crop_size: int | None = 512,
        scale_range: tuple[float, float] | None = (0.5, 2.0),
        flip: bool = True,
        num_classes: int = 21,
    ) -> None:
        """Reads the split's ids and their image-level labels; ``crop_size`` None: no crop,
        ``scale_range`` None: no rescaling."""
        self.root_dir = Path(root_dir)
        self.split = split
        self.crop_size = crop_size
        self.scale_range = scale_range
        self.flip = flip
        self.num_classes = num_classes
        self.names = read_name_list(name_list_dir, split)
        self.cls_labels = labels_for_names(self.names, Path(name_list_dir) / CLS_LABELS_FILE, num_classes)

    def __getitem__(self, item: Item) -> dict[str, Any]:
        """The item of ``(index, seed)`` (private generators: exact resume) or an index (global ones)."""
        index, py_rng, np_rng = resolve_item(item)
        name = self.names[index]
        path = self.image_path(name)
        image = read_image(path)
        if self.scale_range is not None:
            check_rescalable(image.shape, self.scale_range[0], path)
        image, img_box = train_transform(image, self.crop_size, self.scale_range, self.flip, py_rng, np_rng)
        return {
            "name": name,
            "image": torch.from_numpy(image),
            "cls_label": torch.from_numpy(self.cls_labels[name].copy()),
            "img_box": torch.from_numpy(img_box),
        }


class VOCSegDataset(VOCLayout, Dataset):
    """Evaluation set: original-size normalised images with their segmentation masks.

    Each sample is a dict: ``name`` str, ``image`` (3, H, W) float32 normalised, ``label`` (H, W)
    int64 class ids (255 ignore), ``cls_label`` (K,) float32. With ``with_labels=False`` (the VOC
    test split) no label file is read: ``label`` is all 255 and ``cls_label`` all 0.
    """

    def __init__(
        self,
        root_dir: str | Path,
        name_list_dir: str | Path,
        split: str = "val",
        num_classes: int = 21,
        with_labels: bool = True,
    ) -> None:
        """Reads the split's ids and, ``with_labels``, their image-level labels."""
        self.root_dir = Path(root_dir)
        self.split = split
        self.num_classes = num_classes
        self.with_labels = with_labels
        self.names = read_name_list(name_list_dir, split)
        self.cls_labels = (
            labels_for_names(self.names, Path(name_list_dir) / CLS_LABELS_FILE, num_classes)
            if with_labels
            else {}
        )

    def label_path(self, name: str) -> Path:
        """Path of the mask PNG of ``name``."""
        return self.root_dir / "SegmentationClassAug" / f"{name}.png"

    def image_size(self, index: int) -> tuple[int, int]:
        """(height, width) of sample ``index`` from its file header (for size-grouped batches)."""
        return image_size(self.image_path(self.names[index]))

    def __getitem__(self, item: Item) -> dict[str, Any]:
        """The item of ``index`` (or ``(index, seed)``; no randomness here): keys in the class docstring."""
        index = resolve_item(item)[0]
        name = self.names[index]
        image_path = self.image_path(name)
        image = read_image(image_path)
        if self.with_labels:
            label = read_label(self.label_path(name)).astype(np.int64)
            if label.shape != image.shape[:2]:
                raise DataError(
                    f"label {self.label_path(name)} is {label.shape}, image {image_path} is {image.shape[:2]}"
                    " (height, width)",
                    hint="image and mask of an id must have the same height and width",
                )
            check_label_values(label, self.num_classes, IGNORE_INDEX, self.label_path(name))
            cls_label = self.cls_labels[name].copy()
        else:
            label = np.full(image.shape[:2], IGNORE_INDEX, dtype=np.int64)
            cls_label = np.zeros(self.num_classes - 1, dtype=np.float32)
        return {
            "name": name,
            "image": torch.from_numpy(to_chw(normalize(image))),
            "label": torch.from_numpy(label),
            "cls_label": torch.from_numpy(cls_label),
        }
