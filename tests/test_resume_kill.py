"""Resume after SIGKILL and after torn checkpoints: the final weights equal an uninterrupted run's.

The killed runs are real processes (``train_voc.py`` on the demo data, a checkpoint every
iteration); the uninterrupted reference runs beside them with the same thread count, so the
comparison is bit for bit on the CPU.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from runs import tiny_overrides

from datasets.demo import write_demo_dataset
from utils.config import load_config
from utils.runtime.checkpoint import load_checkpoint
from utils.train.loop import train

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[1]
MAX_ITERS = 8


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo_kill")
    write_demo_dataset(root, num_train=8, num_val=2, seed=5)
    return root


def overrides(root: Path, work: Path, **extra) -> list[str]:
    """Eight iterations through all three phases, a checkpoint (and iter_<n>.pt) after each."""
    items = {
        "train.max_iters": MAX_ITERS,
        "train.cam_iters": 2,
        "train.eval_iters": 1000,  # validation only at the end
        "train.ckpt_iters": 1,
        "afa.seg_label_switch_iter": 4,
        "val.max_images": 1,
    }
    return tiny_overrides(root, work, **{**items, **extra})


def start(root: Path, work: Path, resume: bool = False) -> subprocess.Popen:
    cmd = [sys.executable, "train_voc.py", "--config", "configs/demo.yaml", *overrides(root, work)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    out = work.parent / f"{work.name}.out"
    with open(out, "ab") as log:
        proc = subprocess.Popen(
            cmd + (["--resume"] if resume else []), cwd=REPO, env=env, stdout=log, stderr=log
        )
    proc.out = out
    return proc


def finish(proc: subprocess.Popen, timeout: float = 240) -> None:
    assert proc.wait(timeout=timeout) == 0, proc.out.read_text()[-3000:]


def wait_for(condition, proc: subprocess.Popen, poll: float = 0.02) -> float:
    """Poll until ``condition()``; returns the time. Fails if the process ends first."""
    while not condition():
        assert proc.poll() is None, proc.out.read_text()[-3000:]
        time.sleep(poll)
    return time.perf_counter()


def temporaries(ckpt: Path) -> list[Path]:
    return list(ckpt.glob(".*.tmp")) if ckpt.is_dir() else []


def assert_same_weights(a: Path, b: Path, steps: int = MAX_ITERS) -> None:
    sa, sb = load_checkpoint(a), load_checkpoint(b)
    assert sa["step"] == sb["step"] == steps
    for key, value in sa["model"].items():
        assert torch.equal(value, sb["model"][key]), key
    for pid, state in sa["optimizer"]["state"].items():
        assert torch.equal(state["exp_avg_sq"], sb["optimizer"]["state"][pid]["exp_avg_sq"]), pid
    assert torch.equal(sa["rng"][0]["torch"], sb["rng"][0]["torch"])


def test_sigkill_at_random_moments_then_resume_is_exact(demo_root, tmp_path):
    """Kill -9 once at a random delay and once while a checkpoint is being written; resume twice."""
    seed = int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)
    reference = start(demo_root, tmp_path / "ref")
    work = tmp_path / "killed"
    ckpt = work / "checkpoints"
    proc = start(demo_root, work)
    t1 = wait_for(lambda: (ckpt / "iter_1.pt").is_file(), proc)
    t2 = wait_for(lambda: (ckpt / "iter_2.pt").is_file(), proc)
    delay = rng.uniform(0.0, 2.0 * (t2 - t1))  # within the next two iterations (six remain)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, f"the run ended before the kill (seed {seed})"
    first = load_checkpoint(ckpt / "last.pt")["step"]

    proc = start(demo_root, work, resume=True)
    wait_for(lambda: load_checkpoint(ckpt / "last.pt")["step"] > first, proc)
    while proc.poll() is None and not temporaries(ckpt):  # catch it mid-write
        time.sleep(0.0005)
    proc.send_signal(signal.SIGKILL)
    killed_mid_write = proc.wait() == -signal.SIGKILL and bool(temporaries(ckpt))
    second = load_checkpoint(ckpt / "last.pt")["step"]

    finish(start(demo_root, work, resume=True))
    finish(reference)
    assert_same_weights(tmp_path / "ref/checkpoints/last.pt", ckpt / "last.pt")
    assert not temporaries(ckpt), "the resumed run removes what the killed writer left"
    log = (work / "train.log").read_text()
    assert f"resumed from {ckpt / 'last.pt'} at iteration {first}" in log, (seed, delay)
    assert f"at iteration {second}" in log
    print(f"seed {seed}: killed after {delay:.2f}s at step {first}, mid-write {killed_mid_write} at {second}")


def _in_process(root: Path, work: Path, resume: bool = False, **extra) -> None:
    train(load_config(REPO / "configs/demo.yaml", overrides(root, work, **extra)), resume=resume)


def test_torn_last_falls_back_to_newest_intact_iter(demo_root, tmp_path):
    """last.pt and iter_3.pt torn (truncated): resume from iter_2.pt, warn, finish identical."""
    short = {"train.max_iters": 4, "train.cam_iters": 1, "afa.seg_label_switch_iter": 2}
    _in_process(demo_root, tmp_path / "straight", **short)
    work = tmp_path / "torn"
    _in_process(demo_root, work, **short, **{"train.stop_iter": 3})
    ckpt = work / "checkpoints"
    for name in ("last.pt", "iter_3.pt"):
        data = (ckpt / name).read_bytes()
        (ckpt / name).write_bytes(data[: len(data) // 2])
    (ckpt / ".last.pt.abc123.tmp").write_bytes(b"partial")  # a killed writer's leftover
    _in_process(demo_root, work, resume=True, **short)
    assert_same_weights(tmp_path / "straight/checkpoints/last.pt", ckpt / "last.pt", steps=4)
    log = (work / "train.log").read_text()
    assert f"resuming from {ckpt / 'iter_2.pt'} because last.pt: unreadable" in log
    assert "iter_3.pt: unreadable" in log and f"resumed from {ckpt / 'iter_2.pt'} at iteration 2" in log
    assert not (ckpt / ".last.pt.abc123.tmp").exists()
