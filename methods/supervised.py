"""The second stage of WSSS: a segmentation network trained with full supervision on label PNGs.

``method: supervised``. The targets are ``<dataset.label_dir>/<id>.png`` (``datasets/label_folder.py``):
the pseudo labels of a first stage (``scripts/make_pseudo_labels.py`` writes ``pseudo/``) or ground
truth. Validation and ``infer_seg.py`` score against the ground-truth masks like every method.

``network`` chooses the network (``model/segformer.py`` or ``model/deeplabv2.py``); the loss is the
pixel cross-entropy of the logits upsampled (bilinear) to the crop, 255 ignored; the optimiser is SGD
with momentum (DeepLabV2) or AdamW (SegFormer) over four groups: trunk weights, trunk norms, head
weights (``head_lr_mult``), head biases and norms (``head_bias_lr_mult``), with a poly schedule.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from common.errors import ConfigError
from datasets.coco import COCOClsDataset
from datasets.label_folder import LabelFolderDataset
from datasets.voc import VOCClsDataset
from methods.base import Method, StepResult, ValidationOutput
from methods.optim import poly_factor, poly_warmup_factor
from methods.supervised_config import SupervisedConfig, network_name
from model.deeplabv2 import DeepLabV2
from model.resnet import load_resnet_pretrained
from model.segformer import SegFormer
from model.weights import load_mit_pretrained

TORCHVISION_FILES = {  # torchvision's ImageNet weights (IMAGENET1K_V1), the usual DeepLab initialisation
    "resnet101": "resnet101-63fe2227.pth",
    "resnet50": "resnet50-0676ba61.pth",
}


def pixel_cross_entropy(logits: Tensor, label: Tensor, ignore_index: int = 255) -> Tensor:
    """Mean cross-entropy over the labelled pixels; 0 (with a graph) when no pixel is labelled.

    Args:
        logits: (B, C, H, W) at the label's resolution.
        label: (B, H, W) int64, ``ignore_index`` for unlabelled pixels.

    Returns:
        a scalar (PyTorch's ``cross_entropy`` would give NaN for an all-ignored batch).
    """
    if not bool((label != ignore_index).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, label, ignore_index=ignore_index)


def upsampled(logits: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, C, h, w) -> (B, C, H, W), bilinear, align_corners False."""
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


class Supervised(Method):
    """``method: supervised``: SegFormer or DeepLabV2 on a folder of labels."""

    schema = SupervisedConfig
    validation_maps = ("seg",)
    best_map = "seg"
    network_keys = (
        "network",
        "backbone.config",
        "dataset.num_classes",
        "model.embed_dim",
        "model.aspp_rates",
    )

    @property
    def network(self) -> str:
        """``segformer`` or ``deeplabv2``."""
        return network_name(self.cfg)

    # ------------------------------------------------------------------ network and optimiser
    def build_network(self, pretrained: bool = True) -> nn.Module:
        """The network of ``network`` with its encoder's ImageNet weights when ``backbone.pretrained``
        (SegFormer: ``pretrained/<mit>.pth``; DeepLabV2: ``pretrained/resnet101-63fe2227.pth``)."""
        cfg, b = self.cfg, self.cfg.backbone
        if self.network == "segformer":
            model = SegFormer(b.config, cfg.dataset.num_classes, cfg.model.embed_dim,
                              drop_path_rate=b.drop_path_rate, dropout=cfg.model.dropout)  # fmt: skip
            if pretrained and b.pretrained:
                load_mit_pretrained(model.encoder, b.pretrained_path or f"pretrained/{b.config}.pth")
            return model
        model = DeepLabV2(b.config, cfg.dataset.num_classes, tuple(cfg.model.aspp_rates), b.freeze_bn)
        if pretrained and b.pretrained:
            default = f"pretrained/{TORCHVISION_FILES.get(b.config, b.config + '.pth')}"
            load_resnet_pretrained(model.backbone, b.pretrained_path or default)
        return model

    def configure_optimizers(self, model: nn.Module):
        """SGD (momentum) or AdamW over the network's four groups, poly schedule (with warm-up if set)."""
        o, s, steps = self.cfg.optimizer, self.cfg.scheduler, self.cfg.train.max_iters
        trunk, trunk_norms, head, head_biases = model.param_groups()
        lr, wd = o.learning_rate, o.weight_decay
        groups = [
            {"params": trunk, "lr": lr, "weight_decay": wd},
            {"params": trunk_norms, "lr": lr, "weight_decay": o.norm_weight_decay},
            {"params": head, "lr": lr * o.head_lr_mult, "weight_decay": wd},
            {"params": head_biases, "lr": lr * o.head_bias_lr_mult, "weight_decay": o.head_bias_weight_decay},
        ]
        groups = [g for g in groups if g["params"]]
        if o.type == "sgd":
            optimizer = torch.optim.SGD(groups, lr=lr, momentum=o.momentum, weight_decay=wd)
        else:
            optimizer = torch.optim.AdamW(groups, lr=lr, betas=tuple(o.betas), weight_decay=wd)

        def factor(t: int) -> float:
            """The lr multiplier of step t."""
            if s.warmup_iter > 0:
                return poly_warmup_factor(t, s.warmup_iter, steps, s.warmup_ratio, s.power)
            return poly_factor(t, steps, s.power)

        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    # ------------------------------------------------------------------ training
    def build_train_dataset(self) -> Dataset:
        """The crops of ``train.split`` with their labels from ``dataset.label_dir``."""
        d = self.cfg.dataset
        if d.label_dir is None:
            raise ConfigError(
                "dataset.label_dir is not set: the folder of <id>.png training labels",
                hint="e.g. dataset.label_dir=work_dir_voc/pseudo_labels/train_aug/pseudo "
                "(written by scripts/make_pseudo_labels.py)",
            )
        cls = VOCClsDataset if d.name == "voc" else COCOClsDataset
        images = cls(d.root_dir, d.name_list_dir, split=self.cfg.train.split, crop_size=None,
                     scale_range=None, num_classes=d.num_classes)  # fmt: skip
        return LabelFolderDataset(images, Path(d.label_dir), d.crop_size, tuple(d.rescale_range),
                                  num_classes=d.num_classes, check=d.check_labels)  # fmt: skip

    def training_losses(self, model: nn.Module, batch: dict[str, Any], n_iter: int) -> StepResult:
        """``seg``: the cross-entropy of the upsampled logits against ``batch["label"]`` (B, h, w)."""
        image, label = batch["image"], batch["label"]
        logits = model(image)
        losses = {"seg": pixel_cross_entropy(upsampled(logits, tuple(label.shape[-2:])), label,
                                             self.cfg.dataset.ignore_index)}  # fmt: skip
        return StepResult(losses, {"seg": 1.0}, losses["seg"], logits)

    def setup_lines(self) -> list[str]:
        """The network and the label folder, for the training log."""
        b = self.cfg.backbone
        frozen = (
            f", BatchNorm {'frozen' if b.freeze_bn else 'trained'}" if self.network == "deeplabv2" else ""
        )
        return [f"network {self.network} ({b.config}{frozen}), labels from {self.cfg.dataset.label_dir}"]

    # ------------------------------------------------------------------ evaluation
    def validation_step(self, model: nn.Module, image: Tensor, cls_label: Tensor) -> ValidationOutput:
        """``seg``: the argmax of the logits upsampled to the images, (B, H, W); no class logits."""
        return ValidationOutput({"seg": upsampled(model(image), tuple(image.shape[-2:])).argmax(dim=1)})

    def min_input_side(self, model: nn.Module) -> int:
        """SegFormer: the encoder's smallest side; DeepLabV2: 8 (one feature cell)."""
        return model.encoder.min_input_side() if self.network == "segformer" else 8
