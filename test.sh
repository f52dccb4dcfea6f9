#!/usr/bin/env bash
# Command 2: set up (ONNX Runtime's wheel into ./.venv, the pinned Python reference environment
# and the benchmark environment into cached venvs, tmux for the TUI's end-to-end test, Xvfb with
# xterm and kitty for the real-terminal test) and run
# every test: Rust (cargo: the app's and the engine crate's, including a smoke `speedscape bench`,
# then the engine's txt2img example), the TUI end to end (tmux drives the real binary; xterm and
# kitty under Xvfb must show its images), the
# exporter's and bench/compare.py's (pytest, on the tiny architecture), and the wheel (built with
# maturin and zig, installed with pip and uv into fresh venvs, run outside the checkout).
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
scripts/setup-ref.sh
bench/setup.sh
if ! command -v tmux >/dev/null; then
  echo "test.sh: installing tmux (the TUI's end-to-end test drives the binary in it)" >&2
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get install -y -qq tmux >/dev/null 2>&1 || { $sudo apt-get update -qq && $sudo apt-get install -y -qq tmux; }
fi
if ! { command -v Xvfb && command -v xterm && command -v kitty && command -v xdotool && command -v import; } >/dev/null; then
  echo "test.sh: installing Xvfb, xterm, kitty, xdotool, ImageMagick (tests/real_terminals.sh screenshots real terminals)" >&2
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  pkgs="xvfb xterm kitty xdotool imagemagick fonts-dejavu-core"
  $sudo apt-get install -y -qq --no-install-recommends $pkgs >/dev/null 2>&1 || { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends $pkgs; }
fi
# test-hooks: the hidden --fake-backend flag and SPEEDSCAPE_TEST_PANIC, which the tmux tests use.
cargo test --workspace --all-targets --features test-hooks "$@"
# The engine crate's example on the embedded micro model: it must write the PNG it names and
# print the run's timings.
rm -f target/txt2img.png
txt2img=$(cargo run -q --profile test -p speedscape-core --example txt2img -- models/micro \
  "a large yellow star on a blue background at sunset" target/txt2img.png)
echo "$txt2img"
image=$(sed -n 's/^image: //p' <<<"$txt2img")
[ -n "$image" ] && [ -s "$image" ] || { echo "test.sh: txt2img wrote no image" >&2; exit 1; }
grep -qE '^timings: text encoder [0-9.]+ ms, UNet [0-9.]+ ms/step × 20, VAE [0-9.]+ ms, total [0-9.]+ ms$' <<<"$txt2img" \
  || { echo "test.sh: txt2img printed no timing line" >&2; exit 1; }
# These run the speedscape binary that `cargo test` just built.
SPEEDSCAPE_BIN="$PWD/target/debug/speedscape" tests/tui_e2e.sh
SPEEDSCAPE_BIN="$PWD/target/debug/speedscape" tests/tui_terminal.sh
SPEEDSCAPE_BIN="$PWD/target/debug/speedscape" tests/real_terminals.sh
SPEEDSCAPE_BIN="$PWD/target/debug/speedscape" .venv-ref/bin/python -m pytest -q -p no:cacheprovider -p no:warnings models/tests
SPEEDSCAPE_BIN="$PWD/target/debug/speedscape" .venv-bench/bin/python -m pytest -q -p no:cacheprovider -p no:warnings bench/tests
# The wheel as users install it: built (a second, release build with zig for glibc 2.28, in
# target/x86_64-unknown-linux-gnu/) and checked (version, auditwheel's manylinux tag, size), then
# installed into a fresh venv outside the checkout and run from there (pip, uv tool, uvx).
scripts/build-wheel.sh >/dev/null
scripts/wheel-smoke.sh
# Last, because the tests above need the hooked binary: tests/no_test_hooks.rs again without the
# test-hooks feature (only the speedscape crate recompiles, dependencies are shared), checking that
# a build without it has no test hooks.
cargo test --test no_test_hooks
