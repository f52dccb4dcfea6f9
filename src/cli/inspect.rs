//! The commands that look rather than run: `tokens`, `noise`, `doctor`, `models` (and `models
//! verify`; `models export` is [`super::export`]'s). `doctor` and `models` exit 1 when their report says something failed (the report
//! already says what and how to fix it).

use std::process::ExitCode;

use color_eyre::eyre::{bail, eyre};
use ndarray::{ArrayD, IxDyn};

use speedscape::config::Config;
use speedscape::report;

use super::args::{DoctorArgs, ModelsAction, ModelsArgs, NoiseArgs, TokensArgs};
use super::{existing, passed, read_prompt};

pub fn tokens(config: &Config, args: TokensArgs) -> color_eyre::Result<ExitCode> {
    let prompt = read_prompt(args.prompt, args.prompt_file.as_deref())?;
    let (dir, _) = speedscape::open::model_dir(config, args.model.model_dir.as_deref())?;
    let tok = speedscape::models::ClipTokenizer::from_dir(&dir.join("tokenizer"))?;
    let t = tok.encode(&prompt)?;
    if args.json {
        println!("{}", serde_json::to_string(&t)?);
    } else {
        let ids: Vec<String> = t.ids.iter().map(u32::to_string).collect();
        println!("{}", ids.join(" "));
        println!("{} prompt tokens (of 75)", t.count);
    }
    for w in t.warnings() {
        eprintln!("warning: {w}");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn noise(args: NoiseArgs) -> color_eyre::Result<ExitCode> {
    let NoiseArgs {
        rng,
        seed,
        shape,
        draws,
        out,
        force,
    } = args;
    report::check_output_file(&out, force)?;
    let dims: Vec<usize> = shape
        .split(',')
        .map(|s| s.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| {
            eyre!("--shape {shape:?} is not a comma-separated list of sizes, e.g. 1,4,64,64")
        })?;
    if dims.is_empty() || dims.len() > 4 || dims.contains(&0) {
        bail!("--shape {shape:?} must have 1 to 4 positive sizes, e.g. 1,4,64,64");
    }
    if draws == 0 {
        bail!("--draws must be at least 1");
    }
    // Fewer than 4 dims: leading ones; the elements and their order are the same.
    let mut four = [1usize; 4];
    four[4 - dims.len()..].copy_from_slice(&dims);
    let mut source = rng.generator(seed);
    let mut data = Vec::with_capacity(draws * four.iter().product::<usize>());
    for _ in 0..draws {
        data.extend(source.randn(four).iter().copied());
    }
    let mut full = vec![draws];
    full.extend(&dims);
    let arr = ArrayD::from_shape_vec(IxDyn(&full), data)?;
    report::save_npy_as(&out, &arr, existing(force))?;
    println!(
        "wrote {} draws of {dims:?} ({rng}, seed {seed}) to {}",
        draws,
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub fn doctor(config: &Config, args: DoctorArgs) -> color_eyre::Result<ExitCode> {
    let device = args.device.device.unwrap_or(config.runtime.device);
    let report = speedscape::doctor::run(config, device, args.model.model_dir.as_deref());
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(passed(report.fatal().is_none()))
}

pub fn models(
    config: &Config,
    config_path: &std::path::Path,
    args: ModelsArgs,
) -> color_eyre::Result<ExitCode> {
    use speedscape::inventory;
    let ok = match args.action {
        None => {
            let (dir, kind) = speedscape::open::model_dir(config, args.model.model_dir.as_deref())?;
            let inv = inventory::inventory(config, &dir, kind);
            if args.json {
                println!("{}", serde_json::to_string_pretty(&inv)?);
            } else {
                print!("{}", inv.render());
            }
            inv.ok()
        }
        Some(ModelsAction::Verify { dir, device, json }) => {
            let dir = dir.or(args.model.model_dir);
            let (dir, _) = speedscape::open::model_dir(config, dir.as_deref())?;
            let device = device.device.unwrap_or(config.runtime.device);
            let report = inventory::verify(config, &dir, device, &mut |line| eprint!("{line}"));
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render());
            }
            report.passed
        }
        Some(ModelsAction::Export(export)) => {
            return super::export::run(config, config_path, export);
        }
    };
    Ok(passed(ok))
}
