"""Golden cases of MCTformer training: losses, validation mAP, the train step (issue 20).

Each ``case_<name>(c)`` returns its checks. A case name moves from ``NOT_IMPLEMENTED``
(``utils/golden/cases.py``)
to ``MCT_TRAIN_CASES`` when its component lands.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from methods.mctformer_parts import (
    batch_weighted_map,
    build_adamw,
    group_names,
    lr_used_in_epoch,
    mct_losses,
    mlsm,
    per_image_ap,
    schedule_factor,
)
from utils.golden.harness import CaseData, Check, to_numpy

PARAM_ATOL = 5e-7  # golden README, mct_train_step: parameters after AdamW
GRAD_TOL = {"rtol": 1e-3, "atol": 1e-6}
LR_RTOL = 1e-12


def _batches(c: CaseData, prefix: str = "in/cls_logits_") -> list[int]:
    """The batch indices j of the case's ``in/cls_logits_<j>`` inputs, in order."""
    return sorted(int(k[len(prefix) :]) for k in c.arrays if k.startswith(prefix))


def case_mct_losses(c: CaseData) -> list[Check]:
    """V1 loss = MLSM(cls); V2 = MLSM(cls) + MLSM(patch) (spec §2) on three batches."""
    checks = []
    for j in _batches(c):
        labels = c.t(f"in/labels_{j}")
        v1 = mct_losses(c.t(f"in/cls_logits_{j}"), None, labels)
        v2 = mct_losses(c.t(f"in/cls_logits_{j}"), c.t(f"in/patch_logits_{j}"), labels)
        ours = {
            "v1_loss": sum(v1.values()),
            "v2_cls_loss": v2["cls"],
            "v2_pat_loss": v2["patch"],
            "v2_loss": sum(v2.values()),
        }
        checks += [Check(f"out/{k}_{j}", to_numpy(v), c[f"out/{k}_{j}"]) for k, v in ours.items()]
    return checks


def case_mct_val_map(c: CaseData) -> list[Check]:
    """``engine.evaluate``'s per-image AP, batch-weighted mAP and mean MLSM (spec §3.6)."""
    checks, aps, losses = [], [], []
    for j in _batches(c):
        logits, labels = c.t(f"in/cls_logits_{j}"), c.t(f"in/labels_{j}")
        ap = per_image_ap(logits, labels)
        aps.append(ap)
        losses.append(float(mlsm(logits, labels)))
        checks.append(
            Check(f"out/per_image_ap_{j}", to_numpy(ap[~torch.isnan(ap)]), c[f"out/per_image_ap_{j}"])
        )
    checks.append(Check("out/mAP", np.array(batch_weighted_map(aps)), c["out/mAP"]))
    checks.append(Check("out/loss", np.array(np.mean(losses)), c["out/loss"]))
    return checks


def _train_model(c: CaseData) -> torch.nn.Module:
    """The case's V2 model with ``state/*`` loaded, in train mode (drop path 0)."""
    from model.mctformer import MCTformer

    model = MCTformer(
        "v2",
        c.i("meta/num_classes"),
        embed_dim=c.i("meta/embed_dim"),
        depth=c.i("meta/depth"),
        num_heads=c.i("meta/num_heads"),
        img_size=c.i("meta/img_size"),
        patch_size=c.i("meta/patch_size"),
        drop_path_rate=c.f("meta/drop_path_rate"),
    )
    state = {k[len("state/") :]: torch.from_numpy(np.array(c[k])) for k in c.outs("state/")}
    model.load_state_dict(state)
    return model.to(c.device).train()


def _without_noise(name: str, value: np.ndarray, dim: int) -> np.ndarray:
    """``value`` without the key-bias entries [D:2D] of a ``qkv.bias`` (softmax-invariant, README)."""
    if name.endswith("attn.qkv.bias") and value.size:
        return np.concatenate([value[:dim], value[2 * dim :]])
    return value


def _same_names(key: str, ours: list[str], c: CaseData) -> Check:
    """An exact check that ``ours`` lists the names of ``key`` in order (1 = same, 0 = not)."""
    return Check(key, np.array(float(ours == [str(n) for n in c[key]])), np.array(1.0), kind="exact")


def _schedule_checks(c: CaseData) -> list[Check]:
    """The rate of each of the 60 epochs (scheduler stepped after each epoch) and the groups."""
    base = c.f("meta/base_lr_scaled")
    used = [lr_used_in_epoch(e, base, 60, 5, 1e-6, 1e-5) for e in range(60)]
    return [Check("out/lr_used_per_epoch", np.array(used), c["out/lr_used_per_epoch"], rtol=LR_RTOL, atol=0)]


def case_mct_train_step(c: CaseData) -> list[Check]:
    """Two AdamW iterations of V2 at epoch ``meta/epoch``: losses, lr, gradients, parameters, groups."""
    model, dim = _train_model(c), c.i("meta/embed_dim")
    base, epoch = c.f("meta/base_lr_scaled"), c.i("meta/epoch")
    betas = tuple(float(b) for b in c["meta/betas"])
    optimizer = build_adamw(model, base, c.f("meta/weight_decay"), betas, c.f("meta/opt_eps"))
    for group in optimizer.param_groups:
        group["lr"] = base * schedule_factor(epoch, 1, base, 60, 5, 1e-6, 1e-5)
    no_decay, decay = group_names(model)
    checks = [
        _same_names("meta/no_decay", no_decay, c),
        _same_names("meta/decay", decay, c),
        *_schedule_checks(c),
    ]
    for it in (1, 2):
        optimizer.zero_grad(set_to_none=True)
        cls_logits, patch_logits = model(c.t(f"in/x_{it}"))
        losses = mct_losses(cls_logits, patch_logits, c.t(f"in/labels_{it}"))
        total = losses["cls"] + losses["patch"]
        total.backward()
        optimizer.step()
        ours = {"loss": total, "cls_loss": losses["cls"], "pat_loss": losses["patch"]}
        checks += [Check(f"out/iter{it}/{k}", to_numpy(v), c[f"out/iter{it}/{k}"]) for k, v in ours.items()]
        lr = np.array(optimizer.param_groups[0]["lr"])
        checks.append(Check(f"out/iter{it}/lr", lr, c[f"out/iter{it}/lr"], rtol=LR_RTOL, atol=0))
        for name, param in model.named_parameters():
            if it == 1:
                grad = np.zeros(0) if param.grad is None else to_numpy(param.grad).copy()
                ref = _without_noise(name, c[f"out/iter1/grad/{name}"], dim)
                checks.append(
                    Check(f"out/iter1/grad/{name}", _without_noise(name, grad, dim), ref, **GRAD_TOL)
                )
            ours_p = _without_noise(name, to_numpy(param).copy(), dim)
            ref_p = _without_noise(name, c[f"out/iter{it}/param/{name}"], dim)
            checks.append(Check(f"out/iter{it}/param/{name}", ours_p, ref_p, rtol=0, atol=PARAM_ATOL))
    return checks


MCT_TRAIN_CASES: dict[str, Callable[[CaseData], list[Check]]] = {
    "mct_losses": case_mct_losses,
    "mct_val_map": case_mct_val_map,
    "mct_train_step": case_mct_train_step,
}
