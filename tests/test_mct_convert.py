"""Hugging Face ``facebook/deit-*`` -> DeiT conversion on random state dicts with the real HF key names.

The names are those of ``ViTForImageClassification``: the hub files (and ``save_pretrained``) use the
transformers-4 names, transformers 5 renames its modules. Both are converted; the stacked ``qkv`` is
checked against separate q, k, v projections computed by hand (no transformers import: it takes
~30 s here).
"""

from __future__ import annotations

import pytest
import torch

from common.errors import DataError
from model.deit import Attention, convert_hf_deit
from model.mctformer import MCTformer, load_deit_checkpoint
from scripts.convert_weights import convert_deit, is_hf_deit

D, HIDDEN = 32, 128
V4 = {  # transformers-4 file names of block 0 (from a save_pretrained file) -> shape
    "attention.attention.query.weight": (D, D),
    "attention.attention.query.bias": (D,),
    "attention.attention.key.weight": (D, D),
    "attention.attention.key.bias": (D,),
    "attention.attention.value.weight": (D, D),
    "attention.attention.value.bias": (D,),
    "attention.output.dense.weight": (D, D),
    "attention.output.dense.bias": (D,),
    "intermediate.dense.weight": (HIDDEN, D),
    "intermediate.dense.bias": (HIDDEN,),
    "output.dense.weight": (D, HIDDEN),
    "output.dense.bias": (D,),
    "layernorm_before.weight": (D,),
    "layernorm_before.bias": (D,),
    "layernorm_after.weight": (D,),
    "layernorm_after.bias": (D,),
}
V5_NAMES = {  # transformers-5 module names
    "attention.attention.query": "attention.q_proj",
    "attention.attention.key": "attention.k_proj",
    "attention.attention.value": "attention.v_proj",
    "attention.output.dense": "attention.o_proj",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}


def hf_state(layout: int, depth: int = 2, grid: int = 4) -> dict[str, torch.Tensor]:
    """A random HF ViT classifier state dict in the given transformers ``layout`` (4 or 5)."""
    g = torch.Generator().manual_seed(0)
    state = {
        "vit.embeddings.cls_token": (1, 1, D),
        "vit.embeddings.position_embeddings": (1, 1 + grid * grid, D),
        "vit.embeddings.patch_embeddings.projection.weight": (D, 3, 16, 16),
        "vit.embeddings.patch_embeddings.projection.bias": (D,),
        "vit.layernorm.weight": (D,),
        "vit.layernorm.bias": (D,),
        "classifier.weight": (10, D),
        "classifier.bias": (10,),
    }
    for i in range(depth):
        for name, shape in V4.items():
            if layout == 5:
                stem, kind = name.rsplit(".", 1)
                state[f"vit.layers.{i}.{V5_NAMES.get(stem, stem)}.{kind}"] = shape
            else:
                state[f"vit.encoder.layer.{i}.{name}"] = shape
    return {k: torch.randn(*s, generator=g) for k, s in state.items()}


@pytest.mark.parametrize("layout", [4, 5])
def test_both_layouts_convert_and_qkv_matches_separate_projections(layout):
    hf = hf_state(layout)
    ours = convert_hf_deit(hf)
    model = MCTformer("v1", 1, embed_dim=D, depth=2, num_heads=2, img_size=64)
    assert set(ours) == set(model.state_dict())  # every DeiT key, nothing else
    pre = "vit.encoder.layer.1.attention.attention." if layout == 4 else "vit.layers.1.attention."
    names = ("query", "key", "value") if layout == 4 else ("q_proj", "k_proj", "v_proj")
    attn = Attention(D, 2)
    attn.load_state_dict(
        {k[len("blocks.1.attn.") :]: v for k, v in ours.items() if k.startswith("blocks.1.attn.")}
    )
    x = torch.randn(1, 5, D)
    q, k, v = (x @ hf[f"{pre}{n}.weight"].T + hf[f"{pre}{n}.bias"] for n in names)
    split = [t.reshape(1, 5, 2, D // 2).transpose(1, 2) for t in (q, k, v)]
    weights = (split[0] @ split[1].transpose(-2, -1) * (D // 2) ** -0.5).softmax(-1)
    out = (weights @ split[2]).transpose(1, 2).reshape(1, 5, D) @ attn.proj.weight.T + attn.proj.bias
    torch.testing.assert_close(attn(x)[0], out, rtol=1e-5, atol=1e-5)
    fc2 = "vit.encoder.layer.0.output.dense.weight" if layout == 4 else "vit.layers.0.mlp.fc2.weight"
    assert torch.equal(ours["blocks.0.mlp.fc2.weight"], hf[fc2]) and torch.equal(
        ours["head.bias"], hf["classifier.bias"]
    )


def test_converted_file_loads_into_mctformer(tmp_path):
    hf = hf_state(4)
    assert is_hf_deit(hf)
    with pytest.raises(DataError, match="none of"):  # 32 wide, 2 deep: no DeiT size
        convert_deit(hf, tmp_path / "src", tmp_path / "out.pth")
    state = convert_hf_deit(hf)
    path = tmp_path / "deit.pth"
    torch.save({"model": state}, path)
    model = MCTformer("v2", 4, embed_dim=D, depth=2, num_heads=2, img_size=64)
    assert load_deit_checkpoint(model, path) == ["head.bias", "head.weight"]
    torch.testing.assert_close(model.cls_token, state["cls_token"].repeat(1, 4, 1))


def test_distilled_and_foreign_keys_are_refused():
    with pytest.raises(ValueError, match="distilled"):
        convert_hf_deit({"deit.embeddings.distillation_token": torch.zeros(1)})
    with pytest.raises(ValueError, match="not a key"):
        convert_hf_deit({"vit.encoder.layer.0.something.weight": torch.zeros(1)})
