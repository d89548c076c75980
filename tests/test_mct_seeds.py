"""MCTformer seed maps: pure functions, invariants, the ``MCTSeeds`` mixin, the score export, the sweep."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from methods.base import Method, PseudoScores
from methods.mct_seeds import MCTSeeds, SeedConfig, seed_checks, seed_label
from model.mct_seeds import mct_seed_maps, normalise_present, pass_map, refine_with_patch_attention
from model.mctformer import MCTformer
from utils.evaluation.seed_eval import (
    class_counts,
    evaluate_seed_folder,
    greedy_stop,
    scores_from_counts,
    seed_prediction,
    threshold_sweep,
)
from utils.evaluation.seed_export import load_seed_scores, write_seed_files


def tiny(version: str = "v2") -> MCTformer:
    torch.manual_seed(0)
    model = MCTformer(version, 3, embed_dim=32, depth=2, num_heads=2, img_size=64)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model.eval()


def test_refinement_by_hand():
    cams = torch.arange(6.0).reshape(1, 1, 2, 3)
    eye = torch.eye(6).expand(2, 1, 6, 6)  # two layers of identity: P = 2·I
    torch.testing.assert_close(refine_with_patch_attention(cams, eye), 2 * cams)
    p = torch.zeros(1, 1, 6, 6)
    p[0, 0, 0, 5] = 1.0  # query patch 0 reads key patch 5 (rows are queries)
    out = refine_with_patch_attention(cams, p)
    assert out[0, 0, 0, 0] == 5.0 and out.flatten()[1:].abs().sum() == 0


def test_pass_map_zeroes_absent_classes_and_unflips():
    cams = torch.rand(1, 2, 2, 2)
    out = pass_map(cams, torch.tensor([[1.0, 0.0]]), (4, 6), flipped=True)
    assert out.shape == (1, 2, 4, 6) and out[0, 1].abs().sum() == 0
    torch.testing.assert_close(out[0, 0], pass_map(cams, torch.ones(1, 2), (4, 6), False)[0, 0].flip(-1))


def test_normalise_present_min_max():
    summed = torch.stack([torch.full((2, 2), 7.0), torch.tensor([[1.0, 3.0], [5.0, 2.0]])])
    keys, maps = normalise_present(summed, torch.tensor([0.0, 1.0]))
    assert keys.tolist() == [1]
    torch.testing.assert_close(maps[0], torch.tensor([[0.0, 0.5], [1.0, 0.25]]), atol=1e-7, rtol=0)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_seed_map_invariants(version):
    model = tiny(version)
    x = torch.randn(1, 3, 50, 70)  # not multiples of 16: maps still cover the full image
    label = torch.tensor([1.0, 0.0, 1.0])
    keys, maps = mct_seed_maps(model, [x], label)
    assert keys.tolist() == [0, 2] and maps.shape == (2, 50, 70)
    torch.testing.assert_close(maps.amin(dim=(1, 2)), torch.zeros(2))
    torch.testing.assert_close(maps.amax(dim=(1, 2)), torch.ones(2), atol=1e-6, rtol=0)
    _, flipped = mct_seed_maps(model, [x.flip(-1)], label)  # passes [x, flip x]: flip-equivariant
    torch.testing.assert_close(flipped, maps.flip(-1), atol=1e-5, rtol=1e-4)
    small = torch.nn.functional.interpolate(x, scale_factor=0.5)
    _, ms = mct_seed_maps(model, [x, small], label)
    assert ms.shape == (2, 50, 70) and not torch.allclose(ms, maps)


def test_seed_label_ties_go_to_background():
    maps = torch.tensor([[[0.4, 0.5]], [[0.3, 0.6]]])
    label = seed_label(torch.tensor([1, 4]), maps, 0.4)
    assert label.tolist() == [[0, 5]]


class TinySeedMethod(MCTSeeds, Method):
    """A minimal method: only what the mixin reads (``cfg.seeds``, ``version``)."""

    version = "v2"


def test_mixin_hooks_and_report():
    cfg = OmegaConf.create({"method": "tiny", "seeds": OmegaConf.structured(SeedConfig)})
    cfg.seeds.crf_alphas = [1, 12]
    method = TinySeedMethod(cfg)
    assert all(ok for ok, _ in seed_checks(cfg.seeds))
    model, x = tiny(), torch.randn(1, 3, 48, 40)
    label = torch.tensor([[0.0, 1.0, 0.0]])
    labels = method.pseudo_labels(model, x, label)
    scored = method.pseudo_scores(model, x, label)
    assert method.pseudo_label_kinds == ("seed",) and set(labels) == {"seed"}
    assert torch.equal(labels["seed"], scored.labels["seed"]) and scored.crf_alphas == (1, 12)
    assert set(labels["seed"].unique().tolist()) <= {0, 2} and labels["seed"].shape == (48, 40)
    expected = seed_label(scored.keys, scored.scores, SeedConfig.threshold)
    assert torch.equal(labels["seed"], expected)
    report = method.pseudo_label_report()["seeds"]
    assert report["layers"] == 3 and report["threshold"] == 0.4 and report["version"] == "v2"


def test_export_files_are_plain_arrays(tmp_path):
    model, x = tiny(), torch.randn(1, 3, 40, 56)
    keys, maps = mct_seed_maps(model, [x], torch.tensor([1.0, 1.0, 0.0]))

    write_seed_files(tmp_path, "img_1", x, PseudoScores(keys, maps, {}, (1, 12), True))
    k, m = load_seed_scores(tmp_path, "img_1")
    assert k.tolist() == [0, 1] and m.dtype == np.float32
    np.testing.assert_array_equal(m, maps.numpy())
    for alpha in (1, 12):
        crf = np.load(tmp_path / f"crf_{alpha}" / "img_1.npy", allow_pickle=False)
        assert crf.shape == (3, 40, 56)
        np.testing.assert_allclose(crf.sum(0), 1.0, atol=1e-4)  # CRF marginals
    assert sorted(p.name for p in (tmp_path / "overlay").iterdir()) == ["img_1_0.png", "img_1_1.png"]


def test_greedy_stop_and_full_sweep_by_hand():
    assert greedy_stop([1.0, 2.0, 2.0, 3.0]) == (1, 3)  # stops at the first non-improvement
    assert greedy_stop([1.0, 2.0, 3.0]) == (2, 3)
    # three thresholds, one class: mIoU over 2 classes (bg, c1) then present-only
    counts = np.zeros((3, 3, 3), np.int64)
    counts[:, :, 0] = [[5, 10, 5], [6, 10, 7], [9, 10, 9]]  # [TP, T, P] of the background
    counts[:, :, 1] = [[5, 10, 10], [4, 10, 9], [8, 10, 8]]
    report = threshold_sweep(counts, (0.0, 0.1, 0.2))
    assert report["authors_greedy"]["threshold"] == 0.0  # 0.1 does not improve
    assert report["authors_full_sweep"]["threshold"] == 0.2
    iou = np.array([5 / 10, 5 / 15, 0.0])
    assert report["authors_greedy"]["miou"] == pytest.approx(100 * iou.mean())
    assert report["standard"]["miou"] == pytest.approx(100 * iou[:2].mean())  # class 2 absent: not counted


def test_counts_ignore_255_and_scores():
    gt = np.array([[0, 1, 255], [1, 1, 0]], np.uint8)
    pred = seed_prediction(np.array([0]), np.array([[[0.2, 0.9, 0.9], [0.5, 0.3, 0.3]]], np.float32), 0.3)
    assert pred.tolist() == [[0, 1, 1], [1, 0, 0]]
    counts = class_counts(pred, gt, 3)
    assert counts.tolist() == [[2, 2, 0], [2, 3, 0], [3, 2, 0]]
    s = scores_from_counts(counts)
    np.testing.assert_allclose(s.per_class_iou[:2], [2 / 3, 2 / 3])


def test_evaluate_seed_folder_and_script(tmp_path):
    gt = np.zeros((8, 8), np.uint8)
    gt[2:6, 2:6] = 3
    Image.fromarray(gt).save(tmp_path / "a.png")
    maps = np.zeros((1, 8, 8), np.float32)
    maps[0, 2:6, 2:6] = 0.8
    root = tmp_path / "seeds"

    write_seed_files(
        root, "a", torch.zeros(1, 3, 8, 8), PseudoScores(torch.tensor([2]), torch.from_numpy(maps), {})
    )
    report = evaluate_seed_folder(root, {"a": tmp_path / "a.png"})
    assert report["authors_greedy"]["miou"] == pytest.approx(100 * 2 / 21)
    assert report["standard"]["miou"] == pytest.approx(100.0)
    assert report["authors_greedy"]["threshold"] == 0.0 and report["curve_seen"] == pytest.approx(
        [200 / 21] * 2
    )
    voc = tmp_path / "voc"
    (voc / "SegmentationClassAug").mkdir(parents=True)
    Image.fromarray(gt).save(voc / "SegmentationClassAug" / "a.png")
    (tmp_path / "train.txt").write_text("a\n")
    from scripts.eval_seeds import main

    main(["--seeds", str(root), f"dataset.root_dir={voc}", f"dataset.name_list_dir={tmp_path}"])
    saved = json.loads((root / "seed_eval_train.json").read_text())
    assert saved["authors_full_sweep"]["miou"] == pytest.approx(100 * 2 / 21)
    with pytest.raises(FileNotFoundError, match="no seed maps for b"):
        evaluate_seed_folder(root, {"b": tmp_path / "a.png"})
