"""Process setup: one CPU or GPU process, or torchrun DDP from its environment variables.

Following nanoGPT: torchrun sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; without them the run
is a single process with no process group (CPU or one GPU). The backend is NCCL on CUDA and gloo
on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process runs. ``is_main`` marks the process that logs and writes checkpoints."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` → the local GPU when CUDA is available, else the CPU; ``cuda`` → this rank's GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", local_rank)
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    return device


def init_distributed(device: str = "auto") -> DistInfo:
    """Initialise the process group when launched by torchrun with WORLD_SIZE > 1."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank, world_size, local_rank, dev)


def configure_runtime(tf32: bool = False) -> None:
    """Process-wide numerics: flush subnormal floats to zero on the CPU; TF32 on CUDA only if asked.

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


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all processes (in place; a no-op without a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
