"""MCTformer's configuration keys (``method: mctformer_v1 | mctformer_v2``), on top of the shared ones.

Every constant is the authors' recipe at commit 9606597 (``MCTFORMER_SPEC.md`` §3), with its section.

Epochs: the engine counts iterations (``train.max_iters``); the schedule counts epochs of
``scheduler.iters_per_epoch`` iterations. ``iters_per_epoch: null`` derives it as the authors'
``drop_last`` loader does: ⌊len(train split) / train.batch_size⌋ (VOC train_aug at 64: 165). A config
sets ``train.max_iters = scheduler.epochs × iters_per_epoch`` for the full recipe (VOC: 60 × 165 = 9900);
a shorter ``max_iters`` runs the first part of the same schedule (a warning says so).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import II, DictConfig

from datasets.mct_transforms import AugmentConfig, augment_checks
from methods.afa_config import AReAMConfig
from methods.mct_seeds import SeedConfig, seed_checks
from methods.schema import BackboneConfig, BaseConfig, DatasetConfig, TrainConfig

DEIT_NAMES = ("deit_tiny", "deit_small", "deit_base")


@dataclass
class MCTBackboneConfig(BackboneConfig):
    config: str = "deit_small"  # DeiT-S (spec §1.1); deit_tiny | deit_small | deit_base
    pretrained: bool = True  # ImageNet DeiT through the fine-tune surgery (spec §1.4)
    pretrained_path: str | None = None  # default pretrained/deit_small_patch16_224-cd65a155.pth
    drop_path_rate: float = 0.1  # --drop-path (spec §3.1)
    img_size: int = 224  # the position grid, 224/16 = 14 (spec §1.2)
    dims: list[int] | None = None  # [D, depth, heads] instead of config's DeiT size (tiny demo models)


@dataclass
class MCTDatasetConfig(DatasetConfig):
    crop_size: int = 224  # --input-size (spec §3.1); the same as augment.crop_size


@dataclass
class MCTAugmentConfig(AugmentConfig):
    crop_size: int = II("dataset.crop_size")  # one crop size: dataset.crop_size (--input-size 224)


@dataclass
class MCTTrainConfig(TrainConfig):
    batch_size: int = 64  # spec §3.1 (one GPU)
    max_iters: int = 9900  # 60 epochs × 165 iterations (VOC train_aug, batch 64, drop_last)
    eval_iters: int = 165  # the authors evaluate every epoch
    log_iters: int = 20
    seed: int = 0  # same_seeds(0) (spec §3.1)
    explicit_attention: bool = False  # the authors' forward: every block's softmax built, maps made (Q18);
    # no effect on the loss, slower; single process only (benchmark comparison)


@dataclass
class MCTOptimizerConfig:
    learning_rate: float = 5e-4  # --lr before scaling (spec §3.1)
    lr_reference_batch: int = 512  # lr · batch / 512 = 6.25e-5 at batch 64
    weight_decay: float = 0.05  # decay group only (spec §3.2)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8


@dataclass
class MCTSchedulerConfig:
    epochs: int = 60  # t_initial (spec §3.3)
    warmup_epochs: int = 5
    warmup_lr: float = 1e-6
    min_lr: float = 1e-5
    iters_per_epoch: int | None = None  # null: ⌊len(train split) / batch_size⌋ (drop_last)


@dataclass
class MCTAReAMConfig(AReAMConfig):
    """The AReAM mode on MCTformer-V2 (``methods/aream_mct.py``; AFA_SPEC §8.5). ``layer_index`` None:
    7 of 12 blocks (the AReAM authors' script), scaled to other depths; ``mode`` and ``grid_conversion``
    are AFA's (only ``add``: MCTformer has no affinity head to replace; every DeiT block is on one grid)."""

    warmup_epochs: int = 10  # classification only for the first 10 of 60 epochs (AReAM authors)


@dataclass
class MCTformerConfig(BaseConfig):
    """``method: mctformer_v1 | mctformer_v2``: the shared sections plus MCTformer's."""

    method: str = "mctformer_v2"
    backbone: MCTBackboneConfig = field(default_factory=MCTBackboneConfig)
    dataset: MCTDatasetConfig = field(default_factory=MCTDatasetConfig)
    train: MCTTrainConfig = field(default_factory=MCTTrainConfig)
    optimizer: MCTOptimizerConfig = field(default_factory=MCTOptimizerConfig)
    scheduler: MCTSchedulerConfig = field(default_factory=MCTSchedulerConfig)
    augment: MCTAugmentConfig = field(default_factory=MCTAugmentConfig)
    seeds: SeedConfig = field(default_factory=SeedConfig)
    aream: MCTAReAMConfig = field(default_factory=MCTAReAMConfig)

    @classmethod
    def checks(cls, cfg: DictConfig) -> list[tuple[bool, str]]:
        """The shared rules and MCTformer's: DeiT size, crop, optimiser and schedule values."""
        s, o = cfg.scheduler, cfg.optimizer
        return (
            super().checks(cfg)
            + augment_checks(cfg.augment)
            + seed_checks(cfg.seeds)
            + [
                (cfg.backbone.config in DEIT_NAMES, f"backbone.config must be one of {list(DEIT_NAMES)}"),
                (cfg.backbone.img_size % 16 == 0, "backbone.img_size must be a multiple of 16"),
                (
                    cfg.backbone.dims is None
                    or (len(cfg.backbone.dims) == 3 and cfg.backbone.dims[0] % cfg.backbone.dims[2] == 0),
                    "backbone.dims must be [D, depth, heads] with D divisible by heads",
                ),
                (
                    cfg.backbone.dims is None or not cfg.backbone.pretrained,
                    "backbone.dims (a custom size) has no ImageNet weights: set backbone.pretrained false",
                ),
                (
                    cfg.augment.crop_size == cfg.dataset.crop_size,
                    "augment.crop_size and dataset.crop_size must be equal (the training crop)",
                ),
                (o.learning_rate > 0 and o.lr_reference_batch >= 1, "optimizer.learning_rate must be > 0"),
                (len(o.betas) == 2, "optimizer.betas needs 2 values"),
                (
                    s.epochs >= 1 and 0 <= s.warmup_epochs <= s.epochs,
                    "scheduler: 0 <= warmup_epochs <= epochs",
                ),
                (
                    s.iters_per_epoch is None or s.iters_per_epoch >= 1,
                    "scheduler.iters_per_epoch must be >= 1",
                ),
                (
                    cfg.aream.mode == "add",
                    "aream.mode: only 'add' on MCTformer (no affinity head to replace)",
                ),
                (cfg.aream.warmup_epochs >= 0, "aream.warmup_epochs must be >= 0"),
            ]
        )
