"""Seed-map threshold sweep, MCTformer spec §5 (golden ``mct_eval_sweep``), and the standard protocols.

For a threshold t the prediction is argmax over [t, map_k at channel k+1] (ties to the lower
channel, so a map equal to t is background); ground-truth 255 is ignored; per class
IoU = TP / (T + P − TP + 1e-10) from counts summed over the whole set. Three numbers are reported,
each labelled:

- ``authors_greedy``: the authors' protocol (published 61.7 for V2): mIoU = mean over **all** classes
  (a class absent from ground truth and prediction counts 0), t = i/100 for i in [0, 60), stopping
  at the first t that does not strictly improve;
- ``authors_full_sweep``: the same mean, the best over the whole grid;
- ``standard``: the usual mean over the classes present in ground truth or prediction, at the
  greedy threshold.

Values are percent. FP and FN are the authors' means over all classes (background included) of
(P − TP)/(T + P − TP) and (T − TP)/(T + P − TP).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import MissingFileError
from datasets.io import read_label
from utils.evaluation.seed_export import load_seed_scores

IGNORE = 255
THRESHOLDS = tuple(i / 100 for i in range(0, 60))


def seed_prediction(
    keys: np.ndarray, maps: np.ndarray, threshold: float, num_classes: int = 21
) -> np.ndarray:
    """Label map of one image: argmax over [t, maps at keys + 1] (others 0), ties to the lower channel.

    Args:
        keys: (k,) 0-based foreground classes; maps: (k, H, W).

    Returns:
        (H, W) int64 in 0..num_classes-1.
    """
    scores = np.zeros((num_classes, *maps.shape[-2:]), dtype=np.float32)  # as the authors
    scores[0] = threshold
    scores[np.asarray(keys, np.int64) + 1] = maps
    return scores.argmax(axis=0)


def class_counts(pred: np.ndarray, gt: np.ndarray, num_classes: int = 21) -> np.ndarray:
    """(3, num_classes) int64 counts [TP, T (ground truth), P (prediction)] over pixels whose gt ≠ 255."""
    valid = gt != IGNORE
    p, g = pred[valid].astype(np.int64), gt[valid].astype(np.int64)
    tp = np.bincount(g[p == g], minlength=num_classes)[:num_classes]
    t = np.bincount(g, minlength=num_classes)[:num_classes]
    pc = np.bincount(p, minlength=num_classes)[:num_classes]
    return np.stack([tp, t, pc])


@dataclass
class SeedScores:
    """Scores of one threshold from the summed counts (percent)."""

    per_class_iou: np.ndarray  # (num_classes,) fractions
    miou_all: float  # mean over all classes (absent count 0), percent
    miou_present: float  # mean over classes with T + P > 0, percent
    fp: float
    fn: float


def scores_from_counts(counts: np.ndarray) -> SeedScores:
    """The authors' IoU, FP and FN from (3, C) [TP, T, P] counts, plus the present-class mean."""
    tp, t, p = (counts[i].astype(np.float64) for i in range(3))
    union = t + p - tp + 1e-10
    iou = tp / union
    present = (t + p) > 0
    return SeedScores(
        per_class_iou=iou,
        miou_all=float(np.mean(iou)) * 100,
        miou_present=float(np.mean(iou[present])) * 100 if present.any() else float("nan"),
        fp=float(np.mean((p - tp) / union)) * 100,
        fn=float(np.mean((t - tp) / union)) * 100,
    )


def sweep_counts(
    items: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]],
    thresholds: tuple[float, ...] = THRESHOLDS,
    num_classes: int = 21,
) -> np.ndarray:
    """Summed counts at every threshold: items of (gt (H, W), keys (k,), maps (k, H, W)) -> (T, 3, C)."""
    total = np.zeros((len(thresholds), 3, num_classes), dtype=np.int64)
    for gt, keys, maps in items:
        for i, t in enumerate(thresholds):
            total[i] += class_counts(seed_prediction(keys, maps, t, num_classes), gt, num_classes)
    return total


def greedy_stop(curve: list[float] | np.ndarray) -> tuple[int, int]:
    """The authors' first-peak search: (index of the best, number of values the loop saw).

    The loop stops at the first value not strictly greater than the best so far; that value is the
    last one seen.
    """
    best, best_i = -np.inf, 0
    for i, value in enumerate(curve):
        if value > best:
            best, best_i = value, i
        else:
            return best_i, i + 1
    return best_i, len(curve)


def threshold_sweep(counts: np.ndarray, thresholds: tuple[float, ...] = THRESHOLDS) -> dict:
    """The three labelled protocols from ``sweep_counts`` (module docstring); values in percent."""
    per_t = [scores_from_counts(c) for c in counts]
    full = np.array([s.miou_all for s in per_t])
    best_i, seen = greedy_stop(full)
    full_i = int(np.argmax(full))
    best = per_t[best_i]
    return {
        "authors_greedy": {
            "threshold": thresholds[best_i],
            "miou": best.miou_all,
            "fp": best.fp,
            "fn": best.fn,
        },
        "authors_full_sweep": {"threshold": thresholds[full_i], "miou": float(full[full_i])},
        "standard": {"threshold": thresholds[best_i], "miou": best.miou_present},
        "curve_seen": full[:seen].tolist(),
        "full_curve": full.tolist(),
        "per_class_iou": (best.per_class_iou * 100).tolist(),
        "units": "percent",
    }


def evaluate_seed_folder(seed_dir: str | Path, gt_paths: dict[str, Path], num_classes: int = 21) -> dict:
    """``threshold_sweep`` of an export's ``seed_scores``/``seed_keys`` against ground-truth PNGs.

    Args:
        seed_dir: the export folder (``make_pseudo_labels.py --out``) or its ``seed_scores``.
        gt_paths: image id -> mask PNG (class ids, 255 ignored), in the split's order.

    Raises:
        MissingFileError: naming the first image without a seed file or a mask.
    """

    def items():
        """(name, seed scores, ground-truth mask) per image; a missing mask named."""
        for name, gt_path in gt_paths.items():
            if not gt_path.is_file():
                raise MissingFileError(f"ground-truth mask {gt_path} does not exist")
            try:
                keys, maps = load_seed_scores(seed_dir, name)
            except FileNotFoundError as exc:
                raise MissingFileError(
                    f"no seed maps for {name} in {seed_dir}", "export them with scripts/make_pseudo_labels.py"
                ) from exc
            yield read_label(gt_path), keys, maps

    result = threshold_sweep(sweep_counts(items(), THRESHOLDS, num_classes))
    return {"num_images": len(gt_paths), **result}


def format_sweep(report: dict) -> str:
    """Three labelled lines: the authors' greedy protocol, the full sweep's best, the standard mean."""
    g, f, s = report["authors_greedy"], report["authors_full_sweep"], report["standard"]
    rows = [
        ("authors (greedy stop, mean over all classes)", g),
        ("authors' mean, best of the full sweep", f),
        ("standard (mean over present classes)", s),
    ]
    lines = [f"  {label:<46} mIoU {r['miou']:.2f} % at t = {r['threshold']:.2f}" for label, r in rows]
    return "\n".join([f"{report['num_images']} images", *lines])
