"""The DeiT / ViT backbone with C class tokens (MCTformer spec §1.1-1.3).

A pre-norm ViT with patch 16, qkv bias, LayerNorm eps 1e-6, exact GELU and drop-path, carrying C
class tokens in front of the patch tokens. The module names are DeiT's (``cls_token``, ``pos_embed``,
``patch_embed.proj``, ``blocks.<l>.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}``, ``norm``),
so DeiT checkpoints and the authors' MCTformer checkpoints load unchanged. ``norm`` exists (it is in
every checkpoint) but no forward uses it (spec Q2).

Attention is fused (``scaled_dot_product_attention``) unless a caller asks for the weights
(``attn="weights"``: per-head post-softmax, ``"mean"``: their head mean, ``"logits"``: the scaled
pre-softmax logits); training asks for none, so it never builds the (L, B, nh, N, N) stack.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.errors import DataError
from model.mit import DropPath

ATTN_MODES = ("none", "weights", "mean", "logits")


def interpolate_pos_embed(pos_embed: Tensor, num_tokens: int, height: int, width: int, patch: int) -> Tensor:
    """Position embeddings for an H×W input (spec §1.3): class positions kept, patch positions bicubic.

    The patch positions are resampled with **scale factors** ((h + 0.1)/G, (w + 0.1)/G), not to a
    target size; they are returned unchanged only when h·w = G² and H = W.

    Args:
        pos_embed: (1, C + G², D), the C class positions first.
        num_tokens: C.
        height, width: the input's H, W in pixels; h = ⌊H/patch⌋, w = ⌊W/patch⌋.

    Returns:
        (1, C + h·w, D).
    """
    h, w = height // patch, width // patch
    grid_tokens = pos_embed.shape[1] - num_tokens
    if h * w == grid_tokens and height == width:
        return pos_embed
    side = math.sqrt(grid_tokens)
    g, dim = int(side), pos_embed.shape[-1]
    grid = pos_embed[:, num_tokens:].reshape(1, g, g, dim).permute(0, 3, 1, 2)
    out = F.interpolate(
        grid.float(), scale_factor=((h + 0.1) / side, (w + 0.1) / side), mode="bicubic", align_corners=False
    )
    if tuple(out.shape[-2:]) != (h, w):
        raise ValueError(f"position interpolation gave {tuple(out.shape[-2:])}, expected {(h, w)}")
    out = out.to(pos_embed.dtype).permute(0, 2, 3, 1).reshape(1, h * w, dim)
    return torch.cat([pos_embed[:, :num_tokens], out], dim=1)


class Attention(nn.Module):
    """Multi-head self-attention with a joint qkv projection (``attn.qkv``, ``attn.proj``)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        """``dim`` D split into ``num_heads`` heads of D/nh channels, scale (D/nh)^-0.5."""
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, attn: str = "none") -> tuple[Tensor, Tensor | None]:
        """x (B, N, D) -> (B, N, D) and, per ``attn``, None, (B, nh, N, N) weights or logits, or (B, N, N)."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        if attn == "none":
            out = F.scaled_dot_product_attention(q, k, v)
            extra = None
        else:
            logits = (q * self.scale) @ k.transpose(-2, -1)
            weights = logits.softmax(dim=-1)
            out = weights @ v
            extra = {"weights": weights, "mean": weights.mean(dim=1), "logits": logits}[attn]
        return self.proj(out.transpose(1, 2).reshape(b, n, d)), extra


class Mlp(nn.Module):
    """fc1 → exact GELU → fc2 (``mlp.fc1``, ``mlp.fc2``)."""

    def __init__(self, dim: int, hidden: int) -> None:
        """D → ``hidden`` → D."""
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, N, D) -> (B, N, D)."""
        return self.fc2(self.act(self.fc1(x)))


def skip_dropped(x: Tensor) -> bool:
    """Whether ``kept_residual`` pays: on the CPU (elsewhere finding the kept samples waits for the
    device) and outside ``torch.compile`` (data-dependent shapes break its graph)."""
    return x.device.type == "cpu" and not torch.compiler.is_compiling()


def kept_residual(x: Tensor, branch: Callable[[Tensor], Tensor], p: float) -> Tensor:
    """x + DropPath_p(branch(x)) with the branch run on the kept samples only.

    Draws the per-sample mask exactly as ``DropPath`` (one ``torch.rand`` of shape (B, 1, …)), so the
    generator advances as there; a kept sample gets branch(x_b) / (1 − p), a dropped one nothing.
    ``branch`` must act on each sample alone (LayerNorm, attention within a sample, token MLP).

    Args:
        x: (B, N, D) residual stream.
        branch: (B', N, D) -> (B', N, D).
        p: drop probability, 0 < p < 1.
    Returns:
        (B, N, D).
    """
    keep = 1.0 - p
    mask = torch.floor(keep + torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device))
    kept = mask.flatten().nonzero().flatten()
    if kept.numel() == x.shape[0]:
        return x + branch(x) / keep
    if kept.numel() == 0:
        return x
    return x.index_add(0, kept, branch(x.index_select(0, kept)) / keep)


class Block(nn.Module):
    """Pre-norm transformer block: x + DropPath(Attn(LN1 x)), then x + DropPath(MLP(LN2 x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0) -> None:
        """A block of width D with ``num_heads`` heads and stochastic depth ``drop_path``."""
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, attn: str = "none") -> tuple[Tensor, Tensor | None]:
        """x (B, N, D) -> (B, N, D) and the attention output of ``Attention.forward`` (or None).

        Training on the CPU without attention outputs computes each branch for its kept samples only
        (``kept_residual``: the same draws and values as ``x + DropPath(branch(x))``).
        """
        if attn == "none" and self.training and self.drop_path.p > 0 and skip_dropped(x):
            x = kept_residual(x, lambda t: self.attn(self.norm1(t))[0], self.drop_path.p)
            return kept_residual(x, lambda t: self.mlp(self.norm2(t)), self.drop_path.p), None
        y, weights = self.attn(self.norm1(x), attn)
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x))), weights


class DeiT(nn.Module):
    """ViT/DeiT encoder with ``num_tokens`` class tokens and no final norm in the forward (spec §1.1-1.2).

    Drop-path rises linearly from 0 at the first block to ``drop_path_rate`` at the last.
    """

    def __init__(
        self,
        num_tokens: int,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        img_size: int = 224,
        patch_size: int = 16,
        drop_path_rate: float = 0.0,
    ) -> None:
        """C = ``num_tokens`` class tokens; a position grid of (img_size/patch_size)² patches."""
        super().__init__()
        self.num_tokens, self.patch_size, self.embed_dim = num_tokens, patch_size, embed_dim
        grid = img_size // patch_size
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, embed_dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, num_tokens, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens + grid * grid, embed_dim))
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, 4.0, r) for r in rates)
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for m in self.blocks.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def no_weight_decay(self) -> set[str]:
        """Parameter names that never get weight decay (spec §3.2)."""
        return {"pos_embed", "cls_token"}

    def embed(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """x (B, 3, H, W) -> tokens (B, C + h·w, D) with positions added, and the grid (h, w)."""
        height, width = x.shape[-2:]
        if height < self.patch_size or width < self.patch_size:
            raise DataError(
                f"an image of {height}×{width} pixels is smaller than one {self.patch_size}×"
                f"{self.patch_size} patch"
            )
        patches = self.patch_embed.proj(x)
        grid = (patches.shape[-2], patches.shape[-1])
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), patches.flatten(2).transpose(1, 2)], 1)
        pos = interpolate_pos_embed(self.pos_embed, self.num_tokens, height, width, self.patch_size)
        return tokens + pos, grid

    def forward_features(
        self, x: Tensor, attn: str = "none", logit_blocks: Collection[int] = ()
    ) -> tuple[Tensor, tuple[int, int], list[Tensor]]:
        """x (B, 3, H, W) -> last block's tokens (B, C + h·w, D) (no final norm), the grid (h, w), and
        per block the attention of ``attn`` (empty for "none"; see ``Attention.forward``).

        ``logit_blocks``: blocks that return their scaled logits (B, nh, C + h·w, C + h·w) whatever
        ``attn`` is (the AReAM mode's deep blocks, with grad); with ``attn`` "none" only they are listed.
        """
        if attn not in ATTN_MODES:
            raise ValueError(f"attn must be one of {ATTN_MODES}, not {attn!r}")
        tokens, grid = self.embed(x)
        stack: list[Tensor] = []
        for i, block in enumerate(self.blocks):
            tokens, weights = block(tokens, "logits" if i in logit_blocks else attn)
            if weights is not None:
                stack.append(weights)
        return tokens, grid, stack


# --------------------------------------------------------------------------- Hugging Face weights

# (regex on the key after the "vit."/"deit." prefix, DeiT name): 4.x file names and 5.x module names
_HF_RENAMES = (
    (r"embeddings\.cls_token", "cls_token"),
    (r"embeddings\.position_embeddings", "pos_embed"),
    (r"embeddings\.patch_embeddings\.projection\.(weight|bias)", r"patch_embed.proj.\1"),
    (r"(?:encoder\.layer|layers)\.(\d+)\.attention\.output\.dense\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (r"layers\.(\d+)\.attention\.o_proj\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (r"encoder\.layer\.(\d+)\.intermediate\.dense\.(weight|bias)", r"blocks.\1.mlp.fc1.\2"),
    (r"encoder\.layer\.(\d+)\.output\.dense\.(weight|bias)", r"blocks.\1.mlp.fc2.\2"),
    (r"layers\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)", r"blocks.\1.mlp.\2.\3"),
    (r"(?:encoder\.layer|layers)\.(\d+)\.layernorm_before\.(weight|bias)", r"blocks.\1.norm1.\2"),
    (r"(?:encoder\.layer|layers)\.(\d+)\.layernorm_after\.(weight|bias)", r"blocks.\1.norm2.\2"),
    (r"layernorm\.(weight|bias)", r"norm.\1"),
)
_HF_QKV = (
    r"(?:encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)"
    r"|layers\.(\d+)\.attention\.(q|k|v)_proj)\.(weight|bias)"
)


def convert_hf_deit(hf: dict[str, Tensor]) -> dict[str, Tensor]:
    """A Hugging Face ``facebook/deit-*`` (``ViTForImageClassification``) state dict in DeiT's names.

    Both layouts are read: the hub files' transformers-4 names (``vit.encoder.layer.<i>.attention.
    attention.query``…) and transformers-5 module names (``vit.layers.<i>.attention.q_proj``…). The
    separate q, k, v projections are stacked into ``qkv`` (rows q, k, v); ``classifier`` becomes
    ``head``; the pooler is dropped. Distilled checkpoints (a distillation token) are refused.

    Raises:
        ValueError: a key that is not part of a plain ViT/DeiT classifier.
    """
    out: dict[str, Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, Tensor]] = {}
    for key, value in hf.items():
        if "distillation" in key:
            raise ValueError(
                f"{key}: a distilled DeiT; MCTformer starts from the plain DeiT (deit-*-patch16-224)"
            )
        if key.startswith("classifier."):
            out["head." + key.split(".", 1)[1]] = value
            continue
        body = key.split(".", 1)[1] if key.startswith(("vit.", "deit.")) else key
        if body.startswith("pooler."):
            continue
        m = re.fullmatch(_HF_QKV, body)
        if m:
            layer, part = m.group(1) or m.group(3), (m.group(2) or m.group(4))[0]
            qkv.setdefault((layer, m.group(5)), {})[part] = value
            continue
        for pattern, name in _HF_RENAMES:
            if re.fullmatch(pattern, body):
                out[re.sub(pattern, name, body)] = value
                break
        else:
            raise ValueError(f"{key}: not a key of a Hugging Face ViT/DeiT classifier")
    for (layer, kind), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise ValueError(f"layer {layer}: incomplete query/key/value {kind}")
        out[f"blocks.{layer}.attn.qkv.{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out
