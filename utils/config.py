"""Typed configuration: the method's schema ← YAML file (and the files it names as ``base``) ←
command-line ``key=value`` overrides.

The ``method`` key (default ``afa``) chooses the schema (``methods/registry.py``): the shared sections
of ``methods/schema.py`` plus the method's own. An unknown key or a value of the wrong type is an error
naming the key and where it came from.

**Inheritance.** A YAML file may start with ``base: other.yaml`` (a path relative to the file): the
other file is read first and this file's keys replace its values (lists are replaced, not merged),
so a variant is a few lines, e.g. ``configs/voc_noreg.yaml`` = ``base: voc.yaml`` + ``loss.reg: 0``.
A base may have a base of its own; a cycle is an error.
"""

from __future__ import annotations

import difflib
import inspect
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from common.errors import ConfigError, MissingFileError
from methods.registry import DEFAULT_METHOD, method_class

BASE_KEY = "base"


def schema_keys(node: DictConfig, prefix: str = "") -> list[str]:
    """Every dotted key of a config or schema node (``train.max_iters``, ``device``, ...)."""
    keys = []
    for name in node:
        value = node[name]
        if isinstance(value, DictConfig):
            keys += schema_keys(value, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def schema_of(method: str) -> DictConfig:
    """The defaults of ``method``'s schema (ConfigError naming the known methods for another name)."""
    return OmegaConf.structured(method_class(method).schema)


def _where_keys_are(cfg: DictConfig) -> str:
    """The files that define ``cfg``'s keys (for the hints of key errors)."""
    schema = OmegaConf.get_type(cfg)
    files = ["methods/schema.py"] + [f for f in [_source(schema)] if f and f != "methods/schema.py"]
    return " and ".join(files)


def _source(cls: type) -> str | None:
    """The repository path of the file defining ``cls``, or None outside it."""
    try:
        return (
            Path(inspect.getfile(cls)).resolve().relative_to(Path(__file__).resolve().parents[1]).as_posix()
        )
    except (TypeError, ValueError):
        return None


def _merge(base: DictConfig, other: DictConfig, source: str) -> DictConfig:
    """``base`` with ``other`` merged in; a ConfigError naming the key and ``source`` if it does not fit."""
    try:
        return OmegaConf.merge(base, other)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        first_line = str(err).splitlines()[0]
        where = _where_keys_are(base)
        hint = None
        if "Did you mean" in first_line:  # OmegaConf's own suggestion
            hint = f"all keys, with their sources: {where}"
        elif "not in" in first_line:
            close = difflib.get_close_matches(key, schema_keys(base), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}? (all keys: {where})" if close else f"the keys are in {where}"
        raise ConfigError(f"{source}: invalid config key '{key}': {first_line}", hint=hint) from None


def read_yaml(path: str | Path, seen: tuple[Path, ...] = ()) -> DictConfig:
    """A YAML config with its ``base`` chain resolved (untyped: the schema is applied by the caller).

    Raises:
        MissingFileError: the file (or a base it names) does not exist.
        ConfigError: not valid YAML, a ``base`` that is not a string, or a cycle of bases.
    """
    path = Path(path)
    if not path.is_file():
        named_by = f" (the base of {seen[-1]})" if seen else ""
        raise MissingFileError(
            f"config file not found: {path}{named_by}", hint="give an existing YAML with --config"
        )
    if path.resolve() in seen:
        chain = " -> ".join(str(p) for p in (*seen, path.resolve()))
        raise ConfigError(f"config bases form a cycle: {chain}")
    try:
        loaded = OmegaConf.load(path)
    except Exception as err:  # yaml.YAMLError and OmegaConf's own: the file is not valid YAML
        first = str(err).strip().splitlines()[0]
        raise ConfigError(f"{path} is not a valid YAML config: {first}") from err
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"{path} is not a YAML mapping of config keys")
    base = loaded.pop(BASE_KEY, None)
    if base is None:
        return loaded
    if not isinstance(base, str):
        raise ConfigError(f"{path}: '{BASE_KEY}' must be the path of one YAML file, got {base!r}")
    parent = read_yaml(path.parent / base, (*seen, path.resolve()))
    return OmegaConf.merge(parent, loaded)


def _method_named(loaded: DictConfig | None, overrides: list[str]) -> str:
    """The method the overrides (last one wins) or else the YAML name, else the default."""
    for item in reversed(overrides):
        key, _, value = item.partition("=")
        if key.strip() == "method":
            return value.strip()
    if loaded is not None and isinstance(loaded.get("method"), str):
        return loaded.get("method")
    return DEFAULT_METHOD


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> DictConfig:
    """The method's schema defaults, then the YAML file (with its bases), then ``key=value``
    overrides; validated at each step.

    Raises:
        ConfigError: naming the unknown key, the ill-typed value or the unknown method.
        MissingFileError: if ``path`` (or a base it names) does not exist.
    """
    overrides = list(overrides or [])
    loaded = read_yaml(path) if path is not None else None
    cfg = schema_of(_method_named(loaded, overrides))
    if loaded is not None:
        cfg = _merge(cfg, loaded, str(path))
    return apply_overrides(cfg, overrides)


def apply_overrides(cfg: DictConfig, overrides: list[str] | None = None) -> DictConfig:
    """``cfg`` with ``key=value`` overrides merged in order, then validated (errors name the key)."""
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(
                f"override {item!r} is not of the form key=value", hint="e.g. train.max_iters=100"
            )
        cfg = _merge(cfg, OmegaConf.from_dotlist([item]), f"override {item!r}")
    validate(cfg)
    return cfg


def validate(cfg: DictConfig) -> None:
    """Cross-field checks the schema cannot express (its ``checks``); the first that fails is raised."""
    for ok, message in OmegaConf.get_type(cfg).checks(cfg):
        if not ok:
            raise ConfigError(message)


def save_config(cfg: DictConfig, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(OmegaConf.to_yaml(cfg, resolve=True))
