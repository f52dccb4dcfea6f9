#!/usr/bin/env python
"""The judge's evaluation (issue 22): how well the shipped judge graph reads held-out renders, and
how closely it follows the torch judge it was exported from.

    .venv-ref/bin/python models/micro_src/evaluate_judge.py [--run-dir .micro-run] [--model models/micro]

Held-out scenes (world.py's "heldout" split, the first `scenes` of them, rendered here), plain and
as 4x4-block pixel art (world.pixel_art with world.AUGMENT_BLOCK, as the judge stage trains on).
The judge graph is <run-dir>/judge/judge.pt exported as export_micro.ship_judge exports it (the
model's dtype; ship_judge passes its own graph) and run through ONNX Runtime (`GraphJudge`); the
torch judge runs on the same images. Per set: each head's accuracy through ONNX Runtime and
through torch, whether the two argmaxes agree on every image, and the largest logit difference.
Written to --out (default <run-dir>/judge_metrics.json), which export_micro records in the
manifest as micro.judge_metrics.

Targets (TARGETS): ONNX Runtime's held-out accuracy per head, plain and pixel art; argmax equal to
torch's on every image of both sets; logits within the exporter's tolerance for the graph's dtype
(export.TOLERANCE, relative to the largest logit, at least 1).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
for p in (str(HERE), str(HERE.parent)):
    if p not in sys.path:
        sys.path.insert(0, p)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import evaluate as evaluate_mod  # noqa: E402  (this module has its own evaluate())
import export  # noqa: E402
import judge as judge_mod  # noqa: E402
import world  # noqa: E402

SETTINGS = dict(scenes=1024, batch=256)
SETS = ("plain", "pixel_art")

# (metric key, comparison, threshold). Accuracy: ONNX Runtime's, on the held-out renders.
TARGETS = {
    **{f"plain_{h}": (">=", t) for h, t in (("colour", 0.97), ("shape", 0.95), ("background", 0.95))},
    **{f"pixel_art_{h}": (">=", t) for h, t in (("colour", 0.95), ("shape", 0.95), ("background", 0.95))},
    "argmax_agreement": (">=", 1.0),  # the share of images (both sets, every head) where ONNX's argmax is torch's
    "logit_max_rel_diff": ("<=", None),  # export.TOLERANCE of the graph's dtype
}


def heldout_set(scenes: int, start: int = 0) -> dict:
    """Held-out scenes start..start+scenes-1: uint8 images [N, 64, 64, 3] per set (SETS) and their
    labels [N, 3] (colour, shape, background class indices)."""
    plain, scs = world.render_batch("heldout", start, scenes)
    pixel = np.stack([world.pixel_art(im, block=world.AUGMENT_BLOCK) for im in plain])
    return {"plain": plain, "pixel_art": pixel, "labels": np.array([sc.labels() for sc in scs], dtype=np.int64)}


class GraphJudge:
    """The judge graph (models/micro/judge/model.onnx or an export of it) through ONNX Runtime:
    uint8 images [N, 64, 64, 3] -> float64 logits per head, read by the names config.json gives."""

    def __init__(self, path: Path, threads: int = 1):
        opts = export.ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.sess = export.ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        cfg = json.loads((Path(path).parent / "config.json").read_text())
        self.input = cfg["input"]["name"]
        self.outputs = [o["name"] for o in cfg["outputs"]]
        self.dtype = np.float16 if "float16" in self.sess.get_inputs()[0].type else np.float32

    def logits(self, images: np.ndarray, batch: int = 256) -> dict:
        out = {k: [] for k in self.outputs}
        for i in range(0, len(images), batch):
            x = np.ascontiguousarray(images[i : i + batch].transpose(0, 3, 1, 2)).astype(np.float32) / 255.0
            for k, v in zip(self.outputs, self.sess.run(self.outputs, {self.input: x.astype(self.dtype)})):
                out[k].append(v.astype(np.float64))
        return {k: np.concatenate(v) for k, v in out.items()}


@torch.no_grad()
def torch_logits(judge: judge_mod.Judge, images: np.ndarray, batch: int = 256) -> dict:
    """The torch judge's float64 logits per head for uint8 images [N, 64, 64, 3]."""
    judge.eval()
    out = {k: [] for k in judge_mod.HEADS}
    for i in range(0, len(images), batch):
        logits = judge(judge_mod.to_tensor(images[i : i + batch]))
        for k in judge_mod.HEADS:
            out[k].append(logits[k].double().numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def predicted(logits: dict) -> np.ndarray:
    """Argmax classes [N, 3] in HEADS' order."""
    return np.stack([logits[k].argmax(1) for k in judge_mod.HEADS], 1)


def compare(graph: dict, ref: dict, labels: np.ndarray) -> dict:
    """One set's record: accuracy per head through ONNX Runtime and torch, argmax agreement, the
    largest logit difference (absolute, and relative to the largest torch logit, at least 1)."""
    agree = predicted(graph) == predicted(ref)
    diff = max(float(np.abs(graph[k] - ref[k]).max()) for k in judge_mod.HEADS)
    scale = max(1.0, max(float(np.abs(ref[k]).max()) for k in judge_mod.HEADS))
    return {"accuracy": judge_mod.accuracy(predicted(graph), labels), "accuracy_torch": judge_mod.accuracy(predicted(ref), labels),
            "argmax_agreement": float(agree.mean()), "argmax_differs": int((~agree).any(1).sum()),
            "logit_max_abs_diff": diff, "logit_max_rel_diff": diff / scale, "logit_max_abs": scale}


def targets_of(sets: dict, tolerance: float) -> dict:
    values = {f"{name}_{h}": sets[name]["accuracy"][h] for name in SETS for h in judge_mod.HEADS}
    values["argmax_agreement"] = min(sets[name]["argmax_agreement"] for name in SETS)
    values["logit_max_rel_diff"] = max(sets[name]["logit_max_rel_diff"] for name in SETS)
    resolved = {k: (op, tolerance if threshold is None else threshold) for k, (op, threshold) in TARGETS.items()}
    return evaluate_mod.target_records(values, resolved)


def evaluate(judge: judge_mod.Judge, graph_path: Path, s: dict = SETTINGS, log=print) -> dict:
    """The judge graph at `graph_path` (with its config.json) against the torch `judge` it was
    exported from, on `s["scenes"]` held-out scenes, plain and pixel art (see the module doc)."""
    t0 = time.perf_counter()
    data = heldout_set(s["scenes"])
    graph = GraphJudge(graph_path)
    dtype = "fp16" if graph.dtype == np.float16 else "fp32"
    sets = {name: compare(graph.logits(data[name], s["batch"]), torch_logits(judge, data[name], s["batch"]), data["labels"])
            for name in SETS}
    targets = targets_of(sets, export.TOLERANCE[dtype])
    m = {**sets, "targets": targets, "targets_met": evaluate_mod.targets_met(targets),
         "heldout_scenes": s["scenes"], "pixel_art_block": world.AUGMENT_BLOCK, "dtype": dtype,
         "graph_bytes": Path(graph_path).stat().st_size, "settings": s, "wall_s": round(time.perf_counter() - t0, 1)}
    for k, t in targets.items():
        log(f"evaluate_judge: {k:20s} {t['value']:.4g} {t['op']} {t['threshold']:.4g}  {'PASS' if t['pass'] else 'FAIL'}")
    return m


def main(argv=None) -> int:
    import export_micro
    import train

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", default=str(train.DEFAULT_RUN_DIR), help="the judge stage's run (judge/judge.pt)")
    ap.add_argument("--model", default=str(train.DEFAULT_EXPORT_DIR), help="the micro folder whose dtype the graph takes")
    ap.add_argument("--out", default=None, help="metrics JSON (default <run-dir>/judge_metrics.json)")
    ap.add_argument("--scenes", type=int, default=SETTINGS["scenes"])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    run_dir, model = Path(args.run_dir), Path(args.model)
    dtype = json.loads((model / "manifest.json").read_text())["dtype"]
    judge = train.load_judge(run_dir)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / export_micro.JUDGE_FOLDER
        export_micro.export_judge_graph(judge, folder, export.Settings(dtype=dtype, check_threads=1))
        m = evaluate(judge, folder / "model.onnx", {**SETTINGS, "scenes": args.scenes}, log=train.log)
    out = Path(args.out) if args.out else run_dir / "judge_metrics.json"
    train.write_json(out, m)
    train.log(f"targets met: {m['targets_met']} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
