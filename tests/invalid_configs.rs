//! Every file in tests/invalid_configs/ is a config.toml the binary must refuse. Each states its
//! own expectations in comment lines at the top, so a new case is a new file:
//!
//! ```text
//! # args: exercise 7 --device cpu   (the command to run; default: `models`)
//! # expect: text                     (must appear in the output; several lines allowed)
//! # absent: text                     (must not appear)
//! ```
//!
//! `{dir}` in a line stands for the config's folder (absolute). The binary runs from a fresh
//! empty folder, so relative paths can only resolve against the config's own folder.
//! Besides the folder: an explicit `--config` that does not exist, a missing default
//! config.toml (fine), a config that is not UTF-8, and a relative `model.dir` that works.

mod common;

use common::{root, speedscape_in, text};
use std::path::PathBuf;

/// The `# key: value` lines of a case.
fn directives<'a>(case: &'a str, key: &str) -> Vec<&'a str> {
    let prefix = format!("# {key}: ");
    case.lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .collect()
}

#[test]
fn every_invalid_config_is_refused_with_its_message() {
    let folder = root().join("tests/invalid_configs");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 15, "the cases are missing: {cases:?}");
    let cwd = tempfile::tempdir().unwrap();
    let dir = folder.canonicalize().unwrap().display().to_string();
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let body = std::fs::read_to_string(case).unwrap();
        let expect = directives(&body, "expect");
        assert!(!expect.is_empty(), "{name} has no `# expect:` line");
        let args_line = directives(&body, "args");
        let mut args = vec!["--config", case.to_str().unwrap()];
        args.extend(args_line.first().map_or("models", |a| a).split_whitespace());
        let out = speedscape_in(cwd.path(), &args);
        let all = text(&out);
        if out.status.success() {
            failures.push(format!("{name}: exit 0\n{all}"));
            continue;
        }
        for e in &expect {
            let e = e.replace("{dir}", &dir);
            if !all.contains(&e) {
                failures.push(format!("{name}: {e:?} not in\n{all}"));
            }
        }
        for a in directives(&body, "absent") {
            if all.contains(a) {
                failures.push(format!("{name}: {a:?} should not be in\n{all}"));
            }
        }
        if !all.contains("Fix: ") {
            failures.push(format!("{name}: no `Fix: ` line\n{all}"));
        }
        // The error names the file (or, for runs, the exercise and run).
        if args_line.is_empty() && !name.starts_with("model_dir") && !all.contains(&name) {
            failures.push(format!("{name}: the message does not name the file\n{all}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn an_explicit_config_that_does_not_exist_is_an_error_naming_where_it_looked() {
    let cwd = tempfile::tempdir().unwrap();
    let out = speedscape_in(cwd.path(), &["--config", "nope.toml", "models"]);
    assert!(!out.status.success());
    let all = text(&out);
    let looked = cwd.path().canonicalize().unwrap().join("nope.toml");
    assert!(
        all.contains(&format!(
            "config file nope.toml does not exist (looked for {})",
            looked.display()
        )) || all.contains(&format!(
            "config file nope.toml does not exist (looked for {})",
            cwd.path().join("nope.toml").display()
        )),
        "{all}"
    );
    assert!(
        all.contains(
            "Fix: pass an existing file to --config, or drop --config to use ./config.toml"
        ),
        "{all}"
    );
}

#[test]
fn a_missing_default_config_toml_means_the_built_in_defaults() {
    let cwd = tempfile::tempdir().unwrap();
    // The embedded micro model's tokenizer: CLIP's ids for the words of its world.
    let out = speedscape_in(cwd.path(), &["tokens", "a red star"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("49406 320 736 1565 49407 "), "{stdout}");
    assert!(stdout.contains("3 prompt tokens (of 75)"), "{stdout}");
}

#[test]
fn a_config_that_is_not_utf8_names_the_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("latin1.toml");
    std::fs::write(&path, b"[exercises]\n# caf\xe9\n").unwrap();
    let out = speedscape_in(dir.path(), &["--config", path.to_str().unwrap(), "models"]);
    assert!(!out.status.success());
    let all = text(&out);
    assert!(
        all.contains(&format!(
            "{} is not UTF-8 text: byte 17 (line 2, column 6)",
            path.display()
        )),
        "{all}"
    );
    assert!(all.contains("Fix: save the file as UTF-8"), "{all}");
}

/// `[model] dir = "m"` in a config elsewhere, run from another folder: `m` is found beside the
/// config (here a link to the tiny model), and `models` reports that absolute path.
#[test]
fn a_relative_model_dir_resolves_against_the_configs_folder_not_the_working_one() {
    let config_dir = tempfile::tempdir().unwrap();
    let cwd = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(root().join("models/tiny"), config_dir.path().join("m")).unwrap();
    let path = config_dir.path().join("config.toml");
    std::fs::write(&path, "[model]\ndir = \"m\"\n").unwrap();
    let out = speedscape_in(cwd.path(), &["--config", path.to_str().unwrap(), "models"]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    let resolved = config_dir.path().canonicalize().unwrap().join("m");
    assert!(all.contains(&resolved.display().to_string()), "{all}");
    // The same config from the config's own folder, by a relative --config: the same folder.
    let out = speedscape_in(config_dir.path(), &["--config", "config.toml", "models"]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains(&resolved.display().to_string()), "{all}");
}
