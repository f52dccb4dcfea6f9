//! What the binary-driving test files share: the repo root, the binary as a `Command` (run from
//! the repo root, finding ONNX Runtime on its own, no backtrace in its messages), and its output
//! as one string.
//!
//! Each test file is its own crate and uses only some of these.
#![allow(dead_code)]

pub mod parity;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The speedscape binary with `args`, run in `cwd`.
pub fn command_in(cwd: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_speedscape"));
    c.args(args)
        .current_dir(cwd)
        .env_remove("ORT_DYLIB_PATH")
        .env_remove("SPEEDSCAPE_BACKTRACE");
    c
}

/// The speedscape binary with `args`, run in the repo root (its config.toml, the tiny model).
pub fn command(args: &[&str]) -> Command {
    command_in(&root(), args)
}

/// Runs the binary in the repo root and waits for it.
pub fn speedscape(args: &[&str]) -> Output {
    command(args).output().unwrap()
}

/// Runs the binary in `cwd` and waits for it.
pub fn speedscape_in(cwd: &Path, args: &[&str]) -> Output {
    command_in(cwd, args).output().unwrap()
}

/// stdout then stderr, as one string for messages that may land on either.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Copies the folder `from` into `to` (created), recursively: a model to break or poison.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
}
