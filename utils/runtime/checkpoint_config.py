"""The network a checkpoint was trained with, from the resolved config it carries.

Our training checkpoints hold ``config`` (the resolved YAML of the run). Inference, pseudo-label
export and pictures build the network from it: the network keys of a ``--config`` YAML yield to the
checkpoint's (one ``warning:`` line when they differ), a command-line ``key=value`` that contradicts
the checkpoint is an error naming both values, and without ``--config`` the checkpoint's whole config
is used. The authors' checkpoints carry no config: their network comes from ``--config``. A checkpoint records
its method (``method``); a ``--config`` of another method is an error.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from common.errors import CheckpointError, UsageError, notice
from common.torch_io import torch_load_checked
from methods.registry import method_class
from utils.config import apply_overrides, load_config, schema_keys, schema_of, validate

_ABSENT = object()


def saved_config(obj: object) -> DictConfig | None:
    """The config stored in a loaded checkpoint, or None (the authors' checkpoints, plain state dicts)."""
    if isinstance(obj, Mapping) and isinstance(obj.get("config"), str):
        return OmegaConf.create(obj["config"])
    return None


def plain(value: object) -> object:
    """A config value as plain Python (lists for ListConfig), for comparisons and messages."""
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def config_differences(saved: DictConfig, cfg: DictConfig, keys: Iterable[str]) -> dict[str, tuple]:
    """{key: (saved value, value in cfg)} for the ``keys`` the saved config holds and that differ."""
    diffs = {}
    for key in keys:
        theirs = OmegaConf.select(saved, key, default=_ABSENT)
        if theirs is _ABSENT:
            continue
        ours = OmegaConf.select(cfg, key)
        if plain(theirs) != plain(ours):
            diffs[key] = (plain(theirs), plain(ours))
    return diffs


def network_keys(cfg: DictConfig) -> tuple[str, ...]:
    """The keys that fix the network's parameters: ``method`` and the method's ``network_keys`` (a
    checkpoint's weights only fit a network built with them)."""
    return ("method", *method_class(cfg.method).network_keys)


def saved_method(saved: DictConfig) -> str:
    """The method a saved config names (``afa`` for checkpoints from before methods were recorded)."""
    return saved.get("method", "afa")


def known_part(saved: DictConfig) -> DictConfig:
    """The keys of ``saved`` its method's schema knows, on the schema defaults (keys of other versions
    dropped)."""
    cfg = schema_of(saved_method(saved))
    for key in schema_keys(cfg):
        value = OmegaConf.select(saved, key, default=_ABSENT)
        if value is not _ABSENT:
            OmegaConf.update(cfg, key, value, merge=False)
    return cfg


def config_for_checkpoint(
    config_path: str | Path | None, overrides: list[str], checkpoint: str | Path
) -> DictConfig:
    """The config to run ``checkpoint`` with: ``--config`` (or the checkpoint's own), overrides, and the
    checkpoint's network keys.

    Raises:
        CheckpointError: an override contradicts the checkpoint's network (names both values).
        UsageError: no ``--config`` and the checkpoint carries none.
    """
    saved = saved_config(torch_load_checked(checkpoint))
    if config_path is None:
        if saved is None:
            raise UsageError(
                f"{checkpoint} carries no config (an authors' checkpoint?)",
                hint="give --config with its network and data keys, e.g. --config configs/voc.yaml",
            )
        return apply_overrides(known_part(saved), overrides)
    cfg = load_config(config_path, overrides)
    if saved is None:
        return cfg
    if saved_method(saved) != cfg.method:
        raise CheckpointError(
            f"{checkpoint} was trained with method {saved_method(saved)}, "
            f"{config_path} is a config of {cfg.method}",
            hint="leave out --config (the checkpoint carries its config) or give one of its method",
        )
    diffs = config_differences(saved, cfg, network_keys(cfg))
    set_here = {item.split("=", 1)[0] for item in overrides}
    clashes = [
        f"{k}={ours} on the command line, {theirs} in the checkpoint"
        for k, (theirs, ours) in diffs.items()
        if k in set_here
    ]
    if clashes:
        raise CheckpointError(
            f"{checkpoint} was trained with another network: " + "; ".join(clashes),
            hint="drop these key=value overrides (the network comes from the checkpoint)",
        )
    if diffs:
        for key, (theirs, _) in diffs.items():
            OmegaConf.update(cfg, key, theirs, merge=False)
        listed = ", ".join(f"{k}={theirs} (config {ours})" for k, (theirs, ours) in diffs.items())
        notice(f"using the network of {checkpoint}: {listed}")
        validate(cfg)
    return cfg


DATA_CONFIG_HELP = (
    "YAML of the data keys (default: the checkpoint's config); network keys yield to the checkpoint's"
)
OUR_OR_AUTHORS = "our checkpoint or the authors' (module. keys)"


def add_checkpoint_arguments(
    parser: argparse.ArgumentParser,
    config_help: str = DATA_CONFIG_HELP,
    checkpoint_help: str = OUR_OR_AUTHORS,
) -> None:
    """``--config`` (optional: our checkpoints carry their network, see ``config_for_checkpoint``) and
    ``--checkpoint`` (required), as every entry point that runs a trained network takes them."""
    parser.add_argument("--config", help=config_help)
    parser.add_argument("--checkpoint", required=True, help=checkpoint_help)
