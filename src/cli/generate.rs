//! `speedscape generate`: one image, written as PNG (and the raw floats), with its timings.
//! Phases: check the outputs, open the runtime and model, say the tokenizer's warnings, run the
//! pipeline, write.

use std::path::Path;
use std::process::ExitCode;

use color_eyre::eyre::WrapErr;
use ndarray::{Array4, ArrayD};

use speedscape::config::Config;
use speedscape::error::Fixable;
use speedscape::exercises::ControlSpec;
use speedscape::models::Model;
use speedscape::pipeline::{self, Request};
use speedscape::report;
use speedscape::runtime::Runtime;
use speedscape::schedulers::SchedulerOptions;

use super::args::GenerateArgs;
use super::{existing, read_prompt};

pub fn run(config: &Config, args: GenerateArgs) -> color_eyre::Result<ExitCode> {
    args.lora.adapters()?;
    // Before anything loads: the control flags and the control image.
    let control = args.control.spec()?;
    // Before the run: a bad output path must not cost the image at its end.
    report::check_output_file(&args.out, args.force)?;
    if let Some(raw) = &args.save_raw {
        report::check_output_file(raw, args.force)?;
    }
    let prompt = read_prompt(args.prompt.clone(), args.prompt_file.as_deref())?;
    let device = args.engine.device().unwrap_or(config.runtime.device);
    let rt = speedscape::open::runtime(config, Some(device))?;
    let (dir, _) = speedscape::open::model_dir(config, args.engine.model_dir())?;
    let mut model = speedscape::open::model(config, &rt, &dir)?;
    let latents = match &args.latents {
        Some(p) => Some(read_latents(p)?),
        None => None,
    };
    // What the tokenizer removes, cuts or drops is said now, before the run.
    let said = say_prompt_warnings(&model, &prompt, &args)?;
    let mut req = request(config, prompt, latents, &args);
    req.control = control.as_ref().map(ControlSpec::to_control);
    let out = denoise(&rt, &mut model, &req, &args)?;
    for w in out.report.warnings.iter().filter(|w| !said.contains(w)) {
        eprintln!("warning: {w}");
    }
    write(&out, &args)?;
    Ok(ExitCode::SUCCESS)
}

/// Prints the tokenizer's warnings for the prompt (and the negative prompt, which is only
/// encoded under guidance, cfg > 1); returns them, so the report's copies are not said twice.
fn say_prompt_warnings(
    model: &Model,
    prompt: &str,
    args: &GenerateArgs,
) -> color_eyre::Result<Vec<String>> {
    let mut said = Vec::new();
    let negative = (args.cfg > 1.0).then_some(("negative ", args.negative_prompt.as_str()));
    for (what, p) in [("", prompt)].into_iter().chain(negative) {
        for w in model.tokenizer.encode(p)?.warnings() {
            eprintln!("warning: {what}{w}");
            said.push(format!("{what}{w}"));
        }
    }
    Ok(said)
}

fn request(
    config: &Config,
    prompt: String,
    latents: Option<Array4<f32>>,
    args: &GenerateArgs,
) -> Request {
    let options = SchedulerOptions {
        solver_order: args.order,
        use_karras_sigmas: args.karras.then_some(true),
        ..SchedulerOptions::default()
    };
    Request {
        prompt,
        negative_prompt: args.negative_prompt.clone(),
        scheduler: args.scheduler,
        scheduler_options: options,
        steps: args.steps,
        guidance: args.cfg,
        seed: args.seed,
        rng: args.engine.rng.unwrap_or(config.runtime.rng),
        unet: args.unet.clone(),
        loras: args.lora.lora.clone(),
        width: args.width,
        height: args.height,
        latents,
        clip_score: false,
        judge: false,
        control: None,
    }
}

/// Runs the pipeline with progress on stderr (unless `--json`); a signal (SIGINT, SIGTERM,
/// SIGHUP) stops it between steps and becomes an `Interrupted` error saying nothing was written.
fn denoise(
    rt: &Runtime,
    model: &mut Model,
    req: &Request,
    args: &GenerateArgs,
) -> color_eyre::Result<pipeline::RunOutput> {
    let cancel = speedscape::interrupt::flag();
    let show_progress = !args.json;
    let mut shown = false;
    let out = pipeline::generate(rt, model, req, cancel, &mut |ev| {
        if show_progress {
            shown = true;
            eprint!(
                "\rstep {}/{} (t={})   ",
                ev.index + 1,
                ev.total,
                ev.timestep
            );
        }
    });
    if shown {
        // The error, if any, starts on its own line.
        eprintln!();
    }
    let steps = req.steps;
    let not_written = |how: String| format!("{how}; {} was not written", args.out.display());
    if let Err(e) = &out
        && let Some(c) = e.downcast_ref::<pipeline::Cancelled>()
    {
        speedscape::interrupt::check(|| {
            not_written(format!(
                "the run was cancelled after {} of {steps} steps",
                c.completed
            ))
        })?;
    }
    let out = out?;
    speedscape::interrupt::check(|| not_written("the run had finished".into()))?;
    Ok(out)
}

fn write(out: &pipeline::RunOutput, args: &GenerateArgs) -> color_eyre::Result<()> {
    report::save_png_as(&args.out, &out.rgb8(), existing(args.force))?;
    if let Some(raw) = &args.save_raw {
        report::save_npy_as(raw, &out.image, existing(args.force))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out.report)?);
    } else {
        print!("{}", report::summary(&out.report));
        println!("wrote {}", args.out.display());
    }
    Ok(())
}

fn read_latents(path: &Path) -> color_eyre::Result<Array4<f32>> {
    let arr: ArrayD<f32> = ndarray_npy::read_npy(path).map_err(|e| {
        Fixable::new(
            format!("cannot read latents from {}: {e}", path.display()),
            "pass a float32 .npy of shape [1,4,h,w]",
        )
    })?;
    arr.into_dimensionality()
        .wrap_err_with(|| format!("{} must have 4 dimensions [1,4,h,w]", path.display()))
}
