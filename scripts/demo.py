"""The demo behind ``make demo``: AFA end to end on generated data, on a CPU, in minutes.

    python scripts/demo.py [--config configs/demo.yaml] [--data demo_data] [key=value ...]

1. writes the generated shapes dataset (scripts/make_demo_data.py) unless it is already there;
2. scores the untrained network (same seed, same initial weights as the run);
3. trains with the shared engine (``train_voc.py`` does exactly this);
4. runs ``infer_seg`` (multi-scale flip inference) with the final checkpoint on the val split;
5. prints untrained vs trained classification F1 and CAM, affinity and segmentation mIoU, the
   validation history (CAM vs affinity-propagated CAM over training), and whether the run shows what
   AFA claims: the propagated CAM above the CAM, the final segmentation within a point of the best.

``scripts/demo_seeds.py`` runs this for several seeds and tabulates the result.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from utils.cli import add_debug_flag, run, split_overrides
from utils.diagnostics.demo_report import history_table, validation_history, verdict, verdict_lines
from utils.diagnostics.demo_setup import demo_config, untrained_scores
from utils.evaluation.infer import infer
from utils.runtime.dist import configure_runtime
from utils.train.loop import train


def run_inference(cfg) -> dict:
    """``infer_seg.py`` on the val split with the final checkpoint; returns its scores (percent)."""
    checkpoint = Path(cfg.work_dir.dir) / cfg.work_dir.ckpt_dir / "last.pt"
    return infer(OmegaConf.merge(cfg, {"infer": {"crf": True}}), checkpoint)["scores"]


def report(before: dict, after: dict, inference: dict) -> str:
    """The demo's table: untrained vs trained F1 and CAM / affinity / segmentation mIoU, then
    the inference modes' mIoU."""
    rows = [("cls F1", before["cls_f1"] * 100, after["cls_f1"] * 100)]
    rows += [(f"{k} mIoU", before[k]["miou"] * 100, after[k]["miou"] * 100) for k in ("cam", "aff", "seg")]
    lines = [f"{'metric (val, %)':22s} {'untrained':>10s} {'trained':>10s}"]
    lines += [f"{name:22s} {b:10.2f} {a:10.2f}" for name, b, a in rows]
    titles = {"multi_scale": "seg mIoU, msc + flip", "multi_scale_crf": "seg mIoU, msc + CRF"}
    for mode, title in titles.items():
        if mode in inference:
            lines.append(f"{title:22s} {'':>10s} {inference[mode]['miou']:10.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the AFA demo with the command line's options and ``key=value`` overrides; 0 on success."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--data", type=Path, default=Path("demo_data"))
    add_debug_flag(parser)
    args, extra = split_overrides(parser, argv)
    configure_runtime()
    start = time.perf_counter()
    cfg = demo_config(args.config, args.data, extra)  # `make demo` again replaces the previous run
    before = untrained_scores(cfg)
    after = train(cfg)
    inference = run_inference(cfg)
    print("\n" + report(before, after, inference))
    history = validation_history(Path(cfg.work_dir.dir) / "train.log")
    print("\nvalidation during training (val, %):\n" + history_table(history))
    print("\n" + verdict_lines(verdict(history)))
    print(f"\ndemo finished in {(time.perf_counter() - start) / 60:.1f} min; outputs in {cfg.work_dir.dir}/")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
