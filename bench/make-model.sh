#!/usr/bin/env bash
# The model bench/compare.py times: a random-init pipeline with SD v1.5's full architecture
# (models/make_standin.py; nothing is downloaded) exported to ONNX fp32 by models/export.py, with
# one fused UNet variant, `lcm`, made from the stand-in's UNet-only LoRA (as LCM-LoRA is), so the
# LCM setting has a unet_lcm whose weights diffusers can reproduce by fusing the same file.
#
#   bench/make-model.sh [OUT] [--size sd15|tiny] [--no-verify]   (default OUT: .bench, size: sd15)
#
# Writes
#   OUT/standin/pipeline/              diffusers folder (what diffusers-torch loads)
#   OUT/standin/loras/peft.safetensors the LoRA fused into unet_lcm (also kohya.safetensors, unused)
#   OUT/standin/loras/wide.safetensors a rank-64 LoRA on LCM-LoRA's targets, fused into unet_wide
#                                      (what `speedscape bench lora-load` times run-time fusion against)
#   OUT/onnx/                          Optimum layout + unet_lcm/ + manifest.json (speedscape, optimum, ORT)
# Each part is skipped when already complete (standin: built in standin.partial and renamed;
# onnx: export.py moves it into place only after every graph passed its check, manifest last).
# sd15 takes ~10 min on 2 cores and ~12 GB of disk; tiny takes seconds.
# --no-verify skips export.py's ONNX Runtime vs torch check of each graph (the tests do; compare.py
# checks every contender's image against diffusers' anyway).
# PYTHON picks the interpreter (default .venv-ref/bin/python: the pinned reference environment).
set -euo pipefail
cd "$(dirname "$0")/.."
out=.bench
size=sd15
verify=()
while [ $# -gt 0 ]; do
  case "$1" in
    --size) size="${2:?--size needs sd15 or tiny}"; shift 2 ;;
    --size=*) size="${1#--size=}"; shift ;;
    --no-verify) verify=(--no-verify); shift ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "make-model: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) out="$1"; shift ;;
  esac
done
case "$size" in sd15|tiny) ;; *) echo "make-model: --size must be sd15 or tiny, not '$size'" >&2; exit 2 ;; esac
python="${PYTHON:-.venv-ref/bin/python}"
[ -x "$python" ] || { echo "make-model: no Python at $python; run scripts/setup-ref.sh (or set PYTHON)" >&2; exit 1; }
mkdir -p "$out"
out="$(cd "$out" && pwd)"

if [ -f "$out/standin/pipeline/model_index.json" ] && [ -f "$out/standin/loras/wide.safetensors" ]; then
  echo "make-model: $out/standin is complete, kept" >&2
else
  echo "make-model: writing the random-init $size pipeline to $out/standin" >&2
  rm -rf "$out/standin.partial"
  "$python" models/make_standin.py --out "$out/standin.partial" --size "$size" >&2
  rm -rf "$out/standin"
  mv "$out/standin.partial" "$out/standin"
fi

if [ -f "$out/onnx/manifest.json" ]; then
  echo "make-model: $out/onnx is a complete export, kept" >&2
else
  echo "make-model: exporting to ONNX fp32 in $out/onnx" >&2
  "$python" models/export.py --out "$out/onnx" --model "$out/standin/pipeline" \
    --base-label "random-init SD v1.5 architecture ($size, models/make_standin.py)" \
    --lora "lcm=$out/standin/loras/peft.safetensors" --variant lcm=lcm:1.0 \
    --lora "wide=$out/standin/loras/wide.safetensors" --variant wide=wide:1.0 \
    --force "${verify[@]}" >&2
fi
echo "$out"
