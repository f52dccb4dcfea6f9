#!/usr/bin/env python
"""Recover the micro model's LCM and style LoRAs from its fused UNets, and name the UNets' weight
nodes, so speedscape's run-time LoRA works on the default model with no download (issue 26).

    .venv-ref/bin/python models/micro_src/extract_loras.py [--model models/micro]

Run-time LoRA fuses `.safetensors` adapters into a UNet graph at session creation and finds each
target's weight through the graph's node names. The committed micro model lacked both: train.py
wrote its adapters to .micro-run/loras/, which is not kept (retraining takes over 2 hours), and
export_micro.compact_graph had dropped every node name. Both come back from what the folder
holds; nothing is retrained.

1. Names. A UNet of unet/config.json is exported the way models/export.py exports UNets, with
   random weights (export_micro.reference_unet). compact_graph only renamed, so each committed
   graph is that graph under short names: export_micro.align_nodes pairs them node by node
   (op types, attributes, topology, initializer types and shapes; any difference is refused) and
   the weight nodes (Conv, MatMul, Gemm with an initializer input) get torch's names,
   /unet/<module path>/<Op>, in all four UNets. ONNX Runtime's outputs are checked bit-identical
   before a graph is replaced (export_micro.rewrite_checked). Graphs already named are left alone.
2. Adapters. train.py trained rank-8 LoRAs (lora_alpha 8: scale 1) on config.LORA_TARGETS and
   models/export.py fused each at weight 1 before the fp16 conversion: W(unet_<name>) =
   fp16(W + B A). So dW = W(unet_<name>) - W(unet), taken in float64 from the fp16 initializers
   in torch's layout (a MatMul stores W transposed; conv targets are LoCon: A [r, in, kh, kw],
   B [out, r, 1, 1]), is B A up to fp16 rounding. Its truncated rank-8 SVD U S V^T gives
   B = U sqrt(S), A = sqrt(S) V^T, each singular pair's sign fixed so U's largest entry is
   positive (deterministic). Modules whose weights did not change get no entry; a change outside
   the LoRA targets, or in anything but a weight, is refused. The adapters are written as fp16 to
   loras/<name>.safetensors the way StableDiffusionPipeline.save_lora_weights writes them
   (export_micro.write_adapter: `unet.` keys, lora_adapter_metadata r=8, lora_alpha=8).
3. Checks, through diffusers and peft (the reference), on a pipeline of the micro architecture:
   (a) each file fused at 1.0 onto unet's weights, converted to fp16 as the exporter converts,
   against unet_<name>; (b) both fused against unet_lcm_style; (c) load_lora_weights takes each
   file with no missing or unexpected keys; (d) the share of dW's energy that rank 8 keeps, and
   the residual against the energy fp16 rounding alone leaves; and, for (a) and (b), ONNX
   Runtime's UNet output with the fused weights against the variant's. Fusing onto the fp16 base
   (its fp32 weights are gone) with factors that carry part of the rounding noise moves elements
   to neighbouring fp16 values, small ones by several of their own ulps: (a) and (b) fail when
   any element is further off than one fp16 step at its tensor's largest magnitude.
4. manifest.json: loras.<name> points at its copy (the checks' numbers under `recovered`), the
   UNets' records and notes say their weight nodes are named, and the file table is rewritten.

The same folder always gives the same bytes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
import sys
import tempfile
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
for p in (str(HERE), str(HERE.parent)):
    if p not in sys.path:
        sys.path.insert(0, p)

import numpy as np  # noqa: E402

import config  # noqa: E402
import export  # noqa: E402
import export_micro  # noqa: E402
import train  # noqa: E402

UNETS = ("unet", "unet_lcm", "unet_style", "unet_lcm_style")
ADAPTERS = {"lcm": "unet_lcm", "style": "unet_style"}  # adapter -> the variant with it alone at 1.0
BOTH = "unet_lcm_style"  # lcm and style at 1.0
NODE_NAME = re.compile(r"/unet/(.+)/(Conv|MatMul|Gemm)")
# The recovered factors carry part of fp16's rounding noise (the share a rank-8 fit absorbs) and
# are stored in fp16: small elements land several of their own ulps off, but no element may be
# further from the fused variant than one fp16 step at its tensor's largest magnitude.
MAX_TENSOR_ULPS = 1.0
UNET_ONLY = "No LoRA keys associated to CLIPTextModel"  # diffusers' note on every UNet-only LoRA file


def module_path(node_name: str) -> str:
    """`/unet/down_blocks.0/attentions.0/proj_in/Conv` -> `down_blocks.0.attentions.0.proj_in`."""
    m = NODE_NAME.fullmatch(node_name)
    if not m:
        raise export.ExportError(f"weight node {node_name!r} is not named /unet/<module path>/<Op>")
    return m.group(1).replace("/", ".")


# ---- 1. names --------------------------------------------------------------------------------


def name_unets(model: Path, log=print) -> dict[str, int]:
    """Name the weight nodes of every UNet that lacks them (step 1); {folder: nodes named}."""
    import onnx

    todo = []
    for folder in UNETS:
        graph = onnx.load(str(model / folder / "model.onnx"), load_external_data=False).graph
        if not all(n.name for n in export_micro.weight_nodes(graph)):
            todo.append(folder)
    if not todo:
        return {}
    dtype = json.loads((model / "manifest.json").read_text())["components"]["unet"]["dtype"]
    with tempfile.TemporaryDirectory() as tmp:
        log(f"exporting a reference UNet ({dtype}) of {model / 'unet' / 'config.json'}")
        ref = export_micro.reference_unet(model / "unet" / "config.json", Path(tmp) / "unet", dtype)
        named = {}
        for folder in todo:
            named[folder] = export_micro.name_weight_nodes(model / folder / "model.onnx", ref, [0])
            log(f"{folder}: {named[folder]} weight nodes named; ONNX Runtime's outputs bit-identical")
    return named


# ---- 2. adapters -----------------------------------------------------------------------------


def weight_layout(graph) -> dict[str, tuple[str, bool]]:
    """{module path: (its weight's initializer, stored transposed)} of a graph whose weight nodes
    are named. A MatMul stores torch's Linear.weight [out, in] as [in, out]; so does a Gemm
    without transB; a Conv stores it as is."""
    import onnx

    inits = {t.name for t in graph.initializer}
    layout = {}
    for node in export_micro.weight_nodes(graph):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.input[1] not in inits or node.input[0] in inits or attrs.get("transA", 0):
            raise export.ExportError(f"{node.name}: the weight is not the second input")
        transposed = node.op_type == "MatMul" or (node.op_type == "Gemm" and not attrs.get("transB", 0))
        layout[module_path(node.name)] = (node.input[1], transposed)
    return layout


def unet_weights(folder: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """({module path: its weight in torch's layout, fp16}, {initializer name: array} for every
    initializer) of a UNet folder whose weight nodes are named."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(folder / "model.onnx")).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    layout = weight_layout(graph)
    return {m: inits[name].T if transposed else inits[name] for m, (name, transposed) in layout.items()}, inits


def is_lora_target(module: str) -> bool:
    """peft's rule for a target_modules list: the name is a target or ends with '.' + one."""
    return any(module == t or module.endswith("." + t) for t in config.LORA_TARGETS)


def weight_deltas(model: Path, variant: str) -> dict[str, np.ndarray]:
    """{module: W(variant) - W(unet) in float64, torch's layout} for the modules that changed.
    ExportError when anything else changed (a bias, a norm, a module no LoRA targets)."""
    base_w, base_i = unet_weights(model / "unet")
    var_w, var_i = unet_weights(model / variant)
    if base_i.keys() != var_i.keys() or base_w.keys() != var_w.keys():
        raise export.ExportError(f"{variant}: not the same graph as unet")
    deltas = {m: var_w[m].astype(np.float64) - base_w[m].astype(np.float64) for m in base_w
              if not np.array_equal(var_w[m], base_w[m])}
    if bad := sorted(m for m in deltas if not is_lora_target(m)):
        raise export.ExportError(f"{variant}: weights changed outside the LoRA targets: {', '.join(bad)}")
    changed = {n for n in base_i if base_i[n].tobytes() != var_i[n].tobytes()}
    if len(changed) != len(deltas):
        raise export.ExportError(f"{variant}: {len(changed)} initializers changed but {len(deltas)} LoRA-targeted weights")
    return deltas


def fp16_noise_energy(base: np.ndarray, rank: int) -> float:
    """The energy fp16 rounding leaves in a rank-`rank` residual of fp16(W + dW) - fp16(W): two
    roundings of variance ulp^2/12 each, less the share a rank-`rank` fit absorbs."""
    m = base.reshape(base.shape[0], -1)
    ulp = np.spacing(np.abs(m.astype(np.float16))).astype(np.float64)
    rows, cols = m.shape
    return float((ulp**2).sum() / 6 * (1 - rank * (rows + cols - rank) / (rows * cols)))


def factor(delta: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """(lora_B, lora_A, stats) of the truncated rank-`rank` SVD of `delta` ([out, in] or
    [out, in, kh, kw]): B = U sqrt(S) ([out, r] or [out, r, 1, 1]), A = sqrt(S) V^T ([r, in] or
    [r, in, kh, kw]); stats: the share of the energy kept and the singular values."""
    out = delta.shape[0]
    mat = delta.reshape(out, -1)
    if min(mat.shape) < rank:
        raise export.ExportError(f"a {list(delta.shape)} weight has no rank-{rank} factorization")
    u, s, vt = np.linalg.svd(mat, full_matrices=False)
    sign = np.sign(u[np.abs(u).argmax(axis=0), np.arange(u.shape[1])])
    sign[sign == 0] = 1
    u, vt = u * sign, vt * sign[:, None]
    root = np.sqrt(s[:rank])
    b, a = u[:, :rank] * root, root[:, None] * vt[:rank]
    if delta.ndim == 4:
        b, a = b.reshape(out, rank, 1, 1), a.reshape(rank, *delta.shape[1:])
    total = float((s**2).sum())
    kept = float((s[:rank] ** 2).sum())
    return b, a, {"energy_kept": kept / total if total else 1.0, "residual_energy": total - kept,
                  "singular_values": [float(v) for v in s[: rank + 1]]}


def extract(model: Path, name: str, rank: int) -> tuple[dict, dict]:
    """(peft state dict {<module>.lora_A.weight / .lora_B.weight: float64}, per-module stats) of
    adapter `name`, from its fused variant."""
    base, _ = unet_weights(model / "unet")
    state, stats = {}, {}
    for module, delta in weight_deltas(model, ADAPTERS[name]).items():
        b, a, st = factor(delta, rank)
        st["residual_over_fp16_noise"] = st.pop("residual_energy") / fp16_noise_energy(base[module], rank)
        state[f"{module}.lora_A.weight"], state[f"{module}.lora_B.weight"] = a, b
        stats[module] = st
    return state, stats


# ---- 3. checks through diffusers -------------------------------------------------------------


def micro_pipeline(model: Path):
    """A StableDiffusionPipeline of the micro model's architecture (configs from `model`), with
    random weights."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    read = lambda rel: json.loads((model / rel).read_text())  # noqa: E731
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL.from_config(read("vae_decoder/config.json")),
        text_encoder=CLIPTextModel(CLIPTextConfig.from_dict(read("text_encoder/config.json"))),
        tokenizer=CLIPTokenizer.from_pretrained(str(model / "tokenizer")),
        unet=UNet2DConditionModel.from_config(read("unet/config.json")),
        scheduler=PNDMScheduler.from_pretrained(str(model / "scheduler")),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@contextlib.contextmanager
def diffusers_warnings():
    """Collects what diffusers logs at WARNING and above, and Python warnings (peft's)."""
    from diffusers.utils import logging as dlog

    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    logger, handler = dlog.get_logger("diffusers"), Collect(logging.WARNING)
    level, handlers = logger.level, logger.handlers[:]
    logger.handlers = [handler]  # collected, not printed
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield seen
        seen.extend(str(w.message) for w in caught)
    finally:
        logger.handlers = handlers
        logger.setLevel(level)


def check_loads(model: Path, loras: Path, name: str, rank: int) -> dict:
    """(c): load_lora_weights on the micro architecture; the adapter it built holds exactly the
    file's tensors (no key missing, none unexpected), with r and lora_alpha from the metadata."""
    import torch
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import load_file

    pipe = micro_pipeline(model)
    with diffusers_warnings() as seen:
        pipe.load_lora_weights(str(loras), weight_name=f"{name}.safetensors", adapter_name=name)
    file = {k.removeprefix("unet."): v for k, v in load_file(str(loras / f"{name}.safetensors")).items()}
    loaded = get_peft_model_state_dict(pipe.unet, adapter_name=name)
    missing, unexpected = sorted(loaded.keys() - file.keys()), sorted(file.keys() - loaded.keys())
    differ = [k for k in file.keys() & loaded.keys() if not torch.equal(loaded[k].float(), file[k].float())]
    seen = [w for w in seen if not w.startswith(UNET_ONLY)]
    cfg = pipe.unet.peft_config[name]
    ok = not (missing or unexpected or differ or seen) and (cfg.r, cfg.lora_alpha) == (rank, rank)
    if not ok:
        raise export.ExportError(f"{name}.safetensors: diffusers loads it wrongly: missing {missing[:3]}, unexpected "
                                 f"{unexpected[:3]}, different {differ[:3]}, r/alpha {cfg.r}/{cfg.lora_alpha}, "
                                 f"warnings {seen[:2]}")
    return {"tensors": len(file), "missing": 0, "unexpected": 0, "warnings": 0, "r": cfg.r, "lora_alpha": cfg.lora_alpha}


def fused_by_diffusers(model: Path, loras: Path, names: list[str], base: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{module: weight, fp16} after diffusers loads `names`' files onto a micro pipeline holding
    `base`'s weights and fuses them at 1.0 (set_adapters + fuse_lora, as models/export.py does),
    converted to fp16 the way the exporter's converter does."""
    import torch
    from onnxruntime.transformers import optimizer  # noqa: F401  (puts float16.py on sys.path)
    from float16 import convert_np_to_float16

    pipe = micro_pipeline(model)
    modules = dict(pipe.unet.named_modules())
    with torch.no_grad():
        for module, w in base.items():
            modules[module].weight.copy_(torch.from_numpy(w.astype(np.float32)))
    for name in names:
        pipe.load_lora_weights(str(loras), weight_name=f"{name}.safetensors", adapter_name=name)
    pipe.set_adapters(names, adapter_weights=[1.0] * len(names))
    pipe.fuse_lora(components=["unet"], lora_scale=1.0, adapter_names=names)
    modules = dict(pipe.unet.named_modules())
    out = {}
    for module in base:
        layer = modules[module]
        layer = layer.get_base_layer() if hasattr(layer, "get_base_layer") else layer
        out[module] = convert_np_to_float16(layer.weight.detach().numpy())
    return out


def ulps_apart(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How many fp16 values lie between a and b (elementwise; +0 and -0 are the same)."""

    def ordered(x):
        i = x.astype(np.float16).view(np.int16).astype(np.int32)
        return np.where(i < 0, -(i & 0x7FFF), i)

    return np.abs(ordered(a) - ordered(b))


def compare(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> dict:
    """How far fp16 weights `got` are from `want`, module by module: the max abs difference; the
    shares of elements that differ and that differ by more than 1 ulp of their own value; and the
    largest difference in `tensor ulps`, fp16's step at the largest magnitude of its tensor."""
    n = differ = over = 0
    worst, worst_tensor_ulps = 0.0, 0.0
    for module, w in want.items():
        ulps = ulps_apart(got[module], w)
        diff = np.abs(got[module].astype(np.float64) - w.astype(np.float64))
        n += w.size
        differ += int((ulps > 0).sum())
        over += int((ulps > 1).sum())
        worst = max(worst, float(diff.max()))
        step = float(np.spacing(np.abs(w).max().astype(np.float16)))
        worst_tensor_ulps = max(worst_tensor_ulps, float(diff.max()) / step)
    return {"elements": n, "max_abs_diff": worst, "max_tensor_ulps": worst_tensor_ulps, "fraction_differ": differ / n,
            "fraction_over_1_ulp": over / n}


def output_difference(model: Path, fused: dict[str, np.ndarray], variant: str) -> dict:
    """ONNX Runtime's UNet output with `fused`'s weights in unet's graph (what run-time fusion
    at 1.0 gives) against `variant`'s, and the adapters' own effect (`variant` against unet), as
    max abs differences on export_micro's random inputs (batch 2, 16x16)."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(model / "unet" / "model.onnx"))
    layout = weight_layout(m.graph)
    by_name = {name: (module, transposed) for module, (name, transposed) in layout.items()}
    for t in m.graph.initializer:
        if t.name in by_name:
            module, transposed = by_name[t.name]
            t.CopyFrom(numpy_helper.from_array(fused[module].T if transposed else fused[module], t.name))
    outs = {}
    with tempfile.TemporaryDirectory() as tmp:
        onnx.save_model(m, str(Path(tmp) / "model.onnx"))
        for key, path in (("fused", Path(tmp) / "model.onnx"), ("variant", model / variant / "model.onnx"),
                          ("base", model / "unet" / "model.onnx")):
            sess = export.ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            outs[key] = sess.run(None, export_micro._feeds(sess, [0]))[0].astype(np.float64)
    return {"max_abs_diff": float(np.abs(outs["fused"] - outs["variant"]).max()),
            "adapters_effect_max_abs": float(np.abs(outs["variant"] - outs["base"]).max())}


def check_fusion(model: Path, loras: Path, names: list[str], variant: str) -> dict:
    """(a), (b): the files fused onto unet by diffusers against `variant`'s fp16 weights (no
    element may be further off than MAX_TENSOR_ULPS), and the UNet outputs they give."""
    base, _ = unet_weights(model / "unet")
    want, _ = unet_weights(model / variant)
    fused = fused_by_diffusers(model, loras, names, base)
    result = compare(fused, want)
    result["unet_output"] = output_difference(model, fused, variant)
    if result["max_tensor_ulps"] > MAX_TENSOR_ULPS:
        raise export.ExportError(f"{' + '.join(names)} fused onto unet differs from {variant} by {result['max_abs_diff']:.3e}, "
                                 f"{result['max_tensor_ulps']:.2f} fp16 steps at its tensor's scale (at most {MAX_TENSOR_ULPS})")
    return result


# ---- 4. manifest -----------------------------------------------------------------------------


def recovered_record(name: str, stats: dict, fusion: dict, loads: dict, rank: int) -> dict:
    energy = [s["energy_kept"] for s in stats.values()]
    noise = [s["residual_over_fp16_noise"] for s in stats.values()]
    return {
        "from": f"{ADAPTERS[name]} - unet (models/micro_src/extract_loras.py)",
        "rank": rank,
        "modules": len(stats),
        "energy_kept_min": min(energy),
        "residual_over_fp16_noise_max": max(noise),
        "fused_vs_variant": fusion,
        "diffusers_load": loads,
    }


def update_manifest(model: Path, records: dict[str, dict], named: dict[str, int], both: dict) -> dict:
    """The adapters' entries, the UNets' node-name records and notes, the file table."""
    path = model / "manifest.json"
    m = json.loads(path.read_text())
    m["loras"].update(records)
    for folder, n in named.items():
        m["components"][folder]["weight_node_names"] = {
            "named": n, "by": "models/micro_src/extract_loras.py (torch's names from a reference export aligned node by node)"}
    for folder in UNETS:
        m["components"][folder]["bytes"] = export.folder_bytes(model / folder)
    notes = [export_micro.COMPACT_NOTE, export_micro.NODE_NAMES_NOTE]
    notes += [n for n in m["notes"] if not n.startswith(("graphs: ", "loras: "))]  # this script's own, replaced
    notes.append(
        "loras: the trained adapter files were not kept; loras/lcm.safetensors and style.safetensors were recovered from "
        "the fused variants as rank-8 SVDs of their weight changes (models/micro_src/extract_loras.py); both fused onto "
        f"unet match unet_lcm_style within one fp16 step at each tensor's scale (max abs difference "
        f"{both['max_abs_diff']:.3e}; UNet outputs within {both['unet_output']['max_abs_diff']:.2e})"
    )
    m["notes"] = notes
    m["files"] = {k: v for k, v in export.file_table(model).items() if k != "README.md"}  # README.md: hand-written
    export.write_json_atomic(path, m)
    return m


def run(model: Path, log=print) -> dict:
    """Steps 1-4 on the micro model folder `model`; the checks' numbers. The adapters are built
    and checked in a temporary folder and copied into `model`/loras only when all checks pass."""
    model = Path(model)
    named = name_unets(model, log)
    records, report = {}, {"named": named}
    with tempfile.TemporaryDirectory() as tmp:
        loras = Path(tmp)
        for name in ADAPTERS:
            rank = config.STAGES[name]["rank"]
            state, stats = extract(model, name, rank)
            export_micro.write_adapter(state, rank, rank, loras / f"{name}.safetensors")
            fusion = check_fusion(model, loras, [name], ADAPTERS[name])
            loads = check_loads(model, loras, name, rank)
            report[name] = recovered_record(name, stats, fusion, loads, rank)
            log(f"{name}: {len(stats)} modules, energy kept >= {report[name]['energy_kept_min']:.6f}, residual / fp16 noise "
                f"<= {report[name]['residual_over_fp16_noise_max']:.3f}; fused vs {ADAPTERS[name]}: max abs "
                f"{fusion['max_abs_diff']:.3e}, {fusion['fraction_differ']:.4%} of elements differ, "
                f"{fusion['fraction_over_1_ulp']:.4%} by more than 1 ulp; "
                f"UNet outputs {fusion['unet_output']['max_abs_diff']:.2e} apart "
                f"(the adapter's effect: {fusion['unet_output']['adapters_effect_max_abs']:.2e})")
        both = check_fusion(model, loras, list(ADAPTERS), BOTH)
        report["lcm_style"] = both
        log(f"lcm + style fused vs {BOTH}: max abs {both['max_abs_diff']:.3e}, {both['fraction_differ']:.4%} differ, "
            f"{both['fraction_over_1_ulp']:.4%} by more than 1 ulp; UNet outputs {both['unet_output']['max_abs_diff']:.2e} apart "
            f"(the adapters' effect: {both['unet_output']['adapters_effect_max_abs']:.2e})")
        for name in ADAPTERS:
            export.copy_verbatim(loras / f"{name}.safetensors", model / "loras" / f"{name}.safetensors")
    for name in ADAPTERS:
        source = (f"trained by models/micro_src/train.py (stage {name}), file not kept; loras/{name}.safetensors "
                  f"recovered from {ADAPTERS[name]} by models/micro_src/extract_loras.py")
        records[name] = {**export_micro.adapter_record(name, model, source), "recovered": report[name]}
    update_manifest(model, records, named, both)
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(train.DEFAULT_EXPORT_DIR), help="the micro model folder (default models/micro)")
    args = ap.parse_args(argv)
    try:
        run(Path(args.model), log=train.log)
    except export.ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
