//! `speedscape sweep`: the step sweeps (or, with `--lora-weights`, a weight sweep of one LoRA
//! adapter) headless, their points printed and saved (CSV, JSON, a PNG plot, a Markdown
//! summary) in a new folder. Exit 1 when a run failed (the table and the errors say which and
//! why).

use std::path::PathBuf;

use color_eyre::eyre::bail;
use std::process::ExitCode;

use speedscape::config::Config;
use speedscape::report::{self, Existing};
use speedscape::sweep::headless::{self, Engine, SweepOutcome};
use speedscape::sweep::prompt_set::PromptSet;
use speedscape::sweep::shard::{self, ModelIdentity, PlanFile};
use speedscape::sweep::{self, Sweep, output};

use super::args::{
    SweepAction, SweepArgs, SweepFlags, SweepMergeArgs, SweepPlanArgs, SweepRunArgs,
};
use super::{check_control_images, passed, read_prompt, with_rng};

pub fn run(config: &Config, args: SweepArgs) -> color_eyre::Result<ExitCode> {
    match args.action {
        Some(SweepAction::Plan(a)) => write_plan(config, *a),
        Some(SweepAction::Run(a)) => run_shard(config, a),
        Some(SweepAction::Merge(a)) => merge(config, a),
        None => run_whole(config, args.flags, args.out, args.json),
    }
}

/// `speedscape sweep`: every run on this machine.
fn run_whole(
    config: &Config,
    flags: SweepFlags,
    out: Option<PathBuf>,
    json: bool,
) -> color_eyre::Result<ExitCode> {
    let config = &with_rng(config, flags.engine.rng);
    let plan = plan(config, &flags)?;
    check_controls(config, &plan)?;
    let root = out_root(config, out);
    // Before the runs: a bad --out must not cost them at the end.
    report::check_output_root(&root)?;
    let (device, model_dir) = (flags.engine.device(), flags.engine.model.model_dir);
    let outcome = headless::run_sweep(config, plan.plan(), device, model_dir, !json)?;
    speedscape::interrupt::check(|| format!("{}; nothing was saved", outcome.stopped_runs()))?;
    finish(&root, &outcome, json)
}

/// Before any model loads: every control image the runs read.
fn check_controls(config: &Config, sweep: &Sweep) -> color_eyre::Result<()> {
    let runs = sweep.plan().runs;
    check_control_images(
        config,
        runs.iter().map(|r| {
            (
                format!("sweep run {:?}", r.spec.label),
                r.spec.control.as_ref(),
            )
        }),
    )
}

fn out_root(config: &Config, out: Option<PathBuf>) -> PathBuf {
    out.or_else(|| config.tui.out.clone())
        .unwrap_or_else(|| PathBuf::from("speedscape-out"))
}

/// Saves a sweep into a new folder under `root` and prints it (the table, or `--json`): the one
/// ending of `speedscape sweep` and `speedscape sweep merge`. Exit 1 when a run failed.
fn finish(
    root: &std::path::Path,
    outcome: &SweepOutcome,
    json: bool,
) -> color_eyre::Result<ExitCode> {
    let saved = output::save_sweep(root, outcome);
    if json {
        let mut v = output::json(outcome, &[]);
        v["saved"] = serde_json::json!(saved.as_ref().ok().map(|p| p.display().to_string()));
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", output::render(outcome));
        if let Ok(p) = &saved {
            println!("\nsaved to {} ({})", p.display(), output::files(outcome));
        }
    }
    saved?;
    Ok(passed(!outcome.any_failed()))
}

/// `speedscape sweep plan --out plan.json`: the sweep's flags resolved into a plan file (a new
/// file: an existing one is refused).
fn write_plan(config: &Config, args: SweepPlanArgs) -> color_eyre::Result<ExitCode> {
    let config = &with_rng(config, args.flags.engine.rng);
    let sweep = plan(config, &args.flags)?;
    check_controls(config, &sweep)?;
    let (dir, kind) = speedscape::open::model_dir(config, args.flags.engine.model_dir())?;
    let file = PlanFile::new(&sweep, ModelIdentity::of(&dir, kind)?, config.runtime.rng);
    let text = file.to_text()?;
    report::write_file(&args.out, Existing::Refuse, |f| {
        f.write_all(text.as_bytes())?;
        Ok(())
    })?;
    println!(
        "wrote {}: {} runs on {}; run each share with `speedscape sweep run --plan {} --shard K/N --out DIR`",
        args.out.display(),
        file.runs.len(),
        dir.display(),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `speedscape sweep run --plan --shard K/N --out DIR`.
fn run_shard(config: &Config, args: SweepRunArgs) -> color_eyre::Result<ExitCode> {
    let loaded = shard::load_plan(&args.plan)?;
    // The plan's noise source, unless --rng says otherwise (which the shard then refuses).
    let config = &with_rng(config, Some(args.engine.rng.unwrap_or(loaded.file.rng)));
    check_controls(config, &loaded.file.sweep)?;
    let engine = Engine {
        config,
        device: args.engine.device(),
        model_dir: args.engine.model.model_dir.clone(),
        progress: true,
    };
    let done = shard::run_shard(&engine, &loaded, args.shard, &args.out)?;
    for why in &done.redone {
        eprintln!("warning: ran again: {why}");
    }
    speedscape::interrupt::check(|| {
        format!(
            "shard {} stopped; its finished runs are kept in {}: run the same command to resume",
            args.shard,
            args.out.display()
        )
    })?;
    println!(
        "shard {} of {}: {} runs, {} kept from before, {} run now ({} failed); folder {}",
        done.shard,
        args.plan.display(),
        done.runs,
        done.kept,
        done.runs - done.kept,
        done.failed,
        args.out.display()
    );
    Ok(passed(done.failed == 0))
}

/// `speedscape sweep merge DIR… --out OUT`.
fn merge(config: &Config, args: SweepMergeArgs) -> color_eyre::Result<ExitCode> {
    let root = out_root(config, args.out);
    report::check_output_root(&root)?;
    let outcome = shard::merge(&args.dirs)?;
    if let Some(d) = &outcome.devices {
        eprintln!("warning: {}", output::mixed_devices_note(d));
    }
    finish(&root, &outcome, args.json)
}

/// The sweep: config.toml's `[sweep]` for this model, then the flags over it. A weight sweep
/// (`--lora-weights`) runs the `lcm` method at 4 steps unless `--preset` and `--steps` say
/// otherwise.
fn plan(config: &Config, args: &SweepFlags) -> color_eyre::Result<Sweep> {
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
    let one_step = speedscape::open::model_dir(config, args.engine.model_dir())
        .ok()
        .and_then(|(dir, _)| speedscape::models::folder_one_step(&dir));
    let mut plan = Sweep::from_config_for(
        &config.sweep.for_model(kind),
        Some(preset),
        one_step.as_deref(),
    )?
    .with_adapters(over);
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
    if let Some(file) = &args.prompts {
        let resolved = PromptSet::read(file)?.for_kind(kind)?;
        if !resolved.skipped.is_empty() {
            eprintln!(
                "warning: {} entr{} of {} (line {}) have no prompt for this model and are left out",
                resolved.skipped.len(),
                if resolved.skipped.len() == 1 {
                    "y"
                } else {
                    "ies"
                },
                file.display(),
                resolved
                    .skipped
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        plan = plan.with_prompts(resolved.prompts);
    }
    if let Some(r) = &args.reference {
        plan = plan.with_reference(sweep::parse_reference(r)?);
    }
    if let Some(c) = args.control.spec()? {
        plan = plan.with_control(&c);
    }
    if args.quality.is_some() || args.tolerance.is_some() {
        let axis = args.quality.unwrap_or(plan.quality);
        plan = plan.with_quality(axis, args.tolerance)?;
        check_quality(config, args, axis)?;
    }
    Ok(plan)
}

/// `--quality clip|judge` on a model folder that cannot give it: refused before any run, with
/// what the folder lacks and how to get it.
fn check_quality(
    config: &Config,
    args: &SweepFlags,
    axis: sweep::QualityAxis,
) -> color_eyre::Result<()> {
    use speedscape::models::{CLIP_FOLDER, JUDGE_FOLDER};
    let (dir, kind) = speedscape::open::model_dir(config, args.engine.model_dir())?;
    let (folder, fix) = match axis {
        sweep::QualityAxis::Ssim => return Ok(()),
        sweep::QualityAxis::Clip => (
            CLIP_FOLDER,
            format!(
                "export one with `.venv-ref/bin/python models/export.py --out {} --clip-scorer --force`, or use --quality ssim",
                dir.display()
            ),
        ),
        sweep::QualityAxis::Judge => (
            JUDGE_FOLDER,
            "the judge belongs to the micro model (models/micro/judge/); on another model use --quality ssim or clip".to_string(),
        ),
    };
    let has = match axis {
        sweep::QualityAxis::Clip => speedscape::models::ClipScorer::present(&dir),
        _ => {
            speedscape::models::Judge::present(&dir) && kind == speedscape::models::ModelKind::Micro
        }
    };
    if !has {
        bail!(speedscape::error::Fixable::new(
            format!(
                "--quality {} ({}) needs {}/{folder}/, which this model folder does not have",
                format!("{axis:?}").to_lowercase(),
                axis.label(),
                dir.display()
            ),
            fix,
        ));
    }
    Ok(())
}
