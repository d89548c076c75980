"""Convert Hugging Face Segformer/MiT weights (e.g. ``nvidia/mit-b1``) to a SegFormer ImageNet checkpoint.

Example:
    python scripts/convert_weights.py --src path/to/nvidia-mit-b1/ --dst pretrained/mit_b1.pth
    python scripts/convert_weights.py --src path/to/facebook-deit-small-patch16-224/ \
        --dst pretrained/deit_small_patch16_224-cd65a155.pth

A ``facebook/deit-*`` (ViT classifier) source is recognised by its keys and written as
``{'model': state}`` in DeiT's names, as the official DeiT files (MCTformer, ``model/deit.py``).

``--src`` is a folder holding ``model.safetensors`` or ``pytorch_model.bin`` (as written by
``save_pretrained`` or downloaded from the hub), or one ``.safetensors``/``.bin``/``.pth`` file. The
output is a plain state dict with SegFormer's ``mit_b*.pth`` key names, which
``model.weights.load_mit_pretrained`` loads strictly; it is checked by strictly loading it into a
freshly built encoder of the variant before it is written. Decode-head and classifier weights are
dropped. Reading safetensors needs the ``safetensors`` package.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch import Tensor

from common.errors import DataError, MissingFileError
from model.deit import DeiT, convert_hf_deit
from model.mctformer import DEIT_SIZES
from model.mit import MIT_VARIANTS, build_mit
from model.weights import (
    convert_hf_segformer,
    hf_head_keys,
    infer_mit_variant,
    load_state_strict,
    unwrap_state_dict,
)
from utils.cli import add_debug_flag, run

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# HF config fields that must equal the variant's architecture (head counts leave no trace in weights).
CONFIG_FIELDS = {
    "hidden_sizes": "embed_dims",
    "num_attention_heads": "num_heads",
    "depths": "depths",
    "sr_ratios": "sr_ratios",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", required=True, help="HF model folder, or a .safetensors/.bin/.pth file")
    parser.add_argument("--dst", required=True, help="output checkpoint, e.g. pretrained/mit_b1.pth")
    parser.add_argument(
        "--variant", default=None, choices=sorted(MIT_VARIANTS), help="MiT variant (default: from shapes)"
    )
    add_debug_flag(parser)
    return parser.parse_args(argv)


def weight_file(src: Path) -> Path:
    """The weight file of ``src``: itself if a file, else the first of ``WEIGHT_FILES`` inside it."""
    if src.is_file():
        return src
    for name in WEIGHT_FILES:
        if (src / name).is_file():
            return src / name
    raise MissingFileError(
        f"{src} is neither a weight file nor a folder holding one of {', '.join(WEIGHT_FILES)}"
    )


def read_state(path: Path) -> dict[str, Tensor]:
    """Read a state dict from a ``.safetensors`` file or a torch file (``weights_only=True``)."""
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as err:
            raise ImportError(
                f"reading {path} needs the safetensors package: pip install safetensors "
                "(or pass a pytorch_model.bin instead)"
            ) from err
        return load_file(str(path), device="cpu")
    return dict(unwrap_state_dict(torch.load(path, map_location="cpu", weights_only=True), str(path)))


def check_hf_config(config_path: Path, variant: str) -> None:
    """Raise if a HF ``config.json`` describes another architecture than ``variant``."""
    if not config_path.is_file():
        return
    config = json.loads(config_path.read_text())
    expected = MIT_VARIANTS[variant]
    for field, attr in CONFIG_FIELDS.items():
        if field in config and tuple(config[field]) != tuple(getattr(expected, attr)):
            raise DataError(
                f"{config_path}: {field}={config[field]} but {variant} has {attr}={getattr(expected, attr)}"
            )


def is_hf_deit(hf_state: dict[str, Tensor]) -> bool:
    """Whether a HF state dict is a ViT/DeiT classifier (``facebook/deit-*``) rather than a Segformer."""
    return any(k.startswith(("vit.embeddings.", "deit.embeddings.")) for k in hf_state)


def convert_deit(hf_state: dict[str, Tensor], src: Path, dst: Path) -> None:
    """``facebook/deit-*`` -> ``{'model': state}`` in DeiT's names (the layout of
    ``deit_small_patch16_224-cd65a155.pth``), checked by strictly loading it into a DeiT of its size."""
    try:
        state = convert_hf_deit(hf_state)
    except ValueError as err:
        raise DataError(f"{src}: {err}") from err
    dim = state["cls_token"].shape[-1]
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    sizes = {v[:2]: (k, v[2]) for k, v in DEIT_SIZES.items()}
    if (dim, depth) not in sizes:
        raise DataError(f"{src}: a ViT of width {dim}, depth {depth} is none of {sorted(DEIT_SIZES)}")
    name, heads = sizes[(dim, depth)]
    grid = int(round((state["pos_embed"].shape[1] - 1) ** 0.5))
    net = DeiT(1, dim, depth, heads, img_size=16 * grid)
    body = {k: v for k, v in state.items() if not k.startswith("head.")}
    load_state_strict(net, body, f"weights converted from {src} as {name}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state}, dst)
    print(f"{src} -> {dst}: {name}, {len(state)} tensors (DeiT layout, for backbone.pretrained_path)")


def main(argv: list[str] | None = None) -> None:
    """Convert the file of the command line (``argv``)."""
    args = parse_args(argv)
    src = weight_file(Path(args.src))
    hf_state = read_state(src)
    if is_hf_deit(hf_state):
        return convert_deit(hf_state, src, Path(args.dst))
    state = convert_hf_segformer(hf_state)
    variant = args.variant or infer_mit_variant(state)
    check_hf_config(src.parent / "config.json", variant)
    load_state_strict(build_mit(variant), state, f"weights converted from {src} as {variant}")
    dst = Path(args.dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, dst)
    dropped = hf_head_keys(hf_state)
    print(f"{src} -> {dst}: {variant}, {len(state)} tensors; dropped {len(dropped)} head keys")


if __name__ == "__main__":
    sys.exit(run(main))
