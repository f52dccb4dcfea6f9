//! A sweep's results as text and files: the table `speedscape sweep` prints, `points.csv`,
//! `sweep.json`, `summary.md` (the plot, where each method's free speedup ended, in numbers, and
//! how to read the chart), `plot.svg`/`plot.png`, and one image per point (the first seed's).
//! A weight sweep (`--lora-weights`) writes its curves instead of the landscape's:
//! `weights.csv` and `weights.svg`/`weights.png` beside `sweep.json`, `summary.md` and the
//! images.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::headless::SweepOutcome;
use super::plot::steps;
use super::{Landscape, Point, QualityAxis, Series, Stat, Target, WeightCurves, WeightPoint, plot};
use crate::exercises::headless::{Provenance, save_new_folder, write_text};
use crate::exercises::times;
use crate::report::save_png;
use crate::report::table::format_ms;

/// What the chart shows on the random-weight tiny model.
pub const TINY_NOTE: &str = "random-weight tiny model: these curves show numerical convergence \
                             towards the reference, not visual quality";

fn ms(v: f64) -> String {
    format!("{} ms", format_ms(v))
}

fn psnr(p: &Point) -> String {
    match p.psnr_db {
        Some(s) if p.identical == 0 => format!("{:.1}", s.mean),
        Some(s) => format!("{:.1} ({} identical)", s.mean, p.identical),
        None => "identical".into(),
    }
}

fn clip(p: &Point) -> String {
    p.clip_score
        .map_or_else(|| "–".into(), |s| format!("{:.2} ± {:.2}", s.mean, s.ci95))
}

/// A point's judge accuracy and its 95 % interval; `–` for a point without one.
fn judge(p: &Point) -> String {
    p.judge.as_ref().map_or_else(|| "–".into(), interval_text)
}

/// A point's control adherence (edge F1 over its seeds), like its SSIM; `—` for a point whose
/// runs had no control (or no measured adherence).
fn adherence(p: &Point) -> String {
    p.adherence.map_or_else(
        || crate::report::table::NOT_APPLICABLE.into(),
        |s| format!("{:.3}", s.mean),
    )
}

/// The fixed-width table: one line per point (runs: prompts × seeds), each method's knee
/// marked; the reference's time last. SSIM's mean comes with its 95 % interval. The CLIP column
/// is there only when some run has a CLIP score, the judge column only when some run has a
/// judge reading, the edge F1 column (control adherence) only when some run had a ControlNet.
pub fn format_table(land: &Landscape) -> String {
    let mut header = vec![
        "method", "steps", "runs", "time", "range", "vs ref", "SSIM", "± 95%", "min", "PSNR dB",
    ];
    if land.adherence {
        header.push("edge F1");
    }
    if land.clip_score {
        header.push("CLIP");
    }
    if land.judge {
        header.push("judge");
    }
    header.push("");
    let mut rows: Vec<Vec<String>> = Vec::new();
    for s in &land.series {
        for p in &s.points {
            let mut row = vec![
                s.method.label.clone(),
                p.steps.to_string(),
                format!("{}/{}", p.runs, p.planned),
                ms(p.time_ms),
                if p.runs > 1 {
                    format!("{}–{}", format_ms(p.time_min_ms), format_ms(p.time_max_ms))
                } else {
                    "–".into()
                },
                land.speedup(p).map_or_else(|| "–".into(), times),
                format!("{:.3}", p.ssim.mean),
                if p.ssim.n > 1 {
                    format!("{:.3}", p.ssim.ci95)
                } else {
                    "–".into()
                },
                format!("{:.3}", p.ssim.min),
                psnr(p),
            ];
            if land.adherence {
                row.push(adherence(p));
            }
            if land.clip_score {
                row.push(clip(p));
            }
            if land.judge {
                row.push(judge(p));
            }
            row.push(if s.knee == Some(p.steps) {
                "◀ knee".into()
            } else {
                String::new()
            });
            rows.push(row);
        }
    }
    // Text columns left (the method, the knee mark), numbers right.
    let last = header.len() - 1;
    let mut out = aligned(&header, &rows, |c| c == 0 || c == last);
    match land.reference {
        Some(r) => {
            let clip = r
                .clip_score
                .map(|c| format!(", CLIP {:.2}", c.mean))
                .unwrap_or_default();
            let edge = r
                .adherence
                .map(|a| format!(", edge F1 {:.3}", a.mean))
                .unwrap_or_default();
            let judge = r
                .judge
                .map(|j| format!(", judge {:.3}", j.mean))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "reference {}: {} median over {} run{}{edge}{clip}{judge} (every point's SSIM is to the reference image of its prompt and seed)",
                land.sweep.reference.label(),
                ms(r.time_ms),
                r.runs,
                if r.runs == 1 { "" } else { "s" }
            );
        }
        None => out.push_str("no reference image finished: no point has a quality number\n"),
    }
    out
}

/// A fixed-width table: the columns `left` says are text left-aligned, the others (numbers)
/// right-aligned, two spaces apart, no trailing blanks.
fn aligned(header: &[&str], rows: &[Vec<String>], left: impl Fn(usize) -> bool) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            rows.iter()
                .map(|r| r[c].chars().count())
                .chain([header[c].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| -> String {
        let mut out = String::new();
        for (c, cell) in cells.iter().enumerate() {
            let pad = widths[c].saturating_sub(cell.chars().count());
            if left(c) {
                out.push_str(cell);
                out.push_str(&" ".repeat(pad));
            } else {
                out.push_str(&" ".repeat(pad));
                out.push_str(cell);
            }
            out.push_str("  ");
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(&header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

/// The point `steps` steps below the knee on its curve (the next one with fewer steps).
fn below(s: &Series, steps: usize) -> Option<&Point> {
    s.points.iter().rev().find(|p| p.steps < steps)
}

/// "0.985 ± 0.004": a mean and its 95 % interval (only over more than one value).
fn interval_text(q: &Stat) -> String {
    if q.n > 1 {
        format!("{:.3} ± {:.3}", q.mean, q.ci95)
    } else {
        format!("{:.3}", q.mean)
    }
}

/// A point's quality on the landscape's axis, as [`interval_text`]; `–` without one.
fn quality_text(land: &Landscape, p: &Point) -> String {
    p.quality(land.sweep.quality)
        .map_or_else(|| "–".into(), |q| interval_text(&q))
}

/// The quality levels at which the findings name the fastest image (none for the CLIP score,
/// whose scale depends on the model and the prompts).
fn levels(axis: QualityAxis) -> &'static [f64] {
    match axis {
        QualityAxis::Ssim | QualityAxis::Judge => &[0.95, 0.9, 0.8],
        QualityAxis::Clip => &[],
    }
}

/// What a method's knee says: where its free speedup ended, and what the point below it lost.
fn knee_text(land: &Landscape, s: &Series, best: &Point, k: &Point) -> String {
    let (tol, axis) = (land.sweep.tolerance, land.sweep.quality);
    let speed = |p: &Point| {
        land.speedup(p)
            .map(|x| format!(", {} the reference's speed", times(x)))
            .unwrap_or_default()
    };
    let fewest = s.points.first().map(|p| p.steps) == Some(k.steps);
    let mut text = if k.steps == best.steps && fewest {
        format!(
            "It is at its best already at the fewest steps this sweep ran ({}{}){}.",
            ms(k.time_ms),
            speed(k),
            if k.steps > 1 {
                "; run fewer steps to find where its quality falls"
            } else {
                ""
            }
        )
    } else if k.steps == best.steps {
        format!(
            "No point with fewer steps comes within {tol} of it: the free speedup ends at {} \
             ({}{}).",
            steps(k.steps),
            ms(k.time_ms),
            speed(k)
        )
    } else {
        format!(
            "It stays within {tol} of that down to **{}** ({} {}, {}{}): the free speedup \
             ends there.",
            steps(k.steps),
            axis.label(),
            quality_text(land, k),
            ms(k.time_ms),
            speed(k)
        )
    };
    if let Some(b) = below(s, k.steps).filter(|b| !b.mean(axis).is_nan()) {
        let _ = write!(
            text,
            " Below it, {} falls to {:.3} ({:+.3}) in {}",
            steps(b.steps),
            b.mean(axis),
            b.mean(axis) - k.mean(axis),
            ms(b.time_ms)
        );
        if let Some(low) = s.points.first().filter(|f| f.steps < b.steps) {
            let _ = write!(text, ", and {} to {:.3}", steps(low.steps), low.mean(axis));
        }
        text.push('.');
    }
    text
}

/// Where the free speedup ended, in numbers: a paragraph per method, then the fastest point
/// across methods at a few quality levels, all on the sweep's quality axis. Markdown (`**` for
/// emphasis).
pub fn findings(land: &Landscape) -> Vec<String> {
    let axis = land.sweep.quality;
    let mut out = Vec::new();
    for s in &land.series {
        let (Some(best), Some(k)) = (s.best(axis), s.knee.and_then(|k| s.point(k))) else {
            continue;
        };
        let m = &s.method;
        let mut text = format!(
            "**{}** (cfg {}, UNet `{}`): best {} {} at {}. {}",
            m.label,
            m.cfg,
            m.unet,
            axis.label(),
            quality_text(land, best),
            steps(best.steps),
            knee_text(land, s, best, k)
        );
        if !(k.complete() && best.complete()) {
            text.push_str(" (Not every sample has finished: provisional.)");
        }
        out.push(text);
    }
    out.extend(fastest_at_levels(land));
    out
}

/// Across methods: the fastest image at each of the axis's [`levels`] (levels the same point
/// wins are said once).
fn fastest_at_levels(land: &Landscape) -> Vec<String> {
    let axis = land.sweep.quality;
    let mut said: Vec<(Vec<String>, String)> = Vec::new();
    for &level in levels(axis) {
        let fastest = land
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(move |p| (s, p)))
            .filter(|(_, p)| p.mean(axis) >= level)
            .min_by(|a, b| a.1.time_ms.total_cmp(&b.1.time_ms));
        if let Some((s, p)) = fastest {
            let speed = land
                .speedup(p)
                .map(|x| format!(", {} the reference's speed", times(x)))
                .unwrap_or_default();
            let what = format!(
                "{} {}, {}{speed}",
                s.method.label,
                steps(p.steps),
                ms(p.time_ms)
            );
            match said.last_mut() {
                Some((levels, w)) if *w == what => levels.push(format!("{level}")),
                _ => said.push((vec![format!("{level}")], what)),
            }
        }
    }
    let against = match axis {
        QualityAxis::Ssim => " to the reference",
        _ => "",
    };
    said.into_iter()
        .map(|(levels, what)| {
            let also = if levels.len() > 1 {
                format!(" (also the fastest at ≥ {})", levels[1..].join(", ≥ "))
            } else {
                String::new()
            };
            format!(
                "The fastest image with {} ≥ {}{against}{also}: {what}.",
                axis.label(),
                levels[0]
            )
        })
        .collect()
}

/// `points.csv`: one row per point (and one for the reference), every number of the table at
/// full precision. The CLIP columns exist only when some run has a CLIP score, the adherence
/// columns (edge F1) only when some run had a ControlNet.
pub fn csv(land: &Landscape) -> color_eyre::Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = vec![
        "method",
        "label",
        "scheduler",
        "unet",
        "cfg",
        "steps",
        "runs",
        "planned",
        "time_ms_median",
        "time_ms_min",
        "time_ms_max",
        "speedup_vs_reference",
        "ssim_mean",
        "ssim_std",
        "ssim_ci95",
        "ssim_min",
        "ssim_max",
        "psnr_db_mean",
        "psnr_db_std",
        "identical_to_reference",
    ];
    if land.adherence {
        header.extend(["edge_f1_mean", "edge_f1_std"]);
    }
    if land.clip_score {
        header.extend(["clip_score_mean", "clip_score_std", "clip_score_ci95"]);
    }
    if land.judge {
        header.extend(["judge_mean", "judge_std", "judge_ci95"]);
    }
    header.push("knee");
    w.write_record(&header)?;
    let opt = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
    let mut record = |name: &str,
                      label: &str,
                      scheduler: &str,
                      unet: &str,
                      cfg: f32,
                      p: &Point,
                      knee: bool|
     -> color_eyre::Result<()> {
        let mut r = vec![
            name.to_string(),
            label.to_string(),
            scheduler.to_string(),
            unet.to_string(),
            cfg.to_string(),
            p.steps.to_string(),
            p.runs.to_string(),
            p.planned.to_string(),
            p.time_ms.to_string(),
            p.time_min_ms.to_string(),
            p.time_max_ms.to_string(),
            opt(land.speedup(p)),
            p.ssim.mean.to_string(),
            p.ssim.std.to_string(),
            p.ssim.ci95.to_string(),
            p.ssim.min.to_string(),
            p.ssim.max.to_string(),
            opt(p.psnr_db.map(|s| s.mean)),
            opt(p.psnr_db.map(|s| s.std)),
            p.identical.to_string(),
        ];
        if land.adherence {
            r.push(opt(p.adherence.map(|s| s.mean)));
            r.push(opt(p.adherence.map(|s| s.std)));
        }
        for (on, stat) in [(land.clip_score, p.clip_score), (land.judge, p.judge)] {
            if on {
                r.extend(
                    [
                        stat.map(|s| s.mean),
                        stat.map(|s| s.std),
                        stat.map(|s| s.ci95),
                    ]
                    .map(opt),
                );
            }
        }
        r.push(knee.to_string());
        w.write_record(&r)?;
        Ok(())
    };
    if let Some(p) = &land.reference {
        let r = &land.sweep.reference;
        record(
            "reference",
            &r.label(),
            r.scheduler.as_str(),
            &r.unet,
            r.cfg,
            p,
            false,
        )?;
    }
    for s in &land.series {
        let m = &s.method;
        for p in &s.points {
            record(
                &m.name,
                &m.label,
                m.scheduler.as_str(),
                &m.unet,
                m.cfg,
                p,
                s.knee == Some(p.steps),
            )?;
        }
    }
    Ok(String::from_utf8(w.into_inner()?)?)
}

/// "0.512 ± 0.010" (the spread only over more than one value).
fn stat_text(s: &Stat) -> String {
    if s.n > 1 {
        format!("{:.3} ± {:.3}", s.mean, s.std)
    } else {
        format!("{:.3}", s.mean)
    }
}

fn plain_text(p: &WeightPoint) -> String {
    p.ssim_plain.as_ref().map_or_else(|| "–".into(), stat_text)
}

/// A weight sweep's fixed-width table: one line per curve and weight (SSIM to the style-alone
/// image and to the plain one side by side); the references last.
pub fn format_weights(c: &WeightCurves) -> String {
    let a = c.axis.name();
    let to_style = format!("SSIM to {a} alone");
    let header = [
        "curve",
        "weight",
        "seeds",
        "time",
        "range",
        to_style.as_str(),
        "SSIM to plain",
    ];
    let mut rows = Vec::new();
    for s in &c.series {
        for p in &s.points {
            rows.push(vec![
                s.label(),
                format!("{a}×{}", p.weight),
                format!("{}/{}", p.runs, p.planned),
                ms(p.time_ms),
                if p.runs > 1 {
                    format!("{}–{}", format_ms(p.time_min_ms), format_ms(p.time_max_ms))
                } else {
                    "–".into()
                },
                stat_text(&p.ssim_style),
                plain_text(p),
            ]);
        }
    }
    let mut out = aligned(&header, &rows, |c| c < 2);
    let time = |p: &Option<Point>| p.map_or_else(|| "not run".into(), |p| ms(p.time_ms));
    let _ = writeln!(
        out,
        "references: {a} alone (the reference settings + {a}×1) {}, plain (without {a}) {}",
        time(&c.reference),
        time(&c.plain)
    );
    if let Some(e) = &c.ends {
        let _ = writeln!(
            out,
            "the two references' SSIM to each other: {} (a curve travels between 1 and this)",
            stat_text(e)
        );
    }
    out
}

/// What the weight curves say, in numbers: per curve, the style's strength at its lowest and
/// highest weight, where the image gets closer to the style-alone image than to the plain
/// one, and whether its time held. Markdown (`**` for emphasis).
pub fn weight_findings(c: &WeightCurves) -> Vec<String> {
    let a = c.axis.name();
    let mut out = Vec::new();
    for s in &c.series {
        let (Some(lo), Some(hi)) = (s.points.first(), s.points.last()) else {
            continue;
        };
        let mut text = format!(
            "**{}** (cfg {}, UNet `{}`): SSIM to the {a}-alone image {:.3} at {a}×{} and {:.3} at {a}×{}",
            s.label(),
            s.method.cfg,
            s.method.unet,
            lo.ssim_style.mean,
            lo.weight,
            hi.ssim_style.mean,
            hi.weight
        );
        if let (Some(pl), Some(ph)) = (lo.ssim_plain, hi.ssim_plain) {
            let _ = write!(
                text,
                "; to the plain image {:.3} and {:.3}",
                pl.mean, ph.mean
            );
        }
        text.push('.');
        let closer = s
            .points
            .iter()
            .find(|p| p.ssim_plain.is_some_and(|q| p.ssim_style.mean > q.mean));
        match closer {
            Some(p) => {
                let _ = write!(
                    text,
                    " From **{a}×{}** on it is closer to the {a}-alone image than to the plain one.",
                    p.weight
                );
            }
            None if s.points.iter().any(|p| p.ssim_plain.is_some()) => {
                let _ = write!(
                    text,
                    " At no weight is it closer to the {a}-alone image than to the plain one."
                );
            }
            None => {}
        }
        let times: Vec<f64> = s.points.iter().map(|p| p.time_ms).collect();
        let (fast, slow) = times.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &t| {
            (lo.min(t), hi.max(t))
        });
        if s.points.len() > 1 && fast > 0.0 {
            let _ = write!(
                text,
                " Its median time stays within {}–{} across the weights.",
                ms(fast),
                ms(slow)
            );
        }
        if !s.points.iter().all(WeightPoint::complete) {
            text.push_str(" (Not every seed has finished: provisional.)");
        }
        out.push(text);
    }
    out
}

/// `weights.csv`: one row per curve and weight, every number at full precision; then the two
/// references (`{adapter}_alone` at weight 1, `plain` at 0), each with its SSIM to the other.
pub fn weights_csv(c: &WeightCurves) -> color_eyre::Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "curve",
        "method",
        "scheduler",
        "unet",
        "cfg",
        "steps",
        "adapter",
        "weight",
        "runs",
        "planned",
        "time_ms_median",
        "time_ms_min",
        "time_ms_max",
        "ssim_style_mean",
        "ssim_style_std",
        "ssim_style_min",
        "ssim_style_max",
        "ssim_plain_mean",
        "ssim_plain_std",
    ])?;
    let opt = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
    let a = c.axis.name();
    for s in &c.series {
        let m = &s.method;
        for p in &s.points {
            w.write_record([
                s.label(),
                m.name.clone(),
                m.scheduler.as_str().to_string(),
                m.unet.clone(),
                m.cfg.to_string(),
                s.steps.to_string(),
                a.clone(),
                p.weight.to_string(),
                p.runs.to_string(),
                p.planned.to_string(),
                p.time_ms.to_string(),
                p.time_min_ms.to_string(),
                p.time_max_ms.to_string(),
                p.ssim_style.mean.to_string(),
                p.ssim_style.std.to_string(),
                p.ssim_style.min.to_string(),
                p.ssim_style.max.to_string(),
                opt(p.ssim_plain.map(|q| q.mean)),
                opt(p.ssim_plain.map(|q| q.std)),
            ])?;
        }
    }
    let ends = c.ends.map(|e| e.mean);
    for (name, weight, point, style, plain) in [
        (format!("{a}_alone"), 1.0, &c.reference, Some(1.0), ends),
        ("plain".to_string(), 0.0, &c.plain, ends, Some(1.0)),
    ] {
        let Some(p) = point else { continue };
        w.write_record([
            name,
            "reference".into(),
            String::new(),
            String::new(),
            String::new(),
            p.steps.to_string(),
            a.clone(),
            weight.to_string(),
            p.runs.to_string(),
            p.planned.to_string(),
            p.time_ms.to_string(),
            p.time_min_ms.to_string(),
            p.time_max_ms.to_string(),
            opt(style),
            String::new(),
            String::new(),
            String::new(),
            opt(plain),
            String::new(),
        ])?;
    }
    Ok(String::from_utf8(w.into_inner()?)?)
}

/// A weight sweep's `summary.md`: the plot, what the curves say, how to read them, the
/// numbers, the images and the sources.
fn markdown_weights(o: &SweepOutcome, c: &WeightCurves, images: &[Option<String>]) -> String {
    let a = c.axis.name();
    let mut md = String::from("# Composability as a curve\n\n");
    let _ = writeln!(md, "{}  \n{}\n", prompt_line(&o.plan.sweep), setting(o));
    if o.info.tiny_model {
        let _ = writeln!(md, "> **Note:** {TINY_NOTE}.\n");
    }
    if let Some(d) = &o.devices {
        let _ = writeln!(md, "> **Note:** {}.\n", mixed_devices_note(d));
    }
    let _ = writeln!(
        md,
        "![SSIM to the {a}-alone image and to the plain image against the {a} weight](weights.png)\n"
    );
    let f = weight_findings(c);
    if !f.is_empty() {
        md.push_str("## How the style fades with its weight\n\n");
        for line in f {
            let _ = writeln!(md, "- {line}");
        }
        md.push('\n');
    }
    let _ = writeln!(
        md,
        "## How to read the plot\n\n\
         - **x**: the weight of the `{a}` adapter, fused at run time on top of each curve's UNet; \
         **y**: SSIM, averaged over the seeds.\n\
         - Solid lines: SSIM to the **{a}-alone** image of the same seed (the reference settings, \
         {r}, with `{a}` at weight 1) — the style's strength. Dashed lines: SSIM to the **plain** \
         image (the same settings without `{a}`).\n\
         - Where a solid line rises above its dashed one, the image is closer to the style than \
         to no style. The grey line is the two references' SSIM to each other: how far apart the \
         ends are.\n",
        r = o.plan.sweep.reference.label()
    );
    md.push_str("## Points\n\n```text\n");
    md.push_str(&format_weights(c));
    md.push_str("```\n");
    md.push_str(&markdown_images_and_sources(o, images));
    md
}

/// One run in `sweep.json`.
#[derive(Serialize)]
struct RunRecord<'a> {
    label: &'a str,
    target: Target,
    seed: Option<u64>,
    measured: Option<super::Measured>,
    error: Option<&'a str>,
    /// This run's image in the folder (the first seed's runs).
    image: Option<String>,
    report: Option<&'a crate::pipeline::RunReport>,
}

/// `Prompt: “…”`, or for a prompt set `Prompts: 120 (the first: “…”)`.
fn prompt_line(s: &super::Sweep) -> String {
    match s.prompts.len() {
        0 | 1 => format!("Prompt: “{}”", s.prompt),
        n => format!("Prompts: {n} (the first: “{}”)", s.prompts[0]),
    }
}

/// The model and device line of every output.
fn setting(o: &SweepOutcome) -> String {
    let s = &o.plan.sweep;
    let mut seeds = match s.seeds.as_slice() {
        [one] => format!("seed {one}"),
        [first, .., last] => format!("seeds {first}–{last}"),
        [] => String::new(),
    };
    if s.prompts.len() > 1 {
        seeds = format!("{} prompts × {seeds}", s.prompts.len());
    }
    let loras = if s.loras.is_empty() {
        String::new()
    } else {
        format!(
            ", on every run {}",
            crate::report::table::unet_label("", &s.loras).trim_start_matches(" + ")
        )
    };
    format!(
        "{seeds} ({} noise), reference {} (cfg {}){loras}{} — {} on {}, model {}{}",
        o.rng,
        s.reference.label(),
        s.reference.cfg,
        controls(s),
        o.info.provider,
        o.info.device,
        o.info.model_dir.display(),
        if o.info.tiny_model {
            " (embedded tiny model, random weights)"
        } else {
            ""
        }
    )
}

/// `, under ControlNet edge×1 on edges.png (canny)`: the distinct controls of the sweep's
/// runs (the reference's and the methods'); empty without any.
fn controls(s: &super::Sweep) -> String {
    let mut seen: Vec<&crate::exercises::ControlSpec> = Vec::new();
    let all = [s.reference.control.as_ref()]
        .into_iter()
        .chain(s.methods.iter().map(|m| m.control.as_ref()));
    for c in all.flatten() {
        if !seen.contains(&c) {
            seen.push(c);
        }
    }
    if seen.is_empty() {
        return String::new();
    }
    let named: Vec<String> = seen
        .iter()
        .map(|c| {
            format!(
                "{}×{} on {} ({})",
                c.controlnet.as_deref().unwrap_or("the model's ControlNet"),
                c.scale,
                c.image.display(),
                c.preprocess.name()
            )
        })
        .collect();
    format!(", under ControlNet {}", named.join(", "))
}

/// What a merged sweep whose runs ran on several devices says about its times.
pub fn mixed_devices_note(devices: &str) -> String {
    format!("the runs ran on different devices ({devices}): their times are not comparable")
}

/// The grey line under a chart: the tiny model's note and a merged sweep's mixed devices.
fn chart_note(o: &SweepOutcome) -> Option<String> {
    let notes: Vec<String> = [
        o.info.tiny_model.then(|| TINY_NOTE.to_string()),
        o.devices.as_deref().map(mixed_devices_note),
    ]
    .into_iter()
    .flatten()
    .collect();
    (!notes.is_empty()).then(|| notes.join("; "))
}

/// Why there is no CLIP column, and how to get one.
fn no_clip_note(o: &SweepOutcome) -> String {
    format!(
        "No CLIP score: {} has no CLIP image encoder ({}/); `models/export.py --clip-scorer` exports one.",
        o.info.model_dir.display(),
        crate::models::CLIP_FOLDER
    )
}

/// What `speedscape sweep` prints: the setting, the table, the findings, the failures.
pub fn render(o: &SweepOutcome) -> String {
    let land = o.landscape();
    let curves = o.plan.weight_curves(&o.measured);
    let table = match &curves {
        Some(c) => format_weights(c),
        None => format_table(&land),
    };
    let mut out = format!(
        "sweep: {} — {}\n\n{table}",
        prompt_line(&o.plan.sweep),
        setting(o),
    );
    if o.info.tiny_model {
        let _ = writeln!(out, "\nNote: {TINY_NOTE}.");
    }
    if let Some(d) = &o.devices {
        let _ = writeln!(out, "\nNote: {}.", mixed_devices_note(d));
    }
    if !o.info.clip_scorer && curves.is_none() {
        let _ = writeln!(out, "\n{}", no_clip_note(o));
    }
    let (title, f) = match &curves {
        Some(c) => ("How the style fades with its weight", weight_findings(c)),
        None => ("Where the free speedup ended", findings(&land)),
    };
    if !f.is_empty() {
        let _ = writeln!(out, "\n{title}:");
        for line in f {
            let _ = writeln!(out, "- {}", line.replace("**", ""));
        }
    }
    for (r, e) in o.plan.runs.iter().zip(&o.errors) {
        if let Some(e) = e {
            let _ = writeln!(out, "\n{} failed: {e}", r.spec.label);
        }
    }
    out
}

/// The `--json` object (also `sweep.json`).
pub fn json(o: &SweepOutcome, images: &[Option<String>]) -> serde_json::Value {
    let runs: Vec<RunRecord> = o
        .plan
        .runs
        .iter()
        .enumerate()
        .map(|(i, r)| RunRecord {
            label: &r.spec.label,
            target: r.target,
            seed: r.spec.seed,
            measured: o.measured[i],
            error: o.errors[i].as_deref(),
            image: images.get(i).cloned().flatten(),
            report: o.reports[i].as_ref(),
        })
        .collect();
    serde_json::json!({
        "prompt": o.plan.sweep.prompt,
        "prompts": o.plan.sweep.prompts,
        "quality": o.plan.sweep.quality,
        "rng": o.rng,
        "provider": o.info.provider,
        "device": o.info.device,
        "model": o.info.model_dir.display().to_string(),
        "tiny_model": o.info.tiny_model,
        "model_kind": o.info.kind,
        "devices": o.devices,
        "landscape": o.landscape(),
        "weights": o.plan.weight_curves(&o.measured),
        "findings": match o.plan.weight_curves(&o.measured) {
            Some(c) => weight_findings(&c),
            None => findings(&o.landscape()),
        },
        "provenance": Provenance::of(&o.reports),
        "runs": runs,
    })
}

/// `summary.md`.
pub fn markdown(o: &SweepOutcome, images: &[Option<String>]) -> String {
    if let Some(c) = o.plan.weight_curves(&o.measured) {
        return markdown_weights(o, &c, images);
    }
    let land = o.landscape();
    let mut md = String::from("# The speed landscape\n\n");
    let _ = writeln!(md, "{}  \n{}\n", prompt_line(&o.plan.sweep), setting(o));
    if o.info.tiny_model {
        let _ = writeln!(md, "> **Note:** {TINY_NOTE}.\n");
    }
    if let Some(d) = &o.devices {
        let _ = writeln!(md, "> **Note:** {}.\n", mixed_devices_note(d));
    }
    let y = match land.sweep.quality {
        QualityAxis::Ssim => "SSIM to the reference",
        other => other.label(),
    };
    let _ = writeln!(md, "![{y} against time, one curve per method](plot.png)\n");
    let f = findings(&land);
    if !f.is_empty() {
        md.push_str("## Where the free speedup ended\n\n");
        for line in f {
            let _ = writeln!(md, "- {line}");
        }
        md.push('\n');
    }
    md.push_str(&how_to_read(o, &land));
    md.push_str(&markdown_points(&land));
    md.push_str(&markdown_images_and_sources(o, images));
    md
}

/// summary.md's "How to read the plot", with a paragraph for each reference-free column the
/// table has (edge F1, CLIP, judge) and why there is no CLIP column where there is none.
fn how_to_read(o: &SweepOutcome, land: &Landscape) -> String {
    let mut md = String::new();
    md.push_str(
        "## How to read the plot\n\n\
         - **x**: the median time of one image at that point (text encoder, denoising, VAE), on a \
         log scale; **y**: the quality named on the axis (SSIM of each image to the reference \
         image of the same prompt and seed, unless `--quality` chose the CLIP score or the \
         judge), averaged over the prompts × seeds, with the mean's 95 % interval (Student's t) \
         as a bar.\n\
         - Each line is one method; the number beside a point is its step count. Up is better (for \
         SSIM: closer to the reference), left is faster.\n\
         - The ring marks each curve's **knee**: the fewest steps whose quality is within the \
         tolerance of the method's best. Left of the knee, the speed costs quality.\n\
         - The dashed line is the reference's own time. SSIM measures closeness to the reference, \
         not beauty: a method on another curve (LCM-LoRA) makes a different image and scores lower \
         without looking worse.\n\n",
    );
    if land.adherence {
        md.push_str(
            "The **edge F1** column is the control adherence of the runs under a ControlNet: the \
             F1 score between the Canny edges of each image and the control's edge map (a pixel \
             counts as matched within 1 px below 256 px, 2 px from 256 px), averaged over the \
             seeds; `—` for a point without control.\n\n",
        );
    }
    if land.clip_score {
        md.push_str(
            "The **CLIP** column is the CLIP score of each image against the prompt (100 × the \
             cosine of CLIP ViT-L/14's image and text embeddings, at least 0; torchmetrics' \
             definition): a reference-free number that does not depend on the reference image. \
             On a random-weight model it is a number, not a judgment.\n\n",
        );
    }
    if land.judge {
        md.push_str(
            "The **judge** column is the micro model's judge accuracy: a small CNN trained on the \
             micro world's renders reads each image's colour, shape and background, and the \
             number is the share of the three it reads as the prompt names them (its own \
             accuracy on real renders is in the model's manifest). Reference-free: a method that \
             draws the prompt right scores 1 whether or not it copies the reference.\n\n",
        );
    }
    if !o.info.clip_scorer {
        let _ = writeln!(md, "{}\n", no_clip_note(o));
    }
    md
}

/// summary.md's "Points": the table of every point, then the reference's time.
fn markdown_points(land: &Landscape) -> String {
    let mut md = String::new();
    md.push_str("## Points\n\n");
    let mut head =
        "| method | steps | runs | time | vs ref | SSIM ± 95% | min | PSNR dB |".to_string();
    let mut rule = "|---|---:|---:|---:|---:|---:|---:|---:|".to_string();
    if land.adherence {
        head.push_str(" edge F1 |");
        rule.push_str("---:|");
    }
    if land.clip_score {
        head.push_str(" CLIP |");
        rule.push_str("---:|");
    }
    if land.judge {
        head.push_str(" judge |");
        rule.push_str("---:|");
    }
    head.push_str(" knee |");
    rule.push_str("---|");
    let _ = writeln!(md, "{head}\n{rule}");
    for s in &land.series {
        for p in &s.points {
            let _ = write!(
                md,
                "| {} | {} | {}/{} | {} | {} | {} | {:.3} | {} |",
                s.method.label,
                p.steps,
                p.runs,
                p.planned,
                ms(p.time_ms),
                land.speedup(p).map_or_else(|| "–".into(), times),
                interval_text(&p.ssim),
                p.ssim.min,
                psnr(p)
            );
            if land.adherence {
                let _ = write!(md, " {} |", adherence(p));
            }
            if land.clip_score {
                let _ = write!(md, " {} |", clip(p));
            }
            if land.judge {
                let _ = write!(md, " {} |", judge(p));
            }
            let knee = if s.knee == Some(p.steps) { "◀" } else { "" };
            let _ = writeln!(md, " {knee} |");
        }
    }
    if let Some(r) = land.reference {
        let clip = r
            .clip_score
            .map(|c| format!("; its CLIP score is {:.2}", c.mean))
            .unwrap_or_default();
        let _ = writeln!(
            md,
            "\nThe reference, {}, took {} (median over {} run{}){clip}.",
            land.sweep.reference.label(),
            ms(r.time_ms),
            r.runs,
            if r.runs == 1 { "" } else { "s" }
        );
    }
    md
}

/// summary.md's end: the first seed's images, linked, then where the numbers come from (the
/// UNet variants, and the LoRA adapters applied at run time with their files' SHA-256).
fn markdown_images_and_sources(o: &SweepOutcome, images: &[Option<String>]) -> String {
    let mut md = String::new();
    let shown: Vec<(&str, &str)> = o
        .plan
        .runs
        .iter()
        .zip(images)
        .filter_map(|(r, img)| img.as_deref().map(|f| (r.spec.label.as_str(), f)))
        .collect();
    if !shown.is_empty() {
        md.push_str("\n## Images (first seed)\n\n");
        for (label, file) in shown {
            let _ = writeln!(md, "- [{label}]({file})");
        }
    }
    md.push_str("\n## Where the numbers come from\n\n");
    let mut unets: Vec<&str> = o.plan.runs.iter().map(|r| r.spec.unet.as_str()).collect();
    unets.sort_unstable();
    unets.dedup();
    md.push_str(&Provenance::of(&o.reports).markdown(&unets));
    md.push_str(&crate::report::table::adapters_markdown(
        o.reports.iter().flatten().flat_map(|r| &r.adapters),
    ));
    md
}

/// "dpmpp-10-seed42.png".
fn image_name(o: &SweepOutcome, run: usize) -> String {
    let r = &o.plan.runs[run];
    let seed = r.spec.seed.unwrap_or_default();
    let sweep = &o.plan.sweep;
    match r.target {
        Target::Reference => format!("images/reference-seed{seed}.png"),
        Target::Plain => format!("images/plain-seed{seed}.png"),
        Target::Point { method, steps } => format!(
            "images/{}-{steps}-seed{seed}.png",
            sweep.methods[method].name
        ),
        Target::Weighted {
            method,
            steps,
            weight,
        } => {
            let axis = sweep.weights.as_ref();
            let w = axis.map_or(0.0, |a| a.weights[weight]);
            let name = axis.map(|a| a.name()).unwrap_or_default();
            format!(
                "images/{}-{steps}-{name}{w}-seed{seed}.png",
                sweep.methods[method].name
            )
        }
    }
}

/// The files a saved sweep holds besides its images, as `speedscape sweep` names them.
pub fn files(o: &SweepOutcome) -> &'static str {
    if o.plan.sweep.weights.is_some() {
        "summary.md, weights.png, weights.csv, sweep.json"
    } else {
        "summary.md, plot.png, points.csv, sweep.json"
    }
}

/// Writes every file of a sweep into the existing folder `dir`.
pub fn write_sweep(dir: &Path, o: &SweepOutcome) -> color_eyre::Result<()> {
    std::fs::create_dir(dir.join("images"))?;
    let mut names = vec![None; o.plan.runs.len()];
    for (i, r) in o.plan.runs.iter().enumerate() {
        if r.seed_index != 0 {
            continue;
        }
        if let Some(img) = &o.images[i] {
            let name = image_name(o, i);
            save_png(&dir.join(&name), img)?;
            names[i] = Some(name);
        }
    }
    let note = chart_note(o);
    let note = note.as_deref();
    match o.plan.weight_curves(&o.measured) {
        Some(c) => {
            let svg = plot::weights_svg(&c, &o.plan.sweep.reference.label(), note)?;
            write_text(&dir.join("weights.svg"), &svg)?;
            save_png(&dir.join("weights.png"), &plot::rasterise(&svg)?)?;
            write_text(&dir.join("weights.csv"), &weights_csv(&c)?)?;
        }
        None => {
            let svg = plot::svg(&o.landscape(), note)?;
            write_text(&dir.join("plot.svg"), &svg)?;
            save_png(&dir.join("plot.png"), &plot::rasterise(&svg)?)?;
            write_text(&dir.join("points.csv"), &csv(&o.landscape())?)?;
        }
    }
    write_text(
        &dir.join("sweep.json"),
        &serde_json::to_string_pretty(&json(o, &names))?,
    )?;
    write_text(&dir.join("summary.md"), &markdown(o, &names))?;
    Ok(())
}

/// Saves a sweep into a new folder `out_root/sweep-YYYYmmdd-HHMMSS` (see [`save_new_folder`]).
pub fn save_sweep(out_root: &Path, o: &SweepOutcome) -> color_eyre::Result<PathBuf> {
    save_new_folder(out_root, "sweep", |dir| write_sweep(dir, o))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::{WeightSeries, default_methods, parse_lora_weights};

    fn stat(mean: f64) -> Stat {
        Stat::of(&[mean]).unwrap()
    }

    /// LCM-LoRA 4 with the style at 0, 0.5, 1: closer to the style-alone image from 0.5 on.
    fn curves() -> WeightCurves {
        let axis = parse_lora_weights("style=0:1:0.5").unwrap();
        let points = [
            (0.0, 0.4, 0.8, 60.0),
            (0.5, 0.6, 0.55, 62.0),
            (1.0, 0.8, 0.4, 61.0),
        ]
        .map(|(weight, style, plain, t)| WeightPoint {
            weight,
            runs: 1,
            planned: 1,
            time_ms: t,
            time_min_ms: t,
            time_max_ms: t,
            ssim_style: stat(style),
            ssim_plain: Some(stat(plain)),
        });
        WeightCurves {
            axis,
            reference: None,
            plain: None,
            ends: Some(stat(0.35)),
            series: vec![WeightSeries {
                method: default_methods().remove(1),
                steps: 4,
                points: points.to_vec(),
            }],
        }
    }

    /// LCM-LoRA 4 with 2 seeds against the reference, every run measured from the fake
    /// backend's report; with `control`, under `[sweep]`'s ControlNet at scale 1, except the
    /// second seed's point at 0.4 (the fake's adherence: 0.3 + 0.5 × min(scale, 1)).
    fn fake_landscape(control: bool) -> Landscape {
        use crate::exercises::ControlSpec;
        use crate::sweep::{Sweep, SweepConfig, headless::measure};
        let cfg = SweepConfig {
            seeds: 2,
            control: control.then(|| ControlSpec {
                controlnet: Some("edge".into()),
                image: "edges.png".into(),
                scale: 1.0,
                preprocess: Default::default(),
            }),
            ..SweepConfig::default()
        };
        let plan = Sweep::from_config(&cfg, Some("lcm"))
            .unwrap()
            .with_steps(&[4])
            .unwrap()
            .plan();
        let image = image::RgbImage::from_fn(32, 32, |x, y| image::Rgb([x as u8 * 8, y as u8, 0]));
        let measured: Vec<_> = (0..plan.runs.len())
            .map(|i| {
                let mut req = plan.request(i, crate::rng::RngSource::TorchCpu);
                let point = matches!(plan.runs[i].target, Target::Point { .. });
                if let Some(c) = &mut req.control
                    && point
                    && plan.runs[i].seed_index == 1
                {
                    c.scale = 0.4;
                }
                let report = crate::tui::fake::report(&req);
                measure(&plan, i, &image, &report, Some(&image), None).ok()
            })
            .collect();
        plan.landscape(&measured)
    }

    #[test]
    fn a_controlled_sweep_records_the_adherence_per_run_and_its_mean_per_point() {
        let land = fake_landscape(true);
        assert!(land.adherence);
        let p = land.series[0].point(4).unwrap();
        let a = p.adherence.expect("an adherence over the seeds");
        // 0.8 at scale 1, 0.5 at scale 0.4: aggregated as SSIM is.
        assert_eq!(a.n, 2);
        // (The scale is an f32: 0.4 is 0.4 to 1e-8.)
        assert!((a.mean - 0.65).abs() < 1e-6, "{a:?}");
        assert!(
            (a.min - 0.5).abs() < 1e-6 && (a.max - 0.8).abs() < 1e-6,
            "{a:?}"
        );
        assert!((land.reference.unwrap().adherence.unwrap().mean - 0.8).abs() < 1e-6);
        let table = format_table(&land);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].contains("PSNR dB  edge F1"), "{table}");
        assert!(lines[1].contains("  0.650"), "{table}");
        assert!(table.contains("edge F1 0.800"), "the reference's: {table}");
        let text = csv(&land).unwrap();
        let mut r = csv::Reader::from_reader(text.as_bytes());
        let header = r.headers().unwrap().clone();
        let col = header.iter().position(|h| h == "edge_f1_mean").unwrap();
        let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
        assert_eq!(&rows[0][0], "reference");
        assert!((rows[0][col].parse::<f64>().unwrap() - 0.8).abs() < 1e-6);
        assert!((rows[1][col].parse::<f64>().unwrap() - 0.65).abs() < 1e-6);
        let json = serde_json::to_value(p).unwrap();
        assert!((json["adherence"]["mean"].as_f64().unwrap() - 0.65).abs() < 1e-6);
    }

    #[test]
    fn a_sweep_without_control_has_no_adherence_column() {
        let land = fake_landscape(false);
        assert!(!land.adherence);
        assert!(land.series[0].point(4).unwrap().adherence.is_none());
        assert!(!format_table(&land).contains("edge F1"));
        assert!(!csv(&land).unwrap().contains("edge_f1"));
    }

    #[test]
    fn weight_findings_say_where_the_style_takes_over_and_that_the_time_held() {
        let f = weight_findings(&curves());
        assert_eq!(f.len(), 1);
        assert_eq!(
            f[0],
            "**LCM-LoRA 4** (cfg 1.5, UNet `lcm`): SSIM to the style-alone image 0.400 at style×0 \
             and 0.800 at style×1; to the plain image 0.800 and 0.400. From **style×0.5** on it is \
             closer to the style-alone image than to the plain one. Its median time stays within \
             60.0 ms–62.0 ms across the weights."
        );
    }

    #[test]
    fn the_weight_table_and_csv_put_both_ssims_side_by_side() {
        let c = curves();
        let table = format_weights(&c);
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].ends_with("SSIM to style alone  SSIM to plain"),
            "{table}"
        );
        assert!(lines[2].starts_with("LCM-LoRA 4  style×0.5"), "{table}");
        assert!(lines[2].ends_with("0.600          0.550"), "{table}");
        assert!(lines[0].starts_with("curve       weight"), "{table}");
        assert!(
            table.contains("the two references' SSIM to each other: 0.350"),
            "{table}"
        );
        let text = weights_csv(&c).unwrap();
        let mut r = csv::Reader::from_reader(text.as_bytes());
        let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 3, "no reference ran: no reference rows");
        assert_eq!(&rows[1][7], "0.5");
        assert_eq!((&rows[1][13], &rows[1][17]), ("0.6", "0.55"));
    }

    #[test]
    fn the_weight_plot_draws_both_lines_per_curve() {
        let svg = plot::weights_svg(&curves(), "DPM-Solver++ 50", None).unwrap();
        assert!(svg.contains("LCM-LoRA 4: to style alone"), "legend");
        assert!(svg.contains("LCM-LoRA 4: to plain"), "legend");
        assert!(
            svg.contains("style alone vs plain (DPM-Solver++ 50)"),
            "legend"
        );
        let png = plot::rasterise(&svg).unwrap();
        assert_eq!((png.width(), png.height()), (plot::WIDTH, plot::HEIGHT));
    }
}
