//! `speedscape models export`: the exporter's environment, the export, then `model.dir` in the
//! config (asked on a terminal; `--yes` / `--no-config` for scripts). The work is
//! [`speedscape::export`]'s; this handler chooses the paths and talks to the user.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

use speedscape::config::Config;
use speedscape::error::Fixable;
use speedscape::export;

use super::args::ExportArgs;

pub fn run(config: &Config, config_path: &Path, args: ExportArgs) -> color_eyre::Result<ExitCode> {
    let wheel = speedscape::install::wheel();
    let out = match &args.out {
        Some(d) => std::path::absolute(d)?,
        None => export::default_out(wheel.is_some(), args.fp16)?,
    };
    let exporter_args = export::exporter_args(args.fp16, &args.optimize, &args.exporter)?;
    let exporter = export::exporter()?;
    let help = args.exporter.iter().any(|a| a == "--help" || a == "-h");
    if !help {
        export::check_out(&out, args.force)?;
    }
    let cache = speedscape::install::cache_dir().ok_or_else(|| {
        Fixable::new(
            "no cache folder for the exporter's environment (neither $XDG_CACHE_HOME nor $HOME is set)",
            "set XDG_CACHE_HOME to a folder with ~6 GB free",
        )
    })?;
    let python = export::ensure_env(&exporter, &cache)?;
    if help {
        // `speedscape models export -- --help`: the exporter's own flags, nothing exported.
        let status = std::process::Command::new(&python)
            .arg(&exporter.script)
            .arg("--help")
            .status()?;
        return Ok(ExitCode::from(
            u8::try_from(status.code().unwrap_or(1)).unwrap_or(1),
        ));
    }
    eprintln!(
        "speedscape: exporting into {} (built beside it, moved into place when complete)",
        out.display()
    );
    export::export(&python, &exporter, &out, &exporter_args, args.force)?;
    println!("exported: {}", out.display());
    offer_config(config, config_path, &out, &args)?;
    Ok(ExitCode::SUCCESS)
}

/// Sets `model.dir` in the config in force (`config_path`, the one speedscape read or would
/// read) when the user agrees: `--yes`, or "y" at the prompt on a terminal; otherwise prints the
/// line to add.
fn offer_config(
    config: &Config,
    config_path: &Path,
    out: &Path,
    args: &ExportArgs,
) -> color_eyre::Result<()> {
    let path = config
        .path
        .clone()
        .unwrap_or_else(|| std::path::absolute(config_path).unwrap_or(config_path.to_path_buf()));
    if config.model.dir.as_deref() == Some(out) {
        println!("model.dir in {} already names it", path.display());
        return Ok(());
    }
    let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    let write = if args.yes {
        true
    } else if args.no_config || !interactive {
        false
    } else {
        eprint!(
            "Set model.dir in {} to {}? [Y/n] ",
            path.display(),
            out.display()
        );
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        matches!(answer.trim().to_lowercase().as_str(), "" | "y" | "yes")
    };
    if !write {
        println!(
            "to use it: add `{}` under [model] in {}, or pass --model-dir {}",
            export::new_line(out),
            path.display(),
            out.display()
        );
        return Ok(());
    }
    let documented = speedscape::open::asset(Path::new("config.toml")).map_or_else(
        || "speedscape's README".to_string(),
        |p| p.display().to_string(),
    );
    export::write_model_dir(&path, out, &documented)?;
    println!("model.dir in {} is now {}", path.display(), out.display());
    Ok(())
}
