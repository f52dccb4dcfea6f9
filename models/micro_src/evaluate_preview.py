#!/usr/bin/env python
"""The micro model's preview evaluation (issue 25): how close each step's preview is to the run's
final image, for the learned preview decoder and for the latent->RGB matrix.

    .venv-ref/bin/python models/micro_src/evaluate_preview.py [--model models/micro] [--decoder DIR] [--latent-rgb FILE]

Held-out scenes (world.py's "heldout" split, full captions), `prompts` of them at `seeds` seeds
(1000, 1001, ...), DPM-Solver++ `steps` at cfg `cfg` through diffusers' StableDiffusionPipeline on
the shipped model (controlnet.Frozen: the UNet rebuilt from its fp16 graph; preview.x0_trajectories
records each step's x0 prediction). Per step, the x0 becomes
  (a) the decoder preview: the preview decoder's graph as the micro model ships it (--decoder, a
      diffusers AutoencoderTiny folder, exported here by export_micro.export_preview_graph in the
      model's dtype; or --shipped: the model's own preview_decoder/model.onnx) through ONNX Runtime,
      64x64 RGB rounded to uint8;
  (b) the latent preview: the latent_rgb matrix (--latent-rgb, the stage's fit; or --shipped: the
      manifest's) at 16x16, resized to 64x64 with PIL's bilinear filter;
and each is scored by SSIM (evaluate.ssim: skimage, Gaussian 1.5, on uint8 RGB) against the run's
final image (the shipped VAE decoder on the final latents). Per-step curves of both kinds, their
mean over the last three steps, the decoder graph's size and its time per preview (ONNX Runtime,
one thread) against a guided UNet step's (the shipped unet, batch 2) go to --out; a strip (per
step: decoder row, latent row; the final image last) to --strip, and a smaller one (every other
step) beside it, *_small.png.

Targets (TARGETS): mean SSIM over the last three steps, decoder - latent >= 0.2; the decoder
graph <= 300 KB.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
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
import export  # noqa: E402
import preview  # noqa: E402
import shipped  # noqa: E402
import world  # noqa: E402

SEED0 = 1000
SETTINGS = dict(prompts=16, seeds=2, steps=20, cfg=7.5, batch=32, last=3, strip_scenes=2)
SMOKE = dict(prompts=2, seeds=1, steps=3, batch=4, last=2, strip_scenes=1)

# (metric key, comparison, threshold)
TARGETS = {
    "ssim_gain_last3": (">=", 0.2),  # mean over the last three steps: decoder - latent
    "decoder_bytes": ("<=", 300_000),
}


def decoder_graph(model: Path, decoder_dir: Path | None, tmp: Path) -> Path:
    """The preview decoder's graph: the model's own (`decoder_dir` None) or `decoder_dir`'s
    AutoencoderTiny exported as add_preview_decoder exports it (the model's dtype)."""
    if decoder_dir is None:
        return model / export.PREVIEW_FOLDER / "model.onnx"
    import export_micro
    from diffusers import AutoencoderTiny

    dtype = json.loads((model / "manifest.json").read_text())["dtype"]
    tiny = AutoencoderTiny.from_pretrained(str(decoder_dir)).eval()
    export_micro.export_preview_graph(tiny, tmp / export.PREVIEW_FOLDER, export.Settings(dtype=dtype, check_threads=1))
    return tmp / export.PREVIEW_FOLDER / "model.onnx"


class DecoderPreview:
    """Latents [N, 4, h, w] -> uint8 RGB [N, H, W, 3] through a preview decoder graph."""

    def __init__(self, path: Path, threads: int = 1):
        self.sess = shipped.session(path, threads)
        self.dtype = np.float16 if "float16" in self.sess.get_inputs()[0].type else np.float32

    def __call__(self, latents: np.ndarray, batch: int = 64) -> np.ndarray:
        out = []
        for i in range(0, len(latents), batch):
            y = self.sess.run(None, {"latents": latents[i : i + batch].astype(self.dtype)})[0].astype(np.float32)
            out.append(np.rint(np.clip(y, 0, 1) * 255).astype(np.uint8).transpose(0, 2, 3, 1))
        return np.concatenate(out)


def latent_preview(latents: np.ndarray, fit: dict, size: int) -> np.ndarray:
    """The latent_rgb preview of latents [N, 4, h, w], resized to size x size (PIL bilinear)."""
    from PIL import Image

    small = preview.latent_rgb_image(latents, fit)
    return np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.BILINEAR)) for im in small])


def per_step_ssim(previews: np.ndarray, final: np.ndarray) -> list[float]:
    """previews [steps, N, H, W, 3], final [N, H, W, 3] -> mean SSIM per step."""
    return [float(np.mean([evaluate.ssim(p, f) for p, f in zip(step, final)])) for step in previews]


def preview_ms(path: Path, model: Path, repeats: int = 50) -> dict:
    """Milliseconds of one preview (batch 1) and of one guided UNet step (batch 2) on one ONNX
    Runtime thread, the median of `repeats` after a warm-up; informative, not a target."""
    def median_ms(sess, feeds):
        for _ in range(5):
            sess.run(None, feeds)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            sess.run(None, feeds)
            times.append((time.perf_counter() - t0) * 1e3)
        return float(np.median(times))

    rng = np.random.default_rng(0)
    dec = shipped.session(path, 1)
    dtype = np.float16 if "float16" in dec.get_inputs()[0].type else np.float32
    decoder = median_ms(dec, {"latents": rng.standard_normal((1, 4, 16, 16)).astype(dtype)})
    unet = shipped.session(model / "unet" / "model.onnx", 1)
    feeds = {}
    for i in unet.get_inputs():
        dt = np.float16 if "float16" in i.type else np.float32
        if i.name == "timestep":
            feeds[i.name] = np.array(500, dt)
        elif i.name == "encoder_hidden_states":
            feeds[i.name] = rng.standard_normal((2, 77, i.shape[2])).astype(dt)
        else:  # the sample and the ControlNet residuals: [2, C, 16 / f, 16 / f]
            side = {"height": 16, "height_div2": 8, "height_div4": 4}[i.shape[2]]
            feeds[i.name] = (rng.standard_normal((2, i.shape[1], side, side)) * (i.name == "sample")).astype(dt)
    step = median_ms(unet, feeds)
    return {"decoder_ms": round(decoder, 3), "unet_step_ms": round(step, 3), "ratio": round(decoder / step, 4),
            "threads": 1, "batch": {"decoder": 1, "unet": 2}}


def strip(decoded: np.ndarray, latent: np.ndarray, final: np.ndarray, scenes: int, every: int = 1) -> np.ndarray:
    """Per scene two rows (decoder, latent) of every `every`-th step's preview, the last step
    always, then the final image in both rows' last column."""
    steps = sorted(set(range(every - 1, len(decoded), every)) | {len(decoded) - 1})
    rows = []
    for n in range(scenes):
        for kind in (decoded, latent):
            rows.append(np.concatenate([kind[k, n] for k in steps] + [final[n]], axis=1))
    return np.concatenate(rows, axis=0)


def metrics_of(ssim_decoder: list[float], ssim_latent: list[float], nbytes: int, s: dict) -> dict:
    last = s["last"]
    gain = float(np.mean(ssim_decoder[-last:]) - np.mean(ssim_latent[-last:]))
    values = {"ssim_gain_last3": gain, "decoder_bytes": nbytes}
    targets = evaluate.target_records(values, TARGETS)
    return {"ssim_decoder": ssim_decoder, "ssim_latent": ssim_latent,
            "ssim_decoder_last3": float(np.mean(ssim_decoder[-last:])), "ssim_latent_last3": float(np.mean(ssim_latent[-last:])),
            "targets": targets, "targets_met": evaluate.targets_met(targets)}


def evaluate_previews(model: Path, decoder_dir: Path | None, fit: dict, s: dict, strip_path: Path | None = None, log=print) -> dict:
    from PIL import Image

    t0 = time.perf_counter()
    frozen = cn_mod.Frozen(model, unets=("unet",))
    pairs = [(world.scene("heldout", i, full_caption=True), SEED0 + k) for i in range(s["prompts"]) for k in range(s["seeds"])]
    x0, final_latents = preview.x0_trajectories(frozen, "unet", [sc.caption() for sc, _ in pairs], [seed for _, seed in pairs],
                                                s["steps"], s["cfg"], s["batch"])
    final = frozen.decoder(final_latents)
    size = final.shape[1]
    with tempfile.TemporaryDirectory() as tmp:
        path = decoder_graph(model, decoder_dir, Path(tmp))
        nbytes = path.stat().st_size
        decode = DecoderPreview(path)
        decoded = np.stack([decode(step.numpy()) for step in x0])
        timing = preview_ms(path, model)
    latent = np.stack([latent_preview(step.numpy(), fit, size) for step in x0])
    m = metrics_of(per_step_ssim(decoded, final), per_step_ssim(latent, final), nbytes, s)
    m.update(settings=s, seeds=[SEED0 + k for k in range(s["seeds"])], heldout_scenes=s["prompts"], timing=timing,
             latent_resize="PIL bilinear, 16x16 -> 64x64", latent_rgb=fit, wall_s=round(time.perf_counter() - t0, 1))
    if strip_path is not None:
        strip_path.parent.mkdir(parents=True, exist_ok=True)
        n = min(s["strip_scenes"], len(final))
        Image.fromarray(strip(decoded, latent, final, n)).save(strip_path, optimize=True)
        Image.fromarray(strip(decoded, latent, final, 1, every=2)).save(strip_path.with_name(strip_path.stem + "_small.png"), optimize=True)
    for k, t in m["targets"].items():
        log(f"evaluate_preview: {k:18s} {t['value']:.3f} {t['op']} {t['threshold']}  {'PASS' if t['pass'] else 'FAIL'}")
    log(f"evaluate_preview: last {s['last']} steps: decoder {m['ssim_decoder_last3']:.3f}, latent {m['ssim_latent_last3']:.3f}; "
        f"a preview {timing['decoder_ms']:.2f} ms vs a UNet step {timing['unet_step_ms']:.2f} ms")
    return m


def main(argv=None) -> int:
    import train

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(shipped.MICRO))
    ap.add_argument("--run-dir", default=str(train.DEFAULT_RUN_DIR), help="the preview stage's run (its model and latent_rgb.json)")
    ap.add_argument("--shipped", action="store_true", help="evaluate --model's own preview_decoder/ and manifest latent_rgb")
    ap.add_argument("--out", default=None, help="metrics JSON (default <run-dir>/preview_metrics.json)")
    ap.add_argument("--strip", default=None, help="strip PNG (default <run-dir>/eval/preview_strip.png)")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    s = {**SETTINGS, **(SMOKE if args.smoke else {})}
    model, run_dir = Path(args.model), Path(args.run_dir)
    if args.shipped:
        decoder_dir, fit = None, json.loads((model / "manifest.json").read_text())["latent_rgb"]
    else:
        decoder_dir, fit = run_dir / "preview" / "model", preview.load_latent_rgb(run_dir)
    out = Path(args.out) if args.out else run_dir / "preview_metrics.json"
    strip_path = Path(args.strip) if args.strip else run_dir / "eval" / "preview_strip.png"
    m = evaluate_previews(model, decoder_dir, fit, s, strip_path, log=train.log)
    train.write_json(out, m)
    train.log(f"targets met: {m['targets_met']} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
