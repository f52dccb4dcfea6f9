"""Tests of models/export.py's preview decoder export (issue 25) on local stand-ins (no network):
the random-init tiny SD pipeline of models/make_standin.py and its random-init AutoencoderTiny
with TAESD's architecture (`make_standin.random_preview_decoder`: TAESD's (3, 3, 3, 1) decoder
blocks and x8 upsampling, 8 channels instead of 64), saved as a diffusers folder.

- the export (`--model <tiny sd> --no-variants --preview-decoder DIR`): preview_decoder/ recorded
  in the manifest (kind, architecture, source, params, hashes, file table), the contract's graph
  (latents [B, 4, h, w] -> image [B, 3, 8h, 8w]);
- parity: the ONNX graph against diffusers' own AutoencoderTiny decode in the pipeline
  convention (decode(latents / scaling_factor), then (x + 1) / 2 clamped to [0, 1]) on seeded
  latents, max abs <= 1e-4 in fp32; an fp16 export has fp16 inputs and outputs and passes the
  exporter's check;
- bad --preview-decoder input is refused before anything is exported, naming the cause and the
  fix: not an AutoencoderTiny, a pipeline folder, other latent channels, another upsampling, a
  tiny autoencoder of another latent space (TAESDXL), a hub id while offline.

Run with the reference venv (models/requirements.txt).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
sys.path.insert(0, str(MODELS))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import export  # noqa: E402
import make_standin  # noqa: E402
from diffusers import AutoencoderTiny  # noqa: E402
from test_controlnet import export_in_process, session, sha256, two_threads  # noqa: E402, F401  (shared helpers, fixture)

PARITY_TOL = 1e-4  # ONNX Runtime vs torch, float32, on [0, 1] pixels
SCALE = 8  # the tiny stand-in's VAE scale factor


@pytest.fixture(scope="module")
def standin(tmp_path_factory) -> dict[str, Path]:
    return make_standin.write(tmp_path_factory.mktemp("standin"), "tiny", preview_decoder=True)


@pytest.fixture(scope="module")
def exported(standin, tmp_path_factory) -> Path:
    """The base model and the preview decoder, through the CLI (as a user runs it)."""
    out = tmp_path_factory.mktemp("export") / "sd"
    proc = subprocess.run(
        [sys.executable, str(MODELS / "export.py"), "--out", str(out), "--model", str(standin["pipeline"]), "--no-variants",
         "--preview-decoder", str(standin["preview_decoder"])],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"},
    )
    if proc.returncode != 0:
        pytest.fail(f"export failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return out


@pytest.fixture(scope="module")
def tiny(standin) -> AutoencoderTiny:
    return AutoencoderTiny.from_pretrained(str(standin["preview_decoder"])).eval()


def diffusers_preview(tiny: AutoencoderTiny, latents: torch.Tensor) -> np.ndarray:
    """What diffusers' pipeline does with a tiny VAE, mapped to [0, 1]: decode(latents / scaling_factor),
    then VaeImageProcessor's (x / 2 + 0.5).clamp(0, 1)."""
    with torch.no_grad():
        image = tiny.decode(latents / tiny.config.scaling_factor, return_dict=False)[0]
    return (image / 2 + 0.5).clamp(0, 1).numpy()


def test_the_stand_in_has_taesds_architecture(standin, tiny):
    assert json.loads((standin["preview_decoder"] / "config.json").read_text())["_class_name"] == "AutoencoderTiny"
    c = tiny.config
    assert list(c.num_decoder_blocks) == [3, 3, 3, 1] and list(c.num_encoder_blocks) == [1, 3, 3, 3]
    assert c.upsampling_scaling_factor == 2 and c.upsample_fn == "nearest" and c.act_fn == "relu"
    assert c.latent_channels == 4 and c.scaling_factor == 1.0


def test_manifest_records_the_preview_decoder_its_source_and_files(standin, exported):
    manifest = json.loads((exported / "manifest.json").read_text())
    rec = manifest["components"]["preview_decoder"]
    assert rec["kind"] == "preview_decoder" and rec["dtype"] == "fp32"
    assert rec["architecture"] == "taesd" and rec["source_kind"] == "folder" and rec["revision"] is None
    assert rec["source"] == str(standin["preview_decoder"].resolve())
    assert rec["params"] == sum(p.numel() for p in AutoencoderTiny.from_pretrained(str(standin["preview_decoder"])).decoder.parameters())
    assert rec["latent_channels"] == 4 and rec["scale_factor"] == SCALE and rec["scaling_factor"] == 1.0
    for name in ("config.json", "diffusion_pytorch_model.safetensors"):
        assert rec["source_sha256"][name] == sha256(standin["preview_decoder"] / name), name
    assert rec["check"]["passed"] and rec["check"]["max_abs_err"] < PARITY_TOL
    folder_files = {rel for rel in manifest["files"] if rel.startswith("preview_decoder/")}
    assert folder_files == {"preview_decoder/model.onnx", "preview_decoder/config.json"}, "weights inside the graph file"
    for rel in folder_files:
        assert manifest["files"][rel]["sha256"] == sha256(exported / rel), rel
    # The other components are as an export without --preview-decoder writes them.
    assert [k for k in manifest["components"]] == ["text_encoder", "unet", "vae_decoder", "preview_decoder"]


def test_graph_follows_the_contract(exported):
    graph = onnx.load(str(exported / "preview_decoder" / "model.onnx")).graph
    f32 = onnx.TensorProto.FLOAT
    assert [(i.name, i.type.tensor_type.elem_type) for i in graph.input] == [("latents", f32)]
    assert [(o.name, o.type.tensor_type.elem_type) for o in graph.output] == [("image", f32)]
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch_size", 4, "height_latent", "width_latent"]
    got = session(exported / "preview_decoder" / "model.onnx").run(None, {"latents": np.zeros((3, 4, 5, 7), np.float32)})[0]
    assert got.shape == (3, 3, 5 * SCALE, 7 * SCALE)


@pytest.mark.parametrize("shape", [(2, 4, 8, 8), (1, 4, 6, 10)])
def test_graph_equals_diffusers_autoencoder_tiny_decode(exported, tiny, shape):
    """Seeded latents like a step's x0 (N(0, 1.5^2): some beyond DecoderTiny's soft clamp at
    +-3), at the native latent size with a batch and at a non-square one."""
    latents = torch.randn(*shape, generator=torch.Generator().manual_seed(2025)) * 1.5
    ref = diffusers_preview(tiny, latents)
    got = session(exported / "preview_decoder" / "model.onnx").run(None, {"latents": latents.numpy()})[0]
    assert got.shape == ref.shape == (shape[0], 3, shape[2] * SCALE, shape[3] * SCALE)
    assert got.min() >= 0.0 and got.max() <= 1.0
    inside = float(((ref > 0) & (ref < 1)).mean())
    assert inside > 0.9, f"only {inside:.2f} of the reference pixels are unclamped: the comparison would see little"
    assert np.abs(got - ref).max() <= PARITY_TOL, np.abs(got - ref).max()


def test_fp16_export_has_fp16_io_and_passes_the_check(tiny, tmp_path):
    rec = export.export_component(export.preview_decoder_spec(tiny, 8), tmp_path / "preview_decoder",
                                  export.Settings(dtype="fp16", check_threads=1))
    assert rec["dtype"] == "fp16" and rec["check"]["passed"], rec
    graph = onnx.load(str(tmp_path / "preview_decoder" / "model.onnx")).graph
    f16 = onnx.TensorProto.FLOAT16
    assert [i.type.tensor_type.elem_type for i in graph.input] == [f16]
    assert [o.type.tensor_type.elem_type for o in graph.output] == [f16]


# --- bad input: a clear error naming cause and fix; nothing half-written ------------------------


def other_preview_decoder(folder: Path, latent_channels: int = 4, scale: int = SCALE) -> Path:
    make_standin.random_preview_decoder(latent_channels, scale, 8).save_pretrained(str(folder), safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def refusal_setup(standin, tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("refusals")
    return {
        "vae": standin["pipeline"] / "vae",  # an AutoencoderKL folder
        "pipeline": standin["pipeline"],
        "sd3": other_preview_decoder(tmp / "sixteen", latent_channels=16),  # TAESD3 / TAEF1's 16 channels
        "x4": other_preview_decoder(tmp / "x4", scale=4),
        "taesdxl": other_preview_decoder(tmp / "taesdxl"),  # SDXL's latent space, same shapes
    }


@pytest.mark.parametrize(
    "source, messages",
    [
        ("{vae}", ["holds a AutoencoderKL, not an AutoencoderTiny (TAESD)", "Fix: pass a diffusers AutoencoderTiny folder"]),
        ("{pipeline}", ["is a pipeline folder, not an AutoencoderTiny folder", "Fix: pass an AutoencoderTiny folder"]),
        ("{sd3}", ["was made for another model: 16 latent channels (preview decoder) vs 4 (this model's UNet)",
                   "Fix: pass the tiny autoencoder made for this model's latent space (SD v1.x: madebyollin/taesd)"]),
        ("{x4}", ["upsampling x4 (preview decoder) vs this model's VAE scale factor 8", "Fix:"]),
        ("{taesdxl}", ["made for SDXL's latent space, not SD v1.5's", "Fix: use SD v1.x's madebyollin/taesd"]),
        ("madebyollin/taesdxl", ["made for SDXL's latent space", "Fix: use SD v1.x's madebyollin/taesd"]),
        ("/nonexistent/taesd", ["neither a folder nor a hub id", "Fix: pass an AutoencoderTiny folder"]),
    ],
)
def test_bad_preview_decoder_is_refused_before_any_export(refusal_setup, tmp_path, capsys, source, messages):
    out = tmp_path / "o"
    code, stdout, stderr = export_in_process(capsys, "--out", str(out), "--model", str(refusal_setup["pipeline"]), "--no-variants",
                                             "--preview-decoder", source.format(**refusal_setup))
    assert code == 2, stdout + stderr
    for message in messages:
        assert message in stderr, stderr
    assert not out.exists() and not out.with_name("o.partial").exists()
    assert "[1/" not in stdout, "refused before any component was exported"


def test_a_hub_preview_decoder_while_offline_explains(standin, tmp_path):
    out = tmp_path / "o"
    proc = subprocess.run(
        [sys.executable, str(MODELS / "export.py"), "--out", str(out), "--model", str(standin["pipeline"]), "--no-variants",
         "--preview-decoder", "speedscape-tests/no-such-taesd"],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    cause, _, fix = proc.stderr.partition("\nFix: ")
    assert "--preview-decoder 'speedscape-tests/no-such-taesd': cannot download" in cause, proc.stderr
    assert "HF_HUB_OFFLINE is set" in cause, proc.stderr
    assert "save_pretrained(DIR)" in fix and "--preview-decoder DIR" in fix and "leave out --preview-decoder" in fix, proc.stderr
    assert not out.exists()
