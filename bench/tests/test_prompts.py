"""assets/prompts/sd15.txt, the SD v1.5 prompt set (`speedscape sweep --prompts`): read as
speedscape reads a plain-text set (blank lines and lines starting with # skipped), it holds at
least 50 distinct prompts, says what it is and its licence, spans the subjects and styles it
claims, and every prompt fits CLIP's 77 tokens (SD v1.5's tokenizer, models/tiny/tokenizer/,
counting the start and end tokens) so none is truncated."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweep_equal import REPO

SET = REPO / "assets" / "prompts" / "sd15.txt"
TOKENIZER = REPO / "models" / "tiny" / "tokenizer" / "tokenizer.json"


def prompts() -> list[str]:
    lines = (line.strip() for line in SET.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def test_the_set_is_big_distinct_and_licensed():
    ps = prompts()
    assert len(ps) >= 50, len(ps)
    assert len(set(p.lower() for p in ps)) == len(ps), "no prompt twice"
    assert not ps[0].startswith("{"), "plain text, not JSON Lines (speedscape tells them by the first entry)"
    header = [line for line in SET.read_text().splitlines() if line.startswith("#")]
    assert "# Written for speedscape; CC0 1.0 (public domain dedication)." in header


@pytest.mark.parametrize("words,at_least", [
    (("photo",), 8), (("oil painting",), 6), (("watercolor",), 6), (("pixel art",), 6),
    (("anime",), 5), (("3d render",), 6), (("pencil sketch",), 6),
])
def test_the_styles_are_spread(words, at_least):
    assert sum(any(w in p.lower() for w in words) for p in prompts()) >= at_least, words


def test_every_prompt_fits_clips_77_tokens():
    tokenizers = pytest.importorskip("tokenizers", reason="the bench venv has tokenizers (bench/setup.sh)")
    tok = tokenizers.Tokenizer.from_file(str(TOKENIZER))
    ids = {p: tok.encode(p).ids for p in prompts()}
    assert all(i[0] == 49406 and i[-1] == 49407 for i in ids.values()), "counted with CLIP's start and end tokens"
    lengths = {p: len(i) for p, i in ids.items()}
    too_long = {p: n for p, n in lengths.items() if n > 77}
    assert not too_long, too_long
    assert max(lengths.values()) > 10, "the lengths counted are tokens, not something trivial"
