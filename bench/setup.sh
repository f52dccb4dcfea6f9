#!/usr/bin/env bash
# The benchmark environment for bench/compare.py (torch, diffusers, optimum-onnx, onnxruntime,
# pytest; pinned in bench/requirements.txt, which says why it is not the reference venv).
# Like scripts/setup-ref.sh: a venv cached per pin set and shared by clones,
# ${SPEEDSCAPE_BENCH_VENV:-~/.cache/speedscape/venv-bench-<hash of requirements.txt>}, with
# ./.venv-bench pointing at it; an existing ./.venv-bench folder is used (and updated) in place.
# Prints nothing on a warm cache; a cold install downloads ~4 GB (torch's PyPI wheel) and then
# shares torch's files with the reference venv's by hard links (~1 GB more on disk, not ~6).
set -euo pipefail
cd "$(dirname "$0")/.."
req=bench/requirements.txt
hash=$(sha256sum "$req" | cut -c1-12)
if [ -d .venv-bench ] && [ ! -L .venv-bench ]; then
  venv=.venv-bench
else
  venv="${SPEEDSCAPE_BENCH_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/speedscape/venv-bench-$hash}"
fi
stamp="$venv/.speedscape-req"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$hash" ]; then
  command -v python3 >/dev/null || { echo "bench/setup: python3 (3.11) is needed for the benchmark environment" >&2; exit 1; }
  echo "bench/setup: installing $req into $venv (torch, diffusers, optimum-onnx; ~6 GB, once)" >&2
  mkdir -p "$(dirname "$venv")"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
  # torch with its CUDA libraries and triton (~5 GB) are the same files as in the reference venv
  # (the same torch pin); hard links share them on disk. A CI run once ran out of disk.
  sp=lib/python3.11/site-packages
  ref=$(readlink -f .venv-ref 2>/dev/null || true)
  if command -v hardlink >/dev/null && [ -n "$ref" ] && [ -d "$ref/$sp/torch" ] && [ "$ref" != "$(readlink -f "$venv")" ]; then
    hardlink -c -q "$venv/$sp"/{torch,nvidia,triton} "$ref/$sp"/{torch,nvidia,triton} 2>/dev/null || true
  fi
  echo "$hash" > "$stamp"
  # Older pins' venvs in the cache (~6 GB each) are no longer used by this checkout.
  if [ "$venv" != .venv-bench ]; then
    for old in "$(dirname "$venv")"/venv-bench-*; do
      [ "$old" = "$venv" ] || [ ! -d "$old" ] || rm -rf "$old"
    done
  fi
fi
if [ "$venv" != .venv-bench ]; then
  ln -sfn "$venv" .venv-bench
fi
