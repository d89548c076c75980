"""ResNet (He et al., CVPR 2016) with dilated last stages, the DeepLabV2 backbone; torchvision key layout.

Parameter names follow torchvision's ``resnet101`` exactly (``conv1``, ``bn1``, ``layer1..4.N.{conv1,
bn1, conv2, bn2, conv3, bn3, downsample.0, downsample.1}``, ``fc``), so ``resnet101-63fe2227.pth``
loads without a mapping and without importing torchvision; ``fc.*`` (the ImageNet classifier) is
dropped. Bottleneck v1.5: the stride sits on the 3×3 convolution, as in torchvision.

Output stride 8 (DeepLabV2): layers 3 and 4 keep stride 1 and dilate their 3×3 convolutions by 2 and 4,
every block of the layer alike (DeepLab's Caffe ResNet-101; torchvision's ``replace_stride_with_dilation``
keeps the first block of each dilated layer at the previous dilation, which changes no parameter).

BatchNorm is frozen by default (``freeze_bn``): running statistics used as in eval mode whatever
``train()`` says, and no gradient to the affine parameters, as DeepLabV2 is trained at batch 10.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor, nn

from common.errors import CheckpointError
from common.torch_io import torch_load_checked


@dataclass(frozen=True)
class ResNetVariant:
    """Blocks per layer and the width of layer 1's 3×3 convolutions (outputs are 4× wider)."""

    blocks: tuple[int, int, int, int]
    width: int = 64


RESNET_VARIANTS: dict[str, ResNetVariant] = {
    "resnet101": ResNetVariant((3, 4, 23, 3)),
    "resnet50": ResNetVariant((3, 4, 6, 3)),
    "resnet_tiny": ResNetVariant((1, 1, 2, 1), width=8),  # tests and the demo: not an ImageNet network
}
EXPANSION = 4
IMAGENET_HEAD = "fc."


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3 (stride, dilation), 1×1 expand (×4), each with BatchNorm; identity or projected
    shortcut; ReLU after the sum."""

    def __init__(self, in_dim: int, width: int, stride: int, dilation: int) -> None:
        """``in_dim`` channels in, ``4·width`` out; a 1×1 projected shortcut if they differ or stride > 1."""
        super().__init__()
        out_dim = width * EXPANSION
        self.conv1 = nn.Conv2d(in_dim, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_dim, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_dim)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_dim != out_dim:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_dim, out_dim, 1, stride, bias=False), nn.BatchNorm2d(out_dim)
            )

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, 4·width, H/stride, W/stride)."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class ResNet(nn.Module):
    """The convolutional trunk (no pooling, no ``fc``): stem at stride 4, layers 1-4.

    Args:
        variant: blocks per layer and base width.
        strides: strides of layers 1-4 (DeepLabV2: 1, 2, 1, 1 → output stride 8).
        dilations: dilations of layers 1-4 (DeepLabV2: 1, 1, 2, 4).
        freeze_bn: BatchNorm in eval mode always, affine parameters without gradient.
    """

    def __init__(
        self,
        variant: ResNetVariant,
        strides: tuple[int, ...] = (1, 2, 1, 1),
        dilations: tuple[int, ...] = (1, 1, 2, 4),
        freeze_bn: bool = True,
    ) -> None:
        """The stem and four layers of ``variant``; ``freeze_bn`` as in the class docstring."""
        super().__init__()
        w = variant.width
        self.conv1 = nn.Conv2d(3, w, 7, 2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, padding=1)
        in_dim = w
        for i, (n, stride, dilation) in enumerate(zip(variant.blocks, strides, dilations)):
            width = w * 2**i
            blocks = [Bottleneck(in_dim if j == 0 else width * EXPANSION, width, stride if j == 0 else 1,
                                 dilation) for j in range(n)]  # fmt: skip
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            in_dim = width * EXPANSION
        self.out_dim = in_dim
        self.freeze_bn = freeze_bn
        if freeze_bn:
            for m in self.batch_norms():
                m.weight.requires_grad_(False)
                m.bias.requires_grad_(False)

    def batch_norms(self) -> list[nn.modules.batchnorm._BatchNorm]:
        """Every BatchNorm of the trunk (SyncBatchNorm too, after a DDP conversion)."""
        return [m for m in self.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def train(self, mode: bool = True) -> ResNet:
        """Train or eval mode; with ``freeze_bn`` the BatchNorms stay in eval mode (running statistics)."""
        super().train(mode)
        if self.freeze_bn:
            for m in self.batch_norms():
                m.eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, 32·width, ⌈H/8⌉, ⌈W/8⌉) at DeepLabV2's strides (2048 channels: ResNet-101)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return x


def build_resnet(name: str, freeze_bn: bool = True) -> ResNet:
    """A ResNet trunk at output stride 8 by variant name (``resnet101``, ``resnet50``, ``resnet_tiny``)."""
    if name not in RESNET_VARIANTS:
        raise ValueError(f"unknown ResNet {name!r}; choose one of {sorted(RESNET_VARIANTS)}")
    return ResNet(RESNET_VARIANTS[name], freeze_bn=freeze_bn)


def imagenet_state(obj: object, what: str) -> dict[str, Tensor]:
    """The trunk's part of a torchvision-format ResNet state dict (``fc.*`` dropped); the dict may be
    wrapped under ``state_dict`` or ``model``."""
    if isinstance(obj, Mapping) and not any(isinstance(v, Tensor) for v in obj.values()):
        obj = obj.get("state_dict", obj.get("model"))
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{what}: expected a torchvision ResNet state dict")
    return {k: v for k, v in obj.items() if not k.startswith(IMAGENET_HEAD)}


def load_resnet_pretrained(trunk: ResNet, path: str | Path) -> None:
    """Load a torchvision ResNet ImageNet checkpoint (e.g. ``resnet101-63fe2227.pth``) strictly apart
    from ``fc.*``; ``num_batches_tracked``, absent from the older files, may be missing.

    Raises:
        CheckpointError: in one line, when names or shapes differ (another architecture or depth),
            naming the file, the variant and the first offending keys.
    """
    state = imagenet_state(torch_load_checked(path), str(path))
    expected = {k: v for k, v in trunk.state_dict().items() if not k.endswith("num_batches_tracked")}
    given = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    wrong = [k for k in expected if k in given and tuple(given[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        first = (missing or unexpected or wrong)[:3]
        kind = "missing" if missing else "unexpected" if unexpected else "wrong-shape"
        raise CheckpointError(
            f"{path} is not a torchvision ResNet of this depth and width: {len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(wrong)} wrong-shape keys ({kind}: {', '.join(first)})",
            hint="backbone.pretrained_path: a torchvision resnet101-*.pth ImageNet state dict",
        )
    trunk.load_state_dict(given, strict=False)
