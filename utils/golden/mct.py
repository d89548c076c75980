"""Golden cases of MCTformer model, weights and seed maps (issue 20; golden README "MCTformer cases").

Each ``case_<name>(c)`` returns its checks, computed through the functions map generation and
training run: ``MCTformer.forward`` / ``forward_attention``, ``interpolate_pos_embed``,
``deit_to_mct_state``, ``mct_seed_maps`` and ``threshold_sweep``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from model.deit import interpolate_pos_embed
from model.mct_seeds import mct_seed_maps
from model.mctformer import MCTformer, deit_to_mct_state
from utils.evaluation.seed_crf import crf_seed_scores, rebuild_image
from utils.evaluation.seed_eval import (
    class_counts,
    scores_from_counts,
    seed_prediction,
    sweep_counts,
    threshold_sweep,
)
from utils.golden.harness import CaseData, Check, to_numpy

POS_ATOL = 1e-6  # golden README: position embeddings


def golden_mct(c: CaseData, version: str) -> MCTformer:
    """The case's tiny MCTformer (``meta/*`` sizes) with its ``state/*`` weights, in eval mode."""
    state = {k[len("state/") :]: c.t(k) for k in c.outs("state/")}
    model = MCTformer(
        version,
        c.i("meta/num_classes"),
        c.i("meta/embed_dim"),
        c.i("meta/depth"),
        c.i("meta/num_heads"),
        c.i("meta/img_size"),
        c.i("meta/patch_size"),
    )
    model.load_state_dict(state, strict=True)
    return model.eval()


def _forward_checks(c: CaseData, model: MCTformer, x: torch.Tensor, prefix: str) -> dict[str, np.ndarray]:
    """Every output of one input, keyed by its golden name under ``prefix``."""
    nc, v2 = model.num_classes, model.version == "v2"
    with torch.no_grad():
        cls_logits, patch_logits = model(x)
        tokens, _, weights = model.forward_features(x, attn="weights")
        ours = {"cls_logits": cls_logits, "cls_tokens": tokens[:, :nc], "attn": torch.stack(weights)}
        if v2:
            ours |= {"patch_logits": patch_logits, "patch_tokens": tokens[:, nc:]}
        for k in c["in/n_layers"].tolist():
            if v2:
                ours[f"cams_fused_k{k}"] = model.forward_attention(x, k, "fused").cams
                ours[f"cams_mct_k{k}"] = model.forward_attention(x, k, "mct").cams
            else:
                ours[f"mtatt_k{k}"] = model.forward_attention(x, k).cams.flatten(2)
        maps = model.forward_attention(x, 3, "patchcam")
        ours |= {"patch_attn": maps.patch_attn, "cams_patchcam": maps.cams}
    return {f"{prefix}{k}": to_numpy(v) for k, v in ours.items()}


def _forward_case(c: CaseData, version: str) -> list[Check]:
    """All ``out/*`` of a forward case: the non-square input and the no-interpolation ``square/*``."""
    model = golden_mct(c, version)
    ours = _forward_checks(c, model, c.t("in/x"), "out/")
    ours |= _forward_checks(c, model, c.t("in/x_square"), "out/square/")
    return [Check(k, ours.get(k, np.empty(0)), c[k]) for k in c.outs()]


def case_mct_v2_forward(c: CaseData) -> list[Check]:
    """V2: tokens (no final norm), per-block attention, both logits, the three map types, patch attention."""
    return _forward_case(c, "v2")


def case_mct_v1_forward(c: CaseData) -> list[Check]:
    """V1: tokens, attention, channel-mean logits, flat class attention of the last K blocks."""
    return _forward_case(c, "v1")


def case_mct_pos_interp(c: CaseData) -> list[Check]:
    """``interpolate_pos_embed`` with the +0.1 scale factors, on a 14-grid and the forward model's."""
    nc, patch = c.i("meta/num_classes"), c.i("meta/patch_size")
    checks = []
    for tag in ("14", "small"):
        pos = c.t(f"in/pos_embed_{tag}")
        for i, (height, width) in enumerate(c[f"in/hw_{tag}"].tolist()):
            ours = interpolate_pos_embed(pos, nc, height, width, patch)
            key = f"out/pos_{tag}_{i}"
            checks.append(Check(key, to_numpy(ours), c[key], atol=POS_ATOL))
    return checks


def case_mct_finetune_init(c: CaseData) -> list[Check]:
    """The DeiT → MCTformer surgery (class token/position repeated C times, patch positions resized)."""
    deit = {k[len("in/deit/") :]: c.t(k) for k in c.outs("in/deit/")}
    nc, dim = c.i("meta/num_classes"), deit["cls_token"].shape[-1]
    depth = len({k.split(".")[1] for k in deit if k.startswith("blocks.")})
    checks = []
    for tag in ("v2_same", "v2_resize", "v1_same"):
        grid = c.i(f"meta/{tag}/model_grid")
        model = MCTformer(tag[:2], nc, dim, depth, 1, 16 * grid)  # the head count does not matter
        state = deit_to_mct_state(deit, model.state_dict(), nc)
        kept = sorted(set(model.state_dict()) - set(state))
        copied = sorted(set(state) - {"pos_embed", "cls_token"})
        checks += [
            Check(f"{tag}/{k}", to_numpy(state[k]), c[f"out/{tag}/{k}"], atol=POS_ATOL)
            for k in ("pos_embed", "cls_token")
        ]
        same_kept = kept == sorted(c[f"meta/{tag}/kept_from_init"].tolist())
        checks.append(Check(f"{tag}/kept_from_init", np.array(same_kept), np.array(True), "exact"))
        ref_copied = sorted(
            set(c[f"meta/{tag}/copied_from_checkpoint"].tolist()) - {"pos_embed", "cls_token"}
        )
        checks.append(Check(f"{tag}/copied", np.array(copied == ref_copied), np.array(True), "exact"))
    return checks


MCT_CASES: dict[str, Callable[[CaseData], list[Check]]] = {
    "mct_v2_forward": case_mct_v2_forward,
    "mct_v1_forward": case_mct_v1_forward,
    "mct_pos_interp": case_mct_pos_interp,
    "mct_finetune_init": case_mct_finetune_init,
}


def _seed_checks(c: CaseData, model: MCTformer, variant: str, i: int, **kwargs) -> list[Check]:
    """The keys and maps of one image and variant."""
    images = kwargs.pop("images", [c.t(f"in/x_{i}")])
    keys, maps = mct_seed_maps(model, images, c.t(f"in/label_{i}"), c.i("in/layer_index"), **kwargs)
    return [
        Check(f"{variant}/keys_{i}", to_numpy(keys), c[f"out/{variant}/keys_{i}"], "exact"),
        Check(f"{variant}/cam_{i}", to_numpy(maps), c[f"out/{variant}/cam_{i}"]),
    ]


def case_mct_attention_maps(c: CaseData) -> list[Check]:
    """V2 seed maps: fused (the authors' scripts), without refinement, patchcam, mct, multi-scale; CRF."""
    model = golden_mct(c, "v2")
    variants = {
        "fused": {},
        "fused_norefine": {"refine": False},
        "patchcam": {"attention_type": "patchcam"},
        "mct": {"attention_type": "mct"},
    }
    checks = []
    for i in (0, 1):
        for variant, kwargs in variants.items():
            checks += _seed_checks(c, model, variant, i, **kwargs)
        scaled = [c.t(f"in/x_{i}")] + [c.t(f"in/x_{i}_s{s}") for s in range(1, len(c["in/scales"]))]
        checks += _seed_checks(c, model, "fused_ms", i, images=scaled)
        keys, maps = mct_seed_maps(model, [c.t(f"in/x_{i}")], c.t(f"in/label_{i}"), c.i("in/layer_index"))
        image = rebuild_image(c.t(f"in/x_{i}"))
        for alpha in (1, 12):
            crf_keys, prob = crf_seed_scores(image, keys, maps, alpha)
            key = f"out/fused/crf{alpha}"
            checks.append(Check(f"crf{alpha}_keys_{i}", crf_keys, c[f"{key}_keys_{i}"], "exact"))
            checks.append(Check(f"crf{alpha}_{i}", prob, c[f"{key}_{i}"], rtol=1e-3))
    return checks


def case_mct_attention_maps_v1(c: CaseData) -> list[Check]:
    """V1 seed maps: the class attention of the last K blocks, with and without the refinement."""
    model = golden_mct(c, "v1")
    checks = []
    for i in (0, 1):
        checks += _seed_checks(c, model, "refine", i)
        checks += _seed_checks(c, model, "norefine", i, refine=False)
    return checks


MCT_CASES["mct_attention_maps"] = case_mct_attention_maps
MCT_CASES["mct_attention_maps_v1"] = case_mct_attention_maps_v1


def case_mct_eval_sweep(c: CaseData) -> list[Check]:
    """The authors' greedy threshold sweep (mean over all 21 classes), its curves, labels and FP/FN."""
    n, ncls = len([k for k in c.outs("in/gt_")]), c.i("meta/num_cls")
    items = [(c[f"in/gt_{i}"], c[f"in/keys_{i}"], c[f"in/cam_{i}"]) for i in range(n)]
    thresholds = tuple(float(t) for t in c["in/thresholds"])
    result = threshold_sweep(sweep_counts(items, thresholds, ncls), thresholds)
    best = result["authors_greedy"]
    t = best["threshold"]
    labels = [seed_prediction(keys, maps, t, ncls) for _, keys, maps in items]
    png = scores_from_counts(sum(class_counts(lab, gt, ncls) for lab, (gt, _, _) in zip(labels, items)))
    exact = {"rtol": 1e-12, "atol": 1e-12}  # integer counts: equal up to rounding
    checks = [
        Check("curve_miou", np.array(result["curve_seen"]), c["out/curve_miou"], **exact),
        Check("full_curve_miou", np.array(result["full_curve"]), c["out/full_curve_miou"], **exact),
        Check("best_threshold", np.array(t), c["out/best_threshold"], "exact"),
        Check("best_miou", np.array(best["miou"]), c["out/best_miou"], **exact),
        Check("best_per_class_iou", np.array(result["per_class_iou"]), c["out/best_per_class_iou"], **exact),
        Check("best_fp", np.array(best["fp"]), c["out/best_fp"], **exact),
        Check("best_fn", np.array(best["fn"]), c["out/best_fn"], **exact),
        Check("png_miou", np.array(png.miou_all), c["out/png_miou"], **exact),
    ]
    checks += [
        Check(f"png_label_{i}", lab.astype(np.uint8), c[f"out/png_label_{i}"], "exact")
        for i, lab in enumerate(labels)
    ]
    return checks


MCT_CASES["mct_eval_sweep"] = case_mct_eval_sweep
