"""The method interface: what the engine asks of a weakly-supervised segmentation method.

The engine (``utils/train/loop.py``: loop, data, DDP, checkpoints, resume, logging, non-finite guard,
progress), validation (``utils/evaluation/validate.py``), ``infer_seg.py``, pseudo-label export and
the diagnostics know a method only through this class. A method is one module (or a few) under
``methods/`` and one entry in ``methods/registry.py``; ``docs/ADDING_A_METHOD.md`` walks through one.

Shapes: B images, K foreground classes, C = K + 1 classes with background, H × W pixels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.utils.data import Dataset

from common.errors import UsageError
from common.torch_io import torch_load_checked
from datasets.coco import COCOClsDataset
from datasets.voc import VOCClsDataset
from methods.schema import BaseConfig


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside a DistributedDataParallel wrapper (or the model itself): a method's step
    receives the wrapped model for its forward and unwraps it for everything else."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


class StepResult(NamedTuple):
    """What a training step returns to the engine.

    Attributes:
        losses: the unweighted loss terms by name, scalars (logged as ``train/<name>_loss``).
        weights: the weight each term has in this iteration (0 for a term only logged).
        total: the weighted sum to back-propagate, a scalar.
        output: the method's training forward (for its TensorBoard panel), or None.
        targets: the method's pseudo labels of this iteration (for its panel), or None.
    """

    losses: dict[str, Tensor]
    weights: dict[str, float]
    total: Tensor
    output: Any = None
    targets: Any = None


class ValidationOutput(NamedTuple):
    """A validation batch's predictions.

    Attributes:
        maps: ``{name: (B, H, W) int64 label map at the images' size}`` for every name of the method's
            ``validation_maps`` (scored as mIoU against the ground-truth masks).
        cls_logits: (B, K) class logits for the multi-label F1, or None for a method without them.
        image_scores: ``{name: (B,) float}`` per-image scores of a method's own metric (NaN: image not
            scored); the engine logs each one's mean over the scored images (MCTformer: ``mAP``).
    """

    maps: dict[str, Tensor]
    cls_logits: Tensor | None = None
    image_scores: dict[str, Tensor] | None = None


class PseudoScores(NamedTuple):
    """One image's exportable scores (``Method.pseudo_scores``; MCTformer's seed maps).

    Attributes:
        keys: (k,) int64 foreground classes (0-based) that have a map.
        scores: (k, H, W) float maps in [0, 1] (written as ``.npy``).
        labels: ``{kind: (H, W) int64}`` as ``pseudo_labels`` returns (the export writes these instead).
        crf_alphas: α of the CRF export (bg = (1 − max scores)^α); empty: none.
        overlays: also write a heat-map overlay per key.
    """

    keys: Tensor
    scores: Tensor
    labels: dict[str, Tensor]
    crf_alphas: tuple[int, ...] = ()
    overlays: bool = False


class Method:
    """A method: its network, training step, validation, test-time prediction and pseudo labels.

    Subclasses set the class attributes and implement the four abstract methods; the others have
    defaults. ``cfg`` is the resolved config of ``schema``.

    Attributes:
        schema: the config dataclass (a ``methods.schema.BaseConfig`` subclass).
        validation_maps: the names of the maps ``validation_step`` returns, in the log's order.
        best_map: the map whose mIoU picks ``best.pt``.
        network_keys: config keys that fix the network's parameters (a checkpoint fits only a network
            built with the same values).
        pseudo_label_kinds: the label kinds ``pseudo_labels`` returns (folders of the export).
    """

    schema: ClassVar[type[BaseConfig]] = BaseConfig
    validation_maps: ClassVar[tuple[str, ...]] = ("seg",)
    best_map: ClassVar[str] = "seg"
    network_keys: ClassVar[tuple[str, ...]] = ("backbone.config", "dataset.num_classes")
    pseudo_label_kinds: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: DictConfig) -> None:
        """``cfg``: the resolved config of ``schema``."""
        self.cfg = cfg

    @property
    def name(self) -> str:
        """The config's method name (a registry key or ``module.path:ClassName``); the class name for a
        method built without a config."""
        return type(self).__name__ if self.cfg is None else self.cfg.method

    # ------------------------------------------------------------------ network and optimiser
    def build_network(self, pretrained: bool = True) -> nn.Module:
        """The network of ``cfg``, with its encoder's ImageNet weights when ``pretrained`` and the
        config asks for them (``backbone.pretrained``)."""
        raise NotImplementedError

    def load_weights(self, model: nn.Module, source: str | Path) -> None:
        """Load a checkpoint into ``model`` (ours: its ``model`` entry; else a plain state dict)."""
        state = torch_load_checked(source)
        model.load_state_dict(state["model"] if isinstance(state, dict) and "model" in state else state)

    def configure_optimizers(
        self, model: nn.Module
    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
        """The optimiser over ``model``'s parameters (unwrapped) and its schedule, stepped once per
        iteration for ``cfg.train.max_iters`` iterations (``methods/optim.py`` has the schedules)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ training
    def build_train_dataset(self) -> Dataset:
        """The training set of ``cfg``; its items are what ``training_losses`` receives, batched.

        Default: VOC or COCO (``dataset.name``) classification crops of ``train.split`` with AFA's
        augmentation (random rescale, flip, colour jitter, crop ``dataset.crop_size``). Items are drawn
        as ``dataset[(index, seed)]`` (``utils/runtime/data.py``: augmentation is a pure function of the
        seed, for exact resume). The engine checks the split (``datasets.checks.check_split``: the
        dataset needs ``names``, ``split``, ``image_path``, ``image_folder``) before any worker starts.
        """
        cfg = self.cfg
        cls = VOCClsDataset if cfg.dataset.name == "voc" else COCOClsDataset
        return cls(
            cfg.dataset.root_dir,
            cfg.dataset.name_list_dir,
            split=cfg.train.split,
            crop_size=cfg.dataset.crop_size,
            scale_range=tuple(cfg.dataset.rescale_range),
            num_classes=cfg.dataset.num_classes,
        )

    def training_losses(self, model: nn.Module, batch: dict[str, Any], n_iter: int) -> StepResult:
        """Forward, pseudo labels and named losses of iteration ``n_iter`` (0-based), no update.

        Args:
            model: the network in train mode, possibly DistributedDataParallel-wrapped (call it for
                the forward, so that gradients are reduced; ``utils.runtime.dist.unwrap`` for the rest).
            batch: ``image`` (B, 3, h, w) normalised crops, ``cls_label`` (B, K) in {0, 1}, ``img_box``
                (B, 4) the valid region [h0, h1, w0, w1] of each crop, ``name`` the image ids.
        """
        raise NotImplementedError

    def setup_lines(self) -> list[str]:
        """Lines for the training log once it is open (e.g. which weights a mode uses)."""
        return []

    def training_warnings(self) -> list[str]:
        """Settings that run but may not be what the user meant (printed before training)."""
        return []

    def training_panel(
        self, batch: dict[str, Any], result: StepResult, model: nn.Module, class_names: list[str]
    ) -> np.ndarray | None:
        """An (H, W, 3) uint8 picture for TensorBoard every ``train.log_iters``, or None (no panel)."""
        return None

    # ------------------------------------------------------------------ evaluation
    def validation_step(self, model: nn.Module, image: Tensor, cls_label: Tensor) -> ValidationOutput:
        """Predictions of one batch of same-size images, ``model`` in eval mode, no grad.

        Args:
            image: (B, 3, H, W) normalised; cls_label: (B, K) ground-truth image-level labels.
        """
        raise NotImplementedError

    def segment(self, model: nn.Module, x: Tensor) -> Tensor:
        """Test-time segmentation logits (B, C, h, w) of (B, 3, H, W) normalised images, on any grid
        (``infer_seg.py`` resizes them; multi-scale and flip are done around this call)."""
        return model.segment(x)

    def min_input_side(self, model: nn.Module) -> int:
        """The shortest image side (px) ``segment`` accepts."""
        return 1

    def pseudo_labels(self, model: nn.Module, image: Tensor, cls_label: Tensor) -> dict[str, Tensor]:
        """``{kind: (H, W) int64 label map, 255 = uncertain}`` for one whole image (eval mode), for
        ``scripts/make_pseudo_labels.py``; kinds as ``pseudo_label_kinds``.

        Args:
            image: (1, 3, H, W) normalised; cls_label: (1, K) image-level labels.
        """
        raise UsageError(f"method {self.name} exports no pseudo labels")

    def pseudo_scores(self, model: nn.Module, image: Tensor, cls_label: Tensor) -> PseudoScores | None:
        """Optional score export (``PseudoScores``) of one image, used by the export instead of
        ``pseudo_labels`` when not None; the default None exports labels only.

        Args:
            image: (1, 3, H, W) normalised; cls_label: (1, K) image-level labels.
        """
        return None

    def pseudo_label_report(self) -> dict[str, Any]:
        """Settings of the pseudo labels recorded in the export's ``report.json``."""
        return {}
