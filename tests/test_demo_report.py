"""utils.diagnostics.demo_report: the validation history read back from train.log; the demo's two claims."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from utils.diagnostics.demo_report import (
    Evaluation,
    history_table,
    validation_history,
    verdict,
    verdict_lines,
)
from utils.runtime.logger import format_scores

RUN = """2026-12-01 10:00:00 training mit_tiny on 1 process(es), device cpu
2026-12-01 10:01:00 iter 50  cls 0.4425  seg 1.4958  aff 0.4945  total 0.4425  lr 9.444e-04  6.47s/it
2026-12-01 10:02:00 validation at iter {a} on 60 images: cls F1 0.8950
2026-12-01 10:02:00 cam: mIoU 53.65  pAcc 66.38  mAcc 89.00
2026-12-01 10:02:00 aff: mIoU 11.19  pAcc 19.02  mAcc 44.58
2026-12-01 10:02:00 seg: mIoU 3.30  pAcc 8.46  mAcc 7.37
    background 3.0, disc 1.0
2026-12-01 10:03:00 validation at iter {b} on 60 images: cls F1 0.9500
2026-12-01 10:03:00 cam: mIoU 70.00  pAcc 80.00  mAcc 85.00
2026-12-01 10:03:00 aff: mIoU 72.50  pAcc 81.00  mAcc 86.00
2026-12-01 10:03:00 seg: mIoU 80.25  pAcc 90.00  mAcc 88.00
    background 90.0, disc 70.5
"""


def test_history_of_the_latest_run_and_resumes(tmp_path):
    log = tmp_path / "train.log"
    resumed = "2026-12-01 11:00:00 resumed from w/checkpoints/last.pt at iteration 200\n"
    log.write_text(RUN.format(a=100, b=200) + RUN.format(a=300, b=400))  # a fresh second run
    assert [e.step for e in validation_history(log)] == [300, 400]
    log.write_text(RUN.format(a=100, b=200) + resumed + RUN.format(a=300, b=400))
    history = validation_history(log)
    assert [e.step for e in history] == [100, 200, 300, 400]
    assert history[1] == Evaluation(200, pytest.approx(95.0), 70.0, 72.5, 80.25)


def test_verdict_by_hand():
    history = [Evaluation(200, 90, 60, 50, 81.5), Evaluation(400, 95, 70, 72.5, 80.25)]
    v = verdict(history)
    assert v.aff_gain == pytest.approx(2.5) and v.aff_above_cam
    assert (v.best_seg, v.best_step, v.final_seg) == (81.5, 200, 80.25) and not v.final_near_best
    assert verdict([history[1]]).final_near_best
    assert verdict([Evaluation(1, 0, 70, 70, 1)]).aff_above_cam is False  # a tie is not "above"
    text = verdict_lines(v)
    assert "above the CAM: yes (+2.50 mIoU)" in text
    assert "within a point of the best: NO (final 80.25, best 81.50 at iter 200)" in text
    assert history_table(history).splitlines()[2].split() == [
        "400",
        "95.00",
        "70.00",
        "72.50",
        "+2.50",
        "80.25",
    ]
    with pytest.raises(ValueError, match="no validation"):
        verdict([])


def test_reads_the_lines_the_trainer_writes(tmp_path):
    """The history is parsed from ``format_scores``' own lines (percent-labelled), so a change of the
    log format cannot silently empty the demo's report."""
    scores = {"miou": 0.5, "pAcc": 0.6, "mAcc": 0.7, "iou": [0.4, 0.6]}
    lines = [
        "2026-12-01 10:00:00 training mit_tiny on 1 process(es), device cpu",
        "2026-12-01 10:02:00 validation at iter 200 on 60 images: cls F1 0.9000",
        *(f"2026-12-01 10:02:00 {format_scores(name, scores)}" for name in ("cam", "aff", "seg")),
    ]
    log = tmp_path / "train.log"
    log.write_text("\n".join(lines) + "\n")
    assert validation_history(log) == [Evaluation(200, pytest.approx(90.0), 50.0, 50.0, 50.0)]


def test_demo_seeds_takes_overrides_anywhere():
    """``--seeds 0 3 key=value`` keeps the override out of the seed list (it used to be parsed as a seed)."""
    module = runpy.run_path(str(Path(__file__).resolve().parents[1] / "scripts/demo_seeds.py"))
    args, overrides = module["parse_args"](["--seeds", "0", "3", "train.eval_iters=100", "--data", "d"])
    assert args.seeds == [0, 3] and str(args.data) == "d"
    assert overrides == ["train.eval_iters=100"]
