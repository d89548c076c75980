"""The pseudo-label export with an MCTformer method: label PNGs, plain ``.npy`` scores, CRF files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from methods.registry import build_method
from utils.config import load_config
from utils.evaluation.pseudo_export import run_export
from utils.evaluation.seed_export import load_seed_scores


def test_run_export_writes_labels_scores_and_crf(tmp_path):
    cfg = load_config(
        None,
        [
            "method=mctformer_v2",
            "backbone.pretrained=false",
            "backbone.dims=[32,2,2]",
            "seeds.crf_alphas=[1,12]",
            "seeds.threshold=0.3",
        ],
    )
    method = build_method(cfg)
    torch.manual_seed(0)
    model = method.build_network(pretrained=False).eval()
    image = torch.randn(1, 3, 40, 56)
    gt = torch.zeros(1, 40, 56, dtype=torch.int64)
    cls_label = torch.zeros(1, 20)
    cls_label[0, [3, 7]] = 1.0
    loader = [{"image": image, "label": gt, "cls_label": cls_label, "name": ["img"]}]
    hists, counts = run_export(method, model, loader, tmp_path, show=False)
    label = np.array(Image.open(tmp_path / "seed" / "img.png"))
    keys, maps = load_seed_scores(tmp_path, "img")
    assert keys.tolist() == [3, 7] and maps.shape == (2, 40, 56)
    scores = np.concatenate([np.full((1, 40, 56), 0.3, np.float32), maps])
    np.testing.assert_array_equal(label, np.array([0, 4, 8])[scores.argmax(0)])  # ties to background
    assert int(hists["seed"].sum()) == 40 * 56 and int(counts[-1]) == 1
    for alpha in (1, 12):
        assert np.load(tmp_path / f"crf_{alpha}" / "img.npy", allow_pickle=False).shape == (3, 40, 56)
    assert method.pseudo_label_report()["seeds"]["crf_alphas"] == [1, 12]


@pytest.mark.parametrize("explicit", [[], ["--explicit-attention"]])
def test_seeds_benchmark_times_the_export_path(explicit):
    from scripts.benchmark import build_parser
    from utils.bench.harness import SUBCOMMANDS

    args = build_parser().parse_args(
        ["seeds", "--method", "mctformer_v2", "--backbone", "deit_tiny", "--crop", "48", "--batch", "2"]
        + ["--iters", "1", "--warmup", "0", *explicit]
    )
    res = SUBCOMMANDS["seeds"].run(args)
    assert res["image_size"] == [36, 48] and len(res["times"]) == 1
    assert res["images_per_sec"] == pytest.approx(2 / res["sec_per_iter"])
    assert res["settings"]["backbone"] == "deit_tiny"


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_stacked_reference_forward_equals_the_per_block_map_forward(version):
    """The benchmark's stand-in for the authors' map forward (stack of per-head weights, then the head
    mean) gives our forward_attention's values (head mean per block)."""
    from model.mctformer import MCTformer
    from utils.bench.runs import stacked_attention_forward

    torch.manual_seed(0)
    model = MCTformer(version, 3, embed_dim=32, depth=3, num_heads=2, img_size=48).eval()
    x = torch.randn(2, 3, 32, 48)
    for kind in ("fused", "patchcam", "mct"):
        ours, ref = model.forward_attention(x, 2, kind), stacked_attention_forward(model, x, 2, kind)
        assert ref.cams.shape == (2, 3, 2, 3) and ref.patch_attn.shape == (3, 2, 6, 6)
        for field in ("cls_logits", "patch_logits", "cams", "patch_attn"):
            a, b = getattr(ours, field), getattr(ref, field)
            assert (a is None) == (b is None) == (version == "v1" and field == "patch_logits")
            if a is not None:
                torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7, msg=f"{kind} {field}")
