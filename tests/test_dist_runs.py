"""Two gloo processes on the CPU: a failing rank stops the job, RNG states resume per rank."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from runs import tiny_overrides

from datasets.checks import PROBED_SAMPLES
from datasets.demo import write_demo_dataset
from datasets.voc import read_name_list
from utils.runtime.checkpoint import load_checkpoint
from utils.runtime.data import SeededShardSampler

REPO = Path(__file__).resolve().parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo_dist")
    write_demo_dataset(root, num_train=8, num_val=2, seed=7)
    return root


def overrides(root: Path, work: Path, **extra) -> list[str]:
    items = {
        "train.batch_size": 2,  # one image per rank
        "train.max_iters": 4,
        "train.cam_iters": 1,
        "train.eval_iters": 1000,
        "afa.seg_label_switch_iter": 2,
        "val.max_images": 2,
    }
    return tiny_overrides(root, work, **{**items, **extra})


def run(cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def train_cmd(nproc: int, root: Path, work: Path, *flags: str, **extra) -> list[str]:
    launcher = TORCHRUN if nproc == 2 else [sys.executable]
    return [
        *launcher,
        "train_voc.py",
        "--config",
        "configs/demo.yaml",
        *flags,
        *overrides(root, work, **extra),
    ]


def test_a_failing_rank_ends_every_rank_with_its_error(demo_root, tmp_path):
    """Rank 1 reads a corrupt image after its first iteration while rank 0 waits in the gradient
    all-reduce."""
    root = tmp_path / "data"
    shutil.copytree(demo_root, root)
    names = read_name_list(root, "train")
    rank0 = {i for i, _ in SeededShardSampler(len(names), 1, rank=0, world_size=2, seed=1)}
    # rank 1's first sample after its first batch that neither rank 0 nor the start-up check
    # (datasets/checks.py decodes the first PROBED_SAMPLES ids of the split) reads
    order = [i for i, _ in SeededShardSampler(len(names), 1, rank=1, world_size=2, seed=1)]
    index = next(i for i in order[1:] if i not in rank0 and i >= PROBED_SAMPLES)
    bad = root / "JPEGImages" / f"{names[index]}.jpg"
    bad.write_bytes(b"not a jpeg")
    start = time.perf_counter()
    done = run(train_cmd(2, root, tmp_path / "work"))  # a hang fails here (300 s)
    seconds = time.perf_counter() - start
    out = done.stdout + done.stderr
    assert done.returncode != 0, out[-3000:]
    assert f"cannot read image file {bad}" in out, out[-3000:]
    summary = out.split("Root Cause")[-1]  # torchrun's report names the rank and, via @record, the error
    assert "rank      : 1" in summary and f"cannot read image file {bad}" in summary, out[-3000:]
    failing_iteration = order.index(index) + 1  # one sample per rank and iteration
    assert not (tmp_path / f"work/checkpoints/iter_{failing_iteration}.pt").exists()
    print(f"failing rank: job ended in {seconds:.1f}s with exit code {done.returncode}")


def _same_state(a: dict, b: dict) -> None:
    assert a["step"] == b["step"]
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    for pid, state in a["optimizer"]["state"].items():
        assert torch.equal(state["exp_avg"], b["optimizer"]["state"][pid]["exp_avg"]), pid


def test_resume_on_two_ranks_is_exact_and_on_one_is_clean(demo_root, tmp_path):
    """2 ranks: 4 straight = 2 + resume + 2, bit for bit; the same checkpoint resumes on 1 rank."""
    straight, split, single = tmp_path / "straight", tmp_path / "split", tmp_path / "single"
    for cmd in (train_cmd(2, demo_root, straight), train_cmd(2, demo_root, split, **{"train.stop_iter": 2})):
        done = run(cmd)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    saved = load_checkpoint(split / "checkpoints/last.pt")
    assert saved["step"] == 2 and len(saved["rng"]) == 2  # one RNG entry per rank
    shutil.copytree(split, single)
    for cmd in (train_cmd(2, demo_root, split, "--resume"), train_cmd(1, demo_root, single, "--resume")):
        done = run(cmd)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    a, b = load_checkpoint(straight / "checkpoints/last.pt"), load_checkpoint(split / "checkpoints/last.pt")
    _same_state(a, b)
    assert [torch.equal(x["torch"], y["torch"]) for x, y in zip(a["rng"], b["rng"])] == [True, True]
    one = load_checkpoint(single / "checkpoints/last.pt")
    assert one["step"] == 4 and len(one["rng"]) == 1
    log = (single / "train.log").read_text()
    assert "checkpoint saved on 2 process(es), resuming on 1" in log
    assert "resumed from" in log and "at iteration 2" in log


WORKER = """
import random, sys
import numpy as np, torch, torch.distributed as dist
from utils.runtime.checkpoint import gather_rng_states, load_checkpoint, restore_rank_rng, save_atomic

dist.init_process_group("gloo")
rank, path = dist.get_rank(), sys.argv[1]
torch.manual_seed(1); random.seed(1); np.random.seed(1)
torch.rand(rank + 1); [random.random() for _ in range(rank + 1)]; np.random.rand(rank + 1)
states = gather_rng_states()
expected = [torch.rand(1).item(), random.random(), float(np.random.rand())]
if rank == 0:
    save_atomic({"rng": states}, path)
dist.barrier()
torch.manual_seed(9); random.seed(9); np.random.seed(9)
restore_rank_rng(load_checkpoint(path)["rng"], rank, 2, None)
got = [torch.rand(1).item(), random.random(), float(np.random.rand())]
print(f"rank {rank} expected {expected} got {got}", flush=True)
dist.destroy_process_group()
"""


def test_each_rank_gets_back_its_own_random_streams(tmp_path):
    """Ranks whose streams diverged restore their own states, not rank 0's."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    done = run([*TORCHRUN, str(script), str(tmp_path / "rng.pt")])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    lines = sorted(line for line in done.stdout.splitlines() if line.startswith("rank "))
    assert len(lines) == 2, done.stdout
    draws = [line.split(" expected ")[1].split(" got ") for line in lines]
    assert all(expected == got for expected, got in draws)
    assert draws[0][0] != draws[1][0]  # the two ranks' streams differ, so a shared state would fail
