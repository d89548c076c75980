"""Hugging Face Segformer -> SegFormer MiT conversion, checked numerically against a random HF model.

Two HF key layouts exist: the files on the hub and everything ``save_pretrained`` writes use the
transformers 4.x names (``segformer.encoder.block.0.0.attention.self.key.weight``); transformers 5.x
renames its modules on load (``segformer.stages.0.blocks.0.attention.k_proj.weight``), so its
``state_dict()`` differs from its files. Both are converted and both are tested here.

HF builds the block and stage-output LayerNorms with PyTorch's default eps 1e-5 (``layer_norm_eps``
does not reach them), whereas SegFormer's MiT, the reference and ours use 1e-6 there (spec §1.1). The
weights are the same either way; ``hf_model`` sets those eps to 1e-6 so the comparison isolates the
conversion (stock HF differs from ours by about 2e-5 on these inputs).
"""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from model.mit import MixVisionTransformer, build_mit
from model.weights import convert_hf_segformer, hf_head_keys, load_mit_pretrained

transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "convert_weights.py"
MIT_B0_CONFIG = {
    "hidden_sizes": [32, 64, 160, 256],
    "num_attention_heads": [1, 2, 5, 8],
    "depths": [2, 2, 2, 2],
    "sr_ratios": [8, 4, 2, 1],
    "patch_sizes": [7, 3, 3, 3],
    "mlp_ratios": [4, 4, 4, 4],
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-6,
    "drop_path_rate": 0.0,
    "num_labels": 3,
}
HUB_BLOCK = "segformer.encoder.block.0.0.attention.self"  # hub / save_pretrained names


def hf_model(
    cls_name: str = "SegformerModel", strides: tuple[int, ...] = (4, 2, 2, 2), **overrides: object
) -> nn.Module:
    """A random HF Segformer with mit_b0's dimensions, eager attention, eval mode, eps matched to ours."""
    torch.manual_seed(0)
    config = transformers.SegformerConfig(
        strides=list(strides), attn_implementation="eager", **{**MIT_B0_CONFIG, **overrides}
    )
    model = getattr(transformers, cls_name)(config).eval()
    for name, module in model.named_modules():
        # Patch-embedding and spatial-reduction norms keep 1e-5, as in ours.
        if isinstance(module, nn.LayerNorm) and "patch_embeddings" not in name and "attention" not in name:
            module.eps = 1e-6
    return model


def ours_from_hf(state: dict[str, Tensor], strides: tuple[int, int, int, int]) -> MixVisionTransformer:
    encoder = build_mit("mit_b0", strides=strides, drop_path_rate=0.0)
    encoder.load_state_dict(convert_hf_segformer(state, "mit_b0"), strict=True)
    return encoder.eval()


def assert_same_features(hf: nn.Module, ours: MixVisionTransformer, x: Tensor) -> None:
    """All four stage outputs of ``hf`` (hidden states, NCHW) and ``ours`` agree."""
    with torch.no_grad():
        hidden = hf(x, output_hidden_states=True).hidden_states[-4:]
        features = ours(x).features
    for stage, (theirs, mine) in enumerate(zip(hidden, features)):
        if theirs.ndim == 3:  # (B, N, C) when HF does not reshape the last stage
            theirs = theirs.transpose(1, 2).reshape(mine.shape)
        assert theirs.shape == mine.shape, stage
        assert torch.allclose(mine, theirs, rtol=1e-4, atol=1e-5), (stage, (mine - theirs).abs().max())


@pytest.fixture(scope="module")
def x() -> Tensor:
    return torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def hub_state(model: nn.Module, tmp_path: Path) -> dict[str, Tensor]:
    """The state dict as ``save_pretrained`` writes it (the names of the files on the hub)."""
    model.save_pretrained(tmp_path)
    return safetensors_torch.load_file(str(tmp_path / "model.safetensors"))


# --------------------------------------------------------------------------- numerical equivalence


HFAndOurs = tuple[nn.Module, MixVisionTransformer, tuple[int, int, int, int]]


@pytest.fixture(scope="module", params=[(4, 2, 2, 2), (4, 2, 2, 1)], ids=["segformer", "afa"])
def hf_and_ours(request: pytest.FixtureRequest) -> HFAndOurs:
    """HF model and our converted encoder, at SegFormer's strides and at AFA's (stage 4 at stride 16)."""
    hf = hf_model(strides=request.param)
    return hf, ours_from_hf(hf.state_dict(), request.param), request.param


def test_converted_encoder_matches_hf_stage_outputs(hf_and_ours: HFAndOurs, x: Tensor) -> None:
    hf, ours, _ = hf_and_ours
    assert_same_features(hf, ours, x)


def test_stage4_attention_matches_hf_probabilities(hf_and_ours: HFAndOurs, x: Tensor) -> None:
    hf, ours, strides = hf_and_ours
    with torch.no_grad():
        probs = hf(x, output_attentions=True).attentions
        logits = ours(x).attn_logits
    assert len(probs) == len(logits) == 8
    n = (64 // 32) ** 2 if strides[3] == 2 else (64 // 16) ** 2
    for block in (6, 7):  # both stage-4 blocks, sr = 1
        assert logits[block].shape == probs[block].shape == (1, 8, n, n)
        ours_probs = (logits[block] * (256 // 8) ** -0.5).softmax(dim=-1)
        assert torch.allclose(ours_probs, probs[block], rtol=1e-4, atol=1e-6)
        assert (probs[block] - 1 / n).abs().max() > 1e-3  # not uniform, so the comparison can fail


def test_hub_layout_converts_like_module_layout(tmp_path: Path, x: Tensor) -> None:
    hf = hf_model("SegformerForImageClassification")
    hub = hub_state(hf, tmp_path)
    assert f"{HUB_BLOCK}.key.weight" in hub and "segformer.encoder.layer_norm.3.weight" in hub
    converted = convert_hf_segformer(hub, "mit_b0")
    from_modules = convert_hf_segformer(hf.state_dict(), "mit_b0")
    assert converted.keys() == from_modules.keys()
    assert all(torch.equal(converted[k], from_modules[k]) for k in converted)
    assert_same_features(hf.segformer, ours_from_hf(hub, (4, 2, 2, 2)), x)


def test_kv_rows_are_key_then_value(tmp_path: Path) -> None:
    hub = hub_state(hf_model("SegformerForImageClassification"), tmp_path)
    for name in ("key", "value"):
        hub[f"{HUB_BLOCK}.{name}.bias"] = torch.randn(32)
    converted = convert_hf_segformer(hub)
    kv_w, kv_b = converted["block1.0.attn.kv.weight"], converted["block1.0.attn.kv.bias"]
    assert kv_w.shape == (64, 32) and kv_b.shape == (64,)
    assert torch.equal(kv_w[:32], hub[f"{HUB_BLOCK}.key.weight"])
    assert torch.equal(kv_w[32:], hub[f"{HUB_BLOCK}.value.weight"])
    assert torch.equal(kv_b, torch.cat([hub[f"{HUB_BLOCK}.key.bias"], hub[f"{HUB_BLOCK}.value.bias"]]))
    assert torch.equal(converted["block1.0.attn.q.weight"], hub[f"{HUB_BLOCK}.query.weight"])
    assert torch.equal(converted["block1.0.attn.sr.weight"], hub[f"{HUB_BLOCK}.sr.weight"])


# --------------------------------------------------------------------------- head keys and errors


def test_head_keys_are_dropped_and_reported() -> None:
    state = hf_model("SegformerForSemanticSegmentation").state_dict()
    head = hf_head_keys(state)
    assert head and all(k.startswith("decode_head.") for k in head)
    converted = convert_hf_segformer(state, "mit_b0")
    num_blocks = 8  # each block's k and v (weight, bias) become one kv
    assert len(converted) == len(build_mit("mit_b0").state_dict()) == len(state) - len(head) - 2 * num_blocks


def test_unknown_and_unpaired_keys_raise_naming_the_key(tmp_path: Path) -> None:
    hub = hub_state(hf_model(), tmp_path)
    with pytest.raises(ValueError, match=r"unknown .* encoder\.block\.1\.0\.attention\.self\.qkv\.weight"):
        convert_hf_segformer({**hub, "encoder.block.1.0.attention.self.qkv.weight": torch.zeros(1)})
    hub.pop("encoder.block.2.1.attention.self.value.bias")
    with pytest.raises(ValueError, match=r"without value projection: block3\.1\.attn\.k\.bias"):
        convert_hf_segformer(hub)


def test_wrong_variant_names_the_shape_mismatch() -> None:
    with pytest.raises(
        ValueError, match=r"patch_embed1\.proj\.weight: expected \(16, 3, 7, 7\) got \(32, 3, 7, 7\)"
    ):
        convert_hf_segformer(hf_model().state_dict(), "mit_tiny")


# --------------------------------------------------------------------------- the command-line tool


def test_cli_converts_a_saved_hf_model(tmp_path: Path, x: Tensor) -> None:
    hf = hf_model("SegformerForImageClassification")
    hf.save_pretrained(tmp_path / "hf")
    dst = tmp_path / "pretrained" / "mit_b0.pth"
    cmd = [sys.executable, str(SCRIPT), "--src", str(tmp_path / "hf"), "--dst", str(dst)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "mit_b0, 176 tensors; dropped 2 head keys" in result.stdout
    encoder = build_mit("mit_b0", strides=(4, 2, 2, 2), drop_path_rate=0.0)
    load_mit_pretrained(encoder, dst)
    assert_same_features(hf.segformer, encoder.eval(), x)


def test_cli_single_bin_file_with_variant(tmp_path: Path) -> None:
    state = hf_model("SegformerForSemanticSegmentation").state_dict()
    torch.save(state, tmp_path / "pytorch_model.bin")
    dst = tmp_path / "mit_b0.pth"
    runpy.run_path(str(SCRIPT))["main"](
        ["--src", str(tmp_path / "pytorch_model.bin"), "--dst", str(dst), "--variant", "mit_b0"]
    )
    saved = torch.load(dst, weights_only=True)
    expected = convert_hf_segformer(state)
    assert saved.keys() == expected.keys()
    assert all(torch.equal(saved[k], expected[k]) for k in saved)


def test_cli_refuses_a_config_with_other_head_counts(tmp_path: Path) -> None:
    hf_model(num_attention_heads=[1, 2, 5, 4]).save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["num_attention_heads"] == [1, 2, 5, 4]
    main = runpy.run_path(str(SCRIPT))["main"]
    with pytest.raises(ValueError, match=r"num_attention_heads=\[1, 2, 5, 4\] but mit_b0"):
        main(["--src", str(tmp_path), "--dst", str(tmp_path / "out.pth")])
    assert not (tmp_path / "out.pth").exists()


def test_cli_without_safetensors_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    read_state = runpy.run_path(str(SCRIPT))["read_state"]
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(ImportError, match="pip install safetensors"):
        read_state(tmp_path / "model.safetensors")
