"""The micro model's one-step student (issue 23): its teacher data, its training stage and the
one-step sampling it is trained for.

What it is for: SD-Turbo's place on the speed landscape (one UNet call, no guidance) at micro
size. SD-Turbo is run by diffusers as EulerDiscreteScheduler with `trailing` spacing at guidance
0; at 1 step that is a single UNet call at t = 999 and the image is Euler's x0 prediction,
    x0 = x_T - sigma_max * eps(x_T / sqrt(sigma_max^2 + 1), 999, c),   x_T = noise * sigma_max,
and at 2 and 4 steps the trailing schedule adds calls at t = 499 (and 749, 249) on
x_t = x0_prev + sigma_t * eps_prev.

The recipe (and why not adversarial distillation): the micro world is deterministic given the
teacher's noise, so the student learns the teacher's own map noise -> image directly (knowledge
distillation of the ODE, Luhman & Luhman 2021; the "distillation loss" half of ADD with the
teacher's full trajectory as target). ADD's other half, a discriminator on frozen features, is
there to keep a large model's one-step samples sharp on an open-ended distribution; here the
judge reads the result, and the evaluation (evaluate_turbo.py) records whether the images are
right at 1 step. Data and loss:

- Teacher data (controlnet.base_samples): for train-split captions, the shipped base UNet with
  DPM-Solver++ (`sample_steps`, cfg `sample_cfg`) through diffusers' StableDiffusionPipeline
  from noise drawn per seed; (noise, final latents, caption) triples, in chunks under
  <run-dir>/samples/unet_dpm20_cfg7.5/ (an interrupted sampling resumes; the controlnet stage
  trains on the same samples).
- Student (`stage_turbo`): the whole base UNet, fine-tuned (its weights are a copy of the
  shipped base, rebuilt in torch by shipped.py), no guidance (the captions only: the teacher's
  cfg is distilled in). Each batch: a `one_step_fraction` share at t = 999 from the teacher's own
  noise, loss = MSE(x0, teacher latents) -- the one-step map; the rest at t in {749, 499, 249}
  (the trailing schedule's later steps) on the teacher latents noised with fresh noise, loss =
  MSE(x0, teacher latents) -- so 2 and 4 steps refine instead of drifting. EMA of the weights,
  train.train_loop's checkpoint/budget/cosine pattern; the weights go to <run-dir>/turbo/model
  (a diffusers UNet folder).
"""

from __future__ import annotations

import copy
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

LATENT_SHAPE = cn_mod.LATENT_SHAPE
ONE_STEP_T = 999
# The trailing schedule's timesteps after the first at 2 and 4 steps (diffusers' EulerDiscreteScheduler,
# timestep_spacing="trailing", 1000 training steps): 4 steps -> 999, 749, 499, 249; 2 steps -> 999, 499.
LATER_T = (749, 499, 249)
# SD-Turbo's scheduler config, as stabilityai/sd-turbo ships it (the one the exporter's tiny
# look-alike carries): what the student is run with.
SCHEDULER_CONFIG = {
    "_class_name": "EulerDiscreteScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
    "clip_sample": False, "interpolation_type": "linear", "num_train_timesteps": 1000, "prediction_type": "epsilon",
    "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "timestep_spacing": "trailing",
    "trained_betas": None, "use_karras_sigmas": False,
}


def sigmas(alphas_cumprod: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Euler's sigma at integer timesteps: sqrt((1 - abar) / abar)."""
    ac = alphas_cumprod[t]
    return ((1 - ac) / ac).sqrt()


def x0_prediction(unet, x: torch.Tensor, t: torch.Tensor, sigma: torch.Tensor, ehs: torch.Tensor) -> torch.Tensor:
    """EulerDiscreteScheduler's x0 at one step, eps prediction: x - sigma * eps(x / sqrt(sigma^2 + 1))."""
    s = sigma.view(-1, 1, 1, 1)
    eps = unet(x / (s**2 + 1).sqrt(), t, encoder_hidden_states=ehs).sample
    return x - s * eps


# ---- training --------------------------------------------------------------------------------


def student_loss(student, data: dict, text: torch.Tensor, rows: torch.Tensor, idx: torch.Tensor, n_one: int,
                 acp: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The batch `idx`'s loss (module doc): its first `n_one` samples at t = 999 from the teacher's
    noise, the rest at a later trailing timestep on freshly noised teacher latents."""
    z, ehs = data["latents"][idx], text[rows[idx]]
    later = torch.tensor(LATER_T)[torch.randint(len(LATER_T), (len(idx) - n_one,), generator=gen)]
    t = torch.cat([torch.full((n_one,), ONE_STEP_T), later])
    sigma = sigmas(acp, t)
    noise = torch.cat([data["noise"][idx[:n_one]], torch.randn((len(idx) - n_one, *LATENT_SHAPE), generator=gen)])
    start = torch.cat([torch.zeros_like(z[:n_one]), z[n_one:]])  # x_T = noise * sigma_max at t = 999
    x = start + sigma.view(-1, 1, 1, 1) * noise
    return F.mse_loss(x0_prediction(student, x, t, sigma, ehs), z)


def stage_turbo(ctx) -> dict:
    import train
    from diffusers import EulerDiscreteScheduler

    s = ctx.settings["turbo"]
    d = ctx.dir("turbo")
    frozen = cn_mod.Frozen(Path(ctx.export_dir or shipped.MICRO), unets=("unet",))
    data = cn_mod.base_samples(frozen, cn_mod.samples_dir(ctx.run_dir, s), s, ctx.seed, s["samples"], log=train.log)
    captions = sorted(set(data["captions"]))
    rows = torch.tensor([{c: i for i, c in enumerate(captions)}[c] for c in data["captions"]])
    text = frozen.text(captions)
    acp = EulerDiscreteScheduler.from_config(SCHEDULER_CONFIG).alphas_cumprod.float()
    student = copy.deepcopy(frozen.unets["unet"]).to(ctx.device).train()
    params = list(student.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=s["lr"], weight_decay=0.0)
    ema = train.Ema(params, s["ema"])
    n_one = max(1, round(s["batch"] * s["one_step_fraction"]))

    def step_fn(step):
        rng, gen = ctx.rng("turbo", step), ctx.gen("turbo", step)
        idx = torch.from_numpy(rng.integers(len(data["latents"]), size=s["batch"]))
        return train.descend(student_loss(student, data, text, rows, idx, n_one, acp, gen), opt, params, ema)

    rec = train.train_loop(ctx, "turbo", {"student": student, "ema": ema}, opt, step_fn, s["warmup"])
    ema.copy_to(params)
    student.eval().save_pretrained(str(d / "model"), safe_serialization=True)
    # The stage's wall time (train.run_stage) counts sampling done by an earlier, interrupted run too.
    rec["resumed_elapsed_s"] = round(rec["resumed_elapsed_s"] + data["earlier_s"], 1)
    rec.update(samples=len(data["latents"]), captions=len(captions), params=sum(p.numel() for p in params),
               sampling_s=data["sampling_s"], model="turbo/model", source=str(frozen.model), scheduler=SCHEDULER_CONFIG)
    return rec
