//! The landscape as a picture: plotters draws the chart as SVG (time on a log x axis, the
//! sweep's quality on y — SSIM to the reference unless `--quality` says otherwise — one line per
//! method through its points with each mean's 95 % interval over prompts × seeds as an error
//! bar, each point labelled with its step count, the knee ringed, the reference's time as a
//! dashed line), and
//! resvg rasterises it to PNG with the bundled DejaVu Sans, so the picture is the same on every
//! machine and needs no system fonts.
//!
//! A weight sweep's picture ([`weights_svg`]): SSIM against the swept adapter's weight (linear
//! x), per curve a solid line to the style-alone image and a dashed one to the plain image, the
//! two references' SSIM to each other as a grey line.

use color_eyre::eyre::{WrapErr, eyre};
use image::RgbImage;
use plotters::coord::Shift;
use plotters::coord::combinators::{BindKeyPoints, LogCoord, WithKeyPoints};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::{Landscape, Point, QualityAxis, Series, Stat, WeightCurves, WeightSeries};
use crate::report::table::format_ms;

/// Pixels of the picture.
pub const WIDTH: u32 = 1000;
pub const HEIGHT: u32 = 640;

static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
const FAMILY: &str = "DejaVu Sans";

/// Okabe–Ito: told apart with every kind of colour blindness.
const PALETTE: [RGBColor; 6] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(213, 94, 0),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
];

/// The colour of method `i`, in the chart and the TUI alike.
pub fn colour(i: usize) -> (u8, u8, u8) {
    let c = PALETTE[i % PALETTE.len()];
    (c.0, c.1, c.2)
}

fn plot_error(e: impl std::fmt::Display) -> color_eyre::Report {
    eyre!("drawing the landscape plot: {e}")
}

/// Seconds on the axis: `0.05 s`, `1.2 s`, `40 s`.
fn seconds(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.0} s")
    } else if v >= 1.0 {
        format!("{v:.1} s")
    } else if v >= 0.01 {
        format!("{v:.2} s")
    } else {
        format!("{} ms", format_ms(v * 1e3))
    }
}

/// The x range (seconds) that holds every point and the reference, widened a little on the
/// log scale so no point sits on the frame.
fn x_range(land: &Landscape) -> (f64, f64) {
    let times = land
        .series
        .iter()
        .flat_map(|s| s.points.iter())
        .chain(land.reference.iter())
        .flat_map(|p: &Point| [p.time_min_ms, p.time_max_ms, p.time_ms])
        .map(|ms| (ms / 1e3).max(1e-6));
    let (lo, hi) = times.fold((f64::INFINITY, 0.0f64), |(lo, hi), t| {
        (lo.min(t), hi.max(t))
    });
    if !lo.is_finite() {
        return (0.01, 1.0);
    }
    let (lo, hi) = if hi / lo < 1.5 {
        (lo / 1.5, hi * 1.5)
    } else {
        (lo, hi)
    };
    let span = (hi / lo).ln();
    (lo / (span * 0.06).exp(), hi * (span * 0.06).exp())
}

/// The points of `s` that have a quality on the landscape's axis, with it.
fn on_axis<'a>(land: &Landscape, points: &'a [Point]) -> Vec<(&'a Point, Stat)> {
    let axis = land.sweep.quality;
    points
        .iter()
        .filter_map(|p| Some((p, p.quality(axis)?)))
        .collect()
}

/// The y range: from a little under the lowest point's interval to just above 1
/// for a quality capped at 1 (SSIM, judge accuracy), else just above the highest point.
fn y_range(land: &Landscape) -> (f64, f64) {
    let stats: Vec<Stat> = land
        .series
        .iter()
        .flat_map(|s| on_axis(land, &s.points))
        .map(|(_, q)| q)
        .collect();
    let capped = land.sweep.quality != QualityAxis::Clip;
    let top = if capped {
        1.0
    } else {
        stats
            .iter()
            .map(|q| q.mean + q.ci95)
            .fold(f64::NAN, f64::max)
    };
    let low = stats.iter().map(|q| q.mean - q.ci95).fold(top, f64::min);
    if !(low.is_finite() && top.is_finite()) {
        return (0.0, 1.0);
    }
    let span = (top - low).max(if capped { 0.2 } else { 1.0 });
    let low = low - 0.05 * span;
    let low = if capped { low.max(-1.0) } else { low };
    (low, top + 0.04 * span)
}

/// Round times (1-2-5 per decade, in seconds) inside `lo..hi`, for the x axis's labels and grid.
pub fn time_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut out = Vec::new();
    if !(lo > 0.0 && hi > lo && lo.is_finite() && hi.is_finite()) {
        return out;
    }
    let mut decade = 10f64.powf(lo.log10().floor());
    while decade <= hi {
        for m in [1.0, 2.0, 5.0] {
            let v = decade * m;
            if v >= lo && v <= hi {
                out.push(v);
            }
        }
        decade *= 10.0;
    }
    out
}

/// Where the legend hides the fewest points: the corner of the plot area (in data fractions)
/// holding the fewest of them.
fn legend_corner(land: &Landscape, x: (f64, f64), y: (f64, f64)) -> SeriesLabelPosition {
    let frac: Vec<(f64, f64)> = land
        .series
        .iter()
        .flat_map(|s| s.points.iter())
        .map(|p| {
            let t = (p.time_ms / 1e3).max(1e-9);
            (
                (t / x.0).ln() / (x.1 / x.0).ln(),
                (p.mean(land.sweep.quality) - y.0) / (y.1 - y.0),
            )
        })
        .filter(|(_, fy)| !fy.is_nan())
        .collect();
    emptiest_corner(&frac)
}

/// The corner of the plot area holding the fewest of the points `frac` (each as fractions of
/// the axes, 0–1 from the lower left); lower right among equals.
fn emptiest_corner(frac: &[(f64, f64)]) -> SeriesLabelPosition {
    let count = |right: bool, top: bool| {
        frac.iter()
            .filter(|&&(fx, fy)| {
                (if right { fx > 0.55 } else { fx < 0.45 })
                    && (if top { fy > 0.7 } else { fy < 0.3 })
            })
            .count()
    };
    [
        (SeriesLabelPosition::LowerRight, count(true, false)),
        (SeriesLabelPosition::LowerLeft, count(false, false)),
        (SeriesLabelPosition::UpperRight, count(true, true)),
        (SeriesLabelPosition::UpperLeft, count(false, true)),
    ]
    .into_iter()
    .min_by_key(|&(_, n)| n)
    .map_or(SeriesLabelPosition::LowerRight, |(pos, _)| pos)
}

/// The plot area: time in seconds on a log axis (its key points [`time_ticks`]), SSIM on y.
type PlotChart<'a, 'b> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<WithKeyPoints<LogCoord<f64>>, RangedCoordf64>>;

/// The chart as an SVG document. `note` goes under the chart (what the curves mean on this
/// model).
pub fn svg(land: &Landscape, note: Option<&str>) -> color_eyre::Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let (chart_area, foot) = root.split_vertically(HEIGHT - 34);
        let (x, y) = (x_range(land), y_range(land));
        let mut chart = axes(&chart_area, land, x, y)?;
        if let Some(r) = land.reference {
            draw_reference(&mut chart, land, r.time_ms / 1e3, y)?;
        }
        for (i, s) in land.series.iter().enumerate() {
            draw_method(&mut chart, PALETTE[i % PALETTE.len()], land, s)?;
        }
        chart
            .configure_series_labels()
            .position(legend_corner(land, x, y))
            .label_font((FAMILY, 14))
            .background_style(WHITE.mix(0.9))
            .border_style(RGBColor(180, 180, 180))
            .draw()
            .map_err(plot_error)?;
        let foot_text = note.map_or_else(
            || "numbers beside the points: steps; ring: the knee (fewest steps within tolerance of the method's best)".to_string(),
            str::to_string,
        );
        draw_foot(&foot, foot_text)?;
        root.present().map_err(plot_error)?;
    }
    Ok(out)
}

/// The grey line of text under a chart (what its marks mean, or the caller's note).
fn draw_foot<DB: DrawingBackend>(
    foot: &DrawingArea<DB, Shift>,
    text: String,
) -> color_eyre::Result<()> {
    foot.draw(&Text::new(
        text,
        (16, 8),
        (FAMILY, 14).into_font().color(&RGBColor(90, 90, 90)),
    ))
    .map_err(plot_error)
}

/// The caption, the axes over ranges `x` (seconds) and `y` (SSIM), their labels and the grid.
fn axes<'a, 'b>(
    area: &'a DrawingArea<SVGBackend<'b>, Shift>,
    land: &Landscape,
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
) -> color_eyre::Result<PlotChart<'a, 'b>> {
    let y_name = y_name(land);
    let over = if land.sweep.prompts.is_empty() {
        "seeds"
    } else {
        "prompts × seeds"
    };
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("Quality against time: {y_name} over {over}"),
            (FAMILY, 22),
        )
        .margin(14)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(
            (x0..x1).log_scale().with_key_points(time_ticks(x0, x1)),
            y0..y1,
        )
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("median time per image (log scale)")
        .y_desc(format!("{y_name} (mean, 95 % interval)"))
        .x_label_formatter(&|v| seconds(*v))
        .y_label_formatter(&|v| format!("{v:.2}"))
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 15))
        .y_max_light_lines(1)
        .light_line_style(RGBColor(238, 238, 238))
        .bold_line_style(RGBColor(205, 205, 205))
        .draw()
        .map_err(plot_error)?;
    Ok(chart)
}

/// The top of a point's error bar: its interval's, but never above 1 on an axis no image can
/// exceed (SSIM, judge accuracy), where Student's t interval of a mean near 1 would.
fn bar_top(axis: QualityAxis, q: &Stat) -> f64 {
    let top = q.mean + q.ci95;
    if axis == QualityAxis::Clip {
        top
    } else {
        top.min(1.0)
    }
}

/// What the y axis shows: "SSIM to DPM-Solver++ 50", "CLIP score", "judge accuracy".
fn y_name(land: &Landscape) -> String {
    match land.sweep.quality {
        QualityAxis::Ssim => format!("SSIM to {}", land.sweep.reference.label()),
        other => other.label().to_string(),
    }
}

/// The reference's time `t` (seconds) as a dashed grey line across the y range `y`, named at
/// its foot.
fn draw_reference(
    chart: &mut PlotChart,
    land: &Landscape,
    t: f64,
    (y0, y1): (f64, f64),
) -> color_eyre::Result<()> {
    let grey = RGBColor(120, 120, 120);
    chart
        .draw_series(DashedLineSeries::new(
            [(t, y0), (t, y1)],
            6,
            4,
            grey.stroke_width(1),
        ))
        .map_err(plot_error)?;
    chart
        .draw_series(std::iter::once(Text::new(
            format!(" reference {}", land.sweep.reference.label()),
            (t, y0 + 0.03 * (y1 - y0)),
            (FAMILY, 13).into_font().color(&grey),
        )))
        .map_err(plot_error)?;
    Ok(())
}

/// One method in colour `c`: its line through the points by time (with its legend entry), the
/// 95 % interval of each point's mean as an error bar, the markers, the knee's ring and each
/// point's step count; points without a quality on the landscape's axis are left out.
fn draw_method(
    chart: &mut PlotChart,
    c: RGBColor,
    land: &Landscape,
    s: &Series,
) -> color_eyre::Result<()> {
    let by_time = s.by_time();
    let pts = on_axis(land, &by_time);
    let xy: Vec<(f64, f64)> = pts.iter().map(|(p, q)| (p.time_ms / 1e3, q.mean)).collect();
    let name = format!(
        "{} (cfg {}{})",
        s.method.label,
        s.method.cfg,
        match s.knee {
            Some(k) => format!(", knee {}", steps(k)),
            None => String::new(),
        }
    );
    chart
        .draw_series(LineSeries::new(xy.clone(), c.stroke_width(2)))
        .map_err(plot_error)?
        .label(name)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], c.stroke_width(3)));
    let axis = land.sweep.quality;
    chart
        .draw_series(pts.iter().filter(|(_, q)| q.n > 1).map(|(p, q)| {
            let t = p.time_ms / 1e3;
            PathElement::new(
                vec![(t, q.mean - q.ci95), (t, bar_top(axis, q))],
                c.mix(0.7).stroke_width(1),
            )
        }))
        .map_err(plot_error)?;
    chart
        .draw_series(xy.iter().map(|&(x, y)| Circle::new((x, y), 4, c.filled())))
        .map_err(plot_error)?;
    if let Some((k, q)) = pts.iter().find(|(p, _)| Some(p.steps) == s.knee) {
        chart
            .draw_series(std::iter::once(Circle::new(
                (k.time_ms / 1e3, q.mean),
                10,
                c.stroke_width(2),
            )))
            .map_err(plot_error)?;
    }
    chart
        .draw_series(pts.iter().map(|(p, q)| {
            // The step count a little right of and above its marker.
            EmptyElement::at((p.time_ms / 1e3, q.mean))
                + Text::new(
                    p.steps.to_string(),
                    (6, -18),
                    (FAMILY, 13).into_font().color(&c),
                )
        }))
        .map_err(plot_error)?;
    Ok(())
}

/// The weight chart's plot area: the adapter's weight on x, SSIM on y, both linear.
type WeightChart<'a, 'b> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A weight sweep as an SVG document (see the module's doc); `reference` names the reference
/// settings both reference images were made at, `note` goes under the chart.
pub fn weights_svg(
    c: &WeightCurves,
    reference: &str,
    note: Option<&str>,
) -> color_eyre::Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let (chart_area, foot) = root.split_vertically(HEIGHT - 34);
        let a = c.axis.name();
        let (x0, x1) = weight_range(c);
        let (y0, y1) = weight_y_range(c);
        let mut chart = ChartBuilder::on(&chart_area)
            .caption(
                format!("Style strength against the {a} weight: SSIM to {a} alone and to plain"),
                (FAMILY, 22),
            )
            .margin(14)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc(format!("{a} weight (fused at run time)"))
            .y_desc("SSIM (mean over seeds)")
            .x_label_formatter(&|v| format!("{v:.2}"))
            .y_label_formatter(&|v| format!("{v:.2}"))
            .label_style((FAMILY, 14))
            .axis_desc_style((FAMILY, 15))
            .light_line_style(RGBColor(238, 238, 238))
            .bold_line_style(RGBColor(205, 205, 205))
            .draw()
            .map_err(plot_error)?;
        if let Some(e) = c.ends {
            let grey = RGBColor(120, 120, 120);
            chart
                .draw_series(DashedLineSeries::new(
                    [(x0, e.mean), (x1, e.mean)],
                    3,
                    5,
                    grey.stroke_width(1),
                ))
                .map_err(plot_error)?
                .label(format!("{a} alone vs plain ({reference})"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 22, y)], grey.stroke_width(1))
                });
        }
        for (i, s) in c.series.iter().enumerate() {
            draw_weight_series(&mut chart, PALETTE[i % PALETTE.len()], s, &a)?;
        }
        let frac: Vec<(f64, f64)> = c
            .series
            .iter()
            .flat_map(|s| &s.points)
            .flat_map(|p| {
                let x = (f64::from(p.weight) - x0) / (x1 - x0);
                let ys = [Some(p.ssim_style.mean), p.ssim_plain.map(|q| q.mean)];
                ys.into_iter()
                    .flatten()
                    .map(move |v| (x, (v - y0) / (y1 - y0)))
            })
            .collect();
        chart
            .configure_series_labels()
            .position(emptiest_corner(&frac))
            .label_font((FAMILY, 14))
            .background_style(WHITE.mix(0.9))
            .border_style(RGBColor(180, 180, 180))
            .draw()
            .map_err(plot_error)?;
        let foot_text = note.map_or_else(
            || format!("solid: SSIM to the {a}-alone image; dashed: to the plain image; both at {reference}"),
            str::to_string,
        );
        draw_foot(&foot, foot_text)?;
        root.present().map_err(plot_error)?;
    }
    Ok(out)
}

/// The weights on x, a little wider than the swept range.
fn weight_range(c: &WeightCurves) -> (f64, f64) {
    let w = &c.axis.weights;
    let lo = w.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = w.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    let (lo, hi) = (f64::from(lo), f64::from(hi));
    let pad = ((hi - lo) * 0.05).max(0.05);
    (lo - pad, hi + pad)
}

/// SSIM on y: from under the lowest point (its spread and the references' SSIM included) to
/// just above 1.
fn weight_y_range(c: &WeightCurves) -> (f64, f64) {
    let low = c
        .series
        .iter()
        .flat_map(|s| &s.points)
        .flat_map(|p| {
            let plain = p.ssim_plain.map(|q| q.mean - q.std);
            [Some(p.ssim_style.mean - p.ssim_style.std), plain]
        })
        .flatten()
        .chain(c.ends.map(|e| e.mean))
        .fold(1.0f64, f64::min);
    let low = (low - 0.05 * (1.0 - low).max(0.2)).max(-1.0);
    (low, 1.0 + 0.04 * (1.0 - low))
}

/// One curve in colour `c`: a solid line with markers through its SSIM to the style-alone
/// image, a dashed one through its SSIM to the plain image, each with its legend entry.
fn draw_weight_series(
    chart: &mut WeightChart,
    c: RGBColor,
    s: &WeightSeries,
    adapter: &str,
) -> color_eyre::Result<()> {
    let style: Vec<(f64, f64)> = s
        .points
        .iter()
        .map(|p| (f64::from(p.weight), p.ssim_style.mean))
        .collect();
    let plain: Vec<(f64, f64)> = s
        .points
        .iter()
        .filter_map(|p| p.ssim_plain.map(|q| (f64::from(p.weight), q.mean)))
        .collect();
    chart
        .draw_series(LineSeries::new(style.clone(), c.stroke_width(2)))
        .map_err(plot_error)?
        .label(format!("{}: to {adapter} alone", s.label()))
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], c.stroke_width(3)));
    chart
        .draw_series(
            style
                .iter()
                .map(|&(x, y)| Circle::new((x, y), 4, c.filled())),
        )
        .map_err(plot_error)?;
    chart
        .draw_series(DashedLineSeries::new(
            plain.clone(),
            6,
            4,
            c.stroke_width(2),
        ))
        .map_err(plot_error)?
        .label(format!("{}: to plain", s.label()))
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], c.stroke_width(1)));
    chart
        .draw_series(
            plain
                .iter()
                .map(|&(x, y)| Circle::new((x, y), 3, c.stroke_width(1))),
        )
        .map_err(plot_error)?;
    Ok(())
}

/// Rasterises an SVG document from [`svg`] at its own size, on white, with the bundled font.
pub fn rasterise(svg: &str) -> color_eyre::Result<RgbImage> {
    let mut opt = resvg::usvg::Options::default();
    {
        let db = opt.fontdb_mut();
        db.load_font_data(FONT.to_vec());
        db.set_sans_serif_family(FAMILY);
        db.set_serif_family(FAMILY);
    }
    let tree = resvg::usvg::Tree::from_str(svg, &opt).wrap_err("reading the plot's SVG")?;
    let size = tree.size().to_int_size();
    let mut pixmap = resvg::tiny_skia::Pixmap::new(size.width(), size.height())
        .ok_or_else(|| eyre!("the plot has no area ({}×{})", size.width(), size.height()))?;
    pixmap.fill(resvg::tiny_skia::Color::WHITE);
    resvg::render(
        &tree,
        resvg::tiny_skia::Transform::default(),
        &mut pixmap.as_mut(),
    );
    // Opaque white underneath: premultiplied RGBA is plain RGB here.
    let rgb: Vec<u8> = pixmap
        .data()
        .chunks_exact(4)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect();
    RgbImage::from_raw(size.width(), size.height(), rgb)
        .ok_or_else(|| eyre!("the plot's pixels do not fill its size"))
}

/// The chart as a PNG-ready image.
pub fn png(land: &Landscape, note: Option<&str>) -> color_eyre::Result<RgbImage> {
    rasterise(&svg(land, note)?)
}

/// "3 steps", "1 step": a step count as the plot and the summary write it.
pub fn steps(n: usize) -> String {
    if n == 1 {
        "1 step".into()
    } else {
        format!("{n} steps")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_ticks_are_round_1_2_5_values_inside_the_range() {
        assert_eq!(time_ticks(0.02, 0.9), [0.02, 0.05, 0.1, 0.2, 0.5]);
        assert_eq!(time_ticks(1.5, 30.0), [2.0, 5.0, 10.0, 20.0]);
        assert!(time_ticks(0.0, 1.0).is_empty());
        assert!(time_ticks(2.0, 1.0).is_empty());
    }

    /// A DPM-Solver++ sweep at 5 and 10 steps over 4 runs a point, read on `axis`: SSIM 0.6 /
    /// 0.9, judge 0.8 / 1.0 (each ± 0.1 across runs), CLIP 28 / 31.
    fn landscape(axis: QualityAxis) -> Landscape {
        let cfg = crate::sweep::SweepConfig {
            seeds: 4,
            ..Default::default()
        };
        let plan = crate::sweep::Sweep::from_config(&cfg, Some("dpmpp"))
            .unwrap()
            .with_steps(&[5, 10])
            .unwrap()
            .with_quality(axis, None)
            .unwrap()
            .plan();
        let measured: Vec<_> = plan
            .runs
            .iter()
            .map(|r| {
                let wobble = if r.seed_index % 2 == 0 { 0.1 } else { -0.1 };
                let (ssim, judge, clip) = match r.target {
                    crate::sweep::Target::Point { steps: 5, .. } => (0.6, 0.8, 28.0),
                    crate::sweep::Target::Point { .. } => (0.9, 1.0, 31.0),
                    _ => (1.0, 1.0, 31.0),
                };
                Some(crate::sweep::Measured {
                    total_ms: 100.0,
                    quality: crate::quality::Quality {
                        psnr_db: Some(30.0),
                        ssim: ssim + wobble / 2.0,
                        mean_abs_diff: 0.0,
                    },
                    clip_score: Some(clip + wobble),
                    plain: None,
                    adherence: None,
                    judge: Some((judge + wobble).min(1.0)),
                })
            })
            .collect();
        plan.landscape(&measured)
    }

    #[test]
    fn the_y_axis_holds_every_points_interval_and_stops_just_above_1_where_quality_is_capped() {
        for axis in [QualityAxis::Ssim, QualityAxis::Judge, QualityAxis::Clip] {
            let land = landscape(axis);
            let (lo, hi) = y_range(&land);
            for s in &land.series {
                for p in &s.points {
                    let q = p.quality(axis).unwrap();
                    let top = bar_top(axis, &q);
                    assert!(
                        lo < q.mean - q.ci95 && top < hi,
                        "{axis:?}: {q:?} in {lo}..{hi}"
                    );
                }
            }
            match axis {
                // Capped at 1: the axis ends just above it and starts near the lowest interval,
                // not at 0.
                QualityAxis::Ssim | QualityAxis::Judge => {
                    assert!(hi > 1.0 && hi < 1.05, "{axis:?}: {hi}");
                    assert!(lo > 0.3, "{axis:?}: {lo}");
                }
                // The CLIP score's range is the points'.
                QualityAxis::Clip => assert!(lo > 20.0 && hi < 33.0, "{lo}..{hi}"),
            }
        }
    }

    #[test]
    fn axis_times_read_in_seconds_or_milliseconds() {
        assert_eq!(seconds(0.005), "5.00 ms");
        assert_eq!(seconds(0.2), "0.20 s");
        assert_eq!(seconds(2.0), "2.0 s");
        assert_eq!(seconds(20.0), "20 s");
    }
}
