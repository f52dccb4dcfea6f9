"""Owns what the sharded-sweep tests share: the small sweep they run, the speedscape binary, and
the comparison of a merged sweep with the one-machine sweep (every number but the times, as
tests/sweep_shard.rs compares them in Rust)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# DPM-Solver++ at 1 and 2 steps, 2 seeds, against DPM-Solver++ 3 steps: 6 runs of the micro model
# (a few seconds on 2 cores); the same sweep as tests/sweep_shard.rs.
SWEEP = ["--preset", "dpmpp", "--steps", "1,2", "--seeds", "2", "--reference", "dpmpp:3", "--device", "cpu"]
RUNS = 6


def speedscape_bin() -> Path | None:
    """$SPEEDSCAPE_BIN (as test.sh sets it), else the checkout's target/{release,debug}/speedscape."""
    if os.environ.get("SPEEDSCAPE_BIN"):
        return Path(os.environ["SPEEDSCAPE_BIN"])
    for kind in ("release", "debug"):
        p = REPO / "target" / kind / "speedscape"
        if p.is_file():
            return p
    return None


def saved(out: Path) -> Path:
    """The one sweep-<time>/ folder a sweep or merge saved under `out`."""
    folders = sorted(out.glob("sweep-*"))
    assert len(folders) == 1, f"one new sweep folder under {out}: {folders}"
    return folders[0]


def run_whole_sweep(binary: Path, root: Path) -> Path:
    """The unsharded `speedscape sweep` of SWEEP, run in `root` (no config.toml there), saved
    under root/whole; returns its sweep-<time>/ folder."""
    proc = subprocess.run([str(binary), "sweep", "--out", str(root / "whole"), *SWEEP],
                          cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return saved(root / "whole")


def without_times(value):
    """`value` without what measures time (`*_ms`, `time*`, the run reports, which hold them; the
    findings, sentences of numbers and times) or where it was saved."""
    if isinstance(value, dict):
        return {k: without_times(v) for k, v in value.items()
                if not (k.endswith("_ms") or k.startswith("time") or k in ("report", "saved", "findings"))}
    if isinstance(value, list):
        return [without_times(v) for v in value]
    return value


def csv_without_times(folder: Path) -> list[list[str]]:
    """points.csv without its time columns (`time_*` and the speedup, a ratio of times)."""
    rows = list(csv.reader((folder / "points.csv").read_text().splitlines()))
    keep = [i for i, name in enumerate(rows[0]) if not (name.startswith("time_") or name.startswith("speedup"))]
    return [[row[i] for i in keep] for row in rows]


def images(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((folder / "images").iterdir())}


def assert_same_sweep(merged: Path, whole: Path) -> None:
    """The merged sweep equals the one-machine sweep in every number but the times."""
    m = json.loads((merged / "sweep.json").read_text())
    w = json.loads((whole / "sweep.json").read_text())
    assert len(m["runs"]) == RUNS
    assert without_times(m) == without_times(w)
    assert csv_without_times(merged) == csv_without_times(whole)
    assert images(merged) == images(whole), "the same images"
    # The numbers compared are real ones: a 1-step point is not its reference.
    series = m["landscape"]["series"]
    assert [p["steps"] for p in series[0]["points"]] == [1, 2]
    assert series[0]["points"][0]["ssim"]["mean"] < 1.0
