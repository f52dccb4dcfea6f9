//! speedscape's entry point: install the error report, parse the command line, run a subcommand
//! or the TUI (the interactive exercises) through [`cli`], and turn the outcome into the exit
//! code: the command's own, 128 + a signal's number when one stopped it, 1 for an error.

mod cli;

use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use color_eyre::eyre::WrapErr;

use cli::args::{Cli, Command};
use speedscape::config::Config;

/// Errors print as the message and its causes alone: no colours unless stderr is a terminal (and
/// `NO_COLOR` is unset), and no backtrace (a user's global `RUST_BACKTRACE=1` is for panics);
/// `SPEEDSCAPE_BACKTRACE=1` brings the error's backtrace back for a bug report.
fn install_error_report() -> color_eyre::Result<()> {
    use std::io::IsTerminal;
    if std::env::var_os("SPEEDSCAPE_BACKTRACE").is_some_and(|v| v != "0") {
        // SAFETY: first thing in main, before any other thread exists.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "1") };
    } else if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: as above.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let theme = if colour {
        color_eyre::config::Theme::dark()
    } else {
        color_eyre::config::Theme::new()
    };
    color_eyre::config::HookBuilder::default()
        .theme(theme)
        .display_env_section(false)
        .install()
}

fn main() -> ExitCode {
    if let Err(e) = install_error_report() {
        return print_error(&e);
    }
    let matches = match Cli::command().try_get_matches() {
        Ok(m) => m,
        Err(e) => return clap_exit(&e),
    };
    // An explicit --config must exist; the default config.toml may be missing.
    let explicit_config = Cli::config_given(&matches);
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => return clap_exit(&e),
    };
    // The commands that run the model stop cleanly on SIGINT, SIGTERM and SIGHUP (the TUI
    // waits for them in its own loop).
    if cli.command.as_ref().is_some_and(Command::stops_on_signals)
        && let Err(e) = speedscape::interrupt::install().wrap_err("installing the signal handlers")
    {
        return print_error(&e);
    }
    let result = run(cli, explicit_config);
    // A failure the command already reported (doctor, models, a failed run): its code, even if
    // a signal came meanwhile.
    if let Ok(code) = result
        && code != ExitCode::SUCCESS
    {
        return code;
    }
    if let Some((message, code)) = speedscape::interrupt::outcome(&result) {
        let _ = writeln!(std::io::stderr(), "speedscape: {message}");
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    match result {
        Ok(code) => code,
        Err(e) => print_error(&e),
    }
}

fn run(cli: Cli, explicit_config: bool) -> color_eyre::Result<ExitCode> {
    let config_path = cli
        .config
        .clone()
        .unwrap_or_else(speedscape::install::default_config_path);
    let config = Config::load(&config_path, explicit_config)?;
    match cli.command {
        Some(Command::Generate(args)) => cli::generate::run(&config, args),
        Some(Command::Tokens(args)) => cli::inspect::tokens(&config, args),
        Some(Command::Noise(args)) => cli::inspect::noise(args),
        Some(Command::Doctor(args)) => cli::inspect::doctor(&config, args),
        Some(Command::Models(args)) => cli::inspect::models(&config, &config_path, args),
        Some(Command::Bench(args)) => cli::bench::run(&config, args),
        Some(Command::Exercise(args)) => cli::exercise::run(&config, args),
        Some(Command::Sweep(args)) => cli::sweep::run(&config, args),
        Some(Command::Previews(args)) => cli::previews::run(&config, args),
        None => cli::tui::run(&config, cli.graphics, cli.tui),
    }
}

/// What `main` returning the error would print (std's `Termination` for `Result`: "Error: "
/// and the error's `Debug`, which is color-eyre's report); exit 1.
fn print_error(e: &color_eyre::Report) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "Error: {e:?}");
    ExitCode::FAILURE
}

/// What clap's `Error::exit` does, without exiting: help and version on stdout (exit 0), usage
/// errors on stderr (exit 2).
fn clap_exit(e: &clap::Error) -> ExitCode {
    let _ = e.print();
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
}
