#!/usr/bin/env python
"""Generate speedscape's tiny random-weight SD-Turbo look-alike and export it to ONNX.

Reference environment: models/requirements.txt (as models/make_tiny.py).

    .venv-ref/bin/python models/make_tiny_turbo.py --out models/tiny_turbo

`stabilityai/sd-turbo` is the SD 2.1 architecture distilled for 1-4 steps at guidance 0; no model
hub is reachable here, so parity with diffusers is proven on this random-init pipeline with its
structure (tests/fixtures/make_turbo_fixtures.py, tests/turbo.rs). What it keeps of SD-Turbo, at
toy widths (SD-Turbo's values in the comments):

* UNet2DConditionModel with `use_linear_projection: true` and per-block head counts
  (`attention_head_dim` [2, 3], diffusers' legacy name for the number of heads; SD 2.x: [5, 10,
  20, 20]), cross-attention width = the text encoder's hidden size (8; SD 2.x: 1024);
* a CLIPTextModel with gelu (OpenCLIP's; SD v1.5's is quick_gelu), the full 49408-token vocabulary
  and `last_hidden_state` (final layer norm over all of the config's layers) as the pipeline's
  text embedding: SD 2.x's text_encoder/config.json keeps 23 of OpenCLIP ViT-H's 24 layers, so
  that is OpenCLIP's penultimate layer, and `encode_prompt` (clip_skip None) takes
  `text_encoder(ids)[0]`;
* the CLIP tokenizer (vocab.json + merges.txt, no tokenizer.json, as SD 2.x's tokenizer/ folder)
  padding with "!" (id 0) as SD 2.x's special_tokens_map.json says, where SD v1.5 pads with
  <|endoftext|> (49407);
* EulerDiscreteScheduler with `timestep_spacing: "trailing"` (TURBO_SCHEDULER_CONFIG);
* SD's VAE structure (models/make_tiny.py's tiny VAE: 4 levels, scale factor 8).

It saves the pipeline as a diffusers folder (what a download of sd-turbo looks like), then hands
it to models/export.py, which records the family ("sd-turbo") in the manifest. The export has no
LoRA variants, VAE encoder or CLIP scorer. The large tokenizer files are byte-identical to
models/tiny/tokenizer/'s and are committed as symlinks to them (`--link-tokenizer`, default), so
models/tiny_turbo stays under 3 MB. Deterministic as make_tiny.py (same bytes every run, but for
the manifest's export timings).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

import make_tiny  # noqa: E402  (also sets up warnings / logging)
import export  # noqa: E402
from diffusers import (  # noqa: E402
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer  # noqa: E402

HERE = Path(__file__).resolve().parent

# stabilityai/sd-turbo's scheduler/scheduler_config.json, TRANSCRIBED from diffusers' documented
# SD-Turbo setup and the hub file as we remember it, NOT downloaded (no hub is reachable here).
# What the run depends on and we are sure of: EulerDiscreteScheduler, SD's scaled_linear betas
# 0.00085..0.012 over 1000 steps, epsilon prediction, timestep_spacing "trailing" (1 step at
# t = 999). The other keys are diffusers' defaults for this class.
TURBO_SCHEDULER_CONFIG = (
    '{"_class_name": "EulerDiscreteScheduler", "_diffusers_version": "0.24.0.dev0", '
    '"beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085, '
    '"clip_sample": false, "interpolation_type": "linear", "num_train_timesteps": 1000, '
    '"prediction_type": "epsilon", "sample_max_value": 1.0, "set_alpha_to_one": false, '
    '"skip_prk_steps": true, "steps_offset": 1, "timestep_spacing": "trailing", '
    '"trained_betas": null, "use_karras_sigmas": false}'
)

# SD 2.x's tokenizer/special_tokens_map.json and tokenizer_config.json (the CLIP tokenizer's, with
# "!" as the pad token), written here; vocab.json and merges.txt are the CLIP BPE files.
SPECIAL_TOKENS_MAP = {
    "bos_token": {"content": "<|startoftext|>", "lstrip": False, "normalized": True, "rstrip": False, "single_word": False},
    "eos_token": {"content": "<|endoftext|>", "lstrip": False, "normalized": True, "rstrip": False, "single_word": False},
    "pad_token": "!",
    "unk_token": {"content": "<|endoftext|>", "lstrip": False, "normalized": True, "rstrip": False, "single_word": False},
}
TOKENIZER_CONFIG = {
    "add_prefix_space": False,
    "bos_token": {"__type": "AddedToken", "content": "<|startoftext|>", "lstrip": False, "normalized": True, "rstrip": False, "single_word": False},
    "do_lower_case": True,
    "eos_token": {"__type": "AddedToken", "content": "<|endoftext|>", "lstrip": False, "normalized": True, "rstrip": False, "single_word": False},
    "errors": "replace",
    "model_max_length": 77,
    "pad_token": "!",
    "tokenizer_class": "CLIPTokenizer",
    "unk_token": {"__type": "AddedToken", "content": "<|endoftext|>", "lstrip": False, "normalized": True, "rstrip": False, "single_word": False},
}
BPE_FILES = ("vocab.json", "merges.txt")

UNET_CONFIG = dict(
    sample_size=8,  # SD-Turbo: 64 (512 px)
    in_channels=4,
    out_channels=4,
    block_out_channels=(16, 24),  # SD 2.x: (320, 640, 1280, 1280)
    layers_per_block=1,  # SD 2.x: 2
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),  # SD 2.x: 3x CrossAttn + DownBlock2D
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    mid_block_type="UNetMidBlock2DCrossAttn",
    cross_attention_dim=8,  # SD 2.x: 1024 (= the text encoder's hidden size)
    attention_head_dim=(2, 3),  # SD 2.x: [5, 10, 20, 20] (heads per block; head width 8 here, 64 there)
    use_linear_projection=True,  # SD 2.x: true (SD v1.5: false, 1x1 convs)
    norm_num_groups=8,  # SD: 32
)
TEXT_ENCODER_CONFIG = dict(
    vocab_size=49408,  # full CLIP vocabulary, so the real tokenizer works
    hidden_size=8,  # SD 2.x: 1024 (8 x 49408 float32 embeddings keep the folder small)
    intermediate_size=37,  # SD 2.x: 4096
    num_hidden_layers=3,  # SD 2.x: 23 (OpenCLIP ViT-H's 24 less the last)
    num_attention_heads=2,  # SD 2.x: 16
    max_position_embeddings=77,
    hidden_act="gelu",  # SD 2.x: gelu (OpenCLIP); SD v1.5: quick_gelu
    layer_norm_eps=1e-5,
    projection_dim=8,  # SD 2.x: 512
    # SD 2.x's text_encoder/config.json carries transformers' legacy ids (bos 0, pad 1, eos 2):
    # the pooled output then takes the argmax id; the pipeline reads last_hidden_state only.
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
)

SANITY_PROMPT = make_tiny.SANITY_PROMPT


def build_unet() -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel(**UNET_CONFIG).eval()


def build_vae() -> AutoencoderKL:
    return make_tiny.build_vae()


def build_text_encoder() -> CLIPTextModel:
    torch.manual_seed(0)
    config = CLIPTextConfig(**TEXT_ENCODER_CONFIG)
    config.architectures = ["CLIPTextModel"]
    return CLIPTextModel(config).eval()


def build_scheduler() -> EulerDiscreteScheduler:
    return EulerDiscreteScheduler.from_config(json.loads(TURBO_SCHEDULER_CONFIG))


def write_tokenizer(bpe_dir: Path, folder: Path) -> None:
    """SD 2.x's tokenizer/ folder: the CLIP BPE files and the configs that pad with "!"."""
    dst = folder / "tokenizer"
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for name in BPE_FILES:
        shutil.copyfile(bpe_dir / name, dst / name)
    (dst / "special_tokens_map.json").write_text(json.dumps(SPECIAL_TOKENS_MAP, indent=2) + "\n")
    (dst / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG, indent=2) + "\n")


def build_pipeline(tokenizer_folder: Path) -> StableDiffusionPipeline:
    """The tiny turbo pipeline (bit-identical on every call); `tokenizer_folder` holds tokenizer/."""
    tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_folder / "tokenizer"))
    if tokenizer.pad_token != "!" or tokenizer.pad_token_id != 0:
        raise RuntimeError(f"tokenizer pads with {tokenizer.pad_token!r} ({tokenizer.pad_token_id}), not '!' (0)")
    return make_tiny.assemble(build_vae(), build_text_encoder(), tokenizer, build_unet(), build_scheduler())


def save_diffusers_folder(pipe: StableDiffusionPipeline, folder: Path, bpe_dir: Path) -> None:
    """As a download of sd-turbo looks: `save_pretrained`, then the scheduler config and the
    tokenizer files verbatim (save_pretrained re-saves both)."""
    pipe.save_pretrained(str(folder), safe_serialization=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(TURBO_SCHEDULER_CONFIG + "\n")
    tok = folder / "tokenizer"
    shutil.rmtree(tok)
    write_tokenizer(bpe_dir, folder)


def make_diffusers_folder(folder: Path, bpe_dir: Path | None = None) -> StableDiffusionPipeline:
    """The tiny turbo pipeline saved as a diffusers folder at `folder`; returns the pipeline."""
    make_tiny.set_determinism()
    bpe_dir = Path(bpe_dir or make_tiny.default_tokenizer_dir())
    with tempfile.TemporaryDirectory() as tmp:
        write_tokenizer(bpe_dir, Path(tmp))
        pipe = build_pipeline(Path(tmp))
    save_diffusers_folder(pipe, folder, bpe_dir)
    return pipe


def sanity(pipe: StableDiffusionPipeline) -> dict:
    """4 Euler trailing steps at guidance 0: finite, non-degenerate image."""
    image = pipe(
        SANITY_PROMPT, num_inference_steps=4, guidance_scale=0.0, height=64, width=64,
        generator=torch.Generator("cpu").manual_seed(42), output_type="np",
    ).images
    report = {"image_mean": float(image.mean()), "image_std": float(image.std()),
              "image_saturated_fraction": float(((image <= 0) | (image >= 1)).mean())}
    if not (report["image_std"] > 0.02 and report["image_saturated_fraction"] < 0.2):
        raise RuntimeError(f"degenerate image: {report}")
    return report


def link_tokenizer(out: Path, shared: Path) -> None:
    """Replace the BPE files byte-identical to `shared`'s with relative symlinks to them."""
    for name in BPE_FILES:
        p, q = out / "tokenizer" / name, shared / name
        if q.is_file() and p.read_bytes() == q.read_bytes():
            p.unlink()
            p.symlink_to(os.path.relpath(q, p.parent))


def export_all(out_dir: Path, bpe_dir: Path | None = None, verify: bool = True, log=print) -> dict:
    os.environ.setdefault("SOURCE_DATE_EPOCH", "0")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "pipeline"
        pipe = make_diffusers_folder(src, bpe_dir)
        if verify:
            log("sanity (4 Euler trailing steps, guidance 0):", json.dumps(sanity(pipe)))
        base = export.resolve_base(str(src), None, label="random-init tiny SD-Turbo look-alike (models/make_tiny_turbo.py)")
        export.log = log
        return export.export_pipeline(
            base, {}, {}, out_dir, export.Settings(verify=verify, check_threads=1),
            command=["python", "models/make_tiny_turbo.py"], force=True,
        )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(HERE / "tiny_turbo"), help="output folder (default models/tiny_turbo)")
    ap.add_argument("--tokenizer", default=None, help="folder with the CLIP vocab.json and merges.txt")
    ap.add_argument("--no-verify", action="store_true", help="skip the onnxruntime checks")
    ap.add_argument("--no-link-tokenizer", action="store_true",
                    help="keep real copies of vocab.json/merges.txt instead of symlinks to models/tiny/tokenizer")
    args = ap.parse_args(argv)
    out = Path(args.out)
    readme = out / "README.md"  # hand-written; the export replaces the folder
    kept = readme.read_bytes() if readme.is_file() else None
    export_all(out, Path(args.tokenizer) if args.tokenizer else None, verify=not args.no_verify)
    if kept is not None:
        readme.write_bytes(kept)
    if not args.no_link_tokenizer:
        link_tokenizer(out, HERE / "tiny" / "tokenizer")
    total = 0
    for p in sorted(out.rglob("*")):
        if p.is_file() and not p.is_symlink():
            total += p.stat().st_size
            print(f"{p.stat().st_size:>10d}  {p.relative_to(out)}")
    print(f"{total:>10d}  total (symlinks not counted)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
