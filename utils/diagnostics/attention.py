"""The over-smoothing diagnostics of AReAM (S002 Fig. 2b, 4b, 10) for any checkpoint.

Per encoder block, over the images of a split (batch 1, single scale, eval mode):

- ``hellinger``: the mean Eq. 6 distance between the rows of the block's head-mean softmax attention
  (on the block's own grid); over-smoothing shows as the distance falling with depth;
- ``entropy_bits`` / ``entropy_normalised``: the offline entropy of ``methods/aream_entropy.py``;
- ``cam_miou``: the mIoU of the CAM refined by that block's attention alone (``propagate_on_grid``),
  thresholded at ``cam.bkg_score``, and the best mIoU over a sweep of background thresholds (the
  paper reports the best); beside the plain CAM (``none``) and the CAM refined by the mean of all
  blocks' attention (``average``, Eq. 5).

``write_outputs`` writes ``layers.csv`` (one row per block), ``summary.csv`` and three PNG plots.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from methods.aream_entropy import image_attention
from model import aream
from model.cam import cam_to_label, normalize_cam, resize
from utils.evaluation.metrics import confusion_matrix, scores_from_confusion
from utils.runtime.progress import progress

BKG_SWEEP = tuple(round(t, 2) for t in np.arange(0.05, 1.0, 0.05))
LAYER_COLUMNS = (
    "layer", "stage", "grid", "hellinger", "entropy_bits", "entropy_normalised",
    "cam_miou", "cam_miou_best", "best_bkg_score",
)  # fmt: skip


def block_stages(encoder: nn.Module) -> list[int]:
    """The 1-based stage of every encoder block, in execution order."""
    return [i + 1 for i, depth in enumerate(encoder.variant.depths) for _ in range(depth)]


def scored_cam(cam: Tensor, size: tuple[int, int]) -> Tensor:
    """A refined CAM as scored: resized to the image, ReLU, min-max. (1, K, h, w) -> (1, K, H, W)."""
    return normalize_cam(torch.relu(resize(cam, size)))


@torch.no_grad()
def analyse(
    model: nn.Module,
    loader: DataLoader,
    num_classes: int,
    bkg_scores: tuple[float, ...],
    conversion: str = "expand",
    show: bool = True,
) -> dict:
    """Accumulate the diagnostics over the loader (items with ``image``, ``label``, ``cls_label``).

    Returns:
        {"hellinger": (L,), "entropy_bits": (L,), "hists": (L + 2, T, C, C) confusion matrices of the
        blocks, ``average`` and ``none`` at each threshold, "grids": first image's grids, "num_images"}.
    """
    device = next(model.parameters()).device
    hell, ent, hists, n_img, n_ent, grids = None, None, None, 0, 0, None
    for batch in progress(loader, desc="attention analysis", disable=not show, dynamic_ncols=True):
        image, gt = batch["image"].to(device), batch["label"][0].to(device)
        cls_label = batch["cls_label"].to(device).float()
        a = image_attention(model, image)
        layers = len(a.attns)
        if hell is None:
            hell, ent = torch.zeros(layers, dtype=torch.float64), torch.zeros(layers, dtype=torch.float64)
            hists = torch.zeros(layers + 2, len(bkg_scores), num_classes, num_classes, dtype=torch.int64)
            grids = a.grids
        hell += torch.stack([aream.mean_hellinger(x)[0] for x in a.attns]).cpu()
        if cls_label.any():
            ent += aream.layer_entropies(a.cam, a.attns, a.grids, cls_label, conversion)[:, 0].cpu()
            n_ent += 1
        cams = [aream.propagate_on_grid(a.cam, x, g, conversion) for x, g in zip(a.attns, a.grids)]
        cams.append(aream.fused_propagation(a.cam, a.attns, a.grids, torch.ones(layers), conversion))
        cams.append(a.cam)
        for v, cam in enumerate(cams):
            score = scored_cam(cam, tuple(image.shape[-2:]))
            for t, bkg in enumerate(bkg_scores):
                hists[v, t] += confusion_matrix(gt, cam_to_label(score, cls_label, bkg)[0], num_classes).cpu()
        n_img += 1
    if n_img == 0:
        raise ValueError("no images to analyse")
    return {
        "hellinger": hell / n_img,
        "entropy_bits": ent / max(n_ent, 1),
        "hists": hists,
        "grids": grids,
        "num_images": n_img,
    }


def miou_table(hists: Tensor) -> np.ndarray:
    """(V, T, C, C) confusion matrices -> (V, T) mIoU in percent."""
    return np.array([[100 * scores_from_confusion(h)["miou"] for h in row] for row in hists])


def layer_rows(
    result: dict, stages: list[int], bkg_scores: tuple[float, ...], bkg_score: float
) -> list[dict]:
    """One dict per block with the ``LAYER_COLUMNS``, then the ``average`` and ``none`` rows."""
    miou = miou_table(result["hists"])
    at = bkg_scores.index(bkg_score)
    ent = result["entropy_bits"]
    norm = aream.normalise_entropies(ent) if ent.max() > ent.min() else torch.zeros_like(ent)
    rows = []
    for v in range(miou.shape[0]):
        best = int(miou[v].argmax())
        row = {"cam_miou": miou[v, at], "cam_miou_best": miou[v, best], "best_bkg_score": bkg_scores[best]}
        if v < len(stages):
            grid = "x".join(str(g) for g in result["grids"][v])
            row = {"layer": v, "stage": stages[v], "grid": grid, "hellinger": float(result["hellinger"][v]),
                   "entropy_bits": float(ent[v]), "entropy_normalised": float(norm[v]), **row}  # fmt: skip
        else:
            row = {"layer": ("average", "none")[v - len(stages)], **row}
        rows.append(row)
    return rows


def write_outputs(out_dir: str | Path, rows: list[dict]) -> list[Path]:
    """``layers.csv`` (blocks), ``summary.csv`` (average, none) and ``hellinger.png``, ``entropy.png``,
    ``cam_miou.png``; returns the written paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    blocks = [r for r in rows if isinstance(r["layer"], int)]
    others = [r for r in rows if not isinstance(r["layer"], int)]
    paths = [out / "layers.csv", out / "summary.csv"]
    for path, part, columns in (
        (paths[0], blocks, LAYER_COLUMNS),
        (paths[1], others, LAYER_COLUMNS[:1] + LAYER_COLUMNS[6:]),
    ):
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            for r in part:
                writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return paths + plot(out, blocks, others)


def plot(out: Path, blocks: list[dict], others: list[dict]) -> list[Path]:
    """Three line plots over the block index (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["layer"] for r in blocks]
    specs = (
        ("hellinger.png", ["hellinger"], "mean Hellinger distance between attention rows (Eq. 6)"),
        ("entropy.png", ["entropy_bits"], "entropy of the layer-refined CAM (bits)"),
        ("cam_miou.png", ["cam_miou", "cam_miou_best"], "mIoU (%) of the CAM refined by one layer"),
    )
    paths = []
    for name, keys, title in specs:
        fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
        for key in keys:
            ax.plot(x, [r[key] for r in blocks], marker="o", label=key)
        if name == "cam_miou.png":
            for r, style in zip(others, ("--", ":")):
                ax.axhline(r["cam_miou"], linestyle=style, color="gray", label=f"{r['layer']} (cam_miou)")
        ax.set_xticks(x)
        ax.set_xlabel("encoder block")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / name)
        plt.close(fig)
        paths.append(out / name)
    return paths
