"""models/export.py on SD 2.x / SD-Turbo structure (no network): the family it records, the
text encoder and tokenizer it writes, and models/tiny_turbo as what the exporter makes.

Diffusers parity of the exported folder is tests/turbo.rs (fixtures: tests/fixtures/make_turbo_fixtures.py).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
sys.path.insert(0, str(MODELS))

import export  # noqa: E402
import make_tiny  # noqa: E402
import make_tiny_turbo  # noqa: E402


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def config_folder(tmp_path: Path, name: str, text: dict, unet: dict, scheduler: str) -> Path:
    folder = tmp_path / name
    for rel, value in (("text_encoder/config.json", json.dumps(text)), ("unet/config.json", json.dumps(unet)),
                       ("scheduler/scheduler_config.json", scheduler)):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(value)
    return folder


SD2_PNDM = make_tiny.SD15_SCHEDULER_CONFIG  # SD 2.x's own config is PNDM without spacing too


@pytest.mark.parametrize(
    "text, unet, scheduler, source, family",
    [
        ({"hidden_size": 768}, {"use_linear_projection": False}, make_tiny.SD15_SCHEDULER_CONFIG, None, "sd15"),
        (make_tiny.TEXT_ENCODER_CONFIG, make_tiny.UNET_CONFIG, make_tiny.SD15_SCHEDULER_CONFIG, None, "sd15"),
        ({"hidden_size": 1024}, {"use_linear_projection": True}, SD2_PNDM, None, "sd2"),
        ({"hidden_size": 1024}, {}, SD2_PNDM, None, "sd2"),
        ({"hidden_size": 1024}, {"use_linear_projection": True}, make_tiny_turbo.TURBO_SCHEDULER_CONFIG, None, "sd-turbo"),
        (make_tiny_turbo.TEXT_ENCODER_CONFIG, make_tiny_turbo.UNET_CONFIG, make_tiny_turbo.TURBO_SCHEDULER_CONFIG, None,
         "sd-turbo"),
        # Euler trailing on SD v1.5's structure is SD v1.5 with another scheduler, not a turbo model.
        ({"hidden_size": 768}, {}, make_tiny_turbo.TURBO_SCHEDULER_CONFIG, None, "sd15"),
        # A known hub id decides.
        ({"hidden_size": 1024}, {"use_linear_projection": True}, SD2_PNDM, "stabilityai/sd-turbo", "sd-turbo"),
        ({"hidden_size": 1024}, {"use_linear_projection": True}, SD2_PNDM, "stabilityai/stable-diffusion-2-1-base", "sd2"),
    ],
)
def test_family_is_read_from_the_configs_and_known_hub_ids(tmp_path, text, unet, scheduler, source, family):
    folder = config_folder(tmp_path, "m", text, unet, scheduler)
    got, evidence = export.model_family(folder, source)
    assert got == family, evidence
    assert any("scheduler" in e for e in evidence)
    if source:
        assert any(source in e for e in evidence)


@pytest.fixture(scope="module")
def turbo_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("turbo") / "pipeline"
    make_tiny_turbo.make_diffusers_folder(folder)
    return folder


def test_export_cli_records_sd_turbo_and_fuses_no_sd15_loras(turbo_folder, tmp_path):
    """`export.py --model <sd-turbo folder>` with no --lora: SD v1.5's default LoRAs would be
    downloaded (no network here: an error) and would not fit; none are fused."""
    out = tmp_path / "out"
    assert export.main(["--model", str(turbo_folder), "--out", str(out), "--no-verify"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["family"] == "sd-turbo"
    assert manifest["loras"] == {} and list(manifest["variants"]) == ["base"]
    assert manifest["text_encoder"]["output"] == "last_hidden_state"
    assert (manifest["text_encoder"]["pad_token"], manifest["text_encoder"]["pad_token_id"]) == ("!", 0)
    assert manifest["text_encoder"]["hidden_size"] == manifest["geometry"]["cross_attention_dim"] == 8
    # The tokenizer and scheduler files as the pipeline has them, byte for byte.
    for rel in ("tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json", "tokenizer/vocab.json",
                "tokenizer/merges.txt", "scheduler/scheduler_config.json"):
        assert sha256(out / rel) == sha256(turbo_folder / rel), rel
    assert not (out / "tokenizer" / "tokenizer.json").exists()


def test_tiny_turbo_model_is_what_the_exporter_makes(tmp_path):
    """models/tiny_turbo is produced by this exporter: regenerating it gives the committed files."""
    make_tiny_turbo.export_all(tmp_path / "tt", verify=False, log=lambda *a: None)
    fresh = json.loads((tmp_path / "tt" / "manifest.json").read_text())
    committed = json.loads((MODELS / "tiny_turbo" / "manifest.json").read_text())
    for key in ("files", "family", "family_evidence", "text_encoder", "geometry"):
        assert fresh[key] == committed[key], key
    for rel, rec in committed["files"].items():
        assert sha256(MODELS / "tiny_turbo" / rel) == rec["sha256"], rel
    assert sum(p.stat().st_size for p in (MODELS / "tiny_turbo").rglob("*") if p.is_file() and not p.is_symlink()) < 3_000_000
