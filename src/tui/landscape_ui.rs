//! Drawing the speed landscape: what the sweep is, its progress, a braille chart of SSIM against
//! time (log scale; one line per method in its plot colour, each knee a block, the reference's
//! time a dotted line) and the table of points under it. The weight mode (`W`) is drawn by
//! [`super::weights_ui`], with the header, progress line and axes of this one.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Axis, Block, Borders, Cell, Chart, Dataset, GraphType, Paragraph, Row, Table, Wrap,
};

use super::app::App;
use super::images::Images;
use super::landscape::{self, LandscapeState, RowKind, TableRow};
use super::ui::{DIM, draw_header, draw_hints, draw_list, fmt_ms};
use crate::report::table::RowState;
use crate::sweep::Landscape;
use crate::sweep::output::TINY_NOTE;

/// The knee's mark, in the chart and the table.
pub const KNEE: &str = "█";

/// The reference's row in the table (the legend and the header name it).
const REFERENCE: &str = "reference";

/// Method `i`'s colour: the PNG plot's.
pub(super) fn colour(i: usize) -> Color {
    let (r, g, b) = crate::sweep::plot::colour(i);
    Color::Rgb(r, g, b)
}

pub fn draw(app: &App, images: &Images, frame: &mut Frame, area: Rect) {
    let Some(l) = landscape::of(app) else {
        return;
    };
    if l.is_weights() {
        super::weights_ui::draw(app, l, images, frame, area);
        return;
    }
    let land = landscape::landscape(l);
    let rows = landscape::table(&land);
    let tiny = app.info.as_ref().is_some_and(|i| i.tiny_model);
    let tall = area.height >= 40;
    let note = format!("Note: {TINY_NOTE}.");
    let note_h = if tiny && !tall {
        (note.chars().count() as u16).div_ceil(area.width.max(1))
    } else {
        0
    };
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
        frame.render_widget(summary_line(app, l), top);
        frame.render_widget(
            Paragraph::new(note.as_str())
                .yellow()
                .wrap(Wrap { trim: true }),
            note_area,
        );
    }
    frame.render_widget(progress_line(app, l), progress);
    // The chart takes a little over half (10 rows at least); the table what it needs of the rest.
    let table_want = if rows.is_empty() {
        0
    } else {
        rows.len() as u16 + 2
    };
    let chart_min = (body.height * 11 / 20).max(10).min(body.height);
    let table_h = table_want.min(body.height - chart_min);
    let [chart, table] =
        Layout::vertical([Constraint::Fill(1), Constraint::Length(table_h)]).areas(body);
    draw_chart(&land, l, frame, chart);
    draw_table(app, l, &land, &rows, frame, table);
    let line = match &app.status {
        Some(s) => Line::from(s.as_str()),
        None => Line::default(),
    };
    frame.render_widget(line, status);
    draw_hints(app, frame, hints);
}

pub(super) fn seeds_text(l: &LandscapeState) -> String {
    match l.plan.sweep.seeds.as_slice() {
        [one] => format!("seed {one}"),
        [first, .., last] => format!("seeds {first}–{last}"),
        [] => "no seeds".into(),
    }
}

/// One line for small screens: what is swept, with which seeds, against what.
fn summary_line(app: &App, l: &LandscapeState) -> Line<'static> {
    let s = &l.plan.sweep;
    Line::from(vec![
        Span::raw("L · The speed landscape").bold(),
        Span::raw(format!(
            " · {} ({}) · vs {} · “{}”",
            seeds_text(l),
            app.rng,
            s.reference.label(),
            s.prompt
        )),
    ])
}

/// The sweep in words, beside the list (tall screens).
fn draw_about(app: &App, l: &LandscapeState, tiny: bool, frame: &mut Frame, area: Rect) {
    let s = &l.plan.sweep;
    let block = Block::bordered().title(" L · The speed landscape ");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    // The note first: it is what a narrow box must not cut off.
    let mut lines = Vec::new();
    if tiny {
        lines.push(Line::from(format!("Note: {TINY_NOTE}.")).yellow());
    }
    lines.extend([
        Line::from(vec![
            Span::raw("prompt ").italic(),
            Span::styled(format!("“{}”", s.prompt), DIM),
        ]),
        Line::from(format!(
            "{} ({}) · every image is compared with the {} image of its seed; a point is the \
             median time of its seeds against their mean SSIM.",
            seeds_text(l),
            app.rng,
            s.reference.label()
        )),
        Line::from(vec![
            Span::raw(format!("{KNEE} knee")).bold(),
            Span::raw(format!(
                ": the fewest steps within {} SSIM of the method's best — where its free \
                 speedup ends. SSIM is closeness to the reference, not beauty.",
                s.tolerance
            )),
        ]),
    ]);
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: true }), inner);
}

/// "▶ run 12/70: DPM-Solver++ 10 · seed 43, step 4/10 · 11 of 70 done (+58 queued)", or where
/// the sweep stands.
pub(super) fn progress_line(app: &App, l: &LandscapeState) -> Line<'static> {
    let n = l.plan.runs.len();
    let done = l.measured.iter().flatten().count();
    let ex = app.current();
    let failed = ex
        .runs
        .iter()
        .filter(|r| r.row.state == RowState::Failed || r.error.is_some())
        .count();
    let failed = if failed > 0 {
        format!(" · {failed} failed")
    } else {
        String::new()
    };
    let queued = if app.queue.is_empty() {
        String::new()
    } else {
        format!(" (+{} queued)", app.queue.len())
    };
    let Some(a) = app.active else {
        let text = match done {
            0 => format!("{n} runs: enter runs the sweep (each seed's reference first){failed}"),
            d if d < n => {
                format!("{d} of {n} runs done{failed} · enter resumes the rest · R starts over")
            }
            _ if l.is_weights() => {
                format!(
                    "all {n} runs done · s saves the folder (weights.png, weights.csv, summary)"
                )
            }
            _ => format!("all {n} runs done · s saves the folder (plot.png, points.csv, summary)"),
        };
        return Line::styled(text, DIM);
    };
    if Some(a.exercise) != landscape::index(app) {
        let other = &app.exercises[a.exercise];
        let spec = &other.exercise.runs[a.run];
        let what = match &other.landscape {
            Some(_) => format!("L {}", other.exercise.title),
            None => format!("exercise {}", other.exercise.number),
        };
        return Line::styled(
            format!(
                "▶ {what} is running ({}): the sweep waits; {done} of {n} runs done",
                spec.label
            ),
            DIM,
        );
    }
    let spec = &ex.exercise.runs[a.run];
    let run = &ex.runs[a.run];
    let what = match (&app.loading, run.total_steps) {
        (Some(component), _) => format!("loading {component}…"),
        (None, 0) => "starting…".into(),
        (None, total) => format!("step {}/{total}", run.row.steps_done),
    };
    Line::from(vec![
        Span::raw(format!("▶ run {}/{n}: {}, {what}", a.run + 1, spec.label)).yellow(),
        Span::raw(format!(" · {done} of {n} done{failed}{queued}")),
    ])
}

/// Seconds as an axis label: "20 ms", "1 s".
fn seconds_label(s: f64) -> String {
    if s >= 1.0 {
        format!("{} s", trim(s))
    } else {
        format!("{} ms", trim(s * 1e3))
    }
}

fn trim(v: f64) -> String {
    let t = format!("{v:.2}");
    t.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The x range (log10 seconds) that holds `times` (ms) with a margin, at least ×3 wide.
pub fn x_bounds(times_ms: &[f64]) -> [f64; 2] {
    let logs: Vec<f64> = times_ms
        .iter()
        .filter(|t| t.is_finite() && **t > 0.0)
        .map(|t| (t / 1e3).log10())
        .collect();
    if logs.is_empty() {
        return [-2.0, 0.0];
    }
    let lo = logs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mid = (lo + hi) / 2.0;
    let half = ((hi - lo) / 2.0).max(3f64.log10() / 2.0) * 1.08;
    [mid - half, mid + half]
}

/// Round times (1, 2, 5 × 10ⁿ seconds, or whole decades when those crowd) inside `bounds` (log10
/// seconds), as (log10 seconds, label).
pub fn x_ticks(bounds: [f64; 2], columns: u16) -> Vec<(f64, String)> {
    let (lo, hi) = (bounds[0], bounds[1]);
    let ticks = |mantissas: &[f64]| -> Vec<(f64, String)> {
        let mut out = Vec::new();
        for d in (lo.floor() as i32)..=(hi.ceil() as i32) {
            for &m in mantissas {
                let s = m * 10f64.powi(d);
                let x = s.log10();
                if x >= lo && x <= hi {
                    out.push((x, seconds_label(s)));
                }
            }
        }
        out
    };
    let fits = |t: &[(f64, String)]| {
        let width: usize = t.iter().map(|(_, s)| s.chars().count() + 2).sum();
        width <= columns as usize
    };
    let fine = ticks(&[1.0, 2.0, 5.0]);
    if fits(&fine) {
        return fine;
    }
    let decades = ticks(&[1.0]);
    if decades.len() >= 2 || fine.is_empty() {
        decades
    } else {
        fine
    }
}

/// The y range fitted to the points' mean SSIM, snapped to a round step, and its labels.
pub fn y_axis(land: &Landscape, max_intervals: usize) -> ([f64; 2], Vec<String>) {
    let means: Vec<f64> = land
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.ssim.mean))
        .collect();
    y_axis_of(&means, max_intervals)
}

/// The y range fitted to `values` (SSIM), snapped to a round step, and its labels.
pub fn y_axis_of(values: &[f64], max_intervals: usize) -> ([f64; 2], Vec<String>) {
    let means: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let (mut lo, mut hi) = if means.is_empty() {
        (0.0, 1.0)
    } else {
        (
            means.iter().copied().fold(f64::INFINITY, f64::min),
            means.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        )
    };
    if hi - lo < 0.01 {
        let mid = (lo + hi) / 2.0;
        lo = mid - 0.005;
        hi = mid + 0.005;
    }
    let max_intervals = max_intervals.max(1) as f64;
    let steps = [
        0.002, 0.005, 0.01, 0.02, 0.025, 0.05, 0.1, 0.2, 0.25, 0.5, 1.0,
    ];
    let mut bounds = [lo, hi];
    let mut step = 1.0;
    for s in steps {
        let a = (lo / s - 1e-9).floor() * s;
        let b = (hi / s + 1e-9).ceil() * s;
        if ((b - a) / s).round() <= max_intervals {
            bounds = [a, b];
            step = s;
            break;
        }
    }
    let decimals = if step >= 0.1 {
        1
    } else if step >= 0.01 {
        2
    } else {
        3
    };
    let n = ((bounds[1] - bounds[0]) / step).round() as usize;
    let labels = (0..=n)
        .map(|k| format!("{:.*}", decimals, bounds[0] + k as f64 * step))
        .collect();
    (bounds, labels)
}

fn draw_chart(land: &Landscape, l: &LandscapeState, frame: &mut Frame, area: Rect) {
    let title = format!(
        " SSIM to the reference against time per image (log) · {KNEE} knee (within {}) ",
        l.plan.sweep.tolerance
    );
    let block = Block::new().borders(Borders::TOP).title(title);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if inner.height < 3 {
        return;
    }
    let [legend, plot] =
        Layout::vertical([Constraint::Length(1), Constraint::Fill(1)]).areas(inner);
    frame.render_widget(chart_legend(land), legend);
    if land.is_empty() {
        let n = l.plan.runs.len();
        let text = format!(
            "no points yet: each appears when a run of it finishes ({n} runs; each seed's \
             reference comes first). enter runs the sweep."
        );
        frame.render_widget(
            Paragraph::new(text).style(DIM).wrap(Wrap { trim: true }),
            plot,
        );
        return;
    }
    let times: Vec<f64> = land
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.time_ms))
        .chain(land.reference.iter().map(|r| r.time_ms))
        .collect();
    let xb = x_bounds(&times);
    let graph_h = plot.height.saturating_sub(2);
    let (yb, y_labels) = y_axis(land, usize::from(graph_h.saturating_sub(1) / 2).min(4));
    let points = ChartPoints::of(land, yb);
    let y_width = y_labels
        .iter()
        .map(|s| s.chars().count() as u16)
        .max()
        .unwrap_or(0);
    let chart = Chart::new(points.datasets())
        .legend_position(None)
        // Blank labels keep the label row; the round times are placed below, where they belong
        // on the log scale (a Chart spreads its labels evenly).
        .x_axis(Axis::default().bounds(xb).labels(["", ""]).style(DIM))
        .y_axis(
            Axis::default()
                .bounds(yb)
                .labels(y_labels.into_iter().map(Span::raw).collect::<Vec<_>>())
                .style(DIM),
        );
    frame.render_widget(chart, plot);
    draw_time_labels(frame, plot, xb, y_width);
}

/// The chart's legend: every method in its colour, the knee mark, the reference's time.
fn chart_legend(land: &Landscape) -> Line<'static> {
    let mut spans = Vec::new();
    for (i, s) in land.series.iter().enumerate() {
        spans.push(Span::styled("━ ", Style::new().fg(colour(i))));
        spans.push(Span::raw(format!("{}  ", s.method.label)));
    }
    spans.push(Span::raw(format!("{KNEE} knee  ")).bold());
    if let Some(r) = land.reference {
        spans.push(Span::styled(
            format!("┊ {} {}", land.sweep.reference.label(), fmt_ms(r.time_ms)),
            DIM,
        ));
    }
    Line::from(spans)
}

/// The chart's data, in log10 seconds against mean SSIM.
struct ChartPoints {
    /// Each method's points by time.
    lines: Vec<Vec<(f64, f64)>>,
    /// Each method's knee (none, or one point).
    knees: Vec<Vec<(f64, f64)>>,
    /// The reference's time: every other of 25 dots up the y range `yb`.
    reference: Vec<(f64, f64)>,
}

impl ChartPoints {
    fn of(land: &Landscape, yb: [f64; 2]) -> ChartPoints {
        let log_s = |ms: f64| (ms / 1e3).max(1e-9).log10();
        let lines = land
            .series
            .iter()
            .map(|s| {
                s.by_time()
                    .iter()
                    .map(|p| (log_s(p.time_ms), p.ssim.mean))
                    .collect()
            })
            .collect();
        let knees = land
            .series
            .iter()
            .map(|s| {
                s.knee
                    .and_then(|k| s.point(k))
                    .map(|p| vec![(log_s(p.time_ms), p.ssim.mean)])
                    .unwrap_or_default()
            })
            .collect();
        let reference = land
            .reference
            .map(|r| {
                let x = log_s(r.time_ms);
                let n = 24;
                (0..=n)
                    .filter(|k| k % 2 == 0)
                    .map(|k| (x, yb[0] + (yb[1] - yb[0]) * k as f64 / n as f64))
                    .collect()
            })
            .unwrap_or_default();
        ChartPoints {
            lines,
            knees,
            reference,
        }
    }

    /// The reference's dotted line under the methods' lines, the knees' blocks on top.
    fn datasets(&self) -> Vec<Dataset<'_>> {
        let mut datasets = vec![
            Dataset::default()
                .marker(Marker::Braille)
                .graph_type(GraphType::Scatter)
                .style(DIM)
                .data(&self.reference),
        ];
        for (i, pts) in self.lines.iter().enumerate() {
            datasets.push(
                Dataset::default()
                    .marker(Marker::Braille)
                    .graph_type(GraphType::Line)
                    .style(Style::new().fg(colour(i)))
                    .data(pts),
            );
        }
        for (i, pts) in self.knees.iter().enumerate() {
            datasets.push(
                Dataset::default()
                    .marker(Marker::Block)
                    .graph_type(GraphType::Scatter)
                    .style(Style::new().fg(colour(i)))
                    .data(pts),
            );
        }
        datasets
    }
}

/// Round times under the chart drawn in `plot` (x bounds `xb` in log10 seconds, y labels
/// `y_width` wide), each with a tick on the axis; a label that would overlap the one before is
/// left out.
fn draw_time_labels(frame: &mut Frame, plot: Rect, xb: [f64; 2], y_width: u16) {
    // Where the Chart put its graph (its layout: y labels, the axis column, then the graph;
    // the axis row and the label row at the bottom).
    if plot.height < 3 {
        return;
    }
    let graph_x = plot.x + y_width.min(plot.width / 3) + 1;
    let graph_w = plot.right().saturating_sub(graph_x);
    if graph_w < 2 {
        return;
    }
    let axis_y = plot.bottom() - 2;
    let label_y = plot.bottom() - 1;
    let buf = frame.buffer_mut();
    let mut free_from = plot.x;
    for (x, label) in x_ticks(xb, graph_w) {
        // As the canvas maps x to braille dots, two a cell.
        let dots = ((x - xb[0]) / (xb[1] - xb[0]) * f64::from(graph_w * 2 - 1)) as u16;
        let col = graph_x + dots / 2;
        if col >= plot.right() {
            continue;
        }
        let w = label.chars().count() as u16;
        let start = col
            .saturating_sub(w / 2)
            .min(plot.right().saturating_sub(w));
        if start < free_from {
            continue;
        }
        buf[(col, axis_y)].set_symbol("┴");
        buf.set_string(start, label_y, &label, DIM);
        free_from = start + w + 1;
    }
}

fn draw_table(
    app: &App,
    l: &LandscapeState,
    land: &Landscape,
    rows: &[TableRow],
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
    let active_target = landscape::active_run(app, li).map(|a| l.plan.runs[a.run].target);
    let active_row = active_target.and_then(|t| landscape::row_of(rows, t));
    let columns = Columns::of(land, area.width);
    let body = rows
        .iter()
        .enumerate()
        .skip(offset)
        .take(visible)
        .map(|(k, r)| {
            let active = Some(k) == active_row;
            let row = point_row(land, columns, r, active);
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
    let (header, widths): (Vec<_>, Vec<_>) = columns.heads(land).into_iter().unzip();
    let table = Table::new(body, widths)
        .header(Row::new(header).style(Style::new().bold().underlined()))
        .column_spacing(1)
        .block(Block::new().borders(Borders::TOP).title(format!(
            " Points · median time, SSIM over the seeds vs their reference{shown} "
        )));
    frame.render_widget(table, area);
}

/// The table's optional columns: PSNR unless CLIP scores crowd it out of a narrow screen, CLIP
/// when the sweep scores it.
#[derive(Debug, Clone, Copy)]
struct Columns {
    psnr: bool,
    clip: bool,
}

impl Columns {
    fn of(land: &Landscape, width: u16) -> Columns {
        let clip = land.clip_score;
        Columns {
            psnr: !clip || width >= 100,
            clip,
        }
    }

    /// Each column's header and width, in order.
    fn heads(self, land: &Landscape) -> Vec<(&'static str, Constraint)> {
        // The glyph, a space and the longest label.
        let label_w = land
            .series
            .iter()
            .map(|s| s.method.label.chars().count())
            .chain([REFERENCE.len(), 6])
            .max()
            .unwrap_or(6) as u16
            + 2;
        let mut heads = vec![
            ("method", Constraint::Length(label_w)),
            ("steps", Constraint::Length(5)),
            ("seeds", Constraint::Length(5)),
            ("time", Constraint::Length(7)),
            ("vs ref", Constraint::Length(7)),
            ("SSIM ± sd", Constraint::Length(13)),
        ];
        if self.psnr {
            heads.push(("PSNR dB", Constraint::Length(7)));
        }
        if self.clip {
            heads.push(("CLIP", Constraint::Length(6)));
        }
        heads.push(("knee", Constraint::Length(6)));
        heads
    }
}

/// One point's (or the reference's) row. Its glyph: `▶` when `active` (the run under way is
/// one of its runs), else `✓` when all its seeds are in, else `…`.
fn point_row(land: &Landscape, columns: Columns, r: &TableRow, active: bool) -> Row<'static> {
    let p = &r.point;
    let glyph = if active {
        "▶"
    } else if p.complete() {
        "✓"
    } else {
        "…"
    };
    let (label, style) = match r.kind {
        RowKind::Reference => (REFERENCE.to_string(), DIM),
        RowKind::Point { series } => (
            land.series[series].method.label.clone(),
            Style::new().fg(colour(series)),
        ),
    };
    let ssim = match r.kind {
        RowKind::Reference => "1 (itself)".to_string(),
        RowKind::Point { .. } => format!("{:.3} ± {:.3}", p.ssim.mean, p.ssim.std),
    };
    let mut cells = vec![
        Cell::from(Line::from(vec![
            Span::raw(format!("{glyph} ")),
            Span::styled(label, style),
        ])),
        Cell::from(p.steps.to_string()),
        Cell::from(format!("{}/{}", p.runs, p.planned)),
        Cell::from(fmt_ms(p.time_ms)),
        Cell::from(
            land.speedup(p)
                .map_or_else(|| "–".into(), |s| format!("{s:.2}×")),
        ),
        Cell::from(ssim),
    ];
    if columns.psnr {
        cells.push(Cell::from(match (r.kind, p.psnr_db) {
            (RowKind::Reference, _) => "–".to_string(),
            (_, Some(s)) => format!("{:.1}", s.mean),
            (_, None) => "same".to_string(),
        }));
    }
    if columns.clip {
        cells.push(Cell::from(
            p.clip_score
                .map_or_else(|| "–".into(), |s| format!("{:.2}", s.mean)),
        ));
    }
    cells.push(if r.knee {
        Cell::from(format!("◀ {KNEE}")).bold()
    } else {
        Cell::from("")
    });
    Row::new(cells)
}
