"""Owns the fixtures the sharded-sweep tests share: the speedscape binary and the one-machine
sweep their merged results are compared with (run once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweep_equal import run_whole_sweep, speedscape_bin


@pytest.fixture(scope="session")
def binary() -> Path:
    found = speedscape_bin()
    if found is None or not found.is_file():
        pytest.fail("no speedscape binary: set SPEEDSCAPE_BIN (test.sh does) or cargo build")
    return found


@pytest.fixture(scope="session")
def whole_sweep(binary, tmp_path_factory) -> Path:
    return run_whole_sweep(binary, tmp_path_factory.mktemp("whole-sweep"))
