"""Tests of models/export.py on local stand-ins (no network): a random-init SD-shaped diffusers
pipeline and two LoRA files, one in diffusers/peft format and one in kohya format that also trains
the text encoder (models/make_standin.py).

Run by ./test.sh with the reference venv (models/requirements.txt) after `cargo build`;
SPEEDSCAPE_BIN names the speedscape binary the end-to-end tests run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from safetensors import safe_open

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
sys.path.insert(0, str(MODELS))

import export  # noqa: E402
import make_standin  # noqa: E402
import make_tiny  # noqa: E402
from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline  # noqa: E402
from transformers import CLIPTextModel  # noqa: E402

# LoRA weights of the variants: p (peft format, UNet only), k (kohya, UNet + text encoder).
VARIANTS = {"p": [("p", 1.0)], "k": [("k", 0.8)], "pk": [("p", 1.0), ("k", 0.8)]}
FUSED_TOL = 1e-4  # ONNX Runtime vs torch, float32
PROMPT = "a lighthouse on a rocky coast during a storm, PixArFK"


def speedscape_bin() -> Path:
    path = Path(os.environ.get("SPEEDSCAPE_BIN", ROOT / "target" / "debug" / "speedscape"))
    if not path.is_file():
        pytest.fail(f"speedscape binary not found at {path}: run `cargo build` or ./test.sh (which sets SPEEDSCAPE_BIN)")
    return path


def run_export(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, str(MODELS / "export.py"), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    if check and proc.returncode != 0:
        pytest.fail(f"export failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def run_speedscape(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(speedscape_bin()), *args], capture_output=True, text=True, cwd=ROOT)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def standin(tmp_path_factory) -> dict[str, Path]:
    return make_standin.write(tmp_path_factory.mktemp("standin"), "tiny")


@pytest.fixture(scope="module")
def exported(standin, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "sd"
    proc = run_export(
        "--out", str(out),
        "--model", str(standin["pipeline"]),
        "--lora", f"p={standin['peft']}",
        "--lora", f"k={standin['kohya']}",
        *[arg for name, parts in VARIANTS.items() for arg in ("--variant", f"{name}=" + ",".join(f"{l}:{w}" for l, w in parts))],
    )
    return out, proc.stdout


@pytest.fixture(scope="module")
def unet_inputs():
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(2, 4, 8, 8, generator=gen)
    e = torch.randn(2, 77, 32, generator=gen)
    return x, torch.tensor(501.0), e


def ort_unet(folder: Path, x, t, e) -> np.ndarray:
    return session(folder / "model.onnx").run(None, {"sample": x.numpy(), "timestep": t.numpy(), "encoder_hidden_states": e.numpy()})[0]


def fresh_pipeline(folder: Path) -> StableDiffusionPipeline:
    make_tiny.set_determinism()
    return export.load_pipeline(folder)


# ---------------------------------------------------------------------------------------------


def test_progress_is_streamed_per_component_with_sizes(exported):
    out, stdout = exported
    for folder in ("text_encoder", "unet", "vae_decoder", "unet_p", "unet_k", "unet_pk", "text_encoder_k", "text_encoder_pk"):
        assert re.search(rf"\[\d+/\d+\] {folder}: [\d.]+ [KMG]B fp32 in [\d.]+ s, max abs err vs torch", stdout), (folder, stdout)
    assert "done:" in stdout


def test_fused_unets_equal_torch_with_the_same_adapters_fused(standin, exported, unet_inputs):
    out, _ = exported
    pipe = fresh_pipeline(standin["pipeline"])
    files = {"p": standin["peft"], "k": standin["kohya"]}
    x, t, e = unet_inputs
    for variant, parts in VARIANTS.items():
        for name, _ in parts:
            pipe.load_lora_weights(str(files[name].parent), weight_name=files[name].name, adapter_name=name)
        pipe.set_adapters([n for n, _ in parts], adapter_weights=[w for _, w in parts])
        pipe.fuse_lora(components=["unet", "text_encoder"], lora_scale=1.0)
        with torch.no_grad():
            ref = pipe.unet(x, t, e, return_dict=False)[0].numpy()
        got = ort_unet(out / f"unet_{variant}", x, t, e)
        assert np.abs(got - ref).max() < FUSED_TOL, variant
        pipe.unfuse_lora(components=["unet", "text_encoder"])
        pipe.unload_lora_weights()


def manual_lora_deltas(path: Path, weight: float) -> dict[tuple[str, str], torch.Tensor]:
    """{(component, module): weight * alpha/rank * up @ down} read straight from the file, in our own
    words (no diffusers / peft): the independent check of what fuse_lora did."""
    deltas = {}
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if any(k.startswith("lora_unet_") for k in tensors):  # kohya
        for key, down in tensors.items():
            if not key.endswith(".lora_down.weight"):
                continue
            stem = key[: -len(".lora_down.weight")]
            up = tensors[stem + ".lora_up.weight"]
            alpha = float(tensors[stem + ".alpha"])
            comp, flat = ("unet", stem[len("lora_unet_"):]) if stem.startswith("lora_unet_") else ("text_encoder", stem[len("lora_te_"):])
            deltas[(comp, flat)] = weight * alpha / down.shape[0] * (up @ down)
    else:  # diffusers / peft
        extra = json.loads(meta.get("lora_adapter_metadata", "{}"))
        for key, a in tensors.items():
            if key.endswith(".lora_A.weight"):
                b = tensors[key.replace("lora_A", "lora_B")]
                alpha = extra.get("unet.lora_alpha", a.shape[0])
                module = key[len("unet."): -len(".lora_A.weight")]
                deltas[("unet", module.replace(".", "_"))] = weight * alpha / a.shape[0] * (b @ a)
    return deltas


def apply_deltas(model: torch.nn.Module, comp: str, deltas: dict) -> int:
    applied = 0
    with torch.no_grad():
        for name, module in model.named_modules():
            key = (comp, name.replace(".", "_"))
            if key in deltas and isinstance(module, torch.nn.Linear):
                module.weight += deltas[key]
                applied += 1
    return applied


def test_fused_weights_are_base_plus_weighted_lora_products(standin, exported, unet_inputs):
    """Independent of diffusers' loader: W + sum_i w_i * alpha_i / r_i * B_i A_i, for the UNet and the
    text encoder, run in torch, equals the exported graphs; all other weights are the base ones."""
    out, _ = exported
    files = {"p": standin["peft"], "k": standin["kohya"]}
    x, t, e = unet_inputs
    ids = torch.full((1, 77), 49407, dtype=torch.int64)
    ids[0, :6] = torch.tensor([49406, 320, 2292, 525, 320, 49407])
    for variant, parts in VARIANTS.items():
        deltas = {}
        for name, w in parts:
            for k, d in manual_lora_deltas(files[name], w).items():
                deltas[k] = deltas.get(k, 0) + d
        pipe = fresh_pipeline(standin["pipeline"])
        n_unet = apply_deltas(pipe.unet, "unet", deltas)
        n_te = apply_deltas(pipe.text_encoder, "text_encoder", deltas)
        assert n_unet + n_te == len(deltas), "every LoRA module maps onto a Linear layer"
        with torch.no_grad():
            ref = pipe.unet(x, t, e, return_dict=False)[0].numpy()
            te_ref = pipe.text_encoder(input_ids=ids).last_hidden_state.numpy()
        assert np.abs(ort_unet(out / f"unet_{variant}", x, t, e) - ref).max() < FUSED_TOL, variant
        te_folder = json.loads((out / "manifest.json").read_text())["variants"][variant]["text_encoder"]
        te_got = session(out / te_folder / "model.onnx").run(None, {"input_ids": ids.numpy().astype(np.int32)})[0]
        assert np.abs(te_got - te_ref).max() < FUSED_TOL, variant


def test_composed_variant_differs_from_each_single_one(exported, unet_inputs):
    out, _ = exported
    x, t, e = unet_inputs
    outs = {v: ort_unet(out / f"unet_{v}", x, t, e) for v in ("p", "k", "pk")}
    outs["base"] = ort_unet(out / "unet", x, t, e)
    # Each pair differs far beyond the float32 export error (< 1e-4): both LoRAs were applied.
    for a, b in (("pk", "p"), ("pk", "k"), ("p", "base"), ("k", "base")):
        assert np.abs(outs[a] - outs[b]).max() > 100 * FUSED_TOL, (a, b)


def test_text_encoder_variants_exist_only_where_a_lora_trains_it(exported):
    out, _ = exported
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["loras"]["p"]["format"] == "diffusers" and manifest["loras"]["p"]["components"] == ["unet"]
    assert manifest["loras"]["k"]["format"] == "kohya" and manifest["loras"]["k"]["components"] == ["unet", "text_encoder"]
    assert manifest["variants"]["p"]["text_encoder"] == "text_encoder"
    assert not (out / "text_encoder_p").exists()
    for v in ("k", "pk"):
        assert manifest["variants"][v]["text_encoder"] == f"text_encoder_{v}"
        assert (out / f"text_encoder_{v}" / "model.onnx").is_file()
    assert manifest["variants"]["pk"]["loras"] == [{"name": "p", "weight": 1.0}, {"name": "k", "weight": 0.8}]


def test_manifest_hashes_and_sizes_match_the_files(standin, exported):
    out, _ = exported
    manifest = json.loads((out / "manifest.json").read_text())
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name != "manifest.json"}
    assert set(manifest["files"]) == on_disk
    for rel, rec in manifest["files"].items():
        assert rec["sha256"] == sha256(out / rel), rel
        assert rec["bytes"] == (out / rel).stat().st_size, rel
    assert manifest["loras"]["k"]["sha256"] == sha256(standin["kohya"])
    assert manifest["base"]["sha256"]["unet/diffusion_pytorch_model.safetensors"] == sha256(standin["pipeline"] / "unet" / "diffusion_pytorch_model.safetensors")
    for lib in ("torch", "diffusers", "onnx", "onnxruntime", "peft"):
        assert manifest["exporter"]["libraries"][lib]
    for comp in manifest["components"].values():
        assert comp["check"]["passed"] and comp["check"]["max_abs_err"] < FUSED_TOL


def test_scheduler_config_is_copied_byte_for_byte(standin, exported):
    out, _ = exported
    src = standin["pipeline"] / "scheduler" / "scheduler_config.json"
    assert (out / "scheduler" / "scheduler_config.json").read_bytes() == src.read_bytes()
    assert "timestep_spacing" not in json.loads(src.read_text())


def test_speedscape_runs_the_export_like_diffusers_with_the_loras_loaded(standin, exported, tmp_path):
    """The composed variant (fused UNet + fused text encoder) in speedscape gives diffusers' image
    with both LoRAs loaded the usual way (set_adapters, not fused)."""
    out, _ = exported
    raw = tmp_path / "pk.npy"
    proc = run_speedscape(
        "generate", "--model-dir", str(out), "--unet", "pk", "--prompt", PROMPT, "--scheduler", "dpmpp",
        "--steps", "10", "--cfg", "7.5", "--seed", "42", "--device", "cpu", "--rng", "torch-cpu",
        "--out", str(tmp_path / "pk.png"), "--save-raw", str(raw),
    )
    assert proc.returncode == 0, proc.stderr
    got = np.load(raw)

    pipe = fresh_pipeline(standin["pipeline"])
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    pipe.load_lora_weights(str(standin["peft"].parent), weight_name=standin["peft"].name, adapter_name="p")
    pipe.load_lora_weights(str(standin["kohya"].parent), weight_name=standin["kohya"].name, adapter_name="k")
    pipe.set_adapters(["p", "k"], adapter_weights=[1.0, 0.8])
    ref = pipe(PROMPT, num_inference_steps=10, guidance_scale=7.5, height=64, width=64,
               generator=torch.Generator("cpu").manual_seed(42), output_type="np").images
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() < 2e-3


def test_models_verify_accepts_the_export(exported):
    out, _ = exported
    proc = run_speedscape("models", "verify", str(out), "--device", "cpu")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def generate_image(folder: Path, tmp_path: Path, steps: int = 20, seed: int = 42, config: str | None = None) -> tuple[np.ndarray, dict]:
    """An image of `folder` from `speedscape generate` on the CPU (DPM-Solver++ `steps`, cfg 7.5,
    PROMPT), with `config` as its config file's text when given: the image and the run's JSON
    report. Each call writes into a new folder under `tmp_path`."""
    out = Path(tempfile.mkdtemp(dir=tmp_path))
    flags = []
    if config is not None:
        (out / "config.toml").write_text(config)
        flags = ["--config", str(out / "config.toml")]
    proc = run_speedscape(
        *flags, "generate", "--model-dir", str(folder), "--prompt", PROMPT, "--scheduler", "dpmpp", "--steps", str(steps),
        "--cfg", "7.5", "--seed", str(seed), "--device", "cpu", "--out", str(out / "image.png"),
        "--save-raw", str(out / "image.npy"), "--json",
    )
    assert proc.returncode == 0, proc.stderr
    return np.load(out / "image.npy"), json.loads(proc.stdout)


def generate_with_vae(folder: Path, precision: str, tmp_path: Path) -> tuple[np.ndarray, dict]:
    """A 4-step image of `folder` with `[model] vae_precision = precision`, and its report."""
    return generate_image(folder, tmp_path, steps=4, seed=7, config=f'[model]\nvae_precision = "{precision}"\n')


@pytest.fixture(scope="module")
def exported_fp16(standin, tmp_path_factory) -> Path:
    out16 = tmp_path_factory.mktemp("export-fp16") / "fp16"
    run_export("--out", str(out16), "--model", str(standin["pipeline"]), "--no-variants", "--dtype", "fp16")
    return out16


def test_fp16_export_runs_in_speedscape_on_cpu_and_matches_fp32(exported, exported_fp16, tmp_path):
    out32, _ = exported
    out16 = exported_fp16
    manifest = json.loads((out16 / "manifest.json").read_text())
    assert manifest["dtype"] == "fp16"
    assert manifest["components"]["unet"]["dtype"] == "fp16"
    assert manifest["components"]["vae_decoder"]["dtype"] == "fp32"  # kept: SD's VAE overflows fp16
    # ... and beside it the float16 one a GPU decodes with, checked against torch like every graph
    half = manifest["components"]["vae_decoder_fp16"]
    assert half["dtype"] == "fp16" and half["kind"] == "vae_decoder" and half["check"]["passed"]
    unet = onnx.load(str(out16 / "unet" / "model.onnx"), load_external_data=False)
    assert {i.name: i.type.tensor_type.elem_type for i in unet.graph.input}["sample"] == onnx.TensorProto.FLOAT16
    # The fp16 UNet file holds half the fp32 weight bytes.
    assert (out16 / "unet" / "model.onnx_data").stat().st_size < 0.55 * (out32 / "unet" / "model.onnx_data").stat().st_size

    images = {name: generate_image(folder, tmp_path)[0] for name, folder in (("fp32", out32), ("fp16", out16))}
    diff = np.abs(images["fp16"] - images["fp32"])
    # Stated tolerance: fp16 activations drift ~1e-3 per step; on [0,1] pixels the 20-step image
    # stays within 0.02 mean and 0.1 max of the fp32 one.
    assert diff.mean() < 0.02 and diff.max() < 0.1, (diff.mean(), diff.max())
    assert diff.max() > 0, "fp16 really ran (the images are not identical)"


def test_the_fp16_vae_decodes_where_chosen_and_its_overflow_is_decoded_again_in_fp32(exported_fp16, tmp_path):
    """[model] vae_precision: "fp16" decodes with vae_decoder_fp16/ (within fp16 noise of the fp32
    image); "auto" keeps vae_decoder/ on the CPU. A float16 decoder that overflows (here: its first
    convolution's bias near float16's largest value, so every image has Inf, then NaN after the
    GroupNorm) gives the float32 decoder's image, bit for bit, and the run's notes say so."""
    image32, report32 = generate_with_vae(exported_fp16, "fp32", tmp_path)
    image16, report16 = generate_with_vae(exported_fp16, "fp16", tmp_path)
    assert "vae_decoder_fp16" in report16["load_ms"] and "vae_decoder_fp16" not in report32["load_ms"]
    diff = np.abs(image16 - image32).max()
    assert 0 < diff < 5e-3, diff
    assert not any("overflowed" in w for w in report16["warnings"])
    _, auto = generate_with_vae(exported_fp16, "auto", tmp_path)
    assert "vae_decoder_fp16" not in auto["load_ms"]  # float16 by default on a GPU only

    broken = tmp_path / "broken"
    shutil.copytree(exported_fp16, broken)
    graph = broken / "vae_decoder_fp16" / "model.onnx"
    model = onnx.load(str(graph))
    for t in model.graph.initializer:
        if t.name.endswith("decoder.conv_in.weight"):  # x100: sums of several thousand
            t.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(t) * np.float16(100), t.name))
        if t.name.endswith("decoder.conv_in.bias"):
            t.CopyFrom(onnx.numpy_helper.from_array(np.full(tuple(t.dims), 65000, np.float16), t.name))
    onnx.save(model, str(graph))
    image, report = generate_with_vae(broken, "fp16", tmp_path)
    np.testing.assert_array_equal(image, image32)
    note = [w for w in report["warnings"] if "overflowed" in w]
    assert len(note) == 1 and "vae_decoder_fp16/" in note[0] and "decoded again in float32 (vae_decoder/" in note[0], report["warnings"]


def graph_ops(path: Path) -> dict[str, int]:
    ops: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    return ops


def test_cuda_optimized_fp16_export_has_onnxruntime_sd_fusions(standin, tmp_path):
    out = tmp_path / "cuda"
    run_export("--out", str(out), "--model", str(standin["pipeline"]), "--no-variants", "--dtype", "fp16", "--optimize", "cuda")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["optimize"] == "cuda"
    ops = graph_ops(out / "unet" / "model.onnx")
    for op in ("MultiHeadAttention", "GroupNorm", "BiasSplitGelu"):
        assert ops.get(op, 0) > 0, (op, ops)
    recorded = manifest["components"]["unet"]["optimizations"][0]["fused_operators"]
    assert recorded["MultiHeadAttention"] == ops["MultiHeadAttention"]
    assert manifest["components"]["vae_decoder"]["dtype"] == "fp32"
    for comp in ("unet", "text_encoder", "vae_decoder"):  # streamed weights: every byte in place
        initializer_bytes_match_shapes(out / comp / "model.onnx")
    # Without onnxruntime-gpu the fused graph cannot run here; the same weights were checked unfused.
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert manifest["components"]["unet"]["check"]["graph"].startswith("unfused")
        assert manifest["components"]["unet"]["check"]["passed"]


def test_cpu_optimized_export_is_fused_checked_and_draws_the_plain_exports_image(standin, exported, tmp_path):
    """`--optimize cpu` (issue 24's CPU lever): ONNX Runtime's fusions that the CPU provider runs
    (attention and layer norms in the UNet, layer norms and QuickGelu in the text encoder) and none
    of the CUDA-only ones; each fused graph checked against torch
    itself (not an unfused stand-in); the 20-step image within 2e-3 of the plain fp32 export's."""
    out32, _ = exported
    out = tmp_path / "cpu"
    run_export("--out", str(out), "--model", str(standin["pipeline"]), "--no-variants", "--optimize", "cpu")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["optimize"] == "cpu"
    ops = graph_ops(out / "unet" / "model.onnx")
    for op in ("MultiHeadAttention", "SkipLayerNormalization"):
        assert ops.get(op, 0) > 0, (op, ops)
    for op in ("GroupNorm", "SkipGroupNorm", "BiasSplitGelu", "NhwcConv", "BiasAdd"):
        assert op not in ops, (op, ops)
    text_ops = graph_ops(out / "text_encoder" / "model.onnx")
    assert text_ops.get("SkipLayerNormalization", 0) > 0 and text_ops.get("QuickGelu", 0) > 0, text_ops
    for comp in ("unet", "text_encoder", "vae_decoder"):
        check = manifest["components"][comp]["check"]
        assert check["passed"] and "graph" not in check, (comp, check)  # the fused graph itself, on the CPU
    images = {name: generate_image(folder, tmp_path)[0] for name, folder in (("plain", out32), ("cpu", out))}
    assert np.abs(images["cpu"] - images["plain"]).max() < 2e-3


def test_cpu_optimized_fp16_is_refused(standin, tmp_path):
    out = tmp_path / "o"
    proc = run_export("--out", str(out), "--model", str(standin["pipeline"]), "--no-variants", "--dtype", "fp16", "--optimize", "cpu", check=False)
    assert proc.returncode == 2
    assert "no fast float16 kernels" in proc.stderr and "Fix: drop --dtype fp16" in proc.stderr
    assert not out.exists()


def test_tiny_model_is_what_the_exporter_makes(tmp_path):
    """models/tiny is produced by this exporter: regenerating it gives the committed files."""
    make_tiny.export_all(tmp_path / "tiny", verify=False, log=lambda *a: None)
    fresh = json.loads((tmp_path / "tiny" / "manifest.json").read_text())
    committed = json.loads((MODELS / "tiny" / "manifest.json").read_text())
    assert fresh["files"] == committed["files"]
    for rel, rec in committed["files"].items():
        assert sha256(MODELS / "tiny" / rel) == rec["sha256"], rel


# --- bad input: a clear error naming cause and fix; nothing half-written -----------------------


def test_existing_output_is_kept_without_force(standin, tmp_path):
    out = tmp_path / "keep"
    out.mkdir()
    (out / "mine.txt").write_text("user data")
    proc = run_export("--out", str(out), "--model", str(standin["pipeline"]), "--no-variants", check=False)
    assert proc.returncode == 2
    assert "exists" in proc.stderr and "--force" in proc.stderr
    assert (out / "mine.txt").read_text() == "user data"


def test_failed_export_leaves_no_partial_output(standin, tmp_path):
    out = tmp_path / "strict"
    proc = run_export("--out", str(out), "--model", str(standin["pipeline"]), "--no-variants", "--tolerance", "0", check=False)
    assert proc.returncode == 2
    assert "differs from torch" in proc.stderr
    assert not out.exists() and not out.with_name("strict.partial").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--lora", "x=/nonexistent/file.safetensors", "--variant", "x=x:1"], "is not a file, a folder or a hub id"),
        (["--lora", "x={peft}", "--variant", "y=z:1"], "no LoRA called 'z'"),
        (["--lora", "x={peft}", "--variant", "y=x:heavy"], "is not a number"),
        (["--lora", "x={pipeline}/model_index.json", "--variant", "y=x:1"], "not a .safetensors file"),
    ],
)
def test_bad_lora_arguments_name_the_cause(standin, tmp_path, args, message):
    args = [a.format(peft=standin["peft"], pipeline=standin["pipeline"]) for a in args]
    proc = run_export("--out", str(tmp_path / "o"), "--model", str(standin["pipeline"]), *args, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr, proc.stderr
    assert not (tmp_path / "o").exists()


def test_unreachable_hub_gives_a_clear_error(tmp_path):
    proc = run_export("--out", str(tmp_path / "o"), "--model", "someone/not-here", "--no-variants", check=False)
    assert proc.returncode == 2
    assert "cannot download 'someone/not-here'" in proc.stderr and "local folder" in proc.stderr


# --- the low-memory graph transform (fusions and float16 with the weights left on disk) ---------


def initializer_bytes_match_shapes(path: Path) -> None:
    model = onnx.load(str(path))  # with external data
    for t in model.graph.initializer:
        arr = onnx.numpy_helper.to_array(t)
        assert arr.shape == tuple(t.dims), t.name


def test_streamed_transform_keeps_weights_exact(tmp_path, unet_inputs):
    """The CPU-runnable fusions (target "cpu") through transform_graph, with every new initializer spilled to disk
    (threshold 1 byte): the fused graph computes what the plain one does."""
    src = MODELS / "tiny" / "unet" / "model.onnx"
    dst = tmp_path / "fused" / "model.onnx"
    work = tmp_path / "src"
    work.mkdir()
    for p in src.parent.iterdir():
        (work / p.name).write_bytes(p.read_bytes())
    fused, spilled = export.transform_graph(work / "model.onnx", dst, "unet", fp16=False, target="cpu", spill_threshold=1)
    assert fused.get("MultiHeadAttention", 0) > 0 and fused.get("SkipLayerNormalization", 0) > 0, fused
    assert spilled > 0
    initializer_bytes_match_shapes(dst)
    x, t, e = unet_inputs
    plain = ort_unet(src.parent, x, t, e)
    got = ort_unet(dst.parent, x, t, e)
    assert np.abs(got - plain).max() < 1e-4


def test_streamed_fp16_conversion_matches_in_memory_conversion(tmp_path):
    """float16 weights written by the streaming writer equal onnxruntime's own in-memory conversion."""
    from onnxruntime.transformers.onnx_model import OnnxModel

    src = MODELS / "tiny" / "unet" / "model.onnx"
    dst = tmp_path / "fp16" / "model.onnx"
    export.transform_graph(src, dst, None, fp16=True)
    streamed = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(dst)).graph.initializer}
    m = OnnxModel(onnx.load(str(src)))
    m.convert_float_to_float16(keep_io_types=False)
    reference = {t.name: onnx.numpy_helper.to_array(t) for t in m.model.graph.initializer}
    assert streamed.keys() == reference.keys()
    for name, ref in reference.items():
        assert streamed[name].dtype == ref.dtype and np.array_equal(streamed[name], ref), name



# --- the CLIP scorer (--clip-scorer) ------------------------------------------------------------


def write_clip(folder: Path, text_encoder, perturb: str | None = None) -> Path:
    """A random CLIPModel folder whose text tower is `text_encoder` (as make_tiny builds one);
    `perturb` names a text-tower tensor to nudge by 1e-3, making it another text encoder."""
    make_tiny.set_determinism()
    clip = make_tiny.build_clip(text_encoder)
    if perturb:
        with torch.no_grad():
            dict(clip.text_model.named_parameters())[perturb].add_(1e-3)
    make_tiny.save_clip_folder(clip, folder)
    return folder


@pytest.fixture(scope="module")
def clip_export(standin, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("clip")
    te = fresh_pipeline(standin["pipeline"]).text_encoder
    folder = write_clip(tmp / "clip", te)
    out = tmp / "sd"
    proc = run_export("--out", str(out), "--model", str(standin["pipeline"]), "--no-variants", "--clip-scorer", str(folder))
    return out, folder, proc.stdout


def test_clip_scorer_is_exported_checked_and_recorded(clip_export):
    out, folder, stdout = clip_export
    assert re.search(r"\[\d+/\d+\] clip_image_encoder: [\d.]+ [KMG]B fp32 in [\d.]+ s, max abs err vs torch", stdout), stdout
    manifest = json.loads((out / "manifest.json").read_text())
    comp = manifest["components"]["clip_image_encoder"]
    assert comp["kind"] == "clip_image_encoder" and comp["dtype"] == "fp32"
    assert comp["check"]["passed"] and comp["check"]["max_abs_err"] < FUSED_TOL
    # Its second check case feeds the pipeline's own text encoder pooler_output and compares
    # with CLIPModel.get_text_features on the same ids: the text side end to end.
    assert any(c["output"] == "text_embeds" and "text_pooled[2, 32]" in c["inputs"] for c in comp["check"]["cases"])
    rec = manifest["clip_scorer"]
    assert rec["folder"] == "clip_image_encoder" and rec["kind"] == "folder"
    assert rec["text_tower"]["matches"] == "text_encoder" and rec["text_tower"]["tensors_compared"] > 0
    assert {"clip_image_encoder/model.onnx", "clip_image_encoder/config.json"} <= set(manifest["files"])
    config = json.loads((out / "clip_image_encoder" / "config.json").read_text())
    assert config["format"] == "speedscape-clip-scorer/1"
    assert (config["resize_shortest_edge"], config["crop_height"], config["crop_width"], config["resample"]) == (224, 224, 224, "bicubic")
    assert config["image_mean"] == [0.48145466, 0.4578275, 0.40821073]
    assert config["image_std"] == [0.26862954, 0.26130258, 0.27577711]
    assert (config["projection_dim"], config["text_hidden_size"]) == (32, 32)


def test_clip_scorer_graph_computes_clip_features(standin, clip_export):
    """Independent of the exporter's own check: new inputs, ONNX Runtime against CLIPModel."""
    from transformers import CLIPModel

    out, folder, _ = clip_export
    clip = CLIPModel.from_pretrained(str(folder)).eval()
    te = fresh_pipeline(standin["pipeline"]).text_encoder
    gen = torch.Generator().manual_seed(21)
    pixels = torch.randn(3, 3, 224, 224, generator=gen)
    ids = torch.full((1, 77), 49407, dtype=torch.int64)
    ids[0, :6] = torch.tensor([49406, 320, 2292, 525, 320, 49407])
    with torch.no_grad():
        pooled = te(input_ids=ids).pooler_output
        img_ref = clip.get_image_features(pixel_values=pixels).pooler_output.numpy()
        txt_ref = clip.get_text_features(input_ids=ids).pooler_output.numpy()
    img, txt = session(out / "clip_image_encoder" / "model.onnx").run(None, {"pixel_values": pixels.numpy(), "text_pooled": pooled.numpy()})
    assert img.shape == (3, 32) and txt.shape == (1, 32)
    assert np.abs(img - img_ref).max() < FUSED_TOL
    assert np.abs(txt - txt_ref).max() < FUSED_TOL


def test_models_verify_runs_the_clip_scorer(clip_export):
    out, _, _ = clip_export
    proc = run_speedscape("models", "verify", str(out), "--device", "cpu", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sessions = {s["folder"]: s for s in json.loads(proc.stdout)["sessions"]}
    assert sessions["clip_image_encoder"]["passed"], sessions
    assert "CLIP score" in sessions["clip_image_encoder"]["detail"]


@pytest.mark.parametrize("perturb", ["encoder.layers.0.mlp.fc1.weight", "final_layer_norm.bias"])
def test_clip_scorer_of_another_text_encoder_is_refused(standin, tmp_path, perturb):
    te = fresh_pipeline(standin["pipeline"]).text_encoder
    folder = write_clip(tmp_path / "clip", te, perturb=perturb)
    out = tmp_path / "o"
    proc = run_export("--out", str(out), "--model", str(standin["pipeline"]), "--no-variants", "--clip-scorer", str(folder), check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "its text tower is not this pipeline's text encoder" in proc.stderr, proc.stderr
    assert perturb in proc.stderr and "max abs difference 1.000e-03" in proc.stderr, proc.stderr
    assert "Fix: pass the CLIP model of this pipeline's text encoder" in proc.stderr
    assert not out.exists() and not out.with_name("o.partial").exists()
    # Refused before any component was exported.
    assert "[1/" not in proc.stdout


def test_clip_scorer_with_another_text_architecture_is_refused(standin, tmp_path):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = dict(make_tiny.TEXT_ENCODER_CONFIG, num_hidden_layers=2)
    make_tiny.set_determinism()
    other = CLIPTextModel(CLIPTextConfig(**config)).eval()
    folder = write_clip(tmp_path / "clip", other)
    proc = run_export("--out", str(tmp_path / "o"), "--model", str(standin["pipeline"]), "--no-variants", "--clip-scorer", str(folder), check=False)
    assert proc.returncode == 2
    assert "num_hidden_layers: 2 vs" in proc.stderr, proc.stderr


def test_clip_scorer_option_defaults_to_openai_vit_l14():
    args = export.parse_args(["--out", "x", "--clip-scorer"])
    assert args.clip_scorer == "openai/clip-vit-large-patch14"
    assert export.parse_args(["--out", "x"]).clip_scorer is None
    assert export.parse_args(["--out", "x", "--clip-scorer", "some/clip"]).clip_scorer == "some/clip"
