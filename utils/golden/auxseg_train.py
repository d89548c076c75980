"""Golden cases of AuxSegNet training: optimiser, data pipeline, the train step (issue 22).

Each ``case_<name>(c)`` returns its checks. A case name moves from ``NOT_IMPLEMENTED``
(``utils/golden/cases.py``)
to ``AUXSEG_TRAIN_CASES`` when its component lands.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from datasets.auxseg import auxseg_transform
from methods.auxsegnet import AuxSegNetMethod
from methods.auxsegnet_config import AuxSegConfig
from methods.auxsegnet_optim import build_poly_sgd
from model.auxseg_losses import LOSS_NAMES
from model.auxsegnet import AuxSegNet, authors_state_to_ours
from utils.golden.harness import CaseData, Check, to_numpy
from utils.train.step import train_step

LR_RTOL = 1e-9  # golden README: learning rates


def _poly_sgd_run(c: CaseData, suffix: str) -> list[Check]:
    """The optimiser alone over the recorded gradients, with the decay argument of ``suffix``."""
    params = [torch.nn.Parameter(row.clone()) for row in c.t("in/params")]
    optimizer, scheduler = build_poly_sgd(
        ([params[0]], [params[1]]),
        c.f("in/lr"),
        c.i("in/max_step"),
        weight_decay_arg=c.f(f"in/weight_decay_arg{suffix}"),
        power=c.f("meta/poly_power"),
        released_quirk=True,
    )
    lrs, values = [], []
    for grad in c.t("in/grads"):
        lrs.append([g["lr"] for g in optimizer.param_groups])
        for p, g in zip(params, grad, strict=True):
            p.grad = g.clone()
        optimizer.step()
        scheduler.step()
        values.append(torch.stack([p.detach().clone() for p in params]).numpy())
    group = optimizer.param_groups[0]
    settings = {k: np.asarray(group[k]) for k in ("momentum", "weight_decay", "nesterov", "dampening")}
    return [
        Check(f"lr_per_step{suffix}", np.asarray(lrs), c[f"out/lr_per_step{suffix}"], rtol=LR_RTOL, atol=0.0),
        Check(f"params_per_step{suffix}", np.stack(values), c[f"out/params_per_step{suffix}"]),
    ] + [
        Check(f"sgd_{k}{suffix}", v, c[f"out/sgd_{k}{suffix}"], kind="exact" if k == "nesterov" else "float")
        for k, v in settings.items()
    ]


def case_auxseg_poly_sgd(c: CaseData) -> list[Check]:
    """SGD with the momentum-slot quirk (decay argument 1e-5 and 0.5), two groups, poly lr kept past T."""
    return _poly_sgd_run(c, "") + _poly_sgd_run(c, "_wd05")


def case_auxseg_data_pipeline(c: CaseData) -> list[Check]:
    """``get_data_from_chunk`` with its recorded draws, through ``datasets.auxseg.auxseg_transform``."""
    checks, crop = [], c.i("meta/crop")
    for k in range(c.i("meta/n_iter")):
        crops, labels = [], []
        for b, name in enumerate(c[f"in/chunk_{k}"]):
            crops.append(
                auxseg_transform(
                    c[f"in/image_{name}"],
                    c[f"in/sal_pgt_u8_{name}"] / 255.0,
                    c[f"in/seg_pgt_{name}"],
                    c.f(f"in/scale_{k}"),
                    float(c[f"in/flip_p_{k}"][b]),
                    tuple(int(v) for v in c[f"in/crop_hp_wp_{k}"][b]),
                    crop,
                )
            )
            labels.append(c[f"in/cls_label_{name}"])
        fields = {"images": 0, "ori_images": 1, "sal": 2, "seg": 3}
        for key, index in fields.items():
            ours = np.stack([crop_[index] for crop_ in crops])
            kind = "float" if key == "images" else "exact"
            checks.append(Check(f"{key}_{k}", ours, c[f"out/{key}_{k}"], kind=kind, rtol=1e-5, atol=1e-5))
        checks.append(Check(f"labels_{k}", np.stack(labels), c[f"out/labels_{k}"], kind="exact"))
    return checks


class RecordedChannelDropout(nn.Module):
    """Dropout2d(0.5) with a recorded keep mask: x · mask · 2 per (image, channel); ``mask`` (B, C) in
    {0, 1}."""

    def __init__(self) -> None:
        """No mask until the first forward."""
        super().__init__()
        self.mask: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, h, w) -> (B, C, h, w)."""
        return x * (self.mask[:, :, None, None] * 2.0)


def _golden_heads(c: CaseData) -> AuxSegNet:
    """The heads of ``auxseg_heads`` (backbone stubbed: the input is the feature), from its stored state."""
    heads = CaseData(c.path.parent / "auxseg_heads.npz")
    state = {k.removeprefix("state/"): heads.t(k) for k in heads.arrays if k.startswith("state/")}
    feat, mid = state["fc8.weight"].shape[1], state["seg_conv2.weight"].shape[0]
    model = AuxSegNet(state["seg_conv4.weight"].shape[0], None, feat, mid)
    model.load_state_dict(authors_state_to_ours(state, with_backbone=False))
    return model


def _train_step_method(c: CaseData) -> AuxSegNetMethod:
    """The method as the case ran: released SGD (decay argument in the momentum slot), T = max_step."""
    cfg = OmegaConf.merge(
        OmegaConf.structured(AuxSegConfig),
        {
            "train": {"max_iters": c.i("meta/n_iter")},
            "optim": {
                "learning_rate": c.f("meta/lr"),
                "weight_decay": c.f("meta/wt_dec_arg"),
                "power": c.f("meta/poly_power"),
                "sgd_positional_quirk": True,
            },
        },
    )
    return AuxSegNetMethod(cfg)


def case_auxseg_train_step(c: CaseData) -> list[Check]:
    """Whole iterations through ``train_step`` in train mode, with the recorded dropout masks."""
    method, model = _train_step_method(c), _golden_heads(c).train()
    model.dropout7 = RecordedChannelDropout()
    optimizer, scheduler = method.configure_optimizers(model)
    names = dict(model.named_parameters())
    before = {k: p.detach().clone() for k, p in names.items()}
    checks, grad_tol = [], {"rtol": 1e-3, "atol": 1e-5}
    for k in range(c.i("meta/n_iter")):
        lrs = [g["lr"] for g in optimizer.param_groups]
        model.dropout7.mask = c.t(f"in/dropout7_mask_{k}")
        batch = {
            "image": c.t(f"in/feat_{k}"),
            "cls_label": c.t(f"in/cls_label_{k}"),
            "sal_label": c.t(f"in/sal_label_{k}").float(),
            "seg_label": c.t(f"in/seg_label_{k}").long(),
        }
        result = train_step(method, model, optimizer, scheduler, batch, k)
        out = result.output
        checks += [Check(f"{f}_{k}", to_numpy(getattr(out, f)), c[f"out/{f}_{k}"]) for f in LOSS_NAMES[1:]]
        checks += [
            Check(f"x_cls_{k}", to_numpy(out.x_cls), c[f"out/x_cls_{k}"]),
            Check(
                f"losses_{k}", np.array([result.losses[n].item() for n in LOSS_NAMES]), c[f"out/losses_{k}"]
            ),
            Check(f"loss_{k}", np.asarray(result.total.item()), c[f"out/loss_{k}"]),
            Check(f"lr_{k}", np.asarray(lrs), c[f"out/lr_{k}"], rtol=LR_RTOL, atol=0.0),
        ]
        for key in (x for x in c.outs(f"grad_step{k}/")):
            grad = names[key.split("/", 1)[1]].grad
            checks.append(Check(key, to_numpy(grad), c[key], **grad_tol))
        checks += _state_checks(c, k, names, before, lrs[0])
    return checks


def _state_checks(
    c: CaseData, k: int, names: dict[str, nn.Parameter], before: dict[str, Tensor], lr_1x: float
) -> list[Check]:
    """Parameters after step k (where stored); the 1× group through p_after − p_before ≈ −lr·grad."""
    checks = []
    for key in c.outs(f"state_after_step{k}/"):
        name = key.split("/", 1)[1]
        if name not in names:  # the authors' unused NLBlock g / W_z: not built here (spec §11 item 4)
            continue
        ours = to_numpy(names[name]).copy()  # the parameter moves on at the next step
        if name.startswith("cross_att."):
            ref_delta = c[key] - to_numpy(before[name]) if k == 0 else None
            if ref_delta is not None:
                delta = ours - to_numpy(before[name])
                checks.append(Check(f"{key} (delta)", delta, ref_delta, rtol=1e-3, atol=1e-9))
            continue
        checks.append(Check(key, ours, c[key], rtol=1e-4, atol=1e-6))
    return checks


AUXSEG_TRAIN_CASES: dict[str, Callable[[CaseData], list[Check]]] = {
    "auxseg_poly_sgd": case_auxseg_poly_sgd,
    "auxseg_data_pipeline": case_auxseg_data_pipeline,
    "auxseg_train_step": case_auxseg_train_step,
}
