"""Golden cases of the regularised loss (spec Appendix B): the lattice filter and the energy loss.

Both run through the functions training uses (``bilateral_filter`` inside ``regularised_loss``,
which ``utils/train/step.py`` calls). Tolerance rtol 1e-3 (golden README). The loss (~1e-5) and
its gradient (~1e-9) are far below the README's unit-scale atol 1e-5, which would accept anything;
their atol is 1e-5 of the largest reference magnitude instead.
"""

from __future__ import annotations

import numpy as np

from model.lattice import bilateral_filter
from model.rloss import REG_WEIGHT, SCALE_FACTOR, SIGMA_RGB, SIGMA_XY, regularised_loss
from utils.golden.harness import CaseData, Check


def _scaled_atol(ref: np.ndarray) -> float:
    """1e-5 of the largest reference magnitude (the unit-scale atol would accept anything)."""
    return 1e-5 * float(np.abs(ref).max())


def case_rloss_bilateral_filter(c: CaseData, device: str = "cpu") -> list[Check]:
    """The unnormalised permutohedral filter of ``in/input`` on ``in/image`` (σ already scaled)."""
    out = bilateral_filter(
        c.t("in/image").to(device), c.t("in/input").to(device), c.f("in/sigma_rgb"), c.f("in/sigma_xy")
    )
    return [Check("filtered", out.cpu().numpy(), c["out/filtered"], rtol=1e-3)]


def case_rloss_energy_loss(c: CaseData, device: str = "cpu") -> list[Check]:
    """L_reg (weight 1e-7 included) and its hand-written gradient with respect to the logits."""
    logits = c.t("in/seg_logits").to(device).requires_grad_(True)
    x, box, label = (c.t(k).to(device) for k in ("in/x", "in/img_box", "in/label"))
    constants = tuple(c.f(f"in/{k}") for k in ("weight", "sigma_rgb", "sigma_xy", "scale_factor"))
    if constants != (REG_WEIGHT, SIGMA_RGB, SIGMA_XY, SCALE_FACTOR):
        raise ValueError(f"case constants {constants} are not the training constants of model/rloss.py")
    loss = regularised_loss(logits, x, box, label)
    loss.backward()
    ref_loss, ref_grad = c["out/loss"], c["out/grad_seg_logits"]
    return [
        Check("loss", loss.detach().cpu().numpy(), ref_loss, rtol=1e-3, atol=_scaled_atol(ref_loss)),
        Check("grad_seg_logits", logits.grad.cpu().numpy(), ref_grad, rtol=1e-3, atol=_scaled_atol(ref_grad)),
    ]
