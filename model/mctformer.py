"""MCTformer-V1 and -V2 (Xu et al., CVPR 2022): multi-class-token DeiT (MCTformer spec §1.4-1.7).

V1 scores class c by the mean over the D channels of its final class token (no classifier, Q3); V2
adds a 3×3 conv "PatchCAM" head on the final patch tokens, whose global average gives patch logits.
``forward`` (training, validation) runs fused attention and returns ``(cls_logits, patch_logits)``
(``patch_logits`` None for V1); ``forward_attention`` (seed maps) also builds the head-mean
attention: the class-to-patch maps of the last K blocks and every block's patch-to-patch block.

The state dict has the authors' names: DeiT's, with ``cls_token`` (1, C, D), ``pos_embed``
(1, C + G², D) and ``head`` (V2: Conv2d(D, C, 3, padding 1); V1: an unused Linear(D, C)).
``load_deit_checkpoint`` applies the authors' fine-tune surgery (§1.4) to any ImageNet DeiT file.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.errors import CheckpointError, ConfigError, MissingFileError
from model.deit import DeiT

DEIT_SIZES = {"deit_tiny": (192, 12, 3), "deit_small": (384, 12, 6), "deit_base": (768, 12, 12)}
"""DeiT size name -> (embed_dim D, depth L, num_heads nh)."""
VERSIONS = ("v1", "v2")
ATTENTION_TYPES = ("fused", "patchcam", "mct")


@dataclass
class AttentionMaps:
    """One forward with attention (B images, C classes, L blocks, an h×w grid, Np = h·w)."""

    cls_logits: Tensor  # (B, C)
    patch_logits: Tensor | None  # (B, C), V2 only
    cams: Tensor  # (B, C, h, w): V2 the chosen ``attention_type``, V1 the class attention
    patch_attn: Tensor  # (L, B, Np, Np) head-mean patch-to-patch attention of every block


@dataclass
class BlockLogits:
    """``MCTformer.forward_logits`` (B images, C classes, an h×w grid, N = C + h·w tokens)."""

    cls_logits: Tensor  # (B, C)
    patch_logits: Tensor | None  # (B, C), V2 only
    fmap: Tensor | None  # (B, C, h, w) the V2 conv head's map (its CAM before ReLU), V2 only
    logits: list[Tensor]  # per requested block, in order: (B, nh, N, N) scaled q·kᵀ·d^-0.5


def class_to_patch_attention(means: list[Tensor], num_tokens: int, layers: int) -> Tensor:
    """mtatt = Σ over the last ``layers`` blocks of A_l[:, class rows, patch columns] (spec §1.5, summed).

    Args:
        means: L head-mean attentions (B, C + Np, C + Np).

    Returns:
        (B, C, Np), not normalised.
    """
    return torch.stack([a[:, :num_tokens, num_tokens:] for a in means[-layers:]]).sum(dim=0)


def patch_to_patch_attention(means: list[Tensor], num_tokens: int) -> Tensor:
    """Every block's A_l[:, patch rows, patch columns] (spec §1.5): (L, B, Np, Np) from L × (B, N, N)."""
    return torch.stack([a[:, num_tokens:, num_tokens:] for a in means])


def class_logits(cls_tokens: Tensor) -> Tensor:
    """z_cls = mean over channels of each final class token (spec §1.5): (B, C, D) -> (B, C)."""
    return cls_tokens.mean(dim=-1)


class MCTformer(DeiT):
    """MCTformer ``version`` "v1" | "v2" with ``num_classes`` C foreground class tokens."""

    def __init__(
        self,
        version: str,
        num_classes: int,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        img_size: int = 224,
        patch_size: int = 16,
        drop_path_rate: float = 0.0,
    ) -> None:
        """The backbone of ``DeiT`` plus the version's head (V2 conv at PyTorch's default init, Q4)."""
        if version not in VERSIONS:
            raise ConfigError(f"MCTformer version must be one of {VERSIONS}, not {version!r}")
        super().__init__(num_classes, embed_dim, depth, num_heads, img_size, patch_size, drop_path_rate)
        self.version, self.num_classes = version, num_classes
        if version == "v2":
            self.head: nn.Module = nn.Conv2d(embed_dim, num_classes, 3, padding=1)
        else:
            self.head = nn.Linear(embed_dim, num_classes)
            nn.init.trunc_normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)

    def patch_map(self, tokens: Tensor, grid: tuple[int, int]) -> Tensor:
        """The V2 conv head F on the final patch tokens: (B, C + Np, D) -> (B, C, h, w)."""
        patches = tokens[:, self.num_classes :].transpose(1, 2)
        return self.head(patches.reshape(tokens.shape[0], -1, *grid))

    def forward(
        self, x: Tensor, logit_blocks: Collection[int] | None = None
    ) -> tuple[Tensor, Tensor | None] | BlockLogits:
        """x (B, 3, H, W) -> (cls_logits (B, C), patch_logits (B, C) or None for V1); fused attention.
        With ``logit_blocks`` (the AReAM mode, through a DDP wrapper): ``forward_logits(x, logit_blocks)``."""
        if logit_blocks is not None:
            return self.forward_logits(x, logit_blocks)
        tokens, grid, _ = self.forward_features(x)
        logits = class_logits(tokens[:, : self.num_classes])
        if self.version == "v1":
            return logits, None
        return logits, self.patch_map(tokens, grid).mean(dim=(-2, -1))

    def forward_logits(self, x: Tensor, blocks: Collection[int]) -> BlockLogits:
        """The training forward of the AReAM mode: ``forward``'s logits, the V2 conv map and the scaled
        pre-softmax logits of ``blocks`` (with grad); the other blocks run fused attention."""
        tokens, grid, logits = self.forward_features(x, logit_blocks=blocks)
        cls_logits = class_logits(tokens[:, : self.num_classes])
        if self.version == "v1":
            return BlockLogits(cls_logits, None, None, logits)
        fmap = self.patch_map(tokens, grid)
        return BlockLogits(cls_logits, fmap.mean(dim=(-2, -1)), fmap, logits)

    def forward_attention(self, x: Tensor, layers: int = 3, attention_type: str = "fused") -> AttentionMaps:
        """The map-generation forward (spec §1.5-1.6), everything but the logits detached.

        Args:
            x: (B, 3, H, W).
            layers: K, the last blocks whose class-to-patch attention is summed.
            attention_type: V2's ``cams``: "fused" (mtatt ⊙ ReLU(F)), "patchcam" (ReLU(F)) or "mct"
                (mtatt alone); V1 always gives mtatt.
        """
        if attention_type not in ATTENTION_TYPES:
            raise ConfigError(f"attention_type must be one of {ATTENTION_TYPES}, not {attention_type!r}")
        tokens, grid, means = self.forward_features(x, attn="mean")
        b, c = x.shape[0], self.num_classes
        means = [m.detach() for m in means]
        mtatt = class_to_patch_attention(means, c, layers).reshape(b, c, *grid)
        return self.maps(tokens, grid, mtatt, patch_to_patch_attention(means, c), attention_type)

    def maps(
        self, tokens: Tensor, grid: tuple[int, int], mtatt: Tensor, patch_attn: Tensor, attention_type: str
    ) -> AttentionMaps:
        """The outputs of ``forward_attention`` from the last tokens (B, C + Np, D), the class-to-patch
        attention mtatt (B, C, h, w) and the patch-to-patch attention (L, B, Np, Np) (spec §1.5-1.6)."""
        logits = class_logits(tokens[:, : self.num_classes])
        if self.version == "v1":
            return AttentionMaps(logits, None, mtatt, patch_attn)
        fmap = self.patch_map(tokens, grid)
        relu = F.relu(fmap.detach())
        cams = {"fused": mtatt * relu, "patchcam": relu, "mct": mtatt}[attention_type]
        return AttentionMaps(logits, fmap.mean(dim=(-2, -1)), cams, patch_attn)


def build_mctformer(
    version: str, num_classes: int, size: str = "deit_small", img_size: int = 224, drop_path_rate: float = 0.1
) -> MCTformer:
    """An MCTformer of DeiT ``size`` (a ``DEIT_SIZES`` key) at ``img_size`` with stochastic depth."""
    if size not in DEIT_SIZES:
        raise ConfigError(f"backbone {size!r} is not a DeiT size; choose one of {sorted(DEIT_SIZES)}")
    dim, depth, heads = DEIT_SIZES[size]
    return MCTformer(version, num_classes, dim, depth, heads, img_size, 16, drop_path_rate)


def resize_patch_positions(pos: Tensor, side: int) -> Tensor:
    """The fine-tune resize (spec §1.4 step 4): (1, G², D) -> (1, side², D), bicubic to a target size."""
    g, dim = int(round(pos.shape[1] ** 0.5)), pos.shape[-1]
    grid = pos.reshape(1, g, g, dim).permute(0, 3, 1, 2)
    out = F.interpolate(grid, size=(side, side), mode="bicubic", align_corners=False)
    return out.permute(0, 2, 3, 1).flatten(1, 2)


def deit_to_mct_state(deit: dict[str, Tensor], model_state: dict[str, Tensor], num_classes: int) -> dict:
    """The authors' fine-tune surgery, applied to any checkpoint source (spec §1.4, Q1 fixed).

    The checkpoint's single [CLS] token (1, 1, D) and class position are repeated C times, its patch
    positions (1, G², D) resized to the model's grid; ``head.*`` of another shape is dropped; every
    other key is copied. Returns the subset of ``model_state`` keys to load (``strict=False``).
    """
    state = {k: v for k, v in deit.items() if not (k.startswith("head.") and v.shape != model_state[k].shape)}
    pos = deit["pos_embed"]
    side = int(round((model_state["pos_embed"].shape[1] - num_classes) ** 0.5))
    patches = resize_patch_positions(pos[:, 1:].float(), side).to(pos.dtype)
    state["pos_embed"] = torch.cat([pos[:, :1].repeat(1, num_classes, 1), patches], dim=1)
    state["cls_token"] = deit["cls_token"].repeat(1, num_classes, 1)
    return {k: v for k, v in state.items() if k in model_state}


def _check_deit(deit: dict, model: MCTformer, path: str) -> None:
    """One clear line when ``deit`` is not an ImageNet DeiT of the model's width and depth."""
    need = ("cls_token", "pos_embed", "patch_embed.proj.weight")
    missing = [k for k in need if k not in deit]
    if missing:
        raise CheckpointError(f"{path} is not a DeiT checkpoint: no {', '.join(missing)}")
    positions = deit["pos_embed"].shape[1]
    square = round((positions - 1) ** 0.5) ** 2 + 1 == positions
    if deit["cls_token"].shape[1] != 1 or "dist_token" in deit or not square:
        raise CheckpointError(f"{path} is not a plain DeiT (one class token, a square position grid)")
    dim = deit["patch_embed.proj.weight"].shape[0]
    depth = len({k.split(".")[1] for k in deit if k.startswith("blocks.")})
    ours = (model.embed_dim, len(model.blocks))
    if (dim, depth) != ours:
        names = {v[:2]: k for k, v in DEIT_SIZES.items()}
        raise CheckpointError(
            f"{path} is a DeiT of width {dim}, depth {depth} ({names.get((dim, depth), 'unknown size')}); "
            f"the model is width {ours[0]}, depth {ours[1]} ({names.get(ours, 'custom')})"
        )


def load_deit_checkpoint(model: MCTformer, path: str | Path) -> list[str]:
    """Initialise ``model`` from an ImageNet DeiT file (``{'model': state}`` or a bare state dict).

    Returns the model keys that kept their own initialisation (the head). Raises ``CheckpointError``
    for a file that is not a DeiT of the model's size, ``MissingFileError`` when it does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"DeiT checkpoint {path} does not exist", "see pretrained/README.md")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unreadable or pickled objects: one line naming the file
        raise CheckpointError(f"cannot read DeiT checkpoint {path}: {type(exc).__name__}") from exc
    deit = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(deit, dict):
        raise CheckpointError(f"{path} holds no state dict")
    _check_deit(deit, model, str(path))
    state = deit_to_mct_state(deit, model.state_dict(), model.num_classes)
    model.load_state_dict(state, strict=False)
    return sorted(set(model.state_dict()) - set(state))
