"""SegFormer (Xie et al., NeurIPS 2021) as a fully supervised segmentation network: the MiT encoder of
``model/mit.py`` and the all-MLP decoder of ``model/heads.py``; logits at 1/4 of the input."""

from __future__ import annotations

from torch import Tensor, nn

from model.heads import SegFormerHead
from model.mit import MixVisionTransformer, build_mit

SEGFORMER_STRIDES: tuple[int, ...] = (4, 2, 2, 2)  # SegFormer: stages at strides 4, 8, 16, 32


class SegFormer(nn.Module):
    """MiT encoder + SegFormer head.

    Args:
        backbone: a MiT variant (``mit_b0`` … ``mit_b5``, ``mit_tiny`` for tests).
        num_classes: C, background included.
        embed_dim: decoder width (SegFormer: 256 for B0/B1, 768 for B2-B5).
        strides: patch-embedding strides of the four stages.
        drop_path_rate: encoder stochastic depth (SegFormer: 0.1).
        dropout: Dropout2d before the decoder's classifier (0.1).
    """

    def __init__(
        self,
        backbone: str,
        num_classes: int,
        embed_dim: int = 256,
        strides: tuple[int, ...] = SEGFORMER_STRIDES,
        drop_path_rate: float = 0.1,
        dropout: float = 0.1,
    ) -> None:
        """The encoder of ``backbone`` and a decoder of ``embed_dim`` channels for ``num_classes``."""
        super().__init__()
        self.encoder: MixVisionTransformer = build_mit(backbone, strides, drop_path_rate)
        self.decoder = SegFormerHead(self.encoder.embed_dims, embed_dim, num_classes, dropout)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) normalised -> logits (B, C, H/4, W/4)."""
        return self.decoder(list(self.encoder(x, ()).features))

    def segment(self, x: Tensor) -> Tensor:
        """Test-time logits: the forward, (B, C, h, w)."""
        return self(x)

    def param_groups(self) -> tuple[list[nn.Parameter], ...]:
        """Four groups: encoder parameters, encoder norms (no decay: mmseg's SegFormer recipe), decoder
        weights, decoder biases and BatchNorm (both at the head learning rate)."""
        decayed, norms = [], []
        for name, p in self.encoder.named_parameters():
            (norms if "norm" in name else decayed).append(p)
        head = list(self.decoder.parameters())
        return decayed, norms, [p for p in head if p.ndim > 1], [p for p in head if p.ndim == 1]
