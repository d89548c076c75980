"""What every demo script does first: the generated data, and the scores of the untrained network."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from datasets.demo import DEMO_DATA_VERSION, DEMO_VERSION_FILE, write_demo_dataset
from methods.registry import build_method
from utils.config import load_config
from utils.evaluation.validate import validate
from utils.runtime.data import build_eval_dataset, build_eval_loader, shard_indices


def ensure_data(root: Path) -> None:
    """Generate the demo set once (deterministic; a complete set of this generator version is reused,
    one of an older version is regenerated in place)."""
    version = root / DEMO_VERSION_FILE
    if version.is_file() and version.read_text().strip() == DEMO_DATA_VERSION:
        if (root / "val.txt").is_file() and (root / "cls_labels.txt").is_file():
            print(f"using the demo data in {root}")
            return
    summary = write_demo_dataset(root)
    print(f"generated {summary}")


def untrained_scores(cfg) -> dict:
    """Validation scores of the network as initialised by the training run (seeded identically): the
    dict of ``utils.evaluation.validate.validate``."""
    method = build_method(cfg)
    torch.manual_seed(cfg.train.seed)
    model = method.build_network()
    dataset = build_eval_dataset(cfg, cfg.val.split)
    loader = build_eval_loader(dataset, shard_indices(len(dataset), 0, 1, cfg.val.max_images), 0)
    return validate(method, model, loader, cfg.dataset.num_classes, torch.device("cpu"), show=False)


def demo_config(config: str, data: Path, extra: list[str]) -> DictConfig:
    """The demo's config on the generated data at ``data`` (written first unless it is there), on the
    CPU, replacing a previous demo run's work directory, then the user's ``key=value`` overrides."""
    ensure_data(data)
    overrides = [f"dataset.root_dir={data}", f"dataset.name_list_dir={data}", "device=cpu"]
    return load_config(config, [*overrides, "train.overwrite=true", *extra])
