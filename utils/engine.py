"""The shared training engine behind ``train_voc.py`` and ``train_coco.py`` (spec §5.6, §6, §7.1).

``train(cfg)`` is a plain loop: next batch → ``train_step`` (forward, pseudo labels, losses, step)
→ log → periodic checkpoint → periodic validation. It runs on the CPU, one GPU, or under torchrun
with DDP; with ``resume=True`` it continues from ``checkpoints/last.pt`` exactly where it stopped.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.distributed.elastic.multiprocessing.errors import record

from datasets.voc import class_names
from model.afa import AFANetwork
from model.pseudo_labels import PseudoLabelSettings
from model.weights import load_mit_pretrained
from utils.aream_step import aream_settings
from utils.checkpoint import (
    copy_atomic,
    find_resume_checkpoint,
    gather_rng_states,
    remove_stale_temporaries,
    restore_rank_rng,
    save_atomic,
)
from utils.config import save_config, training_warnings
from utils.data import (
    SeededShardSampler,
    build_eval_dataset,
    build_eval_loader,
    build_train_dataset,
    build_train_loader,
    shard_indices,
)
from utils.dist import DistInfo, cleanup, configure_runtime, init_distributed, set_deterministic
from utils.errors import ConfigError, notice
from utils.evaluate import EvalSettings, validate
from utils.logger import TensorBoard, format_scores, hold_early_records, setup_text_log
from utils.nonfinite import NonFiniteGuard
from utils.optim import build_optimizer, build_scheduler
from utils.progress import progress
from utils.tb_images import training_panel
from utils.train_step import StepResult, StepSettings, train_step, unwrap
from utils.workdir import check_work_dir, clear_checkpoints


def build_model(cfg: DictConfig) -> AFANetwork:
    """The network of ``cfg``, with the ImageNet MiT weights when ``backbone.pretrained``."""
    model = AFANetwork(
        backbone=cfg.backbone.config,
        num_classes=cfg.dataset.num_classes,
        strides=tuple(cfg.backbone.stride),
        embed_dim=cfg.model.embed_dim,
        pooling=cfg.model.pooling,
        aff_blocks=cfg.model.aff_blocks,
        drop_path_rate=cfg.backbone.drop_path_rate,
    )
    if cfg.backbone.pretrained:
        load_mit_pretrained(
            model.encoder, cfg.backbone.pretrained_path or f"pretrained/{cfg.backbone.config}.pth"
        )
    return model


def step_settings(cfg: DictConfig) -> StepSettings:
    """The per-iteration constants of ``cfg``."""
    pseudo = PseudoLabelSettings(
        cam_scales=tuple(cfg.cam.scales),
        bkg_score=cfg.cam.bkg_score,
        high_thre=cfg.cam.high_thre,
        low_thre=cfg.cam.low_thre,
        par_dilations=tuple(cfg.par.dilations),
        par_num_iter=cfg.par.num_iter,
        radius=cfg.afa.radius,
        seg_switch_iter=cfg.afa.seg_label_switch_iter,
        aff_switch_iter=cfg.afa.aff_label_switch_iter,
        cam_train_mode=cfg.cam.train_mode,
        cam_from_forward=cfg.cam.from_forward,
        ignore_index=cfg.dataset.ignore_index,
    )
    amp = torch.bfloat16 if cfg.train.amp == "bf16" else None
    weights = {"cls": cfg.loss.cls, "seg": cfg.loss.seg, "aff": cfg.loss.aff, "reg": cfg.loss.reg}
    aream = aream_settings(cfg)
    if aream is not None:
        weights = aream.loss_weights(weights)
    return StepSettings(
        pseudo=pseudo, cam_iters=cfg.train.cam_iters, loss_weights=weights, amp_dtype=amp, aream=aream
    )


def eval_settings(cfg: DictConfig) -> EvalSettings:
    return EvalSettings(
        cfg.dataset.num_classes, tuple(cfg.cam.scales), cfg.cam.bkg_score, radius=cfg.afa.radius
    )


@dataclass
class Run:
    """Everything the loop mutates, in one place (what a checkpoint stores)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    sampler: SeededShardSampler
    step: int = 0  # completed iterations = the next 0-based n_iter
    epoch: int = 0
    batch_in_epoch: int = 0
    best_miou: float = -1.0
    best_step: int = -1
    nonfinite_skips: int = 0  # steps skipped by train.skip_nonfinite over the whole run, resumes included


def checkpoint_state(run: Run, cfg: DictConfig, rng: list[dict]) -> dict:
    """What ``restore`` reads back; ``rng`` holds every rank's generator states (``gather_rng_states``)."""
    return {
        "model": unwrap(run.model).state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "step": run.step,
        "epoch": run.epoch,
        "batch_in_epoch": run.batch_in_epoch,
        "best_miou": run.best_miou,
        "best_step": run.best_step,
        "nonfinite_skips": run.nonfinite_skips,
        "rng": rng,
        "config": OmegaConf.to_yaml(cfg, resolve=True),
    }


def restore(run: Run, directory: Path, info: DistInfo) -> Path:
    """Load the newest intact checkpoint of ``directory`` into ``run``; returns its path.

    Weights, optimiser, schedule, data position, and this rank's own RNG states. ``last.pt`` unless
    it is torn or missing, then the newest intact ``iter_<n>.pt`` (logged as a warning).
    """
    if info.is_main:
        remove_stale_temporaries(directory)  # left by a process killed while writing
    path, state = find_resume_checkpoint(directory)  # loaded on the CPU, as RNG states must be
    unwrap(run.model).load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.step, run.epoch, run.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
    run.best_miou, run.best_step = state["best_miou"], state["best_step"]
    run.nonfinite_skips = state.get("nonfinite_skips", 0)  # absent from checkpoints before it was kept
    restore_rank_rng(state["rng"], info.rank, info.world_size, info.device)
    return path


def batches(run: Run, loader: torch.utils.data.DataLoader):
    """Endless batches; a new shuffled epoch each time the sampler is exhausted (resumes mid-epoch)."""
    run.sampler.set_epoch(run.epoch, run.batch_in_epoch)
    while True:
        for batch in loader:
            run.batch_in_epoch += 1
            yield batch
        run.epoch, run.batch_in_epoch = run.epoch + 1, 0
        run.sampler.set_epoch(run.epoch)


def setup_run(cfg: DictConfig, info: DistInfo) -> tuple[Run, torch.utils.data.DataLoader]:
    """Seeded model, optimiser, schedule and training data of this process."""
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg).to(info.device)
    if info.distributed:
        if info.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ids = [info.device.index] if info.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    model.train()
    o, s = cfg.optimizer, cfg.scheduler
    optimizer = build_optimizer(
        unwrap(model).param_groups(),
        o.learning_rate,
        o.weight_decay,
        tuple(o.betas),
        head_lr_mult=o.head_lr_mult,
    )
    scheduler = build_scheduler(optimizer, s.warmup_iter, cfg.train.max_iters, s.warmup_ratio, s.power)
    if cfg.train.batch_size % info.world_size:
        raise ConfigError(
            f"train.batch_size={cfg.train.batch_size} is not divisible by {info.world_size} processes"
        )
    dataset = build_train_dataset(cfg)
    per_rank = cfg.train.batch_size // info.world_size
    sampler = SeededShardSampler(len(dataset), per_rank, info.rank, info.world_size, cfg.train.seed)
    loader = build_train_loader(dataset, sampler, cfg.dataset.num_workers)
    return Run(model, optimizer, scheduler, sampler), loader


def log_step(
    run: Run, result: StepResult, batch: dict, tb: TensorBoard, logger, seconds: float, names: list[str]
) -> None:
    """Losses, learning rate and mean seconds per iteration of the window to the log and TensorBoard
    (with the captioned picture of the first crop; ``names`` are the class names, background first)."""
    losses = {k: v.item() for k, v in result.losses.items()}
    lrs = [g["lr"] for g in run.optimizer.param_groups]
    logger.info(
        f"iter {run.step}  "
        + "  ".join(f"{k} {v:.4f}" if abs(v) >= 1e-3 or v == 0 else f"{k} {v:.3e}" for k, v in losses.items())
        + f"  total {result.total.item():.4f}  lr {lrs[0]:.3e}  {seconds:.2f}s/it"
    )
    tb.scalars(
        {f"train/{k}_loss": v for k, v in losses.items()} | {"train/loss": result.total.item()}, run.step
    )
    tb.scalars(
        {"train/lr_backbone": lrs[0], "train/lr_head": lrs[2], "train/sec_per_iter": seconds}, run.step
    )
    if tb.writer is not None:
        tb.image("train/panel", training_panel(batch, result, unwrap(run.model), names), run.step)


def evaluate_and_keep_best(
    run: Run, cfg: DictConfig, loader, info: DistInfo, tb: TensorBoard, logger
) -> dict:
    """Validate, log the four metrics, and copy the checkpoint to best.pt when seg mIoU improves."""
    metrics = validate(unwrap(run.model), loader, eval_settings(cfg), info.device, show=info.is_main)
    names = class_names(cfg.dataset.name_list_dir, cfg.dataset.num_classes)
    logger.info(
        f"validation at iter {run.step} on {metrics['num_images']} images: cls F1 {metrics['cls_f1']:.4f}"
    )
    for key in ("cam", "aff", "seg"):
        logger.info(format_scores(key, metrics[key], names if key == "seg" else None))
        tb.scalars({f"val/{key}_miou": 100 * metrics[key]["miou"]}, run.step)
    tb.scalars({"val/cls_f1": metrics["cls_f1"]}, run.step)
    if metrics["seg"]["miou"] > run.best_miou:  # the same on every rank (all-reduced metrics)
        run.best_miou, run.best_step = metrics["seg"]["miou"], run.step
        rng = gather_rng_states(info.device)  # a collective: every rank
        if info.is_main:
            save_atomic(checkpoint_state(run, cfg, rng), ckpt_dir(cfg) / "best.pt")
    return metrics


def ckpt_dir(cfg: DictConfig) -> Path:
    return Path(cfg.work_dir.dir) / cfg.work_dir.ckpt_dir


def save_checkpoints(run: Run, cfg: DictConfig, rng: list[dict], periodic: bool) -> None:
    """``last.pt`` always; also ``iter_<n>.pt`` when ``periodic`` (both atomic)."""
    last = ckpt_dir(cfg) / "last.pt"
    save_atomic(checkpoint_state(run, cfg, rng), last)
    if periodic:
        copy_atomic(last, ckpt_dir(cfg) / f"iter_{run.step}.pt")


def train(cfg: DictConfig, resume: bool = False) -> dict:
    """Train as configured; returns the last validation metrics (empty if none ran)."""
    configure_runtime(tf32=cfg.train.tf32)
    set_deterministic(cfg.train.deterministic)
    info = init_distributed(cfg.device, cfg.dist_timeout_s)
    early = hold_early_records()  # warnings of the checks and the resume, for train.log
    warnings = training_warnings(cfg) + check_work_dir(cfg, resume)  # nothing is written before these
    run, loader = setup_run(cfg, info)
    resumed_from = restore(run, ckpt_dir(cfg), info) if resume else None
    val_set = build_eval_dataset(cfg, cfg.val.split)
    work = Path(cfg.work_dir.dir)  # the run is sure to start: now the work directory is written
    logger = setup_text_log(work / "train.log", info.is_main, early)
    tb = TensorBoard(work / cfg.work_dir.tb_dir if info.is_main else None)
    if info.is_main:
        for line in warnings:
            notice(line)
        if cfg.train.overwrite and not resume and clear_checkpoints(cfg):
            logger.info(f"train.overwrite=true: deleted the old checkpoints of {ckpt_dir(cfg)}")
        save_config(cfg, work / "config.yaml")
    if resumed_from is not None:
        logger.info(f"resumed from {resumed_from} at iteration {run.step}")
    val_loader = build_eval_loader(
        val_set,
        shard_indices(len(val_set), info.rank, info.world_size, cfg.val.max_images),
        cfg.dataset.num_workers,
        cfg.val.batch_size,
    )
    settings, t = step_settings(cfg), cfg.train
    ckpt_iters = t.ckpt_iters or t.eval_iters
    metrics: dict = {}
    logger.info(f"training {cfg.backbone.config} on {info.world_size} process(es), device {info.device}")
    data = batches(run, loader)
    guard = NonFiniteGuard(t.skip_nonfinite, t.max_nonfinite_in_a_row)
    guard.skipped = run.nonfinite_skips  # a resumed run goes on counting
    names = class_names(cfg.dataset.name_list_dir, cfg.dataset.num_classes)
    steps = range(run.step, t.max_iters)
    bar = progress(steps, desc="train", initial=run.step, total=t.max_iters, disable=not info.is_main)
    tic = time.perf_counter()  # start of the current logging window
    for n_iter in bar:
        batch = {
            k: v.to(info.device, non_blocking=True) if torch.is_tensor(v) else v
            for k, v in next(data).items()
        }
        step = functools.partial(train_step, run.model, run.optimizer, run.scheduler, batch, n_iter, settings)
        result = guard.step(step, run.scheduler)
        run.step = n_iter + 1
        if result is None:
            run.nonfinite_skips = guard.skipped
            logger.warning(f"skipped step ({guard.skipped} so far, train.skip_nonfinite): {guard.last}")
            tb.scalars({"train/nonfinite_skips": guard.skipped}, run.step)
        elif run.step % t.log_iters == 0 and info.is_main:  # loss values leave the device only here
            bar.set_postfix({k: f"{v.item():.3f}" for k, v in result.losses.items()})
            seconds = (time.perf_counter() - tic) / t.log_iters
            log_step(run, result, batch, tb, logger, seconds, names)
        del result, batch  # the next step's peak memory holds none of this step's tensors
        if run.step % t.eval_iters == 0 or run.step == t.max_iters:
            metrics = evaluate_and_keep_best(run, cfg, val_loader, info, tb, logger)
        stopping = run.step == t.stop_iter
        if run.step % ckpt_iters == 0 or run.step == t.max_iters or stopping:
            rng = gather_rng_states(info.device)  # a collective: every rank
            if info.is_main:
                save_checkpoints(run, cfg, rng, periodic=run.step % ckpt_iters == 0)
        if stopping:
            logger.info(f"stopping at iteration {run.step} (train.stop_iter); continue with --resume")
            break
        if run.step % t.log_iters == 0:
            tic = time.perf_counter()  # validation and checkpoints stay out of the s/it figure
    if run.best_step < 0:
        logger.info(f"done at iteration {run.step}: no validation ran yet (train.eval_iters), no best.pt")
    else:
        logger.info(f"done: best seg mIoU {100 * run.best_miou:.2f} % at iteration {run.best_step}")
    if guard.skipped:
        logger.info(f"{guard.skipped} non-finite step(s) skipped (train.skip_nonfinite)")
    tb.close()
    cleanup()
    return metrics


def parse_args(argv: list[str] | None, default_config: str) -> tuple[str, bool, list[str]]:
    """``--config FILE``, ``--resume`` and ``key=value`` overrides, in any order."""
    import argparse

    from utils.cli import add_debug_flag, split_overrides

    parser = argparse.ArgumentParser(
        description="Train AFA (Ru et al., CVPR 2022).", epilog="other arguments: key=value config overrides"
    )
    parser.add_argument("--config", default=default_config, help=f"YAML config (default {default_config})")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from <work_dir.dir>/checkpoints/last.pt (or the newest intact iter_<n>.pt)",
    )
    add_debug_flag(parser)
    args, overrides = split_overrides(parser, argv)
    return args.config, args.resume, overrides


@record  # under torchrun, a failing rank's traceback is reported as the job's root cause
def main(argv: list[str] | None = None, default_config: str = "configs/voc.yaml") -> dict:
    """Command-line entry shared by ``train_voc.py`` and ``train_coco.py``."""
    from utils.config import load_config

    config, resume, overrides = parse_args(argv, default_config)
    return train(load_config(config, overrides), resume=resume)


def cli(default_config: str) -> int:
    """``main`` behind ``utils.cli.run``: one-line errors and an exit status."""
    from utils.cli import run

    return run(lambda argv: main(argv, default_config))
