//! `speedscape sweep`: the step sweeps (or, with `--lora-weights`, a weight sweep of one LoRA
//! adapter) headless, their points printed and saved (CSV, JSON, a PNG plot, a Markdown
//! summary) in a new folder. Exit 1 when a run failed (the table and the errors say which and
//! why).

use std::path::PathBuf;
use std::process::ExitCode;

use speedscape::config::Config;
use speedscape::report;
use speedscape::sweep::{self, Sweep, headless, output};

use super::args::SweepArgs;
use super::{check_control_images, passed, read_prompt, with_rng};

pub fn run(config: &Config, args: SweepArgs) -> color_eyre::Result<ExitCode> {
    let config = &with_rng(config, args.engine.rng);
    let plan = plan(config, &args)?;
    // Before any model loads: every control image the runs read.
    let runs = plan.plan().runs;
    check_control_images(
        config,
        runs.iter().map(|r| {
            (
                format!("sweep run {:?}", r.spec.label),
                r.spec.control.as_ref(),
            )
        }),
    )?;
    let root = args
        .out
        .or_else(|| config.tui.out.clone())
        .unwrap_or_else(|| PathBuf::from("speedscape-out"));
    // Before the runs: a bad --out must not cost them at the end.
    report::check_output_root(&root)?;
    let (device, model_dir) = (args.engine.device(), args.engine.model.model_dir);
    let outcome = headless::run_sweep(config, plan.plan(), device, model_dir, !args.json)?;
    speedscape::interrupt::check(|| format!("{}; nothing was saved", outcome.stopped_runs()))?;
    let saved = output::save_sweep(&root, &outcome);
    if args.json {
        let mut v = output::json(&outcome, &[]);
        v["saved"] = serde_json::json!(saved.as_ref().ok().map(|p| p.display().to_string()));
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", output::render(&outcome));
        if let Ok(p) = &saved {
            println!("\nsaved to {} ({})", p.display(), output::files(&outcome));
        }
    }
    saved?;
    Ok(passed(!outcome.any_failed()))
}

/// The sweep: config.toml's `[sweep]` for this model, then the flags over it. A weight sweep
/// (`--lora-weights`) runs the `lcm` method at 4 steps unless `--preset` and `--steps` say
/// otherwise.
fn plan(config: &Config, args: &SweepArgs) -> color_eyre::Result<Sweep> {
    let over = args.lora.adapters()?;
    let weights = args
        .lora_weights
        .as_deref()
        .map(sweep::parse_lora_weights)
        .transpose()?;
    let kind = speedscape::open::model_kind(config, args.engine.model_dir());
    let preset = match (&args.preset, &weights) {
        (Some(p), _) => p.as_str(),
        (None, Some(_)) => sweep::WEIGHT_PRESET,
        (None, None) => "all",
    };
    let mut plan =
        Sweep::from_config(&config.sweep.for_model(kind), Some(preset))?.with_adapters(over);
    match (&args.steps, &weights) {
        (Some(steps), _) => plan = plan.with_steps(&sweep::parse_steps(steps)?)?,
        (None, Some(_)) => plan = plan.with_steps(&sweep::WEIGHT_STEPS)?,
        (None, None) => {}
    }
    if let Some(axis) = weights {
        plan = plan.with_weights(axis);
    }
    if let Some(seed) = args.seed {
        plan = plan.with_first_seed(seed);
    }
    if let Some(n) = args.seeds {
        plan = plan.with_seed_count(n)?;
    }
    if args.prompt.is_some() || args.prompt_file.is_some() {
        plan = plan.with_prompt(read_prompt(
            args.prompt.clone(),
            args.prompt_file.as_deref(),
        )?);
    }
    if let Some(r) = &args.reference {
        plan = plan.with_reference(sweep::parse_reference(r)?);
    }
    if let Some(c) = args.control.spec()? {
        plan = plan.with_control(&c);
    }
    Ok(plan)
}
