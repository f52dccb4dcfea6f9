"""Tests of models/export.py's ControlNet export (issue 20) on local stand-ins (no network): the
random-init tiny SD pipeline of models/make_standin.py, its random-init tiny ControlNetModel
(`ControlNetModel.from_unet` with the zero convolutions made non-zero) and its peft-format LoRA
as an LCM-LoRA stand-in.

- the export: controlnet_edge/ recorded in the manifest, every UNet with the residual inputs, the
  ControlNet graph equal to ControlNetModel.forward (scales 1.0 and 0.5) and the residual UNets
  equal to UNet2DConditionModel with those residuals, all on fresh inputs;
- held out (the issue's "Done when"): `speedscape generate --controlnet edge --control-image ...`
  equals diffusers' StableDiffusionControlNetPipeline (same seed, torch CPU generator) within 2e-3
  for DPM-Solver++ and LCM-LoRA, at scales 1.0 and 0.5, with a control image of the generation
  size and one PIL's Lanczos resizes (these need the speedscape binary: SPEEDSCAPE_BIN);
- without --controlnet the UNets stay plain; bad --controlnet input is refused before anything is
  exported, naming the cause and the fix.

Run with the reference venv (models/requirements.txt).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
sys.path.insert(0, str(MODELS))

import export  # noqa: E402
import make_standin  # noqa: E402
import make_tiny  # noqa: E402
from diffusers import (  # noqa: E402
    ControlNetModel,
    DPMSolverMultistepScheduler,
    LCMScheduler,
    StableDiffusionControlNetPipeline,
)

FUSED_TOL = 1e-4  # ONNX Runtime vs torch, float32 (as test_export.py)
IMAGE_TOL = 2e-3  # speedscape vs diffusers, max abs on [0, 1] pixels (the bound)
PROMPT = "a red circle and a blue square on a grey table"
# The tiny stand-in: 4 down-block residuals (conv_in, block 0's resnet and downsampler, block 1's
# resnet) + the mid block's; generation at 64x64 (latent 8x8, VAE scale factor 8).
N_RESIDUALS = 4
SIZE = 64


def speedscape_bin() -> Path:
    path = Path(os.environ.get("SPEEDSCAPE_BIN", ROOT / "target" / "debug" / "speedscape"))
    if not path.is_file():
        pytest.fail(f"speedscape binary not found at {path}: run `cargo build` or ./test.sh (which sets SPEEDSCAPE_BIN)")
    return path


def run_speedscape(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(speedscape_bin()), *args], capture_output=True, text=True, cwd=ROOT)


def export_in_process(capsys, *argv: str) -> tuple[int, str, str]:
    """models/export.py's main() here (the CLI's code path without a second interpreter start)."""
    code = export.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def input_names(path: Path) -> list[str]:
    return [i.name for i in onnx.load(str(path), load_external_data=False).graph.input]


def residual_input_names() -> list[str]:
    return [f"down_block_additional_residual_{i}" for i in range(N_RESIDUALS)] + ["mid_block_additional_residual"]


def residual_output_names() -> list[str]:
    return [f"down_block_res_sample_{i}" for i in range(N_RESIDUALS)] + ["mid_block_res_sample"]


def draw_control(width: int, height: int) -> Image.Image:
    """A control image: a grey gradient with a white ring, a coloured bar and a diagonal line
    (sharp edges and smooth ramps, so a resize has something to get wrong)."""
    x = np.linspace(0, 1, width)[None, :, None]
    y = np.linspace(0, 1, height)[:, None, None]
    base = (40 + 120 * x * y + np.zeros((height, width, 3))).astype(np.uint8)
    img = Image.fromarray(base, "RGB")
    d = ImageDraw.Draw(img)
    d.ellipse([width * 0.15, height * 0.2, width * 0.6, height * 0.7], outline=(255, 255, 255), width=3)
    d.rectangle([width * 0.55, height * 0.1, width * 0.85, height * 0.3], fill=(230, 60, 20))
    d.line([0, height - 1, width - 1, height * 0.4], fill=(20, 200, 240), width=2)
    return img


# --- fixtures (module scope: one stand-in, one export) ------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(min(2, before))
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def standin(tmp_path_factory) -> dict[str, Path]:
    return make_standin.write(tmp_path_factory.mktemp("standin"), "tiny", controlnet=True)


@pytest.fixture(scope="module")
def exported(standin, tmp_path_factory) -> Path:
    """Base UNet + an LCM-LoRA-like fused variant (`unet_lcm`) + the ControlNet, through the CLI."""
    out = tmp_path_factory.mktemp("export") / "sd"
    proc = subprocess.run(
        [sys.executable, str(MODELS / "export.py"), "--out", str(out), "--model", str(standin["pipeline"]),
         "--lora", f"lcm={standin['peft']}", "--variant", "lcm=lcm:1.0", "--controlnet", f"edge={standin['controlnet']}"],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"},
    )
    if proc.returncode != 0:
        pytest.fail(f"export failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return out


@pytest.fixture(scope="module")
def controlnet(standin) -> ControlNetModel:
    return ControlNetModel.from_pretrained(str(standin["controlnet"])).eval()


@pytest.fixture(scope="module")
def control_images(tmp_path_factory) -> dict[str, Path]:
    """"exact": the generation size; "resized": 80x72, which the pipeline resizes with Lanczos."""
    folder = tmp_path_factory.mktemp("control")
    paths = {}
    for name, (w, h) in (("exact", (SIZE, SIZE)), ("resized", (80, 72))):
        paths[name] = folder / f"{name}.png"
        draw_control(w, h).save(paths[name])
    return paths


@pytest.fixture(scope="module")
def fresh_inputs():
    """Inputs none of the exporter's own checks used: a guided step's batch of 2."""
    gen = torch.Generator().manual_seed(31)
    x = torch.randn(2, 4, 8, 8, generator=gen)
    e = torch.randn(2, 77, 32, generator=gen)
    cond = torch.rand(2, 3, SIZE, SIZE, generator=gen)
    return x, torch.tensor(421.0), e, cond


def ort_controlnet(out: Path, x, t, e, cond, scale: float) -> list[np.ndarray]:
    return session(out / "controlnet_edge" / "model.onnx").run(None, {
        "sample": x.numpy(), "timestep": t.numpy(), "encoder_hidden_states": e.numpy(),
        "controlnet_cond": cond.numpy(), "conditioning_scale": np.array(scale, dtype=np.float32),
    })


def torch_unet(standin, lora: bool):
    """The stand-in's UNet, with the LCM stand-in LoRA fused as export.py fuses it when `lora`."""
    make_tiny.set_determinism()
    torch.set_num_threads(2)
    pipe = export.load_pipeline(standin["pipeline"])
    if lora:
        pipe.load_lora_weights(str(standin["peft"].parent), weight_name=standin["peft"].name, adapter_name="lcm")
        pipe.set_adapters(["lcm"], adapter_weights=[1.0])
        pipe.fuse_lora(components=["unet"], lora_scale=1.0)
    return pipe.unet


# --- the export ---------------------------------------------------------------------------------


def test_manifest_records_the_controlnet_its_files_and_residuals(standin, exported):
    manifest = json.loads((exported / "manifest.json").read_text())
    rec = manifest["controlnets"]["edge"]
    assert rec["folder"] == "controlnet_edge" and rec["kind"] == "folder" and rec["revision"] is None
    assert rec["residuals"] == N_RESIDUALS
    assert rec["residual_channels"] == [32, 32, 32, 64, 64] and rec["residual_downsampling"] == [1, 1, 2, 2, 2]
    assert rec["conditioning_channels"] == 3 and rec["cross_attention_dim"] == 32 and rec["block_out_channels"] == [32, 64]
    assert rec["conditioning_embedding_out_channels"] == [8, 8, 16, 16]  # 3 stride-2 convs: VAE scale factor 8
    # Provenance: the source files' hashes.
    for name in ("config.json", "diffusion_pytorch_model.safetensors"):
        assert rec["sha256"][name] == sha256(standin["controlnet"] / name), name
    # The folder is in the file table like every component, hashes and sizes matching the files.
    folder_files = {rel for rel in manifest["files"] if rel.startswith("controlnet_edge/")}
    assert {"controlnet_edge/model.onnx", "controlnet_edge/config.json"} <= folder_files
    for rel in folder_files:
        assert manifest["files"][rel]["sha256"] == sha256(exported / rel), rel
        assert manifest["files"][rel]["bytes"] == (exported / rel).stat().st_size, rel
    assert (exported / "controlnet_edge" / "config.json").read_bytes() == (standin["controlnet"] / "config.json").read_bytes()
    comp = manifest["components"]["controlnet_edge"]
    assert comp["kind"] == "controlnet" and comp["dtype"] == "fp32"
    assert comp["check"]["passed"] and comp["check"]["max_abs_err"] < FUSED_TOL
    # Every UNet record says how many residuals it takes.
    for variant in manifest["variants"].values():
        assert manifest["components"][variant["unet"]]["controlnet_residuals"] == N_RESIDUALS, variant


def test_every_unet_takes_the_controlnet_outputs_as_residual_inputs(exported):
    manifest = json.loads((exported / "manifest.json").read_text())
    unets = sorted({v["unet"] for v in manifest["variants"].values()})
    assert unets == ["unet", "unet_lcm"]
    cn_outputs = [o.name for o in onnx.load(str(exported / "controlnet_edge" / "model.onnx"), load_external_data=False).graph.output]
    assert cn_outputs == residual_output_names()
    for folder in unets:
        assert input_names(exported / folder / "model.onnx") == ["sample", "timestep", "encoder_hidden_states", *residual_input_names()], folder


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_controlnet_graph_equals_controlnet_model_forward(exported, controlnet, fresh_inputs, scale):
    x, t, e, cond = fresh_inputs
    with torch.no_grad():
        down, mid = controlnet(x, t, e, controlnet_cond=cond, conditioning_scale=scale, guess_mode=False, return_dict=False)
    refs = [r.numpy() for r in (*down, mid)]
    got = ort_controlnet(exported, x, t, e, cond, scale)
    assert len(got) == len(refs) == N_RESIDUALS + 1
    for i, (g, r) in enumerate(zip(got, refs)):
        assert g.shape == r.shape, i
        assert np.abs(g - r).max() < FUSED_TOL, (i, np.abs(g - r).max())


def test_standin_control_image_changes_the_residuals(exported, fresh_inputs):
    """The stand-in's zero convolutions are non-zero: another control image gives other residuals
    (far beyond the export error), and scale 0.5 halves them."""
    x, t, e, cond = fresh_inputs
    one = ort_controlnet(exported, x, t, e, cond, 1.0)
    other = ort_controlnet(exported, x, t, e, torch.flip(cond, dims=[2]), 1.0)
    half = ort_controlnet(exported, x, t, e, cond, 0.5)
    for a, b, h in zip(one, other, half):
        assert np.abs(a - b).max() > 100 * FUSED_TOL
        np.testing.assert_allclose(h, 0.5 * a, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("folder, lora", [("unet", False), ("unet_lcm", True)])
def test_residual_unets_equal_torch_with_those_residuals(standin, exported, controlnet, fresh_inputs, folder, lora):
    """The ControlNet graph's residuals (scales 1.0 and 0.5) fed to each UNet graph give what
    UNet2DConditionModel gives with the ControlNetModel's residuals; zero residuals give the plain UNet."""
    x, t, e, cond = fresh_inputs
    unet = torch_unet(standin, lora)
    sess = session(exported / folder / "model.onnx")
    plain_feeds = {"sample": x.numpy(), "timestep": t.numpy(), "encoder_hidden_states": e.numpy()}
    for scale in (1.0, 0.5):
        residuals = ort_controlnet(exported, x, t, e, cond, scale)
        with torch.no_grad():
            down, mid = controlnet(x, t, e, controlnet_cond=cond, conditioning_scale=scale, guess_mode=False, return_dict=False)
            ref = unet(x, t, e, down_block_additional_residuals=tuple(down), mid_block_additional_residual=mid, return_dict=False)[0].numpy()
        got = sess.run(None, {**plain_feeds, **dict(zip(residual_input_names(), residuals))})[0]
        assert np.abs(got - ref).max() < FUSED_TOL, (folder, scale, np.abs(got - ref).max())
    with torch.no_grad():
        plain = unet(x, t, e, return_dict=False)[0].numpy()
        with_control = ref
    zeros = {n: np.zeros_like(r) for n, r in zip(residual_input_names(), residuals)}
    got = sess.run(None, {**plain_feeds, **zeros})[0]
    assert np.abs(got - plain).max() < FUSED_TOL, folder
    assert np.abs(with_control - plain).max() > 100 * FUSED_TOL, "the residuals change the UNet's output"


def test_fp16_cuda_optimized_controlnet_and_residual_unet(standin, controlnet, tmp_path):
    """What an `--dtype fp16 --optimize cuda` export does to these two graphs (export_component, as
    the CLI runs it): the ControlNet gets the UNet's fusions, float16 inputs (the scale too) and
    outputs; the UNet's residual inputs are float16; both pass the exporter's check against torch
    (the ControlNet's on the same weights unfused: CPU has no kernels for the fused operators)."""
    settings = export.Settings(dtype="fp16", optimize="cuda", check_threads=1)
    cn_rec = export.export_component(export.controlnet_spec(controlnet, 8, 8), tmp_path / "controlnet_edge", settings)
    assert cn_rec["dtype"] == "fp16" and cn_rec["check"]["passed"], cn_rec
    fused = cn_rec["optimizations"][0]["fused_operators"]
    for op in ("MultiHeadAttention", "GroupNorm", "BiasSplitGelu"):
        assert fused.get(op, 0) > 0, (op, fused)
    assert "fusion_warning" not in cn_rec
    f16 = onnx.TensorProto.FLOAT16
    cn = onnx.load(str(tmp_path / "controlnet_edge" / "model.onnx"), load_external_data=False).graph
    assert {i.name: i.type.tensor_type.elem_type for i in cn.input} == {
        "sample": f16, "timestep": f16, "encoder_hidden_states": f16, "controlnet_cond": f16, "conditioning_scale": f16,
    }
    assert [o.name for o in cn.output] == residual_output_names()
    assert all(o.type.tensor_type.elem_type == f16 for o in cn.output)
    unet_rec = export.export_component(export.unet_spec(torch_unet(standin, lora=False), residuals=True), tmp_path / "unet",
                                       export.Settings(dtype="fp16", check_threads=1))
    assert unet_rec["dtype"] == "fp16" and unet_rec["check"]["passed"], unet_rec
    unet = onnx.load(str(tmp_path / "unet" / "model.onnx"), load_external_data=False).graph
    types = {i.name: i.type.tensor_type.elem_type for i in unet.input}
    assert [i.name for i in unet.input][3:] == residual_input_names()
    assert all(types[n] == f16 for n in residual_input_names())


def test_export_without_controlnet_keeps_plain_unets(standin, tmp_path, capsys):
    out = tmp_path / "plain"
    code, stdout, stderr = export_in_process(
        capsys, "--out", str(out), "--model", str(standin["pipeline"]), "--lora", f"lcm={standin['peft']}",
        "--variant", "lcm=lcm:1.0", "--no-verify",
    )
    assert code == 0, stdout + stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert "controlnets" not in manifest
    assert not any(p.name.startswith("controlnet") for p in out.iterdir())
    for folder in ("unet", "unet_lcm"):
        assert input_names(out / folder / "model.onnx") == ["sample", "timestep", "encoder_hidden_states"], folder
        assert "controlnet_residuals" not in manifest["components"][folder]


# --- held out: speedscape against diffusers' StableDiffusionControlNetPipeline (needs the binary)


@pytest.fixture(scope="module")
def reference_pipes(standin, controlnet):
    """diffusers' StableDiffusionControlNetPipeline by scheduler, each loaded once: "dpmpp"
    (DPM-Solver++, 10 steps, cfg 7.5) and "lcm" (the LCM stand-in LoRA loaded with
    load_lora_weights, LCMScheduler, 4 steps, cfg 1.5)."""
    cache = {}

    def get(scheduler: str):
        if scheduler not in cache:
            make_tiny.set_determinism()
            torch.set_num_threads(2)
            pipe = StableDiffusionControlNetPipeline.from_pretrained(
                str(standin["pipeline"]), controlnet=controlnet, dtype=torch.float32,
                safety_checker=None, feature_extractor=None, requires_safety_checker=False,
            )
            pipe.set_progress_bar_config(disable=True)
            if scheduler == "lcm":
                pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
                pipe.load_lora_weights(str(standin["peft"].parent), weight_name=standin["peft"].name, adapter_name="lcm")
            else:
                pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
            cache[scheduler] = pipe
        return cache[scheduler]

    return get


def diffusers_image(reference_pipes, scheduler: str, control: Path, scale: float) -> np.ndarray:
    steps, cfg = (4, 1.5) if scheduler == "lcm" else (10, 7.5)
    return reference_pipes(scheduler)(
        PROMPT, image=Image.open(control), num_inference_steps=steps, guidance_scale=cfg, height=SIZE, width=SIZE,
        controlnet_conditioning_scale=scale, generator=torch.Generator("cpu").manual_seed(42), output_type="np",
    ).images


def test_standin_control_changes_the_diffusers_image(reference_pipes, control_images):
    """What the held-out check compares is worth comparing: the control visibly moves the image."""
    full = diffusers_image(reference_pipes, "dpmpp", control_images["exact"], 1.0)
    none = diffusers_image(reference_pipes, "dpmpp", control_images["exact"], 0.0)
    diff = np.abs(full - none)
    assert diff.max() > 0.05 and diff.mean() > 0.005, (diff.max(), diff.mean())


@pytest.mark.parametrize(
    "scheduler, scale, control",
    [("dpmpp", 1.0, "exact"), ("dpmpp", 0.5, "resized"), ("lcm", 1.0, "resized"), ("lcm", 0.5, "exact")],
)
def test_speedscape_with_controlnet_matches_diffusers(exported, reference_pipes, control_images, tmp_path, scheduler, scale, control):
    raw = tmp_path / "image.npy"
    args = ["--scheduler", "dpmpp", "--steps", "10", "--cfg", "7.5"]
    if scheduler == "lcm":
        args = ["--unet", "lcm", "--scheduler", "lcm", "--steps", "4", "--cfg", "1.5"]
    proc = run_speedscape(
        "generate", "--model-dir", str(exported), "--prompt", PROMPT, *args,
        "--controlnet", "edge", "--control-image", str(control_images[control]), "--control-scale", str(scale),
        "--seed", "42", "--device", "cpu", "--rng", "torch-cpu", "--out", str(tmp_path / "image.png"), "--save-raw", str(raw),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = np.load(raw)
    ref = diffusers_image(reference_pipes, scheduler, control_images[control], scale)
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() < IMAGE_TOL, np.abs(got - ref).max()


# --- bad input: a clear error naming cause and fix; nothing half-written ------------------------


def other_base_controlnet(standin_controlnet: Path, folder: Path, **changes) -> Path:
    """A random ControlNetModel folder of another base: the stand-in's config with `changes`."""
    config = {k: v for k, v in ControlNetModel.load_config(str(standin_controlnet)).items() if not k.startswith("_")}
    torch.manual_seed(0)
    ControlNetModel(**{**config, **changes}).save_pretrained(str(folder), safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def refusal_setup(standin, tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("refusals")
    not_cn = tmp / "not_cn"
    not_cn.mkdir()
    (not_cn / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    edge = standin["controlnet"]
    return {
        "sd2": other_base_controlnet(edge, tmp / "sd2", cross_attention_dim=1024),  # SD 2.x's text width
        "narrow": other_base_controlnet(edge, tmp / "narrow", block_out_channels=[32, 32]),
        "scale4": other_base_controlnet(edge, tmp / "scale4", conditioning_embedding_out_channels=[8, 8, 16]),
        "not_cn": not_cn,
        "pipeline": standin["pipeline"],
        "edge": edge,
    }


@pytest.mark.parametrize(
    "controlnet_args, messages",
    [
        (["sd2={sd2}"], ["was made for another base model", "cross_attention_dim 1024 (ControlNet) vs 32 (this model's UNet)",
                         "Fix: pass a ControlNet trained for this base model"]),
        (["narrow={narrow}"], ["block_out_channels [32, 32] (ControlNet) vs [32, 64] (this model's UNet)",
                               "channels [32, 32, 32, 32, 32] (ControlNet) vs 4 + mid, channels [32, 32, 32, 64, 64]"]),
        (["s4={scale4}"], ["conditioning embedding downsampling x4", "VAE scale factor 8"]),
        (["Edge={edge}"], ["the name 'Edge' is not lower-case letters, digits or _", "Fix: e.g. --controlnet canny="]),
        (["edge={edge}", "edge={sd2}"], ["the name 'edge' is already used", "Fix: give each ControlNet its own name"]),
        (["edge=/nonexistent/controlnet"], ["is neither a folder nor a hub id", "Fix: pass a ControlNetModel folder"]),
        (["edge={not_cn}"], ["holds a UNet2DConditionModel, not a ControlNetModel", "Fix:"]),
        (["edge={pipeline}"], ["not a diffusers ControlNetModel folder (no config.json)", "Fix: pass a folder saved by"]),
        (["edge"], ["expected NAME=SOURCE", "Fix:"]),
    ],
)
def test_bad_controlnet_is_refused_before_any_export(refusal_setup, tmp_path, capsys, controlnet_args, messages):
    args = [a for spec in controlnet_args for a in ("--controlnet", spec.format(**refusal_setup))]
    out = tmp_path / "o"
    code, stdout, stderr = export_in_process(capsys, "--out", str(out), "--model", str(refusal_setup["pipeline"]), "--no-variants", *args)
    assert code == 2, stdout + stderr
    for message in messages:
        assert message in stderr, stderr
    assert not out.exists() and not out.with_name("o.partial").exists()
    assert "[1/" not in stdout, "refused before any component was exported"


# --- bad input at run time: what the export refuses, speedscape refuses too (needs the binary) ---


def generate_under_control(model: Path, controlnet: str, control: Path, out: Path) -> subprocess.CompletedProcess:
    return run_speedscape(
        "generate", "--model-dir", str(model), "--prompt", PROMPT, "--scheduler", "dpmpp", "--steps", "2", "--cfg", "7.5",
        "--seed", "1", "--controlnet", controlnet,
        "--control-image", str(control), "--device", "cpu", "--out", str(out),
    )


def test_a_unet_without_residual_inputs_is_refused_under_control(standin, exported, control_images, tmp_path, capsys):
    """A model exported without --controlnet, given a ControlNet folder afterwards: its UNet takes no
    residuals, and the message says to re-export with --controlnet."""
    plain = tmp_path / "plain"
    code, stdout, stderr = export_in_process(
        capsys, "--out", str(plain), "--model", str(standin["pipeline"]), "--no-variants", "--no-verify",
    )
    assert code == 0, stdout + stderr
    import shutil

    shutil.copytree(exported / "controlnet_edge", plain / "controlnet_edge")
    out = tmp_path / "image.png"
    proc = generate_under_control(plain, "edge", control_images["exact"], out)
    assert proc.returncode != 0
    assert "takes no ControlNet residuals" in proc.stderr, proc.stderr
    assert "Fix:" in proc.stderr and "--controlnet" in proc.stderr.split("Fix:")[1], proc.stderr
    assert not out.exists()


def test_a_controlnet_of_another_base_is_refused_at_run_time_naming_both_widths(standin, exported, control_images, tmp_path):
    """An SD 2-style ControlNet (1024-wide text) dropped into a folder of the tiny model (32-wide):
    the export would refuse it; a folder assembled by hand is refused when the run starts, naming
    both text widths."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(exported, model)
    sd2 = other_base_controlnet(standin["controlnet"], tmp_path / "sd2_src", cross_attention_dim=1024)
    cn = ControlNetModel.from_pretrained(str(sd2)).eval()
    spec = export.controlnet_spec(cn, cn.config.get("sample_size") or 8, 8)
    export.export_component(spec, model / "controlnet_sd2", export.Settings(verify=False))
    out = tmp_path / "image.png"
    proc = generate_under_control(model, "sd2", control_images["exact"], out)
    assert proc.returncode != 0
    assert "1024" in proc.stderr and "32" in proc.stderr and "another base" in proc.stderr, proc.stderr
    assert "Fix:" in proc.stderr
    assert not out.exists()
