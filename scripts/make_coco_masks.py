"""Convert COCO instance annotations to class-index palette PNGs (AFA COCO layout or VOC layout).

Example:
    python scripts/make_coco_masks.py --annotations coco/annotations/instances_val2017.json \
        --images coco/val2017 --out data/coco_afa
    python scripts/make_coco_masks.py --annotations ... --images ... --out data/coco_voc --voc-classes

The rasterisation rule (crowd 255 first, then instances by decreasing area) and the output layout
are documented in datasets/convert_coco.py.
"""

from __future__ import annotations

import argparse
import sys
import time

from datasets.coco import coco_folder
from datasets.convert_coco import convert_coco, default_split_name
from utils.cli import add_debug_flag, run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotations", required=True, help="instances_<split>.json")
    parser.add_argument("--images", required=True, help="folder of the JSON's image files")
    parser.add_argument("--out", required=True, help="output root (merged with a previous split)")
    parser.add_argument(
        "--split",
        default=None,
        help="split name of <split>.txt (default: train or val, as the JSON file name says)",
    )
    parser.add_argument(
        "--voc-classes", action="store_true", help="VOC layout with the 20 classes shared with VOC"
    )
    add_debug_flag(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Write the masks of the command line's annotation file."""
    args = parse_args(argv)
    start = time.perf_counter()
    split = args.split or coco_folder(default_split_name(args.annotations))
    if not args.split:
        print(f"split {split} (from {args.annotations}; --split to name it otherwise)")
    summary = convert_coco(args.annotations, args.images, args.out, split, args.voc_classes)
    print(summary.format())
    print(f"written to {args.out} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    sys.exit(run(main))
