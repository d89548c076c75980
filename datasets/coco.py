"""MS-COCO 2014 datasets in the AFA layout (spec §6.9).

Layout under ``root_dir``: ``JPEGImages/{train,val}/<id>.jpg`` and
``SegmentationClass/{train,val}/<id>.png`` with contiguous class ids 0..80 (255 ignore); the folder is
"train" when the split name contains "train", else "val". Split lists and ``cls_labels.txt``
(indices 0..79) live in ``name_list_dir``; the packaged split lists are in :data:`COCO_LIST_DIR`, the
label file is produced by ``scripts/make_coco_masks.py`` or ``scripts/make_voc_labels.py
--num-classes 81``. Everything but the paths is shared with :mod:`datasets.voc`.
"""

from __future__ import annotations

from pathlib import Path

from datasets.voc import VOCClsDataset, VOCSegDataset, find_image

COCO_LIST_DIR = Path(__file__).resolve().parent / "coco"
COCO_NUM_CLASSES = 81


def coco_folder(split: str) -> str:
    """Sub-folder of a split: "train" if "train" is in the split name, else "val"."""
    return "train" if "train" in split else "val"


class _COCOLayout:
    """Path functions of the COCO layout; mixed into the VOC dataset classes."""

    root_dir: Path
    split: str

    def image_folder(self) -> Path:
        """``root_dir/JPEGImages/<train|val>``."""
        return self.root_dir / "JPEGImages" / coco_folder(self.split)

    def image_path(self, name: str) -> Path:
        """``root_dir/JPEGImages/<train|val>/<name>.jpg`` (or .png)."""
        return find_image(self.image_folder() / name)

    def label_path(self, name: str) -> Path:
        """``root_dir/SegmentationClass/<train|val>/<name>.png``."""
        return self.root_dir / "SegmentationClass" / coco_folder(self.split) / f"{name}.png"


class COCOClsDataset(_COCOLayout, VOCClsDataset):
    """COCO training set for the classification branch; see :class:`datasets.voc.VOCClsDataset`."""

    def __init__(
        self,
        root_dir: str | Path,
        name_list_dir: str | Path,
        split: str = "train",
        crop_size: int | None = 512,
        scale_range: tuple[float, float] | None = (0.5, 2.0),
        flip: bool = True,
        num_classes: int = COCO_NUM_CLASSES,
    ) -> None:
        """The VOC training set's arguments on the COCO layout (81 classes by default)."""
        super().__init__(root_dir, name_list_dir, split, crop_size, scale_range, flip, num_classes)


class COCOSegDataset(_COCOLayout, VOCSegDataset):
    """COCO evaluation set; see :class:`datasets.voc.VOCSegDataset`."""

    def __init__(
        self,
        root_dir: str | Path,
        name_list_dir: str | Path,
        split: str = "val",
        num_classes: int = COCO_NUM_CLASSES,
        with_labels: bool = True,
    ) -> None:
        """The VOC evaluation set's arguments on the COCO layout (81 classes by default)."""
        super().__init__(root_dir, name_list_dir, split, num_classes, with_labels)
