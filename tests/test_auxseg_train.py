"""AuxSegNet training pieces: the optimiser option, the poly schedule, the data pipeline and its dataset,
the method's config errors (the golden cases ``auxseg_poly_sgd`` / ``auxseg_data_pipeline`` /
``auxseg_train_step`` pin the numbers; these pin the options and the invariants)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from runs import write_auxseg_demo

from common.errors import ConfigError, MissingFileError
from datasets.auxseg import AuxSegDataset, auxseg_transform, crop_offset
from methods.auxsegnet import AuxSegNetMethod
from methods.auxsegnet_config import AuxSegConfig
from methods.registry import build_method
from model.auxsegnet import AuxSegNet
from utils.config import validate

pytestmark = pytest.mark.usefixtures("one_thread")


def method_of(**keys) -> AuxSegNetMethod:
    """The method of the default config with dotted ``keys`` replaced."""
    cfg = OmegaConf.structured(AuxSegConfig)
    for key, value in keys.items():
        OmegaConf.update(cfg, key.replace("__", "."), value)
    return build_method(cfg)


def tiny_heads() -> AuxSegNet:
    return AuxSegNet(num_classes=5, backbone=None, feat_channels=8, mid=4)


@pytest.mark.parametrize("quirk", [False, True])
def test_sgd_intended_by_default_and_released_as_an_option(quirk):
    method = method_of(optim__sgd_positional_quirk=quirk)
    model = tiny_heads()
    optimizer, _ = method.configure_optimizers(model)
    one_x, ten_x = optimizer.param_groups
    assert (one_x["momentum"], one_x["weight_decay"]) == ((1e-5, 0.0) if quirk else (0.9, 1e-5))
    assert one_x["lr"] == pytest.approx(7e-4) and ten_x["lr"] == pytest.approx(7e-3)
    assert {id(p) for p in one_x["params"]} == {id(p) for p in model.cross_att.parameters()}  # spec §11.3
    assert len(one_x["params"]) + len(ten_x["params"]) == len(list(model.parameters()))


def test_intended_sgd_uses_momentum_and_decay():
    """One step by hand: buf = g + wd·p; two steps: buf = 0.9·buf + g₂ + wd·p₁."""
    method = method_of(optim__learning_rate=0.1, train__max_iters=1000)
    model = tiny_heads()
    optimizer, scheduler = method.configure_optimizers(model)
    p = model.fc8.weight
    p0 = p.detach().clone()
    grads = [torch.full_like(p, 1.0), torch.full_like(p, -2.0)]
    for g in grads:
        optimizer.zero_grad()
        p.grad = g.clone()
        optimizer.step()
        scheduler.step()
    lr0, lr1 = 1.0, 1.0 * (1 - 1 / 999) ** 0.9  # fc8 is in the 10× group
    buf0 = grads[0] + 1e-5 * p0
    p1 = p0 - lr0 * buf0
    buf1 = 0.9 * buf0 + grads[1] + 1e-5 * p1
    torch.testing.assert_close(p.detach(), p1 - lr1 * buf1)


def test_poly_schedule_keeps_its_last_value_past_t():
    """T = max_iters − 1 (the authors' T + 1 iterations): lr(T) = lr(T − 1), lr(t) = lr₀(1 − t/T)^0.9."""
    method = method_of(train__max_iters=5)
    optimizer, scheduler = method.configure_optimizers(tiny_heads())
    lrs = []
    for _ in range(5):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [7e-4 * (1 - t / 4) ** 0.9 for t in range(4)]
    np.testing.assert_allclose(lrs, expected + [expected[-1]], rtol=1e-12)


def test_adamw_option_keeps_the_groups_and_the_poly_schedule():
    """``optim.kind: adamw`` (the demo's): AdamW over the same two groups, lr₀ and 10·lr₀, poly decay."""
    method = method_of(optim__kind="adamw", optim__learning_rate=1e-3, train__max_iters=5)
    model = tiny_heads()
    optimizer, scheduler = method.configure_optimizers(model)
    assert isinstance(optimizer, torch.optim.AdamW)
    one_x, ten_x = optimizer.param_groups
    assert {id(p) for p in one_x["params"]} == {id(p) for p in model.cross_att.parameters()}
    assert one_x["weight_decay"] == pytest.approx(1e-5)
    lrs = []
    for _ in range(3):
        lrs.append((one_x["lr"], ten_x["lr"]))
        optimizer.step()
        scheduler.step()
    decay = [(1 - t / 4) ** 0.9 for t in range(3)]
    np.testing.assert_allclose(lrs, [(1e-3 * f, 1e-2 * f) for f in decay])


def test_transform_pads_top_left_with_background_or_ignore_and_binarises_saliency():
    image = np.full((3, 5, 3), 200, np.uint8)
    sal = np.array([[0.4, 0.6, 0.5, 0.51, 1.0]] * 3)
    seg = np.full((3, 5), 2, np.uint8)
    for pad in (0, 255):
        out = auxseg_transform(image, sal, seg, 1.0, 0.0, (0, 0), 6, seg_pad_value=pad)
        assert (
            out.image.shape == (3, 6, 6)
            and (out.image[:, 3:] == 0).all()
            and (out.image[:, :, 5:] == 0).all()
        )
        assert (out.seg[:3, :5] == 2).all() and (out.seg[3:] == pad).all() and (out.seg[:, 5:] == pad).all()
        np.testing.assert_array_equal(out.sal[0, :5], [0, 1, 0, 1, 1])  # > 0.5, strictly
        assert set(np.unique(out.sal)) <= {0, 1} and (out.sal[3:] == 0).all()
    flipped = auxseg_transform(image, sal, seg, 1.0, 0.51, (0, 0), 6)
    np.testing.assert_array_equal(flipped.sal[0, :5], [1, 1, 0, 1, 0])
    assert crop_offset(10, 6, 0.99) == 3 and crop_offset(6, 6, 0.99) == 0 and crop_offset(4, 6, 0.5) == 0


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """Four demo images with saliency maps from their masks and segmentation labels = the masks."""
    return write_auxseg_demo(tmp_path_factory.mktemp("auxseg_data"), seed=3)


def test_dataset_items_are_pure_functions_of_their_seed(demo):
    ds = AuxSegDataset(demo, demo, "train", demo / "seg", demo / "sal", crop_size=64, num_classes=5)
    a, b, c = ds[(1, 7)], ds[(1, 7)], ds[(1, 8)]
    assert a["image"].shape == (3, 64, 64) and a["seg_label"].shape == a["sal_label"].shape == (64, 64)
    assert a["seg_label"].dtype == torch.int64 and set(a["sal_label"].unique().tolist()) <= {0.0, 1.0}
    for key in ("image", "seg_label", "sal_label"):
        assert torch.equal(a[key], b[key])
    assert not torch.equal(a["image"], c["image"])
    fg = (a["seg_label"] > 0) & (a["seg_label"] < 255)  # saliency made from the mask: they agree
    assert (a["sal_label"][fg] == 1).float().mean() > 0.95


def test_dataset_names_a_missing_label(demo, tmp_path):
    ds = AuxSegDataset(demo, demo, "train", tmp_path, demo / "sal", crop_size=64, num_classes=5)
    with pytest.raises(MissingFileError, match=f"segmentation pseudo label missing: {tmp_path}"):
        ds[(0, 1)]


def test_method_refuses_a_round_without_labels_or_saliency(demo):
    base = {"dataset__root_dir": str(demo), "dataset__name_list_dir": str(demo), "train__split": "train"}
    with pytest.raises(ConfigError, match="auxseg.seg_label_dir is not set"):
        method_of(**base, dataset__saliency_dir=str(demo / "sal")).build_train_dataset()
    with pytest.raises(ConfigError, match="dataset.saliency_dir is not set"):
        method_of(**base, auxseg__seg_label_dir=str(demo / "seg")).build_train_dataset()
    cls_only = method_of(**base, dataset__saliency_dir=str(demo / "sal"), loss__seg=0.0).build_train_dataset()
    assert (cls_only[(0, 1)]["seg_label"] == 0).all()  # classification-only pre-training: no labels


def test_config_rejects_unknown_variant_saliency_source_and_optimiser():
    for key, value, message in (
        ("auxseg.variant", "plus", "auxseg.variant"),
        ("dataset.saliency_source", "dss", "dataset.saliency_source"),
        ("optim.kind", "adam", "optim.kind"),
    ):
        cfg = OmegaConf.structured(AuxSegConfig)
        OmegaConf.update(cfg, key, value)
        with pytest.raises(ConfigError, match=message):
            validate(cfg)


def test_validation_segment_and_pseudo_labels_of_the_method():
    """On the heads alone (the input is the feature): maps at the input's size, the refined logits, and
    the fusion rule's labels (absent classes never appear)."""
    method, model = method_of(dataset__num_classes=5), tiny_heads().eval()
    torch.manual_seed(0)
    feat = torch.rand(1, 8, 6, 5)
    with torch.no_grad():
        val = method.validation_step(model, feat, torch.tensor([[1.0, 0, 0, 1]]))
        seg = method.segment(model, feat)
        labels = method.pseudo_labels(model, feat, torch.tensor([[0.0, 1, 0, 0]]))
    assert val.maps["seg"].shape == (1, 6, 5) and val.cls_logits.shape == (1, 4)
    torch.testing.assert_close(seg, model(feat).refined_seg)
    assert labels["seg"].shape == (6, 5) and set(labels["seg"].unique().tolist()) <= {0, 2, 255}
