"""Validation in batches of same-size images (``val.batch_size``) scores exactly as batch 1 does."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset

from methods.afa import AFA
from methods.afa_eval import EvalSettings
from utils.evaluation.validate import validate
from utils.runtime.data import build_eval_loader, size_grouped_batches

SIZES = [(64, 96), (64, 96), (80, 64), (64, 96), (80, 64), (72, 72), (64, 96)]


class SizedImages(Dataset):
    """Random normalised images of the given sizes with random masks (255 ignore) and image labels."""

    def __init__(self, sizes: list[tuple[int, int]], num_classes: int = 5) -> None:
        g = torch.Generator().manual_seed(0)
        self.samples = []
        for h, w in sizes:
            label = torch.randint(0, num_classes, (h, w), generator=g)
            label[torch.rand(h, w, generator=g) < 0.1] = 255
            cls_label = (torch.rand(num_classes - 1, generator=g) < 0.5).float()
            cls_label[0] = 1.0
            self.samples.append((torch.randn(3, h, w, generator=g), label, cls_label))
        self.sizes = sizes

    def __len__(self) -> int:
        return len(self.samples)

    def image_size(self, index: int) -> tuple[int, int]:
        return self.sizes[index]

    def __getitem__(self, index: int) -> dict:
        image, label, cls_label = self.samples[index]
        return {"name": f"img{index}", "image": image, "label": label, "cls_label": cls_label}


def test_size_grouped_batches_by_hand():
    sizes = [(2, 3), (2, 3), (4, 4), (2, 3), (4, 4), (1, 1), (2, 3)]
    assert size_grouped_batches(sizes, 3) == [[0, 1, 3], [6], [2, 4], [5]]
    assert size_grouped_batches(sizes, 1) == [[i] for i in [0, 1, 3, 6, 2, 4, 5]]
    assert size_grouped_batches([], 4) == []


def test_loader_batches_hold_one_size_and_every_image_once():
    dataset = SizedImages(SIZES)
    indices = [6, 0, 2, 3, 5, 1]  # a shard, out of order
    loader = build_eval_loader(dataset, indices, num_workers=0, batch_size=2)
    names = []
    for batch in loader:
        assert len({tuple(x.shape[-2:]) for x in batch["image"]}) == 1 and len(batch["name"]) <= 2
        names += batch["name"]
    assert sorted(names) == sorted(f"img{i}" for i in indices)


def test_batched_validation_scores_equal_batch_one(tiny_model):
    model = tiny_model(num_classes=5, seed=2).eval()
    dataset = SizedImages(SIZES)
    afa = AFA.from_settings(evaluation=EvalSettings(num_classes=5, radius=4))
    indices = list(range(len(dataset)))
    cpu = torch.device("cpu")
    one = validate(afa, model, build_eval_loader(dataset, indices, 0), 5, cpu, show=False)
    four = validate(afa, model, build_eval_loader(dataset, indices, 0, batch_size=4), 5, cpu, show=False)
    assert one["num_images"] == four["num_images"] == len(SIZES)
    assert four["cls_f1"] == pytest.approx(one["cls_f1"], rel=1e-12)  # the F1 sum in another order
    for key in ("seg", "cam", "aff"):  # the same confusion matrices: every score equal
        assert repr(one[key]) == repr(four[key]), key
    assert 0.0 < one["aff"]["miou"] < 1.0
