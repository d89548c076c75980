"""Strict checkpoint loading (spec §1.8) and the golden authors'-layout state (model_forward parity)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model.afa import AFANetwork
from model.mit import build_mit
from model.weights import (
    build_from_golden_state,
    infer_mit_variant,
    load_afa_checkpoint,
    load_mit_pretrained,
    load_state_strict,
    state_from_golden_npz,
    strip_module_prefix,
)

GOLDEN = Path(__file__).parent / "golden"

# Literal key names of SegFormer's mit_b0.pth (spec §1.8); block4 has sr = 1, so no attn.sr/attn.norm.
SEGFORMER_KEYS = (
    "patch_embed1.proj.weight",
    "patch_embed1.norm.bias",
    "block1.0.norm1.weight",
    "block1.0.attn.q.weight",
    "block1.0.attn.kv.weight",
    "block1.0.attn.proj.bias",
    "block1.0.attn.sr.weight",
    "block1.0.attn.norm.weight",
    "block1.1.norm2.bias",
    "block3.1.mlp.fc1.weight",
    "block4.1.mlp.dwconv.dwconv.bias",
    "block4.1.mlp.fc2.weight",
    "norm4.weight",
)
# Per block: norm1, q, kv, proj, norm2, fc1, dwconv, fc2 (+ sr, attn.norm when sr > 1), two tensors each.
MIT_B0_NUM_TENSORS = 4 * 4 + 3 * 2 * 20 + 2 * 16 + 4 * 2


@pytest.fixture(scope="module")
def segformer_state() -> dict[str, torch.Tensor]:
    """A SegFormer ImageNet checkpoint layout: mit_b0's state dict plus the ImageNet ``head.*``."""
    torch.manual_seed(0)
    state = dict(build_mit("mit_b0").state_dict())
    for value in state.values():
        value.add_(0.01 * torch.randn_like(value))  # every tensor distinct, LayerNorms included
    state["head.weight"] = torch.randn(1000, 256)
    state["head.bias"] = torch.randn(1000)
    return state


def _save(obj: object, path: Path) -> Path:
    torch.save(obj, path)
    return path


def test_segformer_layout_is_our_key_layout(segformer_state: dict[str, torch.Tensor]) -> None:
    encoder_keys = [k for k in segformer_state if not k.startswith("head.")]
    assert len(encoder_keys) == MIT_B0_NUM_TENSORS == 176
    assert set(SEGFORMER_KEYS) <= set(encoder_keys)
    assert "block4.0.attn.sr.weight" not in encoder_keys
    assert segformer_state["block1.0.attn.kv.weight"].shape == (64, 32)
    assert infer_mit_variant({k: segformer_state[k] for k in encoder_keys}) == "mit_b0"


@pytest.mark.parametrize("wrap", [None, "state_dict", "model"])
def test_load_mit_pretrained_strict_roundtrip(
    tmp_path: Path, segformer_state: dict[str, torch.Tensor], wrap: str | None
) -> None:
    path = _save(segformer_state if wrap is None else {wrap: segformer_state}, tmp_path / "mit_b0.pth")
    encoder = build_mit("mit_b0")
    assert not torch.equal(
        encoder.state_dict()["block2.1.attn.q.weight"], segformer_state["block2.1.attn.q.weight"]
    )
    load_mit_pretrained(encoder, path)
    loaded = encoder.state_dict()
    assert set(loaded) == set(segformer_state) - {"head.weight", "head.bias"}
    for key, value in loaded.items():
        assert torch.equal(value, segformer_state[key]), key


def test_renamed_key_is_named(tmp_path: Path, segformer_state: dict[str, torch.Tensor]) -> None:
    state = dict(segformer_state)
    state["block2.0.attn.query.weight"] = state.pop("block2.0.attn.q.weight")
    with pytest.raises(ValueError) as err:
        load_mit_pretrained(build_mit("mit_b0"), _save(state, tmp_path / "renamed.pth"))
    message = str(err.value)
    assert "missing keys: block2.0.attn.q.weight" in message
    assert "unexpected keys: block2.0.attn.query.weight" in message
    assert "renamed.pth" in message


def test_wrong_shape_is_named(tmp_path: Path, segformer_state: dict[str, torch.Tensor]) -> None:
    state = dict(segformer_state)
    state["block3.1.mlp.fc1.weight"] = torch.zeros(640, 16)
    with pytest.raises(
        ValueError, match=r"block3\.1\.mlp\.fc1\.weight: expected \(640, 160\) got \(640, 16\)"
    ):
        load_mit_pretrained(build_mit("mit_b0"), _save(state, tmp_path / "shape.pth"))


def test_long_key_lists_are_truncated() -> None:
    with pytest.raises(ValueError) as err:
        load_state_strict(build_mit("mit_b0"), {}, "empty")
    message = str(err.value)
    assert message.startswith("empty does not match the model: missing keys: patch_embed1.proj.weight, ")
    assert message.endswith(f"and {MIT_B0_NUM_TENSORS - 10} more")
    assert message.count(",") == 9


def test_missing_file_gives_download_hint(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as err:
        load_mit_pretrained(build_mit("mit_b0"), tmp_path / "mit_b1.pth")
    message, hint = str(err.value), err.value.hint
    assert "mit_b1.pth" in message
    message = hint  # the download hint: one line of its own
    assert "NVlabs/SegFormer" in message
    assert "pretrained/<variant>.pth" in message
    assert "scripts/convert_weights.py" in message


def test_hf_layout_is_refused_with_conversion_hint(tmp_path: Path) -> None:
    state = {"segformer.encoder.block.0.0.attention.self.query.weight": torch.zeros(32, 32)}
    with pytest.raises(ValueError, match="convert_weights.py"):
        load_mit_pretrained(build_mit("mit_b0"), _save(state, tmp_path / "hf.pth"))


def test_strip_module_prefix() -> None:
    t = torch.zeros(1)
    stripped = strip_module_prefix(
        {"module.encoder.norm1.weight": t, "classifier.weight": t, "a.module.b": t}
    )
    assert list(stripped) == ["encoder.norm1.weight", "classifier.weight", "a.module.b"]


# --------------------------------------------------------------------------- golden authors' layout


@pytest.fixture(scope="module")
def golden_state() -> dict[str, torch.Tensor]:
    return state_from_golden_npz(GOLDEN / "model_state.npz")


def _assert_reproduces_golden_forward(model: torch.nn.Module) -> None:
    golden = np.load(GOLDEN / "model_forward.npz")
    model.eval()
    with torch.no_grad():
        out = model(torch.from_numpy(golden["in/x"]))
    for field, key in (("cls_logits", "out/cls"), ("seg_logits", "out/seg"), ("aff_pred", "out/attn_pred")):
        ours = getattr(out, field).numpy()
        assert ours.shape == golden[key].shape, field
        assert np.allclose(ours, golden[key], rtol=1e-4, atol=1e-5), field


def test_golden_state_keys(golden_state: dict[str, torch.Tensor]) -> None:
    assert len(golden_state) == MIT_B0_NUM_TENSORS + 19
    assert golden_state["attn_proj.weight"].shape == (1, 16, 1, 1)
    assert golden_state["decoder.linear_fuse.bn.num_batches_tracked"].dtype == torch.int64


def test_authors_ddp_checkpoint_reproduces_golden_forward(
    tmp_path: Path, golden_state: dict[str, torch.Tensor]
) -> None:
    path = _save({f"module.{k}": v for k, v in golden_state.items()}, tmp_path / "wetr_iter_18000.pth")
    model = AFANetwork("mit_b0", 21)
    load_afa_checkpoint(model, path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, golden_state[key]), key
    _assert_reproduces_golden_forward(model)


def test_training_checkpoint_and_mapping_sources(
    tmp_path: Path, golden_state: dict[str, torch.Tensor]
) -> None:
    ckpt = {"model": golden_state, "optimizer": {"state": {}, "param_groups": []}, "step": 7}
    path = _save(ckpt, tmp_path / "last.pth")
    from_file, from_mapping, plain = (AFANetwork("mit_b0", 21) for _ in range(3))
    load_afa_checkpoint(from_file, path)
    load_afa_checkpoint(from_mapping, ckpt)
    load_afa_checkpoint(plain, golden_state)
    for model in (from_file, from_mapping, plain):
        assert torch.equal(model.attn_proj.weight, golden_state["attn_proj.weight"])
        assert torch.equal(
            model.decoder.linear_fuse.bn.running_var, golden_state["decoder.linear_fuse.bn.running_var"]
        )


def test_afa_checkpoint_mismatch_is_named(golden_state: dict[str, torch.Tensor]) -> None:
    state = {k: v for k, v in golden_state.items() if k != "attn_proj.bias"}
    with pytest.raises(ValueError, match=r"missing keys: attn_proj\.bias$"):
        load_afa_checkpoint(AFANetwork("mit_b0", 21), state)
    with pytest.raises(
        ValueError, match=r"classifier\.weight: expected \(10, 256, 1, 1\) got \(20, 256, 1, 1\)"
    ):
        load_afa_checkpoint(AFANetwork("mit_b0", 11), golden_state)


def test_build_from_golden_state_infers_the_model() -> None:
    model = build_from_golden_state(GOLDEN / "model_state.npz")
    assert not model.training
    assert model.num_classes == 21
    assert model.aff_blocks == 2
    assert model.pooling == "gmp"
    assert model.encoder.strides == (4, 2, 2, 1)
    assert model.decoder.linear_fuse.bn.num_features == 256
    _assert_reproduces_golden_forward(model)
