"""Process setup: one CPU or GPU process, or torchrun DDP from its environment variables.

Following nanoGPT: torchrun sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; without them the run
is a single process with no process group (CPU or one GPU). The backend is NCCL on CUDA and gloo
on CPU.
"""

from __future__ import annotations

import ctypes
import datetime
import logging
import os
import platform
import shutil
from dataclasses import dataclass

import torch
import torch.distributed as dist

from common.errors import ConfigError

LOG = logging.getLogger("afa")


@dataclass(frozen=True)
class DistInfo:
    """Where this process runs. ``is_main`` marks the process that logs and writes checkpoints."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes logs and checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0, under_launcher: bool = False) -> torch.device:
    """The device of this process, checked now rather than at the first CUDA call.

    ``auto`` → this rank's GPU when CUDA is available, else the CPU; ``cuda`` → this rank's GPU
    (``cuda:<local_rank>``). ``cuda:N`` names a GPU for a single process; under torchrun
    (``under_launcher``) each process takes its local rank's GPU instead, with a warning when N
    differs, since every rank would otherwise share GPU N.

    Raises:
        ConfigError: a device name other than auto/cpu/cuda/cuda:N, or a GPU that is not there.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ConfigError(f"device={name!r} is not a device", hint="use device=auto, cpu, cuda or cuda:N")
    device = torch.device(name)
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise ConfigError(
            f"device={name!r} requested but CUDA is not available (torch {torch.__version__}, "
            f"CUDA build {torch.version.cuda or 'none'})",
            hint="use device=cpu, or install a CUDA build of torch",
        )
    index = local_rank if device.index is None or under_launcher else device.index
    if under_launcher and device.index is not None and device.index != local_rank:
        LOG.warning(f"device={name!r} under torchrun: local rank {local_rank} uses cuda:{local_rank}")
    if index >= torch.cuda.device_count():
        raise ConfigError(
            f"cuda:{index} requested (local rank {local_rank}) but only "
            f"{torch.cuda.device_count()} GPU(s) are visible (CUDA_VISIBLE_DEVICES="
            f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})",
            hint="use device=cpu or a visible GPU",
        )
    return torch.device("cuda", index)


def init_distributed(device: str = "auto", timeout_s: float = 900.0) -> DistInfo:
    """Initialise the process group when launched by torchrun with WORLD_SIZE > 1.

    ``timeout_s`` bounds the rendezvous and every collective: a rank that dies or stalls makes
    the others fail after at most this long instead of waiting forever (torchrun itself stops the
    other ranks as soon as one exits with an error).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank, under_launcher="LOCAL_RANK" in os.environ)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if dev.type == "cuda" else "gloo",
            timeout=datetime.timedelta(seconds=timeout_s),
        )
    return DistInfo(rank, world_size, local_rank, dev)


def set_deterministic(enabled: bool) -> None:
    """``train.deterministic``: deterministic kernels where PyTorch has them, on CPU and CUDA.

    Sets ``torch.use_deterministic_algorithms`` (``warn_only``: bilinear upsampling's backward, used
    by the losses, has no deterministic CUDA kernel and only warns), cuDNN's deterministic mode
    without autotuning, and ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (required by deterministic cuBLAS;
    must be set before the first cuBLAS call, so this runs before the model is built). On the CPU
    our training is already bit-reproducible without it.
    """
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = False


def configure_runtime(tf32: bool = False) -> None:
    """Process-wide numerics: flush subnormal floats to zero on the CPU; TF32 on CUDA only if asked;
    large CPU blocks kept in the heap (``retain_freed_memory``).

    Random-walk and PAR maps contain values below 1e-38 that the CPU processes tens of times slower
    than normal floats (one training step went from 8.5 s to 0.6 s on two cores). Flushing changes
    results by less than 1e-38; the golden cases pass either way (docs/DEVIATIONS.md).

    Args:
        tf32: allow TensorFloat-32 in CUDA matmuls and cuDNN convolutions (``train.tf32``): faster
            on Ampere and later, ~1e-3 relative difference from float32. Off by default, also for
            cuDNN, whose PyTorch default is on.
    """
    torch.set_flush_denormal(True)
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    retain_freed_memory()


def compile_network(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``train.compile``: compile the network's ``forward`` in place with ``torch.compile`` (inductor).

    In place (``nn.Module.compile``), so state-dict keys, checkpoints and DDP wrapping are unchanged;
    only calls of the module itself are compiled (a method's other entry points, e.g. MCTformer's
    ``forward_attention`` for seeds, stay eager). Random ops keep eager's generator and draws
    (``fallback_random``): drop-path masks, and so exact resume, are those of the eager run; results
    differ from eager by float rounding only. The first iterations are slow (compilation: ~1-2 min
    for DeiT-S forward + backward on two CPU cores).

    Raises:
        ConfigError: on a CPU without a C++ compiler (inductor writes and builds C++ there).
    """
    if device.type == "cpu" and not any(
        shutil.which(c) for c in (os.environ.get("CXX", "g++"), "c++", "clang++")
    ):
        raise ConfigError(
            "train.compile=true on the CPU needs a C++ compiler (g++ or clang++); none was found"
        )
    import torch._inductor.config as inductor_config

    inductor_config.fallback_random = True
    model.compile()
    return model


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_USER_MALLOC_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def retain_freed_memory(mmap_threshold: int = 512 << 20, trim_threshold: int = 1 << 30) -> bool:
    """Serve large CPU tensors from the heap and keep freed memory for the next step (glibc only).

    By default glibc maps every block above 32 MiB (stage 1 of a 1.5× CAM pass holds several) with
    ``mmap`` and unmaps it when freed, and returns the heap's free top to the system, so each step
    page-faults those tensors in again. Here blocks up to ``mmap_threshold`` come from the heap and up
    to ``trim_threshold`` of freed memory is kept: the same peak memory, no faults once the first
    steps have grown the heap (a CPU training step ~8 % faster here, docs/BENCHMARKS.md). Numbers are
    unchanged. Skipped on other C libraries and when the user sets glibc's ``MALLOC_*_`` or
    ``GLIBC_TUNABLES`` malloc variables (theirs win).

    Returns:
        True when the settings were applied.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if any(k in os.environ for k in _USER_MALLOC_SETTINGS) or "glibc.malloc" in os.environ.get(
        "GLIBC_TUNABLES", ""
    ):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    applied = libc.mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))
    return bool(applied and libc.mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)))


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all processes (in place; a no-op without a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    """Wait for every rank (nothing to wait for in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    """End the process group, after a barrier: it drains gloo's work queue, so that no collective's
    work object (the last checkpoint's RNG all-gather) is still to be freed by gloo's thread when the
    DDP reducer drops the group; that free needs the GIL, which the reducer's destructor holds while it
    joins that thread (a shutdown deadlock seen once in CI)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
