#!/usr/bin/env python
"""Owns running one speedscape sweep's shards as Ray tasks and merging them on the driver.

    .venv-bench/bin/python bench/ray_sweep.py --shards 4 --out OUT -- --preset all --seeds 4
    .venv-bench/bin/python bench/ray_sweep.py --address auto --shards 8 --plan plan.json \
        --shared-dir /nfs/sweep1 --timings timings.json --out OUT

The steps are the CLI's own (README, "Sharded sweeps"): `speedscape sweep plan` on the driver
(or `--plan`, a plan made before), then one Ray task per shard, each running
`speedscape sweep run --plan … --shard K/N --out <shard folder>` in a subprocess, then
`speedscape sweep merge` of every shard folder into a new `sweep-<time>/` under `--out`, the very
files a one-machine `speedscape sweep` writes. Everything after `--` goes to `sweep plan`.

Where the shard folders live:
  default       each task runs into a scratch folder on its node
                ($TMPDIR/speedscape-ray/<plan hash>/shard-K-of-N), then returns the folder's
                files as bytes (a shard of SD v1.5 images is a few MB of PNGs) and deletes it once
                finished; the driver writes them under <--work>/shards/. The plan goes to the
                tasks as bytes too: no shared filesystem needed.
  --shared-dir  a folder every node sees at the same path (NFS, Lustre): the plan is copied
                there and each task runs into DIR/shard-K; nothing is transferred through Ray.

Every node needs the speedscape binary and the model folder the plan names at the same paths
(`--model-dir` gives tasks another model path; `sweep run` checks it is the same model by its
manifest's SHA-256) and ONNX Runtime (ORT_DYLIB_PATH is passed on when set). A task that fails
(speedscape exits non-zero, or its worker dies) is retried up to `--max-retries` times and
resumes its shard: the CLI keeps a shard's finished runs (in the default mode when the retry
lands on the same node, in --shared-dir mode on any).

Resources: each task asks for `--gpus-per-shard` GPUs (default: 1 when the cluster has GPUs,
else 0) and `--cpus-per-shard` CPUs (default 1). Without --address a local Ray instance is
started (no dashboard) with `--local-cpus` CPUs (default: all).

`--timings FILE` writes JSON: the total wall time; the time of the shards (submit to the last
one gathered, transfer included); the overheads (importing Ray, starting or joining it, plan,
transfer, merge, stopping Ray); per shard the wall time of its last attempt and since its first,
queueing, attempts, runs kept and run, and of the last attempt the time of its runs, the model
load and the rest (process start, ONNX Runtime's set-up, writing images), its device and
provider (from the shard's shard.json), host and bytes transferred.

Environment: bench/requirements.txt (pins ray).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TIMINGS_FORMAT = "speedscape-ray-sweep-timings/1"


class SweepError(RuntimeError):
    """A problem the user can fix: what went wrong and how to fix it, printed without a traceback."""

    def __init__(self, cause: str, fix: str):
        super().__init__(f"{cause}; fix: {fix}")
        self.cause = cause
        self.fix = fix


class ShardFailed(RuntimeError):
    """`speedscape sweep run` exited non-zero in a task; Ray retries the task on this."""


# ---------------------------------------------------------------------------------------------
# Inputs: the command line, the binary, Ray


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """Our flags, and the sweep's flags after the first `--` (passed to `sweep plan`)."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a whole number ≥ 1; fix: pass the number of shards (or tasks), e.g. --shards 2")
    return n


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    ours, sweep_flags = split_argv(argv)
    p = argparse.ArgumentParser(
        prog="ray_sweep.py", description=__doc__.split("\n\n")[0],
        epilog="Everything after -- is passed to `speedscape sweep plan` (e.g. -- --preset lcm --seeds 4).")
    p.add_argument("--shards", type=positive_int, required=True, help="N: how many shards (Ray tasks), ≥ 1")
    p.add_argument("--out", type=Path, default=Path("speedscape-out"),
                   help="merge writes a new sweep-<time>/ folder under this one (default ./speedscape-out)")
    p.add_argument("--plan", type=Path, help="an existing plan (`speedscape sweep plan --out`) instead of making one")
    p.add_argument("--work", type=Path,
                   help="where the plan and the gathered shard folders go (default: a new ray-sweep-<time>/ under --out)")
    p.add_argument("--shared-dir", type=Path,
                   help="a folder every node sees at the same path: shards run into it, nothing goes through Ray")
    p.add_argument("--address", help="the Ray cluster to join (e.g. auto, ray://head:10001); default: start a local one")
    p.add_argument("--local-cpus", type=positive_int, help="CPUs of the local Ray instance (default: all)")
    p.add_argument("--gpus-per-shard", type=float,
                   help="GPUs per task (default: 1 when the cluster has GPUs, else 0)")
    p.add_argument("--cpus-per-shard", type=float, default=1.0, help="CPUs per task (default 1)")
    p.add_argument("--max-retries", type=int, default=2, help="times Ray retries a failed shard task (default 2)")
    p.add_argument("--speedscape", type=Path,
                   help="the speedscape binary on every node (default: $SPEEDSCAPE_BIN, else speedscape on PATH)")
    p.add_argument("--device", help="`sweep run --device` for every shard (default: the config's runtime.device)")
    p.add_argument("--model-dir", type=Path, help="`sweep run --model-dir`: the plan's model at another path on the nodes")
    p.add_argument("--config", type=Path, help="`--config` for `sweep run` and `sweep merge` (read on every node)")
    p.add_argument("--timings", type=Path, help="write the timings (JSON) here")
    args = p.parse_args(ours)
    if args.plan and sweep_flags:
        p.error("--plan and sweep flags after -- both given; fix: drop one (the flags only make a new plan)")
    if "--out" in sweep_flags:
        p.error("--out after -- would be `sweep plan --out`; fix: give the merged result's folder as "
                "ray_sweep.py --out (before --)")
    if args.max_retries < 0:
        p.error(f"--max-retries {args.max_retries} is negative; fix: 0 or more")
    return args, sweep_flags


def find_speedscape(flag: Path | None) -> Path:
    """The binary: --speedscape, else $SPEEDSCAPE_BIN, else `speedscape` on PATH, as an absolute path."""
    fix = ("build it (cargo build --release) and pass --speedscape PATH or set SPEEDSCAPE_BIN, "
           "or install the wheel so speedscape is on PATH")
    if flag is not None:
        where, path = "--speedscape", flag
    elif os.environ.get("SPEEDSCAPE_BIN"):
        where, path = "SPEEDSCAPE_BIN", Path(os.environ["SPEEDSCAPE_BIN"])
    else:
        found = shutil.which("speedscape")
        if found is None:
            raise SweepError("no speedscape binary: no --speedscape, no SPEEDSCAPE_BIN and none on PATH", fix)
        where, path = "PATH", Path(found)
    if not path.is_file() or not os.access(path, os.X_OK):
        raise SweepError(f"the speedscape binary from {where}, {path}, is not an executable file", fix)
    return path.resolve()


def import_ray():
    try:
        import ray
    except ImportError as e:
        raise SweepError(
            f"Ray is not installed in {sys.executable} ({e})",
            "run under the bench venv (bench/setup.sh; bench/requirements.txt pins ray), "
            "or pip install the ray version it pins") from None
    return ray


# ---------------------------------------------------------------------------------------------
# Driver-side steps: plan, merge


def run_cli(binary: Path, args: list[str], what: str, cwd: Path | None = None) -> str:
    """Run `speedscape ARGS`, returning stdout; a non-zero exit is a SweepError with its output."""
    proc = subprocess.run([str(binary), *args], capture_output=True, text=True, cwd=cwd)
    if proc.returncode != 0:
        raise SweepError(f"`speedscape {' '.join(args[:2])}` ({what}) failed:\n{proc.stderr.strip() or proc.stdout.strip()}",
                         "see speedscape's message above (it names the cause and the fix)")
    return proc.stdout


def make_plan(binary: Path, plan: Path, sweep_flags: list[str]) -> None:
    run_cli(binary, ["sweep", "plan", "--out", str(plan), *sweep_flags], "writing the plan")


def merge(binary: Path, shard_dirs: list[Path], out: Path, config: Path | None) -> dict:
    """`speedscape sweep merge`; returns its JSON object (`saved` is the new sweep-<time>/ folder)."""
    args = ["sweep", "merge", "--json", "--out", str(out)]
    if config:
        args += ["--config", str(config)]
    return json.loads(run_cli(binary, [*args, *map(str, shard_dirs)], "merging the shards"))


# ---------------------------------------------------------------------------------------------
# Inside a task (on a worker node)


RUNS_LINE = re.compile(r"(\d+) runs, (\d+) kept from before, (\d+) run now \((\d+) failed\)")


def shard_summary(shard: Path, since: float) -> dict:
    """What a finished shard folder says about itself: its device and provider (shard.json), and of
    the runs written since `since` (this attempt's) their time (the reports' total_ms) and the
    model load (each component's load_ms, counted once)."""
    record = json.loads((shard / "shard.json").read_text())
    runs_ms, loads = 0.0, {}
    for f in sorted((shard / "runs").glob("run-*.json")):
        if f.stat().st_mtime < since:
            continue  # kept from an earlier attempt
        report = json.loads(f.read_text()).get("report") or {}
        runs_ms += report.get("timings", {}).get("total_ms", 0.0)
        for name, ms in (report.get("load_ms") or {}).items():
            loads[name] = max(loads.get(name, 0.0), ms)
    return {"device": record.get("device"), "provider": record.get("provider"),
            "runs_s": runs_ms / 1000, "model_load_s": sum(loads.values()) / 1000}


def read_folder(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def write_folder(folder: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def scratch_folder(plan_bytes: bytes, k: int, n: int) -> Path:
    """A shard's folder on a node without --shared-dir: the same for every attempt on this node
    (so a retry resumes), distinct per plan and shard."""
    digest = hashlib.sha256(plan_bytes).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "speedscape-ray" / digest / f"shard-{k}-of-{n}"


def run_shard(binary: str, k: int, n: int, plan: str | bytes, shard_dir: str | None,
              run_flags: list[str], submitted: float) -> dict:
    """One shard, as a Ray task: `speedscape sweep run` into its folder (resuming what an earlier
    attempt finished), then what it recorded; with `plan` as bytes (no shared folder) the
    folder's files come back as bytes too."""
    started = time.time()
    if isinstance(plan, bytes):
        folder = scratch_folder(plan, k, n)
        plan_path = folder.parent / "plan.json"
        folder.parent.mkdir(parents=True, exist_ok=True)
        if not plan_path.exists():
            plan_path.write_bytes(plan)
    else:
        folder, plan_path = Path(shard_dir), Path(plan)
    attempts_file = folder.parent / f"{folder.name}.attempts"
    with attempts_file.open("a") as f:
        f.write(f"{socket.gethostname()} {started}\n")
    cmd = [binary, "sweep", "run", "--plan", str(plan_path), "--shard", f"{k}/{n}", "--out", str(folder), *run_flags]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=folder.parent)
    wall_s = time.time() - started
    if proc.returncode != 0:
        raise ShardFailed(f"shard {k}/{n} on {socket.gethostname()}: `{' '.join(cmd)}` exited "
                          f"{proc.returncode}:\n{(proc.stderr or proc.stdout)[-3000:]}")
    counts = RUNS_LINE.search(proc.stdout + proc.stderr)
    attempts = attempts_file.read_text().splitlines()
    result = {
        "shard": f"{k}/{n}", "host": socket.gethostname(),
        "wall_s": wall_s,  # this (the last) attempt
        "since_first_attempt_s": time.time() - float(attempts[0].split()[-1]),
        "queued_s": max(0.0, float(attempts[0].split()[-1]) - submitted),
        "attempts": len(attempts),
        "runs": int(counts[1]) if counts else None,
        "kept": int(counts[2]) if counts else None,
        "ran": int(counts[3]) if counts else None,
        **shard_summary(folder, since=started),
    }
    # The rest of this attempt: process start, ONNX Runtime's set-up, writing images and records.
    result["other_s"] = max(0.0, wall_s - result["runs_s"] - result["model_load_s"])
    if isinstance(plan, bytes):
        pack = time.perf_counter()
        result["files"] = read_folder(folder)
        result["pack_s"] = time.perf_counter() - pack
        shutil.rmtree(folder)
        attempts_file.unlink()
    return result


# ---------------------------------------------------------------------------------------------
# The driver


def start_ray(ray, args: argparse.Namespace) -> float:
    """Join --address or start a local instance; returns the GPUs per shard to ask for."""
    try:
        if args.address:
            ray.init(address=args.address, log_to_driver=False)
        else:
            ray.init(num_cpus=args.local_cpus, include_dashboard=False, log_to_driver=False)
    except Exception as e:  # Ray raises ConnectionError, RuntimeError, ValueError…
        where = f"the cluster at {args.address}" if args.address else "a local Ray instance"
        raise SweepError(f"could not start or join {where}: {e}",
                         "check --address (`ray status` on the head node), or leave it out to start a local one") from None
    if args.gpus_per_shard is not None:
        return args.gpus_per_shard
    return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def submit_shards(ray, args, binary: Path, plan: Path, shared: Path | None, gpus: float) -> list:
    env = {k: os.environ[k] for k in ("ORT_DYLIB_PATH",) if k in os.environ}
    task = ray.remote(run_shard).options(
        num_gpus=gpus, num_cpus=args.cpus_per_shard, max_retries=args.max_retries,
        retry_exceptions=True, runtime_env={"env_vars": env} if env else None)
    run_flags = []
    for flag, value in (("--device", args.device), ("--model-dir", args.model_dir), ("--config", args.config)):
        if value is not None:
            run_flags += [flag, str(value.resolve() if isinstance(value, Path) else value)]
    plan_arg = str(plan) if shared else plan.read_bytes()
    plan_ref = plan_arg if shared else ray.put(plan_arg)
    n = args.shards
    return [task.remote(str(binary), k, n, plan_ref, str(shared / f"shard-{k}") if shared else None,
                        run_flags, time.time())
            for k in range(1, n + 1)]


def gather(ray, refs: list, shard_root: Path, shared: Path | None) -> tuple[list[dict], list[Path], float]:
    """Each shard's result as it finishes, its files written under shard_root (unless shared);
    returns the results in shard order, the shard folders and the transfer time."""
    results, transfer_s, pending = {}, 0.0, list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        t = time.perf_counter()
        try:
            result = ray.get(ready[0])
        except Exception as e:
            raise SweepError(f"a shard failed after its retries: {e}",
                             "see speedscape's message in it; rerun the same command to resume the shards "
                             "(with --shared-dir on any node, else on the same node)") from None
        k = int(result["shard"].split("/")[0])
        if not shared:
            write_folder(shard_root / f"shard-{k}", result.pop("files"))
            result["transfer_s"] = result.pop("pack_s") + time.perf_counter() - t
            result["bytes"] = sum(f.stat().st_size for f in (shard_root / f"shard-{k}").rglob("*") if f.is_file())
            transfer_s += result["transfer_s"]
        results[k] = result
    folders = [(shared or shard_root) / f"shard-{k}" for k in sorted(results)]
    return [results[k] for k in sorted(results)], folders, transfer_s


def run(args: argparse.Namespace, sweep_flags: list[str]) -> dict:
    t0 = time.perf_counter()
    binary = find_speedscape(args.speedscape)
    t = time.perf_counter()
    ray = import_ray()
    ray_import_s = time.perf_counter() - t
    if args.plan and not args.plan.is_file():
        raise SweepError(f"--plan {args.plan} is not a file", "make one with `speedscape sweep plan --out FILE`")
    work = (args.work or args.out / time.strftime("ray-sweep-%Y%m%d-%H%M%S")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    shared = args.shared_dir.resolve() if args.shared_dir else None
    plan = (shared or work) / "plan.json"
    if plan.exists() and not (args.plan and plan.resolve() == args.plan.resolve()):
        raise SweepError(f"{plan} already exists (an earlier sweep's plan?)",
                         "give a new --work or --shared-dir, or pass that plan as --plan to resume its shards")
    plan.parent.mkdir(parents=True, exist_ok=True)

    t = time.perf_counter()
    gpus = start_ray(ray, args)
    ray_start_s = time.perf_counter() - t
    try:
        t = time.perf_counter()
        if args.plan:
            if plan.resolve() != args.plan.resolve():
                shutil.copyfile(args.plan, plan)
        else:
            make_plan(binary, plan, sweep_flags)
        plan_s = time.perf_counter() - t
        t = time.perf_counter()
        refs = submit_shards(ray, args, binary, plan, shared, gpus)
        shards, folders, transfer_s = gather(ray, refs, work / "shards", shared)
        shards_s = time.perf_counter() - t
    finally:
        t = time.perf_counter()
        ray.shutdown()
        ray_stop_s = time.perf_counter() - t
    t = time.perf_counter()
    merged = merge(binary, folders, args.out.resolve(), args.config)
    merge_s = time.perf_counter() - t
    return {
        "format": TIMINGS_FORMAT,
        "shards": args.shards, "mode": "shared-dir" if shared else "transfer",
        "gpus_per_shard": gpus, "cpus_per_shard": args.cpus_per_shard,
        "address": args.address or "local", "plan": str(plan), "merged": merged["saved"],
        "runs": len(merged["runs"]),
        "total_s": time.perf_counter() - t0,
        "shards_s": shards_s,
        "overheads_s": {"ray_import": ray_import_s, "ray_start": ray_start_s, "plan": plan_s,
                        "transfer": transfer_s, "merge": merge_s, "ray_stop": ray_stop_s},
        "per_shard": shards,
        "findings": merged.get("findings", []),
    }


def main(argv: list[str] | None = None) -> int:
    args, sweep_flags = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        timings = run(args, sweep_flags)
    except SweepError as e:
        print(f"ray_sweep: {e.cause}\nfix: {e.fix}", file=sys.stderr)
        return 2
    if args.timings:
        args.timings.parent.mkdir(parents=True, exist_ok=True)
        args.timings.write_text(json.dumps(timings, indent=2) + "\n")
    print(f"merged {timings['runs']} runs of {args.shards} shard(s) into {timings['merged']}")
    for s in timings["per_shard"]:
        print(f"  shard {s['shard']}: {s['wall_s']:.1f} s on {s['host']} ({s['provider']}, {s['device']}), "
              f"{s['ran']} run, {s['kept']} kept, attempt {s['attempts']}")
    o = timings["overheads_s"]
    print(f"total {timings['total_s']:.1f} s: Ray import {o['ray_import']:.1f} s, start {o['ray_start']:.1f} s, "
          f"plan {o['plan']:.2f} s, shards {timings['shards_s']:.1f} s (transfer {o['transfer']:.2f} s), "
          f"Ray stop {o['ray_stop']:.1f} s, merge {o['merge']:.2f} s")
    for line in timings["findings"]:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
