//! `speedscape sweep`: every run of a [`Plan`] through one worker, progress on stderr (a line as
//! each point completes), the landscape at the end.

use std::path::PathBuf;

use color_eyre::eyre::bail;
use image::RgbImage;
use indicatif::{ProgressBar, ProgressStyle};

use super::{IDENTICAL, Landscape, Measured, Plan, Sweep, Target};
use crate::config::Config;
use crate::exercises::headless::{Started, start, submit_all};
use crate::pipeline::RunReport;
use crate::quality::compare;
use crate::report::table::format_ms;
use crate::rng::RngSource;
use crate::runtime::Device;
use crate::worker::{Event, WorkerInfo};

/// Everything a sweep's runs produced, in the order of the plan's runs.
pub struct SweepOutcome {
    pub info: WorkerInfo,
    pub plan: Plan,
    pub rng: RngSource,
    pub measured: Vec<Option<Measured>>,
    pub images: Vec<Option<RgbImage>>,
    pub reports: Vec<Option<RunReport>>,
    /// Why each run that has no measurement has none (failed, cancelled, no reference).
    pub errors: Vec<Option<String>>,
    /// A merged sharded sweep whose runs ran on more than one device: which ones (times are
    /// then not comparable, and every output says so); `None` for one device.
    pub devices: Option<String>,
}

impl SweepOutcome {
    pub fn landscape(&self) -> Landscape {
        self.plan.landscape(&self.measured)
    }

    pub fn any_failed(&self) -> bool {
        self.errors.iter().any(Option::is_some)
    }

    /// For a command a signal stopped: "12 of 70 runs finished".
    pub fn stopped_runs(&self) -> String {
        let done = self.measured.iter().flatten().count();
        format!("{done} of {} runs finished", self.measured.len())
    }
}

/// What the measurement of a finished run is, given its seed's reference image and, in a
/// weight sweep, its plain image (see [`Measured::plain`]).
pub fn measure(
    plan: &Plan,
    run: usize,
    image: &RgbImage,
    report: &RunReport,
    reference: Option<&RgbImage>,
    plain: Option<&RgbImage>,
) -> Result<Measured, String> {
    let target = plan.runs[run].target;
    let missing = |what: &str| {
        format!(
            "the {what} run of seed {} has no image, so this run has nothing to be compared with",
            plan.runs[run].spec.seed.unwrap_or_default()
        )
    };
    let against = |other: &RgbImage| compare(other, image).map_err(|e| e.to_string());
    let quality = match target {
        Target::Reference | Target::Plain => IDENTICAL,
        Target::Point { .. } | Target::Weighted { .. } => {
            against(reference.ok_or_else(|| missing("reference"))?)?
        }
    };
    let plain = match (target, plain) {
        (Target::Weighted { .. }, None) => return Err(missing("plain")),
        (Target::Weighted { .. } | Target::Reference, Some(p)) => Some(against(p)?),
        _ => None,
    };
    Ok(Measured {
        total_ms: report.timings.total.as_secs_f64() * 1e3,
        quality,
        clip_score: report.clip_score,
        plain,
        adherence: report
            .control
            .as_ref()
            .map(|c| c.adherence)
            .filter(|a| a.is_finite()),
        judge: report.judge.as_ref().and_then(|j| j.accuracy),
    })
}

/// How one run of a sweep ended.
pub enum RunEnd {
    Finished {
        image: RgbImage,
        report: Box<RunReport>,
    },
    Failed(String),
    /// Stopped by a signal (or cancelled while queued).
    Cancelled,
}

/// Runs every run of `plan`, in order, through one worker; a progress bar on stderr and a line
/// per completed point when `progress`. A run that fails is recorded and the next one still
/// runs; an error comes back only when the worker cannot start or a run cannot be done with
/// this model (checked before any run).
pub fn run_sweep(
    config: &Config,
    plan: Plan,
    device: Option<Device>,
    model_dir: Option<PathBuf>,
    progress: bool,
) -> color_eyre::Result<SweepOutcome> {
    let n = plan.runs.len();
    let mut measured = vec![None; n];
    let mut images: Vec<Option<RgbImage>> = vec![None; n];
    let mut reports = vec![None; n];
    let mut errors = vec![None; n];
    let all: Vec<usize> = (0..n).collect();
    let engine = Engine {
        config,
        device,
        model_dir,
        progress,
    };
    let info = run_runs(
        &engine,
        &plan,
        &all,
        |_| Ok(()),
        |i, end| {
            let label = &plan.runs[i].spec.label;
            Ok(match end {
                RunEnd::Finished { image, report } => {
                    let reference = images[plan.reference_for(i)].as_ref();
                    let plain = plan.plain_for(i).and_then(|p| images[p].as_ref());
                    match measure(&plan, i, &image, &report, reference, plain) {
                        Ok(m) => measured[i] = Some(m),
                        Err(e) => errors[i] = Some(e),
                    }
                    images[i] = Some(image);
                    reports[i] = Some(*report);
                    point_line(&plan, &measured, i)
                }
                RunEnd::Failed(error) => {
                    errors[i] = Some(error);
                    Some(format!("{label} failed"))
                }
                RunEnd::Cancelled => {
                    errors[i] = Some("cancelled".into());
                    None
                }
            })
        },
    )?;
    Ok(SweepOutcome {
        info,
        plan,
        rng: config.runtime.rng,
        measured,
        images,
        reports,
        errors,
        devices: None,
    })
}

/// What runs a sweep's runs: the config, `--device`, `--model-dir`, and whether progress goes
/// to stderr.
pub struct Engine<'a> {
    pub config: &'a Config,
    pub device: Option<Device>,
    pub model_dir: Option<PathBuf>,
    pub progress: bool,
}

/// Runs `runs` (indices into the plan's runs), in this order, through one worker: the one loop
/// behind `speedscape sweep` and a shard's `sweep run`. `ready` gets the worker's info before
/// any run; `done` gets each run as it ends and returns a line to show above the bar (an error
/// from it stops the sweep). Returns the worker's info.
pub fn run_runs(
    engine: &Engine,
    plan: &Plan,
    runs: &[usize],
    ready: impl FnOnce(&WorkerInfo) -> color_eyre::Result<()>,
    mut done: impl FnMut(usize, RunEnd) -> color_eyre::Result<Option<String>>,
) -> color_eyre::Result<WorkerInfo> {
    let rng = engine.config.runtime.rng;
    let Started {
        worker,
        mut events,
        info,
        on_signal: _on_signal,
    } = start(
        engine.config,
        &plan.exercise(),
        engine.device,
        engine.model_dir.clone(),
    )?;
    ready(&info)?;
    let index = submit_all(runs.iter().map(|&i| plan.request(i, rng)), &worker);
    let bar = engine.progress.then(|| {
        let bar = ProgressBar::new(runs.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("sweep [{bar:30}] run {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar
    });
    let mut left = runs.len();
    while left > 0 {
        let Some(ev) = events.blocking_recv() else {
            bail!("the inference thread stopped before the sweep ended");
        };
        let Some(&k) = ev.run().and_then(|r| index.get(&r)) else {
            continue;
        };
        let i = runs[k];
        let label = &plan.runs[i].spec.label;
        let end = match ev {
            Event::Loading { component, .. } => {
                if let Some(b) = &bar {
                    b.set_message(format!("{label}: loading {component}…"));
                }
                continue;
            }
            Event::Step { index, total, .. } => {
                if let Some(b) = &bar {
                    b.set_message(format!("{label}: step {}/{total}", index + 1));
                }
                continue;
            }
            Event::Finished { report, image, .. } => RunEnd::Finished { image, report },
            Event::Failed { error, .. } => RunEnd::Failed(error),
            Event::Cancelled { .. } => RunEnd::Cancelled,
            _ => continue,
        };
        left -= 1;
        let line = done(i, end)?;
        if let Some(b) = &bar {
            b.inc(1);
            if let Some(line) = line {
                say(b, line);
            }
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    worker.shutdown();
    Ok(info)
}

/// A line above the bar; on its own line when stderr is not a terminal (the bar is hidden then,
/// and so would be its lines).
fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

/// "(4 seeds)", or with a prompt set "(12 runs: 3 prompts × 4 seeds)": what a point's `n`
/// runs were.
fn runs_words(sweep: &Sweep, n: usize) -> String {
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    if sweep.prompts.is_empty() {
        plural(n, "seed")
    } else {
        format!(
            "{}: {} × {}",
            plural(n, "run"),
            plural(sweep.prompts.len(), "prompt"),
            plural(sweep.seeds.len(), "seed")
        )
    }
}

/// "DPM-Solver++ 10: 312 ms, SSIM 0.931 ± 0.012 (4 seeds)" once run `run` completes its point.
fn point_line(plan: &Plan, measured: &[Option<Measured>], run: usize) -> Option<String> {
    let land = plan.landscape(measured);
    let seeds = |n: usize| runs_words(&plan.sweep, n);
    match plan.runs[run].target {
        Target::Plain => None,
        Target::Weighted {
            method,
            steps,
            weight,
        } => {
            let curves = plan.weight_curves(measured)?;
            let w = curves.axis.weights[weight];
            let s = curves
                .series
                .iter()
                .find(|s| s.steps == steps && s.method == plan.sweep.methods[method])?;
            let p = s.points.iter().find(|p| p.weight == w)?;
            p.complete().then(|| {
                format!(
                    "{} + {}×{w}: {} ms, SSIM to {} alone {:.3}, to plain {} ({})",
                    s.label(),
                    curves.axis.name(),
                    format_ms(p.time_ms),
                    curves.axis.name(),
                    p.ssim_style.mean,
                    p.ssim_plain
                        .map_or_else(|| "–".into(), |q| format!("{:.3}", q.mean)),
                    seeds(p.runs)
                )
            })
        }
        Target::Reference => {
            let r = land.reference?;
            let what = match &plan.sweep.weights {
                Some(axis) => format!("{} alone", axis.name()),
                None => "reference".into(),
            };
            r.complete().then(|| {
                format!(
                    "{what} {}: {} ms",
                    plan.sweep.reference.label(),
                    format_ms(r.time_ms)
                )
            })
        }
        Target::Point { method, steps } => {
            let s = &land.series[method];
            let p = s.point(steps)?;
            p.complete().then(|| {
                let adherence = p
                    .adherence
                    .map(|a| format!(", edge F1 {:.3}", a.mean))
                    .unwrap_or_default();
                format!(
                    "{} {steps}: {} ms, SSIM {:.3} ± {:.3}{adherence} ({})",
                    s.method.label,
                    format_ms(p.time_ms),
                    p.ssim.mean,
                    p.ssim.std,
                    seeds(p.runs)
                )
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::SweepConfig;

    fn sweep(seeds: usize) -> Sweep {
        let cfg = SweepConfig {
            seeds,
            ..SweepConfig::default()
        };
        Sweep::from_config(&cfg, Some("dpmpp")).unwrap()
    }

    #[test]
    fn a_points_runs_are_seeds_or_prompts_times_seeds() {
        assert_eq!(runs_words(&sweep(4), 4), "4 seeds");
        assert_eq!(runs_words(&sweep(1), 1), "1 seed");
        let set = sweep(2).with_prompts(vec!["a red fox".into(), "an owl".into(), "a cat".into()]);
        assert_eq!(runs_words(&set, 6), "6 runs: 3 prompts × 2 seeds");
    }
}
