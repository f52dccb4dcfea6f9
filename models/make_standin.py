#!/usr/bin/env python
"""Write a random-init Stable Diffusion pipeline (diffusers folder) and two random LoRA files:
the local stand-in for a hub download, so models/export.py can be tested and timed offline.

    python models/make_standin.py --out /tmp/standin --size tiny   # models/tiny's structure
    python models/make_standin.py --out /tmp/sd15 --size sd15      # SD v1.5's full architecture
    python models/make_standin.py --out /tmp/sdt --size sd-turbo   # SD-Turbo's (SD 2.1's) full architecture
    python models/make_standin.py --out /tmp/sd15 --only-controlnet  # add controlnet/ to it

Written:
    <out>/pipeline/                 diffusers `save_pretrained` folder, with SD v1.5's original
                                    scheduler_config.json and CLIP tokenizer files verbatim
    <out>/loras/peft.safetensors    UNet-only LoRA in diffusers/peft format (`unet.<module>.lora_A.weight`)
    <out>/loras/wide.safetensors    UNet-only rank-64 LoRA in diffusers/peft format on LCM-LoRA's
                                    targets (attention, feed-forward, projections, resnet convs as
                                    LoCon, time embeddings): what run-time fusion is timed with
    <out>/loras/kohya.safetensors   UNet + text-encoder LoRA in kohya format
                                    (`lora_unet_<module>.lora_down.weight`, `.lora_up.weight`, `.alpha`,
                                    `lora_te_<module>...`), as kohya's sd-scripts save one
    <out>/controlnet/               with --controlnet (or --only-controlnet, next to an existing
                                    pipeline/): a diffusers ControlNetModel folder,
                                    `ControlNetModel.from_unet` of the pipeline's UNet with its zero
                                    convolutions filled with seeded random values (`write_controlnet`)
    <out>/preview_decoder/          with --preview-decoder (or --only-preview-decoder, next to an
                                    existing pipeline/): a diffusers AutoencoderTiny folder with
                                    TAESD's architecture (sd15: TAESD's 64 channels; tiny: 8), seeded
                                    random weights (`write_preview_decoder`)

Same torch version -> same bytes. Reference environment: models/requirements.txt.
"""

from __future__ import annotations

import argparse
import math
import shutil
import tempfile
import sys
from pathlib import Path

import torch

import make_tiny  # noqa: E402  (also sets up warnings / logging)
from diffusers import AutoencoderKL, AutoencoderTiny, ControlNetModel, StableDiffusionPipeline, UNet2DConditionModel  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer  # noqa: E402

# SD v1.5's component configs (unet/, vae/, text_encoder/ config.json), architecture keys only.
SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768,
    attention_head_dim=8,
    norm_num_groups=32,
)
SD15_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    norm_num_groups=32,
    latent_channels=4,
    sample_size=512,
    scaling_factor=0.18215,
)
SD15_TEXT = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    bos_token_id=0,  # SD v1.5's config.json carries these legacy ids; the tokenizer has the real ones
    eos_token_id=2,
    pad_token_id=1,
    projection_dim=768,
)

# SD-Turbo's (the SD 2.1 architecture's) UNet and text encoder, architecture keys only; the VAE is
# SD v1.5's. As models/make_tiny_turbo.py at full size: per-block head counts with linear
# projections, 1024-wide cross-attention, OpenCLIP ViT-H's first 23 layers with gelu.
SD_TURBO_UNET = dict(
    SD15_UNET,
    cross_attention_dim=1024,
    attention_head_dim=(5, 10, 20, 20),
    use_linear_projection=True,
)
SD_TURBO_TEXT = dict(
    SD15_TEXT,
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=23,
    num_attention_heads=16,
    hidden_act="gelu",
    projection_dim=512,
)

TE_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")

# ControlNet conditioning embeddings: channels of its convolution levels; a VAE scale factor of
# 2**k takes the first k + 1 (SD v1.5's real ControlNets: (16, 32, 96, 256) for factor 8).
CONDITIONING_CHANNELS = {"tiny": (8, 8, 16, 16, 32), "sd15": (16, 32, 96, 256)}
CONTROLNET_SEED = 2004
# Gain of the random zero convolutions (std = gain / sqrt(fan_in)): the residuals come out at about
# half the size of the UNet's own skip features, so the control visibly changes the image.
CONTROLNET_GAIN = 0.5
# The conditioning embedding's std for a uniform-random control image (its conv_out is scaled to
# it): about that of conv_in's output for a N(0, 1) latent, which it is added to, so the control
# image steers the ControlNet (with torch's default init the embedding comes out ~30x smaller).
CONDITIONING_STD = 0.5
# Gain of the conditioning embedding's hidden convolutions (std = gain / sqrt(fan_in), about He's
# for SiLU): torch's default init shrinks the signal ~3x per layer, leaving a near-constant map.
EMBEDDING_GAIN = 1.7


def build(size: str, tokenizer_dir: Path) -> StableDiffusionPipeline:
    """The stand-in pipeline of `size`: `tiny` (models/tiny's structure), `sd15` (SD v1.5's full
    architecture) or `sd-turbo` (SD-Turbo's: `tokenizer_dir` then holds SD 2.x's tokenizer/
    folder, see make_tiny_turbo.write_tokenizer)."""
    if size == "tiny":
        return make_tiny.build_pipeline(tokenizer_dir)
    turbo = size == "sd-turbo"
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**(SD_TURBO_UNET if turbo else SD15_UNET)).eval()
    torch.manual_seed(0)
    vae = AutoencoderKL(**SD15_VAE).eval()
    torch.manual_seed(0)
    config = CLIPTextConfig(**(SD_TURBO_TEXT if turbo else SD15_TEXT))
    config.architectures = ["CLIPTextModel"]
    text = CLIPTextModel(config).eval()
    if turbo:
        import make_tiny_turbo

        tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_dir / "tokenizer"))
        pipe = make_tiny.assemble(vae, text, tokenizer, unet, make_tiny_turbo.build_scheduler())
    else:
        tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_dir))
        pipe = make_tiny.assemble(vae, text, tokenizer, unet, make_tiny.build_scheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def kohya_lora(pipe, seed: int, rank: int = 4, alpha: float = 2.0, b_std: float = 0.2) -> dict[str, torch.Tensor]:
    """A kohya-format LoRA on the UNet attention projections and the text encoder's attention."""
    gen = torch.Generator().manual_seed(seed)
    state = {}

    def add(prefix: str, linear: torch.nn.Linear):
        down = torch.randn(rank, linear.in_features, generator=gen) / math.sqrt(linear.in_features)
        up = torch.randn(linear.out_features, rank, generator=gen) * (b_std / math.sqrt(rank))
        state[f"{prefix}.lora_down.weight"] = down.contiguous()
        state[f"{prefix}.lora_up.weight"] = up.contiguous()
        state[f"{prefix}.alpha"] = torch.tensor(alpha)

    unet_modules = dict(pipe.unet.named_modules())
    for name in make_tiny.lora_target_modules(pipe.unet):
        add("lora_unet_" + name.replace(".", "_"), unet_modules[name])
    for name, module in pipe.text_encoder.named_modules():
        if isinstance(module, torch.nn.Linear) and name.endswith(TE_TARGETS) and ".self_attn." in name:
            add("lora_te_" + name.replace(".", "_"), module)
    return state


# LCM-LoRA's target modules for SD v1.5 (its adapter_config.json), by module-name suffix.
WIDE_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
                "conv1", "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj")


def wide_lora(pipe, seed: int, rank: int = 64, b_std: float = 0.05) -> dict[str, torch.Tensor]:
    """A rank-`rank` peft-layout LoRA on every UNet module LCM-LoRA targets; convolutions get
    LoCon halves (lora_A [r, in, kh, kw], lora_B [out, r, 1, 1]), as peft writes them."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, m in pipe.unet.named_modules():
        if not name.endswith(WIDE_TARGETS) or not isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
            continue
        if isinstance(m, torch.nn.Linear):
            fan_in, a_shape, b_shape = m.in_features, (rank, m.in_features), (m.out_features, rank)
        else:
            fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
            a_shape, b_shape = (rank, m.in_channels, *m.kernel_size), (m.out_channels, rank, 1, 1)
        state[f"unet.{name}.lora_A.weight"] = (torch.randn(*a_shape, generator=gen) / math.sqrt(fan_in)).contiguous()
        state[f"unet.{name}.lora_B.weight"] = (torch.randn(*b_shape, generator=gen) * (b_std / math.sqrt(rank))).contiguous()
    return state


def conditioning_channels(size: str, vae_scale_factor: int) -> tuple[int, ...]:
    levels = int(math.log2(vae_scale_factor)) + 1
    table = CONDITIONING_CHANNELS[size]
    if 2 ** (levels - 1) != vae_scale_factor or levels > len(table):
        raise ValueError(f"no {size} conditioning embedding for VAE scale factor {vae_scale_factor}")
    return table[:levels]


def random_controlnet(unet: UNet2DConditionModel, vae_scale_factor: int, size: str, seed: int = CONTROLNET_SEED) -> ControlNetModel:
    """`ControlNetModel.from_unet(unet)` (its encoder copies the UNet's, as ControlNet training
    starts) with the zero convolutions -- controlnet_down_blocks, controlnet_mid_block and the
    conditioning embedding's conv_out, zero by construction -- filled with seeded random values,
    so the control image changes the residuals and the image."""
    torch.manual_seed(seed)  # from_unet's own init, before every random part is replaced below
    cn = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=conditioning_channels(size, vae_scale_factor)).eval()
    gen = torch.Generator().manual_seed(seed)
    zero_convs = [*cn.controlnet_down_blocks, cn.controlnet_mid_block, cn.controlnet_cond_embedding.conv_out]
    with torch.no_grad():
        for conv in zero_convs:
            fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * (CONTROLNET_GAIN / math.sqrt(fan_in)))
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=gen) * 0.01)
        embedding = cn.controlnet_cond_embedding
        for conv in (embedding.conv_in, *embedding.blocks):  # He-style init: the image's detail survives the depth
            fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * (EMBEDDING_GAIN / math.sqrt(fan_in)))
            conv.bias.zero_()
        probe = torch.rand(1, cn.config.conditioning_channels, 8 * vae_scale_factor, 8 * vae_scale_factor, generator=gen)
        embedding.conv_out.weight.mul_(CONDITIONING_STD / embedding(probe).std())
    return cn


def write_controlnet(pipeline: Path, out: Path, size: str) -> Path:
    """`random_controlnet` of the UNet saved in `pipeline` (a diffusers folder), saved to `out`
    (built in `<out>.partial`, renamed when complete)."""
    unet = UNet2DConditionModel.from_pretrained(str(pipeline / "unet")).eval()
    vae_config = AutoencoderKL.load_config(str(pipeline / "vae"))
    vae_scale = 2 ** (len(vae_config["block_out_channels"]) - 1)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    random_controlnet(unet, vae_scale, size).save_pretrained(str(partial), safe_serialization=True)
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    return out


# Preview decoders (AutoencoderTiny, TAESD's architecture: a block structure of (1, 3, 3, 3) encoder
# and (3, 3, 3, 1) decoder blocks, ReLU, nearest x2 upsampling between blocks): channels by size.
PREVIEW_CHANNELS = {"tiny": 8, "sd15": 64}
PREVIEW_SEED = 2005
# The random preview decoder's image std in [-1, 1] (see `random_preview_decoder`).
PREVIEW_STD = 0.4


def random_preview_decoder(latent_channels: int, vae_scale_factor: int, channels: int, seed: int = PREVIEW_SEED) -> AutoencoderTiny:
    """A random-init AutoencoderTiny with TAESD's block structure (one decoder block per
    upsampling, the last without: log2(vae_scale_factor) + 1 of them, TAESD's (3, 3, 3, 1) for a
    factor of 8) and `channels` channels throughout (TAESD: 64). torch's default init, seeded."""
    levels = int(math.log2(vae_scale_factor)) + 1
    if 2 ** (levels - 1) != vae_scale_factor:
        raise ValueError(f"no preview decoder for VAE scale factor {vae_scale_factor}")
    decoder_blocks = (3,) * (levels - 1) + (1,)
    torch.manual_seed(seed)
    tiny = AutoencoderTiny(
        latent_channels=latent_channels,
        encoder_block_out_channels=(channels,) * levels,
        decoder_block_out_channels=(channels,) * levels,
        num_encoder_blocks=(1,) + (3,) * (levels - 1),
        num_decoder_blocks=decoder_blocks,
    ).eval()
    gen = torch.Generator().manual_seed(seed)
    convs = [m for m in tiny.decoder.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        probe = torch.randn(2, latent_channels, 8, 8, generator=gen)
        # The last convolution scaled and shifted so the decoder's image (in [-1, 1] before the
        # preview's clamp) has mean 0 and std PREVIEW_STD per channel: with torch's default init
        # two thirds of the pixels come out clamped at 0, which a parity check cannot see into.
        last = convs[-1]
        raw = tiny.decoder(probe)
        std = raw.std(dim=(0, 2, 3))
        last.weight.mul_((PREVIEW_STD / std)[:, None, None, None])
        last.bias.mul_(PREVIEW_STD / std)
        last.bias.sub_(tiny.decoder(probe).mean(dim=(0, 2, 3)) / 2)  # DecoderTiny returns 2 * conv - 1
    return tiny


def write_preview_decoder(pipeline: Path | None, out: Path, size: str, latent_channels: int = 4, vae_scale_factor: int = 8) -> Path:
    """`random_preview_decoder` for the pipeline saved in `pipeline` (its VAE's latent channels
    and scale factor; or the given ones without a pipeline), saved to `out` (built in
    `<out>.partial`, renamed when complete)."""
    if pipeline is not None:
        vae_config = AutoencoderKL.load_config(str(pipeline / "vae"))
        latent_channels = vae_config["latent_channels"]
        vae_scale_factor = 2 ** (len(vae_config["block_out_channels"]) - 1)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    tiny = random_preview_decoder(latent_channels, vae_scale_factor, PREVIEW_CHANNELS[size])
    tiny.save_pretrained(str(partial), safe_serialization=True)
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    return out


def write(out: Path, size: str, tokenizer_dir: Path | None = None, controlnet: bool = False,
          preview_decoder: bool = False) -> dict[str, Path]:
    tokenizer_dir = Path(tokenizer_dir or make_tiny.default_tokenizer_dir())
    make_tiny.set_determinism()
    folder = out / "pipeline"
    if size == "sd-turbo":
        import make_tiny_turbo

        with tempfile.TemporaryDirectory() as tmp:
            make_tiny_turbo.write_tokenizer(tokenizer_dir, Path(tmp))
            pipe = build(size, Path(tmp))
        make_tiny_turbo.save_diffusers_folder(pipe, folder, tokenizer_dir)
    else:
        pipe = build(size, tokenizer_dir)
        make_tiny.save_diffusers_folder(pipe, folder, tokenizer_dir)
    loras = out / "loras"
    loras.mkdir(parents=True, exist_ok=True)
    peft = make_tiny.write_random_lora(pipe, make_tiny.RandomLora(name="peft", seed=2001, rank=4, alpha=8.0, write_metadata=True), loras)
    kohya = loras / "kohya.safetensors"
    save_file(kohya_lora(pipe, seed=2002), str(kohya), metadata={"ss_network_module": "networks.lora"})
    wide = loras / "wide.safetensors"
    save_file(wide_lora(pipe, seed=2003), str(wide), metadata={"format": "pt"})
    paths = {"pipeline": folder, "peft": peft, "kohya": kohya, "wide": wide}
    if controlnet:
        paths["controlnet"] = write_controlnet(folder, out / "controlnet", size)
    if preview_decoder:
        paths["preview_decoder"] = write_preview_decoder(folder, out / "preview_decoder", size)
    return paths


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--size", choices=("tiny", "sd15", "sd-turbo"), default="tiny")
    ap.add_argument("--tokenizer", default=None, help="folder with the CLIP tokenizer files")
    ap.add_argument("--controlnet", action="store_true", help="also write <out>/controlnet/ (a random ControlNetModel of the UNet)")
    ap.add_argument("--only-controlnet", action="store_true", help="write only <out>/controlnet/, from an existing <out>/pipeline/")
    ap.add_argument("--preview-decoder", action="store_true", help="also write <out>/preview_decoder/ (a random AutoencoderTiny, TAESD's architecture)")
    ap.add_argument("--only-preview-decoder", action="store_true", help="write only <out>/preview_decoder/, for an existing <out>/pipeline/")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.only_preview_decoder:
        if not (out / "pipeline" / "vae" / "config.json").is_file():
            ap.error(f"--only-preview-decoder: no stand-in pipeline in {out / 'pipeline'} (run without --only-preview-decoder first)")
        make_tiny.set_determinism()
        print(f"preview_decoder: {write_preview_decoder(out / 'pipeline', out / 'preview_decoder', args.size)}")
        return 0
    if args.only_controlnet:
        if not (out / "pipeline" / "unet" / "config.json").is_file():
            ap.error(f"--only-controlnet: no stand-in pipeline in {out / 'pipeline'} (run without --only-controlnet first)")
        make_tiny.set_determinism()
        print(f"controlnet: {write_controlnet(out / 'pipeline', out / 'controlnet', args.size)}")
        return 0
    paths = write(out, args.size, Path(args.tokenizer) if args.tokenizer else None, args.controlnet, args.preview_decoder)
    for k, v in paths.items():
        print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
