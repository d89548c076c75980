"""Evaluate a checkpoint the way the paper does, and write its masks (spec §7.3; utils/evaluation/infer.py).

    python infer_seg.py --config configs/voc.yaml --checkpoint work_dir_voc/checkpoints/best.pt --crf
    python infer_seg.py --config configs/voc.yaml --checkpoint wetr_iter_18000.pth --split test
    python infer_seg.py --config configs/voc.yaml --checkpoint best.pt --images photos/ --out photos_out
    python infer_seg.py --config configs/voc.yaml --checkpoint best.pt "infer.scales=[0.5,0.75,1.0,1.25,1.5]"
    torchrun --nproc_per_node=4 infer_seg.py --config configs/voc.yaml --checkpoint best.pt --crf

Long side resized to ``infer.resize_long`` (512), scales ``infer.scales`` (the authors' [1, 0.5, 0.75];
the paper's [0.5, 0.75, 1, 1.25, 1.5] as above) with flip averaging and the maximum over scales,
logits upsampled to the original size; ``--crf`` adds the authors' dense CRF. Writes
``prediction/<id>.png`` (class ids), ``prediction_cmap/<id>.png`` (VOC palette), ``overlay/`` for
``--images``, and ``report.json`` with single-scale, multi-scale (and CRF) mIoU where ground truth
exists. ``--split`` and ``--crf`` are shorthands for ``infer.split=...`` and ``infer.crf=true``.

The network (backbone, classes, strides, decoder width) comes from the config our checkpoints carry;
``--config`` gives the data and inference keys (without it the checkpoint's whole config is used).
The authors' checkpoints carry no config and need ``--config``. Flags and ``key=value`` overrides mix
in any order; errors are one line (``--debug`` or ``AFA_DEBUG=1`` for the traceback).
"""

from __future__ import annotations

import argparse
import sys

from utils.cli import add_debug_flag, run, split_overrides
from utils.evaluation.infer import infer
from utils.runtime.checkpoint_config import add_checkpoint_arguments, config_for_checkpoint

CONFIG_HELP = (
    "YAML of the data and inference keys (default: the checkpoint's config); "
    "its network keys yield to the checkpoint's"
)


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """The command line: (known arguments, ``key=value`` config overrides)."""
    parser = argparse.ArgumentParser(
        description="AFA test-time segmentation: msc + flip (+ CRF), mIoU.",
        epilog="other arguments: key=value config overrides, e.g. infer.resize_long=512",
    )
    add_checkpoint_arguments(parser, CONFIG_HELP)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--split", help="dataset split, e.g. val, train, test (sets infer.split)")
    source.add_argument("--images", help="folder of images (jpg/jpeg/png/bmp) or a text file of paths")
    parser.add_argument("--out", help="output folder (default <work_dir.dir>/<split> or .../images)")
    parser.add_argument("--crf", action="store_true", help="dense CRF after msc (sets infer.crf=true)")
    add_debug_flag(parser)
    return split_overrides(parser, argv)


def main(argv: list[str] | None = None) -> dict:
    """Run the evaluation of the command line (``argv``; default ``sys.argv``); returns the scores."""
    args, overrides = parse_args(argv)
    if args.split:
        overrides.append(f"infer.split={args.split}")
    if args.crf:
        overrides.append("infer.crf=true")
    cfg = config_for_checkpoint(args.config, overrides, args.checkpoint)
    return infer(cfg, args.checkpoint, args.out, args.images)


if __name__ == "__main__":
    sys.exit(run(main))
