"""Reading torch files safely: ``weights_only`` loading with one-line errors that name the file."""

from __future__ import annotations

from pathlib import Path

import torch

from common.errors import CheckpointError, MissingFileError


def torch_load_checked(path: str | Path, map_location: str | torch.device = "cpu") -> object:
    """``torch.load(..., weights_only=True)`` with one-line errors naming the file.

    Raises:
        MissingFileError: no such file.
        CheckpointError: the file is truncated, not a torch file, or holds objects other than tensors,
            numbers, strings, lists and dicts (``weights_only`` refuses to run its code).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for bad files
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"cannot read checkpoint {path}: {first}",
            hint="a truncated copy, or not a torch checkpoint of this project (nor the authors')",
        ) from err
