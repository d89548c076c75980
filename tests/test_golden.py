"""Parity with the authors' implementation: every golden case through ``utils.golden.cases.run_case``.

``run_case`` drives each case through the code that training and inference run (``train_step``,
``msc_flip_inference``, ``refine_cams_with_bkg`` …) and compares with the golden README tolerances:
floats ``allclose(rtol=1e-4, atol=1e-5)`` unless a case says otherwise, label maps ≥ 99.9 %
agreement and exact outside the image box.
"""

from __future__ import annotations

import filecmp
from pathlib import Path

import pytest

from utils.golden.cases import NOT_IMPLEMENTED, Check, case_files, run_case

PARITY_CASES = (
    "auxseg_poly_sgd",
    "mct_losses",
    "mct_train_step",
    "mct_val_map",
    "auxseg_data_pipeline",
    "auxseg_train_step",
    "auxseg_backbone_tiny",
    "auxseg_cam_refine",
    "auxseg_heads",
    "auxseg_inference",
    "auxseg_losses",
    "auxseg_pseudo_labels",
    "auxseg_resblocks",
    "mit_forward",
    "model_forward",
    "multi_scale_cam",
    "cam_to_label",
    "denormalize",
    "par",
    "refine_cams_with_bkg",
    "radius_mask",
    "affinity_label",
    "aff_loss",
    "propagate",
    "refine_cams_with_cls_label",
    "losses",
    "poly_warmup_adamw",
    "scores",
    "train_iteration_1000",
    "train_iteration_2500",
    "train_iteration_7000",
    "msc_flip_inference",
    "dense_crf",
    "aream_propagation",
    "aream_entropy",
    "aream_aff_loss",
    "rloss_bilateral_filter",
    "rloss_energy_loss",
    "mct_attention_maps",
    "mct_attention_maps_v1",
    "mct_eval_sweep",
    "mct_finetune_init",
    "mct_pos_interp",
    "mct_v1_forward",
    "mct_v2_forward",
    "aream_aff_loss_mct",
    "aream_entropy_mct",
    "aream_propagation_mct",
)
# Cases of methods whose issues have not landed: the checker reports them PENDING (never skipped).
# Empty since issues 20 and 22 landed; a new case set of a method not built yet is listed here.
PENDING_CASES: tuple[str, ...] = ()
SHARED_GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "golden"


def describe(check: Check) -> str:
    abs_err, rel_err = check.errors()
    shapes = "" if check.ours.shape == check.ref.shape else f" shape {check.ours.shape} vs {check.ref.shape}"
    return f"{check.key} [{check.kind}]: max abs {abs_err:.3e}, max rel {rel_err:.3e}{shapes}"


def test_case_list_is_complete(golden_dir):
    """A case added to (or removed from) the golden set must be added here too."""
    assert {p.stem for p in case_files(golden_dir)} == set(PARITY_CASES) | set(PENDING_CASES)
    assert not set(PARITY_CASES) & set(PENDING_CASES)


def test_pending_cases_are_reported_as_pending(golden_dir):
    """A case whose method is not built raises NotImplementedError naming its issue: the checker lists
    it as PENDING (``--strict`` counts it as a failure); when the method lands it moves to PARITY_CASES.
    The checker's list of components not built (``NOT_IMPLEMENTED``) is exactly this test's list."""
    assert set(NOT_IMPLEMENTED) == set(PENDING_CASES)
    for name in PENDING_CASES:
        with pytest.raises(NotImplementedError, match=r"is not built yet \(issue \d+\)"):
            run_case(golden_dir / f"{name}.npz")


@pytest.mark.parametrize("name", PARITY_CASES)
def test_golden_parity(golden_dir, name):
    checks = run_case(golden_dir / f"{name}.npz")
    assert checks, f"{name}: no outputs compared"
    failed = [describe(ch) for ch in checks if not ch.passed()]
    assert not failed, f"{name} differs from the reference:\n  " + "\n  ".join(failed)


@pytest.mark.skipif(not SHARED_GOLDEN.is_dir(), reason="no shared golden set on this machine")
def test_golden_files_match_shared_set(golden_dir):
    """tests/golden is a byte-identical copy of the shared set, so a changed shared set is noticed."""
    ours = sorted(p.name for p in golden_dir.iterdir() if p.is_file())
    shared = sorted(p.name for p in SHARED_GOLDEN.iterdir() if p.is_file())
    assert ours == shared
    _, mismatch, errors = filecmp.cmpfiles(golden_dir, SHARED_GOLDEN, ours, shallow=False)
    assert not mismatch and not errors, f"differ from {SHARED_GOLDEN}: {mismatch + errors}"
