"""Golden cases of AuxSegNet network, CAM refinement, pseudo labels, losses, inference (issue 22).

Each ``case_<name>(c)`` returns its checks. A case name moves from ``NOT_IMPLEMENTED``
(``utils/golden/cases.py``)
to ``AUXSEG_CASES`` when its component lands.

The heads model of ``auxseg_heads.npz`` (the authors' ``SegNet`` with the backbone stubbed out) serves
``auxseg_heads``, ``auxseg_cam_refine`` and ``auxseg_inference``; it is loaded through
``authors_state_to_ours`` (the unused NLBlock keys dropped) and strictly.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from model import auxseg_labels as labels
from model.auxseg_infer import INFERENCE_CRF, refine_cams, segment_image
from model.auxseg_losses import LOSS_NAMES, loss_terms, loss_weights, total_loss
from model.auxsegnet import AuxSegNet, authors_state_to_ours
from model.resnet38 import ResBlock, ResBlockBot, ResNet38
from utils.evaluation.crf import CRFParams, dense_crf
from utils.golden.harness import CaseData, Check, to_numpy

AFF_ATOL = 1e-6  # golden README: affinities and fusion weights are about 1/N


def _state(c: CaseData, prefix: str = "state/") -> dict[str, torch.Tensor]:
    """The case's ``state/…`` arrays as tensors, keys without the prefix."""
    return {k[len(prefix) :]: c.t(k) for k in c.arrays if k.startswith(prefix)}


def heads_model(case_path: Path, unary: bool = False) -> AuxSegNet:
    """The golden AuxSegNet heads (no backbone) from ``auxseg_heads.npz`` beside ``case_path``, in eval mode.

    With ``unary`` the AuxSegNet+ modules keep their initial values (W_u = 0, λ = 0).
    """
    heads = CaseData(case_path.parent / "auxseg_heads.npz")
    ours = authors_state_to_ours(_state(heads), with_backbone=False)
    model = AuxSegNet(heads.i("meta/num_classes"), None, heads.i("meta/c_feat"), heads.i("meta/mid"), unary)
    missing, unexpected = model.load_state_dict(ours, strict=not unary)
    if unexpected or (
        missing and not all(k.split(".")[0].endswith(("unary", "Wu", "lambda")) for k in missing)
    ):
        raise KeyError(f"golden heads state does not fit: missing {missing}, unexpected {unexpected}")
    return model.eval()


# --------------------------------------------------------------------------- ResNet38


def _block_from_ctor(ctor: str) -> nn.Module:
    """Our block from a ``meta/<block>/ctor`` text, e.g. ``ResBlock(8, 16, 16) {'stride': 2}``."""
    match = re.fullmatch(r"(\w+)\((.*)\) (\{.*\})", ctor)
    if match is None:
        raise ValueError(f"cannot read constructor {ctor!r}")
    cls = {"ResBlock": ResBlock, "ResBlock_bot": ResBlockBot}[match.group(1)]
    args = ast.literal_eval(f"({match.group(2)},)")
    return cls(*args, **ast.literal_eval(match.group(3)))


def case_auxseg_resblocks(c: CaseData) -> list[Check]:
    """Each residual block pattern of ResNet38 in eval mode: output and its pre-activation (spec §1.1)."""
    checks = []
    blocks = sorted({k.split("/")[1] for k in c.arrays if k.startswith("meta/") and k.endswith("/ctor")})
    for name in blocks:
        block = _block_from_ctor(str(c[f"meta/{name}/ctor"]))
        block.load_state_dict(_state(c, f"state/{name}/"), strict=True)
        with torch.no_grad():
            y, t = block.eval()(c.t(f"in/{name}/x"))
        checks += [
            Check(f"{name}/y", to_numpy(y), c[f"out/{name}/y"]),
            Check(f"{name}/x_bn_relu", to_numpy(t), c[f"out/{name}/x_bn_relu"]),
        ]
    return checks


def case_auxseg_backbone_tiny(c: CaseData) -> list[Check]:
    """The whole ResNet38 at reduced width: conv4/5/6, stride 8, what ``train()`` freezes (spec §1.2-1.3)."""
    net = ResNet38(c.i("meta/width_divisor"))
    net.load_state_dict(_state(c), strict=True)
    x = c.t("in/x")
    with torch.no_grad():
        feats = net.eval().forward_features(x)
        net.train()
        bn_training = [m.training for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
        params = dict(net.named_parameters())
        grads = [params[str(n)].requires_grad for n in c["meta/param_names"]]
        for m in net.modules():
            if isinstance(m, nn.Dropout2d):
                m.eval()
        same = torch.equal(net(x), feats.conv6)
        dropout_p = [m.p for m in net.modules() if isinstance(m, nn.Dropout2d)]
    return [
        Check("conv4", to_numpy(feats.conv4), c["out/conv4"]),
        Check("conv5", to_numpy(feats.conv5), c["out/conv5"]),
        Check("conv6", to_numpy(feats.conv6), c["out/conv6"]),
        Check("bn_training_after_train", np.array(bn_training), c["out/bn_training_after_train"], "exact"),
        Check("requires_grad_after_train", np.array(grads), c["out/requires_grad_after_train"], "exact"),
        Check("train_no_dropout", np.array(same), c["out/train_mode_without_dropout_equals_eval"], "exact"),
        Check("dropout_p", np.array(dropout_p), c["meta/dropout_p"]),
    ]


# --------------------------------------------------------------------------- heads


def case_auxseg_heads(c: CaseData) -> list[Check]:
    """The heads' forward in eval mode (spec §2): every output, the affinities and intermediate terms."""
    model = heads_model(c.path)
    feat = c.t("in/feat")
    with torch.no_grad():
        out = model(feat)
        inner = {}
        for task in ("seg", "sal"):
            pre = model.task_trunk(task, feat)
            inner[f"{task}_conv2_pre_relu"] = pre
            inner[f"{task}_W"] = model.nonlocal_term(task, torch.relu(pre), getattr(out, f"{task}_aff"))
    ours = out._asdict() | inner
    checks = []
    for key in c.outs():
        name = key.removeprefix("out/")
        atol = AFF_ATOL if name.endswith("_aff") or name == "cross_w_seg" else 1e-5
        checks.append(Check(name, to_numpy(ours[name]), c[key], atol=atol))
    return checks


# --------------------------------------------------------------------------- pseudo labels, losses, inference


def case_auxseg_cam_refine(c: CaseData) -> list[Check]:
    """``gen_pgt.py``'s CAM refinement through ``refine_cams`` on the golden heads (spec §3)."""
    model, checks = heads_model(c.path), []
    for k in range(c.i("meta/n_images")):
        size = tuple(int(v) for v in c[f"in/image_hw_{k}"])
        with torch.no_grad():
            out = model(c.t(f"in/feat_{k}"))
        ref = refine_cams(model, c.t(f"in/feat_{k}"), size)
        ours = {
            "in/cam": out.cam,
            "in/cross_aff": out.cross_aff,
            "in/refined_sal_logit": out.refined_sal,
            "out/cam_norm": ref.cam_norm,
            "out/refined_cam": ref.refined_cam,
            "out/refined_cam_up": ref.refined_cam_up,
            "out/refined_sal_prob_up": ref.sal_prob_up,
        }
        for key, value in ours.items():
            atol = AFF_ATOL if key == "in/cross_aff" else 1e-5
            checks.append(Check(f"{key}_{k}", to_numpy(value), c[f"{key}_{k}"], atol=atol))
    return checks


def case_auxseg_pseudo_labels(c: CaseData) -> list[Check]:
    """Saliency update (fusion with S₀, CRF, uint8) and the segmentation rule 0.2 / 0.06 (spec §4)."""
    checks = []
    for n in ("table", "rand"):
        sal = c.t(f"in/{n}_sal").reshape(c[f"out/{n}_label"].shape)  # (B, H, W)
        label = labels.segmentation_label(c.t(f"in/{n}_cam"), sal, c.t(f"in/{n}_cls_label"))
        checks.append(
            Check(f"{n}_label", to_numpy(label), c[f"out/{n}_label"], "exact" if n == "table" else "label")
        )
    crf_sal = labels.saliency_crf(c["in/crf_image"], c["in/crf_anno"])
    checks.append(Check("crf_sal", crf_sal, c["out/crf_sal"], rtol=1e-3))
    for k in range(c.i("meta/n_images")):
        fused = labels.fuse_saliency(c[f"in/refined_sal_prob_up_{k}"], c[f"in/sal0_u8_{k}"])
        marginal = labels.saliency_crf(c[f"in/image_{k}"], fused)
        seg = labels.segmentation_label(
            c.t(f"in/refined_cam_up_{k}"), torch.from_numpy(marginal), c.t(f"in/cls_label_{k}")
        )
        checks += [
            Check(f"fused_sal_{k}", fused, c[f"out/fused_sal_{k}"]),
            Check(f"sal_crf_{k}", marginal, c[f"out/sal_crf_{k}"], rtol=1e-3),
            Check(
                f"sal_pgt_u8_{k}", labels.saliency_label_u8(marginal[0]), c[f"out/sal_pgt_u8_{k}"], "exact"
            ),
            Check(f"seg_pgt_{k}", to_numpy(seg), c[f"out/seg_pgt_{k}"], "label"),
            Check(f"seg_pgt_png_{k}", to_numpy(seg[0]).astype(np.uint8), c[f"out/seg_pgt_png_{k}"], "label"),
        ]
    return checks


def case_auxseg_losses(c: CaseData) -> list[Check]:
    """The five losses of iteration 0 and their weighted sum (spec §6)."""
    out = SimpleNamespace(
        **{n: c.t(f"in/{n}") for n in ("x_cls", "init_sal", "refined_sal", "init_seg", "refined_seg")}
    )
    terms = loss_terms(out, c.t("in/cls_label"), c.t("in/sal_label"), c.t("in/seg_label"))
    names = [str(n) for n in c["meta/loss_names"]]
    w = c["meta/weights"]
    total = total_loss(terms, loss_weights(cls=float(w[0]), sal=float(w[1]), seg=float(w[3])))
    checks = [Check(f"{n}_loss", to_numpy(terms[n]), c[f"out/{n}_loss"]) for n in names]
    if tuple(names) != LOSS_NAMES:
        raise ValueError(f"loss names {names} differ from ours {LOSS_NAMES}")
    return checks + [Check("loss", to_numpy(total), c["out/loss"])]


def case_auxseg_inference(c: CaseData) -> list[Check]:
    """``infer_AuxAff.py`` without and with the CRF through ``segment_image`` (spec §8)."""
    model, checks = heads_model(c.path), []
    crf = partial(dense_crf, params=CRFParams(**INFERENCE_CRF))
    for k in range(c.i("meta/n_images")):
        feat, image = c.t(f"in/feat_{k}"), c[f"in/image_{k}"]
        with torch.no_grad():
            out = model(feat)
        plain = segment_image(model, feat, image)
        with_crf = segment_image(model, feat, image, crf)
        checks += [
            Check(f"init_seg_{k}", to_numpy(out.init_seg), c[f"out/init_seg_{k}"]),
            Check(f"refined_seg_{k}", to_numpy(out.refined_seg), c[f"out/refined_seg_{k}"]),
            Check(f"prob_{k}", plain.prob[None], c[f"out/prob_{k}"]),
            Check(f"pred_{k}", plain.pred, c[f"out/pred_{k}"], "label"),
            Check(f"crf_prob_{k}", with_crf.prob, c[f"out/crf_prob_{k}"], rtol=1e-3),
            Check(f"pred_crf_{k}", with_crf.pred, c[f"out/pred_crf_{k}"], "label"),
        ]
    return checks


AUXSEG_CASES: dict[str, Callable[[CaseData], list[Check]]] = {
    "auxseg_resblocks": case_auxseg_resblocks,
    "auxseg_backbone_tiny": case_auxseg_backbone_tiny,
    "auxseg_heads": case_auxseg_heads,
    "auxseg_cam_refine": case_auxseg_cam_refine,
    "auxseg_pseudo_labels": case_auxseg_pseudo_labels,
    "auxseg_losses": case_auxseg_losses,
    "auxseg_inference": case_auxseg_inference,
}
