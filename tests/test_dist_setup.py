"""Device choice, process-group timeout, ``train.deterministic`` and the resume-file fallback."""

from __future__ import annotations

import datetime
import logging
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common.errors import ConfigError
from utils.runtime import dist as afa_dist
from utils.runtime.checkpoint import (
    REQUIRED_KEYS,
    copy_atomic,
    find_resume_checkpoint,
    remove_stale_temporaries,
    restore_rank_rng,
    rng_states,
    save_atomic,
)

REPO = Path(__file__).resolve().parents[1]
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on CPU-only machines")


@pytest.fixture
def four_gpus(monkeypatch):
    """Pretend CUDA has four devices (only device objects are made, nothing runs on them)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)


def test_cpu_and_auto_without_cuda():
    assert afa_dist.resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert afa_dist.resolve_device("auto", local_rank=1) == torch.device("cpu")


@NO_CUDA
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_cuda_without_cuda_fails_at_once_and_says_why(name):
    with pytest.raises(ConfigError, match=rf"device='{name}' requested but CUDA is not available") as info:
        afa_dist.resolve_device(name)
    assert "device=cpu" in info.value.hint


def test_each_torchrun_rank_takes_its_local_gpu(four_gpus, caplog):
    assert afa_dist.resolve_device("cuda", local_rank=2, under_launcher=True) == torch.device("cuda", 2)
    assert afa_dist.resolve_device("auto", local_rank=3, under_launcher=True) == torch.device("cuda", 3)
    with caplog.at_level(logging.WARNING, logger="afa"):
        assert afa_dist.resolve_device("cuda:0", local_rank=1, under_launcher=True) == torch.device("cuda", 1)
    assert "local rank 1 uses cuda:1" in caplog.text
    assert afa_dist.resolve_device("cuda:3") == torch.device("cuda", 3)  # one process: as named
    with pytest.raises(ConfigError, match=r"cuda:5 requested .* only 4 GPU"):
        afa_dist.resolve_device("cuda:5")


def test_process_group_gets_the_timeout(monkeypatch):
    seen = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(afa_dist.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(afa_dist.dist, "init_process_group", lambda **kw: seen.update(kw))
    info = afa_dist.init_distributed("cpu", timeout_s=42)
    assert seen == {"backend": "gloo", "timeout": datetime.timedelta(seconds=42)}
    assert (info.rank, info.world_size, info.device) == (1, 2, torch.device("cpu"))


def test_deterministic_sets_what_cuda_needs(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    try:
        afa_dist.set_deterministic(True)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        afa_dist.set_deterministic(False)
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic


def _fake_checkpoint(step: int) -> dict:
    return {k: step for k in REQUIRED_KEYS} | {"rng": [rng_states()]}


def test_resume_file_fallback(tmp_path, caplog):
    ckpt = tmp_path / "checkpoints"
    for step in (2, 4, 10):
        save_atomic(_fake_checkpoint(step), ckpt / f"iter_{step}.pt")
    (ckpt / "iter_10.pt").write_bytes((ckpt / "iter_10.pt").read_bytes()[:100])  # torn
    save_atomic({"model": {}}, ckpt / "iter_8.pt")  # not a training checkpoint
    with caplog.at_level(logging.WARNING, logger="afa"):
        path, state = find_resume_checkpoint(ckpt)  # no last.pt at all
    assert path == ckpt / "iter_4.pt" and state["step"] == 4
    assert (
        "last.pt: missing; iter_10.pt: unreadable" in caplog.text and "iter_8.pt: unreadable" in caplog.text
    )
    copy_atomic(ckpt / "iter_4.pt", ckpt / "last.pt")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="afa"):
        assert find_resume_checkpoint(ckpt)[0] == ckpt / "last.pt"
    assert caplog.text == ""
    for name in ("last.pt", "iter_2.pt", "iter_4.pt"):
        (ckpt / name).unlink()
    with pytest.raises(FileNotFoundError, match="no intact checkpoint"):
        find_resume_checkpoint(ckpt)
    (ckpt / ".last.pt.x1.tmp").write_bytes(b"")
    assert remove_stale_temporaries(ckpt) == [ckpt / ".last.pt.x1.tmp"] and not list(ckpt.glob(".*"))


def test_rng_restore_on_another_rank_count_warns(caplog):
    random.seed(3)
    saved = [rng_states(), rng_states()]
    expected = random.random()
    random.seed(4)
    with caplog.at_level(logging.WARNING, logger="afa"):
        restore_rank_rng(saved, rank=0, world_size=1, device=None)
    assert random.random() == expected
    assert "checkpoint saved on 2 process(es), resuming on 1" in caplog.text
    random.seed(4)
    restore_rank_rng(saved[0], rank=0, world_size=1, device=None)  # an older single-dict checkpoint
    assert random.random() == expected


def test_check_golden_device_option(subprocess_env):
    cmd = [sys.executable, "scripts/check_golden.py", "tests/golden", "--only", "scores"]
    done = subprocess.run(
        [*cmd, "--device", "cpu"], cwd=REPO, env=subprocess_env, capture_output=True, text=True
    )
    assert done.returncode == 0 and "1/1 cases passed" in done.stdout, done.stdout + done.stderr
    if not torch.cuda.is_available():
        done = subprocess.run(
            [*cmd, "--device", "cuda"], cwd=REPO, env=subprocess_env, capture_output=True, text=True
        )
        assert done.returncode == 2 and "CUDA is not available" in done.stderr


def test_train_reads_deterministic_and_timeout(monkeypatch):
    """``train`` applies ``train.deterministic`` and ``dist_timeout_s`` before anything else runs."""
    from utils.config import load_config
    from utils.train import loop as engine

    calls = []

    def stop(device, timeout_s):
        calls.append(("init", device, timeout_s))
        raise KeyboardInterrupt  # end the run here

    monkeypatch.setattr(engine, "set_deterministic", lambda flag: calls.append(("deterministic", flag)))
    monkeypatch.setattr(engine, "init_distributed", stop)
    cfg = load_config(
        REPO / "configs/demo.yaml", ["train.deterministic=true", "dist_timeout_s=60", "device=cpu"]
    )
    with pytest.raises(KeyboardInterrupt):
        engine.train(cfg)
    assert calls == [("deterministic", True), ("init", "cpu", 60.0)]
