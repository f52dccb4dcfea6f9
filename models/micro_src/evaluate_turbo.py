#!/usr/bin/env python
"""The one-step student's evaluation (issue 23): does one UNet call draw the micro world right,
and how does it stand against LCM-LoRA at the same step counts?

    .venv-ref/bin/python models/micro_src/evaluate_turbo.py [--model models/micro] [--student DIR | --ckpt FILE]

Held-out scenes (world.py's "heldout" split, full captions), `prompts` of them at `seeds` seeds
(1000, 1001, ...), through diffusers' StableDiffusionPipeline on the shipped model
(controlnet.Frozen: UNets rebuilt from their fp16 graphs, text encoder and VAE decoder through
ONNX Runtime), torch CPU generators per seed:
  turbo1/2/4  the student (--student, a diffusers UNet folder, its weights rounded to fp16 as the
              export rounds them; or --ckpt, the turbo stage's checkpoint, its EMA weights) with
              SD-Turbo's scheduler (turbo.SCHEDULER_CONFIG: Euler, trailing) at guidance 0;
  lcm1/2/4    unet_lcm with LCMScheduler at cfg `lcm_cfg` (exercise 2's LCM-LoRA runs);
  dpm20       the base with DPM-Solver++ 20 at cfg `cfg` (the student's teacher; the reference).
Each image is read by the shipped judge (models/micro/judge, ONNX Runtime): accuracy per head
(colour, shape, background) against the scene's labels, and SSIM (evaluate.ssim) to dpm20's
image of the same (scene, seed). A contact sheet (rows: scenes; columns: dpm20, turbo1, lcm1,
lcm4, turbo4) goes to --sheet.

Targets (TARGETS): at 1 step, colour / shape / background accuracy >= 0.9 / 0.8 / 0.8, and the
mean of the three at least 0.1 above LCM-LoRA's at 1 step ("clearly above").
"""

from __future__ import annotations

import argparse
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

import controlnet as cn_mod  # noqa: E402
import evaluate  # noqa: E402
import evaluate_controlnet  # noqa: E402
import evaluate_judge  # noqa: E402
import judge as judge_mod  # noqa: E402
import shipped  # noqa: E402
import turbo  # noqa: E402
import world  # noqa: E402

SEED0 = 1000
SETTINGS = dict(prompts=60, seeds=2, cfg=7.5, lcm_cfg=1.5, dpm_steps=20, steps=(1, 2, 4), batch=60)
SMOKE = dict(prompts=2, seeds=1, dpm_steps=3, steps=(1,), batch=4)
SHEET_COLUMNS = ("dpm20", "turbo1", "lcm1", "lcm4", "turbo4")

# (metric key, comparison, threshold)
TARGETS = {
    "turbo1_colour": (">=", 0.9),
    "turbo1_shape": (">=", 0.8),
    "turbo1_background": (">=", 0.8),
    "turbo1_over_lcm1": (">=", 0.1),  # mean accuracy of the three heads, turbo 1 step - LCM-LoRA 1 step
}


def load_student(folder: Path | None = None, ckpt: Path | None = None, model: Path = shipped.MICRO) -> torch.nn.Module:
    """The student as the export will ship it: from a diffusers folder, or the EMA weights of the
    turbo stage's checkpoint put into the shipped base's architecture; rounded to fp16."""
    from diffusers import UNet2DConditionModel

    if folder is not None:
        unet = UNet2DConditionModel.from_pretrained(str(folder))
    else:
        unet = shipped.rebuild_unets(model, ("unet",))["unet"]
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        with torch.no_grad():
            for p, s in zip(unet.parameters(), state["ema"]["shadow"]):
                p.copy_(s)
    return evaluate_controlnet.fp16_rounded(unet.eval().requires_grad_(False))


def turbo_pipeline(frozen: cn_mod.Frozen, student):
    """diffusers' StableDiffusionPipeline over the student with SD-Turbo's scheduler."""
    from diffusers import EulerDiscreteScheduler

    pipe = frozen.pipeline("unet")
    pipe.unet = student
    pipe.scheduler = EulerDiscreteScheduler.from_config(turbo.SCHEDULER_CONFIG)
    return pipe


def run_all(frozen: cn_mod.Frozen, student, s: dict, log=print) -> tuple[dict, dict, np.ndarray]:
    """{run: uint8 images [N, 64, 64, 3]} and {run: seconds} of every run of the module doc."""
    scenes = [world.scene("heldout", i, full_caption=True) for i in range(s["prompts"])]
    pairs = [(sc, SEED0 + k) for sc in scenes for k in range(s["seeds"])]
    prompts, seeds = [sc.caption() for sc, _ in pairs], [seed for _, seed in pairs]
    runs = {"dpm20": (lambda: frozen.pipeline("unet", scheduler="dpm"), s["dpm_steps"], s["cfg"])}
    for k in s["steps"]:
        runs[f"turbo{k}"] = (lambda: turbo_pipeline(frozen, student), k, 0.0)
        runs[f"lcm{k}"] = (lambda: frozen.pipeline("unet_lcm", scheduler="lcm"), k, s["lcm_cfg"])
    images, timings = {}, {}
    for key, (pipe, steps, cfg) in runs.items():
        t0 = time.perf_counter()
        images[key] = frozen.decoder(frozen.generate(pipe(), prompts, seeds, steps, cfg, batch=s["batch"]))
        timings[key] = round(time.perf_counter() - t0, 2)
        log(f"evaluate_turbo: {key} ({len(prompts)} images) in {timings[key]} s")
    labels = np.array([sc.labels() for sc, _ in pairs], dtype=np.int64)
    return images, timings, labels


def metrics_of(images: dict, labels: np.ndarray, judge: evaluate_judge.GraphJudge) -> dict:
    acc = {k: judge_mod.accuracy(evaluate_judge.predicted(judge.logits(v)), labels) for k, v in images.items()}
    mean = {k: float(np.mean(list(a.values()))) for k, a in acc.items()}
    ref = images["dpm20"]
    ssim = {k: float(np.mean([evaluate.ssim(a, b) for a, b in zip(v, ref)])) for k, v in images.items() if k != "dpm20"}
    values = {f"turbo1_{h}": acc["turbo1"][h] for h in judge_mod.HEADS}
    values["turbo1_over_lcm1"] = mean["turbo1"] - mean["lcm1"]
    targets = evaluate.target_records(values, TARGETS)
    return {"accuracy": acc, "accuracy_mean": mean, "ssim_to_dpm20": ssim, "targets": targets,
            "targets_met": evaluate.targets_met(targets)}


def contact_sheet(images: dict, path: Path, rows: int) -> None:
    from PIL import Image

    cols = [k for k in SHEET_COLUMNS if k in images]
    sheet = np.concatenate([np.concatenate(list(images[k][:rows]), 0) for k in cols], 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(path, optimize=True)
    path.with_suffix(".txt").write_text("columns: " + ", ".join(cols) + "\n")


def evaluate_student(model: Path, student, s: dict, sheet: Path | None = None, log=print) -> dict:
    t0 = time.perf_counter()
    frozen = cn_mod.Frozen(model, unets=("unet", "unet_lcm"))
    images, timings, labels = run_all(frozen, student, s, log)
    m = metrics_of(images, labels, evaluate_judge.GraphJudge(model / "judge" / "model.onnx"))
    m.update(settings={k: list(v) if isinstance(v, tuple) else v for k, v in s.items()},
             seeds=[SEED0 + k for k in range(s["seeds"])], heldout_scenes=s["prompts"], judge="models/micro/judge (shipped)",
             scheduler=turbo.SCHEDULER_CONFIG, timings_s=timings, wall_s=round(time.perf_counter() - t0, 1))
    if sheet is not None:
        contact_sheet(images, sheet, rows=min(8, len(labels)))
    for k in images:
        a = m["accuracy"][k]
        log(f"evaluate_turbo: {k:7s} colour {a['colour']:.3f} shape {a['shape']:.3f} background {a['background']:.3f}"
            f"  ssim {m['ssim_to_dpm20'].get(k, 1.0):.3f}")
    for k, t in m["targets"].items():
        log(f"evaluate_turbo: {k:20s} {t['value']:.3f} {t['op']} {t['threshold']}  {'PASS' if t['pass'] else 'FAIL'}")
    return m


def main(argv=None) -> int:
    import train

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(shipped.MICRO))
    ap.add_argument("--student", default=None, help="a diffusers UNet folder (default <run-dir>/turbo/model)")
    ap.add_argument("--ckpt", default=None, help="the turbo stage's ckpt.pt instead (its EMA weights)")
    ap.add_argument("--out", default=str(train.DEFAULT_RUN_DIR / "turbo_metrics.json"))
    ap.add_argument("--sheet", default=str(train.DEFAULT_RUN_DIR / "eval" / "turbo_sheet.png"))
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    s = {**SETTINGS, **(SMOKE if args.smoke else {})}
    model = Path(args.model)
    student = load_student(ckpt=Path(args.ckpt), model=model) if args.ckpt else \
        load_student(Path(args.student or train.DEFAULT_RUN_DIR / "turbo" / "model"))
    m = evaluate_student(model, student, s, Path(args.sheet), log=train.log)
    train.write_json(Path(args.out), m)
    train.log(f"targets met: {m['targets_met']} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
