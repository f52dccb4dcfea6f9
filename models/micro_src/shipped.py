"""The shipped micro model (models/micro) as torch modules and ONNX Runtime sessions: what the
ControlNet stage trains against and what its evaluation runs, when the training run directory
(.micro-run: the torch pipeline, checkpoints) is gone.

- `rebuild_unet(model, folder)`: a UNet2DConditionModel (fp32) holding exactly the fp16 weights of
  `model/folder/model.onnx`. The graph's initializers have short names (export_micro.compact_graph);
  a UNet of the same config exported with random, all-distinct weights (export_micro.reference_unet)
  carries torch's layout: each of its initializers is one parameter, matched by value (as is,
  transposed for a MatMul, or reshaped), and export_micro.align_nodes pairs the shipped graph's
  initializers with the reference's node by node.
- `TextEncoder`: the shipped (trimmed) text encoder through ONNX Runtime with the shipped
  tokenizer, padded to 77 as diffusers' encode_prompt pads; prompt embeddings as fp32 tensors.
- `VaeDecoder`: the shipped fp32 VAE decoder through ONNX Runtime; latents (already divided by
  the scaling factor, as diffusers' pipelines feed vae.decode) -> uint8 RGB, rounded as diffusers'
  output_type="np" then x 255 is rounded by evaluate.py.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
for p in (str(HERE), str(HERE.parent)):
    if p not in sys.path:
        sys.path.insert(0, p)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import export  # noqa: E402
import export_micro  # noqa: E402

MICRO = HERE.parent / "micro"
UNETS = ("unet", "unet_lcm", "unet_style", "unet_lcm_style")


def session(path: Path, threads: int = 2):
    opts = export.ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return export.ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _by_value(arrays: dict[str, np.ndarray]) -> dict[bytes, str]:
    return {np.sort(a.astype(np.float16).ravel()).tobytes(): k for k, a in arrays.items()}


def layout_of(params: dict[str, np.ndarray], ref_path: Path):
    """(reference graph, {reference initializer: (state-dict key, how)}) with how one of "same",
    "transposed", "reshaped": the initializers of `ref_path`, an export (fp16 or fp32 weights) of a
    module holding `params` (export_micro.distinct_weights), matched to the parameters they hold by
    value (looked up by their fp16 values, compared exactly in the graph's type)."""
    import onnx
    from onnx import numpy_helper

    keys = _by_value(params)
    graph = onnx.load(str(ref_path)).graph
    layout = {}
    for t in graph.initializer:
        a = numpy_helper.to_array(t)
        floating = a.dtype in (np.float16, np.float32)
        key = keys.get(np.sort(a.astype(np.float16).ravel()).tobytes()) if floating else None
        if key is None:
            continue
        p = params[key].astype(a.dtype)
        candidates = {"same": p, "transposed": p.T if p.ndim == 2 else None, "reshaped": p.reshape(-1)}
        how = next((h for h, want in candidates.items() if want is not None and a.shape == want.shape
                    and np.array_equal(a, want)), None) or ("reshaped" if np.array_equal(a.reshape(-1), p.reshape(-1)) else None)
        if how is None:
            raise export.ExportError(f"reference initializer {t.name}: values of {key} in another order")
        layout[t.name] = (key, how)
    if sorted(k for k, _ in layout.values()) != sorted(params):
        missing = sorted(set(params) - {k for k, _ in layout.values()})
        raise export.ExportError(f"the reference graph does not hold every parameter once: {missing[:4]}")
    return onnx.load(str(ref_path), load_external_data=False).graph, layout


def reference_layout(config_path: Path, tmp: Path, residuals: bool = False):
    """`layout_of` a random-weight export of the UNet config (export_micro.reference_unet)."""
    from diffusers import UNet2DConditionModel

    ref_path = export_micro.reference_unet(config_path, tmp / "ref_unet", "fp16", residuals)
    # reference_unet draws its weights from seed 0 in parameter order: redraw them to match
    params = export_micro.distinct_weights(UNet2DConditionModel.from_config(json.loads(Path(config_path).read_text())))
    return layout_of(params, ref_path)


def shipped_state_dict(graph_path: Path, ref_graph, layout: dict) -> dict[str, torch.Tensor]:
    """The shipped UNet graph's weights as a UNet2DConditionModel state dict (fp16 values, fp32)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(graph_path)).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    pairs = export_micro.align_nodes(graph, ref_graph)
    state = {}
    for node, ref_node in pairs:
        for x, y in zip(node.input, ref_node.input):
            if y in layout:
                key, how = layout[y]
                a = inits[x]
                shaped = a.T if how == "transposed" else a
                value = torch.from_numpy(np.ascontiguousarray(shaped).astype(np.float32))
                if how == "reshaped":
                    value = value.reshape(-1)
                if key in state and not torch.equal(state[key].reshape(-1), value.reshape(-1)):
                    raise export.ExportError(f"{graph_path}: {key} appears twice with different values")
                state[key] = value
    return state


def takes_residuals(graph_path: Path) -> bool:
    """Whether a UNet graph has the ControlNet residual inputs."""
    import onnx

    graph = onnx.load(str(graph_path), load_external_data=False).graph
    return any(i.name.startswith("down_block_additional_residual") for i in graph.input)


def rebuild_unets(model: Path = MICRO, folders=UNETS) -> dict:
    """{folder: UNet2DConditionModel (eval, fp32)} holding the shipped graphs' fp16 weights."""
    from diffusers import UNet2DConditionModel

    config_path = Path(model) / "unet" / "config.json"
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        # The reference has residual inputs where the shipped graphs do (the ControlNet's Adds).
        ref_graph, layout = reference_layout(config_path, Path(tmp), takes_residuals(Path(model) / folders[0] / "model.onnx"))
        for folder in folders:
            unet = UNet2DConditionModel.from_config(json.loads(config_path.read_text()))
            state = shipped_state_dict(Path(model) / folder / "model.onnx", ref_graph, layout)
            shapes = {k: v.shape for k, v in unet.state_dict().items()}
            state = {k: v.reshape(shapes[k]) for k, v in state.items()}
            unet.load_state_dict(state, strict=True)
            out[folder] = unet.eval().requires_grad_(False)
    return out


def graph_state_dict(graph_path: Path, params: dict[str, np.ndarray], spec, dtype: str) -> dict[str, torch.Tensor]:
    """The weights of the shipped graph at `graph_path` by state-dict key: `spec` (an export.Spec
    of a module holding the distinct `params`) exported as the exporter exports it at `dtype`, its
    initializers matched to `params` by value (`layout_of`), aligned with the shipped graph node by
    node (`shipped_state_dict`)."""
    with tempfile.TemporaryDirectory() as tmp:
        export.export_component(spec, Path(tmp) / "ref", export.Settings(dtype=dtype, verify=False))
        ref_graph, layout = layout_of(params, Path(tmp) / "ref" / "model.onnx")
        return shipped_state_dict(graph_path, ref_graph, layout)


def rebuild_controlnet(model: Path = MICRO, folder: str = "controlnet_edge"):
    """A diffusers ControlNetModel (train mode, fp32) holding exactly the fp16 weights of
    `model/folder/model.onnx`, matched like the UNets': a random-weight export of the same config
    through export.controlnet_spec, aligned node by node."""
    from diffusers import ControlNetModel

    config = json.loads((Path(model) / folder / "config.json").read_text())
    geometry = json.loads((Path(model) / "manifest.json").read_text())["geometry"]
    unet_config = json.loads((Path(model) / "unet" / "config.json").read_text())
    ref = ControlNetModel.from_config(config).eval()
    params = export_micro.distinct_weights(ref)
    spec = export.controlnet_spec(ref, unet_config["sample_size"], geometry["vae_scale_factor"])
    state = graph_state_dict(Path(model) / folder / "model.onnx", params, spec, "fp16")
    cn = ControlNetModel.from_config(config)
    shapes = {k: v.shape for k, v in cn.state_dict().items()}
    cn.load_state_dict({k: v.reshape(shapes[k]) for k, v in state.items()}, strict=True)
    return cn


def rebuild_vae_decoder(model: Path = MICRO):
    """The shipped VAE decoder (`vae_decoder/model.onnx`, fp32 weights) as a diffusers
    AutoencoderKL (eval, fp32, no gradients to its weights) whose `decode` gives the graph's output,
    matched like the UNets': a random-weight export of the same config through
    export.vae_decoder_spec, aligned node by node. Only its decoder half (post_quant_conv and
    decoder) holds the shipped weights; the encoder half is unused and left random. What the
    ControlNet stage inverts to find latents of images the base model never drew."""
    from diffusers import AutoencoderKL

    config = json.loads((Path(model) / "vae_decoder" / "config.json").read_text())
    manifest = json.loads((Path(model) / "manifest.json").read_text())
    ref = AutoencoderKL.from_config(config).eval()
    params = {k: v for k, v in export_micro.distinct_weights(ref).items() if k.startswith(("decoder.", "post_quant_conv."))}
    spec = export.vae_decoder_spec(ref, config["sample_size"] // manifest["geometry"]["vae_scale_factor"])
    state = graph_state_dict(Path(model) / "vae_decoder" / "model.onnx", params, spec, manifest["dtype"])
    vae = AutoencoderKL.from_config(config)
    shapes = {k: v.shape for k, v in vae.state_dict().items()}
    missing = vae.load_state_dict({k: v.reshape(shapes[k]) for k, v in state.items()}, strict=False).missing_keys
    if any(k.startswith(("decoder.", "post_quant_conv.")) for k in missing):
        raise export.ExportError(f"the shipped VAE decoder lacks {missing[:4]}")
    return vae.eval().requires_grad_(False)


class TextEncoder:
    """Prompts -> prompt embeddings [B, 77, 64] (fp32) through the shipped text encoder."""

    def __init__(self, model: Path = MICRO, threads: int = 2):
        from transformers import CLIPTokenizer

        self.tokenizer = CLIPTokenizer.from_pretrained(str(Path(model) / "tokenizer"))
        self.sess = session(Path(model) / "text_encoder" / "model.onnx", threads)
        self.itype = np.int32 if "int32" in self.sess.get_inputs()[0].type else np.int64
        self._cache: dict[str, np.ndarray] = {}

    def ids(self, prompts: list[str]) -> np.ndarray:
        return np.array(self.tokenizer(prompts, padding="max_length", max_length=77, truncation=True).input_ids)

    def __call__(self, prompts: list[str]) -> torch.Tensor:
        todo = sorted({p for p in prompts if p not in self._cache})
        if todo:
            out = self.sess.run(None, {"input_ids": self.ids(todo).astype(self.itype)})[0].astype(np.float32)
            self._cache.update(zip(todo, out))
        return torch.from_numpy(np.stack([self._cache[p] for p in prompts]))


class VaeDecoder:
    """Latents / scaling_factor [B, 4, 16, 16] -> uint8 RGB [B, 64, 64, 3] through the shipped decoder."""

    def __init__(self, model: Path = MICRO, threads: int = 2):
        self.sess = session(Path(model) / "vae_decoder" / "model.onnx", threads)
        self.scaling_factor = json.loads((Path(model) / "vae_decoder" / "config.json").read_text())["scaling_factor"]

    def __call__(self, latents: torch.Tensor, batch: int = 64) -> np.ndarray:
        out = []
        z = (latents / self.scaling_factor).float().numpy()
        for i in range(0, len(z), batch):
            y = self.sess.run(None, {"latent_sample": z[i : i + batch]})[0]
            # diffusers' VaeImageProcessor.postprocess: (y / 2 + 0.5).clamp(0, 1); numpy_to_pil x 255 rounding
            out.append(np.clip(np.rint(np.clip(y / 2 + 0.5, 0, 1) * 255), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1))
        return np.concatenate(out)
