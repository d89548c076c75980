"""Pictures of what AFA sees (the authors' issue #24), behind ``scripts/visualize.py``.

Per image (at its own size, eval mode, batch 1):

- ``<id>_panel.png``: image | CAM (maximum over the present classes) | propagated CAM (the AFA
  random walk with the high background score, before PAR: the largest foreground channel over the
  channel sum, since each column of the walk sums to a little less than 1, by varying amounts) |
  AFA pseudo label | multi-scale flip prediction (``infer.scales``, ``infer.resize_long``).
- ``<id>_cams.png``: one CAM heat map per present class.
- ``<id>_pixel_<row>_<col>.png`` for each chosen pixel: image with the pixel marked | the attention
  of that pixel's stage-4 token | its learned affinity (row of ``aff_pred``), each upsampled over the
  image and min-max scaled.

The attention shown is the one the **last encoder block** (stage 4, no spatial reduction) applies:
softmax over keys of q·kᵀ·d^-½ for the query token, averaged over heads. The affinity comes from the
single-scale forward. Present classes are the ground-truth image-level labels when known (split
images), otherwise the classes with a positive classification logit (the top class if none is).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image
from torch import Tensor, nn

from model.cam import mask_absent_classes, resize
from model.pseudo_labels import PseudoLabelSettings, whole_image_targets
from utils.dist import resolve_device
from utils.engine import step_settings
from utils.errors import DataError
from utils.infer import (
    ImageListDataset,
    build_split_dataset,
    list_images,
    load_model,
    predict_image,
    to_uint8_image,
)
from utils.visual import heatmap, overlay_heatmap, overlay_label, panel
from utils.workdir import ensure_writable


@dataclass(frozen=True)
class VisualizeSettings:
    pseudo: PseudoLabelSettings
    test_scales: tuple[float, ...] = (1.0, 0.5, 0.75)
    resize_long: int | None = 512


def token_index(row: int, col: int, size: tuple[int, int], grid: tuple[int, int]) -> int:
    """Flat index of the token of ``grid`` (h, w) covering pixel (row, col) of an image of ``size`` (H, W)."""
    (height, width), (h, w) = size, grid
    if not (0 <= row < height and 0 <= col < width):
        raise ValueError(f"pixel ({row}, {col}) lies outside the {height}×{width} image")
    return min(row * h // height, h - 1) * w + min(col * w // width, w - 1)


def attention_of_token(attn_logits: Tensor, scale: float, index: int) -> Tensor:
    """Head-mean attention of one query token over all keys.

    Args:
        attn_logits: (1, nh, N, N) unscaled q·kᵀ logits of a block without spatial reduction.
        scale: the block's d^-½.

    Returns:
        (N,), summing to 1.
    """
    return torch.softmax(attn_logits[0, :, index].float() * scale, dim=-1).mean(dim=0)


def unit_range(values: Tensor) -> np.ndarray:
    """Min-max scaling of a map to [0, 1] (a constant map becomes 0), as a numpy array."""
    values = values.detach().float() - values.min()
    return (values / values.max().clamp(min=1e-12)).cpu().numpy()


def foreground_share(propagated: Tensor) -> np.ndarray:
    """(K + 1, H, W) propagated CAM (channel 0 background) -> (H, W) largest foreground channel over the
    channel sum, in [0, 1]: the walk's per-pixel scale removed, the argmax unchanged."""
    share = propagated[1:].amax(dim=0) / propagated.sum(dim=0).clamp(min=1e-12)
    return share.clamp(0, 1).cpu().numpy()


def token_map_to_image(values: Tensor, grid: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """(N,) token values -> (H, W) float in [0, 1]: bilinear upsampling, then min-max scaling."""
    return unit_range(resize(values.detach().float().view(1, 1, *grid), size)[0, 0])


def mark_pixel(picture: np.ndarray, row: int, col: int, arm: int = 6) -> np.ndarray:
    """A white cross with a black outline centred on (row, col) of an (H, W, 3) uint8 picture."""
    out = picture.copy()
    h, w = out.shape[:2]
    for colour, half in (((0, 0, 0), 1), ((255, 255, 255), 0)):
        r0, r1 = max(row - half, 0), min(row + half + 1, h)
        c0, c1 = max(col - half, 0), min(col + half + 1, w)
        out[max(row - arm, 0) : min(row + arm + 1, h), c0:c1] = colour
        out[r0:r1, max(col - arm, 0) : min(col + arm + 1, w)] = colour
    return out


def present_classes(cls_label: Tensor | None, cls_logits: Tensor) -> Tensor:
    """(1, K) classes to show: the ground truth if given, else positive logits (else the top class)."""
    if cls_label is not None and cls_label.sum() > 0:
        return cls_label.float()
    present = (cls_logits > 0).float()
    if present.sum() == 0:
        present[0, cls_logits[0].argmax()] = 1.0
    return present


@torch.no_grad()
def visualize_image(
    model: nn.Module,
    image: Tensor,
    cls_label: Tensor | None,
    pixels: list[tuple[int, int]],
    s: VisualizeSettings,
) -> dict[str, np.ndarray]:
    """The pictures of one (1, 3, H, W) normalised image, keyed by file-name suffix (see module doc)."""
    size = tuple(image.shape[-2:])
    picture = to_uint8_image(image)
    out = model(image)
    present = present_classes(cls_label, out.cls_logits)
    targets = whole_image_targets(model, image, present, s.pseudo)
    valid_cam = mask_absent_classes(targets.cam, present)
    prediction = predict_image(model, image, s.test_scales, s.resize_long).multi_scale
    pictures = {
        "panel": panel(
            [
                picture,
                overlay_heatmap(picture, valid_cam[0].amax(dim=0).cpu().numpy()),
                overlay_heatmap(picture, foreground_share(targets.aff_cam[0])),
                overlay_label(picture, targets.refined_aff_label[0].cpu().numpy()),
                overlay_label(picture, prediction.cpu().numpy()),
            ]
        ),
        "cams": panel([heatmap(targets.cam[0, k].cpu().numpy()) for k in present[0].nonzero()[:, 0]]),
    }
    grid = model.encoder.token_grid(*size)
    last = model.encoder.stage(3)[1][-1].attn
    for row, col in pixels:
        index = token_index(row, col, size, grid)
        attention = token_map_to_image(attention_of_token(out.attn_logits[-1], last.scale, index), grid, size)
        affinity = token_map_to_image(out.aff_pred[0, index], grid, size)
        maps = [overlay_heatmap(picture, attention), overlay_heatmap(picture, affinity)]
        pictures[f"pixel_{row}_{col}"] = panel([mark_pixel(p, row, col) for p in [picture, *maps]])
    return pictures


def visualize(
    cfg: DictConfig,
    checkpoint: str | Path,
    out_dir: str | Path,
    ids: list[str] | None = None,
    split: str | None = None,
    images: list[str] | None = None,
    pixels: list[tuple[int, int]] | None = None,
) -> list[Path]:
    """Write the pictures of split images ``ids`` (of ``split``, default ``infer.split``) and of image
    files or folders ``images``; returns the written paths."""
    ensure_writable(out_dir, "--out")
    device = resolve_device(cfg.device)
    model = load_model(cfg, checkpoint, device)
    s = VisualizeSettings(step_settings(cfg).pseudo, tuple(cfg.infer.scales), cfg.infer.resize_long)
    items = []
    if ids:
        dataset, has_labels = build_split_dataset(cfg, split or cfg.infer.split)
        unknown = [i for i in ids if i not in dataset.names]
        if unknown:
            raise DataError(f"image id {unknown[0]!r} is not in split {split or cfg.infer.split}")
        items += [(dataset[dataset.names.index(i)], has_labels) for i in ids]
    if images:
        paths = [
            p for source in images for p in (list_images(source) if Path(source).is_dir() else [Path(source)])
        ]
        listed = ImageListDataset(paths, cfg.dataset.num_classes)
        items += [(listed[i], False) for i in range(len(listed))]
    written = []
    for item, has_labels in items:
        cls_label = item["cls_label"][None].to(device) if has_labels else None
        pictures = visualize_image(model, item["image"][None].to(device), cls_label, list(pixels or []), s)
        for suffix, picture in pictures.items():
            path = Path(out_dir) / f"{item['name']}_{suffix}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(picture).save(path)
            written.append(path)
    return written
