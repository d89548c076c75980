"""scripts/benchmark.py: every subcommand runs tiny and prints its JSON record; gpu_check.sh dry run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from utils.bench.harness import STAGES, SUBCOMMANDS, Subcommand, register
from utils.bench.runs import phase_iteration

REPO = Path(__file__).resolve().parents[1]
TINY = ["--backbone", "mit_tiny", "--crop", "128", "--batch", "2", "--iters", "1", "--warmup", "0", "--json"]


def run_benchmark(args: list[str], env: dict[str, str]) -> dict:
    out = subprocess.run(
        [sys.executable, "scripts/benchmark.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", ["train-step", "validate", "infer", "par", "random-walk", "rloss"])
def test_subcommand_prints_one_json_record(name, subprocess_env):
    res = run_benchmark([name, *TINY], subprocess_env)
    assert res["subcommand"] == name
    assert res["sec_per_iter"] > 0 and res["images_per_sec"] > 0 and res["peak_mem_bytes"] > 0
    assert len(res["times"]) == 1 and res["sec_per_iter"] == res["times"][0]
    assert set(STAGES) <= set(res["breakdown"])
    s = res["settings"]
    assert (s["backbone"], s["crop"], s["batch"], s["device"], s["amp"], s["fast"]) == (
        "mit_tiny",
        128,
        2,
        "cpu",
        "none",
        False,
    )
    if name == "train-step":  # the step's regions are timed and lie within the step
        assert all(res["breakdown"][k] > 0 for k in STAGES)
        assert sum(res["breakdown"].values()) <= res["sec_per_iter"] * 1.001
        assert res["n_iter"] == 2001  # phase 2 of the VOC schedule


def test_fast_and_phase_options_reach_the_step(subprocess_env):
    res = run_benchmark(["train-step", *TINY, "--fast", "--phase", "3"], subprocess_env)
    assert res["settings"]["fast"] is True and res["n_iter"] == 6001


def test_phase_iterations_and_registry():
    assert [phase_iteration(p, 2000, 6000) for p in (1, 2, 3)] == [0, 2001, 6001]
    assert {"train-step", "validate", "infer", "par", "random-walk", "rloss"} <= set(SUBCOMMANDS)
    with pytest.raises(ValueError, match="registered twice"):
        register(Subcommand("par", "again", lambda args: {}))


def test_gpu_check_script_parses_and_dry_runs_on_the_cpu(tmp_path, subprocess_env):
    script = REPO / "scripts/gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    env = dict(subprocess_env, PYTHON=sys.executable)
    out = subprocess.run(
        ["bash", str(script), str(tmp_path / "out"), "--device", "cpu", "--quick"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    summary = json.loads((tmp_path / "out/summary.json").read_text())
    ran = {k: v["rc"] for k, v in summary["steps"].items() if k != "golden_device"}
    assert ran == {k: 0 for k in ran}, summary["steps"]
    assert {"golden", "bench_train_fp32", "bench_train_bf16", "demo_plain", "demo_torchrun"} <= set(ran)
    for name in (
        "bench_train_fp32",
        "bench_train_bf16",
        "bench_validate",
        "bench_validate_batched",
        "bench_infer",
    ):
        assert summary["bench"][name]["sec_per_iter"] > 0, name
    assert (tmp_path / "out/demo_torchrun/checkpoints/last.pt").is_file()


def test_compile_option_reaches_the_config_and_the_record():
    from scripts.benchmark import build_parser
    from utils.bench.harness import bench_config, settings_of

    args = build_parser().parse_args(["train-step", "--method", "mctformer_v2", "--backbone", "deit_tiny"])
    assert bench_config(args).train.compile is False
    args = build_parser().parse_args(
        ["train-step", "--method", "mctformer_v2", "--backbone", "deit_tiny", "--compile"]
    )
    assert bench_config(args).train.compile is True
    assert settings_of(args, __import__("torch").device("cpu"))["compile"] is True
