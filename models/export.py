#!/usr/bin/env python
"""Export Stable Diffusion v1.5 (+ LoRA-fused UNet variants), SD 2.x or SD-Turbo to ONNX for speedscape.

    python models/export.py --out models/sd15                       # fp32, CPU or GPU
    python models/export.py --out models/sd15-fp16 --dtype fp16 --optimize cuda   # fast GPU form
    python models/export.py --model stabilityai/sd-turbo --out models/sd-turbo --no-loras

The manifest's `family` (`sd15`, `sd2`, `sd-turbo`) comes from the configs (`model_family`): the
text encoder's width, the UNet's linear projections, the scheduler's class and spacing, and the
hub id when it is a known one. The text encoder is exported with `last_hidden_state` (the final
layer norm over all of its config's layers), the embedding `StableDiffusionPipeline.encode_prompt`
uses with clip_skip None: SD v1.5's 12th layer, and for SD 2.x / SD-Turbo OpenCLIP ViT-H's
penultimate one (their text_encoder/config.json keeps 23 of its 24 layers). The tokenizer files
are copied as they are, so SD 2.x's pad token `!` travels with them.

Defaults: base `stable-diffusion-v1-5/stable-diffusion-v1-5`, LoRAs
`lcm=latent-consistency/lcm-lora-sdv1-5` and
`style=artificialguybr/pixelartredmond-1-5v-pixel-art-loras-for-sd-1-5` (trigger word PixArFK),
variants `lcm=lcm:1.0`, `style=style:1.0`, `lcm_style=lcm:1.0,style:1.0`.

Sources may be Hugging Face hub ids (downloaded with huggingface_hub, revision recorded), local
diffusers folders, or (LoRAs) `.safetensors` files in diffusers/peft or kohya (`lora_unet_...`,
`lora_te_...`) format; `NAME=SOURCE#FILE.safetensors` picks one file of a repo or folder.
ControlNets (`--controlnet canny=lllyasviel/control_v11p_sd15_canny`, repeatable) are hub ids or
`ControlNetModel.save_pretrained` folders.

What is written (the Hugging Face Optimum ONNX layout speedscape reads, plus one folder per variant):

    text_encoder/ unet/ (external data) vae_decoder/ [vae_encoder/] tokenizer/ scheduler/
    vae_decoder_fp16/          --dtype fp16 only: the VAE decoder in float16 (vae_decoder/ stays
                               float32); speedscape decodes with it on a GPU and again with
                               vae_decoder/ when it overflows
    unet_<variant>/            the UNet with that variant's LoRAs fused (set_adapters + fuse_lora)
    text_encoder_<variant>/    only when a variant's LoRAs also train the text encoder
    controlnet_<name>/         with --controlnet NAME=SOURCE: a diffusers ControlNetModel (see
                               `controlnet_spec`); every UNet above then also takes its residuals
                               (`unet_spec(unet, residuals=True)`); checked against the base first
    clip_image_encoder/        with --clip-scorer: a CLIP vision tower + both projections, for
                               the CLIP score (see `clip_scorer_spec`)
    preview_decoder/           with --preview-decoder [SOURCE]: a tiny autoencoder's decoder (diffusers
                               AutoencoderTiny; default madebyollin/taesd, SD v1.x's TAESD) that decodes
                               each step's x0 into the preview (see `preview_decoder_spec`)
    model_index.json  manifest.json

The scheduler config is copied byte for byte from the source (never re-saved by diffusers, which
would add `timestep_spacing` and change every schedule). Every exported graph is run with ONNX
Runtime against torch on random inputs; the export fails if the difference is above tolerance.
The output is built in `<out>.partial/` and renamed into place only when everything passed.

Reference environment: models/requirements.txt (pinned).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import importlib.metadata as md
import json
import os
import platform
import re
import shutil
import struct
import sys
import tempfile
import time
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
from diffusers import StableDiffusionPipeline  # noqa: E402
from diffusers.utils import logging as diffusers_logging  # noqa: E402
from transformers.utils import logging as transformers_logging  # noqa: E402

diffusers_logging.set_verbosity_error()
# transformers reports the base weights a LoRA file lacks as "MISSING ... newly initialized" when
# diffusers loads text-encoder LoRA layers; nothing is re-initialized (models/tests checks the
# fused weights against W + w * alpha/r * BA), so keep its log to errors.
transformers_logging.set_verbosity_error()

EXPORTER_VERSION = "1"
MANIFEST_FORMAT = "speedscape-model/1"

OPSET = 17
# ONNX IR version 8 is what opset 17 was released with; ONNX Runtime >= 1.14 reads it.
IR_VERSION = 8

CLIP_BOS, CLIP_EOS = 49406, 49407

# Hub ids whose family is known; any other source is classified from its configs (`model_family`).
KNOWN_FAMILIES = {
    "stable-diffusion-v1-5/stable-diffusion-v1-5": "sd15",
    "runwayml/stable-diffusion-v1-5": "sd15",
    "CompVis/stable-diffusion-v1-4": "sd15",
    "stabilityai/stable-diffusion-2": "sd2",
    "stabilityai/stable-diffusion-2-base": "sd2",
    "stabilityai/stable-diffusion-2-1": "sd2",
    "stabilityai/stable-diffusion-2-1-base": "sd2",
    "stabilityai/sd-turbo": "sd-turbo",
}

DEFAULT_BASE = "stable-diffusion-v1-5/stable-diffusion-v1-5"
DEFAULT_LORAS = (
    "lcm=latent-consistency/lcm-lora-sdv1-5",
    "style=artificialguybr/pixelartredmond-1-5v-pixel-art-loras-for-sd-1-5",
)
DEFAULT_VARIANTS = ("lcm=lcm:1.0", "style=style:1.0", "lcm_style=lcm:1.0,style:1.0")

# What a base SD pipeline needs from the hub (SD v1.5's repo also holds 4-8 GB .ckpt files and
# fp16 copies that the export does not use).
BASE_PATTERNS = [
    "model_index.json",
    "scheduler/scheduler_config.json",
    "tokenizer/*",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
]
LORA_PATTERNS = ["*.safetensors", "*.json"]

# The CLIP model whose text tower SD v1.5's text encoder is (same weights): its vision tower and
# projections give the CLIP score (--clip-scorer).
DEFAULT_CLIP = "openai/clip-vit-large-patch14"
CLIP_PATTERNS = ["config.json", "preprocessor_config.json", "model.safetensors"]
CLIP_FOLDER = "clip_image_encoder"
CLIP_CONFIG_FORMAT = "speedscape-clip-scorer/1"
# Text-tower settings that must agree for the pipeline's text encoder to stand in for CLIP's.
CLIP_TEXT_FIELDS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "max_position_embeddings", "hidden_act", "layer_norm_eps",
)

# Max abs difference allowed between ONNX Runtime and torch (float32 reference), relative to the
# reference's largest magnitude (at least 1).
TOLERANCE = {"fp32": 1e-3, "fp16": 5e-2}

# An fp16 export's float16 VAE decoder, beside the float32 one in vae_decoder/: speedscape decodes
# with it on a GPU and decodes again with vae_decoder/ when it overflows ([model] vae_precision).
VAE_FP16_FOLDER = "vae_decoder_fp16"

# Random ControlNet residuals fed to a residual UNet's checks: N(0, RESIDUAL_STD^2).
RESIDUAL_STD = 0.5

# Fusions each `--optimize` target must achieve per model type (the speed-up comes from these).
EXPECTED_FUSIONS = {
    "cuda": {"unet": ("MultiHeadAttention", "GroupNorm", "BiasSplitGelu"), "vae": ("GroupNorm",)},
    "cpu": {"unet": ("MultiHeadAttention", "SkipLayerNormalization")},
}

# onnxruntime.transformers fusions whose operators have CUDA kernels only (GroupNorm, SkipGroupNorm,
# BiasSplitGelu, NhwcConv, BiasAdd; the packed Q/K/V and K/V forms of MultiHeadAttention):
# `--optimize cpu` leaves them out and keeps the ones the CPU provider runs (Attention,
# MultiHeadAttention, LayerNormalization, SkipLayerNormalization, the GELU forms).
CUDA_ONLY_FUSIONS = (
    "enable_group_norm", "enable_skip_group_norm", "enable_bias_splitgelu", "enable_nhwc_conv",
    "enable_bias_add", "enable_packed_qkv", "enable_packed_kv",
)

# Libraries whose versions shape the result (recorded in the manifest).
LIBRARIES = ("torch", "diffusers", "transformers", "peft", "safetensors", "onnx", "onnxruntime", "numpy")


def log(*parts) -> None:
    print(*parts, flush=True)


class ExportError(RuntimeError):
    """A problem the user can fix; printed without a traceback."""


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def looks_like_hub_id(text: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9][\w.\-]*/[\w.\-]+", text)) and not Path(text).exists()


def download(repo_id: str, revision: str | None, patterns: list[str]) -> tuple[Path, str]:
    """Snapshot of a hub repo (only `patterns`); returns the local folder and the commit hash."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
    except Exception as e:  # network, auth, missing repo: say which and how to go on
        raise ExportError(
            f"cannot download {repo_id!r} from the Hugging Face hub: {type(e).__name__}: {e}\n"
            f"Fix: check the network / `huggingface-cli login`, or download it elsewhere and pass the "
            f"local folder instead of the hub id"
        ) from None
    return folder, folder.name  # snapshots/<commit>


@dataclasses.dataclass
class Base:
    folder: Path
    provenance: dict


def resolve_base(source: str, revision: str | None, label: str | None = None) -> Base:
    if Path(source).is_dir():
        folder = Path(source)
        if not (folder / "model_index.json").is_file():
            raise ExportError(
                f"{folder} is not a diffusers pipeline folder (no model_index.json)\n"
                f"Fix: pass a folder saved by diffusers (`save_pretrained`) or a hub id like {DEFAULT_BASE}"
            )
        prov = {"kind": "folder", "source": label or str(folder.resolve()), "revision": None}
    elif looks_like_hub_id(source):
        log(f"downloading {source} (only the files the export needs) ...")
        folder, commit = download(source, revision, BASE_PATTERNS)
        prov = {"kind": "hub", "source": source, "revision": commit}
    else:
        raise ExportError(
            f"base model {source!r} is neither a folder nor a hub id\nFix: pass --model with a diffusers "
            f"folder or a hub id such as {DEFAULT_BASE}"
        )
    weights = {}
    for rel in ("text_encoder/model.safetensors", "unet/diffusion_pytorch_model.safetensors",
                "vae/diffusion_pytorch_model.safetensors", "scheduler/scheduler_config.json"):
        p = folder / rel
        if p.is_file():
            weights[rel] = sha256_file(p)
    prov["sha256"] = weights
    return Base(folder, prov)


@dataclasses.dataclass
class ClipSource:
    """A CLIPModel (hub id or a folder saved by transformers) for the CLIP scorer."""

    folder: Path
    provenance: dict


def resolve_clip(source: str, revision: str | None = None, label: str | None = None) -> ClipSource:
    if Path(source).is_dir():
        folder = Path(source)
        if not (folder / "config.json").is_file():
            raise ExportError(
                f"--clip-scorer {folder}: not a transformers CLIPModel folder (no config.json)\n"
                f"Fix: pass a folder saved by `CLIPModel.save_pretrained` or a hub id like {DEFAULT_CLIP}"
            )
        prov = {"kind": "folder", "source": label or str(folder.resolve()), "revision": None}
    elif looks_like_hub_id(source):
        log(f"downloading {source} (config, preprocessor config, weights) ...")
        folder, commit = download(source, revision, CLIP_PATTERNS)
        prov = {"kind": "hub", "source": source, "revision": commit}
    else:
        raise ExportError(
            f"--clip-scorer {source!r} is neither a folder nor a hub id\n"
            f"Fix: pass a CLIPModel folder or a hub id such as {DEFAULT_CLIP} (the default of a bare --clip-scorer)"
        )
    prov["sha256"] = {p.name: sha256_file(p) for p in sorted(folder.glob("*")) if p.is_file() and p.suffix in (".json", ".safetensors")}
    return ClipSource(folder, prov)


def load_clip(source: ClipSource):
    """(CLIPModel, CLIPImageProcessorPil) from the folder; the processor's defaults are OpenAI's
    when the folder has no preprocessor_config.json."""
    from transformers import CLIPModel
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    try:
        model = CLIPModel.from_pretrained(str(source.folder), dtype=torch.float32).eval()
    except Exception as e:
        raise ExportError(
            f"cannot load a CLIPModel from {source.folder}: {type(e).__name__}: {e}\n"
            f"Fix: --clip-scorer needs a full CLIPModel (text and vision towers), e.g. {DEFAULT_CLIP}"
        ) from None
    if (source.folder / "preprocessor_config.json").is_file():
        processor = CLIPImageProcessorPil.from_pretrained(str(source.folder))
    else:
        processor = CLIPImageProcessorPil()
    return model, processor


def check_clip_text_tower(clip, text_encoder, clip_label: str) -> dict:
    """The CLIP model's text tower must be the pipeline's text encoder (SD v1.5's text encoder is
    openai/clip-vit-large-patch14's text tower): same settings, same tensors. Then the exported
    text_encoder's pooler_output stands in for CLIP's, and only text_projection is exported."""
    mine, theirs = clip.config.text_config, text_encoder.config
    differ = [f"{k}: {getattr(mine, k, None)!r} vs {getattr(theirs, k, None)!r}" for k in CLIP_TEXT_FIELDS
              if getattr(mine, k, None) != getattr(theirs, k, None)]
    a = clip.text_model.state_dict()
    b = text_encoder.state_dict()
    if not differ:
        if a.keys() != b.keys():
            differ.append(f"tensors only in one of them: {sorted(set(a) ^ set(b))[:5]}")
        else:
            for k in a:
                if a[k].shape != b[k].shape:
                    differ.append(f"{k}: shape {list(a[k].shape)} vs {list(b[k].shape)}")
                elif not torch.equal(a[k], b[k]):
                    err = (a[k].double() - b[k].double()).abs().max().item()
                    differ.append(f"{k}: max abs difference {err:.3e}")
    if differ:
        shown = "; ".join(differ[:4]) + (f"; and {len(differ) - 4} more" if len(differ) > 4 else "")
        raise ExportError(
            f"--clip-scorer {clip_label}: its text tower is not this pipeline's text encoder ({shown}); the CLIP "
            f"score reuses the pipeline's text_encoder pooler_output, so it needs the CLIP model the text encoder "
            f"came from\nFix: pass the CLIP model of this pipeline's text encoder (SD v1.5: {DEFAULT_CLIP}), "
            f"or leave out --clip-scorer"
        )
    return {"matches": "text_encoder", "tensors_compared": len(a), "settings_compared": list(CLIP_TEXT_FIELDS)}


def clip_scorer_config(clip, processor, source: ClipSource) -> dict:
    """clip_image_encoder/config.json: what speedscape needs to preprocess and score."""
    p = processor
    size = dict(p.size) if p.size is not None else {}
    crop = dict(p.crop_size) if p.crop_size is not None else {}
    resample = int(p.resample) if p.resample is not None else None
    problems = []
    if not (p.do_resize and size.get("shortest_edge")):
        problems.append(f"resize {size} (speedscape implements resize of the shortest edge)")
    if resample != 3:
        problems.append(f"resample {resample} (speedscape implements PIL's bicubic, 3)")
    if not (p.do_center_crop and crop.get("height") and crop.get("width")):
        problems.append(f"center crop {crop}")
    if not (p.do_rescale and p.do_normalize):
        problems.append("no rescale or normalize")
    if problems:
        raise ExportError(
            f"--clip-scorer {source.folder}: its image processor does what speedscape does not reproduce: "
            f"{'; '.join(problems)}\nFix: use a CLIP model with CLIPImageProcessor's usual settings (e.g. {DEFAULT_CLIP})"
        )
    vision = clip.config.vision_config
    return {
        "format": CLIP_CONFIG_FORMAT,
        "source": source.provenance["source"],
        "revision": source.provenance["revision"],
        "score": "max(100 * cos(image_embeds, text_embeds), 0) (torchmetrics CLIPScore)",
        "text_input": "text_encoder pooler_output",
        "image_size": vision.image_size,
        "patch_size": vision.patch_size,
        "resize_shortest_edge": size["shortest_edge"],
        "resample": "bicubic",
        "crop_height": crop["height"],
        "crop_width": crop["width"],
        "rescale_factor": float(p.rescale_factor),
        "image_mean": [float(v) for v in p.image_mean],
        "image_std": [float(v) for v in p.image_std],
        "projection_dim": clip.config.projection_dim,
        "text_hidden_size": clip.config.text_config.hidden_size,
        "logit_scale": float(clip.logit_scale.exp().item()),
    }


@dataclasses.dataclass
class Lora:
    name: str
    file: Path
    provenance: dict
    format: str  # "diffusers" | "kohya"
    components: list[str]  # "unet", "text_encoder"


def lora_keys_info(path: Path) -> tuple[str, list[str]]:
    """(format, components) from a LoRA .safetensors' tensor names."""
    raw = path.open("rb").read(8)
    if len(raw) < 8:
        raise ExportError(f"{path} is not a .safetensors file (too short)")
    (n,) = struct.unpack("<Q", raw)
    with open(path, "rb") as f:
        f.seek(8)
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError, MemoryError):
            raise ExportError(f"{path} is not a .safetensors file (bad header)") from None
    keys = [k for k in header if k != "__metadata__"]
    if any(k.startswith(("lora_unet_", "lora_te_", "lora_te1_")) for k in keys):
        fmt = "kohya"
        comps = [c for c, p in (("unet", "lora_unet_"), ("text_encoder", "lora_te")) if any(k.startswith(p) for k in keys)]
    else:
        fmt = "diffusers"
        comps = [c for c in ("unet", "text_encoder") if any(k.startswith(c + ".") for k in keys)]
        if not comps and keys:
            comps = ["unet"]  # old diffusers attn-processor names carry no prefix
    if not any("lora" in k for k in keys):
        raise ExportError(f"{path} holds no LoRA tensors (keys like *.lora_A.weight or *.lora_down.weight)")
    return fmt, comps


def pick_safetensors(folder: Path, weight_name: str | None, what: str) -> Path:
    if weight_name:
        p = folder / weight_name
        if not p.is_file():
            raise ExportError(f"{what}: {weight_name} not found in {folder}")
        return p
    files = sorted(p for p in folder.rglob("*.safetensors"))
    if len(files) == 1:
        return files[0]
    if not files:
        raise ExportError(f"{what}: no .safetensors file in {folder}\nFix: LoRAs must be in safetensors format")
    names = ", ".join(str(p.relative_to(folder)) for p in files)
    raise ExportError(f"{what}: several .safetensors files in {folder} ({names})\nFix: pick one with NAME=SOURCE#FILE")


def resolve_lora(spec: str, out_dir: Path | None = None) -> Lora:
    if "=" not in spec:
        raise ExportError(f"--lora {spec!r}: expected NAME=SOURCE[#FILE.safetensors]")
    name, source = spec.split("=", 1)
    weight_name = None
    if "#" in source:
        source, weight_name = source.split("#", 1)
    what = f"LoRA {name!r}"
    path = Path(source)
    if path.is_file():
        file = path
        kind = "file"
    elif path.is_dir():
        file = pick_safetensors(path, weight_name, what)
        kind = "folder"
    elif looks_like_hub_id(source):
        log(f"downloading LoRA {name} from {source} ...")
        folder, commit = download(source, None, LORA_PATTERNS)
        file = pick_safetensors(folder, weight_name, what)
        fmt, comps = lora_keys_info(file)
        prov = {"kind": "hub", "source": source, "revision": commit, "file": str(file.relative_to(folder)),
                "sha256": sha256_file(file), "bytes": file.stat().st_size}
        return Lora(name, file, prov, fmt, comps)
    else:
        raise ExportError(f"{what}: {source!r} is not a file, a folder or a hub id")
    fmt, comps = lora_keys_info(file)
    shown = file.resolve()
    if out_dir is not None:
        with contextlib.suppress(ValueError):
            shown = file.resolve().relative_to(out_dir.resolve())
    prov = {"kind": kind, "source": str(shown), "revision": None, "file": file.name,
            "sha256": sha256_file(file), "bytes": file.stat().st_size}
    return Lora(name, file, prov, fmt, comps)


def parse_variant(spec: str, loras: dict[str, Lora]) -> tuple[str, list[tuple[str, float]]]:
    if "=" not in spec:
        raise ExportError(f"--variant {spec!r}: expected NAME=LORA:WEIGHT[,LORA:WEIGHT]")
    name, rest = spec.split("=", 1)
    if not re.fullmatch(r"[a-z0-9_]+", name) or name == "base":
        raise ExportError(f"--variant {spec!r}: the name must be lower-case letters, digits or _ (not 'base')")
    parts = []
    for item in rest.split(","):
        lora, _, weight = item.partition(":")
        if lora not in loras:
            raise ExportError(f"--variant {spec!r}: no LoRA called {lora!r}; known: {', '.join(loras) or 'none'} (--lora NAME=SOURCE)")
        try:
            w = float(weight) if weight else 1.0
        except ValueError:
            raise ExportError(f"--variant {spec!r}: weight {weight!r} is not a number") from None
        parts.append((lora, w))
    return name, parts


# --------------------------------------------------------------------------------------------
# ControlNets
# --------------------------------------------------------------------------------------------

# What a ControlNet needs from the hub (lllyasviel's repos also hold .bin and fp16 copies).
CONTROLNET_PATTERNS = ["config.json", "diffusion_pytorch_model.safetensors"]
EXAMPLE_CONTROLNET = "lllyasviel/control_v11p_sd15_canny"
CONTROLNET_NAME_RE = re.compile(r"[a-z0-9_]+")


@dataclasses.dataclass
class ControlNetSource:
    """A diffusers ControlNetModel folder (downloaded or local), exported to controlnet_<name>/."""

    name: str
    folder: Path
    provenance: dict

    @property
    def out_folder(self) -> str:
        return f"controlnet_{self.name}"


def _component_config(folder: Path, what: str, class_name: str, subfolder: str, example: str, label: str = "",
                      note: str = "") -> dict:
    """config.json of a diffusers `class_name` folder (a ControlNetModel, an AutoencoderTiny);
    refuses anything else, saying what it is: a pipeline folder (its `subfolder` may be the
    component), a folder without config.json, broken JSON, another class. `label` names the class
    in that last message (default: `class_name`); `note` ends its fix."""
    an = "an" if class_name[0] in "AEIOU" else "a"
    config = folder / "config.json"
    if (folder / "model_index.json").is_file() and (folder / subfolder / "config.json").is_file():
        raise ExportError(
            f"{what}: {folder} is a pipeline folder, not {an} {class_name} folder\n"
            f"Fix: pass {an} {class_name} folder (`{class_name}.save_pretrained`; this pipeline's {folder / subfolder} "
            f"if it is one) or a hub id such as {example}"
        )
    if not config.is_file():
        raise ExportError(
            f"{what}: {folder} is not a diffusers {class_name} folder (no config.json)\n"
            f"Fix: pass a folder saved by `{class_name}.save_pretrained` or a hub id such as {example}"
        )
    try:
        cfg = json.loads(config.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ExportError(f"{what}: {config} is not valid JSON ({e})\nFix: pass an intact {class_name} folder") from None
    kind = cfg.get("_class_name") if isinstance(cfg, dict) else None
    if kind != class_name:
        raise ExportError(
            f"{what}: {folder} holds a {kind or 'model without _class_name'}, not {an} {label or class_name}\n"
            f"Fix: pass a diffusers {class_name} folder or a hub id such as {example}{note}"
        )
    return cfg


def _controlnet_config(folder: Path, what: str) -> dict:
    """config.json of a ControlNetModel folder (see _component_config)."""
    return _component_config(folder, what, "ControlNetModel", "controlnet", EXAMPLE_CONTROLNET)


def _folder_provenance(folder: Path, out_dir: Path | None, label: str | None) -> dict:
    """The manifest's record of a component taken from a local folder: `label` if given, else the
    folder's path (relative to the export when it lies inside it)."""
    shown = folder.resolve()
    if out_dir is not None:
        with contextlib.suppress(ValueError):
            shown = folder.resolve().relative_to(out_dir.resolve())
    return {"kind": "folder", "source": label or str(shown), "revision": None}


def resolve_controlnet(spec: str, out_dir: Path | None = None, label: str | None = None) -> ControlNetSource:
    """`NAME=SOURCE` of --controlnet: SOURCE a hub id (the commit is recorded) or a local folder
    saved by `ControlNetModel.save_pretrained`. Only the config is read here; the weights are
    loaded when the ControlNet is exported."""
    if "=" not in spec:
        raise ExportError(f"--controlnet {spec!r}: expected NAME=SOURCE\nFix: e.g. --controlnet canny={EXAMPLE_CONTROLNET}")
    name, source = spec.split("=", 1)
    what = f"--controlnet {spec!r}"
    if not CONTROLNET_NAME_RE.fullmatch(name):
        raise ExportError(
            f"{what}: the name {name!r} is not lower-case letters, digits or _ (it names the folder controlnet_NAME "
            f"and speedscape's --controlnet NAME)\nFix: e.g. --controlnet canny={source or EXAMPLE_CONTROLNET}"
        )
    path = Path(source)
    if path.is_dir():
        folder = path
        prov = _folder_provenance(folder, out_dir, label)
    elif looks_like_hub_id(source):
        log(f"downloading ControlNet {name} from {source} ...")
        folder, commit = download(source, None, CONTROLNET_PATTERNS)
        prov = {"kind": "hub", "source": source, "revision": commit}
        if (folder / "config.json").is_file() and not (folder / "diffusion_pytorch_model.safetensors").is_file():
            raise ExportError(
                f"{what}: {source} has no diffusion_pytorch_model.safetensors (only safetensors weights are downloaded)\n"
                f"Fix: convert it (`ControlNetModel.from_pretrained(...).save_pretrained(DIR)`) and pass DIR"
            )
    else:
        raise ExportError(
            f"{what}: {source!r} is neither a folder nor a hub id\n"
            f"Fix: pass a ControlNetModel folder (with config.json) or a hub id such as {EXAMPLE_CONTROLNET}"
        )
    _controlnet_config(folder, what)
    prov["sha256"] = {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file() and p.suffix in (".json", ".safetensors", ".bin")}
    return ControlNetSource(name, folder, prov)


def resolve_controlnets(specs: list[str], out_dir: Path | None = None) -> dict[str, ControlNetSource]:
    """Every --controlnet, by name; a name given twice is refused."""
    found: dict[str, ControlNetSource] = {}
    for spec in specs:
        cn = resolve_controlnet(spec, out_dir)
        if cn.name in found:
            raise ExportError(
                f"--controlnet {spec!r}: the name {cn.name!r} is already used by --controlnet "
                f"{cn.name}={found[cn.name].provenance['source']}\nFix: give each ControlNet its own name"
            )
        found[cn.name] = cn
    return found


def load_controlnet(source: ControlNetSource, device: str | None = None):
    """The ControlNetModel in float32, eval mode. `device="meta"`: its structure only (no weights
    read), for the checks before the exports."""
    from diffusers import ControlNetModel

    what = f"ControlNet {source.name!r} ({source.provenance['source']})"
    cfg = _controlnet_config(source.folder, what)
    try:
        if device == "meta":
            with torch.device("meta"):
                return ControlNetModel.from_config(cfg).eval()
        return ControlNetModel.from_pretrained(str(source.folder), dtype=torch.float32).eval()
    except Exception as e:
        raise ExportError(
            f"cannot load {what} from {source.folder}: {type(e).__name__}: {e}\n"
            f"Fix: pass a folder saved by `ControlNetModel.save_pretrained` (config.json + diffusion_pytorch_model.safetensors)"
        ) from None


def residual_layout(model) -> list[tuple[int, int]]:
    """(channels, downsampling factor) of each residual a ControlNet gives and a UNet takes: the
    down-block ones in order (conv_in, every resnet, every downsampler), then the mid block's.
    Works on a UNet2DConditionModel and a ControlNetModel alike (same down-block structure)."""
    layout = [(model.conv_in.out_channels, 1)]
    factor = 1
    for block in model.down_blocks:
        for resnet in block.resnets:
            layout.append((resnet.out_channels, factor))
        if block.downsamplers:
            factor *= 2
            layout.append((block.downsamplers[0].out_channels, factor))
    if model.mid_block is None:
        raise ExportError(f"{type(model).__name__} has no mid block: ControlNet residuals need one")
    layout.append((model.mid_block.resnets[-1].out_channels, factor))
    return layout


def check_controlnet_base(controlnet, unet, vae_scale_factor: int, label: str) -> None:
    """Refuses a ControlNet made for another base model (SD 2.x: 1024-wide text; SDXL: 2048 and
    added time ids) or one speedscape cannot run as diffusers' pipeline does; names both shapes."""
    c, u = controlnet.config, unet.config
    differ = [
        f"{key} {_shown(getattr(c, key, None))} (ControlNet) vs {_shown(getattr(u, key, None))} (this model's UNet)"
        for key in ("cross_attention_dim", "in_channels", "block_out_channels", "addition_embed_type")
        if _shown(getattr(c, key, None)) != _shown(getattr(u, key, None))
    ]
    cl, ul = residual_layout(controlnet), residual_layout(unet)
    if [ch for ch, _ in cl] != [ch for ch, _ in ul] or [f for _, f in cl] != [f for _, f in ul]:
        differ.append(
            f"{len(cl) - 1} down-block residuals + mid, channels {[ch for ch, _ in cl]} (ControlNet) vs "
            f"{len(ul) - 1} + mid, channels {[ch for ch, _ in ul]} (this model's UNet)"
        )
    cond = list(c.conditioning_embedding_out_channels)
    if 2 ** (len(cond) - 1) != vae_scale_factor:
        differ.append(
            f"conditioning embedding downsampling x{2 ** (len(cond) - 1)} ({len(cond)} conditioning_embedding_out_channels) "
            f"vs this model's VAE scale factor {vae_scale_factor}"
        )
    if differ:
        raise ExportError(
            f"ControlNet {label} was made for another base model: {'; '.join(differ)}\n"
            f"Fix: pass a ControlNet trained for this base model (SD v1.5: e.g. {EXAMPLE_CONTROLNET}; SD 2.x "
            f"ControlNets have 1024-wide text, SDXL ones 2048), or export the base model it was made for"
        )
    unsupported = []
    if c.global_pool_conditions:
        unsupported.append("global_pool_conditions (it needs guess mode)")
    if c.conditioning_channels != 3:
        unsupported.append(f"{c.conditioning_channels} conditioning channels (the control image is RGB: 3)")
    if unsupported:
        raise ExportError(
            f"ControlNet {label}: speedscape runs diffusers' StableDiffusionControlNetPipeline without guess mode on an "
            f"RGB control image, which this ControlNet does not fit: {'; '.join(unsupported)}\n"
            f"Fix: use an RGB-conditioned ControlNet such as {EXAMPLE_CONTROLNET}"
        )


def _shown(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def controlnet_record(controlnet, source: ControlNetSource | None = None, folder: str | None = None) -> dict:
    """The manifest's `controlnets.<name>` entry (contract: folder, residuals, conditioning
    channels, cross_attention_dim, block_out_channels, plus provenance when `source` is given)."""
    c = controlnet.config
    layout = residual_layout(controlnet)
    record = {"folder": folder or (source.out_folder if source else None)}
    if source is not None:
        record.update(source.provenance)
    record.update({
        "residuals": len(layout) - 1,
        "residual_channels": [ch for ch, _ in layout],
        "residual_downsampling": [f for _, f in layout],
        "conditioning_channels": c.conditioning_channels,
        "conditioning_channel_order": c.controlnet_conditioning_channel_order,
        "conditioning_embedding_out_channels": list(c.conditioning_embedding_out_channels),
        "cross_attention_dim": c.cross_attention_dim,
        "block_out_channels": list(c.block_out_channels),
    })
    return record


# --------------------------------------------------------------------------------------------
# Preview decoder (a TAESD-style AutoencoderTiny's decoder, for the per-step previews)
# --------------------------------------------------------------------------------------------

DEFAULT_PREVIEW_DECODER = "madebyollin/taesd"
PREVIEW_FOLDER = "preview_decoder"
PREVIEW_PATTERNS = ["config.json", "diffusion_pytorch_model.safetensors"]
# Tiny autoencoders made for other latent spaces: same architecture (TAESDXL even the same 4
# channels), other latents, so their previews of SD v1.5's latents would be wrong colours.
OTHER_LATENT_SPACES = {
    "taesdxl": "SDXL", "taesd3": "SD3", "taef1": "FLUX.1", "taef2": "FLUX.2", "taesdv": "SD video",
    "taew2_1": "Wan 2.1", "taehv": "HunyuanVideo", "taecvx": "CogVideoX", "taemochi": "Mochi",
}


@dataclasses.dataclass
class PreviewDecoderSource:
    """A diffusers AutoencoderTiny folder (downloaded or local), whose decoder is exported to
    preview_decoder/."""

    folder: Path
    provenance: dict


def _other_latent_space(source: str) -> str | None:
    """The model family a known tiny autoencoder was made for, from its hub id or folder name."""
    name = source.rstrip("/").rsplit("/", 1)[-1].lower().replace("-", "_")
    for prefix, family in OTHER_LATENT_SPACES.items():
        if name == prefix or name.startswith((prefix + "_", prefix + ".")):
            return family
    return None


def _preview_decoder_config(folder: Path, what: str) -> dict:
    """config.json of an AutoencoderTiny (TAESD) folder (see _component_config)."""
    return _component_config(folder, what, "AutoencoderTiny", "vae", DEFAULT_PREVIEW_DECODER,
                             label="AutoencoderTiny (TAESD)", note=" (the full VAE already decodes the final image)")


def resolve_preview_decoder(source: str, revision: str | None = None, out_dir: Path | None = None,
                            label: str | None = None) -> PreviewDecoderSource:
    """SOURCE of --preview-decoder: a hub id (the commit is recorded) or a local folder saved by
    `AutoencoderTiny.save_pretrained`. Refuses the tiny autoencoders known to be made for another
    latent space (TAESDXL, TAESD3, TAEF1, ...). Only the config is read here."""
    what = f"--preview-decoder {source!r}"
    if family := _other_latent_space(source):
        raise ExportError(
            f"{what}: this tiny autoencoder was made for {family}'s latent space, not SD v1.5's; its previews of "
            f"this model's latents would show wrong colours and shapes\n"
            f"Fix: use SD v1.x's {DEFAULT_PREVIEW_DECODER} (the default of a bare --preview-decoder)"
        )
    path = Path(source)
    if path.is_dir():
        folder = path
        prov = _folder_provenance(folder, out_dir, label)
    elif looks_like_hub_id(source):
        log(f"downloading the preview decoder from {source} ...")
        try:
            folder, commit = download(source, revision, PREVIEW_PATTERNS)
        except ExportError as e:
            offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
            cause = str(e).split("\n", 1)[0]
            raise ExportError(
                f"{what}: {cause}{' (HF_HUB_OFFLINE is set: the hub is not asked)' if offline else ''}\n"
                f"Fix: on a machine with network, `AutoencoderTiny.from_pretrained({source!r}).save_pretrained(DIR)` and "
                f"pass --preview-decoder DIR, or leave out --preview-decoder (previews then use the latent->RGB matrix)"
            ) from None
        prov = {"kind": "hub", "source": source, "revision": commit}
    else:
        raise ExportError(
            f"{what}: neither a folder nor a hub id\n"
            f"Fix: pass an AutoencoderTiny folder (with config.json) or a hub id such as {DEFAULT_PREVIEW_DECODER}"
        )
    _preview_decoder_config(folder, what)
    prov["sha256"] = {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file() and p.suffix in (".json", ".safetensors", ".bin")}
    return PreviewDecoderSource(folder, prov)


def load_preview_decoder(source: PreviewDecoderSource):
    """The AutoencoderTiny in float32, eval mode."""
    from diffusers import AutoencoderTiny

    what = f"preview decoder {source.provenance['source']}"
    _preview_decoder_config(source.folder, what)
    try:
        return AutoencoderTiny.from_pretrained(str(source.folder), dtype=torch.float32).eval()
    except Exception as e:
        raise ExportError(
            f"cannot load the {what} from {source.folder}: {type(e).__name__}: {e}\n"
            f"Fix: pass a folder saved by `AutoencoderTiny.save_pretrained` (config.json + diffusion_pytorch_model.safetensors)"
        ) from None


def preview_scale_factor(tiny) -> int:
    """Image pixels per latent of an AutoencoderTiny's decoder (one upsampling between blocks)."""
    c = tiny.config
    return int(c.upsampling_scaling_factor) ** (len(c.num_decoder_blocks) - 1)


def check_preview_decoder_base(tiny, latent_channels: int, vae_scale_factor: int, label: str) -> None:
    """Refuses a tiny autoencoder whose decoder does not take this model's latents to an image of
    the VAE's size (other latent channels: another model family; other upsampling: another VAE)."""
    c = tiny.config
    differ = []
    if c.latent_channels != latent_channels:
        differ.append(f"{c.latent_channels} latent channels (preview decoder) vs {latent_channels} (this model's UNet)")
    if preview_scale_factor(tiny) != vae_scale_factor:
        differ.append(f"upsampling x{preview_scale_factor(tiny)} (preview decoder) vs this model's VAE scale factor {vae_scale_factor}")
    if c.out_channels != 3:
        differ.append(f"{c.out_channels} output channels (previews are RGB: 3)")
    if getattr(c, "shift_factor", None):
        differ.append(f"shift_factor {c.shift_factor} (SD v1.x pipelines decode latents / scaling_factor, unshifted)")
    if differ:
        raise ExportError(
            f"preview decoder {label} was made for another model: {'; '.join(differ)}\n"
            f"Fix: pass the tiny autoencoder made for this model's latent space (SD v1.x: {DEFAULT_PREVIEW_DECODER}), "
            f"or leave out --preview-decoder"
        )


def preview_decoder_record(tiny, source: PreviewDecoderSource, architecture: str = "taesd") -> dict:
    """What the manifest's components.preview_decoder holds besides export_component's record
    (contract: architecture, source, params; plus the source's revision and hashes)."""
    c = tiny.config
    return {
        "architecture": architecture,
        "source": source.provenance["source"],
        "source_kind": source.provenance["kind"],
        "revision": source.provenance["revision"],
        "source_sha256": source.provenance.get("sha256", {}),
        "params": sum(p.numel() for p in tiny.decoder.parameters()),
        "latent_channels": c.latent_channels,
        "scale_factor": preview_scale_factor(tiny),
        "scaling_factor": float(c.scaling_factor),
        "decoder_block_out_channels": list(c.decoder_block_out_channels),
        "num_decoder_blocks": list(c.num_decoder_blocks),
    }


# --------------------------------------------------------------------------------------------
# LoRA fusing
# --------------------------------------------------------------------------------------------


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
def fused_loras(pipe, loras: list[tuple[Lora, float]], components=("unet", "text_encoder")):
    """Load, weight and fuse LoRAs exactly as a user would; undo it (bit-exactly) on exit.

    Inside the block the pipeline's modules carry the fused weights (W + sum_i w_i * alpha_i/r_i *
    B_i A_i, computed by peft). Yields the components that received LoRA layers. On exit the LoRAs
    are unfused and unloaded, and the base weights are restored from a snapshot so that unfuse
    rounding (W + d - d != W in float) never leaks into later exports.
    """
    names = []
    for lora, _ in loras:
        pipe.load_lora_weights(str(lora.file.parent), weight_name=lora.file.name, adapter_name=lora.name)
        names.append(lora.name)
    used = [c for c in components if any(True for _ in _peft_layers(pipe, [c]))]
    snapshot = {}
    for comp, name, module in _peft_layers(pipe, used):
        base = module.get_base_layer()
        snapshot[(comp, name)] = {k: v.detach().clone() for k, v in base.named_parameters(recurse=False)}
    pipe.set_adapters(names, adapter_weights=[w for _, w in loras])
    pipe.fuse_lora(components=used, lora_scale=1.0, adapter_names=names)
    try:
        yield used
    finally:
        pipe.unfuse_lora(components=used)
        pipe.unload_lora_weights()
        with torch.no_grad():
            for (comp, name), params in snapshot.items():
                module = dict(getattr(pipe, comp).named_modules())[name]
                for k, v in params.items():
                    current = getattr(module, k)
                    drift = (current - v).abs().max().item()
                    if drift > 1e-3 * max(1.0, v.abs().max().item()):
                        raise RuntimeError(f"unfuse drift {drift} in {comp}.{name}.{k}")
                    current.copy_(v)


# --------------------------------------------------------------------------------------------
# ONNX export of one component
# --------------------------------------------------------------------------------------------


class TextEncoderGraph(torch.nn.Module):
    def __init__(self, text_encoder):
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, input_ids):
        out = self.text_encoder(input_ids=input_ids, return_dict=True)
        return out.last_hidden_state, out.pooler_output


class ClipScorerGraph(torch.nn.Module):
    """CLIPModel.get_image_features (vision tower -> post layernorm on the CLS token ->
    visual_projection) and text_projection, applied to a text encoder's pooler_output: the two
    halves of CLIPModel.get_text_features the exported text_encoder does not already hold."""

    def __init__(self, clip):
        super().__init__()
        self.vision_model = clip.vision_model
        self.visual_projection = clip.visual_projection
        self.text_projection = clip.text_projection

    def forward(self, pixel_values, text_pooled):
        pooled = self.vision_model(pixel_values=pixel_values, return_dict=True).pooler_output
        return self.visual_projection(pooled), self.text_projection(text_pooled)


class UNetGraph(torch.nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.unet(sample, timestep, encoder_hidden_states, return_dict=False)[0]


class UNetResidualGraph(torch.nn.Module):
    """The UNet with ControlNet residual inputs: `residuals` are the down-block ones in order, then
    the mid block's, passed to UNet2DConditionModel as down_block_additional_residuals /
    mid_block_additional_residual (added to its skip connections and mid-block output)."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states, *residuals):
        return self.unet(
            sample,
            timestep,
            encoder_hidden_states,
            down_block_additional_residuals=tuple(residuals[:-1]),
            mid_block_additional_residual=residuals[-1],
            return_dict=False,
        )[0]


class ControlNetGraph(torch.nn.Module):
    """ControlNetModel.forward as diffusers' StableDiffusionControlNetPipeline calls it (not guess
    mode): the residuals, already multiplied by conditioning_scale, down-block ones then mid."""

    def __init__(self, controlnet):
        super().__init__()
        self.controlnet = controlnet

    def forward(self, sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale):
        down, mid = self.controlnet(
            sample,
            timestep,
            encoder_hidden_states,
            controlnet_cond=controlnet_cond,
            conditioning_scale=conditioning_scale,
            guess_mode=False,
            return_dict=False,
        )
        return (*down, mid)


class PreviewDecoderGraph(torch.nn.Module):
    """An AutoencoderTiny's decoder as a preview (contract): the scheduler's latents (scaled by
    the VAE's scaling_factor) -> RGB in [0, 1]. As diffusers' pipeline decodes with it
    (`vae.decode(latents / scaling_factor)`; TAESD's factor is 1.0), then DecoderTiny's [-1, 1]
    mapped back: clamp((x + 1) / 2, 0, 1)."""

    def __init__(self, tiny):
        super().__init__()
        self.tiny = tiny
        self.scaling_factor = float(tiny.config.scaling_factor)

    def forward(self, latents):
        if self.scaling_factor != 1.0:
            latents = latents / self.scaling_factor
        image = self.tiny.decode(latents, return_dict=False)[0]
        return ((image + 1) / 2).clamp(0, 1)


class VaeDecoderGraph(torch.nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, latent_sample):
        return self.vae.decode(latent_sample, return_dict=False)[0]


class VaeEncoderGraph(torch.nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, sample):
        # Optimum's vae_encoder output: the DiagonalGaussian parameters (mean ++ logvar on dim 1).
        return self.vae.encode(sample, return_dict=True).latent_dist.parameters


@dataclasses.dataclass
class Spec:
    """How to export and check one kind of component."""

    kind: str  # text_encoder | unet | controlnet | vae_decoder | vae_encoder | clip_image_encoder
    graph: torch.nn.Module
    args: tuple
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict
    external_data: bool
    checks: list[tuple[dict, list]]  # (onnx feeds as float32/int numpy, torch reference outputs)
    ort_model_type: str | None  # model type of onnxruntime.transformers' optimizer (None: no fusions)
    keep_fp32: bool = False  # stays float32 in an fp16 export


def _latent_multiple(unet) -> int:
    return 2 ** (len(unet.config.block_out_channels) - 1)


def text_encoder_spec(text_encoder, pad: int = CLIP_EOS) -> Spec:
    """`pad`: the tokenizer's pad id (SD v1.5: EOS 49407, SD 2.x: "!" 0), used in the inputs."""
    seq = text_encoder.config.max_position_embeddings
    # CLIP's real ids (SD v1.5's text_encoder/config.json still carries the legacy 0/1/2).
    bos, eos = CLIP_BOS, CLIP_EOS
    ids = torch.full((1, seq), pad, dtype=torch.int32)
    ids[0, :5] = torch.tensor([bos, 320, 1929, 530, eos], dtype=torch.int32)
    gen = torch.Generator().manual_seed(7)
    check_ids = torch.randint(0, bos, (2, seq), generator=gen, dtype=torch.int64).to(torch.int32)
    check_ids[:, 0] = bos
    check_ids[0, 10], check_ids[0, 11:] = eos, pad
    check_ids[1, 30], check_ids[1, 31:] = eos, pad
    with torch.no_grad():
        ref = text_encoder(input_ids=check_ids.long(), return_dict=True)
    return Spec(
        "text_encoder",
        TextEncoderGraph(text_encoder),
        (ids,),
        ["input_ids"],
        ["last_hidden_state", "pooler_output"],
        {
            "input_ids": {0: "batch_size", 1: "sequence_length"},
            "last_hidden_state": {0: "batch_size", 1: "sequence_length"},
            "pooler_output": {0: "batch_size"},
        },
        external_data=False,
        checks=[({"input_ids": check_ids.numpy()}, [ref.last_hidden_state.numpy(), ref.pooler_output.numpy()])],
        ort_model_type="clip",
    )


def clip_scorer_spec(clip, text_encoder) -> Spec:
    """Checks: random pixels with random pooled text, and pixels with the pipeline's own text
    encoder's pooler_output for real prompts against CLIPModel.get_text_features on the same ids
    (which proves the text side end to end)."""
    vision = clip.config.vision_config
    size = vision.image_size
    hidden = clip.config.text_config.hidden_size
    gen = torch.Generator().manual_seed(9)
    pixels = torch.randn(1, 3, size, size, generator=gen)
    pooled = torch.randn(1, hidden, generator=gen)
    checks = []
    x = torch.randn(2, 3, size, size, generator=gen)
    t = torch.randn(3, hidden, generator=gen)
    with torch.no_grad():
        ref_img = clip.get_image_features(pixel_values=x).pooler_output
        ref_txt = clip.text_projection(t)
    checks.append(({"pixel_values": x.numpy(), "text_pooled": t.numpy()}, [ref_img.numpy(), ref_txt.numpy()]))
    seq = text_encoder.config.max_position_embeddings
    ids = torch.full((2, seq), CLIP_EOS, dtype=torch.int64)
    ids[:, 0] = CLIP_BOS
    ids[0, 1:5] = torch.tensor([320, 1929, 530, 2442])
    ids[1, 1:3] = torch.tensor([1237, 3365])
    x = torch.randn(1, 3, size, size, generator=gen)
    with torch.no_grad():
        te_pooled = text_encoder(input_ids=ids, return_dict=True).pooler_output
        ref_img = clip.get_image_features(pixel_values=x).pooler_output
        ref_txt = clip.get_text_features(input_ids=ids).pooler_output
    checks.append(({"pixel_values": x.numpy(), "text_pooled": te_pooled.numpy()}, [ref_img.numpy(), ref_txt.numpy()]))
    n_params = sum(p.numel() for p in clip.vision_model.parameters())
    return Spec(
        "clip_image_encoder",
        ClipScorerGraph(clip),
        (pixels, pooled),
        ["pixel_values", "text_pooled"],
        ["image_embeds", "text_embeds"],
        {
            "pixel_values": {0: "image_batch"},
            "text_pooled": {0: "text_batch"},
            "image_embeds": {0: "image_batch"},
            "text_embeds": {0: "text_batch"},
        },
        external_data=n_params * 4 > (1 << 30),  # ViT-L/14's vision tower: 1.2 GB
        checks=checks,
        ort_model_type=None,  # no fusions: it runs once per image, after the timed run
        keep_fp32=True,  # a quality measure, not a speed one
    )


def residual_names(count: int, prefix: str) -> list[str]:
    """ONNX names of `count` down-block residuals then the mid one: prefix "down_block_res_sample"
    (ControlNet outputs) or "down_block_additional_residual" (UNet inputs)."""
    mid = "mid_block_res_sample" if prefix == "down_block_res_sample" else "mid_block_additional_residual"
    return [f"{prefix}_{i}" for i in range(count)] + [mid]


def _residual_axes(names: list[str], layout: list[tuple[int, int]]) -> dict:
    return {
        n: {0: "batch_size", 2: "height" if f == 1 else f"height_div{f}", 3: "width" if f == 1 else f"width_div{f}"}
        for n, (_, f) in zip(names, layout)
    }


def _down(size: int, factor: int) -> int:
    while factor > 1:  # each stride-2 conv (kernel 3, padding 1) gives ceil(n / 2)
        size, factor = (size + 1) // 2, factor // 2
    return size


def random_residuals(layout: list[tuple[int, int]], batch: int, h: int, w: int, gen: torch.Generator, std: float = 1.0) -> list[torch.Tensor]:
    """Residuals of the shapes `layout` gives for a [batch, C, h, w] latent, N(0, std^2)."""
    return [torch.randn(batch, ch, _down(h, f), _down(w, f), generator=gen) * std for ch, f in layout]


def unet_spec(unet, residuals: bool = False) -> Spec:
    """The UNet: sample, timestep (0-d), encoder_hidden_states -> out_sample. `residuals=True`
    adds the ControlNet residual inputs (`residual_names(N, "down_block_additional_residual")`,
    shapes from `residual_layout(unet)`), and its checks feed non-zero residuals."""
    cfg = unet.config
    size = cfg.sample_size
    sample = torch.randn(2, cfg.in_channels, size, size, generator=torch.Generator().manual_seed(0))
    timestep = torch.tensor(981.0, dtype=torch.float32)  # 0-d, like Optimum's dummy input
    ehs = torch.randn(2, 77, cfg.cross_attention_dim, generator=torch.Generator().manual_seed(1))
    m = _latent_multiple(unet)
    layout = residual_layout(unet) if residuals else []
    res_names = residual_names(len(layout) - 1, "down_block_additional_residual") if residuals else []
    res_gen = torch.Generator().manual_seed(13)  # apart from `gen`: the plain UNet's checks stay as they were
    args = (sample, timestep, ehs, *random_residuals(layout, 2, size, size, res_gen, RESIDUAL_STD))
    checks = []
    gen = torch.Generator().manual_seed(3)
    # The native size at batch 2 (a guided step), and a smaller non-square one at batch 1.
    for batch, h, w, t in ((2, size, size, 999), (1, max(m, size // 2 // m * m), max(m, (3 * size // 8) // m * m), 1)):
        x = torch.randn(batch, cfg.in_channels, h, w, generator=gen)
        e = torch.randn(batch, 77, cfg.cross_attention_dim, generator=gen)
        tt = torch.tensor(float(t))
        res = random_residuals(layout, batch, h, w, res_gen, RESIDUAL_STD)
        extra = {"down_block_additional_residuals": tuple(res[:-1]), "mid_block_additional_residual": res[-1]} if residuals else {}
        with torch.no_grad():
            ref = unet(x, tt, e, return_dict=False, **extra)[0]
        feeds = {"sample": x.numpy(), "timestep": tt.numpy(), "encoder_hidden_states": e.numpy()}
        feeds.update({n: r.numpy() for n, r in zip(res_names, res)})
        checks.append((feeds, [ref.numpy()]))
    return Spec(
        "unet",
        UNetResidualGraph(unet) if residuals else UNetGraph(unet),
        args,
        ["sample", "timestep", "encoder_hidden_states", *res_names],
        ["out_sample"],
        {
            "sample": {0: "batch_size", 2: "height", 3: "width"},
            "timestep": {},
            "encoder_hidden_states": {0: "batch_size", 1: "sequence_length"},
            **_residual_axes(res_names, layout),
            "out_sample": {0: "batch_size", 2: "height", 3: "width"},
        },
        external_data=True,
        checks=checks,
        ort_model_type="unet",
    )


def controlnet_spec(controlnet, sample_size: int, vae_scale_factor: int) -> Spec:
    """A ControlNetModel (contract): sample [B, 4, h, w], timestep (0-d), encoder_hidden_states,
    controlnet_cond [B, 3, h * vae_scale_factor, w * vae_scale_factor] in [0, 1], conditioning_scale
    (0-d) -> `residual_names(N, "down_block_res_sample")`, already scaled. Checked at the native
    latent size (`sample_size`, batch 2, scale 1) and a smaller non-square one (batch 1, scale 0.5)."""
    cfg = controlnet.config
    layout = residual_layout(controlnet)
    names = residual_names(len(layout) - 1, "down_block_res_sample")
    m = 2 ** (len(cfg.block_out_channels) - 1)
    size, chans = sample_size, cfg.conditioning_channels

    def inputs(batch, h, w, t, scale, gen):
        return (
            torch.randn(batch, cfg.in_channels, h, w, generator=gen),
            torch.tensor(float(t)),
            torch.randn(batch, 77, cfg.cross_attention_dim, generator=gen),
            torch.rand(batch, chans, h * vae_scale_factor, w * vae_scale_factor, generator=gen),
            torch.tensor(float(scale)),
        )

    args = inputs(2, size, size, 981, 1.0, torch.Generator().manual_seed(0))
    checks = []
    gen = torch.Generator().manual_seed(3)
    for batch, h, w, t, scale in ((2, size, size, 999, 1.0), (1, max(m, size // 2 // m * m), max(m, (3 * size // 8) // m * m), 1, 0.5)):
        x, tt, e, cond, s = inputs(batch, h, w, t, scale, gen)
        with torch.no_grad():
            down, mid = controlnet(x, tt, e, controlnet_cond=cond, conditioning_scale=scale, guess_mode=False, return_dict=False)
        feeds = {"sample": x.numpy(), "timestep": tt.numpy(), "encoder_hidden_states": e.numpy(),
                 "controlnet_cond": cond.numpy(), "conditioning_scale": s.numpy()}
        checks.append((feeds, [r.numpy() for r in (*down, mid)]))
    return Spec(
        "controlnet",
        ControlNetGraph(controlnet),
        args,
        ["sample", "timestep", "encoder_hidden_states", "controlnet_cond", "conditioning_scale"],
        names,
        {
            "sample": {0: "batch_size", 2: "height", 3: "width"},
            "timestep": {},
            "encoder_hidden_states": {0: "batch_size", 1: "sequence_length"},
            "controlnet_cond": {0: "batch_size", 2: "image_height", 3: "image_width"},
            "conditioning_scale": {},
            **_residual_axes(names, layout),
        },
        external_data=True,
        checks=checks,
        ort_model_type="unet",  # a UNet's down half: the same attention / GroupNorm / GELU fusions
    )


def vae_decoder_spec(vae, latent_size: int) -> Spec:
    lat = torch.randn(1, vae.config.latent_channels, 8, 8, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(4)
    checks = []
    small = max(4, latent_size * 3 // 8)
    for shape in ((1, vae.config.latent_channels, latent_size, latent_size), (1, vae.config.latent_channels, small, small + 2)):
        z = torch.randn(*shape, generator=gen) / vae.config.scaling_factor
        with torch.no_grad():
            ref = vae.decode(z, return_dict=False)[0]
        checks.append(({"latent_sample": z.numpy()}, [ref.numpy()]))
    return Spec(
        "vae_decoder",
        VaeDecoderGraph(vae),
        (lat,),
        ["latent_sample"],
        ["sample"],
        {
            "latent_sample": {0: "batch_size", 2: "height_latent", 3: "width_latent"},
            "sample": {0: "batch_size", 2: "height", 3: "width"},
        },
        external_data=False,
        checks=checks,
        ort_model_type="vae",
        keep_fp32=True,  # SD's VAE decoder overflows float16 on some latents (NaN / black images)
    )


def preview_decoder_spec(tiny, latent_size: int) -> Spec:
    """The preview decoder (contract): latents [B, C, h, w] as the scheduler holds them -> image
    [B, 3, h * s, w * s] in [0, 1]. Checked against `PreviewDecoderGraph` in torch at the native
    latent size and a smaller non-square one (batch 2), on latents N(0, 1) like a step's x0
    (some beyond DecoderTiny's soft clamp at +-3)."""
    graph = PreviewDecoderGraph(tiny).eval()
    channels = tiny.config.latent_channels
    lat = torch.randn(1, channels, 8, 8, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(6)
    checks = []
    small = max(4, latent_size * 3 // 8)
    for shape in ((1, channels, latent_size, latent_size), (2, channels, small, small + 2)):
        z = torch.randn(*shape, generator=gen) * 1.5
        with torch.no_grad():
            ref = graph(z)
        checks.append(({"latents": z.numpy()}, [ref.numpy()]))
    return Spec(
        "preview_decoder",
        graph,
        (lat,),
        ["latents"],
        ["image"],
        {
            "latents": {0: "batch_size", 2: "height_latent", 3: "width_latent"},
            "image": {0: "batch_size", 2: "height", 3: "width"},
        },
        external_data=False,  # small: weights inside the file (contract)
        checks=checks,
        ort_model_type=None,  # plain convolutions: no fusions to make
    )


def vae_encoder_spec(vae, image_size: int) -> Spec:
    img = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    gen = torch.Generator().manual_seed(5)
    checks = []
    for shape in ((1, 3, image_size, image_size), (1, 3, max(48, image_size * 3 // 8 // 8 * 8), max(64, image_size // 2 // 8 * 8))):
        x = torch.rand(*shape, generator=gen) * 2 - 1
        with torch.no_grad():
            ref = vae.encode(x).latent_dist.parameters
        checks.append(({"sample": x.numpy()}, [ref.numpy()]))
    return Spec(
        "vae_encoder",
        VaeEncoderGraph(vae),
        (img,),
        ["sample"],
        ["latent_parameters"],
        {
            "sample": {0: "batch_size", 2: "height", 3: "width"},
            "latent_parameters": {0: "batch_size", 2: "height_latent", 3: "width_latent"},
        },
        external_data=False,
        checks=checks,
        ort_model_type="vae",
        keep_fp32=True,
    )


def torch_to_onnx(spec: Spec, tmp: Path) -> Path:
    """TorchScript-based torch.onnx.export (what Optimum uses), opset 17, constant folding on.
    Graphs over 2 GB get their weights as external files beside `tmp/torch/model.onnx`."""
    path = tmp / "torch" / "model.onnx"
    path.parent.mkdir(parents=True)
    with torch.no_grad():
        torch.onnx.export(
            spec.graph,
            spec.args,
            str(path),
            input_names=spec.input_names,
            output_names=spec.output_names,
            dynamic_axes=spec.dynamic_axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    return path


def save_onnx(model: onnx.ModelProto, path: Path, external_data: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
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


def _patch_ort_unet_fusion() -> None:
    """onnxruntime <= 1.31's UNet attention fusion calls int() on a 1-element array, which
    NumPy >= 2.4 rejects; read the head count the same way without that call."""
    from onnxruntime.transformers import optimizer  # noqa: F401  (puts its folder on sys.path)
    import fusion_attention_unet as fau  # onnxruntime.transformers imports its modules top-level

    if getattr(fau.FusionAttentionUnet, "_speedscape_patched", False):
        return
    original = fau.FusionAttentionUnet.get_num_heads

    def get_num_heads(self, reshape_q, is_torch2=False):
        if is_torch2:
            parent = self.model.get_parent(reshape_q, 1)
            if parent is not None and parent.op_type == "Concat" and len(parent.input) == 4:
                value = self.model.get_constant_value(parent.input[2])
                if isinstance(value, np.ndarray) and value.size == 1 and int(value.reshape(-1)[0]) > 0:
                    return int(value.reshape(-1)[0])
            return 0
        return original(self, reshape_q, is_torch2)

    fau.FusionAttentionUnet.get_num_heads = get_num_heads
    fau.FusionAttentionUnet._speedscape_patched = True


def ort_fusions(model: onnx.ModelProto, model_type: str, fp16: bool, target: str):
    """ONNX Runtime's own Stable Diffusion graph fusions (what its optimize_pipeline.py applies),
    for `target` "cuda" (all of them) or "cpu" (those the CPU provider has kernels for)."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    _patch_ort_unet_fusion()
    options = FusionOptions(model_type)
    if model_type == "unet":
        # As onnxruntime's optimize_pipeline.py: packed K/V and Q/K/V for the fp16 attention
        # kernels only; bias-add fusion always (onnxruntime >= 1.15).
        options.enable_packed_kv = fp16
        options.enable_packed_qkv = fp16
        options.enable_bias_add = True
    if target == "cpu":
        for key in CUDA_ONLY_FUSIONS:
            if hasattr(options, key):
                setattr(options, key, False)
    m = optimize_model(
        model,
        model_type=model_type,
        num_heads=0,
        hidden_size=0,
        opt_level=0,
        optimization_options=options,
        use_gpu=target == "cuda",
    )
    fused = {k: int(v) for k, v in m.get_fused_operator_statistics().items() if v}
    return m, fused


def _patch_ort_float16() -> None:
    """The float16 converter reads a whole initializer just to learn its shape; with the weights
    left on disk (see `transform_graph`) the shape comes from the tensor's dims instead."""
    from onnxruntime.transformers import onnx_model  # noqa: F401  (imports float16 top-level)
    import float16 as f16

    def make_value_info_from_tensor(tensor):
        return onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims))

    f16.make_value_info_from_tensor = make_value_info_from_tensor


def to_fp16(m) -> None:
    """float16 weights and activations, float16 inputs/outputs (speedscape converts at the edge)."""
    _patch_ort_float16()
    m.convert_float_to_float16(keep_io_types=False)
    m.topological_sort()  # the converter appends its Cast nodes at the end


def _set_external(tensor, location: str, offset: int, length: int) -> None:
    tensor.ClearField("raw_data")
    del tensor.external_data[:]
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    tensor.data_location = onnx.TensorProto.EXTERNAL


@contextlib.contextmanager
def _spill_new_initializers(path: Path, threshold: int = 1 << 16):
    """While active, every large initializer a fusion adds (packed Q/K/V, NHWC-transposed conv
    weights: together more than 2 GB for SD v1.5) goes to `path` at once and stays referenced as
    external data, so the in-memory graph stays small enough for shape inference (< 2 GB)."""
    from onnxruntime.transformers import optimizer  # noqa: F401
    import onnx_model

    original = onnx_model.OnnxModel.add_initializer
    spilled = []

    def add_initializer(self, tensor, graph_name=None):
        if tensor.HasField("raw_data") and len(tensor.raw_data) >= threshold:
            with open(path, "ab") as f:
                offset = f.tell()
                f.write(tensor.raw_data)
            _set_external(tensor, path.name, offset, len(tensor.raw_data))
            spilled.append(tensor.name)
        return original(self, tensor, graph_name)

    onnx_model.OnnxModel.add_initializer = add_initializer
    try:
        yield spilled
    finally:
        onnx_model.OnnxModel.add_initializer = original


def _read_external(tensor, base: Path) -> bytes:
    from onnx.external_data_helper import ExternalDataInfo

    info = ExternalDataInfo(tensor)
    with open(base / info.location, "rb") as f:
        f.seek(info.offset or 0)
        return f.read(info.length) if info.length else f.read()


@contextlib.contextmanager
def _retyped_weights_read_as_fp16(base: Path):
    """The float16 converter retypes weights that are still float32 on disk; anything that reads
    one before `transform_graph` writes it (onnxruntime's shape inference does) gets it converted."""
    from onnx import numpy_helper
    from onnx.external_data_helper import uses_external_data
    from float16 import convert_np_to_float16

    original = numpy_helper.to_array

    def to_array(tensor, base_dir=""):
        if tensor.data_type == onnx.TensorProto.FLOAT16 and uses_external_data(tensor):
            raw = _read_external(tensor, base)
            if len(raw) == 4 * int(np.prod(tensor.dims)):
                return convert_np_to_float16(np.frombuffer(raw, dtype=np.float32)).reshape(tuple(tensor.dims))
        return original(tensor, base_dir)

    numpy_helper.to_array = to_array
    try:
        yield
    finally:
        numpy_helper.to_array = original


def transform_graph(
    src: Path,
    dst: Path,
    model_type: str | None,
    fp16: bool,
    external_data: bool = True,
    target: str = "cuda",
    spill_threshold: int = 1 << 16,
) -> tuple[dict, int]:
    """Fuse (`model_type`: onnxruntime's SD fusions for `target`, "cuda" or "cpu") and/or convert
    to float16, from `src` into
    `dst`, without holding the weights in memory: only the graph is loaded; the fusions read the
    few weights they rewrite on demand, and the rest are streamed from src's files into dst's data
    file (converted to float16 where the converter retyped them). SD v1.5's 3.4 GB UNet would
    otherwise need more than 24 GB of RAM in onnxruntime's optimizer.
    """
    from onnx.external_data_helper import _get_all_tensors, uses_external_data
    from onnxruntime.transformers import optimizer  # noqa: F401  (puts its folder on sys.path)
    from onnx_model import OnnxModel  # the class onnxruntime's fusions subclass

    model = onnx.load(str(src), load_external_data=False)
    fused = {}
    cwd = os.getcwd()
    os.chdir(src.parent)  # external weights resolve relative to the working directory
    try:
        with (
            _spill_new_initializers(src.parent / "spilled.onnx_data", spill_threshold) as spilled,
            _retyped_weights_read_as_fp16(src.parent),
        ):
            if model_type:
                m, fused = ort_fusions(model, model_type, fp16, target)
            else:
                m = OnnxModel(model)
            if fp16:
                to_fp16(m)
        model = m.model
        n_spilled = len(spilled)
    finally:
        os.chdir(cwd)
    if model_type and not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))  # fused contrib ops
    if model.ir_version > IR_VERSION:
        model.ir_version = IR_VERSION

    from float16 import convert_np_to_float16

    dst.parent.mkdir(parents=True, exist_ok=True)
    data_name = dst.name + "_data"
    with open(dst.parent / data_name, "wb") as out:
        for tensor in _get_all_tensors(model):
            if uses_external_data(tensor):
                raw = _read_external(tensor, src.parent)
                numel = int(np.prod(tensor.dims)) if len(tensor.dims) else 1
                if tensor.data_type == onnx.TensorProto.FLOAT16 and len(raw) == 4 * numel:
                    raw = convert_np_to_float16(np.frombuffer(raw, dtype=np.float32)).tobytes()
                del tensor.external_data[:]
                tensor.data_location = onnx.TensorProto.DEFAULT
            elif tensor.HasField("raw_data") and len(tensor.raw_data) >= 1024:
                raw = tensor.raw_data
            else:
                continue
            if not external_data:
                tensor.raw_data = raw
                continue
            offset = out.tell()
            out.write(raw)
            _set_external(tensor, data_name, offset, len(raw))
    if not external_data:
        (dst.parent / data_name).unlink()
    onnx.save_model(model, str(dst))
    onnx.checker.check_model(str(dst))
    return fused, n_spilled


def ort_providers(need_cuda: bool) -> list[str] | None:
    available = ort.get_available_providers()
    if need_cuda:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"] if "CUDAExecutionProvider" in available else None
    return ["CPUExecutionProvider"]


def check_graph(path: Path, spec: Spec, dtype: str, providers: list[str], tolerance: float, threads: int = 0) -> dict:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    types = {i.name: i.type for i in sess.get_inputs()}
    worst_abs, worst_rel, cases = 0.0, 0.0, []
    for feeds, refs in spec.checks:
        cast = {}
        for k, v in feeds.items():
            if types[k] == "tensor(float16)":
                v = v.astype(np.float16)
            elif types[k] == "tensor(float)":
                v = v.astype(np.float32)
            elif types[k] == "tensor(int64)":
                v = v.astype(np.int64)
            cast[k] = v
        got = sess.run(None, cast)
        for name, g, r in zip(spec.output_names, got, refs):
            g64, r64 = np.asarray(g, dtype=np.float64), np.asarray(r, dtype=np.float64)
            if not np.isfinite(g64).all():
                raise ExportError(f"{path}: {name} has NaN/inf for inputs {describe_feeds(feeds)}")
            err = float(np.abs(g64 - r64).max())
            scale = max(1.0, float(np.abs(r64).max()))
            worst_abs, worst_rel = max(worst_abs, err), max(worst_rel, err / scale)
            cases.append({"output": name, "inputs": describe_feeds(feeds), "max_abs_err": err})
    return {
        "provider": sess.get_providers()[0],
        "dtype": dtype,
        "max_abs_err": worst_abs,
        "max_rel_err": worst_rel,
        "tolerance": tolerance,
        "passed": worst_rel <= tolerance,
        "cases": cases,
    }


def describe_feeds(feeds: dict) -> str:
    return ", ".join(f"{k}{list(np.shape(v))}" for k, v in feeds.items())


@dataclasses.dataclass
class Settings:
    dtype: str = "fp32"
    optimize: str = "none"  # "none" | "cuda" | "cpu"
    verify: bool = True
    check_threads: int = 0  # ONNX Runtime CPU threads for the checks (0: all cores)
    tolerance: dict = dataclasses.field(default_factory=lambda: dict(TOLERANCE))


def export_component(spec: Spec, folder: Path, settings: Settings) -> dict:
    """Export one component into `folder` (model.onnx [+ model.onnx_data]); return its record."""
    folder.mkdir(parents=True, exist_ok=True)
    dtype = "fp32" if spec.keep_fp32 else settings.dtype
    record = {"kind": spec.kind, "dtype": dtype, "optimizations": []}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        plain = torch_to_onnx(spec, tmp)
        out = folder / "model.onnx"
        fuse = settings.optimize != "none"
        if fuse or dtype == "fp16":
            # torch writes a graph over 2 GB as one file per weight; onnxruntime's shape inference
            # fails on that layout, so first gather the weights into one data file (streamed).
            single = tmp / "plain" / "model.onnx"
            transform_graph(plain, single, None, fp16=False)
            plain = single
            model_type = spec.ort_model_type if fuse else None
            fused, spilled = transform_graph(plain, out, model_type, dtype == "fp16", spec.external_data, target=settings.optimize)
            expected = EXPECTED_FUSIONS.get(settings.optimize, {}).get(model_type, ())
            if missing := [op for op in expected if not fused.get(op)]:
                log(f"WARNING: {folder.name}: onnxruntime's optimizer fused no {', '.join(missing)}; the graph runs, but slower")
                record["fusion_warning"] = f"no {', '.join(missing)} fused"
            if model_type:
                record["optimizations"].append({"name": f"onnxruntime.transformers fusions ({model_type}, {settings.optimize})", "fused_operators": fused, "new_initializers_streamed": spilled})
            if dtype == "fp16":
                record["optimizations"].append({"name": "float16", "io": "float16"})
        else:
            model = onnx.load(str(plain))
            if model.ir_version > IR_VERSION:
                model.ir_version = IR_VERSION
            save_onnx(model, out, spec.external_data)
            del model
        record["export_s"] = round(time.perf_counter() - t0, 2)
        if settings.verify:
            tol = settings.tolerance[dtype]
            providers = ort_providers(need_cuda=settings.optimize == "cuda")
            if providers is not None:
                record["check"] = check_graph(out, spec, dtype, providers, tol, settings.check_threads)
            else:
                # CUDA-fused operators (NhwcConv, GroupNorm, MultiHeadAttention, ...) have no CPU
                # kernels: check the unfused graph of the same weights on CPU now; the fused one is
                # checked by `speedscape models verify` on the GPU box.
                ref = plain
                if dtype == "fp16":
                    ref = tmp / "unfused" / "model.onnx"
                    transform_graph(plain, ref, None, fp16=True)
                record["check"] = check_graph(ref, spec, dtype, ["CPUExecutionProvider"], tol, settings.check_threads)
                record["check"]["graph"] = "unfused (the CUDA-fused graph needs onnxruntime-gpu)"
            if not record["check"]["passed"]:
                c = record["check"]
                raise ExportError(
                    f"{folder.name}: ONNX Runtime differs from torch by {c['max_abs_err']:.3e} "
                    f"(relative {c['max_rel_err']:.3e} > tolerance {c['tolerance']:.1e}); the export is wrong\n"
                    f"Fix: report it with the versions in models/requirements.txt, or raise --tolerance if you know why"
                )
    return record


# --------------------------------------------------------------------------------------------
# The whole pipeline
# --------------------------------------------------------------------------------------------


def load_pipeline(folder: Path) -> StableDiffusionPipeline:
    try:
        pipe = StableDiffusionPipeline.from_pretrained(
            str(folder),
            dtype=torch.float32,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    except Exception as e:
        raise ExportError(f"cannot load a StableDiffusionPipeline from {folder}: {type(e).__name__}: {e}") from None
    pipe.set_progress_bar_config(disable=True)
    for comp in (pipe.unet, pipe.vae, pipe.text_encoder):
        comp.eval()
    return pipe


def _read_config(folder: Path, rel: str) -> dict:
    p = folder / rel
    return json.loads(p.read_text()) if p.is_file() else {}


def model_family(folder: Path, source: str | None = None) -> tuple[str, list[str]]:
    """The pipeline's family (`sd15`, `sd2`, `sd-turbo`) and the facts it was read from.

    From the configs: SD 2.x's UNet uses linear projections in its transformers
    (`use_linear_projection`) and its text encoder is 1024 wide (OpenCLIP ViT-H; SD v1.5: 768,
    1x1 convs); SD-Turbo is that structure with EulerDiscreteScheduler at `trailing` spacing
    (SD 2.x's own config is PNDM/DDIM). A known hub id (`KNOWN_FAMILIES`) decides; when the
    configs say otherwise the evidence says so too."""
    te = _read_config(folder, "text_encoder/config.json")
    unet = _read_config(folder, "unet/config.json")
    sched = _read_config(folder, "scheduler/scheduler_config.json")
    width = te.get("hidden_size")
    linear = bool(unet.get("use_linear_projection", False))
    evidence = [
        f"text encoder hidden_size {width}, {te.get('num_hidden_layers')} layers, {te.get('hidden_act')}",
        f"UNet use_linear_projection {str(linear).lower()}, attention_head_dim {unet.get('attention_head_dim')}, "
        f"cross_attention_dim {unet.get('cross_attention_dim')}",
        f"scheduler {sched.get('_class_name')} timestep_spacing {sched.get('timestep_spacing')}",
    ]
    sd2 = linear or width == 1024
    turbo = sd2 and sched.get("_class_name") == "EulerDiscreteScheduler" and sched.get("timestep_spacing") == "trailing"
    family = "sd-turbo" if turbo else "sd2" if sd2 else "sd15"
    known = KNOWN_FAMILIES.get(source or "")
    if known is not None:
        evidence.append(f"hub id {source}: {known}")
        if known != family:
            evidence.append(f"the configs alone say {family}; the hub id decides")
        family = known
    return family, evidence


def text_encoder_record(pipe) -> dict:
    """What the pipeline feeds the UNet from the text encoder, and the tokenizer's padding."""
    tok = pipe.tokenizer
    return {
        "output": "last_hidden_state",
        "layers": pipe.text_encoder.config.num_hidden_layers,
        "hidden_size": pipe.text_encoder.config.hidden_size,
        "note": "final layer norm over all the config's layers: StableDiffusionPipeline.encode_prompt's "
                "text_encoder(ids)[0] with clip_skip None",
        "pad_token": tok.pad_token,
        "pad_token_id": tok.pad_token_id,
    }


def human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return str(n)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def copy_verbatim(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def scheduler_note(text: str) -> str | None:
    """Says when a scheduler config was re-saved by diffusers (SD v1.5's original has no spacing key)."""
    cfg = json.loads(text)
    if "timestep_spacing" in cfg and cfg.get("_class_name") == "PNDMScheduler" and cfg.get("steps_offset") == 1:
        return (
            f"scheduler_config.json was re-saved by diffusers {cfg.get('_diffusers_version')} with "
            f"timestep_spacing={cfg['timestep_spacing']!r}; SD v1.5's original has no such key (DPM-Solver++ "
            "4 steps runs at 801,601,401,201 instead of 999,749,500,250). speedscape obeys the file; "
            "`speedscape models verify` explains how to use the original."
        )
    return None


def libraries() -> dict:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def created_stamp() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")  # reproducible builds convention
    t = time.gmtime(int(epoch)) if epoch else time.gmtime()
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", t)


def file_table(root: Path) -> dict:
    files = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != "manifest.json":
            rel = p.relative_to(root).as_posix()
            files[rel] = {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
    return files


def write_json_atomic(path: Path, value) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def export_pipeline(
    base: Base,
    loras: dict[str, Lora],
    variants: dict[str, list[tuple[str, float]]],
    out: Path,
    settings: Settings,
    vae_encoder: bool = False,
    command: list[str] | None = None,
    force: bool = False,
    copy_loras: bool = False,
    clip_scorer: ClipSource | None = None,
    controlnets: dict[str, ControlNetSource] | None = None,
    preview_decoder: PreviewDecoderSource | None = None,
) -> dict:
    """Export everything into `<out>.partial`, check it, write the manifest, then move it to `out`.
    With `clip_scorer`, also clip_image_encoder/ (after every other component, whose files it
    leaves as they would be without it). With `controlnets`, also controlnet_<name>/ for each, and
    every UNet (base and variants) takes the residual inputs; without, the UNets are plain. With
    `preview_decoder`, also preview_decoder/ (an AutoencoderTiny's decoder, `preview_decoder_spec`)."""
    if out.exists() and any(out.iterdir()) and not force:
        raise ExportError(f"{out} exists and is not empty\nFix: pass --force to replace it, or choose another --out")
    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    try:
        return _export_into(base, loras, variants, out, partial, settings, vae_encoder, command, copy_loras, clip_scorer,
                            controlnets or {}, preview_decoder)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)  # never leave a half-written model behind
        raise


def copy_small_files(source: Path, partial: Path) -> list[str]:
    """Tokenizer, scheduler config (verbatim) and model index; returns the notes on them."""
    for p in sorted((source / "tokenizer").iterdir()):
        if p.is_file():
            copy_verbatim(p, partial / "tokenizer" / p.name)
    sched_src = source / "scheduler" / "scheduler_config.json"
    copy_verbatim(sched_src, partial / "scheduler" / "scheduler_config.json")
    copy_verbatim(source / "model_index.json", partial / "model_index.json")
    notes = []
    if note := scheduler_note(sched_src.read_text()):
        notes.append(note)
        log("NOTE:", note)
    return notes


def lora_manifest_records(loras: dict[str, Lora], partial: Path, copy_loras: bool) -> dict:
    """The manifest's `loras` entries; with `copy_loras`, each file is copied to loras/<name>.safetensors."""
    records = {}
    for name, lora in loras.items():
        records[name] = {**lora.provenance, "format": lora.format, "components": lora.components}
        if copy_loras:
            copy_verbatim(lora.file, partial / "loras" / f"{name}.safetensors")
            records[name]["copy"] = f"loras/{name}.safetensors"
    return records


def check_controlnets(controlnets: dict[str, ControlNetSource], unet, vae_scale_factor: int) -> int:
    """Each ControlNet's structure (no weights read) against the UNet, before the long exports;
    returns the number of down-block residuals the UNets then take (0 without ControlNets)."""
    for cn in controlnets.values():
        log(f"checking ControlNet {cn.name} ({cn.provenance['source']}) against the base model")
        check_controlnet_base(load_controlnet(cn, device="meta"), unet, vae_scale_factor, f"{cn.name!r} ({cn.provenance['source']})")
    return len(residual_layout(unet)) - 1 if controlnets else 0


def _manifest(base, pipe, settings: Settings, command, family, geometry, partial: Path, *, notes, components,
              variant_records, lora_records, controlnet_records, clip_record) -> dict:
    """manifest.json of an export into `partial`: the exporter, the base model and its family
    (`family`: (name, evidence)), the settings, the geometry (`geometry`: (latent size, VAE scale)),
    every component, variant, ControlNet and the CLIP scorer, and the file table."""
    (family, family_evidence), (latent, vae_scale) = family, geometry
    manifest = {
        "format": MANIFEST_FORMAT,
        "created": created_stamp(),
        "exporter": {
            "script": "models/export.py",
            "version": EXPORTER_VERSION,
            "command": command or [],
            "python": platform.python_version(),
            "libraries": libraries(),
        },
        "base": base.provenance,
        "family": family,
        "family_evidence": family_evidence,
        "text_encoder": text_encoder_record(pipe),
        "loras": lora_records,
        "dtype": settings.dtype,
        "optimize": settings.optimize,
        "geometry": {
            "sample_size": latent,
            "vae_scale_factor": vae_scale,
            "image_size": latent * vae_scale,
            "cross_attention_dim": pipe.unet.config.cross_attention_dim,
        },
        "notes": notes,
        "components": components,
        "variants": {"base": {"loras": [], "unet": "unet", "text_encoder": "text_encoder"}, **variant_records},
        "files": file_table(partial),
    }
    if controlnet_records:
        manifest["controlnets"] = controlnet_records
    if clip_record is not None:
        manifest["clip_scorer"] = clip_record
    return manifest


def _export_into(base, loras, variants, out: Path, partial: Path, settings: Settings, vae_encoder, command, copy_loras,
                 clip_scorer=None, controlnets=None, preview_decoder=None) -> dict:
    started = time.perf_counter()
    controlnets = controlnets or {}

    log(f"loading the base pipeline from {base.folder}")
    pipe = load_pipeline(base.folder)
    family, family_evidence = model_family(base.folder, base.provenance.get("source") if base.provenance.get("kind") == "hub" else None)
    log(f"model family: {family} ({'; '.join(family_evidence)})")
    clip = None
    if clip_scorer is not None:
        # Checked before the long exports: a CLIP model of another text encoder is refused now.
        log(f"loading the CLIP model from {clip_scorer.folder}")
        clip, processor = load_clip(clip_scorer)
        clip_text_check = check_clip_text_tower(clip, pipe.text_encoder, clip_scorer.provenance["source"])
        clip_config = clip_scorer_config(clip, processor, clip_scorer)
    latent = pipe.unet.config.sample_size
    vae_scale = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    n_residuals = check_controlnets(controlnets, pipe.unet, vae_scale)  # refused now, not after the UNets
    tiny = None
    if preview_decoder is not None:  # refused now too
        log(f"checking the preview decoder ({preview_decoder.provenance['source']}) against the base model")
        tiny = load_preview_decoder(preview_decoder)
        check_preview_decoder_base(tiny, pipe.vae.config.latent_channels, vae_scale, preview_decoder.provenance["source"])
    unet_extra = {"controlnet_residuals": n_residuals} if controlnets else {}

    notes = copy_small_files(base.folder, partial)

    jobs = [("text_encoder", "text_encoder", None), ("unet", "unet", None), ("vae_decoder", "vae", None)]
    if settings.dtype == "fp16":
        jobs.append((VAE_FP16_FOLDER, "vae", None))
    if vae_encoder:
        jobs.append(("vae_encoder", "vae", None))
    components, variant_records, controlnet_records = {}, {}, {}
    total_jobs = len(jobs) + len(variants) + len(controlnets) + (tiny is not None) + (clip is not None)

    def run_job(index: int, folder: str, spec: Spec, config_src: Path | dict, what: str, extra: dict | None = None):
        log(f"[{index}/{total_jobs}] {folder}: {what} ...")
        rec = export_component(spec, partial / folder, settings)
        if isinstance(config_src, dict):
            write_json_atomic(partial / folder / "config.json", config_src)
        else:
            copy_verbatim(config_src, partial / folder / "config.json")
        rec["bytes"] = folder_bytes(partial / folder)
        rec.update(extra or {})
        components[folder] = rec
        check = rec.get("check")
        checked = (
            f"max abs err vs torch {check['max_abs_err']:.2e} on {check['provider']}" if check else "not checked (--no-verify)"
        )
        log(f"[{index}/{total_jobs}] {folder}: {human(rec['bytes'])} {rec['dtype']} in {rec['export_s']:.1f} s, {checked}")

    for i, (folder, src, _) in enumerate(jobs, 1):
        extra = None
        if folder == "text_encoder":
            spec = text_encoder_spec(pipe.text_encoder, pipe.tokenizer.pad_token_id)
        elif folder == "unet":
            spec, extra = unet_spec(pipe.unet, residuals=bool(controlnets)), unet_extra
        elif folder == "vae_decoder":
            spec = vae_decoder_spec(pipe.vae, latent)
        elif folder == VAE_FP16_FOLDER:
            spec = dataclasses.replace(vae_decoder_spec(pipe.vae, latent), keep_fp32=False)
        else:
            spec = vae_encoder_spec(pipe.vae, latent * vae_scale)
        run_job(i, folder, spec, base.folder / src / "config.json", "exporting", extra)
        del spec

    for j, (name, parts) in enumerate(variants.items(), len(jobs) + 1):
        desc = " + ".join(f"{lora}:{w:g}" for lora, w in parts)
        record = {"loras": [{"name": lora, "weight": w} for lora, w in parts], "unet": f"unet_{name}", "text_encoder": "text_encoder"}
        with fused_loras(pipe, [(loras[lora], w) for lora, w in parts]) as used:
            spec = unet_spec(pipe.unet, residuals=bool(controlnets))
            run_job(j, f"unet_{name}", spec, base.folder / "unet" / "config.json", f"fusing {desc}", unet_extra)
            del spec
            if "text_encoder" in used:
                te_folder = f"text_encoder_{name}"
                log(f"[{j}/{total_jobs}] {te_folder}: these LoRAs also change the text encoder")
                run_job(j, te_folder, text_encoder_spec(pipe.text_encoder, pipe.tokenizer.pad_token_id), base.folder / "text_encoder" / "config.json", f"fusing {desc}")
                record["text_encoder"] = te_folder
        variant_records[name] = record

    for k, (name, cn) in enumerate(controlnets.items(), len(jobs) + len(variants) + 1):
        model = load_controlnet(cn)
        run_job(k, cn.out_folder, controlnet_spec(model, latent, vae_scale), cn.folder / "config.json", f"ControlNet from {cn.provenance['source']}")
        controlnet_records[name] = controlnet_record(model, cn)
        del model

    if tiny is not None:
        index = len(jobs) + len(variants) + len(controlnets) + 1
        run_job(index, PREVIEW_FOLDER, preview_decoder_spec(tiny, latent), preview_decoder.folder / "config.json",
                f"preview decoder from {preview_decoder.provenance['source']}", preview_decoder_record(tiny, preview_decoder))
        del tiny

    clip_record = None
    if clip is not None:
        run_job(total_jobs, CLIP_FOLDER, clip_scorer_spec(clip, pipe.text_encoder), clip_config, "CLIP vision tower + projections")
        clip_record = {
            "folder": CLIP_FOLDER,
            **clip_scorer.provenance,
            "score": clip_config["score"],
            "text_tower": clip_text_check,
        }
        del clip

    lora_records = lora_manifest_records(loras, partial, copy_loras)

    manifest = _manifest(
        base, pipe, settings, command, (family, family_evidence), (latent, vae_scale), partial,
        notes=notes, components=components, variant_records=variant_records, lora_records=lora_records,
        controlnet_records=controlnet_records, clip_record=clip_record,
    )
    write_json_atomic(partial / "manifest.json", manifest)
    move_into_place(partial, out)
    total = sum(f["bytes"] for f in manifest["files"].values())
    log(f"done: {out} ({human(total)}) in {time.perf_counter() - started:.1f} s")
    return manifest


def move_into_place(partial: Path, out: Path) -> None:
    """`partial` becomes `out`; an old `out` is only removed once the new one is complete."""
    if out.exists():
        old = out.with_name(out.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        out.rename(old)
        partial.rename(out)
        shutil.rmtree(old)
    else:
        partial.rename(out)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder (built in <out>.partial, then moved)")
    ap.add_argument("--model", default=DEFAULT_BASE, help=f"base pipeline: hub id or diffusers folder (default {DEFAULT_BASE})")
    ap.add_argument("--revision", default=None, help="hub revision (branch, tag or commit) of --model")
    ap.add_argument("--lora", action="append", metavar="NAME=SOURCE[#FILE]", help="a LoRA: hub id, folder or .safetensors file (repeatable; default: lcm and style)")
    ap.add_argument("--variant", action="append", metavar="NAME=LORA:W[,LORA:W]", help="a fused UNet variant, written to unet_NAME (repeatable)")
    ap.add_argument("--no-variants", action="store_true", help="export the base model only")
    ap.add_argument("--dtype", choices=("fp32", "fp16"), default="fp32", help="weights and activations (the VAE stays fp32)")
    ap.add_argument(
        "--optimize", choices=("none", "cuda", "cpu"), default="none",
        help="cuda: ONNX Runtime's SD fusions (the graph then needs the CUDA provider); cpu: the fusions the CPU "
        "provider runs (fused attention and layer norms; fp32 only)",
    )
    ap.add_argument("--vae-encoder", action="store_true", help="also export the VAE encoder (img2img)")
    ap.add_argument("--copy-loras", action=argparse.BooleanOptionalAction, default=True,
                    help="keep a copy of each LoRA file in <out>/loras/, so `speedscape --lora NAME=WEIGHT` applies it at "
                         "any weight without a re-export (default; --no-copy-loras to skip)")
    ap.add_argument(
        "--clip-scorer", nargs="?", const=DEFAULT_CLIP, default=None, metavar="HUB_ID_OR_FOLDER",
        help=f"also export clip_image_encoder/ for the CLIP score: the vision tower and projections of the CLIP "
        f"model whose text tower is the pipeline's text encoder (checked; default {DEFAULT_CLIP})",
    )
    ap.add_argument("--clip-revision", default=None, help="hub revision of --clip-scorer")
    ap.add_argument(
        "--controlnet", action="append", default=[], metavar="NAME=SOURCE",
        help=f"a ControlNet (hub id such as {EXAMPLE_CONTROLNET}, or a ControlNetModel folder), written to "
        "controlnet_NAME/; every UNet then takes its residuals (repeatable)",
    )
    ap.add_argument(
        "--preview-decoder", nargs="?", const=DEFAULT_PREVIEW_DECODER, default=None, metavar="HUB_ID_OR_FOLDER",
        help=f"also export preview_decoder/: the decoder of a tiny autoencoder (diffusers AutoencoderTiny) made for this "
        f"model's latents, which decodes each step's preview (default {DEFAULT_PREVIEW_DECODER}, SD v1.x's TAESD)",
    )
    ap.add_argument("--preview-decoder-revision", default=None, help="hub revision of --preview-decoder")
    ap.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime vs torch checks")
    ap.add_argument("--tolerance", type=float, default=None, help="max relative difference vs torch (default 1e-3 fp32, 5e-2 fp16)")
    ap.add_argument("--force", action="store_true", help="replace --out if it exists")
    ap.add_argument("--base-label", default=None, help=argparse.SUPPRESS)  # provenance text for local stand-ins
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    command = ["python", "models/export.py", *(sys.argv[1:] if argv is None else argv)]
    try:
        out = Path(args.out)
        if args.optimize == "cpu" and args.dtype == "fp16":
            raise ExportError(
                "--optimize cpu with --dtype fp16: the CPU provider has no fast float16 kernels, so these graphs would run slower than fp32\n"
                "Fix: drop --dtype fp16 for the CPU form, or use --dtype fp16 --optimize cuda for a GPU"
            )
        settings = Settings(dtype=args.dtype, optimize=args.optimize, verify=not args.no_verify)
        if args.tolerance is not None:
            settings.tolerance[args.dtype] = args.tolerance
        base = resolve_base(args.model, args.revision, args.base_label)
        family, _ = model_family(base.folder, args.model if base.provenance.get("kind") == "hub" else None)
        # The default LoRAs (LCM-LoRA, the pixel-art style) are SD v1.5's: another family gets none
        # unless --lora names some.
        defaults = family == "sd15"
        if not defaults and not args.lora and not args.no_variants:
            log(f"{args.model} is {family}: the default LoRAs are SD v1.5's, so none are fused (--lora to add some)")
        lora_specs = [] if args.no_variants else (args.lora or (list(DEFAULT_LORAS) if defaults else []))
        loras = {}
        for spec in lora_specs:
            lora = resolve_lora(spec, out)
            loras[lora.name] = lora
            log(f"LoRA {lora.name}: {lora.file.name} ({lora.format} format, {'+'.join(lora.components)}, {human(lora.file.stat().st_size)})")
        variant_specs = [] if args.no_variants else (args.variant or (list(DEFAULT_VARIANTS) if args.lora or defaults else []))
        variants = dict(parse_variant(v, loras) for v in variant_specs)
        controlnets = resolve_controlnets(args.controlnet, out)
        clip = resolve_clip(args.clip_scorer, args.clip_revision) if args.clip_scorer else None
        preview = None
        if args.preview_decoder:
            preview = resolve_preview_decoder(args.preview_decoder, args.preview_decoder_revision, out)
        export_pipeline(base, loras, variants, out, settings, args.vae_encoder, command, args.force, args.copy_loras, clip,
                        controlnets, preview)
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
