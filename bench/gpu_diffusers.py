#!/usr/bin/env python
"""Time diffusers' StableDiffusionPipeline, eager PyTorch, fp16, on one CUDA GPU: the baseline
bench/gpu-check.sh sets `speedscape bench --device cuda` against, on the same card in the same run.

    python bench/gpu_diffusers.py --pipeline STANDIN/pipeline --lora STANDIN/loras/peft.safetensors \
        --runs dpmpp:20,ddpm:50,lcm:4 --size 512 --repeat 3 --json out.json

Each run is `sched:steps[:cfg]` as in `speedscape bench --runs` (cfg defaults: 7.5, LCM 1.5):
`dpmpp` = DPMSolverMultistepScheduler, `ddpm` = DDPMScheduler, `lcm` = LCMScheduler with the LoRA
in --lora fused into the UNet first (load_lora_weights, set_adapters 1.0, fuse_lora,
unload_lora_weights: what models/export.py does for unet_lcm and bench/compare.py for diffusers).
Every scheduler is made `from_config` of the folder's own scheduler config, as compare.py does.

Per image end to end (prompt encoding, the loop, VAE decode, output_type="np"), loading apart;
`--warmup` untimed images, then the median of `--repeat`, torch.cuda.synchronize() before each
start and after each end. Eager means what diffusers does by default: fp16 weights and
activations (VAE included), SDPA attention, no torch.compile, no channels-last, no cuDNN
benchmark mode. Noise comes from a CPU generator seeded with --seed (same latents as speedscape's
torch-cpu noise).

The JSON is rewritten after every run, so a run cut short still leaves what was measured;
--deadline (Unix time) skips runs that would not finish before it. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

# speedscape bench's default prompt for specs (src/bench.rs: BENCH_PROMPT).
PROMPT = "a small cottage on a hillside at sunset, warm golden light, detailed"
SCHEDULERS = {"dpmpp": "DPMSolverMultistepScheduler", "ddpm": "DDPMScheduler", "lcm": "LCMScheduler"}
LIBRARIES = ("torch", "diffusers", "transformers", "peft", "huggingface_hub", "safetensors", "numpy")


def log(*parts) -> None:
    print(*parts, file=sys.stderr, flush=True)


def parse_runs(text: str) -> list[dict]:
    runs = []
    for spec in (s.strip() for s in text.split(",") if s.strip()):
        parts = spec.split(":")
        if parts[0] not in SCHEDULERS or len(parts) not in (2, 3):
            raise SystemExit(f"--runs: {spec!r} is not SCHED:STEPS[:CFG] with SCHED one of {', '.join(SCHEDULERS)}")
        cfg = float(parts[2]) if len(parts) == 3 else (1.5 if parts[0] == "lcm" else 7.5)
        runs.append({"spec": spec, "scheduler": parts[0], "steps": int(parts[1]), "cfg": cfg,
                     "unet": "lcm" if parts[0] == "lcm" else "base"})
    # Base-UNet runs first: fusing the LoRA changes the UNet for every run after it.
    return sorted(runs, key=lambda r: r["unet"] != "base")


def versions() -> dict:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def write_json_atomic(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=path.name + ".", suffix=".tmp", delete=False) as f:
        json.dump(value, f, indent=2)
        f.write("\n")
    os.replace(f.name, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pipeline", required=True, help="diffusers folder (models/make_standin.py's <out>/pipeline)")
    ap.add_argument("--lora", required=True, help="the LoRA file fused for lcm runs (the one unet_lcm was exported with)")
    ap.add_argument("--runs", default="dpmpp:20,ddpm:50,lcm:4")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--prompt", default=PROMPT)
    ap.add_argument("--json", required=True, metavar="PATH")
    ap.add_argument("--deadline", type=float, default=None, help="Unix time: skip a run that would end after it")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cpu: fp32, only to dry-run bench/gpu-check.sh")
    args = ap.parse_args(argv)
    runs = parse_runs(args.runs)

    warnings.filterwarnings("ignore", category=FutureWarning)
    t0 = time.perf_counter()
    import torch
    from diffusers import DDPMScheduler, DPMSolverMultistepScheduler, LCMScheduler, StableDiffusionPipeline
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    import_s = time.perf_counter() - t0
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("torch sees no CUDA device; this script times diffusers on a GPU (--device cpu only dry-runs it)")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    classes = {"dpmpp": DPMSolverMultistepScheduler, "ddpm": DDPMScheduler, "lcm": LCMScheduler}

    report = {
        "contender": "diffusers eager fp16" if cuda else "diffusers fp32 on CPU (dry run)",
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "versions": versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "pipeline": args.pipeline,
        "lora": args.lora,
        "size": args.size,
        "prompt": args.prompt,
        "seed": args.seed,
        "warmup": args.warmup,
        "repeat": args.repeat,
        "settings": "fp16 weights and activations (VAE too), SDPA attention, eager (no torch.compile), cudnn.benchmark off" if cuda else "fp32, CPU",
        "import_s": import_s,
        "loadavg_1min_start": os.getloadavg()[0],
        "runs": [],
        "skipped": [],
    }
    out = Path(args.json)

    t0 = time.perf_counter()
    pipe = StableDiffusionPipeline.from_pretrained(args.pipeline, torch_dtype=torch.float16 if cuda else torch.float32,
                                                   safety_checker=None, requires_safety_checker=False)
    pipe = pipe.to(args.device)
    pipe.set_progress_bar_config(disable=True)
    sync()
    report["load_s"] = time.perf_counter() - t0
    base_config = pipe.scheduler.config
    fused = False
    write_json_atomic(out, report)
    log(f"diffusers: loaded in {report['load_s']:.1f} s on {report['gpu'] or 'CPU'} (imports {import_s:.1f} s)")

    def image(run: dict) -> float:
        sync()
        start = time.perf_counter()
        with torch.inference_mode():
            pipe(args.prompt, num_inference_steps=run["steps"], guidance_scale=run["cfg"], height=args.size,
                 width=args.size, generator=torch.Generator("cpu").manual_seed(args.seed), output_type="np")
        sync()
        return time.perf_counter() - start

    for run in runs:
        label = f"{run['scheduler']} {run['steps']} cfg {run['cfg']:g} @{run['unet']}"
        if run["unet"] == "lcm" and not fused:
            t0 = time.perf_counter()
            lora = Path(args.lora)
            try:
                pipe.load_lora_weights(str(lora.parent), weight_name=lora.name, adapter_name="lcm")
                pipe.set_adapters(["lcm"], adapter_weights=[1.0])
                pipe.fuse_lora(components=["unet"], lora_scale=1.0, adapter_names=["lcm"])
                pipe.unload_lora_weights()  # plain fused Linear layers, as the exported unet_lcm has
                report["lora_fuse_s"] = time.perf_counter() - t0
            except Exception as e:  # noqa: BLE001  (e.g. no peft backend: time LCM on the base UNet, said)
                report["lora_error"] = f"{type(e).__name__}: {e}"
                run["unet"] = "base (LoRA fuse failed: same graph and shapes, other weights)"
                log(f"diffusers: fusing {lora.name} failed ({report['lora_error']}); LCM runs on the base UNet")
            fused = True
        label = f"{run['scheduler']} {run['steps']} cfg {run['cfg']:g} @{run['unet']}"
        pipe.scheduler = classes[run["scheduler"]].from_config(base_config)
        warm = [image(run) for _ in range(args.warmup)]
        # A run is skipped whole (not cut) when its timed images would end after the deadline.
        if args.deadline is not None and warm and time.time() + 1.2 * args.repeat * warm[-1] > args.deadline:
            report["skipped"].append({"spec": run["spec"], "label": label, "reason": "would end after --deadline", "warmup_s": warm})
            write_json_atomic(out, report)
            log(f"diffusers {label}: skipped (deadline)")
            continue
        times = [image(run) for _ in range(args.repeat)]
        med = statistics.median(times)
        report["runs"].append({
            **run,
            "label": label,
            "warmup_s": warm,
            "runs_s": times,
            "median_s": med,
            "min_s": min(times),
            "max_s": max(times),
            # Whole-image steps per second (prompt encoding and VAE included): a lower bound on
            # the loop's steps/s, not the same measure as speedscape's `its` (loop only).
            "steps_per_s_end_to_end": run["steps"] / med,
        })
        report["peak_gpu_bytes"] = torch.cuda.max_memory_allocated() if cuda else None
        report["loadavg_1min_end"] = os.getloadavg()[0]
        write_json_atomic(out, report)
        log(f"diffusers {label}: median {med:.3f} s over {len(times)} (warm-up {', '.join(f'{w:.2f}' for w in warm)} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
