"""The shared training engine behind ``train_voc.py`` and ``train_coco.py`` (spec §5.6, §6, §7.1).

``train(cfg)`` is a plain loop: next batch → ``train_step`` (forward, pseudo labels, losses, step)
→ log → periodic checkpoint → periodic validation. It runs on the CPU, one GPU, or under torchrun
with DDP; with ``resume=True`` it continues from ``checkpoints/last.pt`` exactly where it stopped.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.distributed.elastic.multiprocessing.errors import record

from common.errors import ConfigError, notice
from datasets.voc import class_names
from methods.base import Method, StepResult, unwrap
from methods.registry import build_method
from utils.config import save_config
from utils.evaluation.validate import validate
from utils.runtime.checkpoint import (
    copy_atomic,
    find_resume_checkpoint,
    gather_rng_states,
    remove_stale_temporaries,
    restore_rank_rng,
    save_atomic,
)
from utils.runtime.data import (
    SeededShardSampler,
    build_eval_dataset,
    build_eval_loader,
    build_train_loader,
    checked_train_dataset,
    shard_indices,
)
from utils.runtime.dist import (
    DistInfo,
    cleanup,
    compile_network,
    configure_runtime,
    init_distributed,
    set_deterministic,
)
from utils.runtime.logger import TensorBoard, format_scores, hold_early_records, setup_text_log
from utils.runtime.progress import progress
from utils.runtime.workdir import check_work_dir, checkpoint_dir, clear_checkpoints
from utils.train.nonfinite import NonFiniteGuard
from utils.train.step import train_step


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
        "method": cfg.method,
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


def setup_run(method: Method, cfg: DictConfig, info: DistInfo) -> tuple[Run, torch.utils.data.DataLoader]:
    """Seeded model, optimiser, schedule and training data of this process."""
    torch.manual_seed(cfg.train.seed)
    model = method.build_network().to(info.device)
    if cfg.train.compile:
        compile_network(model, info.device)
    if info.distributed:
        if info.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ids = [info.device.index] if info.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    model.train()
    optimizer, scheduler = method.configure_optimizers(unwrap(model))
    if cfg.train.batch_size % info.world_size:
        raise ConfigError(
            f"train.batch_size={cfg.train.batch_size} is not divisible by {info.world_size} processes"
        )
    dataset = checked_train_dataset(method)
    per_rank = cfg.train.batch_size // info.world_size
    sampler = SeededShardSampler(len(dataset), per_rank, info.rank, info.world_size, cfg.train.seed)
    loader = build_train_loader(dataset, sampler, cfg.dataset.num_workers)
    return Run(model, optimizer, scheduler, sampler), loader


@dataclass
class Session:
    """What the loop reads but does not change: the method, config, process, logs and validation data."""

    method: Method
    cfg: DictConfig
    info: DistInfo
    logger: logging.Logger
    tb: TensorBoard
    val_loader: torch.utils.data.DataLoader
    class_names: list[str]


def log_step(run: Run, result: StepResult, batch: dict, session: Session, seconds: float) -> None:
    """Losses, learning rate and mean seconds per iteration of the window to the log and TensorBoard
    (with the method's picture of the first crop, if it draws one)."""
    losses = {k: v.item() for k, v in result.losses.items()}
    lrs = [g["lr"] for g in run.optimizer.param_groups]
    session.logger.info(
        f"iter {run.step}  "
        + "  ".join(f"{k} {v:.4f}" if abs(v) >= 1e-3 or v == 0 else f"{k} {v:.3e}" for k, v in losses.items())
        + f"  total {result.total.item():.4f}  lr {lrs[0]:.3e}  {seconds:.2f}s/it"
    )
    tb = session.tb
    tb.scalars(
        {f"train/{k}_loss": v for k, v in losses.items()} | {"train/loss": result.total.item()}, run.step
    )
    tb.scalars(
        {"train/lr_backbone": lrs[0], "train/lr_head": lrs[-1], "train/sec_per_iter": seconds}, run.step
    )
    if tb.writer is not None:
        picture = session.method.training_panel(batch, result, unwrap(run.model), session.class_names)
        if picture is not None:
            tb.image("train/panel", picture, run.step)


def evaluate_and_keep_best(run: Run, session: Session) -> dict:
    """Validate, log the method's metrics, and copy the checkpoint to best.pt when the mIoU of the
    method's ``best_map`` improves."""
    method, info, logger = session.method, session.info, session.logger
    num_classes = session.cfg.dataset.num_classes
    metrics = validate(
        method, unwrap(run.model), session.val_loader, num_classes, info.device, show=info.is_main
    )
    f1 = f": cls F1 {metrics['cls_f1']:.4f}" if "cls_f1" in metrics else ""
    scores = "".join(f", {k} {v:.4f}" for k, v in metrics.get("image_scores", {}).items())
    logger.info(f"validation at iter {run.step} on {metrics['num_images']} images{f1}{scores}")
    for key in method.validation_maps:
        names = session.class_names if key == method.best_map else None
        logger.info(format_scores(key, metrics[key], names))
        session.tb.scalars({f"val/{key}_miou": 100 * metrics[key]["miou"]}, run.step)
    if "cls_f1" in metrics:
        session.tb.scalars({"val/cls_f1": metrics["cls_f1"]}, run.step)
    best = metrics[method.best_map]["miou"]
    if best > run.best_miou:  # the same on every rank (all-reduced metrics)
        run.best_miou, run.best_step = best, run.step
        rng = gather_rng_states(info.device)  # a collective: every rank
        if info.is_main:
            save_atomic(checkpoint_state(run, session.cfg, rng), checkpoint_dir(session.cfg) / "best.pt")
    return metrics


def save_checkpoints(run: Run, cfg: DictConfig, rng: list[dict], periodic: bool) -> None:
    """``last.pt`` always; also ``iter_<n>.pt`` when ``periodic`` (both atomic)."""
    last = checkpoint_dir(cfg) / "last.pt"
    save_atomic(checkpoint_state(run, cfg, rng), last)
    if periodic:
        copy_atomic(last, checkpoint_dir(cfg) / f"iter_{run.step}.pt")


def start(cfg: DictConfig, resume: bool) -> tuple[Run, torch.utils.data.DataLoader, Session]:
    """Checks, the run (restored with ``resume``), the work directory, logs and validation data.

    Nothing is written before the checks and the restore have passed.
    """
    configure_runtime(tf32=cfg.train.tf32)
    set_deterministic(cfg.train.deterministic)
    info = init_distributed(cfg.device, cfg.dist_timeout_s)
    early = hold_early_records()  # warnings of the checks and the resume, for train.log
    method = build_method(cfg)
    warnings = method.training_warnings() + check_work_dir(cfg, resume)
    run, loader = setup_run(method, cfg, info)
    resumed_from = restore(run, checkpoint_dir(cfg), info) if resume else None
    val_set = build_eval_dataset(cfg, cfg.val.split)
    work = Path(cfg.work_dir.dir)  # the run is sure to start: now the work directory is written
    logger = setup_text_log(work / "train.log", info.is_main, early)
    tb = TensorBoard(work / cfg.work_dir.tb_dir if info.is_main else None)
    if info.is_main:
        for line in warnings:
            notice(line)
        if cfg.train.overwrite and not resume and clear_checkpoints(cfg):
            logger.info(f"train.overwrite=true: deleted the old checkpoints of {checkpoint_dir(cfg)}")
        save_config(cfg, work / "config.yaml")
    if resumed_from is not None:
        logger.info(f"resumed from {resumed_from} at iteration {run.step}")
    for line in method.setup_lines():
        logger.info(line)
    val_loader = build_eval_loader(
        val_set,
        shard_indices(len(val_set), info.rank, info.world_size, cfg.val.max_images),
        cfg.dataset.num_workers,
        cfg.val.batch_size,
    )
    names = class_names(cfg.dataset.name_list_dir, cfg.dataset.num_classes)
    return run, loader, Session(method, cfg, info, logger, tb, val_loader, names)


def finish(run: Run, session: Session, skipped: int) -> None:
    """The closing lines of the log; closes TensorBoard and the process group."""
    logger = session.logger
    if run.best_step < 0:
        logger.info(f"done at iteration {run.step}: no validation ran yet (train.eval_iters), no best.pt")
    else:
        best = f"{session.method.best_map} mIoU {100 * run.best_miou:.2f} %"
        logger.info(f"done: best {best} at iteration {run.best_step}")
    if skipped:
        logger.info(f"{skipped} non-finite step(s) skipped (train.skip_nonfinite)")
    session.tb.close()
    cleanup()


def train(cfg: DictConfig, resume: bool = False) -> dict:
    """Train as configured; returns the last validation metrics (empty if none ran)."""
    run, loader, session = start(cfg, resume)
    method, info, logger, t = session.method, session.info, session.logger, cfg.train
    ckpt_iters = t.ckpt_iters or t.eval_iters
    metrics: dict = {}
    logger.info(f"training {cfg.backbone.config} on {info.world_size} process(es), device {info.device}")
    data = batches(run, loader)
    guard = NonFiniteGuard(t.skip_nonfinite, t.max_nonfinite_in_a_row)
    guard.skipped = run.nonfinite_skips  # a resumed run goes on counting
    steps = range(run.step, t.max_iters)
    bar = progress(steps, desc="train", initial=run.step, total=t.max_iters, disable=not info.is_main)
    tic = time.perf_counter()  # start of the current logging window
    for n_iter in bar:
        batch = {
            k: v.to(info.device, non_blocking=True) if torch.is_tensor(v) else v
            for k, v in next(data).items()
        }
        step = functools.partial(train_step, method, run.model, run.optimizer, run.scheduler, batch, n_iter)
        result = guard.step(step, run.scheduler)
        run.step = n_iter + 1
        if result is None:
            run.nonfinite_skips = guard.skipped
            logger.warning(f"skipped step ({guard.skipped} so far, train.skip_nonfinite): {guard.last}")
            session.tb.scalars({"train/nonfinite_skips": guard.skipped}, run.step)
        elif run.step % t.log_iters == 0 and info.is_main:  # loss values leave the device only here
            bar.set_postfix({k: f"{v.item():.3f}" for k, v in result.losses.items()})
            log_step(run, result, batch, session, (time.perf_counter() - tic) / t.log_iters)
        del result, batch  # the next step's peak memory holds none of this step's tensors
        if run.step % t.eval_iters == 0 or run.step == t.max_iters:
            metrics = evaluate_and_keep_best(run, session)
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
    finish(run, session, guard.skipped)
    return metrics


def parse_args(argv: list[str] | None, default_config: str) -> tuple[str, bool, list[str]]:
    """``--config FILE``, ``--resume`` and ``key=value`` overrides, in any order."""
    import argparse

    from utils.cli import add_debug_flag, split_overrides

    parser = argparse.ArgumentParser(
        description="Train a method (config key method, default afa: Ru et al., CVPR 2022).",
        epilog="other arguments: key=value config overrides",
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
