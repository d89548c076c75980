"""The MCTformer demo: V2 from a tiny random DeiT on the generated shapes, on a CPU, in minutes.

    python scripts/demo_mctformer.py [--config configs/demo_mctformer.yaml] [--data demo_data]
                                     [--afa-work-dir work_dir_demo] [key=value ...]

1. writes the generated shapes dataset (scripts/make_demo_data.py) unless it is already there;
2. scores the untrained network (same seed, same initial weights as the run);
3. trains with the shared engine (``train_voc.py --config configs/demo_mctformer.yaml`` does the same);
4. prints the V2 seed mIoU and the class-token mAP before and after, beside AFA's final CAM mIoU on the
   same val images when the AFA demo has run (``make demo``: ``work_dir_demo/train.log``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from utils.cli import add_debug_flag, run, split_overrides
from utils.diagnostics.demo_report import validation_history
from utils.diagnostics.demo_setup import demo_config, untrained_scores
from utils.runtime.dist import configure_runtime
from utils.train.loop import train


def afa_cam_miou(work_dir: Path) -> tuple[float, int] | None:
    """AFA's last validated CAM mIoU (%) and its iteration from the AFA demo's log, or None."""
    log = work_dir / "train.log"
    if not log.is_file():
        return None
    history = validation_history(log)
    return (history[-1].cam, history[-1].step) if history else None


def report(before: dict, after: dict, afa: tuple[float, int] | None, afa_dir: Path) -> str:
    """The demo's table: seed mIoU and mAP, untrained vs trained, and AFA's CAM mIoU."""
    rows = [
        ("V2 seed mIoU", before["seed"]["miou"] * 100, after["seed"]["miou"] * 100),
        ("class-token mAP", before["image_scores"]["mAP"] * 100, after["image_scores"]["mAP"] * 100),
        ("class-token F1", before["cls_f1"] * 100, after["cls_f1"] * 100),
    ]
    lines = [f"{'metric (val, %)':22s} {'untrained':>10s} {'trained':>10s}"]
    lines += [f"{name:22s} {b:10.2f} {a:10.2f}" for name, b, a in rows]
    if afa is None:
        lines.append(f"AFA CAM mIoU: no AFA demo run in {afa_dir}/ (make demo writes it)")
    else:
        lines.append(f"{'AFA CAM mIoU':22s} {'':>10s} {afa[0]:10.2f}   ({afa_dir}/, iteration {afa[1]})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the MCTformer demo with the command line's options and overrides; 0 on success."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--config", default="configs/demo_mctformer.yaml")
    parser.add_argument("--data", type=Path, default=Path("demo_data"))
    parser.add_argument("--afa-work-dir", type=Path, default=Path("work_dir_demo"))
    add_debug_flag(parser)
    args, extra = split_overrides(parser, argv)
    configure_runtime()
    start = time.perf_counter()
    cfg = demo_config(args.config, args.data, extra)
    before = untrained_scores(cfg)
    after = train(cfg)
    print("\n" + report(before, after, afa_cam_miou(args.afa_work_dir), args.afa_work_dir))
    print(f"\ndemo finished in {(time.perf_counter() - start) / 60:.1f} min; outputs in {cfg.work_dir.dir}/")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
