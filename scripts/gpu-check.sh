#!/usr/bin/env bash
# The prepared GPU check for the core engine (run on a lent GPU machine; see
# ../shared/gpu/README.md for how ONNX Runtime's CUDA build gets there in parts).
# Beforehand, here:  ../shared/gpu/pack-ort-cuda.sh && cargo build --release && scripts/gpu-models.sh
# Transfers 1-3 copy .ortcuda/part-0N to /root/ortcuda/; the last runs this script with
# .ortcuda, .gpu-models (~40 MB) and target/release/speedscape carried. Writes what it measured to $OUT (or ./gpu-out).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-out}; mkdir -p "$out"
mkdir -p /root/ortcuda && cp .ortcuda/part-* .ortcuda/SHA256SUMS /root/ortcuda/ 2>/dev/null || true
export ORT_DYLIB_PATH=$(python3 .ortcuda/assemble.py /root/ortcuda /root/ort)
NV=$(python3 -c 'import nvidia,os;print(os.path.dirname(nvidia.__path__[0]))')/nvidia
export LD_LIBRARY_PATH=$(ls -d $NV/*/lib | tr '\n' ':')${LD_LIBRARY_PATH:-}
bin=target/release/speedscape
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
# 1. doctor: CUDA really in use, GPU named, every tiny-model component loads on CUDA.
$bin doctor --device cuda | tee "$out/doctor-cuda.txt"
# 2. the parity runs on CUDA and on CPU, same seed: images and timings side by side.
prompt="a small cottage on a hillside at sunset, warm golden light, detailed"
run() { # name scheduler steps cfg unet device
  $bin generate --prompt "$prompt" --scheduler $2 --steps $3 --cfg $4 --unet $5 --seed 42 \
    --device $6 --out "$out/$1-$6.png" --save-raw "$out/$1-$6.npy" --force --json > "$out/$1-$6.json"
}
for d in cuda cpu; do
  run ddpm50 ddpm 50 7.5 base $d; run dpmpp20 dpmpp 20 7.5 base $d; run dpmpp10 dpmpp 10 7.5 base $d
  run lcm8 lcm 8 1.5 lcm $d; run lcm4 lcm 4 1.5 lcm $d
done
# 3. the exporter's CUDA form (fp16 + onnxruntime's SD fusions; made here by scripts/gpu-models.sh
#    from a tiny stand-in): every fused graph loads and runs on CUDA, and its images stay within
#    the fp16 tolerance of the fp32 export of the same weights (composed variant pk included).
if [ -d .gpu-models/tiny-cuda ]; then
  $bin models verify .gpu-models/tiny-cuda --device cuda | tee "$out/verify-cuda.txt"
  for m in cuda fp32; do
    $bin generate --model-dir .gpu-models/tiny-$m --unet pk --prompt "$prompt" --scheduler dpmpp \
      --steps 20 --cfg 7.5 --seed 42 --device cuda --out "$out/export-$m.png" --save-raw "$out/export-$m.npy" --force \
      --json > "$out/export-$m.json"
  done
fi
python3 - "$out" <<'PY' | tee "$out/summary.txt"
import json, sys, numpy as np, pathlib
out = pathlib.Path(sys.argv[1])
for name in ["ddpm50", "dpmpp20", "dpmpp10", "lcm8", "lcm4"]:
    c, g = (json.load(open(out / f"{name}-{d}.json")) for d in ("cpu", "cuda"))
    err = np.abs(np.load(out / f"{name}-cpu.npy") - np.load(out / f"{name}-cuda.npy")).max()
    print(f"{name}: provider {g['provider']}, cuda {g['timings']['total_ms']:.1f} ms vs cpu "
          f"{c['timings']['total_ms']:.1f} ms, max |cuda - cpu| {err:.2e}")
if (out / "export-cuda.npy").exists():
    d = np.abs(np.load(out / "export-cuda.npy") - np.load(out / "export-fp32.npy"))
    print(f"exporter fp16+fusions vs fp32 (variant pk, CUDA): mean {d.mean():.2e} max {d.max():.2e} "
          f"(tolerance: mean < 0.02, max < 0.1)")
PY
