"""AuxSegNet's configuration keys (``method: auxsegnet``), on top of the shared ones of ``methods/schema.py``.

Constants come from the authors' ``train_AuxAff.py`` / ``gen_pgt.py`` defaults (spec §5, §7); each key's
comment names its source. ``backbone.config`` is ``resnet38`` (the authors') or a MiT variant
(``mit_b1``: a documented deviation, spec §1.5).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import DictConfig

from methods.schema import BackboneConfig, BaseConfig, DatasetConfig, TrainConfig

SALIENCY_SOURCES = ("files", "u2netp", "synthetic_oracle")
SALIENCY_LABELS = {
    "files": "precomputed saliency maps (the authors use DSS)",
    "u2netp": "off-the-shelf U²-Net-p, not DSS",
    "synthetic_oracle": "ORACLE saliency: leaks pixel-level foreground",
}


@dataclass
class AuxSegBackboneConfig(BackboneConfig):
    config: str = "resnet38"  # authors: ResNet38 (Wider ResNet-38, stride 8); or mit_b0..mit_b5
    width_divisor: int = 1  # ResNet38 widths / this (tests only)


@dataclass
class AuxSegDatasetConfig(DatasetConfig):
    crop_size: int = 321  # --crop_size
    rescale_range: list[float] = field(default_factory=lambda: [0.7, 1.3])  # one scale per batch (authors)
    saliency_dir: str | None = None  # off-the-shelf maps <id>.png (8-bit grey), the round-0 saliency labels
    saliency_source: str = "files"  # files (DSS as published) | u2netp | synthetic_oracle: stamped in reports
    saliency_on_size_mismatch: str = "resize"  # resize (bilinear, warning) | refuse


@dataclass
class AuxSegTrainConfig(TrainConfig):
    batch_size: int = 4  # --batch_size
    max_iters: int = 39676  # ⌊10582/4⌋·15 = T = 39,675, and the authors' loop runs T + 1 iterations


@dataclass
class AuxSegOptimConfig:
    learning_rate: float = 7e-4  # --lr (1× group: backbone, cross_att); 10× for the heads
    head_lr_mult: float = 10.0  # get_10x_lr_params
    weight_decay: float = 1e-5  # --wt_dec
    momentum: float = 0.9  # intended; the released code runs momentum = --wt_dec (sgd_positional_quirk)
    power: float = 0.9  # poly power (PolyOptimizer_cls's "momentum" attribute)
    sgd_positional_quirk: bool = False  # true: the released SGD (momentum 1e-5, no decay), spec §7.2
    poly_max_step: int | None = None  # T of the poly decay; None: train.max_iters − 1 (T + 1 iterations)
    kind: str = "sgd"  # sgd (the authors'); adamw: the same groups and poly decay, for training from scratch


@dataclass
class AuxSegLossConfig:
    cls: float = 1.0  # --cls_loss_weight
    sal: float = 1.0  # --sal_loss_weight (each of the initial and refined terms)
    seg: float = 1.0  # --seg_loss_weight (each of the initial and refined terms)


@dataclass
class AuxSegSection:
    variant: str = "iccv"  # iccv (the released network) | plus_unary (AuxSegNet+ unary affinity, our reading)
    mid: int = 128  # head width M
    seg_label_dir: str | None = (
        None  # this round's segmentation pseudo labels (set by scripts/auxseg_rounds.py)
    )
    sal_label_dir: str | None = None  # this round's saliency pseudo labels; None: dataset.saliency_dir
    init_weights: str | None = None  # a checkpoint to start from (the previous round's last.pt)
    init_seg_label_dir: str | None = None  # round-0 segmentation labels of your own; None: from init_cls CAMs
    init_cls_iters: int = 0  # classification-only pre-training whose CAMs make the round-0 labels (spec §4.4)
    seg_pad_value: int = 0  # crop padding of the label: authors 0 (background); 255 ignores it
    cam_threshold: float = 0.2  # fusion_cam: O_cam = max_k c_k > 0.2
    sal_threshold: float = 0.06  # fusion_cam: O_sal = S > 0.06
    rounds: int = 4  # main.py --num_steps (round 0 on the initial labels, then rounds 1..)
    warm_start: bool = True  # round s ≥ 1 starts from round s − 1's last weights
    sal_update_reference: str = "original"  # average with the off-the-shelf map (authors) | previous


@dataclass
class AuxSegConfig(BaseConfig):
    """``method: auxsegnet``: the shared sections plus ``optim``, ``loss`` and ``auxseg``."""

    method: str = "auxsegnet"
    backbone: AuxSegBackboneConfig = field(default_factory=AuxSegBackboneConfig)
    dataset: AuxSegDatasetConfig = field(default_factory=AuxSegDatasetConfig)
    train: AuxSegTrainConfig = field(default_factory=AuxSegTrainConfig)
    optim: AuxSegOptimConfig = field(default_factory=AuxSegOptimConfig)
    loss: AuxSegLossConfig = field(default_factory=AuxSegLossConfig)
    auxseg: AuxSegSection = field(default_factory=AuxSegSection)

    @classmethod
    def checks(cls, cfg: DictConfig) -> list[tuple[bool, str]]:
        """The shared rules and AuxSegNet's."""
        a, d = cfg.auxseg, cfg.dataset
        return super().checks(cfg) + [
            (a.variant in ("iccv", "plus_unary"), "auxseg.variant must be 'iccv' or 'plus_unary'"),
            (d.saliency_source in SALIENCY_SOURCES, f"dataset.saliency_source: one of {SALIENCY_SOURCES}"),
            (
                d.saliency_on_size_mismatch in ("resize", "refuse"),
                "dataset.saliency_on_size_mismatch must be 'resize' or 'refuse'",
            ),
            (
                a.sal_update_reference in ("original", "previous"),
                "auxseg.sal_update_reference: original|previous",
            ),
            (a.seg_pad_value in (0, 255), "auxseg.seg_pad_value must be 0 (authors) or 255"),
            (a.rounds >= 1, "auxseg.rounds must be >= 1"),
            (cfg.optim.kind in ("sgd", "adamw"), "optim.kind must be 'sgd' (the authors') or 'adamw'"),
            (cfg.backbone.width_divisor >= 1, "backbone.width_divisor must be >= 1"),
            (
                cfg.optim.poly_max_step is None or cfg.optim.poly_max_step >= 1,
                "optim.poly_max_step must be >= 1",
            ),
        ]
