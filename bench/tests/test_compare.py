"""bench/compare.py end to end on the tiny architecture (64², one image per contender).

Checks the table and JSON structure, that every contender drew the same image as diffusers, and
that a contender which cannot run is reported as skipped with its reason. Never speeds.

    .venv-bench/bin/python -m pytest bench/tests      (~60 s; bench/setup.sh makes the venv)

The model is made with bench/make-model.sh --size tiny into a temporary folder; that needs the
reference venv (.venv-ref, scripts/setup-ref.sh). The speedscape binary is $SPEEDSCAPE_BIN, else
target/release/speedscape, else target/debug/speedscape; without one, speedscape must show as
skipped.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from sweep_equal import speedscape_bin

REPO = Path(__file__).resolve().parents[2]
COMPARE = REPO / "bench" / "compare.py"
REF_PYTHON = REPO / ".venv-ref" / "bin" / "python"
CONTENDERS = ["speedscape", "diffusers", "optimum", "ort-python"]  # the CPU comparison's, by default


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    if not REF_PYTHON.exists():
        pytest.skip("the reference venv writes the model: run scripts/setup-ref.sh")
    out = tmp_path_factory.mktemp("bench-tiny")
    subprocess.run([str(REPO / "bench" / "make-model.sh"), str(out), "--size", "tiny", "--no-verify", "--cpu-form"],
                   check=True, capture_output=True)
    return out


def run_compare(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(COMPARE), *args], capture_output=True, text=True, timeout=600)


def test_all_contenders_on_tiny(tiny_model, tmp_path):
    binary = speedscape_bin()
    out_json = tmp_path / "compare.json"
    args = ["--model", str(tiny_model), "--sizes", "64", "--repeat", "1", "--warmup", "0", "--json", str(out_json)]
    if binary:
        args += ["--speedscape", str(binary)]
    else:
        args += ["--speedscape", str(tmp_path / "no-such-speedscape")]
    proc = run_compare(*args)
    assert proc.returncode == 0, proc.stderr[-4000:]

    report = json.loads(out_json.read_text())
    assert report["contenders"] == CONTENDERS
    assert report["repeat"] == 1 and report["warmup"] == 0
    assert report["cpu"]["logical_cores"] >= 1 and report["cpu"]["model"]
    assert [(c["setting"], c["size"]) for c in report["cells"]] == [("dpmpp", 64), ("lcm", 64)]
    assert report["versions"]["diffusers"]["torch"] and report["versions"]["ort-python"]["onnxruntime"]

    in_bench_venv = importlib.util.find_spec("optimum") is not None and binary is not None
    for cell in report["cells"]:
        assert set(cell["results"]) == set(CONTENDERS)
        for name, r in cell["results"].items():
            if r["status"] == "skipped":
                assert r["reason"] and "fix:" in r["reason"], (name, r)
                assert not in_bench_venv, f"{name} skipped in the bench venv: {r['reason']}"
                continue
            assert r["status"] == "ok", (name, r)
            t = r["total_ms"]
            assert len(t["runs"]) == 1 and t["min"] <= t["median"] <= t["max"] and t["median"] > 0
            assert r["load_ms"]["total"] > 0 and r["peak_rss_bytes"] > 10 * 2**20
            if name == "speedscape" and r.get("mode") == "bench":
                # `speedscape bench` keeps no image; tests/pipeline.rs checks speedscape's images
                # against diffusers' on these weights.
                assert "max_abs_vs_diffusers" not in r, r
            elif name != "diffusers":
                # same seed, same weights (unet_lcm = the LoRA diffusers fused): the same image
                assert r["max_abs_vs_diffusers"] < 1e-3, (name, cell["setting"], r["max_abs_vs_diffusers"])
        assert cell["results"]["diffusers"]["threads"]["torch"] >= 1
        for name in ("optimum", "ort-python"):
            r = cell["results"][name]
            if r["status"] == "ok":
                assert r["threads"]["ort_unet"]["intra_op"] == 0  # ORT's default, left alone

    table = proc.stdout
    assert table == report["table"]
    header = next(line for line in table.splitlines() if line.startswith("| setting"))
    assert header.split("|")[3:7] == [f" {c} s " for c in CONTENDERS]
    assert "vs diffusers" in header and "vs optimum" in header and "vs ort-python" in header
    rows = [line for line in table.splitlines() if line.startswith(("| dpmpp", "| lcm"))]
    assert len(rows) == 2 and all("64²" in row for row in rows)
    if cell["results"]["speedscape"]["status"] == "ok":
        ours = cell["results"]["speedscape"]["total_ms"]["median"]
        theirs = cell["results"]["diffusers"]["total_ms"]["median"]
        assert f"{theirs / ours:.2f}×" in rows[-1]


def test_missing_contenders_are_skipped_with_the_reason(tiny_model, tmp_path):
    bare = tmp_path / "bare-venv"
    venv.create(bare, with_pip=False)  # a Python without optimum (or anything else)
    proc = run_compare("--model", str(tiny_model), "--sizes", "64", "--repeat", "1", "--warmup", "0",
                       "--settings", "dpmpp", "--contenders", "speedscape,optimum",
                       "--speedscape", str(tmp_path / "no-such-speedscape"),
                       "--python", f"optimum={bare / 'bin' / 'python'}", "--json", str(tmp_path / "c.json"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((tmp_path / "c.json").read_text())["cells"][0]["results"]
    assert results["speedscape"]["status"] == "skipped" and "no-such-speedscape" in results["speedscape"]["reason"]
    assert results["optimum"]["status"] == "skipped" and "optimum" in results["optimum"]["reason"]
    assert "bench/setup.sh" in results["optimum"]["reason"]
    row = next(line for line in proc.stdout.splitlines() if line.startswith("| dpmpp"))
    assert row.count("skipped") == 2 and row.endswith("| — |")
    assert "**skipped**" in proc.stdout


def test_speedscape_runs_the_export_it_is_given(tiny_model, tmp_path):
    """--speedscape-export onnx-cpu: speedscape times the `--optimize cpu` form while the other
    ONNX contenders keep the plain export, and the table says so."""
    binary = speedscape_bin()
    if binary is None:
        pytest.skip("no speedscape binary")
    manifest = json.loads((tiny_model / "onnx-cpu" / "manifest.json").read_text())
    assert manifest["optimize"] == "cpu"
    proc = run_compare("--model", str(tiny_model), "--sizes", "64", "--repeat", "1", "--warmup", "0",
                       "--settings", "dpmpp", "--contenders", "speedscape,ort-python", "--speedscape", str(binary),
                       "--speedscape-export", "onnx-cpu", "--json", str(tmp_path / "c.json"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((tmp_path / "c.json").read_text())
    assert report["speedscape_export"] == "onnx-cpu"
    results = report["cells"][0]["results"]
    command = results["speedscape"]["command"]
    assert command[command.index("--model-dir") + 1] == str(tiny_model.resolve() / "onnx-cpu")
    assert results["ort-python"]["status"] == "ok"
    assert "speedscape runs the export `onnx-cpu/`; the other ONNX contenders run `onnx/`." in proc.stdout


def test_diffusers_compiled_draws_diffusers_image_and_reports_its_compilation(tiny_model, tmp_path):
    """diffusers-compile: torch.compile'd UNet (max-autotune, as the GPU comparison runs it), one
    warm-up forced even at --warmup 0 (the compilation, reported apart), the attention processors
    recorded for both diffusers contenders, and the same image as eager diffusers."""
    proc = run_compare("--model", str(tiny_model), "--sizes", "64", "--repeat", "1", "--warmup", "0",
                       "--settings", "dpmpp", "--contenders", "diffusers,diffusers-compile", "--json", str(tmp_path / "c.json"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((tmp_path / "c.json").read_text())
    assert report["device"] == "cpu" and report["dtype"] == "fp32"
    results = report["cells"][0]["results"]
    eager, compiled = results["diffusers"], results["diffusers-compile"]
    assert compiled["status"] == "ok", compiled
    assert compiled["info"]["compile_mode"] == "max-autotune" and "compile_mode" not in eager["info"]
    assert eager["warmup_ms"] == [] and len(compiled["warmup_ms"]) == 1
    for r in (eager, compiled):
        assert r["info"]["attention_processors"] == ["AttnProcessor2_0"], r["info"]  # SDPA
        assert r["profile"] is None  # the GPU profile is CUDA-only
    assert compiled["max_abs_vs_diffusers"] < 1e-3
    assert "torch.compile mode max-autotune: first image" in proc.stdout
    assert "attention processors AttnProcessor2_0 (fp32 on cpu)" in proc.stdout


def test_the_gpu_comparison_without_cuda_skips_each_contender_with_the_reason(tiny_model, tmp_path):
    proc = run_compare("--model", str(tiny_model), "--sizes", "64", "--repeat", "1", "--warmup", "0", "--settings", "lcm",
                       "--gpu", "--contenders", "diffusers,optimum,ort-python", "--json", str(tmp_path / "c.json"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((tmp_path / "c.json").read_text())
    assert report["device"] == "cuda" and report["dtype"] == "fp16"
    results = report["cells"][0]["results"]
    assert results["diffusers"]["status"] == "skipped" and "torch sees no CUDA device" in results["diffusers"]["reason"]
    for name in ("optimum", "ort-python"):
        assert results[name]["status"] == "skipped" and "no CUDAExecutionProvider" in results[name]["reason"], results[name]
    assert proc.stdout.startswith("# speedscape vs Python stacks — ") and ", fp16" in proc.stdout.splitlines()[0]


def test_a_missing_speedscape_export_says_how_to_make_it(tiny_model, tmp_path):
    proc = run_compare("--model", str(tiny_model), "--sizes", "64", "--speedscape-export", "onnx-nope",
                       "--speedscape", str(tmp_path / "no-such-speedscape"))
    assert proc.returncode == 2
    assert "onnx-nope" in proc.stderr and "no manifest.json" in proc.stderr and "--cpu-form" in proc.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--sizes", "60"], "not a positive multiple of 8"),
        (["--settings", "ddim"], "unknown ddim"),
        (["--contenders", "onnx"], "unknown onnx"),
        (["--python", "torch=/usr/bin/python3"], "expected CONTENDER=PATH"),
        (["--repeat", "0"], "out of range"),
        (["--gpu", "--device", "cpu"], "--gpu runs on CUDA"),
    ],
)
def test_bad_arguments_say_what_to_do(tmp_path, args, message):
    proc = run_compare("--model", str(tmp_path), *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Fix:" in proc.stderr, proc.stderr


def test_incomplete_model_folder_names_the_missing_files(tmp_path):
    proc = run_compare("--model", str(tmp_path), "--sizes", "64")
    assert proc.returncode == 2
    assert "manifest.json" in proc.stderr and "bench/make-model.sh" in proc.stderr
