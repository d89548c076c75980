"""AFA's configuration keys (and the AReAM mode's), on top of the shared ones of ``methods/schema.py``.

Key names follow the authors' configs where they exist (``backbone.config``, ``cam.scales``,
``optimizer.learning_rate``, ``scheduler.warmup_iter`` …). Every constant of the reference is a named
key with its source in a comment.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import DictConfig

from methods.schema import BackboneConfig, BaseConfig, TrainConfig


@dataclass
class AFABackboneConfig(BackboneConfig):
    stride: list[int] = field(default_factory=lambda: [4, 2, 2, 1])  # AFA: stage 4 at stride 16 (spec §1.3)


@dataclass
class ModelConfig:
    embed_dim: int = 256  # SegFormer decoder width
    pooling: str = "gmp"  # gmp | gap; reference launch value gmp
    aff_blocks: int = 2  # the last two blocks' attention feed the affinity head


@dataclass
class AFATrainConfig(TrainConfig):
    cam_iters: int = 2000  # classification-only warm phase, n_iter <= cam_iters; COCO 5000


@dataclass
class CamConfig:
    bkg_score: float = 0.45
    high_thre: float = 0.55
    low_thre: float = 0.35
    scales: list[float] = field(default_factory=lambda: [1.0, 0.5, 1.5])
    train_mode: bool = (
        True  # reference: CAM passes in train mode, decoder run (BN stats); false = eval, faster
    )
    from_forward: bool = False  # fastest, not the reference: CAM + affinity of the training forward


@dataclass
class ParConfig:
    num_iter: int = 10  # reference VOC; COCO 15
    dilations: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 12, 24])


@dataclass
class AfaConfig:
    radius: int = 8  # affinity window on the token grid
    seg_label_switch_iter: int = 6000  # seg target: PAR-refined CAM label while n_iter <= this; COCO 15000
    aff_label_switch_iter: int | None = None  # COCO 15000: affinity labels from the propagated label after it


@dataclass
class AReAMConfig:
    """Optional AReAM mode (S002, spec §8.5): per-layer affinity supervision weighted by entropy."""

    enabled: bool = False  # off: AFA exactly
    layer_index: int | None = None  # first supervised ("deep") block; default: the first stage-4 block
    entropy_file: str | None = None  # scripts/layer_entropy.py output; None: uniform "agg." weights
    mode: str = "add"  # add: AFA's head and loss stay, Eq. 16 added | replace: Eq. 9 label and Eq. 16 only
    grid_conversion: str = "expand"  # 1/32-grid maps: expand (attention to 1/16) | reduce (CAM to 1/32)
    loss_weight: float = 0.1  # weight of Eq. 16 (the authors' 0.1 affinity weight)


@dataclass
class LossConfig:
    cls: float = 1.0
    seg: float = 0.1
    aff: float = 0.1
    reg: float = 0.0  # L_reg, the dense-CRF energy loss (spec §6.4, App. B): 0.01 in the paper's recipe
    # and the published VOC log (configs/voc.yaml); 0 in the authors' current code and on COCO


@dataclass
class OptimizerConfig:
    learning_rate: float = 6e-5
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.01
    head_lr_mult: float = 10.0  # classifier, affinity projection and decoder


@dataclass
class SchedulerConfig:
    warmup_iter: int = 1500
    warmup_ratio: float = 1e-6
    power: float = 1.0


@dataclass
class AFAConfig(BaseConfig):
    """``method: afa`` (the default): the shared sections plus AFA's."""

    backbone: AFABackboneConfig = field(default_factory=AFABackboneConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: AFATrainConfig = field(default_factory=AFATrainConfig)
    cam: CamConfig = field(default_factory=CamConfig)
    par: ParConfig = field(default_factory=ParConfig)
    afa: AfaConfig = field(default_factory=AfaConfig)
    aream: AReAMConfig = field(default_factory=AReAMConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)

    @classmethod
    def checks(cls, cfg: DictConfig) -> list[tuple[bool, str]]:
        """The shared rules and AFA's: the token grid, the CAM thresholds, the AReAM options."""
        return super().checks(cfg) + [
            (cfg.model.pooling in ("gmp", "gap"), "model.pooling must be 'gmp' or 'gap'"),
            (cfg.dataset.crop_size % 16 == 0, "dataset.crop_size must be a multiple of 16 (the token grid)"),
            (len(cfg.backbone.stride) == 4, "backbone.stride needs 4 entries"),
            (cfg.cam.low_thre < cfg.cam.high_thre, "cam.low_thre must be below cam.high_thre"),
            (
                len(cfg.cam.scales) > 0 and len(cfg.infer.scales) > 0,
                "cam.scales and infer.scales must not be empty",
            ),
            (cfg.aream.mode in ("add", "replace"), "aream.mode must be 'add' or 'replace'"),
            (
                cfg.aream.grid_conversion in ("expand", "reduce"),
                "aream.grid_conversion: 'expand' or 'reduce'",
            ),
            (
                not (cfg.cam.from_forward and cfg.aream.enabled),
                "cam.from_forward is an AFA option; AReAM needs its own CAM passes (set one of them false)",
            ),
        ]
