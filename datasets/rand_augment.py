"""RandAugment as timm 0.4.12 runs it for MCTformer (``rand-m9-mstd0.5-inc1``, spec §3.5), written here.

A policy string ``rand-m<M>[-n<N>][-mstd<S>][-inc<0|1>]`` gives the integer magnitude M (0..10), the
number of ops N per image (default 2), the standard deviation S of the per-op magnitude noise and the op
set: with an ``inc`` field, the "increasing" set, in which a larger magnitude always means a stronger
change (timm 0.4.12 tests the field's text, so ``inc0`` selects it too); without, the plain set. Per image,
N ops are drawn uniformly with replacement from the 15 ops of the set; each op then

1. is skipped with probability 1 − 0.5 (one ``rng.random()`` draw, applied when it is <= 0.5),
2. draws its magnitude m ~ N(M, S) (one ``rng.gauss``, only when S > 0) and clips it to [0, 10],
3. maps m to its argument (the level functions below; signed arguments draw a random sign, − with
   probability 0.5), and changes the PIL image.

Geometric ops fill uncovered pixels with the ImageNet mean colour in 0..255, (124, 116, 104), and
resample with the training interpolation (bicubic). Relative translations move by a fraction
(≤ 0.45) of the image side; timm's absolute ``translate_const`` (100 px at 224) belongs to ops that are
not in the RandAugment sets.

Random draws come from one generator with the interface of Python's ``random`` (``random``, ``gauss``,
``randrange``): timm draws the op choice from ``np.random`` and the rest from ``random``; here one
stream serves both, so the distribution is timm's but not its draws (docs/DEVIATIONS.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageEnhance, ImageOps

from common.errors import ConfigError

MAX_LEVEL = 10.0  # timm _MAX_LEVEL: magnitudes live in [0, 10]
OP_PROB = 0.5  # timm rand_augment_ops: every op applies with probability 0.5
DEFAULT_NUM_LAYERS = 2  # timm rand_augment_transform: n defaults to 2
ROTATE_MAX_DEG = 30.0
SHEAR_MAX = 0.3
TRANSLATE_MAX_PCT = 0.45
ENHANCE_INC_MAX = 0.9  # increasing enhance factor 1 ± 0.9·m/10
SOLARIZE_ADD_MAX = 110
SOLARIZE_ADD_THRESH = 128
RESAMPLE = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}


@dataclass(frozen=True)
class RandAugmentPolicy:
    """A parsed policy: ``num_layers`` ops of magnitude ~ N(``magnitude``, ``magnitude_std``)."""

    magnitude: float
    num_layers: int
    magnitude_std: float
    increasing: bool


def parse_policy(text: str, key: str = "augment.auto_augment") -> RandAugmentPolicy:
    """Parse ``rand-m9-mstd0.5-inc1``-style text; ``ConfigError`` naming ``key`` on anything else."""
    parts = text.split("-")
    if parts[0] != "rand" or len(parts) < 2:
        raise ConfigError(f"{key}={text!r}: expected 'rand-m<M>[-n<N>][-mstd<S>][-inc<0|1>]'")
    values: dict[str, str] = {}
    for part in parts[1:]:
        match = re.fullmatch(r"(mstd|inc|m|n)([0-9.]+)", part)
        if match is None:
            raise ConfigError(f"{key}={text!r}: unknown field {part!r} (m, n, mstd, inc are supported)")
        values[match.group(1)] = match.group(2)
    try:
        policy = RandAugmentPolicy(
            magnitude=int(values.get("m", MAX_LEVEL)),
            num_layers=int(values.get("n", DEFAULT_NUM_LAYERS)),
            magnitude_std=float(values.get("mstd", 0.0)),
            increasing="inc" in values,  # timm 0.4.12 tests bool(text): "inc0" selects it too
        )
    except ValueError as err:
        raise ConfigError(f"{key}={text!r}: {err}") from err
    if not 0 <= policy.magnitude <= MAX_LEVEL or policy.num_layers < 0:
        raise ConfigError(f"{key}={text!r}: magnitude must be in 0..10 and n >= 0")
    return policy


# ---- the ops: each a function of a PIL RGB image and plain numbers --------------------------------


def auto_contrast(img: Image.Image) -> Image.Image:
    """Stretch each channel linearly so that its min maps to 0 and its max to 255 (PIL ``autocontrast``)."""
    return ImageOps.autocontrast(img)


def equalize(img: Image.Image) -> Image.Image:
    """Histogram-equalise each channel (PIL ``equalize``)."""
    return ImageOps.equalize(img)


def invert(img: Image.Image) -> Image.Image:
    """x -> 255 − x."""
    return ImageOps.invert(img)


def posterize(img: Image.Image, bits: int) -> Image.Image:
    """Keep the ``bits`` most significant bits of each value (unchanged for bits >= 8, black for 0).

    Pillow >= 10 refuses 0 bits; the Pillow 8 of the authors' environment masks every bit away.
    """
    if bits >= 8:
        return img
    return ImageOps.posterize(img, bits) if bits >= 1 else img.point([0] * 256 * len(img.getbands()))


def solarize(img: Image.Image, thresh: int) -> Image.Image:
    """x -> 255 − x where x >= ``thresh``."""
    return ImageOps.solarize(img, thresh)


def solarize_add(img: Image.Image, add: int, thresh: int = SOLARIZE_ADD_THRESH) -> Image.Image:
    """x -> min(255, x + ``add``) where x < ``thresh``."""
    lut = [min(255, i + add) if i < thresh else i for i in range(256)]
    return img.point(lut * len(img.getbands()))


def color(img: Image.Image, factor: float) -> Image.Image:
    """Blend with the grey image: grey + factor·(img − grey) (PIL ``ImageEnhance.Color``)."""
    return ImageEnhance.Color(img).enhance(factor)


def contrast(img: Image.Image, factor: float) -> Image.Image:
    """Blend with the mean grey level: mean + factor·(img − mean) (PIL ``ImageEnhance.Contrast``)."""
    return ImageEnhance.Contrast(img).enhance(factor)


def brightness(img: Image.Image, factor: float) -> Image.Image:
    """factor·img, clipped (PIL ``ImageEnhance.Brightness``)."""
    return ImageEnhance.Brightness(img).enhance(factor)


def sharpness(img: Image.Image, factor: float) -> Image.Image:
    """Blend with PIL's 3×3 smoothed image (border kept): smooth + factor·(img − smooth)."""
    return ImageEnhance.Sharpness(img).enhance(factor)


def rotate(img: Image.Image, degrees: float, fill: tuple[int, ...], resample: int) -> Image.Image:
    """Rotate counter-clockwise by ``degrees`` about the centre, same size, corners filled."""
    return img.rotate(degrees, resample=resample, fillcolor=fill)


def _affine(img: Image.Image, coeffs: tuple[float, ...], fill: tuple[int, ...], resample: int) -> Image.Image:
    """Output pixel (x, y) samples input (a·x + b·y + c, d·x + e·y + f); outside pixels are ``fill``."""
    return img.transform(img.size, Image.AFFINE, coeffs, resample=resample, fillcolor=fill)


def shear_x(img: Image.Image, factor: float, fill: tuple[int, ...], resample: int) -> Image.Image:
    """Output (x, y) samples input (x + factor·y, y)."""
    return _affine(img, (1, factor, 0, 0, 1, 0), fill, resample)


def shear_y(img: Image.Image, factor: float, fill: tuple[int, ...], resample: int) -> Image.Image:
    """Output (x, y) samples input (x, factor·x + y)."""
    return _affine(img, (1, 0, 0, factor, 1, 0), fill, resample)


def translate_x_rel(img: Image.Image, pct: float, fill: tuple[int, ...], resample: int) -> Image.Image:
    """Output (x, y) samples input (x + pct·width, y): the content moves left by pct·width."""
    return _affine(img, (1, 0, pct * img.size[0], 0, 1, 0), fill, resample)


def translate_y_rel(img: Image.Image, pct: float, fill: tuple[int, ...], resample: int) -> Image.Image:
    """Output (x, y) samples input (x, y + pct·height): the content moves up by pct·height."""
    return _affine(img, (1, 0, 0, 0, 1, pct * img.size[1]), fill, resample)


# ---- level functions: magnitude m in [0, 10] -> the op's arguments -------------------------------


def random_sign(value: float, rng: Any) -> float:
    """−value when ``rng.random() > 0.5``, else value (timm ``_randomly_negate``)."""
    return -value if rng.random() > 0.5 else value


def _no_args(m: float, rng: Any) -> tuple:
    """No arguments (AutoContrast, Equalize, Invert)."""
    return ()


def _signed(scale: float) -> Callable[[float, Any], tuple]:
    """A level function giving ±m/10·``scale`` (rotate, shear, translate)."""
    return lambda m, rng: (random_sign(m / MAX_LEVEL * scale, rng),)


def _enhance_increasing(m: float, rng: Any) -> tuple:
    """Enhance factor 1 ± m/10·0.9 (the "increasing" ops of ``inc1``)."""
    return (1.0 + random_sign(m / MAX_LEVEL * ENHANCE_INC_MAX, rng),)


def _enhance(m: float, rng: Any) -> tuple:
    """Enhance factor m/10·1.8 + 0.1."""
    return (m / MAX_LEVEL * 1.8 + 0.1,)


def _posterize_increasing(m: float, rng: Any) -> tuple:
    """Bits kept: 4 − ⌊m/10·4⌋ (stronger with m)."""
    return (4 - int(m / MAX_LEVEL * 4),)


def _posterize(m: float, rng: Any) -> tuple:
    """Bits kept: ⌊m/10·4⌋."""
    return (int(m / MAX_LEVEL * 4),)


def _solarize_increasing(m: float, rng: Any) -> tuple:
    """Threshold 256 − ⌊m/10·256⌋ (stronger with m)."""
    return (256 - int(m / MAX_LEVEL * 256),)


def _solarize(m: float, rng: Any) -> tuple:
    """Threshold ⌊m/10·256⌋."""
    return (int(m / MAX_LEVEL * 256),)


def _solarize_add(m: float, rng: Any) -> tuple:
    """Value added below the threshold: ⌊m/10·110⌋."""
    return (int(m / MAX_LEVEL * SOLARIZE_ADD_MAX),)


# name -> (op, level function, geometric: takes fill and resample)
OPS = {
    "AutoContrast": (auto_contrast, _no_args, False),
    "Equalize": (equalize, _no_args, False),
    "Invert": (invert, _no_args, False),
    "Rotate": (rotate, _signed(ROTATE_MAX_DEG), True),
    "Posterize": (posterize, _posterize, False),
    "PosterizeIncreasing": (posterize, _posterize_increasing, False),
    "Solarize": (solarize, _solarize, False),
    "SolarizeIncreasing": (solarize, _solarize_increasing, False),
    "SolarizeAdd": (solarize_add, _solarize_add, False),
    "Color": (color, _enhance, False),
    "ColorIncreasing": (color, _enhance_increasing, False),
    "Contrast": (contrast, _enhance, False),
    "ContrastIncreasing": (contrast, _enhance_increasing, False),
    "Brightness": (brightness, _enhance, False),
    "BrightnessIncreasing": (brightness, _enhance_increasing, False),
    "Sharpness": (sharpness, _enhance, False),
    "SharpnessIncreasing": (sharpness, _enhance_increasing, False),
    "ShearX": (shear_x, _signed(SHEAR_MAX), True),
    "ShearY": (shear_y, _signed(SHEAR_MAX), True),
    "TranslateXRel": (translate_x_rel, _signed(TRANSLATE_MAX_PCT), True),
    "TranslateYRel": (translate_y_rel, _signed(TRANSLATE_MAX_PCT), True),
}
_SHARED_HEAD = ["AutoContrast", "Equalize", "Invert", "Rotate"]
_SHARED_TAIL = ["ShearX", "ShearY", "TranslateXRel", "TranslateYRel"]
_GRADED = ["Posterize", "Solarize", "SolarizeAdd", "Color", "Contrast", "Brightness", "Sharpness"]
# timm's _RAND_TRANSFORMS and _RAND_INCREASING_TRANSFORMS, in its order
PLAIN_OPS = [*_SHARED_HEAD, *_GRADED, *_SHARED_TAIL]
INCREASING_OPS = [
    *_SHARED_HEAD,
    *(name if name == "SolarizeAdd" else name + "Increasing" for name in _GRADED),
    *_SHARED_TAIL,
]


def op_names(increasing: bool) -> list[str]:
    """The 15 op names of a set (keys of :data:`OPS`)."""
    return INCREASING_OPS if increasing else PLAIN_OPS


def noisy_magnitude(magnitude: float, magnitude_std: float, rng: Any) -> float:
    """m ~ N(magnitude, magnitude_std) (no draw when the std is 0), clipped to [0, 10]."""
    value = rng.gauss(magnitude, magnitude_std) if magnitude_std > 0 else magnitude
    return min(MAX_LEVEL, max(0.0, value))


def apply_op(
    img: Image.Image, name: str, policy: RandAugmentPolicy, fill: tuple[int, ...], resample: int, rng: Any
) -> Image.Image:
    """One op of the policy's set: skip with p 0.5, draw the magnitude, draw its arguments, apply.

    Args:
        img: PIL RGB image (W, H).
        name: An op name of :data:`OPS`.
        policy: The parsed policy.
        fill: RGB fill of geometric ops, 0..255.
        resample: PIL resampling filter of geometric ops.
        rng: ``random``-style generator.

    Returns:
        The (W, H) PIL RGB image, changed or not.
    """
    if rng.random() > OP_PROB:
        return img
    op, level, geometric = OPS[name]
    args = level(noisy_magnitude(policy.magnitude, policy.magnitude_std, rng), rng)
    return op(img, *args, fill, resample) if geometric else op(img, *args)


def choose_ops(policy: RandAugmentPolicy, rng: Any) -> list[str]:
    """``policy.num_layers`` op names drawn uniformly with replacement (one ``randrange`` each)."""
    names = op_names(policy.increasing)
    return [names[rng.randrange(len(names))] for _ in range(policy.num_layers)]


def rand_augment(
    img: Image.Image, policy: RandAugmentPolicy, fill: tuple[int, ...], resample: int, rng: Any
) -> Image.Image:
    """RandAugment: choose the ops first, then apply them in order (see the module docstring).

    Args:
        img: PIL RGB image (W, H).
        policy: From :func:`parse_policy`.
        fill: RGB fill of geometric ops, 0..255 (timm: the ImageNet mean, (124, 116, 104)).
        resample: PIL filter of geometric ops (``RESAMPLE["bicubic"]`` for MCTformer).
        rng: ``random``-style generator.

    Returns:
        The augmented (W, H) PIL RGB image.
    """
    for name in choose_ops(policy, rng):
        img = apply_op(img, name, policy, fill, resample, rng)
    return img
