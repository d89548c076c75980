"""AuxSegNet's training data (spec §7.4): image, class label, segmentation and saliency pseudo labels.

The authors' ``get_data_from_chunk`` draws, per batch, one scale s ~ U(0.7, 1.3); per image a flip
draw and a crop offset. ``auxseg_transform`` is the per-image step as a pure function of those draws
(the golden case ``auxseg_data_pipeline`` feeds it the recorded ones). ``AuxSegDataset`` draws them
per **item** from the item's seed (``dataset[(index, seed)]``, ``utils/runtime/data.py``), so the
scale is per image rather than per batch (a documented deviation: the engine's items are independent).

Order per image: resize all three maps to (⌊H·s⌋, ⌊W·s⌋) with OpenCV (bilinear for the image and the
saliency, nearest for the label) → flip when flip_p > 0.5 → normalise the image → crop: a side longer
than the crop starts at the drawn offset ⌊U·(L − crop)⌋, a shorter side lies top-left on a zero canvas
(0 = the mean colour for the image, ``seg_pad_value`` for the label, 0 for the saliency) → saliency
binarised at > 0.5.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
import torch

from common.errors import MissingFileError
from datasets.io import read_image, read_label
from datasets.saliency import SaliencyReader
from datasets.voc import CLS_LABELS_FILE, VOCLayout, labels_for_names, read_name_list, resolve_item

IMAGENET_MEAN_01 = np.array([0.485, 0.456, 0.406])  # authors' (x/255 − mean)/std
IMAGENET_STD_01 = np.array([0.229, 0.224, 0.225])


class AuxSegCrop(NamedTuple):
    """One transformed training sample.

    Attributes:
        image: (3, crop, crop) float32 normalised.
        ori_image: (3, crop, crop) uint8, the de-normalised crop (unused by the losses, as the authors').
        sal: (crop, crop) uint8 in {0, 1}, the binarised saliency target.
        seg: (crop, crop) uint8 class ids, 255 = uncertain, padding ``seg_pad_value``.
    """

    image: np.ndarray
    ori_image: np.ndarray
    sal: np.ndarray
    seg: np.ndarray


def crop_offset(length: int, crop: int, u: float) -> int:
    """Start of the crop along a side of ``length``: ⌊u·(length − crop)⌋ when longer, else 0."""
    return int(u * (length - crop)) if length > crop else 0


def _place(array: np.ndarray, top: int, left: int, crop: int, fill: float) -> np.ndarray:
    """The crop×crop window at (top, left) of ``array`` (H, W[, C]); a short side lies top-left on
    ``fill``."""
    window = array[top : top + crop, left : left + crop]
    canvas = np.full((crop, crop) + array.shape[2:], fill, dtype=array.dtype)
    canvas[: window.shape[0], : window.shape[1]] = window
    return canvas


def auxseg_transform(
    image: np.ndarray,
    sal: np.ndarray,
    seg: np.ndarray,
    scale: float,
    flip_p: float,
    offsets: tuple[int, int],
    crop: int,
    seg_pad_value: int = 0,
) -> AuxSegCrop:
    """The authors' per-image augmentation (spec §7.4) for given draws.

    Args:
        image: (H, W, 3) uint8 RGB. sal: (H, W) float saliency in [0, 1]. seg: (H, W) uint8 class ids.
        scale: the resize factor (the authors draw one per batch). flip_p: flip when > 0.5.
        offsets: (top, left) crop start, from ``crop_offset`` (0 for a side not longer than ``crop``).
        crop: the square crop side. seg_pad_value: the label of padded pixels (authors: 0 = background).

    Returns:
        ``AuxSegCrop`` of (3, crop, crop) / (crop, crop) arrays.
    """
    height, width = seg.shape
    size = (int(width * scale), int(height * scale))  # OpenCV: (w, h)
    img = cv2.resize(image.astype(np.float64), size, interpolation=cv2.INTER_LINEAR)
    sal = cv2.resize(np.asarray(sal, np.float64), size, interpolation=cv2.INTER_LINEAR)
    seg = cv2.resize(seg, size, interpolation=cv2.INTER_NEAREST)
    if flip_p > 0.5:
        img, sal, seg = img[:, ::-1], sal[:, ::-1], seg[:, ::-1]
    img = (img / 255.0 - IMAGENET_MEAN_01) / IMAGENET_STD_01
    top, left = offsets
    img = _place(img, top, left, crop, 0.0)
    sal = _place(sal, top, left, crop, 0.0)
    seg = _place(seg, top, left, crop, seg_pad_value)
    ori = ((img * IMAGENET_STD_01 + IMAGENET_MEAN_01) * 255.0).astype(np.uint8)
    return AuxSegCrop(
        np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32),
        np.ascontiguousarray(ori.transpose(2, 0, 1)),
        (sal > 0.5).astype(np.uint8),
        np.ascontiguousarray(seg, dtype=np.uint8),
    )


def draw_augmentation(
    shape: tuple[int, int], crop: int, scale_range: tuple[float, float], py_rng: Any, np_rng: Any
) -> tuple[float, float, tuple[int, int]]:
    """(scale, flip_p, (top, left)) for an (H, W) image: scale ~ U(scale_range) and flip_p ~ U(0, 1)
    from ``np_rng``, the crop offsets from ``py_rng.random()`` (height first), as the authors' order."""
    scale = float(np_rng.uniform(*scale_range))
    flip_p = float(np_rng.rand())
    height, width = int(shape[0] * scale), int(shape[1] * scale)
    top = crop_offset(height, crop, py_rng.random())
    left = crop_offset(width, crop, py_rng.random())
    return scale, flip_p, (top, left)


class AuxSegDataset(VOCLayout):
    """AuxSegNet's training set: the split's images with the round's two pseudo-label folders.

    Items, drawn as ``dataset[(index, seed)]``: ``name`` str, ``image`` (3, crop, crop) float32,
    ``cls_label`` (K,) float32, ``sal_label`` (crop, crop) float32 in {0, 1}, ``seg_label`` (crop, crop)
    int64 (255 ignored), ``img_box`` (4,) int64 [0, crop, 0, crop] (padding is trained, as the authors').

    Args:
        root_dir: dataset root (``JPEGImages/``). name_list_dir: ``<split>.txt`` and ``cls_labels.txt``.
        split: the id list. seg_dir: segmentation pseudo labels ``<id>.png`` (class ids, 255).
        sal_dir: saliency pseudo labels ``<id>.png`` (8-bit grey). crop_size, scale_range, num_classes,
        seg_pad_value, on_size_mismatch: as the config. seg_dir None: every label 0 (the
        classification-only pre-training of the round driver).
    """

    def __init__(
        self,
        root_dir: str | Path,
        name_list_dir: str | Path,
        split: str,
        seg_dir: str | Path | None,
        sal_dir: str | Path,
        crop_size: int = 321,
        scale_range: tuple[float, float] = (0.7, 1.3),
        num_classes: int = 21,
        seg_pad_value: int = 0,
        on_size_mismatch: str = "resize",
    ) -> None:
        """Reads the split's ids and image labels; opens the saliency folder (see the class docstring)."""
        self.root_dir = Path(root_dir)
        self.split = split
        self.seg_dir = None if seg_dir is None else Path(seg_dir)
        self.crop_size = crop_size
        self.scale_range = scale_range
        self.seg_pad_value = seg_pad_value
        self.names = read_name_list(name_list_dir, split)
        self.cls_labels = labels_for_names(self.names, Path(name_list_dir) / CLS_LABELS_FILE, num_classes)
        self.saliency = SaliencyReader(sal_dir, on_size_mismatch)

    def _seg_label(self, name: str, image_hw: tuple[int, int]) -> np.ndarray:
        """(H, W) uint8 segmentation pseudo label of ``name`` (all 0 without ``seg_dir``);
        a missing file named."""
        if self.seg_dir is None:
            return np.zeros(image_hw, dtype=np.uint8)  # unused (weight 0); 255 everywhere would give NaN
        path = self.seg_dir / f"{name}.png"
        if not path.is_file():
            raise MissingFileError(f"segmentation pseudo label missing: {path}")
        return read_label(path).astype(np.uint8)

    def __getitem__(self, item: Any) -> dict[str, Any]:
        """The item of ``(index, seed)`` (or an index: global generators); keys and shapes in the
        class docstring."""
        index, py_rng, np_rng = resolve_item(item)
        name = self.names[index]
        image = read_image(self.image_path(name))
        sal = self.saliency.read(name, image.shape[:2])
        scale, flip_p, offsets = draw_augmentation(
            image.shape[:2], self.crop_size, self.scale_range, py_rng, np_rng
        )
        out = auxseg_transform(
            image,
            sal,
            self._seg_label(name, image.shape[:2]),
            scale,
            flip_p,
            offsets,
            self.crop_size,
            self.seg_pad_value,
        )
        return {
            "name": name,
            "image": torch.from_numpy(out.image),
            "cls_label": torch.from_numpy(self.cls_labels[name].copy()),
            "sal_label": torch.from_numpy(out.sal.astype(np.float32)),
            "seg_label": torch.from_numpy(out.seg.astype(np.int64)),
            "img_box": torch.tensor([0, self.crop_size, 0, self.crop_size], dtype=torch.int64),
        }
