#!/usr/bin/env bash
# The wheel tools' venv (scripts/wheel-tools.txt: maturin, ziglang, auditwheel, uv), made once in
# ${SPEEDSCAPE_WHEEL_VENV:-~/.cache/speedscape/venv-wheel-<hash of the list>}; prints its path.
# Used by scripts/build-wheel.sh and scripts/wheel-smoke.sh. A cold install takes ~10 s.
set -euo pipefail
cd "$(dirname "$0")/.."
list=scripts/wheel-tools.txt
hash=$(sha256sum "$list" | cut -c1-12)
venv="${SPEEDSCAPE_WHEEL_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/speedscape/venv-wheel-$hash}"
stamp="$venv/.speedscape-req"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$hash" ]; then
  command -v python3 >/dev/null || { echo "wheel-tools: python3 is needed (apt-get install python3 python3-venv)" >&2; exit 1; }
  echo "wheel-tools: installing $list into $venv (once)" >&2
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$list"
  echo "$hash" > "$stamp"
fi
echo "$venv"
