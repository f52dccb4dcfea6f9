#!/usr/bin/env python3
"""Reference draws of torch's CUDA generator (Philox4x32-10) for the host reimplementation.

What the course notebook does: `g = torch.Generator(device="cuda").manual_seed(seed)` and then
diffusers' `randn_tensor(shape, generator=g, device="cuda", dtype=torch.float32)` for the initial
latents, and again for each step's noise (DDPM, LCM, Euler ancestral) with the same generator. So a
run is a *sequence* of `torch.randn` calls on one generator; the generator's Philox offset advances
between them by an amount that depends on the tensor's size and the kernel's launch configuration.

Runs on a machine with a CUDA GPU and torch (no diffusers needed):

    python3 scripts/torch_cuda_randn.py OUT_DIR

Writes OUT_DIR/torch_cuda_randn.npz and OUT_DIR/torch_cuda_randn.json (torch and CUDA versions,
the GPU's name and SM count, every array's shape and the generator's offset after each draw).
Array names:
  seq_s{seed}_{shape}_{k}   the k-th draw (k = 0 .. DRAWS-1) of a run on one generator
  one_s{seed}_{shape}       a single draw (extra shapes; large ones keep head and tail only)
  f16_s{seed}_{shape}_{k}   the same sequence in float16 (diffusers' fp16 pipelines)
"""

import json
import pathlib
import sys

import numpy as np
import torch

SEEDS = [0, 7, 42]
# The shapes, then the tiny model's, then sizes around the launch-configuration edges.
SEQ_SHAPES = [(1, 4, 64, 64), (1, 4, 32, 32), (1, 4, 64, 96)]
DRAWS = 6
EXTRA_SHAPES = [
    (1,), (3,), (4,), (5,), (7,), (1, 4, 1, 1), (1, 4, 8, 8), (1, 4, 16, 16), (1, 4, 24, 40),
    (2, 4, 64, 64), (1, 4, 96, 96), (1, 4, 128, 128), (1, 4, 256, 256), (1, 4, 512, 512),
    (4, 4, 512, 512), (1, 3, 333, 7),
]
KEEP = 8192  # large single draws: first and last KEEP values (and a checksum of the whole)


def name(shape):
    return "x".join(str(d) for d in shape)


def offset(g):
    try:
        return int(g.get_offset())
    except (AttributeError, RuntimeError):
        st = g.get_state()  # seed (8 bytes) then offset (8 bytes), little-endian
        return int(np.frombuffer(st.numpy().tobytes()[8:16], dtype="<u8")[0])


def main(out):
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    assert torch.cuda.is_available(), "needs a CUDA GPU"
    props = torch.cuda.get_device_properties(0)
    arrays, meta = {}, {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpu": props.name,
        "sm_count": props.multi_processor_count,
        "max_threads_per_sm": getattr(props, "max_threads_per_multi_processor", None),
        "call": "torch.randn(shape, generator=torch.Generator('cuda').manual_seed(seed), device='cuda', dtype=...)",
        "draws": {},
    }
    for seed in SEEDS:
        for shape in SEQ_SHAPES:
            for dtype, tag in ((torch.float32, "seq"), (torch.float16, "f16")):
                g = torch.Generator(device="cuda").manual_seed(seed)
                offs = []
                for k in range(DRAWS):
                    x = torch.randn(shape, generator=g, device="cuda", dtype=dtype)
                    arrays[f"{tag}_s{seed}_{name(shape)}_{k}"] = x.cpu().numpy()
                    offs.append(offset(g))
                meta["draws"][f"{tag}_s{seed}_{name(shape)}"] = {"shape": list(shape), "offsets_after": offs}
        for shape in EXTRA_SHAPES:
            g = torch.Generator(device="cuda").manual_seed(seed)
            x = torch.randn(shape, generator=g, device="cuda", dtype=torch.float32).cpu().numpy().ravel()
            key = f"one_s{seed}_{name(shape)}"
            entry = {"shape": list(shape), "numel": int(x.size), "offsets_after": [offset(g)],
                     "sum_f64": float(x.astype(np.float64).sum())}
            if x.size > 2 * KEEP:
                arrays[key + "_head"], arrays[key + "_tail"] = x[:KEEP], x[-KEEP:]
                entry["kept"] = f"first and last {KEEP}"
            else:
                arrays[key] = x.reshape(shape)
            meta["draws"][key] = entry
    # A run whose draws change shape (latents at 1x4x64x64, then a scalar-sized draw, then latents).
    g = torch.Generator(device="cuda").manual_seed(42)
    mixed = [(1, 4, 64, 64), (1,), (1, 4, 64, 64), (2, 4, 64, 64), (1, 4, 64, 64)]
    offs = []
    for k, shape in enumerate(mixed):
        arrays[f"mix_s42_{k}"] = torch.randn(shape, generator=g, device="cuda").cpu().numpy()
        offs.append(offset(g))
    meta["draws"]["mix_s42"] = {"shapes": [list(s) for s in mixed], "offsets_after": offs}
    np.savez_compressed(out / "torch_cuda_randn.npz", **arrays)
    (out / "torch_cuda_randn.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"{len(arrays)} arrays on {props.name} ({props.multi_processor_count} SMs), torch {torch.__version__}; "
          f"seed 0 first values: {arrays['seq_s0_1x4x64x64_0'].ravel()[:4]}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
