"""Typed configuration: dataclass schema ← YAML file ← command-line ``key=value`` overrides.

Key names follow the authors' configs where they exist (``backbone.config``, ``dataset.root_dir``,
``dataset.crop_size``, ``train.max_iters``, ``cam.scales``, ``optimizer.learning_rate``,
``scheduler.warmup_iter``, ``work_dir.dir`` …). Every constant of the reference is a named key with
its source in a comment; an unknown key or a value of the wrong type is an error naming the key.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from utils.errors import ConfigError, MissingFileError


@dataclass
class BackboneConfig:
    config: str = "mit_b1"  # MiT variant; the paper uses mit_b1
    stride: list[int] = field(default_factory=lambda: [4, 2, 2, 1])  # AFA: stage 4 at stride 16 (spec §1.3)
    pretrained: bool = True  # load the SegFormer ImageNet checkpoint
    pretrained_path: str | None = None  # default: pretrained/<config>.pth
    drop_path_rate: float = 0.1  # reference


@dataclass
class ModelConfig:
    embed_dim: int = 256  # SegFormer decoder width
    pooling: str = "gmp"  # gmp | gap; reference launch value gmp
    aff_blocks: int = 2  # the last two blocks' attention feed the affinity head


@dataclass
class DatasetConfig:
    name: str = "voc"  # voc | coco: which directory layout to read
    root_dir: str = "../VOCdevkit/VOC2012"  # JPEGImages/ and SegmentationClassAug/ (VOC layout)
    name_list_dir: str = "datasets/voc"  # <split>.txt and cls_labels.txt
    num_classes: int = 21  # background included; COCO 81
    crop_size: int = 512  # as run (launch scripts); the reference YAML's 320 is overridden there
    rescale_range: list[float] = field(default_factory=lambda: [0.5, 2.0])
    ignore_index: int = 255
    num_workers: int = 4  # reference 10


@dataclass
class TrainConfig:
    split: str = "train_aug"
    batch_size: int = 4  # GLOBAL batch; per-process batch = batch_size / world size (reference: 2 per GPU)
    max_iters: int = 20000  # COCO 80000
    cam_iters: int = 2000  # classification-only warm phase, n_iter <= cam_iters; COCO 5000
    eval_iters: int = 2000  # COCO 5000
    log_iters: int = 200
    ckpt_iters: int | None = None  # periodic checkpoints/iter_<n>.pt; default eval_iters
    stop_iter: int | None = None  # end the process after this many iterations (time limits); --resume goes on
    seed: int = 1  # reference setup_seed(1)
    amp: str = "none"  # none | bf16 (not the reference)
    tf32: bool = False  # CUDA: TF32 matmuls and cuDNN convolutions (faster, ~1e-3 from float32)
    deterministic: bool = False  # deterministic CUDA kernels where they exist (dist.set_deterministic)
    overwrite: bool = False  # train into a work dir that holds checkpoints, deleting them (not --resume)
    skip_nonfinite: bool = False  # skip (count) a step whose total loss is not finite instead of stopping
    max_nonfinite_in_a_row: int = 10  # with skip_nonfinite: stop after this many skipped steps in a row


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
class ValConfig:
    split: str = "val"  # COCO log: val_part (5,000 images)
    max_images: int | None = None  # evaluate only the first N images (quick checks)
    batch_size: int = 1  # >1: batches of same-size images (the same scores, fewer larger passes)


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
class InferConfig:
    split: str = "val"
    resize_long: int = 512  # scripts/test_msc_flip.py
    scales: list[float] = field(default_factory=lambda: [1.0, 0.5, 0.75])  # authors' script; paper: 0.5..1.5
    crf_workers: int = 0  # 0: 80 % of the CPUs, as the authors' joblib setting
    crf: bool = False  # dense CRF after the multi-scale prediction (authors' test script; infer_seg.py --crf)
    max_images: int | None = None  # infer on the first N images only (quick checks)


@dataclass
class WorkDirConfig:
    dir: str = "work_dir_voc"
    ckpt_dir: str = "checkpoints"
    pred_dir: str = "predictions"
    tb_dir: str = "tb"


@dataclass
class Config:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    cam: CamConfig = field(default_factory=CamConfig)
    par: ParConfig = field(default_factory=ParConfig)
    afa: AfaConfig = field(default_factory=AfaConfig)
    aream: AReAMConfig = field(default_factory=AReAMConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    val: ValConfig = field(default_factory=ValConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    work_dir: WorkDirConfig = field(default_factory=WorkDirConfig)
    device: str = "auto"  # auto | cpu | cuda | cuda:N (under torchrun each rank uses its local rank's GPU)
    dist_timeout_s: float = 900.0  # rendezvous and collectives: a dead or stuck rank fails the job


DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def schema_keys(node: DictConfig | None = None, prefix: str = "") -> list[str]:
    """Every dotted key of the schema (``train.max_iters``, ``device``, ...)."""
    node = OmegaConf.structured(Config) if node is None else node
    keys = []
    for name in node:
        value = node[name]
        if isinstance(value, DictConfig):
            keys += schema_keys(value, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def _suggestion(key: str) -> str | None:
    close = difflib.get_close_matches(key, schema_keys(), n=1, cutoff=0.6)
    return (
        f"did you mean {close[0]}? (all keys: utils/config.py)"
        if close
        else "the keys are in utils/config.py"
    )


def _merge(base: DictConfig, other: DictConfig, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, other)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        first_line = str(err).splitlines()[0]
        hint = None
        if "Did you mean" in first_line:  # OmegaConf's own suggestion
            hint = "all keys, with their sources: utils/config.py"
        elif "not in" in first_line:
            hint = _suggestion(key)
        raise ConfigError(f"{source}: invalid config key '{key}': {first_line}", hint=hint) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> DictConfig:
    """Schema defaults, then the YAML file, then ``key=value`` overrides; validated at each step.

    Raises:
        ConfigError: naming the unknown key or the ill-typed value and where it came from.
        FileNotFoundError: if ``path`` does not exist.
    """
    cfg = OmegaConf.structured(Config)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise MissingFileError(
                f"config file not found: {path}", hint="give an existing YAML with --config"
            )
        try:
            loaded = OmegaConf.load(path)
        except Exception as err:  # yaml.YAMLError and OmegaConf's own: the file is not valid YAML
            first = str(err).strip().splitlines()[0]
            raise ConfigError(f"{path} is not a valid YAML config: {first}") from err
        cfg = _merge(cfg, loaded, str(path))
    return apply_overrides(cfg, overrides)


def apply_overrides(cfg: DictConfig, overrides: list[str] | None = None) -> DictConfig:
    """``cfg`` with ``key=value`` overrides merged in order, then validated (errors name the key)."""
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(
                f"override {item!r} is not of the form key=value", hint="e.g. train.max_iters=100"
            )
        cfg = _merge(cfg, OmegaConf.from_dotlist([item]), f"override {item!r}")
    validate(cfg)
    return cfg


def _is_range(values: list[float]) -> bool:
    return len(values) == 2 and 0 < values[0] <= values[1]


def validate(cfg: DictConfig) -> None:
    """Cross-field checks the schema cannot express; a short schedule is allowed with a warning."""
    t = cfg.train
    checks = [
        (cfg.dataset.name in ("voc", "coco"), "dataset.name must be 'voc' or 'coco'"),
        (cfg.model.pooling in ("gmp", "gap"), "model.pooling must be 'gmp' or 'gap'"),
        (cfg.train.amp in ("none", "bf16"), "train.amp must be 'none' or 'bf16'"),
        (cfg.dataset.crop_size % 16 == 0, "dataset.crop_size must be a multiple of 16 (the token grid)"),
        (cfg.train.batch_size >= 1, "train.batch_size must be >= 1"),
        (len(cfg.backbone.stride) == 4, "backbone.stride needs 4 entries"),
        (cfg.cam.low_thre < cfg.cam.high_thre, "cam.low_thre must be below cam.high_thre"),
        (
            DEVICE_PATTERN.match(cfg.device) is not None,
            f"device={cfg.device!r}: use auto, cpu, cuda or cuda:N",
        ),
        (cfg.dataset.num_classes >= 2, "dataset.num_classes must be >= 2 (background included)"),
        (cfg.dataset.crop_size > 0, "dataset.crop_size must be positive"),
        (_is_range(cfg.dataset.rescale_range), "dataset.rescale_range must be [lo, hi] with 0 < lo <= hi"),
        (cfg.dataset.num_workers >= 0, "dataset.num_workers must be >= 0"),
        (t.max_iters >= 1, "train.max_iters must be >= 1"),
        (
            min(t.eval_iters, t.log_iters, t.ckpt_iters or 1) >= 1,
            "train.eval_iters, log_iters, ckpt_iters must be >= 1",
        ),
        (t.stop_iter is None or t.stop_iter >= 1, "train.stop_iter must be >= 1"),
        (cfg.val.max_images is None or cfg.val.max_images >= 1, "val.max_images must be >= 1"),
        (cfg.val.batch_size >= 1, "val.batch_size must be >= 1"),
        (t.max_nonfinite_in_a_row >= 1, "train.max_nonfinite_in_a_row must be >= 1"),
        (
            len(cfg.cam.scales) > 0 and len(cfg.infer.scales) > 0,
            "cam.scales and infer.scales must not be empty",
        ),
        (cfg.aream.mode in ("add", "replace"), "aream.mode must be 'add' or 'replace'"),
        (cfg.aream.grid_conversion in ("expand", "reduce"), "aream.grid_conversion: 'expand' or 'reduce'"),
        (
            not (cfg.cam.from_forward and cfg.aream.enabled),
            "cam.from_forward is an AFA option; AReAM needs its own CAM passes (set one of them false)",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def training_warnings(cfg: DictConfig) -> list[str]:
    """Settings that run but may not be what the user meant (the trainer prints them)."""
    t = cfg.train
    warnings = []
    if t.cam_iters >= t.max_iters:
        warnings.append(
            f"train.cam_iters={t.cam_iters} >= train.max_iters={t.max_iters}: a short schedule, "
            "classification only (no seg or affinity loss); fine for a smoke run"
        )
    return warnings


def save_config(cfg: DictConfig, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(OmegaConf.to_yaml(cfg, resolve=True))
