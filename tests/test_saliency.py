"""Saliency maps: reading ``dataset.saliency_dir`` (missing, mismatched, round trip) and the U²-Net-p runner
(``model/auxseg_saliency.py``) on a tiny ONNX model exported here, and on the real file when fetched."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from common.errors import DataError, MissingFileError
from datasets.saliency import SaliencyReader, read_saliency_u8, write_saliency_png
from model.auxseg_saliency import (
    U2NETP_PATH,
    U2NETP_SHA256,
    U2NetpSaliency,
    open_session,
    postprocess,
    preprocess,
    sha256_of,
)

pytestmark = pytest.mark.usefixtures("one_thread")


class MeanSigmoid(torch.nn.Module):
    """(1, 3, S, S) -> ((1, 1, S, S) sigmoid of the channel sum, the same ×0.5): U²-Net-p's interface."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first = torch.sigmoid(x.sum(dim=1, keepdim=True))
        return first, first * 0.5


def tiny_onnx_session(size: int = 16):
    """An onnxruntime session of ``MeanSigmoid`` with a fixed (1, 3, size, size) input."""
    import onnxruntime as ort

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(MeanSigmoid(), (torch.zeros(1, 3, size, size),), buffer, dynamo=False)
    return ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])


def test_saliency_png_round_trip_is_greyscale_and_exact(tmp_path):
    sal = np.random.default_rng(0).random((7, 9))
    u8 = (255 * sal).astype(np.uint8)
    write_saliency_png(tmp_path / "a.png", u8)
    with Image.open(tmp_path / "a.png") as image:
        assert image.mode == "L"  # not the authors' palette PNG without a palette (spec §11 item 10)
    back = SaliencyReader(tmp_path).read("a", (7, 9))
    np.testing.assert_array_equal(back, u8 / 255.0)


def test_a_missing_map_is_named(tmp_path):
    write_saliency_png(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(MissingFileError, match=str(tmp_path / "b.png")):
        SaliencyReader(tmp_path).read("b", (4, 4))
    with pytest.raises(MissingFileError, match="saliency folder not found"):
        SaliencyReader(tmp_path / "nope").read("a", (4, 4))


def test_a_map_of_another_size_is_resized_with_one_warning_or_refused(tmp_path):
    write_saliency_png(tmp_path / "a.png", np.full((4, 6), 200, np.uint8))
    write_saliency_png(tmp_path / "b.png", np.full((4, 6), 100, np.uint8))
    with pytest.raises(DataError, match=r"a.png is 6x4, its image 12x8"):
        SaliencyReader(tmp_path, "refuse").read("a", (8, 12))
    reader = SaliencyReader(tmp_path, "resize")
    with pytest.warns(UserWarning, match="resized"):
        a = reader.read_u8("a", (8, 12))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one warning per folder
        b = reader.read_u8("b", (8, 12))
    assert a.shape == b.shape == (8, 12) and (a == 200).all() and (b == 100).all()


def test_a_palette_png_is_refused_with_a_hint(tmp_path):
    Image.fromarray(np.zeros((3, 3), np.uint8), mode="P").save(tmp_path / "p.png")
    with pytest.raises(DataError, match="expected an 8-bit greyscale PNG"):
        read_saliency_u8(tmp_path / "p.png")


def test_preprocess_divides_by_the_image_maximum_then_imagenet_statistics():
    image = np.zeros((5, 7, 3), np.uint8)
    image[..., 0] = 100  # constant: LANCZOS keeps it, the maximum is 100
    x = preprocess(image, size=4)
    assert x.shape == (3, 4, 4) and x.dtype == np.float32
    np.testing.assert_allclose(x[0], (1.0 - 0.485) / 0.229, rtol=1e-6)
    np.testing.assert_allclose(x[1], (0.0 - 0.456) / 0.224, rtol=1e-6)


def test_postprocess_min_max_normalises_truncates_and_resizes():
    pred = np.array([[0.2, 0.3], [0.4, 0.6]], np.float32)
    out = postprocess(pred, (2, 2))
    np.testing.assert_array_equal(out, [[0, 63], [127, 255]])  # (p − 0.2)/0.4 · 255 (float32), truncated
    assert postprocess(pred, (5, 3)).shape == (5, 3)


def test_runner_on_a_tiny_onnx_model_matches_the_formula():
    model = U2NetpSaliency(tiny_onnx_session(16))
    assert model.size == 16 and model.chunk == 1  # the fixed batch of 1, like U²-Net-p's file
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((20, 30), (9, 17), (16, 16))]
    maps = model.predict(images)
    for image, sal in zip(images, maps, strict=True):
        x = preprocess(image, 16)
        expected = postprocess(1 / (1 + np.exp(-x.sum(axis=0))), image.shape[:2])
        assert sal.shape == image.shape[:2] and sal.dtype == np.uint8
        assert np.abs(sal.astype(int) - expected).max() <= 1  # float32 sigmoid in ONNX vs float64 here


def test_open_session_refuses_a_missing_or_foreign_file(tmp_path):
    with pytest.raises(MissingFileError, match="U²-Net-p model not found") as err:
        open_session(tmp_path / "none.onnx")
    assert "fetch_u2netp.sh" in err.value.hint
    (tmp_path / "other.onnx").write_bytes(b"not the model")
    with pytest.raises(MissingFileError, match="sha256 differs"):
        open_session(tmp_path / "other.onnx")


@pytest.mark.skipif(
    not Path(U2NETP_PATH).is_file(), reason="pretrained/u2netp.onnx not fetched (scripts/fetch_u2netp.sh)"
)
def test_real_u2netp_finds_an_ellipse_on_a_noisy_background():
    assert sha256_of(U2NETP_PATH) == U2NETP_SHA256
    rng = np.random.default_rng(0)
    h, w = 120, 160
    yy, xx = np.mgrid[:h, :w]
    inside = ((yy - 60) / 35) ** 2 + ((xx - 80) / 50) ** 2 <= 1
    image = rng.integers(90, 130, (h, w, 3)).astype(np.uint8)
    image[inside] = (220, 40, 40)
    (sal,) = U2NetpSaliency(open_session(U2NETP_PATH, threads=1)).predict([image])
    found = sal > 127
    iou = (found & inside).sum() / (found | inside).sum()
    assert iou > 0.9, iou
