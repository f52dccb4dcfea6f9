#!/usr/bin/env bash
# Command 1: set up (ONNX Runtime's wheel into ./.venv) and run speedscape.
# With no arguments it opens the TUI (the exercises) on the configured model, or on the embedded
# tiny model when none is configured. Arguments go to speedscape (e.g. ./run.sh exercise 1,
# ./run.sh doctor).
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
cargo build --release --quiet
exec target/release/speedscape "$@"
