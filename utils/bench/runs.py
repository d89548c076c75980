"""The built-in benchmarks: train-step, validate, infer, par, random-walk, rloss, seeds (``harness.py``)."""

from __future__ import annotations

import argparse
import contextlib
import functools

import torch
from omegaconf import OmegaConf

from methods.base import Method
from model.affinity import propagate_with_bkg, radius_mask
from model.cam import denormalize
from model.inference import AUTHORS_TEST_SCALES, msc_flip_inference
from model.mctformer import AttentionMaps, MCTformer
from model.par import pixel_adaptive_refine
from model.rloss import regularised_loss
from utils.bench.harness import (
    Subcommand,
    bench_config,
    device_of,
    random_batch,
    random_images,
    register,
    settings_of,
    timed_loop,
)
from utils.runtime.dist import compile_network


def phase_iteration(phase: int, cam_iters: int, seg_switch_iter: int) -> int:
    """A 0-based iteration of the phase: 1 warm (cls only), 2 CAM-label seg target, 3 propagated target."""
    return {1: 0, 2: cam_iters + 1, 3: seg_switch_iter + 1}[phase]


def _train_step(args: argparse.Namespace) -> dict:
    """The engine's ``train_step`` of ``--method`` on a fixed random batch at the iteration of ``--phase``
    (AFA's phases; a method without them runs iteration 0)."""
    from methods.registry import build_method
    from utils.train.step import train_step

    device = device_of(args.device)
    cfg = bench_config(
        args, ["train.explicit_attention=true"] if getattr(args, "explicit_attention", False) else []
    )
    method = build_method(cfg)
    torch.manual_seed(0)
    model = method.build_network().to(device).train()
    if cfg.train.compile:
        compile_network(model, device)
    optimizer, scheduler = method.configure_optimizers(model)
    batch = random_batch(args.batch, args.crop, cfg.dataset.num_classes, device)
    gen = torch.Generator().manual_seed(10)  # a label map for the supervised method (others ignore it)
    label = torch.randint(0, cfg.dataset.num_classes, (args.batch, args.crop, args.crop), generator=gen)
    batch["label"] = label.to(device)
    batch["seg_label"], batch["sal_label"] = batch["label"], (batch["label"] > 0).float()  # AuxSegNet's
    cam_iters = OmegaConf.select(cfg, "train.cam_iters", default=None)
    switch = OmegaConf.select(cfg, "afa.seg_label_switch_iter", default=None)
    n_iter = 0 if cam_iters is None or switch is None else phase_iteration(args.phase, cam_iters, switch)

    def step() -> None:
        """One timed training iteration."""
        train_step(method, model, optimizer, scheduler, batch, n_iter)

    res = timed_loop(step, args.iters, args.warmup, device)
    return res | {"images_per_sec": args.batch / res["sec_per_iter"], "n_iter": n_iter}


def _eval_model(args: argparse.Namespace, device: torch.device) -> tuple[Method, torch.nn.Module]:
    """The method of the benchmark's options and its seeded random network in eval mode."""
    from methods.registry import build_method

    method = build_method(bench_config(args))
    torch.manual_seed(0)
    return method, method.build_network().to(device).eval()


def _validate(args: argparse.Namespace) -> dict:
    """``validate`` (utils.evaluation.validate) over ``--batch`` random crop×(3/4·crop) images (s per image),
    in batches of ``--val-batch`` (the same size: ``val.batch_size`` groups such images)."""
    from utils.evaluation.validate import validate

    device = device_of(args.device)
    method, model = _eval_model(args, device)
    num_classes = method.cfg.dataset.num_classes
    h, w = args.crop * 3 // 4, args.crop
    data = random_batch(args.batch, args.crop, num_classes, device)
    images = random_images(args.batch, h, w, device, seed=3)
    label = torch.randint(0, num_classes, (args.batch, h, w), generator=torch.Generator().manual_seed(4))
    cls_label, step = data["cls_label"], args.val_batch
    loader = [
        {"image": images[i : i + step], "label": label[i : i + step], "cls_label": cls_label[i : i + step]}
        for i in range(0, args.batch, step)
    ]
    res = timed_loop(
        lambda: validate(method, model, loader, num_classes, device, show=False),
        args.iters,
        args.warmup,
        device,
    )
    per_image = res["sec_per_iter"] / args.batch
    return res | {"sec_per_image": per_image, "images_per_sec": 1.0 / per_image, "image_size": [h, w]}


def _infer(args: argparse.Namespace) -> dict:
    """``msc_flip_inference`` (authors' scales, long side = ``--crop``) on a batch of random images."""
    device = device_of(args.device)
    method, model = _eval_model(args, device)
    x = random_images(args.batch, args.crop * 3 // 4, args.crop, device, seed=5)
    run = functools.partial(
        msc_flip_inference, functools.partial(method.segment, model), x, AUTHORS_TEST_SCALES, args.crop
    )
    res = timed_loop(run, args.iters, args.warmup, device)
    return res | {"images_per_sec": args.batch / res["sec_per_iter"]}


def _par(args: argparse.Namespace) -> dict:
    """One PAR call as in ``refine_cams_with_bkg``: half-crop grid, 2×3 mask channels, 10 iterations."""
    device = device_of(args.device)
    cfg = bench_config(args)
    small = args.crop // 2
    images01 = denormalize(random_images(args.batch, small, small, device, seed=6))
    masks = torch.rand(args.batch, 6, small // 4, small // 4, generator=torch.Generator().manual_seed(7)).to(
        device
    )
    dil, n = tuple(cfg.par.dilations), cfg.par.num_iter
    res = timed_loop(lambda: pixel_adaptive_refine(images01, masks, dil, n), args.iters, args.warmup, device)
    return res | {"images_per_sec": args.batch / res["sec_per_iter"]}


def _random_walk(args: argparse.Namespace) -> dict:
    """``propagate_with_bkg`` on the largest CAM scale's token grid (1.5·crop/16), low and high bkg."""
    device = device_of(args.device)
    cfg = bench_config(args)
    g = int(max(cfg.cam.scales) * args.crop) // 16
    gen = torch.Generator().manual_seed(8)
    k = cfg.dataset.num_classes - 1
    cams = torch.rand(args.batch, k, g, g, generator=gen).to(device)
    aff = torch.rand(args.batch, g * g, g * g, generator=gen).to(device)
    labels = random_batch(args.batch, args.crop, cfg.dataset.num_classes, device)["cls_label"]

    def walk() -> None:
        """One timed random walk."""
        mask = radius_mask(g, g, cfg.afa.radius, device=device)
        for bkg in (cfg.cam.low_thre, cfg.cam.high_thre):
            propagate_with_bkg(cams * labels[:, :, None, None], aff, mask, labels, bkg)

    res = timed_loop(walk, args.iters, args.warmup, device)
    return res | {"images_per_sec": args.batch / res["sec_per_iter"], "grid": [g, g]}


def _rloss(args: argparse.Namespace) -> dict:
    """The regularised loss of one step, forward + hand-written backward, from crop-size logits
    (the lattice filters the half-size grid; ``scripts/bench_rloss.py`` adds the step share)."""
    device = device_of(args.device)
    classes = bench_config(args).dataset.num_classes
    batch = random_batch(args.batch, args.crop, classes, device, seed=8)
    gen = torch.Generator().manual_seed(9)
    logits = torch.randn(args.batch, classes, args.crop, args.crop, generator=gen).to(device)
    label = torch.randint(0, classes, (args.batch, args.crop, args.crop), generator=gen).to(device)

    def loss() -> None:
        """One timed L_reg forward (and backward)."""
        leaf = logits.detach().requires_grad_(True)
        regularised_loss(leaf, batch["image"], batch["img_box"], label).backward()

    res = timed_loop(loss, args.iters, args.warmup, device)
    return res | {"images_per_sec": args.batch / res["sec_per_iter"], "grid": [args.crop // 2] * 2}


def stacked_attention_forward(
    model: MCTformer, x: torch.Tensor, layers: int = 3, attention_type: str = "fused"
) -> AttentionMaps:
    """``MCTformer.forward_attention`` computed in the authors' order, for timing (``seeds
    --explicit-attention``): every block's per-head weights kept and stacked to (L, B, nh, N, N), the
    head mean of the stack, then the maps (spec §1.5-1.6). Same values as ours, which means per block.

    Args:
        x: (B, 3, H, W).
    Returns:
        ``AttentionMaps`` (cams (B, C, h, w), patch_attn (L, B, Np, Np)).
    """
    tokens, grid, weights = model.forward_features(x, attn="weights")
    means = torch.stack(weights).mean(dim=2).detach()
    b, c = x.shape[0], model.num_classes
    mtatt = means[-layers:].sum(dim=0)[:, :c, c:].reshape(b, c, *grid)
    return model.maps(tokens, grid, mtatt, means[:, :, c:, c:], attention_type)


def _seeds(args: argparse.Namespace) -> dict:
    """``Method.pseudo_labels`` (MCTformer: the seed maps, batch 1 per image as the export) of ``--batch``
    random (3/4·crop)×crop images, each with two random present classes; bf16 autocast with ``--amp``;
    ``--explicit-attention``: the authors' stacked attention forward (``stacked_attention_forward``)."""
    device = device_of(args.device)
    method, model = _eval_model(args, device)
    if args.explicit_attention:
        model.forward_attention = functools.partial(stacked_attention_forward, model)
    x = random_images(args.batch, args.crop * 3 // 4, args.crop, device, seed=11)
    k = method.cfg.dataset.num_classes - 1
    labels = torch.zeros(args.batch, k, device=device)
    labels[:, :2] = 1.0
    amp = torch.autocast(device.type, torch.bfloat16) if args.amp == "bf16" else contextlib.nullcontext()

    def seeds() -> None:
        """The seed labels of every image."""
        with amp:
            for i in range(args.batch):
                method.pseudo_labels(model, x[i : i + 1], labels[i : i + 1])

    res = timed_loop(seeds, args.iters, args.warmup, device)
    size = [args.crop * 3 // 4, args.crop]
    return res | {"images_per_sec": args.batch / res["sec_per_iter"], "image_size": size}


def _phase_option(parser: argparse.ArgumentParser) -> None:
    """``--phase``: AFA's warm, CAM-label or propagated-label phase."""
    parser.add_argument(
        "--phase", type=int, choices=(1, 2, 3), default=2, help="1 warm, 2 CAM labels, 3 propagated labels"
    )


def _explicit_option(parser: argparse.ArgumentParser) -> None:
    """MCTformer's ``--explicit-attention``: the authors' forward, for a side-by-side figure."""
    parser.add_argument(
        "--explicit-attention",
        action="store_true",
        help="MCTformer: the authors' forward, every block's attention built and stacked (a comparison)",
    )


def _train_step_options(parser: argparse.ArgumentParser) -> None:
    """``--phase`` and MCTformer's ``--explicit-attention``."""
    _phase_option(parser)
    _explicit_option(parser)


def _val_batch_option(parser: argparse.ArgumentParser) -> None:
    """``--val-batch``: images per validation batch."""
    parser.add_argument(
        "--val-batch", type=int, default=1, help="images per validation batch (val.batch_size; default 1)"
    )


def _wrap(fn, grad: bool):
    """The benchmark with its settings attached, under no_grad unless it trains."""

    def run(args: argparse.Namespace) -> dict:
        """One timed call."""
        with contextlib.nullcontext() if grad else torch.no_grad():
            res = fn(args)
        return res | {"settings": settings_of(args, device_of(args.device))}

    return run


for _name, _fn, _help, _extra in (
    (
        "train-step",
        _train_step,
        "the engine's train_step (forward, pseudo labels, losses, update)",
        _train_step_options,
    ),
    (
        "validate",
        _validate,
        "in-training validation (seg, CAM, affinity predictions)",
        _val_batch_option,
    ),
    ("infer", _infer, "multi-scale flip test-time inference", None),
    ("par", _par, "one PAR refinement (10 iterations, 48 neighbours)", None),
    ("random-walk", _random_walk, "affinity random walk with low and high background", None),
    ("rloss", _rloss, "regularised loss forward + backward (permutohedral lattice, spec App. B)", None),
    (
        "seeds",
        _seeds,
        "seed maps / pseudo labels of one image at a time (--method mctformer_v2)",
        _explicit_option,
    ),
):
    register(Subcommand(_name, _help, _wrap(_fn, _fn in (_train_step, _rloss)), _extra))
