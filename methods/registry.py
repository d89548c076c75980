"""The methods by name: the config key ``method`` chooses one (default ``afa``).

A new method is new files under ``methods/`` and one entry in ``METHODS``. A method of your own
package needs no entry: ``method: my_package.my_module:MyMethod`` imports it (a ``Method`` subclass).
Modes that apply to several methods (AReAM: ``aream.enabled``) choose the class of that mode here.
"""

from __future__ import annotations

import importlib

from omegaconf import DictConfig, OmegaConf

from common.errors import ConfigError
from methods.afa import AFA
from methods.aream import aream_variant
from methods.auxsegnet import AuxSegNetMethod
from methods.base import Method
from methods.mctformer import MCTformerV1, MCTformerV2
from methods.supervised import Supervised

DEFAULT_METHOD = "afa"
METHODS: dict[str, type[Method]] = {
    "afa": AFA,
    "auxsegnet": AuxSegNetMethod,
    "mctformer_v1": MCTformerV1,
    "mctformer_v2": MCTformerV2,
    "supervised": Supervised,
}


def _imported(name: str) -> type[Method]:
    """The ``Method`` subclass named ``module.path:ClassName``."""
    module_name, _, attr = name.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"method={name}: cannot import {attr} from {module_name} ({err})") from None
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise ConfigError(f"method={name} is not a subclass of methods.base.Method")
    return cls


def method_class(name: str) -> type[Method]:
    """The class registered as ``name``, or imported from ``module.path:ClassName``.

    Raises:
        ConfigError: an unknown name (listing the known ones) or a class that is not a ``Method``.
    """
    if name in METHODS:
        return METHODS[name]
    if ":" in name:
        return _imported(name)
    raise ConfigError(
        f"method={name!r} is not a known method; known: {', '.join(sorted(METHODS))}",
        hint="or module.path:ClassName for a Method subclass of your own",
    )


def build_method(cfg: DictConfig) -> Method:
    """The method object of a resolved config (its AReAM mode when ``aream.enabled``)."""
    cls = method_class(cfg.method)
    if OmegaConf.select(cfg, "aream.enabled", default=False):
        cls = aream_variant(cls)
    return cls(cfg)
