//! `speedscape bench`: time runs (warm-up, then repeats) and print the table; `--json` also
//! writes every number; `--compare a.json b.json` prints the ratios of two earlier files instead.

use std::process::ExitCode;

use speedscape::bench;
use speedscape::config::Config;
use speedscape::report;

use super::args::BenchArgs;
use super::{check_control_images, existing};

pub fn run(config: &Config, args: BenchArgs) -> color_eyre::Result<ExitCode> {
    if let Some(files) = &args.compare {
        print!("{}", bench::compare(&files[0], &files[1])?);
        return Ok(ExitCode::SUCCESS);
    }
    let over = args.lora.adapters()?;
    let control = args.control.spec()?;
    if let Some(path) = &args.json {
        report::check_output_file(path, args.force)?;
    }
    let mut runs: Vec<bench::BenchSpec> = bench::BenchSpec::parse_list(config, &args.runs)?
        .into_iter()
        .map(|r| r.with_adapters(over))
        .map(|r| match &control {
            Some(c) => r.with_control(c),
            None => r,
        })
        .collect();
    // An exercise's built-in control image: the one drawn for the model in force, found where
    // speedscape is installed.
    let kind = speedscape::open::model_kind(config, args.engine.model.model_dir.as_deref());
    for c in runs.iter_mut().filter_map(|r| r.control.as_mut()) {
        c.image = speedscape::exercises::control_image_for(&c.image.to_string_lossy(), kind).into();
        speedscape::exercises::headless::locate_control(c)?;
    }
    // Before any model loads: every control image the runs read.
    check_control_images(
        config,
        runs.iter()
            .map(|r| (format!("bench run {}", r.spec), r.control.as_ref())),
    )?;
    if let Some(p) = &args.prompt {
        for r in &mut runs {
            r.prompt = p.clone();
        }
    }
    let opts = bench::BenchOptions {
        runs,
        size: args.size,
        warmup: args.warmup,
        repeat: args.repeat,
        seed: args.seed,
        rng: args.engine.rng,
        device: args.engine.device(),
        model_dir: args.engine.model.model_dir,
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        preview_thread: args.preview_thread,
    };
    let report = bench::run(config, &opts)?;
    speedscape::interrupt::check(|| "the runs had finished; nothing was written".into())?;
    print!("{}", bench::render(&report));
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        report::write_file(path, existing(args.force), |f| {
            f.write_all(json.as_bytes())?;
            Ok(())
        })?;
        eprintln!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
