//! `speedscape exercise N`: every run of an exercise through one [`WorkerHandle`], progress on
//! stderr, the table and the notes (or JSON) on stdout; [`save_exercise`] writes the images and
//! timings into a fresh folder (the TUI's `s` key calls it too).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use color_eyre::eyre::{WrapErr, bail, eyre};
use image::RgbImage;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::{Exercise, what_happened};
use crate::config::Config;
use crate::error::{FixErr, Fixable};
use crate::pipeline::RunReport;
use crate::report::sheet::{Tile, contact_sheet};
use crate::report::table::{
    RowState, TableRow, format_ms, format_table, with_quality, with_speedups,
};
use crate::report::{save_png, write_atomic};
use crate::rng::RngSource;
use crate::runtime::Device;
use crate::worker::{Event, Job, WorkerHandle, WorkerInfo};

/// The exercise called `number`, or an error listing the valid numbers.
pub fn find_exercise(config: &Config, number: usize) -> color_eyre::Result<Exercise> {
    let all = config.exercises();
    all.iter()
        .find(|e| e.number == number)
        .cloned()
        .ok_or_else(|| {
            let valid: Vec<String> = all
                .iter()
                .map(|e| format!("{} ({})", e.number, e.title))
                .collect();
            eyre!(Fixable::new(
                format!(
                    "there is no exercise {number}; the exercises are {}",
                    valid.join(", ")
                ),
                "pass one of those numbers, or add an [[exercises]] entry to config.toml",
            ))
        })
}

/// Everything an exercise's runs produced, in the order of its runs.
pub struct ExerciseOutcome {
    pub info: WorkerInfo,
    pub exercise: Exercise,
    pub rows: Vec<TableRow>,
    pub images: Vec<Option<RgbImage>>,
    pub reports: Vec<Option<RunReport>>,
    /// The error of each failed run.
    pub errors: Vec<Option<String>>,
    pub notes: Vec<String>,
    /// The noise source every run's seed meant.
    pub rng: RngSource,
}

impl ExerciseOutcome {
    pub fn any_failed(&self) -> bool {
        self.rows.iter().any(|r| r.state != RowState::Finished)
    }

    /// How far each run got, for the message of a command a signal stopped: "DDPM 50 finished;
    /// DPM-Solver++ 20 cancelled after 3 of 20 steps; DPM-Solver++ 10 cancelled before it started".
    pub fn stopped_runs(&self) -> String {
        let parts: Vec<String> = self
            .rows
            .iter()
            .map(|r| match r.state {
                RowState::Finished => format!("{} finished", r.label),
                RowState::Failed => format!("{} failed", r.label),
                _ if r.steps_done > 0 => format!(
                    "{} cancelled after {} of {} steps",
                    r.label, r.steps_done, r.steps
                ),
                _ => format!("{} cancelled before it started", r.label),
            })
            .collect();
        parts.join("; ")
    }

    /// The header line: seed and noise source, provider, device, model.
    pub fn header(&self) -> String {
        let model = format!(
            "{}{}",
            self.info.model_dir.display(),
            self.info.kind.aside()
        );
        format!(
            "exercise {}: {} — seed {} ({} noise) — {} on {}, model {}",
            self.exercise.number,
            self.exercise.title,
            self.exercise.seed,
            self.rng,
            self.info.provider,
            self.info.device,
            model
        )
    }

    /// Header, table, failures and notes, as printed by `speedscape exercise`.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{}\nprompt: “{}”\n\n{}",
            self.header(),
            self.exercise.prompt,
            format_table(&self.rows)
        );
        for (row, err) in self.rows.iter().zip(&self.errors) {
            if let Some(err) = err {
                out.push_str(&format!("\n{} failed: {err}\n", row.label));
            }
        }
        if !self.notes.is_empty() {
            out.push_str("\nWhat happened:\n");
            for n in &self.notes {
                if n.starts_with(' ') {
                    // A detail of the line above: already indented under its text.
                    out.push_str(&format!("{n}\n"));
                } else {
                    out.push_str(&format!("- {n}\n"));
                }
            }
        }
        out
    }

    /// The `--json` object.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "exercise": self.exercise.number,
            "title": self.exercise.title,
            "prompt": self.exercise.prompt,
            "provider": self.info.provider,
            "device": self.info.device,
            "model": self.info.model_dir.display().to_string(),
            "tiny_model": self.info.tiny_model,
            "model_kind": self.info.kind,
            "rows": self.rows,
            "notes": self.notes,
            "runs": self.reports,
            "errors": self.errors,
        })
    }
}

/// A worker ready for an exercise's runs (see [`start`]).
pub struct Started {
    pub worker: WorkerHandle,
    pub events: tokio::sync::mpsc::UnboundedReceiver<Event>,
    pub info: WorkerInfo,
    /// Cancels every run on SIGINT, SIGTERM or SIGHUP while kept.
    pub on_signal: crate::interrupt::Hook,
}

/// Starts the worker for `ex`'s runs and waits until it is ready; SIGINT, SIGTERM or SIGHUP
/// (when the command installed the handlers) then cancels every run, each ending with
/// `Cancelled`, so the caller's loop still ends (and it writes nothing). A run the model cannot
/// do (a missing UNet variant, steps its scheduler refuses) is an error here, before any run:
/// no half-made table.
///
/// The worker makes no previews: nobody sees them here, and its preview thread would take cores
/// from the step loop being timed (on 2 cores, a 4-step micro run measured 117 ms with decoder
/// previews against 74–88 ms without).
pub fn start(
    config: &Config,
    ex: &Exercise,
    device: Option<Device>,
    model_dir: Option<PathBuf>,
) -> color_eyre::Result<Started> {
    let mut config = config.clone();
    config.tui.preview = crate::pipeline::preview::PreviewKind::Off;
    let (worker, mut events) = WorkerHandle::spawn(config, device, model_dir);
    let on_signal = {
        let canceller = worker.canceller();
        crate::interrupt::on_signal(move || canceller.cancel_all())
    };
    let info = match events.blocking_recv() {
        Some(Event::Ready(info)) => info,
        Some(Event::Fatal { error }) => bail!("{error}"),
        Some(other) => bail!("the worker spoke before it was ready: {other:?}"),
        None => bail!("the inference thread stopped before it was ready"),
    };
    let sched_cfg: crate::schedulers::SchedulerConfig =
        serde_json::from_value(info.scheduler_config.clone())
            .wrap_err("reading scheduler/scheduler_config.json")?;
    ex.preflight(&info.variants, &info.adapters, &sched_cfg)?;
    Ok(Started {
        worker,
        events,
        info,
        on_signal,
    })
}

/// `ex` as it runs on the model in force (`model_dir`, else config.toml's, else the embedded
/// micro model): with its prompts and control images for the model's kind, the built-in control
/// images found where speedscape is installed ([`locate_control_images`]), and its runs'
/// ControlNets checked against the folder's ([`Exercise::fit_controls`]: a folder without one
/// is one error before any run). Without a model folder the exercise is only adapted to SD
/// v1.5; starting the worker then says what is missing.
pub fn for_model_in_force(
    config: &Config,
    ex: &Exercise,
    model_dir: Option<&Path>,
) -> color_eyre::Result<Exercise> {
    let found = crate::open::model_dir(config, model_dir).ok();
    let kind = found
        .as_ref()
        .map_or(crate::models::ModelKind::Sd15, |(_, k)| *k);
    let mut ex = ex.clone().for_model(kind);
    if let Some((dir, _)) = &found {
        ex = ex.with_one_step(crate::models::folder_one_step(dir).as_deref());
        ex.fit_controls(dir, &crate::models::controlnet::folder_controlnets(dir))?;
    }
    locate_control_images(&mut ex)?;
    Ok(ex)
}

/// Points every run's built-in control image at the file where speedscape is installed
/// ([`locate_control`]); other images stay as given.
pub fn locate_control_images(ex: &mut Exercise) -> color_eyre::Result<()> {
    ex.runs
        .iter_mut()
        .filter_map(|r| r.control.as_mut())
        .try_for_each(locate_control)
}

/// A built-in control image ([`super::CONTROL_IMAGES`], a path relative to the checkout) found
/// where speedscape is installed ([`crate::open::asset`]: the working directory, the source
/// tree, beside the binary); any other image stays as given. A built-in one found nowhere is an
/// error naming it.
pub fn locate_control(c: &mut super::ControlSpec) -> color_eyre::Result<()> {
    let builtin = super::CONTROL_IMAGES
        .iter()
        .any(|(a, b)| c.image == Path::new(a) || c.image == Path::new(b));
    if !builtin {
        return Ok(());
    }
    c.image = crate::open::asset(&c.image).ok_or_else(|| {
        eyre!(Fixable::new(
            format!(
                "the control image {} that ships with speedscape was not found",
                c.image.display()
            ),
            "run speedscape from its checkout (or beside its assets/ folder), or give the run \
             your own control image (config.toml: control = { image = \"edges.png\", ... })",
        ))
    })?;
    Ok(())
}

/// Sends every request to the worker, in order; which request each run id is (its index).
pub fn submit_all(
    requests: impl Iterator<Item = crate::pipeline::Request>,
    worker: &WorkerHandle,
) -> HashMap<crate::worker::RunId, usize> {
    requests
        .enumerate()
        .map(|(i, request)| {
            let run = worker.next_run_id();
            worker.submit(Job { run, request });
            (run, i)
        })
        .collect()
}

/// Runs every run of `ex`, in order, through one worker; progress bars on stderr when
/// `progress`. A run that fails is recorded (its row says so) and the next one still runs; an
/// error comes back only when the worker cannot start.
pub fn run_exercise(
    config: &Config,
    ex: &Exercise,
    device: Option<Device>,
    model_dir: Option<PathBuf>,
    progress: bool,
) -> color_eyre::Result<ExerciseOutcome> {
    let rng = config.runtime.rng;
    let ex = &for_model_in_force(config, ex, model_dir.as_deref())?;
    let Started {
        worker,
        mut events,
        info,
        on_signal: _on_signal,
    } = start(config, ex, device, model_dir)?;
    let n = ex.runs.len();
    let mut rows: Vec<TableRow> = ex
        .runs
        .iter()
        .enumerate()
        .map(|(i, s)| s.table_row(i == ex.baseline))
        .collect();
    let mut images = vec![None; n];
    let mut reports = vec![None; n];
    let mut errors = vec![None; n];
    let index = submit_all((0..n).map(|i| ex.request(i, rng)), &worker);
    let mut bars = Bars::new(progress, n);
    let mut left = n;
    while left > 0 {
        let Some(ev) = events.blocking_recv() else {
            bail!("the inference thread stopped before the exercise ended");
        };
        let Some(&i) = ev.run().and_then(|r| index.get(&r)) else {
            continue;
        };
        rows[i].apply(&ev);
        bars.show(i, &ex.runs[i].label, &ev, &rows[i]);
        match ev {
            Event::Finished { report, image, .. } => {
                images[i] = Some(image);
                reports[i] = Some(*report);
            }
            Event::Failed { error, .. } => errors[i] = Some(error),
            _ => {}
        }
        if rows[i].state == RowState::Finished
            || rows[i].state == RowState::Failed
            || rows[i].state == RowState::Cancelled
        {
            left -= 1;
        }
    }
    worker.shutdown();
    with_speedups(&mut rows, ex.baseline);
    let finals: Vec<Option<&RgbImage>> = images.iter().map(Option::as_ref).collect();
    with_quality(&mut rows, &finals, ex.baseline);
    let adherence = super::adherences(&reports.iter().map(Option::as_ref).collect::<Vec<_>>());
    let notes = what_happened(ex, &rows, &adherence, info.kind);
    Ok(ExerciseOutcome {
        rng,
        info,
        exercise: ex.clone(),
        rows,
        images,
        reports,
        errors,
        notes,
    })
}

/// Progress on stderr: a spinner while a component loads, then a bar per run.
struct Bars {
    on: bool,
    bars: Vec<Option<ProgressBar>>,
}

impl Bars {
    fn new(on: bool, n: usize) -> Self {
        Self {
            on,
            bars: vec![None; n],
        }
    }

    fn show(&mut self, i: usize, label: &str, ev: &Event, row: &TableRow) {
        if !self.on {
            return;
        }
        match ev {
            Event::Loading { component, .. } => {
                let bar = self.bars[i].get_or_insert_with(|| spinner(label));
                bar.set_message(format!("loading {component}…"));
            }
            Event::Loaded {
                component,
                load,
                warm_up,
                ..
            } => {
                if let Some(bar) = &self.bars[i] {
                    bar.println(format!(
                        "  loaded {component}: session {:.0} ms, warm-up {:.0} ms (not timed)",
                        load.as_secs_f64() * 1e3,
                        warm_up.as_secs_f64() * 1e3
                    ));
                }
            }
            Event::Started { total_steps, .. } => {
                if let Some(old) = self.bars[i].take() {
                    old.finish_and_clear();
                }
                let bar = ProgressBar::new(*total_steps as u64);
                bar.set_style(
                    ProgressStyle::with_template("{prefix:<28} [{bar:30}] step {pos}/{len} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                );
                bar.set_prefix(label.to_string());
                self.bars[i] = Some(bar);
            }
            Event::Step { index, .. } => {
                if let Some(bar) = &self.bars[i] {
                    bar.set_position(*index as u64 + 1);
                    if let Some(its) = row.its {
                        bar.set_message(format!("{its:.1} it/s"));
                    }
                }
            }
            Event::Finished { .. } | Event::Cancelled { .. } | Event::Failed { .. } => {
                if let Some(bar) = self.bars[i].take() {
                    let msg = match row.state {
                        RowState::Finished => {
                            format!("done in {:.0} ms", row.total_ms.unwrap_or_default())
                        }
                        RowState::Cancelled => "cancelled".into(),
                        _ => "failed".into(),
                    };
                    bar.finish_with_message(msg);
                }
            }
            _ => {}
        }
    }
}

fn spinner(label: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{prefix:<28} {spinner} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_prefix(label.to_string());
    bar.enable_steady_tick(std::time::Duration::from_millis(100));
    bar
}

/// What `timings.json` of a saved exercise holds.
#[derive(Serialize)]
struct SavedTimings<'a> {
    exercise: usize,
    title: &'a str,
    prompt: &'a str,
    seed: u64,
    baseline: usize,
    /// Where the numbers come from: versions, runtime, device, the model's manifest.
    provenance: &'a Provenance,
    rows: &'a [TableRow],
    /// PNG file per run (`null`: the run has no image).
    images: Vec<Option<String>>,
    runs: &'a [Option<RunReport>],
}

/// What produced a report's numbers: speedscape's version, the runtime and device of the runs,
/// and the model folder's `manifest.json` (sources, revisions, LoRA weights, dtype, exporter and
/// library versions), as the exporter wrote it.
#[derive(Debug, Serialize)]
pub struct Provenance {
    pub speedscape: &'static str,
    pub provider: Option<String>,
    pub device: Option<String>,
    pub onnxruntime: Option<String>,
    pub onnxruntime_library: Option<String>,
    pub model: Option<String>,
    pub tiny_model: bool,
    pub model_kind: Option<crate::models::ModelKind>,
    /// The manifest as written (`null`: the model folder has none, or it did not parse).
    pub model_manifest: Option<serde_json::Value>,
}

impl Provenance {
    /// From the first finished run's report (every run of an exercise shares one worker).
    pub fn of(reports: &[Option<RunReport>]) -> Self {
        let first = reports.iter().flatten().next();
        let model_manifest = first.and_then(|r| {
            let text = std::fs::read_to_string(Path::new(&r.model).join("manifest.json")).ok()?;
            serde_json::from_str(&text).ok()
        });
        Self {
            speedscape: env!("CARGO_PKG_VERSION"),
            provider: first.map(|r| r.provider.to_string()),
            device: first.map(|r| r.device.clone()).filter(|d| !d.is_empty()),
            onnxruntime: first.map(|r| r.onnxruntime_version.clone()),
            onnxruntime_library: first.map(|r| r.onnxruntime.clone()),
            model: first.map(|r| r.model.clone()),
            tiny_model: first.is_some_and(|r| r.tiny_model),
            model_kind: first.map(|r| r.model_kind),
            model_manifest,
        }
    }

    /// Markdown lines for report.md: versions and device, then the model's sources and the
    /// LoRA weights of the UNet variants `unets` the runs used.
    pub fn markdown(&self, unets: &[&str]) -> String {
        use std::fmt::Write;
        let mut md = String::new();
        let _ = writeln!(md, "- speedscape {}", self.speedscape);
        if let (Some(p), Some(v)) = (&self.provider, &self.onnxruntime) {
            let device = self.device.as_deref().unwrap_or("unknown device");
            let _ = writeln!(md, "- ran on {p} ({device}), ONNX Runtime {v}");
        }
        let Some(model) = &self.model else {
            return md;
        };
        let aside = self.model_kind.map_or("", |k| k.aside());
        let _ = writeln!(md, "- model `{model}`{aside}");
        let Some(manifest) = self
            .model_manifest
            .clone()
            .and_then(|v| serde_json::from_value::<crate::models::manifest::Manifest>(v).ok())
        else {
            let _ = writeln!(
                md,
                "  - no manifest.json: the model's sources and versions are unknown"
            );
            return md;
        };
        if let Some(b) = &manifest.base {
            let _ = writeln!(
                md,
                "  - base: {} (revision {})",
                b.source.as_deref().unwrap_or("unknown"),
                b.revision.as_deref().unwrap_or("none recorded")
            );
        }
        let _ = writeln!(
            md,
            "  - weights {}, optimised for {}",
            manifest.dtype.as_deref().unwrap_or("fp32"),
            manifest.optimize.as_deref().unwrap_or("none")
        );
        for name in unets {
            let Some((_, v)) = manifest.variants.iter().find(|(n, _)| n == name) else {
                continue;
            };
            if v.loras.is_empty() {
                continue;
            }
            let loras: Vec<String> = v
                .loras
                .iter()
                .map(|l| {
                    let src = manifest
                        .loras
                        .get(&l.name)
                        .and_then(|s| s.source.clone())
                        .unwrap_or_else(|| "unknown source".into());
                    format!("{} × {} ({src})", l.name, l.weight)
                })
                .collect();
            let _ = writeln!(md, "  - UNet `{name}`: {}", loras.join(", "));
        }
        if let Some(e) = &manifest.exporter {
            let libs: Vec<String> = e
                .libraries
                .iter()
                .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k} {v}")))
                .collect();
            let _ = writeln!(
                md,
                "  - exported by {} {} with {}",
                e.script.as_deref().unwrap_or("the exporter"),
                e.version.as_deref().unwrap_or("?"),
                libs.join(", ")
            );
        }
        md
    }
}

/// Saves an exercise's images (one PNG per run that has one), `contact-sheet.png` (the images
/// side by side under their titles), `timings.json`, `timings.csv` and `report.md` (which ties
/// them together: the exercise text, the table with quality numbers, predictions against
/// measurements, what happened, where the numbers come from) into a new folder
/// `out_root/exercise-N-YYYYmmdd-HHMMSS` (UTC; `-2`, `-3`, … when that exists) — see
/// [`save_new_folder`]. Returns the folder.
pub fn save_exercise(
    out_root: &Path,
    ex: &Exercise,
    rows: &[TableRow],
    images: &[Option<RgbImage>],
    reports: &[Option<RunReport>],
    predictions: &[Option<f64>],
) -> color_eyre::Result<PathBuf> {
    save_new_folder(out_root, &format!("exercise-{}", ex.number), |dir| {
        write_exercise(dir, ex, rows, images, reports, predictions)
    })
}

/// Writes an exercise's files (see [`save_exercise`]) into the existing folder `dir`.
pub fn write_exercise(
    dir: &Path,
    ex: &Exercise,
    rows: &[TableRow],
    images: &[Option<RgbImage>],
    reports: &[Option<RunReport>],
    predictions: &[Option<f64>],
) -> color_eyre::Result<()> {
    let mut names = Vec::with_capacity(ex.runs.len());
    for (i, spec) in ex.runs.iter().enumerate() {
        match images.get(i).and_then(Option::as_ref) {
            Some(img) => {
                let name = format!("{}-{}.png", i + 1, slug(&spec.label));
                save_png(&dir.join(&name), img)?;
                names.push(Some(name));
            }
            None => names.push(None),
        }
    }
    let provenance = Provenance::of(reports);
    let timings = SavedTimings {
        exercise: ex.number,
        title: &ex.title,
        prompt: &ex.prompt,
        seed: ex.seed,
        baseline: ex.baseline,
        provenance: &provenance,
        rows,
        images: names,
        runs: reports,
    };
    let json = serde_json::to_string_pretty(&timings)?;
    write_text(&dir.join("timings.json"), &json)?;
    let size = images.iter().flatten().next().map(RgbImage::dimensions);
    let control = control_tile(ex, size);
    if let Some((_, Some(img))) = &control {
        save_png(&dir.join(CONTROL_PNG), img)?;
    }
    let mut tiles: Vec<Tile> = Vec::with_capacity(ex.runs.len() + 1);
    if let Some((subtitle, img)) = &control {
        tiles.push(Tile {
            title: "control image".into(),
            subtitle: subtitle.clone(),
            image: img.as_ref(),
        });
    }
    tiles.extend(ex.runs.iter().enumerate().map(|(i, spec)| Tile {
        title: spec.label.clone(),
        subtitle: tile_subtitle(spec, rows.get(i)),
        image: images.get(i).and_then(Option::as_ref),
    }));
    save_png(&dir.join(CONTACT_SHEET), &contact_sheet(&tiles))?;
    write_text(
        &dir.join("timings.csv"),
        &timings_csv(ex, rows, reports, &provenance)?,
    )?;
    write_text(
        &dir.join("report.md"),
        &report_markdown(ex, rows, &timings.images, reports, predictions, &provenance),
    )?;
    Ok(())
}

/// Writes `text` to `path` atomically.
pub fn write_text(path: &Path, text: &str) -> color_eyre::Result<()> {
    write_atomic(path, |f| {
        f.write_all(text.as_bytes())?;
        Ok(())
    })
}

/// Makes a new folder `out_root/<stem>-YYYYmmdd-HHMMSS` (UTC; `-2`, `-3`, … when that exists)
/// holding what `fill` writes. Nothing is ever overwritten, and the folder appears whole: `fill`
/// writes into a staging folder beside it, which is renamed into place only once complete (and
/// removed if `fill` fails). Returns the folder.
pub fn save_new_folder(
    out_root: &Path,
    stem: &str,
    fill: impl FnOnce(&Path) -> color_eyre::Result<()>,
) -> color_eyre::Result<PathBuf> {
    crate::report::check_output_root(out_root)?;
    // The folders this call creates, deepest first: removed again (when empty) if it fails.
    let created: Vec<PathBuf> = out_root
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
        .map(Path::to_path_buf)
        .collect();
    let remove_created = || {
        for dir in &created {
            if std::fs::remove_dir(dir).is_err() {
                break;
            }
        }
    };
    std::fs::create_dir_all(out_root).fix_err_with(|| {
        (
            format!("cannot create the output folder {}", out_root.display()),
            "choose a folder you can write to",
        )
    })?;
    let staging = match tempfile::Builder::new()
        .prefix(".speedscape-")
        .tempdir_in(out_root)
    {
        Ok(s) => s,
        Err(e) => {
            remove_created();
            return Err(e).fix_err_with(|| {
                (
                    format!("cannot write in {}", out_root.display()),
                    "choose a folder you can write to",
                )
            });
        }
    };
    if let Err(e) = fill(staging.path()) {
        // Dropping `staging` removes it and whatever `fill` wrote: no partial folder stays.
        drop(staging);
        remove_created();
        // `df` needs a folder that still exists.
        let disk = match created.last().and_then(|d| d.parent()) {
            Some(p) if p.as_os_str().is_empty() => Path::new("."),
            Some(p) => p,
            None => out_root,
        };
        return Err(
            match crate::error::detail::<crate::report::DiskFull>(&e).cloned() {
                Some(full) => eyre!(Fixable::new(
                    format!(
                        "disk full while saving into {} ({} did not fit: {}); nothing was saved, the partial folder was removed",
                        out_root.display(),
                        full.path.file_name().unwrap_or_default().to_string_lossy(),
                        full.error
                    ),
                    format!(
                        "free space on the disk of {} (see df -h {}), or choose --out on another disk",
                        disk.display(),
                        disk.display()
                    ),
                )),
                None => e,
            },
        );
    }
    // Claim a fresh name (create_dir fails if it exists), then move the staged folder onto
    // it: renaming a folder onto an empty one replaces it in one step.
    let stem = format!("{stem}-{}", utc_stamp(SystemTime::now()));
    for k in 1..1000 {
        let name = if k == 1 {
            stem.clone()
        } else {
            format!("{stem}-{k}")
        };
        let target = out_root.join(name);
        match std::fs::create_dir(&target) {
            Ok(()) => {
                let staged = staging.keep();
                return match std::fs::rename(&staged, &target) {
                    Ok(()) => Ok(target),
                    Err(e) => {
                        let _ = std::fs::remove_dir(&target);
                        let _ = std::fs::remove_dir_all(&staged);
                        remove_created();
                        Err(eyre!(
                            "cannot move the saved folder into {}: {e}",
                            target.display()
                        ))
                    }
                };
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                drop(staging);
                remove_created();
                return Err(eyre!(Fixable::new(
                    format!("cannot create {}: {e}", target.display()),
                    "choose a folder you can write to",
                )));
            }
        }
    }
    bail!(Fixable::new(
        format!(
            "{} already holds 999 folders named {stem}*",
            out_root.display()
        ),
        "choose another --out folder",
    ))
}

const CONTACT_SHEET: &str = "contact-sheet.png";
/// The control image of an exercise under a ControlNet, beside the runs' PNGs.
const CONTROL_PNG: &str = "0-control.png";

/// The first tile of an exercise under a ControlNet: the control image of its first controlled
/// run, as given (at the runs' `size` so the sheet lays it beside them), with its subtitle
/// ("canny · scale 1 · edge"); its image `None` when it cannot be read (the subtitle says so).
/// `None` for an exercise without control.
pub fn control_tile(ex: &Exercise, size: Option<(u32, u32)>) -> Option<(String, Option<RgbImage>)> {
    let c = ex.runs.iter().find_map(|r| r.control.as_ref())?;
    let preprocess = match c.preprocess {
        crate::pipeline::control::ControlPreprocess::Canny => "canny",
        crate::pipeline::control::ControlPreprocess::None => "as given",
    };
    let name = c.controlnet.as_deref().unwrap_or("ControlNet");
    let mut subtitle = format!("{preprocess} · scale {} · {name}", c.scale);
    let image = match crate::pipeline::control_image::load_control_image(&c.image) {
        Ok(img) => Some(match size {
            Some((w, h)) if img.dimensions() != (w, h) => {
                image::imageops::resize(&img, w, h, image::imageops::FilterType::Triangle)
            }
            _ => img,
        }),
        Err(_) => {
            subtitle = format!("{} could not be read", c.image.display());
            None
        }
    };
    Some((subtitle, image))
}

/// "20 steps · cfg 7.5 · 77.3 ms · SSIM 0.895" (what is known of the run; its run-time LoRA
/// adapters first, "base + style×0.6", when it has any).
fn tile_subtitle(spec: &crate::exercises::RunSpec, row: Option<&TableRow>) -> String {
    let mut parts = vec![format!("{} steps", spec.steps), format!("cfg {}", spec.cfg)];
    if !spec.lora.is_empty() {
        parts.insert(0, spec.unet_label());
    }
    if let Some(r) = row {
        if let Some(t) = r.total_ms.filter(|_| r.state == RowState::Finished) {
            parts.push(format!("{} ms", format_ms(t)));
        }
        if r.is_baseline {
            parts.push("baseline".into());
        } else if let Some(q) = r.quality {
            parts.push(format!("SSIM {:.3}", q.ssim));
        }
    }
    parts.join(" · ")
}

/// One CSV row per run: every phase, the quality numbers, and where it ran.
fn timings_csv(
    ex: &Exercise,
    rows: &[TableRow],
    reports: &[Option<RunReport>],
    provenance: &Provenance,
) -> color_eyre::Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "exercise",
        "run",
        "label",
        "scheduler",
        "steps",
        "cfg",
        "unet",
        "loras",
        "lora_sha256",
        "seed",
        "state",
        "total_ms",
        "text_ms",
        "unet_ms",
        "unet_ms_per_step",
        "scheduler_ms",
        "vae_ms",
        "its",
        "speedup",
        "ssim",
        "psnr_db",
        "mean_abs_diff",
        "provider",
        "device",
        "onnxruntime",
        "model",
        "width",
        "height",
        "speedscape",
    ])?;
    let num = |v: Option<f64>| v.map(|v| format!("{v}")).unwrap_or_default();
    for (i, (spec, row)) in ex.runs.iter().zip(rows).enumerate() {
        let report = reports.get(i).and_then(Option::as_ref);
        let q = row.quality;
        w.write_record([
            ex.number.to_string(),
            (i + 1).to_string(),
            spec.label.clone(),
            spec.scheduler.to_string(),
            row.steps.to_string(),
            spec.cfg.to_string(),
            spec.unet.clone(),
            lora_list(&spec.lora),
            row.adapters
                .iter()
                .map(|a| format!("{}={}", a.name, a.sha256))
                .collect::<Vec<_>>()
                .join(" "),
            spec.seed.unwrap_or(ex.seed).to_string(),
            format!("{:?}", row.state).to_lowercase(),
            num(row.total_ms),
            num(row.text_ms),
            num(row.unet_ms),
            num(row.unet_ms_per_step),
            num(row.scheduler_ms),
            num(row.vae_ms),
            num(row.its),
            num(row.speedup),
            num(q.map(|q| q.ssim)),
            num(q.and_then(|q| q.psnr_db)),
            num(q.map(|q| q.mean_abs_diff)),
            report
                .map(|r| format!("{:?}", r.provider))
                .unwrap_or_default(),
            report.map(|r| r.device.clone()).unwrap_or_default(),
            report
                .map(|r| r.onnxruntime_version.clone())
                .unwrap_or_default(),
            report.map(|r| r.model.clone()).unwrap_or_default(),
            report.map(|r| r.width.to_string()).unwrap_or_default(),
            report.map(|r| r.height.to_string()).unwrap_or_default(),
            provenance.speedscape.to_string(),
        ])?;
    }
    Ok(String::from_utf8(
        w.into_inner().map_err(|e| eyre!("{e}"))?,
    )?)
}

/// `style=0.6 lcm=1`: a run's adapters as the CSV writes them (as `--lora` takes them).
fn lora_list(loras: &[crate::lora::AdapterWeight]) -> String {
    loras
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `report.md`: the exercise, its numbers and its images, linked by relative paths. Its
/// sections in order: the exercise, the table, the predictions, what happened, the sources.
fn report_markdown(
    ex: &Exercise,
    rows: &[TableRow],
    images: &[Option<String>],
    reports: &[Option<RunReport>],
    predictions: &[Option<f64>],
    provenance: &Provenance,
) -> String {
    let first = reports.iter().flatten().next();
    let kind = first.map_or(crate::models::ModelKind::Sd15, |r| r.model_kind);
    let adherence = super::adherences(&reports.iter().map(Option::as_ref).collect::<Vec<_>>());
    [
        markdown_exercise(ex, first),
        markdown_table(rows, images),
        markdown_predictions(ex, rows, &adherence, predictions),
        markdown_what_happened(ex, rows, &adherence, kind),
        markdown_sources(ex, provenance),
    ]
    .concat()
}

/// report.md's head: title, what the exercise shows, prompt, seed, where it ran, the contact
/// sheet (`first`: the first finished run's report, if any).
fn markdown_exercise(ex: &Exercise, first: Option<&RunReport>) -> String {
    use std::fmt::Write;
    let mut md = String::new();
    let _ = writeln!(md, "# Exercise {}: {}\n", ex.number, ex.title);
    let _ = writeln!(md, "{}\n", ex.about);
    let _ = writeln!(md, "- prompt: `{}`", ex.prompt);
    let noise = first
        .map(|r| format!(", {} noise", r.rng))
        .unwrap_or_default();
    let _ = writeln!(md, "- seed: {}{noise} (the same for every run)", ex.seed);
    if let Some(r) = first {
        let _ = writeln!(
            md,
            "- ran on: {}, ONNX Runtime {}, model `{}`{}",
            r.provider,
            r.onnxruntime_version,
            r.model,
            r.model_kind.aside()
        );
    }
    let _ = writeln!(md, "\n![the runs side by side]({CONTACT_SHEET})\n");
    md
}

/// report.md's "Timings and quality": one table line per run, its image linked.
fn markdown_table(rows: &[TableRow], images: &[Option<String>]) -> String {
    use std::fmt::Write;
    let mut md = String::new();
    let _ = writeln!(md, "## Timings and quality\n");
    let _ = writeln!(
        md,
        "Quality compares each image with the baseline run's, pixel by pixel (SSIM 1 = identical); \
         it is closeness to the baseline, not beauty.\n"
    );
    let _ = writeln!(
        md,
        "| run | scheduler | steps | cfg | UNet | total ms | text ms | UNet ms/step | VAE ms | speedup | SSIM | PSNR dB | image |"
    );
    let _ = writeln!(md, "|---|---|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|---|");
    let cell = |v: Option<f64>| v.map(format_ms).unwrap_or_else(|| "–".into());
    for (i, row) in rows.iter().enumerate() {
        let (speedup, ssim, psnr) = if row.is_baseline {
            (
                "baseline".to_string(),
                "baseline".to_string(),
                "baseline".to_string(),
            )
        } else {
            (
                row.speedup.map_or("–".into(), |s| format!("{s:.2}×")),
                row.quality.map_or("–".into(), |q| format!("{:.4}", q.ssim)),
                row.quality.map_or("–".into(), |q| {
                    q.psnr_db.map_or("identical".into(), |p| format!("{p:.2}"))
                }),
            )
        };
        let image = images
            .get(i)
            .and_then(Option::as_ref)
            .map_or("–".into(), |n| format!("[{n}]({n})"));
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {speedup} | {ssim} | {psnr} | {image} |",
            row.label,
            row.scheduler,
            row.steps,
            row.cfg,
            row.unet_label(),
            cell(row.total_ms),
            cell(row.text_ms),
            cell(row.unet_ms_per_step),
            cell(row.vae_ms),
        );
    }
    md.push_str(&crate::report::table::adapters_markdown(
        rows.iter().flat_map(|r| &r.adapters),
    ));
    md
}

/// report.md's "Predictions": each question, what the user said against what was measured
/// (nothing for an exercise without questions; `adherence`: each run's edge F1).
fn markdown_predictions(
    ex: &Exercise,
    rows: &[TableRow],
    adherence: &[Option<f64>],
    predictions: &[Option<f64>],
) -> String {
    use std::fmt::Write;
    let mut md = String::new();
    if ex.questions.is_empty() {
        return md;
    }
    let _ = writeln!(md, "\n## Predictions\n");
    for (i, q) in ex.questions.iter().enumerate() {
        let measured = q.measure.value(rows, adherence);
        let said = predictions.get(i).copied().flatten();
        let verdict = match (said, measured) {
            (Some(p), Some(m)) => q.measure.judge(p, m),
            (None, Some(m)) => format!("measured {}", q.measure.format(m)),
            (Some(p), None) => format!(
                "you said {}; not measured (the runs did not all finish)",
                q.measure.format(p)
            ),
            (None, None) => "not measured (the runs did not all finish)".into(),
        };
        let _ = writeln!(md, "- {} — {verdict}", q.text);
    }
    md
}

/// report.md's "What happened": [`what_happened`]'s notes as a list (indented notes nested
/// under the one before); nothing when there are none.
fn markdown_what_happened(
    ex: &Exercise,
    rows: &[TableRow],
    adherence: &[Option<f64>],
    kind: crate::models::ModelKind,
) -> String {
    use std::fmt::Write;
    let mut md = String::new();
    let notes = what_happened(ex, rows, adherence, kind);
    if notes.is_empty() {
        return md;
    }
    let _ = writeln!(md, "\n## What happened\n");
    for n in notes {
        // Indented notes continue the one before: a nested item.
        match n.strip_prefix("  ") {
            Some(more) => {
                let _ = writeln!(md, "  - {}", more.trim_start());
            }
            None => {
                let _ = writeln!(md, "- {n}");
            }
        }
    }
    md
}

/// report.md's end: where the numbers come from (the UNet variants the runs used, each once)
/// and the data files beside it.
fn markdown_sources(ex: &Exercise, provenance: &Provenance) -> String {
    use std::fmt::Write;
    let mut md = String::new();
    let mut unets: Vec<&str> = Vec::new();
    for r in &ex.runs {
        if !unets.contains(&r.unet.as_str()) {
            unets.push(&r.unet);
        }
    }
    let _ = writeln!(
        md,
        "\n## Where these numbers come from\n\n{}",
        provenance.markdown(&unets)
    );
    let _ = writeln!(
        md,
        "Files: [timings.csv](timings.csv) (one row per run, every phase) · [timings.json](timings.json) (the full reports)"
    );
    md
}

/// `DPM-Solver++ 20` → `dpm-solver-20`.
fn slug(label: &str) -> String {
    let mut out = String::new();
    for c in label.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_matches('-').to_string();
    if out.is_empty() { "run".into() } else { out }
}

/// `YYYYmmdd-HHMMSS` in UTC.
fn utc_stamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 → civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exercises::default_exercises;
    use std::time::Duration;

    /// A headless worker makes no previews, whatever config.toml asks of the TUI: its preview
    /// thread would share the timed run's cores.
    #[test]
    fn headless_runs_make_no_previews() {
        let mut config = Config::default();
        config.tui.preview = crate::pipeline::preview::PreviewKind::Decoder;
        let ex = default_exercises()[0]
            .clone()
            .for_model(crate::models::ModelKind::Micro);
        let started = start(&config, &ex, Some(Device::Cpu), None).unwrap();
        assert_eq!(
            started.info.preview.used,
            crate::pipeline::preview::PreviewKind::Off
        );
        assert_eq!(
            started.info.preview.asked,
            crate::pipeline::preview::PreviewKind::Off
        );
    }

    #[test]
    fn stamps_are_utc_calendar_times() {
        assert_eq!(utc_stamp(UNIX_EPOCH), "19700101-000000");
        // 2024-02-29 12:34:56 UTC
        let t = UNIX_EPOCH + Duration::from_secs(1_709_210_096);
        assert_eq!(utc_stamp(t), "20240229-123456");
    }

    #[test]
    fn labels_become_file_names() {
        assert_eq!(slug("DPM-Solver++ 20"), "dpm-solver-20");
        assert_eq!(slug("style + LCM-LoRA, LCM 4"), "style-lcm-lora-lcm-4");
        assert_eq!(slug("++"), "run");
    }

    #[test]
    fn saving_twice_makes_two_folders_and_overwrites_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("out");
        let ex = default_exercises().remove(0);
        let rows: Vec<TableRow> = ex.runs.iter().map(|s| s.table_row(false)).collect();
        let images = vec![Some(RgbImage::new(4, 4)), None, Some(RgbImage::new(4, 4))];
        let reports = vec![None, None, None];
        let a = save_exercise(&root, &ex, &rows, &images, &reports, &[]).unwrap();
        let b = save_exercise(&root, &ex, &rows, &images, &reports, &[]).unwrap();
        assert_ne!(a, b);
        for d in [&a, &b] {
            let mut names: Vec<String> = std::fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
                .collect();
            names.sort();
            assert_eq!(
                names,
                vec![
                    "1-ddpm-50.png",
                    "3-dpm-solver-10.png",
                    "contact-sheet.png",
                    "report.md",
                    "timings.csv",
                    "timings.json"
                ]
            );
        }
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(a.join("timings.json")).unwrap()).unwrap();
        assert_eq!(json["exercise"], 1);
        assert_eq!(json["images"][1], serde_json::Value::Null);
        // Only the two folders: no staging leftovers.
        assert_eq!(std::fs::read_dir(&root).unwrap().count(), 2);
    }

    #[test]
    fn an_exercise_under_a_controlnet_saves_its_control_image_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut ex = default_exercises()
            .into_iter()
            .find(|e| e.number == 5)
            .unwrap()
            .for_model(crate::models::ModelKind::Micro);
        locate_control_images(&mut ex).unwrap();
        let image = &ex.runs[0].control.as_ref().unwrap().image;
        assert!(image.is_absolute() && image.ends_with("assets/controls/micro-star.png"));
        let rows: Vec<TableRow> = ex.runs.iter().map(|s| s.table_row(false)).collect();
        let images = vec![Some(RgbImage::new(64, 64)); 4];
        let a = save_exercise(
            dir.path(),
            &ex,
            &rows,
            &images,
            &[None, None, None, None],
            &[],
        )
        .unwrap();
        let control = image::open(a.join(CONTROL_PNG)).unwrap().to_rgb8();
        assert_eq!(control, image::open(image).unwrap().to_rgb8(), "as given");
        // Five tiles: the control image, then the four runs.
        let sheet = image::open(a.join(CONTACT_SHEET)).unwrap();
        let (w, h) = crate::report::sheet::sheet_size(5, 64, 64);
        assert_eq!((sheet.width(), sheet.height()), (w, h));
        let (subtitle, _) = control_tile(&ex, Some((64, 64))).unwrap();
        assert_eq!(subtitle, "canny · scale 1 · ControlNet");
        // A missing image is said on its tile, not an error.
        let mut gone = ex.clone();
        gone.runs[0].control.as_mut().unwrap().image = dir.path().join("nope.png");
        let (subtitle, img) = control_tile(&gone, None).unwrap();
        assert!(
            img.is_none() && subtitle.ends_with("nope.png could not be read"),
            "{subtitle}"
        );
        assert!(control_tile(&default_exercises()[0], None).is_none());
    }

    #[test]
    fn a_disk_that_fills_up_mid_save_leaves_no_partial_folder_and_says_disk_full() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("out/deeper");
        let ex = default_exercises().remove(0);
        let rows: Vec<TableRow> = ex.runs.iter().map(|s| s.table_row(false)).collect();
        let img = RgbImage::from_fn(64, 64, |x, y| image::Rgb([(x * 9) as u8, (y * 5) as u8, 7]));
        let images = vec![Some(img.clone()), Some(img), None];
        let reports = vec![None, None, None];
        // The first PNG fits, a later file does not.
        let first = crate::report::encode_png(images[0].as_ref().unwrap())
            .unwrap()
            .len() as u64;
        let err = {
            let _full = crate::report::fault::disk_full_after(first + 100);
            save_exercise(&root, &ex, &rows, &images, &reports, &[]).unwrap_err()
        };
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "disk full while saving into {} (2-dpm-solver-20.png did not fit: No space left on device (os error 28)); nothing was saved, the partial folder was removed\nFix: free space on the disk of {d} (see df -h {d}), or choose --out on another disk",
                root.display(),
                d = dir.path().display()
            )),
            "{text}"
        );
        // Nothing: no staging folder, no half folder, not even the folders it created.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // With room again the same save works.
        save_exercise(&root, &ex, &rows, &images, &reports, &[]).unwrap();
        assert_eq!(std::fs::read_dir(&root).unwrap().count(), 1);
    }

    #[test]
    fn a_save_under_a_file_names_the_file_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("results");
        std::fs::write(&file, b"not a folder").unwrap();
        let ex = default_exercises().remove(0);
        let rows: Vec<TableRow> = ex.runs.iter().map(|s| s.table_row(false)).collect();
        let err = save_exercise(&file.join("out"), &ex, &rows, &[], &[], &[]).unwrap_err();
        assert!(
            err.to_string().starts_with(&format!(
                "cannot create the output folder {}: {} is a file, not a folder\nFix: ",
                file.join("out").display(),
                file.display()
            )),
            "{err}"
        );
        assert_eq!(std::fs::read(&file).unwrap(), b"not a folder");
    }

    #[test]
    fn the_report_folder_is_complete_and_consistent() {
        let dir = tempfile::tempdir().unwrap();
        let ex = default_exercises().remove(0);
        let mut rows: Vec<TableRow> = ex
            .runs
            .iter()
            .enumerate()
            .map(|(i, s)| s.table_row(i == 0))
            .collect();
        for (i, row) in rows.iter_mut().enumerate() {
            row.state = RowState::Finished;
            row.total_ms = Some(100.0 / (i + 1) as f64);
        }
        let img =
            |v: u8| RgbImage::from_fn(64, 64, |x, y| image::Rgb([v, (x * 4) as u8, (y * 4) as u8]));
        let images = vec![Some(img(10)), Some(img(40)), None];
        with_speedups(&mut rows, 0);
        let refs: Vec<Option<&RgbImage>> = images.iter().map(Option::as_ref).collect();
        with_quality(&mut rows, &refs, 0);
        let folder = save_exercise(
            dir.path(),
            &ex,
            &rows,
            &images,
            &[None, None, None],
            &[Some(2.5), None],
        )
        .unwrap();

        // The contact sheet: one tile per run, 64×64 images shown 5×.
        let sheet = image::open(folder.join("contact-sheet.png")).unwrap();
        let want = crate::report::sheet::sheet_size(3, 64, 64);
        assert_eq!((sheet.width(), sheet.height()), want);

        // The CSV parses: a header and one record per run, with the quality numbers.
        let mut reader = csv::Reader::from_path(folder.join("timings.csv")).unwrap();
        let header = reader.headers().unwrap().clone();
        let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(records.len(), 3);
        let col = |name: &str| header.iter().position(|h| h == name).unwrap();
        assert_eq!(&records[1][col("label")], "DPM-Solver++ 20");
        let ssim: f64 = records[1][col("ssim")].parse().unwrap();
        assert_eq!(ssim, rows[1].quality.unwrap().ssim);
        assert_eq!(&records[0][col("ssim")], "", "no quality for the baseline");
        let speedup: f64 = records[2][col("speedup")].parse().unwrap();
        assert!((speedup - 3.0).abs() < 1e-12);

        // Every relative link in report.md points at a file of the folder.
        let md = std::fs::read_to_string(folder.join("report.md")).unwrap();
        let mut links = 0;
        for part in md.split("](").skip(1) {
            let target = &part[..part.find(')').unwrap()];
            assert!(folder.join(target).is_file(), "broken link {target}");
            links += 1;
        }
        assert_eq!(links, 5, "sheet, two images, csv, json: {md}");
        assert!(
            md.contains("you said 2.5×"),
            "the prediction is reported: {md}"
        );
        assert!(
            md.contains(&format!("{:.4}", rows[1].quality.unwrap().ssim)),
            "{md}"
        );
    }

    #[test]
    fn the_report_says_where_its_numbers_come_from() {
        let dir = tempfile::tempdir().unwrap();
        let ex = default_exercises().remove(2);
        let rows: Vec<TableRow> = ex.runs.iter().map(|s| s.table_row(false)).collect();
        let tiny = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny");
        let reports: Vec<Option<RunReport>> = (0..ex.runs.len())
            .map(|i| {
                let mut r =
                    crate::tui::fake::report(&ex.request(i, crate::rng::RngSource::TorchCpu));
                r.model = tiny.display().to_string();
                r.device = "Test CPU 9000".into();
                Some(r)
            })
            .collect();
        let images = vec![None; ex.runs.len()];
        let folder = save_exercise(dir.path(), &ex, &rows, &images, &reports, &[]).unwrap();

        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(folder.join("timings.json")).unwrap()).unwrap();
        let p = &json["provenance"];
        assert_eq!(p["speedscape"], env!("CARGO_PKG_VERSION"));
        assert_eq!(p["device"], "Test CPU 9000");
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(tiny.join("manifest.json")).unwrap()).unwrap();
        assert_eq!(p["model_manifest"], manifest, "the manifest as written");

        let md = std::fs::read_to_string(folder.join("report.md")).unwrap();
        let libs = &manifest["exporter"]["libraries"];
        for lib in ["torch", "diffusers", "onnxruntime"] {
            let v = libs[lib].as_str().unwrap();
            assert!(md.contains(&format!("{lib} {v}")), "{lib} {v}: {md}");
        }
        // Exercise 3 uses the style and LCM variants: their LoRAs and weights are named.
        assert!(md.contains("UNet `style`: style × 1"), "{md}");
        assert!(md.contains("lcm × 1"), "{md}");
        assert!(md.contains("Test CPU 9000"), "{md}");

        let mut reader = csv::Reader::from_path(folder.join("timings.csv")).unwrap();
        let header = reader.headers().unwrap().clone();
        let first = reader.records().next().unwrap().unwrap();
        let col = |name: &str| header.iter().position(|h| h == name).unwrap();
        assert_eq!(&first[col("device")], "Test CPU 9000");
        assert_eq!(&first[col("speedscape")], env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn an_unknown_exercise_lists_the_valid_numbers() {
        let err = find_exercise(&Config::default(), 9).unwrap_err();
        let msg = format!("{err}");
        assert!(msg.contains("no exercise 9"), "{msg}");
        assert!(
            msg.contains("1 (The sampler swap), 2 (DPM-Solver++ vs LCM-LoRA), 3 (Composability)"),
            "{msg}"
        );
    }
}
