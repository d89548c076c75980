"""MCTformer-V1 and -V2 as methods of the engine (``method: mctformer_v1 | mctformer_v2``).

Training (spec §2-3): a DeiT with C class tokens (``model/mctformer.py``), the multi-label soft margin
on the class-token logits (V2: plus the patch logits, 1 : 1), AdamW with timm's no-decay rule at
lr 5e-4·batch/512, and timm's per-epoch cosine with warm-up stepped after each epoch, expressed per
iteration (``methods/mctformer_parts.py``). The training forward uses fused attention: no attention
weights are built (the authors build and stack every block's softmax; quirk Q18, no effect on the loss).

Validation: the seed maps of ``methods/mct_seeds.py`` (``MCTSeeds``) as a label map at the seed
threshold, scored as mIoU (``seed``), and the authors' per-image average precision of σ(class-token
logits) on the Resize(256) + CenterCrop(224) view of each image (spec §3.6), logged as ``mAP``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR

from common.errors import CheckpointError
from common.torch_io import torch_load_checked
from datasets.mct import MCTClsDataset
from datasets.mct_transforms import AugmentConfig
from methods.base import Method, StepResult, ValidationOutput, unwrap
from methods.mct_seeds import MCTSeeds
from methods.mctformer_config import MCTformerConfig
from methods.mctformer_parts import build_adamw, mct_losses, per_image_ap, scaled_lr, schedule_factor
from model.cam import maybe_autocast
from model.mctformer import MCTformer, build_mctformer, load_deit_checkpoint

PATCH = 16  # DeiT patch side: the smallest input
EVAL_RESIZE, EVAL_CROP = 256, 224  # the authors' validation view (spec §3.5): Resize(256), CenterCrop(224)
DEIT_FILES = {
    "deit_tiny": "pretrained/deit_tiny_patch16_224-a1311bcf.pth",
    "deit_small": "pretrained/deit_small_patch16_224-cd65a155.pth",
    "deit_base": "pretrained/deit_base_patch16_224-b5f2ef4d.pth",
}


def eval_view(image: Tensor, resize: int = EVAL_RESIZE, crop: int = EVAL_CROP) -> Tensor:
    """The validation view of the classifier (spec §3.5): the shorter side resized to ``resize``
    (bicubic, antialiased), then the central ``crop`` × ``crop``.

    Args:
        image: (B, 3, H, W) normalised.

    Returns:
        (B, 3, crop, crop).
    """
    h, w = image.shape[-2:]
    size = (resize, int(resize * w / h)) if h <= w else (int(resize * h / w), resize)
    x = F.interpolate(image, size=size, mode="bicubic", align_corners=False, antialias=True)
    top, left = int(round((size[0] - crop) / 2)), int(round((size[1] - crop) / 2))
    return x[..., top : top + crop, left : left + crop]


class MCTformerMethod(Method):
    """The shared part of V1 and V2; ``version`` ("v1" | "v2") is set by the subclass."""

    schema = MCTformerConfig
    version = "v2"
    validation_maps = ("seed",)
    best_map = "seed"
    network_keys = ("backbone.config", "backbone.dims", "backbone.img_size", "dataset.num_classes")

    @property
    def num_fg(self) -> int:
        """C, the foreground classes (the config's count has the background)."""
        return self.cfg.dataset.num_classes - 1

    # ------------------------------------------------------------------ network and optimiser
    def build_network(self, pretrained: bool = True) -> nn.Module:
        """The MCTformer of the config's DeiT size, initialised from ImageNet DeiT (spec §1.4) when
        ``pretrained`` and ``backbone.pretrained``."""
        b = self.cfg.backbone
        if b.dims is not None:
            dim, depth, heads = b.dims
            return MCTformer(
                self.version, self.num_fg, dim, depth, heads, b.img_size, PATCH, b.drop_path_rate
            )
        model = build_mctformer(self.version, self.num_fg, b.config, b.img_size, b.drop_path_rate)
        if pretrained and b.pretrained:
            load_deit_checkpoint(model, b.pretrained_path or DEIT_FILES[b.config])
        return model

    def load_weights(self, model: nn.Module, source: str | Path) -> None:
        """Our checkpoints and the authors' (``{'model': state}``, the same key names); another class
        count, size or version is one ``CheckpointError`` line."""
        state = torch_load_checked(source)
        state = state.get("model", state) if isinstance(state, dict) else state
        if not isinstance(state, dict) or "cls_token" not in state:
            raise CheckpointError(f"{source} holds no MCTformer state dict (no cls_token)")
        ours = model.state_dict()
        theirs_c, ours_c = state["cls_token"].shape[1], ours["cls_token"].shape[1]
        if theirs_c != ours_c:
            raise CheckpointError(
                f"{source} has {theirs_c} class tokens; this model has {ours_c} (dataset.num_classes - 1)"
            )
        wrong = [k for k in ours if k not in state or state[k].shape != ours[k].shape]
        extra = [k for k in state if k not in ours]
        if wrong or extra:
            raise CheckpointError(
                f"{source} does not fit MCTformer-{self.version.upper()} of this config: "
                f"missing or other shape {wrong[:3]}, unexpected {extra[:3]}"
            )
        model.load_state_dict(state)

    def iters_per_epoch(self) -> int:
        """``scheduler.iters_per_epoch``, or ⌊len(train split)/batch⌋ (the authors' drop_last)."""
        given = self.cfg.scheduler.iters_per_epoch
        if given is not None:
            return int(given)
        return max(len(self.build_train_dataset()) // self.cfg.train.batch_size, 1)

    def base_lr(self) -> float:
        """lr · batch / 512 (spec §3.1)."""
        o = self.cfg.optimizer
        return scaled_lr(o.learning_rate, self.cfg.train.batch_size, o.lr_reference_batch)

    def configure_optimizers(self, model: nn.Module) -> tuple[torch.optim.Optimizer, LambdaLR]:
        """AdamW over the (no-decay, decay) groups and the per-epoch cosine per iteration (spec §3.2-3.3)."""
        o, s = self.cfg.optimizer, self.cfg.scheduler
        base = self.base_lr()
        optimizer = build_adamw(model, base, o.weight_decay, tuple(o.betas), o.eps)
        per_epoch = self.iters_per_epoch()

        def factor(t: int) -> float:
            """The multiplier of the base lr at iteration t."""
            return schedule_factor(t, per_epoch, base, s.epochs, s.warmup_epochs, s.warmup_lr, s.min_lr)

        return optimizer, LambdaLR(optimizer, factor)

    def build_train_dataset(self) -> MCTClsDataset:
        """``MCTClsDataset`` of the training split with the ``augment`` recipe (spec §3.5)."""
        cfg = self.cfg
        augment = AugmentConfig(**{k: cfg.augment[k] for k in cfg.augment})
        return MCTClsDataset(
            cfg.dataset.root_dir,
            cfg.dataset.name_list_dir,
            cfg.train.split,
            cfg.dataset.num_classes,
            cfg.dataset.name,
            augment,
        )

    def setup_lines(self) -> list[str]:
        """The lr and the epoch length of the schedule."""
        s = self.cfg.scheduler
        per_epoch = self.iters_per_epoch()
        return [
            f"MCTformer-{self.version.upper()} ({self.cfg.backbone.dims or self.cfg.backbone.config}): "
            f"base lr {self.base_lr():.4g}, "
            f"{per_epoch} iterations per epoch, "
            f"cosine over {s.epochs} epochs ({s.epochs * per_epoch} iterations), "
            f"train.max_iters {self.cfg.train.max_iters}"
        ]

    def training_warnings(self) -> list[str]:
        """A run shorter or longer than the schedule's epochs; bf16 on a CPU without AVX-512."""
        s, t = self.cfg.scheduler, self.cfg.train
        lines = []
        if s.iters_per_epoch is not None and t.max_iters != s.epochs * s.iters_per_epoch:
            lines.append(
                f"train.max_iters={t.max_iters} is not scheduler.epochs × iters_per_epoch = "
                f"{s.epochs * s.iters_per_epoch}: the run ends at another point of the cosine schedule"
            )
        on_cpu = self.cfg.device == "cpu" or (self.cfg.device == "auto" and not torch.cuda.is_available())
        if t.amp == "bf16" and on_cpu and "AVX512" not in torch.backends.cpu.get_cpu_capability():
            lines.append(
                "train.amp=bf16 on a CPU without AVX-512: bfloat16 is emulated there "
                "(about 11× slower than float32 on an AVX2 EPYC); use train.amp=none"
            )
        return lines

    # ------------------------------------------------------------------ training
    def training_losses(self, model: nn.Module, batch: dict[str, Any], n_iter: int) -> StepResult:
        """MLSM(class-token logits) (+ V2: MLSM(patch logits)), weights 1 : 1 (spec §2)."""
        x, labels = batch["image"], batch["cls_label"].float()
        amp = torch.bfloat16 if self.cfg.train.amp == "bf16" else None
        with maybe_autocast(x.device, amp):
            if self.cfg.train.explicit_attention:  # the authors' forward (Q18), for speed comparisons
                out = unwrap(model).forward_attention(x, self.cfg.seeds.layers)
                cls_logits, patch_logits = out.cls_logits, out.patch_logits
            else:
                cls_logits, patch_logits = model(x)
        patch = None if patch_logits is None else patch_logits.float()
        losses = mct_losses(cls_logits.float(), patch, labels)
        weights = dict.fromkeys(losses, 1.0)
        total = sum(losses.values())
        return StepResult(losses, weights, total, (cls_logits, patch_logits))

    # ------------------------------------------------------------------ evaluation
    def validation_step(self, model: nn.Module, image: Tensor, cls_label: Tensor) -> ValidationOutput:
        """``seed`` label maps (B, H, W), class-token logits (B, C) of the validation view, and the
        per-image AP of spec §3.6 as the image score ``mAP``."""
        cls_logits, _ = model(eval_view(image))
        seeds = torch.stack(
            [
                self.pseudo_labels(model, image[i : i + 1], cls_label[i : i + 1])["seed"]
                for i in range(len(image))
            ]
        )
        return ValidationOutput({"seed": seeds}, cls_logits, {"mAP": per_image_ap(cls_logits, cls_label)})

    @torch.no_grad()
    def segment(self, model: nn.Module, x: Tensor) -> Tensor:
        """(B, 1 + C, H, W): the seed maps of the classes the class tokens predict (logit > 0; the top
        class if none) and the background at ``seeds.threshold``."""
        net, s = unwrap(model), self.cfg.seeds
        cls_logits, _ = net(x)
        out = x.new_zeros(len(x), 1 + self.num_fg, *x.shape[-2:])
        out[:, 0] = s.threshold
        for i in range(len(x)):
            present = cls_logits[i] > 0
            present[cls_logits[i].argmax()] = True
            keys, maps = self.seed_maps(net, x[i : i + 1], present[None].float())
            out[i, 1 + keys] = maps.to(out.dtype)
        return out

    def min_input_side(self, model: nn.Module) -> int:
        """One DeiT patch (16 px)."""
        return PATCH


class MCTformerV1(MCTSeeds, MCTformerMethod):
    """``method: mctformer_v1``: class-token logits only; seeds from the class attention."""

    version = "v1"


class MCTformerV2(MCTSeeds, MCTformerMethod):
    """``method: mctformer_v2``: class-token and PatchCAM logits; seeds from the fused maps."""

    version = "v2"
