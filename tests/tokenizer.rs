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
