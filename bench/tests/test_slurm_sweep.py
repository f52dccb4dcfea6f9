"""bench/slurm_sweep.sh without Slurm: its syntax (bash -n, shellcheck where installed); submit
mode against a fake sbatch that records what it was given (the array 0…N-1 on one GPU each, the
merge job after it); then what was submitted run here by hand, each array task with
SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT set as Slurm sets them, and the merge job's command:
the merged sweep equals the one-machine sweep in every number but the times. Bad input is
refused with its cause and fix.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from sweep_equal import REPO, SWEEP, assert_same_sweep, saved

SCRIPT = REPO / "bench" / "slurm_sweep.sh"

# Records each call's arguments (one per line, in call-N) and answers as `sbatch --parsable` does.
FAKE_SBATCH = """#!/usr/bin/env bash
n=$(ls "{log}" | wc -l)
printf '%s\\n' "$@" > "{log}/call-$n"
echo "$((1000 + n));cluster"
"""


def slurm_sweep(*args: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_script_parses():
    proc = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0 and not proc.stderr, proc.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck_finds_nothing():
    proc = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


@pytest.fixture
def env(tmp_path, binary) -> dict:
    """An environment with the fake sbatch first on PATH and the binary as SPEEDSCAPE_BIN."""
    fake = tmp_path / "fake-bin"
    (tmp_path / "sbatch-calls").mkdir()
    fake.mkdir()
    (fake / "sbatch").write_text(FAKE_SBATCH.format(log=tmp_path / "sbatch-calls"))
    (fake / "sbatch").chmod(0o755)
    return {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "SPEEDSCAPE_BIN": str(binary),
            "SPEEDSCAPE_DEVICE": "cpu"}


def test_submit_then_the_array_tasks_and_the_merge_equal_the_one_machine_sweep(tmp_path, env, whole_sweep):
    shared, out = tmp_path / "shared", tmp_path / "merged"
    proc = slurm_sweep("submit", "2", str(shared), str(out), "--", *SWEEP, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "array job 1000 (0-1), merge as job 1001" in proc.stdout
    assert (shared / "plan.json").is_file()

    array, merge = ((tmp_path / "sbatch-calls" / f"call-{i}").read_text().splitlines() for i in (0, 1))
    assert "--array=0-1" in array and "--gres=gpu:1" in array
    assert array[-3:] == [str(SCRIPT), "shard", str(shared)], "the array runs this script's shard mode"
    assert "--dependency=afterok:1000" in merge
    wrap = merge[merge.index("--wrap") + 1]

    task_env = {k: v for k, v in env.items() if not k.startswith("SLURM_")}
    for task in (0, 1):  # as Slurm runs each array task (in the folder it was submitted from)
        proc = subprocess.run(["bash", *array[-3:]], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                              env={**task_env, "SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_COUNT": "2"})
        assert proc.returncode == 0, proc.stderr
        assert f"shard {task + 1}/2 of plan.json: 3 runs" in proc.stdout
    proc = subprocess.run(["sh", "-c", wrap], cwd=tmp_path, env=task_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert_same_sweep(saved(out), whole_sweep)


def refused(proc: subprocess.CompletedProcess, *says: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "fix:" in proc.stderr, proc.stderr
    for s in says:
        assert s in proc.stderr, proc.stderr


def test_bad_input_is_refused(tmp_path, env):
    for n in ("0", "-2", "two"):
        refused(slurm_sweep("submit", n, str(tmp_path / "s"), "--", *SWEEP, cwd=tmp_path, env=env),
                f"N (the number of shards) is '{n}', not a whole number ≥ 1")
    missing = {**env, "SPEEDSCAPE_BIN": str(tmp_path / "no-such-speedscape")}
    refused(slurm_sweep("submit", "2", str(tmp_path / "s"), "--", *SWEEP, cwd=tmp_path, env=missing),
            "no-such-speedscape (SPEEDSCAPE_BIN or PATH) is not an executable file")
    assert not list((tmp_path / "sbatch-calls").iterdir()), "nothing submitted"
    # Shard mode outside a job array.
    (tmp_path / "s").mkdir(exist_ok=True)
    (tmp_path / "s" / "plan.json").write_text("{}")
    no_array = {k: v for k, v in env.items() if not k.startswith("SLURM_")}
    refused(slurm_sweep("shard", str(tmp_path / "s"), cwd=tmp_path, env=no_array),
            "SLURM_ARRAY_TASK_ID is '', not a task index")
    refused(slurm_sweep("shard", str(tmp_path / "s"), cwd=tmp_path,
                        env={**no_array, "SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "2"}),
            "array task 2 (min 0) is not one of 2 tasks")
    refused(slurm_sweep("merge", str(tmp_path / "empty"), str(tmp_path / "o"), cwd=tmp_path, env=env),
            "no shard folders")
    refused(slurm_sweep("frobnicate", cwd=tmp_path, env=env), "unknown mode 'frobnicate'")
