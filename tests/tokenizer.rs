//! SD v1.5's tokenizer rules, on the real CLIP vocabulary in models/tiny/tokenizer.

use std::path::PathBuf;

use speedscape::models::ClipTokenizer;
use speedscape::models::tokenizer::{BOS, EOS, MAX_LENGTH};

fn tokenizer_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/tiny/tokenizer")
}

const PROMPTS: &[&str] = &[
    "a small cottage on a hillside at sunset, warm golden light, detailed",
    "a lighthouse on a rocky coast during a storm, waves crashing, PixArFK",
    "",
    "   Multiple   spaces\tand\nnewlines  ",
    "don't STOP—it's 100% café naïve 東京 🚀",
];

#[test]
fn every_prompt_becomes_77_ids_framed_by_bos_and_eos() {
    let tok = ClipTokenizer::from_dir(&tokenizer_dir()).unwrap();
    for p in PROMPTS {
        let t = tok.encode(p).unwrap();
        assert_eq!(t.ids.len(), MAX_LENGTH, "{p:?}");
        assert_eq!(t.ids[0], BOS, "{p:?}");
        assert_eq!(t.ids[1 + t.count], EOS, "{p:?}: EOS right after the prompt");
        assert!(
            t.ids[1 + t.count..].iter().all(|&i| i == EOS),
            "{p:?}: EOS padding"
        );
        assert!(
            t.ids[1..1 + t.count].iter().all(|&i| i < BOS),
            "{p:?}: no specials inside"
        );
        assert_eq!(t.dropped, 0);
    }
    assert_eq!(tok.encode("").unwrap().count, 0);
}

#[test]
fn vocab_and_merges_give_the_same_ids_as_tokenizer_json() {
    let json = ClipTokenizer::from_dir(&tokenizer_dir()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for f in ["vocab.json", "merges.txt"] {
        std::fs::copy(tokenizer_dir().join(f), dir.path().join(f)).unwrap();
    }
    let slow_files = ClipTokenizer::from_dir(dir.path()).unwrap();
    for p in PROMPTS {
        assert_eq!(
            json.encode(p).unwrap(),
            slow_files.encode(p).unwrap(),
            "{p:?}"
        );
    }
}

#[test]
fn a_long_prompt_keeps_its_first_75_tokens_and_counts_the_rest() {
    let tok = ClipTokenizer::from_dir(&tokenizer_dir()).unwrap();
    // "cat" is one token; 90 of them are 15 over the limit.
    let long = vec!["cat"; 90].join(" ");
    let t = tok.encode(&long).unwrap();
    let one = tok.encode("cat").unwrap().ids[1];
    assert_eq!((t.count, t.dropped), (75, 15));
    assert!(t.ids[1..76].iter().all(|&i| i == one));
    assert_eq!(t.ids[76], EOS);
    let warning = t.truncation_warning().unwrap();
    assert!(warning.contains("15"), "{warning}");
    assert!(tok.encode("cat").unwrap().truncation_warning().is_none());
}

#[test]
fn a_folder_without_tokenizer_files_says_what_it_expected() {
    let dir = tempfile::tempdir().unwrap();
    let err = ClipTokenizer::from_dir(dir.path()).err().unwrap();
    let msg = format!("{err}");
    assert!(
        msg.contains("tokenizer.json") && msg.contains("merges.txt"),
        "{msg}"
    );
}

#[test]
fn the_truncation_warning_says_how_many_were_dropped_and_where_the_cut_fell() {
    let tok = ClipTokenizer::from_dir(&tokenizer_dir()).unwrap();
    // 75 "cat"s, then the words that do not fit.
    let prompt = format!("{} red fox jumping", vec!["cat"; 75].join(" "));
    let t = tok.encode(&prompt).unwrap();
    assert_eq!((t.count, t.dropped), (75, 3));
    let w = t.truncation_warning().unwrap();
    assert!(
        w.starts_with(
            "prompt is 78 CLIP tokens; SD v1.5 reads at most 75, so the last 3 were dropped"
        ),
        "{w}"
    );
    assert!(
        w.ends_with(": cut here: \"…cat cat cat cat cat cat cat\" ✂ \"red fox jumping\""),
        "{w}"
    );
    assert_eq!(t.warnings(), vec![w]);
}

#[test]
fn control_characters_are_removed_before_tokenizing_and_noted() {
    let tok = ClipTokenizer::from_dir(&tokenizer_dir()).unwrap();
    let clean = tok.encode("a red fox in snow").unwrap();
    let dirty = tok
        .encode("a \u{7}red\u{0} \u{1b}[31mfox\u{1b}[0m in snow")
        .unwrap();
    assert_eq!(dirty.ids, clean.ids, "the same ids as the clean prompt");
    assert_eq!(dirty.removed_controls, 4);
    let w = dirty.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].starts_with("prompt had 4 control characters"), "{w:?}");
    assert!(clean.warnings().is_empty());
}

#[test]
fn a_10_mb_prompt_is_capped_before_tokenizing_and_says_so() {
    let tok = ClipTokenizer::from_dir(&tokenizer_dir()).unwrap();
    let huge = "cat ".repeat(10 << 18); // 10 MiB
    let t = tok.encode(&huge).unwrap();
    assert_eq!(t.count, 75);
    assert_eq!(t.capped_from, Some(10 << 20));
    // 64 KiB of "cat " is 16384 tokens; the rest of the 10 MiB was never tokenized.
    assert_eq!(t.dropped, 16384 - 75);
    let w = t.warnings();
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w[0].contains("prompt is 10485760 bytes; only its first 65536 were tokenized"),
        "{w:?}"
    );
    assert!(
        w[1].starts_with("prompt is at least 16384 CLIP tokens; SD v1.5 reads at most 75, so at least 16309 were dropped"),
        "{w:?}"
    );
}

/// The pad token comes from the folder as transformers' `from_pretrained` reads it:
/// `special_tokens_map.json` first, then `tokenizer_config.json`, else `<|endoftext|>`.
/// (Checked against transformers 5.23: a folder whose tokenizer_config says `<|endoftext|>` and
/// whose special_tokens_map says `!` pads with `!`, id 0, as SD 2.x's does.)
#[test]
fn the_pad_token_is_read_as_transformers_reads_it() {
    let write = |files: &[(&str, &str)]| {
        let dir = tempfile::tempdir().unwrap();
        for name in ["vocab.json", "merges.txt"] {
            std::fs::copy(tokenizer_dir().join(name), dir.path().join(name)).unwrap();
        }
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    };
    let pad = |files: &[(&str, &str)]| {
        let dir = write(files);
        let tok = ClipTokenizer::from_dir(dir.path()).unwrap();
        let t = tok.encode("a cat").unwrap();
        assert_eq!(&t.ids[..4], &[BOS, 320, 2368, EOS]);
        assert!(t.ids[4..].iter().all(|&i| i == tok.pad));
        (tok.pad, tok.pad_source.1)
    };
    let map_bang = ("special_tokens_map.json", r#"{"pad_token": "!"}"#);
    let map_eos = (
        "special_tokens_map.json",
        r#"{"pad_token": {"content": "<|endoftext|>", "lstrip": false}}"#,
    );
    let config_bang = ("tokenizer_config.json", r#"{"pad_token": "!"}"#);
    let config_eos = ("tokenizer_config.json", r#"{"pad_token": "<|endoftext|>"}"#);
    assert_eq!(pad(&[]), (EOS, None));
    assert_eq!(pad(&[config_bang]), (0, Some("tokenizer_config.json")));
    assert_eq!(
        pad(&[map_bang, config_eos]),
        (0, Some("special_tokens_map.json"))
    );
    assert_eq!(
        pad(&[map_eos, config_bang]),
        (EOS, Some("special_tokens_map.json"))
    );
    // SD v1.5's own files pad with EOS.
    let sd15 = ClipTokenizer::from_dir(&tokenizer_dir()).unwrap();
    assert_eq!(sd15.pad, EOS);

    let dir = write(&[("special_tokens_map.json", r#"{"pad_token": "<|pad|>"}"#)]);
    let err = format!("{:?}", ClipTokenizer::from_dir(dir.path()).err().unwrap());
    assert!(
        err.contains("pads with \"<|pad|>\"") && err.contains("not in its vocabulary"),
        "{err}"
    );
}
