"""The configuration keys every method shares, as typed dataclasses, and their cross-field checks.

A method's schema is a subclass of ``BaseConfig`` that adds its own sections (AFA: ``cam``, ``par``,
``afa``, ``loss``, ...) and may extend a shared section by subclassing it (AFA's ``train.cam_iters``).
``utils/config.py`` builds the schema of the ``method`` a YAML or the command line names, so an unknown
key fails for that method. The shared keys mean the same for every method: ``dataset.*``,
``train.max_iters``, ``train.batch_size``, ``train.seed``, ``backbone.pretrained_path``,
``work_dir.dir``, ``val.*``, ``infer.*``, ``device``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from omegaconf import DictConfig


@dataclass
class BackboneConfig:
    config: str = "mit_b1"  # encoder variant; AFA's paper uses mit_b1
    pretrained: bool = True  # load the encoder's ImageNet weights
    pretrained_path: str | None = None  # default: pretrained/<config>.pth
    drop_path_rate: float = 0.1  # encoder stochastic depth (reference)


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
    eval_iters: int = 2000  # COCO 5000
    log_iters: int = 200
    ckpt_iters: int | None = None  # periodic checkpoints/iter_<n>.pt; default eval_iters
    stop_iter: int | None = None  # end the process after this many iterations (time limits); --resume goes on
    seed: int = 1  # reference setup_seed(1)
    amp: str = "none"  # none | bf16 (not the reference)
    compile: bool = False  # torch.compile the network in place (dist.compile_network); fp32 within rounding
    tf32: bool = False  # CUDA: TF32 matmuls and cuDNN convolutions (faster, ~1e-3 from float32)
    deterministic: bool = False  # deterministic CUDA kernels where they exist (dist.set_deterministic)
    overwrite: bool = False  # train into a work dir that holds checkpoints, deleting them (not --resume)
    skip_nonfinite: bool = False  # skip (count) a step whose total loss is not finite instead of stopping
    max_nonfinite_in_a_row: int = 10  # with skip_nonfinite: stop after this many skipped steps in a row


@dataclass
class ValConfig:
    split: str = "val"  # COCO log: val_part (5,000 images)
    max_images: int | None = None  # evaluate only the first N images (quick checks)
    batch_size: int = 1  # >1: batches of same-size images (the same scores, fewer larger passes)


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


DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def _is_range(values: list[float]) -> bool:
    """``[lo, hi]`` with 0 < lo <= hi."""
    return len(values) == 2 and 0 < values[0] <= values[1]


@dataclass
class BaseConfig:
    """The shared sections; a method's schema subclasses this (``methods/<name>_config.py``)."""

    method: str = "afa"  # the method (methods/registry.py); a name or module.path:ClassName
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    val: ValConfig = field(default_factory=ValConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    work_dir: WorkDirConfig = field(default_factory=WorkDirConfig)
    device: str = "auto"  # auto | cpu | cuda | cuda:N (under torchrun each rank uses its local rank's GPU)
    dist_timeout_s: float = 900.0  # rendezvous and collectives: a dead or stuck rank fails the job

    @classmethod
    def checks(cls, cfg: DictConfig) -> list[tuple[bool, str]]:
        """(holds, message) for each cross-field rule of the shared keys; a subclass adds its own."""
        t, d = cfg.train, cfg.dataset
        return [
            (d.name in ("voc", "coco"), "dataset.name must be 'voc' or 'coco'"),
            (t.amp in ("none", "bf16"), "train.amp must be 'none' or 'bf16'"),
            (t.batch_size >= 1, "train.batch_size must be >= 1"),
            (
                DEVICE_PATTERN.match(cfg.device) is not None,
                f"device={cfg.device!r}: use auto, cpu, cuda or cuda:N",
            ),
            (d.num_classes >= 2, "dataset.num_classes must be >= 2 (background included)"),
            (d.crop_size > 0, "dataset.crop_size must be positive"),
            (_is_range(d.rescale_range), "dataset.rescale_range must be [lo, hi] with 0 < lo <= hi"),
            (d.num_workers >= 0, "dataset.num_workers must be >= 0"),
            (t.max_iters >= 1, "train.max_iters must be >= 1"),
            (
                min(t.eval_iters, t.log_iters, t.ckpt_iters or 1) >= 1,
                "train.eval_iters, log_iters, ckpt_iters must be >= 1",
            ),
            (t.stop_iter is None or t.stop_iter >= 1, "train.stop_iter must be >= 1"),
            (cfg.val.max_images is None or cfg.val.max_images >= 1, "val.max_images must be >= 1"),
            (cfg.val.batch_size >= 1, "val.batch_size must be >= 1"),
            (t.max_nonfinite_in_a_row >= 1, "train.max_nonfinite_in_a_row must be >= 1"),
            (len(cfg.infer.scales) > 0, "infer.scales must not be empty"),
        ]
