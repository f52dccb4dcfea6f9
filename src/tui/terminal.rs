//! The real terminal: whether the TUI can run on it at all, which terminal it is (its
//! XTVERSION answer: name and version), entering raw mode and the alternate screen, and giving
//! the terminal back on every way out — quit, error, signal, end of input, a panic on the UI
//! thread.
//!
//! Panics: while the TUI owns the terminal, a panic on the UI thread restores the terminal
//! first, then prints the report and how to report it. A panic on another thread (the inference
//! worker catches its own and shows it as the run's error) must not write over the screen: it is
//! kept and printed once the terminal is back.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use color_eyre::eyre::{WrapErr, bail};
use crossterm::ExecutableCommand;
use ratatui::DefaultTerminal;

use crate::error::Fixable;

/// The commands that work without a terminal, for the refusals' "Fix:" lines.
pub const HEADLESS_HINT: &str = "the headless commands: `speedscape exercise N` (e.g. `speedscape exercise 1 --out DIR`), `speedscape generate --prompt … --out image.png`, `speedscape bench`";

/// What to print after a panic's report.
pub const BUG_HINT: &str = "This is a bug in speedscape (the terminal has been restored): please report it with the message above and what you were doing.";

/// Refuses, with why and what to do instead, a terminal the TUI cannot run on: `TERM=dumb`
/// (no alternate screen, no cursor movement), or stdin/stdout not a terminal (a pipe, a file,
/// /dev/null). Nothing is written to the terminal before this passes.
pub fn check(term: Option<&str>, stdin_tty: bool, stdout_tty: bool) -> color_eyre::Result<()> {
    if term == Some("dumb") {
        bail!(Fixable::new(
            "the terminal is TERM=dumb, which cannot show the interactive exercises (they need an alternate screen and cursor movement)",
            format!(
                "run speedscape in a full terminal (e.g. TERM=xterm-256color), or use {HEADLESS_HINT}"
            ),
        ));
    }
    let not = match (stdin_tty, stdout_tty) {
        (true, true) => return Ok(()),
        (false, true) => "stdin is",
        (true, false) => "stdout is",
        (false, false) => "stdin and stdout are",
    };
    bail!(Fixable::new(
        format!(
            "speedscape with no command opens the interactive exercises, which need a terminal, but {not} not one (a pipe, a file or /dev/null)"
        ),
        format!("run it in a terminal, or use {HEADLESS_HINT}"),
    ))
}

/// [`check`] on this process.
pub fn check_this_process() -> color_eyre::Result<()> {
    check(
        std::env::var("TERM").ok().as_deref(),
        std::io::stdin().is_terminal(),
        std::io::stdout().is_terminal(),
    )
}

/// A terminal as it names itself in its XTVERSION reply (`DCS > | text ST`): `kitty(0.26.5)`,
/// `XTerm(379)`, `WezTerm 20240203-110809-5046fc22`, `foot(1.16.2)`, `tmux 3.3a`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TerminalId {
    pub name: String,
    /// As the terminal wrote it (`None`: it gave a name only).
    pub version: Option<String>,
}

impl TerminalId {
    /// Whether this is `name` (case-insensitive: xterm says `XTerm`).
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    /// The version's leading numbers (`0.26.5` → [0, 26, 5]; `3.3a` → [3, 3]); `None` when it
    /// does not start with a number.
    pub fn version_numbers(&self) -> Option<Vec<u32>> {
        let v = self.version.as_deref()?;
        let mut out = Vec::new();
        for part in v.split('.') {
            let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
            let Ok(n) = digits.parse() else { break };
            out.push(n);
            if digits.len() < part.len() {
                break;
            }
        }
        (!out.is_empty()).then_some(out)
    }

    /// Whether the version is at least `min` (`None`: the version is unknown).
    pub fn at_least(&self, min: &[u32]) -> Option<bool> {
        let v = self.version_numbers()?;
        Some(v.as_slice() >= min)
    }
}

impl std::fmt::Display for TerminalId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.version {
            Some(v) => write!(f, "{} {v}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// What the terminal said to [`identify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// It answered XTVERSION.
    Named(TerminalId),
    /// It answered the device-attributes query but not XTVERSION (older terminals).
    Unnamed,
    /// Nothing came back in time.
    Silent,
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Named(t) => t.fmt(f),
            Identity::Unnamed => f.write_str("unknown (it does not answer XTVERSION)"),
            Identity::Silent => f.write_str("unknown (it did not answer)"),
        }
    }
}

impl Identity {
    pub fn terminal(&self) -> Option<&TerminalId> {
        match self {
            Identity::Named(t) => Some(t),
            _ => None,
        }
    }
}

/// Longest [`identify`] waits for the terminal's answer.
pub const IDENTIFY_TIMEOUT: Duration = Duration::from_millis(500);

/// XTVERSION (`CSI > q`), then primary device attributes (`CSI c`), which every terminal
/// answers, after XTVERSION's reply when it has one: that reply ends the wait.
const IDENTIFY_QUERY: &[u8] = b"\x1b[>q\x1b[c";

/// Asks the terminal who it is and reads the answer with a deadline ([`IDENTIFY_TIMEOUT`]),
/// stopping at the device-attributes reply, so a terminal that never answers costs the timeout
/// and nothing is left reading stdin. Raw mode is switched on for the question when it is not
/// on already (and back off after). Call only when stdin and stdout are a terminal.
pub fn identify() -> Identity {
    let was_raw = crossterm::terminal::is_raw_mode_enabled().unwrap_or(false);
    if !was_raw && crossterm::terminal::enable_raw_mode().is_err() {
        return Identity::Silent;
    }
    let mut out = std::io::stdout();
    let asked = out.write_all(IDENTIFY_QUERY).and_then(|()| out.flush());
    let reply = if asked.is_ok() {
        read_reply(Instant::now() + IDENTIFY_TIMEOUT)
    } else {
        Vec::new()
    };
    if !was_raw {
        let _ = crossterm::terminal::disable_raw_mode();
    }
    parse_identity(&reply)
}

/// Bytes from stdin until the device-attributes reply is in or `deadline` passes. Reads the
/// file descriptor itself (not std's buffered stdin), so nothing after the reply is held back
/// from the event reader.
fn read_reply(deadline: Instant) -> Vec<u8> {
    let mut reply = Vec::new();
    while da1_reply_end(&reply).is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let mut fd = libc::pollfd {
            fd: libc::STDIN_FILENO,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd, its count 1.
        let ready = unsafe { libc::poll(&mut fd, 1, ms) };
        if ready < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        if ready <= 0 {
            break;
        }
        let mut chunk = [0u8; 256];
        // SAFETY: reads at most chunk.len() bytes into chunk.
        let n = unsafe { libc::read(libc::STDIN_FILENO, chunk.as_mut_ptr().cast(), chunk.len()) };
        if n <= 0 {
            break;
        }
        reply.extend_from_slice(&chunk[..n as usize]);
    }
    reply
}

/// Where the device-attributes reply (`CSI ? Ps ; … c`) ends in `bytes`, if it is there.
fn da1_reply_end(bytes: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(at) = find(&bytes[from..], b"\x1b[?") {
        let start = from + at + 3;
        let params = bytes[start..]
            .iter()
            .take_while(|b| b.is_ascii_digit() || **b == b';')
            .count();
        match bytes.get(start + params) {
            Some(b'c') => return Some(start + params + 1),
            _ => from = start,
        }
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads what the terminal answered to [`IDENTIFY_QUERY`].
pub fn parse_identity(reply: &[u8]) -> Identity {
    if let Some(t) = parse_xtversion(reply) {
        return Identity::Named(t);
    }
    if da1_reply_end(reply).is_some() {
        Identity::Unnamed
    } else {
        Identity::Silent
    }
}

/// The XTVERSION reply in `reply` (`ESC P > | text ESC \`, or ended by BEL), as name and
/// version: `name(version)` or `name version`.
pub fn parse_xtversion(reply: &[u8]) -> Option<TerminalId> {
    let start = find(reply, b"\x1bP>|")? + 4;
    let rest = &reply[start..];
    let end = find(rest, b"\x1b\\").or_else(|| rest.iter().position(|b| *b == 0x07))?;
    let text = String::from_utf8_lossy(&rest[..end]);
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let (name, version) = match text.split_once('(') {
        Some((name, v)) => (name, Some(v.trim_end_matches(')'))),
        None => match text.split_once(' ') {
            Some((name, v)) => (name, Some(v)),
            None => (text, None),
        },
    };
    let version = version.map(str::trim).filter(|v| !v.is_empty());
    Some(TerminalId {
        name: name.trim().to_string(),
        version: version.map(str::to_string),
    })
}

/// The TUI owns the terminal (raw mode, alternate screen).
static ENTERED: AtomicBool = AtomicBool::new(false);
/// The thread that draws: a panic on it gives the terminal back.
static UI_THREAD: Mutex<Option<ThreadId>> = Mutex::new(None);
/// Panics on other threads while the TUI owned the terminal, printed once it is back.
static BACKGROUND_PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());
static HOOK: std::sync::Once = std::sync::Once::new();

/// Raw mode off, the alternate screen left, the cursor shown — once, however many ways out
/// call it (leaving the alternate screen twice would move the cursor over what was printed in
/// between). Errors are ignored: after SIGHUP there is no terminal to restore.
pub fn restore() {
    if !ENTERED.swap(false, Ordering::SeqCst) {
        return;
    }
    let _ = crossterm::terminal::disable_raw_mode();
    let mut out = std::io::stdout();
    let _ = out.execute(crossterm::terminal::LeaveAlternateScreen);
    let _ = out.execute(crossterm::cursor::Show);
    let _ = out.flush();
}

/// Panics on other threads kept while the TUI ran (see the module's docs).
pub fn take_background_panics() -> Vec<String> {
    std::mem::take(&mut *lock(&BACKGROUND_PANICS))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn panic_message(info: &std::panic::PanicHookInfo) -> String {
    let payload = info
        .payload()
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| info.payload().downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into());
    let at = info
        .location()
        .map(|l| format!(" at {}:{}", l.file(), l.line()))
        .unwrap_or_default();
    let thread = std::thread::current();
    format!(
        "thread '{}' panicked{at}: {payload}",
        thread.name().unwrap_or("unnamed")
    )
}

fn install_hook() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !ENTERED.load(Ordering::SeqCst) {
                return previous(info);
            }
            let on_ui = *lock(&UI_THREAD) == Some(std::thread::current().id());
            if on_ui {
                restore();
                previous(info);
                let _ = writeln!(std::io::stderr(), "\n{BUG_HINT}");
            } else {
                lock(&BACKGROUND_PANICS).push(panic_message(info));
            }
        }));
    });
}

/// The terminal while the TUI owns it; dropping it gives the terminal back.
pub struct Session {
    pub terminal: DefaultTerminal,
}

impl Session {
    /// Raw mode and the alternate screen, with the panic hook in place first. Call
    /// [`check`] before: this writes to the terminal.
    pub fn enter() -> color_eyre::Result<Session> {
        install_hook();
        *lock(&UI_THREAD) = Some(std::thread::current().id());
        ENTERED.store(true, Ordering::SeqCst);
        let entered = (|| -> std::io::Result<DefaultTerminal> {
            crossterm::terminal::enable_raw_mode()?;
            std::io::stdout().execute(crossterm::terminal::EnterAlternateScreen)?;
            ratatui::Terminal::new(ratatui::backend::CrosstermBackend::new(std::io::stdout()))
        })();
        match entered {
            Ok(terminal) => Ok(Session { terminal }),
            Err(e) => {
                restore();
                Err(e).wrap_err("setting up the terminal (raw mode, alternate screen)")
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        restore();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(term: Option<&str>, stdin: bool, stdout: bool) -> String {
        format!("{}", check(term, stdin, stdout).unwrap_err())
    }

    #[test]
    fn a_terminal_passes_and_term_unset_is_no_reason_to_refuse() {
        assert!(check(Some("xterm-256color"), true, true).is_ok());
        assert!(check(None, true, true).is_ok());
    }

    #[test]
    fn no_terminal_is_refused_naming_the_stream_and_the_headless_commands() {
        for (stdin, stdout, what) in [
            (false, true, "but stdin is not one"),
            (true, false, "but stdout is not one"),
            (false, false, "but stdin and stdout are not one"),
        ] {
            let e = refusal(Some("xterm"), stdin, stdout);
            assert!(e.contains("need a terminal"), "{e}");
            assert!(e.contains(what), "{e}");
            assert!(e.contains("\nFix: "), "{e}");
            assert!(e.contains("`speedscape exercise N`"), "{e}");
            assert!(e.contains("`speedscape generate"), "{e}");
        }
    }

    #[test]
    fn term_dumb_is_refused_even_on_a_terminal() {
        let e = refusal(Some("dumb"), true, true);
        assert!(e.starts_with("the terminal is TERM=dumb"), "{e}");
        assert!(e.contains("alternate screen and cursor movement"), "{e}");
        assert!(
            e.contains("\nFix: run speedscape in a full terminal"),
            "{e}"
        );
        assert!(e.contains("`speedscape exercise N`"), "{e}");
    }

    fn named(reply: &str) -> TerminalId {
        match parse_identity(reply.as_bytes()) {
            Identity::Named(t) => t,
            other => panic!("{reply:?} gave {other:?}"),
        }
    }

    /// Replies as the terminals send them (kitty 0.26.5 and xterm 379 recorded under Xvfb by
    /// tests/real_terminals.sh; the others from their documentation and source), each followed
    /// by the device-attributes reply that ends the wait.
    #[test]
    fn xtversion_replies_of_real_terminals_give_name_and_version() {
        for (reply, name, version) in [
            (
                "\x1bP>|kitty(0.26.5)\x1b\\\x1b[?62;c",
                "kitty",
                Some("0.26.5"),
            ),
            (
                "\x1bP>|kitty(0.35.2)\x1b\\\x1b[?62;c",
                "kitty",
                Some("0.35.2"),
            ),
            (
                "\x1bP>|XTerm(379)\x1b\\\x1b[?63;1;2;4;6;9;15;16;22;28c",
                "XTerm",
                Some("379"),
            ),
            (
                "\x1bP>|WezTerm 20240203-110809-5046fc22\x1b\\\x1b[?65;4;6;18;22c",
                "WezTerm",
                Some("20240203-110809-5046fc22"),
            ),
            (
                "\x1bP>|foot(1.16.2)\x1b\\\x1b[?62;4;22c",
                "foot",
                Some("1.16.2"),
            ),
            (
                "\x1bP>|iTerm2 3.5.0\x1b\\\x1b[?62;4c",
                "iTerm2",
                Some("3.5.0"),
            ),
            ("\x1bP>|tmux 3.3a\x1b\\\x1b[?1;2c", "tmux", Some("3.3a")),
            (
                "\x1bP>|ghostty 1.1.3\x1b\\\x1b[?62;22c",
                "ghostty",
                Some("1.1.3"),
            ),
        ] {
            let t = named(reply);
            assert_eq!(t.name, name, "{reply:?}");
            assert_eq!(t.version.as_deref(), version, "{reply:?}");
        }
    }

    #[test]
    fn a_terminal_that_skips_xtversion_is_unnamed_and_silence_is_silent() {
        // xterm before patch 354, urxvt, the Linux console: device attributes only.
        assert_eq!(
            parse_identity(b"\x1b[?64;1;2;6;9;15;18;21;22c"),
            Identity::Unnamed
        );
        assert_eq!(parse_identity(b"\x1b[?6c"), Identity::Unnamed);
        assert_eq!(parse_identity(b""), Identity::Silent);
        // A cut-off reply is no answer.
        assert_eq!(parse_identity(b"\x1bP>|kitty(0.2"), Identity::Silent);
    }

    #[test]
    fn the_wait_ends_at_the_device_attributes_reply_not_before() {
        assert_eq!(da1_reply_end(b"\x1bP>|kitty(0.26.5)\x1b\\"), None);
        assert_eq!(da1_reply_end(b"\x1b[?62;"), None);
        let r = b"\x1bP>|kitty(0.26.5)\x1b\\\x1b[?62;c";
        assert_eq!(da1_reply_end(r), Some(r.len()));
        // A reply ended by BEL instead of ST.
        assert_eq!(named("\x1bP>|foot(1.16.2)\x07\x1b[?62c").name, "foot");
    }

    #[test]
    fn versions_compare_by_their_numbers() {
        let kitty = |v: &str| TerminalId {
            name: "kitty".into(),
            version: Some(v.into()),
        };
        assert_eq!(kitty("0.26.5").at_least(&[0, 28]), Some(false));
        assert_eq!(kitty("0.28.0").at_least(&[0, 28]), Some(true));
        assert_eq!(kitty("0.28").at_least(&[0, 28]), Some(true));
        assert_eq!(kitty("0.100.1").at_least(&[0, 28]), Some(true));
        assert_eq!(kitty("1.0").at_least(&[0, 28]), Some(true));
        assert_eq!(kitty("3.3a").version_numbers(), Some(vec![3, 3]));
        assert_eq!(kitty("nightly").at_least(&[0, 28]), None);
        let bare = TerminalId {
            name: "kitty".into(),
            version: None,
        };
        assert_eq!(bare.at_least(&[0, 28]), None);
        assert!(named("\x1bP>|XTerm(379)\x1b\\").is("xterm"));
        assert_eq!(
            named("\x1bP>|kitty(0.26.5)\x1b\\").to_string(),
            "kitty 0.26.5"
        );
    }
}
