"""``scripts/check_golden.py`` works on case sets other than the shipped one.

A case set is written the way the shipped one was (same file and key names), with a different
configuration: a random-init ``mit_b1`` network with 6 classes and a 32-wide decoder, batch 3,
64×96 network inputs (multi-scale CAM included: at scale 0.5 a 48-pixel side would leave the sr = 8
stage-1 reduction no 8×8 window), 48×80 label maps and test images (long side resized to 128,
scales 1 and 0.75), an 80 crop with radius 2 for the training iteration, 7×9 token grids, PAR
dilations (1, 2, 4). Expected outputs come from the project's public functions. The checker must
pass every case and flag exactly the case whose stored output was perturbed.
"""

from __future__ import annotations

import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from methods.afa import StepSettings, phase_weights
from model import affinity, cam, losses, par, refine
from model.afa import AFANetwork
from model.inference import msc_flip_inference
from model.pseudo_labels import PseudoLabelSettings, make_targets
from utils.evaluation.crf import CRFParams, dense_crf
from utils.evaluation.metrics import scores
from utils.golden.cases import poly_warmup_adamw_trajectory

REPO = Path(__file__).resolve().parents[1]
CHECKER = REPO / "scripts" / "check_golden.py"
B, K = 3, 5  # batch, foreground classes
CLS_LABEL = torch.tensor([[1, 0, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 0, 0, 1]], dtype=torch.float32)
BOX_48x80 = torch.tensor([[0, 48, 0, 80], [8, 48, 0, 64], [0, 40, 16, 80]])
BOX_80 = torch.tensor([[0, 80, 0, 80], [16, 80, 0, 72], [0, 64, 8, 80]])
TRAIN_ITER, RADIUS = 7000, 2


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()


def _save(directory: Path, name: str, arrays: dict[str, object]) -> None:
    np.savez(directory / f"{name}.npz", **{k: np.asarray(v) for k, v in arrays.items()})


def _images(gen: torch.Generator, h: int, w: int) -> torch.Tensor:
    """A normalised batch of smooth random images (so PAR has edges to follow)."""
    raw = torch.rand(B, 3, h // 8, w // 8, generator=gen) * 255
    raw = cam.resize(raw, (h, w))
    mean = torch.tensor(cam.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(cam.IMAGENET_STD).view(1, 3, 1, 1)
    return (raw - mean) / std


def _network_cases(d: Path, model: AFANetwork, gen: torch.Generator) -> None:
    x = _images(gen, 64, 96)
    with torch.no_grad():
        enc = model.encoder(x)
        out = model(x)
        cam_out = model.forward_cam(x)
    mit = {"in/x": x, "meta/backbone": "mit_b1", "meta/stride": np.array([4, 2, 2, 1])}
    mit |= {f"out/feat{i}": _np(f) for i, f in enumerate(enc.features)}
    mit |= {f"out/attn{i}": _np(a) for i, a in enumerate(enc.attn_logits)}
    _save(d, "mit_forward", mit)
    forward = {
        "in/x": x,
        "meta/backbone": "mit_b1",
        "meta/num_classes": K + 1,
        "out/cls": _np(out.cls_logits),
    }
    forward |= {"out/seg": _np(out.seg_logits), "out/attn_pred": _np(out.aff_pred)}
    forward |= {"out/cam_only_cam": _np(cam_out.cam), "out/cam_only_attn_pred": _np(cam_out.aff_pred)}
    _save(d, "model_forward", forward)

    scales = (1.0, 0.5, 1.5)
    msc = cam.multi_scale_cam(model, x, scales)
    with torch.no_grad():  # the reference keeps both halves of the largest scale's affinity
        x15 = cam.resize(x, (96, 144))
        aff_full = model.forward_cam(torch.cat([x15, cam.hflip(x15)])).aff_pred
    _save(
        d,
        "multi_scale_cam",
        {"in/x": x, "in/scales": np.array(scales), "out/cam": _np(msc.cam), "out/aff_mat": _np(aff_full)}
        | {"out/cam_without_aff": _np(msc.cam)},
    )
    x = _images(gen, 48, 80)
    pred = msc_flip_inference(model.segment, x, (1.0, 0.75), 128)
    _save(
        d,
        "msc_flip_inference",
        {"in/x": x, "in/resize_long": 128, "in/scales": np.array([1.0, 0.75])}
        | {"out/seg": _np(pred.seg), "out/msc_seg": _np(pred.msc_seg)},
    )


def _train_iteration_case(d: Path, model: AFANetwork, gen: torch.Generator) -> None:
    x = _images(gen, 80, 80)
    settings = StepSettings(pseudo=PseudoLabelSettings(radius=RADIUS))
    t = make_targets(model, x, CLS_LABEL, BOX_80, TRAIN_ITER, settings.pseudo)
    with torch.no_grad():
        out = model(x)
        x15 = cam.resize(x, (120, 120))
        aff_full = model.forward_cam(torch.cat([x15, cam.hflip(x15)])).aff_pred
    seg = cam.resize(out.seg_logits, (80, 80))
    terms = {
        "cls": losses.classification_loss(out.cls_logits, CLS_LABEL),
        "seg": losses.segmentation_loss(seg, t.seg_label),
        "aff": losses.affinity_loss(out.aff_pred, t.aff_label),
    }
    weights = phase_weights(TRAIN_ITER, settings)
    arrays = {"in/x": x, "in/cls_label": CLS_LABEL, "in/img_box": BOX_80, "in/n_iter": TRAIN_ITER}
    arrays |= {"in/crop": 80, "in/radius": RADIUS, "meta/backbone": "mit_b1"}
    arrays |= {"out/cam": _np(t.cam), "out/aff_mat": _np(aff_full), "out/pseudo_label": _np(t.pseudo_label)}
    arrays |= {"out/refined_pseudo_label": _np(t.refined_pseudo_label).astype(np.float32)}
    arrays |= {"out/refined_aff_label": _np(t.refined_aff_label), "out/aff_label": _np(t.aff_label)}
    arrays |= {f"out/{k}_loss": _np(v) for k, v in terms.items()}
    arrays["out/loss"] = _np(sum(weights[k] * terms[k] for k in terms))
    _save(d, f"train_iteration_{TRAIN_ITER}", arrays)


def _label_cases(d: Path, gen: torch.Generator) -> None:
    x = _images(gen, 48, 80)
    images01 = cam.denormalize(x)
    _save(d, "denormalize", {"in/x": x, "out/images01": _np(images01)})
    cams = torch.rand(B, K, 48, 80, generator=gen)
    valid, label = cam.cam_to_pseudo_label(cams, CLS_LABEL, BOX_48x80, 0.4, 0.6, 0.3)
    _save(
        d,
        "cam_to_label",
        {"in/cam": cams, "in/cls_label": CLS_LABEL, "in/img_box": BOX_48x80, "in/bkg_score": 0.4}
        | {"in/high_thre": 0.6, "in/low_thre": 0.3, "in/ignore_index": 255, "out/valid_cam": _np(valid)}
        | {"out/pseudo_label_ignore_mid": _np(label)}
        | {"out/pseudo_label_plain": _np(cam.cam_to_label(cams, CLS_LABEL, 0.4))},
    )
    masks = torch.rand(B, 4, 12, 20, generator=gen)
    refined = par.pixel_adaptive_refine(images01, masks, (1, 2, 4), 5)
    _save(
        d,
        "par",
        {"in/images": images01, "in/masks": masks, "in/dilations": np.array([1, 2, 4]), "in/num_iter": 5}
        | {"out/refined": _np(refined)},
    )
    label = refine.refine_cams_with_bkg(images01, cams, CLS_LABEL, BOX_48x80, 0.6, 0.3)
    _save(
        d,
        "refine_cams_with_bkg",
        {"in/images01": images01, "in/cam": cams, "in/cls_label": CLS_LABEL, "in/img_box": BOX_48x80}
        | {"in/high_thre": 0.6, "in/low_thre": 0.3, "out/refined_label": _np(label).astype(np.float32)},
    )
    labels = refine.foreground_with_background(CLS_LABEL)
    rw_cams = torch.rand(B, K + 1, 48, 80, generator=gen)
    refined = refine.refine_cams_with_cls_label(images01, rw_cams, labels, BOX_48x80)
    _save(
        d,
        "refine_cams_with_cls_label",
        {"in/images01": images01, "in/cam": rw_cams, "in/labels": labels, "in/img_box": BOX_48x80}
        | {"out/refined_cam": _np(refined)},
    )


def _grid_cases(d: Path, gen: torch.Generator) -> None:
    masks = {f"out/mask_7x9_r{r}": _np(affinity.radius_mask(7, 9, r)).astype(np.float64) for r in (1, 2, 8)}
    _save(d, "radius_mask", masks)
    mask = affinity.radius_mask(7, 9, 2)
    label = torch.randint(0, 3, (B, 7, 9), generator=gen)
    label[torch.rand(B, 7, 9, generator=gen) < 0.2] = 255
    label = label.repeat_interleave(16, 1).repeat_interleave(16, 2).float()  # (B, 112, 144)
    aff_label = affinity.affinity_labels(label.long(), mask)
    _save(
        d,
        "affinity_label",
        {"in/label": label, "in/mask": _np(mask).astype(np.float64), "out/aff_label": _np(aff_label)},
    )
    pred = torch.rand(B, 63, 63, generator=gen)
    n_pos, n_neg = losses.affinity_pair_counts(aff_label)
    _save(
        d,
        "aff_loss",
        {
            "in/attn_pred": pred,
            "in/aff_label": aff_label,
            "out/loss": _np(losses.affinity_loss(pred, aff_label)),
        }
        | {"out/pos_count": _np(n_pos), "out/neg_count": _np(n_neg)},
    )
    cams = torch.rand(B, K, 7, 9, generator=gen) * CLS_LABEL[:, :, None, None]
    aff = torch.rand(2 * B, 63, 63, generator=gen)
    aff = (aff + aff.transpose(1, 2)) / 2
    arrays = {
        "in/cam": cams,
        "in/aff": aff,
        "in/mask": _np(mask).astype(np.float64),
        "in/cls_label": CLS_LABEL,
    }
    for name, bkg in (("035", 0.35), ("055", 0.55)):
        arrays[f"out/cam_rw_bkg{name}"] = _np(
            affinity.propagate_with_bkg(cams, aff[:B], mask, CLS_LABEL, bkg)
        )
    _save(d, "propagate", arrays)


def _save_scores(d: Path, gts: torch.Tensor, preds: torch.Tensor, num_classes: int) -> None:
    s = scores(list(_np(gts)), list(_np(preds)), num_classes)
    _save(
        d,
        "scores",
        {"in/gts": gts, "in/preds": preds} | {f"out/{k}": s[k] for k in ("pAcc", "mAcc", "miou", "iou")},
    )


def _metric_cases(d: Path, gen: torch.Generator) -> None:
    seg_pred = torch.randn(B, K + 1, 20, 30, generator=gen)
    seg_label = torch.randint(0, K + 1, (B, 20, 30), generator=gen)
    seg_label[:, :4] = 255
    cls_logits = torch.randn(B, K, generator=gen)
    _save(
        d,
        "losses",
        {"in/seg_pred": seg_pred, "in/seg_label": seg_label, "in/cls_logits": cls_logits}
        | {"in/cls_label": CLS_LABEL, "out/seg_loss": _np(losses.segmentation_loss(seg_pred, seg_label))}
        | {"out/cls_loss": _np(losses.classification_loss(cls_logits, CLS_LABEL))},
    )
    gts = torch.randint(0, K + 1, (2, 20, 30), generator=gen)
    gts[:, :, :3] = 255
    preds = torch.randint(0, K + 1, (2, 20, 30), generator=gen)
    _save_scores(d, gts, preds, K + 1)

    lrs, values = poly_warmup_adamw_trajectory(1e-3, 0.05, 3, 10, 1e-6, 0.9, steps=12)  # past max_iter
    _save(
        d,
        "poly_warmup_adamw",
        {"in/base_lr": 1e-3, "in/warmup_iter": 3, "in/max_iter": 10, "in/warmup_ratio": 1e-6, "in/power": 0.9}
        | {
            "in/weight_decay": 0.05,
            "out/lr_per_step": lrs,
            "out/params_per_step": values,
        },
    )

    image = (torch.rand(20, 30, 3, generator=gen) * 255).to(torch.uint8).numpy()
    prob = torch.softmax(torch.randn(4, 20, 30, generator=gen) * 2, dim=0).numpy()
    params_crf = CRFParams(iter_max=5, pos_xy_std=2, pos_w=3, bi_xy_std=30, bi_rgb_std=10, bi_w=4)
    q = dense_crf(image, prob, params_crf)
    crf = {f"in/{k}": v for k, v in vars(params_crf).items()}
    _save(
        d, "dense_crf", crf | {"in/image_uint8": image, "in/prob": prob, "out/q": q, "out/label": q.argmax(0)}
    )


@pytest.fixture(scope="module")
def case_set(tmp_path_factory) -> Path:
    """Write the whole case set once for this module."""
    d = tmp_path_factory.mktemp("mit_b1_cases")
    torch.manual_seed(0)
    model = AFANetwork("mit_b1", num_classes=K + 1, embed_dim=32).eval()
    state = {f"state/{k}": _np(v) for k, v in model.state_dict().items()}
    _save(
        d,
        "model_state",
        state | {"meta/backbone": "mit_b1", "meta/num_classes": K + 1, "meta/stride": [4, 2, 2, 1]},
    )
    gen = torch.Generator().manual_seed(1)
    _network_cases(d, model, gen)
    _train_iteration_case(d, model, gen)
    _label_cases(d, gen)
    _grid_cases(d, gen)
    _metric_cases(d, gen)
    return d


@pytest.fixture(scope="module")
def check_golden():
    """``main(argv) -> exit code`` of scripts/check_golden.py (scripts/ is not a package)."""
    return runpy.run_path(str(CHECKER), run_name="check_golden")["main"]


def statuses(output: str, directory: Path) -> dict[str, str]:
    """{case stem: PASS / FAIL / PENDING} from the checker's per-case lines."""
    stems = {p.stem for p in directory.glob("*.npz")}
    result = {}
    for line in output.splitlines():
        words = line.split()
        if words and words[0] in stems and not line.startswith(" "):
            result[words[0]] = next(w for w in words if w in ("PASS", "FAIL", "PENDING"))
    return result


NETWORK_CASES = "mit_forward model_forward multi_scale_cam msc_flip_inference".split()
STEP_CASES = (
    "denormalize cam_to_label par refine_cams_with_bkg refine_cams_with_cls_label radius_mask".split()
)
OTHER_CASES = "affinity_label aff_loss propagate losses scores poly_warmup_adamw dense_crf".split()
CASE_NAMES = {*NETWORK_CASES, *STEP_CASES, *OTHER_CASES, f"train_iteration_{TRAIN_ITER}"}


def test_checker_passes_a_case_set_with_another_configuration(case_set, check_golden, capsys):
    code = check_golden([str(case_set)])
    out = capsys.readouterr().out
    assert statuses(out, case_set) == dict.fromkeys(CASE_NAMES, "PASS"), out
    assert code == 0, out


def _perturb_float(arrays: dict[str, np.ndarray], key: str) -> None:
    arrays[key] = arrays[key] + np.float32(1e-2)


def _flip_labels(arrays: dict[str, np.ndarray], key: str) -> None:
    """Change 1 % of the pixels inside the box to another label."""
    label = arrays[key].copy()
    inside = np.flatnonzero(label.reshape(-1) != 255)
    picked = np.random.default_rng(0).choice(inside, size=label.size // 100, replace=False)
    flat = label.reshape(-1)
    flat[picked] = (flat[picked] + 1) % (K + 1)
    arrays[key] = label


@pytest.mark.parametrize(
    ("case", "key", "perturb"),
    [
        ("par", "out/refined", _perturb_float),
        (f"train_iteration_{TRAIN_ITER}", "out/refined_pseudo_label", _flip_labels),
    ],
)
def test_checker_flags_exactly_the_perturbed_case(
    case_set, check_golden, capsys, tmp_path, case, key, perturb
):
    directory = tmp_path / "cases"
    shutil.copytree(case_set, directory)
    with np.load(directory / f"{case}.npz") as data:
        arrays = {k: data[k] for k in data.files}
    perturb(arrays, key)
    _save(directory, case, arrays)
    code = check_golden([str(directory)])
    out = capsys.readouterr().out
    expected = dict.fromkeys(CASE_NAMES, "PASS") | {case: "FAIL"}
    assert statuses(out, directory) == expected, out
    assert code == 1
    mismatched = [
        line.split()[0] for line in out.splitlines() if line.startswith("    ") and "MISMATCH" in line
    ]
    assert mismatched == [key[len("out/") :]], out


def test_unknown_case_name_fails(case_set, check_golden, capsys, tmp_path):
    shutil.copy(case_set / "radius_mask.npz", tmp_path / "radius_mask.npz")
    shutil.copy(case_set / "radius_mask.npz", tmp_path / "not_a_case.npz")
    code = check_golden([str(tmp_path)])
    out = capsys.readouterr().out
    assert statuses(out, tmp_path) == {"radius_mask": "PASS", "not_a_case": "FAIL"}, out
    assert "unknown golden case" in out
    assert code == 1


def test_empty_directory_exits_2(tmp_path):
    """Run as a script, as a user would: no case files -> exit status 2 and a message on stderr."""
    proc = subprocess.run(
        [sys.executable, str(CHECKER), str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "no golden cases found" in proc.stderr


def test_nan_in_reference_output_matches_nan(check_golden, capsys, tmp_path):
    """Class K appears in neither map: its IoU is NaN in the reference (0/0) and in ours."""
    gts = torch.tensor([[[0, 0, 1, 1], [2, 2, 255, 255]]])
    preds = torch.tensor([[[0, 1, 1, 1], [2, 0, 2, 2]]])
    _save_scores(tmp_path, gts, preds, 4)
    assert np.isnan(np.load(tmp_path / "scores.npz")["out/iou"][3])
    code = check_golden([str(tmp_path)])
    out = capsys.readouterr().out
    assert statuses(out, tmp_path) == {"scores": "PASS"}, out
    assert code == 0
