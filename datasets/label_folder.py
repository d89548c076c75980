"""Fully supervised training set: images of a VOC/COCO-layout split with label PNGs from a folder.

Targets are ``<label_dir>/<id>.png`` (class ids 0..K, 255 = ignore; palette or grey PNGs), e.g. the
``pseudo/`` folder ``scripts/make_pseudo_labels.py`` writes, or ``SegmentationClassAug`` itself for a
fully supervised run. Colour (RGB) PNGs are refused naming the file (``datasets.io.read_label``).

Before training, every id of the split is checked (``check_labels``): its label exists (missing ids are
listed), the label has its image's height and width (read from the headers) and holds no value outside
0..K other than 255 (each label decoded once, a few ms each). A bad folder stops the run before a work
directory is written.

Augmentation (the DeepLab second-stage recipe): random rescale by r ~ U(lo, hi) (image bilinear, label
nearest), horizontal flip, random crop padded with 0 (image, before normalisation) and 255 (label); the
draws are those of ``datasets.transforms.train_transform`` in the same order, so ``dataset[(index, seed)]``
is a pure function of the seed (exact resume).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from common.errors import DataError, MissingFileError
from datasets.checks import check_label_values, check_rescalable, listed_ids
from datasets.classes import IGNORE_INDEX
from datasets.io import image_size, read_image, read_label
from datasets.transforms import normalize, random_crop, random_fliplr, to_chw
from datasets.voc import resolve_item


def rescale_pair(image: np.ndarray, label: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Resize an image (bilinear, as ``datasets.transforms.random_rescale``) and its label (nearest).

    Args:
        image: (H, W, 3) uint8; label: (H, W) integer class ids.
        ratio: the scale factor.

    Returns:
        (int(r·H), int(r·W), 3) float32 and (int(r·H), int(r·W)) int64.
    """
    height, width = label.shape
    size = (int(width * ratio), int(height * ratio))  # PIL size is (w, h)
    resized = Image.fromarray(image).resize(size, resample=Image.BILINEAR)
    lab = Image.fromarray(label.astype(np.int32), mode="I").resize(size, resample=Image.NEAREST)
    return np.asarray(resized, dtype=np.float32), np.asarray(lab, dtype=np.int64)


def pair_transform(
    image: np.ndarray,
    label: np.ndarray,
    crop_size: int,
    scale_range: tuple[float, float] | None,
    flip: bool,
    py_rng: Any,
    np_rng: Any,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rescale, flip and crop an image and its label together, then normalise the image.

    The label rides as a fourth channel (stored as id + 1, so the crop's zero padding becomes
    ``ignore_index``) through the same ``random_fliplr`` and ``random_crop`` as the image.

    Args:
        image: (H, W, 3) uint8; label: (H, W) int class ids.
        crop_size: side of the square crop.
        scale_range: (lo, hi) of the rescale ratio, or None.
        flip: apply the random horizontal flip.
        py_rng, np_rng: generators as in ``datasets.transforms``.

    Returns:
        image (3, crop, crop) float32 normalised, label (crop, crop) int64, img_box (4,) int64.
    """
    if scale_range is not None:
        ratio = py_rng.uniform(scale_range[0], scale_range[1])
        image, label = rescale_pair(image, label, ratio)
    else:
        image = image.astype(np.float32)
    stacked = np.concatenate([image, (label.astype(np.float32) + 1.0)[..., None]], axis=2)
    if flip:
        stacked = random_fliplr(stacked, py_rng)
    stacked, img_box = random_crop(stacked, crop_size, py_rng, np_rng)
    crop_label = np.rint(stacked[..., 3]).astype(np.int64) - 1
    crop_label[crop_label < 0] = ignore_index
    return to_chw(normalize(stacked[..., :3])), crop_label, img_box


class LabelFolderDataset(Dataset):
    """Augmented crops of a split with their labels from ``label_dir``.

    Each sample is a dict: ``name`` str, ``image`` (3, crop, crop) float32 normalised, ``label``
    (crop, crop) int64 (255 = ignore, padding included), ``cls_label`` (K,) float32 the foreground
    classes present in the whole label, ``img_box`` (4,) int64 [h0, h1, w0, w1] the real pixels.

    Args:
        images: the split's image dataset (``VOCClsDataset``/``COCOClsDataset``: ``names``, ``split``,
            ``image_path``, ``image_folder``).
        label_dir: folder of ``<id>.png`` labels.
        num_classes: C, background included.
        check: check every label before training (see the module docstring).
    """

    def __init__(
        self,
        images: Dataset,
        label_dir: str | Path,
        crop_size: int,
        scale_range: tuple[float, float] | None = (0.5, 1.5),
        flip: bool = True,
        num_classes: int = 21,
        check: bool = True,
    ) -> None:
        """The split of ``images`` with the labels of ``label_dir``; raises on a bad folder (``check``)."""
        self.images = images
        self.names: list[str] = list(images.names)
        self.split = images.split
        self.label_dir = Path(label_dir)
        self.crop_size = crop_size
        self.scale_range = scale_range
        self.flip = flip
        self.num_classes = num_classes
        if not self.label_dir.is_dir():
            raise MissingFileError(
                f"label folder not found: {self.label_dir}",
                hint="dataset.label_dir: e.g. the pseudo/ folder scripts/make_pseudo_labels.py writes",
            )
        if check:
            self.check_labels()

    def image_folder(self) -> Path:
        """Folder of the split's images."""
        return self.images.image_folder()

    def image_path(self, name: str) -> Path:
        """Path of the image of ``name``."""
        return self.images.image_path(name)

    def label_path(self, name: str) -> Path:
        """``<label_dir>/<name>.png``."""
        return self.label_dir / f"{name}.png"

    def check_labels(self) -> None:
        """Every id has a label of its image's size with values in 0..K or 255; else one error naming
        the ids (missing) or the file (size, values, colour PNG)."""
        missing = [n for n in self.names if not self.label_path(n).is_file()]
        if missing:
            raise MissingFileError(
                f"label folder {self.label_dir} lacks {len(missing)} of the {len(self.names)} ids of split "
                f"{self.split}: {listed_ids(missing)}",
                hint="export the labels of the whole training split (make_pseudo_labels.py --split ...)",
            )
        for name in self.names:
            path = self.label_path(name)
            label_hw, image_hw = image_size(path), image_size(self.image_path(name))
            if label_hw != image_hw:
                raise DataError(
                    f"label {path} is {label_hw[0]}x{label_hw[1]}, its image is {image_hw[0]}x{image_hw[1]} "
                    "(height x width)",
                    hint="a label must have its image's size (labels of another split or resolution?)",
                )
            check_label_values(read_label(path), self.num_classes, IGNORE_INDEX, path)

    def __len__(self) -> int:
        """The number of ids of the split."""
        return len(self.names)

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        """The augmented sample of ``item`` (an index, or ``(index, seed)`` for seeded draws)."""
        index, py_rng, np_rng = resolve_item(item)
        name = self.names[index]
        path, label_path = self.image_path(name), self.label_path(name)
        image, label = read_image(path), read_label(label_path).astype(np.int64)
        if label.shape != image.shape[:2]:
            raise DataError(f"label {label_path} is {label.shape}, its image {path} is {image.shape[:2]}")
        check_label_values(label, self.num_classes, IGNORE_INDEX, label_path)
        if self.scale_range is not None:
            check_rescalable(image.shape, self.scale_range[0], path)
        present = np.unique(label)
        cls_label = np.zeros(self.num_classes - 1, dtype=np.float32)
        cls_label[present[(present > 0) & (present < self.num_classes)] - 1] = 1.0
        image, label, img_box = pair_transform(
            image, label, self.crop_size, self.scale_range, self.flip, py_rng, np_rng
        )
        return {
            "name": name,
            "image": torch.from_numpy(image),
            "label": torch.from_numpy(label),
            "cls_label": torch.from_numpy(cls_label),
            "img_box": torch.from_numpy(img_box),
        }
