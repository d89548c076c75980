"""DeepLabV2 (``model/deeplabv2.py``) on the ResNet trunk of ``model/resnet.py``: torchvision's key names
and shapes (built here from the architecture, not from torchvision), output stride 8, the ASPP sum,
ImageNet weights loaded strictly apart from ``fc.*``, another architecture refused in one line, frozen
BatchNorm, and the optimiser's groups."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from common.errors import CheckpointError
from methods.registry import build_method
from model.deeplabv2 import DeepLabV2
from model.resnet import ResNet, ResNetVariant, build_resnet, load_resnet_pretrained
from utils.config import load_config

pytestmark = pytest.mark.usefixtures("one_thread")

BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def torchvision_layout(blocks: tuple[int, ...], width: int = 64, classes: int = 1000) -> dict[str, tuple]:
    """Key -> shape of torchvision's ``resnet*`` state dict, from the architecture: a 7×7 stem, then per
    layer i (base width w·2^i, outputs ×4) Bottlenecks conv1 1×1, conv2 3×3, conv3 1×1 with a BatchNorm
    each, a ``downsample`` (1×1 conv + BN) on each layer's first block, and ``fc``."""
    shapes: dict[str, tuple] = {"conv1.weight": (width, 3, 7, 7)}

    def bn(prefix: str, c: int) -> None:
        for k in BN_KEYS:
            shapes[f"{prefix}.{k}"] = () if k == "num_batches_tracked" else (c,)

    bn("bn1", width)
    in_dim = width
    for i, n in enumerate(blocks):
        w = width * 2**i
        for j in range(n):
            p = f"layer{i + 1}.{j}"
            shapes[f"{p}.conv1.weight"] = (w, in_dim, 1, 1)
            bn(f"{p}.bn1", w)
            shapes[f"{p}.conv2.weight"] = (w, w, 3, 3)
            bn(f"{p}.bn2", w)
            shapes[f"{p}.conv3.weight"] = (4 * w, w, 1, 1)
            bn(f"{p}.bn3", 4 * w)
            if j == 0:
                shapes[f"{p}.downsample.0.weight"] = (4 * w, in_dim, 1, 1)
                bn(f"{p}.downsample.1", 4 * w)
            in_dim = 4 * w
    shapes["fc.weight"], shapes["fc.bias"] = (classes, in_dim), (classes,)
    return shapes


def random_state(shapes: dict[str, tuple], seed: int = 0, batches_tracked: bool = True) -> dict:
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for k, s in shapes.items():
        if k.endswith("num_batches_tracked"):
            if batches_tracked:
                state[k] = torch.tensor(7)
        else:
            state[k] = torch.rand(s, generator=gen) + 0.5
    return state


def test_resnet101_has_torchvision_key_names_and_shapes_apart_from_fc():
    expected = {k: s for k, s in torchvision_layout((3, 4, 23, 3)).items() if not k.startswith("fc.")}
    ours = {k: tuple(v.shape) for k, v in build_resnet("resnet101").state_dict().items()}
    assert ours == expected
    assert len(expected) == 624 and expected["layer4.2.conv3.weight"] == (2048, 512, 1, 1)


def test_output_stride_8_and_the_dilations():
    torch.manual_seed(0)
    model = DeepLabV2("resnet_tiny", 5).eval()
    with torch.no_grad():
        for side, grid in ((321, 41), (64, 8), (65, 9)):
            assert model(torch.randn(1, 3, side, side)).shape == (1, 5, grid, grid)
    conv2 = {
        name: (m.stride, m.dilation) for name, m in model.backbone.named_modules() if name.endswith("conv2")
    }
    assert conv2["layer2.0.conv2"] == ((2, 2), (1, 1)) and conv2["layer3.1.conv2"] == ((1, 1), (2, 2))
    assert conv2["layer3.0.conv2"] == ((1, 1), (2, 2)) and conv2["layer4.0.conv2"] == ((1, 1), (4, 4))
    assert [c.dilation for c in model.classifier.convs] == [(6, 6), (12, 12), (18, 18), (24, 24)]


def test_aspp_is_the_sum_of_four_dilated_convolutions():
    torch.manual_seed(1)
    model = DeepLabV2("resnet_tiny", 3, rates=(1, 2, 3, 4))
    x = torch.randn(2, model.backbone.out_dim, 9, 9)
    by_hand = sum(
        F.conv2d(x, c.weight, c.bias, padding=r, dilation=r)
        for c, r in zip(model.classifier.convs, (1, 2, 3, 4))
    )
    assert torch.allclose(model.classifier(x), by_hand, rtol=1e-5, atol=1e-6)
    assert all(
        abs(float(c.weight.detach().std()) - 0.01) < 0.002 and (c.bias == 0).all()
        for c in model.classifier.convs
    )


@pytest.mark.parametrize("batches_tracked", [True, False])
def test_imagenet_weights_load_strictly_apart_from_fc(tmp_path, batches_tracked):
    tiny = build_resnet("resnet_tiny")
    state = random_state(torchvision_layout((1, 1, 2, 1), width=8), batches_tracked=batches_tracked)
    path = tmp_path / "resnet_tiny.pth"
    torch.save(state, path)
    load_resnet_pretrained(tiny, path)
    loaded = tiny.state_dict()
    for k, v in state.items():
        if not k.startswith("fc.") and not k.endswith("num_batches_tracked"):
            assert torch.equal(loaded[k], v), k
    torch.save({"state_dict": state}, path)  # wrapped, as some exports are
    load_resnet_pretrained(build_resnet("resnet_tiny"), path)


def test_a_file_of_another_architecture_is_refused_in_one_line(tmp_path):
    path = tmp_path / "resnet50-like.pth"
    torch.save(random_state(torchvision_layout((1, 1, 1, 1), width=8)), path)  # one block short in layer 3
    with pytest.raises(CheckpointError) as err:
        load_resnet_pretrained(build_resnet("resnet_tiny"), path)
    assert "is not a torchvision ResNet of this depth and width: 15 missing, 0 unexpected" in str(err.value)
    assert "(missing: layer3.1.conv1.weight, layer3.1.bn1.weight" in str(err.value)
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    wider = tmp_path / "wide.pth"
    torch.save(random_state(torchvision_layout((1, 1, 2, 1), width=16)), wider)
    with pytest.raises(
        CheckpointError, match=r"0 missing, 0 unexpected, \d+ wrong-shape keys \(wrong-shape: conv1"
    ):
        load_resnet_pretrained(build_resnet("resnet_tiny"), wider)
    mit = tmp_path / "mit.pth"
    torch.save({"patch_embed1.proj.weight": torch.zeros(8, 3, 7, 7)}, mit)
    with pytest.raises(CheckpointError, match="missing"):
        load_resnet_pretrained(build_resnet("resnet_tiny"), mit)


def test_frozen_batchnorm_keeps_statistics_and_affine_and_unfreezes_on_request():
    torch.manual_seed(2)
    model = DeepLabV2("resnet_tiny", 5).train()
    bns = model.backbone.batch_norms()
    assert all(not m.training for m in bns) and model.classifier.training
    assert all(not m.weight.requires_grad and not m.bias.requires_grad for m in bns)
    before = [m.running_mean.clone() for m in bns]
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before, bns))
    assert all(m.weight.grad is None for m in bns)
    trainable = build_resnet("resnet_tiny", freeze_bn=False).train()
    assert all(m.training and m.weight.requires_grad for m in trainable.batch_norms())
    mean = trainable.bn1.running_mean.clone()
    trainable(torch.randn(2, 3, 64, 64))
    assert not torch.equal(mean, trainable.bn1.running_mean)
    assert isinstance(trainable, ResNet) and ResNetVariant((1, 1, 1, 1)).width == 64


def test_sgd_groups_poly_schedule_and_classifier_lr():
    cfg = load_config(
        None,
        [
            "method=supervised",
            "backbone.config=resnet_tiny",
            "backbone.pretrained=false",
            "train.max_iters=10",
        ],
    )
    method = build_method(cfg)
    model = method.build_network()
    optimizer, scheduler = method.configure_optimizers(model)
    lrs = [g["lr"] for g in optimizer.param_groups]
    assert lrs == pytest.approx([2.5e-4, 2.5e-3, 5e-3])  # trunk (frozen BN: no norm group), 10×, 20×
    assert [g["weight_decay"] for g in optimizer.param_groups] == [5e-4, 5e-4, 0.0]
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["momentum"] == 0.9
    n_trunk = sum(1 for p in model.backbone.parameters() if p.ndim > 1)
    assert len(optimizer.param_groups[0]["params"]) == n_trunk
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(2.5e-4 * (1 - 3 / 10) ** 0.9)
    keys = ["method=supervised", "backbone.config=resnet_tiny", "backbone.pretrained=false"]
    unfrozen = build_method(load_config(None, [*keys, "backbone.freeze_bn=false"]))
    groups = unfrozen.configure_optimizers(unfrozen.build_network())[0].param_groups
    assert len(groups) == 4 and groups[1]["weight_decay"] == 0.0 and groups[1]["lr"] == pytest.approx(2.5e-4)
