"""Repository hygiene that users rely on: no torchvision/timm/mmcv, no sys.path hacks, lists shipped."""

from __future__ import annotations

import ast
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


# ---------------------------------------------------------------------- layout and import rules
CODE = [p for p in SOURCES if "tests" not in p.relative_to(REPO).parts]


def module_file(name: str) -> Path | None:
    """The project file of a dotted module name (the longest prefix that is a module or package)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        base = REPO.joinpath(*parts[:n])
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def imports_of(path: Path) -> set[Path]:
    """Project files ``path`` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found |= {f for f in map(module_file, names) if f is not None and f != path}
    return found


def import_graph() -> dict[Path, set[Path]]:
    return {p: imports_of(p) for p in CODE}


def reachable(graph: dict[Path, set[Path]], start: Path) -> set[Path]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def top(path: Path) -> str:
    return path.relative_to(REPO).parts[0]


def test_lower_floors_never_import_upward():
    """The floors: common/ <- model/, datasets/, figures/ <- methods/ <- utils/ <- entry points and
    scripts. Each package imports only from its own floor and the floors below."""
    graph = import_graph()
    allowed = {
        "common": set(),
        "model": {"common", "datasets"},
        "datasets": {"common"},
        "figures": {"common", "model", "datasets"},
        "methods": {"common", "model", "datasets", "figures"},
    }
    offenders = [
        f"{a.relative_to(REPO)} -> {b.relative_to(REPO)}"
        for a, targets in graph.items()
        if top(a) in allowed
        for b in targets
        if top(b) not in allowed[top(a)] | {top(a)}
    ]
    assert not offenders, offenders


def test_no_import_cycles_and_inference_does_not_import_the_training_loop():
    graph = import_graph()
    cyclic = sorted(str(p.relative_to(REPO)) for p in graph if p in reachable(graph, p))
    assert not cyclic, cyclic
    loop = REPO / "utils/train/loop.py"
    for entry in ("infer_seg.py", "scripts/make_pseudo_labels.py", "scripts/visualize.py"):
        assert loop not in reachable(graph, REPO / entry), entry
    assert all(loop not in reachable(graph, p) for p in (REPO / "methods").glob("*.py"))


def test_utils_top_holds_only_the_shared_ground():
    assert sorted(p.name for p in (REPO / "utils").glob("*.py")) == ["__init__.py", "cli.py", "config.py"]


def test_files_and_functions_stay_readable():
    """Files under 400 lines, functions under 60 (STYLE.md)."""
    long_files = [str(p.relative_to(REPO)) for p in CODE if len(p.read_text().splitlines()) > 400]
    long_functions = [
        f"{p.relative_to(REPO)}:{node.name}"
        for p in CODE
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60
    ]
    assert not long_files and not long_functions, long_files + long_functions
