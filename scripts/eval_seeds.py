"""Score exported MCTformer seed maps by the threshold sweep (MCTformer spec §5; ``seed_eval.py``).

    python scripts/make_pseudo_labels.py --split train \
        --checkpoint work_dir_mctformer_v2_voc/checkpoints/last.pt --out work_dir_mctformer_v2_voc/seeds_train
    python scripts/eval_seeds.py --config configs/mctformer_v2_voc.yaml --split train \
        --seeds work_dir_mctformer_v2_voc/seeds_train

Reads ``<seeds>/seed_scores/<id>.npy`` and ``<seeds>/seed_keys/<id>.npy`` for every id of
``<dataset.name_list_dir>/<split>.txt`` and the masks ``<dataset.root_dir>/SegmentationClassAug/<id>.png``,
sweeps t = 0.00 … 0.59 and prints three labelled numbers: the authors' protocol (greedy stop, mean
over all classes; MCTformer's published 61.7 uses it, on VOC ``train``), the best of the full sweep,
and the standard mean over the present classes. Writes the full report as JSON (``--out``, default
``<seeds>/seed_eval_<split>.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from datasets.voc import read_name_list
from utils.cli import add_debug_flag, run, split_overrides
from utils.config import load_config
from utils.evaluation.seed_eval import evaluate_seed_folder, format_sweep

DEFAULT_CONFIG = "configs/mctformer_v2_voc.yaml"


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """Options and ``key=value`` dataset overrides."""
    parser = argparse.ArgumentParser(
        description="Threshold sweep of exported seed maps against ground-truth masks.",
        epilog="other arguments: key=value config overrides, e.g. dataset.root_dir=../VOCdevkit/VOC2012",
    )
    parser.add_argument(
        "--config", default=DEFAULT_CONFIG, help=f"config with the dataset (default {DEFAULT_CONFIG})"
    )
    parser.add_argument("--seeds", required=True, help="the export folder (make_pseudo_labels.py --out)")
    parser.add_argument(
        "--split", default="train", help="split whose ids and masks are scored (default train)"
    )
    parser.add_argument("--out", help="JSON report (default <seeds>/seed_eval_<split>.json)")
    add_debug_flag(parser)
    return split_overrides(parser, argv)


def main(argv: list[str] | None = None) -> dict:
    """Run the sweep, print the three labelled numbers, write the JSON report."""
    args, overrides = parse_args(argv)
    cfg = load_config(args.config, overrides)
    names = read_name_list(cfg.dataset.name_list_dir, args.split)
    masks = Path(cfg.dataset.root_dir) / "SegmentationClassAug"
    report = evaluate_seed_folder(args.seeds, {n: masks / f"{n}.png" for n in names}, cfg.dataset.num_classes)
    report = {"seeds": str(args.seeds), "split": args.split, **report}
    out = Path(args.out) if args.out else Path(args.seeds) / f"seed_eval_{args.split}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(format_sweep(report))
    return report


if __name__ == "__main__":
    sys.exit(run(main))
