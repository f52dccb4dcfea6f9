"""The micro model's edge ControlNet (issue 20): its training data, its training stage and the
diffusers pipelines that run it on the shipped model.

The training run directory that made the micro model is not kept, and the VAE encoder never
shipped, so the stage works from the shipped folder (models/micro, `shipped.py`): the UNet
rebuilt in torch from its fp16 graph, the text encoder and the VAE decoder through ONNX Runtime.

Data (`base_samples`, `edge_maps`): the base model's own images. For train-split captions,
DPM-Solver++ (`sample_steps`, cfg `sample_cfg`) through diffusers' StableDiffusionPipeline gives
latents, the shipped decoder gives their images, and the condition is the Canny edge map of each
image (models/edges.py canny, 3 channels, /255, as diffusers' canny recipe and control image
processor make it). The latents are on the model's distribution by construction, and each
condition is the exact edge map of its own latent's image. The samples are written in chunks to
<run-dir>/samples/<unet>_dpm<steps>_cfg<cfg>/ (`samples_dir`), so an interrupted sampling resumes,
and the turbo stage's teacher set is the same folder (sampled once for both).

Training (`stage_controlnet`): ControlNetModel.from_unet(base UNet) with a 3-level conditioning
embedding (scale factor 4: 64x64 edges -> 16x16), or, with `init`, the ControlNet shipped in that
folder rebuilt in torch (shipped.rebuild_controlnet) to train on from; eps-prediction through the
FROZEN base UNet (the residuals added as StableDiffusionControlNetPipeline adds them), SD v1.5's
noise schedule, `text_dropout` of the captions empty (the ControlNet paper's recipe: it must
follow the edges alone). With `style_samples`, a share of the steps (`style_fraction`) goes
through the style variant with triggered captions (`training_sets`, `style_condition`): as
shipped, "pixelated", the base images made pixel art, their latents found by inverting the
shipped VAE decoder (rebuilt in torch, shipped.rebuild_vae_decoder), on the base images' smooth
edges. train.train_loop's checkpoint/budget/cosine pattern; the weights go to
<run-dir>/controlnet/model (a diffusers folder).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
for p in (str(HERE), str(HERE.parent)):
    if p not in sys.path:
        sys.path.insert(0, p)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import edges  # noqa: E402
import shipped  # noqa: E402
import world  # noqa: E402

CHUNK = 256  # samples per file of a sampled set
LATENT_SHAPE = (4, world.IMAGE_SIZE // 4, world.IMAGE_SIZE // 4)


def control_image(rgb: np.ndarray) -> np.ndarray:
    """diffusers' canny recipe: cv2.Canny(rgb, 100, 200) replicated to 3 channels, uint8 [H, W, 3]."""
    e = edges.canny(rgb).astype(np.uint8) * 255
    return np.repeat(e[..., None], 3, axis=2)


def control_tensor(rgb_batch: np.ndarray) -> torch.Tensor:
    """Control images of uint8 renders [B, H, W, 3] as the ControlNet takes them: [B, 3, H, W] in [0, 1]."""
    return torch.from_numpy(np.stack([control_image(im) for im in rgb_batch])).permute(0, 3, 1, 2).float() / 255.0


class Frozen:
    """The shipped model's parts the ControlNet trains and runs against."""

    def __init__(self, model: Path = shipped.MICRO, unets=("unet",), threads: int | None = None):
        threads = threads or torch.get_num_threads()  # ONNX Runtime as many threads as torch
        self.model = Path(model)
        self.unets = shipped.rebuild_unets(self.model, unets)
        self.text = shipped.TextEncoder(self.model, threads)
        self.decoder = shipped.VaeDecoder(self.model, threads)
        self.scheduler_config = json.loads((self.model / "scheduler" / "scheduler_config.json").read_text())

    def pipeline(self, unet: str = "unet", controlnet=None, scheduler: str = "dpm"):
        """diffusers' StableDiffusionPipeline (StableDiffusionControlNetPipeline with `controlnet`)
        over the rebuilt UNet `unet`; prompts go in as prompt_embeds, images come out as latents
        (the VAE and text encoder it holds are unused placeholders of the right configs)."""
        from diffusers import (AutoencoderKL, DPMSolverMultistepScheduler, LCMScheduler, StableDiffusionControlNetPipeline,
                               StableDiffusionPipeline)
        from transformers import CLIPTextConfig, CLIPTextModel

        cls = {"dpm": DPMSolverMultistepScheduler, "lcm": LCMScheduler}[scheduler]
        read = lambda rel: json.loads((self.model / rel).read_text())  # noqa: E731
        parts = dict(vae=AutoencoderKL.from_config(read("vae_decoder/config.json")),
                     text_encoder=CLIPTextModel(CLIPTextConfig.from_dict(read("text_encoder/config.json"))),
                     tokenizer=self.text.tokenizer, unet=self.unets[unet], scheduler=cls.from_config(self.scheduler_config),
                     safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        pipe = StableDiffusionControlNetPipeline(controlnet=controlnet, **parts) if controlnet is not None \
            else StableDiffusionPipeline(**parts)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def generate(self, pipe, prompts: list[str], seeds: list[int], steps: int, cfg: float,
                 control: torch.Tensor | None = None, scale: float = 1.0, batch: int = 64) -> torch.Tensor:
        """Latents (scaled, [B, 4, 16, 16]) of `pipe` over (prompt, seed) pairs, torch CPU generators
        per seed; `control`: [B, 3, 64, 64] in [0, 1], one per prompt."""
        out = []
        for i in range(0, len(prompts), batch):
            ps, ss = prompts[i : i + batch], seeds[i : i + batch]
            kw = dict(prompt_embeds=self.text(ps), negative_prompt_embeds=self.text([""] * len(ps)),
                      num_inference_steps=steps, guidance_scale=cfg, height=world.IMAGE_SIZE, width=world.IMAGE_SIZE,
                      generator=[torch.Generator().manual_seed(s) for s in ss], output_type="latent")
            if control is not None:
                kw.update(image=control[i : i + batch], controlnet_conditioning_scale=scale)
            with torch.no_grad():
                out.append(pipe(**kw).images)
        return torch.cat(out)


# ---- data ------------------------------------------------------------------------------------


def noise_of(seeds: list[int]) -> torch.Tensor:
    """The initial noise diffusers draws for a list of per-sample torch CPU generators, [N, 4, 16, 16]."""
    return torch.cat([torch.randn((1, *LATENT_SHAPE), generator=torch.Generator().manual_seed(s)) for s in seeds])


def samples_dir(run_dir: Path, s: dict, unet: str = "unet", trigger: bool = False) -> Path:
    """Where `base_samples` keeps the samples of `unet` at `s`'s sampling settings: one folder per
    (UNet, steps, cfg, trigger), shared by every stage that asks for the same samples."""
    name = f"{unet}_dpm{s['sample_steps']}_cfg{s['sample_cfg']:g}" + ("_triggered" if trigger else "")
    return Path(run_dir) / "samples" / name


def chunked(out_dir: Path, n: int, make, describe) -> tuple[list, float, float]:
    """A set of `n` made in resumable chunks of CHUNK under `out_dir`: for each chunk not there yet,
    `make(start, count)` -> {name: array}, written atomically as chunk_<start>.npz, its wall time
    in `seconds.json`, then `describe(start + count, arrays)` logged. Returns (every chunk loaded,
    in order; the seconds of all of them; the seconds of those made before this call)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    timing_path = out_dir / "seconds.json"
    seconds = json.loads(timing_path.read_text()) if timing_path.is_file() else {}
    earlier = sum(seconds.values())
    for start in range(0, n, CHUNK):
        path = out_dir / f"chunk_{start:06d}.npz"
        if path.is_file():
            continue
        t0 = time.perf_counter()
        count = min(CHUNK, n - start)
        arrays = make(start, count)
        tmp = path.with_name(path.stem + ".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)
        seconds[path.name] = round(time.perf_counter() - t0, 1)
        timing_path.write_text(json.dumps(seconds, indent=1))
        describe(start + count, arrays)
    parts = [np.load(f) for f in sorted(out_dir.glob("chunk_*.npz"))]
    return parts, round(sum(seconds.values()), 1), earlier


def base_samples(frozen: Frozen, out_dir: Path, s: dict, seed: int, n: int, unet: str = "unet", trigger: bool = False,
                 log=print) -> dict:
    """`n` samples of the shipped `unet`: train-split captions (with the style's trigger word when
    `trigger`) through diffusers' StableDiffusionPipeline, DPM-Solver++ `sample_steps` at cfg
    `sample_cfg`, from noise drawn per seed (seed * 1_000_003 + i), in chunks under `out_dir`
    (`samples_dir`, `chunked`: chunks already there are kept). {index, noise, latents
    [N, 4, 16, 16] fp32, captions, sampling_s (every chunk's wall time), earlier_s (the chunks
    made before this call)}."""
    pipe = frozen.pipeline(unet)

    def make(start: int, count: int) -> dict:
        scenes = [world.scene("train", i) for i in range(start, start + count)]
        seeds = [seed * 1_000_003 + i for i in range(start, start + count)]
        lat = frozen.generate(pipe, [sc.caption(trigger=trigger) for sc in scenes], seeds, s["sample_steps"], s["sample_cfg"],
                              batch=s["sample_batch"])
        return dict(noise=noise_of(seeds).numpy(), latents=lat.numpy(), index=np.arange(start, start + count))

    parts, sampling_s, earlier = chunked(out_dir, n, make, lambda done, _: log(f"samples: {done}/{n} of {unet} ({out_dir.name})"))
    index = np.concatenate([p["index"] for p in parts])[:n]
    return {"index": index, "noise": torch.from_numpy(np.concatenate([p["noise"] for p in parts])[:n]),
            "latents": torch.from_numpy(np.concatenate([p["latents"] for p in parts])[:n]),
            "captions": [world.scene("train", int(i)).caption(trigger=trigger) for i in index],
            "sampling_s": sampling_s, "earlier_s": earlier}


def edge_maps(frozen: Frozen, latents: torch.Tensor) -> np.ndarray:
    """The Canny edges (uint8 0/1 [N, 64, 64]) of the shipped decoder's images of `latents`: each
    training condition is exactly its own latent's image's edge map."""
    return np.stack([edges.canny(im) for im in frozen.decoder(latents)]).astype(np.uint8)


def invert_decoder(vae, target: np.ndarray, init: torch.Tensor, steps: int, lr: float, scaling_factor: float) -> torch.Tensor:
    """Latents (scaled, like `init`) whose decoded images are `target` (uint8 [B, 64, 64, 3]) as
    closely as `steps` Adam steps from `init` get them: the mean squared error of vae.decode in
    [-1, 1]. The VAE encoder never shipped; this finds a latent for an image the base never drew."""
    want = torch.from_numpy(target).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    z = init.clone().float().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    for _ in range(steps):
        loss = F.mse_loss(vae.decode(z / scaling_factor).sample, want)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return z.detach()


def pixelated_samples(frozen: Frozen, out_dir: Path, base: dict, s: dict, n: int, log=print) -> dict:
    """The first `n` base samples made pixel art: each base image through world.pixel_art (the style's
    own target, PixArFK), its latent found by inverting the shipped decoder (`invert_decoder` from the
    base latent, `invert_steps` at `invert_lr`), its caption triggered. The layout is the base
    image's exactly, so the base image's smooth edges are a control this pixel art follows as well as
    pixel art can. In resumable chunks under `out_dir` (`chunked`); each chunk records its images'
    PSNR against their pixel art and their pixelation (judge.pixelation) after decoding. Returns
    base_samples' dict (latents the inverted ones) plus `inversion` (those means)."""
    import judge

    vae = []  # the decoder rebuilt in torch, on the first chunk to make

    def make(start: int, count: int) -> dict:
        if not vae:
            vae.append(shipped.rebuild_vae_decoder(frozen.model))
        lat = base["latents"][start : start + count]
        art = np.stack([world.pixel_art(im) for im in frozen.decoder(lat)])
        z = invert_decoder(vae[0], art, lat, s["invert_steps"], s["invert_lr"], frozen.decoder.scaling_factor)
        got = frozen.decoder(z).astype(np.float64)
        psnr = 10 * np.log10(255.0**2 / np.maximum(((got - art) ** 2).mean(axis=(1, 2, 3)), 1e-12))
        return dict(latents=z.numpy(), index=base["index"][start : start + count], psnr=psnr, pixelation=judge.pixelation(got))

    def describe(done: int, arrays: dict) -> None:
        log(f"pixelated: {done}/{n} (PSNR {arrays['psnr'].mean():.1f} dB to their pixel art)")

    parts, sampling_s, earlier = chunked(out_dir, n, make, describe)
    index = np.concatenate([p["index"] for p in parts])[:n]
    mean = lambda key: float(np.concatenate([p[key] for p in parts])[:n].mean())  # noqa: E731
    return {"index": index, "noise": base["noise"][:n],
            "latents": torch.from_numpy(np.concatenate([p["latents"] for p in parts])[:n]),
            "captions": [world.scene("train", int(i)).caption(trigger=True) for i in index],
            "sampling_s": sampling_s, "earlier_s": earlier,
            "inversion": {"psnr_db": round(mean("psnr"), 2), "pixelation": round(mean("pixelation"), 4),
                          "steps": s["invert_steps"], "lr": s["invert_lr"]}}


# ---- training --------------------------------------------------------------------------------


def new_controlnet(unet, channels) -> torch.nn.Module:
    from diffusers import ControlNetModel

    return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=tuple(channels))


def unet_with_residuals(unet, controlnet, noisy, t, ehs, cond, scale: float = 1.0):
    """One ControlNet + UNet call, as StableDiffusionControlNetPipeline makes it."""
    down, mid = controlnet(noisy, t, encoder_hidden_states=ehs, controlnet_cond=cond, conditioning_scale=scale,
                           return_dict=False)
    return unet(noisy, t, encoder_hidden_states=ehs, down_block_additional_residuals=down,
                mid_block_additional_residual=mid).sample


def training_timesteps(n: int, total: int, bias: float, gen: torch.Generator) -> torch.Tensor:
    """`n` timesteps in [0, total): t = (1 - u^bias) * total for uniform u. bias 1 is uniform; above
    1 the draws lean to high noise, where the layout of the image (what the edges fix) is decided;
    at low noise x_t already fixes it and the control has nothing to add."""
    u = torch.rand(n, generator=gen)
    return ((1 - u ** bias) * total).long().clamp(0, total - 1)


class TrainingSet:
    """One sampled set as the steps draw from it: latents, 3-channel conditions (their images'
    edges), caption rows into the stage's text table, the frozen UNet the residuals go through, the
    caption dropout."""

    def __init__(self, data: dict, edge: np.ndarray, unet, rows: dict, dropout: float):
        self.latents = data["latents"]
        self.cond = torch.from_numpy(edge).float().unsqueeze(1).expand(-1, 3, -1, -1)
        self.rows = torch.tensor([rows[c] for c in data["captions"]])
        self.unet, self.dropout = unet, dropout


def training_sets(ctx, frozen: Frozen, s: dict) -> tuple[list[TrainingSet], torch.Tensor, int, dict]:
    """The base's set and, with `style_samples`, the style variant's (triggered captions, no
    caption dropout: untriggered, the style variant draws no pixel art); the text embeddings of
    every caption and of "" (the row `empty`); the sampling's record.

    A style sample's condition (`style_condition`): "own", its own image's edges (the staircase
    outline of pixel art); "paired", the edges of the base's image drawn from the same noise and
    caption (sample i of both sets: seed i), which the triggered image follows in layout: the
    smooth outline a user draws for a sprite, paired with the pixel art that follows it;
    "pixelated", the base images themselves made pixel art (`pixelated_samples`: no unet_style
    samples drawn), on the base images' edges: the same pairing, with the layout followed exactly."""
    import train

    base_dir = samples_dir(ctx.run_dir, s)
    base = base_samples(frozen, base_dir, s, ctx.seed, s["samples"], log=train.log)
    sets = [(base, "unet", s["text_dropout"], base_dir)]
    mode = s.get("style_condition", "own")
    if s.get("style_samples"):
        if mode == "pixelated":
            style_dir = base_dir.with_name(f"{base_dir.name}_pixelated_inv{s['invert_steps']}_lr{s['invert_lr']:g}")
            style = pixelated_samples(frozen, style_dir, base, s, s["style_samples"], log=train.log)
        else:
            style_dir = samples_dir(ctx.run_dir, s, "unet_style", True)
            style = base_samples(frozen, style_dir, s, ctx.seed, s["style_samples"], "unet_style", trigger=True, log=train.log)
        sets.append((style, "unet_style", 0.0, style_dir))
    captions = sorted({c for data, _, _, _ in sets for c in data["captions"]})
    rows = {c: i for i, c in enumerate(captions)}
    text = frozen.text(captions + [""])
    smooth = mode in ("paired", "pixelated")  # the style set conditioned on the base images' edges
    out = [TrainingSet(data, edge_maps(frozen, (base if smooth else data)["latents"][: len(data["latents"])]),
                       frozen.unets[u], rows, p) for data, u, p, _ in sets]
    sampling = {"sampling_s": sum(data["sampling_s"] for data, _, _, _ in sets),
                "samples_dirs": [str(d.relative_to(ctx.run_dir)) for _, _, _, d in sets]}
    if len(sets) > 1 and "inversion" in sets[1][0]:
        sampling["inversion"] = sets[1][0]["inversion"]
    return out, text, len(rows), sampling


def initial_controlnet(frozen: Frozen, s: dict):
    """`s["init"]` None: a new ControlNet from the base UNet (`conditioning_channels`); a folder
    (micro model folder / ControlNet folder, e.g. "models/micro/controlnet_edge"): the shipped
    ControlNet graph there, rebuilt in torch (shipped.rebuild_controlnet), to train on from."""
    if not s.get("init"):
        return new_controlnet(frozen.unets["unet"], s["conditioning_channels"])
    folder = Path(s["init"])
    folder = folder if folder.is_absolute() else HERE.parent.parent / folder
    return shipped.rebuild_controlnet(folder.parent, folder.name)


def stage_controlnet(ctx) -> dict:
    import train
    from diffusers import DDPMScheduler

    s = ctx.settings["controlnet"]
    frozen = Frozen(Path(ctx.export_dir or shipped.MICRO), unets=("unet", "unet_style") if s.get("style_samples") else ("unet",))
    sets, text, empty, sampling = training_sets(ctx, frozen, s)
    torch.manual_seed(ctx.seed + 5)
    cn = initial_controlnet(frozen, s).to(ctx.device).train()
    opt = torch.optim.AdamW(cn.parameters(), lr=s["lr"], weight_decay=0.0)
    sched = DDPMScheduler.from_config(frozen.scheduler_config)

    def step_fn(step):
        rng = ctx.rng("controlnet", step)
        gen = ctx.gen("controlnet", step)
        ts = sets[1] if len(sets) > 1 and rng.random() < s["style_fraction"] else sets[0]
        idx = torch.from_numpy(rng.integers(len(ts.latents), size=s["batch"]))
        rows = torch.where(torch.from_numpy(rng.random(s["batch"]) < ts.dropout), empty, ts.rows[idx])
        x0, cond, ehs = ts.latents[idx], ts.cond[idx], text[rows]
        noise = torch.randn(x0.shape, generator=gen)
        bias = s.get("style_timestep_bias", s.get("timestep_bias", 1.0)) if ts is not sets[0] else s.get("timestep_bias", 1.0)
        t = training_timesteps(len(idx), sched.config.num_train_timesteps, bias, gen)
        pred = unet_with_residuals(ts.unet, cn, sched.add_noise(x0, noise, t), t, ehs, cond)
        loss = F.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(cn.parameters(), 1.0)
        opt.step()
        return loss.item()

    rec = train.train_loop(ctx, "controlnet", {"controlnet": cn}, opt, step_fn, s["warmup"])
    d = ctx.dir("controlnet")
    cn.eval().save_pretrained(str(d / "model"), safe_serialization=True)
    rec.update(samples=len(sets[0].latents), style_samples=len(sets[1].latents) if len(sets) > 1 else 0,
               params=sum(p.numel() for p in cn.parameters()), model="controlnet/model", source=str(frozen.model),
               init=s.get("init"), **sampling)
    return rec
