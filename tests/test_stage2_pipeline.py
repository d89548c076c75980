"""The second stage end to end on tiny networks: AFA's pseudo-label export is directly a label folder;
each network (DeepLabV2, SegFormer) trains 4 iterations on it through the training entry point
(stopped at 2, ``--resume``d), validates against ground truth and runs ``infer_seg`` with the CRF; a bad
label folder stops the entry point with one line and writes nothing; ``benchmark.py train-step`` runs
the method for both networks.

The entry points are called in-process through ``utils.cli.run``, exactly what ``train_voc.py`` and
``infer_seg.py`` do, to keep the suite fast (a Python start with torch costs seconds here).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

import infer_seg
from datasets.demo import write_demo_dataset
from methods.registry import build_method
from utils.cli import run
from utils.config import load_config
from utils.evaluation.pseudo_export import export
from utils.runtime.checkpoint import load_checkpoint
from utils.train import loop

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
NETWORKS = {
    "deeplabv2": ["backbone.config=resnet_tiny", "model.aspp_rates=[1,2,3,4]"],
    "segformer": ["backbone.config=mit_tiny", "model.embed_dim=16", "backbone.drop_path_rate=0.0"],
}


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stage2_demo")
    write_demo_dataset(root, num_train=4, num_val=2, seed=11)
    return root


@pytest.fixture(scope="module")
def pseudo_dir(demo_root, tmp_path_factory) -> Path:
    """``make_pseudo_labels.py``'s export of a random tiny AFA network on the train split: ``pseudo/``."""
    out = tmp_path_factory.mktemp("export")
    keys = {"dataset.root_dir": demo_root, "dataset.name_list_dir": demo_root, "dataset.num_workers": 0,
            "backbone.config": "mit_tiny", "model.embed_dim": 16, "cam.scales": [1.0], "device": "cpu",
            "work_dir.dir": out / "w"}  # fmt: skip
    cfg = load_config(REPO / "configs/demo.yaml", [f"{k}={v}" for k, v in keys.items()])
    torch.manual_seed(0)
    torch.save(build_method(cfg).build_network().state_dict(), out / "afa.pt")
    report = export(cfg, out / "afa.pt", "train", out / "labels")
    assert report["num_images"] == 4 and report["kinds"] == ["pseudo", "refined", "cam"]
    return out / "labels" / "pseudo"


def stage2_overrides(root: Path, labels: Path, work: Path, network: str) -> list[str]:
    keys = {"backbone.pretrained": "false", "dataset.root_dir": root, "dataset.name_list_dir": root,
            "dataset.label_dir": labels, "dataset.num_classes": 5, "dataset.crop_size": 64,
            "dataset.num_workers": 0, "train.split": "train", "train.batch_size": 2, "train.max_iters": 4,
            "train.eval_iters": 2, "train.log_iters": 1, "optimizer.learning_rate": 1e-3, "device": "cpu",
            "work_dir.dir": work}  # fmt: skip
    config = ["--config", str(REPO / f"configs/voc_stage2_{network}.yaml")]
    return config + [f"{k}={v}" for k, v in keys.items()] + NETWORKS[network]


def train_cli(argv: list[str]) -> int:
    """``train_voc.py`` in this process."""
    return run(lambda a: loop.main(a, "configs/voc.yaml"), argv)


@pytest.mark.parametrize("network", list(NETWORKS))
def test_network_trains_on_pseudo_labels_resumes_and_infers_with_crf(
    network, demo_root, pseudo_dir, tmp_path
):
    work = tmp_path / network
    over = stage2_overrides(demo_root, pseudo_dir, work, network)
    assert train_cli([*over, "train.stop_iter=2"]) == 0
    first = load_checkpoint(work / "checkpoints/last.pt")
    assert first["method"] == "supervised" and first["step"] == 2
    assert train_cli(["--resume", *over]) == 0
    log = (work / "train.log").read_text()
    assert f"network {network} (" in log and f"labels from {pseudo_dir}" in log
    assert "resumed from" in log and "at iteration 2" in log and "iter 4  seg " in log
    assert "validation at iter 4 on 2 images" in log and "seg (%): mIoU" in log
    last = load_checkpoint(work / "checkpoints/last.pt")
    assert last["step"] == 4 and last["scheduler"]["last_epoch"] == 4
    out = tmp_path / "infer"
    crf = network == "deeplabv2"  # one CRF pool in the file: spawning one costs seconds
    argv = ["--checkpoint", str(work / "checkpoints/last.pt"), "--out", str(out), f"infer.crf={crf}",
            "infer.crf_workers=1", "infer.resize_long=96", "infer.scales=[1.0,0.5]",
            "dataset.num_workers=0"]  # fmt: skip
    assert run(infer_seg.main, argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["method"] == "supervised" and report["num_images"] == 2
    assert ("multi_scale_crf" in report["scores"]) == crf and "multi_scale" in report["scores"]
    assert 0 <= report["scores"]["multi_scale"]["miou"] <= 100
    assert len(list((out / "prediction").glob("*.png"))) == 2


def test_a_bad_label_folder_stops_training_in_one_line_writing_nothing(
    demo_root, pseudo_dir, tmp_path, capsys
):
    labels = tmp_path / "labels"
    labels.mkdir()
    name = sorted(pseudo_dir.glob("*.png"))[0]
    (labels / name.name).write_bytes(name.read_bytes())
    work = tmp_path / "work"
    assert train_cli(stage2_overrides(demo_root, labels, work, "deeplabv2")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith(f"error: label folder {labels} lacks 3 of the 4 ids of split train: ")
    assert err[1].startswith("hint: export the labels of the whole training split") and len(err) == 2
    assert not work.exists()
    no_dir = stage2_overrides(demo_root, labels, work, "deeplabv2")
    no_dir = [k for k in no_dir if not k.startswith("dataset.label_dir")]
    assert train_cli(no_dir) == 2
    assert capsys.readouterr().err.startswith("error: dataset.label_dir is not set") and not work.exists()


def test_a_resnet_file_of_another_architecture_stops_training_in_one_line(
    demo_root, pseudo_dir, tmp_path, capsys
):
    wrong = tmp_path / "resnet101-63fe2227.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(1000, 2048)}, wrong)
    over = stage2_overrides(demo_root, pseudo_dir, tmp_path / "work", "deeplabv2")
    over = [k for k in over if k != "backbone.pretrained=false"] + [f"backbone.pretrained_path={wrong}"]
    assert train_cli(over) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith(f"error: {wrong} is not a torchvision ResNet of this depth and width")
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize("backbone", ["resnet_tiny", "mit_tiny"])
def test_benchmark_train_step_runs_the_supervised_method(backbone, capsys):
    spec = importlib.util.spec_from_file_location("benchmark_script", REPO / "scripts/benchmark.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    argv = ["train-step", "--method", "supervised", "--backbone", backbone, "--crop", "64", "--batch", "2",
            "--iters", "1", "--warmup", "0", "--json"]  # fmt: skip
    assert bench.main(argv) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["subcommand"] == "train-step" and res["sec_per_iter"] > 0 and res["n_iter"] == 0
    assert res["settings"]["backbone"] == backbone
