"""The offline pass of AReAM (spec §8.5): per-block entropies of a trained model, for ``aream.entropy_file``.

    python scripts/layer_entropy.py --config configs/voc.yaml --checkpoint work_dir_voc/checkpoints/best.pt \
        --out work_dir_voc/layer_entropy.json
    python train_voc.py --config configs/voc.yaml aream.enabled=true \
        aream.entropy_file=work_dir_voc/layer_entropy.json

Runs over ``--split`` (default ``train.split``, the authors use train_aug) with batch 1, single scale and
no flip, and writes JSON with the per-block mean entropy in bits and its min-max normalisation.
``infer.max_images`` limits the images (quick checks); ``aream.grid_conversion`` says how the
1/32-grid blocks meet the CAM grid.
"""

from __future__ import annotations

import argparse
import sys

from methods.afa import AFA
from methods.mctformer import MCTformerV2
from utils.cli import add_debug_flag, run, split_overrides
from utils.diagnostics.layer_entropy import dataset_entropy, save_entropy_file
from utils.evaluation.inputs import method_and_model
from utils.evaluation.pseudo_export import WithClassLabels
from utils.runtime.checkpoint_config import add_checkpoint_arguments, config_for_checkpoint
from utils.runtime.data import build_eval_dataset, build_eval_loader, shard_indices
from utils.runtime.dist import configure_runtime, resolve_device


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """Options and ``key=value`` overrides, in any order."""
    parser = argparse.ArgumentParser(
        description="Per-block attention entropies for the AReAM mode.",
        epilog="other arguments: key=value config overrides, e.g. infer.max_images=100",
    )
    add_checkpoint_arguments(parser, checkpoint_help="a trained AFA or MCTformer-V2 checkpoint")
    parser.add_argument("--out", required=True, help="output JSON file")
    parser.add_argument("--split", help="dataset split (default train.split)")
    add_debug_flag(parser)
    return split_overrides(parser, argv)


def main(argv: list[str] | None = None) -> None:
    """Compute and write the per-block entropies of the command line's checkpoint."""
    args, overrides = parse_args(argv)
    configure_runtime()
    cfg = config_for_checkpoint(args.config, overrides, args.checkpoint)
    split = args.split or cfg.train.split
    device = resolve_device(cfg.device)
    dataset = WithClassLabels(
        build_eval_dataset(cfg, split, with_labels=False), cfg.dataset.name_list_dir, cfg.dataset.num_classes
    )
    loader = build_eval_loader(dataset, shard_indices(len(dataset), 0, 1, cfg.infer.max_images), 0)
    needs = MCTformerV2 if cfg.method.startswith("mctformer") else AFA  # V2: its conv map is the CAM
    _, model = method_and_model(cfg, args.checkpoint, device, needs, "layer_entropy.py")
    result = dataset_entropy(model, loader, cfg.aream.grid_conversion)
    record = save_entropy_file(args.out, result, cfg, args.checkpoint, split)
    skipped = f"{record['skipped']} without a class skipped"
    print(f"{record['num_images']} images of {split} ({skipped}) -> {args.out}")
    for i, (bits, e) in enumerate(zip(record["entropy_bits"], record["normalised"])):
        print(f"  block {i}: {bits:10.6f} bits  normalised {e:.4f}")


if __name__ == "__main__":
    sys.exit(run(main))
