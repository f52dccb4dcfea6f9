#!/usr/bin/env bash
# Makes .gpu-models/ for scripts/gpu-check.sh: a tiny random-init stand-in exported twice by
# models/export.py with a composed LoRA variant (peft + kohya, text encoder included): fp32, and
# the CUDA form (fp16 + onnxruntime's SD fusions) that only a GPU can run. About 40 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-ref.sh
rm -rf .gpu-models && mkdir -p .gpu-models
py=.venv-ref/bin/python
$py models/make_standin.py --out .gpu-models/src --size tiny
common=(--model .gpu-models/src/pipeline --lora p=.gpu-models/src/loras/peft.safetensors
        --lora k=.gpu-models/src/loras/kohya.safetensors --variant pk=p:1.0,k:0.8)
$py models/export.py --out .gpu-models/tiny-fp32 "${common[@]}"
$py models/export.py --out .gpu-models/tiny-cuda "${common[@]}" --dtype fp16 --optimize cuda
rm -rf .gpu-models/src
du -sh .gpu-models
