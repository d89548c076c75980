"""Why the affinity-propagated CAM beats the CAM or not: the validation walk against its bounds.

For each image of a split with ground truth (batch 1, eval mode, as in-training validation), the
multi-scale CAM is scored at the CAM's and the walk's background, and the random walk is scored
twice: with the learned affinity (what validation reports as ``aff``) and with a ground-truth
affinity (1 between tokens whose nearest-downsampled labels agree, else 0), the bound a perfect
affinity reaches with the same CAMs and window. Per class, the learned affinity's mean to tokens of
the same class and to the others, and the fraction of cross-class pairs saturated above 0.99 (the
affinity loss is L1 on probabilities, so a saturated pair gets almost no gradient).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from methods.afa_eval import EvalSettings, walk_label
from model.affinity import radius_mask
from model.cam import cam_to_label, multi_scale_cam
from utils.evaluation.metrics import confusion_matrix, scores_from_confusion

MAPS = ("cam", "cam_at_walk_bkg", "walk", "walk_gt_affinity")


def ground_truth_affinity(
    label: Tensor, grid: tuple[int, int], ignore_index: int = 255
) -> tuple[Tensor, Tensor]:
    """Token labels and the ground-truth affinity on a token grid.

    Args:
        label: (H, W) ground truth.
        grid: (h, w) token grid.

    Returns:
        tokens (N,) int64, nearest-downsampled labels; affinity (1, N, N) float, 1 where both tokens
        carry the same label that is not ``ignore_index``, else 0.
    """
    tokens = F.interpolate(label[None, None].float(), size=grid, mode="nearest").flatten().long()
    known = tokens != ignore_index
    same = (tokens[:, None] == tokens[None, :]) & known[:, None] & known[None, :]
    return tokens, same.float()[None]


def pair_statistics(aff: Tensor, tokens: Tensor, mask: Tensor, num_classes: int) -> Tensor:
    """Sums over one image's in-window pairs, per class c of the first token.

    Args:
        aff: (N, N) learned affinity; tokens: (N,) labels; mask: (N, N) bool radius window.

    Returns:
        (C, 5): Σ A(same), #same, Σ A(other), #other, #other with A > 0.99 (other: a known label ≠ c).
    """
    out = torch.zeros(num_classes, 5, dtype=torch.float64)
    known = tokens < num_classes
    for c in range(num_classes):
        mine = tokens == c
        if not mine.any():
            continue
        same = mine[:, None] & mine[None, :] & mask
        other = mine[:, None] & (known & ~mine)[None, :] & mask
        out[c] = torch.stack(
            [aff[same].sum(), same.sum(), aff[other].sum(), other.sum(), (aff[other] > 0.99).sum()]
        ).double()
    return out


@torch.no_grad()
def diagnose(model: nn.Module, loader: DataLoader, s: EvalSettings, device: torch.device) -> dict:
    """Scores of the four label maps of ``MAPS`` and the per-class affinity statistics.

    Returns:
        {"scores": {map: scores_from_confusion(...)}, "pairs": (C, 5) summed ``pair_statistics``,
        "num_images": int}.
    """
    model.eval()
    c = s.num_classes
    hist = {k: torch.zeros(c, c, dtype=torch.int64) for k in MAPS}
    pairs = torch.zeros(c, 5, dtype=torch.float64)
    count = 0
    for batch in loader:
        image, label, cls_label = (batch[k].to(device) for k in ("image", "label", "cls_label"))
        size = tuple(image.shape[-2:])
        out = model(image)
        cam = multi_scale_cam(model, image, s.cam_scales, with_affinity=False).cam
        grid = model.encoder.token_grid(*size)
        tokens, gt_aff = ground_truth_affinity(label[0], grid)
        maps = {
            "cam": cam_to_label(cam, cls_label, s.bkg_score),
            "cam_at_walk_bkg": cam_to_label(cam, cls_label, s.aff_bkg_score),
            "walk": walk_label(model, cam, out.aff_pred, cls_label, s),
            "walk_gt_affinity": walk_label(model, cam, gt_aff, cls_label, s),
        }
        mask = radius_mask(*grid, s.radius, image.device)
        for k in MAPS:
            hist[k] += confusion_matrix(label[0].cpu(), maps[k][0].cpu(), c)
        pairs += pair_statistics(out.aff_pred[0].float().cpu(), tokens.cpu(), mask.cpu(), c)
        count += 1
    return {"scores": {k: scores_from_confusion(hist[k]) for k in MAPS}, "pairs": pairs, "num_images": count}


def report_lines(result: dict, class_names: list[str]) -> list[str]:
    """A per-class table (IoU in percent) of ``diagnose``'s output."""
    scores, pairs = result["scores"], result["pairs"]
    head = f"{'class':>12} " + " ".join(f"{k:>16}" for k in MAPS)
    head += f" {'A same':>7} {'A other':>7} {'sat':>6}"
    lines = [head, f"{'mIoU':>12} " + " ".join(f"{100 * scores[k]['miou']:16.2f}" for k in MAPS)]
    for i, name in enumerate(class_names):
        p = pairs[i]
        ious = " ".join(f"{100 * float(scores[k]['iou'][i]):16.1f}" for k in MAPS)
        same, other = p[0] / max(p[1], 1), p[2] / max(p[3], 1)
        lines.append(f"{name:>12} {ious} {same:7.3f} {other:7.3f} {p[4] / max(p[3], 1):6.3f}")
    return lines
