"""Export the paper's pseudo labels of a split for stage-2 training (utils/evaluation/pseudo_export.py).

    python scripts/make_pseudo_labels.py --config configs/voc.yaml --checkpoint best.pt
    python scripts/make_pseudo_labels.py --config configs/voc.yaml --checkpoint best.pt --split val
    torchrun --nproc_per_node=4 scripts/make_pseudo_labels.py --config configs/voc.yaml --checkpoint best.pt

Writes one folder of label PNGs per kind the checkpoint's method exports (``Method.pseudo_labels``)
and ``report.json`` (mIoU against ground truth where it exists; 255 pixels unscored) under ``--out``
(default ``<work_dir.dir>/pseudo_labels/<split>``). AFA's kinds: ``pseudo/<id>.png`` (multi-scale
CAM, random walk on the learned affinity, PAR, low/high background combined; 255 = uncertain),
``refined/<id>.png`` (PAR-refined CAM) and ``cam/<id>.png`` (plain CAM).

MCTformer (``method=mctformer_v1|v2``; ``seeds.*`` keys) writes ``seed/<id>.png`` (the seed maps at
``seeds.threshold``) and the maps themselves as plain arrays, ``seed_scores/<id>.npy`` (k, H, W) with
``seed_keys/<id>.npy`` (k,); ``seeds.crf_alphas=[1,12]`` adds ``crf_<α>/<id>.npy`` for an affinity stage
and ``seeds.overlays=true`` heat-map overlays. Score them with ``scripts/eval_seeds.py``::

    python scripts/make_pseudo_labels.py --split train \
        --checkpoint work_dir_mctformer_v2_voc/checkpoints/last.pt \
        --out work_dir_mctformer_v2_voc/seeds_train seeds.crf_alphas=[1,12]
"""

from __future__ import annotations

import argparse
import sys

from utils.cli import add_debug_flag, run, split_overrides
from utils.evaluation.pseudo_export import export
from utils.runtime.checkpoint_config import add_checkpoint_arguments, config_for_checkpoint


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """The command line: (known arguments, ``key=value`` config overrides)."""
    parser = argparse.ArgumentParser(
        description="Export the pseudo labels (and seed maps) of a split.",
        epilog="other arguments: key=value config overrides, e.g. cam.scales=[1.0,0.5,1.5]",
    )
    add_checkpoint_arguments(parser)
    parser.add_argument("--split", default="train", help="dataset split (default train)")
    parser.add_argument("--out", help="output folder (default <work_dir.dir>/pseudo_labels/<split>)")
    add_debug_flag(parser)
    return split_overrides(parser, argv)


def main(argv: list[str] | None = None) -> dict:
    """Export the pseudo labels of the command line's checkpoint and split; returns the export's report."""
    args, overrides = parse_args(argv)
    return export(
        config_for_checkpoint(args.config, overrides, args.checkpoint), args.checkpoint, args.split, args.out
    )


if __name__ == "__main__":
    sys.exit(run(main))
