"""The paper's pseudo labels for second-stage training (spec §5.4-5.5), behind make_pseudo_labels.py.

Per image of a split (whole image at its own size, eval mode, batch 1), with the ground-truth
image-level labels as the reference's training does:

- ``pseudo/<id>.png``: the AFA label. The multi-scale flip CAM (``cam.scales``) of the present
  classes is propagated by a random walk on the learned affinity of the largest scale with the low
  (0.35) and the high (0.55) background score, refined by PAR and combined: foreground where the
  high map says so, background where both say background, 255 where uncertain. This is
  ``propagated_label`` of training with the whole image as the box.
- ``refined/<id>.png``: the PAR-refined CAM label (the segmentation target before the switch).
- ``cam/<id>.png``: the plain CAM label thresholded at ``cam.bkg_score``.

The network runs in eval mode (training computes these labels in train mode, with drop path on and
the decoder updating BatchNorm statistics), so the export is deterministic.

Against ground truth (where the split has masks) ``report.json`` gives the mIoU of each; pixels a
label marks 255 are not scored (the reference ``pseudo_scores``), and the labelled fraction of the
pixels is reported beside it. The paper's AFA pseudo labels score 68.7 (train) / 66.5 (val) on VOC.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from datasets.classes import save_label_png
from datasets.voc import CLS_LABELS_FILE, class_names, labels_for_names
from model.cam import cam_to_label
from model.pseudo_labels import PseudoLabelSettings, whole_image_targets
from utils.data import build_eval_loader, shard_indices
from utils.dist import all_reduce_sum, cleanup, configure_runtime, init_distributed
from utils.engine import step_settings
from utils.infer import scores_report
from utils.infer_inputs import build_split_dataset, load_model
from utils.metrics import confusion_matrix
from utils.progress import progress
from utils.workdir import ensure_writable

KINDS = ("pseudo", "refined", "cam")


class ImagePseudoLabels(NamedTuple):
    """(H, W) int64 label maps of one image; ``pseudo`` and ``refined`` hold 255 where uncertain."""

    pseudo: Tensor
    refined: Tensor
    cam: Tensor


@torch.no_grad()
def pseudo_labels(
    model: nn.Module, image: Tensor, cls_label: Tensor, s: PseudoLabelSettings
) -> ImagePseudoLabels:
    """The three labels of one whole image: the training step's targets with the image as its box.

    Args:
        model: an ``AFANetwork`` in eval mode.
        image: (1, 3, H, W) normalised; cls_label: (1, K) image-level labels.
    """
    targets = whole_image_targets(model, image, cls_label, s)
    cam = cam_to_label(targets.cam, cls_label, s.bkg_score)
    return ImagePseudoLabels(targets.refined_aff_label[0], targets.refined_pseudo_label[0], cam[0])


class WithClassLabels(Dataset):
    """A split read without masks, given its image-level labels from ``cls_labels.txt``."""

    def __init__(self, dataset: Dataset, name_list_dir: str | Path, num_classes: int) -> None:
        self.dataset = dataset
        self.names = dataset.names
        self.labels = labels_for_names(self.names, Path(name_list_dir) / CLS_LABELS_FILE, num_classes)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.dataset[index]
        item["cls_label"] = torch.from_numpy(self.labels[item["name"]].copy())
        return item


@torch.no_grad()
def run_export(
    model: nn.Module,
    loader: DataLoader,
    s: PseudoLabelSettings,
    out_dir: Path,
    num_classes: int,
    show: bool = True,
) -> tuple[dict[str, Tensor], Tensor]:
    """Write the labels of this rank's images and score them against the loader's ``label``.

    Returns:
        {kind: (C, C) confusion matrix} (zero where there is no ground truth) and the counts
        (len(KINDS) + 2,): labelled pixels per kind, all pixels, images.
    """
    device = next(model.parameters()).device
    hists = {k: torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device) for k in KINDS}
    counts = torch.zeros(len(KINDS) + 2, dtype=torch.int64, device=device)
    for batch in progress(loader, desc="pseudo labels", disable=not show, dynamic_ncols=True):
        image, gt = batch["image"].to(device), batch["label"][0].to(device)
        labels = pseudo_labels(model, image, batch["cls_label"].to(device), s)
        for i, kind in enumerate(KINDS):
            label = getattr(labels, kind)
            save_label_png(out_dir / kind / f"{batch['name'][0]}.png", label.cpu().numpy())
            hists[kind] += confusion_matrix(gt, label, num_classes)
            counts[i] += int((label != s.ignore_index).sum())
        counts[-2:] += torch.tensor([gt.numel(), 1], device=device)
    return hists, counts


def export(
    cfg: DictConfig, checkpoint: str | Path, split: str = "train", out_dir: str | Path | None = None
) -> dict:
    """Export the pseudo labels of ``split`` and return the report (rank 0 writes ``report.json``)."""
    configure_runtime()
    info = init_distributed(cfg.device)
    dataset, has_labels = build_split_dataset(cfg, split)
    if not has_labels:
        dataset = WithClassLabels(dataset, cfg.dataset.name_list_dir, cfg.dataset.num_classes)
    out = Path(out_dir) if out_dir else Path(cfg.work_dir.dir) / "pseudo_labels" / split
    ensure_writable(out, "--out" if out_dir else "work_dir.dir")
    out.mkdir(parents=True, exist_ok=True)
    indices = shard_indices(len(dataset), info.rank, info.world_size, cfg.infer.max_images)
    loader = build_eval_loader(dataset, indices, cfg.dataset.num_workers)
    model = load_model(cfg, checkpoint, info.device)
    s = step_settings(cfg).pseudo
    hists, counts = run_export(model, loader, s, out, cfg.dataset.num_classes, show=info.is_main)
    for tensor in (*hists.values(), counts):
        all_reduce_sum(tensor)
    names = class_names(cfg.dataset.name_list_dir, cfg.dataset.num_classes)
    pixels = max(int(counts[-2]), 1)
    report = {
        "checkpoint": str(checkpoint),
        "split": split,
        "num_images": int(counts[-1]),
        "cam_scales": list(s.cam_scales),
        "labelled_percent": {k: 100.0 * int(counts[i]) / pixels for i, k in enumerate(KINDS)},
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
    for kind in KINDS:
        scores = report["scores"][kind] if report["scores"] else None
        miou = "no ground truth" if scores is None else f"mIoU {scores['miou']:.2f} %"
        lines.append(f"  {kind:<8} {miou}  (labelled {report['labelled_percent'][kind]:.1f} % of pixels)")
    return "\n".join(lines)
