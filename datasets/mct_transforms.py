"""MCTformer's training and evaluation transforms (spec §3.5), timm 0.4.12 ``create_transform`` written here.

Training, in order: random-resized crop to S (scale (0.08, 1), ratio (3/4, 4/3), bicubic), horizontal
flip with p 0.5, RandAugment ``rand-m9-mstd0.5-inc1`` (:mod:`datasets.rand_augment`; colour jitter is
skipped while a policy is set, as timm does), ToTensor + ImageNet Normalize, random erasing (p 0.25,
"pixel" mode: N(0, 1) noise per pixel and channel in normalised units, one box).
Evaluation: resize the short side to int(256/224·S) (bicubic), centre crop S, ToTensor + Normalize.

Every random step takes one generator with the interface of Python's ``random`` (``random``,
``uniform``, ``randint``, ``randrange``, ``gauss``, ``getrandbits``): ``random.Random(seed)`` makes a
sample's augmentation a pure function of its seed; the module ``random`` itself uses the global state.
The per-pixel noise comes from a numpy generator seeded by 64 bits drawn from it.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance

from common.errors import ConfigError
from datasets.rand_augment import RESAMPLE, parse_policy, rand_augment

CROP_ATTEMPTS = 10  # timm RandomResizedCropAndInterpolation / RandomErasing: tries before giving up
EVAL_RESIZE_RATIO = 256 / 224  # DeiT build_transform: resize to int(256/224·S), centre crop S
ERASE_MIN_AREA = 0.02  # timm RandomErasing defaults (DeiT passes only p, mode, count)
ERASE_MAX_AREA = 1 / 3
ERASE_MIN_ASPECT = 0.3
ERASE_MODES = ("pixel", "rand", "const")


@dataclass
class AugmentConfig:
    """MCTformer's ``augment:`` section; defaults are the authors' recipe (DeiT ``main.py`` flags)."""

    crop_size: int = 224  # --input-size
    scale: list[float] = field(default_factory=lambda: [0.08, 1.0])  # RandomResizedCrop area fraction
    ratio: list[float] = field(default_factory=lambda: [3 / 4, 4 / 3])  # RandomResizedCrop aspect w/h
    interpolation: str = "bicubic"  # --train-interpolation: crop resize and RandAugment geometry
    hflip: float = 0.5  # timm create_transform default
    color_jitter: float = 0.4  # --color-jitter; timm skips it while auto_augment is set
    auto_augment: str = "rand-m9-mstd0.5-inc1"  # --aa; "" for none (then colour jitter applies)
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])  # timm IMAGENET_DEFAULT_MEAN
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])  # timm IMAGENET_DEFAULT_STD
    reprob: float = 0.25  # --reprob: random-erasing probability
    remode: str = "pixel"  # --remode: pixel | rand | const
    recount: int = 1  # --recount: most boxes per erased image (count ~ U{1..recount})


def as_augment_config(section: Any) -> AugmentConfig:
    """A plain ``AugmentConfig`` from any object with its attributes (a dataclass, an OmegaConf section).

    Lists become Python lists, so the dataset holds no OmegaConf node (cheaper per item, picklable).
    """
    values = {}
    for item in fields(AugmentConfig):
        value = getattr(section, item.name)
        is_list = item.default_factory is not MISSING  # the list fields: scale, ratio, mean, std
        values[item.name] = [float(v) for v in value] if is_list else value
    return AugmentConfig(**values)


def augment_checks(aug: Any, prefix: str = "augment") -> list[tuple[bool, str]]:
    """(holds, message) per rule of an ``AugmentConfig`` (or its DictConfig); keys named with ``prefix``."""
    p = prefix
    rules = [
        (aug.crop_size >= 16, f"{p}.crop_size must be >= 16 (one DeiT patch)"),
        (
            len(aug.scale) == 2 and 0 < aug.scale[0] <= aug.scale[1] <= 1,
            f"{p}.scale must be [lo, hi] in (0, 1]",
        ),
        (
            len(aug.ratio) == 2 and 0 < aug.ratio[0] <= aug.ratio[1],
            f"{p}.ratio must be [lo, hi] with 0 < lo <= hi",
        ),
        (aug.interpolation in RESAMPLE, f"{p}.interpolation must be one of {sorted(RESAMPLE)}"),
        (0 <= aug.hflip <= 1 and 0 <= aug.reprob <= 1, f"{p}.hflip and {p}.reprob must be in [0, 1]"),
        (aug.color_jitter >= 0, f"{p}.color_jitter must be >= 0"),
        (len(aug.mean) == 3 and len(aug.std) == 3 and min(aug.std) > 0, f"{p}.mean/std: 3 values, std > 0"),
        (aug.remode in ERASE_MODES, f"{p}.remode must be one of {list(ERASE_MODES)}"),
        (aug.recount >= 1, f"{p}.recount must be >= 1"),
    ]
    if aug.auto_augment:
        try:
            parse_policy(aug.auto_augment, f"{p}.auto_augment")
        except ConfigError as err:
            rules.append((False, str(err)))
    return rules


def check_augment(aug: Any, prefix: str = "augment") -> None:
    """Raise ``ConfigError`` with the first broken rule of :func:`augment_checks`."""
    for holds, message in augment_checks(aug, prefix):
        if not holds:
            raise ConfigError(message)


def fill_colour(mean: list[float]) -> tuple[int, int, int]:
    """RandAugment's fill, the mean in 0..255: min(255, round(255·m)) per channel -> (124, 116, 104)."""
    return tuple(min(255, round(255 * m)) for m in mean)


def crop_box(
    width: int, height: int, scale: list[float], ratio: list[float], rng: Any
) -> tuple[int, int, int, int]:
    """The random-resized-crop box (timm ``RandomResizedCropAndInterpolation.get_params``).

    Up to 10 tries: area a ~ U(scale)·W·H, log aspect ~ U(log ratio), w = round(√(a·r)), h = round(√(a/r));
    the first that fits (w <= W, h <= H) is placed at top ~ U{0..H−h}, left ~ U{0..W−w}. Fallback: the
    largest centred box whose aspect is clamped into ``ratio`` (the whole image when it already fits).

    Args:
        width, height: Image size.
        scale: [lo, hi] area fraction. ratio: [lo, hi] aspect w/h.
        rng: ``random``-style generator (2 ``uniform`` per try, 2 ``randint`` on success).

    Returns:
        (top, left, h, w) in pixels.
    """
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(CROP_ATTEMPTS):
        target_area = rng.uniform(scale[0], scale[1]) * area
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if w <= width and h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop(img: Image.Image, cfg: AugmentConfig, rng: Any) -> Image.Image:
    """Cut :func:`crop_box` out of the (W, H) image, resize it to (S, S) with the configured filter."""
    top, left, h, w = crop_box(img.size[0], img.size[1], cfg.scale, cfg.ratio, rng)
    crop = img.crop((left, top, left + w, top + h))
    return crop.resize((cfg.crop_size, cfg.crop_size), RESAMPLE[cfg.interpolation])


def random_hflip(img: Image.Image, p: float, rng: Any) -> Image.Image:
    """Mirror left-right when ``rng.random() < p`` (one draw)."""
    return img.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < p else img


def color_jitter(img: Image.Image, strength: float, rng: Any) -> Image.Image:
    """torchvision ``ColorJitter(s, s, s)``: brightness, contrast, saturation in a random order.

    The order is a random permutation (``rng.sample``); each factor ~ U(max(0, 1 − s), 1 + s).
    """
    enhancers = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)
    for index in rng.sample(range(3), 3):
        img = enhancers[index](img).enhance(rng.uniform(max(0.0, 1 - strength), 1 + strength))
    return img


def to_normalized_chw(img: Image.Image, mean: list[float], std: list[float]) -> np.ndarray:
    """ToTensor + Normalize: (W, H) RGB -> (3, H, W) float32, (x/255 − mean) / std per channel."""
    x = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / np.float32(255)
    mean_a = np.asarray(mean, dtype=np.float32)[:, None, None]
    std_a = np.asarray(std, dtype=np.float32)[:, None, None]
    return np.ascontiguousarray((x - mean_a) / std_a)


def erase_boxes(height: int, width: int, max_count: int, rng: Any) -> list[tuple[int, int, int, int]]:
    """Boxes of one random-erasing call, given that it fires (timm ``RandomErasing._erase``).

    The box count n is 1 when ``max_count`` is 1, else n ~ U{1..max_count} (one ``randint``). For each
    box, up to 10 tries: area ~ U(0.02, 1/3)·H·W/n, log aspect h/w ~ U(log 0.3, log 1/0.3),
    h = round(√(area·r)), w = round(√(area/r)); kept when h < H and w < W, at top ~ U{0..H−h},
    left ~ U{0..W−w}. A box whose 10 tries all fail is skipped.

    Returns:
        [(top, left, h, w), ...], at most n.
    """
    count = 1 if max_count == 1 else rng.randint(1, max_count)
    log_aspect = (math.log(ERASE_MIN_ASPECT), math.log(1 / ERASE_MIN_ASPECT))
    boxes = []
    for _ in range(count):
        for _ in range(CROP_ATTEMPTS):
            area = rng.uniform(ERASE_MIN_AREA, ERASE_MAX_AREA) * height * width / count
            aspect = math.exp(rng.uniform(*log_aspect))
            h = int(round(math.sqrt(area * aspect)))
            w = int(round(math.sqrt(area / aspect)))
            if w < width and h < height:
                boxes.append((rng.randint(0, height - h), rng.randint(0, width - w), h, w))
                break
    return boxes


def random_erasing(x: np.ndarray, prob: float, mode: str, max_count: int, rng: Any) -> np.ndarray:
    """timm ``RandomErasing`` on a normalised (C, H, W) float32 array (a changed copy when it fires).

    Fires when ``rng.random() <= prob``. Each box of :func:`erase_boxes` is filled with N(0, 1) noise per
    pixel and channel ("pixel"), one N(0, 1) value per channel ("rand") or 0 ("const"); the noise comes
    from a numpy generator seeded by ``rng.getrandbits(64)``, drawn after the boxes.
    """
    if rng.random() > prob:
        return x
    boxes = erase_boxes(x.shape[1], x.shape[2], max_count, rng)
    if not boxes:
        return x
    noise = np.random.default_rng(rng.getrandbits(64))
    x = x.copy()
    for top, left, h, w in boxes:
        shape = {"pixel": (x.shape[0], h, w), "rand": (x.shape[0], 1, 1), "const": None}[mode]
        x[:, top : top + h, left : left + w] = 0.0 if shape is None else noise.standard_normal(shape)
    return x


def train_transform(img: Image.Image, cfg: AugmentConfig, rng: Any) -> np.ndarray:
    """MCTformer's training transform (spec §3.5): crop, flip, RandAugment (or jitter), normalise, erase.

    Args:
        img: PIL RGB image of any size (W, H).
        cfg: The ``augment`` section.
        rng: ``random``-style generator; ``random.Random(seed)`` makes the output a function of the seed.

    Returns:
        (3, S, S) float32, normalised, S = ``cfg.crop_size``.
    """
    img = random_resized_crop(img, cfg, rng)
    img = random_hflip(img, cfg.hflip, rng)
    if cfg.auto_augment:
        policy = parse_policy(cfg.auto_augment)
        img = rand_augment(img, policy, fill_colour(cfg.mean), RESAMPLE[cfg.interpolation], rng)
    elif cfg.color_jitter > 0:
        img = color_jitter(img, cfg.color_jitter, rng)
    x = to_normalized_chw(img, cfg.mean, cfg.std)
    return random_erasing(x, cfg.reprob, cfg.remode, cfg.recount, rng)


def eval_transform(img: Image.Image, cfg: AugmentConfig) -> np.ndarray:
    """Validation transform: short side to int(256/224·S) (bicubic), centre crop S, normalise.

    As torchvision 0.8: the long side becomes int(R·long/short); the crop starts at
    int((H − S + 1)/2), int((W − S + 1)/2) (an odd margin puts the extra pixel above / left).

    Returns:
        (3, S, S) float32.
    """
    size, crop = int(EVAL_RESIZE_RATIO * cfg.crop_size), cfg.crop_size
    width, height = img.size
    if width <= height and width != size:
        img = img.resize((size, int(size * height / width)), Image.BICUBIC)
    elif height < width and height != size:
        img = img.resize((int(size * width / height), size), Image.BICUBIC)
    width, height = img.size
    top, left = int((height - crop + 1) * 0.5), int((width - crop + 1) * 0.5)
    img = img.crop((left, top, left + crop, top + crop))
    return to_normalized_chw(img, cfg.mean, cfg.std)
