"""The supervised method's step and validation by hand (``methods/supervised.py``): the cross-entropy of
the logits upsampled to the crop with 255 ignored, 0 for a batch without a labelled pixel, the argmax at
the image size; the network key chooses the network; SegFormer's optimiser groups."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from common.errors import ConfigError
from methods.registry import build_method
from methods.supervised import pixel_cross_entropy
from model.deeplabv2 import DeepLabV2
from model.segformer import SegFormer
from utils.config import load_config

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = {
    "deeplabv2": ["backbone.config=resnet_tiny"],
    "segformer": ["backbone.config=mit_tiny", "model.embed_dim=16"],
}


def method_of(network: str, *extra: str):
    cfg = load_config(None, ["method=supervised", "backbone.pretrained=false", "dataset.num_classes=5",
                             *TINY[network], *extra])  # fmt: skip
    return build_method(cfg)


@pytest.mark.parametrize("network", list(TINY))
def test_step_is_the_cross_entropy_of_upsampled_logits_ignoring_255(network):
    method = method_of(network)
    torch.manual_seed(0)
    model = method.build_network().eval()
    assert isinstance(model, DeepLabV2 if network == "deeplabv2" else SegFormer)
    image = torch.randn(2, 3, 64, 64)
    label = torch.randint(0, 5, (2, 64, 64))
    label[:, :10] = 255
    result = method.training_losses(model, {"image": image, "label": label}, 0)
    logits = F.interpolate(model(image), size=(64, 64), mode="bilinear", align_corners=False)
    log_p = logits.log_softmax(dim=1)
    keep = label != 255
    by_hand = -log_p.permute(0, 2, 3, 1)[keep].gather(1, label[keep][:, None]).mean()
    assert torch.allclose(result.total, by_hand, atol=1e-5) and result.weights == {"seg": 1.0}
    pred = method.validation_step(model, image[:, :, :50, :60], None)
    assert pred.maps["seg"].shape == (2, 50, 60) and pred.cls_logits is None


def test_a_batch_without_labelled_pixels_gives_zero_not_nan():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    loss = pixel_cross_entropy(logits, torch.full((1, 4, 4), 255))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))


def test_network_follows_the_backbone_and_a_mismatch_is_refused():
    assert method_of("segformer").network == "segformer" and method_of("deeplabv2").network == "deeplabv2"
    with pytest.raises(ConfigError, match="network=deeplabv2 does not take backbone.config=mit_tiny"):
        method_of("segformer", "network=deeplabv2")
    with pytest.raises(ConfigError, match="network='fcn': use segformer or deeplabv2"):
        method_of("deeplabv2", "network=fcn")


def test_segformer_groups_no_decay_on_norms_and_head_at_ten_times():
    method = method_of("segformer", "optimizer.type=adamw", "optimizer.learning_rate=6e-5",
                       "optimizer.weight_decay=0.01", "optimizer.head_bias_lr_mult=10",
                       "optimizer.head_bias_weight_decay=0.01", "scheduler.warmup_iter=1500",
                       "scheduler.power=1.0")  # fmt: skip
    model = method.build_network()
    optimizer, scheduler = method.configure_optimizers(model)
    groups = optimizer.param_groups
    assert isinstance(optimizer, torch.optim.AdamW) and len(groups) == 4
    assert [g["weight_decay"] for g in groups] == [0.01, 0.0, 0.01, 0.01]
    assert groups[0]["lr"] == pytest.approx(6e-5 * 1e-6) and groups[2]["lr"] == pytest.approx(6e-4 * 1e-6)
    norms = {id(p) for n, p in model.encoder.named_parameters() if "norm" in n}
    assert {id(p) for p in groups[1]["params"]} == norms
    n_params = sum(len(g["params"]) for g in groups)
    assert n_params == len(list(model.parameters()))
