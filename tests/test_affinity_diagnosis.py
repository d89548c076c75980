"""scripts/diagnose_affinity.py's pieces: the ground-truth affinity, the pair statistics, and that its
``cam`` and ``walk`` maps are exactly what in-training validation scores."""

from __future__ import annotations

from pathlib import Path

import torch

from datasets.demo import write_demo_dataset
from methods.registry import build_method
from utils.config import load_config
from utils.diagnostics.affinity import diagnose, ground_truth_affinity, pair_statistics, report_lines
from utils.evaluation.validate import validate
from utils.runtime.data import build_eval_dataset, build_eval_loader, shard_indices

REPO = Path(__file__).resolve().parents[1]


def test_ground_truth_affinity_by_hand():
    """A 4×4 label on a 2×2 grid keeps pixels (0,0), (0,2), (2,0), (2,2); ignore pairs with nothing."""
    label = torch.tensor([[1, 1, 2, 2], [1, 1, 2, 2], [1, 1, 255, 0], [1, 1, 0, 0]])
    tokens, aff = ground_truth_affinity(label, (2, 2))
    assert tokens.tolist() == [1, 2, 1, 255]
    expected = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]).float()
    assert torch.equal(aff[0], expected)


def test_pair_statistics_by_hand():
    """Three tokens, labels [0, 1, 1], a window without the pair (0, 2)."""
    aff = torch.tensor([[1.0, 0.995, 0.3], [0.995, 1.0, 0.6], [0.3, 0.6, 1.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [0, 1, 1]]).bool()
    out = pair_statistics(aff, torch.tensor([0, 1, 1]), mask, 3)
    expected = [[1.0, 1.0, 0.995, 1.0, 1.0], [3.2, 4.0, 0.995, 1.0, 1.0]]  # (0,1) other and saturated
    torch.testing.assert_close(out[:2], torch.tensor(expected, dtype=torch.float64))
    assert out[2].tolist() == [0.0] * 5


def test_diagnosis_maps_are_the_validation_maps(tmp_path):
    root = tmp_path / "data"
    write_demo_dataset(root, num_train=2, num_val=3, seed=4)
    overrides = [f"dataset.root_dir={root}", f"dataset.name_list_dir={root}", "device=cpu"]
    cfg = load_config(REPO / "configs/demo.yaml", overrides)
    method = build_method(cfg)
    torch.manual_seed(0)
    model = method.build_network()
    dataset = build_eval_dataset(cfg, "val")
    loader = build_eval_loader(dataset, shard_indices(len(dataset), 0, 1, None), 0)
    s = method.eval
    result = diagnose(model, loader, s, torch.device("cpu"))
    reference = validate(method, model, loader, 5, torch.device("cpu"), show=False)
    assert result["num_images"] == reference["num_images"] == 3
    for ours, theirs in (("cam", "cam"), ("walk", "aff")):
        assert result["scores"][ours]["miou"] == reference[theirs]["miou"]
    counts = result["pairs"][:, [1, 3]]
    assert (counts >= 0).all() and counts.sum() > 0
    lines = report_lines(result, ["background", "disc", "square", "triangle", "cross"])
    assert len(lines) == 2 + 5 and lines[1].split()[0] == "mIoU"
