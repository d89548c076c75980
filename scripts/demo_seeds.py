"""The demo's claims over several seeds: a benchmark, not a test (each seed is a full demo training).

    python scripts/demo_seeds.py [--seeds 0 1 2 3 4] [--config configs/demo.yaml] [--data demo_data]
        [key=value ...]

For each seed, trains the demo config with ``train.seed=<seed>`` (work directory
``<work_dir.dir>_seeds/seed_<seed>``) and reads its validation history back from ``train.log``; then
prints one row per seed: final cls F1, CAM, affinity-propagated CAM and segmentation mIoU, the best
segmentation mIoU and its iteration, whether the propagated CAM beats the CAM, whether the final
segmentation is within a point of the best, and the minutes the run took. Inference is not run (see
``scripts/demo.py`` for one full demo).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from datasets.demo import write_demo_dataset
from utils.cli import split_overrides
from utils.config import load_config
from utils.diagnostics.demo_report import validation_history, verdict
from utils.runtime.dist import configure_runtime
from utils.train.loop import train


def run_seed(config: str, data: Path, seed: int, extra: list[str]) -> tuple[list, float]:
    """Train one seed; returns its validation history and the minutes it took."""
    base = load_config(config, [f"dataset.root_dir={data}"])
    work = Path(f"{base.work_dir.dir}_seeds") / f"seed_{seed}"
    log = work / "train.log"
    overrides = [f"dataset.root_dir={data}", f"dataset.name_list_dir={data}", "device=cpu"]
    overrides += [f"train.seed={seed}", f"work_dir.dir={work}", *extra]
    start = time.perf_counter()
    train(load_config(config, overrides))
    return validation_history(log), (time.perf_counter() - start) / 60


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """Options and ``key=value`` overrides, in any order (also right after ``--seeds``)."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--data", type=Path, default=Path("demo_data"))
    return split_overrides(parser, argv)


def main(argv: list[str] | None = None) -> int:
    """Run the demo for each seed of the command line and tabulate its claims; 0 on success."""
    args, overrides = parse_args(argv)
    configure_runtime()
    if not (args.data / "val.txt").is_file():
        print(f"generated {write_demo_dataset(args.data)}")
    header = f"{'seed':>4s} {'cls F1':>7s} {'cam':>6s} {'aff':>6s} {'seg':>6s} {'best seg':>12s}"
    rows = [header + f" {'aff>cam':>8s} {'final~best':>10s} {'min':>5s}"]
    for seed in args.seeds:
        history, minutes = run_seed(args.config, args.data, seed, overrides)
        last, v = history[-1], verdict(history)
        best = f"{v.best_seg:.2f}@{v.best_step}"
        rows.append(
            f"{seed:4d} {last.cls_f1:7.2f} {last.cam:6.2f} {last.aff:6.2f} {last.seg:6.2f} {best:>12s}"
            f" {'yes' if v.aff_above_cam else 'NO':>8s} {'yes' if v.final_near_best else 'NO':>10s}"
            f" {minutes:5.1f}"
        )
        print("\n".join(rows), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
