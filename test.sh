#!/usr/bin/env bash
# Command 2: set up (ONNX Runtime's wheel into ./.venv, the pinned Python reference environment
# into a cached venv) and run every test: Rust (cargo) and the exporter's (pytest).
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
scripts/setup-ref.sh
cargo test --all-targets "$@"
# The exporter tests run the speedscape binary that `cargo test` just built.
SPEEDSCAPE_BIN="$PWD/target/debug/speedscape" .venv-ref/bin/python -m pytest -q -p no:cacheprovider -p no:warnings models/tests
