"""Pseudo labels of a split for second-stage training, behind make_pseudo_labels.py: whatever the
checkpoint's method exports (``Method.pseudo_labels``), one folder per kind, scored against ground truth.

Per image of a split (whole image at its own size, eval mode, batch 1), with the ground-truth
image-level labels as the reference's training does. AFA (spec §5.4-5.5) writes:

- ``pseudo/<id>.png``: the AFA label. The multi-scale flip CAM (``cam.scales``) of the present
  classes is propagated by a random walk on the learned affinity of the largest scale with the low
  (0.35) and the high (0.55) background score, refined by PAR and combined: foreground where the
  high map says so, background where both say background, 255 where uncertain. This is
  ``propagated_label`` of training with the whole image as the box.
- ``refined/<id>.png``: the PAR-refined CAM label (the segmentation target before the switch).
- ``cam/<id>.png``: the plain CAM label thresholded at ``cam.bkg_score``.

A method with score maps (``Method.pseudo_scores``, MCTformer) also writes them as plain ``.npy``
files, its CRF export and overlays (``utils/evaluation/seed_export.py``).

The network runs in eval mode (training computes these labels in train mode, with drop path on and
the decoder updating BatchNorm statistics), so the export is deterministic.

Against ground truth (where the split has masks) ``report.json`` gives the mIoU of each; pixels a
label marks 255 are not scored (the reference ``pseudo_scores``), and the labelled fraction of the
pixels is reported beside it. The paper's AFA pseudo labels score 68.7 (train) / 66.5 (val) on VOC.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from common.errors import UsageError
from datasets.classes import save_label_png
from datasets.voc import CLS_LABELS_FILE, class_names, labels_for_names
from methods.base import Method
from methods.registry import build_method
from utils.evaluation.inputs import build_split_dataset, load_model
from utils.evaluation.metrics import confusion_matrix
from utils.evaluation.report import scores_report
from utils.evaluation.seed_export import write_seed_files
from utils.runtime.data import build_eval_loader, shard_indices
from utils.runtime.dist import all_reduce_sum, cleanup, configure_runtime, init_distributed
from utils.runtime.progress import progress
from utils.runtime.workdir import ensure_writable


class WithClassLabels(Dataset):
    """A split read without masks, given its image-level labels from ``cls_labels.txt``."""

    def __init__(self, dataset: Dataset, name_list_dir: str | Path, num_classes: int) -> None:
        """``dataset``'s images with the labels of ``cls_labels.txt`` in ``name_list_dir``."""
        self.dataset = dataset
        self.names = dataset.names
        self.labels = labels_for_names(self.names, Path(name_list_dir) / CLS_LABELS_FILE, num_classes)

    def __len__(self) -> int:
        """The number of images."""
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """The dataset's item with ``cls_label`` (K,)."""
        item = self.dataset[index]
        item["cls_label"] = torch.from_numpy(self.labels[item["name"]].copy())
        return item


@torch.no_grad()
def run_export(
    method: Method, model: nn.Module, loader: DataLoader, out_dir: Path, show: bool = True
) -> tuple[dict[str, Tensor], Tensor]:
    """Write the labels of this rank's images and score them against the loader's ``label``.

    Returns:
        {kind: (C, C) confusion matrix} (zero where there is no ground truth) and the counts
        (kinds + 2,): labelled pixels per kind, all pixels, images.
    """
    device = next(model.parameters()).device
    kinds, c, ignore = (
        method.pseudo_label_kinds,
        method.cfg.dataset.num_classes,
        method.cfg.dataset.ignore_index,
    )
    hists = {k: torch.zeros(c, c, dtype=torch.int64, device=device) for k in kinds}
    counts = torch.zeros(len(kinds) + 2, dtype=torch.int64, device=device)
    for batch in progress(loader, desc="pseudo labels", disable=not show, dynamic_ncols=True):
        image, gt = batch["image"].to(device), batch["label"][0].to(device)
        scored = method.pseudo_scores(model, image, batch["cls_label"].to(device))
        if scored is not None:  # a method that exports score maps too (MCTformer seeds)
            write_seed_files(out_dir, batch["name"][0], image, scored)
        labels = (
            scored.labels
            if scored is not None
            else method.pseudo_labels(model, image, batch["cls_label"].to(device))
        )
        for i, kind in enumerate(kinds):
            label = labels[kind]
            save_label_png(out_dir / kind / f"{batch['name'][0]}.png", label.cpu().numpy())
            hists[kind] += confusion_matrix(gt, label, c)
            counts[i] += int((label != ignore).sum())
        counts[-2:] += torch.tensor([gt.numel(), 1], device=device)
    return hists, counts


def export(
    cfg: DictConfig, checkpoint: str | Path, split: str = "train", out_dir: str | Path | None = None
) -> dict:
    """Export the pseudo labels of ``split`` and return the report (rank 0 writes ``report.json``)."""
    configure_runtime()
    info = init_distributed(cfg.device)
    method = build_method(cfg)
    if not method.pseudo_label_kinds:
        raise UsageError(f"method {cfg.method} exports no pseudo labels")
    dataset, has_labels = build_split_dataset(cfg, split)
    if not has_labels:
        dataset = WithClassLabels(dataset, cfg.dataset.name_list_dir, cfg.dataset.num_classes)
    out = Path(out_dir) if out_dir else Path(cfg.work_dir.dir) / "pseudo_labels" / split
    ensure_writable(out, "--out" if out_dir else "work_dir.dir")
    out.mkdir(parents=True, exist_ok=True)
    indices = shard_indices(len(dataset), info.rank, info.world_size, cfg.infer.max_images)
    loader = build_eval_loader(dataset, indices, cfg.dataset.num_workers)
    model = load_model(method, checkpoint, info.device)
    hists, counts = run_export(method, model, loader, out, show=info.is_main)
    for tensor in (*hists.values(), counts):
        all_reduce_sum(tensor)
    names = class_names(cfg.dataset.name_list_dir, cfg.dataset.num_classes)
    pixels = max(int(counts[-2]), 1)
    kinds = method.pseudo_label_kinds
    report = {
        "checkpoint": str(checkpoint),
        "method": cfg.method,
        "split": split,
        "num_images": int(counts[-1]),
        **method.pseudo_label_report(),
        "kinds": list(kinds),
        "labelled_percent": {k: 100.0 * int(counts[i]) / pixels for i, k in enumerate(kinds)},
        "units": "percent",  # scores and labelled fractions are 0..100
        "scores": scores_report(hists, names) if has_labels else None,
    }
    if info.is_main:
        (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        print(format_summary(report))
    cleanup()
    return report


def format_summary(report: dict) -> str:
    """One line per label kind: mIoU (if scored) and labelled fraction, in percent."""
    lines = [f"{report['num_images']} images of split {report['split']}"]
    for kind in report["kinds"]:
        scores = report["scores"][kind] if report["scores"] else None
        miou = "no ground truth" if scores is None else f"mIoU {scores['miou']:.2f} %"
        lines.append(f"  {kind:<8} {miou}  (labelled {report['labelled_percent'][kind]:.1f} % of pixels)")
    return "\n".join(lines)
