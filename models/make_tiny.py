#!/usr/bin/env python
"""Generate speedscape's tiny random-weight Stable Diffusion v1.5 look-alike and export it to ONNX.

Reference environment: models/requirements.txt (torch 2.15.0 on CPU, diffusers 0.42.1,
transformers 5.23.0, peft 0.21.2, onnx 1.23.2, onnxruntime 1.31.1, safetensors 0.8.0).

    .venv-ref/bin/python models/make_tiny.py --out models/tiny

What it does (see models/tiny/README.md for the result):

1. builds a random-init `StableDiffusionPipeline` with SD v1.5's structure at toy size
   (`build_pipeline`): UNet2DConditionModel, AutoencoderKL with 4 levels (VAE scale factor 8),
   CLIPTextModel with the full 49408-token CLIP vocabulary, SD v1.5's PNDM scheduler config and
   SD v1.5's real CLIP tokenizer;
2. writes two random rank-4 LoRA adapters ("lcm", "style") on the UNet attention projections as
   diffusers/peft `.safetensors` LoRA files (`write_random_lora`);
3. exports text encoder, UNet (external data), VAE decoder and VAE encoder in the Hugging Face
   Optimum ONNX layout (`export_*`), and the UNet again with LoRAs loaded and fused the way a
   user's LoRA is (`fused_loras`): `load_lora_weights` -> `set_adapters` -> `fuse_lora` -> export ->
   `unfuse_lora` -> `unload_lora_weights`;
4. checks every exported model against torch with onnxruntime (CPU) and prints the max abs error.

Everything is deterministic: each component is initialised right after `torch.manual_seed(0)`, the
LoRA tensors come from their own seeded generators, torch runs single-threaded, and the TorchScript
ONNX exporter writes the same bytes on every run.

The functions here are meant to be reused by the real SD v1.5 exporter (models/export.py, later).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import re
import shutil
import struct
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", message=".*TracerWarning.*")
warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from diffusers import (  # noqa: E402
    AutoencoderKL,
    DDPMScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from diffusers.utils import logging as diffusers_logging  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer  # noqa: E402

diffusers_logging.set_verbosity_error()

HERE = Path(__file__).resolve().parent

OPSET = 17
# ONNX IR version 8 is what opset 17 was released with; ONNX Runtime >= 1.14 reads it.
IR_VERSION = 8

# SD v1.5's scheduler/scheduler_config.json, written verbatim (never re-saved by diffusers).
SD15_SCHEDULER_CONFIG = (
    '{"_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "beta_end": 0.012, '
    '"beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000, '
    '"set_alpha_to_one": false, "skip_prk_steps": true, "steps_offset": 1, "trained_betas": null, '
    '"clip_sample": false}'
)

TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "tokenizer_config.json",
    "README.md",  # provenance + the MIT licence notice of the CLIP BPE vocabulary
)

# Hyper-parameters of the tiny model. SD v1.5's values are in the comments.
UNET_CONFIG = dict(
    sample_size=8,  # SD: 64
    in_channels=4,
    out_channels=4,
    block_out_channels=(32, 64),  # SD: (320, 640, 1280, 1280)
    layers_per_block=1,  # SD: 2 (1 keeps models/tiny under ~25 MB with four UNets)
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),  # SD: 3x CrossAttn + DownBlock2D
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),  # SD: UpBlock2D + 3x CrossAttn
    mid_block_type="UNetMidBlock2DCrossAttn",
    cross_attention_dim=32,  # SD: 768
    attention_head_dim=8,  # SD: 8 (diffusers' legacy name: it is the number of heads)
    norm_num_groups=32,
)
VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,  # 4 levels -> VAE scale factor 2**3 = 8, as SD
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(8, 16, 16, 16),  # SD: (128, 256, 512, 512)
    layers_per_block=1,  # SD: 2
    norm_num_groups=4,  # SD: 32
    latent_channels=4,
    sample_size=64,  # SD: 512
    scaling_factor=0.18215,
)
TEXT_ENCODER_CONFIG = dict(
    vocab_size=49408,  # full CLIP vocabulary, so the real tokenizer works
    hidden_size=32,  # SD: 768 (= UNet cross_attention_dim)
    intermediate_size=37,  # SD: 3072 (37 as in diffusers' own dummy components)
    num_hidden_layers=5,  # SD: 12
    num_attention_heads=4,  # SD: 12
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=49407,
    projection_dim=32,
)

# UNet attention projections a LoRA adapter targets (attn1 = self, attn2 = cross attention).
LORA_TARGET_RE = re.compile(r"\.attn[12]\.(to_q|to_k|to_v|to_out\.0)$")


@dataclasses.dataclass(frozen=True)
class RandomLora:
    """A random LoRA adapter written by `write_random_lora`."""

    name: str
    seed: int
    rank: int = 4
    alpha: float = 4.0
    b_std: float = 0.2  # std of B * sqrt(rank); A has std 1/sqrt(in_features)
    write_metadata: bool = False  # store r/alpha as diffusers `lora_adapter_metadata`


@dataclasses.dataclass(frozen=True)
class LoraSpec:
    """One LoRA to load and fuse: a .safetensors file (or a folder + weight_name) and its weight."""

    path: str
    adapter_name: str
    weight: float = 1.0
    weight_name: str | None = None


# The tiny model's adapters. "style" has alpha 8 (scale alpha/r = 2) stored as metadata, "lcm" has
# no metadata (diffusers then assumes alpha = rank).
TINY_LORAS = (
    RandomLora(name="lcm", seed=1001, rank=4, alpha=4.0, write_metadata=False),
    RandomLora(name="style", seed=1002, rank=4, alpha=8.0, write_metadata=True),
)
# Fused UNet variants: folder name -> [(adapter, weight)]
TINY_UNET_VARIANTS = {
    "unet_lcm": [("lcm", 1.0)],
    "unet_style": [("style", 1.0)],
    "unet_lcm_style": [("lcm", 1.0), ("style", 1.0)],
}


def set_determinism() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)


# --------------------------------------------------------------------------------------------
# Model construction
# --------------------------------------------------------------------------------------------


def build_unet() -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel(**UNET_CONFIG).eval()


def build_vae() -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(**VAE_CONFIG).eval()


def build_text_encoder() -> CLIPTextModel:
    torch.manual_seed(0)
    config = CLIPTextConfig(**TEXT_ENCODER_CONFIG)
    config.architectures = ["CLIPTextModel"]
    return CLIPTextModel(config).eval()


def build_scheduler() -> PNDMScheduler:
    return PNDMScheduler.from_config(json.loads(SD15_SCHEDULER_CONFIG))


def default_tokenizer_dir() -> Path:
    committed = HERE / "tiny" / "tokenizer"
    if (committed / "tokenizer.json").is_file():
        return committed
    return Path("/work/shared/clip-tokenizer")


def build_pipeline(tokenizer_dir: str | os.PathLike | None = None) -> StableDiffusionPipeline:
    """The tiny pipeline, bit-identical on every call (same torch version)."""
    tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_dir or default_tokenizer_dir()))
    pipe = StableDiffusionPipeline(
        vae=build_vae(),
        text_encoder=build_text_encoder(),
        tokenizer=tokenizer,
        unet=build_unet(),
        scheduler=build_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


# --------------------------------------------------------------------------------------------
# LoRA files and fusing
# --------------------------------------------------------------------------------------------


def lora_target_modules(unet: torch.nn.Module) -> list[str]:
    names = [n for n, m in unet.named_modules() if LORA_TARGET_RE.search(n) and isinstance(m, torch.nn.Linear)]
    if not names:
        raise RuntimeError("no LoRA target modules found")
    return names


def random_lora_state_dict(unet: torch.nn.Module, spec: RandomLora) -> dict[str, torch.Tensor]:
    """peft-named LoRA tensors (`<module>.lora_A.weight` [r, in], `.lora_B.weight` [out, r])."""
    gen = torch.Generator().manual_seed(spec.seed)
    modules = dict(unet.named_modules())
    state = {}
    for name in lora_target_modules(unet):
        linear = modules[name]
        a = torch.randn(spec.rank, linear.in_features, generator=gen) / math.sqrt(linear.in_features)
        b = torch.randn(linear.out_features, spec.rank, generator=gen) * (spec.b_std / math.sqrt(spec.rank))
        state[f"{name}.lora_A.weight"] = a.contiguous()
        state[f"{name}.lora_B.weight"] = b.contiguous()
    return state


def write_random_lora(pipe: StableDiffusionPipeline, spec: RandomLora, out_dir: Path) -> Path:
    """Write `<out_dir>/<name>.safetensors` the way diffusers' LoRA training scripts save one."""
    state = random_lora_state_dict(pipe.unet, spec)
    metadata = None
    if spec.write_metadata:
        metadata = {
            "r": spec.rank,
            "lora_alpha": spec.alpha,
            "target_modules": lora_target_modules(pipe.unet),
        }
    elif spec.alpha != spec.rank:
        raise ValueError("without metadata diffusers assumes alpha == rank")
    StableDiffusionPipeline.save_lora_weights(
        save_directory=str(out_dir),
        unet_lora_layers=state,
        weight_name=f"{spec.name}.safetensors",
        safe_serialization=True,
        unet_lora_adapter_metadata=metadata,
    )
    path = out_dir / f"{spec.name}.safetensors"
    canonicalize_safetensors(path)
    return path


def canonicalize_safetensors(path: Path) -> None:
    """Rewrite a .safetensors header in a fixed order (same bytes on every run).

    safetensors stores `__metadata__` from a hash map, so with two or more metadata entries the
    header order changes between runs. Only the JSON header is rewritten (sorted metadata, tensors in
    data order, space padding to 8 bytes as safetensors does); the tensor bytes are untouched.
    """
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    ordered = {}
    meta = header.pop("__metadata__", None)
    if meta:
        ordered["__metadata__"] = dict(sorted(meta.items()))
    for key in sorted(header, key=lambda k: (header[k]["data_offsets"][0], k)):
        ordered[key] = header[key]
    blob = json.dumps(ordered, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)


def _peft_layers(pipe, components):
    from peft.tuners.tuners_utils import BaseTunerLayer

    for comp in components:
        model = getattr(pipe, comp, None)
        if model is None:
            continue
        for name, module in model.named_modules():
            if isinstance(module, BaseTunerLayer):
                yield comp, name, module


@contextlib.contextmanager
def fused_loras(pipe: StableDiffusionPipeline, loras: list[LoraSpec], components=("unet", "text_encoder")):
    """Load, weight and fuse LoRAs exactly as a user would; undo it (bit-exactly) on exit.

    Inside the block the pipeline's modules carry the fused weights (W + sum_i w_i * alpha_i/r_i *
    B_i A_i, computed by peft), so exporting or running it gives the LoRA model. On exit the LoRAs
    are unfused and unloaded, and the original base weights are restored from a snapshot so that
    unfuse rounding (W + d - d != W in float) never leaks into later exports.
    """
    names = []
    for spec in loras:
        path = Path(spec.path)
        if path.is_file():
            pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=spec.adapter_name)
        else:
            pipe.load_lora_weights(spec.path, weight_name=spec.weight_name, adapter_name=spec.adapter_name)
        names.append(spec.adapter_name)
    used = [c for c in components if any(True for _ in _peft_layers(pipe, [c]))]
    snapshot = {}
    for comp, name, module in _peft_layers(pipe, used):
        base = module.get_base_layer()
        snapshot[(comp, name)] = {k: v.detach().clone() for k, v in base.named_parameters(recurse=False)}
    pipe.set_adapters(names, adapter_weights=[spec.weight for spec in loras])
    pipe.fuse_lora(components=used, lora_scale=1.0, adapter_names=names)
    try:
        yield pipe
    finally:
        pipe.unfuse_lora(components=used)
        pipe.unload_lora_weights()
        with torch.no_grad():
            for (comp, name), params in snapshot.items():
                module = dict(getattr(pipe, comp).named_modules())[name]
                for k, v in params.items():
                    current = getattr(module, k)
                    drift = (current - v).abs().max().item()
                    if drift > 1e-4:
                        raise RuntimeError(f"unfuse drift {drift} in {comp}.{name}.{k}")
                    current.copy_(v)


def check_fused_weights(unet, base_state: dict, lora_files: dict[str, Path], adapters: list[tuple[str, float]]):
    """Assert the fused UNet weights are W + sum w * (alpha/r) * B @ A (independent re-computation)."""
    from safetensors import safe_open

    modules = dict(unet.named_modules())
    expected = {}
    for adapter, weight in adapters:
        with safe_open(str(lora_files[adapter]), "pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        extra = json.loads(meta["lora_adapter_metadata"]) if "lora_adapter_metadata" in meta else {}
        for key, a in tensors.items():
            if not key.endswith(".lora_A.weight"):
                continue
            mod = key[len("unet.") : -len(".lora_A.weight")]
            b = tensors[key.replace("lora_A", "lora_B")]
            rank = a.shape[0]
            alpha = extra.get("unet.lora_alpha", rank)
            delta = weight * (alpha / rank) * (b @ a)
            expected[mod] = expected.get(mod, 0) + delta
    worst = 0.0
    rel = []
    for mod, delta in expected.items():
        layer = modules[mod]
        w = layer.get_base_layer().weight if hasattr(layer, "get_base_layer") else layer.weight
        w0 = base_state[f"{mod}.weight"]
        worst = max(worst, (w - (w0 + delta)).abs().max().item())
        rel.append((delta.norm() / w0.norm()).item())
    if worst > 1e-5:
        raise RuntimeError(f"fused weights differ from W + sum w*alpha/r*BA by {worst}")
    return worst, float(np.mean(rel))


# --------------------------------------------------------------------------------------------
# ONNX export (Optimum layout)
# --------------------------------------------------------------------------------------------


class _TextEncoderForExport(torch.nn.Module):
    def __init__(self, text_encoder):
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, input_ids):
        out = self.text_encoder(input_ids=input_ids, return_dict=True)
        return out.last_hidden_state, out.pooler_output


class _UNetForExport(torch.nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.unet(sample, timestep, encoder_hidden_states, return_dict=False)[0]


class _VaeDecoderForExport(torch.nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, latent_sample):
        return self.vae.decode(latent_sample, return_dict=False)[0]


class _VaeEncoderForExport(torch.nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, sample):
        # Optimum's vae_encoder output: the DiagonalGaussian parameters (mean ++ logvar on dim 1).
        return self.vae.encode(sample, return_dict=True).latent_dist.parameters


def _torch_export(module, args, path: Path, input_names, output_names, dynamic_axes, external_data: bool):
    """TorchScript-based torch.onnx.export (what Optimum uses), opset 17, constant folding on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp) / "model.onnx"
        with torch.no_grad():
            torch.onnx.export(
                module,
                args,
                str(tmp_path),
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_axes=dynamic_axes,
                opset_version=OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
        model = onnx.load(str(tmp_path))
    if model.ir_version > IR_VERSION:
        model.ir_version = IR_VERSION
    for p in (path, path.with_name(path.name + "_data")):
        if p.exists():
            p.unlink()
    if external_data:
        onnx.save_model(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=path.name + "_data",
            size_threshold=1024,
            convert_attribute=False,
        )
    else:
        onnx.save_model(model, str(path))
    onnx.checker.check_model(str(path))
    return path


def ort_session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def _max_err(a, b) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


def export_text_encoder(text_encoder: CLIPTextModel, out_dir: Path, verify: bool = True) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    seq = text_encoder.config.max_position_embeddings
    ids = torch.full((1, seq), TEXT_ENCODER_CONFIG["pad_token_id"], dtype=torch.int32)
    ids[0, :5] = torch.tensor([49406, 320, 1929, 530, 49407], dtype=torch.int32)
    path = _torch_export(
        _TextEncoderForExport(text_encoder),
        (ids,),
        out_dir / "model.onnx",
        ["input_ids"],
        ["last_hidden_state", "pooler_output"],
        {
            "input_ids": {0: "batch_size", 1: "sequence_length"},
            "last_hidden_state": {0: "batch_size", 1: "sequence_length"},
            "pooler_output": {0: "batch_size"},
        },
        external_data=False,
    )
    text_encoder.config.save_pretrained(str(out_dir))
    report = {}
    if verify:
        gen = torch.Generator().manual_seed(7)
        ids = torch.randint(0, 49406, (2, seq), generator=gen, dtype=torch.int64).to(torch.int32)
        ids[:, 0] = 49406
        ids[0, 10:] = 49407
        ids[1, 30:] = 49407
        with torch.no_grad():
            ref = text_encoder(input_ids=ids.long(), return_dict=True)
        got = ort_session(path).run(None, {"input_ids": ids.numpy()})
        report = {
            "last_hidden_state": _max_err(got[0], ref.last_hidden_state),
            "pooler_output": _max_err(got[1], ref.pooler_output),
        }
    return report


def export_unet(unet: UNet2DConditionModel, out_dir: Path, verify: bool = True) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = unet.config
    sample = torch.randn(2, cfg.in_channels, cfg.sample_size, cfg.sample_size, generator=torch.Generator().manual_seed(0))
    timestep = torch.tensor(981.0, dtype=torch.float32)  # 0-d, like Optimum's dummy input
    ehs = torch.randn(2, 77, cfg.cross_attention_dim, generator=torch.Generator().manual_seed(1))
    path = _torch_export(
        _UNetForExport(unet),
        (sample, timestep, ehs),
        out_dir / "model.onnx",
        ["sample", "timestep", "encoder_hidden_states"],
        ["out_sample"],
        {
            "sample": {0: "batch_size", 2: "height", 3: "width"},
            "timestep": {},
            "encoder_hidden_states": {0: "batch_size", 1: "sequence_length"},
            "out_sample": {0: "batch_size", 2: "height", 3: "width"},
        },
        external_data=True,
    )
    unet.save_config(str(out_dir))
    report = {}
    if verify:
        sess = ort_session(path)
        gen = torch.Generator().manual_seed(3)
        for batch, h, w, t in ((2, cfg.sample_size, cfg.sample_size, 999), (1, 16, 12, 1)):
            x = torch.randn(batch, cfg.in_channels, h, w, generator=gen)
            e = torch.randn(batch, 77, cfg.cross_attention_dim, generator=gen)
            tt = torch.tensor(float(t))
            with torch.no_grad():
                ref = unet(x, tt, e, return_dict=False)[0]
            got = sess.run(None, {"sample": x.numpy(), "timestep": tt.numpy(), "encoder_hidden_states": e.numpy()})[0]
            report[f"out_sample[{batch}x{cfg.in_channels}x{h}x{w}]"] = _max_err(got, ref)
    return report


def export_vae_decoder(vae: AutoencoderKL, out_dir: Path, verify: bool = True) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    lat = torch.randn(1, vae.config.latent_channels, 8, 8, generator=torch.Generator().manual_seed(0))
    path = _torch_export(
        _VaeDecoderForExport(vae),
        (lat,),
        out_dir / "model.onnx",
        ["latent_sample"],
        ["sample"],
        {
            "latent_sample": {0: "batch_size", 2: "height_latent", 3: "width_latent"},
            "sample": {0: "batch_size", 2: "height", 3: "width"},
        },
        external_data=False,
    )
    vae.save_config(str(out_dir))
    report = {}
    if verify:
        sess = ort_session(path)
        gen = torch.Generator().manual_seed(4)
        for shape in ((2, 4, 8, 8), (1, 4, 6, 10)):
            z = torch.randn(*shape, generator=gen) / vae.config.scaling_factor
            with torch.no_grad():
                ref = vae.decode(z, return_dict=False)[0]
            got = sess.run(None, {"latent_sample": z.numpy()})[0]
            report[f"sample[{'x'.join(map(str, shape))}]"] = _max_err(got, ref)
    return report


def export_vae_encoder(vae: AutoencoderKL, out_dir: Path, verify: bool = True) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    img = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    path = _torch_export(
        _VaeEncoderForExport(vae),
        (img,),
        out_dir / "model.onnx",
        ["sample"],
        ["latent_parameters"],
        {
            "sample": {0: "batch_size", 2: "height", 3: "width"},
            "latent_parameters": {0: "batch_size", 2: "height_latent", 3: "width_latent"},
        },
        external_data=False,
    )
    vae.save_config(str(out_dir))
    report = {}
    if verify:
        sess = ort_session(path)
        gen = torch.Generator().manual_seed(5)
        for shape in ((2, 3, 64, 64), (1, 3, 48, 80)):
            x = torch.rand(*shape, generator=gen) * 2 - 1
            with torch.no_grad():
                ref = vae.encode(x).latent_dist.parameters
            got = sess.run(None, {"sample": x.numpy()})[0]
            report[f"latent_parameters[{'x'.join(map(str, shape))}]"] = _max_err(got, ref)
    return report


def write_scheduler(out_dir: Path) -> None:
    (out_dir / "scheduler").mkdir(parents=True, exist_ok=True)
    (out_dir / "scheduler" / "scheduler_config.json").write_text(SD15_SCHEDULER_CONFIG + "\n")


def copy_tokenizer(src: Path, out_dir: Path) -> None:
    dst = out_dir / "tokenizer"
    dst.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        s, d = src / name, dst / name
        if s.resolve() != d.resolve():
            shutil.copyfile(s, d)


def write_model_index(pipe: StableDiffusionPipeline, out_dir: Path) -> None:
    # What Optimum writes: the diffusers pipeline's own model_index.json.
    pipe.save_config(str(out_dir))


# --------------------------------------------------------------------------------------------
# Sanity of the random weights
# --------------------------------------------------------------------------------------------

SANITY_PROMPT = "a small cottage on a hillside at sunset, warm golden light, detailed"


def activation_report(pipe: StableDiffusionPipeline) -> dict:
    """50 DDPM steps at cfg 7.5: latents / noise predictions / image stay finite and non-degenerate."""
    original = pipe.scheduler
    pipe.scheduler = DDPMScheduler.from_config(original.config)
    stds, eps = [], []

    def hook(_module, _args, output):
        out = output[0] if isinstance(output, tuple) else output.sample
        eps.append(out.detach())

    def on_step(_pipe, _i, _t, kwargs):
        stds.append(float(kwargs["latents"].std()))
        return kwargs

    handle = pipe.unet.register_forward_hook(hook)
    try:
        image = pipe(
            SANITY_PROMPT,
            num_inference_steps=50,
            guidance_scale=7.5,
            height=64,
            width=64,
            generator=torch.Generator("cpu").manual_seed(42),
            output_type="np",
            callback_on_step_end=on_step,
        ).images
    finally:
        handle.remove()
        pipe.scheduler = original
    eps_all = torch.stack(eps)  # [steps, 2, 4, 8, 8]: uncond, cond
    report = {
        "eps_std": float(eps_all.std()),
        "eps_cond_minus_uncond_std": float((eps_all[:, 1] - eps_all[:, 0]).std()),
        "latent_std_first_step": stds[0],
        "latent_std_last_step": stds[-1],
        "latent_std_max": max(stds),
        "image_mean": float(image.mean()),
        "image_std": float(image.std()),
        "image_saturated_fraction": float(((image <= 0) | (image >= 1)).mean()),
    }
    ok = (
        all(math.isfinite(s) for s in stds)
        and bool(torch.isfinite(eps_all).all())
        and np.isfinite(image).all()
        and max(stds) < 50
        and report["image_std"] > 0.05
        and report["image_saturated_fraction"] < 0.1
    )
    if not ok:
        raise RuntimeError(f"degenerate activations: {report}")
    return report


# --------------------------------------------------------------------------------------------


def export_all(out_dir: Path, tokenizer_dir: Path | None = None, verify: bool = True, log=print) -> dict:
    """Build the tiny pipeline and write the complete models/tiny tree. Returns the report."""
    set_determinism()
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer_dir = Path(tokenizer_dir or default_tokenizer_dir())
    pipe = build_pipeline(tokenizer_dir)
    report = {"errors": {}}

    report["activations"] = activation_report(pipe)
    log("activations (50 DDPM steps, cfg 7.5):", json.dumps(report["activations"]))

    copy_tokenizer(tokenizer_dir, out_dir)
    write_scheduler(out_dir)
    write_model_index(pipe, out_dir)

    report["errors"]["text_encoder"] = export_text_encoder(pipe.text_encoder, out_dir / "text_encoder", verify)
    report["errors"]["unet"] = export_unet(pipe.unet, out_dir / "unet", verify)
    report["errors"]["vae_decoder"] = export_vae_decoder(pipe.vae, out_dir / "vae_decoder", verify)
    report["errors"]["vae_encoder"] = export_vae_encoder(pipe.vae, out_dir / "vae_encoder", verify)

    lora_dir = out_dir / "loras"
    lora_files = {spec.name: write_random_lora(pipe, spec, lora_dir) for spec in TINY_LORAS}
    base_state = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    report["lora_relative_delta"] = {}
    for variant, adapters in TINY_UNET_VARIANTS.items():
        specs = [LoraSpec(str(lora_files[name]), name, weight) for name, weight in adapters]
        with fused_loras(pipe, specs, components=("unet",)):
            err, rel = check_fused_weights(pipe.unet, base_state, lora_files, adapters)
            report["lora_relative_delta"][variant] = rel
            report["errors"][variant] = export_unet(pipe.unet, out_dir / variant, verify)
        # the base weights are back, bit for bit
        for k, v in pipe.unet.state_dict().items():
            if not torch.equal(v, base_state[k]):
                raise RuntimeError(f"base UNet weight {k} changed after unloading LoRAs")

    for name, errs in report["errors"].items():
        for out, err in errs.items():
            log(f"torch vs onnxruntime  {name:15s} {out:32s} max abs err {err:.3e}")
            if err > 1e-4:
                raise RuntimeError(f"{name} {out}: ORT differs from torch by {err}")
    for variant, rel in report["lora_relative_delta"].items():
        log(f"LoRA |delta W| / |W| (mean over targeted layers) {variant}: {rel:.3f}")
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(HERE / "tiny"), help="output folder (default models/tiny)")
    ap.add_argument("--tokenizer", default=None, help="folder with the CLIP tokenizer files")
    ap.add_argument("--no-verify", action="store_true", help="skip the onnxruntime checks")
    args = ap.parse_args(argv)
    out = Path(args.out)
    export_all(out, Path(args.tokenizer) if args.tokenizer else None, verify=not args.no_verify)
    total = 0
    for p in sorted(out.rglob("*")):
        if p.is_file():
            total += p.stat().st_size
            print(f"{p.stat().st_size:>10d}  {p.relative_to(out)}")
    print(f"{total:>10d}  total")
    return 0


if __name__ == "__main__":
    sys.exit(main())
