#!/usr/bin/env bash
# The prepared GPU check for the performance issue: `speedscape bench --device cuda` against
# diffusers eager fp16 on the same card in the same run, full-size SD v1.5 architecture (random
# weights, made on the machine: nothing large travels), 512², DPM-Solver++ 20 and DDPM 50 (cfg 7.5)
# and LCM 4 (cfg 1.5, the LCM UNet), median of 3 after a warm-up. Targets (issue 24, round 2): a
# batch-2 UNet call ≤ 8.7 ms (≥ 115 calls/s), DPM-Solver++ 20 end to end ≤ 0.19 s, LCM 4 ≤ 0.045 s,
# ≥ 1.25× diffusers (eager fp16 here; bench/compare.py --gpu adds torch.compile and optimum).
#
# Runs ON the lent GPU machine, in the `run` calls bench/gpu-prepare.sh prints (it also sizes
# every transfer): the first call carries the small ORT part, SHA256SUMS, assemble.py, the binary
# and the wheels; each later one another ORT part; the last runs the check.
#
#   bench/gpu-check.sh start   first call: keeps its ORT part, installs the wheels (diffusers) into
#                              GPU_HOME/pylib, unpacks the binary, prints the versions there, and starts
#                              the model build in the background (setsid), so it runs while the
#                              other parts travel
#   bench/gpu-check.sh stash   middle calls: keeps the ORT part carried, prints the build's progress
#   bench/gpu-check.sh [run]   last call: assembles ONNX Runtime's CUDA build, doctor (cuda, tensorrt),
#                              the tiny model with and without CUDA graphs (bit-identical images?),
#                              waits for the model (timing diffusers meanwhile, beside the export,
#                              stopped when the model is ready), speedscape bench (base-UNet runs,
#                              then LCM, two processes), diffusers alone, the table
#   bench/gpu-check.sh model   the model build itself: models/make_standin.py --size sd15, then
#                              models/export.py --dtype fp16 --optimize cuda with unet_lcm, --no-verify
#                              (falling back to plain fp16, then fp32; the table says which)
#
# `run` does whatever `start` has not (so one call with everything carried also works) and keeps
# to GPU_CHECK_BUDGET seconds (default 420): what does not fit is skipped, and every result is
# written to $OUT as soon as it exists. At most 8 files come back: gpu-check.log (everything,
# the model build's log at its end), summary.md (the table), doctor.txt, bench-cuda.json,
# diffusers-cuda.json, diffusers-cuda-busy.json (when diffusers ran beside the export; the table
# uses it, marked †, only for a setting not timed alone), manifest.json (the export's: form, fused
# operator counts), nvidia-smi.txt.
# Work files stay on the machine while it is held (gone when it is given back), under GPU_HOME
# (default /root): speedscape-gpu/ (model, binary, logs), ortcuda/ (the parts), ort/ (the
# libraries), pylib/ (the wheels). A dry run of the flow on a CPU machine (the numbers mean
# nothing; the CUDA-fused graph has no CPU kernels): GPU_HOME=/tmp/g GPU_CHECK_MODEL_SIZE=tiny
# GPU_CHECK_DEVICE=cpu GPU_CHECK_FORMS=fp16 GPU_CHECK_IMAGE_SIZE=128 OUT=/tmp/g/out
# bench/gpu-check.sh run (~1 min here, with the reference venv's python3 first on PATH).
# GPU_CHECK_FORMS is the list of export forms tried in turn (default "fp16-cuda fp16 fp32").
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
repo=$(pwd)
mode=${1:-run}
HOME_GPU=${GPU_HOME:-/root}
W=$HOME_GPU/speedscape-gpu
PARTS=$HOME_GPU/ortcuda
ORT=$HOME_GPU/ort
PYLIB=$HOME_GPU/pylib
SIZE=${GPU_CHECK_MODEL_SIZE:-sd15}
DEVICE=${GPU_CHECK_DEVICE:-cuda}  # cpu: a dry run of the flow here (diffusers then fp32)
IMG=${GPU_CHECK_IMAGE_SIZE:-512}
bin=$W/bin/speedscape
mkdir -p "$W"
export PYTHONPATH=$PYLIB${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false TRANSFORMERS_NO_ADVISORY_WARNINGS=1

stamp() { date -u +%H:%M:%S; }

# Keep the ORT parts this call carried (the tree copy may not keep them; GPU_HOME does while warm).
stash() {
  mkdir -p "$PARTS"
  local f
  for f in .ortcuda/part-* .ortcuda/SHA256SUMS .ortcuda/assemble.py; do
    [ -f "$f" ] && cp "$f" "$PARTS/"
  done
  local have
  have=$(cd "$PARTS" && for f in part-*; do [ -f "$f" ] && printf '%s ' "$f"; done)
  echo "[$(stamp)] ORT parts on the machine: ${have:-none}$( [ -f "$PARTS/SHA256SUMS" ] && echo "(of $(wc -l < "$PARTS/SHA256SUMS") in SHA256SUMS)")"
}

# Wheels, binary and a private copy of models/ (the tree is re-copied by every call).
setup() {
  if [ ! -f "$PYLIB/.installed" ] && compgen -G ".gpu-wheels/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$PYLIB" .gpu-wheels/*.whl \
      && ls .gpu-wheels > "$PYLIB/.installed"
  fi
  if [ -f .gpu-bin/speedscape.xz ]; then  # the one carried, also over an earlier one
    mkdir -p "$W/bin"
    python3 -c 'import lzma,sys; open(sys.argv[2],"wb").write(lzma.open(sys.argv[1]).read())' .gpu-bin/speedscape.xz "$bin.tmp" \
      && chmod +x "$bin.tmp" && mv "$bin.tmp" "$bin"
  fi
  if [ ! -f "$W/src/models/export.py" ]; then
    rm -rf "$W/src.tmp" && mkdir -p "$W/src.tmp" && cp -r models "$W/src.tmp/" && rm -rf "$W/src" && mv "$W/src.tmp" "$W/src"
  fi
}

versions() {
  python3 - <<'PY'
import importlib.metadata as md, sys
names = ["torch", "diffusers", "transformers", "peft", "huggingface_hub", "safetensors", "onnx", "onnxruntime", "numpy", "importlib_metadata", "tensorrt"]
v = {}
for n in names:
    try:
        v[n] = md.version(n)
    except md.PackageNotFoundError:
        v[n] = "-"
print("python", sys.version.split()[0], " ".join(f"{k} {x}" for k, x in v.items()))
try:
    import diffusers  # noqa: F401  (the wheels' install is checked here, in the first call)
    print("diffusers imports: ok")
except Exception as e:  # noqa: BLE001
    print(f"diffusers imports: FAILED: {type(e).__name__}: {e}")
PY
}

# The model build (background or foreground). States in $W/model.state, the result in $W/model.done.
model() {
  local t0=$SECONDS m=$W/model src=$W/src/models
  mkdir -p "$m"
  echo $$ > "$W/model.pid"
  echo "[$(stamp)] model: start"
  if [ -f "$m/standin/pipeline/model_index.json" ] && [ -f "$m/standin/loras/peft.safetensors" ]; then
    echo "[$(stamp)] model: stand-in kept"
  else
    rm -rf "$m/standin.partial"
    if ! python3 "$src/make_standin.py" --out "$m/standin.partial" --size "$SIZE"; then
      echo "failed: models/make_standin.py --size $SIZE (see the model log)" > "$W/model.done"; return 1
    fi
    rm -rf "$m/standin" && mv "$m/standin.partial" "$m/standin"
  fi
  echo "standin $((SECONDS - t0))" >> "$W/model.state"
  echo "[$(stamp)] model: stand-in ready after $((SECONDS - t0)) s"
  if [ -f "$m/onnx/manifest.json" ]; then
    echo "ok kept" > "$W/model.done"; return 0
  fi
  local form flags t1 variant
  # unet_lcm needs diffusers' peft backend (peft >= 0.17 for diffusers 0.42): checked now rather
  # than found out minutes into each export; without it the export has no variant (LCM then runs
  # on the base UNet: same graph, other weights; the table says so).
  variant=(--lora "lcm=$m/standin/loras/peft.safetensors" --variant lcm=lcm:1.0)
  if ! python3 -c 'from diffusers.utils import USE_PEFT_BACKEND; import sys; sys.exit(0 if USE_PEFT_BACKEND else 1)'; then
    echo "[$(stamp)] model: diffusers has no peft backend here (peft missing or too old): exporting without unet_lcm"
    echo "no-peft-backend" >> "$W/model.state"
    variant=(--no-variants)
  fi
  # CUDA fusions need only onnxruntime.transformers (pure Python, in the CPU wheel too); should they
  # fail with this machine's onnxruntime, plain fp16 (runs on CUDA without the fused operators), then fp32.
  for form in ${GPU_CHECK_FORMS:-fp16-cuda fp16 fp32}; do
    t1=$SECONDS
    case "$form" in
      fp16-cuda) flags=(--dtype fp16 --optimize cuda) ;;
      fp16|fp32) flags=(--dtype "$form") ;;
      *) echo "[$(stamp)] model: unknown form $form in GPU_CHECK_FORMS (fp16-cuda, fp16, fp32)"; continue ;;
    esac
    echo "[$(stamp)] model: export ${form} (${flags[*]}) ..."
    if python3 "$src/export.py" --out "$m/onnx" --model "$m/standin/pipeline" \
        --base-label "random-init SD v1.5 architecture ($SIZE, models/make_standin.py, made on the GPU machine)" \
        "${variant[@]}" --force --no-verify "${flags[@]}"; then
      echo "export $((SECONDS - t1)) $form" >> "$W/model.state"
      echo "[$(stamp)] model: export ${form} done in $((SECONDS - t1)) s (all $((SECONDS - t0)) s)"
      echo "ok $form" > "$W/model.done"; return 0
    fi
    echo "export-failed $((SECONDS - t1)) $form" >> "$W/model.state"
    echo "[$(stamp)] model: export ${form} FAILED after $((SECONDS - t1)) s"
  done
  echo "failed: every export form failed (see the model log)" > "$W/model.done"; return 1
}

start_model() {
  if [ -f "$W/model.pid" ] && { [ -f "$W/model.done" ] || kill -0 "$(cat "$W/model.pid")" 2>/dev/null; }; then
    echo "[$(stamp)] model build already started ($(cat "$W/model.done" 2>/dev/null || echo running))"; return
  fi
  rm -f "$W/model.done" "$W/model.state"
  # A session of its own, so it outlives this call (the machine keeps it while it stays warm).
  # A private copy: later calls re-copy the tree under the running script.
  cp "$repo/bench/gpu-check.sh" "$W/gpu-check.sh"
  setsid nohup bash "$W/gpu-check.sh" model > "$W/model.log" 2>&1 < /dev/null &
  echo $! > "$W/model.pid"
  echo "[$(stamp)] model build started in the background (log: $W/model.log)"
}

progress() {
  [ -f "$W/model.log" ] || return 0
  echo "[$(stamp)] model build: $(cat "$W/model.done" 2>/dev/null || echo running); last lines:"
  grep -v '^\s*$' "$W/model.log" | grep -v 'it/s\]' | tail -n 3 | cut -c1-200 | sed 's/^/    /'
}

# Checks for other issues that need this machine and take seconds, in the first call while the model
# builds: torch's CUDA randn reference draws (the RNG issue) and what `--device cuda` says with the
# machine's CPU-only onnxruntime wheel (the reliability issue). Results go to $OUT.
extras() {
  local o=${OUT:-$W/out}
  mkdir -p "$o"
  echo "[$(stamp)] torch CUDA randn reference draws"
  timeout 120 python3 scripts/torch_cuda_randn.py "$o" 2>&1 | tail -n 3
  local cpu_ort
  cpu_ort=$(python3 -c 'import glob,os,onnxruntime as o; print(sorted(glob.glob(os.path.join(os.path.dirname(o.__file__), "capi", "libonnxruntime.so*")))[0])' 2> /dev/null)
  {
    echo "CPU-only onnxruntime wheel: ${cpu_ort:-not found}"
    echo "\$ ORT_DYLIB_PATH=<cpu wheel> speedscape doctor --device cuda"
    ORT_DYLIB_PATH=$cpu_ort timeout 60 "$bin" doctor --device cuda; echo "(exit $?)"
    echo; echo "\$ ORT_DYLIB_PATH=<cpu wheel> speedscape generate --device cuda (tiny model)"
    ORT_DYLIB_PATH=$cpu_ort timeout 60 "$bin" generate --device cuda --prompt "a red fox" --scheduler dpmpp --steps 4 --cfg 7.5 --seed 42 --out "$W/cpu-wheel.png" --force; echo "(exit $?)"
  } > "$o/cuda-cpu-wheel.txt" 2>&1
  tail -n 12 "$o/cuda-cpu-wheel.txt"
}

case "$mode" in
  model) model; exit ;;
  start)
    stash; setup
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    versions
    start_model
    extras
    exit 0 ;;
  stash) stash; progress; exit 0 ;;
  run) ;;
  *) echo "usage: bench/gpu-check.sh [start|stash|run|model]" >&2; exit 2 ;;
esac

# ---------------------------------------------------------------------------------------------
# run: the check, within GPU_CHECK_BUDGET seconds
# ---------------------------------------------------------------------------------------------
T0=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET:-420}
DEADLINE=$((T0 + BUDGET))
left() { echo $((DEADLINE - $(date +%s))); }
out=${OUT:-$W/out}
mkdir -p "$out"
exec > >(tee -a "$out/gpu-check.log") 2>&1
step() { echo; echo "== [$(stamp)] +$(($(date +%s) - T0)) s, $(left) s left: $*"; }
notes=()

step "stash, setup"
stash; setup
start_model
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nvidia-smi; } > "$out/nvidia-smi.txt" 2>&1
head -n 1 "$out/nvidia-smi.txt"
[ -x "$bin" ] || { echo "no speedscape binary at $bin (.gpu-bin/speedscape.xz not carried?)"; }

step "ONNX Runtime's CUDA build"
ort_ok=0
if [ -f "$ORT/.sums" ] && cmp -s "$ORT/.sums" "$PARTS/SHA256SUMS" && compgen -G "$ORT/libonnxruntime.so.*" > /dev/null; then
  for ORT_DYLIB_PATH in "$ORT"/libonnxruntime.so.*; do break; done; ort_ok=1
elif ORT_DYLIB_PATH=$(python3 "$PARTS/assemble.py" "$PARTS" "$ORT"); then
  cp "$PARTS/SHA256SUMS" "$ORT/.sums"; ort_ok=1
fi
export ORT_DYLIB_PATH
NV=$(python3 -c 'import nvidia,os;print(os.path.dirname(nvidia.__path__[0]))')/nvidia
LD_LIBRARY_PATH=$(find "$NV" -maxdepth 3 -type d -name lib | sort | tr '\n' ':')${LD_LIBRARY_PATH:-}
export LD_LIBRARY_PATH
echo "ORT_DYLIB_PATH=$ORT_DYLIB_PATH (assembled: $ort_ok)"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"

step "speedscape doctor --device cuda (tiny model), --device tensorrt"
{
  echo "\$ speedscape doctor --device cuda"; timeout 90 "$bin" doctor --device cuda; echo "(exit $?)"
  echo; echo "\$ speedscape doctor --device tensorrt"; timeout 90 "$bin" doctor --device tensorrt; echo "(exit $?)"
} 2>&1 | tee "$out/doctor.txt"
if python3 -c 'import tensorrt' 2> /dev/null && [ -f "$ORT/libonnxruntime_providers_tensorrt.so" ]; then
  notes+=("TensorRT is importable and the provider library is there: see bench-tensorrt in the log")
  trt=1
else
  notes+=("--device tensorrt not timed: $(python3 -c 'import tensorrt' 2> /dev/null && echo 'tensorrt imports, but' || echo 'no tensorrt Python package here;') the ORT parts carry no libonnxruntime_providers_tensorrt.so, so it falls back to CUDA (doctor.txt has speedscape's note)")
  trt=0
fi

# CUDA graphs (issue 24): the tiny model's image with the UNet's calls captured and replayed must
# equal the plain CUDA path's bit for bit (tests/pipeline.rs has the same check for cargo).
step "CUDA graphs on the tiny model: the image with and without, compared bit for bit"
for graphs in false true; do
  printf '[runtime]\ndevice = "%s"\n[runtime.cuda]\ncuda_graphs = %s\n' "$DEVICE" "$graphs" > "$W/graphs-$graphs.toml"
  timeout 90 "$bin" --config "$W/graphs-$graphs.toml" generate --model-dir models/tiny --prompt "a lighthouse" \
    --scheduler dpmpp --steps 4 --cfg 7.5 --seed 3 --rng torch-cpu --out "$W/graphs-$graphs.png" \
    --save-raw "$W/graphs-$graphs.npy" --force > /dev/null 2>> "$out/gpu-errors.txt" || echo "generate with cuda_graphs = $graphs failed (exit $?)"
done
if cmp -s "$W/graphs-false.npy" "$W/graphs-true.npy"; then
  notes+=("CUDA graphs on the tiny model: the image is bit-identical with and without")
else
  notes+=("CUDA graphs on the tiny model: the images DIFFER (or one is missing; see gpu-errors.txt)")
fi
echo "${notes[-1]}"

# diffusers: alone after speedscape when there is time. While the export still runs (GPU idle),
# also once beside it, in the background, stopped the moment the model is ready (its JSON keeps the
# runs already measured), so that a number exists even if the export is late.
diffusers_go() { # json-path deadline-epoch; it execs, so call it in ( ) or with & ($! is then timeout's)
  exec timeout "$(( $2 - $(date +%s) ))" python3 bench/gpu_diffusers.py --device "$DEVICE" \
    --pipeline "$W/model/standin/pipeline" --lora "$W/model/standin/loras/peft.safetensors" \
    --runs dpmpp:20,ddpm:50,lcm:4 --size "$IMG" --repeat 3 --warmup 1 --json "$1" --deadline "$2"
}
SPEEDSCAPE_NEED=${GPU_CHECK_SPEEDSCAPE_S:-150}  # load 4 fp16 sessions on CUDA + warm-ups + 3×3 images
DIFFUSERS_NEED=${GPU_CHECK_DIFFUSERS_S:-75}

step "waiting for the model build"
busy_pid=
while [ ! -f "$W/model.done" ]; do
  if [ -z "$busy_pid" ] && [ -f "$W/model/standin/pipeline/model_index.json" ] && [ "$(left)" -gt $((SPEEDSCAPE_NEED + DIFFUSERS_NEED)) ]; then
    step "diffusers beside the export, in the background (GPU otherwise idle; the export's CPU use may slow it a little)"
    diffusers_go "$out/diffusers-cuda-busy.json" $((DEADLINE - SPEEDSCAPE_NEED)) &
    busy_pid=$!
  fi
  if ! kill -0 "$(cat "$W/model.pid" 2>/dev/null || echo 0)" 2>/dev/null && [ ! -f "$W/model.done" ]; then
    notes+=("the model build died without a result (killed? out of memory?): see its log at the end of gpu-check.log")
    break
  fi
  if [ "$(left)" -le "$SPEEDSCAPE_NEED" ]; then
    notes+=("the model build was not finished after $(($(date +%s) - T0)) s of this call: speedscape not timed (raise GPU_CHECK_BUDGET, or rerun at once: the build goes on)")
    break
  fi
  progress; sleep 10
done
if [ -n "$busy_pid" ] && kill -0 "$busy_pid" 2> /dev/null; then
  echo "[$(stamp)] stopping diffusers beside the export: the GPU is speedscape's now"
  kill "$busy_pid" 2> /dev/null; wait "$busy_pid" 2> /dev/null
fi
progress
model_state=$(cat "$W/model.done" 2>/dev/null || echo "not finished")
echo "model: $model_state"; cat "$W/model.state" 2>/dev/null
onnx=$W/model/onnx
[ -f "$onnx/manifest.json" ] && cp "$onnx/manifest.json" "$out/manifest.json"

has_runs() { python3 -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1])).get("runs") else 1)' "$1" 2> /dev/null; }
if [ -f "$onnx/manifest.json" ] && [ -x "$bin" ] && { [ "$ort_ok" = 1 ] || [ "$DEVICE" = cpu ]; }; then
  lcm=lcm:4
  if [ ! -f "$onnx/unet_lcm/model.onnx" ]; then
    lcm=lcm:4:1.5@base
    notes+=("no unet_lcm in the export: LCM timed on the base UNet (same graph and shapes, other weights)")
  fi
  reserve=$DIFFUSERS_NEED; has_runs "$out/diffusers-cuda-busy.json" && reserve=0
  # Two processes, base UNet first, so that a run cut short by the clock keeps the first's numbers.
  for runs in dpmpp:20,ddpm:50 "$lcm"; do
    json=$out/bench-cuda.json; [ "$runs" = "$lcm" ] && json=$W/bench-cuda-lcm.json
    t=$(( $(left) - reserve - 10 ))
    step "speedscape bench --device $DEVICE --size $IMG --runs $runs --repeat 3 --warmup 1 (limit ${t} s)"
    if [ "$t" -gt 30 ]; then
      timeout "$t" "$bin" bench --device "$DEVICE" --model-dir "$onnx" --size "$IMG" --runs "$runs" --repeat 3 --warmup 1 \
        --json "$json" --force || notes+=("speedscape bench --runs $runs exited with $? (124: killed at its time limit)")
    else
      notes+=("speedscape bench --runs $runs skipped: ${t} s left for it")
    fi
  done
  # One bench-cuda.json with every run (at most 8 files come back).
  python3 - "$out/bench-cuda.json" "$W/bench-cuda-lcm.json" <<'PY'
import json, pathlib, sys
a, b = (pathlib.Path(p) for p in sys.argv[1:])
if b.exists():
    extra = json.loads(b.read_text())
    if a.exists():
        main = json.loads(a.read_text())
        main["runs"] += extra["runs"]
        main["load_ms"] = {**main.get("load_ms", {}), **{f"{k} (lcm process)": v for k, v in extra.get("load_ms", {}).items()}}
    else:
        main = extra
    a.write_text(json.dumps(main, indent=2) + "\n")
PY
else
  notes+=("speedscape bench not run: model ${model_state}, binary $([ -x "$bin" ] && echo ok || echo missing), ORT CUDA assembled: ${ort_ok}")
fi

if [ -f "$W/model/standin/pipeline/model_index.json" ]; then
  if [ "$(left)" -gt $((DIFFUSERS_NEED - 15)) ] || ! has_runs "$out/diffusers-cuda-busy.json"; then
    step "diffusers eager fp16, alone (same card, same stand-in, same settings)"
    if [ $((DEADLINE - 15 - $(date +%s))) -gt 30 ]; then
      (diffusers_go "$out/diffusers-cuda.json" $((DEADLINE - 15))) || notes+=("diffusers (alone) did not finish: exit $?")
    else
      notes+=("diffusers (alone) skipped: no time left")
    fi
  else
    notes+=("diffusers timed only beside the export (no time left to time it alone)")
  fi
fi

if [ "$trt" = 1 ] && [ -f "$onnx/manifest.json" ] && [ "$(left)" -gt 90 ]; then
  step "speedscape bench --device tensorrt (dpmpp:20; the engine build falls in its warm-up)"
  timeout $(( $(left) - 20 )) "$bin" bench --device tensorrt --model-dir "$onnx" --size "$IMG" --runs dpmpp:20 --repeat 3 \
    --json "$W/bench-tensorrt.json" --force || notes+=("speedscape bench --device tensorrt exited with $?")
fi

if [ "$ort_ok" = 1 ] && [ -f "$onnx/manifest.json" ] && [ "$(left)" -gt 40 ]; then
  step "out of GPU memory on purpose: the full-size UNet under a 256 MiB CUDA arena cap (the reliability issue)"
  printf '[runtime.cuda]\nmemory_limit_mib = 256\n' > "$W/oom.toml"
  timeout $(( $(left) - 20 )) "$bin" generate --config "$W/oom.toml" --device cuda --model-dir "$onnx" --prompt "a red fox" \
    --scheduler dpmpp --steps 2 --cfg 7.5 --seed 42 --width 512 --height 512 --out "$W/oom.png" --force > "$out/oom.txt" 2>&1
  echo "(exit $?)" >> "$out/oom.txt"; tail -n 15 "$out/oom.txt"
fi

step "summary"
printf '%s\n' "${notes[@]}" > "$W/notes.txt"
python3 - "$out" "$W" "$model_state" "$IMG" <<'PY' | tee "$out/summary.md"
import json, pathlib, sys
out, work, model_state, img = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3], sys.argv[4]
def load(p):
    try:
        return json.loads(pathlib.Path(p).read_text())
    except (OSError, ValueError):
        return None
ss = load(out / "bench-cuda.json")
alone, busy = load(out / "diffusers-cuda.json"), load(out / "diffusers-cuda-busy.json")
df = alone if alone and alone.get("runs") else busy
smi = (out / "nvidia-smi.txt").read_text().splitlines() if (out / "nvidia-smi.txt").exists() else []
card = smi[0] if smi and "," in smi[0] else "?"  # name, memory, driver
man = load(out / "manifest.json") or {}
print(f"# speedscape vs diffusers: SD v1.5 architecture (random weights), {img}²\n")
print(f"- card: {card}; speedscape provider: {ss['provider'] if ss else '—'}, onnxruntime {ss['onnxruntime'] if ss else '—'}")
vae = "fp16 (vae_decoder_fp16/, the default on CUDA; fp32 re-decode on overflow)" if "vae_decoder_fp16" in man.get("components", {}) else "fp32"
print(f"- export: {model_state} (manifest dtype {man.get('dtype', '?')}, optimize {man.get('optimize', '?')}); VAE decoder {vae}")
if df:
    v = df["versions"]
    print(f"- {df.get('contender')}: diffusers {v.get('diffusers')}, torch {v.get('torch')} (CUDA {df.get('cuda')}, cuDNN {df.get('cudnn')}); "
          "† = timed only beside the export (CPU shared with it)")
print("- per image end to end (text + loop + VAE), loading apart; median of 3 after 1 warm-up; steps/s = UNet+scheduler loop only (speedscape's `its`; under cfg each step is one batch-2 UNet call)\n")
key = lambda sched, steps, cfg: (sched, int(steps), round(float(cfg), 3))
srun = {key(r["scheduler"], r["steps"], r["cfg"]): r for r in (ss or {}).get("runs", [])}
drun = {key(r["scheduler"], r["steps"], r["cfg"]): {**r, "mark": "†"} for r in (busy or {}).get("runs", [])}
drun.update({key(r["scheduler"], r["steps"], r["cfg"]): {**r, "mark": ""} for r in (alone or {}).get("runs", [])})
targets = {("dpmpp", 20, 7.5): 0.19, ("lcm", 4, 1.5): 0.045}
RATIO, CALL_MS = 1.25, 8.7  # ≥ 1.25× the contender; a batch-2 UNet call ≤ 8.7 ms (≥ 115 calls/s)
print("| setting | speedscape s (min–max) | speedscape steps/s | diffusers s (min–max) | diffusers / speedscape | target |")
print("|---|---:|---:|---:|---:|---|")
verdicts = []
for k, label in ((("dpmpp", 20, 7.5), "DPM-Solver++ 20, cfg 7.5"), (("lcm", 4, 1.5), "LCM 4, cfg 1.5, unet_lcm"), (("ddpm", 50, 7.5), "DDPM 50, cfg 7.5")):
    s, d = srun.get(k), drun.get(k)
    s_med = s["total_ms"]["median"] / 1e3 if s else None
    cells = [label,
             f"{s_med:.3f} ({s['total_ms']['min'] / 1e3:.3f}–{s['total_ms']['max'] / 1e3:.3f})" if s else "—",
             f"{s['its']:.1f}" if s else "—",
             f"{d['median_s']:.3f} ({d['min_s']:.3f}–{d['max_s']:.3f}){d['mark']}" if d else "—",
             f"{d['median_s'] / s_med:.2f}×" if s and d else "—"]
    t = []
    if k in targets:
        t.append(f"≤{targets[k]} s: " + ("—" if s is None else "met" if s_med <= targets[k] else "MISSED"))
        verdicts.append((f"{label} end to end ≤ {targets[k]} s", None if s is None else s_med <= targets[k], f"{s_med:.3f} s" if s else "not measured"))
    t.append(f"≥{RATIO}×: " + ("—" if not (s and d) else "met" if d["median_s"] / s_med >= RATIO else "MISSED"))
    verdicts.append((f"{label}: ≥ {RATIO}× diffusers", None if not (s and d) else d["median_s"] / s_med >= RATIO, f"{d['median_s'] / s_med:.2f}×" if s and d else "not measured"))
    if k[0] != "lcm":  # the UNet-call target: guided runs at cfg 7.5 (one batch-2 UNet call per step)
        call = s["unet_call_ms"]["median"] if s else None
        t.append(f"UNet call ≤{CALL_MS} ms: " + ("—" if s is None else "met" if call <= CALL_MS else "MISSED"))
        verdicts.append((f"{label}: a batch-2 UNet call ≤ {CALL_MS} ms", None if s is None else call <= CALL_MS, f"{call:.1f} ms" if s else "not measured"))
    cells.append("; ".join(t))
    print("| " + " | ".join(cells) + " |")
print()
met = sum(v is True for _, v, _ in verdicts)
print(f"Targets: {met} of {len(verdicts)} met, {sum(v is False for _, v, _ in verdicts)} missed, {sum(v is None for _, v, _ in verdicts)} not measured.")
for name, v, val in verdicts:
    print(f"- {'met' if v else 'MISSED' if v is False else 'not measured'}: {name} ({val})")
if ss:
    print("\nspeedscape load: " + ", ".join(f"{k} {v / 1e3:.1f} s" for k, v in ss.get("load_ms", {}).items()))
    for r in ss["runs"]:
        warm = ", ".join(f"{w / 1e3:.1f}" for w in r["warmup_ms"])
        mem = f", GPU memory {r['peak_gpu_bytes'] / 2**30:.1f} GiB" if r.get("peak_gpu_bytes") else ""
        print(f"- {r['label']}: UNet call {r['unet_call_ms']['median']:.1f} ms, text {r['text_ms']['median']:.1f} ms, "
              f"VAE {r['vae_ms']['median']:.1f} ms, outside ORT {r['outside_ort_pct']:.1f} %, warm-up {warm} s{mem}")
if df:
    print(f"\ndiffusers load {df.get('load_s', 0):.1f} s (imports {df.get('import_s', 0):.1f} s), LoRA fuse {df.get('lora_fuse_s', 0):.1f} s, "
          f"load average {df.get('loadavg_1min_start', 0):.1f} → {df.get('loadavg_1min_end', 0):.1f}")
    if busy and alone and busy.get("runs"):
        print("diffusers beside the export: " + ", ".join(f"{r['label']} {r['median_s']:.3f} s" for r in busy["runs"]))
notes = [n for n in (work / "notes.txt").read_text().splitlines() if n.strip()] if (work / "notes.txt").exists() else []
if notes:
    print("\nNotes:")
    for n in notes:
        print(f"- {n}")
PY
step "done after $(($(date +%s) - T0)) s"
{ echo; echo "== the model build's log ($W/model.log), progress bars dropped"; grep -v 'it/s\]' "$W/model.log" 2> /dev/null; } >> "$out/gpu-check.log"
exec 1>&- 2>&-
sleep 1  # let tee write the last lines
exit 0
