"""Inputs of test-time inference and the diagnostics: image folders and list files, split datasets with
or without masks, and a trained network loaded for evaluation.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from common.errors import DataError, MissingFileError, UsageError
from datasets.classes import IGNORE_INDEX
from datasets.io import read_image
from datasets.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize, to_chw
from methods.base import Method
from methods.registry import build_method
from utils.runtime.data import build_eval_dataset, build_eval_loader, shard_indices

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def list_images(source: str | Path) -> list[Path]:
    """The image files of a folder (non-recursive, sorted) or the paths listed in a text file.

    A list file holds one path per line (blank lines and ``#`` lines skipped); relative paths are
    taken relative to the list file's folder.
    """
    source = Path(source)
    if source.is_dir():
        paths = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    elif source.is_file():
        lines = [line.strip() for line in source.read_text().splitlines()]
        paths = [Path(line) for line in lines if line and not line.startswith("#")]
        paths = [p if p.is_absolute() else source.parent / p for p in paths]
    else:
        raise MissingFileError(f"image folder or list file not found: {source}")
    if not paths:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {source}")
    absent = [p for p in paths if not p.is_file()]
    if absent:
        raise MissingFileError(
            f"{len(absent)} listed image(s) missing, e.g. {absent[0]} (listed in {source})"
        )
    return paths


def unique_names(paths: list[Path]) -> list[str]:
    """Output names: the file stem, or ``<stem>_<ext>`` where two files share a stem (a.jpg, a.png)."""
    counts = Counter(p.stem for p in paths)
    names = [p.stem if counts[p.stem] == 1 else f"{p.stem}_{p.suffix.lstrip('.').lower()}" for p in paths]
    clashes = [n for n, k in Counter(names).items() if k > 1]
    if clashes:
        raise DataError(f"several images would be written as {clashes[0]}.png; rename them")
    return names


class ImageListDataset(Dataset):
    """Arbitrary images without ground truth (any mode ``read_image`` accepts: grey, RGBA, CMYK …).

    Each sample: ``name`` str, ``image`` (3, H, W) float32 normalised, ``label`` (H, W) int64 all 255,
    ``cls_label`` (K,) zeros.
    """

    def __init__(self, paths: list[Path], num_classes: int) -> None:
        """Images of ``paths`` (names unique), without labels, for ``num_classes`` classes."""
        self.paths = list(paths)
        self.names = unique_names(self.paths)
        self.num_classes = num_classes

    def __len__(self) -> int:
        """The number of images."""
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """``name``, ``image`` (3, H, W) normalised, ``label`` (H, W) all 255, ``cls_label`` (K,) zeros."""
        image = read_image(self.paths[index])
        return {
            "name": self.names[index],
            "image": torch.from_numpy(to_chw(normalize(image))),
            "label": torch.full(image.shape[:2], IGNORE_INDEX, dtype=torch.int64),
            "cls_label": torch.zeros(self.num_classes - 1),
        }


def build_split_dataset(cfg: DictConfig, split: str) -> tuple[Dataset, bool]:
    """The evaluation set of ``split`` and whether it has ground truth.

    Masks are used when every image of the split has one; a split with none (the VOC test split) is
    read without labels; a split with only some raises an error naming a missing file.
    """
    probe = build_eval_dataset(cfg, split, with_labels=False)
    missing = [probe.label_path(n) for n in probe.names if not probe.label_path(n).is_file()]
    if not missing:
        return build_eval_dataset(cfg, split, with_labels=True), True
    if len(missing) == len(probe.names):
        return probe, False
    raise MissingFileError(
        f"split {split}: {len(missing)} of {len(probe.names)} masks missing, e.g. {missing[0]}",
        hint="restore the masks, or remove their ids from the split list",
    )


def labelled_split_loader(cfg: DictConfig, split: str) -> DataLoader:
    """A batch-1 loader of ``split`` with its masks (``infer.max_images`` first images), for the
    diagnostics that score against ground truth; a split without masks stops with a hint."""
    dataset, has_labels = build_split_dataset(cfg, split)
    if not has_labels:
        raise DataError(f"split {split} has no ground truth", hint="pass --split of a split with masks")
    return build_eval_loader(dataset, shard_indices(len(dataset), 0, 1, cfg.infer.max_images), 0)


def mask_folder(dataset: Dataset) -> Path:
    """Where the masks of a split are looked for."""
    return Path(dataset.label_path(dataset.names[0])).parent


def to_uint8_image(x: Tensor) -> np.ndarray:
    """(1, 3, H, W) normalised -> (H, W, 3) uint8 RGB, rounded so that ``normalize`` is inverted exactly."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(3, 1, 1)
    rgb = (x[0].float() * std + mean).round().clamp(0, 255).to(torch.uint8)
    return rgb.permute(1, 2, 0).cpu().numpy()


def load_model(method: Method, checkpoint: str | Path, device: torch.device) -> nn.Module:
    """``method``'s network (no ImageNet weights needed) with a checkpoint's weights, in eval mode.

    AFA accepts our checkpoints and the authors' ``module.``-prefixed ones (``Method.load_weights``).
    """
    model = method.build_network(pretrained=False)
    method.load_weights(model, checkpoint)
    return model.to(device).eval()


def method_and_model(
    cfg: DictConfig,
    checkpoint: str | Path,
    device: torch.device,
    needs: type[Method] = Method,
    tool: str = "",
) -> tuple[Method, nn.Module]:
    """The method of ``cfg`` and its network with ``checkpoint``'s weights (eval mode).

    Args:
        needs: the method class a tool works on (e.g. ``AFA``: its CAM, affinity and attention).
        tool: the tool's name for the error.

    Raises:
        UsageError: the checkpoint's method is not a ``needs``.
    """
    method = build_method(cfg)
    if not isinstance(method, needs):
        raise UsageError(
            f"{tool or 'this tool'} works on {needs.__name__} networks; "
            f"{checkpoint} is a checkpoint of method {cfg.method}"
        )
    return method, load_model(method, checkpoint, device)
