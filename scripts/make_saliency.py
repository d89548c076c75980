"""Compute off-the-shelf saliency maps with U²-Net-p (AuxSegNet spec §10.2): one greyscale ``<id>.png``
per image, for ``dataset.saliency_dir``.

    scripts/fetch_u2netp.sh                                   # once: pretrained/u2netp.onnx
    python scripts/make_saliency.py --images demo_data/JPEGImages --out demo_data/saliency_u2netp
    python scripts/make_saliency.py --config configs/auxsegnet_voc.yaml --split train_aug \
        --out ../VOCdevkit/VOC2012/saliency_u2netp dataset.root_dir=../VOCdevkit/VOC2012

``--images DIR`` takes every .jpg/.jpeg/.png of a folder (the id is the file stem); ``--split NAME``
the ids of ``<dataset.name_list_dir>/<NAME>.txt`` under ``<dataset.root_dir>/JPEGImages``. Maps that
exist already are kept (``--overwrite`` recomputes them). ``<out>/report.json`` states the source
("off-the-shelf U²-Net-p, not DSS"), the model's sha256, the count and the speed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from common.errors import DataError, UsageError
from datasets.io import read_image
from datasets.saliency import write_saliency_png
from datasets.voc import find_image, read_name_list
from model.auxseg_saliency import (
    U2NETP_LABEL,
    U2NETP_PATH,
    U2NETP_SHA256,
    U2NETP_SOURCE,
    U2NetpSaliency,
    open_session,
)
from utils.cli import add_debug_flag, run, split_overrides
from utils.config import load_config
from utils.runtime.progress import progress

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """The command line: (known arguments, ``key=value`` config overrides for ``--split``)."""
    parser = argparse.ArgumentParser(
        description="U²-Net-p saliency maps (greyscale <id>.png) of a folder or a split.",
        epilog="other arguments (with --split): key=value config overrides, e.g. dataset.root_dir=...",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", help="folder of images (.jpg/.jpeg/.png); the id is the file stem")
    source.add_argument("--split", help="split name: the ids of <dataset.name_list_dir>/<split>.txt")
    parser.add_argument("--config", help="config whose dataset.* keys locate the split (with --split)")
    parser.add_argument("--out", required=True, help="output folder of <id>.png maps")
    parser.add_argument("--model", default=str(U2NETP_PATH), help=f"ONNX file (default {U2NETP_PATH})")
    parser.add_argument("--batch", type=int, default=8, help="images read and preprocessed per batch")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: all cores)")
    parser.add_argument("--overwrite", action="store_true", help="recompute maps that exist")
    parser.add_argument(
        "--skip-sha256",
        action="store_true",
        help="accept a --model other than U²-Net-p's file (tests, own models)",
    )
    add_debug_flag(parser)
    return split_overrides(parser, argv)


def list_images(args: argparse.Namespace, overrides: list[str]) -> list[tuple[str, Path]]:
    """(id, image path) pairs of ``--images`` or ``--split``."""
    if args.images:
        folder = Path(args.images)
        if not folder.is_dir():
            raise UsageError(f"--images {folder}: not a folder")
        if overrides:
            raise UsageError(f"config overrides need --split: {' '.join(overrides)}")
        found = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise DataError(f"--images {folder}: no .jpg/.jpeg/.png files")
        return [(p.stem, p) for p in found]
    cfg = load_config(args.config, overrides)
    root = Path(cfg.dataset.root_dir) / "JPEGImages"
    return [(name, find_image(root / name)) for name in read_name_list(cfg.dataset.name_list_dir, args.split)]


def main(argv: list[str] | None = None) -> dict:
    """Compute the saliency maps of the command line; returns the written report."""
    args, overrides = parse_args(argv)
    if args.batch < 1:
        raise UsageError("--batch must be >= 1")
    items = list_images(args, overrides)
    out = Path(args.out)
    todo = [(n, p) for n, p in items if args.overwrite or not (out / f"{n}.png").is_file()]
    model = U2NetpSaliency(open_session(args.model, check_sha256=not args.skip_sha256, threads=args.threads))
    start = time.perf_counter()
    with progress(total=len(todo), desc="saliency (U²-Net-p)") as bar:
        for i in range(0, len(todo), args.batch):
            chunk = todo[i : i + args.batch]
            maps = model.predict([read_image(path) for _, path in chunk])
            for (name, _), sal in zip(chunk, maps, strict=True):
                write_saliency_png(out / f"{name}.png", sal)
            bar.update(len(chunk))
    seconds = time.perf_counter() - start
    report = {
        "saliency.source": U2NETP_SOURCE,
        "source": U2NETP_LABEL,
        "model": str(args.model),
        "model_sha256": None if args.skip_sha256 else U2NETP_SHA256,
        "images": len(items),
        "computed": len(todo),
        "kept": len(items) - len(todo),
        "seconds": round(seconds, 3),
        "images_per_s": round(len(todo) / seconds, 3) if todo and seconds > 0 else None,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"saliency source: {U2NETP_LABEL}; {len(todo)} maps written to {out} ({report['kept']} kept)")
    return report


if __name__ == "__main__":
    sys.exit(run(main))
