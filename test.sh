#!/usr/bin/env bash
# Command 2: set up (ONNX Runtime's wheel into ./.venv) and run every test.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
cargo test --all-targets "$@"
