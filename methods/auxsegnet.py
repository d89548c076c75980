"""AuxSegNet (Xu et al., ICCV 2021) as a method of the engine; the AuxSegNet+ unary affinity an option.

One iteration (spec §7.5): the training forward of ``model/auxsegnet.py`` on a crop of the round's data
(``datasets/auxseg.py``: image, class label, segmentation and saliency pseudo labels); the five losses
of ``model/auxseg_losses.py`` (cls, initial / refined saliency, initial / refined segmentation) and
their weighted sum; SGD over two lr groups with poly decay (``methods/auxsegnet_optim.py``).

Rounds (spec §5) are driven by ``scripts/auxseg_rounds.py``: each round is one training run of this
method whose ``auxseg.seg_label_dir`` / ``auxseg.sal_label_dir`` name that round's labels and whose
``auxseg.init_weights`` names the previous round's last checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor, nn

from common.errors import ConfigError, MissingFileError
from common.torch_io import torch_load_checked
from datasets.auxseg import AuxSegDataset
from methods.auxsegnet_config import SALIENCY_LABELS, AuxSegConfig
from methods.auxsegnet_optim import build_poly_adamw, build_poly_sgd
from methods.base import Method, StepResult, ValidationOutput, unwrap
from model.auxseg_infer import refine_from_output, seg_probs
from model.auxseg_labels import segmentation_label
from model.auxseg_losses import loss_terms, loss_weights, total_loss
from model.auxsegnet import AuxSegNet, build_auxsegnet, param_groups


class AuxSegNetMethod(Method):
    """``method: auxsegnet``: segmentation with saliency and classification as auxiliary tasks."""

    schema = AuxSegConfig
    validation_maps = ("seg",)
    best_map = "seg"
    network_keys = (
        "backbone.config",
        "backbone.width_divisor",
        "dataset.num_classes",
        "auxseg.variant",
        "auxseg.mid",
    )
    pseudo_label_kinds = ("seg",)

    # ------------------------------------------------------------------ network and optimiser
    def pretrained_path(self) -> Path:
        """The backbone's weights file: ``backbone.pretrained_path`` or ``pretrained/<config>.pth``."""
        b = self.cfg.backbone
        return Path(b.pretrained_path or f"pretrained/{b.config}.pth")

    def build_network(self, pretrained: bool = True) -> AuxSegNet:
        """AuxSegNet of the config; with ``pretrained``: the backbone's ImageNet (or classification) weights
        when ``backbone.pretrained``, then ``auxseg.init_weights`` (a previous round) when set."""
        cfg = self.cfg
        weights = self.pretrained_path() if pretrained and cfg.backbone.pretrained else None
        if weights is not None and not weights.is_file():
            raise MissingFileError(
                f"backbone weights not found: {weights}",
                hint="set backbone.pretrained_path or backbone.pretrained=false",
            )
        model = build_auxsegnet(
            cfg.backbone.config,
            cfg.dataset.num_classes,
            unary=cfg.auxseg.variant == "plus_unary",
            pretrained=weights,
            width_divisor=cfg.backbone.width_divisor,
            mid=cfg.auxseg.mid,
        )
        init = cfg.auxseg.init_weights
        if pretrained and init:
            self.load_weights(model, init)
        return model

    def load_weights(self, model: nn.Module, source: str | Path) -> None:
        """Our checkpoint's ``model`` entry (or a plain state dict), strictly."""
        if not Path(source).is_file():
            raise MissingFileError(f"weights not found: {source}")
        state = torch_load_checked(source)
        model.load_state_dict(state["model"] if isinstance(state, dict) and "model" in state else state)

    def poly_max_step(self) -> int:
        """T of the poly decay: ``optim.poly_max_step``, else ``train.max_iters − 1`` (T + 1 iterations)."""
        return self.cfg.optim.poly_max_step or max(self.cfg.train.max_iters - 1, 1)

    def configure_optimizers(self, model: nn.Module):
        """SGD over (backbone + cross_att, heads ×10) with poly decay (spec §7.2, §7.3); AdamW with the
        same groups and decay when ``optim.kind: adamw``."""
        o = self.cfg.optim
        if o.kind == "adamw":
            return build_poly_adamw(
                param_groups(model),
                o.learning_rate,
                self.poly_max_step(),
                o.weight_decay,
                o.power,
                o.head_lr_mult,
            )
        return build_poly_sgd(
            param_groups(model),
            o.learning_rate,
            self.poly_max_step(),
            weight_decay_arg=o.weight_decay,
            momentum=o.momentum,
            power=o.power,
            head_lr_mult=o.head_lr_mult,
            released_quirk=o.sgd_positional_quirk,
        )

    # ------------------------------------------------------------------ training
    def saliency_label_dir(self) -> str:
        """This round's saliency labels: ``auxseg.sal_label_dir``, else the off-the-shelf
        ``dataset.saliency_dir``."""
        folder = self.cfg.auxseg.sal_label_dir or self.cfg.dataset.saliency_dir
        if not folder:
            raise ConfigError(
                "dataset.saliency_dir is not set: AuxSegNet needs one saliency map <id>.png per image",
                hint="make them with scripts/make_saliency.py (U²-Net-p) or use the authors' DSS maps",
            )
        return folder

    def build_train_dataset(self) -> AuxSegDataset:
        """The round's crops (spec §7.4) with ``auxseg.seg_label_dir`` and the saliency labels (no
        segmentation labels, all 0, for a classification-only run with ``loss.seg`` 0)."""
        cfg = self.cfg
        if not cfg.auxseg.seg_label_dir and cfg.loss.seg > 0:
            raise ConfigError(
                "auxseg.seg_label_dir is not set: a round trains on segmentation pseudo labels",
                hint="run scripts/auxseg_rounds.py (it makes the round-0 labels) or point it at a folder",
            )
        return AuxSegDataset(
            cfg.dataset.root_dir,
            cfg.dataset.name_list_dir,
            cfg.train.split,
            seg_dir=cfg.auxseg.seg_label_dir,
            sal_dir=self.saliency_label_dir(),
            crop_size=cfg.dataset.crop_size,
            scale_range=tuple(cfg.dataset.rescale_range),
            num_classes=cfg.dataset.num_classes,
            seg_pad_value=cfg.auxseg.seg_pad_value,
            on_size_mismatch=cfg.dataset.saliency_on_size_mismatch,
        )

    def training_losses(self, model: nn.Module, batch: dict[str, Any], n_iter: int) -> StepResult:
        """Forward (train mode: frozen BN, active dropout) and the five losses of spec §6."""
        out = model(batch["image"])
        terms = loss_terms(out, batch["cls_label"], batch["sal_label"], batch["seg_label"])
        w = self.cfg.loss
        weights = loss_weights(w.cls, w.sal, w.seg)
        return StepResult(terms, weights, total_loss(terms, weights), out)

    def setup_lines(self) -> list[str]:
        """The saliency source (stamped in every report) and the optimiser reading."""
        d, o = self.cfg.dataset, self.cfg.optim
        sgd = "released (momentum = weight decay arg, no decay)" if o.sgd_positional_quirk else "intended"
        optimiser = "AdamW (optim.kind=adamw, not the authors')" if o.kind == "adamw" else f"SGD {sgd}"
        return [
            f"saliency source: {d.saliency_source} ({SALIENCY_LABELS[d.saliency_source]}), {d.saliency_dir}",
            f"auxseg variant {self.cfg.auxseg.variant}; {optimiser}; poly T = {self.poly_max_step()}",
        ]

    def training_warnings(self) -> list[str]:
        """Oracle saliency and a MiT backbone are not the paper's setting."""
        out = []
        if self.cfg.dataset.saliency_source == "synthetic_oracle":
            out.append(
                "dataset.saliency_source=synthetic_oracle: ORACLE saliency leaks pixel-level foreground"
            )
        if self.cfg.backbone.config != "resnet38":
            out.append(f"backbone.config={self.cfg.backbone.config}: the authors use resnet38 (a deviation)")
        return out

    # ------------------------------------------------------------------ evaluation
    def validation_step(self, model: nn.Module, image: Tensor, cls_label: Tensor) -> ValidationOutput:
        """argmax of the softmax of the upsampled refined segmentation logits (spec §8, no CRF)."""
        out = model(image)
        return ValidationOutput(
            {"seg": seg_probs(out.refined_seg, image.shape[-2:]).argmax(dim=1)}, out.x_cls
        )

    def segment(self, model: nn.Module, x: Tensor) -> Tensor:
        """P_ref_seg (B, C, h, w), the refined logits at stride 8 (spec §8: P_seg is not used)."""
        return model(x).refined_seg

    def min_input_side(self, model: nn.Module) -> int:
        """Stride 8: an 8-px side gives a 1-position feature map."""
        return 8

    def pseudo_labels(self, model: nn.Module, image: Tensor, cls_label: Tensor) -> dict[str, Tensor]:
        """``seg``: the fusion rule (spec §4.2) on the refined CAM and the **network's own** refined saliency.

        The round labels (``scripts/auxseg_rounds.py``) also average the saliency with the off-the-shelf
        map and run the CRF (spec §4.1); this export, which sees no image id, cannot.
        """
        c = self.cfg.auxseg
        ref = refine_from_output(unwrap(model)(image), tuple(image.shape[-2:]))
        label = segmentation_label(
            ref.refined_cam_up, ref.sal_prob_up[:, 0], cls_label, c.cam_threshold, c.sal_threshold
        )
        return {"seg": label[0]}

    def pseudo_label_report(self) -> dict[str, Any]:
        """The thresholds and the saliency used by ``pseudo_labels``."""
        c, d = self.cfg.auxseg, self.cfg.dataset
        return {
            "saliency.source": f"{d.saliency_source} ({SALIENCY_LABELS[d.saliency_source]})",
            "cam_threshold": c.cam_threshold,
            "sal_threshold": c.sal_threshold,
            "saliency": "network (no S₀, no CRF)",
        }
