//! The real terminal: whether the TUI can run on it at all, entering raw mode and the alternate
//! screen, and giving the terminal back on every way out — quit, error, signal, end of input,
//! a panic on the UI thread.
//!
//! Panics: while the TUI owns the terminal, a panic on the UI thread restores the terminal
//! first, then prints the report and how to report it. A panic on another thread (the inference
//! worker catches its own and shows it as the run's error) must not write over the screen: it is
//! kept and printed once the terminal is back.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::ThreadId;

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
}
