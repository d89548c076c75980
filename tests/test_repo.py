"""Repository hygiene that users rely on: no torchvision/timm/mmcv, no sys.path hacks, lists shipped."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = [p for p in REPO.rglob("*.py") if ".venv" not in p.parts and "build" not in p.parts]


def test_no_forbidden_imports():
    pattern = re.compile(r"^\s*(import|from)\s+(torchvision|timm|mmcv|mmseg)\b", re.MULTILINE)
    offenders = [str(p.relative_to(REPO)) for p in SOURCES if pattern.search(p.read_text())]
    assert not offenders, offenders
    requirements = (REPO / "requirements.txt").read_text() + (REPO / "requirements-dev.txt").read_text()
    listed = [
        line.split(">")[0].split("=")[0].strip() for line in requirements.splitlines() if line[:1].isalpha()
    ]
    assert not {"torchvision", "timm", "mmcv", "mmcv-full", "mmcv_full"} & set(listed)


def test_no_sys_path_hacks():
    offenders = [
        str(p.relative_to(REPO)) for p in SOURCES if "sys.path" in p.read_text() and p.name != "test_repo.py"
    ]
    assert not offenders, offenders


def test_split_lists_shipped():
    counts = {
        "datasets/voc/train_aug.txt": 10582,
        "datasets/voc/val.txt": 1449,
        "datasets/voc/train.txt": 1464,
        "datasets/coco/train.txt": 82081,
        "datasets/coco/val_part.txt": 5000,
    }
    for rel, n in counts.items():
        assert len((REPO / rel).read_text().split()) == n, rel


def test_ci_runs_make_test_then_the_slurm_cluster_test():
    lines = [x for x in (REPO / ".ci/run").read_text().splitlines() if x and not x.startswith("#")]
    assert lines[-2:] == ["make test", "bash scripts/slurm_local.sh test"]
    assert "set -euo pipefail" in lines  # either failing fails CI
