"""Experiment (issue 24, CPU levers besides the fusions): one batch-2 UNet call of the SD v1.5
stand-in (fp32) on 2 cores under ONNX Runtime session settings speedscape could choose, each in a
fresh session, 1 warm-up then the median of 3, all in one run. The graph is the `--optimize cpu`
export's (bench/make-model.sh --cpu-form) unless another is given. How it was run (results in
bench/RESULTS.md):
    .venv-ref/bin/python bench/cpu-results-2026-12-07/cpu_levers.py /work/bench-sd15/onnx-cpu/unet/model.onnx \
        bench/cpu-results-2026-12-07/cpu-levers-unet.json

Settings:
  default       speedscape's session settings on this machine: ORT_ENABLE_ALL (which includes the
                NCHWc transformer: MLAS's blocked channel layout for convolutions, x86's form of
                NHWC), intra-op threads = physical cores (2), spinning on, denormals as zero,
                memory pattern off, a CPU arena (speedscape shares one between sessions; per
                session here, which measured the same speed)
  extended      ORT_ENABLE_EXTENDED: everything but the layout transformers, so convolutions
                run in plain NCHW (what the blocked layout is worth)
  no-spin       intra-op threads do not spin between ops (session.intra_op.allow_spinning = 0)
  1-thread      intra_op_num_threads = 1
  no-arena      enable_cpu_mem_arena = False (every buffer from the system allocator)
  denormals     subnormal floats kept (session.set_denormal_as_zero = 0)
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

src, out = Path(sys.argv[1]), Path(sys.argv[2])
SIDES = (256, 512)


def options(name: str) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1 if name == "1-thread" else 2
    so.inter_op_num_threads = 1
    so.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED if name == "extended" else ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    )
    so.enable_mem_pattern = False
    so.add_session_config_entry("session.set_denormal_as_zero", "0" if name == "denormals" else "1")
    if name == "no-spin":
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if name == "no-arena":
        so.enable_cpu_mem_arena = False
    return so


rng = np.random.default_rng(0)
feeds = {
    side: {
        "sample": rng.standard_normal((2, 4, side // 8, side // 8)).astype(np.float32),
        "timestep": np.array(500.0, dtype=np.float32),
        "encoder_hidden_states": rng.standard_normal((2, 77, 768)).astype(np.float32),
    }
    for side in SIDES
}
results = {"graph": str(src), "onnxruntime": ort.__version__, "calls": {}}
reference = {}
LEVERS = ("extended", "no-spin", "1-thread", "no-arena", "denormals")
for name in ("default", *LEVERS):
    t0 = time.perf_counter()
    sess = ort.InferenceSession(str(src), options(name), providers=["CPUExecutionProvider"])
    load_s = time.perf_counter() - t0
    for side in SIDES:
        sess.run(None, feeds[side])  # warm-up
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            y = sess.run(None, feeds[side])[0]
            times.append(time.perf_counter() - t0)
        reference.setdefault(side, y)
        entry = {"median_s": float(np.median(times)), "all_s": times, "load_s": load_s,
                 "max_abs_vs_default": float(np.abs(y - reference[side]).max())}
        results["calls"][f"{name}_{side}"] = entry
        print(name, side, round(entry["median_s"], 3), "s", [round(t, 3) for t in times], "diff", entry["max_abs_vs_default"], flush=True)
    del sess
for side in SIDES:
    base = results["calls"][f"default_{side}"]["median_s"]
    for name in LEVERS:
        results["calls"][f"{name}_{side}"]["vs_default"] = results["calls"][f"{name}_{side}"]["median_s"] / base
out.write_text(json.dumps(results, indent=1) + "\n")
