//! `speedscape exercise N`: every run of an exercise headless (progress on stderr, the table on
//! stdout, `--out` saves the session report); exercise 4 (unless config.toml defines one)
//! verifies a cheat-sheet scenario. Exit 1 when a run failed (the table and the errors say which
//! and why).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use color_eyre::eyre::bail;

use speedscape::config::Config;
use speedscape::error::Fixable;

use super::args::ExerciseArgs;
use super::{check_control_images, passed, with_rng};

pub fn run(config: &Config, args: ExerciseArgs) -> color_eyre::Result<ExitCode> {
    args.lora.adapters()?;
    let config = with_rng(config, args.engine.rng);
    if args.number == 4 && (args.scenario.is_some() || !has_exercise(&config, 4)) {
        verify_scenario(&config, args)
    } else {
        exercise(&config, args)
    }
}

fn has_exercise(config: &Config, number: usize) -> bool {
    config.exercises().iter().any(|e| e.number == number)
}

fn exercise(config: &Config, args: ExerciseArgs) -> color_eyre::Result<ExitCode> {
    use speedscape::exercises::headless;
    let mut ex = headless::find_exercise(config, args.number)?.with_adapters(&args.lora.lora);
    // Before any model loads: the control flags, then every control image the runs read.
    match args.control.spec()? {
        Some(c) => ex = ex.with_control(&c),
        None => check_control_images(
            config,
            ex.runs.iter().map(|r| {
                (
                    format!("{}: run {:?}", ex.name(), r.label),
                    r.control.as_ref(),
                )
            }),
        )?,
    }
    let out = args.out.as_deref();
    if let Some(root) = out {
        // Before the runs: a bad --out must not cost them at the end.
        speedscape::report::check_output_root(root)?;
    }
    let device = args.engine.device();
    let outcome =
        headless::run_exercise(config, &ex, device, args.engine.model.model_dir, !args.json)?;
    speedscape::interrupt::check(|| format!("{}; nothing was saved", outcome.stopped_runs()))?;
    // A failed save is reported after the table, which still prints.
    let (saved, save_error) = match out.map(|root| {
        headless::save_exercise(
            root,
            &ex,
            &outcome.rows,
            &outcome.images,
            &outcome.reports,
            &[],
        )
    }) {
        Some(Ok(dir)) => (Some(dir), None),
        Some(Err(e)) => (None, Some(e)),
        None => (None, None),
    };
    if args.json {
        let mut v = outcome.json();
        v["saved"] = serde_json::json!(saved.as_ref().map(|p| p.display().to_string()));
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", outcome.render());
        if let Some(p) = &saved {
            println!("\nsaved to {}", p.display());
        }
    }
    if let Some(e) = save_error {
        return Err(e);
    }
    Ok(passed(!outcome.any_failed()))
}

/// `speedscape exercise 4 --scenario X`: the cheat sheet's verification run, pass/fail with the
/// numbers; exit 0 either way unless a run failed.
fn verify_scenario(config: &Config, args: ExerciseArgs) -> color_eyre::Result<ExitCode> {
    use speedscape::exercises::cheatsheet;
    let Some(key) = args.scenario else {
        bail!(Fixable::new(
            "exercise 4 is the decision cheat sheet: it verifies one scenario's choice by a run",
            "pass --scenario A, B or C (and optionally --choice lcm:4); the TUI lets you fill in the whole sheet",
        ));
    };
    if !args.lora.lora.is_empty() {
        bail!(Fixable::new(
            "--lora does not apply to exercise 4: a scenario is verified with the approach it names",
            "drop --lora, or run exercise 3 (or your own [[exercises]] entry) with it",
        ));
    }
    if args.control.controlnet.is_some() || args.control.control_image.is_some() {
        bail!(Fixable::new(
            "--controlnet and --control-image do not apply to exercise 4: a scenario is verified with the control it names",
            "drop them, or run exercise 5 (or your own [[exercises]] entry) with them",
        ));
    }
    let choice = args
        .choice
        .as_deref()
        .map(cheatsheet::Approach::parse)
        .transpose()?;
    let out = args.out.as_deref();
    if let Some(root) = out {
        speedscape::report::check_output_root(root)?;
    }
    let (device, model_dir) = (args.engine.device(), args.engine.model.model_dir);
    let v = cheatsheet::verify(
        config,
        key,
        choice,
        args.threshold,
        device,
        model_dir,
        !args.json,
    )?;
    speedscape::interrupt::check(|| format!("{}; nothing was saved", v.outcome.stopped_runs()))?;
    // A failed save is reported after the verdict, which still prints.
    let (saved, save_error) = match out.map(|root| save_verification(root, &v)) {
        Some(Ok(dir)) => (Some(dir), None),
        Some(Err(e)) => (None, Some(e)),
        None => (None, None),
    };
    print_verification(&v, saved.as_deref(), args.json)?;
    if let Some(e) = save_error {
        return Err(e);
    }
    if v.outcome.any_failed() {
        bail!("a verification run did not finish; the constraint could not be checked");
    }
    Ok(ExitCode::SUCCESS)
}

/// Saves the verification beside the user's answers (written by the TUI); a damaged answers file
/// stops here with its name rather than being replaced.
fn save_verification(
    root: &Path,
    v: &speedscape::exercises::cheatsheet::Verification,
) -> color_eyre::Result<PathBuf> {
    use speedscape::exercises::cheatsheet;
    let answers = cheatsheet::Answers::load(&root.join("cheatsheet.json"))?;
    let o = &v.outcome;
    cheatsheet::save(
        root,
        &answers,
        &[cheatsheet::Saved {
            key: v.scenario.key,
            choice: v.choice,
            constraint: v.constraint,
            exercise: &o.exercise,
            rows: &o.rows,
            images: &o.images,
            reports: &o.reports,
        }],
    )
}

fn print_verification(
    v: &speedscape::exercises::cheatsheet::Verification,
    saved: Option<&Path>,
    json: bool,
) -> color_eyre::Result<()> {
    if json {
        let mut value = v.outcome.json();
        value["scenario"] = v.scenario.key.to_string().into();
        value["choice"] = v.choice.label().into();
        value["constraint"] = v.constraint.describe().into();
        value["passed"] = v.verdict.as_ref().map(|d| d.passed).into();
        value["verdict"] = v.verdict.as_ref().map(|d| d.text.clone()).into();
        if let Some(dir) = saved {
            value["saved"] = dir.display().to_string().into();
        }
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", v.outcome.render());
        println!("\n{}", v.summary());
        if let Some(dir) = saved {
            println!("saved in {}", dir.display());
        }
    }
    Ok(())
}
