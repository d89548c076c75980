"""What ``make demo`` and ``scripts/demo_seeds.py`` print: the validation history of a run and the two
claims the demo must show (AFA's propagated CAM above the plain CAM; the final segmentation within a
point of the run's best), read back from the run's ``train.log``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_VALIDATION = re.compile(r"validation at iter (\d+) on \d+ images: cls F1 ([0-9.]+)")
_START = re.compile(r"training \S+ on \d+ process\(es\)")
_SCORE = re.compile(r"^(?:\S+ \S+ )?(cam|aff|seg)(?: \(%\))?: mIoU ([0-9.]+)")


@dataclass(frozen=True)
class Evaluation:
    """One in-training validation (mIoU in percent)."""

    step: int
    cls_f1: float
    cam: float
    aff: float
    seg: float


def validation_history(log: str | Path) -> list[Evaluation]:
    """The validations of the latest run in a ``train.log`` written by the engine, in order.

    The log is appended to: a fresh start (a "training ... process(es)" line not preceded by
    "resumed from") forgets earlier runs; a resumed run keeps them, and a repeated step's later
    entry wins.
    """
    found: dict[int, dict] = {}
    current: dict | None = None
    resumed = False
    for line in Path(log).read_text().splitlines():
        if _START.search(line):
            if not resumed:
                found, current = {}, None
            resumed = False
        elif "resumed from" in line:
            resumed = True
        elif match := _VALIDATION.search(line):
            current = {"step": int(match[1]), "cls_f1": 100 * float(match[2])}
            found[current["step"]] = current
        elif current is not None and (match := _SCORE.search(line)):
            current[match[1]] = float(match[2])
    return [Evaluation(**v) for v in found.values() if {"cam", "aff", "seg"} <= set(v)]


@dataclass(frozen=True)
class DemoVerdict:
    """The demo's two claims for one run."""

    aff_gain: float  # final aff mIoU − final cam mIoU
    final_seg: float
    best_seg: float
    best_step: int

    @property
    def aff_above_cam(self) -> bool:
        """The propagated CAM scored above the CAM at the last validation."""
        return self.aff_gain > 0

    @property
    def final_near_best(self) -> bool:
        """The final seg mIoU within a point of the best."""
        return self.best_seg - self.final_seg <= 1.0


def verdict(history: list[Evaluation]) -> DemoVerdict:
    """The claims from a run's validations (the last one is the final model)."""
    if not history:
        raise ValueError("the run logged no validation")
    last = history[-1]
    best = max(history, key=lambda e: e.seg)
    return DemoVerdict(last.aff - last.cam, last.seg, best.seg, best.step)


def history_table(history: list[Evaluation]) -> str:
    """Validation history as a fixed-width table (percent)."""
    lines = [f"{'iter':>6s} {'cls F1':>7s} {'cam':>7s} {'aff':>7s} {'aff-cam':>8s} {'seg':>7s}"]
    lines += [
        f"{e.step:6d} {e.cls_f1:7.2f} {e.cam:7.2f} {e.aff:7.2f} {e.aff - e.cam:+8.2f} {e.seg:7.2f}"
        for e in history
    ]
    return "\n".join(lines)


def verdict_lines(v: DemoVerdict) -> str:
    """Two lines stating whether the run shows what AFA claims."""
    yes = {True: "yes", False: "NO"}
    return (
        f"affinity-propagated CAM above the CAM: {yes[v.aff_above_cam]} ({v.aff_gain:+.2f} mIoU)\n"
        f"final seg within a point of the best: {yes[v.final_near_best]} "
        f"(final {v.final_seg:.2f}, best {v.best_seg:.2f} at iter {v.best_step})"
    )
