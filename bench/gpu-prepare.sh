#!/usr/bin/env bash
# Prepares, HERE (network, no GPU), what bench/gpu-check.sh needs on a lent GPU machine, and prints
# the exact `run` calls: what each carries and its size against the 64 MiB a transfer may hold.
#
#   bench/gpu-prepare.sh [--no-build] [--plan-only]
#
#   (a) ../shared/gpu/pack-ort-cuda.sh: ONNX Runtime's CUDA 13 build (onnxruntime-gpu 1.31.1) as
#       .ortcuda/part-NN + SHA256SUMS + assemble.py. The first time it NEEDS NETWORK (pip downloads
#       the onnxruntime-gpu wheel from PyPI into ~/.cache/speedscape-ortcuda) and is CPU-heavy:
#       `xz -9 -T0` of ~313 MB, minutes on 2 cores, ~700 MB of RAM per thread. Later runs reuse the
#       cached .tar.xz and only re-split it. The parts are sized here, not at its default 48 MiB:
#       every call also carries the whole working tree (~33 MiB: models/tiny, tests/fixtures), so
#       a part may only take what the tree leaves of 64 MiB.
#   (b) cargo build --release (skipped with --no-build), stripped (69 MB -> ~11 MB) and xz-compressed
#       (~3.4 MB) into .gpu-bin/speedscape.xz; gpu-check.sh unpacks it with Python's lzma.
#   (c) the pure-Python wheels the GPU machine lacks for making and exporting the model there
#       (NEEDS NETWORK, PyPI) into .gpu-wheels/: diffusers 0.42.1 alone. Its other requirements are
#       there (/work/.library/device/KINDS.md: huggingface_hub 1.33 (it needs >=1.32), safetensors
#       0.8, filelock, numpy, regex, requests, pillow; peft, transformers, onnx, onnxruntime (CPU)),
#       except importlib_metadata, which diffusers imports only on Python < 3.8
#       (diffusers/utils/import_utils.py); its current release would also want lazy-importer, so
#       it is left out rather than shadowing the standard library's for every package there.
#   (d) the plan: the smallest number of calls, each under 64 MiB with a margin; fails loudly if one
#       would not fit. Call 1 carries the small last part with SHA256SUMS, assemble.py, the binary
#       and the wheels, and starts the model build there in the background; the others carry one
#       part each; the last runs the check.
#
# --plan-only: (d) only, from what is already prepared (re-check after the tree changed).
# Writes (git-ignored): .ortcuda/, .gpu-bin/, .gpu-wheels/.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
build=1
plan_only=0
for a in "$@"; do
  case "$a" in
    --no-build) build=0 ;;
    --plan-only) plan_only=1 ;;
    -h|--help) sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu-prepare: unknown option $a (see --help)" >&2; exit 2 ;;
  esac
done

LIMIT=$((64 * 1024 * 1024))
MARGIN=$((1024 * 1024))  # room for edits between now and the calls (re-check with --plan-only)
VERSION=${ORT_GPU_VERSION:-1.31.1}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/speedscape-ortcuda
tarball=$cache/ortcuda-$VERSION.tar.xz
WHEELS=(diffusers==0.42.1)

# Bytes of what travels in every call: tracked files and untracked files git does not ignore.
tree_bytes() {
  git ls-files -z --cached --others --exclude-standard | python3 -c '
import os, sys
print(sum(os.path.getsize(p) for p in sys.stdin.buffer.read().decode().split("\0") if p and os.path.isfile(p)))'
}

if [ "$plan_only" = 0 ]; then
  # (a) once for the download and the compression (cached), again below with the part size.
  if [ ! -f "$tarball" ]; then
    echo "gpu-prepare: ../shared/gpu/pack-ort-cuda.sh (downloads onnxruntime-gpu $VERSION, xz -9: minutes)" >&2
    ../shared/gpu/pack-ort-cuda.sh > /dev/null
  fi

  # (b) the binary.
  if [ "$build" = 1 ]; then
    cargo build --release
  fi
  mkdir -p .gpu-bin
  strip -o .gpu-bin/speedscape target/release/speedscape
  xz -9 -T1 -f .gpu-bin/speedscape  # -> .gpu-bin/speedscape.xz (the stripped binary alone is ~11 MB)
  ls -l .gpu-bin/speedscape.xz >&2

  # (c) the wheels (pure Python, so any platform tag is the one they have: py3-none-any).
  rm -rf .gpu-wheels && mkdir -p .gpu-wheels
  python3 -m pip download -q --no-deps --python-version 3.12 --implementation cp --only-binary=:all: \
    -d .gpu-wheels "${WHEELS[@]}"
  for w in .gpu-wheels/*.whl; do
    case "$w" in *-none-any.whl) ;; *) echo "gpu-prepare: $w is not a pure-Python wheel" >&2; exit 1 ;; esac
  done
  ls -l .gpu-wheels >&2
fi

[ -f "$tarball" ] || { echo "gpu-prepare: no $tarball; run without --plan-only first" >&2; exit 1; }
[ -f .gpu-bin/speedscape.xz ] || { echo "gpu-prepare: no .gpu-bin/speedscape.xz; run without --plan-only first" >&2; exit 1; }
compgen -G ".gpu-wheels/*.whl" > /dev/null || { echo "gpu-prepare: no wheels in .gpu-wheels; run without --plan-only first" >&2; exit 1; }

# (d) part size: the largest that leaves call 1 room for the small files beside the last part.
tree=$(tree_bytes)
small=$(cat .gpu-bin/speedscape.xz .gpu-wheels/*.whl "$root/../shared/gpu/assemble.py" | wc -c)
small=$((small + 4096))  # SHA256SUMS
ort=$(stat -c %s "$tarball")
read -r part_mib nparts < <(python3 - "$LIMIT" "$MARGIN" "$tree" "$small" "$ort" <<'PY'
import math, sys
limit, margin, tree, small, ort = map(int, sys.argv[1:])
room = limit - margin - tree
mib = 1 << 20
for p in range(room // mib, 0, -1):
    n = math.ceil(ort / (p * mib))
    last = ort - (n - 1) * p * mib
    if last + small <= room:
        print(p, n)
        break
else:
    sys.exit(f"gpu-prepare: nothing fits: the working tree is {tree / mib:.1f} MiB of the {limit / mib:.0f} MiB a call may carry")
PY
)
if [ "$plan_only" = 0 ] || [ "$(find .ortcuda -name 'part-*' 2> /dev/null | wc -l)" != "$nparts" ]; then
  PART_MB=$part_mib ../shared/gpu/pack-ort-cuda.sh > /dev/null
fi

# The calls, each checked: the tree plus what it carries.
python3 - "$LIMIT" "$tree" "$nparts" <<'PY'
import os, pathlib, sys
limit, tree, n = map(int, sys.argv[1:])
mib = 1 << 20
def size(p):
    p = pathlib.Path(p)
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
parts = sorted(str(p) for p in pathlib.Path(".ortcuda").glob("part-*"))
if len(parts) != n:
    sys.exit(f"gpu-prepare: expected {n} parts in .ortcuda, found {len(parts)}")
run = "GPU_CHECK_BUDGET=<budget_left_s - 60> bash bench/gpu-check.sh run"
first = [parts[-1], ".ortcuda/SHA256SUMS", ".ortcuda/assemble.py", ".gpu-bin", ".gpu-wheels"]
calls = [(first, run if len(parts) == 1 else "bash bench/gpu-check.sh start")]
for i, p in enumerate(parts[:-1]):
    calls.append(([p], run if i == len(parts) - 2 else "bash bench/gpu-check.sh stash"))
print(f"working tree: {tree / mib:.1f} MiB in every call; parts of {size(parts[0]) / mib:.0f} MiB; limit {limit / mib:.0f} MiB per call\n")
print("The `run` calls, back to back (the machine is given back after 30 s idle, and everything on it with it):\n")
bad = False
for i, (carry, cmd) in enumerate(calls, 1):
    total = tree + sum(size(c) for c in carry)
    over = total > limit
    bad |= over
    extra = ", timeout_s GPU_CHECK_BUDGET + 30" if "run" in cmd.split() else ""
    print(f"{i}. carry {carry}\n   command: {cmd}{extra}\n   transfer {total / mib:.1f} MiB{'  OVER THE LIMIT' if over else ''}")
print("\nIn the last call, GPU_CHECK_BUDGET = the previous reply's lease.budget_left_s minus 60, at most 560")
print("(no `status` call in between: the 30 s idle window), timeout_s = GPU_CHECK_BUDGET + 30. Then give_back.")
print("Results come back under files_at: summary.md holds the table, gpu-check.log everything.")
if bad:
    sys.exit("gpu-prepare: a call would carry more than 64 MiB (the working tree grew?): see above")
PY
