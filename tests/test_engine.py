"""The training engine: configs, both dataset settings, exact resume, DDP on CPU, step phases."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from runs import tiny_overrides

from datasets.demo import write_demo_dataset
from utils.config import ConfigError, load_config
from utils.runtime.checkpoint import load_checkpoint
from utils.train.loop import train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    write_demo_dataset(root, num_train=16, num_val=4, seed=3)
    return root


# A few-iteration run of the demo network on the generated data, through all three phases.
ENGINE_RUN = {
    "train.batch_size": 4,
    "train.max_iters": 6,
    "train.cam_iters": 1,
    "train.eval_iters": 3,
    "train.log_iters": 2,
    "afa.seg_label_switch_iter": 3,
}


def engine_overrides(root: Path, work: Path, **extra) -> list[str]:
    return tiny_overrides(root, work, **{**ENGINE_RUN, **extra})


def test_every_config_validates():
    for path in sorted((REPO / "configs").glob("*.yaml")):
        cfg = load_config(path)
        assert cfg.dataset.num_classes in (5, 21, 81), path


def test_unknown_key_and_wrong_type_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="train.max_iter"):
        load_config(REPO / "configs/voc.yaml", ["train.max_iter=10"])
    with pytest.raises(ConfigError, match="optimizer.learning_rate"):
        load_config(REPO / "configs/voc.yaml", ["optimizer.learning_rate=fast"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset:\n  crop_sise: 320\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*dataset\.crop_sise"):
        load_config(bad)
    with pytest.raises(ConfigError, match="multiple of 16"):
        load_config(REPO / "configs/voc.yaml", ["dataset.crop_size=100"])


def test_overrides_and_voc_coco_differences():
    voc = load_config(REPO / "configs/voc.yaml", ["dataset.root_dir=/data/VOC2012"])
    coco = load_config(REPO / "configs/coco.yaml")
    assert voc.dataset.root_dir == "/data/VOC2012"
    assert (voc.par.num_iter, coco.par.num_iter) == (10, 15)
    assert (voc.afa.seg_label_switch_iter, coco.afa.seg_label_switch_iter) == (6000, 15000)
    assert (voc.afa.aff_label_switch_iter, coco.afa.aff_label_switch_iter) == (None, 15000)
    assert (voc.train.cam_iters, coco.train.cam_iters) == (2000, 5000)
    assert (voc.train.batch_size, coco.train.batch_size) == (4, 8)
    assert (voc.dataset.num_classes, coco.dataset.num_classes) == (21, 81)


def _coco_layout(demo: Path, out: Path) -> Path:
    """The demo set rearranged in the COCO layout (JPEGImages/<train|val>/, SegmentationClass/...)."""
    for split in ("train", "val"):
        for sub, ext in (("JPEGImages", ".jpg"), ("SegmentationClass", ".png")):
            (out / sub / split).mkdir(parents=True, exist_ok=True)
            src_dir = demo / ("JPEGImages" if sub == "JPEGImages" else "SegmentationClassAug")
            for name in (demo / f"{split}.txt").read_text().split():
                shutil.copy(src_dir / f"{name}{ext}", out / sub / split / f"{name}{ext}")
    for f in ("train.txt", "val.txt", "cls_labels.txt", "class_names.txt"):
        shutil.copy(demo / f, out / f)
    return out


def test_voc_settings_run_and_write_outputs(demo_root, tmp_path):
    cfg = load_config(REPO / "configs/demo.yaml", engine_overrides(demo_root, tmp_path / "voc"))
    metrics = train(cfg)
    work = tmp_path / "voc"
    for name in ("last.pt", "best.pt", "iter_3.pt", "iter_6.pt"):
        assert (work / "checkpoints" / name).is_file(), name
    assert (work / "config.yaml").is_file() and any((work / "tb").iterdir())
    log = (work / "train.log").read_text()
    assert "validation at iter 3" in log and "validation at iter 6" in log
    assert metrics["num_images"] == 4
    assert 0.0 <= metrics["seg"]["miou"] <= 1.0 and 0.0 <= metrics["cls_f1"] <= 1.0


def test_coco_settings_run(demo_root, tmp_path):
    root = _coco_layout(demo_root, tmp_path / "coco_layout")
    overrides = engine_overrides(root, tmp_path / "coco", **{"train.max_iters": 4, "train.eval_iters": 4})
    overrides += ["dataset.name=coco", "train.split=train", "par.num_iter=15", "afa.aff_label_switch_iter=2"]
    cfg = load_config(REPO / "configs/demo.yaml", overrides)
    metrics = train(cfg)
    assert metrics["num_images"] == 4
    assert (tmp_path / "coco" / "checkpoints" / "last.pt").is_file()


def test_bf16_and_eval_mode_cam_options_run(demo_root, tmp_path):
    """The two speed options (not the reference's behaviour) train and validate."""
    extra = {"train.max_iters": 2, "train.eval_iters": 2, "train.amp": "bf16", "cam.train_mode": False}
    cfg = load_config(REPO / "configs/demo.yaml", engine_overrides(demo_root, tmp_path / "fast", **extra))
    metrics = train(cfg)
    assert metrics["num_images"] == 4 and 0.0 <= metrics["cam"]["miou"] <= 1.0


def test_resume_is_exact(demo_root, tmp_path):
    """N iterations + resume + N iterations gives the same weights and optimiser state as 2N straight."""
    straight = load_config(REPO / "configs/demo.yaml", engine_overrides(demo_root, tmp_path / "a"))
    train(straight)
    first = load_config(
        REPO / "configs/demo.yaml", engine_overrides(demo_root, tmp_path / "b", **{"train.stop_iter": 3})
    )
    train(first)
    assert load_checkpoint(tmp_path / "b/checkpoints/last.pt")["step"] == 3
    second = load_config(REPO / "configs/demo.yaml", engine_overrides(demo_root, tmp_path / "b"))
    train(second, resume=True)
    a = load_checkpoint(tmp_path / "a/checkpoints/last.pt")
    b = load_checkpoint(tmp_path / "b/checkpoints/last.pt")
    assert a["step"] == b["step"] == 6
    assert (a["epoch"], a["batch_in_epoch"]) == (b["epoch"], b["batch_in_epoch"])
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    for pid, state in a["optimizer"]["state"].items():
        assert torch.equal(state["exp_avg"], b["optimizer"]["state"][pid]["exp_avg"]), pid
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"]
    assert len(a["rng"]) == len(b["rng"]) == 1  # one entry per rank
    assert torch.equal(a["rng"][0]["torch"], b["rng"][0]["torch"])


def test_resume_differs_from_restart(demo_root, tmp_path):
    """The resume test can fail: a fresh 3-iteration run does not match the state after 6."""
    cfg = load_config(
        REPO / "configs/demo.yaml", engine_overrides(demo_root, tmp_path / "c", **{"train.stop_iter": 3})
    )
    train(cfg)
    full = load_config(REPO / "configs/demo.yaml", engine_overrides(demo_root, tmp_path / "d"))
    train(full)
    c = load_checkpoint(tmp_path / "c/checkpoints/last.pt")["model"]
    d = load_checkpoint(tmp_path / "d/checkpoints/last.pt")["model"]
    assert any(not torch.equal(c[k], d[k]) for k in c)


def test_two_process_ddp_on_cpu(demo_root, tmp_path):
    """torchrun with 2 gloo processes trains, validates on sharded images and writes one checkpoint."""
    work = tmp_path / "ddp"
    overrides = engine_overrides(demo_root, work, **{"train.max_iters": 3, "train.eval_iters": 3})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["train_voc.py", "--config", "configs/demo.yaml", *overrides]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = (work / "train.log").read_text()
    assert "on 2 process(es)" in log
    assert "validation at iter 3 on 4 images" in log  # 2 images per rank, confusion matrices summed
    assert load_checkpoint(work / "checkpoints/last.pt")["step"] == 3
