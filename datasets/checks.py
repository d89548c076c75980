"""Checks of a split before any work starts, and of every mask as it is read.

``check_split`` runs when a training or evaluation set is built (``utils/runtime/data.py``), before a work
directory is written or a DataLoader worker starts: the split lists at least one id and no id twice,
every id has its image (and mask, for evaluation), and the first samples decode. A wrong
``dataset.root_dir`` is reported as such, missing files by id. ``check_label_values`` stops on a mask
value outside ``0..num_classes-1`` (other than 255), which the confusion matrix would otherwise drop
without a word.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from common.errors import DataError, MissingFileError

PROBED_SAMPLES = 2  # samples decoded per split before training or evaluation starts
LISTED_IDS = 5


def listed_ids(names: list[str]) -> str:
    """The first ``LISTED_IDS`` ids of ``names``, comma-separated, and how many more there are."""
    shown = ", ".join(names[:LISTED_IDS])
    return shown + (f" and {len(names) - LISTED_IDS} more" if len(names) > LISTED_IDS else "")


def check_label_values(label: np.ndarray, num_classes: int, ignore_index: int, path: str | Path) -> None:
    """Raise ``DataError`` naming ``path`` if the (H, W) mask holds a value outside the classes."""
    values = np.unique(label)
    bad = values[((values < 0) | (values >= num_classes)) & (values != ignore_index)]
    if bad.size:
        raise DataError(
            f"mask {path} holds value(s) {bad[:8].tolist()} outside the classes 0..{num_classes - 1} "
            f"(and {ignore_index} = ignore)",
            hint="check dataset.num_classes, or convert the masks to class ids",
        )


def check_rescalable(shape: tuple[int, ...], min_scale: float, path: str | Path) -> None:
    """Raise ``DataError`` if rescaling an image of ``shape`` by ``min_scale`` can leave no pixel."""
    if min(shape[:2]) * min_scale < 1:
        raise DataError(
            f"image {path} is {shape[0]}x{shape[1]} pixels: too small to rescale by {min_scale}",
            hint="remove it from the split or raise dataset.rescale_range",
        )


def _missing(dataset: Dataset, path_of) -> tuple[list[str], Path | None]:
    """Ids whose file is absent, and the first path looked for."""
    missing, first = [], None
    for name in dataset.names:
        try:
            path = path_of(name)
        except FileNotFoundError:
            missing.append(name)
            continue
        if not Path(path).is_file():
            missing.append(name)
            first = first or Path(path)
    return missing, first


def _check_files(dataset: Dataset, what: str, path_of, folder: Path) -> None:
    """Raise ``MissingFileError`` if some or all of the split's files (``path_of(name)``) are missing,
    naming the folder and the first missing ids."""
    missing, _ = _missing(dataset, path_of)
    total, split = len(dataset.names), dataset.split
    if missing and len(missing) == total:
        raise MissingFileError(
            f"none of the {total} {what}s of split {split} is in {folder}",
            hint="check dataset.root_dir (and dataset.name: voc or coco layout)",
        )
    if missing:
        raise MissingFileError(
            f"split {split}: {len(missing)} of {total} {what}s missing in {folder}: "
            f"ids {listed_ids(missing)}",
            hint="restore the files or remove the ids from the split list",
        )


def check_split(dataset: Dataset, with_labels: bool = False, probe: int = PROBED_SAMPLES) -> None:
    """Stop with an error naming the split, the folder and the ids unless the split can be used.

    Args:
        dataset: a ``VOCClsDataset``/``VOCSegDataset`` (or COCO) with ``names``, ``split``,
            ``image_path`` and, with ``with_labels``, ``label_path``.
        with_labels: also require every mask.
        probe: decode the first ``probe`` samples (images, masks, their sizes and values).
    """
    names = dataset.names
    if not names:
        raise DataError(
            f"split {dataset.split} lists no image", hint="fill the split list or choose another split"
        )
    twice = [n for n, k in Counter(names).items() if k > 1]
    if twice:
        raise DataError(
            f"split {dataset.split} lists {len(twice)} id(s) more than once: {listed_ids(twice)}",
            hint="remove the duplicates (each image would count twice)",
        )
    _check_files(dataset, "image", dataset.image_path, dataset.image_folder())
    if with_labels:
        _check_files(dataset, "mask", dataset.label_path, dataset.label_path(names[0]).parent)
    for index in range(min(probe, len(names))):
        dataset[(index, 0)]  # private seeded generators: the global random state is untouched
