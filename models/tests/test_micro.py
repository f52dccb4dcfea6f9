"""Tests of the micro model's code (models/micro_src/) at smoke scale: the world, the trimmed
vocabulary, the pixelation measure, every training stage (one step, interrupted, resumed), the
evaluation and the export through models/export.py. No training to quality: well under a minute
on one CPU thread. And of the committed model (models/micro): its shipped LoRA files against its
fused UNets through diffusers, its weight nodes' names, its manifest's file table.

    .venv-ref/bin/python -m pytest -q -p no:cacheprovider models/tests/test_micro.py
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "models" / "micro_src"
sys.path.insert(0, str(SRC))
sys.path.insert(0, str(ROOT / "models"))

import config  # noqa: E402
import export_micro  # noqa: E402
import judge  # noqa: E402
import train  # noqa: E402
import vocab  # noqa: E402
import world  # noqa: E402

torch.set_num_threads(1)

# CLIP's ids, from the full tokenizer (openai/clip-vit-large-patch14 as SD v1.5 ships it).
CAPTION = "a large yellow star on a blue background at sunset"
CAPTION_IDS = [49406, 320, 3638, 4481, 1565, 525, 320, 1746, 5994, 536, 3424, 49407]
TRAINING_STAGES = ("judge", "vae", "base", "lcm", "style", "controlnet", "preview", "turbo")
MICRO = ROOT / "models" / "micro"
UNETS = ("unet", "unet_lcm", "unet_style", "unet_lcm_style")
WEIGHT_NODE = re.compile(r"/unet/([A-Za-z0-9_.]+(?:/[A-Za-z0-9_.]+)*)/(Conv|MatMul|Gemm)")


# ---- the world -------------------------------------------------------------------------------


def test_world_is_deterministic_by_seed():
    a, b = world.scene("train", 123), world.scene("train", 123)
    assert a == b
    assert np.array_equal(world.render(a), world.render(b))
    img = world.render(a)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    # the splits draw from different streams
    train_scenes = [world.scene("train", i) for i in range(50)]
    held = [world.scene("heldout", i) for i in range(50)]
    assert train_scenes != held
    # anti-aliased: edge pixels hold colours between the shape's and the background's
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 10


def test_sampler_is_balanced():
    combos = [(s.colour, s.shape, s.background) for s in (world.scene("train", i) for i in range(len(world.COMBOS)))]
    assert sorted(combos) == sorted(world.COMBOS)
    assert all(c != b for c, _, b in combos)


def test_caption_grammar():
    sc = world.scene("heldout", 7, full_caption=True)
    cap = sc.caption()
    assert cap.startswith(f"a {sc.size} {sc.colour} {sc.shape} {sc.position} on a {sc.background} background")
    assert sc.caption(trigger=True) == cap + ", PixArFK"
    assert (" at sunset" in cap) == sc.sunset
    short = [world.scene("train", i) for i in range(300)]
    assert any(not s.say_size for s in short) and any(not s.say_position for s in short)


def test_captions_tokenize_to_clip_ids(tmp_path):
    from tokenizers import Tokenizer
    from transformers import CLIPTokenizer

    full = train.tokenizer_source()
    assert Tokenizer.from_file(str(full / "tokenizer.json")).encode(CAPTION).ids == CAPTION_IDS
    texts = world.vocabulary_texts() + [world.scene("train", i).caption(trigger=i % 2 == 0) for i in range(200)]
    stats = vocab.trim_tokenizer(full, tmp_path / "tok", texts)
    trimmed = Tokenizer.from_file(str(tmp_path / "tok" / "tokenizer.json"))
    assert trimmed.encode(CAPTION).ids == CAPTION_IDS
    # what speedscape's Rust tokenizer checks: CLIP's special ids
    assert trimmed.token_to_id("<|startoftext|>") == 49406 and trimmed.token_to_id("<|endoftext|>") == 49407
    vocab.check_same_ids(full, tmp_path / "tok", texts)  # raises on any difference
    # diffusers' CLIPTokenizer reads the trimmed files the same way (pads with EOS to 77)
    ids = CLIPTokenizer.from_pretrained(str(tmp_path / "tok"))(CAPTION, padding="max_length", max_length=77).input_ids
    assert ids[: len(CAPTION_IDS)] == CAPTION_IDS and set(ids[len(CAPTION_IDS):]) == {49407}
    assert stats["tokens"] < 700 and (tmp_path / "tok" / "tokenizer.json").stat().st_size < 50_000
    # words outside the grammar still tokenize (byte-level fallback)
    assert trimmed.encode("a cat").ids[0] == 49406 and len(trimmed.encode("a cat").ids) >= 4


# ---- the measures ----------------------------------------------------------------------------


def test_pixel_art_scores_above_plain_renders():
    imgs, _ = world.render_batch("heldout", 0, 64)
    px = np.stack([world.pixel_art(im) for im in imgs])
    plain_s, px_s = judge.pixelation(imgs), judge.pixelation(px)
    assert px_s.min() > 0.95
    assert plain_s.mean() < 0.25
    assert px_s.min() > plain_s.max() + 0.3
    # every block of a PixArFK image (8x8) and of the augmentation's pixel art (4x4) is flat
    for art, b in ((px, world.STYLE_BLOCK), (np.stack([world.pixel_art(im, block=world.AUGMENT_BLOCK) for im in imgs[:8]]), world.AUGMENT_BLOCK)):
        blocks = art.reshape(len(art), 64 // b, b, 64 // b, b, 3)
        assert (blocks == blocks[:, :, :1, :, :1]).all()
    # a shifted pixel-art image still scores (the best grid offset is taken)
    assert judge.pixelation(np.roll(px[0], 2, axis=1)) > 0.95
    # flat images score 0, not NaN
    assert judge.pixelation(np.zeros((64, 64, 3), np.uint8)) == 0.0


def test_judge_shapes_and_accuracy():
    model = judge.Judge()
    imgs, scenes = world.render_batch("heldout", 0, 4)
    out = model(judge.to_tensor(imgs))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"colour": (4, 6), "shape": (4, 4), "background": (4, 6)}
    labels = np.array([s.labels() for s in scenes])
    assert judge.accuracy(labels, labels) == {"colour": 1.0, "shape": 1.0, "background": 1.0}


# ---- training stages, evaluation, export ------------------------------------------------------


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """Every stage at smoke scale; each training stage is first stopped after one step, then resumed."""
    base = tmp_path_factory.mktemp("micro")
    run_dir, export_dir = base / "run", base / "micro"
    history = {}
    for stage in config.ORDER:
        if stage == "style":
            te = train.load_pipeline(run_dir).text_encoder
            history["text_encoder_before_style"] = {k: v.clone() for k, v in te.state_dict().items()}
        if stage in TRAINING_STAGES:
            with pytest.raises(train.Interrupted):
                train.run(run_dir, [stage], smoke=True, interrupt_after=1, export_dir=export_dir)
            ckpt = torch.load(run_dir / stage / "ckpt.pt", weights_only=False)
            history[stage] = {"ckpt_step": ckpt["step"], "done_after_interrupt": (run_dir / stage / "done.json").exists()}
        train.run(run_dir, [stage], smoke=True, export_dir=export_dir)
    return run_dir, export_dir, history


def test_training_stages_resume(smoke_run):
    run_dir, _, history = smoke_run
    for stage in TRAINING_STAGES:
        assert history[stage] == {"ckpt_step": 1, "done_after_interrupt": False}, stage
        done = json.loads((run_dir / stage / "done.json").read_text())
        assert done["resumed_from"] == 1 and done["steps"] == config.SMOKE[stage]["steps"], stage
        assert done["loss_last"] is not None and np.isfinite(done["loss_last"])
    log = json.loads((run_dir / "train_log.json").read_text())
    assert set(log["stages"]) == set(config.ORDER)
    assert all("wall_s" in r for r in log["stages"].values())
    # a done stage is skipped, not rerun
    before = (run_dir / "base" / "done.json").read_text()
    train.run(run_dir, ["base"], smoke=True, export_dir=None)
    assert (run_dir / "base" / "done.json").read_text() == before


def test_vae_scaling_factor_is_one_over_latent_std(smoke_run):
    run_dir = smoke_run[0]
    vae = train.load_vae(run_dir)
    done = json.loads((run_dir / "vae" / "done.json").read_text())
    assert vae.config.scaling_factor == pytest.approx(done["scaling_factor"])
    assert vae.config.scaling_factor != 1.0


def test_pipeline_folder(smoke_run):
    run_dir = smoke_run[0]
    import make_tiny

    # SD v1.5's scheduler config, byte for byte
    assert (run_dir / "pipeline" / "scheduler" / "scheduler_config.json").read_text() == make_tiny.SD15_SCHEDULER_CONFIG + "\n"
    pipe = train.load_pipeline(run_dir)
    kept = json.loads((run_dir / "pipeline" / "vocab.json").read_text())["kept_ids"]
    emb = pipe.text_encoder.get_input_embeddings().weight
    unused = torch.ones(emb.shape[0], dtype=torch.bool)
    unused[kept] = False
    assert emb[unused].abs().max() == 0 and emb[kept].abs().max() > 0
    assert pipe.unet.config.block_out_channels == list(config.UNET["block_out_channels"])


def test_style_learns_only_the_triggers_token_rows(smoke_run):
    """Pivotal tuning: the style stage trains the rows of ', PixArFK''s tokens with its adapter
    and writes them into the pipeline's text encoder; nothing else of the encoder changes."""
    from tokenizers import Tokenizer

    run_dir, _, history = smoke_run
    data = {k: np.load(run_dir / "data" / f"{k}.npy") for k in ("train_ids", "train_trigger_ids")}
    rows = train.trigger_token_ids(data)
    tok = Tokenizer.from_file(str(run_dir / "tokenizer" / "tokenizer.json"))
    assert rows == sorted(tok.encode(f", {world.TRIGGER}", add_special_tokens=False).ids)
    assert not set(rows) & set(np.unique(data["train_ids"]).tolist())
    assert json.loads((run_dir / "style" / "done.json").read_text())["trigger_token_ids"] == rows
    before = history["text_encoder_before_style"]
    after = train.load_pipeline(run_dir).text_encoder.state_dict()
    (table,) = [k for k in after if k.endswith("token_embedding.weight")]
    assert set(after) == set(before)
    for k in after:
        if k != table:
            assert torch.equal(after[k], before[k]), k
    changed = (after[table] != before[table]).any(dim=1).nonzero().flatten().tolist()
    assert changed == rows


def test_style_batches_empty_captions_on_both_kinds_of_image():
    """CFG dropout in the style stage: plain renders lose their caption at `cfg_dropout`, PixArFK
    ones at `style_dropout`; the others keep theirs (plain untriggered, PixArFK triggered)."""
    b, n = 4000, 50
    data = {
        "train_ids": np.tile(np.arange(n)[:, None], (1, 77)),
        "train_trigger_ids": np.tile(1000 + np.arange(n)[:, None], (1, 77)),
        "empty_ids": np.full((1, 77), -1),
    }
    s = dict(config.STAGES["style"], batch=b, cfg_dropout=0.1, style_dropout=0.3)
    prior, idx, ids = train.style_batch(np.random.default_rng(0), s, data, n, n)
    empty = (ids == -1).all(axis=1)
    assert abs(prior.mean() - s["prior_fraction"]) < 0.03
    assert abs(empty[prior].mean() - 0.1) < 0.03
    assert abs(empty[~prior].mean() - 0.3) < 0.04
    kept = ~empty
    assert (ids[prior & kept, 0] == idx[prior & kept]).all()
    assert (ids[~prior & kept, 0] == 1000 + idx[~prior & kept]).all()
    none = train.style_batch(np.random.default_rng(0), dict(s, cfg_dropout=0.0, style_dropout=0.0), data, n, n)[2]
    assert not (none == -1).all(axis=1).any()


def test_lora_file_reproduces_the_trained_adapter(smoke_run, tmp_path):
    run_dir = smoke_run[0]
    pipe = train.load_pipeline(run_dir)
    params = train.add_lora(pipe.unet, "probe", 4)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in params:
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    x = torch.randn(1, 4, 16, 16, generator=gen)
    ehs = torch.randn(1, 77, 64, generator=gen)
    with torch.no_grad():
        want = pipe.unet(x, 500, ehs).sample
    path = train.save_lora(pipe.unet, "probe", tmp_path)
    fresh = train.load_pipeline(run_dir)
    with torch.no_grad():
        plain = fresh.unet(x, 500, ehs).sample
    fresh.load_lora_weights(str(tmp_path), weight_name=path.name, adapter_name="probe")
    with torch.no_grad():
        got = fresh.unet(x, 500, ehs).sample
    assert (want - plain).abs().max() > 1e-3
    assert torch.allclose(got, want, atol=1e-5)


def test_evaluate_writes_every_target(smoke_run):
    import evaluate

    run_dir = smoke_run[0]
    m = json.loads((run_dir / "metrics.json").read_text())
    assert set(m["targets"]) == set(evaluate.TARGETS)
    for t in m["targets"].values():
        assert isinstance(t["pass"], bool) and np.isfinite(t["value"])
    s = config.SMOKE["evaluate"]
    assert len(m["prompts"]) == s["prompts"] and m["seeds"] == [evaluate.SEED0]
    assert (run_dir / "eval" / "sheet.png").is_file()
    assert set(m["pixelation"]) >= {"style_triggered", "style_untriggered", "lcm_style_triggered", "real_through_vae",
                                    "real_style_through_vae"}


def test_export_has_four_unets_passes_checks_and_fits(smoke_run):
    import onnx
    import onnxruntime as ort
    from safetensors.torch import load_file

    run_dir, out, _ = smoke_run
    manifest = json.loads((out / "manifest.json").read_text())
    for folder in ("unet", "unet_lcm", "unet_style", "unet_lcm_style", "text_encoder", "vae_decoder"):
        assert (out / folder / "model.onnx").is_file(), folder
        assert manifest["components"][folder]["check"]["passed"], folder
    assert set(manifest["variants"]) == {"base", "lcm", "style", "lcm_style"}
    assert manifest["variants"]["lcm_style"]["loras"] == [{"name": "lcm", "weight": 1.0}, {"name": "style", "weight": 1.0}]
    assert manifest["dtype"] == "fp16" and manifest["geometry"]["image_size"] == 64
    # the manifest's file table is the folder as it is (after trimming and compaction)
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name != "manifest.json"}
    assert files == set(manifest["files"])
    for rel, entry in manifest["files"].items():
        assert (out / rel).stat().st_size == entry["bytes"], rel
    # the fused variants differ from the base
    assert (out / "unet_lcm" / "model.onnx_data").read_bytes() != (out / "unet" / "model.onnx_data").read_bytes()
    # trimmed text encoder: a small table, exact on grammar captions, zero-row for other ids
    te = manifest["components"]["text_encoder"]
    kept = json.loads((run_dir / "pipeline" / "vocab.json").read_text())["kept_ids"]
    assert te["vocabulary_trim"]["rows"] == len(kept) + 1
    assert te["check"]["grammar_captions_max_abs_err"] < 5e-2
    sess = ort.InferenceSession(str(out / "text_encoder" / "model.onnx"), providers=["CPUExecutionProvider"])
    ids = np.full((1, 77), 49407, dtype=np.int32 if "int32" in sess.get_inputs()[0].type else np.int64)
    ids[0, :len(CAPTION_IDS)] = CAPTION_IDS
    assert np.isfinite(sess.run(None, {"input_ids": ids})[0]).all()
    # the adapters ship as fp16 files for run-time LoRA, and the manifest points at them
    for name in ("lcm", "style"):
        rec = manifest["loras"][name]
        assert rec["copy"] == f"loras/{name}.safetensors" and rec["format"] == "diffusers", rec
        assert rec["sha256"] == manifest["files"][rec["copy"]]["sha256"]
        assert all(t.dtype == torch.float16 for t in load_file(str(out / rec["copy"])).values())
    # compaction keeps the weight nodes' names, the base modules' in every variant (no peft base_layer)
    graphs = {u: onnx.load(str(out / u / "model.onnx"), load_external_data=False).graph for u in ("unet", "unet_lcm", "unet_lcm_style")}
    names = {u: [n.name for n in export_micro.weight_nodes(g)] for u, g in graphs.items()}
    assert names["unet"] == names["unet_lcm"] == names["unet_lcm_style"]
    assert "/unet/down_blocks.0/attentions.0/transformer_blocks.0/attn1/to_q/MatMul" in names["unet"]
    assert all(WEIGHT_NODE.fullmatch(n) for n in names["unet"]), names["unet"]
    # the budget at the real sizes (smoke changes steps, not sizes)
    total = sum(e["bytes"] for e in manifest["files"].values()) + (out / "manifest.json").stat().st_size
    assert total <= export_micro.LIMIT_BYTES, total
    micro = manifest["micro"]
    assert micro["grammar"]["trigger"] == "PixArFK" and "base" in micro["stages"] and "metrics" in micro


def test_speedscape_runs_the_exported_micro_model(smoke_run, tmp_path):
    """The Rust side loads the export (fp16 UNets, trimmed text encoder, compacted graphs, 3-level
    VAE) and draws a 64x64 image with the fused LCM + style UNet."""
    import os
    import subprocess

    from PIL import Image

    binary = Path(os.environ.get("SPEEDSCAPE_BIN", ROOT / "target" / "debug" / "speedscape"))
    if not binary.is_file():
        pytest.skip(f"no speedscape binary at {binary} (cargo build, or SPEEDSCAPE_BIN)")
    out = tmp_path / "lcm_style.png"
    proc = subprocess.run(
        [str(binary), "generate", "--model-dir", str(smoke_run[1]), "--unet", "lcm_style", "--scheduler", "lcm",
         "--steps", "2", "--cfg", "1.5", "--seed", "1", "--prompt", CAPTION + ", PixArFK", "--out", str(out), "--device", "cpu"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert Image.open(out).size == (64, 64)


def test_evaluation_switches_adapters(smoke_run, tmp_path):
    """evaluate.Generator runs the base with no adapter active, and exactly the adapters asked for
    (probe LoRAs with large weights, so a wrong switch shows)."""
    import evaluate

    run_dir = smoke_run[0]
    for i, name in enumerate(("lcm", "style")):
        donor = train.load_pipeline(run_dir)
        params = train.add_lora(donor.unet, name, 4)
        gen = torch.Generator().manual_seed(10 + i)
        with torch.no_grad():
            for p in params:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
        train.save_lora(donor.unet, name, tmp_path)
    clean = evaluate.Generator(train.load_pipeline(run_dir), 4, "cpu")
    pipe = train.load_pipeline(run_dir)
    for name in ("lcm", "style"):
        pipe.load_lora_weights(str(tmp_path), weight_name=f"{name}.safetensors", adapter_name=name)
    g = evaluate.Generator(pipe, 4, "cpu")
    args = (["a small red circle on a blue background"], [1000], "dpm", 2, 7.5)
    base = clean(*args, [])
    assert np.array_equal(g(*args, []), base)
    style = g(*args, ["style"])
    both = g(*args, ["lcm", "style"])
    assert not np.array_equal(style, base) and not np.array_equal(both, style)
    assert np.array_equal(g(*args, ["style"]), style)
    assert np.array_equal(g(*args, []), base)  # off again after adapters were on


# ---- the committed model (models/micro) ------------------------------------------------------


def micro_weights(folder: Path) -> dict[str, np.ndarray]:
    """{module path: weight in torch's layout, fp16} of a committed UNet, found by node name."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(MICRO / folder / "model.onnx")).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    out = {}
    for node in export_micro.weight_nodes(graph):
        module = WEIGHT_NODE.fullmatch(node.name).group(1).replace("/", ".")
        w = inits[node.input[1]]
        trans_b = any(a.name == "transB" and a.i for a in node.attribute)
        out[module] = w.T if node.op_type == "MatMul" or (node.op_type == "Gemm" and not trans_b) else w
    return out


def micro_pipeline():
    """StableDiffusionPipeline of the micro architecture (the folder's configs), random weights."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    read = lambda rel: json.loads((MICRO / rel).read_text())  # noqa: E731
    return StableDiffusionPipeline(
        vae=AutoencoderKL.from_config(read("vae_decoder/config.json")),
        text_encoder=CLIPTextModel(CLIPTextConfig.from_dict(read("text_encoder/config.json"))),
        tokenizer=CLIPTokenizer.from_pretrained(str(MICRO / "tokenizer")),
        unet=UNet2DConditionModel.from_config(read("unet/config.json")),
        scheduler=PNDMScheduler.from_pretrained(str(MICRO / "scheduler")),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def test_micro_unets_name_their_weight_nodes():
    """Every Conv/MatMul/Gemm with a weight is /unet/<module path>/<Op>, the module exists in the
    micro UNet with that weight's shape, and the four UNets name the same nodes alike."""
    import onnx

    modules = dict(micro_pipeline().unet.named_modules())
    seen = {}
    for folder in UNETS:
        graph = onnx.load(str(MICRO / folder / "model.onnx"), load_external_data=False).graph
        inits = {t.name: tuple(t.dims) for t in graph.initializer}
        nodes = export_micro.weight_nodes(graph)
        names = [n.name for n in nodes]
        assert len(names) == 132 and len(set(names)) == len(names), folder
        for node in nodes:
            m = WEIGHT_NODE.fullmatch(node.name)
            assert m and m.group(2) == node.op_type, node.name
            weight = modules[m.group(1).replace("/", ".")].weight
            shape = inits[node.input[1]]
            assert tuple(weight.shape) in (shape, shape[::-1]), (node.name, shape)
        # every other node stays nameless (the compaction)
        assert sum(1 for n in graph.node if n.name) == len(names), folder
        seen[folder] = names
    assert seen["unet"] == seen["unet_lcm"] == seen["unet_style"] == seen["unet_lcm_style"]


def test_shipped_loras_load_in_diffusers():
    """load_lora_weights takes each file whole: the adapter it builds holds exactly the file's
    tensors (no key missing or unexpected), at r = lora_alpha = 8 from the file's metadata."""
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import load_file

    for name in ("lcm", "style"):
        path = MICRO / "loras" / f"{name}.safetensors"
        file = load_file(str(path))
        assert all(k.startswith("unet.") and k.endswith((".lora_A.weight", ".lora_B.weight")) for k in file)
        assert all(v.dtype == torch.float16 for v in file.values())
        pipe = micro_pipeline()
        pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=name)
        loaded = get_peft_model_state_dict(pipe.unet, adapter_name=name)
        assert set(loaded) == {k.removeprefix("unet.") for k in file}, name
        for k, v in loaded.items():
            assert torch.equal(v, file["unet." + k].float()), k
        cfg = pipe.unet.peft_config[name]
        assert (cfg.r, cfg.lora_alpha) == (8, 8), name
        # LoCon conv targets: A [r, in, kh, kw], B [out, r, 1, 1]
        assert file["unet.down_blocks.0.resnets.0.conv1.lora_A.weight"].shape == (8, 32, 3, 3)
        assert file["unet.down_blocks.0.resnets.0.conv1.lora_B.weight"].shape == (32, 8, 1, 1)


@pytest.mark.parametrize("names, variant",
                         [(["lcm"], "unet_lcm"), (["style"], "unet_style"), (["lcm", "style"], "unet_lcm_style")])
def test_shipped_loras_fused_reproduce_the_fused_variants(names, variant):
    """diffusers fuses the files at 1.0 onto unet's weights (set_adapters + fuse_lora, as the
    exporter made the variants); converted to fp16 as the exporter converts, every weight is
    within one fp16 step at its tensor's scale of `variant`'s. The base's own fp16 rounding (its
    fp32 weights are gone) and the recovered factors' rounding move some small elements further
    in their own ulps, so those are bounded as a share."""
    from onnxruntime.transformers import optimizer  # noqa: F401  (float16.py on sys.path)
    from float16 import convert_np_to_float16

    base, want = micro_weights("unet"), micro_weights(variant)
    pipe = micro_pipeline()
    modules = dict(pipe.unet.named_modules())
    with torch.no_grad():
        for module, w in base.items():
            modules[module].weight.copy_(torch.from_numpy(w.astype(np.float32)))
    for name in names:
        pipe.load_lora_weights(str(MICRO / "loras"), weight_name=f"{name}.safetensors", adapter_name=name)
    pipe.set_adapters(names, adapter_weights=[1.0] * len(names))
    pipe.fuse_lora(components=["unet"], lora_scale=1.0, adapter_names=names)
    modules = dict(pipe.unet.named_modules())
    changed = over = total = 0
    for module, w in want.items():
        layer = modules[module]
        got = convert_np_to_float16(getattr(layer, "base_layer", layer).weight.detach().numpy())
        diff = np.abs(got.astype(np.float64) - w.astype(np.float64))
        step = float(np.spacing(np.abs(w).max()))
        assert diff.max() <= step, (module, diff.max(), step)
        own = np.spacing(np.abs(w)).astype(np.float64)
        over += int((diff > own * 1.0001).sum())
        total += w.size
        changed += not np.array_equal(w, base[module])
    assert changed == 128  # every LoRA-targeted weight of the variant; conv_in, conv_out, time_embedding untouched
    assert over / total < 0.15, over / total


def test_micro_manifest_lists_every_file():
    """manifest.json's file table is the folder (but manifest.json and the hand-written README.md),
    sizes and sha256; the adapters' entries point at their copies; the folder fits LIMIT_BYTES."""
    import hashlib

    manifest = json.loads((MICRO / "manifest.json").read_text())
    files = {p.relative_to(MICRO).as_posix() for p in MICRO.rglob("*") if p.is_file()} - {"manifest.json", "README.md"}
    assert files == set(manifest["files"])
    for rel, entry in manifest["files"].items():
        data = (MICRO / rel).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (entry["bytes"], entry["sha256"]), rel
    for name in ("lcm", "style"):
        rec = manifest["loras"][name]
        assert rec["copy"] == f"loras/{name}.safetensors" and rec["format"] == "diffusers" and rec["components"] == ["unet"]
        entry = manifest["files"][rec["copy"]]
        assert (rec["sha256"], rec["bytes"]) == (entry["sha256"], entry["bytes"])
        assert "extract_loras.py" in rec["source"]
    total = sum(p.stat().st_size for p in MICRO.rglob("*") if p.is_file())
    assert total <= export_micro.LIMIT_BYTES, total


# ---- the edge ControlNet (issue 20) -------------------------------------------------------------

CONTROLNET = MICRO / "controlnet_edge"
RESIDUAL_SHAPES = [(32, 16), (32, 16), (32, 8), (48, 8), (48, 4), (48, 4)]  # (channels, side) of the 6 down residuals
MID_SHAPE = (48, 4)


def _session(path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _controlnet_feeds(batch: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"sample": rng.standard_normal((batch, 4, 16, 16)).astype(np.float16),
            "timestep": np.array(500, np.float16),
            "encoder_hidden_states": rng.standard_normal((batch, 77, 64)).astype(np.float16),
            "controlnet_cond": (rng.random((batch, 3, 64, 64)) < 0.1).astype(np.float16),
            "conditioning_scale": np.array(1.0, np.float16)}


def test_controlnet_graph_follows_the_contract():
    """controlnet_edge/: the contract's inputs (fp16 like the UNets) and outputs, 6 down residuals
    + mid of the UNet's skip shapes, already multiplied by conditioning_scale; recorded in the
    manifest; under 3 MB."""
    manifest = json.loads((MICRO / "manifest.json").read_text())
    rec = manifest["controlnets"]["edge"]
    assert rec["folder"] == "controlnet_edge" and rec["residuals"] == 6 and rec["conditioning_channels"] == 3
    assert rec["cross_attention_dim"] == 64 and rec["block_out_channels"] == [32, 48, 48]
    assert all(manifest["components"][u]["controlnet_residuals"] == 6 for u in UNETS)
    sess = _session(CONTROLNET / "model.onnx")
    assert [i.name for i in sess.get_inputs()] == ["sample", "timestep", "encoder_hidden_states", "controlnet_cond",
                                                   "conditioning_scale"]
    assert all(i.type == "tensor(float16)" for i in sess.get_inputs())
    names = [f"down_block_res_sample_{i}" for i in range(6)] + ["mid_block_res_sample"]
    assert [o.name for o in sess.get_outputs()] == names
    feeds = _controlnet_feeds(2)
    out = sess.run(None, feeds)
    assert [o.shape for o in out] == [(2, c, s, s) for c, s in RESIDUAL_SHAPES + [MID_SHAPE]]
    half = sess.run(None, {**feeds, "conditioning_scale": np.array(0.5, np.float16)})
    for a, b in zip(out, half):
        np.testing.assert_allclose(b.astype(np.float32), a.astype(np.float32) * 0.5, atol=2e-3, rtol=2e-3)
    assert max(float(np.abs(a).max()) for a in out) > 0  # trained: the zero convolutions are no longer zero
    assert sum(p.stat().st_size for p in CONTROLNET.iterdir()) <= 3_000_000


def _without_residual_adds(path, tmp_path):
    """The UNet graph at `path` with its residual inputs and the Add nodes that take them removed
    (each Add's output replaced by its other input): the plain UNet of the same weights."""
    import onnx

    model = onnx.load(str(path))
    g = model.graph
    residual = {i.name for i in g.input if "additional_residual" in i.name}
    rename = {}
    for n in list(g.node):
        if n.op_type == "Add" and residual & set(n.input):
            other = [x for x in n.input if x not in residual]
            assert len(other) == 1, n
            rename[n.output[0]] = other[0]
            g.node.remove(n)
    assert len(rename) == len(residual) == 7
    for n in g.node:
        n.input[:] = [rename.get(x, x) for x in n.input]
    for o in g.output:
        assert o.name not in rename
    keep = [i for i in g.input if i.name not in residual]
    del g.input[:]
    g.input.extend(keep)
    out = tmp_path / f"{path.parent.name}.onnx"
    onnx.save_model(model, str(out))
    return out


@pytest.mark.parametrize("folder", UNETS)
def test_unets_take_residuals_and_zero_residuals_change_nothing(folder, tmp_path):
    """Every UNet has the contract's residual inputs; with zeros its output is bit-identical to the
    same graph with the residual additions cut out; non-zero residuals change it."""
    sess = _session(MICRO / folder / "model.onnx")
    res = [i for i in sess.get_inputs() if "additional_residual" in i.name]
    assert [i.name for i in res] == [f"down_block_additional_residual_{i}" for i in range(6)] + ["mid_block_additional_residual"]
    plain = _session(_without_residual_adds(MICRO / folder / "model.onnx", tmp_path))
    rng = np.random.default_rng(1)
    feeds = {"sample": rng.standard_normal((2, 4, 16, 16)).astype(np.float16), "timestep": np.array(700, np.float16),
             "encoder_hidden_states": rng.standard_normal((2, 77, 64)).astype(np.float16)}
    zeros = {i.name: np.zeros((2, c, s, s), np.float16) for i, (c, s) in zip(res, RESIDUAL_SHAPES + [MID_SHAPE])}
    got = sess.run(None, {**feeds, **zeros})[0]
    want = plain.run(None, feeds)[0]
    assert got.tobytes() == want.tobytes()
    ones = {k: np.full_like(v, 0.5) for k, v in zeros.items()}
    assert np.abs(sess.run(None, {**feeds, **ones})[0].astype(np.float32) - want.astype(np.float32)).max() > 1e-2


def _dpm_images(prompts, seeds, controls, steps=20, cfg=7.5, x0s: list | None = None, unet="unet", lcm=False):
    """DPM-Solver++ (diffusers' scheduler; LCMScheduler with `lcm`, its step noise from a torch
    generator of the first seed) over the shipped graphs (UNet folder `unet`) through ONNX Runtime,
    as StableDiffusionControlNetPipeline runs them (batch [uncond, cond]); `controls` None: no
    control (zero residuals). uint8 images. `x0s`: each step's x0 prediction [B, 4, 16, 16] is appended."""
    from diffusers import DPMSolverMultistepScheduler, LCMScheduler

    import shipped

    text, decoder = shipped.TextEncoder(MICRO, 1), shipped.VaeDecoder(MICRO, 1)
    cn = _session(CONTROLNET / "model.onnx")
    unet = _session(MICRO / unet / "model.onnx")
    res_names = [i.name for i in unet.get_inputs()][3:]
    sched = (LCMScheduler if lcm else DPMSolverMultistepScheduler).from_pretrained(str(MICRO / "scheduler"))
    sched.set_timesteps(steps)
    step_gen = torch.Generator().manual_seed(seeds[0])
    b = len(prompts)
    lat = torch.cat([torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(s)) for s in seeds]) * sched.init_noise_sigma
    ehs = torch.cat([text([""] * b), text(prompts)]).numpy().astype(np.float16)
    cond = None if controls is None else np.concatenate([controls, controls]).astype(np.float16)
    for t in sched.timesteps:
        x = sched.scale_model_input(torch.cat([lat, lat]), t).numpy().astype(np.float16)
        tt = np.array(float(t), np.float16)
        if cond is None:
            res = [np.zeros((2 * b, c, s, s), np.float16) for c, s in RESIDUAL_SHAPES + [MID_SHAPE]]
        else:
            res = cn.run(None, {"sample": x, "timestep": tt, "encoder_hidden_states": ehs, "controlnet_cond": cond,
                                "conditioning_scale": np.array(1.0, np.float16)})
        eps = torch.from_numpy(unet.run(None, {"sample": x, "timestep": tt, "encoder_hidden_states": ehs,
                                               **dict(zip(res_names, res))})[0].astype(np.float32))
        u, c = eps.chunk(2)
        lat = sched.step(u + cfg * (c - u), t, lat, **({"generator": step_gen} if lcm else {})).prev_sample
        if x0s is not None:
            x0s.append(sched.model_outputs[-1].clone())
    return decoder(lat)


def test_controlnet_style_samples_are_conditioned_on_the_base_outline(smoke_run):
    """style_condition "paired": a style sample's condition is the edge map of the base sample
    drawn from the same noise (seed i) and caption, not its own pixel-art outline; "own" keeps its
    own image's edges."""
    import controlnet

    run_dir, export_dir, _ = smoke_run
    settings = config.stage_settings(smoke=True)
    s = settings["controlnet"]
    ctx = train.Context(run_dir, settings, "cpu", config.SEED, True, export_dir=export_dir)
    frozen = controlnet.Frozen(export_dir, unets=("unet", "unet_style"), threads=1)
    paired, _, _, _ = controlnet.training_sets(ctx, frozen, {**s, "style_condition": "paired"})
    n = len(paired[1].latents)
    assert n == s["style_samples"] and torch.equal(paired[1].cond, paired[0].cond[:n])
    noise = {u: np.load(controlnet.samples_dir(run_dir, s, u, u != "unet") / "chunk_000000.npz")["noise"]
             for u in ("unet", "unet_style")}
    np.testing.assert_array_equal(noise["unet_style"], noise["unet"][:n])
    own, _, _, _ = controlnet.training_sets(ctx, frozen, {**s, "style_condition": "own"})
    edges_own = torch.from_numpy(controlnet.edge_maps(frozen, own[1].latents)).float()
    assert torch.equal(own[1].cond[:, 0], edges_own) and not torch.equal(own[1].cond, paired[1].cond)


def test_pixelated_style_set_pairs_the_base_outline_with_its_pixel_art(smoke_run):
    """style_condition "pixelated" (as shipped): the style set is the first `style_samples` base
    images made pixel art -- conditioned on the base images' own (smooth) edges, captioned with the
    trigger word, their latents found by inverting the decoder from the base latents (so they differ
    from them), and recorded with the inversion's measured PSNR and pixelation."""
    import controlnet

    run_dir, export_dir, _ = smoke_run
    settings = config.stage_settings(smoke=True)
    s = settings["controlnet"]
    assert config.STAGES["controlnet"]["style_condition"] == "pixelated"
    ctx = train.Context(run_dir, settings, "cpu", config.SEED, True, export_dir=export_dir)
    frozen = controlnet.Frozen(export_dir, unets=("unet", "unet_style"), threads=1)
    sets, _, _, record = controlnet.training_sets(ctx, frozen, {**s, "style_condition": "pixelated"})
    n = s["style_samples"]
    base, style = sets
    assert len(style.latents) == n and torch.equal(style.cond, base.cond[:n])
    assert style.unet is frozen.unets["unet_style"] and style.dropout == 0.0
    assert not torch.allclose(style.latents, base.latents[:n])
    chunk = np.load(run_dir / record["samples_dirs"][1] / "chunk_000000.npz")
    np.testing.assert_array_equal(chunk["latents"], style.latents.numpy())
    assert record["inversion"]["steps"] == s["invert_steps"] and np.isfinite(record["inversion"]["psnr_db"])
    data = controlnet.base_samples(frozen, controlnet.samples_dir(run_dir, s), s, ctx.seed, s["samples"])
    triggered = [world.scene("train", int(i)).caption(trigger=True) for i in data["index"][:n]]
    assert all(world.TRIGGER in c for c in triggered)


def test_decoder_inversion_finds_latents_of_pixel_art():
    """controlnet.invert_decoder on the shipped decoder (rebuilt in torch): from the base image's
    latent, 40 steps bring the decoded image much closer to that image's pixel art (PSNR up by
    more than 5 dB) and make it much more pixel-art-like (judge.pixelation up by more than 0.15)."""
    import controlnet
    import judge
    import shipped

    torch.manual_seed(0)
    dec = shipped.VaeDecoder(MICRO, threads=1)
    frozen = controlnet.Frozen(MICRO, unets=("unet",), threads=1)
    scenes = [world.scene("heldout", i, full_caption=True) for i in range(4)]
    lat = frozen.generate(frozen.pipeline(), [sc.caption() for sc in scenes], [1000] * 4, 10, 7.5)
    art = np.stack([world.pixel_art(im) for im in dec(lat)])
    z = controlnet.invert_decoder(shipped.rebuild_vae_decoder(MICRO), art, lat, 40, 0.08, dec.scaling_factor)

    def psnr(images):
        return 10 * np.log10(255.0**2 / ((images.astype(np.float64) - art) ** 2).mean())

    before, after = dec(lat), dec(z)
    assert psnr(after) > psnr(before) + 5.0, (psnr(before), psnr(after))
    assert judge.pixelation(after).mean() > judge.pixelation(before).mean() + 0.15


def test_rebuilt_vae_decoder_equals_the_shipped_graph():
    """shipped.rebuild_vae_decoder: a torch AutoencoderKL whose decode gives the shipped fp32
    vae_decoder graph's output through ONNX Runtime (within 1e-4), its decoder weights exactly the
    graph's initializers."""
    import shipped

    vae = shipped.rebuild_vae_decoder(MICRO)
    dec = shipped.VaeDecoder(MICRO, threads=1)
    z = torch.randn(3, 4, 16, 16, generator=torch.Generator().manual_seed(7))
    want = dec.sess.run(None, {"latent_sample": z.numpy()})[0]
    with torch.no_grad():
        got = vae.decode(z).sample.numpy()
    assert np.abs(got - want).max() <= 1e-4, np.abs(got - want).max()


def test_style_gap_is_judged_at_the_style_grid_where_perfect_pixel_art_meets_it():
    """evaluate_controlnet.metrics_of: with the renders themselves as the plain ControlNet runs and
    their exact pixel art as the LCM + style run, the 1 px F1 gap is far over 0.15 (no pixel art
    can follow smooth edges to 1 px), while the style gap target, both runs at half a block
    (4 px), passes; a style run that ignores the control (another scene's pixel art) fails it."""
    import controlnet
    import evaluate_controlnet as ec

    scenes = [world.scene("heldout", i, full_caption=True) for i in range(8)]
    renders = np.stack([world.render(sc) for sc in scenes])
    art = np.stack([world.pixel_art(im) for im in renders])
    images = {k: renders for k in ("dpm20", "dpm20_cn", "lcm4_cn", "style_untriggered", "style_untriggered_cn")}
    images.update(control=np.stack([controlnet.control_image(im) for im in renders]), pixel_art=art, lcm_style4_cn=art)
    s = {"lcm_steps": [4]}
    m = ec.metrics_of(images, s)
    assert ec.STYLE_TOLERANCE == 4.0 and m["block_tolerance_px"] == 4.0
    assert m["cn_lcm_style_f1_gap_1px"] > 0.4 and m["adherence_f1"]["pixel_art"] < 0.5
    assert m["targets"]["cn_lcm_style_f1_gap"]["pass"] and m["adherence_f1_block"]["pixel_art"] > 0.85
    assert m["targets"]["cn_lcm_style_pixelation_margin"]["pass"]
    m = ec.metrics_of({**images, "lcm_style4_cn": np.roll(art, 1, axis=0)}, s)
    assert not m["targets"]["cn_lcm_style_f1_gap"]["pass"], m["adherence_f1_block"]


def test_rebuilt_controlnet_holds_the_shipped_graphs_weights():
    """shipped.rebuild_controlnet (what the stage trains on from, `init`): a torch ControlNetModel
    whose residuals are the shipped graph's through ONNX Runtime, within fp16's compute noise
    (0.5 % of the largest residual), at a high and a low timestep; and every weight is fp16-exact
    (the graph's initializers, not a re-training)."""
    import shipped

    cn = shipped.rebuild_controlnet(MICRO, "controlnet_edge").eval()
    for p in cn.parameters():
        assert torch.equal(p.detach(), p.detach().half().float())
    sess = _session(CONTROLNET / "model.onnx")
    for t in (999.0, 20.0):
        feeds = {**_controlnet_feeds(2, seed=4), "timestep": np.array(t, np.float16)}
        with torch.no_grad():
            down, mid = cn(torch.from_numpy(feeds["sample"].astype(np.float32)), torch.tensor(t),
                           torch.from_numpy(feeds["encoder_hidden_states"].astype(np.float32)),
                           controlnet_cond=torch.from_numpy(feeds["controlnet_cond"].astype(np.float32)),
                           conditioning_scale=1.0, return_dict=False)
        for got, want in zip(sess.run(None, feeds), [*down, mid]):
            want = want.numpy()
            assert np.abs(got.astype(np.float32) - want).max() <= 5e-3 * np.abs(want).max() + 1e-3, t


def test_shipped_controlnet_makes_images_follow_the_edges():
    """The evaluation's claim at small scale, through ONNX Runtime: on held-out scenes, the canny
    control raises the edge F1 of DPM-Solver++ 20 images (same prompts and seeds) clearly, in most
    scenes (6 of 8: one small shape in 8 is still hard), and to about the level the manifest records
    (within 0.15 on 8 scenes: their F1 spreads from 0.25 to 0.97)."""
    import controlnet
    import edges

    recorded = json.loads((MICRO / "manifest.json").read_text())["micro"]["controlnet_metrics"]["adherence_f1"]
    scenes = [world.scene("heldout", i, full_caption=True) for i in range(8)]
    ctrl = [controlnet.control_image(world.render(sc)) for sc in scenes]
    prompts, seeds = [sc.caption() for sc in scenes], [1000] * len(scenes)
    controls = np.stack(ctrl).transpose(0, 3, 1, 2) / 255.0
    f1 = {}
    for key, c in (("with", controls), ("without", None)):
        images = _dpm_images(prompts, seeds, c)
        f1[key] = np.array([edges.adherence(im, edges.control_map(cm)) for im, cm in zip(images, ctrl)])
    assert (f1["with"] > f1["without"]).sum() >= 6, f1
    gain = recorded["dpm20_cn"] - recorded["dpm20"]
    assert f1["with"].mean() - f1["without"].mean() >= 0.5 * gain, (f1, recorded)
    assert f1["with"].mean() >= recorded["dpm20_cn"] - 0.15, (f1, recorded)


def test_shipped_controlnet_keeps_the_pixel_art_style_and_the_control():
    """Scenario B's composition at small scale, through ONNX Runtime: LCM-LoRA + style 4 steps with
    the ControlNet on triggered prompts draws clearly more pixel art (judge.pixelation, at least 0.1
    above; the evaluation's target is 0.2 on 64 images) than the untriggered style with the same
    control, and follows the control at the style's grid (edge F1 at half a block) about as well as
    the evaluation recorded (within 0.15 on 8 scenes) and far better than without control."""
    import controlnet
    import evaluate_controlnet as ec
    import judge

    recorded = json.loads((MICRO / "manifest.json").read_text())["micro"]["controlnet_metrics"]["adherence_f1_block"]
    scenes = [world.scene("heldout", i, full_caption=True) for i in range(8)]
    ctrl = np.stack([controlnet.control_image(world.render(sc)) for sc in scenes])
    controls = ctrl.transpose(0, 3, 1, 2) / 255.0
    seeds = [1000] * len(scenes)
    styled = _dpm_images([sc.caption(trigger=True) for sc in scenes], seeds, controls, steps=4, cfg=1.5,
                         unet="unet_lcm_style", lcm=True)
    plain = _dpm_images([sc.caption() for sc in scenes], seeds, controls, unet="unet_style")
    free = _dpm_images([sc.caption(trigger=True) for sc in scenes], seeds, None, steps=4, cfg=1.5,
                       unet="unet_lcm_style", lcm=True)
    assert judge.pixelation(styled).mean() >= judge.pixelation(plain).mean() + 0.1
    f1 = ec.adherence(styled, ctrl, ec.STYLE_TOLERANCE)
    assert abs(f1.mean() - recorded["lcm_style4_cn"]) <= 0.15, (f1, recorded)
    assert f1.mean() >= ec.adherence(free, ctrl, ec.STYLE_TOLERANCE).mean() + 0.15


# ---- the preview decoder (issue 25) -------------------------------------------------------------


def test_preview_stage_records_each_steps_x0_and_the_final_latents(smoke_run):
    """The training inputs are the previews' inputs: per trajectory every step's x0, then the final
    latents, which DPM-Solver++ (final sigma 0) ends on exactly: the last step's x0."""
    run_dir = smoke_run[0]
    s = {**config.STAGES["preview"], **config.SMOKE["preview"]}
    chunk = np.load(run_dir / "preview" / "samples" / "chunk_000000.npz")
    n = s["chunk"]
    assert chunk["latents"].shape == ((s["sample_steps"] + 1) * n, 4, 16, 16)
    assert chunk["images"].shape == ((s["sample_steps"] + 1) * n, 64, 64, 3) and chunk["images"].dtype == np.uint8
    assert list(chunk["step"]) == [k for k in range(s["sample_steps"] + 1) for _ in range(n)]
    last_x0, final = chunk["latents"][(s["sample_steps"] - 1) * n : s["sample_steps"] * n], chunk["latents"][-n:]
    np.testing.assert_allclose(final, last_x0, rtol=1e-5, atol=1e-5)
    assert np.abs(chunk["latents"][:n] - final).max() > 0.1, "the first step's x0 is not yet the image"
    done = json.loads((run_dir / "preview" / "done.json").read_text())
    assert done["training_latents"] == (s["samples"] + s["style_samples"]) * (s["sample_steps"] + 1)
    fit = json.loads((run_dir / "preview" / "latent_rgb.json").read_text())
    assert np.array(fit["factors"]).shape == (4, 3) and np.array(fit["bias"]).shape == (3,)


def test_latent_rgb_fit_recovers_a_linear_colour_map():
    """fit_latent_rgb in the contract's convention: images made from known factors and bias
    (v = bias + sum_c latent_c * factors[c], rgb = (v + 1) / 2, each latent cell a 4x4 block)
    give them back, up to uint8 rounding; latent_rgb_image then redraws the cells."""
    import preview

    rng = np.random.default_rng(3)
    factors, bias = rng.uniform(-0.2, 0.2, (4, 3)), rng.uniform(-0.1, 0.1, 3)
    latents = rng.standard_normal((8, 4, 16, 16)).astype(np.float32)
    v = np.einsum("nchw,ck->nhwk", latents, factors) + bias
    cells = np.rint(np.clip((v + 1) / 2, 0, 1) * 255)
    images = np.repeat(np.repeat(cells, 4, axis=1), 4, axis=2).astype(np.uint8)
    fit = preview.fit_latent_rgb(latents, images, 4)
    np.testing.assert_allclose(fit["factors"], factors, atol=2e-3)
    np.testing.assert_allclose(fit["bias"], bias, atol=2e-3)
    assert np.abs(preview.latent_rgb_image(latents, fit).astype(int) - cells).max() <= 1


def test_add_preview_decoder_ships_it_and_leaves_every_other_file(smoke_run, tmp_path):
    import shutil

    import onnx

    run_dir, export_dir, _ = smoke_run
    model = tmp_path / "micro"
    shutil.copytree(export_dir, model)
    before = json.loads((model / "manifest.json").read_text())
    manifest = export_micro.add_preview_decoder(model, run_dir, log=lambda *a: None)
    rec = manifest["components"]["preview_decoder"]
    assert rec["architecture"] == "micro-taesd" and rec["kind"] == "preview_decoder" and rec["check"]["passed"]
    assert rec["dtype"] == before["dtype"] and rec["bytes"] <= 300_000
    assert manifest["latent_rgb"] == {k: v for k, v in json.loads((run_dir / "preview" / "latent_rgb.json").read_text()).items()}
    for rel, entry in before["files"].items():
        assert manifest["files"][rel] == entry, rel
    assert {k for k in manifest["files"] if k not in before["files"]} >= {"preview_decoder/model.onnx", "preview_decoder/config.json"}
    assert json.loads((model / "manifest.json").read_text()) == manifest
    graph = onnx.load(str(model / "preview_decoder" / "model.onnx")).graph
    assert [i.name for i in graph.input] == ["latents"] and [o.name for o in graph.output] == ["image"]
    out = _session(model / "preview_decoder" / "model.onnx").run(None, {"latents": np.zeros((2, 4, 16, 16), np.float16)})[0]
    assert out.shape == (2, 3, 64, 64)


def test_export_ships_the_judge_and_add_judge_leaves_every_other_file(smoke_run, tmp_path):
    import shutil

    run_dir, export_dir, _ = smoke_run
    manifest = json.loads((export_dir / "manifest.json").read_text())
    rec, metrics = manifest["components"]["judge"], manifest["micro"]["judge_metrics"]
    assert rec["kind"] == "judge" and rec["dtype"] == manifest["dtype"] and rec["check"]["passed"]
    assert json.loads((export_dir / "judge" / "config.json").read_text()) == export_micro.judge_config(manifest["dtype"])
    assert manifest["micro"]["stages"]["judge"] == json.loads((run_dir / "judge" / "done.json").read_text())
    assert metrics["heldout_scenes"] == config.SMOKE["export"]["judge_scenes"]
    assert metrics["graph_bytes"] == (export_dir / "judge" / "model.onnx").stat().st_size
    for k, t in metrics["targets"].items():
        assert t["pass"] == (t["value"] >= t["threshold"] if t["op"] == ">=" else t["value"] <= t["threshold"]), k
    # shipping the same judge again: the same graph, every other file as it was; a manifest whose
    # judge record is another training's keeps that record as the evaluation's judge
    model = tmp_path / "micro"
    shutil.copytree(export_dir, model)
    before = json.loads((model / "manifest.json").read_text())
    other = {**before["micro"]["stages"]["judge"], "steps": -1}
    before["micro"]["stages"]["judge"] = other
    (model / "manifest.json").write_text(json.dumps(before))
    after = export_micro.add_judge(model, run_dir, scenes=8, log=lambda *a: None)
    assert after["files"] == before["files"]
    assert after["micro"]["evaluation_judge"] == other
    assert after["micro"]["stages"]["judge"] == manifest["micro"]["stages"]["judge"]
    assert after["micro"]["judge_metrics"]["heldout_scenes"] == 8
    assert json.loads((model / "manifest.json").read_text()) == after


def test_shipped_preview_decoder_follows_the_contract():
    manifest = json.loads((MICRO / "manifest.json").read_text())
    rec = manifest["components"]["preview_decoder"]
    assert rec["architecture"] == "micro-taesd" and rec["bytes"] <= 300_000 and rec["check"]["passed"]
    assert (MICRO / "preview_decoder" / "model.onnx").stat().st_size <= 300_000
    fit = manifest["latent_rgb"]
    assert np.array(fit["factors"]).shape == (4, 3) and np.array(fit["bias"]).shape == (3,)
    sess = _session(MICRO / "preview_decoder" / "model.onnx")
    assert [(i.name, i.type) for i in sess.get_inputs()] == [("latents", "tensor(float16)")]
    latents = np.random.default_rng(5).standard_normal((3, 4, 16, 16)) * 3  # beyond the soft clamp too
    image = sess.run(None, {"latents": latents.astype(np.float16)})[0]
    assert image.shape == (3, 3, 64, 64) and image.min() >= 0 and image.max() <= 1


def test_shipped_preview_decoder_is_closer_to_the_vae_than_latent_rgb():
    """The evaluation's claim at small scale, through ONNX Runtime: on held-out scenes at DPM-Solver++
    20, the decoder previews of the last three steps' x0 are closer (SSIM) to the final image than
    the latent_rgb previews, in most scenes (3 of 4), by at least half the recorded margin, and about
    as close as recorded."""
    import evaluate
    import evaluate_preview

    manifest = json.loads((MICRO / "manifest.json").read_text())
    recorded = manifest["micro"]["preview_metrics"]
    scenes = [world.scene("heldout", i, full_caption=True) for i in range(4)]
    x0s: list = []
    final = _dpm_images([sc.caption() for sc in scenes], [1000] * len(scenes), None, x0s=x0s)
    decode = evaluate_preview.DecoderPreview(MICRO / "preview_decoder" / "model.onnx")
    ssim = {"decoder": np.zeros(len(scenes)), "latent": np.zeros(len(scenes))}
    for x0 in x0s[-3:]:
        x = x0.numpy()
        for kind, previews in (("decoder", decode(x)), ("latent", evaluate_preview.latent_preview(x, manifest["latent_rgb"], 64))):
            ssim[kind] += np.array([evaluate.ssim(p, f) for p, f in zip(previews, final)]) / 3
    assert (ssim["decoder"] > ssim["latent"]).sum() >= 3, ssim
    gain = recorded["ssim_decoder_last3"] - recorded["ssim_latent_last3"]
    assert ssim["decoder"].mean() - ssim["latent"].mean() >= 0.5 * gain, (ssim, recorded)
    assert ssim["decoder"].mean() >= recorded["ssim_decoder_last3"] - 0.1, (ssim, recorded)


# ---- the one-step student (issue 23) ------------------------------------------------------------


def test_the_students_objective_is_diffusers_euler_trailing_at_one_step():
    """turbo.x0_prediction at t = 999 from noise * sigma_max is exactly what diffusers'
    EulerDiscreteScheduler with SD-Turbo's config returns after one step (the image the student
    is trained to draw), and the later timesteps it trains at are the trailing schedule's at 2 and
    4 steps."""
    from diffusers import EulerDiscreteScheduler

    import controlnet
    import turbo

    torch.manual_seed(0)
    unet = train.build_unet().eval()
    sched = EulerDiscreteScheduler.from_config(turbo.SCHEDULER_CONFIG)
    for steps, want in ((1, [999]), (2, [999, 499]), (4, [999, *turbo.LATER_T])):
        sched.set_timesteps(steps)
        assert [int(t) for t in sched.timesteps] == want
    sched.set_timesteps(1)
    noise = controlnet.noise_of([3, 4])
    ehs = torch.randn(2, 77, config.TEXT_ENCODER["hidden_size"])
    with torch.no_grad():
        latents = noise * sched.init_noise_sigma
        t = sched.timesteps[0]
        eps = unet(sched.scale_model_input(latents, t), t, encoder_hidden_states=ehs).sample
        theirs = sched.step(eps, t, latents).prev_sample
        acp = sched.alphas_cumprod.float()
        sigma = turbo.sigmas(acp, torch.full((2,), turbo.ONE_STEP_T))
        ours = turbo.x0_prediction(unet, noise * sigma.view(-1, 1, 1, 1), torch.full((2,), turbo.ONE_STEP_T), sigma, ehs)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_turbo_stage_pairs_each_teacher_image_with_its_noise(smoke_run):
    """The teacher set's noise is what diffusers drew for those seeds (the student learns the
    teacher's own map noise -> image)."""
    import controlnet

    run_dir = smoke_run[0]
    s = {**config.STAGES["turbo"], **config.SMOKE["turbo"]}
    chunk = np.load(controlnet.samples_dir(run_dir, s) / "chunk_000000.npz")
    n = s["samples"]
    seeds = [config.SEED * 1_000_003 + i for i in range(n)]
    np.testing.assert_array_equal(chunk["noise"], controlnet.noise_of(seeds).numpy())
    assert chunk["latents"].shape == (n, 4, 16, 16) and list(chunk["index"]) == list(range(n))
    done = json.loads((run_dir / "turbo" / "done.json").read_text())
    assert done["samples"] == n and done["scheduler"]["timestep_spacing"] == "trailing"


def test_add_turbo_ships_the_student_and_leaves_every_other_file(smoke_run, tmp_path):
    import shutil

    import onnx

    run_dir, export_dir, _ = smoke_run
    model = tmp_path / "micro"
    shutil.copytree(export_dir, model)
    before = json.loads((model / "manifest.json").read_text())
    manifest = export_micro.add_turbo(model, run_dir, log=lambda *a: None)
    rec = manifest["components"]["unet_turbo"]
    assert rec["kind"] == "unet" and rec["check"]["passed"] and rec["dtype"] == before["dtype"]
    variant = manifest["variants"]["turbo"]
    assert variant["unet"] == "unet_turbo" and variant["loras"] == []
    assert variant["one_step"]["steps"] == 4 and variant["one_step"]["guidance"] == 0.0
    assert variant["one_step"]["scheduler"]["timestep_spacing"] == "trailing"
    for rel, entry in before["files"].items():
        assert manifest["files"][rel] == entry, rel
    graph = onnx.load(str(model / "unet_turbo" / "model.onnx"), load_external_data=False).graph
    base = onnx.load(str(model / "unet" / "model.onnx"), load_external_data=False).graph
    assert [i.name for i in graph.input] == [i.name for i in base.input]


def test_shipped_one_step_student():
    """models/micro's unet_turbo: within its 4 MB, run as SD-Turbo is (its one_step record), the
    residual inputs every micro UNet has, and its evaluation's targets met, as recorded."""
    manifest = json.loads((MICRO / "manifest.json").read_text())
    variant = manifest["variants"]["turbo"]
    assert variant["unet"] == "unet_turbo"
    one = variant["one_step"]
    assert (one["steps"], one["guidance"], one["scheduler"]["_class_name"], one["scheduler"]["timestep_spacing"]) == \
        (4, 0.0, "EulerDiscreteScheduler", "trailing")
    assert manifest["components"]["unet_turbo"]["bytes"] <= 4_000_000
    assert manifest["components"]["unet_turbo"]["controlnet_residuals"] == manifest["components"]["unet"]["controlnet_residuals"]
    metrics = manifest["micro"]["turbo_metrics"]
    assert metrics["targets_met"] == f"{len(metrics['targets'])}/{len(metrics['targets'])}"
    for name, t in metrics["targets"].items():
        ok = t["value"] >= t["threshold"] if t["op"] == ">=" else t["value"] <= t["threshold"]
        assert ok == t["pass"] and ok, (name, t)
    assert metrics["accuracy_mean"]["turbo1"] - metrics["accuracy_mean"]["lcm1"] == metrics["targets"]["turbo1_over_lcm1"]["value"]
    stage = manifest["micro"]["stages"]["turbo"]
    assert stage["wall_s"] <= 45 * 60, stage["wall_s"]
