"""Configuration keys of the fully supervised method (``method: supervised``), the second stage of WSSS:
a segmentation network trained on label PNGs (pseudo labels or ground truth) from ``dataset.label_dir``.

Defaults are the common DeepLabV2 second-stage recipe (``configs/voc_stage2_deeplabv2.yaml`` cites each
number); ``configs/voc_stage2_segformer.yaml`` sets SegFormer's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import DictConfig

from methods.schema import BackboneConfig, BaseConfig, DatasetConfig

NETWORKS = ("segformer", "deeplabv2")
NETWORK_OF_PREFIX = {"mit_": "segformer", "resnet": "deeplabv2"}


@dataclass
class SupervisedBackboneConfig(BackboneConfig):
    config: str = (
        "resnet101"  # resnet101 | resnet50 | resnet_tiny (DeepLabV2); mit_b0..b5, mit_tiny (SegFormer)
    )
    freeze_bn: bool = True  # ResNet BatchNorm: running statistics, no affine gradient (DeepLabV2 at batch 10)


@dataclass
class SupervisedDatasetConfig(DatasetConfig):
    label_dir: str | None = None  # folder of <id>.png training labels (0..K, 255 ignore); required to train
    check_labels: bool = True  # check every training label (exists, size, values) before training
    crop_size: int = 321  # DeepLabV2
    rescale_range: list[float] = field(default_factory=lambda: [0.5, 1.5])


@dataclass
class SupervisedModelConfig:
    embed_dim: int = 256  # SegFormer decoder width: 256 for B0/B1, 768 for B2-B5 (SegFormer paper)
    dropout: float = 0.1  # SegFormer decoder Dropout2d
    aspp_rates: list[int] = field(default_factory=lambda: [6, 12, 18, 24])  # DeepLabV2 ASPP-L


@dataclass
class SupervisedOptimizerConfig:
    type: str = "sgd"  # sgd (DeepLabV2) | adamw (SegFormer)
    learning_rate: float = 2.5e-4
    momentum: float = 0.9  # sgd
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adamw
    weight_decay: float = 5.0e-4
    norm_weight_decay: float = 0.0  # trunk norms (and ResNet BatchNorm when unfrozen)
    head_lr_mult: float = 10.0  # classifier / decoder weights
    head_bias_lr_mult: float = 20.0  # classifier / decoder biases and norms (DeepLab: 20)
    head_bias_weight_decay: float = 0.0  # DeepLab: biases undecayed


@dataclass
class SupervisedSchedulerConfig:
    warmup_iter: int = 0  # linear warm-up iterations (SegFormer 1500; DeepLab none)
    warmup_ratio: float = 1.0e-6
    power: float = 0.9  # poly decay


@dataclass
class SupervisedConfig(BaseConfig):
    """The shared sections, with the supervised backbone and dataset keys, and the network's."""

    method: str = "supervised"
    network: str | None = None  # segformer | deeplabv2; None: from backbone.config (mit_* / resnet*)
    backbone: SupervisedBackboneConfig = field(default_factory=SupervisedBackboneConfig)
    dataset: SupervisedDatasetConfig = field(default_factory=SupervisedDatasetConfig)
    model: SupervisedModelConfig = field(default_factory=SupervisedModelConfig)
    optimizer: SupervisedOptimizerConfig = field(default_factory=SupervisedOptimizerConfig)
    scheduler: SupervisedSchedulerConfig = field(default_factory=SupervisedSchedulerConfig)

    @classmethod
    def checks(cls, cfg: DictConfig) -> list[tuple[bool, str]]:
        """The shared rules, and: a known network that fits the backbone, a known optimiser."""
        net, backbone = network_name(cfg), cfg.backbone.config
        return super().checks(cfg) + [
            (
                net in NETWORKS,
                f"network={cfg.network!r}: use segformer or deeplabv2 (or a mit_*/resnet* backbone)",
            ),
            (
                net not in NETWORKS or NETWORK_OF_PREFIX.get(_prefix(backbone)) == net,
                f"network={net} does not take backbone.config={backbone} "
                "(segformer: mit_*; deeplabv2: resnet*)",
            ),
            (cfg.optimizer.type in ("sgd", "adamw"), "optimizer.type must be 'sgd' or 'adamw'"),
            (len(cfg.model.aspp_rates) > 0, "model.aspp_rates must not be empty"),
        ]


def _prefix(backbone: str) -> str | None:
    """The ``NETWORK_OF_PREFIX`` key ``backbone`` starts with, or None."""
    return next((p for p in NETWORK_OF_PREFIX if backbone.startswith(p)), None)


def network_name(cfg: DictConfig) -> str | None:
    """``network``, or the network of ``backbone.config`` when it is null (None if neither says)."""
    if cfg.network is not None:
        return cfg.network
    return NETWORK_OF_PREFIX.get(_prefix(cfg.backbone.config))
