"""The AReAM mode end to end: config keys, the training step in both modes, the entropy file, the scripts."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from runs import tiny_overrides

from datasets.demo import write_demo_dataset
from methods.afa import AFA
from methods.aream import AReAMOnAFA, aream_settings, default_layer_index
from methods.aream_entropy import load_entropy_file
from methods.registry import build_method
from utils.config import ConfigError, load_config
from utils.diagnostics.layer_entropy import save_entropy_file
from utils.train.loop import train

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs/demo.yaml"
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("aream_demo")
    write_demo_dataset(root, num_train=8, num_val=3, seed=5)
    return root


def overrides(root: Path, work: Path, **extra) -> list[str]:
    """A few iterations of the demo network with the warm phase over after one, so every term is active."""
    items = {
        "train.max_iters": 3,
        "train.eval_iters": 3,
        "afa.seg_label_switch_iter": 1,
        "loss.reg": 0.0,  # the demo's L_reg is another issue's term; these tests check AFA + AReAM
        "val.max_images": 2,
    }
    return tiny_overrides(root, work, **{**items, **extra})


def entropy_record(values: list[float]) -> dict:
    return {"entropy_bits": [5.0 + v for v in values], "normalised": values, "num_images": 3, "skipped": 0}


@pytest.fixture(scope="module")
def afa_checkpoint(demo_root, tmp_path_factory) -> Path:
    """A 3-iteration AFA run of the demo network (the input of the offline scripts)."""
    work = tmp_path_factory.mktemp("afa_run")
    train(load_config(DEMO, overrides(demo_root, work)))
    return work / "checkpoints" / "last.pt"


def test_defaults_are_off_and_afa_is_unchanged(demo_root, tmp_path):
    cfg = load_config(DEMO, overrides(demo_root, tmp_path))
    assert cfg.aream.enabled is False and cfg.aream.mode == "add" and cfg.aream.grid_conversion == "expand"
    method = build_method(cfg)
    assert type(method) is AFA and set(method.step.loss_weights) == {"cls", "seg", "aff", "reg"}
    torch.manual_seed(0)
    model = method.build_network().train()
    x = torch.randn(2, 3, 64, 64)
    result = method.step_losses(model, x, torch.tensor([[1.0, 0, 0, 0], [0, 1, 1, 0]]),
                                torch.tensor([[0, 64, 0, 64]] * 2), 2)  # fmt: skip
    assert set(result.losses) == {"cls", "seg", "aff"}
    requested = [i for i, a in enumerate(result.output.attn_logits) if a is not None]
    assert requested == [3, 4]  # only the affinity head's last two blocks


def test_config_keys_are_checked(demo_root, tmp_path):
    base = overrides(demo_root, tmp_path)
    with pytest.raises(ConfigError, match="aream.mode"):
        load_config(DEMO, base + ["aream.mode=both"])
    with pytest.raises(ConfigError, match="aream.grid_conversion"):
        load_config(DEMO, base + ["aream.grid_conversion=bilinear"])
    with pytest.raises(ConfigError, match="aream.layer_idx"):
        load_config(DEMO, base + ["aream.layer_idx=3"])
    with pytest.raises(ValueError, match="layer_index"):
        aream_settings(load_config(DEMO, base + ["aream.enabled=true", "aream.layer_index=5"]))
    assert (
        default_layer_index("mit_b1"),
        default_layer_index("mit_b2"),
        default_layer_index("mit_tiny"),
    ) == (6, 13, 3)


def test_entropy_file_round_trips_and_is_checked(demo_root, tmp_path):
    cfg = load_config(DEMO, overrides(demo_root, tmp_path))
    values = [1.0, 0.5, 0.25, 0.0, 0.75]
    path = tmp_path / "ent.json"
    written = save_entropy_file(path, entropy_record(values), cfg, "ckpt.pt", "train")
    assert load_entropy_file(path, 5) == written == json.loads(path.read_text())
    assert written["normalised"] == values and written["num_blocks"] == 5
    cfg_on = load_config(
        DEMO, overrides(demo_root, tmp_path, **{"aream.enabled": True, "aream.entropy_file": path})
    )
    s = aream_settings(cfg_on)
    assert (
        s.entropy == tuple(values) and list(s.shallow_blocks) == [0, 1, 2] and list(s.deep_blocks) == [3, 4]
    )
    torch.testing.assert_close(s.propagation_weights(), torch.tensor([0.0, 0.5, 0.75]))
    torch.testing.assert_close(s.supervision_weights(), torch.tensor([0.0, 0.75]))
    with pytest.raises(ValueError, match="encoder has 8"):
        load_entropy_file(path, 8)
    save_entropy_file(path, entropy_record([1.5, 0, 0, 0, 0]), cfg, "ckpt.pt", "train")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        load_entropy_file(path, 5)
    with pytest.raises(FileNotFoundError, match="layer_entropy.py"):
        load_entropy_file(tmp_path / "missing.json", 5)


@pytest.mark.parametrize(("mode", "conversion"), [("add", "expand"), ("replace", "reduce")])
def test_training_step_in_each_mode(demo_root, tmp_path, mode, conversion):
    """One step after the warm phase: finite terms, the aream term reaches the deep blocks' q and k."""
    extra = {"aream.enabled": True, "aream.mode": mode, "aream.grid_conversion": conversion}
    cfg = load_config(DEMO, overrides(demo_root, tmp_path, **extra))
    method = build_method(cfg)
    assert type(method) is AReAMOnAFA
    torch.manual_seed(0)
    model = method.build_network().train()
    x = torch.randn(2, 3, 64, 64)
    cls_label, box = torch.tensor([[1.0, 0, 0, 0], [0, 1, 1, 0]]), torch.tensor([[0, 64, 0, 48]] * 2)
    result = method.step_losses(model, x, cls_label, box, 2)
    assert set(result.losses) == {"cls", "seg", "aff", "aream"}
    assert all(torch.isfinite(v) for v in result.losses.values())
    assert 0 < result.losses["aream"] < 1
    assert cfg.loss.aff == 0.5  # the demo config's affinity weight, kept in add mode
    assert result.weights["aream"] == 0.1 and result.weights["aff"] == (0.5 if mode == "add" else 0.0)
    requested = [i for i, a in enumerate(result.output.attn_logits) if a is not None]
    assert requested == [3, 4]
    assert (result.targets.refined_aff_label[:, :, 48:] == 255).all()  # outside the box
    result.total.backward()
    q = model.encoder.block4[0].attn.q.weight.grad
    assert q is not None and q.abs().sum() > 0
    if mode == "replace":  # the affinity head is in the graph with weight 0
        assert model.attn_proj.weight.grad.abs().sum() == 0


def test_short_training_runs_in_both_modes(demo_root, tmp_path, afa_checkpoint):
    ent = tmp_path / "ent.json"
    cfg = load_config(DEMO, overrides(demo_root, tmp_path))
    save_entropy_file(ent, entropy_record([1.0, 0.4, 0.0, 0.6, 0.9]), cfg, str(afa_checkpoint), "train")
    for mode, extra in (("add", {"aream.entropy_file": ent}), ("replace", {})):
        work = tmp_path / mode
        cfg = load_config(
            DEMO, overrides(demo_root, work, **{"aream.enabled": True, "aream.mode": mode, **extra})
        )
        metrics = train(cfg)
        assert 0.0 <= metrics["seg"]["miou"] <= 1.0
        log = (work / "train.log").read_text()
        lines = [line for line in log.splitlines() if " aream " in line and "total" in line]
        assert len(lines) == 3, log
        values = [float(line.split(" aream ")[1].split()[0]) for line in lines]
        assert all(0 < v < 1 for v in values), lines
        expected = "normalised layer entropies from" if mode == "add" else "uniform layer weights"
        assert expected in log


def test_layer_entropy_script_writes_a_file_training_reads(
    demo_root, tmp_path, afa_checkpoint, subprocess_env
):
    out = tmp_path / "layer_entropy.json"
    args = [f"dataset.root_dir={demo_root}", f"dataset.name_list_dir={demo_root}", "device=cpu"]
    # overrides before a flag: the command line takes them in any order
    cmd = [sys.executable, "scripts/layer_entropy.py", "--config", str(DEMO)]
    cmd += ["--checkpoint", str(afa_checkpoint), *args]
    done = subprocess.run(cmd + ["--out", str(out)], cwd=REPO, env=subprocess_env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    record = load_entropy_file(out, 5)
    assert record["num_images"] == 8 and record["split"] == "train"
    assert min(record["normalised"]) == 0.0 and max(record["normalised"]) == 1.0
    encoder = build_method(load_config(DEMO)).build_network().encoder
    sizes = [Image.open(p).size for p in (demo_root / "JPEGImages").glob("*.jpg")]
    most = max(math.prod(encoder.token_grid(h, w)) for w, h in sizes)  # positions of the largest grid
    assert all(0 < b <= math.log2(most) for b in record["entropy_bits"])  # ≤ log2(N) bits on N positions
    assert "block 4" in done.stdout


def test_analyze_attention_script_writes_csvs_and_plots(demo_root, tmp_path, afa_checkpoint, subprocess_env):
    out = tmp_path / "analysis"
    args = [f"dataset.root_dir={demo_root}", f"dataset.name_list_dir={demo_root}", "device=cpu"]
    cmd = [sys.executable, "scripts/analyze_attention.py", "--config", str(DEMO)]
    cmd += ["--checkpoint", str(afa_checkpoint), "--out", str(out), *args]
    done = subprocess.run(cmd, cwd=REPO, env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = [line.split(",") for line in (out / "layers.csv").read_text().splitlines()]
    assert rows[0][:4] == ["layer", "stage", "grid", "hellinger"]
    assert [r[0] for r in rows[1:]] == ["0", "1", "2", "3", "4"] and [r[1] for r in rows[1:]] == list("12344")
    for r in rows[1:]:
        assert 0 <= float(r[3]) <= 1 and 0 <= float(r[6]) <= 100 and float(r[7]) >= float(r[6])
    summary = (out / "summary.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in summary[1:]] == ["average", "none"]
    for name in ("hellinger.png", "entropy.png", "cam_miou.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
