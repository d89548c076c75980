"""Work directories are never damaged silently; files follow the umask; non-finite steps stop or skip."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch
from runs import tiny_overrides

from common.errors import WorkDirError
from datasets.demo import write_demo_dataset
from methods.afa import AFA
from utils.config import load_config
from utils.runtime.checkpoint import load_checkpoint, save_atomic
from utils.runtime.workdir import ensure_writable
from utils.train.loop import train
from utils.train.nonfinite import NonFiniteLossError

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    write_demo_dataset(root, num_train=8, num_val=2, seed=6)
    return root


def config(root: Path, work: Path, **extra):
    overrides = tiny_overrides(root, work, **{"train.batch_size": 4, **extra})
    return load_config(REPO / "configs/demo.yaml", overrides)


@pytest.fixture(scope="module")
def trained(root, tmp_path_factory) -> Path:
    """A finished 2-iteration run (last.pt, best.pt, iter_2.pt)."""
    work = tmp_path_factory.mktemp("trained") / "work"
    train(config(root, work))
    return work


def test_second_run_into_a_work_dir_with_checkpoints_is_refused(root, trained):
    best = (trained / "checkpoints" / "best.pt").read_bytes()
    with pytest.raises(WorkDirError, match="already holds checkpoints") as info:
        train(config(root, trained))
    assert "--resume" in info.value.hint and "train.overwrite=true" in info.value.hint
    assert (trained / "checkpoints" / "best.pt").read_bytes() == best


def test_overwrite_deletes_the_old_checkpoints(root, tmp_path):
    work = tmp_path / "work"
    train(config(root, work, **{"train.max_iters": 2, "train.ckpt_iters": 1}))
    assert (work / "checkpoints" / "iter_1.pt").is_file()
    train(config(root, work, **{"train.overwrite": True}))
    assert sorted(p.name for p in (work / "checkpoints").glob("*.pt")) == ["best.pt", "iter_2.pt", "last.pt"]


def test_resume_with_another_network_names_every_key_and_writes_nothing(root, trained):
    saved = (trained / "config.yaml").read_text()
    log = (trained / "train.log").read_text()
    cfg = config(root, trained, **{"model.embed_dim": 32, "backbone.stride": [4, 2, 2, 2]})
    with pytest.raises(WorkDirError) as info:
        train(cfg, resume=True)
    message = str(info.value)
    assert "model.embed_dim: 64 in the checkpoint, 32 now" in message
    stride = list(config(root, trained).backbone.stride)  # the demo config's, saved in the checkpoint
    assert f"backbone.stride: {stride} in the checkpoint, [4, 2, 2, 2] now" in message
    assert (trained / "config.yaml").read_text() == saved and (trained / "train.log").read_text() == log


def test_resume_without_last_pt_is_an_error(root, tmp_path):
    with pytest.raises(WorkDirError, match="--resume: no checkpoint"):
        train(config(root, tmp_path / "none"), resume=True)


def test_resume_with_another_max_iters_warns_about_the_schedule(root, tmp_path, capsys):
    work = tmp_path / "work"
    train(config(root, work, **{"train.max_iters": 4, "train.stop_iter": 1, "train.eval_iters": 4}))
    assert "no validation ran yet" in (work / "train.log").read_text()
    assert "-100.00" not in (work / "train.log").read_text()
    capsys.readouterr()
    train(config(root, work, **{"train.max_iters": 2}), resume=True)
    err = capsys.readouterr().err
    assert "train.max_iters was 4, now 2: the learning-rate schedule" in err and "from iteration 1" in err


@pytest.mark.parametrize("mask", [0o022, 0o002])
def test_atomic_checkpoints_follow_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        save_atomic({"x": torch.zeros(1)}, tmp_path / "last.pt")
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "last.pt").stat().st_mode) == 0o666 & ~mask
    assert stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == 0o666 & ~mask


def test_trained_checkpoints_are_readable_by_the_group(trained):
    for name in ("last.pt", "best.pt", "iter_2.pt"):
        mode = stat.S_IMODE((trained / "checkpoints" / name).stat().st_mode)
        assert mode & stat.S_IRGRP, (name, oct(mode))


def test_output_folder_that_is_not_writable(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(Exception, match=r"cannot write to .*file/out \(--out\)") as info:
        ensure_writable(tmp_path / "file" / "out", "--out")
    assert "--out" in info.value.hint
    ensure_writable(tmp_path / "new" / "deeper", "--out")
    assert not (tmp_path / "new").exists()  # the check leaves nothing behind


def _nan_at(monkeypatch, bad_iters: set[int]):
    real = AFA.training_losses

    def training_losses(self, model, batch, n_iter):
        result = real(self, model, batch, n_iter)
        if n_iter in bad_iters:
            losses = dict(result.losses, cls=result.total * float("nan"))
            return result._replace(losses=losses, total=losses["cls"])
        return result

    monkeypatch.setattr(AFA, "training_losses", training_losses)


def test_nonfinite_loss_stops_naming_iteration_terms_and_images(root, tmp_path, monkeypatch):
    _nan_at(monkeypatch, {1})
    with pytest.raises(NonFiniteLossError) as info:
        train(config(root, tmp_path / "work"))
    message = str(info.value)
    assert message.startswith("non-finite loss at iteration 1: cls nan, seg ") and "; images " in message
    ids = message.split("; images ")[1].split(", ")
    assert len(ids) == 4 and set(ids) <= set((root / "train.txt").read_text().split())
    assert "train.skip_nonfinite=true" in info.value.hint


def test_skip_nonfinite_counts_skips_and_stops_after_too_many_in_a_row(root, tmp_path, monkeypatch):
    _nan_at(monkeypatch, {1, 3, 4})
    cfg = config(root, tmp_path / "a", **{"train.max_iters": 4, "train.skip_nonfinite": True})
    train(cfg)  # iterations 1 and 3 skipped, never two in a row within 4 iterations
    log = (tmp_path / "a" / "train.log").read_text()
    assert "skipped step (1 so far" in log and "skipped step (2 so far" in log
    assert "2 non-finite step(s) skipped" in log
    assert load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")["nonfinite_skips"] == 2
    cut = {"train.max_iters": 4, "train.skip_nonfinite": True}
    train(config(root, tmp_path / "r", **cut, **{"train.stop_iter": 2}))  # skips iteration 1, stops
    assert load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")["nonfinite_skips"] == 1
    train(config(root, tmp_path / "r", **cut), resume=True)  # skips iteration 3: counted on from 1
    assert load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")["nonfinite_skips"] == 2
    assert "2 non-finite step(s) skipped" in (tmp_path / "r" / "train.log").read_text().splitlines()[-1]
    cfg = config(
        root,
        tmp_path / "b",
        **{"train.max_iters": 6, "train.skip_nonfinite": True, "train.max_nonfinite_in_a_row": 2},
    )
    with pytest.raises(NonFiniteLossError, match="2 non-finite steps in a row"):
        train(cfg)
