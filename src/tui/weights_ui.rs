//! Drawing the landscape's weight mode (`W`): what the curve is, its progress, a braille chart of
//! SSIM against the style weight (per curve a solid line to the style-alone image and a dotted
//! one to the plain image in its plot colour, the two references' SSIM to each other as a grey
//! dotted line, as `weights.png` draws them), the table of weights under it and the findings
//! the headless sweep prints ([`crate::sweep::output::weight_findings`]).

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Style, Stylize};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Axis, Block, Borders, Cell, Chart, Dataset, GraphType, Paragraph, Row, Table, Wrap,
};

use super::app::App;
use super::images::Images;
use super::landscape::{self, LandscapeState, WeightRow};
use super::landscape_ui::{colour, progress_line, seeds_text, y_axis_of};
use super::ui::{DIM, draw_header, draw_hints, draw_list, fmt_ms};
use crate::sweep::output::{TINY_NOTE, weight_findings};
use crate::sweep::{Stat, WeightCurves};

/// Rows the findings may take on a short screen (the table scrolls; the findings do not).
const SHORT_FINDINGS: u16 = 5;

pub fn draw(app: &App, l: &LandscapeState, images: &Images, frame: &mut Frame, area: Rect) {
    let Some(c) = landscape::curves(l) else {
        return;
    };
    let rows = landscape::weight_table(&c);
    let tiny = app.info.as_ref().is_some_and(|i| i.tiny_model);
    let tall = area.height >= 40;
    let note = format!("Note: {TINY_NOTE}.");
    let wrapped = |text: &str| (text.chars().count() as u16).div_ceil(area.width.max(1));
    let note_h = if tiny && !tall { wrapped(&note) } else { 0 };
    let [header, top, note_area, progress, body, status, hints] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(if tall { 9 } else { 1 }),
        Constraint::Length(note_h),
        Constraint::Length(1),
        Constraint::Fill(1),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_header(app, images, frame, header);
    if tall {
        let [list, about] =
            Layout::horizontal([Constraint::Length(36), Constraint::Fill(1)]).areas(top);
        draw_list(app, frame, list);
        draw_about(app, l, tiny, frame, about);
    } else {
        frame.render_widget(summary_line(app, l, &c), top);
        frame.render_widget(
            Paragraph::new(note.as_str())
                .yellow()
                .wrap(Wrap { trim: true }),
            note_area,
        );
    }
    frame.render_widget(progress_line(app, l), progress);
    let findings = findings_lines(&c);
    let [chart, table, found] = body_areas(body, rows.len(), &findings, tall);
    draw_chart(l, &c, frame, chart);
    draw_table(app, l, &c, &rows, frame, table);
    frame.render_widget(Paragraph::new(findings).wrap(Wrap { trim: true }), found);
    let line = app.status.as_deref().map(Line::from).unwrap_or_default();
    frame.render_widget(line, status);
    draw_hints(app, frame, hints);
}

/// The body split into the chart (half, 8 rows at least), the table (what it
/// needs of the rest) and the findings (all of them on a tall screen, else a few rows; before
/// the table takes its share, since the table scrolls).
fn body_areas(body: Rect, rows: usize, findings: &[Line], tall: bool) -> [Rect; 3] {
    let width = body.width.max(1) as usize;
    let findings_want: u16 = findings
        .iter()
        .map(|l| l.width().div_ceil(width).max(1) as u16)
        .sum();
    let findings_want = if tall {
        findings_want
    } else {
        findings_want.min(SHORT_FINDINGS)
    };
    let table_want = if rows == 0 { 0 } else { rows as u16 + 2 };
    let chart_min = (body.height / 2).max(8).min(body.height);
    let left = body.height - chart_min;
    let findings_h = findings_want.min(left);
    let table_h = table_want.min(left - findings_h);
    Layout::vertical([
        Constraint::Fill(1),
        Constraint::Length(table_h),
        Constraint::Length(findings_h),
    ])
    .areas(body)
}

/// One line for small screens: what is swept, with which seeds, against what.
fn summary_line(app: &App, l: &LandscapeState, c: &WeightCurves) -> Line<'static> {
    let s = &l.plan.sweep;
    let curves: Vec<String> = c.series.iter().map(|s| s.label()).collect();
    Line::from(vec![
        Span::raw("L · W · The style weight").bold(),
        Span::raw(format!(
            " · {} + {}{} · {} ({}) · “{}”",
            curves.join(", "),
            c.axis.name(),
            weights_text(c),
            seeds_text(l),
            app.rng,
            s.prompt
        )),
    ])
}

/// "0–1.5 by 0.25" (or the one weight).
fn weights_text(c: &WeightCurves) -> String {
    match c.axis.weights.as_slice() {
        [one] => format!("×{one}"),
        [first, second, .., last] => format!("×{first}–{last} by {}", second - first),
        [first, last] => format!("×{first}, {last}"),
        [] => "no weights".into(),
    }
}

/// The curve in words, beside the list (tall screens).
fn draw_about(app: &App, l: &LandscapeState, tiny: bool, frame: &mut Frame, area: Rect) {
    let block = Block::bordered().title(format!(" L · W · {} ", app.current().exercise.title));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let mut lines = Vec::new();
    if tiny {
        lines.push(Line::from(format!("Note: {TINY_NOTE}.")).yellow());
    }
    lines.extend([
        Line::from(vec![
            Span::raw("prompt ").italic(),
            Span::styled(format!("“{}”", l.plan.sweep.prompt), DIM),
        ]),
        Line::from(format!(
            "{} ({}) · {}",
            seeds_text(l),
            app.rng,
            app.current().exercise.about
        )),
    ]);
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: true }), inner);
}

/// The findings as the headless sweep prints them, each a "- " line, the Markdown's `**`
/// emphasis bold.
fn findings_lines(c: &WeightCurves) -> Vec<Line<'static>> {
    weight_findings(c)
        .into_iter()
        .map(|text| {
            let mut spans = vec![Span::raw("- ")];
            for (k, part) in text.split("**").enumerate() {
                let span = Span::raw(part.to_string());
                spans.push(if k % 2 == 1 { span.bold() } else { span });
            }
            Line::from(spans)
        })
        .collect()
}

/// The x range: the swept weights (0.5 either side of a single one).
fn x_bounds(c: &WeightCurves) -> [f64; 2] {
    let w = &c.axis.weights;
    let lo = w.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = w.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !(lo.is_finite() && hi.is_finite()) {
        return [0.0, 1.0];
    }
    let (lo, hi) = (f64::from(lo), f64::from(hi));
    if hi > lo {
        [lo, hi]
    } else {
        [lo - 0.5, hi + 0.5]
    }
}

/// Evenly spaced weight labels under the chart (a Chart spreads its labels evenly, which on a
/// linear axis is where they belong): 2–5 of them, as many as `columns` holds, preferring a
/// count whose spacing is a round number (0, 0.5, 1, 1.5 rather than 0, 0.375, …).
fn x_labels(xb: [f64; 2], columns: u16) -> Vec<String> {
    let label = |v: f64| {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    };
    let span = xb[1] - xb[0];
    let round = |n: usize| {
        let step = span / (n - 1) as f64 * 100.0;
        (step - step.round()).abs() < 1e-6
    };
    let fits = |n: usize| n * 6 <= usize::from(columns);
    let n = (3..=5)
        .rev()
        .find(|&n| fits(n) && round(n))
        .unwrap_or(if fits(3) { 3 } else { 2 });
    (0..n)
        .map(|k| label(xb[0] + span * k as f64 / (n - 1) as f64))
        .collect()
}

fn draw_chart(l: &LandscapeState, c: &WeightCurves, frame: &mut Frame, area: Rect) {
    let a = c.axis.name();
    let title = format!(
        " SSIM against the {a} weight · to {a} alone and to plain ({}) ",
        l.plan.sweep.reference.label()
    );
    let block = Block::new().borders(Borders::TOP).title(title);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if inner.height < 3 {
        return;
    }
    let [legend, plot] =
        Layout::vertical([Constraint::Length(1), Constraint::Fill(1)]).areas(inner);
    frame.render_widget(chart_legend(c), legend);
    if c.is_empty() {
        let n = l.plan.runs.len();
        let text = format!(
            "no points yet: each weight appears when a run of it finishes ({n} runs; each \
             seed's plain and {a}-alone images come first). enter runs the curve."
        );
        frame.render_widget(
            Paragraph::new(text).style(DIM).wrap(Wrap { trim: true }),
            plot,
        );
        return;
    }
    let xb = x_bounds(c);
    let graph_h = plot.height.saturating_sub(2);
    let values: Vec<f64> = c
        .series
        .iter()
        .flat_map(|s| &s.points)
        .flat_map(|p| [Some(p.ssim_style.mean), p.ssim_plain.map(|q| q.mean)])
        .flatten()
        .chain(c.ends.map(|e| e.mean))
        .collect();
    // Two intervals at least: one would stretch a short chart's curves over 0–1.
    let intervals = usize::from(graph_h.saturating_sub(1) / 2).clamp(2, 4);
    let (yb, y_labels) = y_axis_of(&values, intervals);
    let y_width = y_labels
        .iter()
        .map(|s| s.chars().count())
        .max()
        .unwrap_or(0) as u16;
    let graph_w = plot.width.saturating_sub(y_width + 1).max(1);
    let dots = Dots {
        xb,
        yb,
        width: f64::from(graph_w) * 2.0,
        height: f64::from(graph_h.max(1)) * 4.0,
    };
    let points = ChartPoints::of(c, dots);
    let chart = Chart::new(points.datasets())
        .legend_position(None)
        .x_axis(
            Axis::default()
                .bounds(xb)
                .labels(x_labels(xb, graph_w))
                .style(DIM),
        )
        .y_axis(
            Axis::default()
                .bounds(yb)
                .labels(y_labels.into_iter().map(Span::raw).collect::<Vec<_>>())
                .style(DIM),
        );
    frame.render_widget(chart, plot);
}

/// The chart's legend: each curve's two lines in its colour, the references' line.
fn chart_legend(c: &WeightCurves) -> Line<'static> {
    let a = c.axis.name();
    let mut spans = Vec::new();
    for (i, s) in c.series.iter().enumerate() {
        let style = Style::new().fg(colour(i));
        spans.push(Span::styled("━ ", style));
        spans.push(Span::raw(format!("{} to {a} alone  ", s.label())));
        spans.push(Span::styled("┄ ", style));
        spans.push(Span::raw("to plain  "));
    }
    if let Some(e) = c.ends {
        spans.push(Span::styled(
            format!("┄ {a} alone vs plain {:.3}", e.mean),
            DIM,
        ));
    }
    Line::from(spans)
}

/// The chart's scale in braille dots, to space dotted lines evenly on screen.
#[derive(Clone, Copy)]
struct Dots {
    xb: [f64; 2],
    yb: [f64; 2],
    /// Dots across and up the graph.
    width: f64,
    height: f64,
}

impl Dots {
    /// A dotted line through `points`: a dot every 3 braille dots along each segment.
    fn dotted(self, points: &[(f64, f64)]) -> Vec<(f64, f64)> {
        let sx = self.width / (self.xb[1] - self.xb[0]).max(1e-12);
        let sy = self.height / (self.yb[1] - self.yb[0]).max(1e-12);
        let mut out: Vec<(f64, f64)> = points.first().copied().into_iter().collect();
        for w in points.windows(2) {
            let ((x0, y0), (x1, y1)) = (w[0], w[1]);
            let len = ((x1 - x0) * sx).hypot((y1 - y0) * sy);
            let n = ((len / 3.0).round() as usize).max(1);
            out.extend((1..=n).map(|k| {
                let t = k as f64 / n as f64;
                (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t)
            }));
        }
        out
    }
}

/// The chart's data, weight against mean SSIM.
struct ChartPoints {
    /// Each curve's SSIM to the style-alone image (a line), and to the plain image (dotted).
    style: Vec<Vec<(f64, f64)>>,
    plain: Vec<Vec<(f64, f64)>>,
    /// The two references' SSIM to each other, dotted across the x range.
    ends: Vec<(f64, f64)>,
}

impl ChartPoints {
    fn of(c: &WeightCurves, dots: Dots) -> ChartPoints {
        let style = c
            .series
            .iter()
            .map(|s| {
                s.points
                    .iter()
                    .map(|p| (f64::from(p.weight), p.ssim_style.mean))
                    .collect()
            })
            .collect();
        let plain = c
            .series
            .iter()
            .map(|s| {
                let pts: Vec<(f64, f64)> = s
                    .points
                    .iter()
                    .filter_map(|p| p.ssim_plain.map(|q| (f64::from(p.weight), q.mean)))
                    .collect();
                dots.dotted(&pts)
            })
            .collect();
        let ends = c
            .ends
            .map(|e| dots.dotted(&[(dots.xb[0], e.mean), (dots.xb[1], e.mean)]))
            .unwrap_or_default();
        ChartPoints { style, plain, ends }
    }

    /// The references' line under the curves; each curve's dotted line under its solid one.
    fn datasets(&self) -> Vec<Dataset<'_>> {
        let dotted = |pts, style| {
            Dataset::default()
                .marker(Marker::Braille)
                .graph_type(GraphType::Scatter)
                .style(style)
                .data(pts)
        };
        let mut datasets = vec![dotted(&self.ends, DIM)];
        for (i, pts) in self.plain.iter().enumerate() {
            datasets.push(dotted(pts, Style::new().fg(colour(i))));
        }
        for (i, pts) in self.style.iter().enumerate() {
            datasets.push(
                Dataset::default()
                    .marker(Marker::Braille)
                    .graph_type(GraphType::Line)
                    .style(Style::new().fg(colour(i)))
                    .data(pts),
            );
        }
        datasets
    }
}

fn draw_table(
    app: &App,
    l: &LandscapeState,
    c: &WeightCurves,
    rows: &[WeightRow],
    frame: &mut Frame,
    area: Rect,
) {
    if area.height < 3 {
        return;
    }
    let li = app.selected;
    let visible = usize::from(area.height - 2);
    let focus = l
        .row
        .or_else(|| landscape::focus_row(app, li))
        .unwrap_or(0)
        .min(rows.len().saturating_sub(1));
    let offset = focus.saturating_sub(visible - 1);
    let active_row = landscape::active_run(app, li)
        .and_then(|a| landscape::weight_row_of(rows, c, &l.plan, l.plan.runs[a.run].target));
    let body = rows
        .iter()
        .enumerate()
        .skip(offset)
        .take(visible)
        .map(|(k, r)| {
            let active = Some(k) == active_row;
            let row = weight_row(c, r, active);
            if l.row == Some(k) {
                row.reversed()
            } else if active {
                row.yellow()
            } else {
                row
            }
        });
    let shown = if rows.len() > visible {
        format!(
            " · rows {}–{} of {} (h/l)",
            offset + 1,
            (offset + visible).min(rows.len()),
            rows.len()
        )
    } else {
        String::new()
    };
    let a = c.axis.name();
    let to_style = format!("SSIM to {a} alone");
    let label_w = (a.chars().count() + 8).max(13) as u16;
    let header = ["", "seeds", "time", to_style.as_str(), "SSIM to plain"];
    let widths = [
        Constraint::Length(label_w),
        Constraint::Length(5),
        Constraint::Length(9),
        Constraint::Length((to_style.chars().count() as u16).max(13)),
        Constraint::Length(13),
    ];
    let table = Table::new(body, widths)
        .header(Row::new(header).style(Style::new().bold().underlined()))
        .column_spacing(1)
        .block(Block::new().borders(Borders::TOP).title(format!(
            " Weights · median time, SSIM over the seeds{shown} "
        )));
    frame.render_widget(table, area);
}

/// "0.662 ± 0.012".
fn stat(s: &Stat) -> String {
    format!("{:.3} ± {:.3}", s.mean, s.std)
}

/// One row: a reference (its time; its SSIM to the other reference) or a weight of a curve.
/// Its glyph: `▶` when `active`, else `✓` when all its seeds are in, else `…`.
fn weight_row(c: &WeightCurves, r: &WeightRow, active: bool) -> Row<'static> {
    let a = c.axis.name();
    let ends = || c.ends.as_ref().map_or_else(|| "–".into(), stat);
    let itself = || "1 (itself)".to_string();
    let (label, (runs, planned, time_ms), to_style, to_plain) = match *r {
        WeightRow::Plain(p) => (
            Span::styled("plain", DIM),
            (p.runs, p.planned, p.time_ms),
            ends(),
            itself(),
        ),
        WeightRow::Alone(p) => (
            Span::styled(format!("{a} alone"), DIM),
            (p.runs, p.planned, p.time_ms),
            itself(),
            ends(),
        ),
        WeightRow::Weight { series, point: p } => (
            Span::styled(format!("{a}×{}", p.weight), Style::new().fg(colour(series))),
            (p.runs, p.planned, p.time_ms),
            stat(&p.ssim_style),
            p.ssim_plain.as_ref().map_or_else(|| "–".into(), stat),
        ),
    };
    let glyph = if active {
        "▶"
    } else if runs >= planned {
        "✓"
    } else {
        "…"
    };
    Row::new([
        Cell::from(Line::from(vec![Span::raw(format!("{glyph} ")), label])),
        Cell::from(format!("{runs}/{planned}")),
        Cell::from(fmt_ms(time_ms)),
        Cell::from(to_style),
        Cell::from(to_plain),
    ])
}
