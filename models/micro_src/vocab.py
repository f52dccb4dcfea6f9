"""The micro model's vocabulary: the real CLIP tokenizer, trimmed to what the grammar uses.

Why and how. A CLIPTextModel indexes its embedding table with CLIP's own ids, and speedscape's
Rust side (core/src/models/tokenizer.rs) loads `tokenizer.json` and insists that `<|startoftext|>` is
49406 and `<|endoftext|>` 49407. So ids cannot be renumbered: the grammar's words keep their
CLIP ids. Two things are trimmed instead:

1. The tokenizer files (5 MB for CLIP): `trim_tokenizer` keeps the 512 byte-level base tokens
   (so any prompt still tokenizes), the two special tokens, and only the BPE merges (in CLIP's
   order) that the grammar's words use, with their products. BPE picks the lowest-ranked merge
   present, so a subset that holds every merge a word needs, in the original order, gives that
   word exactly CLIP's tokens; `check_same_ids` verifies it on every grammar text. Words outside
   the grammar come out as other (byte-level) tokens, which the text encoder maps to its unknown
   row anyway.
2. The text encoder's 49408 x 64 embedding (12.6 MB in fp32): during training it stays a plain
   CLIPTextModel; before saving, `tie_unused_rows` sets every row the grammar never uses to zero,
   and after the export `trim_onnx_embedding` replaces the ONNX graph's Gather on the table by a
   Gather on a small table (the kept rows + one zero row) through a uint8 id -> row map (49 KB).
   The trimmed graph computes exactly what the saved torch model computes, for every id.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

CLIP_BOS, CLIP_EOS = 49406, 49407
VOCAB_SIZE = 49408
BASE_TOKENS = 512  # CLIP's byte-level alphabet: 256 bytes, then the same 256 with "</w>"
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json")


def _load(src: Path) -> dict:
    return json.loads((Path(src) / "tokenizer.json").read_text())


def _bpe_merges_used(word: str, ranks: dict, suffix: str) -> list[tuple[str, str]]:
    """The merges CLIP's BPE applies to one pre-tokenized word, in order."""
    parts = list(word[:-1]) + [word[-1] + suffix]
    used = []
    while len(parts) > 1:
        best, best_rank = None, None
        for i in range(len(parts) - 1):
            r = ranks.get((parts[i], parts[i + 1]))
            if r is not None and (best_rank is None or r < best_rank):
                best, best_rank = i, r
        if best is None:
            break
        pair = (parts[best], parts[best + 1])
        used.append(pair)
        merged, i = [], 0
        while i < len(parts):  # merge every occurrence of the pair, as BPE does
            if i < len(parts) - 1 and (parts[i], parts[i + 1]) == pair:
                merged.append(parts[i] + parts[i + 1])
                i += 2
            else:
                merged.append(parts[i])
                i += 1
        parts = merged
    return used


def trim_tokenizer(src: Path, dst: Path, texts: list[str]) -> dict:
    """Write a trimmed copy of the CLIP tokenizer in `src` to `dst`; returns {kept tokens, merges}."""
    from tokenizers import Tokenizer

    src, dst = Path(src), Path(dst)
    data = _load(src)
    model = data["model"]
    suffix = model["end_of_word_suffix"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    ranks = {m: i for i, m in enumerate(merges)}
    tok = Tokenizer.from_file(str(src / "tokenizer.json"))
    used = set()
    for text in texts:
        normal = tok.normalizer.normalize_str(text)
        for word, _ in tok.pre_tokenizer.pre_tokenize_str(normal):
            used.update(_bpe_merges_used(word, ranks, suffix))
    kept_merges = [m for m in merges if m in used]
    vocab = model["vocab"]
    keep = {t for t, i in vocab.items() if i < BASE_TOKENS}
    keep |= {a + b for a, b in kept_merges}
    keep |= {"<|startoftext|>", "<|endoftext|>"}
    new_vocab = {t: i for t, i in sorted(vocab.items(), key=lambda kv: kv[1]) if t in keep}
    model["vocab"] = new_vocab
    model["merges"] = [list(m) for m in kept_merges]
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    (dst / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n")
    (dst / "vocab.json").write_text(json.dumps(new_vocab, ensure_ascii=False) + "\n")
    (dst / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in kept_merges))
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        shutil.copyfile(src / name, dst / name)
    (dst / "README.md").write_text(
        "# Tokenizer (trimmed CLIP)\n\n"
        "CLIP's BPE tokenizer (openai/clip-vit-large-patch14, as SD v1.5 ships it; MIT licence, see\n"
        "models/tiny/tokenizer/README.md for the notice), trimmed by models/micro_src/vocab.py to the\n"
        f"{BASE_TOKENS} byte-level base tokens, the two special tokens and the "
        f"{len(kept_merges)} merges the micro\n"
        "model's grammar uses. Ids are CLIP's own: the grammar's captions tokenize exactly as with the\n"
        "full tokenizer (checked on every export); other words fall back to byte-level tokens.\n"
    )
    check_same_ids(src, dst, texts)
    return {"tokens": len(new_vocab), "merges": len(kept_merges)}


def check_same_ids(full: Path, trimmed: Path, texts: list[str]) -> None:
    from tokenizers import Tokenizer

    a = Tokenizer.from_file(str(Path(full) / "tokenizer.json"))
    b = Tokenizer.from_file(str(Path(trimmed) / "tokenizer.json"))
    for text in texts:
        ia, ib = a.encode(text).ids, b.encode(text).ids
        if ia != ib:
            raise RuntimeError(f"trimmed tokenizer differs on {text!r}: {ib} != CLIP's {ia}")


def used_ids(tokenizer_dir: Path, texts: list[str]) -> list[int]:
    """Sorted CLIP ids the texts use, BOS and EOS included."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(tokenizer_dir) / "tokenizer.json"))
    ids = {CLIP_BOS, CLIP_EOS}
    for text in texts:
        ids.update(tok.encode(text).ids)
    return sorted(ids)


def tie_unused_rows(text_encoder, keep_ids: list[int]) -> None:
    """Zero every token-embedding row not in `keep_ids` (in place)."""
    import torch

    emb = text_encoder.get_input_embeddings().weight
    mask = torch.ones(emb.shape[0], dtype=torch.bool)
    mask[torch.tensor(keep_ids)] = False
    with torch.no_grad():
        emb[mask] = 0.0


def trim_onnx_embedding(path: Path, keep_ids: list[int]) -> dict:
    """Rewrite an exported CLIP text encoder so its token table holds only `keep_ids` (+ a zero
    row for every other id). Returns {rows, bytes_before, bytes_after}."""
    import onnx
    from onnx import helper, numpy_helper

    path = Path(path)
    before = path.stat().st_size
    model = onnx.load(str(path))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    table = None
    for node in graph.node:
        if node.op_type == "Gather" and node.input[0] in inits and list(inits[node.input[0]].dims)[:1] == [VOCAB_SIZE]:
            table = node
            break
    if table is None:
        raise RuntimeError(f"{path}: no Gather on a [{VOCAB_SIZE}, hidden] token table")
    full = numpy_helper.to_array(inits[table.input[0]])
    rows = np.concatenate([full[keep_ids], np.zeros((1, full.shape[1]), dtype=full.dtype)])
    unk = len(keep_ids)
    if unk > 255:
        raise RuntimeError(f"{len(keep_ids)} kept ids do not fit a uint8 map")
    remap = np.full(VOCAB_SIZE, unk, dtype=np.uint8)
    remap[keep_ids] = np.arange(len(keep_ids), dtype=np.uint8)
    name = table.input[0]
    graph.initializer.remove(inits[name])
    graph.initializer.extend([
        numpy_helper.from_array(rows, name + "_trimmed"),
        numpy_helper.from_array(remap, "token_row_of_id"),
    ])
    ids_in = table.input[1]
    row_u8, row = ids_in + "_row_u8", ids_in + "_row"
    idx = list(graph.node).index(table)
    graph.node.insert(idx, helper.make_node("Cast", [row_u8], [row], to=onnx.TensorProto.INT64, name="token_row_cast"))
    graph.node.insert(idx, helper.make_node("Gather", ["token_row_of_id", ids_in], [row_u8], axis=0, name="token_row_gather"))
    table.input[0] = name + "_trimmed"
    table.input[1] = row
    onnx.save_model(model, str(path))
    onnx.checker.check_model(str(path))
    return {"rows": int(rows.shape[0]), "bytes_before": before, "bytes_after": path.stat().st_size}
