"""MCTformer seed maps as the Method's pseudo labels (spec §4): ``SeedConfig`` and the ``MCTSeeds`` mixin.

``SeedConfig`` is the ``seeds:`` section of the MCTformer schema. ``MCTSeeds`` implements the
pseudo-label hooks from ``self.cfg.seeds`` and ``self.version`` ("v1" | "v2", a class attribute of
the method it is mixed into): per image the seed maps of the present classes
(``model.mct_seeds.mct_seed_maps``), the label ``seed`` = argmax over [threshold, maps] (ties to the
background, as the authors' evaluation), and through ``pseudo_scores`` the raw maps for the ``.npy``
export, the CRF export (``crf_alphas``, spec §4.5) and the heat-map overlays.

Multi-scale inputs: the authors resize the PIL image bicubically to (round(W·s), round(H·s)); here
the normalised tensor is resized bicubically with antialiasing (the golden case gives the PIL-resized
inputs, so scales other than 1.0 are a documented deviation). V1 ignores ``attention_type``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from methods.base import PseudoScores, unwrap
from model.mct_seeds import mct_seed_maps
from model.mctformer import ATTENTION_TYPES


@dataclass
class SeedConfig:
    layers: int = 3  # --layer-index K: last blocks of class attention (run.sh, run_psa.sh)
    refine: bool = True  # --patch-attn-refine: the summed patch-to-patch attention of all blocks
    attention_type: str = "fused"  # V2: fused | patchcam | mct (class attention alone); V1 ignores it
    scales: list[float] = field(default_factory=lambda: [1.0])  # each with its flip; the first sets the size
    threshold: float = 0.4  # background score of the exported label and of validation (ours, see README)
    crf_alphas: list[int] = field(default_factory=list)  # [1, 12]: the CRF export for PSA (spec §4.5)
    overlays: bool = False  # also write a JET heat-map overlay per present class


def seed_checks(s: Any) -> list[tuple[bool, str]]:
    """Rules of the ``seeds`` section, for the schema's ``checks``."""
    return [
        (s.layers >= 1, "seeds.layers must be >= 1"),
        (s.attention_type in ATTENTION_TYPES, f"seeds.attention_type must be one of {list(ATTENTION_TYPES)}"),
        (len(s.scales) >= 1 and all(v > 0 for v in s.scales), "seeds.scales needs positive values"),
        (all(a > 0 for a in s.crf_alphas), "seeds.crf_alphas must be positive"),
    ]


def scaled_inputs(image: Tensor, scales: list[float]) -> list[Tensor]:
    """Per scale s the (1, 3, round(H·s), round(W·s)) image (bicubic, antialiased; s = 1 unchanged)."""
    height, width = image.shape[-2:]
    out = []
    for s in scales:
        size = (int(round(height * s)), int(round(width * s)))
        same = size == (height, width)
        out.append(
            image if same else F.interpolate(image, size, mode="bicubic", align_corners=False, antialias=True)
        )
    return out


def seed_label(keys: Tensor, maps: Tensor, threshold: float) -> Tensor:
    """(H, W) int64 label: argmax over [threshold, maps at keys + 1], ties to the lower channel.

    Args:
        keys: (k,) present classes (0-based foreground); maps: (k, H, W).
    """
    scores = torch.cat([maps.new_full((1, *maps.shape[-2:]), threshold), maps.float()])
    ids = torch.cat([keys.new_zeros(1), keys + 1])
    return ids[scores.argmax(dim=0)]


class MCTSeeds:
    """Mixin of the MCTformer methods: pseudo labels and score export from the seed maps."""

    version: ClassVar[str] = "v2"
    pseudo_label_kinds: ClassVar[tuple[str, ...]] = ("seed",)

    def seed_maps(self, model: nn.Module, image: Tensor, cls_label: Tensor) -> tuple[Tensor, Tensor]:
        """keys (k,), maps (k, H, W) of one image (1, 3, H, W) with labels (1, C) (eval mode, no grad)."""
        s = self.cfg.seeds
        net = unwrap(model)
        images = scaled_inputs(image, list(s.scales))
        return mct_seed_maps(net, images, cls_label[0], s.layers, s.refine, s.attention_type)

    def pseudo_labels(self, model: nn.Module, image: Tensor, cls_label: Tensor) -> dict[str, Tensor]:
        """``{"seed": (H, W) int64}``: 0 background, c + 1 for foreground class c."""
        keys, maps = self.seed_maps(model, image, cls_label)
        return {"seed": seed_label(keys, maps, self.cfg.seeds.threshold)}

    def pseudo_scores(self, model: nn.Module, image: Tensor, cls_label: Tensor) -> PseudoScores:
        """The seed maps, their label and the CRF/overlay settings for the export."""
        keys, maps = self.seed_maps(model, image, cls_label)
        s = self.cfg.seeds
        labels = {"seed": seed_label(keys, maps, s.threshold)}
        return PseudoScores(keys, maps, labels, tuple(s.crf_alphas), bool(s.overlays))

    def pseudo_label_report(self) -> dict[str, Any]:
        """The seed settings of the export."""
        s = self.cfg.seeds
        return {
            "seeds": {
                "version": self.version,
                "layers": int(s.layers),
                "refine": bool(s.refine),
                "attention_type": str(s.attention_type),
                "scales": [float(v) for v in s.scales],
                "threshold": float(s.threshold),
                "crf_alphas": [int(a) for a in s.crf_alphas],
            }
        }
