"""Image-level labels derived from segmentation masks, and their comparison with a label file.

A class is present in an image when at least one mask pixel carries its id; ids 0 (background)
and 255 (void/crowd) are ignored, so foreground index i corresponds to mask id i + 1.

The authors' VOC labels (``datasets/voc/cls_labels.txt``, the content of their
``cls_labels_onehot.npy``) come from the XML object annotations, not from the masks. Measured on
the 12,031 genuine VOC 2012 + SBD masks of train_aug ∪ val (``scripts/make_voc_labels.py
--compare``): 11,213 ids agree exactly and 818 differ (817 in train_aug, 1 in val). 816 of them are
SBD images outside VOC 2012 trainval; the other two are 2011_001621 (the file lists tvmonitor, the
mask has none) and 2008_005245 (val: the mask has person, the file does not). In all, the file lists
903 classes that the masks lack (person 257, sofa 158, chair 147, diningtable 85, car 64, bottle 60,
pottedplant 35, tvmonitor 19, bicycle 18, dog 11, motorbike 10, bus 8, bird 7, boat 7, cat 5,
aeroplane 4, cow 3, train 3, horse 1, sheep 1) and misses 1 (that person). Training uses the file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from datasets.classes import IGNORE_INDEX
from datasets.io import read_label


def mask_class_indices(mask: np.ndarray, num_classes: int) -> list[int]:
    """0-based foreground-class indices present in a mask.

    Args:
        mask: (H, W) integer class ids; 0 background, 255 ignored.
        num_classes: Number of classes including background.

    Returns:
        Sorted indices i in 0..num_classes−2 such that id i + 1 occurs in the mask.

    Raises:
        ValueError: The mask holds an id outside 0..num_classes−1 and 255.
    """
    values = np.asarray(mask, dtype=np.int64).ravel()
    if values.size and values.min() < 0:
        raise ValueError(f"negative class id {values.min()} in mask")
    counts = np.bincount(values, minlength=256)
    counts[IGNORE_INDEX] = 0
    if counts[num_classes:].any():
        bad = np.flatnonzero(counts[num_classes:]) + num_classes
        raise ValueError(f"class ids {bad.tolist()} do not fit num_classes={num_classes}")
    return [int(i) for i in np.flatnonzero(counts[1:num_classes])]


def derive_cls_labels(masks_dir: str | Path, ids: Iterable[str], num_classes: int) -> dict[str, list[int]]:
    """Image-level labels of ``ids`` from ``<masks_dir>/<id>.png``.

    Args:
        masks_dir: Folder of class-index PNGs.
        ids: Image ids.
        num_classes: Number of classes including background.

    Returns:
        Image id -> sorted 0-based foreground-class indices present in its mask.
    """
    masks_dir = Path(masks_dir)
    labels = {}
    for name in ids:
        path = masks_dir / f"{name}.png"
        try:
            labels[name] = mask_class_indices(read_label(path), num_classes)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from err
    return labels


@dataclass
class LabelComparison:
    """Agreement between derived labels and an existing label file, over their common ids.

    ``extra[c]`` counts ids where the existing file lists class c but the mask lacks it;
    ``missing[c]`` counts ids where the mask has class c but the existing file lacks it.
    """

    num_common: int
    num_equal: int
    differing_ids: list[str]
    extra: dict[int, int] = field(default_factory=dict)
    missing: dict[int, int] = field(default_factory=dict)
    only_derived: list[str] = field(default_factory=list)
    only_existing: list[str] = field(default_factory=list)


def compare_cls_labels(
    derived: Mapping[str, Iterable[int]], existing: Mapping[str, np.ndarray]
) -> LabelComparison:
    """Compare mask-derived labels with multi-hot labels read by :func:`datasets.voc.read_cls_labels`.

    Args:
        derived: Image id -> indices present in the mask.
        existing: Image id -> (K,) multi-hot vector.

    Returns:
        The per-id and per-class comparison.
    """
    result = LabelComparison(num_common=0, num_equal=0, differing_ids=[])
    result.only_derived = [name for name in derived if name not in existing]
    result.only_existing = [name for name in existing if name not in derived]
    for name, indices in derived.items():
        if name not in existing:
            continue
        have = set(int(i) for i in np.flatnonzero(existing[name]))
        got = set(int(i) for i in indices)
        result.num_common += 1
        if have == got:
            result.num_equal += 1
            continue
        result.differing_ids.append(name)
        for cls in have - got:
            result.extra[cls] = result.extra.get(cls, 0) + 1
        for cls in got - have:
            result.missing[cls] = result.missing.get(cls, 0) + 1
    return result


def format_comparison(result: LabelComparison, names: list[str], max_ids: int = 10) -> str:
    """Human-readable report of a :class:`LabelComparison`.

    Args:
        result: The comparison.
        names: Foreground class names (index i -> name).
        max_ids: How many differing ids to list.
    """
    lines = [
        f"ids compared: {result.num_common}; identical: {result.num_equal}; "
        f"different: {len(result.differing_ids)}",
        f"ids only in the masks: {len(result.only_derived)}; "
        f"only in the label file: {len(result.only_existing)}",
        f"extra labels (in the file, absent from the mask): {sum(result.extra.values())}; "
        f"missing labels (in the mask, absent from the file): {sum(result.missing.values())}",
    ]
    for cls in sorted(set(result.extra) | set(result.missing)):
        extra, missing = result.extra.get(cls, 0), result.missing.get(cls, 0)
        lines.append(f"  {names[cls]:>14}: extra {extra:5d}  missing {missing:5d}")
    if result.differing_ids:
        lines.append("first differing ids: " + ", ".join(result.differing_ids[:max_ids]))
    return "\n".join(lines)
