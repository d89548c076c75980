"""make_pseudo_labels.py / utils.evaluation.pseudo_export: the training pseudo labels of whole images."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datasets.demo import write_demo_dataset
from datasets.io import read_label
from methods.afa import AFA
from methods.registry import build_method
from model.cam import cam_to_label
from model.pseudo_labels import make_targets
from utils.config import load_config
from utils.evaluation.inputs import build_split_dataset, load_model
from utils.evaluation.metrics import scores
from utils.evaluation.pseudo_export import export

KINDS = AFA.pseudo_label_kinds

REPO = Path(__file__).resolve().parents[1]
NUM_CLASSES = 5


pytestmark = pytest.mark.usefixtures("one_thread")


def overrides(root: Path, work: Path) -> list[str]:
    items = {"dataset.root_dir": root, "dataset.name_list_dir": root, "dataset.num_workers": 0}
    items.update({"work_dir.dir": work, "device": "cpu"})
    return [f"{k}={v}" for k, v in items.items()]


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    write_demo_dataset(root, num_train=3, num_val=2, seed=7)
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    cfg = load_config(REPO / "configs/demo.yaml", ["backbone.pretrained=false"])
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    torch.save({"model": build_method(cfg).build_network().state_dict()}, path)
    return path


def test_labels_equal_the_training_targets_of_a_whole_image_crop(demo_root, checkpoint):
    """With the whole image as the crop, the export is exactly the training step's pseudo labels."""
    cfg = load_config(REPO / "configs/demo.yaml", overrides(demo_root, demo_root))
    method = build_method(cfg)
    model = load_model(method, checkpoint, torch.device("cpu"))
    dataset, _ = build_split_dataset(cfg, "train")
    item = dataset[1]
    x, cls_label = item["image"][None], item["cls_label"][None]
    s = method.step.pseudo
    ours = method.pseudo_labels(model, x, cls_label)
    box = torch.tensor([[0, x.shape[2], 0, x.shape[3]]])
    targets = make_targets(model, x, cls_label, box, n_iter=10**9, s=s)
    torch.testing.assert_close(ours["pseudo"], targets.refined_aff_label[0], rtol=0, atol=0)
    torch.testing.assert_close(ours["refined"], targets.refined_pseudo_label[0], rtol=0, atol=0)
    torch.testing.assert_close(
        ours["cam"], cam_to_label(targets.cam, cls_label, s.bkg_score)[0], rtol=0, atol=0
    )
    assert ours["pseudo"].shape == x.shape[-2:] and not (ours["cam"] == 255).any()


def test_cli_writes_labels_and_report(demo_root, checkpoint, tmp_path, subprocess_env):
    out = tmp_path / "pseudo_train"
    command = [sys.executable, "scripts/make_pseudo_labels.py", "--config", "configs/demo.yaml"]
    command += ["--checkpoint", str(checkpoint), "--out", str(out), *overrides(demo_root, tmp_path)]
    result = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=120, env=subprocess_env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "3 images of split train" in result.stdout
    for name in (demo_root / "train.txt").read_text().split():
        size = Image.open(demo_root / "JPEGImages" / f"{name}.jpg").size
        for kind in KINDS:
            label = Image.open(out / kind / f"{name}.png")
            values = np.unique(np.asarray(label))
            assert label.mode == "P" and label.size == size
            assert set(values.tolist()) <= set(range(NUM_CLASSES)) | ({255} if kind != "cam" else set())
    report = json.loads((out / "report.json").read_text())
    assert report["split"] == "train" and report["num_images"] == 3
    assert set(report["scores"]) == set(KINDS) and report["labelled_percent"]["cam"] == pytest.approx(100.0)


def test_report_scores_only_labelled_pixels(demo_root, checkpoint, tmp_path):
    """mIoU from the written PNGs with 255 pixels dropped (reference ``pseudo_scores``) equals the report."""
    cfg = load_config(REPO / "configs/demo.yaml", overrides(demo_root, tmp_path))
    report = export(cfg, checkpoint, "val")
    out = tmp_path / "pseudo_labels" / "val"  # default out
    names = (demo_root / "val.txt").read_text().split()
    gts = [read_label(demo_root / "SegmentationClassAug" / f"{n}.png") for n in names]
    for kind in KINDS:
        preds = [read_label(out / kind / f"{n}.png") for n in names]
        expected = scores(gts, preds, NUM_CLASSES)
        assert report["scores"][kind]["miou"] == pytest.approx(100 * expected["miou"])
        labelled = sum(int((p != 255).sum()) for p in preds) / sum(p.size for p in preds)
        assert report["labelled_percent"][kind] == pytest.approx(100 * labelled)


def test_split_without_masks_uses_image_level_labels(demo_root, checkpoint, tmp_path):
    root = tmp_path / "no_masks"
    shutil.copytree(demo_root / "JPEGImages", root / "JPEGImages")
    for name in ("train.txt", "cls_labels.txt", "class_names.txt"):
        shutil.copy(demo_root / name, root / name)
    cfg = load_config(REPO / "configs/demo.yaml", overrides(root, tmp_path) + ["infer.max_images=1"])
    report = export(cfg, checkpoint, "train", tmp_path / "out")
    assert report["scores"] is None and report["num_images"] == 1
    assert len(list((tmp_path / "out" / "pseudo").glob("*.png"))) == 1
