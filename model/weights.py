"""Loading weights: SegFormer ImageNet MiT checkpoints, AFA checkpoints, golden states, HF conversion.

Spec §1.8: the reference loads ``pretrained/<backbone>.pth`` (SegFormer's ImageNet-1k classification
checkpoint), pops ``head.weight``/``head.bias`` and loads the rest into the encoder **strictly**. Our
MiT parameter names are exactly those checkpoint keys, so no mapping is involved; only the Hugging Face
``nvidia/mit-b*`` weights need one (``convert_hf_segformer``, used by ``scripts/convert_weights.py``).

Every ``torch.load`` here uses ``weights_only=True``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from common.errors import CheckpointError, MissingFileError
from common.torch_io import torch_load_checked
from model.afa import AFANetwork
from model.mit import MIT_VARIANTS, build_mit

logger = logging.getLogger(__name__)

MAX_LISTED_KEYS = 10
PRETRAINED_HINT = (
    "Download the SegFormer ImageNet-1k MiT checkpoint (mit_b0.pth ... mit_b5.pth, NVlabs/SegFormer, "
    "'ImageNet-1K pre-trained weights') and place it at pretrained/<variant>.pth, or convert the Hugging "
    "Face nvidia/mit-bX weights with: python scripts/convert_weights.py --src <hf dir> "
    "--dst pretrained/<variant>.pth; another file: backbone.pretrained_path=FILE; "
    "none: backbone.pretrained=false"
)


# --------------------------------------------------------------------------- strict loading


def _listed(keys: list[str]) -> str:
    """Comma-separated keys, at most ``MAX_LISTED_KEYS`` of them, then "and N more"."""
    shown = ", ".join(keys[:MAX_LISTED_KEYS])
    rest = len(keys) - MAX_LISTED_KEYS
    return f"{shown} and {rest} more" if rest > 0 else shown


def _shape(value: object) -> str:
    """``tuple(value.shape)`` as text, or "(not a tensor)"."""
    shape = getattr(value, "shape", None)
    return "(not a tensor)" if shape is None else str(tuple(shape))


def state_mismatches(expected: Mapping[str, Tensor], state: Mapping[str, Tensor]) -> list[str]:
    """Describe how ``state`` differs from ``expected`` in key names and tensor shapes.

    Args:
        expected: the reference state dict (usually ``module.state_dict()``).
        state: the state dict to check.

    Returns:
        One line per kind of problem ("missing keys: …", "unexpected keys: …", "shape mismatches:
        key: expected (…) got (…), …"); empty when names and shapes all agree.
    """
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k}: expected {_shape(expected[k])} got {_shape(v)}"
        for k, v in state.items()
        if k in expected and _shape(v) != _shape(expected[k])
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listed(unexpected)}")
    if wrong:
        problems.append(f"shape mismatches: {_listed(wrong)}")
    return problems


def check_state(expected: Mapping[str, Tensor], state: Mapping[str, Tensor], what: str) -> None:
    """Raise ``ValueError`` naming the offending keys unless names and shapes match exactly."""
    problems = state_mismatches(expected, state)
    if problems:
        raise CheckpointError(f"{what} does not match the model: " + "; ".join(problems))


def load_state_strict(module: nn.Module, state: Mapping[str, Tensor], what: str) -> None:
    """Strictly load ``state`` into ``module``, with an error that names every offending key.

    Args:
        module: the module to load into.
        state: its state dict (exact key names, no prefix).
        what: a short description of the source for the error message, e.g. a file name.

    Raises:
        ValueError: on missing or unexpected keys or any shape mismatch (checked before loading).
    """
    check_state(module.state_dict(), state, what)
    module.load_state_dict(dict(state), strict=True)


# --------------------------------------------------------------------------- reading checkpoints


def strip_module_prefix(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Remove a leading ``module.`` (DistributedDataParallel) from every key that has one."""
    prefix = "module."
    return {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in state.items()}


def unwrap_state_dict(obj: object, what: str) -> Mapping[str, Tensor]:
    """The state dict inside a loaded checkpoint.

    Args:
        obj: what ``torch.load`` returned: a state dict (every value a tensor), or a dict holding one
            under ``model`` (our training checkpoints) or ``state_dict``.
        what: the source, for error messages.
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{what}: expected a state dict or a dict holding one, got {type(obj).__name__}"
        )
    if obj and all(isinstance(v, Tensor) for v in obj.values()):
        return obj
    for key in ("model", "state_dict"):
        if isinstance(obj.get(key), Mapping):
            return obj[key]
    raise CheckpointError(f"{what}: no state dict found; top-level keys are {_listed([str(k) for k in obj])}")


def _torch_load(path: str | Path) -> object:
    """A checkpoint file's object through the project's checked ``torch.load``."""
    return torch_load_checked(path)


def load_mit_pretrained(encoder: nn.Module, path: str | Path) -> None:
    """Load a public SegFormer ImageNet MiT checkpoint (``mit_b0.pth`` … ``mit_b5.pth``) unchanged.

    Accepts a raw state dict or one wrapped under ``state_dict``/``model``; drops the ImageNet
    classifier ``head.*`` and loads the rest strictly (spec §1.8).

    Args:
        encoder: a ``MixVisionTransformer`` of the matching variant.
        path: checkpoint file.

    Raises:
        FileNotFoundError: the file does not exist (the message says where to get it).
        ValueError: key names or shapes differ from the encoder's.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"MiT checkpoint not found: {path}", hint=PRETRAINED_HINT)
    state = unwrap_state_dict(_torch_load(path), str(path))
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    if any(is_hf_segformer_key(k) for k in state):
        raise CheckpointError(
            f"{path} looks like a Hugging Face Segformer state dict; convert it first with "
            "scripts/convert_weights.py"
        )
    load_state_strict(encoder, state, str(path))


def load_afa_checkpoint(model: nn.Module, source: str | Path | Mapping[str, object]) -> None:
    """Load AFA network weights strictly.

    Accepts the authors' trained checkpoints (``module.``-prefixed reference keys, e.g.
    ``wetr_iter_18000.pth``), our training checkpoints (a dict whose ``model`` entry is the state
    dict) and plain state dicts.

    Args:
        model: an ``AFANetwork`` built with the checkpoint's backbone, classes and decoder width.
        source: a checkpoint path, or an already loaded checkpoint/state dict.
    """
    what = "AFA checkpoint" if isinstance(source, Mapping) else str(source)
    obj = source if isinstance(source, Mapping) else _torch_load(source)
    load_state_strict(model, strip_module_prefix(unwrap_state_dict(obj, what)), what)


# --------------------------------------------------------------------------- golden states


def state_from_golden_npz(path: str | Path) -> dict[str, Tensor]:
    """The ``state/<name>`` arrays of a golden ``model_state.npz`` as a state dict of tensors."""
    prefix = "state/"
    with np.load(Path(path)) as data:
        names = [k for k in data.files if k.startswith(prefix)]
        return {k[len(prefix) :]: torch.from_numpy(data[k].copy()) for k in names}


def build_afa_from_state(
    state: Mapping[str, Tensor],
    backbone: str,
    strides: tuple[int, int, int, int] = (4, 2, 2, 1),
    pooling: str = "gmp",
) -> AFANetwork:
    """Build an ``AFANetwork`` whose head sizes are read off a reference-layout state dict, and load it.

    Classes come from ``decoder.linear_pred.weight`` rows, the decoder width from
    ``decoder.linear_fuse.bn.weight``, and ``aff_blocks`` from ``attn_proj`` input channels divided by
    the stage-4 heads of ``backbone``.
    """
    if backbone not in MIT_VARIANTS:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {sorted(MIT_VARIANTS)}")
    heads = MIT_VARIANTS[backbone].num_heads[3]
    aff_channels = state["attn_proj.weight"].shape[1]
    if aff_channels % heads:
        raise ValueError(f"attn_proj has {aff_channels} inputs, not a multiple of {backbone}'s {heads} heads")
    model = AFANetwork(
        backbone,
        num_classes=state["decoder.linear_pred.weight"].shape[0],
        strides=strides,
        embed_dim=state["decoder.linear_fuse.bn.weight"].shape[0],
        pooling=pooling,
        aff_blocks=aff_channels // heads,
    )
    load_state_strict(model, state, f"{backbone} AFA state")
    return model


def build_from_golden_state(path: str | Path) -> AFANetwork:
    """Rebuild the golden cases' model from ``model_state.npz``, in eval mode (as the cases were run)."""
    with np.load(Path(path)) as data:
        backbone = str(data["meta/backbone"])
        strides = tuple(int(s) for s in data["meta/stride"]) if "meta/stride" in data.files else (4, 2, 2, 1)
    return build_afa_from_state(state_from_golden_npz(path), backbone, strides).eval()


# --------------------------------------------------------------------------- Hugging Face conversion

# Both transformers layouts: 4.x / hub files (``encoder.block.{i}.{j}``) and 5.x modules (``stages``).
_HF_PREFIXES = (
    (re.compile(r"encoder\.patch_embeddings\.(\d+)\.(.+)"), "embed"),
    (re.compile(r"stages\.(\d+)\.patch_embeddings\.(.+)"), "embed"),
    (re.compile(r"encoder\.block\.(\d+)\.(\d+)\.(.+)"), "block"),
    (re.compile(r"stages\.(\d+)\.blocks\.(\d+)\.(.+)"), "block"),
    (re.compile(r"encoder\.layer_norm\.(\d+)\.(.+)"), "norm"),
    (re.compile(r"stages\.(\d+)\.layer_norm\.(.+)"), "norm"),
)
_HF_EMBED_PARTS = {"proj": "proj", "layer_norm": "norm"}
_HF_BLOCK_PARTS = {
    "layer_norm_1": "norm1",
    "layernorm_before": "norm1",
    "attention.self.query": "attn.q",
    "attention.q_proj": "attn.q",
    "attention.self.key": "attn.k",
    "attention.k_proj": "attn.k",
    "attention.self.value": "attn.v",
    "attention.v_proj": "attn.v",
    "attention.self.sr": "attn.sr",
    "attention.sequence_reduction.sequence_reduction": "attn.sr",
    "attention.self.layer_norm": "attn.norm",
    "attention.sequence_reduction.layer_norm": "attn.norm",
    "attention.output.dense": "attn.proj",
    "attention.o_proj": "attn.proj",
    "layer_norm_2": "norm2",
    "layernorm_after": "norm2",
    "mlp.dense1": "mlp.fc1",
    "mlp.fc1": "mlp.fc1",
    "mlp.dwconv.dwconv": "mlp.dwconv.dwconv",
    "mlp.dense2": "mlp.fc2",
    "mlp.fc2": "mlp.fc2",
}
_HF_HEAD_PREFIXES = ("decode_head.", "classifier.")


def _strip_segformer(key: str) -> str:
    """``key`` without a leading ``segformer.``."""
    return key[len("segformer.") :] if key.startswith("segformer.") else key


def is_hf_segformer_key(key: str) -> bool:
    """Whether ``key`` names a Hugging Face Segformer encoder parameter (either transformers layout)."""
    return any(pattern.fullmatch(_strip_segformer(key)) for pattern, _ in _HF_PREFIXES)


def hf_head_keys(state: Mapping[str, Tensor]) -> list[str]:
    """Keys of a HF Segformer state dict that belong to a decode head or classifier (not converted)."""
    return [k for k in state if _strip_segformer(k).startswith(_HF_HEAD_PREFIXES)]


def hf_key_to_mit(key: str) -> str:
    """Map one HF Segformer encoder key to our MiT key.

    Key and value projections map to the temporary names ``attn.k`` / ``attn.v``, which
    ``convert_hf_segformer`` merges into ``attn.kv``.

    Raises:
        ValueError: the key is not a known encoder parameter.
    """
    bare = _strip_segformer(key)
    for pattern, kind in _HF_PREFIXES:
        match = pattern.fullmatch(bare)
        if match is None:
            continue
        stage = int(match.group(1)) + 1
        module, _, param = match.groups()[-1].rpartition(".")
        if kind == "embed" and module in _HF_EMBED_PARTS:
            return f"patch_embed{stage}.{_HF_EMBED_PARTS[module]}.{param}"
        if kind == "block" and module in _HF_BLOCK_PARTS:
            return f"block{stage}.{match.group(2)}.{_HF_BLOCK_PARTS[module]}.{param}"
        if kind == "norm" and module == "":
            return f"norm{stage}.{param}"
    raise ValueError(f"unknown Hugging Face Segformer encoder key: {key}")


def _merge_kv(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Replace every ``attn.k.<p>``/``attn.v.<p>`` pair by ``attn.kv.<p>`` = rows [k; v]."""
    merged = {}
    for key, value in state.items():
        head, sep, tail = key.partition(".attn.")
        if sep and tail.startswith("v."):
            if f"{head}.attn.k.{tail[2:]}" not in state:
                raise ValueError(f"value projection without key projection: {key}")
            continue
        if sep and tail.startswith("k."):
            v_key = f"{head}.attn.v.{tail[2:]}"
            if v_key not in state:
                raise ValueError(f"key projection without value projection: {key}")
            merged[f"{head}.attn.kv.{tail[2:]}"] = torch.cat([value, state[v_key]], dim=0)
        else:
            merged[key] = value
    return merged


def convert_hf_segformer(state: Mapping[str, Tensor], variant: str | None = None) -> dict[str, Tensor]:
    """Convert a Hugging Face Segformer/MiT state dict to SegFormer ImageNet checkpoint keys (ours).

    Handles ``SegformerModel``, ``SegformerForImageClassification`` and
    ``SegformerForSemanticSegmentation`` (optional ``segformer.`` prefix), in both the transformers 4.x
    / hub-file names and the transformers 5.x module names. HF has separate key and value Linears; our
    ``attn.kv`` is one Linear whose first half of output channels is k and second half v, so weights
    and biases are concatenated as rows [key; value]. Decode-head and classifier keys are dropped
    (logged; see ``hf_head_keys``).

    Args:
        state: the HF state dict.
        variant: if given, a MiT variant whose encoder shapes the result must match exactly.

    Returns:
        A state dict that ``load_mit_pretrained`` loads strictly.

    Raises:
        ValueError: an unknown encoder key, an unpaired key/value projection, two keys mapping to
            one name, or (with ``variant``) a name or shape mismatch.
    """
    head = set(hf_head_keys(state))
    if head:
        logger.info("ignoring %d HF head keys: %s", len(head), _listed(sorted(head)))
    renamed: dict[str, Tensor] = {}
    for key, value in state.items():
        if key in head:
            continue
        new = hf_key_to_mit(key)
        if new in renamed:
            raise ValueError(f"two Hugging Face keys map to {new} (mixed layouts?); second one: {key}")
        renamed[new] = value
    converted = _merge_kv(renamed)
    if variant is not None:
        check_state(build_mit(variant).state_dict(), converted, f"converted {variant} weights")
    return converted


def infer_mit_variant(state: Mapping[str, Tensor]) -> str:
    """Name the MiT variant whose embedding widths, depths, sr ratios and MLP ratio fit ``state``.

    Attention head counts leave no trace in the weights and are not checked.

    Args:
        state: a MiT state dict with our (SegFormer checkpoint) key names.
    """
    dims = tuple(state[f"patch_embed{i}.proj.weight"].shape[0] for i in range(1, 5))
    depths = tuple(len({k.split(".")[1] for k in state if k.startswith(f"block{i}.")}) for i in range(1, 5))
    srs = tuple(
        state[f"block{i}.0.attn.sr.weight"].shape[-1] if f"block{i}.0.attn.sr.weight" in state else 1
        for i in range(1, 5)
    )
    mlp_ratio = state["block1.0.mlp.fc1.weight"].shape[0] // dims[0]
    for name, v in MIT_VARIANTS.items():
        if (v.embed_dims, v.depths, v.sr_ratios, v.mlp_ratio) == (dims, depths, srs, mlp_ratio):
            return name
    raise ValueError(f"no MiT variant has widths {dims}, depths {depths}, sr {srs}, mlp ratio {mlp_ratio}")
