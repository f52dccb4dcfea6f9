//! `speedscape` with no subcommand: the interactive exercises, with their flags over config.toml.

use std::path::PathBuf;
use std::process::ExitCode;

use speedscape::config::{Config, Graphics};

use super::args::TuiArgs;

/// `graphics`: `--graphics`, a global flag (the TUI's only). `--preview` and `--preview-every`
/// stand in for `[tui] preview` and `preview_every`.
pub fn run(
    config: &Config,
    graphics: Option<Graphics>,
    args: TuiArgs,
) -> color_eyre::Result<ExitCode> {
    let (graphics, graphics_source) = match graphics {
        Some(g) => (g, "--graphics"),
        None => (config.tui.graphics, "config.toml"),
    };
    let mut config = config.clone();
    if let Some(kind) = args.preview {
        config.tui.preview = kind;
    }
    if let Some(n) = args.preview_every {
        config.tui.preview_every = n as usize;
    }
    speedscape::tui::run(
        &config,
        speedscape::tui::Options {
            graphics,
            graphics_source,
            device: args.engine.device(),
            model_dir: args.engine.model.model_dir,
            #[cfg(feature = "test-hooks")]
            fake_backend: args.fake_backend,
            rng: args.engine.rng,
            save_root: args
                .out
                .or_else(|| config.tui.out.clone())
                .unwrap_or_else(|| PathBuf::from("speedscape-out")),
        },
    )?;
    Ok(ExitCode::SUCCESS)
}
