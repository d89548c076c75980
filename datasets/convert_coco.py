"""COCO instance annotations -> class-index masks in the AFA COCO layout or the VOC layout.

Rasterisation rule (one mask per image, at the JSON height × width):

1. Every annotation is decoded with pycocotools (``frPyObjects`` + ``merge`` for polygons and
   uncompressed RLE; compressed RLE as is), exactly what ``COCO.annToMask`` does.
2. Only categories in the id map are painted; the others stay background (0).
3. Crowd annotations (``iscrowd=1``) of mapped categories are painted 255 first.
4. Non-crowd instances are then painted with their class id in order of decreasing pixel area
   (ties keep the JSON order), each overwriting what lies below, so a small object lying on a
   larger one stays visible, and an instance overrides a crowd region it overlaps.

Id maps: the COCO layout uses the contiguous ids 1..80 of :data:`datasets.classes.COCO_CLASSES`;
``voc_classes=True`` keeps the 20 categories shared with VOC as VOC ids 1..20 (everything else is
background, crowd regions of shared classes are 255).

Image-level labels are the classes present in the rendered mask (ids 1..K → indices 0..K−1). A class
present only as a crowd region, or fully hidden under other instances, does not count. Images that
end with no foreground are still written and listed with no class.

Outputs (``out_dir``): COCO layout ``JPEGImages/<train|val>/<id>.jpg`` (the file copied),
``SegmentationClass/<train|val>/<id>.png``; VOC layout ``JPEGImages/<id>.jpg``,
``SegmentationClassAug/<id>.png``. Both: ``<split>.txt`` and ``cls_labels.txt``, merged with what a
previous split already wrote there. Image id = file-name stem.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from datasets.classes import (
    COCO_CATEGORY_IDS,
    COCO_CATEGORY_TO_CONTIGUOUS,
    COCO_CATEGORY_TO_VOC,
    COCO_CLASSES,
    IGNORE_INDEX,
    VOC_CLASSES,
    save_label_png,
)
from datasets.coco import coco_folder
from datasets.voc import CLS_LABELS_FILE, read_cls_labels, write_cls_labels
from datasets.voc_labels import mask_class_indices


@dataclass
class ConversionSummary:
    """What :func:`convert_coco` wrote for one split."""

    split: str
    num_images: int = 0
    empty_images: int = 0
    crowd_pixels: int = 0
    class_image_counts: dict[str, int] = field(default_factory=dict)

    def format(self) -> str:
        """Short multi-line report."""
        present = ", ".join(f"{name} {n}" for name, n in sorted(self.class_image_counts.items()))
        return (
            f"split {self.split}: {self.num_images} images, {self.empty_images} without foreground, "
            f"{self.crowd_pixels} crowd (255) pixels\n"
            f"{len(self.class_image_counts)} classes present (images per class): {present}"
        )


def default_split_name(annotations: str | Path) -> str:
    """``.../instances_val2017.json`` -> ``val2017``."""
    stem = Path(annotations).name
    stem = stem[: -len(".json")] if stem.endswith(".json") else stem
    return stem[len("instances_") :] if stem.startswith("instances_") else stem


def category_id_map(categories: Sequence[Mapping[str, Any]], voc_classes: bool) -> dict[int, int]:
    """Output class id of every COCO category id to paint, checking the JSON's category table.

    Args:
        categories: The JSON ``categories`` list (``id``, ``name``).
        voc_classes: Map to VOC ids 1..20 (shared categories only) instead of contiguous 1..80.

    Returns:
        COCO category id -> output class id.
    """
    for category in categories:
        cat_id, name = int(category["id"]), category["name"]
        if cat_id not in COCO_CATEGORY_TO_CONTIGUOUS or COCO_CLASSES[COCO_CATEGORY_IDS.index(cat_id)] != name:
            raise ValueError(
                f"unexpected COCO category {cat_id} {name!r}; expected the 80 COCO 2014/2017 ones"
            )
    return dict(COCO_CATEGORY_TO_VOC) if voc_classes else dict(COCO_CATEGORY_TO_CONTIGUOUS)


def annotation_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Decode one annotation's ``segmentation`` (polygons, uncompressed or compressed RLE).

    Args:
        segmentation: The annotation's ``segmentation`` field.
        height: Image height.
        width: Image width.

    Returns:
        (height, width) bool mask.
    """
    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return mask_utils.decode(rle).astype(bool)


def render_mask(
    annotations: Sequence[Mapping[str, Any]], height: int, width: int, id_map: Mapping[int, int]
) -> np.ndarray:
    """Rasterise one image's annotations with the rule of the module docstring.

    Args:
        annotations: The image's annotation dicts (``segmentation``, ``category_id``, ``iscrowd``).
        height: Image height.
        width: Image width.
        id_map: COCO category id -> output class id; unmapped categories are not painted.

    Returns:
        (height, width) uint8 class ids, 0 background, 255 crowd.
    """
    label = np.zeros((height, width), dtype=np.uint8)
    instances = []
    for ann in annotations:
        if int(ann["category_id"]) not in id_map:
            continue
        mask = annotation_mask(ann["segmentation"], height, width)
        if ann.get("iscrowd", 0):
            label[mask] = IGNORE_INDEX
        else:
            instances.append((mask, id_map[int(ann["category_id"])]))
    instances.sort(key=lambda item: -int(item[0].sum()))  # stable: ties keep the JSON order
    for mask, class_id in instances:
        label[mask] = class_id
    return label


def _merge_list(path: Path, names: Sequence[str]) -> list[str]:
    """Sorted union of the ids already in ``path`` (if any) and ``names``."""
    old = path.read_text().split() if path.is_file() else []
    return sorted(set(old) | set(names))


def _merge_labels(path: Path, new: Mapping[str, list[int]], num_classes: int) -> dict[str, list[int]]:
    """Union of the labels already in ``path`` (if any) and ``new`` (new wins), sorted by id."""
    merged = (
        {name: np.flatnonzero(vec).tolist() for name, vec in read_cls_labels(path, num_classes).items()}
        if path.is_file()
        else {}
    )
    merged.update(new)
    return dict(sorted(merged.items()))


def _output_paths(out_dir: Path, name: str, suffix: str, split: str, voc_classes: bool) -> tuple[Path, Path]:
    """(image path, mask path) of ``name`` in the chosen layout."""
    if voc_classes:
        return out_dir / "JPEGImages" / f"{name}{suffix}", out_dir / "SegmentationClassAug" / f"{name}.png"
    folder = coco_folder(split)
    return (
        out_dir / "JPEGImages" / folder / f"{name}{suffix}",
        out_dir / "SegmentationClass" / folder / f"{name}.png",
    )


def _convert_image(
    info: Mapping[str, Any],
    anns: list,
    images_dir: Path,
    out_dir: Path,
    split: str,
    id_map: Mapping[int, int],
    voc_classes: bool,
) -> np.ndarray:
    """Copy one image, write its mask and return the mask ((H, W) uint8)."""
    source = images_dir / info["file_name"]
    if not source.is_file():
        raise FileNotFoundError(f"image file not found: {source}")
    height, width = int(info["height"]), int(info["width"])
    with Image.open(source) as image:
        if image.size != (width, height):
            raise ValueError(f"{source} is {image.size[0]}x{image.size[1]}, the JSON says {width}x{height}")
    image_path, mask_path = _output_paths(out_dir, source.stem, source.suffix, split, voc_classes)
    image_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, image_path)
    label = render_mask(anns, height, width, id_map)
    save_label_png(mask_path, label)
    return label


def convert_coco(
    annotations: str | Path,
    images_dir: str | Path,
    out_dir: str | Path,
    split: str | None = None,
    voc_classes: bool = False,
) -> ConversionSummary:
    """Convert one COCO instance-annotation file and its images (see the module docstring).

    Args:
        annotations: ``instances_<split>.json``.
        images_dir: Folder holding the JSON's ``file_name``s.
        out_dir: Output root.
        split: Split name for ``<split>.txt`` and the train/val folder; default from the JSON name.
        voc_classes: Write the VOC layout with the 20 shared classes instead of the COCO layout.

    Returns:
        Counts of what was written.
    """
    annotations, images_dir, out_dir = Path(annotations), Path(images_dir), Path(out_dir)
    data = json.loads(annotations.read_text())
    split = split or default_split_name(annotations)
    id_map = category_id_map(data["categories"], voc_classes)
    names = VOC_CLASSES if voc_classes else COCO_CLASSES
    out_dir.mkdir(parents=True, exist_ok=True)
    by_image: dict[int, list] = {}
    for ann in data["annotations"]:
        by_image.setdefault(int(ann["image_id"]), []).append(ann)
    summary = ConversionSummary(split=split)
    labels: dict[str, list[int]] = {}
    for info in sorted(data["images"], key=lambda item: item["file_name"]):
        label = _convert_image(
            info, by_image.get(int(info["id"]), []), images_dir, out_dir, split, id_map, voc_classes
        )
        present = mask_class_indices(label, len(names) + 1)
        labels[Path(info["file_name"]).stem] = present
        summary.num_images += 1
        summary.empty_images += not present
        summary.crowd_pixels += int((label == IGNORE_INDEX).sum())
        for index in present:
            summary.class_image_counts[names[index]] = summary.class_image_counts.get(names[index], 0) + 1
    list_path = out_dir / f"{split}.txt"
    list_path.write_text("\n".join(_merge_list(list_path, list(labels))) + "\n")
    labels_path = out_dir / CLS_LABELS_FILE
    header = (
        f"image_id followed by the indices (0-{len(names) - 1}, {'VOC' if voc_classes else 'COCO'} order, "
        "no background) of the classes present in the mask; crowd-only classes are not counted"
    )
    write_cls_labels(labels_path, _merge_labels(labels_path, labels, len(names) + 1), header)
    return summary
