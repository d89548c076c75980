"""Pictures of what AFA sees (the authors' issue #24), behind ``scripts/visualize.py``.

Per image (at its own size, eval mode, batch 1):

- ``<id>_panel.png``: captioned tiles, image | CAM (maximum over the present classes) | propagated CAM
  (the AFA random walk with the high background score, before PAR: the largest foreground channel
  over the channel sum, since each column of the walk sums to a little less than 1, by varying
  amounts) | refined label (PAR-refined CAM label) | AFA label (propagated, PAR-refined, low/high
  combined) | multi-scale flip prediction (``infer.scales``, ``infer.resize_long``) | attention of
  pixel (r, c) (the first ``--pixel``, else the CAM's peak), over a legend of the classes' colours
  with the dataset's names and the heat-map scale.
- ``<id>_cams.png``: one captioned CAM heat map per present class.
- ``<id>_pixel_<row>_<col>.png`` for each chosen pixel: image with the pixel marked | the attention
  of that pixel's stage-4 token | its learned affinity (row of ``aff_pred``), each upsampled over the
  image and min-max scaled.

Small images are enlarged (by an integer factor, to at least 192 px high) so that the pictures read
on a screen; the layout is in figures/figure.py.

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

from common.errors import DataError
from datasets.voc import class_names
from figures.figure import LABEL_ALPHA, Tile, captioned_grid, class_legend, present_label_ids
from figures.token_maps import (
    attention_of_token,
    cam_peak,
    mark_pixel,
    token_index,
    token_map_to_image,
)
from figures.visual import grey, heatmap, overlay_heatmap, overlay_label
from methods.afa import AFA
from model.cam import mask_absent_classes
from model.pseudo_labels import PseudoLabelSettings, whole_image_targets
from utils.evaluation.infer import predict_image
from utils.evaluation.inputs import (
    ImageListDataset,
    build_split_dataset,
    list_images,
    method_and_model,
    to_uint8_image,
)
from utils.runtime.dist import resolve_device
from utils.runtime.workdir import ensure_writable


@dataclass(frozen=True)
class VisualizeSettings:
    pseudo: PseudoLabelSettings
    test_scales: tuple[float, ...] = (1.0, 0.5, 0.75)
    resize_long: int | None = 512
    class_names: tuple[str, ...] = ()  # background first; "class <i>" where missing
    columns: int = 4  # tiles per row of the panel


def foreground_share(propagated: Tensor) -> np.ndarray:
    """(K + 1, H, W) propagated CAM (channel 0 background) -> (H, W) largest foreground channel over the
    channel sum, in [0, 1]: the walk's per-pixel scale removed, the argmax unchanged."""
    share = propagated[1:].amax(dim=0) / propagated.sum(dim=0).clamp(min=1e-12)
    return share.clamp(0, 1).cpu().numpy()


def present_classes(cls_label: Tensor | None, cls_logits: Tensor) -> Tensor:
    """(1, K) classes to show: the ground truth if given, else positive logits (else the top class)."""
    if cls_label is not None and cls_label.sum() > 0:
        return cls_label.float()
    present = (cls_logits > 0).float()
    if present.sum() == 0:
        present[0, cls_logits[0].argmax()] = 1.0
    return present


def pixel_attention(
    model: nn.Module, attn_logits: Tensor, pixel: tuple[int, int], size: tuple[int, int]
) -> Tensor:
    """(N,) head-mean attention of the last encoder block for the token under ``pixel`` of an image of
    ``size``; ``attn_logits`` (1, nh, N, N) are that block's logits."""
    grid = model.encoder.token_grid(*size)
    last = model.encoder.stage(3)[1][-1].attn
    return attention_of_token(attn_logits, last.scale, token_index(*pixel, size, grid))


def name_of(names: tuple[str, ...], label_id: int) -> str:
    """The class name of ``label_id`` (``class N`` beyond the list)."""
    return names[label_id] if label_id < len(names) else f"class {label_id}"


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
    cam = mask_absent_classes(targets.cam, present)[0].amax(dim=0)
    prediction = predict_image(model.segment, image, s.test_scales, s.resize_long).multi_scale.cpu().numpy()
    grid = model.encoder.token_grid(*size)
    labels = [targets.refined_pseudo_label[0].cpu().numpy(), targets.refined_aff_label[0].cpu().numpy()]
    row, col = pixels[0] if pixels else cam_peak(cam)
    attention = token_map_to_image(pixel_attention(model, out.attn_logits[-1], (row, col), size), grid, size)
    flat = grey(picture)
    tiles = [
        Tile("image", picture),
        Tile("CAM", overlay_heatmap(flat, cam.cpu().numpy())),
        Tile("propagated CAM", overlay_heatmap(flat, foreground_share(targets.aff_cam[0]))),
        Tile("refined label", overlay_label(flat, labels[0], LABEL_ALPHA)),
        Tile("AFA label", overlay_label(flat, labels[1], LABEL_ALPHA)),
        Tile("prediction", overlay_label(flat, prediction, LABEL_ALPHA)),
        Tile(f"attention of pixel ({row}, {col})", mark_pixel(overlay_heatmap(flat, attention), row, col)),
    ]
    legend = class_legend(present_label_ids([*labels, prediction]), list(s.class_names))
    present_ids = present[0].nonzero()[:, 0].tolist()
    cams = [
        Tile(f"CAM: {name_of(s.class_names, k + 1)}", heatmap(targets.cam[0, k].cpu().numpy()))
        for k in present_ids
    ]
    pictures = {
        "panel": captioned_grid(tiles, legend, columns=s.columns),
        "cams": captioned_grid(cams, [], heat_caption="CAM"),
    }
    for row, col in pixels:
        attention = pixel_attention(model, out.attn_logits[-1], (row, col), size)
        index = token_index(row, col, size, grid)
        maps = [
            token_map_to_image(attention, grid, size),
            token_map_to_image(out.aff_pred[0, index], grid, size),
        ]
        pixel_tiles = [
            Tile(f"pixel ({row}, {col})", mark_pixel(picture, row, col)),
            Tile("attention (last block)", mark_pixel(overlay_heatmap(picture, maps[0]), row, col)),
            Tile("learned affinity", mark_pixel(overlay_heatmap(picture, maps[1]), row, col)),
        ]
        pictures[f"pixel_{row}_{col}"] = captioned_grid(pixel_tiles, [])
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
    method, model = method_and_model(cfg, checkpoint, device, AFA, "scripts/visualize.py")
    names = tuple(class_names(cfg.dataset.name_list_dir, cfg.dataset.num_classes))
    s = VisualizeSettings(method.step.pseudo, tuple(cfg.infer.scales), cfg.infer.resize_long, names)
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
