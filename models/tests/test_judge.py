"""Tests of the micro judge as it ships (issue 22: models/micro/judge/, export_micro.ship_judge,
evaluate_judge.py) and of the micro prompt set (assets/prompts/micro.txt, prompt_set.py).

- the export: a random-init Judge through export_micro.export_judge_graph, ONNX Runtime against
  torch (fp32: logits within 1e-4; the batch axis dynamic; the evaluation's torch accuracy the
  judge's own `predict`'s);
- the committed judge: it reads held-out renders (rendered here, plain and as 4x4-block pixel art)
  at the accuracies its manifest targets say, and its recorded evaluation passes them;
- config.json: written by judge_config, the labels world.py's, the outputs the graph's, its prompt
  pattern reading every prompt of the prompt set as the scene it names;
- the prompt set: the committed file is prompt_set.py's output, every combination once.

    .venv-ref/bin/python -m pytest -q -p no:cacheprovider models/tests/test_judge.py
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

import evaluate_judge  # noqa: E402
import export  # noqa: E402
import export_micro  # noqa: E402
import judge  # noqa: E402
import prompt_set  # noqa: E402
import world  # noqa: E402

torch.set_num_threads(1)

MICRO = ROOT / "models" / "micro"
JUDGE = MICRO / export_micro.JUDGE_FOLDER
PROMPTS = ROOT / "assets" / "prompts" / "micro.txt"
FP32_TOL = 1e-4  # ONNX Runtime vs torch, float32 logits
HELDOUT = 360  # three balanced epochs of the 120 combinations


def _manifest() -> dict:
    return json.loads((MICRO / "manifest.json").read_text())


def _prompts() -> list[str]:
    return [line for line in PROMPTS.read_text().splitlines() if line and not line.startswith("#")]


# ---- the export ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_export(tmp_path_factory):
    torch.manual_seed(22)
    model = judge.Judge().eval()
    folder = tmp_path_factory.mktemp("judge") / export_micro.JUDGE_FOLDER
    rec = export_micro.export_judge_graph(model, folder, export.Settings(dtype="fp32", check_threads=1))
    return model, folder, rec


def test_export_of_a_random_judge_gives_torchs_logits(random_export):
    model, folder, rec = random_export
    assert rec["check"]["passed"] and rec["dtype"] == "fp32" and rec["architecture"] == "micro-judge"
    graph = evaluate_judge.GraphJudge(folder / "model.onnx")
    assert graph.dtype == np.float32
    data = evaluate_judge.heldout_set(12)
    noise = np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    for images in (data["plain"], data["pixel_art"][:1], noise):  # batches of 12, 1 and 5: the batch axis is dynamic
        got, ref = graph.logits(images), evaluate_judge.torch_logits(model, images)
        assert {k: v.shape for k, v in got.items()} == {k: (len(images), n) for k, n in judge.HEADS.items()}
        for k in judge.HEADS:
            np.testing.assert_allclose(got[k], ref[k], rtol=0, atol=FP32_TOL, err_msg=k)


def test_evaluation_compares_the_graph_with_the_judges_own_predictions(random_export):
    model, folder, _ = random_export
    s = {"scenes": 24, "batch": 10}
    m = evaluate_judge.evaluate(model, folder / "model.onnx", s, log=lambda *a: None)
    data = evaluate_judge.heldout_set(24)
    for name in evaluate_judge.SETS:
        assert m[name]["accuracy_torch"] == judge.accuracy(judge.predict(model, data[name]), data["labels"])
        assert m[name]["argmax_agreement"] == 1.0 and m[name]["logit_max_abs_diff"] <= FP32_TOL
    assert m["targets"]["logit_max_rel_diff"]["threshold"] == export.TOLERANCE["fp32"]
    for k, t in m["targets"].items():
        assert t["pass"] == (t["value"] >= t["threshold"] if t["op"] == ">=" else t["value"] <= t["threshold"]), k


# ---- the committed judge -------------------------------------------------------------------------


def test_committed_judge_reads_heldout_renders_at_its_targets():
    metrics = _manifest()["micro"]["judge_metrics"]
    targets = metrics["targets"]
    assert metrics["targets_met"] == f"{len(targets)}/{len(targets)}", metrics["targets_met"]
    assert all(t["pass"] for t in targets.values())
    graph = evaluate_judge.GraphJudge(JUDGE / "model.onnx")
    data = evaluate_judge.heldout_set(HELDOUT)
    for name in evaluate_judge.SETS:
        acc = judge.accuracy(evaluate_judge.predicted(graph.logits(data[name])), data["labels"])
        for head, value in acc.items():
            assert value >= targets[f"{name}_{head}"]["threshold"], (name, head, value)


def test_committed_judge_is_recorded():
    manifest = _manifest()
    rec = manifest["components"]["judge"]
    entry = manifest["files"]["judge/model.onnx"]
    assert (rec["kind"], rec["dtype"], rec["bytes"]) == ("judge", manifest["dtype"], export.folder_bytes(JUDGE))
    assert rec["check"]["passed"] and entry["bytes"] == (JUDGE / "model.onnx").stat().st_size
    stage = manifest["micro"]["stages"]["judge"]
    assert stage["steps"] > 0 and stage["settings"]["budget_s"] > 0
    assert manifest["micro"]["judge_metrics"]["graph_bytes"] == entry["bytes"]


# ---- config.json -------------------------------------------------------------------------------


def test_config_is_the_exporters_and_names_worlds_labels():
    import onnxruntime as ort

    cfg = json.loads((JUDGE / "config.json").read_text())
    assert cfg == export_micro.judge_config(_manifest()["dtype"])
    assert [o["name"] for o in cfg["outputs"]] == ["colour", "shape", "background"]
    labels = {o["name"]: o["labels"] for o in cfg["outputs"]}
    assert labels == {"colour": list(world.COLOUR_NAMES), "shape": list(world.SHAPES), "background": list(world.COLOUR_NAMES)}
    sess = ort.InferenceSession(str(JUDGE / "model.onnx"), providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    assert (inp.name, inp.type, inp.shape) == (cfg["input"]["name"], f"tensor({cfg['input']['dtype']})", cfg["input"]["shape"])
    assert [(o.name, o.shape) for o in sess.get_outputs()] == [(o["name"], o["shape"]) for o in cfg["outputs"]]


def test_config_pattern_reads_what_each_prompt_names():
    cfg = json.loads((JUDGE / "config.json").read_text())
    pattern = re.compile(cfg["prompt"]["pattern"])
    example = cfg["prompt"]["example"]
    assert pattern.search(example["prompt"]).groupdict() == {k: example[k] for k in judge.HEADS}
    scenes = prompt_set.scenes() + [world.scene("train", i) for i in range(240)]  # short captions too
    for sc in scenes:
        for caption in (sc.caption(), sc.caption(trigger=True)):
            assert pattern.search(caption).groupdict() == {"colour": sc.colour, "shape": sc.shape, "background": sc.background}


# ---- the prompt set ------------------------------------------------------------------------------


def test_prompt_set_is_the_scripts_output(tmp_path):
    out = tmp_path / "micro.txt"
    assert prompt_set.main(["--out", str(out)]) == 0
    assert PROMPTS.read_text() == out.read_text()
    header = [line for line in PROMPTS.read_text().splitlines() if line.startswith("#")]
    assert len(header) == 2 and prompt_set.COMMAND in header[1]


def test_prompt_set_covers_every_combination_once_in_world_captions():
    prompts = _prompts()
    named = [tuple(judge.read_prompt(p).values()) for p in prompts]
    assert len(named) == len(set(named)) == len(world.COMBOS) and set(named) == set(world.COMBOS)
    full = re.compile(
        rf"a ({'|'.join(world.SIZE_NAMES)}) \w+ \w+ ({'|'.join(world.POSITION_NAMES)}) on a \w+ background( at sunset)?")
    assert all(full.fullmatch(p) for p in prompts), [p for p in prompts if not full.fullmatch(p)][:3]
    sunset = sum(p.endswith(" at sunset") for p in prompts) / len(prompts)
    assert abs(sunset - world.P_SUNSET) < 0.15, sunset
