#!/usr/bin/env bash
# Command 1: set up (ONNX Runtime's wheel into ./.venv) and run speedscape.
# With no arguments it runs the main job on the configured model, or on the embedded tiny
# model when none is configured. Arguments go to speedscape (e.g. ./run.sh doctor).
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
cargo build --release --quiet
if [ $# -eq 0 ]; then
  # Until the TUI lands: exercise 1's DPM-Solver++ 20 run, timed, written to speedscape-demo.png.
  exec target/release/speedscape generate \
    --prompt "a small cottage on a hillside at sunset, warm golden light, detailed" \
    --scheduler dpmpp --steps 20 --cfg 7.5 --seed 42 --out speedscape-demo.png
fi
exec target/release/speedscape "$@"
