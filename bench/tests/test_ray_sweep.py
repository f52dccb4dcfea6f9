"""bench/ray_sweep.py on a local Ray instance (2 CPUs, no dashboard) with the micro model: its
merged sweep equals the one-machine `speedscape sweep` in every number but the times, each shard
records its device and provider, a shard whose task fails is retried and resumes (keeping its
finished runs), in both modes (files back through Ray, or a shared folder); and bad input (no
binary, N < 1, no Ray) is refused with its cause and fix. Skipped only where ray is not
importable (bench/requirements.txt pins it, so not in the bench venv).

    SPEEDSCAPE_BIN=target/debug/speedscape .venv-bench/bin/python -m pytest bench/tests/test_ray_sweep.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sweep_equal import REPO, RUNS, SWEEP, assert_same_sweep, saved

RAY_SWEEP = REPO / "bench" / "ray_sweep.py"

# A speedscape that crashes once on shard 1 of 2: the real `sweep run`, then the newest run's
# JSON deleted (as if killed while writing it) and exit 3. Ray's retry must resume the shard.
FLAKY = """#!/bin/sh
if [ "$1 $2" = "sweep run" ] && [ ! -e "{marker}" ]; then
  case " $* " in *" --shard 1/2 "*)
    touch "{marker}"
    "{real}" "$@" || exit 1
    out=""; prev=""
    for a in "$@"; do [ "$prev" = "--out" ] && out="$a"; prev="$a"; done
    rm -f "$(ls "$out"/runs/run-*.json | tail -n 1)"
    exit 3;;
  esac
fi
exec "{real}" "$@"
"""


def ray_sweep(*args: str, cwd: Path, env: dict | None = None, python: list[str] | None = None):
    return subprocess.run([*(python or [sys.executable, str(RAY_SWEEP)]), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def run_on_ray(tmp: Path, binary: Path, *mode: str) -> tuple[dict, subprocess.CompletedProcess]:
    pytest.importorskip("ray", reason="ray is not installed (bench/requirements.txt pins it: bench/setup.sh)")
    flaky = tmp / "speedscape-flaky"
    flaky.write_text(FLAKY.format(marker=tmp / "crashed-once", real=binary))
    flaky.chmod(0o755)
    timings = tmp / "timings.json"
    proc = ray_sweep("--shards", "2", "--local-cpus", "2", "--device", "cpu", "--max-retries", "1",
                     "--speedscape", str(flaky), "--out", str(tmp / "out"), "--work", str(tmp / "work"),
                     "--timings", str(timings), *mode, "--", *SWEEP, cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (tmp / "crashed-once").exists(), "shard 1's first attempt ran (and failed)"
    return json.loads(timings.read_text()), proc


@pytest.fixture(scope="module")
def transfer_run(binary, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ray-transfer")
    return tmp, *run_on_ray(tmp, binary)


@pytest.fixture(scope="module")
def shared_run(binary, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ray-shared")
    return tmp, *run_on_ray(tmp, binary, "--shared-dir", str(tmp / "shared"))


@pytest.mark.parametrize("run", ["transfer_run", "shared_run"])
def test_merged_ray_sweep_equals_the_one_machine_sweep(run, whole_sweep, request):
    tmp, timings, proc = request.getfixturevalue(run)
    merged = saved(tmp / "out")
    assert timings["merged"] == str(merged)
    assert timings["runs"] == RUNS and timings["shards"] == 2
    assert_same_sweep(merged, whole_sweep)
    assert f"into {merged}" in proc.stdout


@pytest.mark.parametrize("run,folder", [("transfer_run", "work/shards"), ("shared_run", "shared")])
def test_each_shard_records_its_device_and_provider(run, folder, request):
    tmp, timings, _ = request.getfixturevalue(run)
    assert timings["mode"] == ("shared-dir" if run == "shared_run" else "transfer")
    assert [s["shard"] for s in timings["per_shard"]] == ["1/2", "2/2"]
    for k, shard in enumerate(timings["per_shard"], start=1):
        record = json.loads((tmp / folder / f"shard-{k}" / "shard.json").read_text())
        assert record["shard"] == {"k": k, "n": 2}
        assert record["provider"] == "CPUExecutionProvider"
        assert record["device"]
        assert (shard["provider"], shard["device"]) == (record["provider"], record["device"])


@pytest.mark.parametrize("run", ["transfer_run", "shared_run"])
def test_a_failed_shard_is_retried_and_resumes(run, request):
    _, timings, _ = request.getfixturevalue(run)
    first, second = timings["per_shard"]
    # Shard 1's first attempt ran its 3 runs, then lost the last one's record and failed: the
    # retry kept 2 and ran 1. Shard 2 ran once.
    assert (first["attempts"], first["runs"], first["kept"], first["ran"]) == (2, 3, 2, 1)
    assert (second["attempts"], second["runs"], second["kept"], second["ran"]) == (1, 3, 0, 3)
    assert first["runs"] + second["runs"] == RUNS


def test_timings_add_up(transfer_run):
    _, timings, _ = transfer_run
    overheads = timings["overheads_s"]
    assert set(overheads) == {"ray_import", "ray_start", "plan", "transfer", "merge", "ray_stop"}
    assert all(v > 0 for v in overheads.values()), overheads
    # The total is the shards' time (which holds the transfer) and the other overheads, little else.
    accounted = timings["shards_s"] + sum(v for k, v in overheads.items() if k != "transfer")
    assert accounted <= timings["total_s"] < accounted + 1.0
    for shard in timings["per_shard"]:
        assert shard["wall_s"] <= shard["since_first_attempt_s"] <= timings["shards_s"]
        # Of the last attempt: its runs, the model load and the rest make up its wall time.
        assert 0 < shard["runs_s"] and 0 < shard["model_load_s"] and 0 <= shard["other_s"]
        assert shard["runs_s"] + shard["model_load_s"] + shard["other_s"] == pytest.approx(shard["wall_s"])
        assert shard["bytes"] > 0
    # Shard 1's first attempt is in its time since the first attempt, not in the last one's.
    first = timings["per_shard"][0]
    assert first["since_first_attempt_s"] > first["wall_s"] + first["runs_s"]
    # The files came back through Ray: every run's JSON and PNG.
    shard_files = sorted(p.name for p in (transfer_run[0] / "work/shards/shard-2/runs").iterdir())
    assert len(shard_files) == 2 * 3


def test_the_shared_dir_mode_transfers_nothing(shared_run):
    tmp, timings, _ = shared_run
    assert timings["overheads_s"]["transfer"] == 0
    assert all("bytes" not in s for s in timings["per_shard"])
    assert not (tmp / "work" / "shards").exists()
    assert (tmp / "shared" / "plan.json").is_file()


# ---------------------------------------------------------------------------------------------
# Bad input: refused before Ray starts, with the cause and the fix.


def refused(proc: subprocess.CompletedProcess, *says: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "fix:" in proc.stderr, proc.stderr
    for s in says:
        assert s in proc.stderr, proc.stderr
    return proc.stderr


def test_a_missing_binary_is_refused(tmp_path):
    missing = tmp_path / "no-such-speedscape"
    refused(ray_sweep("--shards", "2", "--speedscape", str(missing), cwd=tmp_path),
            f"{missing}, is not an executable file", "--speedscape")
    env = {k: v for k, v in os.environ.items() if k != "SPEEDSCAPE_BIN"}
    env["PATH"] = str(tmp_path)  # no speedscape on it
    refused(ray_sweep("--shards", "2", cwd=tmp_path, env=env),
            "no speedscape binary", "SPEEDSCAPE_BIN")
    assert not list(tmp_path.glob("speedscape-out*")), "nothing written"


@pytest.mark.parametrize("n", ["0", "-1", "two"])
def test_fewer_than_one_shard_is_refused(n, tmp_path, binary):
    refused(ray_sweep("--shards", n, "--speedscape", str(binary), cwd=tmp_path),
            f"{n!r} is not a whole number ≥ 1")


def test_ray_not_installed_is_refused(tmp_path, binary):
    # A Python where `import ray` fails, as in a venv without it.
    no_ray = [sys.executable, "-c",
              "import runpy, sys; sys.modules['ray'] = None; sys.argv = sys.argv[1:]; "
              "runpy.run_path(sys.argv[0], run_name='__main__')", str(RAY_SWEEP)]
    refused(ray_sweep("--shards", "2", "--speedscape", str(binary), cwd=tmp_path, python=no_ray),
            "Ray is not installed", "bench/setup.sh")
