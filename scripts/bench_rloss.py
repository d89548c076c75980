"""Time the regularised loss: the lattice filter, the whole loss (forward + backward), its step share.

    python scripts/bench_rloss.py [--device cpu|cuda] [--batch 2] [--crop 512] [--classes 21]
                                  [--repeats 3] [--step] [--backbone mit_b1] [--embed-dim 256]
                                  [--threads N]

Prints one JSON object. ``filter_s``: ``bilateral_filter`` on (batch, classes, crop/2, crop/2), the
downscaled grid the loss filters; ``loss_s``: ``regularised_loss`` forward + backward from crop-size
logits (softmax, downscale, filter, hand-written backward, softmax backward). With ``--step``, one
training step (``train_step``, past the warm phase, random network and data) with and without the
term, interleaved, and the share the term adds: ``reg_share_of_step`` = (on − off) / on, and the
steadier ``loss_s_over_step_on`` where step-time noise exceeds the difference. Medians of
``--repeats`` runs after one warm-up.
``bench(...)`` is the reusable entry (the ``rloss`` subcommand of a benchmark script can call it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch

from methods.afa import AFA, StepSettings
from methods.optim import build_optimizer, build_scheduler
from model.afa import AFANetwork
from model.lattice import bilateral_filter
from model.rloss import denormalize_float, regularised_loss
from utils.runtime.dist import configure_runtime
from utils.train.step import train_step


def _timed(fn: Callable[[], object], device: torch.device, repeats: int, warmup: bool = True) -> list[float]:
    """Seconds of each of ``repeats`` calls, after one warm-up call (device synchronised)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if warmup:
        fn()
        sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


def _inputs(batch: int, classes: int, crop: int, device: torch.device, seed: int = 0):
    """An image (normalised: smooth regions plus pixel noise), logits, boxes and labels at crop size."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randn(batch, 3, crop // 32, crop // 32, generator=gen)
    x = torch.nn.functional.interpolate(coarse, size=(crop, crop), mode="bilinear")
    x = (x + 0.15 * torch.randn(x.shape, generator=gen)).to(device)
    logits = torch.randn(batch, classes, crop // 4, crop // 4, generator=gen)
    logits = torch.nn.functional.interpolate(logits, size=(crop, crop), mode="bilinear").to(device)
    box = torch.tensor([[0, crop, 0, crop]] * batch, device=device)
    label = torch.randint(0, classes, (batch, crop, crop), generator=gen).to(device)
    return x, logits, box, label


def _step_times(
    batch: int, classes: int, crop: int, device: torch.device, repeats: int, backbone: str, embed_dim: int
) -> dict[str, list[float]]:
    """Interleaved train_step seconds without / with L_reg (weight 0.01), past the warm phase."""
    torch.manual_seed(0)
    model = AFANetwork(backbone, num_classes=classes, embed_dim=embed_dim).to(device).train()
    opt = build_optimizer(model.param_groups(), 6e-5)
    sched = build_scheduler(opt, 1500, 20000)
    x, _, box, _ = _inputs(batch, classes, crop, device)
    cls_label = (torch.rand(batch, classes - 1, generator=torch.Generator().manual_seed(1)) < 0.2).float()
    cls_label[:, 0] = 1
    data = {"image": x, "cls_label": cls_label.to(device), "img_box": box}
    off = StepSettings(cam_iters=0)
    on = StepSettings(cam_iters=0, loss_weights=off.loss_weights | {"reg": 0.01})
    methods = {"off": AFA.from_settings(off), "on": AFA.from_settings(on)}
    runs = {k: (lambda m=m: train_step(m, model, opt, sched, data, 10)) for k, m in methods.items()}
    for run in runs.values():
        _timed(run, device, 0)  # warm-up
    times: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(repeats):
        for key, run in runs.items():
            times[key] += _timed(run, device, 1, warmup=False)
    return times


def bench(
    device: str = "cpu",
    batch: int = 2,
    classes: int = 21,
    crop: int = 512,
    repeats: int = 3,
    step: bool = False,
    backbone: str = "mit_b1",
    embed_dim: int = 256,
) -> dict:
    """The figures as a dict (seconds are medians); see the module docstring."""
    dev = torch.device(device)
    x, logits, box, label = _inputs(batch, classes, crop, dev)
    small = crop // 2
    image = denormalize_float(x)[:, :, ::2, ::2]
    probs = torch.softmax(logits[:, :, ::2, ::2], dim=1).contiguous()

    def filter_only():
        """One bilateral filter of the half-resolution probabilities."""
        bilateral_filter(image, probs, 15.0, 50.0)

    def loss_fwd_bwd():
        """One regularised-loss forward and backward."""
        leaf = logits.detach().requires_grad_(True)
        regularised_loss(leaf, x, box, label).backward()

    result = {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
        "grid": [batch, classes, small, small],
        "filter_s": statistics.median(_timed(filter_only, dev, repeats)),
        "loss_s": statistics.median(_timed(loss_fwd_bwd, dev, repeats)),
    }
    if step:
        times = _step_times(batch, classes, crop, dev, repeats, backbone, embed_dim)
        off, on = statistics.median(times["off"]), statistics.median(times["on"])
        result |= {"backbone": backbone, "embed_dim": embed_dim, "step_off_s": off, "step_on_s": on}
        result |= {"reg_share_of_step": (on - off) / on, "loss_s_over_step_on": result["loss_s"] / on}
        result["step_times"] = times
    return result


def main(argv: list[str] | None = None) -> None:
    """Run the timings of the command line (``argv``) and print them."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--crop", type=int, default=512, help="crop size; the loss filters crop/2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--step", action="store_true", help="also time a training step with and without")
    parser.add_argument("--backbone", default="mit_b1")
    parser.add_argument("--embed-dim", type=int, default=256, help="decoder width (demo: 64)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args(argv)
    configure_runtime()
    if args.threads:
        torch.set_num_threads(args.threads)
    figures = bench(
        args.device,
        args.batch,
        args.classes,
        args.crop,
        args.repeats,
        args.step,
        args.backbone,
        args.embed_dim,
    )
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
