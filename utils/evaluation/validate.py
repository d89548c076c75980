"""In-training validation: the method's maps scored as mIoU, and the multi-label F1 of its class logits.

Each rank evaluates its shard of the split in batches of same-size images (eval mode, no grad); the
method (``Method.validation_step``) predicts its named label maps, and the confusion matrices are
all-reduced, so every rank returns the same scores. AFA's maps are ``cam``, ``aff`` and ``seg``
(``methods/afa_eval.py``, spec §7.1).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader

from methods.base import Method
from utils.evaluation.metrics import confusion_matrix, multilabel_f1, scores_from_confusion
from utils.runtime.dist import all_reduce_sum
from utils.runtime.progress import progress


@torch.no_grad()
def validate(
    method: Method,
    model: nn.Module,
    loader: DataLoader,
    num_classes: int,
    device: torch.device,
    show: bool = True,
) -> dict:
    """Scores of ``method``'s validation maps over this rank's loader, summed over all ranks.

    Args:
        model: the unwrapped network (put in eval mode here, its mode restored after).
        loader: batches with ``image`` (B, 3, H, W), ``label`` (B, H, W) and ``cls_label`` (B, K).
        num_classes: C, background included (the confusion matrices' size).

    Returns:
        {name: scores for each of ``method.validation_maps``, "num_images": int, "cls_f1": float
        when the method returns class logits, and "image_scores": {name: mean over the scored images}
        when it returns per-image scores}; scores are ``scores_from_confusion`` dicts (fractions).
    """
    was_training = model.training
    model.eval()
    c = num_classes
    hist = {k: torch.zeros(c, c, dtype=torch.int64, device=device) for k in method.validation_maps}
    f1 = torch.zeros(3, dtype=torch.float64, device=device)  # (F1 sum, images with logits, images)
    extra: dict[str, torch.Tensor] = {}  # per-image score name -> (sum, scored images)
    for batch in progress(loader, desc="validate", disable=not show, leave=False, dynamic_ncols=True):
        image, label = batch["image"].to(device), batch["label"].to(device)
        cls_label = batch["cls_label"].to(device)
        pred = method.validation_step(model, image, cls_label)
        if pred.cls_logits is not None:
            f1[:2] += torch.stack(
                [multilabel_f1(cls_label, pred.cls_logits > 0).sum(), f1.new_tensor(len(image))]
            )
        f1[2] += len(image)
        add_image_scores(extra, pred.image_scores, device)
        for key in hist:
            hist[key] += confusion_matrix(label, pred.maps[key], c)
    for tensor in (*hist.values(), f1, *extra.values()):
        all_reduce_sum(tensor)
    model.train(was_training)
    results = {k: scores_from_confusion(h) for k, h in hist.items()}
    f1_entry = {"cls_f1": float(f1[0] / f1[1].clamp(min=1))} if f1[1] > 0 else {}
    scores = {k: float(v[0] / v[1]) for k, v in extra.items() if v[1] > 0}
    score_entry = {"image_scores": scores} if scores else {}
    return {**f1_entry, **score_entry, **results, "num_images": int(f1[2])}


def add_image_scores(
    totals: dict[str, torch.Tensor], scores: dict[str, torch.Tensor] | None, device: torch.device
) -> None:
    """Add a batch's per-image scores ``{name: (B,)}`` (NaN = not scored) to ``totals``' (sum, count)."""
    for name, values in (scores or {}).items():
        values = values.to(device=device, dtype=torch.float64)
        scored = values[~torch.isnan(values)]
        total = totals.setdefault(name, torch.zeros(2, dtype=torch.float64, device=device))
        total += torch.stack([scored.sum(), scored.new_tensor(float(len(scored)))])
