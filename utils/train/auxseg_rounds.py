"""AuxSegNet's iterative rounds (spec §5), behind ``scripts/auxseg_rounds.py``.

The README procedure of the authors, with the semantics their (broken) ``main.py`` intends:

- **init** (round-0 labels, spec §4.4, our choice): the segmentation labels of round 0 come from
  ``auxseg.init_seg_label_dir`` if given; otherwise from the CAMs of a classification network (ReLU,
  max-normalised, single scale, no propagation) fused with the off-the-shelf saliency by the rule of
  §4.2. That network is a classification-only pre-training of ``auxseg.init_cls_iters`` iterations
  (saliency and segmentation losses weighted 0) when > 0, else the initial network itself (the
  authors' classification ResNet38 through ``backbone.pretrained_path``). The round-0 saliency labels
  are the off-the-shelf maps (``dataset.saliency_dir``).
- **round s** trains ``train.max_iters`` iterations on its labels, from round s − 1's last weights
  (round 0: from the classification pre-training when there is one), with a fresh optimiser and
  schedule; then, unless it is the last round, its model writes round s + 1's labels: the refined CAM
  (one product with A_CT) and the saliency update (average of the network's refined saliency with the
  original map, one-iteration dense CRF), as greyscale 'L' PNGs for the saliency (spec §11 item 10).

Layout under ``work_dir.dir``: ``init_cls/`` (a training run), ``round_<s>/`` (a training run) with
``labels/seg`` and ``labels/sal`` (round s's labels, s ≥ 1; round 0's in ``round_0/labels/seg``) and
``round_state.json`` (``{"labels": true, "trained": true}`` as each part finishes). A killed run resumes
where it stopped: a finished part is not redone, training continues from its ``last.pt``, labels skip
the images already written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from datasets.classes import save_label_png
from datasets.io import read_image
from datasets.saliency import SaliencyReader, write_saliency_png
from datasets.transforms import normalize, to_chw
from datasets.voc import CLS_LABELS_FILE, find_image, labels_for_names, read_name_list
from methods.auxsegnet import AuxSegNetMethod
from model.auxseg_infer import refine_from_output
from model.auxseg_labels import (
    fuse_saliency,
    initial_cam_up,
    saliency_crf,
    saliency_label_u8,
    segmentation_label,
)
from utils.runtime.checkpoint import find_resume_checkpoint
from utils.runtime.progress import progress
from utils.train.loop import train

STATE_FILE = "round_state.json"


def read_state(folder: Path) -> dict[str, Any]:
    """A round's state (empty when it has not started)."""
    path = folder / STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def write_state(folder: Path, **updates: Any) -> None:
    """Merge ``updates`` into the round's state, atomically (temporary file, then rename)."""
    folder.mkdir(parents=True, exist_ok=True)
    state = read_state(folder) | updates
    tmp = folder / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, folder / STATE_FILE)


def stage_config(cfg: DictConfig, folder: Path, **auxseg: Any) -> DictConfig:
    """``cfg`` for one training run in ``folder`` with the ``auxseg.*`` keys of ``auxseg``."""
    out = OmegaConf.merge(cfg, {"work_dir": {"dir": str(folder)}, "auxseg": auxseg})
    out.train.overwrite = False
    return out


def run_training(cfg: DictConfig, folder: Path) -> bool:
    """Train (or resume) the run of ``cfg``; True when it reached ``train.max_iters`` (not stopped early)."""
    if read_state(folder).get("trained"):
        return True
    ckpt = folder / cfg.work_dir.ckpt_dir
    train(cfg, resume=(ckpt / "last.pt").is_file())
    _, state = find_resume_checkpoint(ckpt, warn=False)
    if state["step"] < cfg.train.max_iters:
        return False
    write_state(folder, trained=True)
    return True


def last_checkpoint(folder: Path, cfg: DictConfig) -> Path:
    """A finished run's ``last.pt``."""
    return folder / cfg.work_dir.ckpt_dir / "last.pt"


def _device(cfg: DictConfig) -> torch.device:
    """``cfg.device`` for the single-process label pass (auto: CUDA when present)."""
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


@torch.no_grad()
def image_labels(
    model: torch.nn.Module,
    image: np.ndarray,
    sal_ref_u8: np.ndarray,
    cls_label: np.ndarray,
    cfg: DictConfig,
    initial: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    """One image's next labels: ((H, W) uint8 segmentation label, (H, W) uint8 saliency label or None).

    ``initial``: round 0 (§4.4): the normalised CAM, no propagation, S = the off-the-shelf map, no
    saliency label. Otherwise §3-§4: refined CAM, saliency (S_ref + S₀)/2 → CRF → uint8, the rule on
    the CRF marginal.
    """
    device = next(model.parameters()).device
    x = torch.from_numpy(to_chw(normalize(image)))[None].to(device)
    size, a = image.shape[:2], cfg.auxseg
    cls = torch.from_numpy(cls_label)[None].to(device)
    out = model(x)
    if initial:
        sal = torch.from_numpy(sal_ref_u8.astype(np.float32) / 255.0)[None].to(device)
        seg = segmentation_label(initial_cam_up(out.cam, size), sal, cls, a.cam_threshold, a.sal_threshold)
        return seg[0].cpu().numpy().astype(np.uint8), None
    ref = refine_from_output(out, size)
    fused = fuse_saliency(ref.sal_prob_up[0, 0].cpu().numpy(), sal_ref_u8)
    marginal = saliency_crf(image, fused)  # (1, H, W)
    sal = torch.from_numpy(marginal).to(device)
    seg = segmentation_label(ref.refined_cam_up, sal, cls, a.cam_threshold, a.sal_threshold)
    return seg[0].cpu().numpy().astype(np.uint8), saliency_label_u8(marginal[0])


def write_labels(
    cfg: DictConfig, checkpoint: Path | None, out_dir: Path, reference_sal: Path, initial: bool
) -> None:
    """Labels of every image of ``train.split`` into ``out_dir/seg`` (and ``out_dir/sal``), skipping those
    written already (the segmentation file is written last, so it marks a finished image).

    The network is ``checkpoint``'s, or (None) the one ``cfg`` builds with its pretrained and
    ``auxseg.init_weights`` weights.
    """
    method = AuxSegNetMethod(cfg)
    model = method.build_network(pretrained=checkpoint is None)
    if checkpoint is not None:
        method.load_weights(model, checkpoint)
    model = model.to(_device(cfg)).eval()
    names = read_name_list(cfg.dataset.name_list_dir, cfg.train.split)
    labels = labels_for_names(
        names, Path(cfg.dataset.name_list_dir) / CLS_LABELS_FILE, cfg.dataset.num_classes
    )
    reader = SaliencyReader(reference_sal, cfg.dataset.saliency_on_size_mismatch)
    todo = [n for n in names if not (out_dir / "seg" / f"{n}.png").is_file()]
    images = Path(cfg.dataset.root_dir) / "JPEGImages"
    for name in progress(todo, desc=f"labels {out_dir.parent.name}"):
        image = read_image(find_image(images / name))
        seg, sal = image_labels(
            model, image, reader.read_u8(name, image.shape[:2]), labels[name], cfg, initial
        )
        if sal is not None:
            write_saliency_png(out_dir / "sal" / f"{name}.png", sal)
        save_label_png(out_dir / "seg" / f"{name}.png", seg)


def initial_labels(cfg: DictConfig, root: Path) -> tuple[str, str | None]:
    """Round 0's segmentation-label folder and the weights round 0 starts from (§4.4)."""
    a = cfg.auxseg
    if a.init_seg_label_dir:
        return a.init_seg_label_dir, a.init_weights
    init_weights = a.init_weights
    if a.init_cls_iters > 0:
        folder = root / "init_cls"
        cls_cfg = stage_config(cfg, folder, seg_label_dir=None, sal_label_dir=None)
        cls_cfg.train.max_iters = a.init_cls_iters
        cls_cfg.loss.sal, cls_cfg.loss.seg = 0.0, 0.0
        if not run_training(cls_cfg, folder):
            raise _Stopped(folder)
        init_weights = str(last_checkpoint(folder, cfg))
    folder = root / "round_0"
    if not read_state(folder).get("labels"):
        label_cfg = stage_config(cfg, folder, init_weights=init_weights)
        write_labels(label_cfg, None, folder / "labels", Path(cfg.dataset.saliency_dir), initial=True)
        write_state(folder, labels=True)
    return str(folder / "labels" / "seg"), init_weights


class _Stopped(Exception):
    """A training run ended before ``train.max_iters`` (``train.stop_iter``): continue with a rerun."""


def run_rounds(cfg: DictConfig) -> dict[str, Any]:
    """All rounds of ``cfg`` under ``work_dir.dir``; returns the finished rounds and the final checkpoint
    (``stopped`` names the run that ``train.stop_iter`` ended: rerun the same command to continue)."""
    root = Path(cfg.work_dir.dir)
    a = cfg.auxseg
    try:
        seg_dir, init = initial_labels(cfg, root)
        sal_dir = cfg.dataset.saliency_dir
        for s in range(a.rounds):
            folder = root / f"round_{s}"
            round_cfg = stage_config(
                cfg, folder, seg_label_dir=seg_dir, sal_label_dir=sal_dir, init_weights=init
            )
            if not run_training(round_cfg, folder):
                raise _Stopped(folder)
            init = str(last_checkpoint(folder, cfg)) if a.warm_start else a.init_weights
            if s + 1 == a.rounds:
                break
            nxt = root / f"round_{s + 1}"
            reference = cfg.dataset.saliency_dir if a.sal_update_reference == "original" else sal_dir
            if not read_state(nxt).get("labels"):
                write_labels(round_cfg, last_checkpoint(folder, cfg), nxt / "labels", Path(reference), False)
                write_state(nxt, labels=True)
            seg_dir, sal_dir = str(nxt / "labels" / "seg"), str(nxt / "labels" / "sal")
    except _Stopped as stop:
        return {"stopped": str(stop.args[0]), "final_checkpoint": None}
    return {"stopped": None, "final_checkpoint": str(last_checkpoint(root / f"round_{a.rounds - 1}", cfg))}
