//! The timing table of an exercise: one row per run, filled in from worker events while the run
//! goes (partial numbers marked) and from its report when it ends. [`TableRow::apply`] is the one
//! fold of a run's events into its row: the TUI, `speedscape exercise` and the saved reports all
//! build their rows with it; [`with_speedups`] and [`speedup`] say what a speedup is, for them and
//! for the sweeps. The TUI draws these rows; the headless `speedscape exercise` prints them with
//! [`format_table`].

use image::RgbImage;
use serde::Serialize;

use crate::lora::{AdapterWeight, AppliedAdapter};
use crate::quality::{Quality, compare};

use crate::worker::protocol::Event;

/// One row, as displayed. Times in milliseconds; `None` where not known (yet): the table shows
/// its "no value" mark there, never a made-up 0.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TableRow {
    pub label: String,
    pub scheduler: String,
    pub steps: usize,
    pub cfg: f32,
    /// UNet variant name.
    pub unet: String,
    /// LoRA adapters the run asked for on top of `unet`, with their weights (see
    /// [`TableRow::unet_label`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub loras: Vec<AdapterWeight>,
    /// The adapters as the finished run applied them: file and SHA-256 (from its report).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub adapters: Vec<AppliedAdapter>,
    /// Steps done so far (== `steps` when finished).
    pub steps_done: usize,
    pub total_ms: Option<f64>,
    pub text_ms: Option<f64>,
    pub unet_ms: Option<f64>,
    /// `None` for a run with no step done (nothing to divide by).
    pub unet_ms_per_step: Option<f64>,
    pub vae_ms: Option<f64>,
    /// Scheduler time summed over the steps so far.
    pub scheduler_ms: Option<f64>,
    /// The ControlNet's time summed over the steps so far, apart from the UNet's; `None` for a
    /// run without control (the table then has no ControlNet column for it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub controlnet_ms: Option<f64>,
    /// The ControlNet's time per step (`None` without control, or with no step done).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub controlnet_ms_per_step: Option<f64>,
    /// Control adherence of the finished image: the edge F1 against the control edge map
    /// (`None` without control, before the end, or when it could not be measured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adherence: Option<f64>,
    /// Denoising steps per second (UNet + scheduler time only).
    pub its: Option<f64>,
    /// Baseline total time ÷ this run's total time (see [`speedup`]).
    pub speedup: Option<f64>,
    pub is_baseline: bool,
    /// The finished image against the baseline's (`None` for the baseline itself, or while
    /// either image is missing).
    pub quality: Option<Quality>,
    /// The run is still going: the numbers so far are partial.
    pub partial: bool,
    pub state: RowState,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RowState {
    #[default]
    Pending,
    Loading,
    Running,
    Finished,
    Cancelled,
    Failed,
}

/// The accumulator's name where it reads better: a row is built with [`TableRow::new`] and
/// fed the run's events with [`TableRow::apply`].
pub type RunRow = TableRow;

/// What a run was asked to do, as its row's settings columns show it: what [`TableRow::new`]
/// takes (the exercises fill it in from their run specs).
#[derive(Debug, Clone, PartialEq)]
pub struct RunSettings {
    pub label: String,
    /// The scheduler's name as the table shows it (`ddpm`, `dpmpp`, `lcm`).
    pub scheduler: String,
    pub steps: usize,
    /// Classifier-free guidance scale.
    pub cfg: f32,
    /// UNet variant name.
    pub unet: String,
    /// LoRA adapters fused at run time on top of `unet`.
    pub loras: Vec<AdapterWeight>,
}

/// How tables name the UNet a run uses: the variant, then each run-time adapter with its
/// weight — `lcm`, `base + style×0.6`, `lcm + style×0.6 + detail×-0.5`. A file given by path is
/// named by its stem, as reports name it.
pub fn unet_label(unet: &str, loras: &[AdapterWeight]) -> String {
    let mut s = unet.to_string();
    for a in loras {
        s.push_str(&format!(" + {}×{}", adapter_name(&a.adapter), a.weight));
    }
    s
}

/// An adapter as tables name it: a folder adapter's name, or a file's stem.
pub fn adapter_name(adapter: &str) -> String {
    let path = std::path::Path::new(adapter);
    if (adapter.ends_with(".safetensors") || path.components().count() > 1)
        && let Some(stem) = path.file_stem()
    {
        return stem.to_string_lossy().into_owned();
    }
    adapter.to_string()
}

/// The first 12 hex digits of a SHA-256: how the table names a file (report.md has it whole).
pub fn short_sha(sha256: &str) -> &str {
    sha256.get(..12).unwrap_or(sha256)
}

/// Each distinct adapter of `all` (by name, weight and file digest), in the order first met:
/// what reports list once however many runs applied it.
pub fn distinct_adapters<'a>(
    all: impl IntoIterator<Item = &'a AppliedAdapter>,
) -> Vec<&'a AppliedAdapter> {
    let mut out: Vec<&AppliedAdapter> = Vec::new();
    for a in all {
        if !out
            .iter()
            .any(|o| o.name == a.name && o.weight == a.weight && o.sha256 == a.sha256)
        {
            out.push(a);
        }
    }
    out
}

/// The Markdown table reports (report.md, a sweep's summary.md) give of the distinct adapters
/// of `all` fused at run time: each with its weight, format, what it changed, its file and the
/// file's whole SHA-256; empty when there is none.
pub fn adapters_markdown<'a>(all: impl IntoIterator<Item = &'a AppliedAdapter>) -> String {
    use std::fmt::Write;
    let applied = distinct_adapters(all);
    if applied.is_empty() {
        return String::new();
    }
    let mut md = String::from(
        "\nLoRA adapters fused at run time (on top of each run's UNet variant):\n\n\
         | adapter | weight | format | changes | file | sha256 |\n|---|--:|---|---|---|---|\n",
    );
    for a in applied {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | `{}` | `{}` |",
            a.name,
            a.weight,
            a.format,
            a.components.join(", "),
            a.file,
            a.sha256
        );
    }
    md
}

/// One line per distinct adapter of `all` ([`distinct_adapters`]): its weight, its file's
/// SHA-256 (whole, or [`short_sha`] when not `full_sha`), format and file — what the timing
/// table and `speedscape bench` print under their tables. Nothing when there is none.
pub fn adapter_lines<'a>(
    all: impl IntoIterator<Item = &'a AppliedAdapter>,
    full_sha: bool,
) -> String {
    distinct_adapters(all)
        .into_iter()
        .map(|a| {
            let sha = if full_sha {
                &a.sha256
            } else {
                short_sha(&a.sha256)
            };
            format!(
                "LoRA {}×{}: sha256 {sha} ({}, {})\n",
                a.name, a.weight, a.format, a.file
            )
        })
        .collect()
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl TableRow {
    /// A pending row for a run of `settings`.
    pub fn new(settings: RunSettings, is_baseline: bool) -> Self {
        let RunSettings {
            label,
            scheduler,
            steps,
            cfg,
            unet,
            loras,
        } = settings;
        Self {
            label,
            scheduler,
            steps,
            cfg,
            unet,
            loras,
            is_baseline,
            ..Self::default()
        }
    }

    /// The UNet this row's run uses, as the table's UNet column writes it ([`unet_label`]).
    pub fn unet_label(&self) -> String {
        unet_label(&self.unet, &self.loras)
    }

    /// Folds one event of this row's run into it: the one place worker events become table
    /// numbers. The caller routes events by run id; `Ready`, `Fatal` and `Preview` change
    /// nothing, and a step older than one already counted (out of order) is dropped.
    pub fn apply(&mut self, ev: &Event) {
        match ev {
            Event::Ready(_) | Event::Fatal { .. } | Event::Preview { .. } => {}
            Event::Loading { .. } | Event::Loaded { .. } => self.state = RowState::Loading,
            Event::Started { total_steps, .. } => self.start(*total_steps),
            Event::Encoded { text, .. } => self.text_ms = Some(ms(*text)),
            Event::Step {
                index,
                total,
                timing,
                elapsed,
                ..
            } => {
                if *index >= self.steps_done {
                    self.step(*index, *total, timing, *elapsed);
                }
            }
            Event::Finished { report, .. } => {
                self.finish(&report.timings, report.steps);
                self.adapters = report.adapters.clone();
                self.finish_control(report.control.as_ref(), &report.timings);
            }
            Event::Cancelled { .. } => self.state = RowState::Cancelled,
            Event::Failed { .. } => self.state = RowState::Failed,
        }
    }

    /// `Started`: a fresh attempt, so the numbers of any earlier one go.
    fn start(&mut self, total_steps: usize) {
        *self = Self {
            label: std::mem::take(&mut self.label),
            scheduler: std::mem::take(&mut self.scheduler),
            unet: std::mem::take(&mut self.unet),
            loras: std::mem::take(&mut self.loras),
            steps: total_steps,
            cfg: self.cfg,
            is_baseline: self.is_baseline,
            state: RowState::Running,
            partial: true,
            ..Self::default()
        };
    }

    /// Step `index` of `total` done: the sums so far, marked partial.
    fn step(
        &mut self,
        index: usize,
        total: usize,
        timing: &crate::pipeline::StepTiming,
        elapsed: std::time::Duration,
    ) {
        self.state = RowState::Running;
        self.steps_done = index + 1;
        self.steps = total;
        let unet = self.unet_ms.unwrap_or(0.0) + ms(timing.unet);
        let sched = self.scheduler_ms.unwrap_or(0.0) + ms(timing.scheduler);
        self.unet_ms = Some(unet);
        self.scheduler_ms = Some(sched);
        self.unet_ms_per_step = per_step(unet, self.steps_done);
        self.its = its(self.steps_done, unet + sched);
        self.total_ms = Some(ms(elapsed));
        self.partial = true;
        // A step with ControlNet time is a controlled run's: its column starts here.
        if self.controlnet_ms.is_some() || !timing.controlnet.is_zero() {
            let controlnet = self.controlnet_ms.unwrap_or(0.0) + ms(timing.controlnet);
            self.controlnet_ms = Some(controlnet);
            self.controlnet_ms_per_step = per_step(controlnet, self.steps_done);
        }
    }

    /// `Finished` of a controlled run (`control`): the ControlNet's time from the report's
    /// timings and the adherence (a NaN adherence, not measured, is none). Without control the
    /// ControlNet numbers are none.
    fn finish_control(
        &mut self,
        control: Option<&crate::pipeline::control::ControlReport>,
        t: &crate::pipeline::Timings,
    ) {
        let Some(c) = control else {
            self.controlnet_ms = None;
            self.controlnet_ms_per_step = None;
            self.adherence = None;
            return;
        };
        let controlnet = ms(t.controlnet_total());
        self.controlnet_ms = Some(controlnet);
        self.controlnet_ms_per_step = per_step(controlnet, t.controlnet.len());
        self.adherence = c.adherence.is_finite().then_some(c.adherence);
    }

    /// This row's run has a ControlNet (as far as its events have said).
    pub fn has_control(&self) -> bool {
        self.controlnet_ms.is_some()
    }

    /// `Finished`: the report's timings replace the partial numbers.
    fn finish(&mut self, t: &crate::pipeline::Timings, steps: usize) {
        let n = t.unet.len();
        let unet = ms(t.unet_total());
        let sched = ms(t.scheduler_total());
        self.steps = steps.max(n);
        self.steps_done = n;
        self.total_ms = Some(ms(t.total));
        self.text_ms = Some(ms(t.text));
        self.unet_ms = Some(unet);
        self.scheduler_ms = Some(sched);
        self.unet_ms_per_step = per_step(unet, n);
        self.vae_ms = Some(ms(t.vae));
        self.its = its(n, unet + sched);
        self.partial = false;
        self.state = RowState::Finished;
    }
}

/// UNet time per step; `None` for no steps (not 0, not NaN).
fn per_step(unet_ms: f64, steps: usize) -> Option<f64> {
    (steps > 0).then(|| unet_ms / steps as f64)
}

fn its(steps: usize, denoise_ms: f64) -> Option<f64> {
    (steps > 0 && denoise_ms > 0.0).then(|| steps as f64 / (denoise_ms / 1e3))
}

/// How many times faster a run of `ms` is than a baseline of `baseline_ms`: `None` unless both
/// times are positive and finite (a zero baseline gives no speedup, not a misleading 0×).
pub fn speedup(baseline_ms: f64, ms: f64) -> Option<f64> {
    let ok = |t: f64| t.is_finite() && t > 0.0;
    (ok(baseline_ms) && ok(ms)).then(|| baseline_ms / ms)
}

/// Sets every row's speedup to the baseline's total time ÷ its own ([`speedup`]), where both
/// runs finished (`None` elsewhere; the baseline itself gets 1).
pub fn with_speedups(rows: &mut [TableRow], baseline: usize) {
    let done = |r: &TableRow| {
        (r.state == RowState::Finished)
            .then_some(r.total_ms)
            .flatten()
    };
    let base = rows.get(baseline).and_then(done);
    for (i, row) in rows.iter_mut().enumerate() {
        row.is_baseline = i == baseline;
        row.speedup = match (base, done(row)) {
            (Some(b), Some(t)) => speedup(b, t),
            _ => None,
        };
    }
}

/// Fills in each finished run's quality against the baseline's image (`images[i]` is run `i`'s
/// final image). Rows whose image or baseline image is missing, or of another size, get none.
pub fn with_quality(rows: &mut [TableRow], images: &[Option<&RgbImage>], baseline: usize) {
    let reference = images.get(baseline).copied().flatten();
    for (i, row) in rows.iter_mut().enumerate() {
        row.quality = match (reference, images.get(i).copied().flatten()) {
            (Some(r), Some(img)) if i != baseline && row.state == RowState::Finished => {
                compare(r, img).ok()
            }
            _ => None,
        };
    }
}

/// Milliseconds with precision that suits their size: `1234`, `123`, `12.3`, `1.23`.
pub fn format_ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The mark of a number that does not apply to a row (a run without control has no ControlNet
/// time and no adherence); `-` is a number not known (yet).
pub const NOT_APPLICABLE: &str = "—";

/// Whether tables show the ControlNet columns (its time per step, the adherence): only when
/// some row's run has a ControlNet, so tables without control keep their width.
pub fn control_columns(rows: &[TableRow]) -> bool {
    rows.iter().any(TableRow::has_control)
}

/// A control adherence as tables write it, like SSIM (`0.8123`); [`NOT_APPLICABLE`] for none or
/// NaN (not measured).
pub fn format_adherence(v: Option<f64>) -> String {
    v.filter(|v| v.is_finite())
        .map_or_else(|| NOT_APPLICABLE.to_string(), |v| format!("{v:.4}"))
}

/// A run's control as reports say it: `ControlNet edge on edges.png (preprocess canny, scale
/// 0.5)`.
pub fn control_label(c: &crate::pipeline::control::ControlReport) -> String {
    format!(
        "ControlNet {} on {} (preprocess {}, scale {})",
        c.name,
        c.image,
        c.preprocess.name(),
        c.scale
    )
}

/// One column of [`format_table`]: its header, whether its text is left-aligned, and the cell
/// of a row.
struct Column {
    header: &'static str,
    left: bool,
    cell: fn(&TableRow) -> String,
}

/// `v` as the table writes a number: `-` when not known, `~` before a partial one.
fn number(r: &TableRow, v: Option<f64>, f: fn(f64) -> String) -> String {
    let mark = if r.partial { "~" } else { "" };
    v.map_or_else(|| "-".to_string(), |v| format!("{mark}{}", f(v)))
}

/// A ControlNet column's cell: `v` for a controlled run, [`NOT_APPLICABLE`] for a run that
/// started without control, `-` for one not started yet (whether it has control is not known).
fn control_cell(r: &TableRow, v: Option<f64>, f: fn(f64) -> String) -> String {
    match r.state {
        _ if r.has_control() => number(r, v, f),
        RowState::Pending | RowState::Loading => "-".to_string(),
        _ => NOT_APPLICABLE.to_string(),
    }
}

fn state_cell(r: &TableRow) -> String {
    match r.state {
        RowState::Pending => "pending".to_string(),
        RowState::Loading => "loading".to_string(),
        RowState::Running => format!("{}/{}", r.steps_done, r.steps),
        RowState::Finished => "done".to_string(),
        RowState::Cancelled => format!("cancelled {}/{}", r.steps_done, r.steps),
        RowState::Failed => "failed".to_string(),
    }
}

/// The columns of [`format_table`], the ControlNet's time per step and the adherence among
/// them when `control` ([`control_columns`]).
fn columns(control: bool) -> Vec<Column> {
    fn col(header: &'static str, left: bool, cell: fn(&TableRow) -> String) -> Column {
        Column { header, left, cell }
    }
    let mut cols = vec![
        col("run", true, |r: &TableRow| r.label.clone()),
        col("scheduler", true, |r: &TableRow| r.scheduler.clone()),
        col("steps", false, |r: &TableRow| r.steps.to_string()),
        col("cfg", false, |r: &TableRow| format!("{}", r.cfg)),
        col("unet", true, |r: &TableRow| r.unet_label()),
        col("state", true, state_cell),
        col("total ms", false, |r: &TableRow| {
            number(r, r.total_ms, format_ms)
        }),
        col("text ms", false, |r: &TableRow| {
            number(r, r.text_ms, format_ms)
        }),
        col("unet ms", false, |r: &TableRow| {
            number(r, r.unet_ms, format_ms)
        }),
        col("ms/step", false, |r: &TableRow| {
            number(r, r.unet_ms_per_step, format_ms)
        }),
    ];
    if control {
        cols.push(col("cn ms/step", false, |r: &TableRow| {
            control_cell(r, r.controlnet_ms_per_step, format_ms)
        }));
    }
    cols.extend([
        col("vae ms", false, |r: &TableRow| {
            number(r, r.vae_ms, format_ms)
        }),
        col("it/s", false, |r: &TableRow| {
            number(r, r.its, |v| format!("{v:.1}"))
        }),
        col("speedup", false, |r: &TableRow| {
            match (r.is_baseline, r.speedup) {
                (true, _) => "baseline".to_string(),
                (false, Some(s)) => format!("{s:.2}×"),
                (false, None) => "-".to_string(),
            }
        }),
        col("SSIM", false, |r: &TableRow| {
            match (r.is_baseline, r.quality) {
                (true, _) => "baseline".to_string(),
                (false, Some(q)) => format!("{:.4}", q.ssim),
                (false, None) => "-".to_string(),
            }
        }),
        col("PSNR dB", false, |r: &TableRow| {
            match (r.is_baseline, r.quality) {
                (true, _) => "baseline".to_string(),
                (false, Some(q)) => q
                    .psnr_db
                    .map_or_else(|| "identical".to_string(), |p| format!("{p:.2}")),
                (false, None) => "-".to_string(),
            }
        }),
    ]);
    if control {
        // The adherence is the run's own (its image against the control), so the baseline has
        // one too.
        cols.push(col("edge F1", false, |r: &TableRow| match r.state {
            RowState::Finished if r.has_control() => format_adherence(r.adherence),
            _ => control_cell(r, None, format_ms),
        }));
    }
    cols
}

/// The fixed-width text table of an exercise's rows: a header, one line per run. Numbers of a
/// run still going (or cancelled) carry `~`; the baseline's speedup column says `baseline`.
/// When some run has a ControlNet, its time per step (`cn ms/step`) follows the UNet's and its
/// control adherence (`edge F1`) follows PSNR.
pub fn format_table(rows: &[TableRow]) -> String {
    let cols = columns(control_columns(rows));
    let lines: Vec<Vec<String>> = rows
        .iter()
        .map(|r| cols.iter().map(|c| (c.cell)(r)).collect())
        .collect();
    let widths: Vec<usize> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| {
            lines
                .iter()
                .map(|l| l[i].chars().count())
                .chain([c.header.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let render = |cells: &[String]| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let pad = " ".repeat(widths[i].saturating_sub(c.chars().count()));
                if cols[i].left {
                    format!("{c}{pad}")
                } else {
                    format!("{pad}{c}")
                }
            })
            .collect();
        parts.join("  ").trim_end().to_string()
    };
    let header: Vec<String> = cols.iter().map(|c| c.header.to_string()).collect();
    let mut out = render(&header);
    out.push('\n');
    for l in &lines {
        out.push_str(&render(l));
        out.push('\n');
    }
    out.push_str(&adapter_lines(rows.iter().flat_map(|r| &r.adapters), false));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{RunReport, StepTiming, Timings};
    use crate::runtime::Provider;
    use std::time::Duration;

    /// Exercise 1's runs: DDPM 50 (the baseline), DPM-Solver++ 20 and 10.
    fn exercise_1() -> Vec<RunSettings> {
        [
            ("DDPM 50", "ddpm", 50),
            ("DPM-Solver++ 20", "dpmpp", 20),
            ("DPM-Solver++ 10", "dpmpp", 10),
        ]
        .map(|(label, scheduler, steps)| RunSettings {
            label: label.into(),
            scheduler: scheduler.into(),
            steps,
            cfg: 7.5,
            unet: "base".into(),
            loras: Vec::new(),
        })
        .to_vec()
    }

    fn msd(v: f64) -> Duration {
        Duration::from_secs_f64(v / 1e3)
    }

    fn step(index: usize, total: usize, unet: f64, sched: f64, elapsed: f64) -> Event {
        Event::Step {
            run: 1,
            index,
            total,
            timestep: 999 - index as i64,
            timing: StepTiming {
                unet: msd(unet),
                controlnet: Duration::ZERO,
                scheduler: msd(sched),
            },
            elapsed: msd(elapsed),
        }
    }

    fn report(steps: usize, unet_each: f64, sched_each: f64, text: f64, vae: f64) -> RunReport {
        let total = text + steps as f64 * (unet_each + sched_each) + vae;
        RunReport {
            model: "models/tiny".into(),
            tiny_model: true,
            model_kind: crate::models::ModelKind::Tiny,
            provider: Provider::Cpu,
            device: "test CPU".into(),
            onnxruntime: "lib".into(),
            onnxruntime_version: "1.0".into(),
            unet: "base".into(),
            unet_label: "SD v1.5".into(),
            adapters: Vec::new(),
            scheduler: "ddpm".into(),
            steps,
            guidance: 7.5,
            seed: 42,
            rng: "torch-cpu".into(),
            width: 64,
            height: 64,
            timesteps: vec![],
            prompt_tokens: 3,
            timings: Timings {
                text: msd(text),
                unet: vec![msd(unet_each); steps],
                scheduler: vec![msd(sched_each); steps],
                controlnet: Vec::new(),
                vae: msd(vae),
                total: msd(total),
                ort: msd(total * 0.9),
            },
            load_ms: Default::default(),
            warnings: vec![],
            clip_score: None,
            judge: None,
            control: None,
        }
    }

    fn finished(steps: usize, unet_each: f64, sched_each: f64, text: f64, vae: f64) -> Event {
        Event::Finished {
            run: 1,
            report: Box::new(report(steps, unet_each, sched_each, text, vae)),
            image: image::RgbImage::new(1, 1),
        }
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-6 * b.abs().max(1.0))
    }

    #[test]
    fn steps_fill_in_partial_numbers_and_the_report_replaces_them() {
        let mut row = TableRow::new(exercise_1().remove(0), true);
        assert_eq!(row.state, RowState::Pending);
        row.apply(&Event::Loading {
            run: 1,
            component: "unet".into(),
        });
        assert_eq!(row.state, RowState::Loading);
        row.apply(&Event::Started {
            run: 1,
            total_steps: 4,
            width: 64,
            height: 64,
        });
        assert_eq!(
            (row.state, row.partial, row.steps),
            (RowState::Running, true, 4)
        );
        row.apply(&Event::Encoded {
            run: 1,
            text: msd(5.0),
        });
        row.apply(&step(0, 4, 10.0, 1.0, 16.0));
        row.apply(&step(1, 4, 20.0, 1.0, 37.0));
        assert_eq!(row.steps_done, 2);
        assert!(close(row.text_ms, 5.0));
        assert!(close(row.unet_ms, 30.0), "{:?}", row.unet_ms);
        assert!(close(row.unet_ms_per_step, 15.0));
        // 2 steps in 32 ms of UNet + scheduler
        assert!(close(row.its, 2.0 / 0.032));
        assert!(close(row.total_ms, 37.0));
        assert!(row.vae_ms.is_none());

        row.apply(&finished(4, 12.0, 0.5, 6.0, 20.0));
        assert_eq!(
            (row.state, row.partial, row.steps_done),
            (RowState::Finished, false, 4)
        );
        assert!(close(row.unet_ms, 48.0));
        assert!(close(row.unet_ms_per_step, 12.0));
        assert!(close(row.text_ms, 6.0));
        assert!(close(row.vae_ms, 20.0));
        assert!(close(row.total_ms, 6.0 + 4.0 * 12.5 + 20.0));
        assert!(close(row.its, 4.0 / 0.05));
    }

    #[test]
    fn cancelled_and_failed_rows_keep_their_partial_numbers() {
        let spec = exercise_1().remove(0);
        let mut row = TableRow::new(spec.clone(), false);
        row.apply(&Event::Started {
            run: 1,
            total_steps: 50,
            width: 64,
            height: 64,
        });
        row.apply(&step(0, 50, 10.0, 1.0, 12.0));
        row.apply(&Event::Cancelled { run: 1 });
        assert_eq!(
            (row.state, row.partial, row.steps_done),
            (RowState::Cancelled, true, 1)
        );
        let mut failed = TableRow::new(spec, false);
        failed.apply(&Event::Failed {
            run: 1,
            error: "boom".into(),
        });
        assert_eq!(failed.state, RowState::Failed);
    }

    #[test]
    fn a_second_start_clears_the_numbers_of_an_earlier_attempt() {
        let mut row = TableRow::new(exercise_1().remove(1), false);
        row.apply(&finished(3, 10.0, 1.0, 5.0, 5.0));
        row.apply(&Event::Started {
            run: 2,
            total_steps: 20,
            width: 64,
            height: 64,
        });
        assert_eq!(row.steps_done, 0);
        assert!(row.total_ms.is_none() && row.vae_ms.is_none());
        assert_eq!(row.label, "DPM-Solver++ 20");
    }

    fn rows_done(totals: &[Option<f64>]) -> Vec<TableRow> {
        totals
            .iter()
            .zip(exercise_1())
            .enumerate()
            .map(|(i, (t, settings))| {
                let mut r = TableRow::new(settings, i == 0);
                if let Some(t) = t {
                    r.state = RowState::Finished;
                    r.total_ms = Some(*t);
                }
                r
            })
            .collect()
    }

    #[test]
    fn speedup_is_baseline_total_over_this_total_only_when_both_finished() {
        let mut rows = rows_done(&[Some(1000.0), Some(400.0), None]);
        with_speedups(&mut rows, 0);
        assert!(close(rows[0].speedup, 1.0));
        assert!(close(rows[1].speedup, 2.5));
        assert_eq!(rows[2].speedup, None, "unfinished");
        // An unfinished baseline gives nobody a speedup.
        let mut rows = rows_done(&[None, Some(400.0), Some(200.0)]);
        with_speedups(&mut rows, 0);
        assert!(rows.iter().all(|r| r.speedup.is_none()));
        // The baseline may be any row.
        let mut rows = rows_done(&[Some(1000.0), Some(400.0), Some(200.0)]);
        with_speedups(&mut rows, 1);
        assert!(rows[1].is_baseline && !rows[0].is_baseline);
        assert!(close(rows[0].speedup, 0.4));
        assert!(close(rows[2].speedup, 2.0));
    }

    #[test]
    fn the_table_aligns_columns_marks_partial_numbers_and_the_baseline() {
        let mut rows: Vec<TableRow> = exercise_1()
            .into_iter()
            .enumerate()
            .map(|(i, s)| TableRow::new(s, i == 0))
            .collect();
        rows[0].apply(&finished(50, 12.0, 0.5, 6.0, 20.0));
        rows[1].apply(&finished(20, 12.0, 0.5, 6.0, 20.0));
        rows[2].apply(&Event::Started {
            run: 3,
            total_steps: 10,
            width: 64,
            height: 64,
        });
        rows[2].apply(&step(0, 10, 12.345, 0.5, 19.0));
        with_speedups(&mut rows, 0);
        let table = format_table(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(
            lines[0].starts_with("run") && lines[0].ends_with("speedup      SSIM   PSNR dB"),
            "{table}"
        );
        // Every column starts where its header does: "total ms" is right-aligned, so its
        // numbers end where the header ends.
        let end = lines[0].find("total ms").unwrap() + "total ms".len();
        assert_eq!(&lines[1][end - 3..end], "651", "{table}"); // 6 + 50 × 12.5 + 20
        fn last3(l: &str) -> Vec<&str> {
            l.split_whitespace().rev().take(3).collect()
        }
        assert_eq!(last3(lines[1]), ["baseline"; 3], "{table}");
        // 651 / 276 = 2.36 (no images here, so no quality numbers)
        assert_eq!(last3(lines[2]), ["-", "-", "2.36×"], "{table}");
        assert!(
            lines[3].contains("~12.3"),
            "partial UNet time marked: {table}"
        );
        assert!(lines[3].contains("1/10"), "{table}");
        assert_eq!(
            last3(lines[3]),
            ["-"; 3],
            "no speedup while running: {table}"
        );
        assert!(!lines[1].contains('~'), "{table}");
    }

    #[test]
    fn milliseconds_get_precision_by_size() {
        assert_eq!(format_ms(1234.56), "1235");
        assert_eq!(format_ms(123.456), "123");
        assert_eq!(format_ms(12.345), "12.3");
        assert_eq!(format_ms(1.2345), "1.23");
    }

    #[test]
    fn quality_is_measured_against_the_baseline_image_for_finished_rows_only() {
        let base = RgbImage::from_fn(16, 16, |x, y| {
            image::Rgb([(x * 16) as u8, (y * 16) as u8, 0])
        });
        let mut other = base.clone();
        other.put_pixel(3, 3, image::Rgb([255, 255, 255]));
        let finished = || TableRow {
            state: RowState::Finished,
            ..TableRow::default()
        };
        let mut rows = vec![finished(), finished(), TableRow::default(), finished()];
        let images = [Some(&base), Some(&other), Some(&other), None];
        with_quality(&mut rows, &images, 0);
        assert_eq!(rows[0].quality, None, "the baseline itself");
        assert_eq!(rows[1].quality, Some(compare(&base, &other).unwrap()));
        assert_eq!(rows[2].quality, None, "not finished");
        assert_eq!(rows[3].quality, None, "no image");
        with_speedups(&mut rows, 0);
        let text = format_table(&rows);
        let header = text.lines().next().unwrap();
        assert!(
            header.contains("SSIM") && header.contains("PSNR dB"),
            "{text}"
        );
        let ssim = format!("{:.4}", rows[1].quality.unwrap().ssim);
        assert!(text.lines().nth(2).unwrap().contains(&ssim), "{text}");
        assert_eq!(
            text.lines().nth(1).unwrap().matches("baseline").count(),
            3,
            "{text}"
        );
    }
    #[test]
    fn a_run_with_no_steps_has_no_ms_per_step_and_the_table_says_so() {
        let mut row = TableRow::new(exercise_1().remove(1), false);
        row.apply(&finished(0, 12.0, 0.5, 6.0, 20.0));
        assert_eq!(row.state, RowState::Finished);
        assert_eq!(row.unet_ms, Some(0.0), "no UNet time at all");
        assert_eq!(
            row.unet_ms_per_step, None,
            "nothing to divide by: not 0, not NaN"
        );
        assert_eq!(row.its, None);
        let table = format_table(&[row]);
        let lines: Vec<&str> = table.lines().collect();
        let end = lines[0].find("ms/step").unwrap() + "ms/step".len();
        assert_eq!(&lines[1][end - 1..end], "-", "{table}");
    }

    #[test]
    fn a_zero_baseline_time_gives_no_speedup_rather_than_zero_or_infinity() {
        assert_eq!(speedup(1000.0, 400.0), Some(2.5));
        assert_eq!(speedup(0.0, 400.0), None, "zero baseline");
        assert_eq!(speedup(1000.0, 0.0), None, "zero run time");
        assert_eq!(speedup(f64::NAN, 400.0), None);
        assert_eq!(speedup(f64::INFINITY, 400.0), None);
        let mut rows = rows_done(&[Some(0.0), Some(400.0), Some(200.0)]);
        with_speedups(&mut rows, 0);
        assert!(rows.iter().all(|r| r.speedup.is_none()), "{rows:?}");
        let table = format_table(&rows);
        let line = table.lines().nth(2).unwrap();
        assert_eq!(line.split_whitespace().rev().nth(2), Some("-"), "{table}");
    }

    /// A run of the fake backend (`scale`: its ControlNet's, `None`: no control), its events
    /// folded into a row: Started, one Step per step, Finished with the fake's report.
    fn fake_row(label: &str, scale: Option<f32>) -> TableRow {
        use crate::pipeline::control::Control;
        let mut req = crate::pipeline::Request::new(
            "a star",
            crate::schedulers::SchedulerKind::DpmSolverPp,
            4,
            42,
        );
        req.control = scale.map(|scale| Control {
            name: Some("edge".into()),
            image: "edges.png".into(),
            preprocess: Default::default(),
            scale,
        });
        let report = crate::tui::fake::report(&req);
        let mut row = TableRow::new(
            RunSettings {
                label: label.into(),
                ..exercise_1().remove(1)
            },
            false,
        );
        row.apply(&Event::Started {
            run: 1,
            total_steps: 4,
            width: 64,
            height: 64,
        });
        for i in 0..4 {
            let mut timing = crate::tui::fake::step_timing();
            timing.controlnet = report
                .timings
                .controlnet
                .get(i)
                .copied()
                .unwrap_or_default();
            row.apply(&Event::Step {
                run: 1,
                index: i,
                total: 4,
                timestep: 999,
                timing,
                elapsed: msd(21.0 * (i + 1) as f64),
            });
        }
        row.apply(&Event::Finished {
            run: 1,
            report: Box::new(report),
            image: RgbImage::new(1, 1),
        });
        row
    }

    #[test]
    fn controlled_rows_get_the_controlnet_time_per_step_and_the_adherence_of_their_report() {
        let plain = fake_row("plain", None);
        assert!(!plain.has_control());
        assert_eq!(
            (plain.controlnet_ms_per_step, plain.adherence),
            (None, None)
        );
        let row = fake_row("controlled", Some(0.5));
        assert!(row.has_control());
        // The fake: 8 ms of ControlNet a step, adherence 0.3 + 0.5 × min(scale, 1).
        assert!(close(row.controlnet_ms, 32.0), "{row:?}");
        assert!(close(row.controlnet_ms_per_step, 8.0), "{row:?}");
        assert!(close(row.adherence, 0.55), "{row:?}");
        // The UNet's time stays its own.
        assert!(close(row.unet_ms_per_step, 20.0), "{row:?}");
        let json = serde_json::to_value(&row).unwrap();
        assert_eq!(json["controlnet_ms_per_step"], 8.0);
        assert_eq!(json["adherence"], 0.55);
        let json = serde_json::to_value(&plain).unwrap();
        assert!(json.get("controlnet_ms_per_step").is_none() && json.get("adherence").is_none());
    }

    #[test]
    fn the_controlnet_columns_are_there_only_when_a_row_has_control() {
        let plain = format_table(&[fake_row("plain", None)]);
        assert!(
            !plain.contains("cn ms/step") && !plain.contains("edge F1"),
            "{plain}"
        );
        let mut rows = vec![
            fake_row("plain", None),
            fake_row("controlled", Some(2.0)),
            TableRow::new(exercise_1().remove(2), false),
        ];
        with_speedups(&mut rows, 0);
        let table = format_table(&rows);
        let lines: Vec<&str> = table.lines().collect();
        let header = lines[0];
        assert!(header.ends_with("SSIM   PSNR dB  edge F1"), "{table}");
        let cell = |line: &str, column: &str| {
            // Right-aligned: the cell ends where its header does, and starts after the
            // previous column's two spaces.
            let end = header.find(column).unwrap() + column.len();
            line.chars()
                .take(end)
                .collect::<String>()
                .rsplit("  ")
                .next()
                .unwrap()
                .trim()
                .to_string()
        };
        assert_eq!(cell(lines[1], "cn ms/step"), NOT_APPLICABLE, "{table}");
        assert_eq!(cell(lines[1], "edge F1"), NOT_APPLICABLE, "{table}");
        assert_eq!(cell(lines[2], "cn ms/step"), "8.00", "{table}");
        assert_eq!(cell(lines[2], "edge F1"), "0.8000", "{table}");
        assert_eq!(cell(lines[2], "ms/step"), "20.0", "{table}");
        // A run not started yet may still have control: not known.
        assert_eq!(cell(lines[3], "cn ms/step"), "-", "{table}");
        assert_eq!(cell(lines[3], "edge F1"), "-", "{table}");
    }

    #[test]
    fn an_adherence_that_was_not_measured_is_not_a_number_in_the_table() {
        assert_eq!(format_adherence(Some(f64::NAN)), NOT_APPLICABLE);
        assert_eq!(format_adherence(None), NOT_APPLICABLE);
        assert_eq!(format_adherence(Some(0.81234)), "0.8123");
        let mut row = fake_row("controlled", Some(1.0));
        let mut report = crate::tui::fake::report(&crate::pipeline::Request {
            control: Some(crate::pipeline::control::Control {
                name: None,
                image: "e.png".into(),
                preprocess: Default::default(),
                scale: 1.0,
            }),
            ..crate::pipeline::Request::new(
                "a star",
                crate::schedulers::SchedulerKind::DpmSolverPp,
                4,
                42,
            )
        });
        if let Some(c) = &mut report.control {
            c.adherence = f64::NAN;
        }
        row.apply(&Event::Finished {
            run: 1,
            report: Box::new(report),
            image: RgbImage::new(1, 1),
        });
        assert!(row.has_control() && row.adherence.is_none(), "{row:?}");
        let table = format_table(&[row]);
        assert!(
            table.lines().nth(1).unwrap().ends_with(NOT_APPLICABLE),
            "{table}"
        );
    }

    #[test]
    fn a_step_older_than_one_already_counted_is_dropped() {
        let mut row = TableRow::new(exercise_1().remove(0), true);
        row.apply(&Event::Started {
            run: 1,
            total_steps: 50,
            width: 64,
            height: 64,
        });
        row.apply(&step(2, 50, 10.0, 1.0, 40.0));
        row.apply(&step(1, 50, 10.0, 1.0, 30.0));
        assert_eq!(row.steps_done, 3);
        assert!(close(row.unet_ms, 10.0), "{:?}", row.unet_ms);
        assert!(close(row.total_ms, 40.0));
    }
}
