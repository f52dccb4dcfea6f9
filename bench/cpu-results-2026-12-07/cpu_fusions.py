"""Experiment (issue 24, CPU lever): ONNX Runtime's transformer fusions for the CPU provider on the
SD v1.5 stand-in UNet (fp32): which fuse, the output against the unfused graph, and the time of a
batch-2 call at 256² and 512² on 2 cores. How it was run (results in bench/RESULTS.md):

    .venv-ref/bin/python models/make_standin.py --out /tmp/sd15s --size sd15
    .venv-ref/bin/python models/export.py --model /tmp/sd15s/pipeline --out /tmp/sd15-onnx --no-variants --no-verify
    .venv-ref/bin/python bench/cpu-results-2026-12-07/cpu_fusions.py /tmp/sd15-onnx/unet/model.onnx /tmp/cpu-fusions
"""
import json, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "models"))
import numpy as np
import onnxruntime as ort
import export

src = Path(sys.argv[1])
work = Path(sys.argv[2])
dst = work / "unet-cpu" / "model.onnx"

if not dst.is_file():
    t0 = time.perf_counter()
    single = work / "unet-single" / "model.onnx"
    if not single.is_file():
        export.transform_graph(src, single, None, fp16=False)
    fused, spilled = export.transform_graph(single, dst, "unet", False, target="cpu")
    print("fused", fused, "in", round(time.perf_counter() - t0, 1), "s", flush=True)

def sess(p, level):
    so = ort.SessionOptions(); so.intra_op_num_threads = 2; so.inter_op_num_threads = 1
    so.graph_optimization_level = level
    return ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])

rng = np.random.default_rng(0)
res = {}
for side in (256, 512):
    h = side // 8
    feeds = {"sample": rng.standard_normal((2, 4, h, h)).astype(np.float32),
             "timestep": np.array(500.0, dtype=np.float32) ,
             "encoder_hidden_states": rng.standard_normal((2, 77, 768)).astype(np.float32)}
    outs = {}
    for name, p in (("plain", src), ("cpu-fused", dst)):
        s = sess(p, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
        f = {i.name: feeds[i.name] if i.name in feeds else None for i in s.get_inputs()}
        if f.get("timestep") is not None and s.get_inputs()[1].shape == []:
            pass
        f = {k: v for k, v in f.items() if v is not None}
        s.run(None, f)  # warm-up
        ts = []
        for _ in range(3):
            t0 = time.perf_counter(); out = s.run(None, f)[0]; ts.append(time.perf_counter() - t0)
        outs[name] = out
        res[f"{name}_{side}"] = {"median_s": float(np.median(ts)), "all_s": ts}
        print(side, name, "median", round(float(np.median(ts)), 3), "s", ts, flush=True)
        del s
    d = float(np.abs(outs["plain"] - outs["cpu-fused"]).max()); scale = float(np.abs(outs["plain"]).max())
    res[f"max_abs_diff_{side}"] = d
    print(side, "max abs diff", d, "scale", scale, flush=True)
json.dump(res, open(work / "cpu-fusions-unet.json", "w"), indent=1)
