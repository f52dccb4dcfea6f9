"""The micro model's preview decoder (issue 25): its training data, its training stage, and the
trajectories of x0 predictions both the stage and evaluate_preview.py draw from.

A preview shows each step's x0 prediction (what DPM-Solver++'s step computes from the guided
noise prediction; diffusers keeps it in `scheduler.model_outputs[-1]`), so the decoder learns on
exactly those: for train-split captions, DPM-Solver++ (`sample_steps`, cfg `sample_cfg`) through
diffusers' StableDiffusionPipeline on the shipped model (controlnet.Frozen: the UNet rebuilt in
torch, the text encoder and VAE decoder through ONNX Runtime), every step's x0 plus the final
latents; the teacher image of each is the shipped VAE decoder's (latents / scaling_factor, uint8
as diffusers' output_type="np" rounds). `style_samples` more trajectories come from unet_style
on triggered captions (pixel art is previewed too). Written in chunks to
<run-dir>/preview/samples*/, so an interrupted sampling resumes.

The decoder is TAESD's recipe at micro size: a diffusers AutoencoderTiny (its encoder unused)
whose DecoderTiny has TAESD's structure -- soft clamp tanh(x/3)*3, conv, ReLU blocks, nearest x2
upsampling + conv between levels -- with `channels` channels and `blocks` blocks per level
(3 levels: 16x16 latents -> 64x64). It takes the latents as the scheduler holds them
(scaling_factor 1.0 in its config; the VAE's own 0.71 is learned away) and is trained with
L1 + `mse_weight` x MSE of (decoder + 1) / 2 against the teacher image in [0, 1]
(train.train_loop's checkpoint/budget/cosine pattern). The weights go to <run-dir>/preview/model
(a diffusers folder) with latent_rgb.json: the least-squares fit of the teacher's colour, in
[-1, 1] and averaged over each latent cell's 4x4 pixels, on the latent channels (the contract's
latent_rgb: v = bias + sum_c latent_c * factors[c]; rgb = clamp((v + 1) / 2, 0, 1)) -- the fair
latent->RGB baseline for the micro VAE.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for p in (str(HERE), str(HERE.parent)):
    if p not in sys.path:
        sys.path.insert(0, p)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import controlnet as cn_mod  # noqa: E402
import shipped  # noqa: E402
import world  # noqa: E402

ARCHITECTURE = "micro-taesd"


class X0Recorder:
    """A pipeline whose calls also record each step's x0 prediction (DPM-Solver++'s converted
    model output, after classifier-free guidance) through diffusers' callback_on_step_end; used
    in place of the pipeline by controlnet.Frozen.generate. `steps()`: [steps, N, 4, h, w]."""

    def __init__(self, pipe):
        self.pipe = pipe
        self.batches: list[list[torch.Tensor]] = []

    def _record(self, pipe, i, t, kwargs):
        self.batches[-1].append(pipe.scheduler.model_outputs[-1].detach().clone())
        return {}

    def __call__(self, **kwargs):
        self.batches.append([])
        return self.pipe(**kwargs, callback_on_step_end=self._record)

    def steps(self) -> torch.Tensor:
        return torch.cat([torch.stack(b) for b in self.batches], dim=1)


def x0_trajectories(frozen: cn_mod.Frozen, unet: str, prompts: list[str], seeds: list[int], steps: int, cfg: float,
                    batch: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0 of every step [steps, N, 4, 16, 16], final latents [N, 4, 16, 16]) of DPM-Solver++
    `steps` at `cfg` on `unet`, torch CPU generators per seed (controlnet.Frozen.generate)."""
    recorder = X0Recorder(frozen.pipeline(unet))
    final = frozen.generate(recorder, prompts, seeds, steps, cfg, batch=batch)
    return recorder.steps(), final


# ---- data ------------------------------------------------------------------------------------


def sample_set(frozen: cn_mod.Frozen, out_dir: Path, s: dict, seed: int, n: int, unet: str = "unet", trigger: bool = False,
               log=print) -> dict:
    """`n` trajectories of `unet` on train-split captions in chunks of `chunk` under `out_dir`
    (chunks already there are kept: resume). {latents [M, 4, 16, 16] fp32 (each trajectory's
    x0 at every step, then its final latents), images uint8 [M, 64, 64, 3] (the VAE's),
    step [M] (0-based; `sample_steps` for the final latents)}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for start in range(0, n, s["chunk"]):
        path = out_dir / f"chunk_{start:06d}.npz"
        if path.is_file():
            continue
        count = min(s["chunk"], n - start)
        scenes = [world.scene("train", i) for i in range(start, start + count)]
        seeds = [seed * 1_000_003 + 7919 + i for i in range(start, start + count)]
        x0, final = x0_trajectories(frozen, unet, [sc.caption(trigger=trigger) for sc in scenes], seeds, s["sample_steps"],
                                    s["sample_cfg"], s["sample_batch"])
        lat = torch.cat([x0, final[None]]).reshape(-1, *final.shape[1:])  # step-major
        step = np.repeat(np.arange(x0.shape[0] + 1), count)
        tmp = path.with_name(path.stem + ".tmp.npz")
        np.savez(tmp, latents=lat.numpy(), images=frozen.decoder(lat), step=step)
        tmp.replace(path)
        log(f"preview: sampled {start + count}/{n} trajectories of {unet}")
    parts = [np.load(f) for f in sorted(out_dir.glob("chunk_*.npz"))]
    return {k: np.concatenate([p[k] for p in parts]) for k in ("latents", "images", "step")}


def training_data(ctx, frozen: cn_mod.Frozen, s: dict, d: Path) -> dict:
    import train

    sets = [sample_set(frozen, d / "samples", s, ctx.seed, s["samples"], log=train.log)]
    if s.get("style_samples"):
        sets.append(sample_set(frozen, d / "samples_style", s, ctx.seed, s["style_samples"], "unet_style", trigger=True,
                               log=train.log))
    return {k: np.concatenate([x[k] for x in sets]) for k in sets[0]}


# ---- the decoder and the latent->RGB fit ------------------------------------------------------


def new_decoder(s: dict):
    """The untrained AutoencoderTiny (module doc): `channels` throughout, `blocks` per level."""
    from diffusers import AutoencoderTiny

    levels = len(s["blocks"])
    return AutoencoderTiny(latent_channels=4, encoder_block_out_channels=(s["channels"],) * levels,
                           decoder_block_out_channels=(s["channels"],) * levels, num_encoder_blocks=(1,) * levels,
                           num_decoder_blocks=tuple(s["blocks"]), scaling_factor=1.0)


def preview_image(tiny, latents: torch.Tensor) -> torch.Tensor:
    """The decoder's image in [0, 1] before the clamp the exported graph adds ([B, 3, H, W])."""
    return (tiny.decoder(latents) + 1) / 2


def fit_latent_rgb(latents: np.ndarray, images: np.ndarray, scale: int) -> dict:
    """The contract's latent_rgb: least squares of the image's colour in [-1, 1], averaged over
    each latent cell's `scale` x `scale` pixels, on [latent channels, 1]. Also its RMS residual."""
    n, c, h, w = latents.shape
    colour = images.astype(np.float64).reshape(n, h, scale, w, scale, 3).mean(axis=(2, 4)) / 127.5 - 1.0
    x = np.concatenate([latents.transpose(0, 2, 3, 1).reshape(-1, c), np.ones((n * h * w, 1))], axis=1).astype(np.float64)
    y = colour.reshape(-1, 3)
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    rms = float(np.sqrt(np.mean((x @ coef - y) ** 2)))
    return {"factors": [[round(float(v), 6) for v in row] for row in coef[:c]],
            "bias": [round(float(v), 6) for v in coef[c]], "rms_residual": round(rms, 5)}


def latent_rgb_image(latents: np.ndarray, fit: dict) -> np.ndarray:
    """The latent preview (contract convention) of latents [N, 4, h, w]: uint8 [N, h, w, 3]."""
    v = np.einsum("nchw,ck->nhwk", latents.astype(np.float64), np.array(fit["factors"])) + np.array(fit["bias"])
    return np.rint(np.clip((v + 1) / 2, 0, 1) * 255).astype(np.uint8)


# ---- training --------------------------------------------------------------------------------


def stage_preview(ctx) -> dict:
    import train

    s = ctx.settings["preview"]
    d = ctx.dir("preview")
    frozen = cn_mod.Frozen(Path(ctx.export_dir or shipped.MICRO), unets=("unet", "unet_style") if s.get("style_samples") else ("unet",))
    data = training_data(ctx, frozen, s, d)
    latents = torch.from_numpy(data["latents"]).float()
    target = torch.from_numpy(data["images"]).permute(0, 3, 1, 2)  # uint8, to [0, 1] per batch
    scale = target.shape[-1] // latents.shape[-1]
    fit = fit_latent_rgb(data["latents"], data["images"], scale)
    train.write_json(d / "latent_rgb.json", {k: fit[k] for k in ("factors", "bias")})
    torch.manual_seed(ctx.seed + 25)
    tiny = new_decoder(s).to(ctx.device)
    tiny.decoder.train()
    opt = torch.optim.AdamW(tiny.decoder.parameters(), lr=s["lr"], weight_decay=0.0)

    def step_fn(step):
        rng = ctx.rng("preview", step)
        idx = torch.from_numpy(rng.integers(len(latents), size=s["batch"]))
        pred = preview_image(tiny, latents[idx].to(ctx.device))
        y = target[idx].to(ctx.device).float() / 255.0
        loss = F.l1_loss(pred, y) + s["mse_weight"] * F.mse_loss(pred, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    rec = train.train_loop(ctx, "preview", {"decoder": tiny.decoder}, opt, step_fn, s["warmup"])
    tiny.eval().save_pretrained(str(d / "model"), safe_serialization=True)
    rec.update(trajectories=s["samples"], style_trajectories=s.get("style_samples", 0), training_latents=len(latents),
               params=sum(p.numel() for p in tiny.decoder.parameters()), architecture=ARCHITECTURE, model="preview/model",
               latent_rgb={**fit, "file": "preview/latent_rgb.json"}, source=str(frozen.model))
    return rec


def load_latent_rgb(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "preview" / "latent_rgb.json").read_text())
