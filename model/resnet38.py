"""Wider ResNet-38 ("A1", Wu et al.; the PSA lineage) at output stride 8 (AuxSegNet spec §1).

Pre-activation blocks (§1.1): t = ReLU(BN(x)); the shortcut is x itself or a 1×1 conv of **t**; no
activation after the sum. Layers as in §1.2: conv1a → b2 (stride 2) → b3 (stride 2) → b4 (stride 2) →
b5 (dilation 1 → 2) → b6, b7 (bottlenecks, dilation 4, Dropout2d 0.3 / 0.5) → bn7 + ReLU = conv6.
Each stride-2 step gives ⌈·/2⌉, so conv6 is ⌈H/8⌉ × ⌈W/8⌉.

Frozen parts (§1.3): ``train()`` keeps conv1a and every BatchNorm (running statistics, affine
parameters) frozen, so train mode differs from eval mode only by dropout.

Parameter names are those of the PSA-lineage PyTorch weights (``conv1a.weight``,
``b2.bn_branch2a.weight``, ``b2.conv_branch1.weight``, ``bn7.running_var`` …), which load strictly
through ``load_resnet38_pretrained``. ``width_divisor`` divides every channel count (the golden case
uses 32).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn

from common.errors import CheckpointError, MissingFileError
from common.torch_io import torch_load_checked


class BlockOutput(NamedTuple):
    """A block's output y (B, C_out, h', w') and its pre-activation t = ReLU(BN_a(x)) (B, C_in, h, w)."""

    y: Tensor
    x_bn_relu: Tensor


class ResBlock(nn.Module):
    """Basic pre-activation block ``ResBlock(in, mid, out, stride, first_dilation, dilation)`` (spec §1.1).

    Branch: 3×3 conv (stride, dilation = padding = ``first_dilation``) → BN → ReLU → 3×3 conv (dilation);
    shortcut: x when in = out and stride 1, else a 1×1 strided conv of t. No biases.
    """

    def __init__(
        self,
        in_ch: int,
        mid_ch: int,
        out_ch: int,
        stride: int = 1,
        first_dilation: int | None = None,
        dilation: int = 1,
    ) -> None:
        """Layers named as the PSA-lineage weights (``bn_branch2a``, ``conv_branch2a`` …)."""
        super().__init__()
        first = dilation if first_dilation is None else first_dilation
        self.same_shape = in_ch == out_ch and stride == 1
        self.bn_branch2a = nn.BatchNorm2d(in_ch)
        self.conv_branch2a = nn.Conv2d(in_ch, mid_ch, 3, stride, padding=first, dilation=first, bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(mid_ch)
        self.conv_branch2b1 = nn.Conv2d(mid_ch, out_ch, 3, padding=dilation, dilation=dilation, bias=False)
        if not self.same_shape:
            self.conv_branch1 = nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)

    def forward(self, x: Tensor) -> BlockOutput:
        """x (B, in, h, w) -> ``BlockOutput`` with y (B, out, ⌈h/s⌉, ⌈w/s⌉)."""
        t = F.relu(self.bn_branch2a(x))
        shortcut = x if self.same_shape else self.conv_branch1(t)
        branch = self.conv_branch2b1(F.relu(self.bn_branch2b1(self.conv_branch2a(t))))
        return BlockOutput(shortcut + branch, t)


class ResBlockBot(nn.Module):
    """Bottleneck pre-activation block ``ResBlock_bot(in, out, stride, dilation, dropout)`` (spec §1.1).

    Branch: 1×1 (out/4, stride) → BN, ReLU, Dropout2d → 3×3 (out/2, dilation = padding) → BN, ReLU,
    Dropout2d → 1×1 (out); shortcut: always a 1×1 strided conv of t. No biases.
    """

    def __init__(
        self, in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1, dropout: float = 0.0
    ) -> None:
        """Layers named as the PSA-lineage weights (``bn_branch2a`` … ``conv_branch2b2``)."""
        super().__init__()
        self.bn_branch2a = nn.BatchNorm2d(in_ch)
        self.conv_branch2a = nn.Conv2d(in_ch, out_ch // 4, 1, stride, bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(out_ch // 4)
        self.dropout_2b1 = nn.Dropout2d(dropout)
        self.conv_branch2b1 = nn.Conv2d(
            out_ch // 4, out_ch // 2, 3, padding=dilation, dilation=dilation, bias=False
        )
        self.bn_branch2b2 = nn.BatchNorm2d(out_ch // 2)
        self.dropout_2b2 = nn.Dropout2d(dropout)
        self.conv_branch2b2 = nn.Conv2d(out_ch // 2, out_ch, 1, bias=False)
        self.conv_branch1 = nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)

    def forward(self, x: Tensor) -> BlockOutput:
        """x (B, in, h, w) -> ``BlockOutput`` with y (B, out, ⌈h/s⌉, ⌈w/s⌉)."""
        t = F.relu(self.bn_branch2a(x))
        b = self.dropout_2b1(F.relu(self.bn_branch2b1(self.conv_branch2a(t))))
        b = self.dropout_2b2(F.relu(self.bn_branch2b2(self.conv_branch2b1(b))))
        return BlockOutput(self.conv_branch1(t) + self.conv_branch2b2(b), t)


class ResNet38Features(NamedTuple):
    """conv4 = b5's pre-activation (B, 512/d, h, w), conv5 = b6's (B, 1024/d, ·), conv6 (B, 4096/d, h, w)."""

    conv4: Tensor
    conv5: Tensor
    conv6: Tensor


# (name, kind, args): "res" = ResBlock(in, mid, out, **kw), "bot" = ResBlockBot(in, out, **kw); full widths.
LAYERS: tuple[tuple[str, str, tuple[int, ...], dict[str, float]], ...] = (
    ("b2", "res", (64, 128, 128), {"stride": 2}),
    ("b2_1", "res", (128, 128, 128), {}),
    ("b2_2", "res", (128, 128, 128), {}),
    ("b3", "res", (128, 256, 256), {"stride": 2}),
    ("b3_1", "res", (256, 256, 256), {}),
    ("b3_2", "res", (256, 256, 256), {}),
    ("b4", "res", (256, 512, 512), {"stride": 2}),
    *((f"b4_{i}", "res", (512, 512, 512), {}) for i in range(1, 6)),
    ("b5", "res", (512, 512, 1024), {"stride": 1, "first_dilation": 1, "dilation": 2}),
    ("b5_1", "res", (1024, 512, 1024), {"dilation": 2}),
    ("b5_2", "res", (1024, 512, 1024), {"dilation": 2}),
    ("b6", "bot", (1024, 2048), {"stride": 1, "dilation": 4, "dropout": 0.3}),
    ("b7", "bot", (2048, 4096), {"dilation": 4, "dropout": 0.5}),
)


class ResNet38(nn.Module):
    """Wider ResNet-38 at output stride 8; ``forward`` returns conv6 (B, 4096/d, ⌈H/8⌉, ⌈W/8⌉).

    Args:
        width_divisor: divides every channel count (1 = the real network; the golden case uses 32).
    """

    def __init__(self, width_divisor: int = 1) -> None:
        """Build conv1a, b2 … b7 and bn7 with every width divided by ``width_divisor``."""
        super().__init__()
        d = width_divisor
        self.conv1a = nn.Conv2d(3, 64 // d, 3, padding=1, bias=False)
        for name, kind, chans, kw in LAYERS:
            block = ResBlock if kind == "res" else ResBlockBot
            self.add_module(name, block(*(c // d for c in chans), **kw))
        self.out_channels = 4096 // d
        self.bn7 = nn.BatchNorm2d(self.out_channels)
        self.train()

    def forward_features(self, x: Tensor) -> ResNet38Features:
        """x (B, 3, H, W) normalised images -> conv4, conv5, conv6 at stride 8 (spec §1.2)."""
        x = self.conv1a(x)
        taps = {}
        for name, _, _, _ in LAYERS:
            x, t = getattr(self, name)(x)
            if name in ("b5", "b6"):
                taps[name] = t
        conv6 = F.relu(self.bn7(x))
        return ResNet38Features(taps["b5"], taps["b6"], conv6)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, 3, H, W) -> conv6 (B, 4096/d, ⌈H/8⌉, ⌈W/8⌉), non-negative."""
        return self.forward_features(x).conv6

    def train(self, mode: bool = True) -> ResNet38:
        """Set the mode, then freeze conv1a and every BatchNorm (eval statistics, no affine gradient).

        Unlike the authors' override this returns ``self`` (spec §11, item 18).
        """
        super().train(mode)
        self.conv1a.weight.requires_grad_(False)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
                m.weight.requires_grad_(False)
                m.bias.requires_grad_(False)
        return self


# --------------------------------------------------------------------------- weights

RESNET38_HINT = (
    "ResNet38 weights in the PSA-lineage PyTorch layout (conv1a.weight, b2.bn_branch2a.weight, …, "
    "bn7.running_var); see pretrained/README.md"
)
# Keys a classification checkpoint may carry beside the backbone (the PSA-style classifier head).
HEAD_KEYS = ("fc8.weight",)


def split_resnet38_state(
    backbone: ResNet38, state: Mapping[str, Tensor], what: str
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Check a PSA-layout state dict against ``backbone``; return (backbone state, head entries).

    A leading ``module.`` is removed. ``num_batches_tracked`` may be absent (MXNet conversions have none)
    and is then taken from the model. Keys in ``HEAD_KEYS`` are returned apart; any other unknown key, a
    missing key or a shape mismatch raises ``CheckpointError`` in one line naming them.

    Args:
        backbone: the network the state must fit.
        state: the loaded state dict.
        what: the source, for the error message.
    """
    state = {k.removeprefix("module."): v for k, v in state.items()}
    expected = backbone.state_dict()
    head = {k: state.pop(k) for k in HEAD_KEYS if k in state}
    for key in expected:
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = expected[key]
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        parts = [
            f"{label} {len(keys)} (e.g. {', '.join(keys[:3])})"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        ]
        message = f"{what} is not a ResNet38 state dict of this width: " + "; ".join(parts)
        raise CheckpointError(message, hint=RESNET38_HINT)
    return state, head


def load_resnet38_pretrained(backbone: ResNet38, path: str | Path) -> dict[str, Tensor]:
    """Strictly load PSA-layout ResNet38 weights from ``path`` into ``backbone`` (spec §1.4, §11 item 15).

    Returns:
        The head entries the file also holds (``fc8.weight`` of a classification network), possibly empty.
    """
    if not Path(path).is_file():
        raise MissingFileError(f"ResNet38 weights not found: {path}", hint=RESNET38_HINT)
    obj = torch_load_checked(path)
    if isinstance(obj, Mapping) and not all(isinstance(v, Tensor) for v in obj.values()):
        obj = obj.get("state_dict", obj.get("model", obj))
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a state dict, got {type(obj).__name__}", hint=RESNET38_HINT)
    state, head = split_resnet38_state(backbone, obj, str(path))
    backbone.load_state_dict(state, strict=True)
    return head
