"""The AFA network: MiT encoder, CAM classifier, SegFormer decoder and the affinity head (spec §2).

The state-dict keys are the reference layout (``encoder.*``, ``decoder.*``, ``classifier.weight``,
``attn_proj.*``), so the authors' trained checkpoints load after stripping DDP's ``module.`` prefix.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

import torch
from torch import Tensor, nn

from model.heads import SegFormerHead, class_activation_map, pooled_class_logits
from model.mit import build_mit


class AFAOutput(NamedTuple):
    """Outputs of the training/inference forward.

    Attributes:
        cls_logits: (B, K) image-level class logits (K = foreground classes).
        seg_logits: (B, C, H/4, W/4) segmentation logits (C = K + 1).
        attn_logits: the encoder blocks' attention logits (see ``EncoderOutput``): the affinity head's
            last blocks and any requested with ``logit_blocks``; ``None`` for the others.
        aff_pred: (B, N, N) predicted affinity in (0, 1), N = h16·w16 tokens of the last stage.
        cam: (B, K, h16, w16) class activation maps of this pass before ReLU, detached, when asked
            for with ``with_cam`` (the ``cam.from_forward`` fast option); else None.
    """

    cls_logits: Tensor
    seg_logits: Tensor
    attn_logits: list[Tensor | None]
    aff_pred: Tensor
    cam: Tensor | None = None


class CAMOutput(NamedTuple):
    """Outputs of the CAM pass.

    Attributes:
        cam: (B, K, h16, w16) class activation maps before ReLU, detached.
        aff_pred: (B, N, N) predicted affinity, or None when the pass was asked for no affinity.
        attn_logits: as in ``AFAOutput``.
    """

    cam: Tensor
    aff_pred: Tensor | None
    attn_logits: list[Tensor | None]


def affinity_from_attention(attn_logits: list[Tensor], proj: nn.Conv2d, num_blocks: int = 2) -> Tensor:
    """AFA's affinity prediction from multi-head self-attention (spec §2.4).

    S = concat of the last ``num_blocks`` blocks' logits on the head axis; A = sigmoid(proj(S + Sᵀ)).
    The 1×1 projection mixes the symmetrised heads per token pair, so A is symmetric.

    Args:
        attn_logits: per-block logits; the last ``num_blocks`` are (B, nh, N, N).
        proj: 1×1 convolution from ``num_blocks·nh`` channels to 1.

    Returns:
        (B, N, N) affinities in (0, 1).
    """
    blocks = attn_logits[-num_blocks:]
    weight = proj.weight.view(num_blocks, -1).to(blocks[0].dtype)  # (num_blocks, nh), head order of S
    # proj is linear, so proj(S + Sᵀ) = W·S + (W·S)ᵀ + bias: mix the heads first, then symmetrise
    # one (B, N, N) map instead of num_blocks·nh of them (the same sum, in another order). Each
    # block's heads are mixed by one (1, nh) × (nh, N·N) product on its logits as they lie: no
    # concatenation and no permuted copy of the (B, num_blocks·nh, N, N) stack (an explicit bmm:
    # matmul's broadcasting of a 1-D weight copies the logits into another layout first).
    mixed = None
    for w, logits in zip(weight, blocks):
        b, nh, n, m = logits.shape
        part = torch.bmm(w.view(1, 1, nh).expand(b, 1, nh), logits.reshape(b, nh, n * m)).view(b, n, m)
        mixed = part if mixed is None else mixed + part
    return torch.sigmoid(mixed + mixed.transpose(-2, -1) + proj.bias.to(mixed.dtype))


class AFANetwork(nn.Module):
    """Learning Affinity from Attention, end to end.

    Args:
        backbone: MiT variant name (``mit_b1`` in the paper).
        num_classes: classes including background (21 VOC, 81 COCO).
        strides: patch-embedding strides of the four stages.
        embed_dim: decoder width.
        pooling: ``gmp`` or ``gap`` for the classification logits.
        aff_blocks: how many of the last encoder blocks feed the affinity head (2 in the paper).
        drop_path_rate: encoder stochastic depth.
    """

    def __init__(
        self,
        backbone: str = "mit_b1",
        num_classes: int = 21,
        strides: tuple[int, int, int, int] = (4, 2, 2, 1),
        embed_dim: int = 256,
        pooling: str = "gmp",
        aff_blocks: int = 2,
        drop_path_rate: float = 0.1,
    ) -> None:
        """Builds the MiT encoder, the classifier, the affinity head and the decoder (arguments above)."""
        super().__init__()
        self.encoder = build_mit(backbone, strides, drop_path_rate)
        variant = self.encoder.variant
        if not 1 <= aff_blocks <= variant.depths[3]:
            raise ValueError(
                f"aff_blocks={aff_blocks} must be within the {variant.depths[3]} last-stage blocks"
            )
        self.pooling = pooling
        self.aff_blocks = aff_blocks
        self.num_classes = num_classes
        self.decoder = SegFormerHead(variant.embed_dims, embed_dim, num_classes)
        self.classifier = nn.Conv2d(variant.embed_dims[3], num_classes - 1, 1, bias=False)
        self.attn_proj = nn.Conv2d(aff_blocks * variant.num_heads[3], 1, 1, bias=True)
        nn.init.kaiming_normal_(self.attn_proj.weight, a=math.sqrt(5), mode="fan_out")

    def _logit_request(self, with_affinity: bool, logit_blocks: Iterable[int]) -> set[int]:
        """The encoder blocks whose logits a pass needs: the affinity head's and the requested."""
        wanted = {int(i) for i in logit_blocks}
        if with_affinity:
            wanted |= set(range(-self.aff_blocks, 0))
        return wanted

    def forward(self, x: Tensor, logit_blocks: Iterable[int] = (), with_cam: bool = False) -> AFAOutput:
        """x (B, 3, H, W) normalised -> AFAOutput.

        Args:
            x: (B, 3, H, W) normalised.
            logit_blocks: encoder blocks whose attention logits to return besides the affinity head's
                (e.g. ``range(model.encoder.num_blocks)`` for per-layer supervision).
            with_cam: also return this pass's detached CAM (``AFAOutput.cam``; None otherwise).
        """
        enc = self.encoder(x, self._logit_request(True, logit_blocks))
        seg = self.decoder(enc.features)
        cls = pooled_class_logits(enc.features[3], self.classifier, self.pooling)
        aff = affinity_from_attention(enc.attn_logits, self.attn_proj, self.aff_blocks)
        cam = class_activation_map(enc.features[3], self.classifier).detach() if with_cam else None
        return AFAOutput(cls, seg, enc.attn_logits, aff, cam)

    def segment(self, x: Tensor) -> Tensor:
        """Segmentation logits only (test-time inference): fused attention in every block, no affinity.

        Args:
            x: (B, 3, H, W) normalised.

        Returns:
            (B, C, H/4, W/4), the ``seg_logits`` of ``forward``.
        """
        return self.decoder(self.encoder(x, ()).features)

    def forward_cam(
        self,
        x: Tensor,
        run_decoder: bool = True,
        with_affinity: bool = True,
        logit_blocks: Iterable[int] = (),
        logit_batch: int | None = None,
    ) -> CAMOutput:
        """The CAM pass (reference ``cam_only=True``).

        Args:
            x: (B, 3, H, W) normalised.
            run_decoder: the reference runs the decoder and discards its output; in train mode that
                updates the BatchNorm running statistics (and draws the Dropout2d mask). True keeps
                those side effects (``SegFormerHead.update_statistics``, which skips the unused
                logits); False skips the work.
            with_affinity: compute ``aff_pred`` (the reference does at every scale; only the largest
                scale's is used).
            logit_blocks: further encoder blocks whose attention logits to return.
            logit_batch: logits (and ``aff``) for the first ``logit_batch`` samples only (None: all).
        """
        enc = self.encoder(x, self._logit_request(with_affinity, logit_blocks), logit_batch)
        if run_decoder:
            self.decoder.update_statistics(enc.features)
        cam = class_activation_map(enc.features[3], self.classifier).detach()
        aff = None
        if with_affinity:
            aff = affinity_from_attention(enc.attn_logits, self.attn_proj, self.aff_blocks)
        return CAMOutput(cam, aff, enc.attn_logits)

    def param_groups(self) -> list[list[nn.Parameter]]:
        """The four optimiser groups of spec §2.6.

        Returns:
            [encoder weights without "norm" in the name, encoder norm parameters (frozen at lr 0 by the
            schedule), classifier and affinity projection, decoder].
        """
        groups: list[list[nn.Parameter]] = [[], [], [], []]
        for name, param in self.encoder.named_parameters():
            groups[1 if "norm" in name else 0].append(param)
        groups[2] = [self.classifier.weight, *self.attn_proj.parameters()]
        groups[3] = list(self.decoder.parameters())
        return groups
