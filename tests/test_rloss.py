"""The regularised loss L_reg (spec Appendix B): golden cases, hand cases, the step wiring, a short run."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from datasets.demo import write_demo_dataset
from methods.afa import AFA, StepSettings, step_settings
from model import rloss
from model.lattice import bilateral_filter
from utils.config import load_config
from utils.golden.cases import CaseData
from utils.golden.rloss import case_rloss_bilateral_filter, case_rloss_energy_loss
from utils.train.loop import train

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")
NO_GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
DEVICES = ["cpu", pytest.param("cuda", marks=NO_GPU)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", [case_rloss_bilateral_filter, case_rloss_energy_loss])
def test_golden_cases_on_each_device(golden_dir, case, device):
    name = case.__name__.removeprefix("case_")
    checks = case(CaseData(golden_dir / f"{name}.npz"), device=device)
    assert checks
    for check in checks:
        assert check.passed(), f"{name}/{check.key} on {device}: max abs/rel {check.errors()}"


def random_inputs(seed: int, n: int = 2, k: int = 3, size: int = 8):
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(n, 3, size, size, generator=gen) * 255
    prob = torch.softmax(3 * torch.randn(n, k, size, size, generator=gen), dim=1)
    label = torch.randint(0, k, (n, size, size), generator=gen)
    label[:, :2] = 255
    mask = torch.zeros(n, size, size)
    mask[:, :, 2:] = 1
    return image, prob, mask, label


def test_backward_is_the_hand_written_formula():
    """dL/dS (downscaled) = weight·(−2·AS·R/N), AS the gated filter output (spec B.2.7), carried
    through the bilinear downscale; not autograd of the forward (the gate's dependence is ignored)."""
    image, prob, mask, label = random_inputs(0)
    prob.requires_grad_(True)
    weight, n = 1e-3, prob.shape[0]
    loss = rloss.dense_energy_loss(image, prob, mask, label, weight=weight)
    loss.backward()
    # the formula, step by step on the 4×4 grid
    small = F.interpolate(prob.detach(), scale_factor=0.5, mode="bilinear", align_corners=False)
    small.requires_grad_(True)
    r = mask[:, ::2, ::2]
    unlabeled = label[:, ::2, ::2] == 255
    gate = (r - small.detach().amax(dim=1)).masked_fill(unlabeled, 1.0).clamp(min=0)
    filtered = bilateral_filter(image[:, :, ::2, ::2], small.detach() * r[:, None], 15.0, 50.0)
    gated = filtered * gate[:, None]
    expected_loss = -weight * (small.detach() * r[:, None] * gated).sum() / n
    assert loss.item() == pytest.approx(expected_loss.item(), rel=1e-5)
    leaf = prob.detach().requires_grad_(True)
    grad_small = weight * (-2.0 * gated * r[:, None] / n)
    down = F.interpolate(leaf, scale_factor=0.5, mode="bilinear")
    (expected_grad,) = torch.autograd.grad(down, leaf, grad_small)
    torch.testing.assert_close(prob.grad, expected_grad, rtol=1e-5, atol=1e-12)
    # autograd of the forward would differ: with the gate's dependence and both factors of S'·AS
    true_small = small.detach().clone().requires_grad_(True)
    g = (r - true_small.amax(dim=1)).masked_fill(unlabeled, 1.0).clamp(min=0)
    masked = true_small * r[:, None]
    energy = -(masked * bilateral_filter(image[:, :, ::2, ::2], masked, 15.0, 50.0) * g[:, None]).sum() / n
    assert not torch.allclose(torch.autograd.grad(weight * energy, true_small)[0], grad_small, rtol=1e-2)


def test_gate_and_crop_mask_on_a_hand_made_4x4_case():
    """Gate = R − max_k S, 1 where unlabelled (also outside the box), clipped at 0 (spec B.2.3)."""
    rows = [[0.9, 0.6, 0.5, 0.7], [0.8, 0.6, 0.5, 0.7], [1.0, 0.6, 0.5, 0.7], [0.9, 0.6, 0.5, 0.7]]
    top = torch.tensor(rows)
    prob = torch.stack([top, 1 - top])[None]  # (1, 2, 4, 4); max_k S = max(top, 1 − top)
    mask = torch.zeros(1, 4, 4)
    mask[:, 1:3, 1:4] = 1  # the box rows 1-2, columns 1-3
    unlabeled = torch.zeros(1, 4, 4, dtype=torch.bool)
    unlabeled[0, 0, 0] = unlabeled[0, 2, 3] = True  # one outside, one inside the box
    expected = torch.tensor(
        [[1.0, 0.0, 0.0, 0.0], [0.0, 0.4, 0.5, 0.3], [0.0, 0.4, 0.5, 1.0], [0.0, 0.0, 0.0, 0.0]]
    )[None]
    torch.testing.assert_close(rloss.energy_gate(prob, mask, unlabeled), expected)
    box = torch.tensor([[1, 3, 1, 4]])  # [h0, h1, w0, w1]
    x = torch.zeros(1, 3, 8, 8)
    logits = torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    label = torch.zeros(1, 8, 8, dtype=torch.long)
    rloss.regularised_loss(logits, x, box * 2, label).backward()
    inside = torch.zeros(8, 8, dtype=torch.bool)
    inside[2:6, 2:8] = True  # the box on the crop grid
    assert (logits.grad[0, :, ~inside] == 0).all() and (logits.grad[0, :, inside] != 0).any()


def test_loss_is_zero_outside_the_box_whatever_the_probabilities():
    """No box (all of the crop padded, the label all 255 there): loss and gradient are exactly 0; and
    probabilities outside a box do not change the loss (box edges on even pixels: no bilinear mix)."""
    image, prob, _, _ = random_inputs(1)
    prob.requires_grad_(True)
    ignore = torch.full((2, 8, 8), 255)
    loss = rloss.dense_energy_loss(image, prob, torch.zeros(2, 8, 8), ignore)
    loss.backward()
    assert loss.item() == 0.0 and (prob.grad == 0).all()
    mask = torch.zeros(2, 8, 8)
    mask[:, 2:6, 2:8] = 1
    other = prob.detach().clone()
    other[:, :, :2] = torch.softmax(torch.randn(2, 3, 2, 8), dim=1)
    a = rloss.dense_energy_loss(image, prob.detach(), mask, ignore)
    b = rloss.dense_energy_loss(image, other, mask, ignore)
    assert a.item() == b.item() != 0.0


def test_weight_zero_never_runs_the_loss(tiny_model, monkeypatch):
    """With ``loss.reg`` 0 (the golden train_iteration cases, COCO, voc_noreg) nothing changes."""
    model = tiny_model().train()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    cls_label = torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0]])
    box = torch.tensor([[0, 64, 0, 64], [0, 48, 16, 64]])
    calls = []

    def reg_with_a_known_value(*args, **kwargs):
        calls.append(torch.is_grad_enabled())
        return torch.tensor(-3.0)

    monkeypatch.setattr("methods.afa.regularised_loss", reg_with_a_known_value)
    base = StepSettings(cam_iters=0)
    torch.manual_seed(0)
    off = AFA.from_settings(base).step_losses(model, x, cls_label, box, 5)
    assert not calls and set(off.losses) == {"cls", "seg", "aff"} and off.weights["reg"] == 0.0
    on = StepSettings(cam_iters=0, loss_weights=base.loss_weights | {"reg": 0.01})
    torch.manual_seed(0)
    with_reg = AFA.from_settings(on).step_losses(model, x, cls_label, box, 5)
    assert calls == [True] and with_reg.losses["reg"].item() == -3.0
    assert with_reg.total.item() == pytest.approx(off.total.item() - 0.03, abs=1e-6)
    for k in ("cls", "seg", "aff"):
        assert torch.equal(with_reg.losses[k], off.losses[k])
    torch.manual_seed(0)
    warm = AFA.from_settings(on).step_losses(model, x, cls_label, box, 0)  # n_iter ≤ cam_iters: weight 0
    assert warm.weights["reg"] == 0.0 and "reg" in warm.losses and calls[-1] is False  # without grad


def test_demo_training_with_the_regularised_loss(tmp_path):
    """A few iterations past the warm phase with loss.reg = 0.01: finite losses and the term logged."""
    root = tmp_path / "demo"
    write_demo_dataset(root, num_train=8, num_val=2, seed=3)
    items = {
        "dataset.root_dir": root,
        "dataset.name_list_dir": root,
        "dataset.crop_size": 64,
        "dataset.num_workers": 0,
        "train.batch_size": 4,
        "train.max_iters": 4,
        "train.cam_iters": 1,
        "train.eval_iters": 4,
        "train.log_iters": 1,
        "afa.seg_label_switch_iter": 2,
        "loss.reg": 0.01,
        "work_dir.dir": tmp_path / "run",
        "device": "cpu",
    }
    train(load_config(REPO / "configs/demo.yaml", [f"{k}={v}" for k, v in items.items()]))
    lines = [ln for ln in (tmp_path / "run" / "train.log").read_text().splitlines() if " reg " in ln]
    assert len(lines) == 4, lines
    values = [float(ln.split(" reg ")[1].split()[0]) for ln in lines]
    assert all(math.isfinite(v) for v in values) and any(v != 0.0 for v in values[1:]), lines


def test_configs_say_which_recipe_has_the_term():
    """voc.yaml is the paper's recipe (0.01); voc_noreg.yaml the authors' current code, otherwise the
    same; COCO never used it; the schema default is 0 and the weight reaches the step settings."""
    voc, noreg = (load_config(REPO / f"configs/{n}.yaml") for n in ("voc", "voc_noreg"))
    coco = load_config(REPO / "configs/coco.yaml")
    assert (voc.loss.reg, noreg.loss.reg, coco.loss.reg) == (0.01, 0.0, 0.0)
    assert load_config(None).loss.reg == 0.0
    noreg.loss.reg, noreg.work_dir.dir = voc.loss.reg, voc.work_dir.dir
    assert noreg == voc
    assert step_settings(voc).loss_weights == {"cls": 1.0, "seg": 0.1, "aff": 0.1, "reg": 0.01}
