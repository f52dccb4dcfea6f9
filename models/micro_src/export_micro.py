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
3. every graph's names are shortened (compact_graph), except the UNets' weight nodes', which
   run-time LoRA maps its targets through;
4. the two trained LoRAs go to loras/lcm.safetensors and style.safetensors as fp16 adapter files
   (run-time LoRA on the default model with no download);
5. the judge (<run-dir>/judge/judge.pt) goes to judge/ with a config.json for consumers without
   Python, evaluated on held-out renders through ONNX Runtime against torch (ship_judge,
   evaluate_judge.py);
6. manifest.json gets the corrected file table, the adapters' entries and a "micro" section:
   grammar, sizes, seeds, every stage's steps and wall time, the evaluation's metrics when
   <run-dir>/metrics.json exists, and the judge's evaluation (judge_metrics).

The export is built beside --out and moved into place only when all of it passed; a README.md
already in --out is kept (it is hand-written).

--add-controlnet, --add-preview-decoder and --add-judge ship one stage's model into an exported
folder, leaving the rest of it as it was (add_to_folder).

reference_unet, align_nodes and name_weight_nodes give the weight nodes their names back in a
folder compacted before compact_graph kept them (models/micro_src/extract_loras.py).
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
import config  # noqa: E402
import export  # noqa: E402
import vocab  # noqa: E402
import world  # noqa: E402

VARIANTS = {"lcm": [("lcm", 1.0)], "style": [("style", 1.0)], "lcm_style": [("lcm", 1.0), ("style", 1.0)]}
# 10 MB of model + the two fp16 adapter files (0.93 MB) the default model ships for run-time LoRA
# + the edge ControlNet (controlnet_edge/, issue 20; at most 3 MB) and its contact sheet
# + the preview decoder (preview_decoder/, issue 25; at most 300 KB) and its strip
# + the judge (judge/, issue 22; about 0.95 MB in fp16)
# + the one-step student (unet_turbo/, issue 23; at most 4 MB, 2.0 MB in fp16) and its contact sheet
LIMIT_BYTES = 16_000_000


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


SYMBOLIC_DIMS = {"batch_size": 2, "sequence_length": 77, "height": 16, "width": 16, "height_latent": 16, "width_latent": 16,
                 # ControlNet residuals (export._residual_axes) and control images
                 "height_div2": 8, "width_div2": 8, "height_div4": 4, "width_div4": 4, "image_height": 64, "image_width": 64}


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


WEIGHT_OPS = ("Conv", "MatMul", "Gemm")


def weight_nodes(graph) -> list:
    """The nodes a LoRA can target: Conv, MatMul and Gemm nodes with an initializer input (the
    weight: Conv [out, in, kh, kw], MatMul [in, out], Gemm per its transB). speedscape finds a LoRA
    target's weight through such a node's name (/unet/<module path>/<Op>), so these keep theirs."""
    return [graph.node[k] for k in weight_node_indices(graph)]


def weight_node_indices(graph) -> list[int]:
    """The positions of `weight_nodes` in graph.node."""
    inits = {t.name for t in graph.initializer}
    return [k for k, n in enumerate(graph.node) if n.op_type in WEIGHT_OPS and any(x in inits for x in n.input)]


def rewrite_checked(path: Path, id_pool: list[int], edit) -> None:
    """Apply `edit` (a function of the ModelProto that changes names only) to the graph at `path`.
    ONNX Runtime runs the graph before and after on the same random inputs; the new file replaces
    the old one only when every output is bit-identical (the weights on disk are not touched)."""
    import onnx

    path = Path(path)
    ref_sess = export.ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = _feeds(ref_sess, id_pool)
    ref = ref_sess.run(None, feeds)
    del ref_sess
    model = onnx.load(str(path), load_external_data=False)
    edit(model)
    tmp = path.with_name(path.name + ".tmp")  # beside it: external data resolves the same way
    try:
        onnx.save_model(model, str(tmp))
        onnx.checker.check_model(str(tmp))
        got = export.ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"]).run(None, feeds)
        if not all(a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes() for a, b in zip(ref, got)):
            diff = max(float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max()) for a, b in zip(ref, got))
            raise export.ExportError(f"{path}: renaming changed the outputs (max abs difference {diff:.3e})")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def compact_graph(path: Path, id_pool: list[int]) -> dict:
    """Shorten an exported graph's names: every tensor but the graph's inputs and outputs gets a
    short name, value_info (shape hints ONNX Runtime re-infers) goes, and so does every node name
    but those of the weight nodes (`weight_nodes`: run-time LoRA maps its targets through them; in
    a variant exported with fused peft layers, ".../to_q/base_layer/MatMul" becomes the base
    module's ".../to_q/MatMul").
    torch's names ("/unet/down_blocks.0/attentions.0/transformer_blocks.0/attn1/Reshape_3_output_0")
    are 0.6 MB of each 2.5 MB fp16 micro UNet. The computation is untouched: ONNX Runtime's outputs
    before and after must agree exactly."""
    import onnx

    path = Path(path)
    before = path.stat().st_size
    model = onnx.load(str(path), load_external_data=False)
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in model.graph.node for a in n.attribute):
        return {"skipped": "graph has subgraphs", "bytes_before": before, "bytes_after": before}
    names: dict[str, str] = {}
    kept: list[str] = []

    def edit(model) -> None:
        g = model.graph
        keep = {v.name for v in list(g.input) + list(g.output)}

        def short(name: str) -> str:
            if not name or name in keep:
                return name
            if name not in names:
                names[name] = np.base_repr(len(names), 36).lower()
            return names[name]

        weights = set(weight_node_indices(g))
        for t in g.initializer:
            t.name = short(t.name)
        for k, n in enumerate(g.node):
            if k in weights:
                n.name = n.name.replace("/base_layer/", "/")  # a fused variant's peft wrapper
                kept.append(n.name)
            else:
                n.name = ""
            n.input[:] = [short(x) for x in n.input]
            n.output[:] = [short(x) for x in n.output]
        del g.value_info[:]

    rewrite_checked(path, id_pool, edit)
    return {"renamed": len(names), "node_names_kept": len(kept), "bytes_before": before, "bytes_after": path.stat().st_size}


def distinct_weights(module, seed: int = 0) -> dict:
    """Fill `module`'s parameters, in order, with random all-distinct values (N(0, 0.05²) from
    `seed`) and return them by state-dict key (numpy): a reference export's weights, which torch's
    exporter cannot merge and shipped.layout_of matches back to their parameters by value."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return {k: p.detach().numpy().copy() for k, p in module.named_parameters()}


def reference_unet(config_path: Path, out: Path, dtype: str, residuals: bool = False) -> Path:
    """A UNet of `config_path`'s config exported the way models/export.py exports UNets (same
    torch and onnx: .venv-ref), into `out`; its graph carries torch's names. The weights are
    random and all distinct (torch's exporter would merge equal initializers, such as a fresh
    model's all-ones norm weights, and the graph would differ). `residuals`: with the ControlNet
    residual inputs, like the shipped UNets since issue 20."""
    import torch
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_config(json.loads(Path(config_path).read_text())).eval()
    distinct_weights(unet)
    export.export_component(export.unet_spec(unet, residuals=residuals), Path(out), export.Settings(dtype=dtype, verify=False))
    return Path(out) / "model.onnx"


def _attr_key(a) -> tuple:
    import onnx
    from onnx import numpy_helper

    v = onnx.helper.get_attribute_value(a)
    if isinstance(v, onnx.TensorProto):
        arr = numpy_helper.to_array(v)
        v = (arr.dtype.str, arr.shape, arr.tobytes())
    elif isinstance(v, list):
        v = tuple(v)
    return a.name, a.type, v


def align_nodes(graph, ref) -> list[tuple]:
    """(node, reference node) pairs of two graphs that must be the same computation under other
    names: node by node in order, the same op types, domains, attributes and input/output counts,
    each input the same graph input, the same node's same output, or an initializer of the same
    type and shape (one to one); the graph outputs made by the same nodes. ExportError naming
    the first difference otherwise."""

    def fail(what: str):
        raise export.ExportError(f"the graphs differ: {what}; refusing to copy node names")

    if len(graph.node) != len(ref.node):
        fail(f"{len(graph.node)} nodes against the reference's {len(ref.node)}")
    if [i.name for i in graph.input] != [i.name for i in ref.input]:
        fail("the graph inputs")

    def sources(g) -> dict:
        src = {i.name: ("input", i.name) for i in g.input}
        src.update({t.name: ("init", t.data_type, tuple(t.dims)) for t in g.initializer})
        for k, n in enumerate(g.node):
            src.update({o: ("node", k, j) for j, o in enumerate(n.output) if o})
        return src

    mine, theirs = sources(graph), sources(ref)
    inits: dict[str, str] = {}
    pairs = []
    for k, (n, r) in enumerate(zip(graph.node, ref.node)):
        where = f"node {k} ({r.name or r.op_type})"
        if (n.op_type, n.domain, len(n.input), len(n.output)) != (r.op_type, r.domain, len(r.input), len(r.output)):
            fail(f"{where}: {n.op_type} with {len(n.input)} inputs against {r.op_type} with {len(r.input)}")
        if sorted(map(_attr_key, n.attribute)) != sorted(map(_attr_key, r.attribute)):
            fail(f"{where}: attributes")
        for j, (x, y) in enumerate(zip(n.input, r.input)):
            a, b = mine.get(x, ("missing", x)) if x else ("none",), theirs.get(y, ("missing", y)) if y else ("none",)
            if a != b:
                fail(f"{where} input {j}: {a[:3]} against {b[:3]}")
            if a[0] == "init" and inits.setdefault(y, x) != x:
                fail(f"{where} input {j}: initializers shared differently")
        pairs.append((n, r))
    if len(set(inits.values())) != len(inits):
        fail("initializers shared differently")
    outs = [mine.get(o.name) for o in graph.output], [theirs.get(o.name) for o in ref.output]
    if outs[0] != outs[1]:
        fail("the graph outputs")
    return pairs


def name_weight_nodes(path: Path, reference: Path, id_pool: list[int]) -> int:
    """Give the weight nodes (`weight_nodes`) of a compacted graph the names they have in
    `reference`, an export of the same model structure (`reference_unet`), aligned by `align_nodes`;
    ONNX Runtime's outputs are checked unchanged (`rewrite_checked`). Returns how many were named."""
    import onnx

    ref = onnx.load(str(reference), load_external_data=False).graph
    named = []

    def edit(model) -> None:
        pairs = align_nodes(model.graph, ref)
        for k in weight_node_indices(ref):
            node, ref_node = pairs[k]
            node.name = ref_node.name
            named.append(ref_node.name)
        if len(set(named)) != len(named) or not all(x.startswith("/unet/") for x in named):
            raise export.ExportError(f"{path}: the reference's weight node names are not unique /unet/... names")

    rewrite_checked(path, id_pool, edit)
    return len(named)


def adapter_metadata(state: dict, rank: int, alpha: float) -> dict:
    """peft's LoraConfig for a diffusers LoRA file (`unet_lora_adapter_metadata`), as
    models/make_tiny.py's write_random_lora writes it: r, lora_alpha and the modules' full names."""
    modules = list(dict.fromkeys(k.removesuffix(".lora_A.weight") for k in state if k.endswith(".lora_A.weight")))
    return {"r": rank, "lora_alpha": alpha, "target_modules": modules}


def write_adapter(state: dict, rank: int, alpha: float, path: Path) -> Path:
    """Write a UNet LoRA (peft names `<module>.lora_A.weight` / `.lora_B.weight`, no `unet.`
    prefix) as fp16 to `path` the way StableDiffusionPipeline.save_lora_weights writes it
    (`unet.` keys, `lora_adapter_metadata`), with a canonical header: the same tensors always
    give the same bytes."""
    import make_tiny
    import torch
    from diffusers import StableDiffusionPipeline

    path = Path(path)
    half = {k: torch.as_tensor(v).to(torch.float16).contiguous() for k, v in state.items()}
    StableDiffusionPipeline.save_lora_weights(save_directory=str(path.parent), unet_lora_layers=half, weight_name=path.name,
                                              safe_serialization=True,
                                              unet_lora_adapter_metadata=adapter_metadata(state, rank, alpha))
    make_tiny.canonicalize_safetensors(path)
    return path


def adapter_record(name: str, folder: Path, source: str) -> dict:
    """manifest.json's `loras.<name>` for the adapter shipped as `folder`/loras/<name>.safetensors."""
    file = Path(folder) / "loras" / f"{name}.safetensors"
    fmt, comps = export.lora_keys_info(file)
    return {"kind": "file", "source": source, "revision": None, "file": file.name, "sha256": export.sha256_file(file),
            "bytes": file.stat().st_size, "format": fmt, "components": comps, "copy": f"loras/{file.name}"}


def ship_trained_adapters(run_dir: Path, building: Path, manifest: dict) -> None:
    """The trained LoRAs (<run-dir>/loras, fp32) into `building`/loras as fp16 adapter files, for
    run-time LoRA on the default model without downloads; their manifest entries point at them."""
    from safetensors.torch import load_file

    for name, rec in manifest["loras"].items():
        state = {k.removeprefix("unet."): v for k, v in load_file(str(run_dir / "loras" / f"{name}.safetensors")).items()}
        rank = config.STAGES[name]["rank"]  # train.add_lora: lora_alpha = r
        write_adapter(state, rank, rank, building / "loras" / f"{name}.safetensors")
        trained = f"{rec['source']} (sha256 {rec['sha256']}, fp32); loras/{name}.safetensors holds it in fp16"
        manifest["loras"][name] = adapter_record(name, building, trained)


COMPACT_NOTE = (
    "graphs: tensor names shortened, value_info and the names of all nodes but the weight nodes dropped "
    "after the export (models/micro_src/export_micro.py compact_graph; ONNX Runtime's outputs checked unchanged)"
)
NODE_NAMES_NOTE = (
    "graphs: the UNets' weight nodes (Conv, MatMul, Gemm with an initializer input) keep torch's "
    "names, /unet/<module path>/<Op>, so run-time LoRA finds each target's weight; in every UNet "
    "variant they name the base's modules"
)


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


def export_model(run_dir: Path, out: Path, dtype: str = "fp16", verify: bool = True, log=print,
                 judge_scenes: int | None = None) -> dict:
    """The whole micro folder from a training run (the module doc's steps 1-6); `judge_scenes`:
    held-out scenes of the judge's evaluation (evaluate_judge.SETTINGS' by default)."""
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
        manifest["notes"] += [COMPACT_NOTE, NODE_NAMES_NOTE]
        manifest["notes"].append(
            f"text_encoder: the token table holds the {len(keep)} CLIP ids the micro grammar uses plus one zero row "
            "for every other id (models/micro_src/vocab.py); the tokenizer is CLIP's, trimmed to the same grammar"
        )
        ship_trained_adapters(run_dir, building, manifest)
        manifest["micro"] = micro_record(run_dir)
        ship_judge(run_dir, building, manifest, settings, judge_scenes, log)
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


# ---- the edge ControlNet (issue 20) ------------------------------------------------------------

CONTROLNET = "edge"
CONTROLNET_NOTE = (
    "controlnet_edge: the micro model's edge ControlNet (models/micro_src/controlnet.py), trained on the base's own "
    "images and their Canny edges; every UNet was re-exported with the residual inputs from torch UNets rebuilt from "
    "the earlier graphs (models/micro_src/shipped.py): the same fp16 weights bit for bit, and with zero residuals the "
    "same outputs as before (components.<unet>.residual_inputs)"
)


def initializer_digests(path: Path) -> list[str]:
    """Sorted sha256 digests of every initializer's (dtype, shape, bytes) in a graph: equal lists,
    the same weights whatever their names."""
    import hashlib

    import onnx
    from onnx import numpy_helper

    out = []
    for t in onnx.load(str(path)).graph.initializer:
        a = numpy_helper.to_array(t)
        out.append(hashlib.sha256(f"{a.dtype}{a.shape}".encode() + a.tobytes()).hexdigest())
    return sorted(out)


def zero_residual_difference(old: Path, new: Path) -> dict:
    """ONNX Runtime's outputs of the residual UNet `new` with zero residuals against the plain
    UNet `old` on the same random inputs (batch 2, 16x16, three timesteps)."""
    old_sess = export.ort.InferenceSession(str(old), providers=["CPUExecutionProvider"])
    new_sess = export.ort.InferenceSession(str(new), providers=["CPUExecutionProvider"])
    worst, identical, cases = 0.0, True, 0
    for t in (999.0, 500.0, 1.0):
        feeds = _feeds(old_sess, [0])
        feeds["timestep"] = np.asarray(t, feeds["timestep"].dtype)
        ref = old_sess.run(None, feeds)[0]
        full = dict(feeds)
        for i in new_sess.get_inputs():
            if i.name not in full:
                shape = [d if isinstance(d, int) else SYMBOLIC_DIMS[d] for d in i.shape]
                full[i.name] = np.zeros(shape, np.float16 if "float16" in i.type else np.float32)
        got = new_sess.run(None, full)[0]
        identical &= got.dtype == ref.dtype and got.tobytes() == ref.tobytes()
        worst = max(worst, float(np.abs(got.astype(np.float64) - ref.astype(np.float64)).max()))
        cases += 1
    return {"bit_identical": bool(identical), "max_abs_diff": worst, "cases": cases}


def reexport_unet(unet, old_folder: Path, new_folder: Path, settings, n_residuals: int) -> dict:
    """`unet` (rebuilt from `old_folder`'s graph) exported with the residual inputs into
    `new_folder`, names compacted like every micro graph; ExportError unless its fp16 weights are
    `old_folder`'s bit for bit, its weight nodes keep their names and targets, and zero residuals
    give `old_folder`'s outputs."""
    import extract_loras
    import onnx

    rec = export.export_component(export.unet_spec(unet, residuals=True), new_folder, settings)
    export.copy_verbatim(old_folder / "config.json", new_folder / "config.json")
    rec["compacted"] = compact_graph(new_folder / "model.onnx", [0])
    old_path, new_path = old_folder / "model.onnx", new_folder / "model.onnx"
    if initializer_digests(old_path) != initializer_digests(new_path):
        raise export.ExportError(f"{new_folder.name}: the re-exported weights differ from the shipped graph's")
    old_w, _ = extract_loras.unet_weights(old_folder)
    new_w, _ = extract_loras.unet_weights(new_folder)
    if old_w.keys() != new_w.keys() or any(not np.array_equal(old_w[k], new_w[k]) for k in old_w):
        raise export.ExportError(f"{new_folder.name}: a weight node's name points at another weight than before")
    diff = zero_residual_difference(old_path, new_path)
    if diff["max_abs_diff"] > 0.0:
        raise export.ExportError(f"{new_folder.name}: with zero residuals it differs from the plain graph by {diff['max_abs_diff']:.3e}")
    inputs = [i.name for i in onnx.load(str(new_path), load_external_data=False).graph.input]
    rec.update(controlnet_residuals=n_residuals, bytes=export.folder_bytes(new_folder), residual_inputs={
        "inputs": inputs[3:], "fp16_weights_bit_identical": True, "weight_nodes_named": len(new_w),
        "zero_residuals_vs_plain_graph": diff})
    return rec


def export_controlnet_graph(cn, unet, folder: Path, settings) -> dict:
    rec = export.export_component(export.controlnet_spec(cn, unet.config.sample_size, 4), folder, settings)
    cn.save_config(str(folder))
    rec["compacted"] = compact_graph(folder / "model.onnx", [0])
    rec["bytes"] = export.folder_bytes(folder)
    return rec


def record_stage(manifest: dict, run_dir: Path, building: Path, stage: str, done: dict, note: str, note_prefix: str,
                 image: tuple[str, str] | None = None) -> None:
    """An added stage's record in the manifest: its note (replacing an older one with the same
    prefix), its done.json under micro.stages, its `<stage>_metrics.json` when the evaluation ran,
    and its evaluation image (`eval/<image[0]>` copied to `<image[1]>`) when there is one."""
    manifest["notes"] = [x for x in manifest["notes"] if not x.startswith(note_prefix)] + [note]
    manifest["micro"].setdefault("stages", {})[stage] = done
    metrics = run_dir / f"{stage}_metrics.json"
    if metrics.is_file():
        manifest["micro"][f"{stage}_metrics"] = json.loads(metrics.read_text())
    src = run_dir / "eval" / image[0] if image else None
    if src is not None and src.is_file():
        shutil.copyfile(src, building / image[1])


def add_to_folder(model: Path, manifest: dict, edit, owned=None) -> int:
    """Change the micro folder `model` (whose manifest is `manifest`) through a copy built beside
    it: `edit(building)` changes the copy and `manifest`, then the manifest gets the new file table
    and is written. When `owned` (a predicate on file-table paths) is given, every file it does not
    own must stay byte-identical (checked). The copy replaces `model` only when every check passed
    and the folder stays within LIMIT_BYTES; returns the folder's bytes."""
    model = Path(model)
    before = {k: v for k, v in manifest["files"].items() if owned is not None and not owned(k)}
    building = model.with_name(model.name + ".micro-build")
    if building.exists():
        shutil.rmtree(building)
    shutil.copytree(model, building)
    try:
        edit(building)
        manifest["files"] = {k: v for k, v in export.file_table(building).items() if k != "README.md"}
        if changed := [k for k, v in before.items() if manifest["files"].get(k) != v]:
            raise export.ExportError(f"the change touched other files: {changed[:4]}")
        export.write_json_atomic(building / "manifest.json", manifest)
        readme = building / "README.md"
        total = sum(f["bytes"] for f in manifest["files"].values()) + (readme.stat().st_size if readme.is_file() else 0)
        if total > LIMIT_BYTES:
            raise export.ExportError(f"the micro model would be {total / 1e6:.2f} MB, over its {LIMIT_BYTES / 1e6:.0f} MB limit")
        shutil.rmtree(model)
        building.rename(model)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return total


def add_controlnet(model: Path, run_dir: Path, log=print) -> dict:
    """Ship the ControlNet trained by train.py's controlnet stage (<run-dir>/controlnet/model) in
    the micro folder `model`: controlnet_edge/ (fp16, checked against torch, replacing an earlier
    one), every UNet without the residual inputs re-exported with them (`reexport_unet`; UNets
    that already take them stay byte for byte), manifest.json's controlnets.edge, components,
    notes, file table and micro section (the stage's record, <run-dir>/controlnet_metrics.json,
    and, when the stage trained on from the ControlNet shipped before, that one's files and record
    as the stage's `init_from`). Built beside `model`, moved into place when every check passed."""
    import shipped
    from diffusers import ControlNetModel

    model, run_dir = Path(model), Path(run_dir)
    manifest = json.loads((model / "manifest.json").read_text())
    import torch

    settings = export.Settings(dtype=manifest["dtype"], verify=True, check_threads=torch.get_num_threads())
    cn = ControlNetModel.from_pretrained(str(run_dir / "controlnet" / "model")).eval()
    plain = [u for u in shipped.UNETS if not shipped.takes_residuals(model / u / "model.onnx")]
    unets = shipped.rebuild_unets(model, plain or ("unet",))
    export.check_controlnet_base(cn, unets["unet"], manifest["geometry"]["vae_scale_factor"], CONTROLNET)
    n = len(export.residual_layout(cn)) - 1
    folder = f"controlnet_{CONTROLNET}"
    stage = json.loads((run_dir / "controlnet" / "done.json").read_text())
    if stage.get("init"):
        stage["init_from"] = {"files": {k: v for k, v in manifest["files"].items() if k.startswith(folder + "/")},
                              "stage": manifest["micro"].get("stages", {}).get("controlnet"),
                              "targets_met": manifest["micro"].get("controlnet_metrics", {}).get("targets_met")}

    def edit(building: Path) -> None:
        for name in plain:
            shutil.rmtree(building / name)
            rec = reexport_unet(unets[name], model / name, building / name, settings, n)
            rec["weight_node_names"] = manifest["components"][name].get("weight_node_names")
            manifest["components"][name] = {k: v for k, v in rec.items() if v is not None}
            zero = rec["residual_inputs"]["zero_residuals_vs_plain_graph"]
            log(f"{name}: residual inputs; weights bit-identical; zero residuals: {zero}")
        shutil.rmtree(building / folder, ignore_errors=True)
        manifest["components"][folder] = export_controlnet_graph(cn, unets["unet"], building / folder, settings)
        manifest["controlnets"] = {CONTROLNET: {
            "kind": "trained", "source": "trained by models/micro_src/train.py (stage controlnet)", "revision": None,
            **export.controlnet_record(cn, folder=folder)}}
        record_stage(manifest, run_dir, building, "controlnet", stage, CONTROLNET_NOTE, "controlnet_edge: ",
                     ("controlnet_sheet.png", "controlnet_sheet.png"))

    total = add_to_folder(model, manifest, edit)
    log(f"micro: {folder} shipped, {manifest['components'][folder]['bytes']} bytes; the folder {total / 1e6:.2f} MB")
    return manifest


PREVIEW_NOTE = (
    "preview_decoder: the micro model's preview decoder (models/micro_src/preview.py, architecture micro-taesd: a diffusers "
    "AutoencoderTiny's decoder), distilled from vae_decoder on the x0 predictions of DPM-Solver++ trajectories; latent_rgb: "
    "the least-squares fit of vae_decoder's colour on the micro latents (the latent preview's matrix for this model)"
)


def export_preview_graph(tiny, folder: Path, settings, sample_size: int = 16) -> dict:
    """preview_decoder/ of the micro model: export.py's preview decoder graph (checked against
    torch), its config.json, names compacted (outputs checked bit-identical)."""
    rec = export.export_component(export.preview_decoder_spec(tiny, sample_size), folder, settings)
    tiny.save_config(str(folder))
    rec["compacted"] = compact_graph(folder / "model.onnx", [0])
    rec["bytes"] = export.folder_bytes(folder)
    return rec


def add_preview_decoder(model: Path, run_dir: Path, log=print) -> dict:
    """Ship the preview decoder trained by train.py's preview stage (<run-dir>/preview/model) and
    its latent_rgb fit in the micro folder `model`: preview_decoder/ (the manifest's dtype, checked
    against torch), manifest.json's components.preview_decoder, latent_rgb, notes, file table and
    micro section (the stage's record and <run-dir>/preview_metrics.json), preview_strip.png. Every
    other file stays byte-identical (checked); a preview decoder already there is replaced. Built
    beside `model`, moved into place when every check passed."""
    import torch
    from diffusers import AutoencoderTiny

    import preview

    model, run_dir = Path(model), Path(run_dir)
    manifest = json.loads((model / "manifest.json").read_text())
    settings = export.Settings(dtype=manifest["dtype"], verify=True, check_threads=torch.get_num_threads())
    source_dir = run_dir / "preview" / "model"
    tiny = AutoencoderTiny.from_pretrained(str(source_dir)).eval()
    geometry = manifest["geometry"]
    export.check_preview_decoder_base(tiny, 4, geometry["vae_scale_factor"], "trained by the preview stage")
    source = export.PreviewDecoderSource(source_dir, {
        "kind": "trained", "source": "trained by models/micro_src/train.py (stage preview)", "revision": None,
        "sha256": {p.name: export.sha256_file(p) for p in sorted(source_dir.iterdir()) if p.is_file()}})
    rec = {}

    def edit(building: Path) -> None:
        shutil.rmtree(building / export.PREVIEW_FOLDER, ignore_errors=True)
        rec.update(export_preview_graph(tiny, building / export.PREVIEW_FOLDER, settings, geometry["sample_size"]))
        manifest["components"][export.PREVIEW_FOLDER] = {**rec, **export.preview_decoder_record(tiny, source, preview.ARCHITECTURE)}
        fit = preview.load_latent_rgb(run_dir)
        manifest["latent_rgb"] = {"factors": fit["factors"], "bias": fit["bias"]}
        record_stage(manifest, run_dir, building, "preview", json.loads((run_dir / "preview" / "done.json").read_text()),
                     PREVIEW_NOTE, "preview_decoder: ", ("preview_strip_small.png", "preview_strip.png"))

    total = add_to_folder(model, manifest, edit,
                          owned=lambda k: k.startswith(export.PREVIEW_FOLDER + "/") or k == "preview_strip.png")
    log(f"micro: preview_decoder shipped, {rec['bytes']} bytes, check max abs err {rec['check']['max_abs_err']:.2e}; "
        f"the folder {total / 1e6:.2f} MB")
    return manifest


# ---- the one-step student (issue 23) -------------------------------------------------------------

TURBO = "turbo"
TURBO_FOLDER = "unet_turbo"
TURBO_MAX_STEPS = 4
TURBO_NOTE = (
    "unet_turbo: the micro model's one-step student (models/micro_src/turbo.py): the base UNet distilled on the base's own "
    "DPM-Solver++ images to run as SD-Turbo runs (Euler at trailing spacing from variants.turbo.one_step.scheduler, guidance 0, "
    "1 to 4 steps); exported with the residual inputs like every micro UNet"
)


def add_turbo(model: Path, run_dir: Path, log=print) -> dict:
    """Ship the student trained by train.py's turbo stage (<run-dir>/turbo/model) in the micro
    folder `model`: unet_turbo/ (the manifest's dtype, with the ControlNet residual inputs the
    other UNets have, checked against torch, names compacted), manifest.json's
    components.unet_turbo, variants.turbo with its one_step record (the scheduler config it runs
    with, its step range, its guidance, its teacher), notes, file table and micro section (the
    stage's record and <run-dir>/turbo_metrics.json), turbo_sheet.png. Every other file stays
    byte-identical (checked); a student already there is replaced."""
    import torch
    from diffusers import UNet2DConditionModel

    import turbo

    model, run_dir = Path(model), Path(run_dir)
    manifest = json.loads((model / "manifest.json").read_text())
    settings = export.Settings(dtype=manifest["dtype"], verify=True, check_threads=torch.get_num_threads())
    student = UNet2DConditionModel.from_pretrained(str(run_dir / "turbo" / "model")).eval()
    done = json.loads((run_dir / "turbo" / "done.json").read_text())
    s = config.STAGES["turbo"]
    residuals = manifest["components"]["unet"].get("controlnet_residuals")
    rec = {}

    def edit(building: Path) -> None:
        folder = building / TURBO_FOLDER
        shutil.rmtree(folder, ignore_errors=True)
        rec.update(export.export_component(export.unet_spec(student, residuals=residuals is not None), folder, settings))
        export.copy_verbatim(model / "unet" / "config.json", folder / "config.json")
        rec["compacted"] = compact_graph(folder / "model.onnx", [0])
        rec.update(bytes=export.folder_bytes(folder), controlnet_residuals=residuals)
        manifest["components"][TURBO_FOLDER] = {k: v for k, v in rec.items() if v is not None}
        manifest["variants"][TURBO] = {
            "loras": [], "unet": TURBO_FOLDER, "text_encoder": "text_encoder",
            "one_step": {"steps": TURBO_MAX_STEPS, "scheduler": turbo.SCHEDULER_CONFIG, "guidance": 0.0,
                         "teacher": f"unet, DPM-Solver++ {s['sample_steps']} at cfg {s['sample_cfg']}"}}
        record_stage(manifest, run_dir, building, "turbo", done, TURBO_NOTE, "unet_turbo: ", ("turbo_sheet.png", "turbo_sheet.png"))

    total = add_to_folder(model, manifest, edit, owned=lambda k: k.startswith(TURBO_FOLDER + "/") or k == "turbo_sheet.png")
    log(f"micro: {TURBO_FOLDER} shipped, {rec['bytes']} bytes, check max abs err {rec['check']['max_abs_err']:.2e}; "
        f"the folder {total / 1e6:.2f} MB")
    return manifest


# ---- the judge (issue 22) -----------------------------------------------------------------------

JUDGE_FOLDER = "judge"
JUDGE_FORMAT = "speedscape-judge/1"
JUDGE_ARCHITECTURE = "micro-judge"
JUDGE_NOTE = (
    "judge: the micro world's judge (models/micro_src/judge.py), a small CNN that reads colour, shape and background off "
    "a 64x64 image, for a reference-free quality score (judge accuracy: the heads reading what the prompt names); "
    "judge/config.json gives its input, outputs, labels and how a micro prompt names them; its held-out evaluation "
    "and targets are micro.judge_metrics, its training record micro.stages.judge"
)


def judge_spec(judge) -> export.Spec:
    """The judge graph (judge.JudgeGraph): image [N, 3, 64, 64] RGB in [0, 1] -> logits colour
    [N, 6], shape [N, 4], background [N, 6]; the batch axis dynamic. Checked against torch on
    uniform noise (batch 1) and on 3 held-out renders."""
    import torch

    import judge as judge_mod

    graph = judge_mod.JudgeGraph(judge).eval()
    size = world.IMAGE_SIZE
    renders, _ = world.render_batch("heldout", 0, 3)
    inputs = [torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(22)), judge_mod.to_tensor(renders)]
    checks = []
    for x in inputs:
        with torch.no_grad():
            ref = graph(x)
        checks.append(({"image": x.numpy()}, [r.numpy() for r in ref]))
    heads = list(judge_mod.HEADS)
    return export.Spec("judge", graph, (inputs[0],), ["image"], heads, {k: {0: "batch_size"} for k in ["image", *heads]},
                       external_data=False, checks=checks, ort_model_type=None)


def judge_config(dtype: str) -> dict:
    """judge/config.json: all a consumer needs to run the judge and score an image against a
    micro prompt without Python."""
    import judge as judge_mod

    size = world.IMAGE_SIZE
    example = "a large yellow star on the right on a blue background at sunset"
    return {
        "format": JUDGE_FORMAT,
        "architecture": JUDGE_ARCHITECTURE,
        "what": "reads the colour, shape and background of a micro-world image (models/micro_src/judge.py); an image "
                "reads right on a head when that head's argmax is the class its prompt names",
        "input": {"name": "image", "shape": ["batch_size", 3, size, size], "layout": "NCHW", "dtype": element_type(dtype),
                  "range": [0.0, 1.0], "colour_space": "RGB", "image_size": size,
                  "from_uint8": "value / 255, channels first; no mean or std normalisation"},
        "outputs": [{"name": k, "kind": "logits", "shape": ["batch_size", n], "dtype": element_type(dtype),
                     "labels": list(judge_mod.LABELS[k]), "prompt_names_it_by": judge_mod.PROMPT_NAMES[k]}
                    for k, n in judge_mod.HEADS.items()],
        "prompt": {"grammar": world.grammar()["caption"], "pattern": judge_mod.PROMPT_PATTERN,
                   "example": {"prompt": example, **judge_mod.read_prompt(example)}},
        "evaluation": "manifest.json: micro.judge_metrics (held-out accuracy per head, plain and 4x4-block pixel art; "
                      "ONNX Runtime against torch)",
    }


def element_type(dtype: str) -> str:
    """The ONNX tensor element type of an export dtype (fp16 -> float16: the graph's inputs and
    outputs are in it too)."""
    return {"fp16": "float16", "fp32": "float32"}[dtype]


def export_judge_graph(judge, folder: Path, settings) -> dict:
    """judge/ of the micro model: `judge_spec`'s graph in the settings' dtype (checked against
    torch by the exporter), its config.json (`judge_config`), names compacted (outputs checked
    bit-identical)."""
    rec = export.export_component(judge_spec(judge), folder, settings)
    export.write_json_atomic(folder / "config.json", judge_config(rec["dtype"]))
    rec["compacted"] = compact_graph(folder / "model.onnx", [0])
    rec.update(architecture=JUDGE_ARCHITECTURE, params=sum(p.numel() for p in judge.parameters()),
               bytes=export.folder_bytes(folder))
    return rec


def ship_judge(run_dir: Path, building: Path, manifest: dict, settings, scenes: int | None = None, log=print) -> dict:
    """The judge trained by the judge stage (<run-dir>/judge/judge.pt) into `building`/judge/
    (`export_judge_graph`), evaluated there (evaluate_judge.evaluate on the shipped graph, on
    `scenes` held-out scenes, evaluate_judge.SETTINGS' by default -> <run-dir>/judge_metrics.json)
    and recorded in `manifest`: components.judge, the note, and the
    micro section's stages.judge and judge_metrics (`record_stage`). Returns the component record."""
    import evaluate_judge
    import train

    run_dir = Path(run_dir)
    judge = train.load_judge(run_dir)
    folder = Path(building) / JUDGE_FOLDER
    shutil.rmtree(folder, ignore_errors=True)
    rec = export_judge_graph(judge, folder, settings)
    weights = run_dir / "judge" / "judge.pt"
    manifest["components"][JUDGE_FOLDER] = {
        **rec, "source": "trained by models/micro_src/train.py (stage judge)", "source_sha256": export.sha256_file(weights)}
    s = {**evaluate_judge.SETTINGS, **({"scenes": scenes} if scenes else {})}
    train.write_json(run_dir / "judge_metrics.json", evaluate_judge.evaluate(judge, folder / "model.onnx", s, log=log))
    record_stage(manifest, run_dir, building, "judge", json.loads((run_dir / "judge" / "done.json").read_text()),
                 JUDGE_NOTE, "judge: ")
    log(f"micro: judge shipped, {rec['bytes']} bytes ({rec['dtype']}), targets met "
        f"{manifest['micro']['judge_metrics']['targets_met']}")
    return rec


def add_judge(model: Path, run_dir: Path, scenes: int | None = None, log=print) -> dict:
    """Ship the judge of <run-dir> (stage judge) in the micro folder `model` (`ship_judge`, the
    manifest's dtype). Every other file stays byte-identical (checked); a judge already there is
    replaced. When the judge the manifest recorded (micro.stages.judge: the one that read the
    evaluation's images, micro.metrics) is another training of the stage, its record is kept as
    micro.evaluation_judge. Built beside `model`, moved into place when every check passed."""
    import torch

    model, run_dir = Path(model), Path(run_dir)
    manifest = json.loads((model / "manifest.json").read_text())
    settings = export.Settings(dtype=manifest["dtype"], verify=True, check_threads=torch.get_num_threads())
    previous = manifest["micro"].get("stages", {}).get("judge")
    if previous is not None and previous != json.loads((run_dir / "judge" / "done.json").read_text()):
        manifest["micro"].setdefault("evaluation_judge", previous)
    total = add_to_folder(model, manifest, lambda building: ship_judge(run_dir, building, manifest, settings, scenes, log),
                          owned=lambda k: k.startswith(JUDGE_FOLDER + "/"))
    log(f"micro: the folder {total / 1e6:.2f} MB")
    return manifest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", default=str(train.DEFAULT_RUN_DIR))
    ap.add_argument("--out", default=str(train.DEFAULT_EXPORT_DIR))
    ap.add_argument("--dtype", choices=("fp32", "fp16"), default="fp16")
    ap.add_argument("--no-verify", action="store_true")
    ap.add_argument("--add-controlnet", action="store_true",
                    help="only ship <run-dir>'s trained ControlNet (stage controlnet) into --out, re-exporting its UNets with residual inputs")
    ap.add_argument("--add-preview-decoder", action="store_true",
                    help="only ship <run-dir>'s trained preview decoder and latent_rgb fit (stage preview) into --out")
    ap.add_argument("--add-judge", action="store_true",
                    help="only ship <run-dir>'s judge (stage judge) into --out as judge/, with its held-out evaluation")
    ap.add_argument("--add-turbo", action="store_true",
                    help="only ship <run-dir>'s one-step student (stage turbo) into --out as unet_turbo/ and variants.turbo")
    ap.add_argument("--threads", type=int, default=0, help="torch and ONNX Runtime check threads (0: torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        if args.add_controlnet:
            add_controlnet(Path(args.out), Path(args.run_dir), log=train.log)
        elif args.add_preview_decoder:
            add_preview_decoder(Path(args.out), Path(args.run_dir), log=train.log)
        elif args.add_judge:
            add_judge(Path(args.out), Path(args.run_dir), log=train.log)
        elif args.add_turbo:
            add_turbo(Path(args.out), Path(args.run_dir), log=train.log)
        else:
            export_model(Path(args.run_dir), Path(args.out), args.dtype, not args.no_verify, log=train.log)
    except export.ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
