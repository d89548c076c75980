"""Files of a score export (``Method.pseudo_scores``; MCTformer seeds, spec §6), no pickles anywhere.

Per image ``<id>`` under the export folder:

- ``seed_scores/<id>.npy``: float32 (k, H, W), the maps of the present classes in [0, 1];
- ``seed_keys/<id>.npy``: int64 (k,), their 0-based foreground class (row r is class keys[r]);
- ``crf_<α>/<id>.npy``: float32 (1 + k, H, W) CRF marginals, row 0 the background, row r ≥ 1 class
  keys[r − 1] (the authors' dict key keys + 1), for each α of ``crf_alphas`` (spec §4.5);
- ``overlay/<id>_<class>.png``: a JET heat map over the image per present class (optional).

``load_seed_scores`` reads the first two back (``np.load`` without ``allow_pickle``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from torch import Tensor

from figures.visual import overlay_heatmap
from methods.base import PseudoScores
from utils.evaluation.seed_crf import crf_seed_scores, rebuild_image

SCORES_DIR, KEYS_DIR, OVERLAY_DIR = "seed_scores", "seed_keys", "overlay"


def _save(path: Path, array: np.ndarray) -> None:
    """``np.save`` into a created folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array, allow_pickle=False)


def write_seed_files(out_dir: Path, name: str, image: Tensor, scored: PseudoScores) -> None:
    """Write one image's score files (module docstring).

    Args:
        image: (1, 3, H, W) the normalised image (rebuilt for the CRF and the overlays).
    """
    keys = scored.keys.detach().cpu().numpy().astype(np.int64)
    maps = scored.scores.detach().float().cpu().numpy()
    _save(out_dir / SCORES_DIR / f"{name}.npy", maps.astype(np.float32))
    _save(out_dir / KEYS_DIR / f"{name}.npy", keys)
    rgb = rebuild_image(image[0]) if scored.crf_alphas or scored.overlays else None
    for alpha in scored.crf_alphas:
        _, prob = crf_seed_scores(rgb, scored.keys.cpu(), scored.scores.float().cpu(), alpha)
        _save(out_dir / f"crf_{alpha}" / f"{name}.npy", prob.astype(np.float32))
    if scored.overlays:
        (out_dir / OVERLAY_DIR).mkdir(parents=True, exist_ok=True)
        for key, values in zip(keys, maps):
            Image.fromarray(overlay_heatmap(rgb, values)).save(out_dir / OVERLAY_DIR / f"{name}_{key}.png")


def load_seed_scores(seed_dir: str | Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """keys (k,) int64 and maps (k, H, W) float32 of ``name`` from an export folder (or its
    ``seed_scores`` subfolder)."""
    root = Path(seed_dir)
    if root.name == SCORES_DIR:
        root = root.parent
    keys = np.load(root / KEYS_DIR / f"{name}.npy", allow_pickle=False)
    maps = np.load(root / SCORES_DIR / f"{name}.npy", allow_pickle=False)
    return keys, maps
