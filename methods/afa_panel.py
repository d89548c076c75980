"""AFA's TensorBoard panel: one training crop with its CAM, labels, prediction and attention (captioned)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from figures.figure import LABEL_ALPHA, Tile, captioned_grid, class_legend, present_label_ids
from figures.token_maps import attention_of_token, cam_peak, mark_pixel, token_index, token_map_to_image
from figures.visual import grey, overlay_heatmap, overlay_label
from methods.base import StepResult
from model.cam import denormalize, resize


def crop_attention(
    model: nn.Module, result: StepResult, index: int, pixel: tuple[int, int], size
) -> np.ndarray:
    """(H, W) head-mean attention of the last encoder block for the token under ``pixel`` of crop
    ``index`` (training forward, min-max scaled)."""
    grid = model.encoder.token_grid(*size)
    last = model.encoder.stage(3)[1][-1].attn
    logits = result.output.attn_logits[-1][index : index + 1].detach().float()
    row = attention_of_token(logits, last.scale, token_index(*pixel, size, grid))
    return token_map_to_image(row, grid, size)


def training_panel(
    batch: dict, result: StepResult, model: nn.Module, class_names: list[str], index: int = 0
) -> np.ndarray:
    """One crop, captioned: image | CAM | propagated CAM | refined label | AFA label | prediction |
    attention of pixel (r, c), over a legend with the classes' names and the heat-map scale.

    CAM panels show the maximum over the crop's present classes; (r, c) is the CAM's peak. Labels are
    drawn in the VOC palette over the image (background untinted, 255 = ignore in off-white).

    Args:
        model: the unwrapped network (for its token grid and the last block's attention scale).
        class_names: background first.

    Returns:
        (H', W', 3) uint8, the crop enlarged to at least 192 px.
    """
    x = batch["image"][index : index + 1].detach().float()
    size = tuple(x.shape[-2:])
    image = (denormalize(x)[0].permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)
    present = batch["cls_label"][index].bool()
    t = result.targets
    cam = t.cam[index][present].amax(dim=0) if present.any() else torch.zeros_like(t.cam[index, 0])
    aff_cam = t.aff_cam[index, 1:][present].amax(dim=0) if present.any() else torch.zeros_like(cam)
    seg = resize(result.output.seg_logits[index : index + 1].detach().float(), size).argmax(1)[0]
    labels = [t.refined_pseudo_label[index].cpu().numpy(), t.refined_aff_label[index].cpu().numpy()]
    labels.append(seg.cpu().numpy())
    row, col = cam_peak(cam)
    attention = crop_attention(model, result, index, (row, col), size)
    flat = grey(image)
    tiles = [
        Tile("image", image),
        Tile("CAM", overlay_heatmap(flat, cam.cpu().numpy())),
        Tile(
            "propagated CAM", overlay_heatmap(flat, (aff_cam / aff_cam.max().clamp(min=1e-5)).cpu().numpy())
        ),
        Tile("refined label", overlay_label(flat, labels[0], LABEL_ALPHA)),
        Tile("AFA label", overlay_label(flat, labels[1], LABEL_ALPHA)),
        Tile("prediction", overlay_label(flat, labels[2], LABEL_ALPHA)),
        Tile(f"attention of pixel ({row}, {col})", mark_pixel(overlay_heatmap(flat, attention), row, col)),
    ]
    return captioned_grid(tiles, class_legend(present_label_ids(labels), class_names), columns=4)
