"""Mix Transformer (MiT) encoder of SegFormer, returning every block's attention logits.

Spec §1. The encoder is SegFormer's MiT with configurable patch-embedding strides; AFA uses
``[4, 2, 2, 1]`` so that stage 4 runs at output stride 16 (spec §1.3). Besides the four feature maps
the forward returns the raw unscaled attention logits q·kᵀ of the blocks a caller asks for
(spec §1.4): the affinity head needs the last two with gradients, AReAM-style per-layer supervision
needs all of them, so they are returned explicitly rather than captured with hooks. Logits are a
per-call request (``logit_blocks``): a block nobody asks for runs fused
``scaled_dot_product_attention`` and never materialises its N×N map.

Parameter names follow the SegFormer ImageNet checkpoints exactly (``patch_embed{i}``,
``block{i}.{j}``, ``norm{i}``) so that ``mit_b*.pth`` loads strictly without any key mapping.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class MiTVariant:
    """Architecture hyper-parameters of one MiT variant (spec §1.1)."""

    embed_dims: tuple[int, int, int, int]
    num_heads: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    sr_ratios: tuple[int, int, int, int] = (8, 4, 2, 1)
    mlp_ratio: int = 4


MIT_VARIANTS: dict[str, MiTVariant] = {
    "mit_b0": MiTVariant((32, 64, 160, 256), (1, 2, 5, 8), (2, 2, 2, 2)),
    "mit_b1": MiTVariant((64, 128, 320, 512), (1, 2, 5, 8), (2, 2, 2, 2)),
    "mit_b2": MiTVariant((64, 128, 320, 512), (1, 2, 5, 8), (3, 4, 6, 3)),
    "mit_b3": MiTVariant((64, 128, 320, 512), (1, 2, 5, 8), (3, 4, 18, 3)),
    "mit_b4": MiTVariant((64, 128, 320, 512), (1, 2, 5, 8), (3, 8, 27, 3)),
    "mit_b5": MiTVariant((64, 128, 320, 512), (1, 2, 5, 8), (3, 6, 40, 3)),
    # Not a paper variant: a few-channel MiT for CPU tests and the demo (no pretrained weights exist).
    "mit_tiny": MiTVariant((16, 32, 48, 64), (1, 2, 2, 4), (1, 1, 1, 2), mlp_ratio=2),
}


class EncoderOutput(NamedTuple):
    """Encoder outputs.

    Attributes:
        features: ``[c1, c2, c3, c4]``, each (B, C_i, H_i, W_i).
        attn_logits: one entry per block in execution order (stage 1 blocks first); ``None`` for a
            block whose logits were not requested. For a block with spatial reduction sr > 1 it is
            (B, heads, N_kv, N_kv): the unscaled logits average-pooled over sr×sr query windows; for
            sr = 1 it is (B, heads, N, N).
    """

    features: list[Tensor]
    attn_logits: list[Tensor | None]


class DropPath(nn.Module):
    """Per-sample stochastic depth: zero a sample's residual branch with probability ``p``."""

    def __init__(self, p: float) -> None:
        """Stochastic depth: drop each sample's residual branch with probability ``p`` in training."""
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        """x (B, N, C) -> x, its samples zeroed with probability p and the rest scaled by 1/(1 − p) in
        training."""
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = torch.floor(
            keep + torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device)
        )
        return x / keep * mask


class OverlapPatchEmbed(nn.Module):
    """Strided convolution (kernel k, padding k//2) followed by LayerNorm (eps 1e-5) on tokens."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int, stride: int) -> None:
        """Overlapping patch embedding: a ``patch_size`` convolution at ``stride``, then LayerNorm."""
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, int, int]:
        """x (B, C_in, H, W) -> tokens (B, H'·W', C), H', W'."""
        x = self.proj(x)
        _, _, h, w = x.shape
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class EfficientAttention(nn.Module):
    """Multi-head self-attention with spatial reduction of keys and values (spec §1.2)."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int) -> None:
        """Multi-head attention over keys and values spatially reduced by ``sr_ratio`` (SegFormer)."""
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.sr_ratio = sr_ratio
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def _split_heads(self, x: Tensor) -> Tensor:
        """(B, N, C) -> (B, heads, N, C / heads)."""
        b, n, _ = x.shape
        return x.reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)  # (B, nh, n, d)

    def forward(
        self, x: Tensor, h: int, w: int, need_logits: bool = True, logit_batch: int | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """x (B, N, C) with N = h·w -> (out (B, N, C), attention logits or None, see EncoderOutput).

        Without ``need_logits`` the attention is one fused ``scaled_dot_product_attention`` call.
        ``logit_batch`` = m returns the logits of the first m samples only, (m, nh, ·, ·); the other
        samples take the fused path (the flipped half of a CAM pass needs none).
        """
        b, n, c = x.shape
        q = self._split_heads(self.q(x))  # (B, nh, N, d)
        if self.sr_ratio > 1:
            grid = x.transpose(1, 2).reshape(b, c, h, w)
            x = self.norm(self.sr(grid).flatten(2).transpose(1, 2))  # (B, N_kv, C)
        k, v = (self._split_heads(t) for t in self.kv(x).chunk(2, dim=-1))  # each (B, nh, N_kv, d)
        m = b if logit_batch is None else min(logit_batch, b)
        logits = None
        if self.sr_ratio == 1 and need_logits:
            logits = q[:m] @ k[:m].transpose(-2, -1)  # (m, nh, N, N)
            out = logits.mul(self.scale).softmax(dim=-1) @ v[:m]
            if m < b:
                out = torch.cat([out, F.scaled_dot_product_attention(q[m:], k[m:], v[m:])])
        else:
            out = F.scaled_dot_product_attention(q, k, v)
            if need_logits:
                logits = pooled_query_logits(q[:m], k[:m], h, w, self.sr_ratio)
        out = out.transpose(1, 2).reshape(b, n, c)
        return self.proj(out), logits


def pooled_query_logits(q: Tensor, k: Tensor, h: int, w: int, sr: int) -> Tensor:
    """Unscaled logits q·kᵀ average-pooled over sr×sr windows of the query grid (spec §1.4).

    The reference pools the (B, nh, h, w, N_kv) logits with an (sr, sr, 1) window; since q·kᵀ is
    linear in q, pooling the queries first gives the same map without materialising all N×N_kv logits.

    Args:
        q: (B, nh, h·w, d) queries.
        k: (B, nh, N_kv, d) keys, N_kv = ⌊h/sr⌋·⌊w/sr⌋.

    Returns:
        (B, nh, N_kv, N_kv).
    """
    b, nh, _, d = q.shape
    grid = q.transpose(2, 3).reshape(b * nh, d, h, w)
    pooled = F.avg_pool2d(grid, sr, sr).reshape(b, nh, d, -1).transpose(2, 3)  # (B, nh, N_kv, d)
    return pooled @ k.transpose(-2, -1)


class MixFFN(nn.Module):
    """Linear -> 3×3 depthwise conv on the token grid -> GELU -> Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        """The Mix-FFN: linear, 3×3 depth-wise convolution, GELU, linear."""
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        """x (B, N, C) on an (h, w) token grid -> (B, N, C)."""
        x = self.fc1(x)
        b, n, c = x.shape
        x = self.dwconv(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)
        return self.fc2(self.act(x))


class DWConv(nn.Module):
    """3×3 depthwise convolution (wrapped so the key is ``mlp.dwconv.dwconv`` as in SegFormer)."""

    def __init__(self, dim: int) -> None:
        """3×3 depth-wise convolution of ``dim`` channels."""
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, C, h, w) -> (B, C, h, w)."""
        return self.dwconv(x)


class Block(nn.Module):
    """Pre-norm transformer block: x + DropPath(Attn(LN(x))), then x + DropPath(FFN(LN(x)))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int, sr_ratio: int, drop_path: float) -> None:
        """One transformer block: attention and Mix-FFN, each pre-normed, with stochastic depth."""
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = EfficientAttention(dim, num_heads, sr_ratio)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MixFFN(dim, dim * mlp_ratio)

    def forward(
        self, x: Tensor, h: int, w: int, need_logits: bool = True, logit_batch: int | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """x (B, N, C) on an (h, w) grid -> (out (B, N, C), this block's attention logits or None)."""
        out, logits = self.attn(self.norm1(x), h, w, need_logits, logit_batch)
        x = x + self.drop_path(out)
        x = x + self.drop_path(self.mlp(self.norm2(x), h, w))
        return x, logits


class MixVisionTransformer(nn.Module):
    """The four-stage MiT encoder.

    Args:
        variant: architecture hyper-parameters.
        strides: patch-embedding strides of the four stages; AFA uses (4, 2, 2, 1).
        drop_path_rate: stochastic depth grows linearly from 0 to this over all blocks (spec §1.6).
        in_chans: input channels.
    """

    def __init__(
        self,
        variant: MiTVariant,
        strides: tuple[int, int, int, int] = (4, 2, 2, 1),
        drop_path_rate: float = 0.1,
        in_chans: int = 3,
    ) -> None:
        """The four stages of ``variant`` with the patch-embedding ``strides`` and stochastic depth rising
        linearly to ``drop_path_rate``."""
        super().__init__()
        self.variant = variant
        self.strides = tuple(strides)
        dims, depths = variant.embed_dims, variant.depths
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        for i in range(4):
            patch = 7 if i == 0 else 3
            prev = in_chans if i == 0 else dims[i - 1]
            self.add_module(f"patch_embed{i + 1}", OverlapPatchEmbed(prev, dims[i], patch, strides[i]))
            first = sum(depths[:i])
            blocks = [
                Block(
                    dims[i], variant.num_heads[i], variant.mlp_ratio, variant.sr_ratios[i], rates[first + j]
                )
                for j in range(depths[i])
            ]
            self.add_module(f"block{i + 1}", nn.ModuleList(blocks))
            self.add_module(f"norm{i + 1}", nn.LayerNorm(dims[i], eps=1e-6))
        self.apply(_init_weights)

    @property
    def embed_dims(self) -> tuple[int, int, int, int]:
        """The channels of the four stages."""
        return self.variant.embed_dims

    @property
    def num_blocks(self) -> int:
        """Blocks over all four stages (the length of ``EncoderOutput.attn_logits``)."""
        return sum(self.variant.depths)

    def stage(self, i: int) -> tuple[OverlapPatchEmbed, nn.ModuleList, nn.LayerNorm]:
        """The patch embedding, blocks and output norm of stage ``i`` (0-based)."""
        return (
            getattr(self, f"patch_embed{i + 1}"),
            getattr(self, f"block{i + 1}"),
            getattr(self, f"norm{i + 1}"),
        )

    def token_grid(self, height: int, width: int, stage: int = 3) -> tuple[int, int]:
        """Spatial size of stage ``stage``'s tokens (0-based) for an input of height × width."""
        for i in range(stage + 1):
            conv = self.stage(i)[0].proj
            k, s, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
            height, width = (height + 2 * p - k) // s + 1, (width + 2 * p - k) // s + 1
        return height, width

    def min_input_side(self) -> int:
        """The smallest image side (px) the encoder takes: every stage's token grid at least as wide as
        its spatial-reduction window (a smaller grid fails in the reduction convolution)."""
        side = 1
        while any(self.token_grid(side, side, i)[0] < sr for i, sr in enumerate(self.variant.sr_ratios)):
            side += 1
        return side

    def forward(
        self, x: Tensor, logit_blocks: Iterable[int] | None = None, logit_batch: int | None = None
    ) -> EncoderOutput:
        """x (B, 3, H, W) -> EncoderOutput (features at strides 4, 8, 16, 16 for strides (4,2,2,1)).

        Args:
            x: (B, 3, H, W) normalised images.
            logit_blocks: the block indices (0-based over all stages; negative counts from the end)
                whose attention logits to return; ``None`` returns every block's (spec §1.4).
            logit_batch: return the logits of the first ``logit_batch`` samples only (None: all B).
        """
        wanted = self.block_indices(logit_blocks)
        features, attn_logits = [], []
        for i in range(4):
            embed, blocks, norm = self.stage(i)
            x, h, w = embed(x)
            for block in blocks:
                x, logits = block(x, h, w, len(attn_logits) in wanted, logit_batch)
                attn_logits.append(logits)
            x = norm(x).transpose(1, 2).reshape(x.shape[0], -1, h, w)  # (B, C_i, h, w)
            features.append(x)
        return EncoderOutput(features, attn_logits)


    def block_indices(self, logit_blocks: Iterable[int] | None) -> frozenset[int]:
        """Non-negative block indices of a logit request (``None``: all blocks)."""
        n = self.num_blocks
        if logit_blocks is None:
            return frozenset(range(n))
        wanted = frozenset(int(i) for i in logit_blocks)
        if any(not -n <= i < n for i in wanted):
            raise ValueError(f"logit_blocks {sorted(wanted)} outside the encoder's {n} blocks")
        return frozenset(i % n for i in wanted)


def _init_weights(m: nn.Module) -> None:
    """Spec §1.7: trunc-normal linears, unit LayerNorms, He-normal (fan-out) convolutions."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def build_mit(
    name: str, strides: tuple[int, int, int, int] = (4, 2, 2, 1), drop_path_rate: float = 0.1
) -> MixVisionTransformer:
    """Build a MiT encoder by variant name (``mit_b0`` … ``mit_b5``, or ``mit_tiny`` for tests)."""
    if name not in MIT_VARIANTS:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(MIT_VARIANTS)}")
    return MixVisionTransformer(MIT_VARIANTS[name], tuple(strides), drop_path_rate)
