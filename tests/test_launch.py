"""The launch scripts parse, and pass the right torchrun arguments (srun/torchrun stubbed)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((REPO / "launch").glob("*.sh"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_bash_syntax(script):
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0


def _stub_bin(tmp_path: Path) -> Path:
    """srun prints its flags (stderr) and runs its command; scontrol names one host; torchrun and
    python print their arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    stubs = {
        "srun": '#!/usr/bin/env bash\necho "srun $*" >&2\n'
        + 'while [[ "$1" == --* ]]; do shift; done\nexec "$@"\n',
        "scontrol": "#!/usr/bin/env bash\necho node001\n",
        "torchrun": '#!/usr/bin/env bash\necho "torchrun $*"\n',
        "python": '#!/usr/bin/env bash\necho "python $*"\n',
    }
    for name, body in stubs.items():
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    return bin_dir


def _run_both(script: str, tmp_path: Path, env_extra: dict, *args: str) -> tuple[str, str]:
    env = dict(os.environ, PATH=f"{_stub_bin(tmp_path)}:{os.environ['PATH']}", VENV=str(tmp_path / "none"))
    env.update({"SLURM_JOB_NODELIST": "node001", "SLURM_JOB_ID": "42", "SLURM_SUBMIT_DIR": str(REPO)})
    env.update(env_extra)
    done = subprocess.run(["bash", script, *args], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip(), done.stderr


def _run(script: str, tmp_path: Path, env_extra: dict, *args: str) -> str:
    return _run_both(script, tmp_path, env_extra, *args)[0]


def test_slurm_voc_defaults(tmp_path):
    out = _run("launch/slurm_voc.sh", tmp_path, {"WORK_DIR": str(tmp_path / "wd")}, "train.max_iters=10")
    assert out.startswith("torchrun --nnodes=1 --nproc_per_node=2 --rdzv_id=42")
    assert "--rdzv_endpoint=node001:10042 train_voc.py --config configs/voc.yaml" in out
    assert f"work_dir.dir={tmp_path / 'wd'}" in out and out.endswith("train.max_iters=10")
    assert "--resume" not in out


def test_slurm_coco_gpus_data_root_and_auto_resume(tmp_path):
    work = tmp_path / "wd"
    (work / "checkpoints").mkdir(parents=True)
    (work / "checkpoints" / "last.pt").write_bytes(b"")
    env = {"WORK_DIR": str(work), "GPUS_PER_NODE": "8", "DATA_ROOT": "/data/coco"}
    out = _run("launch/slurm_coco.sh", tmp_path, env)
    assert "--nproc_per_node=8" in out and "train_coco.py --config configs/coco.yaml" in out
    assert "dataset.root_dir=/data/coco" in out and "configs/coco.yaml --resume work_dir.dir=" in out


def test_local_script(tmp_path):
    out = _run("launch/train_local.sh", tmp_path, {"GPUS": "4", "DATASET": "coco"}, "train.seed=2")
    assert (
        out
        == "torchrun --standalone --nproc_per_node=4 train_coco.py --config configs/coco.yaml train.seed=2"
    )
    out = _run("launch/train_local.sh", tmp_path, {"GPUS": "1", "RESUME": "1"})
    assert out == "python train_voc.py --config configs/voc.yaml --resume"


def test_slurm_scripts_keep_the_log_and_requeue():
    """--open-mode=append: a requeued attempt appends to, instead of truncating, the first one's log."""
    for script in ("slurm_train.sh", "slurm_voc.sh", "slurm_coco.sh"):
        lines = (REPO / "launch" / script).read_text().splitlines()
        assert "#SBATCH --open-mode=append" in lines and "#SBATCH --requeue" in lines, script


def test_srun_gets_the_cpus_and_each_job_its_own_port(tmp_path):
    env = {"WORK_DIR": str(tmp_path / "wd"), "SLURM_CPUS_PER_TASK": "16"}
    out, err = _run_both("launch/slurm_voc.sh", tmp_path, env)
    assert "srun --kill-on-bad-exit=1 --cpus-per-task=16 torchrun" in err
    assert "--rdzv_endpoint=node001:10042 " in out
    out, err = _run_both("launch/slurm_voc.sh", tmp_path, env | {"SLURM_JOB_ID": "123457"})
    assert "--rdzv_endpoint=node001:13457 " in out and "--rdzv_id=123457" in out
    out, err = _run_both("launch/slurm_voc.sh", tmp_path, {"MASTER_PORT": "29400", "SLURM_CPUS_PER_TASK": ""})
    assert "--rdzv_endpoint=node001:29400 " in out and "--cpus-per-task" not in err


def test_requeued_attempt_resumes_from_an_iter_checkpoint(tmp_path):
    """A job killed before last.pt was (re)written still resumes: any iter_<n>.pt counts."""
    work = tmp_path / "wd"
    (work / "checkpoints").mkdir(parents=True)
    (work / "checkpoints" / "iter_3.pt").write_bytes(b"")
    out, err = _run_both("launch/slurm_voc.sh", tmp_path, {"WORK_DIR": str(work), "SLURM_RESTART_COUNT": "1"})
    assert f"--config configs/voc.yaml --resume work_dir.dir={work}" in out and "attempt 2, resume yes" in err
    out, err = _run_both("launch/slurm_voc.sh", tmp_path, {"WORK_DIR": str(work), "AUTO_RESUME": "0"})
    assert "--resume" not in out and "attempt 1, resume no" in err
