//! Stopping on SIGINT, SIGTERM and SIGHUP (an SSH connection that drops sends SIGHUP): the run
//! under way is cancelled, nothing half-written is left behind, and speedscape exits with
//! 128 + the signal's number (130, 143, 129).
//!
//! The TUI waits for the signals in its own event loop (see `tui::run`). The headless commands
//! (`generate`, `exercise`, `bench`) call [`install`] first: a thread then waits for the signals;
//! the first one sets [`flag`] (the pipeline checks it between steps) and calls the hooks
//! registered with [`on_signal`] (the worker's runs are cancelled); a second one exits at once
//! (a save under way at that instant may then leave its hidden `.speedscape-*` staging folder).
//! Outputs are written through temp files and folders renamed into place only once whole, and a
//! command checks [`check`] before it starts writing, so a signal leaves either nothing or a
//! whole output.

use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};

/// The signals speedscape stops on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT: ctrl-c in a shell (in the TUI ctrl-c is a key: it quits).
    Interrupt,
    /// SIGTERM: `kill`, a service manager, a container stopping.
    Terminate,
    /// SIGHUP: the terminal went away (an SSH connection dropped, the window closed).
    Hangup,
}

impl Signal {
    pub const ALL: [Signal; 3] = [Signal::Interrupt, Signal::Terminate, Signal::Hangup];

    /// The signal's number on Linux (and every Unix).
    pub fn number(self) -> i32 {
        match self {
            Signal::Interrupt => 2,
            Signal::Terminate => 15,
            Signal::Hangup => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
            Signal::Hangup => "SIGHUP",
        }
    }

    /// What a shell reports for a process the signal killed: 128 + its number.
    pub fn exit_code(self) -> i32 {
        128 + self.number()
    }

    fn from_number(n: i32) -> Option<Signal> {
        Signal::ALL.into_iter().find(|s| s.number() == n)
    }

    /// tokio's name for it.
    pub fn kind(self) -> tokio::signal::unix::SignalKind {
        use tokio::signal::unix::SignalKind;
        match self {
            Signal::Interrupt => SignalKind::interrupt(),
            Signal::Terminate => SignalKind::terminate(),
            Signal::Hangup => SignalKind::hangup(),
        }
    }
}

/// A command stopped by a signal: what was stopped and what was (not) written. `main` prints it
/// and exits with [`Signal::exit_code`].
#[derive(Debug)]
pub struct Interrupted {
    pub signal: Signal,
    /// e.g. "the run was cancelled after 12 of 50 steps; nothing was written".
    pub what: String,
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stopped by {}: {}", self.signal.name(), self.what)
    }
}

impl std::error::Error for Interrupted {}

/// The first signal received (its number; 0: none).
static RECEIVED: AtomicI32 = AtomicI32::new(0);
/// Set by the first signal: the pipeline's cancel flag for the headless commands.
static CANCEL: AtomicBool = AtomicBool::new(false);
type HookFn = Box<dyn Fn() + Send>;
static HOOKS: Mutex<Vec<(u64, HookFn)>> = Mutex::new(Vec::new());
static NEXT_HOOK: AtomicU64 = AtomicU64::new(1);

/// The cancel flag a signal sets (pass it as a run's `cancel`).
pub fn flag() -> &'static AtomicBool {
    &CANCEL
}

/// The first signal received, if any.
pub fn received() -> Option<Signal> {
    Signal::from_number(RECEIVED.load(Ordering::SeqCst))
}

/// `Err(Interrupted)` with `what` once a signal has been received: call it before writing.
pub fn check(what: impl FnOnce() -> String) -> Result<(), Interrupted> {
    match received() {
        Some(signal) => Err(Interrupted {
            signal,
            what: what(),
        }),
        None => Ok(()),
    }
}

/// Keeps a hook registered with [`on_signal`]; dropping it removes the hook.
pub struct Hook(u64);

impl Drop for Hook {
    fn drop(&mut self) {
        let mut hooks = HOOKS.lock().unwrap_or_else(|p| p.into_inner());
        hooks.retain(|(id, _)| *id != self.0);
    }
}

/// Calls `f` when the first signal arrives (at once if one already has), e.g. to cancel runs.
pub fn on_signal(f: impl Fn() + Send + 'static) -> Hook {
    let id = NEXT_HOOK.fetch_add(1, Ordering::Relaxed);
    let mut hooks = HOOKS.lock().unwrap_or_else(|p| p.into_inner());
    if received().is_some() {
        f();
    }
    hooks.push((id, Box::new(f)));
    Hook(id)
}

fn deliver(signal: Signal) {
    let first = RECEIVED
        .compare_exchange(0, signal.number(), Ordering::SeqCst, Ordering::SeqCst)
        .is_ok();
    if !first {
        // The first one is being handled; a second means "now".
        let _ = writeln!(
            std::io::stderr(),
            "\nspeedscape: {} again: exiting at once",
            signal.name()
        );
        std::process::exit(signal.exit_code());
    }
    CANCEL.store(true, Ordering::SeqCst);
    let hooks = HOOKS.lock().unwrap_or_else(|p| p.into_inner());
    for (_, hook) in hooks.iter() {
        hook();
    }
}

/// Takes over SIGINT, SIGTERM and SIGHUP for a headless command (see the module's docs). The
/// handlers are in place when this returns.
pub fn install() -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let mut streams = {
        let _entered = runtime.enter();
        let mut v = Vec::new();
        for s in Signal::ALL {
            v.push((s, tokio::signal::unix::signal(s.kind())?));
        }
        v
    };
    std::thread::Builder::new()
        .name("speedscape-signals".into())
        .spawn(move || {
            runtime.block_on(async move {
                loop {
                    let [(a, sa), (b, sb), (c, sc)] = &mut streams[..] else {
                        return;
                    };
                    let got = tokio::select! {
                        Some(()) = sa.recv() => *a,
                        Some(()) = sb.recv() => *b,
                        Some(()) = sc.recv() => *c,
                        else => return,
                    };
                    deliver(got);
                }
            })
        })?;
    Ok(())
}

/// Where a command's result meets a signal, for `main`: `Some((message, exit code))` when the
/// command was stopped by one (its error says so) or one arrived while it ran.
pub fn outcome<T>(result: &color_eyre::Result<T>) -> Option<(String, i32)> {
    if let Err(e) = result
        && let Some(i) = e.downcast_ref::<Interrupted>()
    {
        return Some((i.to_string(), i.signal.exit_code()));
    }
    let signal = received()?;
    let what = match result {
        Ok(_) => "it came as the command finished; what it wrote is complete",
        Err(_) => "the run under way was cancelled; nothing was written",
    };
    Some((
        Interrupted {
            signal,
            what: what.into(),
        }
        .to_string(),
        signal.exit_code(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_128_plus_the_signal_number() {
        assert_eq!(Signal::Interrupt.exit_code(), 130);
        assert_eq!(Signal::Terminate.exit_code(), 143);
        assert_eq!(Signal::Hangup.exit_code(), 129);
        for s in Signal::ALL {
            assert_eq!(Signal::from_number(s.number()), Some(s));
        }
    }

    #[test]
    fn an_interrupted_error_names_the_signal_and_what_happened() {
        let e: color_eyre::Report = Interrupted {
            signal: Signal::Terminate,
            what: "the run was cancelled; nothing was written".into(),
        }
        .into();
        let r: color_eyre::Result<()> = Err(e);
        assert_eq!(
            outcome(&r),
            Some((
                "stopped by SIGTERM: the run was cancelled; nothing was written".into(),
                143
            ))
        );
        // No signal (none is ever sent to the test process): no outcome.
        assert_eq!(outcome(&Ok(())), None);
        assert_eq!(outcome::<()>(&Err(color_eyre::eyre::eyre!("other"))), None);
    }
}
