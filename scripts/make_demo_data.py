"""Generate the demo dataset (VOC layout, 4 classes + background; see datasets/demo.py).

Example:
    python scripts/make_demo_data.py --out data/demo --num-train 240 --num-val 60 --seed 0
"""

from __future__ import annotations

import argparse
import sys

from datasets.demo import write_demo_dataset
from utils.cli import add_debug_flag, run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output root")
    parser.add_argument("--num-train", type=int, default=240, help="training images")
    parser.add_argument("--num-val", type=int, default=60, help="validation images")
    parser.add_argument("--seed", type=int, default=0, help="base seed (same seed, same bytes)")
    add_debug_flag(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Write the demo dataset where the command line says."""
    args = parse_args(argv)
    summary = write_demo_dataset(args.out, args.num_train, args.num_val, args.seed)
    total = summary.num_train + summary.num_val
    print(
        f"demo dataset in {args.out}: {summary.num_train} train + {summary.num_val} val images, "
        f"{summary.num_objects / max(total, 1):.2f} objects per image, {summary.seconds:.1f} s"
    )


if __name__ == "__main__":
    sys.exit(run(main))
