"""The ``cam.from_forward`` fast option: the pseudo labels from the training forward's CAM and affinity."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from methods.afa import AFA, StepSettings
from model.cam import normalize_cam, resize, single_pass_cam
from model.pseudo_labels import PseudoLabelSettings
from utils.bench.harness import random_batch
from utils.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]


def test_single_pass_cam_is_the_eval_cam_pass_at_scale_one_without_flip(tiny_model):
    """Without DropPath the forward's CAM is the CAM pass's: resized, ReLU'd, normalised per map."""
    model = tiny_model(num_classes=5).eval()
    x = torch.randn(2, 3, 48, 80)
    with torch.no_grad():
        out = model(x, with_cam=True)
        assert model(x).cam is None  # computed only when asked for
        cam_pass = model.forward_cam(x, run_decoder=False)
    msc = single_pass_cam(out.cam, out.aff_pred, (48, 80))
    expected = normalize_cam(torch.relu(resize(cam_pass.cam, (48, 80))))
    torch.testing.assert_close(msc.cam, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(msc.aff_pred, cam_pass.aff_pred, rtol=1e-5, atol=1e-6)
    assert msc.aff_grid == (3, 5) and msc.cam.amax() < 1.0 and msc.cam.amin() == 0.0


def test_from_forward_runs_no_cam_pass_and_labels_the_forwards_cam(tiny_model, monkeypatch):
    """With the option no ``forward_cam`` runs; the targets' CAM and affinity are the forward's."""
    model = tiny_model(num_classes=5).train()
    calls = []
    original = model.forward_cam
    monkeypatch.setattr(model, "forward_cam", lambda *a, **k: calls.append(1) or original(*a, **k))
    batch = random_batch(2, 64, 5, torch.device("cpu"))
    settings = StepSettings(pseudo=PseudoLabelSettings(cam_from_forward=True), cam_iters=0)
    result = AFA.from_settings(settings).training_losses(model, batch, 5)
    assert calls == []
    own = single_pass_cam(result.output.cam, result.output.aff_pred, (64, 64))
    assert torch.equal(result.targets.cam, own.cam)
    assert torch.equal(result.targets.cam_aff, own.aff_pred)
    assert not result.targets.cam_aff.requires_grad and result.output.aff_pred.requires_grad
    result.total.backward()  # the detached targets leave the graph of the losses intact
    assert model.attn_proj.weight.grad is not None

    default = StepSettings(pseudo=PseudoLabelSettings(), cam_iters=0)
    AFA.from_settings(default).training_losses(model, batch, 5)
    assert len(calls) == 3  # the reference's three scales


def test_from_forward_with_aream_is_a_config_error():
    overrides = ["cam.from_forward=true", "aream.enabled=true"]
    with pytest.raises(ConfigError, match="cam.from_forward"):
        load_config(REPO / "configs/demo.yaml", overrides)
