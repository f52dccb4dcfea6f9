//! SD v1.5's CLIP tokenizer, through the `tokenizers` crate.
//!
//! SD's rules: 77 ids, `<|startoftext|>` (49406) first, `<|endoftext|>` (49407) after the
//! prompt and as padding, no attention mask. A prompt over 75 tokens is cut to its first 75.
//! Known limit: Python's slow `CLIPTokenizer` runs `ftfy.fix_text` first (curly quotes,
//! ligatures, full-width characters, HTML entities); `tokenizer.json` applies only NFC,
//! whitespace collapsing and lowercasing, so such prompts can tokenize differently.

use std::path::Path;

use color_eyre::eyre::{WrapErr, eyre};
use serde::Serialize;

/// Length of SD v1.5's text-encoder input.
pub const MAX_LENGTH: usize = 77;
/// CLIP's `<|startoftext|>`.
pub const BOS: u32 = 49406;
/// CLIP's `<|endoftext|>`, also SD's padding.
pub const EOS: u32 = 49407;

/// A prompt as the text encoder sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tokens {
    /// Exactly 77 ids: BOS, up to 75 prompt tokens, EOS, EOS padding.
    pub ids: Vec<u32>,
    /// Prompt tokens kept (0..=75), without BOS/EOS.
    pub count: usize,
    /// Prompt tokens dropped by truncation.
    pub dropped: usize,
}

impl Tokens {
    pub fn ids_i64(&self) -> Vec<i64> {
        self.ids.iter().map(|&i| i64::from(i)).collect()
    }

    /// The warning to show when the prompt was truncated.
    pub fn truncation_warning(&self) -> Option<String> {
        (self.dropped > 0).then(|| {
            format!(
                "prompt is {} CLIP tokens; SD v1.5 reads at most {}, so the last {} were dropped",
                self.count + self.dropped,
                MAX_LENGTH - 2,
                self.dropped
            )
        })
    }
}

pub struct ClipTokenizer {
    inner: tokenizers::Tokenizer,
}

impl ClipTokenizer {
    /// Loads `tokenizer.json` from `dir`, else builds the same tokenizer from
    /// `vocab.json` + `merges.txt` (the files transformers' slow tokenizer uses).
    pub fn from_dir(dir: &Path) -> color_eyre::Result<Self> {
        let json = dir.join("tokenizer.json");
        let inner = if json.is_file() {
            tokenizers::Tokenizer::from_file(&json).map_err(|e| {
                eyre!(
                    "tokenizer {} is not a valid tokenizers JSON file: {e}\nFix: re-export the model, or delete it so vocab.json + merges.txt are used",
                    json.display()
                )
            })?
        } else {
            let vocab = dir.join("vocab.json");
            let merges = dir.join("merges.txt");
            let missing: Vec<&str> = [(&vocab, "vocab.json"), (&merges, "merges.txt")]
                .into_iter()
                .filter(|(p, _)| !p.is_file())
                .map(|(_, n)| n)
                .collect();
            if !missing.is_empty() {
                let found = if !dir.is_dir() {
                    "the folder does not exist".to_string()
                } else {
                    format!("no tokenizer.json, and no {}", missing.join(" or "))
                };
                return Err(eyre!(
                    "no tokenizer in {}: {found} (it needs tokenizer.json, or vocab.json and merges.txt)\nFix: copy the tokenizer/ folder of SD v1.5 (or openai/clip-vit-large-patch14) there",
                    dir.display()
                ));
            }
            from_vocab_and_merges(&vocab, &merges)?
        };
        // SD v1.5's text encoder was trained on these ids: another vocabulary would run and
        // draw nonsense.
        for (token, id) in [("<|startoftext|>", BOS), ("<|endoftext|>", EOS)] {
            let got = inner.token_to_id(token);
            if got != Some(id) {
                return Err(eyre!(
                    "the tokenizer in {} is not CLIP's: {token} is {}, SD v1.5's text encoder expects id {id}\nFix: copy the tokenizer/ folder of SD v1.5 (or openai/clip-vit-large-patch14) there",
                    dir.display(),
                    got.map_or("missing".to_string(), |g| format!("id {g}"))
                ));
            }
        }
        Ok(Self { inner })
    }

    /// SD v1.5's 77 ids for `prompt`.
    pub fn encode(&self, prompt: &str) -> color_eyre::Result<Tokens> {
        let enc = self
            .inner
            .encode(prompt, false)
            .map_err(|e| eyre!("tokenizing {prompt:?}: {e}"))?;
        let body = enc.get_ids();
        let keep = body.len().min(MAX_LENGTH - 2);
        let mut ids = Vec::with_capacity(MAX_LENGTH);
        ids.push(BOS);
        ids.extend_from_slice(&body[..keep]);
        ids.resize(MAX_LENGTH, EOS);
        Ok(Tokens {
            ids,
            count: keep,
            dropped: body.len() - keep,
        })
    }
}

/// The CLIP tokenizer's pipeline around a BPE model read from `vocab.json` + `merges.txt`,
/// the same pipeline transformers writes into `tokenizer.json`.
fn from_vocab_and_merges(vocab: &Path, merges: &Path) -> color_eyre::Result<tokenizers::Tokenizer> {
    let vocab_map: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(vocab).wrap_err_with(|| format!("reading {}", vocab.display()))?,
    )
    .map_err(|e| {
        eyre!(
            "tokenizer {} is not valid JSON: {e}\nFix: copy the tokenizer/ folder of SD v1.5 (or openai/clip-vit-large-patch14) there again",
            vocab.display()
        )
    })?;
    if !vocab_map.is_object() {
        return Err(eyre!(
            "tokenizer {} is not a vocabulary (a JSON object of token → id)\nFix: copy the tokenizer/ folder of SD v1.5 (or openai/clip-vit-large-patch14) there again",
            vocab.display()
        ));
    }
    let merges_text = std::fs::read_to_string(merges)
        .wrap_err_with(|| format!("reading {}", merges.display()))?;
    let merge_list: Vec<&str> = merges_text
        .lines()
        .filter(|l| !l.starts_with("#version") && !l.trim().is_empty())
        .collect();
    let spec = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [
            {"id": BOS, "content": "<|startoftext|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": true, "special": true},
            {"id": EOS, "content": "<|endoftext|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": true, "special": true}
        ],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFC"},
            {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
            {"type": "Lowercase"}
        ]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": "'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+"}, "behavior": "Removed", "invert": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}
        ]},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": "<|endoftext|>",
            "continuing_subword_prefix": "", "end_of_word_suffix": "</w>",
            "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab_map, "merges": merge_list
        }
    });
    spec.to_string()
        .parse::<tokenizers::Tokenizer>()
        .map_err(|e| {
            eyre!(
                "tokenizer {} and {} do not make a CLIP tokenizer: {e}\nFix: copy the tokenizer/ folder of SD v1.5 (or openai/clip-vit-large-patch14) there again",
                vocab.display(),
                merges.display()
            )
        })
}
