//! The binary where there is no terminal for the TUI, and the headless commands stopped by a
//! signal: the TUI refuses (exit ≠ 0, nothing written to stdout, the headless commands named);
//! `exercise`, `generate` and `bench` cancel the run on SIGTERM, SIGINT or SIGHUP, exit with
//! 128 + the signal's number and leave nothing in their output folder. On the embedded tiny
//! model and the CPU wheel. (tests/tui_terminal.sh drives the TUI itself in tmux.)

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The binary as `common::command` builds it, in a terminal type that could run the TUI.
fn command(args: &[&str]) -> Command {
    let mut c = common::command(args);
    c.env("TERM", "xterm-256color");
    c
}

/// `speedscape` with stdin from /dev/null and stdout, stderr piped: no terminal anywhere.
///
/// The TUI's tests pass `--fake-backend` (no model behind the TUI if it did start), which exists
/// only with the `test-hooks` feature (test.sh enables it): without it they are not built.
#[cfg(feature = "test-hooks")]
fn without_terminal(args: &[&str], term: &str) -> std::process::Output {
    command(args)
        .env("TERM", term)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[cfg(feature = "test-hooks")]
#[test]
fn the_tui_without_a_terminal_refuses_naming_the_headless_commands() {
    let out = tempfile::tempdir().unwrap();
    let o = without_terminal(
        &["--fake-backend", "--out", out.path().to_str().unwrap()],
        "xterm-256color",
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "opens the interactive exercises, which need a terminal, but stdin and stdout are not one"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "Fix: run it in a terminal, or use the headless commands: `speedscape exercise N`"
        ),
        "{err}"
    );
    assert!(err.contains("`speedscape generate"), "{err}");
    // Never entered raw mode or the alternate screen: not one escape sequence, nothing drawn.
    assert!(o.stdout.is_empty(), "{:?}", o.stdout);
    assert!(!err.contains('\x1b'), "{err:?}");
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
}

#[cfg(feature = "test-hooks")]
#[test]
fn the_tui_with_term_dumb_refuses_naming_the_headless_commands() {
    let o = without_terminal(&["--fake-backend"], "dumb");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the terminal is TERM=dumb, which cannot show the interactive exercises (they need an alternate screen and cursor movement)"),
        "{err}"
    );
    assert!(
        err.contains("Fix: run speedscape in a full terminal (e.g. TERM=xterm-256color), or use the headless commands: `speedscape exercise N`"),
        "{err}"
    );
    assert!(o.stdout.is_empty());
    assert!(!err.contains('\x1b'), "{err:?}");
}

/// A headless command running, its stderr collected as it comes.
struct Running {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Running {
    fn start(args: &[&str]) -> Running {
        let mut child = command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Running { child, stderr }
    }

    /// Waits (up to 60 s) until `ready` holds, failing with what was printed if it never does.
    fn wait_until(&mut self, what: &str, ready: impl Fn(&Running) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready(self) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("exited ({status}) before {what}: {}", self.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process handles `signal` (its bit is set in /proc's SigCgt): the handlers are in.
    fn handles(&self, signal: u32) -> bool {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .is_some_and(|mask| mask & (1 << (signal - 1)) != 0)
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn kill(&self, name: &str) {
        let ok = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name}");
    }

    /// Exit code and everything printed on stderr.
    fn finish(mut self) -> (Option<i32>, String) {
        let status = self.child.wait().unwrap();
        // The reader thread drains the pipe to its end.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&self.stderr) > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        (status.code(), self.stderr())
    }
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// An exercise whose first run takes seconds on the tiny model.
const LONG_EXERCISE: &str = r#"
[[exercises]]
number = 7
title = "Long"
about = "A long run to stop."
prompt = "a red fox"
runs = [
  { label = "DDPM 999", scheduler = "ddpm", steps = 999, cfg = 7.5 },
  { label = "DDPM 20", scheduler = "ddpm", steps = 20, cfg = 7.5 },
]
"#;

#[test]
fn sigterm_stops_an_exercise_with_143_and_saves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, LONG_EXERCISE).unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let mut p = Running::start(&[
        "--config",
        config.to_str().unwrap(),
        "exercise",
        "7",
        "--device",
        "cpu",
        "--out",
        out.to_str().unwrap(),
    ]);
    p.wait_until("the signal handlers", |p| p.handles(15));
    // Give the worker time to load the model and start the long run (not needed for the
    // outcome: a run still queued is cancelled just the same).
    std::thread::sleep(Duration::from_millis(1500));
    p.kill("TERM");
    let (code, err) = p.finish();
    assert_eq!(code, Some(143), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("speedscape: stopped by SIGTERM: "))
        .unwrap_or_else(|| panic!("no 'stopped by SIGTERM' line: {err}"));
    // The long run was stopped (it would have finished in seconds more), the next never began.
    assert!(line.contains(": DDPM 999 cancelled "), "{line}");
    assert!(
        line.ends_with("; DDPM 20 cancelled before it started; nothing was saved"),
        "{line}"
    );
    assert_eq!(
        entries(&out),
        Vec::<String>::new(),
        "no folder, no temp files"
    );
}

#[test]
fn sigint_stops_generate_mid_run_with_130_and_writes_no_image() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("x.png");
    let mut p = Running::start(&[
        "generate",
        "--prompt",
        "a red fox",
        "--scheduler",
        "ddpm",
        "--steps",
        "999",
        "--cfg",
        "7.5",
        "--seed",
        "1",
        "--device",
        "cpu",
        "--out",
        png.to_str().unwrap(),
    ]);
    // Its progress goes to stderr: stop it once some steps are done.
    p.wait_until("step 5", |p| p.stderr().contains("step 5/999"));
    p.kill("INT");
    let (code, err) = p.finish();
    assert_eq!(code, Some(130), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("speedscape: stopped by SIGINT: "))
        .unwrap_or_else(|| panic!("no 'stopped by SIGINT' line: {err}"));
    let done: usize = line
        .strip_prefix("speedscape: stopped by SIGINT: the run was cancelled after ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!((5..999).contains(&done), "{line}");
    assert!(
        line.ends_with(&format!(" of 999 steps; {} was not written", png.display())),
        "{line}"
    );
    assert_eq!(
        entries(dir.path()),
        Vec::<String>::new(),
        "no image, no temp file"
    );
}

#[test]
fn sighup_stops_bench_with_129_and_writes_no_json() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let mut p = Running::start(&[
        "bench",
        "--runs",
        "ddpm:999",
        "--warmup",
        "0",
        "--repeat",
        "1",
        "--device",
        "cpu",
        "--json",
        json.to_str().unwrap(),
    ]);
    p.wait_until("the signal handlers", |p| p.handles(1));
    std::thread::sleep(Duration::from_millis(1500));
    p.kill("HUP");
    let (code, err) = p.finish();
    assert_eq!(code, Some(129), "{err}");
    assert!(
        err.contains(
            "speedscape: stopped by SIGHUP: the run under way was cancelled; nothing was written"
        ),
        "{err}"
    );
    assert_eq!(
        entries(dir.path()),
        Vec::<String>::new(),
        "no json, no temp file"
    );
}
