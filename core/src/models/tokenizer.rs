//! SD's CLIP tokenizer, through the `tokenizers` crate.
//!
//! SD's rules: 77 ids, `<|startoftext|>` (49406) first, `<|endoftext|>` (49407) after the
//! prompt, then the tokenizer's pad token, no attention mask. A prompt over 75 tokens is cut to
//! its first 75. The pad token is read from the folder as transformers reads it
//! ([`pad_token`]): SD v1.5 pads with `<|endoftext|>`, SD 2.x and SD-Turbo with `!` (id 0).
//! Before tokenizing, control characters are removed and the text is capped at 64 KiB (see
//! [`prompt`](super::prompt)); [`Tokens::warnings`] says what was removed, cut or dropped.
//! Known limit: Python's slow `CLIPTokenizer` runs `ftfy.fix_text` first (curly quotes,
//! ligatures, full-width characters, HTML entities); `tokenizer.json` applies only NFC,
//! whitespace collapsing and lowercasing, so such prompts can tokenize differently.

use std::path::Path;

use eyre::{WrapErr, eyre};
use serde::Serialize;

use crate::error::Fixable;

/// Length of SD v1.5's text-encoder input.
pub const MAX_LENGTH: usize = 77;
/// CLIP's `<|startoftext|>`.
pub const BOS: u32 = 49406;
/// CLIP's `<|endoftext|>`, also SD v1.5's padding.
pub const EOS: u32 = 49407;
/// CLIP's `<|endoftext|>` as text: the pad token of a folder that names none (transformers'
/// `CLIPTokenizer` default).
const EOS_TOKEN: &str = "<|endoftext|>";

/// A prompt as the text encoder sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tokens {
    /// Exactly 77 ids: BOS, up to 75 prompt tokens, EOS, then the pad id ([`ClipTokenizer::pad`]).
    pub ids: Vec<u32>,
    /// Prompt tokens kept (0..=75), without BOS/EOS.
    pub count: usize,
    /// Prompt tokens dropped by truncation (of the tokenized text: at least this many when
    /// `capped_from` is set).
    pub dropped: usize,
    /// Where the cut fell, in the cleaned prompt: the kept text's last characters and the
    /// dropped text's first ones (`None` when nothing was dropped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cut: Option<(String, String)>,
    /// Control characters removed before tokenizing.
    #[serde(skip_serializing_if = "is_zero")]
    pub removed_controls: usize,
    /// The prompt's length in bytes when only its first 64 KiB were tokenized.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capped_from: Option<usize>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Characters of context shown on each side of a truncation cut.
const CUT_CONTEXT: usize = 30;

impl Tokens {
    /// [`Tokens::ids`] as the text encoder's `input_ids` take them.
    pub fn ids_i64(&self) -> Vec<i64> {
        self.ids.iter().map(|&i| i64::from(i)).collect()
    }

    /// The warning to show when the prompt was truncated: how many tokens were dropped and
    /// where the cut fell.
    pub fn truncation_warning(&self) -> Option<String> {
        (self.dropped > 0).then(|| {
            let (total, dropped) = if self.capped_from.is_some() {
                ("at least ", "at least")
            } else {
                ("", "the last")
            };
            let mut w = format!(
                "prompt is {total}{} CLIP tokens; SD v1.5 reads at most {}, so {dropped} {} were \
                 dropped",
                self.count + self.dropped,
                MAX_LENGTH - 2,
                self.dropped
            );
            if let Some((kept, dropped)) = &self.cut {
                w.push_str(&format!(": cut here: \"{kept}\" ✂ \"{dropped}\""));
            }
            w
        })
    }

    /// Every note about the prompt, in order: control characters removed, the 64 KiB cap,
    /// truncation to 75 tokens. Each starts with "prompt".
    pub fn warnings(&self) -> Vec<String> {
        let mut out = super::prompt::CleanPrompt {
            text: "".into(),
            removed: self.removed_controls,
            capped_from: self.capped_from,
        }
        .notes();
        out.extend(self.truncation_warning());
        out
    }
}

/// The text around byte `at` of `text`, whitespace runs shown as one space: up to
/// [`CUT_CONTEXT`] characters before and after, in whole words where it is cut short (marked
/// with "…").
fn cut_context(text: &str, at: usize) -> (String, String) {
    let squash = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let (before, after) = text.split_at(at);
    let (before, after) = (squash(before), squash(after));
    let n = before.chars().count();
    let kept = if n > CUT_CONTEXT {
        let tail: String = before.chars().skip(n - CUT_CONTEXT).collect();
        // Start at a word unless the tail is one word.
        let word = tail.split_once(' ').map_or(tail.as_str(), |(_, rest)| rest);
        format!("…{word}")
    } else {
        before
    };
    let dropped = if after.chars().count() > CUT_CONTEXT {
        let head: String = after.chars().take(CUT_CONTEXT).collect();
        let word = head
            .rsplit_once(' ')
            .map_or(head.as_str(), |(first, _)| first);
        format!("{word}…")
    } else {
        after
    };
    (kept, dropped)
}

/// CLIP's byte-level BPE tokenizer, applied with SD's rules ([`ClipTokenizer::encode`]).
pub struct ClipTokenizer {
    inner: tokenizers::Tokenizer,
    /// The id that fills the 77 ids after EOS: 49407 (SD v1.5), 0 (`!`, SD 2.x).
    pub pad: u32,
    /// The pad token's text and the file that named it (`None`: no file did, EOS by default).
    pub pad_source: (String, Option<&'static str>),
}

impl ClipTokenizer {
    /// Loads `tokenizer.json` from `dir`, else builds the same tokenizer from
    /// `vocab.json` + `merges.txt` (the files transformers' slow tokenizer uses); the pad token
    /// from `special_tokens_map.json` / `tokenizer_config.json` ([`pad_token`]).
    pub fn from_dir(dir: &Path) -> eyre::Result<Self> {
        let json = dir.join("tokenizer.json");
        let inner = if json.is_file() {
            tokenizers::Tokenizer::from_file(&json).map_err(|e| {
                Fixable::new(
                    format!(
                        "tokenizer {} is not a valid tokenizers JSON file: {e}",
                        json.display()
                    ),
                    "re-export the model, or delete it so vocab.json + merges.txt are used",
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
                return Err(eyre!(Fixable::new(
                    format!(
                        "no tokenizer in {}: {found} (it needs tokenizer.json, or vocab.json and merges.txt)",
                        dir.display()
                    ),
                    "copy the tokenizer/ folder of SD v1.5 (or openai/clip-vit-large-patch14) there",
                )));
            }
            from_vocab_and_merges(&vocab, &merges)?
        };
        // SD v1.5's text encoder was trained on these ids: another vocabulary would run and
        // draw nonsense.
        for (token, id) in [("<|startoftext|>", BOS), ("<|endoftext|>", EOS)] {
            let got = inner.token_to_id(token);
            if got != Some(id) {
                return Err(eyre!(Fixable::new(
                    format!(
                        "the tokenizer in {} is not CLIP's: {token} is {}, SD v1.5's text encoder expects id {id}",
                        dir.display(),
                        got.map_or("missing".to_string(), |g| format!("id {g}"))
                    ),
                    "copy the tokenizer/ folder of SD v1.5 (or openai/clip-vit-large-patch14) there",
                )));
            }
        }
        let (pad_text, pad_file) = pad_token(dir)?;
        let pad = inner.token_to_id(&pad_text).ok_or_else(|| {
            eyre!(Fixable::new(
                format!(
                    "the tokenizer in {} pads with {pad_text:?} ({}), which is not in its vocabulary",
                    dir.display(),
                    pad_file.unwrap_or("default")
                ),
                "copy the tokenizer/ folder of the model again, as the model's repository has it",
            ))
        })?;
        Ok(Self {
            inner,
            pad,
            pad_source: (pad_text, pad_file),
        })
    }

    /// SD's 77 ids for `prompt` (BOS, the prompt's tokens, EOS, [`ClipTokenizer::pad`] up to
    /// 77), cleaned first (control characters out, at most 64 KiB:
    /// see [`prompt`](super::prompt)).
    pub fn encode(&self, prompt: &str) -> eyre::Result<Tokens> {
        let clean = super::prompt::clean(prompt);
        let text: &str = &clean.text;
        let enc = self.inner.encode(text, false).map_err(|e| {
            let head: String = text.chars().take(60).collect();
            eyre!("tokenizing the prompt {head:?}…: {e}")
        })?;
        let body = enc.get_ids();
        let keep = body.len().min(MAX_LENGTH - 2);
        let mut ids = Vec::with_capacity(MAX_LENGTH);
        ids.push(BOS);
        ids.extend_from_slice(&body[..keep]);
        ids.push(EOS);
        ids.resize(MAX_LENGTH, self.pad);
        // Byte offset of the first dropped token in `text` (offsets are bytes of the input).
        let cut = enc
            .get_offsets()
            .get(keep)
            .map(|&(start, _)| start)
            .filter(|&at| text.is_char_boundary(at))
            .map(|at| cut_context(text, at));
        Ok(Tokens {
            ids,
            count: keep,
            dropped: body.len() - keep,
            cut,
            removed_controls: clean.removed,
            capped_from: clean.capped_from,
        })
    }
}

/// The pad token's text and the file that names it, as transformers' `from_pretrained` resolves
/// it: `special_tokens_map.json` first, then `tokenizer_config.json` (a string, or an
/// `AddedToken` object's `content`), else `<|endoftext|>` (`CLIPTokenizer`'s default). SD v1.5's
/// files say `<|endoftext|>`; SD 2.x's `special_tokens_map.json` says `!`.
pub fn pad_token(dir: &Path) -> eyre::Result<(String, Option<&'static str>)> {
    for file in ["special_tokens_map.json", "tokenizer_config.json"] {
        let Some(json) = super::read_json_opt(&dir.join(file))? else {
            continue;
        };
        let text = match json.get("pad_token") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Object(o)) => o
                .get("content")
                .and_then(|c| c.as_str())
                .map(str::to_string),
            _ => None,
        };
        if let Some(text) = text {
            return Ok((text, Some(file)));
        }
    }
    Ok((EOS_TOKEN.to_string(), None))
}

/// The CLIP tokenizer's pipeline around a BPE model read from `vocab.json` + `merges.txt`,
/// the same pipeline transformers writes into `tokenizer.json`.
fn from_vocab_and_merges(vocab: &Path, merges: &Path) -> eyre::Result<tokenizers::Tokenizer> {
    let vocab_map: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(vocab).wrap_err_with(|| format!("reading {}", vocab.display()))?,
    )
    .map_err(|e| {
        Fixable::new(
            format!("tokenizer {} is not valid JSON: {e}", vocab.display()),
            "copy the tokenizer/ folder of SD v1.5 (or openai/clip-vit-large-patch14) there again",
        )
    })?;
    if !vocab_map.is_object() {
        return Err(eyre!(Fixable::new(
            format!(
                "tokenizer {} is not a vocabulary (a JSON object of token → id)",
                vocab.display()
            ),
            "copy the tokenizer/ folder of SD v1.5 (or openai/clip-vit-large-patch14) there again",
        )));
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
            eyre!(Fixable::new(
                format!(
                    "tokenizer {} and {} do not make a CLIP tokenizer: {e}",
                    vocab.display(),
                    merges.display()
                ),
                "copy the tokenizer/ folder of SD v1.5 (or openai/clip-vit-large-patch14) there again",
            ))
        })
}
