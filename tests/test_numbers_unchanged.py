"""AFA's numbers did not move when it became a method of the engine (issue 19).

``tests/data/afa_reference_runs.json`` was recorded by the code before the method interface (commit
7f7d171, ``utils/engine.py``) on the same generated data: three 6-iteration runs of the demo network
through every phase (warm, CAM-label target, propagated target; L_reg on): AFA, AReAM ``add`` and
AReAM ``replace``. The runs here must log the same losses (to the 4 printed decimals) and end with the
same weights (each tensor's sum and absolute sum). On the machine that recorded them the runs match
bit for bit; the tolerances only absorb the last float digits that move between CPUs (AVX2/AVX-512).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from runs import tiny_overrides

from datasets.demo import write_demo_dataset
from utils.config import load_config
from utils.train.loop import train

REPO = Path(__file__).resolve().parents[1]
REFERENCE = json.loads((Path(__file__).parent / "data" / "afa_reference_runs.json").read_text())
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def reference_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reference_data")
    write_demo_dataset(root, num_train=8, num_val=2, seed=3)  # as the recording did
    return root


def logged_numbers(line: str) -> dict[str, float]:
    """``iter 3  cls 0.7324  seg ...  total 1.1667`` -> {"iter": 3, "cls": 0.7324, ..., "total": ...}."""
    return {k: float(v) for k, v in re.findall(r"(\w+) (-?[\d.]+(?:e-?\d+)?)", line)}


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_same_losses_and_weights_as_before_the_method_interface(reference_data, tmp_path, name):
    ref = REFERENCE[name]
    work = tmp_path / name
    cfg = load_config(REPO / "configs/demo.yaml", tiny_overrides(reference_data, work, **ref["overrides"]))
    metrics = train(cfg)
    lines = [l for l in (work / "train.log").read_text().splitlines() if " iter " in l and "total" in l]
    assert len(lines) == len(ref["log"]) == 6
    for ours, theirs in zip(lines, ref["log"]):
        ours = "iter " + ours.split(" iter ", 1)[1].rsplit("  lr ", 1)[0]
        ours_n, theirs_n = logged_numbers(ours), logged_numbers(theirs)
        assert list(ours_n) == list(theirs_n), (ours, theirs)  # the same terms in the same order
        for key, value in theirs_n.items():
            assert abs(ours_n[key] - value) <= 1.5e-4, f"{name}: {key} in '{ours}' vs '{theirs}'"
    state = torch.load(work / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert set(ref["weights"]) == {k for k, v in state.items() if v.is_floating_point()}
    for key, (total, magnitude) in ref["weights"].items():
        value = state[key].double()
        assert float(value.sum()) == pytest.approx(total, rel=1e-5, abs=1e-6), key
        assert float(value.abs().sum()) == pytest.approx(magnitude, rel=1e-5, abs=1e-6), key
    assert metrics["seg"]["miou"] == pytest.approx(ref["seg_miou"], abs=2e-3)
