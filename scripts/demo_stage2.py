"""The stage-2 demo: from the demo's AFA run to a segmentation network trained on its pseudo labels.

    make demo                          # once: AFA on demo_data, writes work_dir_demo/
    python scripts/demo_stage2.py [--config configs/demo_stage2.yaml] [--afa-dir work_dir_demo] [k=v ...]

1. exports AFA's pseudo labels of the train split with ``work_dir_demo/checkpoints/last.pt``
   (``scripts/make_pseudo_labels.py``: ``work_dir_demo/pseudo_labels/train/{pseudo,refined,cam}/``,
   scored against the ground truth in ``report.json``);
2. trains the stage-2 network of ``--config`` on ``pseudo/`` (``train_voc.py`` does exactly this);
3. runs ``infer_seg`` with the CRF on the val split;
4. prints the pseudo-label mIoU on train, the stage-2 val mIoU and the AFA demo's end-to-end val mIoU
   (``work_dir_demo/val/report.json``, written by ``make demo``) side by side.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from common.errors import MissingFileError
from utils.cli import add_debug_flag, run, split_overrides
from utils.config import load_config
from utils.evaluation.infer import infer
from utils.evaluation.pseudo_export import export
from utils.runtime.checkpoint_config import config_for_checkpoint
from utils.runtime.dist import configure_runtime
from utils.train.loop import train

INFERENCE_ROWS = {"single_scale": "single scale", "multi_scale": "msc + flip", "multi_scale_crf": "msc + CRF"}


def afa_results(afa_dir: Path) -> tuple[Path, dict | None]:
    """The AFA demo's checkpoint and its ``infer_seg`` report (None when ``make demo`` wrote none)."""
    checkpoint = afa_dir / "checkpoints" / "last.pt"
    if not checkpoint.is_file():
        raise MissingFileError(f"no AFA demo checkpoint at {checkpoint}", hint="run `make demo` first")
    report = afa_dir / "val" / "report.json"
    return checkpoint, json.loads(report.read_text())["scores"] if report.is_file() else None


def side_by_side(pseudo: dict, stage2: dict, afa: dict | None) -> str:
    """The demo's table: rows of mIoU (%), AFA end to end beside stage 2."""
    lines = [f"pseudo labels (AFA 'pseudo', train): mIoU {pseudo['miou']:.2f} %", ""]
    lines.append(f"{'val mIoU (%)':22s} {'AFA end to end':>15s} {'stage 2':>10s}")
    for key, title in INFERENCE_ROWS.items():
        if key in stage2:
            afa_value = f"{afa[key]['miou']:15.2f}" if afa and key in afa else f"{'-':>15s}"
            lines.append(f"{title:22s} {afa_value} {stage2[key]['miou']:10.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Export, train, infer, report (see the module docstring)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="configs/demo_stage2.yaml")
    parser.add_argument("--afa-dir", type=Path, default=Path("work_dir_demo"), help="the AFA demo's work dir")
    add_debug_flag(parser)
    args, extra = split_overrides(parser, argv)
    configure_runtime()
    start = time.perf_counter()
    checkpoint, afa = afa_results(args.afa_dir)
    labels = args.afa_dir / "pseudo_labels" / "train"
    afa_cfg = config_for_checkpoint(None, ["device=cpu", "dataset.num_workers=0"], checkpoint)
    pseudo = export(afa_cfg, checkpoint, "train", labels)["scores"]["pseudo"]
    overrides = [f"dataset.label_dir={labels / 'pseudo'}", "device=cpu", "train.overwrite=true"]
    cfg = load_config(args.config, overrides + extra)
    train(cfg)
    final = Path(cfg.work_dir.dir) / cfg.work_dir.ckpt_dir / "last.pt"
    stage2 = infer(OmegaConf.merge(cfg, {"infer": {"crf": True}}), final)["scores"]
    print("\n" + side_by_side(pseudo, stage2, afa))
    minutes = (time.perf_counter() - start) / 60
    print(f"\nstage-2 demo finished in {minutes:.1f} min; outputs in {cfg.work_dir.dir}/")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
