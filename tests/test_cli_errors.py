"""One clear line per user mistake: the CLI wrapper, command lines in any order, config and device."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common.errors import ConfigError, DataError, MissingFileError, UserError
from methods.registry import build_method
from utils.cli import error_lines, run, split_overrides
from utils.config import load_config
from utils.runtime.dist import resolve_device
from utils.train.loop import parse_args as train_args

REPO = Path(__file__).resolve().parents[1]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    parser.add_argument("--out")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--ids", nargs="+", default=[])
    return parser


def test_flags_and_overrides_mix_in_any_order():
    argv = [
        "train.max_iters=5",
        "--resume",
        "device=cpu",
        "--config",
        "x.yaml",
        "--ids",
        "a",
        "b",
        "c.d=[1,2]",
    ]
    args, overrides = split_overrides(_parser(), argv)
    assert args.config == "x.yaml" and args.resume and args.ids == ["a", "b"]
    assert overrides == ["train.max_iters=5", "device=cpu", "c.d=[1,2]"]
    args, overrides = split_overrides(_parser(), ["--out", "a=b", "x=1"])  # an option's value stays its value
    assert args.out == "a=b" and overrides == ["x=1"]
    assert train_args(["k.a=1", "--resume", "k.b=2"], "configs/voc.yaml") == (
        "configs/voc.yaml",
        True,
        ["k.a=1", "k.b=2"],
    )


def test_a_token_that_is_neither_flag_nor_override_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        split_overrides(_parser(), ["--resume", "oops"])
    assert info.value.code == 2 and "unrecognized arguments: oops" in capsys.readouterr().err


def _fails(err: BaseException):
    def main(argv):
        raise err

    return main


def test_run_prints_one_or_two_lines_and_the_exit_status(capsys, monkeypatch):
    monkeypatch.delenv("AFA_DEBUG", raising=False)
    assert run(_fails(ConfigError("bad key", hint="try this")), []) == 2
    assert capsys.readouterr().err.splitlines() == ["error: bad key", "hint: try this"]
    assert run(_fails(DataError("bad image x.jpg")), []) == 1
    assert capsys.readouterr().err.splitlines() == ["error: bad image x.jpg"]
    assert run(_fails(FileNotFoundError(2, "No such file or directory", "/x/y")), []) == 1
    assert capsys.readouterr().err.splitlines() == ["error: No such file or directory: /x/y"]
    assert run(lambda argv: 3, []) == 3 and run(lambda argv: {"a": 1}, []) == 0


def test_debug_shows_the_traceback_and_unexpected_errors_keep_theirs(monkeypatch):
    monkeypatch.delenv("AFA_DEBUG", raising=False)
    with pytest.raises(DataError):
        run(_fails(DataError("x")), ["--debug"])
    monkeypatch.setenv("AFA_DEBUG", "1")
    with pytest.raises(DataError):
        run(_fails(DataError("x")), [])
    monkeypatch.delenv("AFA_DEBUG")
    with pytest.raises(RuntimeError, match="a bug"):
        run(_fails(RuntimeError("a bug")), [])


def test_worker_traceback_is_reduced_to_the_original_message():
    """What torch's DataLoader re-raises from a worker: the exception type with the worker traceback."""
    wrapped = MissingFileError(
        "Caught MissingFileError in DataLoader worker process 0.\n"
        "Original Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\n'
        "common.errors.MissingFileError: image file not found: /d/JPEGImages/a.jpg"
    )
    assert error_lines(wrapped) == ["error: image file not found: /d/JPEGImages/a.jpg"]


def test_user_errors_survive_a_dataloader_worker(tmp_path):
    class Broken(torch.utils.data.Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, i):
            raise DataError(f"cannot read image file {tmp_path}/a.jpg: truncated")

    loader = torch.utils.data.DataLoader(Broken(), num_workers=1)
    with pytest.raises(DataError) as info:
        next(iter(loader))
    assert error_lines(info.value) == [f"error: cannot read image file {tmp_path}/a.jpg: truncated"]


def test_command_line_error_is_one_line_with_exit_2_and_debug_gives_the_traceback(subprocess_env):
    command = [sys.executable, "train_voc.py", "--config", "configs/demo.yaml", "train.max_iter=5"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, env=subprocess_env)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("hint: ")
    assert "invalid config key 'train.max_iter'" in lines[0] and "max_iters" in done.stderr
    debug = subprocess.run(
        command,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(subprocess_env, AFA_DEBUG="1"),
    )
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="device='gpu'"):
        load_config(REPO / "configs/demo.yaml", ["device=gpu"])
    with pytest.raises(ConfigError, match="train.max_iters"):
        load_config(REPO / "configs/demo.yaml", ["train.max_iters=0"])
    with pytest.raises(ConfigError, match="rescale_range"):
        load_config(REPO / "configs/demo.yaml", ["dataset.rescale_range=[2.0,1.0]"])
    with pytest.raises(ConfigError, match="val.batch_size must be >= 1"):
        load_config(REPO / "configs/demo.yaml", ["val.batch_size=0"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not a valid YAML"):
        load_config(bad)
    with pytest.raises(MissingFileError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_short_schedule_is_a_warning_not_an_error():
    cfg = load_config(REPO / "configs/demo.yaml", ["train.max_iters=50", "train.cam_iters=100"])
    (warning,) = build_method(cfg).training_warnings()
    assert "train.cam_iters=100 >= train.max_iters=50" in warning
    assert build_method(load_config(REPO / "configs/demo.yaml")).training_warnings() == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:1", "auto:0"])
def test_device_without_cuda_is_a_config_error(name):
    with pytest.raises(ConfigError, match="device=") as info:
        resolve_device(name)
    assert isinstance(info.value, UserError) and info.value.exit_code == 2
    assert resolve_device("auto") == torch.device("cpu")
