"""Test-time segmentation of a dataset split or an image folder (spec §7.1-7.4), behind ``infer_seg.py``.

Per image (batch 1, eval mode, original size), ``msc_flip_inference`` runs on the image resized to
``resize_long`` on its long side and gives two sets of logits on the stride-4 grid: single scale
without flip, and the maximum over scales of the flip-averaged logits. Both are upsampled bilinearly
(align_corners=False) to the original size and arg-maxed. The optional dense-CRF stage is the
authors': the multi-scale logits upsampled to the original size, softmaxed, and refined on the uint8
RGB image with ``CRFParams()`` (10 iterations, Gaussian 3/3, bilateral 64/5/4). It runs in a pool of
worker processes that is fed while inference goes on, so CRF and network overlap and memory stays
bounded. Under torchrun each rank takes a shard of the images; the confusion matrices per mode are
summed over ranks and rank 0 writes ``report.json`` and prints a table.

Outputs under ``out_dir``: ``prediction/<id>.png`` (uint8 class ids; the CRF labels with the CRF
stage, otherwise the multi-scale labels), ``prediction_cmap/<id>.png`` (VOC palette, mode P) and, for
image folders, ``overlay/<id>.png`` (image | palette mask over the image). Unlike the authors' script
no ``.npy`` logits are saved.
"""

from __future__ import annotations

import functools
import json
import math
import multiprocessing as mp
import os
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader

from common.errors import DataError
from datasets.classes import save_label_png
from datasets.voc import class_names
from figures.visual import overlay_label, panel
from methods.base import Method
from model.cam import channel_argmax, resize
from model.inference import AUTHORS_TEST_SCALES, SegPrediction, msc_flip_inference, smallest_inference_side
from utils.evaluation.crf import CRFParams, dense_crf
from utils.evaluation.inputs import (
    ImageListDataset,
    build_split_dataset,
    list_images,
    mask_folder,
    method_and_model,
    to_uint8_image,
)
from utils.evaluation.metrics import confusion_matrix
from utils.evaluation.report import format_table, scores_report
from utils.runtime.data import build_eval_loader, shard_indices
from utils.runtime.dist import all_reduce_sum, cleanup, configure_runtime, init_distributed
from utils.runtime.progress import progress
from utils.runtime.workdir import ensure_writable

MODES = ("single_scale", "multi_scale", "multi_scale_crf")
AUTHORS_CRF = CRFParams()  # scripts/test_msc_flip.py: iter 10, pos 3/3, bilateral 64/5/4


@dataclass(frozen=True)
class InferSettings:
    """Test-time constants: scales and long side (``infer.*``), the CRF stage, and image-folder overlays."""

    num_classes: int
    scales: tuple[float, ...] = AUTHORS_TEST_SCALES
    resize_long: int | None = 512
    crf: bool = False
    crf_workers: int = 1
    crf_params: CRFParams = AUTHORS_CRF
    overlay: bool = False


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask: Slurm, cgroups, taskset), not the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_crf_workers(world_size: int = 1) -> int:
    """80 % of the usable CPUs (the authors' joblib setting), shared among this node's processes.

    The processes per node are torchrun's ``LOCAL_WORLD_SIZE`` when set, else ``world_size``.
    """
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    return max(1, int(0.8 * usable_cpus()) // max(local, 1))


# --------------------------------------------------------------------------- prediction


class ImagePrediction(NamedTuple):
    """Attributes:
    logits: the grid logits of ``msc_flip_inference`` (seg, msc_seg), each (1, C, h, w).
    single_scale: (H, W) int64 labels of the single-scale, non-flipped logits.
    multi_scale: (H, W) int64 labels of the multi-scale flip logits.
    """

    logits: SegPrediction
    single_scale: Tensor
    multi_scale: Tensor


def label_at_size(logits: Tensor, size: tuple[int, int]) -> Tensor:
    """(1, C, h, w) logits -> (H, W) int64: bilinear upsampling (align_corners=False), then argmax."""
    return channel_argmax(resize(logits.float(), size))[0]


def check_image_size(name: str, size: tuple[int, int], s: InferSettings, min_side: int) -> None:
    """Stop with a message naming the image and the keys when a pass would be smaller than the
    encoder takes (``min_side``, ``min_input_side``), instead of a convolution's error deep inside."""
    side = smallest_inference_side(size, s.scales, s.resize_long)
    if side >= min_side:
        return
    raise_to = "" if s.resize_long is None else f" (≥ {math.ceil(s.resize_long * min_side / max(side, 1))})"
    raise DataError(
        f"image {name} ({size[0]}×{size[1]}) gives a {side} px side at infer.resize_long="
        f"{s.resize_long} and scale {min((1.0, *s.scales))}; the encoder needs at least {min_side} px",
        hint=f"raise infer.resize_long{raise_to} or leave out the smallest infer.scales",
    )


@torch.no_grad()
def predict_image(
    segment: Callable[[Tensor], Tensor], image: Tensor, scales: tuple[float, ...], resize_long: int | None
) -> ImagePrediction:
    """Single- and multi-scale predictions of one (1, 3, H, W) normalised image at its own size.

    Args:
        segment: (B, 3, h, w) normalised images -> (B, C, h', w') logits (``Method.segment``).
    """
    logits = msc_flip_inference(segment, image, scales, resize_long)
    size = tuple(image.shape[-2:])
    return ImagePrediction(logits, label_at_size(logits.seg, size), label_at_size(logits.msc_seg, size))


def crf_probabilities(image: np.ndarray, logits: np.ndarray, params: CRFParams = AUTHORS_CRF) -> np.ndarray:
    """The authors' CRF stage for one image: upsample, softmax, dense CRF.

    Args:
        image: (H, W, 3) uint8 RGB at original size.
        logits: (C, h, w) multi-scale logits on any grid; bilinearly upsampled to (H, W).

    Returns:
        (C, H, W) float32 CRF marginals.
    """
    h, w = image.shape[:2]
    prob = torch.softmax(resize(torch.as_tensor(logits, dtype=torch.float32)[None], (h, w)), dim=1)[0]
    return dense_crf(image, prob.numpy(), params)


def write_outputs(out_dir: Path, name: str, label: np.ndarray, image: np.ndarray | None = None) -> None:
    """``prediction/<name>.png`` (uint8 ids), ``prediction_cmap/<name>.png`` (palette) and, given the
    (H, W, 3) uint8 image, ``overlay/<name>.png`` (image | mask over image)."""
    label = np.asarray(label, dtype=np.uint8)
    (out_dir / "prediction").mkdir(parents=True, exist_ok=True)
    Image.fromarray(label).save(out_dir / "prediction" / f"{name}.png")
    save_label_png(out_dir / "prediction_cmap" / f"{name}.png", label)
    if image is not None:
        (out_dir / "overlay").mkdir(parents=True, exist_ok=True)
        Image.fromarray(panel([image, overlay_label(image, label)])).save(out_dir / "overlay" / f"{name}.png")


@dataclass(frozen=True)
class CRFJob:
    """One image for a CRF worker: its (H, W, 3) uint8 image and (C, h, w) multi-scale logits."""

    name: str
    image: np.ndarray
    logits: np.ndarray
    out_dir: str
    overlay: bool = False


def run_crf_job(job: CRFJob, params: CRFParams) -> np.ndarray:
    """Worker: the CRF label (H, W) uint8 of one image, also written to ``job.out_dir``."""
    label = crf_probabilities(job.image, job.logits, params).argmax(axis=0).astype(np.uint8)
    write_outputs(Path(job.out_dir), job.name, label, job.image if job.overlay else None)
    return label


def _init_crf_worker() -> None:
    """A CRF worker process: one thread, ignore Ctrl-C (the parent stops the pool)."""
    torch.set_num_threads(1)


class CRFStage:
    """Dense CRF in a pool of spawned worker processes, fed during inference.

    At most ``2 · workers`` images wait at once, so memory does not grow with the split. ``finish``
    waits for the rest and returns the confusion matrix of the CRF labels against the ground truth
    handed to ``submit`` (none for images without labels).
    """

    def __init__(self, params: CRFParams, workers: int, num_classes: int, total: int, show: bool) -> None:
        """A pool of ``workers`` CRF processes scoring ``num_classes`` classes over ``total`` images."""
        self.pool = mp.get_context("spawn").Pool(workers, initializer=_init_crf_worker)
        self.run = functools.partial(run_crf_job, params=params)
        self.max_pending = 2 * workers
        self.pending: deque = deque()
        self.num_classes = num_classes
        self.hist = torch.zeros(num_classes, num_classes, dtype=torch.int64)
        self.bar = progress(total=total, desc="crf", position=1, disable=not show, leave=False)

    def submit(self, job: CRFJob, gt: Tensor | None) -> None:
        """Queue one image's CRF (and its ground truth, when known)."""
        self.pending.append((self.pool.apply_async(self.run, (job,)), gt))
        while self.pending and (len(self.pending) > self.max_pending or self.pending[0][0].ready()):
            self._collect()

    def _collect(self) -> None:
        """Write and score the finished CRF jobs, oldest first."""
        result, gt = self.pending.popleft()
        label = result.get()
        if gt is not None:
            self.hist += confusion_matrix(gt, torch.from_numpy(label), self.num_classes)
        self.bar.update()

    def finish(self) -> Tensor:
        """Wait for every job; the (C, C) confusion matrix of the CRF labels."""
        while self.pending:
            self._collect()
        self.pool.close()
        self.pool.join()
        self.bar.close()
        return self.hist

    def terminate(self) -> None:
        """Stop the pool without waiting (an error elsewhere)."""
        self.pool.terminate()
        self.bar.close()


@torch.no_grad()
def run_inference(
    method: Method,
    model: nn.Module,
    loader: DataLoader,
    s: InferSettings,
    out_dir: Path,
    has_labels: bool,
    show: bool = True,
) -> tuple[dict[str, Tensor], int]:
    """Predict, write and score every image of ``loader`` (this rank's shard).

    Returns:
        {mode: (C, C) confusion matrix} for the modes run (all zero without labels), and the number of
        images.
    """
    device = next(model.parameters()).device
    c = s.num_classes
    hists = {m: torch.zeros(c, c, dtype=torch.int64, device=device) for m in MODES[:2]}
    crf = CRFStage(s.crf_params, s.crf_workers, c, len(loader), show) if s.crf else None
    count = 0
    min_side = method.min_input_side(model)
    segment = functools.partial(method.segment, model)
    try:
        for batch in progress(loader, desc="infer", disable=not show, dynamic_ncols=True):
            check_image_size(batch["name"][0], tuple(batch["image"].shape[-2:]), s, min_side)
            pred = predict_image(segment, batch["image"].to(device), s.scales, s.resize_long)
            gt = batch["label"][0] if has_labels else None
            if gt is not None:
                hists["single_scale"] += confusion_matrix(gt.to(device), pred.single_scale, c)
                hists["multi_scale"] += confusion_matrix(gt.to(device), pred.multi_scale, c)
            image = to_uint8_image(batch["image"]) if s.crf or s.overlay else None
            if crf is not None:
                logits = pred.logits.msc_seg[0].float().cpu().numpy()
                crf.submit(CRFJob(batch["name"][0], image, logits, str(out_dir), s.overlay), gt)
            else:
                label = pred.multi_scale.cpu().numpy()
                write_outputs(out_dir, batch["name"][0], label, image if s.overlay else None)
            count += 1
        if crf is not None:
            hists["multi_scale_crf"] = crf.finish().to(device)
    except BaseException:
        if crf is not None:
            crf.terminate()
        raise
    return hists, count


# --------------------------------------------------------------------------- entry


def infer_settings(cfg: DictConfig, overlay: bool, world_size: int = 1, num_images: int = 1) -> InferSettings:
    """Settings from ``cfg.infer``; CRF workers ``infer.crf_workers`` (0: 80 % of the CPUs), at most one
    per image."""
    i = cfg.infer
    return InferSettings(
        num_classes=cfg.dataset.num_classes,
        scales=tuple(i.scales),
        resize_long=i.resize_long,
        crf=i.crf,
        crf_workers=max(1, min(i.crf_workers or default_crf_workers(world_size), num_images)),
        overlay=overlay,
    )


def infer(
    cfg: DictConfig,
    checkpoint: str | Path,
    out_dir: str | Path | None = None,
    images: str | Path | None = None,
) -> dict:
    """Run test-time inference on ``cfg.infer.split`` (or the images of a folder / list file).

    Returns:
        The report (also written to ``<out_dir>/report.json`` by rank 0).
    """
    configure_runtime()
    info = init_distributed(cfg.device)
    if images is None:
        dataset, has_labels = build_split_dataset(cfg, cfg.infer.split)
    else:
        dataset, has_labels = ImageListDataset(list_images(images), cfg.dataset.num_classes), False
    out = Path(out_dir) if out_dir else Path(cfg.work_dir.dir) / ("images" if images else cfg.infer.split)
    ensure_writable(out, "--out" if out_dir else "work_dir.dir")
    out.mkdir(parents=True, exist_ok=True)
    indices = shard_indices(len(dataset), info.rank, info.world_size, cfg.infer.max_images)
    s = infer_settings(cfg, images is not None, info.world_size, len(indices))
    loader = build_eval_loader(dataset, indices, cfg.dataset.num_workers)
    method, model = method_and_model(cfg, checkpoint, info.device)
    hists, count = run_inference(method, model, loader, s, out, has_labels, show=info.is_main)
    for hist in hists.values():
        all_reduce_sum(hist)
    count = int(all_reduce_sum(torch.tensor([count], device=info.device)).item())
    names = class_names(cfg.dataset.name_list_dir, cfg.dataset.num_classes) if has_labels else []
    report = {
        "checkpoint": str(checkpoint),
        "method": cfg.method,
        "split": None if images else cfg.infer.split,
        "images": None if images is None else str(images),
        "num_images": count,
        "has_labels": has_labels,
        "scales": list(s.scales),
        "resize_long": s.resize_long,
        "crf": asdict(s.crf_params) if s.crf else None,
        "units": "percent",  # every score (miou, pAcc, mAcc, iou) is 0..100
        "scores": scores_report(hists, names) if has_labels else None,
    }
    if info.is_main:
        (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        if has_labels:
            print(format_table(report["scores"], names))
        elif images is None:
            print(f"no ground truth in {mask_folder(dataset)}: predictions only, not scored")
        print(f"{count} images -> {out}")
    cleanup()
    return report
