"""utils.runtime.progress: tqdm bars on a terminal, periodic plain lines in logs (Slurm .out, CI, | tee)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tqdm import tqdm

from datasets.demo import write_demo_dataset
from utils.runtime.progress import PlainProgress, progress, use_bar

REPO = Path(__file__).resolve().parents[1]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_at_the_interval_and_at_the_end():
    clock, out = FakeClock(), io.StringIO()
    bar = PlainProgress(range(10), desc="train", file=out, interval=30.0, clock=clock)
    for i in bar:
        clock.now += 10.0  # each step takes 10 s: a line after steps 3, 6 and 9, and one at the end
        bar.set_postfix({"cls": f"{0.5 - i / 100:.3f}"})
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and len(lines) == 4
    assert lines[0] == "train: 3/10 (30%) 00:30 elapsed, 10.00s/it, eta 01:10 | cls=0.480"
    assert lines[-1] == "train: 10/10 (100%) 01:40 elapsed, 10.00s/it | cls=0.410"


def test_initial_step_counts_in_the_position_not_in_the_rate():
    clock, out = FakeClock(), io.StringIO()
    bar = PlainProgress(range(40, 50), total=50, initial=40, desc="train", file=out, interval=0, clock=clock)
    clock.now += 4.0
    bar.update(2)
    assert out.getvalue() == "train: 42/50 (84%) 00:04 elapsed, 2.00s/it, eta 00:16\n"


def test_disabled_and_unleft_bars_stay_quiet():
    clock, out = FakeClock(), io.StringIO()
    for kwargs in ({"disable": True}, {"leave": False}):
        for _ in PlainProgress(range(3), file=out, interval=1e9, clock=clock, **kwargs):
            clock.now += 1.0
    assert out.getvalue() == ""


def test_bar_only_on_a_terminal(monkeypatch):
    monkeypatch.delenv("AFA_PROGRESS", raising=False)
    assert use_bar(TTY()) and not use_bar(io.StringIO())
    assert isinstance(progress(range(2), file=TTY(), disable=True), tqdm)
    assert isinstance(progress(range(2), file=io.StringIO()), PlainProgress)
    monkeypatch.setenv("AFA_PROGRESS", "plain")
    assert not use_bar(TTY())
    monkeypatch.setenv("AFA_PROGRESS", "bar")
    assert use_bar(io.StringIO())
    monkeypatch.setenv("AFA_PROGRESS", "off")
    assert progress(range(2), file=io.StringIO()).disable


def test_training_through_a_pipe_writes_lines_without_carriage_returns(tmp_path):
    """train_voc.py with stdout and stderr piped (as under Slurm or CI): plain progress lines, no \\r."""
    root = tmp_path / "demo"
    write_demo_dataset(root, num_train=4, num_val=2, seed=1)
    overrides = {
        "dataset.root_dir": root,
        "dataset.name_list_dir": root,
        "dataset.crop_size": 64,
        "dataset.num_workers": 0,
        "train.batch_size": 2,
        "train.max_iters": 3,
        "train.cam_iters": 1,
        "train.eval_iters": 3,
        "train.log_iters": 1,
        "work_dir.dir": tmp_path / "work",
        "device": "cpu",
    }
    cmd = [sys.executable, "train_voc.py", "--config", "configs/demo.yaml"]
    cmd += [f"{k}={v}" for k, v in overrides.items()]
    env = dict(os.environ, OMP_NUM_THREADS="1", AFA_PROGRESS_INTERVAL="0")
    env.pop("AFA_PROGRESS", None)
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = done.stdout + done.stderr
    assert "\r" not in text
    assert "train: 3/3 (100%)" in text and "validate: 2/2 (100%)" in text
    assert "iter 3  cls" in done.stdout  # the engine's own log lines are unchanged


@pytest.mark.parametrize("interval", ["0", "60"])
def test_interval_comes_from_the_environment(monkeypatch, interval):
    monkeypatch.setenv("AFA_PROGRESS", "plain")
    monkeypatch.setenv("AFA_PROGRESS_INTERVAL", interval)
    assert progress(range(2)).interval == float(interval)
