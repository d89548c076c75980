"""Saliency maps on disk (spec §4.3, §10): one 8-bit greyscale ``<id>.png`` per image, read as grey/255.

The folder is ``dataset.saliency_dir`` for the off-the-shelf maps (the authors' DSS maps, our
U²-Net-p maps from ``scripts/make_saliency.py``, or a user's folder) and a round's folder for the
saliency pseudo labels. We write 'L' PNGs: the authors' palette PNGs without a palette read back as
zeros on current Pillow (spec §11 item 10).

A missing map is an error naming the file. A map whose size differs from its image's is resized
(bilinear, with one warning per folder naming the first such file) or refused
(``on_size_mismatch="refuse"``): the authors' maps have the image's size, so a mismatch usually means
the maps of another image set.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from common.errors import DataError, MissingFileError

SIZE_POLICIES = ("resize", "refuse")


def write_saliency_png(path: str | Path, saliency_u8: np.ndarray) -> None:
    """Write an (H, W) uint8 saliency map as an 8-bit greyscale ('L') PNG (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(saliency_u8, dtype=np.uint8), mode="L").save(path)


def read_saliency_u8(path: str | Path) -> np.ndarray:
    """(H, W) uint8 of a saliency PNG (any single-channel or colour mode is converted to grey)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"saliency map missing: {path}")
    with Image.open(path) as image:
        if image.mode not in ("L", "I;16", "I", "RGB", "RGBA", "LA"):
            raise DataError(
                f"saliency map {path} has mode {image.mode!r}; expected an 8-bit greyscale PNG",
                hint="a palette PNG without a palette loses its values: write it as mode 'L'",
            )
        return np.array(image.convert("L"), dtype=np.uint8)


class SaliencyReader:
    """Reads ``<folder>/<id>.png`` as (H, W) float64 in [0, 1] at the image's size.

    Args:
        folder: the maps' folder. on_size_mismatch: "resize" (bilinear, one warning) or "refuse".
    """

    def __init__(self, folder: str | Path, on_size_mismatch: str = "resize") -> None:
        """Checks the size policy; the folder is read lazily, one warning per folder on resizing."""
        if on_size_mismatch not in SIZE_POLICIES:
            raise ValueError(f"on_size_mismatch must be one of {SIZE_POLICIES}, got {on_size_mismatch!r}")
        self.folder = Path(folder)
        self.on_size_mismatch = on_size_mismatch
        self._warned = False

    def path(self, name: str) -> Path:
        """The map file of image ``name``."""
        return self.folder / f"{name}.png"

    def read_u8(self, name: str, image_hw: tuple[int, int]) -> np.ndarray:
        """(H, W) uint8 map of ``name`` at ``image_hw``; missing or (refused) mismatched maps named."""
        path = self.path(name)
        if not self.folder.is_dir():
            raise MissingFileError(f"saliency folder not found: {self.folder}")
        sal = read_saliency_u8(path)
        if sal.shape == tuple(image_hw):
            return sal
        message = (
            f"saliency map {path} is {sal.shape[1]}x{sal.shape[0]}, its image {image_hw[1]}x{image_hw[0]}"
        )
        if self.on_size_mismatch == "refuse":
            raise DataError(message, hint="use maps of these images, or saliency.on_size_mismatch=resize")
        if not self._warned:
            warnings.warn(
                f"{message}: resized (bilinear); further mismatches in {self.folder} are not reported",
                stacklevel=2,
            )
            self._warned = True
        return cv2.resize(sal, (image_hw[1], image_hw[0]), interpolation=cv2.INTER_LINEAR)

    def read(self, name: str, image_hw: tuple[int, int]) -> np.ndarray:
        """(H, W) float64 saliency of ``name`` in [0, 1] (grey/255, as the authors read it)."""
        return self.read_u8(name, image_hw).astype(np.float64) / 255.0
