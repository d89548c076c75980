"""AuxSegNet (Xu et al., ICCV 2021): classification, saliency and segmentation with cross-task affinity.

Spec §2 (``network/AuxSegNet.py`` of the authors). On the backbone feature F (B, C, h, w), stride 8:

- classification: x_cls = fc8(GAP(Dropout2d(F))); CAM = fc8 on the undropped F (§2.1);
- per task t ∈ {seg, sal}: T = ReLU(conv2(ReLU(conv1(F)))); pairwise affinity A_t from θ(T), φ(T)
  (§2.3); enhancement T' = T + W(A_t g(T)) (§2.4); P = conv4(ReLU(conv3(T'))) (§2.2);
- cross-task affinity A_CT = w₀ ⊙ A_seg + w₁ ⊙ A_sal with w from ``cross_att`` (§2.5);
- refinement P_ref = A_CT P for both tasks, on logits (§2.6).

``unary=True`` adds the AuxSegNet+ unary affinity as we read the journal abstract (spec §9): each task
gets u_t = softmax_j(conv(T)_j) and a zero-initialised ``W_u``; the two unary maps are fused like the
pairwise ones (``cross_unary``), and the refinement adds λ·Σ_j u_CT[j] P_j with λ initialised to 0.
With those initial values the network equals the ICCV one exactly.

Parameter names are the authors' (``fc8``, ``seg_conv1`` … ``cross_att.2``); the backbone sits under
``backbone.``. The NLBlock's unused ``g`` / ``W_z`` are not built (spec §11, item 4);
``authors_state_to_ours`` drops them from an authors' checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.errors import ConfigError
from model import auxseg_heads as heads
from model.mit import MIT_VARIANTS, build_mit
from model.resnet38 import ResNet38, load_resnet38_pretrained
from model.weights import load_mit_pretrained

TASKS = ("seg", "sal")
# Parameters of the authors' NLBlock that their forward never uses (spec §2.3, §11 item 4).
DEAD_KEY_PARTS = (".g.", ".W_z.")


class AuxSegOutput(NamedTuple):
    """Everything one forward computes (spec §2.7), all at stride 8 (h × w = N).

    Attributes:
        x_cls: (B, K) classification logits.
        cam: (B, K, h, w) class activation maps (fc8 on the undropped feature, no ReLU).
        init_sal: (B, 1, h, w) initial saliency logit P_sal.
        refined_sal: (B, 1, h, w) refined saliency logit P_ref_sal.
        init_seg: (B, C, h, w) initial segmentation logits P_seg (C = K + 1, channel 0 background).
        refined_seg: (B, C, h, w) refined segmentation logits P_ref_seg.
        cross_aff: (B, N, N) cross-task pairwise affinity A_CT (rows do not sum to 1).
        seg_aff: (B, N, N) segmentation affinity A_seg (rows sum to 1).
        sal_aff: (B, N, N) saliency affinity A_sal (rows sum to 1).
        cross_w_seg: (B, N, N) fusion weight w₀ of A_seg (w₁ = 1 − w₀).
        cross_unary: (B, N) fused unary affinity u_CT, or None without ``unary``.
    """

    x_cls: Tensor
    cam: Tensor
    init_sal: Tensor
    refined_sal: Tensor
    init_seg: Tensor
    refined_seg: Tensor
    cross_aff: Tensor
    seg_aff: Tensor
    sal_aff: Tensor
    cross_w_seg: Tensor
    cross_unary: Tensor | None = None


class PairwiseEmbedding(nn.Module):
    """θ and φ of the authors' NLBlock (1×1 convs M → M with bias): keys ``theta.*``, ``phi.*``."""

    def __init__(self, mid: int, whiten: bool = False, temperature: float | None = None) -> None:
        """Two 1×1 convolutions of width ``mid`` (default initialisation, as the authors); ``whiten`` and
        ``temperature`` are the AuxSegNet+ options of spec §9.6 (off: as released)."""
        super().__init__()
        self.theta = nn.Conv2d(mid, mid, 1)
        self.phi = nn.Conv2d(mid, mid, 1)
        self.whiten, self.temperature = whiten, temperature

    def forward(self, t: Tensor) -> Tensor:
        """t (B, M, h, w) -> pairwise affinity (B, N, N), rows summing to 1 (spec §2.3)."""
        return heads.pairwise_affinity(self.theta(t), self.phi(t), self.whiten, self.temperature)


def _xavier_conv(cin: int, cout: int, kernel: int, dilation: int = 1, bias: bool = True) -> nn.Conv2d:
    """A conv with padding = dilation (3×3) or 0 (1×1), Xavier-uniform weight, default bias init."""
    pad = dilation if kernel == 3 else 0
    conv = nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation, bias=bias)
    nn.init.xavier_uniform_(conv.weight)
    return conv


class AuxSegNet(nn.Module):
    """The AuxSegNet network (spec §2), optionally with the AuxSegNet+ unary affinity (spec §9).

    Args:
        num_classes: segmentation classes C including background (21 for VOC); fc8 has C − 1 outputs.
        backbone: a module mapping (B, 3, H, W) images to one (B, feat_channels, h, w) feature map at
            stride 8; None means the input already is that feature (as in the golden cases).
        feat_channels: channels of the backbone feature (4096 for ResNet38).
        mid: width M of every head layer (128).
        unary: add the AuxSegNet+ unary affinity (False: the ICCV network exactly).
        whiten_pairwise: AuxSegNet+ option (spec §9.6): mean-subtract θ and φ before the product.
        pairwise_temperature: AuxSegNet+ option (spec §9.6): divide the pairwise logits by τ·√M.
    """

    def __init__(
        self,
        num_classes: int = 21,
        backbone: nn.Module | None = None,
        feat_channels: int = 4096,
        mid: int = 128,
        unary: bool = False,
        whiten_pairwise: bool = False,
        pairwise_temperature: float | None = None,
    ) -> None:
        """Build the heads (and keep ``backbone``) with the authors' initialisation."""
        super().__init__()
        self.num_classes, self.unary = num_classes, unary
        self.backbone = backbone
        self.dropout7 = nn.Dropout2d(0.5)
        self.fc8 = _xavier_conv(feat_channels, num_classes - 1, 1, bias=False)
        for task, outs in (("seg", num_classes), ("sal", 1)):
            self.add_module(f"{task}_conv1", _xavier_conv(feat_channels, mid, 3, dilation=6))
            self.add_module(f"{task}_conv2", _xavier_conv(mid, mid, 3, dilation=12))
            self.add_module(f"{task}_conv3", _xavier_conv(mid, mid, 3, dilation=18))
            self.add_module(f"{task}_conv4", _xavier_conv(mid, outs, 1, bias=False))
            self.add_module(f"{task}_att", PairwiseEmbedding(mid, whiten_pairwise, pairwise_temperature))
            self.add_module(f"{task}_g", nn.Conv2d(mid, mid, 1))
            self.add_module(f"{task}_W", nn.Conv2d(mid, mid, 1))
            if unary:
                self.add_module(f"{task}_unary", nn.Conv2d(mid, 1, 1))
                w_u = nn.Conv2d(mid, mid, 1)
                nn.init.zeros_(w_u.weight)
                nn.init.zeros_(w_u.bias)
                self.add_module(f"{task}_Wu", w_u)
        self.cross_att = heads.build_fusion()
        if unary:
            self.cross_unary = heads.build_fusion()
            self.unary_lambda = nn.Parameter(torch.zeros(()))

    # ------------------------------------------------------------------ pieces (also used by tests)

    def task_trunk(self, task: str, feat: Tensor) -> Tensor:
        """conv2(ReLU(conv1(F))) before its ReLU, (B, C, h, w) -> (B, M, h, w) (spec §2.2)."""
        conv1, conv2 = getattr(self, f"{task}_conv1"), getattr(self, f"{task}_conv2")
        return conv2(F.relu(conv1(feat)))

    def nonlocal_term(self, task: str, t: Tensor, aff: Tensor) -> Tensor:
        """W(Σ_j A[i, j] g(T)_j), the pairwise term added to T (spec §2.4). (B, M, h, w) -> same."""
        g, w = getattr(self, f"{task}_g"), getattr(self, f"{task}_W")
        return w(heads.aggregate(aff, g(t)))

    def unary_term(self, task: str, t: Tensor, unary: Tensor) -> Tensor:
        """W_u(Σ_j u[j] g(T)_j), the query-independent term (spec §9.3). Returns (B, M, 1, 1)."""
        g, w_u = getattr(self, f"{task}_g"), getattr(self, f"{task}_Wu")
        return w_u(heads.unary_context(unary, g(t)))

    def task_head(self, task: str, t_enh: Tensor) -> Tensor:
        """conv4(ReLU(conv3(T'))), (B, M, h, w) -> (B, C_task, h, w) logits (spec §2.2)."""
        conv3, conv4 = getattr(self, f"{task}_conv3"), getattr(self, f"{task}_conv4")
        return conv4(F.relu(conv3(t_enh)))

    # ------------------------------------------------------------------ forward

    def features(self, x: Tensor) -> Tensor:
        """The backbone feature F (B, C, h, w); the identity when there is no backbone."""
        return x if self.backbone is None else self.backbone(x)

    def forward(self, x: Tensor) -> AuxSegOutput:
        """x (B, 3, H, W) images (or (B, C, h, w) features without a backbone) -> ``AuxSegOutput``."""
        feat = self.features(x)
        pooled = self.dropout7(feat).mean(dim=(2, 3), keepdim=True)
        x_cls = self.fc8(pooled).flatten(1)  # (B, K)
        cam = F.conv2d(feat, self.fc8.weight)  # (B, K, h, w)
        preds, affs, unaries = {}, {}, {}
        for task in TASKS:
            t = F.relu(self.task_trunk(task, feat))  # (B, M, h, w)
            affs[task] = getattr(self, f"{task}_att")(t)  # (B, N, N)
            t_enh = t + self.nonlocal_term(task, t, affs[task])
            if self.unary:
                unaries[task] = heads.unary_affinity(getattr(self, f"{task}_unary")(t))  # (B, N)
                t_enh = t_enh + self.unary_term(task, t, unaries[task])
            preds[task] = self.task_head(task, t_enh)
        w = heads.cross_task_weights(affs["seg"], affs["sal"], self.cross_att)  # (B, 2, N, N)
        cross = heads.convex_mix(w, affs["seg"], affs["sal"])  # (B, N, N)
        u_ct = self.fuse_unary(unaries, feat.shape[-2:]) if self.unary else None
        refined = {task: self.refine(preds[task], cross, u_ct) for task in TASKS}
        return AuxSegOutput(
            x_cls, cam, preds["sal"], refined["sal"], preds["seg"], refined["seg"],
            cross, affs["seg"], affs["sal"], w[:, 0], u_ct,
        )  # fmt: skip

    def fuse_unary(self, unaries: dict[str, Tensor], grid: tuple[int, int]) -> Tensor:
        """u_CT = v₀ ⊙ u_seg + v₁ ⊙ u_sal with v from ``cross_unary`` on the (B, 2, h, w) stack (spec §9.2).

        Args:
            unaries: ``seg`` and ``sal`` unary affinities, each (B, N).
            grid: (h, w) with h·w = N.

        Returns:
            (B, N); it sums to 1 over positions (a convex mix of two distributions).
        """
        u_seg = unaries["seg"]
        b, n = u_seg.shape
        h, w = grid
        maps = [unaries[t].reshape(b, h, w) for t in TASKS]
        v = torch.softmax(self.cross_unary(torch.stack(maps, dim=1)), dim=1)  # (B, 2, h, w)
        return heads.convex_mix(v, maps[0], maps[1]).reshape(b, n)

    def refine(self, pred: Tensor, cross: Tensor, u_ct: Tensor | None = None) -> Tensor:
        """P_ref = A_CT P (spec §2.6), plus λ·Σ_j u_CT[j] P_j with the unary affinity (spec §9.4).

        Args:
            pred: (B, C, h, w) logits.
            cross: (B, N, N) cross-task affinity.
            u_ct: (B, N) fused unary affinity or None.

        Returns:
            (B, C, h, w).
        """
        out = heads.aggregate(cross, pred)
        if u_ct is not None:
            out = out + self.unary_lambda * heads.unary_context(u_ct, pred)
        return out


# --------------------------------------------------------------------------- groups, keys, builder


def param_groups(model: AuxSegNet) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(1× group, 10× group) of the authors' SGD (spec §2.8), listed explicitly rather than by name match.

    10×: fc8 and every ``seg_*`` / ``sal_*`` module (head convs, θ/φ, g/W, and the unary ``*_unary`` /
    ``*_Wu``). 1×: the backbone and the cross-task modules ``cross_att`` (spec §11 item 3), ``cross_unary``
    and ``unary_lambda``. Frozen parameters stay in their group (they never receive a gradient).
    """
    ten_x, one_x = [], []
    for name, p in model.named_parameters():
        head = name.split(".")[0]
        is_task = head == "fc8" or head.startswith(("seg_", "sal_"))
        (ten_x if is_task else one_x).append(p)
    return one_x, ten_x


def authors_state_to_ours(state: dict[str, Tensor], with_backbone: bool) -> dict[str, Tensor]:
    """Map an authors' ``SegNet`` state dict to ours: drop the unused NLBlock ``g`` / ``W_z`` keys (an
    explicit allow-list, spec §11 item 4) and, ``with_backbone``, move ResNet38 keys under ``backbone.``.

    Args:
        state: the authors' keys (``fc8.weight``, ``seg_att.theta.weight``, ``b2.conv_branch1.weight`` …).
        with_backbone: True when our model has a backbone (the authors' keys for it are top-level).
    """
    head_prefixes = ("fc8.", "seg_", "sal_", "cross_att.")
    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key.startswith(("seg_att.", "sal_att.")) and any(p in key for p in DEAD_KEY_PARTS):
            continue
        is_head = key.startswith(head_prefixes)
        out[key if is_head or not with_backbone else f"backbone.{key}"] = value
    return out


class MiTStride8(nn.Module):
    """The MiT encoder as AuxSegNet's backbone: patch strides (4, 2, 1, 1), so stage 4 is at stride 8.

    Our choice (spec §1.5 leaves it open): one stride-8 feature map as ResNet38 gives, with the same
    pretrained weights (strides do not change any parameter shape). Output: stage 4, (B, C4, H/8, W/8).
    """

    def __init__(self, name: str) -> None:
        """Build the variant ``name`` (``mit_b0`` … ``mit_b5``, ``mit_tiny``) with strides (4, 2, 1, 1)."""
        super().__init__()
        self.encoder = build_mit(name, strides=(4, 2, 1, 1))
        self.out_channels = self.encoder.embed_dims[3]

    def forward(self, x: Tensor) -> Tensor:
        """x (B, 3, H, W) -> stage-4 features (B, C4, ⌈H/8⌉, ⌈W/8⌉); no attention logits are kept."""
        return self.encoder(x, logit_blocks=()).features[3]


def build_auxsegnet(
    backbone: str = "resnet38",
    num_classes: int = 21,
    unary: bool = False,
    pretrained: str | Path | None = None,
    width_divisor: int = 1,
    mid: int = 128,
    whiten_pairwise: bool = False,
    pairwise_temperature: float | None = None,
) -> AuxSegNet:
    """AuxSegNet on ``resnet38`` or a MiT encoder (``mit_b1`` …), optionally loading ImageNet weights.

    Args:
        backbone: ``resnet38`` or a name of ``model.mit.MIT_VARIANTS``.
        num_classes: segmentation classes with background.
        unary: the AuxSegNet+ unary affinity (spec §9).
        pretrained: a weights file for the backbone (PSA-layout ResNet38, or a SegFormer ``mit_b*.pth``);
            a ResNet38 classification file's ``fc8.weight`` also initialises fc8 (spec §1.4, our choice).
        width_divisor: ResNet38 widths divided by this (tests); ignored for MiT.
        mid: head width M.
        whiten_pairwise, pairwise_temperature: the AuxSegNet+ pairwise options (spec §9.6), off by default.
    """
    if backbone == "resnet38":
        net: nn.Module = ResNet38(width_divisor)
        channels = net.out_channels
    elif backbone in MIT_VARIANTS:
        net = MiTStride8(backbone)
        channels = net.out_channels
    else:
        raise ConfigError(
            f"model.backbone: unknown {backbone!r}; choose resnet38 or one of {sorted(MIT_VARIANTS)}"
        )
    model = AuxSegNet(num_classes, net, channels, mid, unary, whiten_pairwise, pairwise_temperature)
    if pretrained is not None:
        if isinstance(net, ResNet38):
            head = load_resnet38_pretrained(net, pretrained)
            fc8 = head.get("fc8.weight")
            if fc8 is not None and fc8.shape == model.fc8.weight.shape:
                model.fc8.weight.data.copy_(fc8)
        else:
            load_mit_pretrained(net.encoder, pretrained)
    return model
