#!/usr/bin/env bash
# The wheel as a user gets it: installed by pip into a fresh venv in a temporary folder outside
# the checkout (only the package index is used: onnxruntime comes from PyPI), and run from there
# with the working directory outside the checkout and no config of the user's:
#   speedscape --version              Cargo.toml's version
#   speedscape doctor                 ONNX Runtime from that venv, the packaged micro model
#   speedscape exercise 1 --json      three finished runs
#   speedscape models export --help   the exporter's command is there
# then `uv tool install` and `uvx` (uv from the wheel tools' venv): --version from each.
# Usage: scripts/wheel-smoke.sh [WHEEL] (default: the one in target/wheels/).
set -euo pipefail
cd "$(dirname "$0")/.."
checkout=$PWD
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
wheel=${1:-$(ls target/wheels/speedscape-*.whl 2>/dev/null | head -1)}
[ -f "$wheel" ] || { echo "wheel-smoke: no wheel (run scripts/build-wheel.sh first)" >&2; exit 1; }
wheel=$(realpath "$wheel")
tools=$(scripts/wheel-tools.sh)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/speedscape-wheel-smoke.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
case "$tmp" in "$checkout"/*) echo "wheel-smoke: $tmp is inside the checkout" >&2; exit 1 ;; esac
# Nothing of the caller's: no config, no cache, no ORT_DYLIB_PATH, no checkout venv on PATH.
export XDG_CONFIG_HOME="$tmp/config" XDG_CACHE_HOME="$tmp/cache" XDG_DATA_HOME="$tmp/data"
unset ORT_DYLIB_PATH VIRTUAL_ENV
fail() { echo "wheel-smoke: $*" >&2; exit 1; }

echo "wheel-smoke: pip install $(basename "$wheel") into $tmp/venv" >&2
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install --quiet --disable-pip-version-check "$wheel"
bin="$tmp/venv/bin/speedscape"
cd "$tmp"

out=$("$bin" --version)
echo "$out"
[ "$out" = "speedscape $version" ] || fail "--version said '$out', not 'speedscape $version'"

out=$("$bin" doctor) || { echo "$out"; fail "doctor failed"; }
echo "$out"
site=$(echo "$tmp"/venv/lib/python3*/site-packages)
grep -qE "^onnxruntime +$site/onnxruntime/capi/libonnxruntime\.so\.[0-9.]+ " <<<"$out" \
  || fail "doctor does not name the venv's onnxruntime ($site/onnxruntime/capi/)"
grep -qF "the Python environment speedscape is installed in ($tmp/venv)" <<<"$out" \
  || fail "doctor does not say ONNX Runtime came from the venv"
grep -qE "^model +$tmp/venv/share/speedscape/models/micro" <<<"$out" \
  || fail "doctor does not name the packaged micro model ($tmp/venv/share/speedscape/models/micro)"
grep -qF "the packaged micro model of the speedscape wheel" <<<"$out" \
  || fail "doctor does not say the model is the packaged one"

"$bin" exercise 1 --json > exercise.json || fail "exercise 1 failed"
python3 - exercise.json <<'PY' || fail "exercise 1 did not finish three runs"
import json, sys
r = json.load(open(sys.argv[1]))
# One entry per run: its report when it finished, its error (else null).
finished = [run for run in r["runs"] if run]
failed = [e for e in r["errors"] if e]
print(f"exercise 1: {len(finished)} runs finished, {len(failed)} failed, model {r['model']}")
sys.exit(0 if len(finished) == 3 and not failed else 1)
PY

out=$("$bin" models export --help)
grep -q -- "--fp16" <<<"$out" && grep -q -- "--optimize" <<<"$out" || fail "models export --help lacks --fp16/--optimize"
echo "models export --help: $(head -1 <<<"$out")"

# uv: `uv tool install` (its own venv, the binary linked into a bin folder) and `uvx`.
export UV_TOOL_DIR="$tmp/uv-tools" UV_TOOL_BIN_DIR="$tmp/uv-bin" UV_CACHE_DIR="${UV_CACHE_DIR:-${XDG_CACHE_HOME}/uv}"
"$tools/bin/uv" tool install --quiet "$wheel"
out=$("$tmp/uv-bin/speedscape" --version)
[ "$out" = "speedscape $version" ] || fail "uv tool install: --version said '$out'"
echo "uv tool install: $out"
grep -qF "installed in ($tmp/uv-tools/speedscape)" <<<"$("$tmp/uv-bin/speedscape" doctor)" \
  || fail "uv tool install: doctor does not take ONNX Runtime from the tool's venv"
out=$("$tools/bin/uv" tool run --quiet --from "$wheel" speedscape --version)
[ "$out" = "speedscape $version" ] || fail "uvx: --version said '$out'"
echo "uvx: $out"
echo "wheel-smoke: passed" >&2
