//! The binary users build has no test hooks. Built without the `test-hooks` feature (as `cargo
//! build --release` and `./run.sh` build it; the hooks follow the feature, not the profile),
//! clap rejects the hidden `--fake-backend` flag and neither the fake backend nor
//! `SPEEDSCAPE_TEST_PANIC` is compiled in: their strings are absent from the file. `./test.sh`
//! runs this file last, without the feature; in its main run, with the feature, the markers are
//! checked to be there, so the check looks for strings the hooks really have.

use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_speedscape");

/// Strings only the hook code has: the panic hooks' variable, the fake backend's device name and
/// the hidden flag's help.
const MARKERS: [&str; 3] = [
    "SPEEDSCAPE_TEST_PANIC",
    "fake backend (test only)",
    "stand-in backend",
];

fn occurrences(haystack: &[u8], needle: &str) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle.as_bytes())
        .count()
}

#[test]
#[cfg_attr(
    feature = "test-hooks",
    ignore = "this build has the test hooks; ./test.sh runs it again without the feature"
)]
fn a_build_without_the_feature_has_no_test_hooks() {
    // stdin /dev/null and stdout a pipe: a binary that had the flag would refuse the TUI (exit 1).
    let out = Command::new(BIN)
        .arg("--fake-backend")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("unexpected argument '--fake-backend'"),
        "{err}"
    );
    let bytes = std::fs::read(BIN).unwrap();
    for marker in MARKERS {
        assert_eq!(occurrences(&bytes, marker), 0, "{BIN} contains {marker:?}");
    }
}

#[test]
#[cfg(feature = "test-hooks")]
fn a_build_with_the_feature_has_every_marker_the_check_looks_for() {
    let bytes = std::fs::read(BIN).unwrap();
    for marker in MARKERS {
        assert!(occurrences(&bytes, marker) > 0, "{BIN} lacks {marker:?}");
    }
}
