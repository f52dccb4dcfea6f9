//! Drawing the speed landscape: what the sweep is, its progress, a braille chart of SSIM against
//! time (log scale; one line per method in its plot colour, each knee a block, the reference's
//! time a dotted line) and the table of points under it. The weight mode (`W`) is drawn by its
//! `weights` module, with the header, progress line and axes of this one.

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
fn colour(i: usize) -> Color {
    let (r, g, b) = crate::sweep::plot::colour(i);
    Color::Rgb(r, g, b)
}

pub fn draw(app: &App, images: &Images, frame: &mut Frame, area: Rect) {
    let Some(l) = landscape::of(app) else {
        return;
    };
    if l.is_weights() {
        weights::draw(app, l, images, frame, area);
        return;
    }
    let land = landscape::landscape(l);
    let rows = landscape::table(&land);
    let summary = summary_line(app, l);
    let Framed {
        body,
        status,
        hints,
        ..
    } = frame_around(app, l, images, frame, area, summary, draw_about);
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
    draw_footer(app, frame, status, hints);
}

/// The areas a landscape view fills itself, below what [`frame_around`] drew.
struct Framed {
    body: Rect,
    status: Rect,
    hints: Rect,
    /// A tall screen (40 rows or more): the list and the about text are shown.
    tall: bool,
}

/// What both landscape views (steps and weights) draw alike: the header; on a tall screen the
/// exercise list and `about` (the view's explanation), else `summary` and the tiny model's
/// note; the progress line. Gives the body, status and hint areas.
fn frame_around(
    app: &App,
    l: &LandscapeState,
    images: &Images,
    frame: &mut Frame,
    area: Rect,
    summary: Line<'static>,
    about: impl FnOnce(&App, &LandscapeState, bool, &mut Frame, Rect),
) -> Framed {
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
        let [list, about_area] =
            Layout::horizontal([Constraint::Length(36), Constraint::Fill(1)]).areas(top);
        draw_list(app, frame, list);
        about(app, l, tiny, frame, about_area);
    } else {
        frame.render_widget(summary, top);
        frame.render_widget(
            Paragraph::new(note.as_str())
                .yellow()
                .wrap(Wrap { trim: true }),
            note_area,
        );
    }
    frame.render_widget(progress_line(app, l), progress);
    Framed {
        body,
        status,
        hints,
        tall,
    }
}

/// The status line (the app's last message) and the key hints.
fn draw_footer(app: &App, frame: &mut Frame, status: Rect, hints: Rect) {
    let line = app.status.as_deref().map(Line::from).unwrap_or_default();
    frame.render_widget(line, status);
    draw_hints(app, frame, hints);
}

/// The rows a landscape table of `total` rows shows in `area` (a border above and below): the
/// first one and how many, so that the selected row (else the one running) is in view.
fn window(app: &App, l: &LandscapeState, total: usize, area: Rect) -> (usize, usize) {
    let visible = usize::from(area.height - 2);
    let focus = l
        .row
        .or_else(|| landscape::focus_row(app, app.selected))
        .unwrap_or(0)
        .min(total.saturating_sub(1));
    (focus.saturating_sub(visible - 1), visible)
}

/// A table row as shown: reversed when selected, yellow while it runs.
fn mark(row: Row<'static>, selected: bool, active: bool) -> Row<'static> {
    if selected {
        row.reversed()
    } else if active {
        row.yellow()
    } else {
        row
    }
}

/// The table title's note of which rows are in view, when not all are.
fn rows_shown(offset: usize, visible: usize, total: usize) -> String {
    if total > visible {
        format!(
            " · rows {}–{} of {total} (h/l)",
            offset + 1,
            (offset + visible).min(total)
        )
    } else {
        String::new()
    }
}

fn seeds_text(l: &LandscapeState) -> String {
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
fn progress_line(app: &App, l: &LandscapeState) -> Line<'static> {
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
    let (offset, visible) = window(app, l, rows.len(), area);
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
            mark(
                point_row(land, columns, r, active),
                l.row == Some(k),
                active,
            )
        });
    let shown = rows_shown(offset, visible, rows.len());
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

mod weights {
    //! Drawing the landscape's weight mode (`W`): what the curve is, its progress, a braille
    //! chart of SSIM against the style weight (per curve a solid line to the style-alone image
    //! and a dotted one to the plain image in its plot colour, the two references' SSIM to each
    //! other as a grey dotted line, as `weights.png` draws them), the table of weights under it
    //! and the findings the headless sweep prints
    //! ([`crate::sweep::output::weight_findings`]).

    use ratatui::Frame;
    use ratatui::layout::{Constraint, Layout, Rect};
    use ratatui::style::{Style, Stylize};
    use ratatui::symbols::Marker;
    use ratatui::text::{Line, Span};
    use ratatui::widgets::{
        Axis, Block, Borders, Cell, Chart, Dataset, GraphType, Paragraph, Row, Table, Wrap,
    };

    use super::{Framed, colour, draw_footer, frame_around, seeds_text, y_axis_of};
    use crate::sweep::output::{TINY_NOTE, weight_findings};
    use crate::sweep::{Stat, WeightCurves};
    use crate::tui::app::App;
    use crate::tui::images::Images;
    use crate::tui::landscape::{self, LandscapeState, WeightRow};
    use crate::tui::ui::{DIM, fmt_ms};

    /// Rows the findings may take on a short screen (the table scrolls; the findings do not).
    const SHORT_FINDINGS: u16 = 5;

    pub fn draw(app: &App, l: &LandscapeState, images: &Images, frame: &mut Frame, area: Rect) {
        let Some(c) = landscape::curves(l) else {
            return;
        };
        let rows = landscape::weight_table(&c);
        let summary = summary_line(app, l, &c);
        let Framed {
            body,
            status,
            hints,
            tall,
        } = frame_around(app, l, images, frame, area, summary, draw_about);
        let findings = findings_lines(&c);
        let [chart, table, found] = body_areas(body, rows.len(), &findings, tall);
        draw_chart(l, &c, frame, chart);
        draw_table(app, l, &c, &rows, frame, table);
        frame.render_widget(Paragraph::new(findings).wrap(Wrap { trim: true }), found);
        draw_footer(app, frame, status, hints);
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
        let (offset, visible) = super::window(app, l, rows.len(), area);
        let active_row = landscape::active_run(app, li)
            .and_then(|a| landscape::weight_row_of(rows, c, &l.plan, l.plan.runs[a.run].target));
        let body = rows
            .iter()
            .enumerate()
            .skip(offset)
            .take(visible)
            .map(|(k, r)| {
                let active = Some(k) == active_row;
                super::mark(weight_row(c, r, active), l.row == Some(k), active)
            });
        let shown = super::rows_shown(offset, visible, rows.len());
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
}
