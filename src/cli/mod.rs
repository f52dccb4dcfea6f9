//! The command line below `main`: clap's structs ([`args`]), one handler per command or group
//! (each returns the exit code; an error is `main`'s to print), and what the handlers share.

pub mod args;
pub mod bench;
pub mod exercise;
pub mod export;
pub mod generate;
pub mod inspect;
pub mod previews;
pub mod sweep;
pub mod tui;

use std::path::Path;
use std::process::ExitCode;

use speedscape::config::Config;
use speedscape::exercises::ControlSpec;
use speedscape::report::Existing;
use speedscape::rng::RngSource;

/// `--prompt`, or the text of `--prompt-file` (a note on stderr when only its head was read).
fn read_prompt(prompt: Option<String>, file: Option<&Path>) -> color_eyre::Result<String> {
    let Some(path) = file else {
        return Ok(prompt.unwrap_or_default());
    };
    let (text, note) = speedscape::models::prompt::read_prompt_file(path)?;
    if let Some(note) = note {
        eprintln!("warning: {note}");
    }
    Ok(text)
}

/// `config` with `runtime.rng` set to `--rng` when it was given.
fn with_rng(config: &Config, rng: Option<RngSource>) -> Config {
    let mut config = config.clone();
    if let Some(rng) = rng {
        config.runtime.rng = rng;
    }
    config
}

/// Reads each control image of `runs` (what names a run, its control; each file once) before
/// any model session loads, so a missing, unreadable or non-image file stops the command at
/// once; its error names the run and the config file that set it. The command line's control
/// image was read when its flags were ([`args::ControlArgs::spec`]).
fn check_control_images<'a>(
    config: &Config,
    runs: impl IntoIterator<Item = (String, Option<&'a ControlSpec>)>,
) -> color_eyre::Result<()> {
    let file = config.path.as_deref().map_or_else(
        || "the built-in defaults".to_string(),
        |p| p.display().to_string(),
    );
    let mut read: Vec<&Path> = Vec::new();
    for (run, control) in runs {
        let Some(c) = control else { continue };
        if read.contains(&c.image.as_path()) {
            continue;
        }
        speedscape::pipeline::control_image::load_control_image(&c.image).map_err(|e| {
            speedscape::error::prefixed(format!("{run} (control set in {file}): "), e)
        })?;
        read.push(&c.image);
    }
    Ok(())
}

/// What `--force` means for an output that exists.
fn existing(force: bool) -> Existing {
    if force {
        Existing::Replace
    } else {
        Existing::Refuse
    }
}

/// Exit 0 when everything passed, else 1: what was printed already says what failed and why.
fn passed(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
