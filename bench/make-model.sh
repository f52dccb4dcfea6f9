#!/usr/bin/env bash
# The model bench/compare.py times: a random-init pipeline with SD v1.5's full architecture
# (models/make_standin.py; nothing is downloaded) exported to ONNX fp32 by models/export.py, with
# one fused UNet variant, `lcm`, made from the stand-in's UNet-only LoRA (as LCM-LoRA is), so the
# LCM setting has a unet_lcm whose weights diffusers can reproduce by fusing the same file, and a
# preview decoder of TAESD's architecture (random weights), so previews run as with the real TAESD.
#
#   bench/make-model.sh [OUT] [--size sd15|tiny] [--no-verify] [--controlnet] [--cpu-form]   (default OUT: .bench, size: sd15)
#
# Writes
#   OUT/standin/pipeline/              diffusers folder (what diffusers-torch loads)
#   OUT/standin/loras/peft.safetensors the LoRA fused into unet_lcm (also kohya.safetensors, unused)
#   OUT/standin/loras/wide.safetensors a rank-64 LoRA on LCM-LoRA's targets, fused into unet_wide
#                                      (what `speedscape bench lora-load` times run-time fusion against)
#   OUT/standin/preview_decoder/       a random-init AutoencoderTiny with TAESD's architecture (sd15: TAESD's
#                                      64 channels, ~1.2 M decoder params; models/make_standin.py --only-preview-decoder)
#   OUT/onnx/                          Optimum layout + unet_lcm/ + preview_decoder/ + manifest.json (speedscape,
#                                      optimum, ORT); export.py's --preview-decoder OUT/standin/preview_decoder
#   with --controlnet, also
#   OUT/standin/controlnet/            a random-init ControlNetModel.from_unet of the stand-in's UNet, its
#                                      zero convolutions filled (models/make_standin.py --only-controlnet)
#   OUT/onnx-controlnet/               the same export + `--controlnet edge=...`: controlnet_edge/ and every
#                                      UNet with the residual inputs (sd15: ~1.4 GB and ~12 GB more disk)
#   with --cpu-form, also
#   OUT/onnx-cpu/                      the same export with `--optimize cpu` (ONNX Runtime's fusions the CPU
#                                      provider runs), for compare.py --speedscape-export onnx-cpu
# Each part is skipped when already complete (standin: built in standin.partial and renamed;
# onnx: export.py moves it into place only after every graph passed its check, manifest last; an
# export from before the preview decoder is redone).
# The two exports' manifests give what a ControlNet adds: components.controlnet_edge.{bytes,export_s}
# and the UNets' bytes with and without residual inputs.
# sd15 takes ~10 min on 2 cores and ~12 GB of disk; tiny takes seconds.
# --no-verify skips export.py's ONNX Runtime vs torch check of each graph (the tests do; compare.py
# checks every contender's image against diffusers' anyway).
# PYTHON picks the interpreter (default .venv-ref/bin/python: the pinned reference environment).
set -euo pipefail
cd "$(dirname "$0")/.."
out=.bench
size=sd15
verify=()
controlnet=0
cpu_form=0
while [ $# -gt 0 ]; do
  case "$1" in
    --size) size="${2:?--size needs sd15 or tiny}"; shift 2 ;;
    --size=*) size="${1#--size=}"; shift ;;
    --no-verify) verify=(--no-verify); shift ;;
    --controlnet) controlnet=1; shift ;;
    --cpu-form) cpu_form=1; shift ;;
    -h|--help) sed -n '2,33p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
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

if [ -f "$out/standin/preview_decoder/config.json" ] && [ -f "$out/standin/preview_decoder/diffusion_pytorch_model.safetensors" ]; then
  echo "make-model: $out/standin/preview_decoder is complete, kept" >&2
else
  echo "make-model: writing the random-init $size preview decoder (TAESD's architecture) to $out/standin/preview_decoder" >&2
  rm -rf "$out/standin/preview_decoder"
  "$python" models/make_standin.py --out "$out/standin" --size "$size" --only-preview-decoder >&2
fi

# export_to FOLDER [EXTRA EXPORT.PY ARGS...]
export_to() {
  local dest="$1"; shift
  if [ -f "$out/$dest/manifest.json" ] && grep -q '"preview_decoder"' "$out/$dest/manifest.json"; then
    echo "make-model: $out/$dest is a complete export, kept" >&2
    return
  fi
  echo "make-model: exporting to ONNX fp32 in $out/$dest ${*}" >&2
  "$python" models/export.py --out "$out/$dest" --model "$out/standin/pipeline" \
    --base-label "random-init SD v1.5 architecture ($size, models/make_standin.py)" \
    --lora "lcm=$out/standin/loras/peft.safetensors" --variant lcm=lcm:1.0 \
    --lora "wide=$out/standin/loras/wide.safetensors" --variant wide=wide:1.0 \
    --preview-decoder "$out/standin/preview_decoder" \
    --force "${verify[@]}" "$@" >&2
}
export_to onnx

if [ "$controlnet" = 1 ]; then
  if [ -f "$out/standin/controlnet/config.json" ] && [ -f "$out/standin/controlnet/diffusion_pytorch_model.safetensors" ]; then
    echo "make-model: $out/standin/controlnet is complete, kept" >&2
  else
    echo "make-model: writing the random-init $size ControlNet to $out/standin/controlnet" >&2
    rm -rf "$out/standin/controlnet"
    "$python" models/make_standin.py --out "$out/standin" --size "$size" --only-controlnet >&2
  fi
  export_to onnx-controlnet --controlnet "edge=$out/standin/controlnet"
fi
if [ "$cpu_form" = 1 ]; then
  export_to onnx-cpu --optimize cpu
fi
echo "$out"
