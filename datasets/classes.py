"""Class names, COCO category-id mappings and the PASCAL VOC palette, all in one place.

Conventions (spec §6.7, §6.9, §7.4):

* Segmentation ids: 0 is background, foreground class ``k`` (0-based index in the name tuples below)
  has segmentation id ``k + 1``; 255 is "ignore" (VOC void borders, COCO crowd regions).
* Image-level labels index the foreground classes only (0-based, background excluded).
* COCO category ids run 1..90 with ten unused ids; the 80 used ids map in increasing order to the
  contiguous segmentation ids 1..80, which is the order of :data:`COCO_CLASSES`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip

COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

#: COCO category ids in 1..90 that no category uses.
COCO_UNUSED_CATEGORY_IDS: tuple[int, ...] = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)

#: The 80 used COCO category ids, increasing; position i belongs to ``COCO_CLASSES[i]``.
COCO_CATEGORY_IDS: tuple[int, ...] = tuple(i for i in range(1, 91) if i not in COCO_UNUSED_CATEGORY_IDS)

#: COCO category id -> contiguous segmentation id 1..80.
COCO_CATEGORY_TO_CONTIGUOUS: dict[int, int] = {cat: i + 1 for i, cat in enumerate(COCO_CATEGORY_IDS)}

#: COCO name -> VOC name for the 20 categories the two datasets share.
COCO_TO_VOC_NAME: dict[str, str] = {
    "airplane": "aeroplane", "bicycle": "bicycle", "bird": "bird", "boat": "boat",
    "bottle": "bottle", "bus": "bus", "car": "car", "cat": "cat", "chair": "chair", "cow": "cow",
    "dining table": "diningtable", "dog": "dog", "horse": "horse", "motorcycle": "motorbike",
    "person": "person", "potted plant": "pottedplant", "sheep": "sheep", "couch": "sofa",
    "train": "train", "tv": "tvmonitor",
}  # fmt: skip

#: COCO category id -> VOC segmentation id 1..20 for the shared categories (others are absent).
COCO_CATEGORY_TO_VOC: dict[int, int] = {
    COCO_CATEGORY_IDS[COCO_CLASSES.index(coco)]: VOC_CLASSES.index(voc) + 1
    for coco, voc in COCO_TO_VOC_NAME.items()
}

IGNORE_INDEX = 255


def voc_palette(num_colors: int = 256) -> np.ndarray:
    """The standard PASCAL VOC colour map (bit-interleaved class ids).

    Bit ``j`` of the id sets bit ``7 - j // 3`` of the red, green or blue channel for ``j % 3`` equal
    to 0, 1 or 2: id 1 is (128, 0, 0), 2 is (0, 128, 0), 15 is (192, 128, 128), 255 is (224, 224, 192).

    Args:
        num_colors: Number of palette entries.

    Returns:
        (num_colors, 3) uint8 RGB table.
    """
    palette = np.zeros((num_colors, 3), dtype=np.uint8)
    for idx in range(num_colors):
        value, rgb = idx, [0, 0, 0]
        for shift in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= (value & 1) << shift
                value >>= 1
        palette[idx] = rgb
    return palette


def colorize(label: np.ndarray) -> np.ndarray:
    """Map class ids to VOC palette colours.

    Args:
        label: (H, W) integer class ids in 0..255.

    Returns:
        (H, W, 3) uint8 RGB image.
    """
    label = np.asarray(label)
    if label.size and (label.min() < 0 or label.max() > 255):
        raise ValueError(f"label ids must lie in 0..255, got range [{label.min()}, {label.max()}]")
    return voc_palette()[label.astype(np.int64)]


def save_label_png(path: str | Path, label: np.ndarray) -> None:
    """Write class ids as a palette (P mode) PNG with the VOC palette, creating parent folders.

    Args:
        path: Output file.
        label: (H, W) integer class ids in 0..255.
    """
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"label must be 2-D (H, W), got shape {label.shape}")
    if label.size and (label.min() < 0 or label.max() > 255):
        raise ValueError(f"label ids must lie in 0..255, got range [{label.min()}, {label.max()}]")
    height, width = label.shape
    image = Image.frombytes("P", (width, height), np.ascontiguousarray(label, dtype=np.uint8).tobytes())
    image.putpalette(voc_palette().tobytes())
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
