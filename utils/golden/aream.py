"""Golden-case runners of the AReAM mode (spec §8.5; ``tests/golden/README.md``, AReAM cases).

The cases were computed with the AReAM authors' functions on DeiT-style inputs without class tokens
(the ``*_mct`` cases: with C class tokens first, cut by ``patch_block``, the CAM first weighted by
``class_weighted_cam``):
the attention inputs are **already scaled** logits (our encoder returns unscaled q·kᵀ, so the runners
pass scale 1.0 where training passes each block's d^-0.5). Each runner calls the functions the mode
runs: ``aream_cam`` (training CAM), ``layer_entropies`` + ``normalise_entropies``
(``scripts/layer_entropy.py``), ``deep_layer_loss`` (training loss).
"""

from __future__ import annotations

import torch
from torch import Tensor

from model import aream
from utils.golden.harness import CaseData, Check

SCALED = 1.0  # the cases' logits carry the 1/√d already


def case_aream_propagation(c: CaseData) -> list[Check]:
    """Eq. 9: the CAM refined by the entropy-weighted (and uniform) shallow attention (``aream_cam``)."""
    cam, logits, layer_index = c.t("in/cam"), c.t("in/attn_logits"), c.i("in/layer_index")
    size = tuple(int(v) for v in c["in/image_hw"])
    grid = tuple(cam.shape[-2:])
    attns = [aream.head_mean_attention(logits[layer], SCALED) for layer in range(layer_index)]
    weights = {
        "cam": aream.propagation_weights(c.t("in/ent")[:layer_index]),
        "cam_uniform": torch.ones(layer_index),
    }
    return [
        Check(key, aream.aream_cam(cam, attns, [grid] * layer_index, w, size).numpy(), c[f"out/{key}"])
        for key, w in weights.items()
    ]


def case_aream_entropy(c: CaseData) -> list[Check]:
    """Per-block spatial entropies and their normalisation (``layer_entropies``, ``normalise_entropies``)."""
    cam, logits, cls_label = c.t("in/cam"), c.t("in/attn_logits"), c.t("in/cls_label")
    grid = tuple(cam.shape[-2:])
    per_image = []
    for i in range(cam.shape[0]):  # batch 1 per image, as the offline pass
        attns = [aream.head_mean_attention(a, SCALED) for a in logits[i]]
        per_image.append(
            aream.layer_entropies(cam[i : i + 1], attns, [grid] * len(attns), cls_label[i : i + 1])
        )
    entropy = torch.cat(per_image, dim=1).mean(dim=1)  # (L,)
    return [
        Check("entropy", entropy.numpy(), c["out/entropy"]),
        Check("normalised", aream.normalise_entropies(entropy).numpy(), c["out/normalised"]),
    ]


def aff_loss_checks(
    c: CaseData, deep: list[Tensor], label: Tensor, grid: tuple[int, int], layer_index: int
) -> list[Check]:
    """The checks of an ``aream_aff_loss*`` case: dense affinity labels of ``label`` (B, H, W) on the
    h×w ``grid``, and the entropy-weighted and uniform ``deep_layer_loss`` of the deep blocks' logits
    ``deep`` (each (B, nh, h·w, h·w), blocks ``layer_index``…)."""
    scales, grids = [SCALED] * len(deep), [grid] * len(deep)
    per_layer, loss = aream.deep_layer_loss(deep, scales, grids, label, c.t("in/ent")[layer_index:])
    _, uniform = aream.deep_layer_loss(deep, scales, grids, label, torch.ones(len(deep)))
    return [
        Check("aff_label", aream.dense_affinity_labels(label, grid).numpy(), c["out/aff_label"], "label"),
        Check("per_layer", per_layer.numpy(), c["out/per_layer"]),
        Check("loss", loss.numpy(), c["out/loss"]),
        Check("loss_uniform", uniform.numpy(), c["out/loss_uniform"]),
    ]


def case_aream_aff_loss(c: CaseData) -> list[Check]:
    """Dense affinity labels and the entropy-weighted per-layer affinity loss (``deep_layer_loss``)."""
    label, logits, layer_index = c.t("in/seg_label"), c.t("in/attn_logits"), c.i("in/layer_index")
    grid = (label.shape[1] // 16, label.shape[2] // 16)
    deep = [logits[layer] for layer in range(layer_index, logits.shape[0])]
    return aff_loss_checks(c, deep, label, grid, layer_index)


def case_aream_propagation_mct(c: CaseData) -> list[Check]:
    """``aream_propagation`` with C class tokens: the CAM weighted by the all-layer class-to-patch
    attention (``class_weighted_cam``), then the shallow layers' patch blocks propagate it."""
    cam, logits, layer_index = c.t("in/cam"), c.t("in/attn_logits"), c.i("in/layer_index")
    tokens, size, grid = c.i("in/num_class_tokens"), tuple(int(v) for v in c["in/image_hw"]), cam.shape[-2:]
    attns = [aream.head_mean_attention(a, SCALED) for a in logits]
    weighted = aream.class_weighted_cam(cam, attns, tokens)
    shallow = [aream.patch_block(a, tokens) for a in attns[:layer_index]]
    weights = {
        "cam": aream.propagation_weights(c.t("in/ent")[:layer_index]),
        "cam_uniform": torch.ones(layer_index),
    }
    grids = [tuple(grid)] * layer_index
    return [
        Check(key, aream.aream_cam(weighted, shallow, grids, w, size).numpy(), c[f"out/{key}"])
        for key, w in weights.items()
    ]


def case_aream_entropy_mct(c: CaseData) -> list[Check]:
    """``aream_entropy`` on the patch block [:, C:, C:] of each layer's head-mean softmax attention."""
    cam, logits, cls_label = c.t("in/cam"), c.t("in/attn_logits"), c.t("in/cls_label")
    tokens, grid = c.i("in/num_class_tokens"), tuple(cam.shape[-2:])
    per_image = []
    for i in range(cam.shape[0]):
        attns = [aream.patch_block(aream.head_mean_attention(a, SCALED), tokens) for a in logits[i]]
        per_image.append(
            aream.layer_entropies(cam[i : i + 1], attns, [grid] * len(attns), cls_label[i : i + 1])
        )
    entropy = torch.cat(per_image, dim=1).mean(dim=1)
    return [
        Check("entropy", entropy.numpy(), c["out/entropy"]),
        Check("normalised", aream.normalise_entropies(entropy).numpy(), c["out/normalised"]),
    ]


def case_aream_aff_loss_mct(c: CaseData) -> list[Check]:
    """``aream_aff_loss`` on each deep layer's logits cut to the patch block before the sigmoid."""
    label, logits, layer_index = c.t("in/seg_label"), c.t("in/attn_logits"), c.i("in/layer_index")
    tokens, grid = c.i("in/num_class_tokens"), (label.shape[1] // 16, label.shape[2] // 16)
    deep = [aream.patch_block(logits[layer], tokens) for layer in range(layer_index, logits.shape[0])]
    return aff_loss_checks(c, deep, label, grid, layer_index)


AREAM_CASES = {
    "aream_propagation": case_aream_propagation,
    "aream_entropy": case_aream_entropy,
    "aream_aff_loss": case_aream_aff_loss,
    "aream_propagation_mct": case_aream_propagation_mct,
    "aream_entropy_mct": case_aream_entropy_mct,
    "aream_aff_loss_mct": case_aream_aff_loss_mct,
}
