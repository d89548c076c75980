"""The picture logged to TensorBoard during training: what the network sees and what it is taught."""

from __future__ import annotations

import numpy as np
import torch

from model.cam import denormalize, resize
from utils.train_step import StepResult
from utils.visual import overlay_heatmap, overlay_label, panel


def training_panel(batch: dict, result: StepResult, index: int = 0) -> np.ndarray:
    """One crop: image | CAM | propagated CAM | refined CAM label | AFA label | segmentation prediction.

    CAM panels show the maximum over the image's present classes; labels are drawn in the VOC palette
    over the image (255 = ignore appears in the palette's off-white).

    Returns:
        (H, 6·W + gaps, 3) uint8.
    """
    x = batch["image"][index : index + 1].detach().float()
    image = (denormalize(x)[0].permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)
    present = batch["cls_label"][index].bool()
    t = result.targets
    cam = t.cam[index][present].amax(dim=0) if present.any() else torch.zeros_like(t.cam[index, 0])
    aff_cam = t.aff_cam[index, 1:][present].amax(dim=0) if present.any() else torch.zeros_like(cam)
    seg = resize(result.output.seg_logits[index : index + 1].detach().float(), tuple(x.shape[-2:])).argmax(1)[
        0
    ]
    pictures = [
        image,
        overlay_heatmap(image, cam.cpu().numpy()),
        overlay_heatmap(image, (aff_cam / aff_cam.max().clamp(min=1e-5)).cpu().numpy()),
        overlay_label(image, t.refined_pseudo_label[index].cpu().numpy()),
        overlay_label(image, t.refined_aff_label[index].cpu().numpy()),
        overlay_label(image, seg.cpu().numpy()),
    ]
    return panel(pictures)
