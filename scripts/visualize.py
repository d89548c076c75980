"""CAM, propagated CAM, pseudo label and prediction overlays, and the attention and learned affinity of
chosen pixels, as PNG files (code and picture layout in utils/visualize_lib.py).

    python scripts/visualize.py --config configs/voc.yaml --checkpoint best.pt \
        --ids 2007_000033 2007_000129 --pixel 120 200 --pixel 60 300
    python scripts/visualize.py --config configs/voc.yaml --checkpoint best.pt --images photo.jpg more/ \
        --pixel 100 100 --out vis/

``--pixel ROW COL`` is in image coordinates and can be repeated; it must lie inside every image.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from utils.config import load_config
from utils.visualize_lib import visualize


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Visualise AFA's CAMs, affinity and attention.")
    parser.add_argument("--config", required=True, help="YAML config of the checkpoint's network and data")
    parser.add_argument("--checkpoint", required=True, help="our checkpoint or the authors' (module. keys)")
    parser.add_argument("--ids", nargs="+", default=[], help="image ids of the split")
    parser.add_argument("--split", help="split of --ids (default infer.split)")
    parser.add_argument("--images", nargs="+", default=[], help="image files or folders")
    parser.add_argument(
        "--pixel", nargs=2, type=int, action="append", default=[], metavar=("ROW", "COL"), help="repeatable"
    )
    parser.add_argument("--out", help="output folder (default <work_dir.dir>/visualize)")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. device=cpu")
    args = parser.parse_args()
    if not args.ids and not args.images:
        parser.error("give --ids and/or --images")
    return args


def main() -> None:
    args = parse_args()
    cfg = load_config(args.config, args.overrides)
    out = args.out or Path(cfg.work_dir.dir) / "visualize"
    pixels = [tuple(p) for p in args.pixel]
    written = visualize(cfg, args.checkpoint, out, args.ids, args.split, args.images, pixels)
    print(f"{len(written)} pictures -> {out}")


if __name__ == "__main__":
    main()
