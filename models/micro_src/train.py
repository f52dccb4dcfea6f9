#!/usr/bin/env python
"""Train speedscape's micro model end to end: one command, stage by stage, resumable.

    .venv-ref/bin/python models/micro_src/train.py                  # CPU, <= 2.5 h on 2 cores
    .venv-ref/bin/python models/micro_src/train.py --device cuda    # GPU: the step caps end first
    .venv-ref/bin/python models/micro_src/train.py --smoke --run-dir /tmp/micro-smoke --export-dir /tmp/micro

Stages (each writes <run-dir>/<stage>/done.json with its wall time, steps and metrics, and is
skipped when that exists; a training stage checkpoints <run-dir>/<stage>/ckpt.pt every
--ckpt-every seconds and on exit, and resumes from it, so an interrupted run goes on where it
stopped):

  data      render the train/heldout scenes (world.py), tokenize captions with CLIP's tokenizer
  judge     the evaluation CNN (judge.py), held-out accuracy on plain and pixel-art renders
  vae       AutoencoderKL, L1 + MSE + KL; scaling factor = 1 / std of the latents (as SD did)
  latents   the VAE's posterior (mean, std) of every training image, plain and pixel-art
  base      text encoder + UNet jointly: eps-prediction on SD v1.5's noise schedule, CFG
            dropout, min-SNR weighting, EMA; saves <run-dir>/pipeline (a diffusers folder)
  lcm       LCM-LoRA distillation of the base (diffusers' consistency-distillation recipe)
  style     the pixel-art style LoRA with trigger word PixArFK (+ untriggered prior images)
  evaluate  evaluate.py's metrics over held-out prompts -> <run-dir>/metrics.json
  export    models/export.py's Optimum layout + the trimmed vocabulary + the judge (judge/) -> --export-dir
  controlnet  the edge ControlNet (controlnet.py), trained against --export-dir's shipped model
            (models/micro by default: runs on a fresh clone without the stages before it)
  preview   the preview decoder (preview.py): a micro TAESD distilled from the shipped VAE decoder on
            the x0 predictions of DPM-Solver++ trajectories, and the micro latent->RGB fit (also
            against --export-dir's shipped model)
  turbo     the one-step student (turbo.py): the base UNet distilled to SD-Turbo's sampling (Euler,
            trailing spacing, no guidance) on the base's own DPM-Solver++ images (also against
            --export-dir's shipped model)

<run-dir>/train_log.json collects every stage's record (the manifest's "micro" section).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS = HERE.parent
ROOT = MODELS.parent
for p in (str(HERE), str(MODELS)):
    if p not in sys.path:
        sys.path.insert(0, p)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
from diffusers.utils import logging as _dlog  # noqa: E402
from transformers.utils import logging as _tlog  # noqa: E402

for _l in (_dlog, _tlog):
    _l.set_verbosity_error()
    _l.disable_progress_bar()

import warnings  # noqa: E402

warnings.filterwarnings("ignore", message=".*Already found a `peft_config`.*")

import config  # noqa: E402
import judge as judge_mod  # noqa: E402
import vocab  # noqa: E402
import world  # noqa: E402

DEFAULT_RUN_DIR = ROOT / ".micro-run"
DEFAULT_EXPORT_DIR = MODELS / "micro"
SCHEDULER_CONFIG = None  # SD v1.5's, from make_tiny (loaded lazily: make_tiny imports diffusers)


def log(*parts) -> None:
    print(time.strftime("%H:%M:%S"), *parts, flush=True)


def tokenizer_source() -> Path:
    for p in (MODELS / "tiny" / "tokenizer", ROOT.parent / "shared" / "clip-tokenizer"):
        if (p / "tokenizer.json").is_file():
            return p
    raise FileNotFoundError("no CLIP tokenizer (models/tiny/tokenizer or ../shared/clip-tokenizer)")


def sd_scheduler_config() -> dict:
    import make_tiny

    return json.loads(make_tiny.SD15_SCHEDULER_CONFIG)


def write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    os.replace(tmp, path)


class Interrupted(Exception):
    """Raised by --interrupt-after (tests): the stage stopped early, its checkpoint saved."""


class Context:
    def __init__(self, run_dir: Path, settings: dict, device: str, seed: int, smoke: bool,
                 ckpt_every: float = 120.0, interrupt_after: int | None = None, export_dir: Path | None = None):
        self.run_dir = Path(run_dir)
        self.settings = settings
        self.device = torch.device(device)
        self.seed = seed
        self.smoke = smoke
        self.ckpt_every = ckpt_every
        self.interrupt_after = interrupt_after
        self.export_dir = export_dir
        self._data = None

    def dir(self, stage: str) -> Path:
        d = self.run_dir / stage
        d.mkdir(parents=True, exist_ok=True)
        return d

    def done(self, stage: str) -> dict | None:
        p = self.run_dir / stage / "done.json"
        return json.loads(p.read_text()) if p.is_file() else None

    def rng(self, stage: str, step: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, config.ORDER.index(stage), step])

    def gen(self, stage: str, step: int) -> torch.Generator:
        return torch.Generator().manual_seed(int(self.rng(stage, step).integers(2**62)))

    # ---- data ------------------------------------------------------------------------
    def data(self) -> dict:
        if self._data is None:
            d = self.run_dir / "data"
            self._data = {k[:-4]: np.load(d / k) for k in sorted(os.listdir(d)) if k.endswith(".npy")}
            self._data["captions"] = json.loads((d / "captions.json").read_text())
        return self._data


def cosine_lr(base: float, progress: float, step: int, warmup: int) -> float:
    w = min(1.0, (step + 1) / max(1, warmup))
    return base * w * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


class Ema:
    """Exponential moving average of parameters (diffusers' EMAModel warm-up: decay grows as
    (1 + n) / (10 + n) up to `decay`)."""

    def __init__(self, params, decay: float):
        self.params = list(params)
        self.shadow = [p.detach().clone() for p in self.params]
        self.decay = decay
        self.n = 0

    @torch.no_grad()
    def update(self):
        self.n += 1
        d = min(self.decay, (1 + self.n) / (10 + self.n))
        for s, p in zip(self.shadow, self.params):
            s.lerp_(p.detach(), 1 - d)

    @torch.no_grad()
    def copy_to(self, params):
        for s, p in zip(self.shadow, params):
            p.copy_(s)

    def state_dict(self):
        return {"shadow": self.shadow, "n": self.n, "decay": self.decay}

    def load_state_dict(self, s):
        self.shadow = [t.to(p.device) for t, p in zip(s["shadow"], self.params)]
        self.n, self.decay = s["n"], s["decay"]


def descend(loss: torch.Tensor, optimizer, params, ema: Ema | None = None) -> float:
    """One optimizer step on `loss`: gradients clipped to norm 1, then the EMA (if any) follows."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    if ema is not None:
        ema.update()
    return loss.item()


def train_loop(ctx: Context, stage: str, objects: dict, optimizer, step_fn, warmup: int = 0) -> dict:
    """Run `step_fn(step) -> loss` until the stage's step cap or time budget; checkpoint and
    resume `objects` (name -> has state_dict/load_state_dict) and the optimizer."""
    s = ctx.settings[stage]
    ckpt = ctx.dir(stage) / "ckpt.pt"
    step, elapsed, losses, resumed, resumed_elapsed = 0, 0.0, [], None, 0.0
    if ckpt.is_file():
        state = torch.load(ckpt, map_location=ctx.device, weights_only=False)
        for k, o in objects.items():
            o.load_state_dict(state[k])
        optimizer.load_state_dict(state["optimizer"])
        step, elapsed, losses = state["step"], state["elapsed"], state["losses"]
        resumed, resumed_elapsed = step, elapsed
        log(f"{stage}: resumed from step {step} ({elapsed:.0f} s done)")

    def save():
        state = {k: o.state_dict() for k, o in objects.items()}
        state.update(optimizer=optimizer.state_dict(), step=step, elapsed=elapsed + time.perf_counter() - t0, losses=losses)
        tmp = ckpt.with_name("ckpt.pt.tmp")
        torch.save(state, tmp)
        os.replace(tmp, ckpt)

    t0 = last_save = last_log = time.perf_counter()
    ran = 0
    while step < s["steps"] and elapsed + (time.perf_counter() - t0) < s["budget_s"]:
        progress = max(step / s["steps"], (elapsed + time.perf_counter() - t0) / s["budget_s"])
        lr = cosine_lr(s["lr"], progress, step, warmup)
        for g in optimizer.param_groups:
            g["lr"] = lr
        loss = float(step_fn(step))
        if not math.isfinite(loss):
            raise RuntimeError(f"{stage}: loss is {loss} at step {step}")
        losses.append(loss)
        step += 1
        ran += 1
        now = time.perf_counter()
        if now - last_log > 30 or step == s["steps"]:
            recent = float(np.mean(losses[-50:]))
            log(f"{stage}: step {step}/{s['steps']} loss {recent:.4f} lr {lr:.2e} ({elapsed + now - t0:.0f}/{s['budget_s']} s)")
            last_log = now
        if now - last_save > ctx.ckpt_every:
            save()
            last_save = now
        if ctx.interrupt_after is not None and ran >= ctx.interrupt_after and step < s["steps"]:
            save()
            raise Interrupted(f"{stage}: stopped after {ran} step(s) (--interrupt-after)")
    save()
    wall = elapsed + time.perf_counter() - t0
    return {
        "steps": step,
        "train_wall_s": round(wall, 1),
        "stopped_by": "steps" if step >= s["steps"] else "budget",
        "resumed_from": resumed,
        "resumed_elapsed_s": round(resumed_elapsed, 1),
        "loss_first": float(np.mean(losses[:20])) if losses else None,
        "loss_last": float(np.mean(losses[-50:])) if losses else None,
    }


# --------------------------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------------------------


def stage_data(ctx: Context) -> dict:
    from tokenizers import Tokenizer

    s = ctx.settings["data"]
    d = ctx.dir("data")
    tok = Tokenizer.from_file(str(tokenizer_source() / "tokenizer.json"))

    def ids(texts):
        out = np.full((len(texts), 77), vocab.CLIP_EOS, dtype=np.int32)
        for i, t in enumerate(texts):
            body = tok.encode(t, add_special_tokens=False).ids[:75]
            out[i, 0] = vocab.CLIP_BOS
            out[i, 1 : 1 + len(body)] = body
        return out

    arrays, captions = {}, {}
    for split, n, full in (("train", s["train"], False), ("heldout", s["heldout"], True)):
        imgs, labels, caps, trig = [], [], [], []
        for i in range(n):
            sc = world.scene(split, i, full_caption=full)
            imgs.append(world.render(sc))
            labels.append(sc.labels())
            caps.append(sc.caption())
            trig.append(sc.caption(trigger=True))
        imgs = np.stack(imgs)
        arrays[f"{split}_images"] = imgs
        arrays[f"{split}_labels"] = np.array(labels, dtype=np.int64)
        arrays[f"{split}_ids"] = ids(caps)
        arrays[f"{split}_trigger_ids"] = ids(trig)
        n_style = s["style"] if split == "train" else n
        arrays[f"{split}_pixel"] = np.stack([world.pixel_art(im, block=world.AUGMENT_BLOCK) for im in imgs[:n_style]])
        arrays[f"{split}_style"] = np.stack([world.pixel_art(im) for im in imgs[:n_style]])
        captions[split] = caps
    arrays["empty_ids"] = ids([""])
    for k, v in arrays.items():
        np.save(d / f"{k}.npy", v)
    write_json(d / "captions.json", captions)
    # sanity: the tokenizer.json path above must give what diffusers' CLIPTokenizer gives
    from transformers import CLIPTokenizer

    ct = CLIPTokenizer.from_pretrained(str(tokenizer_source()))
    ref = ct(captions["train"][:8], padding="max_length", max_length=77, truncation=True).input_ids
    if not np.array_equal(np.array(ref), arrays["train_ids"][:8]):
        raise RuntimeError("caption ids differ from CLIPTokenizer's")
    return {"train": s["train"], "heldout": s["heldout"], "style": s["style"], "bytes": sum(v.nbytes for v in arrays.values())}


def stage_judge(ctx: Context) -> dict:
    s = ctx.settings["judge"]
    data = ctx.data()
    torch.manual_seed(ctx.seed)
    model = judge_mod.Judge().to(ctx.device)
    opt = torch.optim.AdamW(model.parameters(), lr=s["lr"], weight_decay=1e-4)
    images, labels, pixel = data["train_images"], data["train_labels"], data["train_pixel"]

    def step_fn(step):
        rng = ctx.rng("judge", step)
        idx = rng.integers(len(images), size=s["batch"])
        batch = images[idx].copy()
        use_px = (rng.random(s["batch"]) < s["pixel_fraction"]) & (idx < len(pixel))
        batch[use_px] = pixel[idx[use_px]]
        x = judge_mod.augment(judge_mod.to_tensor(batch), ctx.gen("judge", step)).to(ctx.device)
        model.train()
        loss = judge_mod.loss_fn(model(x), torch.from_numpy(labels[idx]).to(ctx.device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    rec = train_loop(ctx, "judge", {"model": model}, opt, step_fn)
    torch.save(model.state_dict(), ctx.dir("judge") / "judge.pt")
    hl = data["heldout_labels"]
    rec["heldout_accuracy"] = judge_mod.accuracy(judge_mod.predict(model, data["heldout_images"]), hl)
    rec["heldout_accuracy_pixel_art"] = judge_mod.accuracy(judge_mod.predict(model, data["heldout_pixel"]), hl)
    log("judge: held-out accuracy", rec["heldout_accuracy"], "pixel art", rec["heldout_accuracy_pixel_art"])
    return rec


def load_judge(run_dir: Path, device="cpu") -> judge_mod.Judge:
    model = judge_mod.Judge()
    model.load_state_dict(torch.load(Path(run_dir) / "judge" / "judge.pt", map_location="cpu"))
    return model.to(device).eval()


def to_model_range(images: np.ndarray, device) -> torch.Tensor:
    return judge_mod.to_tensor(images, device) * 2 - 1


def stage_vae(ctx: Context) -> dict:
    from diffusers import AutoencoderKL

    s = ctx.settings["vae"]
    data = ctx.data()
    torch.manual_seed(ctx.seed)
    vae = AutoencoderKL(**config.VAE).to(ctx.device)
    opt = torch.optim.AdamW(vae.parameters(), lr=s["lr"], weight_decay=0.0)
    images, pixel = data["train_images"], data["train_pixel"]

    def step_fn(step):
        rng = ctx.rng("vae", step)
        idx = rng.integers(len(images), size=s["batch"])
        batch = images[idx].copy()
        use_px = (rng.random(s["batch"]) < s["pixel_fraction"]) & (idx < len(pixel))
        batch[use_px] = pixel[idx[use_px]]
        x = to_model_range(batch, ctx.device)
        vae.train()
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=ctx.gen("vae", step)).to(ctx.device)
        rec = vae.decode(z).sample
        loss = F.l1_loss(rec, x) + F.mse_loss(rec, x) + s["kl_weight"] * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    rec = train_loop(ctx, "vae", {"vae": vae}, opt, step_fn)
    vae.eval()
    with torch.no_grad():
        # SD's scaling factor: 1 / std of the (sampled) latents of a batch of training images
        n = min(s["scale_batch"], len(images))
        x = to_model_range(images[:n], ctx.device)
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=torch.Generator().manual_seed(ctx.seed)).to(ctx.device)
        scale = float(1.0 / z.std())
        vae.register_to_config(scaling_factor=scale)
        rec["scaling_factor"] = scale
        for name, key in (("psnr_heldout", "heldout_images"), ("psnr_heldout_pixel_art", "heldout_pixel")):
            x = to_model_range(data[key][:256], ctx.device)
            r = vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
            mse = ((r - x) / 2).pow(2).mean((1, 2, 3))
            rec[name] = float((10 * torch.log10(1 / mse.clamp_min(1e-10))).mean())
    vae.save_pretrained(str(ctx.dir("vae") / "model"))
    log(f"vae: scaling factor {scale:.4f}, held-out PSNR {rec['psnr_heldout']:.2f} dB (pixel art {rec['psnr_heldout_pixel_art']:.2f})")
    return rec


def load_vae(run_dir: Path, device="cpu"):
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(str(Path(run_dir) / "vae" / "model")).to(device).eval()


def stage_latents(ctx: Context) -> dict:
    s = ctx.settings["latents"]
    data = ctx.data()
    vae = load_vae(ctx.run_dir, ctx.device)
    out = {}
    with torch.no_grad():
        for key in ("train_images", "train_style"):
            means, stds = [], []
            for i in range(0, len(data[key]), s["batch"]):
                post = vae.encode(to_model_range(data[key][i : i + s["batch"]], ctx.device)).latent_dist
                means.append(post.mean.half().cpu())
                stds.append(post.std.half().cpu())
            out[key.replace("train_", "")] = {"mean": torch.cat(means), "std": torch.cat(stds)}
    torch.save(out, ctx.dir("latents") / "latents.pt")
    return {"plain": len(out["images"]["mean"]), "style": len(out["style"]["mean"]), "scaling_factor": vae.config.scaling_factor}


def noise_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(sd_scheduler_config())


class LatentSource:
    """Training latents: sampled from the stored posteriors, scaled by the VAE's factor."""

    def __init__(self, ctx: Context):
        lat = torch.load(ctx.run_dir / "latents" / "latents.pt")
        self.sets = {k: (v["mean"].float(), v["std"].float()) for k, v in lat.items()}
        self.scale = load_vae(ctx.run_dir).config.scaling_factor
        self.device = ctx.device

    def sample(self, which: str, idx: np.ndarray, gen: torch.Generator) -> torch.Tensor:
        mean, std = self.sets[which]
        i = torch.from_numpy(idx)
        z = mean[i] + std[i] * torch.randn(mean[i].shape, generator=gen)
        return (z * self.scale).to(self.device)


def build_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**config.UNET)


def build_text_encoder():
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(**config.TEXT_ENCODER)
    cfg.architectures = ["CLIPTextModel"]
    return CLIPTextModel(cfg)


def noised(sched, latents, gen, device):
    """SD's forward process at a uniform timestep: (noise, t, noisy latents)."""
    noise = torch.randn(latents.shape, generator=gen).to(device)
    t = torch.randint(0, sched.config.num_train_timesteps, (latents.shape[0],), generator=gen).to(device)
    return noise, t, sched.add_noise(latents, noise, t)


def diffusion_loss(unet, text_encoder, sched, latents, ids, gen, device, min_snr_gamma=None):
    """SD's training objective: eps-prediction at a uniform timestep, optional min-SNR weights."""
    noise, t, noisy = noised(sched, latents, gen, device)
    ehs = text_encoder(input_ids=ids)[0]
    pred = unet(noisy, t, ehs).sample
    mse = (pred - noise).pow(2).mean((1, 2, 3))
    if min_snr_gamma:
        ac = sched.alphas_cumprod.to(device)[t]
        snr = ac / (1 - ac)
        mse = mse * torch.clamp(snr, max=min_snr_gamma) / snr
    return mse.mean()


def caption_ids(data, idx, rng, cfg_dropout, device, key="train_ids"):
    ids = data[key][idx].copy()
    drop = rng.random(len(idx)) < cfg_dropout
    ids[drop] = data["empty_ids"][0]
    return torch.from_numpy(ids).long().to(device)


def stage_base(ctx: Context) -> dict:
    s = ctx.settings["base"]
    data = ctx.data()
    lat = LatentSource(ctx)
    sched = noise_scheduler()
    torch.manual_seed(ctx.seed)
    unet = build_unet().to(ctx.device)
    torch.manual_seed(ctx.seed + 1)
    te = build_text_encoder().to(ctx.device)
    emb = te.get_input_embeddings().weight
    others = [p for p in list(unet.parameters()) + list(te.parameters()) if p is not emb]
    opt = torch.optim.AdamW([{"params": others, "weight_decay": s["weight_decay"]}, {"params": [emb], "weight_decay": 0.0}], lr=s["lr"])
    params = list(unet.parameters()) + list(te.parameters())
    ema = Ema(params, s["ema"])
    n = len(lat.sets["images"][0])

    def step_fn(step):
        rng = ctx.rng("base", step)
        gen = ctx.gen("base", step)
        idx = rng.integers(n, size=s["batch"])
        unet.train()
        te.train()
        loss = diffusion_loss(unet, te, sched, lat.sample("images", idx, gen), caption_ids(data, idx, rng, s["cfg_dropout"], ctx.device),
                              gen, ctx.device, s["min_snr_gamma"])
        return descend(loss, opt, params, ema)

    rec = train_loop(ctx, "base", {"unet": unet, "text_encoder": te, "ema": ema}, opt, step_fn, s["warmup"])
    ema.copy_to(params)
    rec["unet_params"] = sum(p.numel() for p in unet.parameters())
    rec["text_encoder_params_used"] = sum(p.numel() for p in te.parameters()) - emb.numel()
    save_pipeline(ctx, unet.cpu().eval(), te.cpu().eval())
    return rec


def save_pipeline(ctx: Context, unet, text_encoder) -> None:
    """<run-dir>/pipeline: the base as a diffusers folder (SD's scheduler config verbatim, the
    trimmed CLIP tokenizer, unused embedding rows zeroed) -- what the LoRAs train on and the
    exporter reads."""
    import make_tiny
    from diffusers import PNDMScheduler, StableDiffusionPipeline
    from transformers import CLIPTokenizer

    tok_dir = ctx.dir("tokenizer")
    stats = vocab.trim_tokenizer(tokenizer_source(), tok_dir, world.vocabulary_texts() + ctx.data()["captions"]["train"][:2000])
    keep = vocab.used_ids(tok_dir, world.vocabulary_texts())
    vocab.tie_unused_rows(text_encoder, keep)
    pipe = StableDiffusionPipeline(
        vae=load_vae(ctx.run_dir),
        text_encoder=text_encoder,
        tokenizer=CLIPTokenizer.from_pretrained(str(tok_dir)),
        unet=unet,
        scheduler=PNDMScheduler.from_config(sd_scheduler_config()),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    folder = ctx.run_dir / "pipeline"
    make_tiny.save_diffusers_folder(pipe, folder, tok_dir)
    write_json(ctx.run_dir / "pipeline" / "vocab.json", {"kept_ids": keep, **stats})


def load_pipeline(run_dir: Path, device="cpu"):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(Path(run_dir) / "pipeline"), safety_checker=None,
                                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def add_lora(unet, name: str, rank: int):
    from peft import LoraConfig

    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=config.LORA_TARGETS), adapter_name=name)
    unet.set_adapter(name)
    for n_, p in unet.named_parameters():
        p.requires_grad_(f"lora_" in n_ and f".{name}." in n_)
    return [p for p in unet.parameters() if p.requires_grad]


def save_lora(unet, name: str, out: Path) -> Path:
    import make_tiny
    from diffusers import StableDiffusionPipeline
    from peft.utils import get_peft_model_state_dict

    state = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(unet, adapter_name=name).items()}
    out.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(save_directory=str(out), unet_lora_layers=state,
                                              weight_name=f"{name}.safetensors", safe_serialization=True)
    path = out / f"{name}.safetensors"
    make_tiny.canonicalize_safetensors(path)
    return path


class AdapterState:
    """state_dict/load_state_dict of one LoRA adapter's trainable tensors (for checkpoints)."""

    def __init__(self, params):
        self.params = params

    def state_dict(self):
        return [p.detach().clone() for p in self.params]

    def load_state_dict(self, s):
        with torch.no_grad():
            for p, v in zip(self.params, s):
                p.copy_(v)


def lcm_scalings(t: torch.Tensor, timestep_scaling: float, sigma_data: float = 0.5):
    """LCM's boundary-condition scalings (c_skip, c_out), as diffusers' LCMScheduler."""
    scaled = timestep_scaling * t.float()
    c_skip = sigma_data**2 / (scaled**2 + sigma_data**2)
    c_out = scaled / (scaled**2 + sigma_data**2) ** 0.5
    return c_skip.view(-1, 1, 1, 1), c_out.view(-1, 1, 1, 1)


def lora_student(ctx: Context, name: str, seed_offset: int):
    """The trained base pipeline, frozen, with a fresh rank-`settings[name].rank` LoRA adapter
    `name` on its UNet (seeded with seed + seed_offset): the adapter is all that trains.
    Returns (unet, text_encoder, the adapter's parameters, their optimizer)."""
    s = ctx.settings[name]
    pipe = load_pipeline(ctx.run_dir, ctx.device)
    unet, te = pipe.unet, pipe.text_encoder
    te.requires_grad_(False)
    unet.requires_grad_(False)
    torch.manual_seed(ctx.seed + seed_offset)
    params = add_lora(unet, name, s["rank"])
    opt = torch.optim.AdamW(params, lr=s["lr"], weight_decay=0.0)
    return unet, te, params, opt


def train_lora(ctx: Context, name: str, unet, params, opt, step_fn, extra: dict | None = None) -> dict:
    """Runs a LoRA stage's loop (checkpointing the adapter and `extra`'s objects) and saves the
    adapter under <run-dir>/loras; the stage's record."""
    rec = train_loop(ctx, name, {"lora": AdapterState(params), **(extra or {})}, opt, step_fn, ctx.settings[name]["warmup"])
    rec["lora_params"] = sum(p.numel() for p in params)
    rec["file"] = str(save_lora(unet, name, ctx.run_dir / "loras").relative_to(ctx.run_dir))
    return rec


def stage_lcm(ctx: Context) -> dict:
    s = ctx.settings["lcm"]
    data = ctx.data()
    lat = LatentSource(ctx)
    sched = noise_scheduler()
    unet, te, params, opt = lora_student(ctx, "lcm", seed_offset=2)
    ac = sched.alphas_cumprod.to(ctx.device)
    T = sched.config.num_train_timesteps
    k = T // s["ddim_steps"]
    ddim_t = torch.arange(1, s["ddim_steps"] + 1) * k - 1  # 19, 39, ..., 999
    n = len(lat.sets["images"][0])
    empty = torch.from_numpy(data["empty_ids"]).long().to(ctx.device)

    def x0_of(x, eps, t):
        a = ac[t].view(-1, 1, 1, 1)
        return (x - (1 - a).sqrt() * eps) / a.sqrt()

    def step_fn(step):
        rng = ctx.rng("lcm", step)
        gen = ctx.gen("lcm", step)
        idx = rng.integers(n, size=s["batch"])
        b = len(idx)
        x0 = lat.sample("images", idx, gen)
        ids = torch.from_numpy(data["train_ids"][idx]).long().to(ctx.device)
        with torch.no_grad():
            cond = te(input_ids=ids)[0]
            uncond = te(input_ids=empty)[0].expand(b, -1, -1)
        index = torch.randint(0, s["ddim_steps"], (b,), generator=gen)
        t_start = ddim_t[index].to(ctx.device)
        t_prev = (t_start - k).clamp(min=0)
        noise = torch.randn(x0.shape, generator=gen).to(ctx.device)
        x_start = sched.add_noise(x0, noise, t_start)
        w = (s["w_min"] + (s["w_max"] - s["w_min"]) * torch.rand(b, generator=gen)).view(-1, 1, 1, 1).to(ctx.device)
        cs_s, co_s = lcm_scalings(t_start, s["timestep_scaling"])
        cs_p, co_p = lcm_scalings(t_prev, s["timestep_scaling"])
        unet.train()
        eps = unet(x_start, t_start, cond).sample
        model_pred = cs_s * x_start + co_s * x0_of(x_start, eps, t_start)
        with torch.no_grad():
            unet.disable_adapters()  # the teacher: the base UNet, classifier-free guided with w
            e_c = unet(x_start, t_start, cond).sample
            e_u = unet(x_start, t_start, uncond).sample
            unet.enable_adapters()
            unet.set_adapter("lcm")
            x0_c, x0_u = x0_of(x_start, e_c, t_start), x0_of(x_start, e_u, t_start)
            x0_g = x0_c + w * (x0_c - x0_u)
            e_g = e_c + w * (e_c - e_u)
            a_prev = ac[t_prev].view(-1, 1, 1, 1)
            x_prev = a_prev.sqrt() * x0_g + (1 - a_prev).sqrt() * e_g  # one DDIM step t_start -> t_prev
            e_t = unet(x_prev, t_prev, cond).sample  # the target: the student itself, no gradient
            target = cs_p * x_prev + co_p * x0_of(x_prev, e_t, t_prev)
        c = s["huber_c"]
        loss = (torch.sqrt((model_pred.float() - target.float()) ** 2 + c**2) - c).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss.item()

    return train_lora(ctx, "lcm", unet, params, opt, step_fn)


def trigger_token_ids(data: dict) -> list[int]:
    """The token ids that only triggered captions hold (", PixArFK" -> ',', 'pix', 'ar', 'fk')."""
    plain = set(np.unique(data["train_ids"]).tolist())
    return sorted(set(np.unique(data["train_trigger_ids"]).tolist()) - plain)


def stage_style(ctx: Context) -> dict:
    """The PixArFK style LoRA, with the trigger's token embeddings learned beside it (pivotal
    tuning): the base text encoder never saw the trigger's tokens, so their rows are untrained
    noise that a frozen encoder passes on as almost nothing. The rows are re-drawn at the start
    (CLIP's init, seeded), train with the adapter and are written into <run-dir>/pipeline's text
    encoder at the end; no other caption holds those tokens, so every untriggered prompt reads
    exactly as before. Batches: `prior_fraction` untriggered plain renders, the rest PixArFK
    renders with triggered captions (eps-prediction). The untriggered samples' target is the base
    UNet's own prediction on the same noisy latent (the adapter off), weighted `prior_weight`: a
    noise-free "change nothing without the trigger". With the noise as their target (the usual
    prior preservation) the style leaked into every prompt: drawing a plain scene blocky barely
    moves an eps loss, and the adapter's convolutions see no text. Empty captions (CFG dropout)
    come with both: `cfg_dropout` of the plain renders (target: the base's prediction) and
    `style_dropout` of the PixArFK ones (target: the noise), so the unconditional branch learns
    that pixel art exists. Guidance then amplifies only what the trigger adds beyond that: with
    the unconditional branch left as the base's, cfg 7.5 multiplied the whole style 7.5 times and
    the shapes broke up, colours read right in 36 % of images (models/micro_src/README.md)."""
    s = ctx.settings["style"]
    data = ctx.data()
    lat = LatentSource(ctx)
    sched = noise_scheduler()
    unet, te, params, opt = lora_student(ctx, "style", seed_offset=3)
    rows = torch.tensor(trigger_token_ids(data))
    emb = te.get_input_embeddings().weight
    torch.manual_seed(ctx.seed + 4)
    with torch.no_grad():
        emb[rows] = torch.randn(len(rows), emb.shape[1]) * te.config.initializer_range
    emb.requires_grad_(True)
    mask = torch.zeros(emb.shape[0], 1)
    mask[rows] = 1.0
    emb.register_hook(lambda g: g * mask.to(g.device))  # only the trigger's rows learn
    opt.add_param_group({"params": [emb]})  # the adapter's settings: the same lr, no weight decay
    n_plain, n_style = len(lat.sets["images"][0]), len(lat.sets["style"][0])

    def step_fn(step):
        gen = ctx.gen("style", step)
        prior, idx, ids = style_batch(ctx.rng("style", step), s, data, n_plain, n_style)
        z_plain = lat.sample("images", idx % n_plain, gen)
        z_style = lat.sample("style", idx % n_style, gen)
        pm = torch.from_numpy(prior).to(ctx.device).view(-1, 1, 1, 1)
        latents = torch.where(pm, z_plain, z_style)
        unet.train()
        noise, t, noisy = noised(sched, latents, gen, ctx.device)
        ehs = te(input_ids=torch.from_numpy(ids).long().to(ctx.device))[0]
        pred = unet(noisy, t, ehs).sample
        target = noise.clone()
        if prior.any():  # untriggered: what the base itself predicts (the adapter off), not the noise
            keep = torch.from_numpy(prior).to(ctx.device)
            with torch.no_grad():
                unet.disable_adapters()
                target[keep] = unet(noisy[keep], t[keep], ehs[keep].detach()).sample
                unet.enable_adapters()
        weight = torch.from_numpy(np.where(prior, s["prior_weight"], 1.0)).float().to(ctx.device)
        loss = ((pred - target).pow(2).mean((1, 2, 3)) * weight).sum() / weight.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss.item()

    rec = train_lora(ctx, "style", unet, params, opt, step_fn, extra={"trigger_rows": EmbeddingRows(emb, rows)})
    te.save_pretrained(str(ctx.run_dir / "pipeline" / "text_encoder"), safe_serialization=True)
    rec["trigger"] = world.TRIGGER
    rec["trigger_token_ids"] = rows.tolist()
    rec["trigger_row_norms"] = [round(float(v), 4) for v in emb[rows].detach().norm(dim=1)]
    return rec


def style_batch(rng, s: dict, data: dict, n_plain: int, n_style: int):
    """One style batch's make-up: `prior` (True: an untriggered plain render, False: a PixArFK
    one), each sample's index into its set, and its caption's token ids (triggered for PixArFK,
    empty for `cfg_dropout` of the plain ones and `style_dropout` of the PixArFK ones)."""
    b = s["batch"]
    prior = rng.random(b) < s["prior_fraction"]
    idx = np.where(prior, rng.integers(n_plain, size=b), rng.integers(n_style, size=b))
    ids = np.where(prior[:, None], data["train_ids"][idx % n_plain], data["train_trigger_ids"][idx % n_style])
    drop = rng.random(b)
    ids[prior & (drop < s["cfg_dropout"])] = data["empty_ids"][0]
    ids[~prior & (drop < s["style_dropout"])] = data["empty_ids"][0]
    return prior, idx, ids


class EmbeddingRows:
    """state_dict/load_state_dict of some rows of an embedding table (for checkpoints)."""

    def __init__(self, weight, rows):
        self.weight, self.rows = weight, rows

    def state_dict(self):
        return self.weight[self.rows].detach().clone()

    def load_state_dict(self, s):
        with torch.no_grad():
            self.weight[self.rows] = s


def stage_evaluate(ctx: Context) -> dict:
    import evaluate

    metrics = evaluate.evaluate(ctx.run_dir, ctx.settings["evaluate"], device=str(ctx.device), log=log)
    write_json(ctx.run_dir / "metrics.json", metrics)
    return {"targets_met": metrics["targets_met"], "metrics": "metrics.json"}


def stage_export(ctx: Context) -> dict:
    import export_micro

    if ctx.export_dir is None:
        return {"skipped": "no --export-dir"}
    return export_micro.export_model(ctx.run_dir, ctx.export_dir, dtype=ctx.settings["export"]["dtype"],
                                     verify=ctx.settings["export"]["verify"], log=log,
                                     judge_scenes=ctx.settings["export"].get("judge_scenes"))


def stage_controlnet(ctx: Context) -> dict:
    import controlnet

    return controlnet.stage_controlnet(ctx)


def stage_preview(ctx: Context) -> dict:
    import preview

    return preview.stage_preview(ctx)


def stage_turbo(ctx: Context) -> dict:
    import turbo

    return turbo.stage_turbo(ctx)


STAGE_FUNCS = {
    "data": stage_data,
    "judge": stage_judge,
    "vae": stage_vae,
    "latents": stage_latents,
    "base": stage_base,
    "lcm": stage_lcm,
    "style": stage_style,
    "evaluate": stage_evaluate,
    "export": stage_export,
    "controlnet": stage_controlnet,
    "preview": stage_preview,
    "turbo": stage_turbo,
}
assert tuple(STAGE_FUNCS) == config.ORDER


def run_stage(ctx: Context, stage: str, force: bool = False) -> dict:
    if (rec := ctx.done(stage)) is not None and not force:
        log(f"{stage}: done ({rec.get('wall_s')} s), skipped")
        return rec
    if force:  # from scratch: drop the stage's checkpoint and record
        for name in ("ckpt.pt", "done.json"):
            (ctx.run_dir / stage / name).unlink(missing_ok=True)
    log(f"{stage}: starting")
    t0 = time.perf_counter()
    rec = STAGE_FUNCS[stage](ctx)
    # wall time of the stage, with the training time of earlier, interrupted runs of it
    wall = time.perf_counter() - t0 + rec.get("resumed_elapsed_s", 0.0)
    rec = {"wall_s": round(wall, 1), **rec, "settings": ctx.settings[stage]}
    write_json(ctx.dir(stage) / "done.json", rec)
    log(f"{stage}: done in {rec['wall_s']} s")
    return rec


def train_log(ctx: Context) -> dict:
    import importlib.metadata as md

    stages = {s: ctx.done(s) for s in config.ORDER if ctx.done(s) is not None}
    return {
        "command": "python models/micro_src/train.py" + (" --smoke" if ctx.smoke else ""),
        "device": str(ctx.device),
        "torch_threads": torch.get_num_threads(),
        "seed": ctx.seed,
        "smoke": ctx.smoke,
        "grammar": world.grammar(),
        "sizes": {"unet": config.UNET, "vae": config.VAE, "text_encoder": config.TEXT_ENCODER, "lora_targets": config.LORA_TARGETS},
        "stages": stages,
        "total_wall_s": round(sum(r.get("wall_s", 0) for r in stages.values()), 1),
        "libraries": {n: md.version(n) for n in ("torch", "diffusers", "transformers", "peft")},
    }


def run(run_dir: Path, stages=config.ORDER, smoke=False, device="cpu", seed=config.SEED, overrides=None,
        ckpt_every=120.0, interrupt_after=None, export_dir: Path | None = DEFAULT_EXPORT_DIR, force=()) -> dict:
    ctx = Context(run_dir, config.stage_settings(smoke, overrides), device, seed, smoke, ckpt_every, interrupt_after, export_dir)
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    for stage in stages:
        run_stage(ctx, stage, force=stage in force)
        write_json(ctx.run_dir / "train_log.json", train_log(ctx))
    return train_log(ctx)


def parse_overrides(items: list[str]) -> dict:
    """STAGE.KEY=VALUE (VALUE as JSON, else a string)."""
    out = {}
    for item in items or []:
        key, _, value = item.partition("=")
        stage, _, name = key.partition(".")
        if stage not in config.STAGES or not name:
            raise SystemExit(f"--set {item!r}: expected STAGE.KEY=VALUE with STAGE one of {', '.join(config.ORDER)}")
        try:
            v = json.loads(value)
        except json.JSONDecodeError:
            v = value
        out.setdefault(stage, {})[name] = v
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", default=str(DEFAULT_RUN_DIR), help="checkpoints, data and logs (default .micro-run)")
    ap.add_argument("--export-dir", default=str(DEFAULT_EXPORT_DIR), help="where the export stage writes the model (default models/micro)")
    ap.add_argument("--smoke", action="store_true", help="every stage for a handful of steps at tiny batch (minutes on CPU)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--seed", type=int, default=config.SEED)
    ap.add_argument("--stages", default=",".join(config.ORDER), help="comma-separated stages to run, in order")
    ap.add_argument("--force", default="", help="comma-separated stages to rerun from scratch (their checkpoint and record dropped)")
    ap.add_argument("--set", action="append", metavar="STAGE.KEY=VALUE", help="override a stage setting, e.g. base.budget_s=3600")
    ap.add_argument("--ckpt-every", type=float, default=120.0, help="seconds between checkpoints")
    ap.add_argument("--interrupt-after", type=int, default=None, help=argparse.SUPPRESS)  # tests: stop a stage early
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    stages = [s for s in args.stages.split(",") if s]
    if bad := [s for s in stages if s not in config.ORDER]:
        raise SystemExit(f"unknown stage(s) {bad}; stages: {', '.join(config.ORDER)}")
    try:
        rec = run(Path(args.run_dir), stages, args.smoke, args.device, args.seed, parse_overrides(args.set), args.ckpt_every,
                  args.interrupt_after, Path(args.export_dir) if args.export_dir else None, set(args.force.split(",")))
    except Interrupted as e:
        log(str(e))
        return 3
    log(f"all done in {rec['total_wall_s']} s: {args.run_dir}/train_log.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
