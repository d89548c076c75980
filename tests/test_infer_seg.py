"""infer_seg.py / utils.evaluation.infer: golden parity, masks and reports on demo and COCO data, folders."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from common.errors import DataError
from datasets.demo import write_demo_dataset
from datasets.io import read_label
from datasets.transforms import normalize, to_chw
from methods.registry import build_method
from model.inference import smallest_inference_side
from model.mit import build_mit
from model.weights import build_from_golden_state
from utils.config import load_config
from utils.evaluation.crf import CRFParams
from utils.evaluation.infer import (
    CRFJob,
    InferSettings,
    check_image_size,
    crf_probabilities,
    infer,
    predict_image,
    run_crf_job,
)
from utils.evaluation.inputs import build_split_dataset, list_images, load_model, to_uint8_image, unique_names
from utils.evaluation.metrics import confusion_matrix
from utils.evaluation.report import format_table, scores_report

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden"
COCO_MINI = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "coco_mini"
NUM_CLASSES = 5


pytestmark = pytest.mark.usefixtures("one_thread")


def overrides(root: Path, work: Path, **extra) -> list[str]:
    items = {
        "dataset.root_dir": root,
        "dataset.name_list_dir": root,
        "dataset.num_workers": 0,
        "infer.resize_long": 96,
        "work_dir.dir": work,
        "device": "cpu",
    }
    items.update(extra)
    return [f"{k}={v}" for k, v in items.items()]


def save_random_checkpoint(path: Path, num_classes: int) -> Path:
    cfg = load_config(
        REPO / "configs/demo.yaml", ["backbone.pretrained=false", f"dataset.num_classes={num_classes}"]
    )
    torch.manual_seed(0)
    torch.save({"model": build_method(cfg).build_network().state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    write_demo_dataset(root, num_train=2, num_val=3, seed=5)
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt", NUM_CLASSES)


def check_masks(out: Path, images: dict[str, tuple[int, int]], num_classes: int) -> None:
    """One uint8 mask and one palette mask per image, of the image's (H, W), values in [0, C)."""
    assert sorted(p.stem for p in (out / "prediction").glob("*.png")) == sorted(images)
    for name, size in images.items():
        mask = Image.open(out / "prediction" / f"{name}.png")
        assert mask.mode == "L" and mask.size[::-1] == size
        assert np.asarray(mask).max() < num_classes
        cmap = Image.open(out / "prediction_cmap" / f"{name}.png")
        assert cmap.mode == "P" and cmap.size[::-1] == size
        np.testing.assert_array_equal(np.asarray(cmap), np.asarray(mask))


def split_sizes(root: Path, split: str) -> dict[str, tuple[int, int]]:
    names = (root / f"{split}.txt").read_text().split()
    return {n: Image.open(root / "JPEGImages" / f"{n}.jpg").size[::-1] for n in names}


# --------------------------------------------------------------------------- golden parity


def test_golden_msc_flip_inference_through_predict_image():
    case = np.load(GOLDEN / "msc_flip_inference.npz")
    model = build_from_golden_state(GOLDEN / "model_state.npz")
    x = torch.from_numpy(case["in/x"])
    pred = predict_image(model.segment, x, tuple(case["in/scales"].tolist()), int(case["in/resize_long"]))
    np.testing.assert_allclose(pred.logits.seg.numpy(), case["out/seg"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(pred.logits.msc_seg.numpy(), case["out/msc_seg"], rtol=1e-4, atol=1e-5)
    assert pred.multi_scale.shape == x.shape[-2:]


def test_golden_dense_crf_through_the_crf_stage(tmp_path):
    """The golden probabilities enter as logits log(p) at full size: upsampling is then the identity and
    the softmax returns p, so the worker's whole path (upsample, softmax, CRF, argmax, write) is checked."""
    case = np.load(GOLDEN / "dense_crf.npz")
    keys = ("iter_max", "pos_xy_std", "pos_w", "bi_xy_std", "bi_rgb_std", "bi_w")
    params = CRFParams(**{k: case[f"in/{k}"].item() for k in keys})
    assert params == CRFParams()  # the authors' parameters are our defaults
    image, logits = case["in/image_uint8"], np.log(case["in/prob"])
    np.testing.assert_allclose(crf_probabilities(image, logits, params), case["out/q"], rtol=1e-3, atol=1e-5)
    label = run_crf_job(CRFJob("golden", image, logits, str(tmp_path)), params)
    assert (label == case["out/label"]).mean() >= 0.999
    np.testing.assert_array_equal(read_label(tmp_path / "prediction" / "golden.png"), label)


def test_to_uint8_image_inverts_normalize_exactly():
    values = np.arange(256, dtype=np.uint8)
    image = np.stack([values, values[::-1], np.roll(values, 7)], axis=-1)[None].repeat(
        3, axis=0
    )  # (3, 256, 3)
    x = torch.from_numpy(to_chw(normalize(image)))[None]
    np.testing.assert_array_equal(to_uint8_image(x), image)


# --------------------------------------------------------------------------- splits


def test_cli_on_demo_split_writes_masks_and_report(demo_root, checkpoint, tmp_path, subprocess_env):
    out = tmp_path / "out"
    command = [
        sys.executable,
        "infer_seg.py",
        "--config",
        "configs/demo.yaml",
        "--checkpoint",
        str(checkpoint),
    ]
    command += ["--split", "val", "--out", str(out), *overrides(demo_root, tmp_path)]
    result = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=120, env=subprocess_env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "multi_scale" in result.stdout and "miou" in result.stdout
    check_masks(out, split_sizes(demo_root, "val"), NUM_CLASSES)
    report = json.loads((out / "report.json").read_text())
    assert report["num_images"] == 3 and report["has_labels"] and report["crf"] is None
    assert report["scales"] == [1.0, 0.5, 0.75] and report["resize_long"] == 96
    assert set(report["scores"]) == {"single_scale", "multi_scale"}
    for scores in report["scores"].values():
        assert 0 <= scores["miou"] <= 100 and set(scores["iou"]) == {
            "background",
            "disc",
            "square",
            "triangle",
            "cross",
        }


def test_crf_runs_through_the_worker_pool(demo_root, checkpoint, tmp_path):
    extra = {"infer.crf": "true", "infer.max_images": 2, "infer.crf_workers": 2}
    cfg = load_config(REPO / "configs/demo.yaml", overrides(demo_root, tmp_path, **extra))
    report = infer(cfg, checkpoint, tmp_path / "crf")
    assert report["num_images"] == 2 and report["crf"]["bi_xy_std"] == 64
    assert set(report["scores"]) == {"single_scale", "multi_scale", "multi_scale_crf"}
    sizes = split_sizes(demo_root, "val")
    first = sorted(sizes)[0]
    check_masks(tmp_path / "crf", {n: sizes[n] for n in sorted(sizes)[:2]}, NUM_CLASSES)
    # the pool's mask is the CRF of this process's own multi-scale logits
    dataset, _ = build_split_dataset(cfg, "val")
    item = dataset[dataset.names.index(first)]
    model = load_model(build_method(cfg), checkpoint, torch.device("cpu"))
    pred = predict_image(model.segment, item["image"][None], (1.0, 0.5, 0.75), 96)
    q = crf_probabilities(to_uint8_image(item["image"][None]), pred.logits.msc_seg[0].numpy())
    np.testing.assert_array_equal(read_label(tmp_path / "crf" / "prediction" / f"{first}.png"), q.argmax(0))


def test_ground_truth_against_itself_scores_100(demo_root):
    cfg = load_config(REPO / "configs/demo.yaml", overrides(demo_root, demo_root))
    dataset, has_labels = build_split_dataset(cfg, "val")
    assert has_labels
    hist = sum(confusion_matrix(item["label"], item["label"], NUM_CLASSES) for item in dataset)
    names = ["background", "disc", "square", "triangle", "cross"]
    scores = scores_report({"multi_scale": hist}, names)["multi_scale"]
    assert scores["miou"] == pytest.approx(100.0) and scores["pAcc"] == pytest.approx(100.0)
    present = [n for n, v in scores["iou"].items() if v is not None]
    assert present and all(scores["iou"][n] == pytest.approx(100.0) for n in present)
    assert "100.00" in format_table({"multi_scale": scores}, names)


def test_test_split_without_masks(demo_root, checkpoint, tmp_path):
    root = tmp_path / "voc_test"
    shutil.copytree(demo_root / "JPEGImages", root / "JPEGImages")
    (root / "test.txt").write_text((demo_root / "val.txt").read_text())
    cfg = load_config(REPO / "configs/demo.yaml", overrides(root, tmp_path, **{"infer.split": "test"}))
    report = infer(cfg, checkpoint)
    assert report["has_labels"] is False and report["scores"] is None and report["num_images"] == 3
    check_masks(tmp_path / "test", split_sizes(demo_root, "val"), NUM_CLASSES)  # default out: work_dir/split
    assert json.loads((tmp_path / "test" / "report.json").read_text())["scores"] is None
    shutil.copytree(demo_root / "SegmentationClassAug", root / "SegmentationClassAug")
    next((root / "SegmentationClassAug").glob("*.png")).unlink()
    with pytest.raises(FileNotFoundError, match="1 of 3 masks missing"):
        build_split_dataset(cfg, "test")


# --------------------------------------------------------------------------- image folders, checkpoints


def test_images_folder_of_mixed_files(checkpoint, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(folder / "rgb.jpg", quality=90)
    Image.fromarray(rng.integers(0, 256, (90, 60, 3), dtype=np.uint8)).save(folder / "rgb.png")
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(folder / "grey.png")
    Image.fromarray(rng.integers(0, 256, (45, 77, 4), dtype=np.uint8), mode="RGBA").save(folder / "alpha.png")
    (folder / "notes.txt").write_text("not an image")
    sizes = {"rgb_jpg": (50, 70), "rgb_png": (90, 60), "grey": (64, 64), "alpha": (45, 77)}
    cfg = load_config(REPO / "configs/demo.yaml", overrides(tmp_path, tmp_path, **{"infer.resize_long": 128}))
    report = infer(cfg, checkpoint, images=folder)
    out = tmp_path / "images"  # default out: work_dir/images
    assert report["num_images"] == 4 and report["scores"] is None and report["split"] is None
    check_masks(out, sizes, NUM_CLASSES)
    for name, (h, w) in sizes.items():
        assert Image.open(out / "overlay" / f"{name}.png").size == (2 * w + 4, h)


def test_image_list_file_and_names(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("a.jpg", "a.png", "b.bmp"):
        Image.new("RGB", (8, 6)).save(tmp_path / "sub" / name)
    (tmp_path / "list.txt").write_text("# my images\nsub/a.png\n\nsub/b.bmp\n")
    assert list_images(tmp_path / "list.txt") == [tmp_path / "sub" / "a.png", tmp_path / "sub" / "b.bmp"]
    paths = list_images(tmp_path / "sub")
    assert unique_names(paths) == ["a_jpg", "a_png", "b"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        list_images(tmp_path / "empty")


def test_authors_module_prefixed_checkpoint_loads(checkpoint, tmp_path):
    state = torch.load(checkpoint, weights_only=True)["model"]
    authors = tmp_path / "wetr_iter_18000.pth"
    torch.save({f"module.{k}": v for k, v in state.items()}, authors)
    cfg = load_config(REPO / "configs/demo.yaml", ["device=cpu"])
    ours, theirs = (load_model(build_method(cfg), p, torch.device("cpu")) for p in (checkpoint, authors))
    assert not theirs.training
    x = torch.randn(1, 3, 40, 56)
    torch.testing.assert_close(
        predict_image(ours.segment, x, (1.0, 0.5), 96).logits.msc_seg,
        predict_image(theirs.segment, x, (1.0, 0.5), 96).logits.msc_seg,
    )


# --------------------------------------------------------------------------- real images (COCO, VOC layout)


@pytest.mark.skipif(not COCO_MINI.is_dir(), reason=f"real COCO subset not found: {COCO_MINI}")
@pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")
def test_coco_mini_in_voc_layout(tmp_path):
    from datasets.convert_coco import convert_coco

    data = json.loads((COCO_MINI / "annotations" / "instances_val2017.json").read_text())
    keep = sorted(data["images"], key=lambda i: i["file_name"])[:4]
    ids = {i["id"] for i in keep}
    subset = {**data, "images": keep, "annotations": [a for a in data["annotations"] if a["image_id"] in ids]}
    (tmp_path / "instances_val2017.json").write_text(json.dumps(subset))
    root = tmp_path / "coco_voc"
    convert_coco(tmp_path / "instances_val2017.json", COCO_MINI / "val2017", root, voc_classes=True)
    checkpoint = save_random_checkpoint(tmp_path / "voc21.pt", 21)
    extra = {"dataset.num_classes": 21, "infer.split": "val2017"}
    cfg = load_config(REPO / "configs/demo.yaml", overrides(root, tmp_path, **extra))
    report = infer(cfg, checkpoint, tmp_path / "out")
    sizes = {Path(i["file_name"]).stem: (i["height"], i["width"]) for i in keep}
    check_masks(tmp_path / "out", sizes, 21)
    assert report["num_images"] == 4 and report["has_labels"]
    assert 0 <= report["scores"]["multi_scale"]["miou"] <= 100
    assert len(report["scores"]["multi_scale"]["iou"]) == 21


@pytest.mark.parametrize("strides", [(4, 2, 1, 1), (4, 2, 2, 1)])
def test_min_input_side_is_the_smallest_side_the_encoder_takes(strides):
    """At min_input_side the encoder runs; one pixel less fails in a spatial-reduction convolution."""
    encoder = build_mit("mit_tiny", strides).eval()
    side = encoder.min_input_side()
    assert side == 29  # the stage-1 grid (stride 4) must reach its 8 × 8 reduction window
    with torch.no_grad():
        encoder(torch.randn(1, 3, side, side + 5), ())
        with pytest.raises(RuntimeError, match="Kernel size can't be greater"):
            encoder(torch.randn(1, 3, side - 1, side + 5), ())


def test_too_small_resize_long_names_the_image_and_the_key():
    s = InferSettings(num_classes=5, scales=(1.0, 0.5), resize_long=40)
    with pytest.raises(DataError, match=r"image a \(186×216\) gives a 17 px side") as info:
        check_image_size("a", (186, 216), s, 29)
    assert "infer.resize_long (≥ 69)" in info.value.hint
    check_image_size("a", (186, 216), InferSettings(num_classes=5, scales=(1.0, 0.5), resize_long=69), 29)
    assert smallest_inference_side((186, 216), (1.0, 0.5), 69) == 29
