"""Score reports of inference and pseudo-label export: percent scores per mode, and the printed table."""

from __future__ import annotations

import math

from torch import Tensor

from utils.evaluation.metrics import scores_from_confusion


def _percent(value: float) -> float | None:
    """A fraction as percent; None stays None (NaN in JSON is not portable)."""
    return None if math.isnan(value) else 100.0 * value


def scores_report(hists: dict[str, Tensor], names: list[str]) -> dict[str, dict]:
    """Per mode: mIoU, pAcc and mAcc in percent, and per-class IoU keyed by class name (None for classes
    absent from the ground truth, which the mIoU excludes as the reference does)."""
    report = {}
    for mode, hist in hists.items():
        s = scores_from_confusion(hist)
        report[mode] = {
            "miou": _percent(s["miou"]),
            "pAcc": _percent(s["pAcc"]),
            "mAcc": _percent(s["mAcc"]),
            "iou": {name: _percent(float(v)) for name, v in zip(names, s["iou"])},
        }
    return report


def format_table(scores: dict[str, dict], names: list[str]) -> str:
    """Classes (rows) × modes (columns) IoU table in percent, then mIoU, pAcc and mAcc.

    Classes absent from the ground truth (no IoU in any mode) get no row but one line that counts them.
    """
    modes = list(scores)
    absent = [n for n in names if all(scores[m]["iou"][n] is None for m in modes)]
    names = [n for n in names if n not in absent]
    width = max(16, *(len(n) + 2 for n in names)) if names else 16

    def row(title: str, values: list[float | None]) -> str:
        """One formatted table row."""
        cells = "".join(f"{'-' if v is None else f'{v:.2f}':>17}" for v in values)
        return f"{title:<{width}}{cells}"

    lines = [f"{'IoU (%)':<{width}}" + "".join(f"{m:>17}" for m in modes)]
    lines += [row(n, [scores[m]["iou"][n] for m in modes]) for n in names]
    if absent:
        lines.append(f"({len(absent)} classes absent from the ground truth, not scored)")
    lines.append("-" * (width + 17 * len(modes)))
    lines += [row(f"{key} (%)", [scores[m][key] for m in modes]) for key in ("miou", "pAcc", "mAcc")]
    return "\n".join(lines)
