"""``scripts/make_saliency.py``: one greyscale map per image of a folder or a split, existing maps kept,
the source stated in its report; run on a tiny ONNX model with U²-Net-p's interface."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scripts.make_saliency import main
from utils.cli import run

pytestmark = pytest.mark.usefixtures("one_thread")


class SumSigmoid(torch.nn.Module):
    """(1, 3, S, S) -> (1, 1, S, S) sigmoid of the channel sum."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x.sum(dim=1, keepdim=True))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(SumSigmoid(), (torch.zeros(1, 3, 16, 16),), buffer, dynamo=False)
    path.write_bytes(buffer.getvalue())
    return path


def write_images(folder: Path, sizes: list[tuple[int, int]]) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = []
    for k, (h, w) in enumerate(sizes):
        names.append(f"img_{k}")
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"img_{k}.png")
    return names


def test_a_folder_gets_one_map_per_image_and_a_report(tiny_model, tmp_path):
    sizes = [(20, 30), (33, 17), (16, 16)]
    names = write_images(tmp_path / "images", sizes)
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    args = ["--images", str(tmp_path / "images"), "--out", str(tmp_path / "sal"), "--model", str(tiny_model)]
    report = main([*args, "--skip-sha256", "--batch", "2"])
    for name, (h, w) in zip(names, sizes, strict=True):
        with Image.open(tmp_path / "sal" / f"{name}.png") as image:
            assert image.mode == "L" and image.size == (w, h)
    saved = json.loads((tmp_path / "sal" / "report.json").read_text())
    assert saved == report and saved["saliency.source"] == "u2netp" and "not DSS" in saved["source"]
    assert (saved["images"], saved["computed"], saved["kept"]) == (3, 3, 0)

    again = main([*args, "--skip-sha256"])  # existing maps are kept
    assert (again["computed"], again["kept"]) == (0, 3)


def test_a_split_is_read_through_the_dataset_keys(tiny_model, tmp_path):
    root = tmp_path / "voc"
    write_images(root / "JPEGImages", [(12, 14), (10, 9)])
    (root / "mine.txt").write_text("img_1\n")
    report = main(
        ["--split", "mine", "--config", "configs/demo_auxsegnet.yaml", "--out", str(tmp_path / "sal")]
        + [
            "--model",
            str(tiny_model),
            "--skip-sha256",
            f"dataset.root_dir={root}",
            f"dataset.name_list_dir={root}",
        ]
    )
    assert report["computed"] == 1 and [p.name for p in (tmp_path / "sal").glob("*.png")] == ["img_1.png"]


def test_the_model_file_is_checked_and_errors_are_one_line(tiny_model, tmp_path, capsys):
    write_images(tmp_path / "images", [(8, 8)])
    args = ["--images", str(tmp_path / "images"), "--out", str(tmp_path / "sal"), "--model", str(tiny_model)]
    assert run(main, args) == 1
    assert "sha256 differs from U²-Net-p's" in capsys.readouterr().err
    assert run(main, ["--images", str(tmp_path / "none"), "--out", str(tmp_path / "sal")]) != 0
    assert "not a folder" in capsys.readouterr().err
