#!/usr/bin/env python
"""Time speedscape against the Python stacks on the same ONNX/diffusers model, in one run.

    bench/setup.sh && bench/make-model.sh                     # once: the venv and the model (.bench/)
    .venv-bench/bin/python bench/compare.py                   # 256² and 512², DPM-Solver++ and LCM
    .venv-bench/bin/python bench/compare.py --sizes 256 --settings dpmpp --json out.json

Contenders, each in its own subprocess (so peak RSS is its own), each timed end to end per image
(prompt encoding + denoising loop + VAE decode; model loading timed apart), with the same prompt,
seed, size, steps and guidance, after `--warmup` untimed images:

    speedscape   `speedscape bench --model-dir ONNX --runs SPEC --size S --repeat N --json F`
    diffusers    diffusers' StableDiffusionPipeline on torch, from the diffusers folder, in --dtype
                 on --device, with diffusers' default attention (SDPA on torch 2: the processor
                 classes in use are recorded and printed)
    diffusers-compile  the same with `torch.compile(unet, mode=--compile-mode)` (max-autotune by
                 default); the first warm-up image pays the compilation and is reported apart
    optimum      optimum-onnx's ORTStableDiffusionPipeline (the CPU or CUDA provider), from the ONNX folder
    ort-python   a bare loop: onnxruntime InferenceSessions for text encoder, UNet and VAE decoder,
                 the scheduler arithmetic done by diffusers' scheduler object (the least a Python
                 program can spend outside ONNX Runtime)

The CPU comparison (default): fp32, speedscape, diffusers, optimum and ort-python. `--gpu` is the
GPU one: --device cuda --dtype fp16, speedscape (`bench --device cuda`), diffusers,
diffusers-compile and optimum; point --onnx at an fp16 export for the ONNX contenders and
--speedscape-export at speedscape's (e.g. the `--dtype fp16 --optimize cuda` form). On CUDA each
diffusers contender also draws one untimed image under torch.profiler: its summed GPU kernel time
and kernel launches against the median image time say how busy eager PyTorch keeps the GPU (a
launch-bound loop shows kernel time far below wall time). A contender that cannot run on the
device (no CUDA in torch, no CUDA provider in onnxruntime) is skipped with the reason.

Settings: `dpmpp` = DPM-Solver++ (diffusers' DPMSolverMultistepScheduler, default config) 4 steps,
cfg 7.5, base UNet (`dpmpp20`: 20 steps, the GPU comparison's default with `lcm`); `lcm` = LCMScheduler 4 steps, cfg 1.5, the UNet with the LCM LoRA fused
(speedscape and the ONNX contenders load unet_lcm/; diffusers fuses the same LoRA file the export
fused, as export.py does: load_lora_weights, set_adapters 1.0, fuse_lora).

The model folder (--model, default .bench) holds what bench/make-model.sh writes: standin/pipeline
(diffusers), standin/loras/peft.safetensors (the LoRA in unet_lcm) and onnx/ (Optimum layout).
--make-model runs it first when the folder is incomplete.

stdout: a Markdown table per setting and size with each contender's median seconds and speedscape's
ratio against each ("3.1x" = that contender takes 3.1 times as long as speedscape); then load
times, peak RSS and thread counts. --json also writes every number, the versions and the CPU.
Progress goes to stderr. A contender that cannot run here (binary or library missing) is reported
as skipped with the reason; one that fails makes the exit status 1.

Environment: bench/requirements.txt (pinned; it says why it is not the reference venv).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONTENDERS = ("speedscape", "diffusers", "optimum", "ort-python", "diffusers-compile")
PYTHON_CONTENDERS = CONTENDERS[1:]
# The contenders each mode runs unless --contenders says otherwise.
DEFAULT_CONTENDERS = {"cpu": CONTENDERS[:4], "cuda": ("speedscape", "diffusers", "diffusers-compile", "optimum")}

# name -> (scheduler, steps, cfg, unet variant); the speedscape spec is `sched:steps:cfg@unet`.
SETTINGS = {
    "dpmpp": ("dpmpp", 4, 7.5, "base"),
    "dpmpp20": ("dpmpp", 20, 7.5, "base"),
    "lcm": ("lcm", 4, 1.5, "lcm"),
}
# The settings each mode runs unless --settings says otherwise (the GPU targets are DPM-Solver++ 20
# and LCM 4; on 2 CPU cores 20 steps at 512² take minutes per image).
DEFAULT_SETTINGS = {"cpu": ("dpmpp", "lcm"), "cuda": ("dpmpp20", "lcm")}
DEFAULT_PROMPT = "a small cottage on a hillside at sunset"
DEFAULT_SEED = 42

# Libraries whose versions shape the numbers (recorded per contender, from its own interpreter).
LIBRARIES = ("torch", "diffusers", "transformers", "optimum", "optimum-onnx", "onnxruntime", "numpy", "peft")


def log(*parts) -> None:
    print(*parts, file=sys.stderr, flush=True)


class CompareError(RuntimeError):
    """A problem the user can fix; printed without a traceback."""


class Skip(Exception):
    """This contender cannot run in this environment (the message says why and how to fix it)."""


# --------------------------------------------------------------------------------------------
# The model folder
# --------------------------------------------------------------------------------------------


def model_paths(root: Path, onnx: str = "onnx") -> dict[str, Path]:
    return {
        "root": root,
        "pipeline": root / "standin" / "pipeline",
        "lora": root / "standin" / "loras" / "peft.safetensors",
        "onnx": root / onnx,
    }


def model_missing(paths: dict[str, Path]) -> list[str]:
    need = [
        paths["pipeline"] / "model_index.json",
        paths["lora"],
        paths["onnx"] / "manifest.json",  # export.py moves the folder into place only when complete
        paths["onnx"] / "unet_lcm" / "model.onnx",
    ]
    return [str(p) for p in need if not p.exists()]


def ensure_model(root: Path, make: bool, size: str, onnx: str = "onnx") -> dict[str, Path]:
    paths = model_paths(root, onnx)
    missing = model_missing(paths)
    if missing and make:
        log(f"making the benchmark model in {root} (bench/make-model.sh --size {size}) ...")
        subprocess.run([str(REPO / "bench" / "make-model.sh"), str(root), "--size", size], check=True, stdout=subprocess.DEVNULL)
        missing = model_missing(paths)
    if missing:
        raise CompareError(
            f"{root} is not a complete benchmark model; missing: {', '.join(missing)}\n"
            f"Fix: run `bench/make-model.sh {root}` (or pass --make-model), or point --model at a folder it wrote"
        )
    return paths


def onnx_view(onnx: Path, unet: str, tmp: Path) -> Path:
    """The ONNX folder as Optimum expects it, with `unet/` being `unet_<variant>/` (symlinks only)."""
    if unet == "base":
        return onnx
    view = tmp / f"onnx-{unet}"
    view.mkdir(exist_ok=True)
    for entry in onnx.iterdir():
        if entry.name == "unet" or entry.name.startswith("unet_"):
            continue
        (view / entry.name).symlink_to(entry.resolve())
    src = onnx / f"unet_{unet}"
    if not src.is_dir():
        raise CompareError(f"{onnx} has no unet_{unet}/\nFix: re-export with bench/make-model.sh (it fuses the lcm variant)")
    (view / "unet").symlink_to(src.resolve())
    return view


# --------------------------------------------------------------------------------------------
# Workers: one contender, one setting, one size, in a subprocess of its own
# --------------------------------------------------------------------------------------------


def library_versions() -> dict:
    import importlib.metadata as md

    out = {}
    for name in LIBRARIES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def peak_rss_bytes() -> int | None:
    """This process's peak resident set size (VmHWM)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def writer_check(pipeline: Path) -> None:
    """Refuse a diffusers folder written by newer diffusers/transformers than these.

    Older releases load such a folder without an error but not as written: transformers 4.x
    re-initializes every weight of a CLIPTextModel saved by 5.x (its keys lost `text_model.`), and
    diffusers 0.36 cannot read the LoRA metadata 0.42 writes. Timing random weights would go
    unnoticed, so this is a skip with the reason, not a warning.
    """
    import importlib.metadata as md

    from packaging.version import Version

    found = []
    for lib, rel, key in (("transformers", "text_encoder/config.json", "transformers_version"),
                          ("diffusers", "unet/config.json", "_diffusers_version")):
        written = json.loads((pipeline / rel).read_text()).get(key)
        have = md.version(lib)
        if written and Version(have) < Version(written):
            found.append(f"{lib} {have} here, {written} wrote {rel}")
    if found:
        raise Skip(
            f"this interpreter cannot load {pipeline} as written ({'; '.join(found)}); "
            f"fix: run the diffusers contender under the reference venv that wrote the model "
            f"(scripts/setup-ref.sh; compare.py uses .venv-ref/bin/python for it when present, or pass --python diffusers=PATH)"
        )


def make_scheduler(kind: str, config):
    if kind == "dpmpp":
        from diffusers import DPMSolverMultistepScheduler

        return DPMSolverMultistepScheduler.from_config(config)
    from diffusers import LCMScheduler

    return LCMScheduler.from_config(config)


def ort_threads(session) -> dict:
    opts = session.get_session_options()
    n = opts.intra_op_num_threads
    return {"intra_op": n, "intra_op_meaning": "ORT default (one per physical core)" if n == 0 else "set", "inter_op": opts.inter_op_num_threads}


class DiffusersRunner:
    """diffusers' StableDiffusionPipeline on torch in the job's dtype on its device, with
    diffusers' default attention processors (recorded)."""

    compiled = False

    def __init__(self, job: dict):
        try:
            import torch
            from diffusers import StableDiffusionPipeline
        except ImportError as e:
            raise Skip(f"diffusers/torch not importable ({e}); fix: run under .venv-bench (bench/setup.sh)") from None
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.set_verbosity_error()
        if job["device"] == "cuda" and not torch.cuda.is_available():
            raise Skip("torch sees no CUDA device (torch.cuda.is_available() is False); fix: run on the GPU box with a CUDA "
                       "build of torch, or leave out --gpu / --device cuda")
        writer_check(Path(job["pipeline"]))
        self.torch = torch
        self.device = job["device"]
        pipe = StableDiffusionPipeline.from_pretrained(job["pipeline"], torch_dtype=torch.float32)
        if job["unet"] != "base":
            # What models/export.py does for unet_lcm (fused_loras), then drop the LoRA layers so
            # the UNet runs plain fused Linear layers, as the exported graph does.
            lora = Path(job["lora"])
            pipe.load_lora_weights(str(lora.parent), weight_name=lora.name, adapter_name=job["unet"])
            pipe.set_adapters([job["unet"]], adapter_weights=[1.0])
            pipe.fuse_lora(components=["unet"], lora_scale=1.0, adapter_names=[job["unet"]])
            pipe.unload_lora_weights()
        # Fused in float32 as the exporter fuses, then moved and cast as a user would run it.
        pipe.to(self.device, torch.float16 if job["dtype"] == "fp16" else torch.float32)
        pipe.scheduler = make_scheduler(job["scheduler"], pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        self.info = {
            "device": self.device,
            "dtype": job["dtype"],
            "attention_processors": sorted({type(p).__name__ for p in pipe.unet.attn_processors.values()}),
        }
        if self.compiled:
            pipe.unet = torch.compile(pipe.unet, mode=job["compile_mode"], fullgraph=True)
            self.info["compile_mode"] = job["compile_mode"]
        self.pipe = pipe
        self.threads = {"torch": torch.get_num_threads(), "torch_interop": torch.get_num_interop_threads()}

    def __call__(self, job: dict):
        with self.torch.inference_mode():
            images = call_pipeline(self.pipe, self.torch, job)
        if self.device == "cuda":
            self.torch.cuda.synchronize()
        return images

    def profile(self, job: dict, median_ms: float) -> dict | None:
        """On CUDA, one more image under torch.profiler: the GPU's summed kernel time and the
        kernel launches, against the unprofiled median image time (the profiler slows the host)."""
        if self.device != "cuda":
            return None
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            self(job)
        kernel_us, launches = 0.0, 0
        for e in prof.key_averages():
            kernel_us += getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0) or 0
            if "LaunchKernel" in e.key:
                launches += e.count
        kernel_ms = kernel_us / 1e3
        return {"gpu_kernel_ms": kernel_ms, "kernel_launches": launches, "median_ms": median_ms,
                "gpu_busy_fraction": kernel_ms / median_ms if median_ms else None}


class CompiledDiffusersRunner(DiffusersRunner):
    """The same with torch.compile(unet, mode=--compile-mode, fullgraph=True)."""

    compiled = True


def call_pipeline(pipe, torch, job: dict):
    """One image from a diffusers-style pipeline (diffusers' or optimum's) with the job's settings
    and a CPU generator seeded like speedscape's torch-cpu noise; NHWC floats in [0, 1]."""
    out = pipe(
        job["prompt"],
        num_inference_steps=job["steps"],
        guidance_scale=job["cfg"],
        height=job["size"],
        width=job["size"],
        generator=torch.Generator("cpu").manual_seed(job["seed"]),
        output_type="np",
    )
    return out.images


def ort_provider(job: dict) -> str:
    """The onnxruntime provider for the job's device; Skip when this onnxruntime lacks it."""
    if job["device"] != "cuda":
        return "CPUExecutionProvider"
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise Skip(f"onnxruntime not importable ({e}); fix: run under .venv-bench (bench/setup.sh)") from None
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise Skip(f"this onnxruntime ({ort.__version__}) has no CUDAExecutionProvider; fix: install onnxruntime-gpu in "
                   f"this contender's Python (see bench/gpu-prepare.sh), or leave out --gpu / --device cuda")
    return "CUDAExecutionProvider"


class OptimumRunner:
    """optimum-onnx's ORTStableDiffusionPipeline on the CPU or CUDA provider."""

    def __init__(self, job: dict):
        try:
            import torch
            from optimum.onnxruntime import ORTStableDiffusionPipeline
        except ImportError as e:
            raise Skip(
                f"optimum-onnx's ORTStableDiffusionPipeline not importable ({type(e).__name__}: {e}); "
                f"fix: run under .venv-bench (bench/setup.sh; bench/requirements.txt pins optimum-onnx)"
            ) from None
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.set_verbosity_error()
        self.torch = torch
        pipe = ORTStableDiffusionPipeline.from_pretrained(job["onnx_view"], provider=ort_provider(job))
        pipe.scheduler = make_scheduler(job["scheduler"], pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe
        self.threads = {"ort_unet": ort_threads(pipe.unet.session)}

    def __call__(self, job: dict):
        return call_pipeline(self.pipe, self.torch, job)


class OrtLoopRunner:
    """A bare Python loop over three onnxruntime sessions; diffusers' scheduler does the arithmetic."""

    def __init__(self, job: dict):
        try:
            import numpy as np
            import onnxruntime as ort
            import torch
            from diffusers import DPMSolverMultistepScheduler  # noqa: F401  (fails early if absent)
            from transformers import CLIPTokenizer
        except ImportError as e:
            raise Skip(f"onnxruntime/diffusers/transformers not importable ({e}); fix: run under .venv-bench (bench/setup.sh)") from None
        self.np, self.torch = np, torch
        onnx = Path(job["onnx_view"])
        providers = [ort_provider(job)]
        self.text = ort.InferenceSession(str(onnx / "text_encoder" / "model.onnx"), providers=providers)
        self.unet = ort.InferenceSession(str(onnx / "unet" / "model.onnx"), providers=providers)
        self.vae = ort.InferenceSession(str(onnx / "vae_decoder" / "model.onnx"), providers=providers)
        self.tokenizer = CLIPTokenizer.from_pretrained(str(onnx / "tokenizer"))
        sched_cfg = json.loads((onnx / "scheduler" / "scheduler_config.json").read_text())
        self.sched_cfg = sched_cfg
        self.scheduler_kind = job["scheduler"]
        vae_cfg = json.loads((onnx / "vae_decoder" / "config.json").read_text())
        self.scaling = vae_cfg.get("scaling_factor", 0.18215)
        self.threads = {"ort_unet": ort_threads(self.unet)}
        half = {"tensor(float16)": np.float16}
        self.types = {(s, i.name): half.get(i.type, np.float32) for s in (self.unet, self.vae) for i in s.get_inputs()}

    def _run(self, session, feeds: dict):
        """One output of `session`, float inputs cast to what the graph takes, as float32."""
        cast = {k: v.astype(self.types[(session, k)]) if v.dtype.kind == "f" else v for k, v in feeds.items()}
        return session.run(None, cast)[0].astype(self.np.float32)

    def _encode(self, prompts: list[str]):
        ids = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True, return_tensors="np").input_ids
        return self.text.run(["last_hidden_state"], {"input_ids": ids.astype(self.np.int32)})[0].astype(self.np.float32)

    def __call__(self, job: dict):
        np, torch = self.np, self.torch
        guided = job["cfg"] > 1.0
        emb = self._encode(["", job["prompt"]] if guided else [job["prompt"]])
        from diffusers import DPMSolverMultistepScheduler, LCMScheduler

        cls = DPMSolverMultistepScheduler if self.scheduler_kind == "dpmpp" else LCMScheduler
        scheduler = cls.from_config(self.sched_cfg)  # a new run, a new scheduler (its history is per run)
        scheduler.set_timesteps(job["steps"])
        gen = torch.Generator("cpu").manual_seed(job["seed"])
        lat = job["size"] // 8
        latents = torch.randn((1, 4, lat, lat), generator=gen, dtype=torch.float32) * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            x = torch.cat([latents] * 2) if guided else latents
            x = scheduler.scale_model_input(x, t)
            eps = self._run(self.unet, {
                "sample": x.numpy(),
                "timestep": np.array(float(t), dtype=np.float32),
                "encoder_hidden_states": emb,
            })
            eps = torch.from_numpy(eps)
            if guided:
                uncond, cond = eps.chunk(2)
                eps = uncond + job["cfg"] * (cond - uncond)
            latents = scheduler.step(eps, t, latents, generator=gen).prev_sample
        image = self._run(self.vae, {"latent_sample": (latents / self.scaling).numpy()})
        return np.clip(image / 2 + 0.5, 0.0, 1.0).transpose(0, 2, 3, 1)


RUNNERS = {"diffusers": DiffusersRunner, "diffusers-compile": CompiledDiffusersRunner, "optimum": OptimumRunner, "ort-python": OrtLoopRunner}
# Imported (and timed) before loading, so that load_ms is the model's loading alone.
IMPORTS = {
    "diffusers": ("torch", "diffusers", "transformers"),
    "diffusers-compile": ("torch", "diffusers", "transformers"),
    "optimum": ("torch", "diffusers", "transformers", "onnxruntime", "optimum.onnxruntime"),
    "ort-python": ("torch", "diffusers", "transformers", "onnxruntime"),
}


def worker(job: dict) -> dict:
    """Load one contender, then warm up and time `repeat` images. Returns the result record."""
    result = {"contender": job["contender"], "python": sys.executable, "versions": library_versions()}
    warnings.filterwarnings("ignore", category=FutureWarning)
    started = time.perf_counter()
    for module in IMPORTS[job["contender"]]:
        try:
            importlib.import_module(module)
        except ImportError:
            pass  # the runner says what is missing and how to fix it
    result["import_ms"] = (time.perf_counter() - started) * 1e3
    try:
        started = time.perf_counter()
        runner = RUNNERS[job["contender"]](job)
        result["load_ms"] = {"total": (time.perf_counter() - started) * 1e3}
    except Skip as e:
        return {**result, "status": "skipped", "reason": str(e)}
    result["threads"] = runner.threads
    result["info"] = getattr(runner, "info", {})
    # A compiled UNet compiles on its first image: always one warm-up, its time kept.
    warmups = max(job["warmup"], 1) if getattr(runner, "compiled", False) else job["warmup"]
    result["warmup_ms"] = []
    for i in range(warmups):
        t0 = time.perf_counter()
        runner(job)
        result["warmup_ms"].append((time.perf_counter() - t0) * 1e3)
        log(f"    {job['contender']} {job['setting']} {job['size']}²: warm-up {i + 1} {result['warmup_ms'][-1] / 1e3:.2f} s")
    times = []
    for i in range(job["repeat"]):
        t0 = time.perf_counter()
        image = runner(job)
        times.append((time.perf_counter() - t0) * 1e3)
        log(f"    {job['contender']} {job['setting']} {job['size']}²: run {i + 1}/{job['repeat']} {times[-1] / 1e3:.2f} s")
    shape = list(getattr(image, "shape", []))
    if shape[1:3] != [job["size"], job["size"]]:
        raise RuntimeError(f"{job['contender']} returned an image of shape {shape}, expected [1, {job['size']}, {job['size']}, 3]")
    import numpy as np

    np.save(job["image_out"], np.asarray(image, dtype=np.float32))
    if hasattr(runner, "profile"):
        result["profile"] = runner.profile(job, statistics.median(times))
    return {**result, "status": "ok", "total_ms": times, "peak_rss_bytes": peak_rss_bytes(), "image": job["image_out"]}


def worker_main(job_path: str, out_path: str) -> int:
    job = json.loads(Path(job_path).read_text())
    write_json_atomic(Path(out_path), worker(job))
    return 0


# --------------------------------------------------------------------------------------------
# The parent: run every cell, collect, print
# --------------------------------------------------------------------------------------------


def run_child(cmd: list[str], timeout: float | None, env: dict | None = None, stdout=None, stderr=None) -> tuple[int, int]:
    """Run `cmd` (stdout to our stderr unless given); returns (exit status, its own peak RSS in bytes).

    os.wait4 gives this one child's rusage, so each contender's peak is its own."""
    proc = subprocess.Popen(cmd, stdout=stdout or sys.stderr, stderr=stderr, env=env)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here; keep Popen from waiting again
            return proc.returncode, usage.ru_maxrss * 1024  # Linux: kilobytes
        if deadline is not None and time.monotonic() > deadline:
            proc.kill()
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            raise subprocess.TimeoutExpired(cmd, timeout)
        time.sleep(0.05)


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def cpu_info() -> dict:
    model, cores = None, set()
    try:
        phys = None
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key == "model name" and model is None:
                model = value
            elif key == "physical id":
                phys = value
            elif key == "core id":
                cores.add((phys, value))
    except OSError:
        pass
    return {"model": model or platform.processor() or None, "logical_cores": os.cpu_count(), "physical_cores": len(cores) or None}


def gpu_info() -> dict | None:
    """The card(s) nvidia-smi names; None without nvidia-smi."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    out = subprocess.run([smi, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"], capture_output=True, text=True)
    return {"nvidia_smi": out.stdout.strip() or out.stderr.strip()}


def find_speedscape(arg: str | None) -> Path | None:
    if arg:
        return Path(arg)
    for p in (REPO / "target" / "release" / "speedscape",):
        if p.is_file():
            return p
    found = shutil.which("speedscape")
    return Path(found) if found else None


class Speedscape:
    """The speedscape binary: `bench` when it has it, else one `generate` process per image."""

    def __init__(self, arg: str | None):
        self.path = find_speedscape(arg)
        self.skip = None
        self.version = None
        self.mode = None
        self.bench_flags = ""
        if self.path is None:
            self.skip = "no speedscape binary (looked for target/release/speedscape and on PATH); fix: cargo build --release, or pass --speedscape PATH"
            return
        if not (self.path.is_file() and os.access(self.path, os.X_OK)):
            self.skip = f"{self.path} is not an executable file; fix: cargo build --release, or pass --speedscape PATH"
            return
        ver = subprocess.run([str(self.path), "--version"], capture_output=True, text=True)
        self.version = ver.stdout.strip() or None
        bench = subprocess.run([str(self.path), "bench", "--help"], capture_output=True, text=True)
        if bench.returncode == 0:
            self.mode, self.bench_flags = "bench", bench.stdout
        else:
            self.mode = "generate"

    def run(self, onnx: Path, job: dict, tmp: Path, timeout: float | None) -> dict:
        sched, steps, cfg, unet = job["scheduler"], job["steps"], job["cfg"], job["unet"]
        size = job["size"]
        if self.mode == "bench":
            out = tmp / f"speedscape-{job['setting']}-{size}.json"
            cmd = [str(self.path), "bench", "--model-dir", str(onnx), "--runs", f"{sched}:{steps}:{cfg:g}@{unet}",
                   "--size", str(size), "--repeat", str(job["repeat"]), "--device", job["device"], "--json", str(out)]
            notes = []
            for flag, value in (("--warmup", job["warmup"]), ("--prompt", job["prompt"]), ("--seed", job["seed"]), ("--rng", "torch-cpu")):
                if flag in self.bench_flags:
                    cmd += [flag, str(value)]
                else:
                    notes.append(f"`speedscape bench` has no {flag}: its own default was used")
            code, rss = run_child(cmd, timeout)
            if code != 0:
                return {"status": "failed", "reason": f"speedscape bench exited with {code} (its stderr is above)", "command": cmd}
            data = json.loads(out.read_text())
            if len(data.get("runs", [])) != 1:
                return {"status": "failed", "reason": f"{out}: expected one run, found {len(data.get('runs', []))}", "command": cmd}
            run = data["runs"][0]
            return {
                "status": "ok",
                "mode": "bench",
                "command": cmd,
                "notes": notes,
                "total_ms": [r["total_ms"] for r in run["repeats"]],
                "load_ms": {"total": sum(data.get("load_ms", {}).values()), **data.get("load_ms", {})},
                "peak_rss_bytes": rss,
                "bench": data,
            }
        # Development fallback: `generate` loads the model in every process, so there is no
        # in-process warm-up; its total_ms still excludes loading.
        totals, loads, peak = [], [], 0
        for i in range(job["warmup"] + job["repeat"]):
            cmd = [str(self.path), "generate", "--model-dir", str(onnx), "--prompt", job["prompt"], "--scheduler", sched,
                   "--steps", str(steps), "--cfg", f"{cfg:g}", "--unet", unet, "--seed", str(job["seed"]),
                   "--width", str(size), "--height", str(size), "--device", job["device"], "--rng", "torch-cpu",
                   "--out", str(tmp / f"speedscape-{i}.png"), "--save-raw", str(tmp / f"speedscape-raw-{i}.npy"), "--json"]
            out_file, err_file = tmp / f"speedscape-{i}.json", tmp / f"speedscape-{i}.err"
            with open(out_file, "w") as out, open(err_file, "w") as err:
                code, rss = run_child(cmd, timeout, stdout=out, stderr=err)
            peak = max(peak, rss)
            if code != 0:
                sys.stderr.write(err_file.read_text())
                return {"status": "failed", "reason": f"speedscape generate exited with {code} (its stderr is above)", "command": cmd}
            data = json.loads(out_file.read_text())
            if i >= job["warmup"]:
                totals.append(data["timings"]["total_ms"])
                loads.append(sum(data["load_ms"].values()))
                log(f"    speedscape {job['setting']} {size}²: run {i - job['warmup'] + 1}/{job['repeat']} {totals[-1] / 1e3:.2f} s")
        return {
            "status": "ok",
            "mode": "generate",
            "notes": ["`speedscape bench` is not in this binary: one `generate` process per image (loading excluded, no in-process warm-up)"],
            "image": str(tmp / "speedscape-raw.npy"),
            "total_ms": totals,
            "load_ms": {"total": statistics.median(loads)},
            "peak_rss_bytes": peak,
        }


def run_python_contender(name: str, python: str, job: dict, tmp: Path, timeout: float | None) -> dict:
    job_file = tmp / f"job-{name}-{job['setting']}-{job['size']}.json"
    out_file = tmp / f"result-{name}-{job['setting']}-{job['size']}.json"
    image_file = tmp / f"image-{name}-{job['setting']}-{job['size']}.npy"
    write_json_atomic(job_file, {**job, "contender": name, "image_out": str(image_file)})
    cmd = [python, str(Path(__file__).resolve()), "--worker", str(job_file), str(out_file)]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}
    try:
        code, rss = run_child(cmd, timeout, env)
    except FileNotFoundError:
        return {"status": "skipped", "reason": f"no Python at {python}; fix: bench/setup.sh, or pass --python {name}=PATH"}
    if code != 0 or not out_file.exists():
        return {"status": "failed", "reason": f"{name} worker exited with {code} (its traceback is above)", "command": cmd}
    result = json.loads(out_file.read_text())
    if result["status"] == "ok":
        result["peak_rss_bytes"] = rss  # the whole process, as ru_maxrss of this one child
    return result


def compare_images(cell: dict) -> None:
    """Max |difference| of each contender's last image against diffusers' (same seed, so the same
    image up to float noise): the check that every contender computed the same thing."""
    images = {c: r.pop("image") for c, r in cell["results"].items() if r.get("image")}
    if "diffusers" not in images:
        return
    try:
        import numpy as np
    except ImportError:
        return
    ref = np.load(images["diffusers"])
    for c, path in images.items():
        if c != "diffusers":
            img = np.load(path)
            cell["results"][c]["max_abs_vs_diffusers"] = float(np.abs(img - ref).max()) if img.shape == ref.shape else None


def parse_list(text: str, allowed, what: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in items if s not in allowed]
    if bad or not items:
        raise CompareError(f"--{what}: unknown {', '.join(bad) or '(empty)'}\nFix: choose from {', '.join(allowed)}")
    return items


def parse_sizes(text: str) -> list[int]:
    sizes = []
    for s in text.split(","):
        try:
            n = int(s)
        except ValueError:
            raise CompareError(f"--sizes: {s!r} is not a number\nFix: e.g. --sizes 256,512") from None
        if n <= 0 or n % 8:
            raise CompareError(f"--sizes: {n} is not a positive multiple of 8 (the VAE's scale)\nFix: e.g. --sizes 256,512")
        sizes.append(n)
    return sizes


def fmt_s(ms: float | None) -> str:
    return "—" if ms is None else f"{ms / 1e3:.2f}"


def fmt_mb(n: int | None) -> str:
    return "—" if n is None else f"{n / 2**20:,.0f} MB"


def fmt_diff(contender: str, r: dict) -> str:
    if contender == "diffusers":
        return "reference"
    d = r.get("max_abs_vs_diffusers")
    return "—" if d is None else f"max \\|Δ\\| {d:.1e}"


def contender_notes(contender: str, r: dict) -> list[str]:
    """What a Python contender ran with (attention processors, compile mode) and, where measured,
    its compilation and its profile, as table notes."""
    info, notes = r.get("info", {}), []
    if info.get("attention_processors"):
        notes.append(f"attention processors {', '.join(info['attention_processors'])} ({info['dtype']} on {info['device']})")
    warm = r.get("warmup_ms", [])
    if info.get("compile_mode") and warm:
        extra = warm[0] - r["total_ms"]["median"]
        notes.append(f"torch.compile mode {info['compile_mode']}: first image {warm[0] / 1e3:.1f} s, compilation ≈ {extra / 1e3:.1f} s (not in the times)")
    prof = r.get("profile")
    if prof and prof.get("gpu_busy_fraction") is not None:
        notes.append(f"profiled image: {prof['gpu_kernel_ms']:.0f} ms of GPU kernels in {prof['kernel_launches']} launches against a "
                     f"{prof['median_ms']:.0f} ms median image: the GPU busy {100 * prof['gpu_busy_fraction']:.0f} % of the time")
    return notes


def render(report: dict) -> str:
    contenders = report["contenders"]
    others = [c for c in contenders if c != "speedscape"]
    lines = []
    device, dtype = report.get("device", "cpu"), report.get("dtype", "fp32")
    if device == "cuda":
        card = (report.get("gpu") or {}).get("nvidia_smi") or "no nvidia-smi"
        lines.append(f"# speedscape vs Python stacks — {card}, {dtype}")
    else:
        lines.append(f"# speedscape vs Python stacks — {report['cpu']['model']}, {report['cpu']['physical_cores']} cores, {dtype} CPU")
    lines.append("")
    lines.append(f"Model: {report['model']}. Prompt {report['prompt']!r}, seed {report['seed']}. "
                 f"Per image, end to end (text + loop + VAE), loading apart; median of {report['repeat']} after {report['warmup']} warm-up.")
    if report.get("speedscape_export", "onnx") != report.get("onnx", "onnx"):
        lines.append(f"speedscape runs the export `{report['speedscape_export']}/`; the other ONNX contenders run `{report.get('onnx', 'onnx')}/`.")
    lines.append("")
    head = ["setting", "size"] + [f"{c} s" for c in contenders]
    if "speedscape" in contenders:
        head += [f"vs {c}" for c in others]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join(["---", "---:"] + ["---:"] * (len(head) - 2)) + "|")
    for cell in report["cells"]:
        med = {}
        for c in contenders:
            r = cell["results"][c]
            med[c] = r["total_ms"]["median"] if r["status"] == "ok" else None
        row = [f"{cell['setting']} ({cell['describe']})", f"{cell['size']}²"]
        row += [fmt_s(med[c]) if med[c] is not None else cell["results"][c]["status"] for c in contenders]
        if "speedscape" in contenders:
            for c in others:
                ours, theirs = med["speedscape"], med[c]
                row.append("—" if ours is None or theirs is None else f"{theirs / ours:.2f}×")
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    if "speedscape" in contenders:
        lines.append("`vs X` = X's median / speedscape's: above 1× speedscape is faster.")
        lines.append("")
    lines.append("| contender | cell | min–max s | load s | peak RSS | threads | image vs diffusers |")
    lines.append("|---|---|---:|---:|---:|---|---:|")
    notes = []
    for cell in report["cells"]:
        for c in contenders:
            r = cell["results"][c]
            where = f"{cell['setting']} {cell['size']}²"
            if r["status"] != "ok":
                notes.append(f"- {c}, {where}: **{r['status']}**: {r['reason']}")
                continue
            t = r["total_ms"]
            threads = ", ".join(f"{k} {v['intra_op'] if isinstance(v, dict) else v}" for k, v in r.get("threads", {}).items()) or "—"
            lines.append(f"| {c} | {where} | {fmt_s(t['min'])}–{fmt_s(t['max'])} | {fmt_s(r['load_ms']['total'])} | "
                         f"{fmt_mb(r.get('peak_rss_bytes'))} | {threads} | {fmt_diff(c, r)} |")
            for n in r.get("notes", []) + contender_notes(c, r):
                if f"- {c}: {n}" not in notes:
                    notes.append(f"- {c}: {n}")
    lines.append("")
    lines.append(f"Threads: ort_unet = the UNet session's intra-op setting, 0 = ONNX Runtime's default (one per physical core, "
                 f"{report['cpu']['physical_cores']} here); torch = torch.get_num_threads(). Load excludes Python imports (in the JSON as import_ms). "
                 f"Image vs diffusers: the last image's max abs difference from diffusers' (pixels in [0, 1]; same seed, so near 0).")
    # At the end the last contender's own threads are in the load average; only the start says
    # whether something else was running.
    load = report["loadavg_1min"]
    cores = report["cpu"]["physical_cores"] or report["cpu"]["logical_cores"]
    if load["start"] > 0.5 * cores:
        notes.append(f"- the machine was busy: 1-min load average {load['start']:.1f} at the start on {cores} cores "
                     f"({load['end']:.1f} at the end, the last contender's own threads included); other work may have "
                     f"shared the CPU, so these times may be inflated and noisy")
    if notes:
        lines.append("")
        lines.extend(notes)
    return "\n".join(lines) + "\n"


def write_json_atomic(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=path.name + ".", suffix=".tmp", delete=False) as f:
        json.dump(value, f, indent=2)
        f.write("\n")
    os.replace(f.name, path)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(REPO / ".bench"), help="folder written by bench/make-model.sh (default .bench)")
    ap.add_argument("--make-model", action="store_true", help="run bench/make-model.sh first when --model is incomplete")
    ap.add_argument("--model-size", choices=("sd15", "tiny"), default="sd15", help="architecture --make-model builds (default sd15)")
    ap.add_argument("--sizes", default="256,512", help="image sizes, width = height (default 256,512)")
    ap.add_argument("--settings", default=None,
                    help=f"comma list of {', '.join(SETTINGS)} (default {','.join(DEFAULT_SETTINGS['cpu'])}; with --gpu {','.join(DEFAULT_SETTINGS['cuda'])})")
    ap.add_argument("--contenders", default=None,
                    help=f"comma list of {', '.join(CONTENDERS)} (default: {', '.join(DEFAULT_CONTENDERS['cpu'])}; "
                    f"with --gpu {', '.join(DEFAULT_CONTENDERS['cuda'])})")
    ap.add_argument("--gpu", action="store_true", help="the GPU comparison: --device cuda --dtype fp16 and the GPU contenders")
    ap.add_argument("--device", choices=("cpu", "cuda"), default=None, help="where every contender runs (default cpu; cuda with --gpu)")
    ap.add_argument("--dtype", choices=("fp32", "fp16"), default=None,
                    help="the diffusers contenders' weights and activations (default fp32 on cpu, fp16 on cuda); "
                    "the ONNX contenders run the exports' own types")
    ap.add_argument("--compile-mode", default="max-autotune", help="diffusers-compile's torch.compile mode (default max-autotune)")
    ap.add_argument("--onnx", default="onnx", metavar="NAME", help="the export under --model that optimum and ort-python run (default onnx)")
    ap.add_argument("--repeat", type=int, default=3, help="timed images per cell (default 3)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed images first (default 1)")
    ap.add_argument("--prompt", default=DEFAULT_PROMPT)
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--speedscape-export", default="onnx", metavar="NAME",
                    help="the export under --model that speedscape runs (default onnx, what the other ONNX contenders run by default; "
                    "onnx-cpu: the `--optimize cpu` form, bench/make-model.sh --cpu-form)")
    ap.add_argument("--speedscape", default=None, help="speedscape binary (default target/release/speedscape, else PATH)")
    ap.add_argument("--python", action="append", default=[], metavar="CONTENDER=PATH",
                    help="interpreter for a Python contender (default: this one), e.g. diffusers=.venv-ref/bin/python")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per contender and cell before it is killed (default 1800)")
    ap.add_argument("--json", default=None, metavar="PATH", help="also write every number, versions and the CPU here")
    ap.add_argument("--worker", nargs=2, metavar=("JOB", "OUT"), help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(*args.worker)
    try:
        return compare(args)
    except CompareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def compare(args) -> int:
    sizes = parse_sizes(args.sizes)
    device = args.device or ("cuda" if args.gpu else "cpu")
    settings = parse_list(args.settings or ",".join(DEFAULT_SETTINGS[device]), SETTINGS, "settings")
    if args.gpu and device != "cuda":
        raise CompareError(f"--gpu with --device {device}: --gpu runs on CUDA\nFix: drop one of them")
    dtype = args.dtype or ("fp16" if device == "cuda" else "fp32")
    contenders = parse_list(args.contenders or ",".join(DEFAULT_CONTENDERS[device]), CONTENDERS, "contenders")
    if args.repeat < 1 or args.warmup < 0:
        raise CompareError(f"--repeat {args.repeat} / --warmup {args.warmup}: out of range\nFix: --repeat 1 or more, --warmup 0 or more")
    pythons = {}
    for spec in args.python:
        name, sep, path = spec.partition("=")
        if not sep or name not in PYTHON_CONTENDERS:
            raise CompareError(f"--python {spec!r}: expected CONTENDER=PATH with CONTENDER one of {', '.join(PYTHON_CONTENDERS)}\n"
                               f"Fix: e.g. --python diffusers=.venv-ref/bin/python")
        pythons[name] = path
    # The reference venv wrote the model (models/export.py's pins); its diffusers loads it as written.
    ref = REPO / ".venv-ref" / "bin" / "python"
    for c in ("diffusers", "diffusers-compile"):
        if c not in pythons and ref.exists():
            pythons[c] = str(ref)
    paths = ensure_model(Path(args.model).resolve(), args.make_model, args.model_size, args.onnx)
    speedscape = Speedscape(args.speedscape) if "speedscape" in contenders else None
    speedscape_onnx = paths["root"] / args.speedscape_export
    if speedscape is not None and not (speedscape_onnx / "manifest.json").is_file():
        raise CompareError(
            f"--speedscape-export {args.speedscape_export}: {speedscape_onnx} is not a complete export (no manifest.json)\n"
            f"Fix: run `bench/make-model.sh {paths['root']} --cpu-form` for onnx-cpu, or leave --speedscape-export out"
        )

    report = {
        "prompt": args.prompt,
        "seed": args.seed,
        "warmup": args.warmup,
        "repeat": args.repeat,
        "model": str(paths["root"]),
        "speedscape_export": args.speedscape_export,
        "onnx": args.onnx,
        "device": device,
        "dtype": dtype,
        "gpu": gpu_info() if device == "cuda" else None,
        "contenders": contenders,
        "cpu": cpu_info(),
        "platform": platform.platform(),
        "python": {"compare": sys.executable, **{c: pythons.get(c, sys.executable) for c in contenders if c != "speedscape"}},
        "versions": {"compare": library_versions()},
        "speedscape": None if speedscape is None else {"path": str(speedscape.path), "version": speedscape.version, "mode": speedscape.mode, "skipped": speedscape.skip},
        "loadavg_1min": {"start": os.getloadavg()[0]},
        "cells": [],
    }
    failed = False
    with tempfile.TemporaryDirectory(prefix="speedscape-compare-") as tmp_name:
        tmp = Path(tmp_name)
        for setting in settings:
            sched, steps, cfg, unet = SETTINGS[setting]
            view = onnx_view(paths["onnx"], unet, tmp)
            for size in sizes:
                job = {"setting": setting, "scheduler": sched, "steps": steps, "cfg": cfg, "unet": unet, "size": size,
                       "prompt": args.prompt, "seed": args.seed, "warmup": args.warmup, "repeat": args.repeat,
                       "device": device, "dtype": dtype, "compile_mode": args.compile_mode,
                       "pipeline": str(paths["pipeline"]), "lora": str(paths["lora"]), "onnx_view": str(view)}
                cell = {"setting": setting, "describe": f"{sched} {steps} steps, cfg {cfg:g}, unet {unet}", "size": size, "results": {}}
                for c in contenders:
                    log(f"[{setting} {size}²] {c} ...")
                    try:
                        if c == "speedscape":
                            r = {"status": "skipped", "reason": speedscape.skip} if speedscape.skip else speedscape.run(speedscape_onnx, job, tmp, args.timeout)
                        else:
                            r = run_python_contender(c, pythons.get(c, sys.executable), job, tmp, args.timeout)
                    except subprocess.TimeoutExpired:
                        r = {"status": "failed", "reason": f"killed after --timeout {args.timeout:g} s"}
                    if r["status"] == "ok":
                        r["total_ms"] = {**summary(r["total_ms"]), "runs": r["total_ms"]}
                        log(f"[{setting} {size}²] {c}: median {r['total_ms']['median'] / 1e3:.2f} s (load {r['load_ms']['total'] / 1e3:.1f} s)")
                    else:
                        failed |= r["status"] == "failed"
                        log(f"[{setting} {size}²] {c}: {r['status']}: {r['reason']}")
                    if c != "speedscape" and "versions" in r:
                        report["versions"].setdefault(c, r.pop("versions"))
                    cell["results"][c] = r
                compare_images(cell)
                report["cells"].append(cell)
    report["loadavg_1min"]["end"] = os.getloadavg()[0]
    text = render(report)
    sys.stdout.write(text)
    if args.json:
        report["table"] = text
        write_json_atomic(Path(args.json), report)
        log(f"wrote {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
