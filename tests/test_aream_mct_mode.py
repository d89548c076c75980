"""The AReAM mode on MCTformer-V2 (``methods/aream_mct.py``): the step equals a hand composition of the
golden-checked pieces, the warm phase, gradients into the deep blocks, the settings and their errors, and
a 3-iteration run through ``train_voc.py``."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from common.errors import ConfigError
from datasets.demo import write_demo_dataset
from methods.aream_entropy import FORMAT, VERSION, image_attention, load_entropy_file
from methods.aream_mct import AReAMOnMCTformer, aream_mct_cam, aream_mct_label
from methods.mctformer import MCTformerV2
from methods.registry import build_method
from model.cam import denormalize
from model.refine import refine_cams_with_bkg
from utils.config import load_config

REPO = Path(__file__).resolve().parents[1]
C, DEPTH, SPLIT = 4, 4, 2  # class tokens, blocks, aream.layer_index
TINY = {"method": "mctformer_v2", "backbone.dims": f"[32,{DEPTH},2]", "backbone.pretrained": "false",
        "backbone.img_size": 64, "backbone.drop_path_rate": 0.0, "dataset.crop_size": 64,
        "dataset.num_classes": C + 1, "dataset.num_workers": 0, "train.split": "train",
        "train.batch_size": 2, "device": "cpu", "train.max_iters": 3, "train.eval_iters": 3,
        "train.log_iters": 1, "scheduler.iters_per_epoch": 1, "scheduler.epochs": 3,
        "scheduler.warmup_epochs": 0, "val.split": "val", "aream.enabled": "true",
        "aream.layer_index": SPLIT, "aream.warmup_epochs": 1}  # fmt: skip
ENTROPY = [0.0, 0.4, 1.0, 0.7]  # normalised per-block entropies of a made-up file


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("aream_mct_demo")
    write_demo_dataset(root, num_train=6, num_val=2, seed=3)
    return root


def entropy_file(path: Path, values: list[float]) -> Path:
    record = {
        "format": FORMAT,
        "version": VERSION,
        "entropy_bits": [3.0 + v for v in values],
        "normalised": values,
    }
    path.write_text(json.dumps(record))
    return path


def overrides(root: Path, work: Path, **extra) -> list[str]:
    items = {"dataset.root_dir": root, "dataset.name_list_dir": root, "work_dir.dir": work, **TINY, **extra}
    return [f"{k}={v}" for k, v in items.items()]


def tiny(root: Path, tmp: Path, **extra):
    torch.manual_seed(0)
    method = build_method(load_config(None, overrides(root, tmp, **extra)))
    return method, method.build_network()


def batch_of(method) -> dict:
    data = method.build_train_dataset()
    items = [data[(i, 7 + i)] for i in range(2)]  # fixed augmentation seeds
    return {k: torch.stack([it[k] for it in items]) for k in ("image", "cls_label")}


def hand_step(model, x: torch.Tensor, labels: torch.Tensor, e: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The AReAM CAM, label and Eq. 16 written out from the spec (§8.5), every block's attention explicit."""
    b, (h, w) = len(x), x.shape[-2:]
    with torch.no_grad():
        tokens, grid, logits = model.forward_features(torch.cat([x, x.flip(-1)]), attn="logits")
        fmap = model.head(tokens[:, C:].transpose(1, 2).reshape(2 * b, -1, *grid))
        attn = [lg.softmax(-1).mean(1) for lg in logits]  # head-mean softmax, (2B, C + N, C + N)
        cam = fmap.flatten(2) * torch.stack([a[:, :C, C:] for a in attn]).mean(0)  # class-to-patch weights
        fused = sum((1 - e[i]) * attn[i][:, C:, C:] for i in range(SPLIT)) / SPLIT
        cam = torch.einsum("bkn,bmn->bkm", cam, fused).reshape(2 * b, C, *grid)
        cam = F.interpolate(cam, size=(h, w), mode="bilinear", align_corners=False)
        cam = torch.relu(cam[:b] + cam[b:].flip(-1))
        cam = cam - cam.amin(dim=(-2, -1), keepdim=True)
        cam = cam / (cam.amax(dim=(-2, -1), keepdim=True) + 1e-6) * labels[:, :, None, None]
        box = torch.tensor([[0, h, 0, w]] * b)
        label = refine_cams_with_bkg(denormalize(x), cam, labels, box, 0.55, 0.35)
    _, _, deep = model.forward_features(x, attn="logits")
    small = label[:, ::16, ::16].flatten(1)  # nearest by 16: pixel (16i, 16j)
    aff = (small[:, :, None] == small[:, None, :]).long()
    aff[(small[:, :, None] == 255) | (small[:, None, :] == 255)] = 255
    per_block = []
    for lg in deep[SPLIT:]:
        pred = torch.sigmoid(lg.mean(1)[:, C:, C:])
        pos, neg = aff == 1, aff == 0
        per_block.append(
            0.5 * (1 - pred)[pos].sum() / (pos.sum() + 1) + 0.5 * pred[neg].sum() / (neg.sum() + 1)
        )
    return cam, label, (torch.stack(per_block) * e[SPLIT:]).mean()


def test_step_is_the_hand_composition_after_the_warm_phase(demo_root, tmp_path) -> None:
    path = entropy_file(tmp_path / "ent.json", ENTROPY)
    method, model = tiny(demo_root, tmp_path, **{"aream.entropy_file": path})
    assert isinstance(method, AReAMOnMCTformer) and method.aream.deep_blocks == range(SPLIT, DEPTH)
    batch = batch_of(method)

    warm = method.training_losses(model, batch, 0)  # epoch 0 of aream.warmup_epochs 1: MCTformer only
    plain = MCTformerV2.training_losses(method, model, batch, 0)
    assert warm.losses["aream"] == 0 and warm.weights["aream"] == 0.0
    torch.testing.assert_close(warm.total, plain.total, rtol=0, atol=0)

    r = method.training_losses(model, batch, 1)
    cam, label, loss = hand_step(model, batch["image"], batch["cls_label"], torch.tensor(ENTROPY))
    ours = aream_mct_cam(model, batch["image"], method.aream) * batch["cls_label"][:, :, None, None]
    torch.testing.assert_close(ours, cam, rtol=1e-5, atol=1e-6)
    assert torch.equal(r.targets, label) and (label == 255).any() and (label != 255).any()
    torch.testing.assert_close(r.losses["aream"], loss, rtol=1e-5, atol=1e-6)
    assert r.losses["aream"] > 0 and r.weights["aream"] == 0.1
    torch.testing.assert_close(r.losses["cls"], plain.losses["cls"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        r.total, r.losses["cls"] + r.losses["patch"] + 0.1 * loss, rtol=1e-5, atol=1e-6
    )
    assert torch.equal(aream_mct_label(model, batch["image"], batch["cls_label"], method.aream), label)

    model.zero_grad()
    r.losses["aream"].backward()
    deep = [model.blocks[i].attn.qkv.weight.grad for i in range(SPLIT, DEPTH)]
    assert all(g is not None and g.abs().sum() > 0 for g in deep)  # Eq. 16 reaches the deep blocks
    assert model.head.weight.grad is None or model.head.weight.grad.abs().sum() == 0  # the label: no grad


def test_settings_of_the_authors_config_and_errors(demo_root, tmp_path) -> None:
    cfg = load_config(REPO / "configs/aream_mctformer_v2_voc.yaml")
    method = build_method(cfg)
    s = method.aream
    assert type(method) is AReAMOnMCTformer and (s.layer_index, s.num_blocks, s.num_tokens) == (7, 12, 20)
    assert (s.loss_weight, s.warmup_epochs, s.entropy) == (0.1, 10, None)
    assert method.aream_active(10 * 165 - 1) is False and method.aream_active(10 * 165) is True
    twelve = [i / 11 for i in range(12)]
    path = entropy_file(tmp_path / "twelve.json", twelve)
    s = build_method(
        load_config(REPO / "configs/aream_mctformer_v2_voc.yaml", [f"aream.entropy_file={path}"])
    ).aream
    torch.testing.assert_close(s.propagation_weights(), 1 - torch.tensor(twelve[:7]))
    torch.testing.assert_close(s.supervision_weights(), torch.tensor(twelve[7:]))
    with pytest.raises(ValueError, match="has 4 blocks; the encoder has 12"):
        four = entropy_file(tmp_path / "four.json", ENTROPY)
        build_method(
            load_config(REPO / "configs/aream_mctformer_v2_voc.yaml", [f"aream.entropy_file={four}"])
        )
    with pytest.raises(ConfigError, match="MCTformerV1 has no AReAM mode"):
        build_method(load_config(None, ["method=mctformer_v1", "aream.enabled=true"]))
    with pytest.raises(ConfigError, match="aream.mode: only 'add'"):
        load_config(None, ["method=mctformer_v2", "aream.enabled=true", "aream.mode=replace"])
    with pytest.raises(ConfigError, match="aream.layer_index=4 must be in 1..3"):
        tiny(demo_root, tmp_path, **{"aream.layer_index": 4})
    assert tiny(demo_root, tmp_path, **{"aream.layer_index": "null"})[0].aream.layer_index == 2  # 7/12 of 4


def test_three_iterations_through_train_voc(demo_root, tmp_path) -> None:
    work = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "train_voc.py", "--config", "configs/mctformer_v2_voc.yaml",
         *overrides(demo_root, work)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    log = (work / "train.log").read_text()
    assert "aream: blocks 0-1 refine, 2-3 supervised (weight 0.1) after 1 warm-up epochs" in log
    lines = [line for line in log.splitlines() if " cls " in line and "aream" in line]
    assert len(lines) == 3, log[-2000:]
    assert "aream 0.0000" in lines[0] and "aream 0.0000" not in lines[2]
    assert "validation at iter 3" in log

    out = tmp_path / "layer_entropy.json"  # the offline entropy pass on the MCTformer-V2 checkpoint
    args = [f"dataset.root_dir={demo_root}", f"dataset.name_list_dir={demo_root}", "device=cpu"]
    done = subprocess.run(
        [sys.executable, "scripts/layer_entropy.py", "--checkpoint", work / "checkpoints/last.pt",
         "--out", out, "infer.max_images=3", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    record = load_entropy_file(out, DEPTH)
    assert record["num_images"] == 3 and min(record["normalised"]) == 0.0 and max(record["normalised"]) == 1.0
    sizes = [Image.open(p).size for p in (demo_root / "JPEGImages").glob("*.jpg")]
    most = max((w // 16) * (h // 16) for w, h in sizes)  # patches of the largest image
    assert all(0 < b <= math.log2(most) for b in record["entropy_bits"])  # ≤ log2(N) bits on N positions
    method, _ = tiny(demo_root, tmp_path, **{"aream.entropy_file": out})
    assert method.aream.entropy == tuple(record["normalised"])


def test_image_attention_of_mctformer_is_the_patch_block(demo_root, tmp_path) -> None:
    _, model = tiny(demo_root, tmp_path)
    model.eval()
    x = torch.randn(1, 3, 64, 48)
    a = image_attention(model, x)
    tokens, grid, logits = model.forward_features(x, attn="weights")
    fmap = model.head(tokens[:, C:].transpose(1, 2).reshape(1, -1, *grid))
    assert a.grids == [(4, 3)] * DEPTH
    torch.testing.assert_close(a.cam, fmap, rtol=1e-5, atol=1e-6)
    for ours, weights in zip(a.attns, logits):
        torch.testing.assert_close(ours, weights.mean(1)[:, C:, C:], rtol=1e-5, atol=1e-6)
