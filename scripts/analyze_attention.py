"""AReAM's over-smoothing diagnostics for a checkpoint (code in utils/diagnostics/attention.py).

    python scripts/analyze_attention.py --config configs/voc.yaml --checkpoint best.pt --out analysis/
    python scripts/analyze_attention.py --config configs/demo.yaml --checkpoint c.pt --out a \
        infer.max_images=9

Over ``--split`` (default ``val.split``; needs ground truth), per encoder block: the mean Hellinger
distance between attention rows (S002 Eq. 6), the entropy of the block-refined CAM, and the mIoU of
the CAM refined by that block alone vs by the mean of all blocks. Writes ``layers.csv`` (one row per
block), ``summary.csv`` (the plain CAM and the layer average) and PNG plots under ``--out``.
"""

from __future__ import annotations

import argparse
import sys

from methods.afa import AFA
from utils.cli import add_debug_flag, run, split_overrides
from utils.diagnostics.attention import BKG_SWEEP, analyse, block_stages, layer_rows, write_outputs
from utils.evaluation.inputs import labelled_split_loader, method_and_model
from utils.runtime.checkpoint_config import add_checkpoint_arguments, config_for_checkpoint
from utils.runtime.dist import configure_runtime, resolve_device


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """Options and ``key=value`` overrides, in any order."""
    parser = argparse.ArgumentParser(
        description="Per-layer attention diagnostics (AReAM, S002).",
        epilog="other arguments: key=value config overrides, e.g. infer.max_images=50",
    )
    add_checkpoint_arguments(parser, checkpoint_help="a trained checkpoint")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--split", help="split with ground truth (default val.split)")
    add_debug_flag(parser)
    return split_overrides(parser, argv)


def main(argv: list[str] | None = None) -> None:
    """Run the diagnostics of the command line (``argv``; default ``sys.argv``)."""
    args, overrides = parse_args(argv)
    configure_runtime()
    cfg = config_for_checkpoint(args.config, overrides, args.checkpoint)
    split = args.split or cfg.val.split
    loader = labelled_split_loader(cfg, split)
    _, model = method_and_model(cfg, args.checkpoint, resolve_device(cfg.device), AFA, "analyze_attention.py")
    bkg_scores = tuple(sorted({*BKG_SWEEP, cfg.cam.bkg_score}))
    result = analyse(model, loader, cfg.dataset.num_classes, bkg_scores, cfg.aream.grid_conversion)
    rows = layer_rows(result, block_stages(model.encoder), bkg_scores, cfg.cam.bkg_score)
    paths = write_outputs(args.out, rows)
    print(
        f"{result['num_images']} images of {split}; CAM mIoU at bkg {cfg.cam.bkg_score} (best over a sweep)"
    )
    print(f"{'layer':>8} {'stage':>5} {'hellinger':>9} {'entropy':>8} {'cam mIoU':>8} {'best':>6}")
    for r in rows:
        stage, h, e = r.get("stage", ""), r.get("hellinger"), r.get("entropy_bits")
        h, e = ("" if h is None else f"{h:.4f}"), ("" if e is None else f"{e:.3f}")
        print(f"{r['layer']!s:>8} {stage!s:>5} {h:>9} {e:>8} {r['cam_miou']:8.2f} {r['cam_miou_best']:6.2f}")
    print("wrote " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    sys.exit(run(main))
