#!/usr/bin/env bash
# Owns running one speedscape sweep's shards as a Slurm job array and merging them: the same
# steps as bench/ray_sweep.py (README, "On Ray or Slurm") for HPC clusters, through a folder on a
# shared filesystem that every node sees at the same path.
#
# Submit (on a login node; writes DIR/plan.json, submits the array and a merge job after it):
#
#   bench/slurm_sweep.sh submit N DIR [OUT] -- <sweep flags, e.g. --preset all --seeds 4>
#
#   N     shards = array tasks (0…N-1), each on one GPU (--gres=gpu:1)
#   DIR   a new or empty folder on the shared filesystem: plan.json, shard-1 … shard-N, logs/
#   OUT   where the merge job writes its sweep-<time>/ folder (default DIR/merged)
#   Extra sbatch options (partition, account, time limit): SLURM_SWEEP_SBATCH="-p gpu -A proj -t 2:00:00".
#   The merge job (sbatch --dependency=afterok:<array id>) starts only if every shard succeeded;
#   after a failure, resubmit the array alone (`sbatch --array=0-(N-1) bench/slurm_sweep.sh shard DIR`,
#   finished runs are kept: shards resume) and then the merge.
#
# The two modes the jobs run (each can be run by hand too; no Slurm needed):
#
#   bench/slurm_sweep.sh shard DIR        array task: shard K = SLURM_ARRAY_TASK_ID - MIN + 1 of
#                                         N = SLURM_ARRAY_TASK_COUNT into DIR/shard-K (resumable)
#   bench/slurm_sweep.sh merge DIR OUT    every DIR/shard-* into a new OUT/sweep-<time>/
#
# The binary: $SPEEDSCAPE_BIN, else speedscape on PATH (submit passes its absolute path to the
# jobs). SPEEDSCAPE_DEVICE (e.g. cuda) becomes the shards' `sweep run --device`. Every node needs
# the binary, ONNX Runtime and the plan's model folder at the same paths.
#
# Used directly by sbatch (the array-task mode), these defaults apply; submit overrides --array:
#SBATCH --job-name=speedscape-sweep
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=4
#SBATCH --array=0-3
set -euo pipefail

die() { # cause, fix
  printf 'slurm_sweep: %s\nfix: %s\n' "$1" "$2" >&2
  exit 2
}

usage_fix="bench/slurm_sweep.sh submit N DIR [OUT] -- <sweep flags> | shard DIR | merge DIR OUT (see the top of the script)"

speedscape_bin() {
  local bin="${SPEEDSCAPE_BIN:-}"
  if [ -z "$bin" ]; then
    bin=$(command -v speedscape) || die "no speedscape binary: SPEEDSCAPE_BIN is unset and none is on PATH" \
      "build it (cargo build --release) and set SPEEDSCAPE_BIN=PATH, or install the wheel so speedscape is on PATH"
  fi
  if ! { [ -f "$bin" ] && [ -x "$bin" ]; }; then
    die "the speedscape binary $bin (SPEEDSCAPE_BIN or PATH) is not an executable file" \
      "point SPEEDSCAPE_BIN at the built binary (target/release/speedscape)"
  fi
  readlink -f "$bin"
}

positive() { # value, what it is
  [[ "$1" =~ ^[1-9][0-9]*$ ]] || die "$2 is '$1', not a whole number ≥ 1" "$usage_fix"
}

cmd_shard() {
  local dir="${1:?}" bin id min count k device=()
  [ -f "$dir/plan.json" ] || die "$dir/plan.json does not exist" "give the DIR that submit wrote the plan into"
  id="${SLURM_ARRAY_TASK_ID:-}"; count="${SLURM_ARRAY_TASK_COUNT:-}"; min="${SLURM_ARRAY_TASK_MIN:-0}"
  [[ "$id" =~ ^[0-9]+$ ]] || die "SLURM_ARRAY_TASK_ID is '${id}', not a task index" \
    "run shard mode as a job array task (sbatch --array=0-(N-1)), or set SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT by hand"
  positive "$count" "SLURM_ARRAY_TASK_COUNT"
  k=$((id - min + 1))
  if [ "$k" -lt 1 ] || [ "$k" -gt "$count" ]; then
    die "array task $id (min $min) is not one of $count tasks" "submit the array as --array=0-$((count - 1))"
  fi
  bin=$(speedscape_bin)
  [ -z "${SPEEDSCAPE_DEVICE:-}" ] || device=(--device "$SPEEDSCAPE_DEVICE")
  cd "$dir"
  echo "slurm_sweep: shard $k/$count on $(hostname)" >&2
  "$bin" sweep run --plan plan.json --shard "$k/$count" --out "shard-$k" "${device[@]}"
}

cmd_merge() {
  local dir="${1:?}" out="${2:?}" bin shards=()
  bin=$(speedscape_bin)
  local s
  for s in "$dir"/shard-*; do
    if [ -d "$s" ]; then shards+=("$s"); fi
  done
  [ "${#shards[@]}" -gt 0 ] || die "no shard folders (shard-K) in $dir" "run the array tasks first (shard mode)"
  "$bin" sweep merge --out "$out" "${shards[@]}"
}

cmd_submit() {
  local n="${1:-}" dir="${2:-}" out="" bin self array_id merge_id extra=()
  positive "$n" "N (the number of shards)"
  [ -n "$dir" ] || die "no DIR given" "$usage_fix"
  shift 2
  if [ "${1:-}" != "--" ] && [ $# -gt 0 ]; then out="$1"; shift; fi
  [ "${1:-}" = "--" ] && shift
  command -v sbatch >/dev/null || die "sbatch is not on PATH" "submit from a Slurm login node"
  bin=$(speedscape_bin)
  self=$(readlink -f "$0")
  mkdir -p "$dir/logs"
  dir=$(readlink -f "$dir")
  out=$(readlink -m "${out:-$dir/merged}")
  [ ! -e "$dir/plan.json" ] || die "$dir/plan.json already exists" \
    "use a new DIR, or resubmit its array with sbatch to resume it (see the top of the script)"
  "$bin" sweep plan --out "$dir/plan.json" "$@"
  # Word splitting intended: SLURM_SWEEP_SBATCH holds several sbatch options.
  # shellcheck disable=SC2206
  extra=(${SLURM_SWEEP_SBATCH:-})
  export SPEEDSCAPE_BIN="$bin"
  array_id=$(sbatch --parsable "${extra[@]}" --array="0-$((n - 1))" --gres=gpu:1 \
    --output="$dir/logs/shard-%a.log" "$self" shard "$dir")
  array_id="${array_id%%;*}"
  merge_id=$(sbatch --parsable "${extra[@]}" --dependency="afterok:$array_id" --job-name=speedscape-merge \
    --output="$dir/logs/merge.log" --wrap "$(printf '%q ' "$self" merge "$dir" "$out")")
  echo "submitted: shards as array job $array_id (0-$((n - 1))), merge as job ${merge_id%%;*} into $out"
}

mode="${1:-}"
[ $# -gt 0 ] && shift
case "$mode" in
  submit) cmd_submit "$@" ;;
  shard) [ $# -eq 1 ] || die "shard mode takes DIR" "$usage_fix"; cmd_shard "$1" ;;
  merge) [ $# -eq 2 ] || die "merge mode takes DIR OUT" "$usage_fix"; cmd_merge "$1" "$2" ;;
  *) die "unknown mode '${mode}'" "$usage_fix" ;;
esac
