"""MCTformer's classification dataset: VOC or COCO ids, labels and images, MCTformer's transforms (spec §3.5).

The id lists, image-level labels and image paths are those of :class:`datasets.voc.VOCClsDataset` /
:class:`datasets.coco.COCOClsDataset` (held, not copied); only the transform differs. As in the
authors' code, the image-level labels are kept even when the crop removes an object.

Items are drawn as ``dataset[index]`` (global ``random`` state) or ``dataset[(index, seed)]``
(``random.Random(seed)``: the augmentation is a pure function of the seed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from common.errors import ConfigError, DataError
from datasets.coco import COCOClsDataset
from datasets.io import read_image
from datasets.mct_transforms import (
    AugmentConfig,
    as_augment_config,
    check_augment,
    eval_transform,
    train_transform,
)
from datasets.voc import Item, VOCClsDataset, resolve_item

MIN_SIDE = 16  # one DeiT patch: a smaller image cannot give a single token


class MCTClsDataset(Dataset):
    """Training (or validation) set of MCTformer.

    Each sample is a dict: ``name`` str, ``image`` (3, S, S) float32 normalised, ``cls_label`` (K,)
    float32 multi-hot over the foreground classes, ``img_box`` (4,) int64 [0, S, 0, S] (every pixel
    of a resized crop is real).
    """

    def __init__(
        self,
        root_dir: str | Path,
        name_list_dir: str | Path,
        split: str,
        num_classes: int,
        dataset_name: str = "voc",
        augment: Any = None,
        train: bool = True,
    ) -> None:
        """Args:
        root_dir: Dataset root (VOC or COCO layout, see ``datasets/voc.py``, ``datasets/coco.py``).
        name_list_dir: Folder of ``<split>.txt`` and ``cls_labels.txt``.
        split: Split name. num_classes: Classes including background (VOC 21, COCO 81).
        dataset_name: "voc" or "coco" (the folder layout).
        augment: The ``augment`` section, a dataclass or its OmegaConf node (default: the authors' recipe).
        train: Random training transform; False: the deterministic validation transform.
        """
        layouts = {"voc": VOCClsDataset, "coco": COCOClsDataset}
        if dataset_name not in layouts:
            raise ConfigError(f"dataset.name={dataset_name!r}: must be 'voc' or 'coco'")
        self.augment = as_augment_config(augment) if augment is not None else AugmentConfig()
        check_augment(self.augment)
        self.train = train
        self.ids = layouts[dataset_name](root_dir, name_list_dir, split, None, None, False, num_classes)
        self.names = self.ids.names
        self.split = split
        self.root_dir = self.ids.root_dir
        self.num_classes = num_classes

    def image_folder(self) -> Path:
        """Folder of the split's images."""
        return self.ids.image_folder()

    def image_path(self, name: str) -> Path:
        """Path of the image file of ``name``."""
        return self.ids.image_path(name)

    def __len__(self) -> int:
        """Number of images of the split."""
        return len(self.names)

    def __getitem__(self, item: Item) -> dict[str, Any]:
        """The item of ``(index, seed)`` (or an index): ``name``, ``image`` (3, S, S) float32, ``cls_label``
        (K,) float32 and ``img_box`` (4,) int64, as the class docstring says."""
        index, py_rng, _ = resolve_item(item)
        name = self.names[index]
        path = self.image_path(name)
        image = read_image(path)
        if min(image.shape[:2]) < MIN_SIDE:
            raise DataError(
                f"image {path} is {image.shape[0]}x{image.shape[1]} pixels: "
                f"smaller than one {MIN_SIDE}-pixel patch",
                hint="remove it from the split",
            )
        pil = Image.fromarray(image)
        x = train_transform(pil, self.augment, py_rng) if self.train else eval_transform(pil, self.augment)
        size = self.augment.crop_size
        return {
            "name": name,
            "image": torch.from_numpy(x),
            "cls_label": torch.from_numpy(self.ids.cls_labels[name].copy()),
            "img_box": torch.from_numpy(np.array([0, size, 0, size], dtype=np.int64)),
        }
