"""Image-level labels from masks (datasets.voc_labels) on hand cases and on the real VOC masks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from datasets.classes import save_label_png
from datasets.voc import VOC_LIST_DIR, read_cls_labels, read_name_list
from datasets.voc_labels import compare_cls_labels, derive_cls_labels, format_comparison, mask_class_indices

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared"
VOC_MASKS = SHARED / "data" / "real" / "voc_masks" / "SegmentationClassAug"
needs_voc_masks = pytest.mark.skipif(
    not VOC_MASKS.is_dir(), reason=f"real VOC masks ../shared/data/real/voc_masks not found: {VOC_MASKS}"
)


def test_mask_class_indices_hand_case():
    mask = np.array([[0, 1, 255], [20, 20, 15]])
    assert mask_class_indices(mask, 21) == [0, 14, 19]
    assert mask_class_indices(np.array([[0, 255]]), 21) == []
    with pytest.raises(ValueError, match=r"\[21\]"):
        mask_class_indices(np.array([[21]]), 21)


def test_compare_counts_extra_and_missing():
    derived = {"a": [0, 2], "b": [1], "c": [3], "only_mask": [0]}
    existing = {"a": np.array([1.0, 0, 1, 0]), "b": np.array([1.0, 1, 0, 1])}
    existing.update(c=np.zeros(4), d=np.ones(4))
    result = compare_cls_labels(derived, existing)
    assert (result.num_common, result.num_equal, result.differing_ids) == (3, 1, ["b", "c"])
    assert result.extra == {0: 1, 3: 1} and result.missing == {3: 1}
    assert result.only_derived == ["only_mask"] and result.only_existing == ["d"]
    text = format_comparison(result, ["w", "x", "y", "z"])
    assert "identical: 1; different: 2" in text and "z: extra     1  missing     1" in text


def test_derive_from_written_masks(tmp_path):
    save_label_png(tmp_path / "p.png", np.array([[0, 3], [255, 3]]))
    save_label_png(tmp_path / "q.png", np.array([[0, 0], [255, 0]]))
    assert derive_cls_labels(tmp_path, ["p", "q"], 21) == {"p": [2], "q": []}
    save_label_png(tmp_path / "bad.png", np.array([[0, 7]]))
    with pytest.raises(ValueError, match="bad.png"):
        derive_cls_labels(tmp_path, ["bad"], 5)


@needs_voc_masks
def test_full_voc_comparison_numbers():
    """All 12,031 genuine masks vs the authors' XML-derived labels (the numbers of the docstring)."""
    ids = read_name_list(VOC_LIST_DIR, "train_aug") + read_name_list(VOC_LIST_DIR, "val")
    derived = derive_cls_labels(VOC_MASKS, ids, 21)
    existing = read_cls_labels(VOC_LIST_DIR / "cls_labels.txt", 21)
    result = compare_cls_labels(derived, existing)
    assert (result.num_common, result.num_equal, len(result.differing_ids)) == (12031, 11213, 818)
    assert sum(result.extra.values()) == 903 and result.missing == {14: 1}
    assert result.extra[14] == 257 and result.extra[17] == 158 and result.extra[8] == 147
    trainval = set(read_name_list(VOC_LIST_DIR, "trainval"))
    assert sorted(n for n in result.differing_ids if n in trainval) == ["2008_005245", "2011_001621"]
    assert derived["2008_005245"] == [6, 13, 14]  # the mask's person is not in the file
    for name, present in {"2007_000032": [0, 14], "2007_000063": [8, 11], "2007_000039": [19]}.items():
        assert derived[name] == present


@needs_voc_masks
def test_cli_compare(tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("2007_000032\n2008_000041\n2008_005245\n")
    out = tmp_path / "labels.txt"
    cmd = [sys.executable, str(REPO / "scripts" / "make_voc_labels.py"), "--masks", str(VOC_MASKS)]
    cmd += ["--ids", str(ids), "--out", str(out), "--compare", str(VOC_LIST_DIR / "cls_labels.txt")]
    result = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert "ids compared: 3; identical: 1; different: 2" in result.stdout
    assert "first differing ids: 2008_000041, 2008_005245" in result.stdout
    labels = read_cls_labels(out, 21)
    assert np.flatnonzero(labels["2008_005245"]).tolist() == [6, 13, 14]
