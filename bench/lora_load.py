#!/usr/bin/env python
"""What run-time LoRA costs at session creation: the time to a ready UNet session and the peak
memory of a process that fuses a LoRA into the base UNet at load (`--unet base --lora FILE=1`)
against one that loads the same LoRA pre-fused by the exporter (`--unet VARIANT`).

    python bench/lora_load.py [--model .bench/onnx] [--variant wide] [--lora wide] [--repeat 3]

Each measurement is a fresh `speedscape generate` process (1 step at 64×64, so the run itself
is negligible), alternating the two ways; the session-creation time is the report's `load_ms`
for the UNet, the peak memory the process's maximum resident set (getrusage). Also printed: the
bytes of the weights the LoRA targets (from its tensors' shapes, fp32), the bound on the extra
memory. Needs `onnx` (the reference
or bench environment) and a release build (`cargo build --release`), or SPEEDSCAPE_BIN.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def peak_of(cmd: list[str]) -> tuple[str, int]:
    """Runs `cmd` under /usr/bin/time and gives its stdout and maximum resident set in bytes."""
    proc = subprocess.run(["/usr/bin/time", "-f", "%M"] + cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"lora_load: {' '.join(cmd)} failed:\n{proc.stderr}")
    kib = int(proc.stderr.strip().splitlines()[-1])
    return proc.stdout, kib * 1024


def measure(binary: str, model: Path, unet: str, lora: str | None) -> tuple[float, int]:
    cmd = [binary, "generate", "--model-dir", str(model), "--unet", unet, "--steps", "1", "--width", "64",
           "--height", "64", "--scheduler", "euler", "--cfg", "7.5", "--seed", "1", "--prompt", "a cottage", "--json", "--force",
           "--out", "/tmp/speedscape-lora-load.png"]
    if lora:
        cmd += ["--lora", lora]
    out, peak = peak_of(cmd)
    report = json.loads(out)
    unet_ms = [v for k, v in report["load_ms"].items() if k.startswith("unet")]
    return max(unet_ms), peak


def targeted_bytes(lora_file: Path, width: int = 4) -> tuple[int, int]:
    """(bytes of the weights the LoRA changes, in a `width`-byte export; how many) from its
    down/A [r, in, kh, kw] and up/B [out, r, …] shapes."""
    from safetensors import safe_open

    with safe_open(str(lora_file), "np") as f:
        shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
    total = n = 0
    for key, down in shapes.items():
        if not key.endswith((".lora_A.weight", ".lora_down.weight")):
            continue
        up = shapes[key.replace("lora_A", "lora_B").replace("lora_down", "lora_up")]
        elems = up[0]
        for d in down[1:]:
            elems *= d
        total, n = total + elems * width, n + 1
    return total, n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / ".bench/onnx"))
    ap.add_argument("--variant", default="wide", help="the pre-fused variant (its folder is unet_<variant>)")
    ap.add_argument("--lora", default="wide", help="the adapter of the model folder fused at run time")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    binary = os.environ.get("SPEEDSCAPE_BIN", str(ROOT / "target/release/speedscape"))
    model = Path(args.model)
    rows = {"pre-fused": [], "run-time": []}
    for i in range(args.repeat):
        rows["pre-fused"].append(measure(binary, model, args.variant, None))
        rows["run-time"].append(measure(binary, model, "base", f"{args.lora}=1"))
        print(f"round {i + 1}: pre-fused {rows['pre-fused'][-1]}, run-time {rows['run-time'][-1]}", file=sys.stderr)
    med = {k: (statistics.median(t for t, _ in v), statistics.median(p for _, p in v)) for k, v in rows.items()}
    tb, n = targeted_bytes(model / "loras" / f"{args.lora}.safetensors")
    extra = med["run-time"][1] - med["pre-fused"][1]
    print(f"| way | UNet session ready (median of {args.repeat}) | peak RSS (median) |")
    print("|---|---:|---:|")
    for k, (t, p) in med.items():
        print(f"| {k} | {t / 1e3:.2f} s | {p / 2**20:.0f} MiB |")
    print()
    print(f"run-time ÷ pre-fused session time: {med['run-time'][0] / med['pre-fused'][0]:.2f}× (goal ≤ 1.5×)")
    print(f"extra peak memory: {extra / 2**20:.0f} MiB; the {n} targeted weights: {tb / 2**20:.0f} MiB "
          f"(goal: extra ≤ one copy of them: {'met' if extra <= tb else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
