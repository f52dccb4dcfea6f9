#!/usr/bin/env bash
# Set-up shared by ./run.sh and ./test.sh: a local Python venv holding ONNX Runtime's
# PyPI wheel (speedscape loads libonnxruntime.so.1.x.y from it at run time).
# SPEEDSCAPE_ORT_WHEEL picks the wheel: onnxruntime (CPU, default) or
# "onnxruntime-gpu[cuda,cudnn]" (CUDA 13 build; see README for CUDA 12 drivers).
set -euo pipefail
cd "$(dirname "$0")/.."
wheel="${SPEEDSCAPE_ORT_WHEEL:-onnxruntime}"
version="${SPEEDSCAPE_ORT_VERSION:-1.31.1}"
stamp=".venv/.speedscape-ort"
want="$wheel==$version"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
command -v python3 >/dev/null || { echo "setup: python3 is needed to fetch ONNX Runtime's wheel (apt-get install python3 python3-venv)" >&2; exit 1; }
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check "$want"
echo "$want" > "$stamp"
