"""CAM, propagated CAM, pseudo label and prediction overlays, and the attention and learned affinity of
chosen pixels, as PNG files (code and picture layout in utils/diagnostics/visualize.py).

    python scripts/visualize.py --config configs/voc.yaml --checkpoint best.pt \
        --ids 2007_000033 2007_000129 --pixel 120 200 --pixel 60 300
    python scripts/visualize.py --config configs/voc.yaml --checkpoint best.pt --images photo.jpg more/ \
        --pixel 100 100 --out vis/

``--pixel ROW COL`` is in image coordinates and can be repeated; it must lie inside every image.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.errors import UsageError
from utils.cli import add_debug_flag, run, split_overrides
from utils.diagnostics.visualize import visualize
from utils.runtime.checkpoint_config import add_checkpoint_arguments, config_for_checkpoint


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """The command line."""
    parser = argparse.ArgumentParser(
        description="Visualise AFA's CAMs, affinity and attention.",
        epilog="other arguments: key=value config overrides, e.g. device=cpu",
    )
    add_checkpoint_arguments(parser)
    parser.add_argument("--ids", nargs="+", default=[], help="image ids of the split")
    parser.add_argument("--split", help="split of --ids (default infer.split)")
    parser.add_argument("--images", nargs="+", default=[], help="image files or folders")
    parser.add_argument(
        "--pixel", nargs=2, type=int, action="append", default=[], metavar=("ROW", "COL"), help="repeatable"
    )
    parser.add_argument("--out", help="output folder (default <work_dir.dir>/visualize)")
    add_debug_flag(parser)
    args, overrides = split_overrides(parser, argv)
    if not args.ids and not args.images:
        raise UsageError("nothing to draw: give --ids and/or --images")
    return args, overrides


def main(argv: list[str] | None = None) -> list[Path]:
    """Write the overlays of the command line; returns the written paths."""
    args, overrides = parse_args(argv)
    cfg = config_for_checkpoint(args.config, overrides, args.checkpoint)
    out = args.out or Path(cfg.work_dir.dir) / "visualize"
    pixels = [tuple(p) for p in args.pixel]
    written = visualize(cfg, args.checkpoint, out, args.ids, args.split, args.images, pixels)
    print(f"{len(written)} pictures -> {out}")
    return written


if __name__ == "__main__":
    sys.exit(run(main))
