"""scripts/visualize.py, utils.diagnostics.visualize: token lookup, attention, affinity, non-square panels."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datasets.demo import write_demo_dataset
from figures.token_maps import (
    attention_of_token,
    mark_pixel,
    token_index,
    token_map_to_image,
    unit_range,
)
from methods.registry import build_method
from utils.config import load_config
from utils.diagnostics.visualize import VisualizeSettings, foreground_share, visualize_image

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    cfg = load_config(REPO / "configs/demo.yaml", ["backbone.pretrained=false", "backbone.stride=[4,2,2,1]"])
    torch.manual_seed(2)
    return build_method(cfg).build_network().eval()


def test_token_index_on_a_non_square_grid(model):
    size = (50, 130)
    grid = model.encoder.token_grid(*size)
    assert grid == (4, 9)  # ceil(H / 16), ceil(W / 16) with the AFA strides
    assert token_index(0, 0, size, grid) == 0
    assert token_index(49, 129, size, grid) == 4 * 9 - 1
    assert token_index(49, 0, size, grid) == 3 * 9
    assert token_index(25, 65, size, grid) == 2 * 9 + 4
    with pytest.raises(ValueError, match="outside"):
        token_index(50, 0, size, grid)


def test_attention_rows_are_distributions_and_maps_cover_the_image(model):
    with torch.no_grad():
        out = model(torch.randn(1, 3, 50, 130))
    last = model.encoder.stage(3)[1][-1].attn
    n = 4 * 9
    assert out.attn_logits[-1].shape == (1, last.num_heads, n, n)
    row = attention_of_token(out.attn_logits[-1], last.scale, 7)
    assert row.shape == (n,) and float(row.sum()) == pytest.approx(1.0, abs=1e-5)
    picture = token_map_to_image(out.aff_pred[0, 7], (4, 9), (50, 130))
    assert picture.shape == (50, 130) and picture.min() == 0.0 and picture.max() == pytest.approx(1.0)


def test_mark_pixel_draws_a_cross_on_a_copy():
    picture = np.zeros((20, 30, 3), dtype=np.uint8)
    marked = mark_pixel(picture, 0, 29)
    assert (marked[0, 29] == 255).all() and (marked[0, 26] == 255).all() and (marked[3, 29] == 255).all()
    assert (marked[19, 0] == 0).all() and picture.max() == 0


def test_foreground_share_and_unit_range_by_hand():
    prop = torch.tensor([[[0.2, 0.0]], [[0.6, 0.0]], [[0.1, 0.5]]])  # (K + 1 = 3, H = 1, W = 2)
    np.testing.assert_allclose(foreground_share(prop), [[0.6 / 0.9, 1.0]], rtol=1e-6)
    np.testing.assert_allclose(unit_range(torch.tensor([2.0, 4.0, 3.0])), [0.0, 1.0, 0.5])
    assert unit_range(torch.full((2, 2), 7.0)).max() == 0.0


def test_visualize_image_on_a_non_square_image(model):
    cfg = load_config(REPO / "configs/demo.yaml")
    s = VisualizeSettings(build_method(cfg).step.pseudo, (1.0, 0.5), 128)
    x = torch.randn(1, 3, 70, 130)
    cls_label = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    pictures = visualize_image(model, x, cls_label, [(0, 0), (69, 129)], s)
    assert set(pictures) == {"panel", "cams", "pixel_0_0", "pixel_69_129"}
    # tiles enlarged 3× (70 -> 210 px, at least 192), 8 px gaps, a 24 px caption strip per row
    height, width = pictures["panel"].shape[:2]
    assert width == 4 * 390 + 5 * 8 and height > 2 * (24 + 210 + 8) + 8  # 7 tiles in rows of 4 + legend
    assert pictures["cams"].shape[1] == 2 * 390 + 3 * 8  # one map per present class
    assert pictures["pixel_69_129"].shape[1] == 3 * 390 + 4 * 8
    assert all(p.dtype == np.uint8 for p in pictures.values())


def test_cli_on_split_ids_and_image_files(model, tmp_path, subprocess_env):
    root = tmp_path / "demo"
    write_demo_dataset(root, num_train=1, num_val=1, seed=4)
    checkpoint = tmp_path / "model.pt"
    torch.save({"model": model.state_dict()}, checkpoint)
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 100), dtype=np.uint8)).save(photo)
    out = tmp_path / "vis"
    command = [sys.executable, "scripts/visualize.py", "--config", "configs/demo.yaml"]
    command += ["--checkpoint", str(checkpoint), "--ids", "val_0000", "--images", str(photo)]
    command += ["--pixel", "5", "7", "--pixel", "40", "50", "--out", str(out)]
    command += [
        f"dataset.root_dir={root}",
        f"dataset.name_list_dir={root}",
        "device=cpu",
        "infer.resize_long=128",
    ]
    result = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=120, env=subprocess_env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    expected = {
        f"{n}_{k}.png" for n in ("val_0000", "photo") for k in ("panel", "cams", "pixel_5_7", "pixel_40_50")
    }
    assert {p.name for p in out.iterdir()} == expected
    assert Image.open(out / "photo_panel.png").size[0] == 4 * 400 + 5 * 8  # 60 px high: enlarged 4×
