"""The method interface: a method defined only in this file trains, validates, checkpoints, resumes and
runs ``infer_seg.py`` through the public entry points with no change to the engine; the registry's
errors; checkpoints record their method.

``PlainCAM`` is the smallest weakly-supervised method: a MiT encoder, a 1×1 classifier, the multi-label
soft margin loss, and the CAM (max-normalised, background at a fixed score) as its segmentation. It is
named by its module path (``method=test_methods:PlainCAM``), the way a user's own package plugs in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn

from common.errors import ConfigError, UsageError
from datasets.demo import write_demo_dataset
from methods.afa import AFA
from methods.aream import AReAMOnAFA
from methods.base import Method, StepResult, ValidationOutput
from methods.optim import poly_factor
from methods.registry import METHODS, build_method, method_class
from methods.schema import BaseConfig
from model.heads import class_activation_map
from model.losses import classification_loss
from model.mit import build_mit
from utils.config import load_config
from utils.runtime.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
BKG_SCORE = 0.45


@dataclass
class PlainSection:
    learning_rate: float = 1e-3
    power: float = 0.9  # poly decay of the lr over train.max_iters


@dataclass
class PlainCAMConfig(BaseConfig):
    plain: PlainSection = field(default_factory=PlainSection)


class PlainCAMNet(nn.Module):
    def __init__(self, backbone: str, num_classes: int) -> None:
        super().__init__()
        self.encoder = build_mit(backbone, (4, 2, 2, 1), 0.0)
        self.classifier = nn.Conv2d(self.encoder.variant.embed_dims[3], num_classes - 1, 1, bias=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, 3, H, W) -> class logits (B, K) (global average pooling) and the CAM (B, K, h, w)."""
        cam = class_activation_map(self.encoder(x, ()).features[3], self.classifier)
        return cam.mean(dim=(2, 3)), cam

    def segment(self, x: Tensor) -> Tensor:
        """(B, 1 + K, h, w): the background score, then the CAM scaled to a maximum of 1 per class."""
        cam = F.relu(self(x)[1])
        cam = cam / (cam.amax(dim=(2, 3), keepdim=True) + 1e-5)
        return torch.cat([torch.full_like(cam[:, :1], BKG_SCORE), cam], dim=1)


class PlainCAM(Method):
    schema = PlainCAMConfig
    validation_maps = ("cam",)
    best_map = "cam"

    def build_network(self, pretrained: bool = True) -> nn.Module:
        return PlainCAMNet(self.cfg.backbone.config, self.cfg.dataset.num_classes)

    def configure_optimizers(self, model: nn.Module):
        p = self.cfg.plain
        optimizer = torch.optim.SGD(model.parameters(), lr=p.learning_rate, momentum=0.9)
        steps = self.cfg.train.max_iters
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: poly_factor(t, steps, p.power))
        return optimizer, schedule

    def training_losses(self, model: nn.Module, batch: dict, n_iter: int) -> StepResult:
        logits, _ = model(batch["image"])
        losses = {"cls": classification_loss(logits, batch["cls_label"])}
        return StepResult(losses, {"cls": 1.0}, losses["cls"])

    def validation_step(self, model: nn.Module, image: Tensor, cls_label: Tensor) -> ValidationOutput:
        logits, _ = model(image)
        seg = F.interpolate(model.segment(image), size=image.shape[-2:], mode="bilinear", align_corners=False)
        present = torch.cat([torch.ones_like(cls_label[:, :1]), cls_label], dim=1)[..., None, None]
        return ValidationOutput({"cam": (seg * present).argmax(dim=1)}, logits)


PLAIN = "test_methods:PlainCAM"


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("methods_demo")
    write_demo_dataset(root, num_train=8, num_val=3, seed=5)
    return root


def plain_overrides(root: Path, work: Path, **extra) -> list[str]:
    """Overrides of ``plain_config`` for a tiny run on the demo data: shared keys only."""
    items = {"dataset.root_dir": root, "dataset.name_list_dir": root, "dataset.num_classes": 5,
             "dataset.crop_size": 64, "dataset.rescale_range": [0.5, 1.5], "dataset.num_workers": 0,
             "train.split": "train", "train.batch_size": 2, "train.max_iters": 2, "train.eval_iters": 2,
             "train.log_iters": 1, "device": "cpu", "work_dir.dir": work, **extra}  # fmt: skip
    return [f"{k}={v}" for k, v in items.items()]


@pytest.fixture(scope="module")
def plain_config(tmp_path_factory) -> Path:
    """The user's YAML of the plain method: its name, and the encoder."""
    path = tmp_path_factory.mktemp("plain_config") / "plain.yaml"
    path.write_text(
        f"method: {PLAIN}\nbackbone:\n  config: mit_tiny\n  pretrained: false\nplain:\n  power: 1.0\n"
    )
    return path


def entry(script: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(HERE), str(REPO)]))
    return subprocess.run([sys.executable, script, *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_unknown_method_fails_in_one_line_listing_the_known_ones():
    with pytest.raises(ConfigError, match=r"method='nope' is not a known method; known: afa") as err:
        load_config(REPO / "configs/demo.yaml", ["method=nope"])
    assert "module.path:ClassName" in err.value.hint
    with pytest.raises(ConfigError, match="not a subclass of methods.base.Method"):
        method_class("test_methods:PlainSection")
    with pytest.raises(ConfigError, match="cannot import Missing"):
        method_class("test_methods:Missing")
    done = entry("train_voc.py", "--config", "configs/demo.yaml", "method=nope")
    assert done.returncode == 2 and done.stderr.startswith("error: method='nope' is not a known method"), (
        done.stderr
    )


def test_the_schema_is_the_methods():
    assert load_config(REPO / "configs/demo.yaml").method == "afa"
    assert isinstance(build_method(load_config(REPO / "configs/demo.yaml")), AFA)
    aream = load_config(REPO / "configs/demo.yaml", ["aream.enabled=true"])
    assert type(build_method(aream)) is AReAMOnAFA
    plain = load_config(None, [f"method={PLAIN}"])
    assert plain.plain.learning_rate == 1e-3 and plain.plain.power == 0.9 and "cam" not in plain
    with pytest.raises(ConfigError, match="cam.scales"):  # an AFA key is unknown to another method
        load_config(None, [f"method={PLAIN}", "cam.scales=[1.0]"])
    assert PlainCAM not in METHODS.values()  # it runs without a registry entry


def test_a_method_defined_in_a_test_trains_resumes_and_infers(demo_root, plain_config, tmp_path):
    work = tmp_path / "plain"
    over = plain_overrides(
        demo_root, work, **{"train.max_iters": 4, "train.eval_iters": 2, "train.stop_iter": 2}
    )
    done = entry("train_voc.py", "--config", plain_config, *over)
    assert done.returncode == 0, done.stderr[-3000:]
    log = (work / "train.log").read_text()
    assert "iter 2  cls " in log and "validation at iter 2 on 3 images: cls F1 " in log
    assert "stopping at iteration 2" in log
    first = load_checkpoint(work / "checkpoints/last.pt")
    assert first["method"] == PLAIN and first["step"] == 2
    assert (work / "checkpoints/best.pt").is_file()

    done = entry("train_voc.py", "--config", plain_config, "--resume", *over[:-1], "train.stop_iter=null")
    assert done.returncode == 0, done.stderr[-3000:]
    log = (work / "train.log").read_text()
    assert f"resumed from {work / 'checkpoints/last.pt'} at iteration 2" in log and "iter 4  cls " in log
    assert "cam (%): mIoU" in log and "done: best cam mIoU" in log
    last = load_checkpoint(work / "checkpoints/last.pt")
    assert last["step"] == 4 and last["scheduler"]["last_epoch"] == 4

    out = tmp_path / "infer"
    done = entry("infer_seg.py", "--checkpoint", work / "checkpoints/last.pt", "--out", out,
                 "dataset.num_workers=0", "infer.resize_long=128")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(list((out / "prediction").glob("*.png"))) == 3
    report = json.loads((out / "report.json").read_text())
    assert report["method"] == PLAIN and report["num_images"] == 3
    assert 0 <= report["scores"]["multi_scale"]["miou"] <= 100 and "multi_scale" in done.stdout


def test_pseudo_label_export_of_a_method_without_them_is_refused(demo_root, plain_config, tmp_path):
    cfg = load_config(plain_config, plain_overrides(demo_root, tmp_path))
    with pytest.raises(UsageError, match=f"method {PLAIN} exports no pseudo labels"):
        from utils.evaluation.pseudo_export import export

        export(cfg, tmp_path / "none.pt")


def test_afa_config_of_another_method_checkpoint_is_refused(demo_root, plain_config, tmp_path):
    """A ``--config`` of AFA with a PlainCAM checkpoint: one line naming both methods."""
    from utils.runtime.checkpoint_config import config_for_checkpoint

    ckpt = tmp_path / "plain.pt"
    cfg = load_config(plain_config, plain_overrides(demo_root, tmp_path))
    torch.save({"model": {}, "config": f"method: {PLAIN}\n"}, ckpt)
    with pytest.raises(Exception, match=f"trained with method {PLAIN}, .*demo.yaml is a config of afa"):
        config_for_checkpoint(REPO / "configs/demo.yaml", [], ckpt)
    assert config_for_checkpoint(None, plain_overrides(demo_root, tmp_path), ckpt).method == PLAIN
    assert isinstance(cfg, DictConfig)
