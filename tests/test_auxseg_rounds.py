"""AuxSegNet end to end on tiny generated data: the round driver (two rounds, stopped and resumed, finished
parts not redone, both label sets written) and the standard entry points (train, resume, infer) with
``method=auxsegnet``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from runs import write_auxseg_demo

from datasets.io import read_label
from utils.config import load_config
from utils.runtime.checkpoint import load_checkpoint
from utils.train.auxseg_rounds import run_rounds

pytestmark = pytest.mark.usefixtures("one_thread")
CONFIG = "configs/demo_auxsegnet.yaml"


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """Four training images and one validation image, saliency maps and labels made from the masks."""
    return write_auxseg_demo(tmp_path_factory.mktemp("auxseg_rounds"), seed=4)


def tiny(root: Path, work: Path, **extra) -> list[str]:
    """Overrides of the demo config for a two-iteration run of a 1/32-width ResNet38 on ``root``."""
    items = {
        "dataset.root_dir": root,
        "dataset.name_list_dir": root,
        "dataset.saliency_dir": root / "sal",
        "dataset.crop_size": 64,
        "dataset.num_workers": 0,
        "train.batch_size": 2,
        "train.max_iters": 2,
        "train.eval_iters": 2,
        "train.log_iters": 1,
        "val.max_images": 1,
        "backbone.width_divisor": 32,
        "auxseg.mid": 8,
        "auxseg.init_cls_iters": 0,
        "auxseg.init_seg_label_dir": "null",  # round-0 labels from the initial network's CAMs
        "device": "cpu",
        "work_dir.dir": work,
        **extra,
    }
    return [f"{k}={v}" for k, v in items.items()]


def test_two_rounds_stop_resume_and_are_not_redone(demo, tmp_path):
    work = tmp_path / "rounds"
    stopped = run_rounds(load_config(CONFIG, tiny(demo, work, **{"train.stop_iter": 1})))
    assert stopped == {"stopped": str(work / "round_0"), "final_checkpoint": None}
    assert load_checkpoint(work / "round_0/checkpoints/last.pt")["step"] == 1
    assert json.loads((work / "round_0/round_state.json").read_text()) == {"labels": True}
    seg0 = sorted((work / "round_0/labels/seg").glob("*.png"))
    assert len(seg0) == 4 and not (work / "round_0/labels/sal").exists()  # round 0: saliency = S₀

    done = run_rounds(load_config(CONFIG, tiny(demo, work)))
    final = work / "round_1/checkpoints/last.pt"
    assert done == {"stopped": None, "final_checkpoint": str(final)}
    assert "resumed from" in (work / "round_0/train.log").read_text()
    state = load_checkpoint(final)
    assert state["step"] == 2 and state["method"] == "auxsegnet"
    for s in (0, 1):
        assert json.loads((work / f"round_{s}/round_state.json").read_text()) == {
            "labels": True,
            "trained": True,
        }
    sal1 = sorted((work / "round_1/labels/sal").glob("*.png"))
    assert len(sal1) == 4 and len(list((work / "round_1/labels/seg").glob("*.png"))) == 4
    with Image.open(sal1[0]) as image:
        assert image.mode == "L"  # spec §11 item 10: greyscale, not a palette PNG without a palette
    seg = read_label(work / "round_1/labels/seg" / sal1[0].name)
    assert set(np.unique(seg)) <= {0, 1, 2, 3, 4, 255}

    stamps = {p: p.stat().st_mtime_ns for p in work.rglob("*") if p.is_file()}
    again = run_rounds(load_config(CONFIG, tiny(demo, work)))
    assert again == done
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing retrained or rewritten


def test_train_resume_and_infer_through_the_entry_points(demo, tmp_path):
    from infer_seg import main as infer_main
    from utils.train.loop import main as train_main

    work = tmp_path / "cli"
    over = tiny(demo, work, **{"auxseg.seg_label_dir": demo / "seg", "train.stop_iter": 1})
    train_main(["--config", CONFIG, *over])
    assert load_checkpoint(work / "checkpoints/last.pt")["step"] == 1
    train_main(["--config", CONFIG, "--resume", *over[:-1], "train.stop_iter=null"])
    log = (work / "train.log").read_text()
    assert "resumed from" in log and "saliency source: u2netp" in log
    assert "seg (%): mIoU" in log
    out = tmp_path / "infer"
    report = infer_main(
        ["--checkpoint", str(work / "checkpoints/last.pt"), "--out", str(out), "dataset.num_workers=0"]
        + ["infer.resize_long=64", "device=cpu"]
    )
    assert len(list((out / "prediction").glob("*.png"))) == 1
    assert report["method"] == "auxsegnet" and report["num_images"] == 1
