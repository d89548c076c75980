"""Config inheritance (``base: other.yaml``): a variant is a few lines on top of the file it names."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from common.errors import ConfigError, MissingFileError
from utils.config import load_config

REPO = Path(__file__).resolve().parents[1]


def resolved(path: Path, overrides: list[str] | None = None) -> dict:
    return OmegaConf.to_container(load_config(path, overrides), resolve=True)


def test_voc_noreg_resolves_as_the_whole_file_it_replaced():
    """``configs/voc_noreg.yaml`` is ``voc.yaml`` + ``loss.reg: 0`` + its work dir; its resolved config
    equals the 49-line copy it replaced (``tests/data/voc_noreg_before_inheritance.yaml``)."""
    assert "base: voc.yaml" in (REPO / "configs/voc_noreg.yaml").read_text()
    before = resolved(Path(__file__).parent / "data" / "voc_noreg_before_inheritance.yaml")
    assert resolved(REPO / "configs/voc_noreg.yaml") == before
    assert before == resolved(REPO / "configs/voc.yaml", ["loss.reg=0.0", "work_dir.dir=work_dir_voc_noreg"])
    assert before["loss"]["reg"] == 0.0 and resolved(REPO / "configs/voc.yaml")["loss"]["reg"] == 0.01


def test_a_chain_of_bases_relative_paths_and_replaced_lists(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "middle.yaml").write_text(f"base: {REPO / 'configs/demo.yaml'}\ncam:\n  scales: [1.0]\n")
    (tmp_path / "sub" / "leaf.yaml").write_text("base: ../middle.yaml\ntrain:\n  max_iters: 7\n")
    cfg = load_config(tmp_path / "sub" / "leaf.yaml", ["train.seed=3"])
    demo = load_config(REPO / "configs/demo.yaml")
    assert cfg.train.max_iters == 7 and cfg.train.seed == 3 and list(cfg.cam.scales) == [1.0]  # replaced
    assert cfg.afa.radius == demo.afa.radius == 4 and cfg.dataset.num_classes == 5  # from the demo
    assert "base" not in cfg


def test_cycles_missing_and_malformed_bases_fail_in_one_line(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match=r"config bases form a cycle: .*a\.yaml -> .*b\.yaml -> .*a\.yaml"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(MissingFileError, match=r"nowhere\.yaml \(the base of .*c\.yaml\)"):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("base: [a.yaml, b.yaml]\n")
    with pytest.raises(ConfigError, match="'base' must be the path of one YAML file"):
        load_config(tmp_path / "d.yaml")


def test_the_method_of_a_base_is_inherited_and_chooses_the_schema(tmp_path):
    (tmp_path / "child.yaml").write_text(f"base: {REPO / 'configs/voc.yaml'}\nloss:\n  aff: 0.2\n")
    assert load_config(tmp_path / "child.yaml").method == "afa"
    (tmp_path / "other.yaml").write_text("method: unknown_method\n")
    (tmp_path / "grandchild.yaml").write_text("base: other.yaml\n")
    with pytest.raises(ConfigError, match="method='unknown_method' is not a known method"):
        load_config(tmp_path / "grandchild.yaml")
