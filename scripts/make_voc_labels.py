"""Derive image-level labels (cls_labels.txt) from class-index masks, optionally comparing them.

Example:
    python scripts/make_voc_labels.py --masks VOC2012/SegmentationClassAug \
        --ids datasets/voc/train_aug.txt datasets/voc/val.txt --out /tmp/cls_labels_from_masks.txt \
        --compare datasets/voc/cls_labels.txt

A class is present when a mask pixel holds its id (0 and 255 ignored). The authors' VOC labels come
from the XML annotations; on the 12,031 genuine VOC 2012 + SBD masks (train_aug ∪ val) the command
above reports 11,213 identical ids and 818 different ones (816 SBD-only images, plus 2011_001621 and
the val image 2008_005245): 903 classes listed by the file are absent from the masks, and one class
(person in 2008_005245) is in the mask but not in the file. Details in datasets/voc_labels.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from datasets.voc import class_names, read_cls_labels, write_cls_labels
from datasets.voc_labels import compare_cls_labels, derive_cls_labels, format_comparison
from utils.cli import add_debug_flag, run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--masks", required=True, help="folder of <id>.png class-index masks")
    parser.add_argument("--ids", required=True, nargs="+", help="split list file(s), one id per line")
    parser.add_argument("--out", required=True, help="cls_labels.txt to write")
    parser.add_argument("--num-classes", type=int, default=21, help="classes including background")
    parser.add_argument("--compare", default=None, help="existing cls_labels.txt to compare with")
    add_debug_flag(parser)
    return parser.parse_args(argv)


def read_ids(paths: list[str]) -> list[str]:
    """Ids of the list files, in order, without duplicates."""
    ids: dict[str, None] = {}
    for path in paths:
        with open(path) as handle:
            ids.update((line.strip(), None) for line in handle if line.strip())
    return list(ids)


def main(argv: list[str] | None = None) -> None:
    """Write (and optionally compare) the image-level labels of the command line's masks."""
    args = parse_args(argv)
    derived = derive_cls_labels(args.masks, read_ids(args.ids), args.num_classes)
    header = (
        f"image_id followed by the indices (0-{args.num_classes - 2}, no background) of the classes "
        f"present in the masks of {args.masks}"
    )
    write_cls_labels(args.out, dict(sorted(derived.items())), header)
    print(f"wrote labels of {len(derived)} ids to {args.out}")
    if args.compare:
        existing = read_cls_labels(args.compare, args.num_classes)
        try:
            names = class_names(Path(args.compare).parent, args.num_classes)[1:]
        except FileNotFoundError:
            names = [str(i) for i in range(args.num_classes - 1)]
        print(f"comparison with {args.compare}:")
        print(format_comparison(compare_cls_labels(derived, existing), names))


if __name__ == "__main__":
    sys.exit(run(main))
