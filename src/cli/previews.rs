//! `speedscape previews`: how close each step's preview is to the run's final image, for both
//! preview kinds, on one generation. Phases: check the outputs, open the runtime and model and
//! its previewer, run the pipeline keeping every step's x0, preview each x0 by each kind (after
//! the run: the run's time has no preview in it), score each preview with SSIM against the final
//! VAE image, write `strip.png` and `previews.json`, print a table.
//!
//! Both kinds are scored the same way: the preview resized to the final image's size with one
//! filter ([`RESIZE`], a no-op where the sizes match), then the repo's SSIM
//! ([`speedscape::quality::compare`]). The strip's tiles are exactly the images scored.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use image::RgbImage;
use image::imageops::FilterType;
use ndarray::Array4;
use serde::Serialize;

use speedscape::config::Config;
use speedscape::exercises::default_exercises;
use speedscape::models::Model;
use speedscape::pipeline::preview::{PreviewKind, Previewer};
use speedscape::pipeline::{self, Request, RunOutput};
use speedscape::report;
use speedscape::runtime::Runtime;

use super::args::PreviewsArgs;
use super::existing;

/// The filter every preview is resized with to the final image's size (bilinear).
const RESIZE: FilterType = FilterType::Triangle;
/// The resize's name in previews.json.
const RESIZE_NAME: &str = "bilinear (image::imageops::FilterType::Triangle)";
/// Pixels between the strip's tiles (white).
const GAP: u32 = 2;
/// How many final steps the summary averages (the goal is stated on the last three).
const LAST_STEPS: usize = 3;

/// A step's x0 prediction and the timestep it was made at.
type X0 = (i64, Array4<f32>);

/// One kind's preview of one step, scored.
#[derive(Debug, Clone, Serialize)]
struct Scored {
    /// SSIM against the final image, after the resize.
    ssim: f64,
    /// What making the preview took (ms), apart from the run.
    ms: f64,
    /// The preview's own size before the resize (width, height).
    size: (u32, u32),
    #[serde(skip)]
    tile: RgbImage,
}

/// One step's row of previews.json.
#[derive(Debug, Clone, Serialize)]
struct StepRow {
    index: usize,
    timestep: i64,
    /// By kind name (`decoder`, `latent`).
    #[serde(flatten)]
    kinds: std::collections::BTreeMap<&'static str, Scored>,
}

/// Where the tiles lie in strip.png: row r, column c at x = c·(tile_w + gap), y = r·(tile_h +
/// gap); the last column is the final image in every row.
#[derive(Debug, Clone, Serialize)]
struct StripLayout {
    file: &'static str,
    rows: Vec<&'static str>,
    columns: usize,
    tile_width: u32,
    tile_height: u32,
    gap: u32,
}

/// previews.json.
#[derive(Debug, Clone, Serialize)]
struct PreviewsReport {
    model: String,
    prompt: String,
    seed: u64,
    scheduler: String,
    steps: usize,
    cfg: f32,
    width: usize,
    height: usize,
    /// What the model folder offers: `decoder` (it has a preview decoder) or `latent (no
    /// preview decoder)`.
    preview: String,
    /// The kinds scored, in the strip's row order.
    kinds: Vec<&'static str>,
    resize: &'static str,
    /// The run's median ms per step (UNet + ControlNet + scheduler): what a preview's cost
    /// compares with.
    step_ms: f64,
    /// Per kind: the mean SSIM over the last three steps, the median preview ms, and that over
    /// `step_ms`.
    summary: std::collections::BTreeMap<&'static str, KindSummary>,
    strip: StripLayout,
    per_step: Vec<StepRow>,
}

#[derive(Debug, Clone, Serialize)]
struct KindSummary {
    ssim_last3: f64,
    ms_median: f64,
    ms_over_step: f64,
}

pub fn run(config: &Config, args: PreviewsArgs) -> color_eyre::Result<ExitCode> {
    let (strip_path, json_path) = check_outputs(&args.out, args.force)?;
    let device = args.engine.device().unwrap_or(config.runtime.device);
    let rt = speedscape::open::runtime(config, Some(device))?;
    let (dir, _) = speedscape::open::model_dir(config, args.engine.model_dir())?;
    let mut model = speedscape::open::model(config, &rt, &dir)?;
    let mut previewer = Previewer::for_model(&rt, &mut model, PreviewKind::Decoder)?;
    let choice = previewer.choice();
    if choice.reason().is_some() {
        eprintln!(
            "note: {} has no preview decoder (preview_decoder/): latent previews only",
            dir.display()
        );
    }
    let req = request(config, &model, &args);
    let (out, x0s) = generate(&rt, &mut model, &req)?;
    let final_image = out.rgb8();
    let kinds: Vec<PreviewKind> = [PreviewKind::Decoder, PreviewKind::Latent]
        .into_iter()
        .filter(|k| *k != PreviewKind::Decoder || choice.used == PreviewKind::Decoder)
        .collect();
    let rows = score_steps(&mut previewer, &kinds, &x0s, &out, &final_image)?;
    let strip = strip_image(&rows, &kinds, &final_image);
    let report = previews_report(&dir, &req, &out, choice.to_string(), &kinds, rows, &strip.1);
    report::save_png_as(&strip_path, &strip.0, existing(args.force))?;
    let json = serde_json::to_string_pretty(&report)?;
    report::write_file(&json_path, existing(args.force), |f| {
        f.write_all(json.as_bytes())?;
        Ok(())
    })?;
    print!("{}", table(&report));
    println!("wrote {} and {}", strip_path.display(), json_path.display());
    Ok(ExitCode::SUCCESS)
}

/// The output folder (made when missing) and its two files, checked before anything runs.
fn check_outputs(out: &Path, force: bool) -> color_eyre::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(out).map_err(|e| {
        speedscape::error::Fixable::new(
            format!("cannot create the output folder {}: {e}", out.display()),
            "pass --out a folder you can write to",
        )
    })?;
    let (strip, json) = (out.join("strip.png"), out.join("previews.json"));
    report::check_output_file(&strip, force)?;
    report::check_output_file(&json, force)?;
    Ok((strip, json))
}

/// The run: `--prompt`, else exercise 1's prompt for this kind of model.
fn request(config: &Config, model: &Model, args: &PreviewsArgs) -> Request {
    let prompt = args.prompt.clone().unwrap_or_else(|| {
        default_exercises()
            .into_iter()
            .next()
            .map(|e| e.for_model(model.kind()).prompt)
            .unwrap_or_default()
    });
    Request {
        guidance: args.cfg,
        rng: args.engine.rng.unwrap_or(config.runtime.rng),
        unet: args.unet.clone(),
        ..Request::new(&prompt, args.scheduler, args.steps, args.seed)
    }
}

/// The run, keeping each step's x0 (its timestep beside it); nothing else happens in the loop.
fn generate(
    rt: &Runtime,
    model: &mut Model,
    req: &Request,
) -> color_eyre::Result<(RunOutput, Vec<X0>)> {
    let mut x0s = Vec::with_capacity(req.steps);
    let cancel = speedscape::interrupt::flag();
    let out = pipeline::generate(rt, model, req, cancel, &mut |ev| {
        x0s.push((ev.timestep, ev.preview.to_owned()));
    })?;
    speedscape::interrupt::check(|| "the run had finished; nothing was written".to_string())?;
    Ok((out, x0s))
}

/// Each step's preview by each kind, resized to the final image and scored against it.
fn score_steps(
    previewer: &mut Previewer,
    kinds: &[PreviewKind],
    x0s: &[X0],
    out: &RunOutput,
    final_image: &RgbImage,
) -> color_eyre::Result<Vec<StepRow>> {
    let (w, h) = final_image.dimensions();
    // Warm-up, not timed: a session's first call sets itself up.
    if let Some((_, x0)) = x0s.first() {
        for &kind in kinds {
            previewer.preview_as(kind, x0.view())?;
        }
    }
    let mut rows = Vec::with_capacity(x0s.len());
    for (index, (timestep, x0)) in x0s.iter().enumerate() {
        let mut scored = std::collections::BTreeMap::new();
        for &kind in kinds {
            let p = previewer
                .preview_as(kind, x0.view())?
                .expect("decoder and latent previews are never off");
            let size = p.image.dimensions();
            let tile = if size == (w, h) {
                p.image
            } else {
                image::imageops::resize(&p.image, w, h, RESIZE)
            };
            let ssim = speedscape::quality::compare(final_image, &tile)?.ssim;
            let ms = p.took.as_secs_f64() * 1e3;
            scored.insert(
                kind.name(),
                Scored {
                    ssim,
                    ms,
                    size,
                    tile,
                },
            );
        }
        rows.push(StepRow {
            index,
            timestep: *timestep,
            kinds: scored,
        });
    }
    debug_assert_eq!(rows.len(), out.report.steps);
    Ok(rows)
}

/// The strip: a row per kind (a tile per step), the final image closing every row.
fn strip_image(
    rows: &[StepRow],
    kinds: &[PreviewKind],
    final_image: &RgbImage,
) -> (RgbImage, StripLayout) {
    let (tw, th) = final_image.dimensions();
    let columns = rows.len() + 1;
    let width = columns as u32 * (tw + GAP) - GAP;
    let height = kinds.len() as u32 * (th + GAP) - GAP;
    let mut strip = RgbImage::from_pixel(width, height, image::Rgb([255, 255, 255]));
    for (r, kind) in kinds.iter().enumerate() {
        let y = r as u32 * (th + GAP);
        for (c, row) in rows.iter().enumerate() {
            let x = c as u32 * (tw + GAP);
            image::imageops::replace(&mut strip, &row.kinds[kind.name()].tile, x.into(), y.into());
        }
        let x = rows.len() as u32 * (tw + GAP);
        image::imageops::replace(&mut strip, final_image, x.into(), y.into());
    }
    let layout = StripLayout {
        file: "strip.png",
        rows: kinds.iter().map(|k| k.name()).collect(),
        columns,
        tile_width: tw,
        tile_height: th,
        gap: GAP,
    };
    (strip, layout)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn previews_report(
    dir: &Path,
    req: &Request,
    out: &RunOutput,
    preview: String,
    kinds: &[PreviewKind],
    per_step: Vec<StepRow>,
    strip: &StripLayout,
) -> PreviewsReport {
    let t = &out.report.timings;
    let step = |i: usize| {
        t.unet[i] + t.controlnet.get(i).copied().unwrap_or(Duration::ZERO) + t.scheduler[i]
    };
    let step_ms = median(
        (0..t.unet.len())
            .map(|i| step(i).as_secs_f64() * 1e3)
            .collect(),
    );
    let summary = kinds
        .iter()
        .map(|k| {
            let of = |r: &StepRow| r.kinds[k.name()].clone();
            let last: Vec<f64> = per_step
                .iter()
                .rev()
                .take(LAST_STEPS)
                .map(|r| of(r).ssim)
                .collect();
            let ms_median = median(per_step.iter().map(|r| of(r).ms).collect());
            let s = KindSummary {
                ssim_last3: last.iter().sum::<f64>() / last.len().max(1) as f64,
                ms_median,
                ms_over_step: ms_median / step_ms,
            };
            (k.name(), s)
        })
        .collect();
    PreviewsReport {
        model: dir.display().to_string(),
        prompt: req.prompt.clone(),
        seed: req.seed,
        scheduler: out.report.scheduler.clone(),
        steps: req.steps,
        cfg: req.guidance,
        width: out.report.width,
        height: out.report.height,
        preview,
        kinds: kinds.iter().map(|k| k.name()).collect(),
        resize: RESIZE_NAME,
        step_ms,
        summary,
        strip: strip.clone(),
        per_step,
    }
}

/// The table printed: SSIM per step and kind, then each kind's summary.
fn table(r: &PreviewsReport) -> String {
    use std::fmt::Write;
    let mut s = format!(
        "previews of {} {} steps (seed {}) on {}: {}\nSSIM of each step's preview against the final image (resized {}×{})\n",
        r.scheduler, r.steps, r.seed, r.model, r.preview, r.width, r.height
    );
    let _ = write!(s, "{:>5} {:>6}", "step", "t");
    for k in &r.kinds {
        let _ = write!(s, " {k:>9}");
    }
    s.push('\n');
    for row in &r.per_step {
        let _ = write!(s, "{:>5} {:>6}", row.index + 1, row.timestep);
        for k in &r.kinds {
            let _ = write!(s, " {:>9.3}", row.kinds[k].ssim);
        }
        s.push('\n');
    }
    for k in &r.kinds {
        let m = &r.summary[k];
        let _ = writeln!(
            s,
            "{k}: SSIM {:.3} over the last {LAST_STEPS} steps · {:.2} ms a preview = {:.1} % of a step ({:.2} ms)",
            m.ssim_last3,
            m.ms_median,
            100.0 * m.ms_over_step,
            r.step_ms
        );
    }
    s
}
