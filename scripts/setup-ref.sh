#!/usr/bin/env bash
# The Python reference environment (torch, diffusers, peft, onnx, onnxruntime, pytest; pinned in
# models/requirements.txt) used by the exporter, the fixture scripts and the exporter tests.
# It is ~6 GB (torch's CUDA libraries come with the PyPI wheel), so it lives in a cache shared by
# clones: ${SPEEDSCAPE_REF_VENV:-~/.cache/speedscape/venv-ref-<hash of requirements.txt>}, with
# ./.venv-ref pointing at it. An existing ./.venv-ref folder is used (and updated) in place.
# Prints nothing on a warm cache; a cold install takes ~1.5 min.
set -euo pipefail
cd "$(dirname "$0")/.."
req=models/requirements.txt
hash=$(sha256sum "$req" | cut -c1-12)
if [ -d .venv-ref ] && [ ! -L .venv-ref ]; then
  venv=.venv-ref
else
  venv="${SPEEDSCAPE_REF_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/speedscape/venv-ref-$hash}"
fi
stamp="$venv/.speedscape-req"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$hash" ]; then
  command -v python3 >/dev/null || { echo "setup-ref: python3 (3.11) is needed for the reference environment" >&2; exit 1; }
  echo "setup-ref: installing $req into $venv (torch etc., ~6 GB, once)" >&2
  mkdir -p "$(dirname "$venv")"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
  echo "$hash" > "$stamp"
  # Older pins' venvs in the cache (~6 GB each) are no longer used by this checkout.
  if [ "$venv" != .venv-ref ]; then
    for old in "$(dirname "$venv")"/venv-ref-*; do
      [ "$old" = "$venv" ] || [ ! -d "$old" ] || rm -rf "$old"
    done
  fi
fi
if [ "$venv" != .venv-ref ]; then
  ln -sfn "$venv" .venv-ref
fi
