"""ResNet38 (AuxSegNet spec §1): output stride, frozen parts, parameter count, strict PSA-layout loading."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from common.errors import CheckpointError, MissingFileError
from model.auxsegnet import build_auxsegnet
from model.mit import build_mit
from model.resnet38 import ResBlock, ResNet38, load_resnet38_pretrained

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def tiny() -> ResNet38:
    torch.manual_seed(0)
    return ResNet38(width_divisor=32)


def _psa_state(net: ResNet38) -> dict[str, torch.Tensor]:
    """A random state with the PSA key names, as an MXNet conversion writes it (no num_batches_tracked)."""
    gen = torch.Generator().manual_seed(1)
    return {
        k: torch.rand(v.shape, generator=gen) + 0.5
        for k, v in net.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }


@pytest.mark.parametrize(("hw", "grid"), [((33, 17), (5, 3)), ((64, 64), (8, 8)), ((61, 45), (8, 6))])
def test_output_stride_8_rounds_up(tiny: ResNet38, hw: tuple[int, int], grid: tuple[int, int]) -> None:
    feats = tiny.eval().forward_features(torch.randn(1, 3, *hw))
    assert feats.conv6.shape == (1, 128, *grid)
    assert feats.conv4.shape == (1, 16, *grid) and feats.conv5.shape == (1, 32, *grid)
    assert feats.conv6.min() >= 0  # BN + ReLU


def test_projection_shortcut_convolves_the_preactivation() -> None:
    """The shortcut is a 1×1 conv of t = ReLU(BN(x)), not of x (spec §1.1)."""
    block = ResBlock(2, 2, 3).eval()
    with torch.no_grad():
        block.conv_branch2b1.weight.zero_()  # branch output 0: y = shortcut only
    x = torch.randn(1, 2, 4, 4)
    y, t = block(x)
    assert torch.allclose(y, block.conv_branch1(torch.relu(block.bn_branch2a(x))))
    assert torch.equal(t, torch.relu(block.bn_branch2a(x)))


def test_train_freezes_conv1a_and_every_batchnorm(tiny: ResNet38) -> None:
    assert tiny.train() is tiny
    bns = [m for m in tiny.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 37 and not any(m.training for m in bns)
    assert not any(p.requires_grad for m in bns for p in m.parameters())
    assert not tiny.conv1a.weight.requires_grad
    assert tiny.b7.conv_branch2b2.weight.requires_grad
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        a, b = tiny(x), tiny(x)  # dropout in b6 / b7 is active in train mode
        c, d = tiny.eval()(x), tiny(x)
    assert not torch.equal(a, b) and torch.equal(c, d)


def test_full_width_parameter_count() -> None:
    """Spec §1.4: 105,070,912 backbone parameters; heads 10,311,210 minus 66,560 dead NLBlock ones."""
    with torch.device("meta"):
        net = ResNet38()
        model = build_auxsegnet("resnet38")
    assert sum(p.numel() for p in net.parameters()) == 105_070_912
    heads = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("backbone."))
    assert heads == 10_311_210 - 66_560


def test_psa_layout_loads_strictly_and_returns_fc8(tiny: ResNet38, tmp_path) -> None:
    state = _psa_state(tiny) | {"fc8.weight": torch.randn(20, 128, 1, 1)}
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "res38.pth")
    head = load_resnet38_pretrained(tiny, tmp_path / "res38.pth")
    assert set(head) == {"fc8.weight"}
    assert torch.equal(tiny.b4_3.conv_branch2a.weight, state["b4_3.conv_branch2a.weight"])
    assert torch.equal(tiny.bn7.running_var, state["bn7.running_var"])
    model = build_auxsegnet("resnet38", width_divisor=32, pretrained=tmp_path / "res38.pth")
    assert torch.equal(model.fc8.weight, state["fc8.weight"])
    assert torch.equal(model.backbone.conv1a.weight, state["conv1a.weight"])


def test_wrong_files_are_refused_in_one_line(tiny: ResNet38, tmp_path) -> None:
    torch.save(build_mit("mit_tiny").state_dict(), tmp_path / "mit.pth")
    with pytest.raises(CheckpointError) as err:
        load_resnet38_pretrained(tiny, tmp_path / "mit.pth")
    assert "\n" not in str(err.value) and "missing 228" not in str(err.value)
    assert "not a ResNet38 state dict" in str(err.value) and "conv1a.weight" in str(err.value)
    torch.save(_psa_state(ResNet38(width_divisor=16)), tmp_path / "wide.pth")
    with pytest.raises(CheckpointError, match="wrong shape"):
        load_resnet38_pretrained(tiny, tmp_path / "wide.pth")
    with pytest.raises(MissingFileError, match="nothere.pth"):
        load_resnet38_pretrained(tiny, tmp_path / "nothere.pth")
