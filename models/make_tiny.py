#!/usr/bin/env python
"""Generate speedscape's tiny random-weight Stable Diffusion v1.5 look-alike and export it to ONNX.

Reference environment: models/requirements.txt (torch 2.15.0 on CPU, diffusers 0.42.1,
transformers 5.23.0, peft 0.21.2, onnx 1.23.2, onnxruntime 1.31.1, safetensors 0.8.0).

    .venv-ref/bin/python models/make_tiny.py --out models/tiny

What it does (see models/tiny/README.md for the result):

1. builds a random-init `StableDiffusionPipeline` with SD v1.5's structure at toy size
   (`build_pipeline`): UNet2DConditionModel, AutoencoderKL with 4 levels (VAE scale factor 8),
   CLIPTextModel with the full 49408-token CLIP vocabulary, SD v1.5's PNDM scheduler config and
   SD v1.5's real CLIP tokenizer; checks its activations over 50 DDPM steps;
2. saves it as a diffusers folder (what a user's download looks like) and writes two random rank-4
   LoRA adapters ("lcm", "style") on the UNet attention projections as diffusers/peft
   `.safetensors` files (`write_random_lora`);
3. hands both to models/export.py -- the exporter real SD v1.5 goes through -- with variants
   unet_lcm, unet_style and unet_lcm_style, the VAE encoder and `copy_loras`: it exports, fuses
   (`load_lora_weights` -> `set_adapters` -> `fuse_lora`), checks every graph against torch with
   onnxruntime (CPU) and writes manifest.json;
4. also gives the exporter a random `CLIPModel` with OpenAI ViT-L/14's structure at toy size whose
   text tower is the tiny text encoder (`build_clip`): `--clip-scorer` exports its vision tower and
   projections to clip_image_encoder/ (the CLIP score), after every other component.

Everything is deterministic: each component is initialised right after `torch.manual_seed(0)`, the
LoRA tensors come from their own seeded generators, torch and onnxruntime run single-threaded, the
TorchScript ONNX exporter writes the same bytes on every run, and SOURCE_DATE_EPOCH=0 fixes the
manifest's date (its export timings are the only bytes that change between runs).
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

import export  # noqa: E402  (models/export.py: the exporter real models go through)
import onnxruntime as ort  # noqa: E402
from diffusers import (  # noqa: E402
    AutoencoderKL,
    DDPMScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from diffusers.utils import logging as diffusers_logging  # noqa: E402
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPTextModel, CLIPTokenizer  # noqa: E402
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil  # noqa: E402

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

# The CLIP scorer's vision tower: OpenAI's ViT-L/14 structure (patch 14, 224 px, quick_gelu, pre-
# and post-layernorm, CLS pooling) at toy size. Its text tower is the tiny text encoder itself.
CLIP_VISION_CONFIG = dict(
    image_size=224,
    patch_size=14,
    num_channels=3,
    hidden_size=32,  # ViT-L/14: 1024
    intermediate_size=37,  # ViT-L/14: 4096
    num_hidden_layers=2,  # ViT-L/14: 24
    num_attention_heads=4,  # ViT-L/14: 16
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
)
CLIP_PROJECTION_DIM = 32  # ViT-L/14: 768
# Random weights give cosines of about ±0.3; with this seed the tiny scorer's cosines for the
# fixture images and prompts are mostly positive (one is negative): scores above the clamp at 0,
# and one at it, so tests see both. (Seed 1003 gave only negative cosines: every score 0.)
CLIP_SEED = 1007

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


def build_clip(text_encoder: CLIPTextModel) -> CLIPModel:
    """A random CLIPModel whose text tower is `text_encoder` (its weights copied in), so the
    exporter's text-tower check holds as it does for SD v1.5 and openai/clip-vit-large-patch14."""
    torch.manual_seed(CLIP_SEED)
    config = CLIPConfig(
        text_config=text_encoder.config.to_dict(),
        vision_config=CLIP_VISION_CONFIG,
        projection_dim=CLIP_PROJECTION_DIM,
    )
    config.architectures = ["CLIPModel"]
    clip = CLIPModel(config).eval()
    clip.text_model.load_state_dict(text_encoder.state_dict())
    return clip


def save_clip_folder(clip: CLIPModel, folder: Path) -> None:
    """The CLIP model as a hub download looks: weights, config, OpenAI's preprocessor config."""
    clip.save_pretrained(str(folder), safe_serialization=True)
    CLIPImageProcessorPil().save_pretrained(str(folder))


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
    return assemble(build_vae(), build_text_encoder(), tokenizer, build_unet(), build_scheduler())


def assemble(vae, text_encoder, tokenizer, unet, scheduler) -> StableDiffusionPipeline:
    """A text-to-image pipeline of these parts, as a download has it: no safety checker, no
    progress bar. (The order of the build_* calls before it fixes the random weights.)"""
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
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


@contextlib.contextmanager
def fused_loras(pipe: StableDiffusionPipeline, loras: list[LoraSpec], components=("unet", "text_encoder")):
    """export.fused_loras for LoraSpec lists (used by tests/fixtures/make_pipeline_fixtures.py)."""
    resolved = []
    for spec in loras:
        path = Path(spec.path) if Path(spec.path).is_file() else Path(spec.path) / spec.weight_name
        fmt, comps = export.lora_keys_info(path)
        resolved.append((export.Lora(spec.adapter_name, path, {}, fmt, comps), spec.weight))
    with export.fused_loras(pipe, resolved, components):
        yield pipe


def ort_session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def _max_err(a, b) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


def write_scheduler(out_dir: Path) -> None:
    (out_dir / "scheduler").mkdir(parents=True, exist_ok=True)
    (out_dir / "scheduler" / "scheduler_config.json").write_text(SD15_SCHEDULER_CONFIG + "\n")


def copy_tokenizer(src: Path, out_dir: Path) -> None:
    dst = out_dir / "tokenizer"
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for name in TOKENIZER_FILES:
        shutil.copyfile(src / name, dst / name)


def save_diffusers_folder(pipe: StableDiffusionPipeline, folder: Path, tokenizer_dir: Path) -> None:
    """The random pipeline as a diffusers folder, as a user's download looks: `save_pretrained`,
    then SD v1.5's scheduler config and tokenizer files verbatim (save_pretrained re-saves both)."""
    pipe.save_pretrained(str(folder), safe_serialization=True)
    write_scheduler(folder)
    copy_tokenizer(tokenizer_dir, folder)


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
    """Build the tiny pipeline and export it with models/export.py into `out_dir`. Returns the manifest."""
    set_determinism()
    os.environ.setdefault("SOURCE_DATE_EPOCH", "0")  # a fixed manifest date: same bytes every run
    tokenizer_dir = Path(tokenizer_dir or default_tokenizer_dir())
    pipe = build_pipeline(tokenizer_dir)
    if verify:
        log("activations (50 DDPM steps, cfg 7.5):", json.dumps(activation_report(pipe)))
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "pipeline"
        save_diffusers_folder(pipe, src, tokenizer_dir)
        lora_dir = Path(tmp) / "loras"
        loras = {}
        for spec in TINY_LORAS:
            path = write_random_lora(pipe, spec, lora_dir)
            lora = export.resolve_lora(f"{spec.name}={path}")
            lora.provenance["source"] = f"random-init (models/make_tiny.py, seed {spec.seed})"
            loras[spec.name] = lora
        base = export.resolve_base(str(src), None, label="random-init tiny SD v1.5 look-alike (models/make_tiny.py)")
        variants = {folder.removeprefix("unet_"): parts for folder, parts in TINY_UNET_VARIANTS.items()}
        clip_dir = Path(tmp) / "clip"
        save_clip_folder(build_clip(pipe.text_encoder), clip_dir)
        clip = export.resolve_clip(str(clip_dir), label=f"random-init tiny CLIP ViT-L/14 look-alike (models/make_tiny.py, seed {CLIP_SEED})")
        settings = export.Settings(verify=verify, check_threads=1)
        export.log = log
        return export.export_pipeline(
            base,
            loras,
            variants,
            out_dir,
            settings,
            vae_encoder=True,
            command=["python", "models/make_tiny.py"],
            force=True,
            copy_loras=True,
            clip_scorer=clip,
        )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(HERE / "tiny"), help="output folder (default models/tiny)")
    ap.add_argument("--tokenizer", default=None, help="folder with the CLIP tokenizer files")
    ap.add_argument("--no-verify", action="store_true", help="skip the onnxruntime checks")
    args = ap.parse_args(argv)
    out = Path(args.out)
    readme = out / "README.md"  # hand-written; the export replaces the folder
    kept = readme.read_bytes() if readme.is_file() else None
    export_all(out, Path(args.tokenizer) if args.tokenizer else None, verify=not args.no_verify)
    if kept is not None:
        readme.write_bytes(kept)
    total = 0
    for p in sorted(out.rglob("*")):
        if p.is_file():
            total += p.stat().st_size
            print(f"{p.stat().st_size:>10d}  {p.relative_to(out)}")
    print(f"{total:>10d}  total")
    return 0


if __name__ == "__main__":
    sys.exit(main())
