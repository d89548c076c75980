"""Export the paper's pseudo labels of a split for second-stage training (code in utils/pseudo_export.py).

    python scripts/make_pseudo_labels.py --config configs/voc.yaml --checkpoint best.pt
    python scripts/make_pseudo_labels.py --config configs/voc.yaml --checkpoint best.pt --split val
    torchrun --nproc_per_node=4 scripts/make_pseudo_labels.py --config configs/voc.yaml --checkpoint best.pt

Writes ``pseudo/<id>.png`` (AFA: multi-scale CAM, random walk on the learned affinity, PAR, low/high
background combined; 255 = uncertain), ``refined/<id>.png`` (PAR-refined CAM), ``cam/<id>.png``
(plain CAM) and ``report.json`` (mIoU against ground truth where it exists; 255 pixels unscored)
under ``--out`` (default ``<work_dir.dir>/pseudo_labels/<split>``).
"""

from __future__ import annotations

import argparse

from utils.config import load_config
from utils.pseudo_export import export


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Export AFA pseudo labels of a split.")
    parser.add_argument("--config", required=True, help="YAML config of the checkpoint's network and data")
    parser.add_argument("--checkpoint", required=True, help="our checkpoint or the authors' (module. keys)")
    parser.add_argument("--split", default="train", help="dataset split (default train)")
    parser.add_argument("--out", help="output folder (default <work_dir.dir>/pseudo_labels/<split>)")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. cam.scales=[1.0,0.5,1.5]")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    export(load_config(args.config, args.overrides), args.checkpoint, args.split, args.out)


if __name__ == "__main__":
    main()
