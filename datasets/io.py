"""Reading images and label masks with PIL.

The reference reads images with imageio; we use PIL and normalise every storage mode to RGB uint8.
EXIF orientation is deliberately not applied: VOC and COCO masks are aligned with the stored pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from common.errors import DataError, MissingFileError

_TO_RGB_MODES = frozenset(
    {"RGB", "RGBA", "RGBX", "L", "LA", "La", "P", "PA", "1", "CMYK", "YCbCr", "LAB", "HSV"}
)
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_LABEL_MODES = frozenset({"P", "L", "1"})


def _open(path: str | Path, what: str) -> Image.Image:
    """Open and fully decode an image file, raising errors that name the file.

    Args:
        path: File to open.
        what: "image" or "label", used in the messages.

    Returns:
        The decoded PIL image.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{what} file not found: {path}")
    try:
        image = Image.open(path)
        image.load()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise DataError(
            f"cannot read {what} file {path}: {err}", hint="replace or remove the file (truncated, corrupt?)"
        ) from err
    return image


def _sixteen_bit_to_uint8(image: Image.Image) -> np.ndarray:
    """Scale a 16-bit (I;16*, or I as PIL loads 16-bit PNGs) grey image to 8 bit.

    Args:
        image: PIL image in a 16/32-bit integer mode.

    Returns:
        (H, W) uint8, round(value / 257) after clipping to 0..65535.
    """
    values = np.asarray(image, dtype=np.float64)
    return np.rint(np.clip(values, 0, 65535) / 257.0).astype(np.uint8)


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of an image file from its header, without decoding the pixels."""
    with Image.open(path) as image:
        width, height = image.size
    return height, width


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as RGB uint8.

    Grey (L, 1), grey+alpha (LA), palette (P, PA), RGBA (alpha dropped, no compositing) and CMYK
    JPEGs are converted by PIL; 16-bit grey PNGs are scaled by 1/257 and replicated to 3 channels;
    16-bit RGB PNGs are reduced to their high byte by PIL's decoder.

    Args:
        path: Image file.

    Returns:
        (H, W, 3) uint8 RGB array.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The file cannot be decoded or has an unsupported mode.
    """
    image = _open(path, "image")
    if image.mode in _SIXTEEN_BIT_MODES:
        grey = _sixteen_bit_to_uint8(image)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode not in _TO_RGB_MODES:
        raise DataError(f"unsupported image mode {image.mode!r} in {path}")
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.array(image, dtype=np.uint8)


def read_label(path: str | Path) -> np.ndarray:
    """Read a class-index mask (palette or grey PNG; the stored indices are the class ids).

    Args:
        path: Label PNG.

    Returns:
        (H, W) uint8 class ids (int64 for 16/32-bit grey masks, values kept as stored).

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The file cannot be decoded or is a colour (RGB/RGBA) image, as the masks
            distributed for COCO by the AFA authors are; convert those with scripts/make_coco_masks.py.
    """
    image = _open(path, "label")
    if image.mode in _LABEL_MODES:
        return np.array(image, dtype=np.uint8)
    if image.mode in _SIXTEEN_BIT_MODES:
        return np.array(image, dtype=np.int64)
    raise DataError(
        f"label file {path} has mode {image.mode!r}; expected a single-channel class-index PNG "
        "(P or L mode); colour-coded masks are not class ids",
        hint="regenerate them as class-index PNGs, for COCO with scripts/make_coco_masks.py",
    )
