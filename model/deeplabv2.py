"""DeepLabV2 (Chen et al., TPAMI 2018): a ResNet trunk at output stride 8 and the ASPP classifier.

ASPP in DeepLabV2 (the "ASPP-L" of the paper, its VOC model) is four parallel 3×3 convolutions from the
trunk's features straight to the class scores, dilated 6, 12, 18 and 24, whose outputs are **summed**
(not concatenated, no image pooling, no BatchNorm: that is DeepLabV3). Its weights start from N(0, 0.01)
and its biases from 0, as in DeepLab's prototxt and the common PyTorch ports. The classifier is the
``classifier`` module: a method gives it a larger learning rate (``param_groups``).
"""

from __future__ import annotations

from torch import Tensor, nn

from model.resnet import ResNet, build_resnet

DEEPLABV2_RATES: tuple[int, ...] = (6, 12, 18, 24)  # DeepLabV2 ASPP-L (paper Table 2, VOC model)


class ASPPClassifier(nn.Module):
    """Σ_r conv3×3_{dilation r}(x): the DeepLabV2 atrous spatial pyramid pooling classifier.

    Args:
        in_dim: trunk channels (2048 for ResNet-101).
        num_classes: C, background included.
        rates: the dilations (padding equal to the dilation keeps the grid).
    """

    def __init__(self, in_dim: int, num_classes: int, rates: tuple[int, ...] = DEEPLABV2_RATES) -> None:
        """One 3×3 convolution per rate, ``in_dim`` -> ``num_classes``, N(0, 0.01) weights, zero biases."""
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(in_dim, num_classes, 3, padding=r, dilation=r) for r in rates)
        for conv in self.convs:
            nn.init.normal_(conv.weight, 0.0, 0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_dim, h, w) -> (B, C, h, w), the sum over the rates."""
        out = self.convs[0](x)
        for conv in self.convs[1:]:
            out = out + conv(x)
        return out


class DeepLabV2(nn.Module):
    """ResNet trunk (output stride 8) + ASPP classifier; logits at 1/8 of the input.

    Args:
        backbone: a ``model.resnet.RESNET_VARIANTS`` name (``resnet101``).
        num_classes: C, background included.
        rates: ASPP dilations.
        freeze_bn: the trunk's BatchNorm frozen (eval statistics, no affine gradient).
    """

    def __init__(
        self,
        backbone: str,
        num_classes: int,
        rates: tuple[int, ...] = DEEPLABV2_RATES,
        freeze_bn: bool = True,
    ) -> None:
        """The trunk of ``backbone`` and the classifier of ``num_classes``."""
        super().__init__()
        self.backbone: ResNet = build_resnet(backbone, freeze_bn=freeze_bn)
        self.classifier = ASPPClassifier(self.backbone.out_dim, num_classes, rates)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) normalised -> logits (B, C, ⌈H/8⌉, ⌈W/8⌉) (41 × 41 for a 321 crop)."""
        return self.classifier(self.backbone(x))

    def segment(self, x: Tensor) -> Tensor:
        """Test-time logits: the forward, (B, C, h, w)."""
        return self(x)

    def param_groups(self) -> tuple[list[nn.Parameter], ...]:
        """Trainable parameters in four groups: trunk convolutions, trunk BatchNorm (empty when frozen),
        classifier weights, classifier biases."""
        trunk = [p for p in self.backbone.parameters() if p.requires_grad]
        return (
            [p for p in trunk if p.ndim > 1],
            [p for p in trunk if p.ndim == 1],
            [c.weight for c in self.classifier.convs],
            [c.bias for c in self.classifier.convs],
        )
