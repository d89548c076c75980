"""MCTformer-V1/V2 as engine methods: the step's losses, the schedule per iteration, bf16, validation
(seed mIoU and per-image mAP), clear errors, and train → resume → infer through the command lines."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common.errors import CheckpointError, ConfigError, DataError
from datasets.demo import write_demo_dataset
from infer_seg import main as infer_main
from methods.base import ValidationOutput
from methods.mctformer import MCTformerV1, MCTformerV2, eval_view
from methods.mctformer_parts import lr_used_in_epoch, per_image_ap
from methods.registry import build_method
from utils.config import load_config
from utils.runtime.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
TINY = {"backbone.dims": "[32,2,2]", "backbone.pretrained": "false", "backbone.img_size": 64,
        "backbone.drop_path_rate": 0.0, "dataset.crop_size": 64, "dataset.num_classes": 5,
        "dataset.num_workers": 0, "train.split": "train", "train.batch_size": 2, "device": "cpu",
        "train.max_iters": 4, "train.eval_iters": 2, "train.log_iters": 1,
        "scheduler.iters_per_epoch": "null",
        "val.split": "val"}  # fmt: skip


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mct_demo")
    write_demo_dataset(root, num_train=8, num_val=3, seed=5)
    return root


def overrides(root: Path, work: Path, version: str = "v2", **extra) -> list[str]:
    items = {"method": f"mctformer_{version}", "dataset.root_dir": root, "dataset.name_list_dir": root,
             "work_dir.dir": work, **TINY, **extra}  # fmt: skip
    return [f"{k}={v}" for k, v in items.items()]


def tiny_method(root: Path, tmp: Path, version: str = "v2", **extra):
    torch.manual_seed(0)
    method = build_method(load_config(None, overrides(root, tmp, version, **extra)))
    return method, method.build_network()


def test_registry_and_configs_of_the_recipe() -> None:
    for name, cls, c in (
        ("v2_voc", MCTformerV2, 21),
        ("v1_voc", MCTformerV1, 21),
        ("v2_coco", MCTformerV2, 81),
    ):
        cfg = load_config(REPO / f"configs/mctformer_{name}.yaml")
        method = build_method(cfg)
        assert type(method) is cls and cfg.dataset.num_classes == c
        assert method.base_lr() == pytest.approx(6.25e-5, rel=1e-15)  # 5e-4 · 64 / 512 (spec §3.1)
        per_epoch = cfg.scheduler.iters_per_epoch
        assert cfg.train.max_iters == 60 * per_epoch and cfg.augment.crop_size == 224
    assert load_config(REPO / "configs/mctformer_v1_coco.yaml").method == "mctformer_v1"
    with pytest.raises(ConfigError, match="backbone.config must be one of"):
        load_config(None, ["method=mctformer_v2", "backbone.config=mit_b1"])
    with pytest.raises(ConfigError, match="cam"):  # AFA's keys are unknown to MCTformer
        load_config(None, ["method=mctformer_v2", "cam.scales=[1.0]"])


def test_losses_schedule_and_groups_of_the_method(demo_root, tmp_path) -> None:
    """V1 logs ``cls``, V2 ``cls`` + ``patch`` (sum, weights 1); the epoch length comes from the split
    (8 images // batch 2 = 4), and the optimiser follows the lagged epoch schedule."""
    method, model = tiny_method(
        demo_root, tmp_path, "v2", **{"scheduler.epochs": 3, "scheduler.warmup_epochs": 1}
    )
    batch = {"image": torch.randn(2, 3, 64, 64), "cls_label": torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0]])}
    step = method.training_losses(model, batch, 0)
    assert set(step.losses) == {"cls", "patch"} and step.weights == {"cls": 1.0, "patch": 1.0}
    assert float(step.total) == pytest.approx(float(step.losses["cls"] + step.losses["patch"]), rel=1e-7)
    v1, v1_model = tiny_method(demo_root, tmp_path, "v1")
    assert set(v1.training_losses(v1_model, batch, 0).losses) == {"cls"}
    optimizer, scheduler = method.configure_optimizers(model)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.0, 0.05]
    s, lrs = method.cfg.scheduler, []
    for _ in range(4 * 4):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    want = [lr_used_in_epoch(e, method.base_lr(), 3, 1, s.warmup_lr, s.min_lr) for e in range(4)]
    assert lrs == pytest.approx([w for w in want for _ in range(4)], rel=1e-12)


def test_bf16_forward_is_autocast_and_close(demo_root, tmp_path, monkeypatch) -> None:
    method, model = tiny_method(demo_root, tmp_path)
    bf16, _ = tiny_method(demo_root, tmp_path, **{"train.amp": "bf16"})
    batch = {"image": torch.randn(2, 3, 64, 64), "cls_label": torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0]])}
    full, half = method.training_losses(model, batch, 0), bf16.training_losses(model, batch, 0)
    # the conv head runs in bf16 under autocast (the token stream's residual sums stay float32)
    assert full.output[1].dtype == torch.float32 and half.output[1].dtype == torch.bfloat16
    assert float(half.total) == pytest.approx(float(full.total), rel=2e-2)
    half.total.backward()
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert any("without AVX-512" in w for w in bf16.training_warnings())
    assert not any("AVX-512" in w for w in method.training_warnings())
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert not any("AVX-512" in w for w in bf16.training_warnings())
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


def test_validation_scores_seeds_and_the_authors_map(demo_root, tmp_path) -> None:
    method, model = tiny_method(demo_root, tmp_path)
    model.eval()
    image, label = torch.randn(2, 3, 80, 96), torch.tensor([[1.0, 0, 0, 0], [0, 1, 1, 0]])
    with torch.no_grad():
        out = method.validation_step(model, image, label)
        logits, _ = model(eval_view(image))
    assert isinstance(out, ValidationOutput) and out.maps["seed"].shape == (2, 80, 96)
    assert set(out.maps["seed"][0].unique().tolist()) <= {0, 1}  # absent classes never appear
    assert set(out.maps["seed"][1].unique().tolist()) <= {0, 2, 3}
    assert torch.equal(out.image_scores["mAP"], per_image_ap(logits, label))
    assert eval_view(image).shape == (2, 3, 224, 224)  # Resize(256) on the shorter side, CenterCrop(224)
    assert method.min_input_side(model) == 16
    with pytest.raises(DataError, match="smaller than one 16"):
        method.segment(model, torch.randn(1, 3, 15, 40))


def test_checkpoint_of_another_class_count_or_version_is_one_line(demo_root, tmp_path) -> None:
    method, model = tiny_method(demo_root, tmp_path)
    path = tmp_path / "w.pt"
    torch.save({"model": model.state_dict()}, path)
    method.load_weights(model, path)  # the authors' {'model': state} layout loads
    other, other_model = tiny_method(demo_root, tmp_path, **{"dataset.num_classes": 7})
    with pytest.raises(CheckpointError, match="has 4 class tokens; this model has 6"):
        other.load_weights(other_model, path)
    v1, v1_model = tiny_method(demo_root, tmp_path, "v1")
    with pytest.raises(CheckpointError, match="does not fit MCTformer-V1"):
        v1.load_weights(v1_model, path)


def entry(script: str, *args) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, script, *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_train_resume_validate_and_infer_through_the_command_lines(demo_root, tmp_path) -> None:
    work = tmp_path / "v2"
    over = overrides(demo_root, work, **{"train.stop_iter": 2})
    done = entry("train_voc.py", "--config", "configs/mctformer_v2_voc.yaml", *over)
    assert done.returncode == 0, done.stderr[-3000:]
    log = (work / "train.log").read_text()
    assert "iter 2  cls " in log and "patch " in log
    assert "validation at iter 2 on 3 images: cls F1 " in log and ", mAP " in log and "seed (%): mIoU" in log
    assert load_checkpoint(work / "checkpoints/last.pt")["method"] == "mctformer_v2"

    done = entry(
        "train_voc.py",
        "--config",
        "configs/mctformer_v2_voc.yaml",
        "--resume",
        *over[:-1],
        "train.stop_iter=null",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    log = (work / "train.log").read_text()
    assert "at iteration 2" in log and "iter 4  cls " in log and "done: best seed mIoU" in log
    last = load_checkpoint(work / "checkpoints/last.pt")
    assert last["step"] == 4 and last["scheduler"]["last_epoch"] == 4

    out = tmp_path / "infer"  # infer_seg.py in this process (its command line is the engine's, shared)
    report = infer_main([
        "--checkpoint", str(work / "checkpoints/last.pt"), "--out", str(out), "dataset.num_workers=0",
        "infer.resize_long=64", "infer.scales=[1.0]", "device=cpu",
    ])  # fmt: skip
    assert len(list((out / "prediction").glob("*.png"))) == 3 and report["method"] == "mctformer_v2"
