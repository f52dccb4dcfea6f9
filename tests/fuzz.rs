//! Property tests under generated inputs ("fuzzing"), through the entry points the binary uses:
//!
//! - config parsing (`Config::parse_at`, and `Config::load` on raw bytes): arbitrary text and
//!   bytes, and the repo's config.toml (plus an `[[exercises]]` block) with keys, values, lines
//!   and headers mutated. Never panics; every error names a line and column or a field, and
//!   says the fix; every accepted config has its paths resolved (absolute).
//! - the CLIP tokenizer on the real tokenizer files (models/tiny/tokenizer): arbitrary unicode,
//!   bytes, and prompts built from awkward pieces (controls, escape sequences, emoji, combining
//!   marks, long words). Never panics; always 77 ids, BOS first, the prompt's tokens, then EOS
//!   to the end; warnings never carry a control character to the terminal.
//!
//! By default each target runs a few hundred cases (a fresh random seed each time). With
//! `SPEEDSCAPE_FUZZ_SECS=600` each one instead keeps drawing batches of cases for that many
//! seconds and prints how many it ran (`cargo test --test fuzz -- --nocapture`).
//! A case that once failed becomes an explicit test at the bottom of this file.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestError, TestRunner};

use speedscape::config::Config;
use speedscape::models::ClipTokenizer;
use speedscape::models::tokenizer::{BOS, EOS, MAX_LENGTH};

/// Cases per target without `SPEEDSCAPE_FUZZ_SECS`.
const CI_CASES: u32 = 300;

/// Runs `test` on values of `strategy`: [`CI_CASES`] of them, or batches until
/// `SPEEDSCAPE_FUZZ_SECS` have passed. Panics with the shrunk failing input.
fn fuzz<S>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    let secs: Option<u64> = std::env::var("SPEEDSCAPE_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok());
    let batch = if secs.is_some() { 1000 } else { CI_CASES };
    let deadline = Instant::now() + Duration::from_secs(secs.unwrap_or(0));
    let start = Instant::now();
    let mut cases: u64 = 0;
    loop {
        let mut runner = TestRunner::new(RunnerConfig {
            cases: batch,
            // Failures are kept as explicit tests below, not in a regressions file.
            failure_persistence: None,
            ..RunnerConfig::default()
        });
        match runner.run(&strategy, &test) {
            Ok(()) => cases += u64::from(batch),
            Err(TestError::Fail(why, input)) => {
                panic!("{name}: failed after {cases}+ cases: {why}\nminimal input: {input:#?}")
            }
            Err(TestError::Abort(why)) => panic!("{name}: aborted: {why}"),
        }
        if secs.is_none() || Instant::now() >= deadline {
            break;
        }
    }
    eprintln!(
        "{name}: {cases} cases in {:.1} s",
        start.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// Config parsing

fn repo_config() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml")).unwrap()
}

/// An `[[exercises]]` block, so mutations reach exercises, runs and questions too.
const EXERCISE: &str = r#"
[[exercises]]
number = 7
title = "Euler at 30"
about = "Mine."
prompt = "a red fox"
negative_prompt = "blurry"
seed = 7
baseline = 0
runs = [
  { label = "DDPM 50", scheduler = "ddpm", steps = 50, cfg = 7.5 },
  { label = "LCM 4", scheduler = "lcm", steps = 4, cfg = 1.5, unet = "lcm", seed = 3 },
]
questions = [ { text = "How much faster?", measure = { kind = "speedup", run = 1, over = 0 } } ]
"#;

/// Every key and table name the config knows, for "the error names a field".
const FIELDS: &[&str] = &[
    "runtime",
    "onnxruntime",
    "device",
    "rng",
    "session",
    "optimization",
    "intra_op_threads",
    "thread_pool",
    "flush_denormals",
    "cpu_memory",
    "memory_pattern",
    "io_binding",
    "optimized_cache",
    "cuda",
    "device_id",
    "conv_algo_search",
    "tf32",
    "cuda_graphs",
    "prefer_nhwc",
    "memory_limit_mib",
    "tensorrt",
    "engine_cache",
    "fp16",
    "workspace_mib",
    "model",
    "dir",
    "scheduler_config",
    "unet_budget_mib",
    "variants",
    "name",
    "folder",
    "label",
    "text_encoder",
    "tui",
    "graphics",
    "out",
    "exercises",
    "number",
    "title",
    "about",
    "prompt",
    "negative_prompt",
    "seed",
    "runs",
    "baseline",
    "questions",
    "scheduler",
    "steps",
    "cfg",
    "unet",
    "text",
    "measure",
    "kind",
    "run",
    "over",
    "sweep",
    "seeds",
    "tolerance",
    "reference",
    "methods",
];

/// Whether an error message says where: a line and column, or a field by its config name
/// (`model.variants`, `exercise 7 …`, `[sweep]`, `key = value`, `` `key` ``).
fn locates(msg: &str) -> bool {
    (msg.contains("line ") && msg.contains("column "))
        || msg.contains("model.variants")
        || msg.contains("[[exercises]]")
        || msg.contains("exercise ")
        || msg.contains("[sweep]")
        || msg.contains("[[sweep.methods]]")
        || FIELDS
            .iter()
            .any(|f| msg.contains(&format!("{f} =")) || msg.contains(&format!("`{f}`")))
}

/// Keys to write in place of real ones: real keys (in the wrong table), misspellings, junk.
fn key_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(FIELDS).prop_map(str::to_string),
        prop::sample::select(FIELDS).prop_map(|k| format!("{k}x")),
        prop::sample::select(FIELDS).prop_map(|k| k.chars().rev().collect()),
        "[a-z_]{1,12}",
        "\"[^\"\\\\\n]{0,8}\"",
        any::<String>(),
    ]
}

/// TOML values of every type, and some that are not TOML.
fn value_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|v| v.to_string()),
        any::<u64>().prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| format!("{v:?}")),
        prop::sample::select(vec![
            "nan",
            "-nan",
            "inf",
            "-inf",
            "0",
            "-1",
            "1e400",
            "0x10",
            "true",
            "false",
            "[]",
            "{}",
            "[1, \"a\"]",
            "{ a = 1 }",
            "\"\"",
            "''",
            "\"\"\"\n\"\"\"",
            "1979-05-27",
            "\"auto\"",
            "\"cpu\"",
            "\"cuda\"",
            "\"torch-cpu\"",
            "\"sd15\"",
            "\"halfblocks\"",
            "\"ddpm\"",
            "\"lcm\"",
            "\"dpmpp\"",
            "\"euler\"",
            "\"base\"",
            "\"m\"",
            "\"../x\"",
            "\"/abs\"",
            "\"unterminated",
            "= =",
            "",
        ])
        .prop_map(str::to_string),
        "\"[^\"\\\\\n]{0,12}\"",
        any::<String>(),
    ]
}

fn header_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "[runtime]",
            "[runtime.session]",
            "[runtime.cuda]",
            "[runtime.tensorrt]",
            "[model]",
            "[[model.variants]]",
            "[tui]",
            "[[exercises]]",
            "[exercises]",
            "[[runtime]]",
            "[model.variants]",
            "[",
            "[[]]",
        ])
        .prop_map(str::to_string),
        key_strategy().prop_map(|k| format!("[{k}]")),
        key_strategy().prop_map(|k| format!("[[{k}]]")),
    ]
}

/// One edit of a config's text.
#[derive(Debug, Clone)]
enum Mutation {
    /// Replace the key of a `key = value` line.
    RenameKey(Index, String),
    /// Replace the value of a `key = value` line.
    ReplaceValue(Index, String),
    DeleteLine(Index),
    DuplicateLine(Index),
    SwapLines(Index, Index),
    /// Insert `key = value` before a line.
    InsertPair(Index, String, String),
    InsertHeader(Index, String),
    /// Uncomment a `# key = value` line (the config documents options in comments).
    Uncomment(Index),
    /// Cut the text at a byte.
    Truncate(Index),
    /// Insert characters at a byte.
    InsertText(Index, String),
}

fn mutation_strategy() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), key_strategy()).prop_map(|(i, k)| Mutation::RenameKey(i, k)),
        4 => (any::<Index>(), value_strategy()).prop_map(|(i, v)| Mutation::ReplaceValue(i, v)),
        1 => any::<Index>().prop_map(Mutation::DeleteLine),
        1 => any::<Index>().prop_map(Mutation::DuplicateLine),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        2 => (any::<Index>(), key_strategy(), value_strategy())
            .prop_map(|(i, k, v)| Mutation::InsertPair(i, k, v)),
        2 => (any::<Index>(), header_strategy()).prop_map(|(i, h)| Mutation::InsertHeader(i, h)),
        2 => any::<Index>().prop_map(Mutation::Uncomment),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => (any::<Index>(), any::<String>()).prop_map(|(i, s)| Mutation::InsertText(i, s)),
    ]
}

/// Applies `m` to `text` (line edits keep the other lines as they are).
fn apply(text: &str, m: &Mutation) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let pairs: Vec<usize> = (0..lines.len())
        .filter(|&i| !lines[i].trim_start().starts_with('#') && lines[i].contains('='))
        .collect();
    let comments: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].trim_start().starts_with("# ") && lines[i].contains(" = "))
        .collect();
    let at = |i: &Index, n: usize| i.index(n.max(1));
    match m {
        Mutation::RenameKey(i, k) if !pairs.is_empty() => {
            let l = &mut lines[pairs[at(i, pairs.len())]];
            if let Some((_, v)) = l.split_once('=') {
                *l = format!("{k} ={v}");
            }
        }
        Mutation::ReplaceValue(i, v) if !pairs.is_empty() => {
            let l = &mut lines[pairs[at(i, pairs.len())]];
            if let Some((k, _)) = l.split_once('=') {
                *l = format!("{k}= {v}");
            }
        }
        Mutation::DeleteLine(i) if !lines.is_empty() => {
            lines.remove(at(i, lines.len()));
        }
        Mutation::DuplicateLine(i) if !lines.is_empty() => {
            let n = at(i, lines.len());
            lines.insert(n, lines[n].clone());
        }
        Mutation::SwapLines(a, b) if !lines.is_empty() => {
            let n = lines.len();
            lines.swap(at(a, n), at(b, n));
        }
        Mutation::InsertPair(i, k, v) => {
            let n = at(i, lines.len() + 1);
            lines.insert(n, format!("{k} = {v}"));
        }
        Mutation::InsertHeader(i, h) => {
            let n = at(i, lines.len() + 1);
            lines.insert(n, h.clone());
        }
        Mutation::Uncomment(i) if !comments.is_empty() => {
            let l = &mut lines[comments[at(i, comments.len())]];
            *l = l.trim_start().trim_start_matches("# ").to_string();
        }
        Mutation::Truncate(i) => {
            let joined = lines.join("\n");
            let mut cut = at(i, joined.len() + 1);
            while !joined.is_char_boundary(cut) {
                cut -= 1;
            }
            return joined[..cut].to_string();
        }
        Mutation::InsertText(i, s) => {
            let mut joined = lines.join("\n");
            let mut pos = at(i, joined.len() + 1);
            while !joined.is_char_boundary(pos) {
                pos -= 1;
            }
            joined.insert_str(pos, s);
            return joined;
        }
        _ => {}
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// The folder configs are parsed "in" (it need not exist).
fn base() -> PathBuf {
    PathBuf::from("/fuzz/home/config.toml")
}

/// The property: `Ok` configs have every path absolute (resolved against the file's folder);
/// errors name the
/// file, a line and column or a field, and say the fix.
fn check_config(text: &str, result: color_eyre::Result<Config>) -> Result<(), TestCaseError> {
    match result {
        Ok(cfg) => {
            let dir = base().parent().unwrap().to_path_buf();
            for p in [
                cfg.model.dir.as_ref(),
                cfg.runtime.onnxruntime.as_ref(),
                cfg.tui.out.as_ref(),
                Some(&cfg.runtime.tensorrt.engine_cache),
                cfg.runtime.session.optimized_cache.as_ref(),
            ]
            .into_iter()
            .flatten()
            {
                // Relative paths join the file's folder; absolute ones stay as written.
                prop_assert!(p.is_absolute(), "path {p:?} not resolved against {dir:?}");
            }
            let file = base();
            prop_assert_eq!(cfg.path.as_deref(), Some(file.as_path()));
        }
        Err(e) => {
            let msg = format!("{e}");
            prop_assert!(
                locates(&msg),
                "the error names no line/column or field:\n{msg}\n--- for ---\n{text}"
            );
            prop_assert!(msg.contains("Fix: "), "no fix:\n{msg}\n--- for ---\n{text}");
            prop_assert!(
                msg.starts_with(&base().display().to_string()),
                "the file is not named first:\n{msg}"
            );
        }
    }
    Ok(())
}

#[test]
fn fuzz_config_parsing() {
    let seeds = vec![repo_config(), format!("{}{EXERCISE}", repo_config())];
    let mutated = (
        prop::sample::select(seeds),
        prop::collection::vec(mutation_strategy(), 1..5),
    )
        .prop_map(|(seed, ms)| ms.iter().fold(seed, |t, m| apply(&t, m)));
    let text = prop_oneof![
        6 => mutated,
        1 => any::<String>(),
        1 => "(\\[[a-z.]{0,16}\\]\n|[a-z_]{1,10} = [^\n]{0,10}\n){0,6}",
    ];
    let accepted = AtomicU64::new(0);
    let refused = AtomicU64::new(0);
    fuzz("config parsing", text, |text| {
        let result = Config::parse_at(&text, &base());
        let counter = if result.is_ok() { &accepted } else { &refused };
        counter.fetch_add(1, Ordering::Relaxed);
        check_config(&text, result)
    });
    eprintln!(
        "config parsing: {} accepted, {} refused (shrinking steps included)",
        accepted.into_inner(),
        refused.into_inner()
    );
}

/// `Config::load` on raw bytes (the binary's path: UTF-8 check first).
#[test]
fn fuzz_config_file_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let bytes = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..400),
        (any::<Index>(), prop::collection::vec(128u8.., 1..4)).prop_map(|(i, junk)| {
            let mut b = repo_config().into_bytes();
            let at = i.index(b.len());
            b.splice(at..at, junk);
            b
        }),
    ];
    fuzz("config file bytes", bytes, |bytes| {
        std::fs::write(&path, &bytes).unwrap();
        match Config::load(&path, true) {
            Ok(cfg) => prop_assert!(std::str::from_utf8(&bytes).is_ok() && cfg.path.is_some()),
            Err(e) => {
                let msg = format!("{e}");
                prop_assert!(locates(&msg), "{msg}");
                prop_assert!(msg.contains("Fix: "), "{msg}");
            }
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// Prompts

fn tokenizer() -> &'static ClipTokenizer {
    static TOK: OnceLock<ClipTokenizer> = OnceLock::new();
    TOK.get_or_init(|| {
        ClipTokenizer::from_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny/tokenizer"),
        )
        .unwrap()
    })
}

/// Pieces that stress the tokenizer and the cleaning before it.
const PIECES: &[&str] = &[
    "a",
    "cat",
    " ",
    "  ",
    "\t",
    "\n",
    "\r\n",
    ",",
    ".",
    "'s",
    "don't",
    "100%",
    "café",
    "naïve",
    "東京",
    "🚀",
    "👩‍👩‍👧",
    "e\u{301}",
    "\u{200b}",
    "\u{200f}",
    "\u{feff}",
    "\u{fffd}",
    "\u{0}",
    "\u{7}",
    "\u{8}",
    "\u{1b}",
    "\u{1b}[31m",
    "\u{1b}[0m",
    "\u{1b}]0;title\u{7}",
    "\u{1b}[2J",
    "\u{7f}",
    "\u{85}",
    "\u{9b}",
    "Ａｂｃ",
    "ﬁ",
    "&amp;",
    "<",
    ">",
    "PixArFK",
    "supercalifragilisticexpialidocious",
    "a photo of",
    "--",
    "\\",
    "\"",
    "'",
    "[",
    "]",
];

#[test]
fn fuzz_tokenizer() {
    let text = prop_oneof![
        3 => any::<String>(),
        2 => prop::collection::vec(any::<u8>(), 0..300)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        4 => prop::collection::vec(prop::sample::select(PIECES), 0..200).prop_map(|p| p.concat()),
        1 => (prop::sample::select(PIECES), 70usize..400)
            .prop_map(|(p, n)| vec![p; n].join(" ")),
    ];
    fuzz("tokenizer", text, |prompt| {
        let t = tokenizer()
            .encode(&prompt)
            .map_err(|e| TestCaseError::fail(format!("encode failed: {e:?}")))?;
        prop_assert_eq!(t.ids.len(), MAX_LENGTH);
        prop_assert_eq!(t.ids[0], BOS);
        prop_assert!(t.count <= MAX_LENGTH - 2);
        prop_assert!(t.dropped == 0 || t.count == MAX_LENGTH - 2);
        prop_assert_eq!(t.ids[1 + t.count], EOS, "EOS right after the prompt");
        prop_assert!(
            t.ids[1 + t.count..].iter().all(|&i| i == EOS),
            "EOS padding"
        );
        // Special tokens inside only where the prompt spells one out (as transformers does).
        if !prompt.contains("<|") {
            prop_assert!(t.ids[1..1 + t.count].iter().all(|&i| i < BOS));
        }
        for w in t.warnings() {
            prop_assert!(
                !w.chars().any(|c| c.is_control()),
                "a control character would reach the terminal: {w:?}"
            );
        }
        prop_assert_eq!(
            t.removed_controls > 0,
            prompt
                .chars()
                .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
        );
        Ok(())
    });
}
