#!/usr/bin/env python
"""Ship a trained micro model through models/export.py (the exporter real SD v1.5 goes through).

    .venv-ref/bin/python models/micro_src/export_micro.py [--run-dir .micro-run] [--out models/micro] [--dtype fp16]

1. models/export.py exports <run-dir>/pipeline (a diffusers folder) with the two trained LoRAs
   (<run-dir>/loras/lcm.safetensors, style.safetensors) into the Optimum layout: text_encoder,
   unet, unet_lcm, unet_style, unet_lcm_style (fused by the exporter: load_lora_weights ->
   set_adapters -> fuse_lora), vae_decoder, tokenizer (the trimmed CLIP tokenizer), scheduler
   (SD v1.5's config, verbatim), and checks every graph against torch with ONNX Runtime;
2. the text encoder's 49408-row token table becomes the grammar's rows + one zero row
   (vocab.trim_onnx_embedding), checked again against torch on the exporter's own check inputs
   (random ids: the zero row) and on every grammar caption;
3. manifest.json gets the corrected file table and a "micro" section: grammar, sizes, seeds,
   every stage's steps and wall time, and the evaluation's metrics when <run-dir>/metrics.json
   exists.

The export is built beside --out and moved into place only when all of it passed; a README.md
already in --out is kept (it is hand-written).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for p in (str(HERE), str(HERE.parent)):
    if p not in sys.path:
        sys.path.insert(0, p)

import numpy as np  # noqa: E402

import train  # noqa: E402  (quietens diffusers/transformers logging too)
import export  # noqa: E402
import vocab  # noqa: E402
import world  # noqa: E402

VARIANTS = {"lcm": [("lcm", 1.0)], "style": [("style", 1.0)], "lcm_style": [("lcm", 1.0), ("style", 1.0)]}
LIMIT_BYTES = 10_000_000


def check_captions(path: Path, pipe, tokenizer_dir: Path, tol: float) -> float:
    """Max abs difference, ONNX text encoder vs torch, over grammar captions."""
    import torch

    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    texts = world.vocabulary_texts() + [world.scene("heldout", i, full_caption=True).caption() for i in range(16)]
    ids = np.full((len(texts), 77), vocab.CLIP_EOS, dtype=np.int64)
    for i, t in enumerate(texts):
        enc = tok.encode(t).ids[:77]
        ids[i, : len(enc)] = enc
    sess = export.ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    itype = sess.get_inputs()[0].type
    feed = ids.astype(np.int32 if "int32" in itype else np.int64)
    got = sess.run(None, {"input_ids": feed})[0].astype(np.float64)
    with torch.no_grad():
        ref = pipe.text_encoder(input_ids=torch.from_numpy(ids))[0].numpy().astype(np.float64)
    err = float(np.abs(got - ref).max())
    if err > tol * max(1.0, float(np.abs(ref).max())):
        raise export.ExportError(f"{path}: trimmed text encoder differs from torch by {err:.3e} on grammar captions")
    return err


SYMBOLIC_DIMS = {"batch_size": 2, "sequence_length": 77, "height": 16, "width": 16, "height_latent": 16, "width_latent": 16}


def _feeds(sess, id_pool: list[int]) -> dict:
    rng = np.random.default_rng(0)
    feeds = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) else SYMBOLIC_DIMS[d] for d in i.shape]
        if "int" in i.type:
            feeds[i.name] = rng.choice(id_pool, size=shape).astype(np.int32 if "int32" in i.type else np.int64)
        else:
            dt = np.float16 if "float16" in i.type else np.float32
            feeds[i.name] = np.asarray(rng.standard_normal(shape) * (500 if i.name == "timestep" else 1)).astype(dt)
    return feeds


def compact_graph(path: Path, id_pool: list[int]) -> dict:
    """Shorten an exported graph's names: every tensor but the graph's inputs and outputs gets a
    short name, node names and value_info (shape hints ONNX Runtime re-infers) go. torch's names
    ("/unet/down_blocks.0/attentions.0/transformer_blocks.0/attn1/Reshape_3_output_0") are 0.6 MB
    of each 2.5 MB fp16 micro UNet. The computation is untouched: ONNX Runtime's outputs before
    and after must agree exactly."""
    import onnx

    path = Path(path)
    before = path.stat().st_size
    ref_sess = export.ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = _feeds(ref_sess, id_pool)
    ref = ref_sess.run(None, feeds)
    del ref_sess
    model = onnx.load(str(path), load_external_data=False)
    g = model.graph
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in g.node for a in n.attribute):
        return {"skipped": "graph has subgraphs", "bytes_before": before, "bytes_after": before}
    keep = {v.name for v in list(g.input) + list(g.output)}
    names: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        if name not in names:
            names[name] = np.base_repr(len(names), 36).lower()
        return names[name]

    for t in g.initializer:
        t.name = short(t.name)
    for n in g.node:
        n.name = ""
        n.input[:] = [short(x) for x in n.input]
        n.output[:] = [short(x) for x in n.output]
    del g.value_info[:]
    onnx.save_model(model, str(path))
    onnx.checker.check_model(str(path))
    got = export.ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    diff = max(float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max()) for a, b in zip(ref, got))
    if diff > 0:
        raise export.ExportError(f"{path}: renaming changed the outputs by {diff:.3e}")
    return {"renamed": len(names), "bytes_before": before, "bytes_after": path.stat().st_size}


def micro_record(run_dir: Path) -> dict:
    log_path = run_dir / "train_log.json"
    rec = json.loads(log_path.read_text()) if log_path.is_file() else {}
    metrics = run_dir / "metrics.json"
    if metrics.is_file():
        m = json.loads(metrics.read_text())
        rec["metrics"] = {k: m[k] for k in ("targets", "targets_met", "accuracy", "ssim_vs_reference", "roughness", "pixelation",
                                            "judge_heldout_accuracy_real", "seeds", "settings") if k in m}
        rec["metrics"]["prompts"] = len(m.get("prompts", []))
    return rec


def export_model(run_dir: Path, out: Path, dtype: str = "fp16", verify: bool = True, log=print) -> dict:
    run_dir, out = Path(run_dir).resolve(), Path(out)
    src = run_dir / "pipeline"
    loras = {}
    for name in ("lcm", "style"):
        lora = export.resolve_lora(f"{name}={run_dir / 'loras' / f'{name}.safetensors'}")
        lora.provenance["source"] = f"trained by models/micro_src/train.py (stage {name})"
        loras[name] = lora
    base = export.resolve_base(str(src), None, label="speedscape micro model, trained by models/micro_src/train.py")
    settings = export.Settings(dtype=dtype, verify=verify, check_threads=1)
    export.log = log
    building = out.with_name(out.name + ".micro-build")
    if building.exists():
        shutil.rmtree(building)
    try:
        manifest = export.export_pipeline(base, loras, VARIANTS, building, settings, vae_encoder=False,
                                          command=["python", "models/micro_src/export_micro.py", "--dtype", dtype], force=True)
        keep = json.loads((src / "vocab.json").read_text())["kept_ids"]
        te_path = building / "text_encoder" / "model.onnx"
        trim = vocab.trim_onnx_embedding(te_path, keep)
        te = manifest["components"]["text_encoder"]
        te["vocabulary_trim"] = trim
        if verify:
            pipe = export.load_pipeline(src)
            tol = settings.tolerance[te["dtype"]]
            check = export.check_graph(te_path, export.text_encoder_spec(pipe.text_encoder), te["dtype"], ["CPUExecutionProvider"], tol, 1)
            if not check["passed"]:
                raise export.ExportError(f"trimmed text encoder fails the exporter's check: {check['max_rel_err']:.3e}")
            check["grammar_captions_max_abs_err"] = check_captions(te_path, pipe, src / "tokenizer", tol)
            te["check"] = check
        for folder, rec in manifest["components"].items():
            rec["compacted"] = compact_graph(building / folder / "model.onnx", keep)
            rec["bytes"] = export.folder_bytes(building / folder)
        manifest["notes"].append(
            "graphs: tensor names shortened, node names and value_info dropped after the export "
            "(models/micro_src/export_micro.py compact_graph; ONNX Runtime's outputs checked unchanged)"
        )
        manifest["notes"].append(
            f"text_encoder: the token table holds the {len(keep)} CLIP ids the micro grammar uses plus one zero row "
            "for every other id (models/micro_src/vocab.py); the tokenizer is CLIP's, trimmed to the same grammar"
        )
        manifest["micro"] = micro_record(run_dir)
        manifest["files"] = export.file_table(building)
        export.write_json_atomic(building / "manifest.json", manifest)
        readme = out / "README.md"
        if readme.is_file():
            shutil.copyfile(readme, building / "README.md")
        if out.exists():
            shutil.rmtree(out)
        building.rename(out)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    sizes = {}
    for p in sorted(out.iterdir()):
        sizes[p.name] = export.folder_bytes(p) if p.is_dir() else p.stat().st_size
    total = sum(sizes.values())
    log(f"micro export: {out} {total / 1e6:.2f} MB ({dtype}); limit {LIMIT_BYTES / 1e6:.0f} MB: {'OK' if total <= LIMIT_BYTES else 'OVER'}")
    for k, v in sizes.items():
        log(f"  {v:>10d}  {k}")
    return {"out": str(out), "dtype": dtype, "bytes": total, "within_limit": total <= LIMIT_BYTES, "sizes": sizes,
            "vocabulary_trim": trim}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", default=str(train.DEFAULT_RUN_DIR))
    ap.add_argument("--out", default=str(train.DEFAULT_EXPORT_DIR))
    ap.add_argument("--dtype", choices=("fp32", "fp16"), default="fp16")
    ap.add_argument("--no-verify", action="store_true")
    args = ap.parse_args(argv)
    try:
        export_model(Path(args.run_dir), Path(args.out), args.dtype, not args.no_verify, log=train.log)
    except export.ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
