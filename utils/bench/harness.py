"""Benchmarks of the training step and its parts (behind ``scripts/benchmark.py``).

Every benchmark times the project's own functions (the engine's ``train_step``, ``validate``,
``msc_flip_inference``, PAR, the random walk) on seeded random inputs; nothing here is a copy of
them. A benchmark is a ``Subcommand`` in ``SUBCOMMANDS``: ``register`` adds one (e.g. the
regularised-loss benchmark), and ``scripts/benchmark.py`` builds its command line from the registry.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from common.profiling import record_regions

STAGES = ("forward_backward", "cam", "propagation", "par", "losses", "optimizer")


@dataclass(frozen=True)
class Subcommand:
    """A benchmark: ``run(args) -> dict`` of results; ``add_arguments`` adds its own options."""

    name: str
    help: str
    run: Callable[[argparse.Namespace], dict]
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None


SUBCOMMANDS: dict[str, Subcommand] = {}


def register(sub: Subcommand) -> Subcommand:
    """Add a benchmark to ``SUBCOMMANDS`` (a second one of the same name is an error)."""
    if sub.name in SUBCOMMANDS:
        raise ValueError(f"benchmark {sub.name!r} is registered twice")
    SUBCOMMANDS[sub.name] = sub
    return sub


def device_of(name: str) -> torch.device:
    """``auto`` → cuda when available, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA), so that timings include it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory measurement on ``device``."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device) -> int:
    """CUDA: peak allocated bytes since the last reset; CPU: the process's peak resident set size."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


def bench_config(args: argparse.Namespace, extra: list[str] = ()) -> DictConfig:
    """The method's schema defaults (VOC, the paper's settings) with the benchmark's size and speed keys."""
    from utils.config import load_config

    overrides = [
        f"method={getattr(args, 'method', 'afa')}",
        f"backbone.config={args.backbone}",
        "backbone.pretrained=false",
        f"dataset.crop_size={args.crop}",
        f"train.batch_size={args.batch}",
        f"train.amp={'bf16' if args.amp == 'bf16' else 'none'}",
        *fast_overrides(args.fast),
        *(["train.compile=true"] if getattr(args, "compile", False) else []),
        *extra,
    ]
    return load_config(None, overrides)


def fast_overrides(fast: bool) -> list[str]:
    """The documented fast options (docs/BENCHMARKS.md): no CAM passes, the CAM and affinity of the
    training forward (``cam.from_forward``; ``cam.train_mode=false`` for any pass that remains)."""
    return ["cam.train_mode=false", "cam.from_forward=true"] if fast else []


def random_images(batch: int, height: int, width: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    """(B, 3, H, W) normalised images: smooth random colour fields (PAR and CAMs see structure)."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, max(height // 32, 2), max(width // 32, 2), generator=gen)
    img = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear") * 255.0
    mean = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
    return ((img - mean) / std).to(device)


def random_batch(batch: int, crop: int, num_classes: int, device: torch.device, seed: int = 0) -> dict:
    """A training batch: images, two present classes per image, one padded box every other image."""
    gen = torch.Generator().manual_seed(seed + 1)
    cls_label = torch.zeros(batch, num_classes - 1)
    for i in range(batch):
        cls_label[i, torch.randperm(num_classes - 1, generator=gen)[:2]] = 1.0
    img_box = torch.tensor(
        [[0, crop, 0, crop] if i % 2 == 0 else [0, crop * 3 // 4, 0, crop] for i in range(batch)]
    )
    return {
        "image": random_images(batch, crop, crop, device, seed),
        "cls_label": cls_label.to(device),
        "img_box": img_box.to(device),
    }


def timed_loop(fn: Callable[[], object], iters: int, warmup: int, device: torch.device) -> dict:
    """Run ``fn`` warmup + iters times; seconds per call (median), all timings and stage medians.

    ``cpu_sec_per_iter`` is the median process CPU time per call: on a shared CPU with one thread it
    is the steadier figure for before/after comparisons (wall time includes waiting for the cores).
    """
    for _ in range(warmup):
        fn()
    synchronize(device)
    reset_peak_memory(device)
    times, cpu_times, stages = [], [], []
    with record_regions(device) as rec:
        for _ in range(iters):
            rec.reset()
            synchronize(device)
            start, cpu_start = time.perf_counter(), time.process_time()
            fn()
            synchronize(device)
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
            stages.append(dict(rec.seconds))
    names = list(STAGES) + sorted({k for s in stages for k in s} - set(STAGES))
    breakdown = {k: statistics.median(s.get(k, 0.0) for s in stages) for k in names}
    return {
        "sec_per_iter": statistics.median(times),
        "times": times,
        "cpu_sec_per_iter": statistics.median(cpu_times),
        "cpu_times": cpu_times,
        "breakdown": breakdown,
        "peak_mem_bytes": peak_memory_bytes(device),
    }


def settings_of(args: argparse.Namespace, device: torch.device) -> dict:
    """The command-line settings of a run, for the JSON record."""
    keys = ("backbone", "crop", "batch", "iters", "warmup", "amp", "fast", "compile", "phase", "threads")
    out = {k: getattr(args, k) for k in keys if hasattr(args, k)}
    out["device"] = str(device)
    out["device_name"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    out["torch"] = torch.__version__
    out["num_threads"] = torch.get_num_threads()
    return out
