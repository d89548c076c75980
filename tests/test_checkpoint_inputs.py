"""Checkpoints carry their network; bad checkpoints and evaluation inputs give one clear error."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

import infer_seg
from common.errors import CheckpointError, DataError, UsageError
from datasets.demo import write_demo_dataset
from methods.registry import build_method
from utils.config import load_config
from utils.evaluation.infer import infer
from utils.evaluation.report import format_table
from utils.runtime.checkpoint import load_checkpoint
from utils.runtime.checkpoint_config import config_for_checkpoint

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs/demo.yaml"
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    write_demo_dataset(root, num_train=2, num_val=2, seed=7)
    return root


def data_args(root: Path, work: Path) -> list[str]:
    keys = {"dataset.root_dir": root, "dataset.name_list_dir": root, "dataset.num_workers": 0}
    keys |= {"infer.resize_long": 96, "work_dir.dir": work, "device": "cpu"}
    return [f"{k}={v}" for k, v in keys.items()]


def save_checkpoint(path: Path, with_config: bool = True, **network) -> Path:
    """A random-weight checkpoint in our training format (model + resolved config), or a plain state dict."""
    cfg = load_config(DEMO, ["backbone.pretrained=false", *(f"{k}={v}" for k, v in network.items())])
    torch.manual_seed(0)
    state = build_method(cfg).build_network().state_dict()
    torch.save({"model": state, "config": OmegaConf.to_yaml(cfg)} if with_config else state, path)
    return path


def test_network_keys_come_from_the_checkpoint(root, tmp_path, capsys):
    ckpt = save_checkpoint(tmp_path / "c.pt", **{"model.embed_dim": 32, "model.aff_blocks": 1})
    report = infer_seg.main(["--config", str(DEMO), "--checkpoint", str(ckpt), *data_args(root, tmp_path)])
    assert report["num_images"] == 2 and report["units"] == "percent"
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("warning:")]
    assert "model.embed_dim=32 (config 64)" in line and "model.aff_blocks=1 (config 2)" in line


def test_checkpoint_with_other_classes_runs_on_an_image_folder(root, tmp_path):
    ckpt = save_checkpoint(tmp_path / "c21.pt", **{"dataset.num_classes": 21})
    argv = ["--images", str(root / "JPEGImages"), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o")]
    report = infer_seg.main([*data_args(root, tmp_path), *argv, "--config", str(DEMO)])  # any order
    assert report["num_images"] == 4


def test_a_command_line_key_contradicting_the_checkpoint_names_both_values(root, tmp_path):
    ckpt = save_checkpoint(tmp_path / "c.pt", **{"model.embed_dim": 32})
    with pytest.raises(CheckpointError, match="model.embed_dim=48 on the command line, 32 in the checkpoint"):
        config_for_checkpoint(DEMO, ["model.embed_dim=48"], ckpt)


def test_without_config_the_checkpoints_own_is_used_and_authors_need_one(root, tmp_path):
    ckpt = save_checkpoint(tmp_path / "c.pt", **{"model.embed_dim": 32})
    cfg = config_for_checkpoint(None, data_args(root, tmp_path), ckpt)
    assert cfg.model.embed_dim == 32 and cfg.dataset.num_classes == 5 and cfg.backbone.config == "mit_tiny"
    plain = save_checkpoint(tmp_path / "authors.pt", with_config=False)
    with pytest.raises(UsageError, match="carries no config"):
        config_for_checkpoint(None, [], plain)
    report = infer(config_for_checkpoint(DEMO, data_args(root, tmp_path), plain), plain, tmp_path / "a")
    assert report["num_images"] == 2


def test_truncated_and_foreign_checkpoints(tmp_path):
    good = save_checkpoint(tmp_path / "c.pt")
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match=f"cannot read checkpoint {tmp_path / 'cut.pt'}"):
        load_checkpoint(tmp_path / "cut.pt")
    (tmp_path / "foreign.pt").write_bytes(pickle.dumps(Path("x"), protocol=2))
    with pytest.raises(CheckpointError, match="foreign.pt"):
        load_checkpoint(tmp_path / "foreign.pt")


def test_empty_val_list_is_an_error(root, tmp_path):
    data = Path(shutil.copytree(root, tmp_path / "d"))
    (data / "val.txt").write_text("")
    ckpt = save_checkpoint(tmp_path / "c.pt")
    with pytest.raises(DataError, match="split val lists no image"):
        infer_seg.main(["--checkpoint", str(ckpt), *data_args(data, tmp_path)])


def test_no_mask_folder_names_where_it_looked(root, tmp_path, capsys):
    data = Path(shutil.copytree(root, tmp_path / "d"))
    shutil.rmtree(data / "SegmentationClassAug")
    ckpt = save_checkpoint(tmp_path / "c.pt")
    infer_seg.main(["--checkpoint", str(ckpt), *data_args(data, tmp_path)])
    assert f"no ground truth in {data / 'SegmentationClassAug'}" in capsys.readouterr().out


def test_evaluation_refuses_mask_values_outside_the_classes(root, tmp_path):
    data = Path(shutil.copytree(root, tmp_path / "d"))
    name = (data / "val.txt").read_text().split()[1]  # not a probed-first sample alone: both are probed
    mask = data / "SegmentationClassAug" / f"{name}.png"
    values = np.asarray(Image.open(mask)).copy()
    values[3, 3] = 9
    Image.fromarray(values).save(mask)
    with pytest.raises(DataError, match=f"mask {mask} holds value"):
        infer_seg.main(["--checkpoint", str(save_checkpoint(tmp_path / "c.pt")), *data_args(data, tmp_path)])


def test_scores_are_labelled_percent_and_absent_classes_get_no_row(root, tmp_path):
    ckpt = save_checkpoint(tmp_path / "c.pt")
    report = infer_seg.main(["--checkpoint", str(ckpt), *data_args(root, tmp_path)])
    assert json.loads((tmp_path / "val" / "report.json").read_text())["units"] == "percent"
    names = ["background", "a", "b"]
    scores = {
        "multi_scale": {
            "miou": 50.0,
            "pAcc": 60.0,
            "mAcc": 55.0,
            "iou": {"background": 80.0, "a": 20.0, "b": None},
        }
    }
    table = format_table(scores, names).splitlines()
    assert table[0].startswith("IoU (%)") and not any(line.startswith("b ") for line in table)
    assert "(1 classes absent from the ground truth, not scored)" in table
    assert any(line.startswith("miou (%)") and line.endswith("50.00") for line in table)
    assert report["num_images"] == 2
