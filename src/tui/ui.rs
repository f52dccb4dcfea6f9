//! Drawing: a pure function of the app state (plus the panels' encoded images). No I/O, no
//! clocks; every number comes from `App`.

use crate::models::ModelKind;
use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, LineGauge, Paragraph, Row, Table, Wrap};
use ratatui_image::picker::ProtocolType;

use super::app::{
    App, ExerciseState, FORM_LABELS, Form, KEYS, Mode, PredictInput, TOKEN_LIMIT, table_rows,
};
use super::cheat_ui;
use super::images::{Images, PREVIEW_BUDGET};
use super::landscape_ui;
use crate::report::table::{
    RowState, TableRow, adapter_name, distinct_adapters, short_sha, unet_label,
};
use crate::rng::RngSource;

/// The smallest terminal the layout is made for.
pub const MIN_WIDTH: u16 = 80;
pub const MIN_HEIGHT: u16 = 24;

pub(super) const DIM: Style = Style::new().fg(Color::DarkGray);

pub fn draw(app: &App, images: &mut Images, frame: &mut Frame) {
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        too_small(frame, area);
        return;
    }
    if app.in_landscape() {
        landscape_ui::draw(app, images, frame, area);
    } else {
        draw_exercise(app, images, frame, area);
    }
    let ex = app.current();
    match &app.mode {
        Mode::Normal => {}
        Mode::Help => draw_help(app, images, frame, area),
        Mode::Edit(form) => draw_form(app, form, frame, area),
        Mode::Predict(input) => draw_predict(ex, input, frame, area),
        Mode::Answer(form) => cheat_ui::draw_form(form, app.one_step.is_some(), frame, area),
        Mode::Reference(key) => cheat_ui::draw_reference(app, *key, frame, area),
    }
}

/// An exercise (the cheat sheet included): the list, its text, the run panels, the progress and
/// the timing table.
fn draw_exercise(app: &App, images: &mut Images, frame: &mut Frame, area: Rect) {
    let ex = app.current();
    let cheat = ex.scenario.is_some();
    let top_h = if area.height >= 40 { 11 } else { 7 };
    let [header, top, mut panels, progress, table, verdict, hints] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(top_h),
        Constraint::Fill(1),
        Constraint::Length(2),
        Constraint::Length(ex.runs.len() as u16 + 2),
        Constraint::Length(u16::from(cheat)),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_header(app, images, frame, header);
    let [list, about] =
        Layout::horizontal([Constraint::Length(36), Constraint::Fill(1)]).areas(top);
    draw_list(app, frame, list);
    if cheat {
        cheat_ui::draw_scenario(app, frame, about);
        // Your answer beside the two runs' panels.
        let [answer, rest] = Layout::horizontal([
            Constraint::Length((panels.width / 2).min(72)),
            Constraint::Fill(1),
        ])
        .areas(panels);
        cheat_ui::draw_answer(app, frame, answer);
        cheat_ui::draw_verdict(app, frame, verdict);
        panels = rest;
    } else {
        draw_about(ex, frame, about);
    }
    if let Some(error) = &app.fatal {
        let p = Paragraph::new(format!("The worker could not start:\n\n{error}"))
            .wrap(Wrap { trim: false })
            .red()
            .block(Block::bordered().title(" worker failed "));
        frame.render_widget(p, panels);
    } else if let Some(why) = &ex.blocked {
        let p = Paragraph::new(why.as_str())
            .wrap(Wrap { trim: false })
            .yellow()
            .block(Block::bordered().title(" cannot run on this model "));
        frame.render_widget(p, panels);
    } else {
        draw_panels(app, images, frame, panels);
    }
    draw_progress(app, frame, progress);
    draw_table(ex, app.rng, frame, table);
    draw_hints(app, frame, hints);
}

/// What a terminal smaller than the layout shows instead of it (the runs go on; the layout
/// comes back when the window is enlarged). Short lines, so it reads even at 40×10.
fn too_small(frame: &mut Frame, area: Rect) {
    let text = vec![
        Line::from(format!(
            "terminal too small: {}×{}",
            area.width, area.height
        ))
        .bold(),
        Line::from(format!(
            "speedscape needs at least {MIN_WIDTH}×{MIN_HEIGHT}"
        )),
        Line::from("enlarge the window (or make the font smaller); q quits"),
    ];
    let p = Paragraph::new(text)
        .wrap(Wrap { trim: true })
        .alignment(Alignment::Center);
    let [_, mid, _] = Layout::vertical([
        Constraint::Fill(1),
        Constraint::Length(4),
        Constraint::Fill(1),
    ])
    .areas(area);
    frame.render_widget(p, mid);
}

fn protocol_name(p: ProtocolType) -> &'static str {
    match p {
        ProtocolType::Halfblocks => "halfblocks",
        ProtocolType::Sixel => "sixel",
        ProtocolType::Kitty => "kitty",
        ProtocolType::Iterm2 => "iterm2",
    }
}

pub(super) fn draw_header(app: &App, images: &Images, frame: &mut Frame, area: Rect) {
    let mut spans = vec![Span::styled(" speedscape ", Style::new().bold().reversed())];
    let sep = || Span::styled(" │ ", DIM);
    match (&app.info, &app.fatal) {
        (_, Some(_)) => spans.push(Span::raw(" worker failed").red().bold()),
        (None, None) => spans.push(Span::styled(" starting the worker…", DIM)),
        (Some(info), None) => {
            let name = format!(" {}", info.provider.short());
            let provider = if info.provider.is_gpu() {
                Span::raw(name).green().bold()
            } else {
                Span::raw(name).yellow().bold()
            };
            spans.push(provider);
            spans.push(sep());
            let name = info
                .model_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| info.model_dir.display().to_string());
            spans.push(Span::raw(format!("model {name}")));
            match info.kind {
                ModelKind::Tiny => {
                    spans.push(Span::raw(" (random weights: images are noise)").yellow())
                }
                ModelKind::Micro => spans.push(Span::raw(" (micro: a world of coloured shapes)")),
                ModelKind::Sd15 => {}
            }
            spans.push(sep());
            spans.push(Span::raw(format!(
                "{} · {}px",
                info.device, info.image_size
            )));
            spans.push(sep());
            spans.push(Span::raw(format!("preview: {}", info.preview)));
        }
    }
    spans.push(sep());
    spans.push(Span::styled(
        format!("graphics {}", protocol_name(images.protocol())),
        DIM,
    ));
    frame.render_widget(Line::from(spans), area);
}

pub(super) fn draw_list(app: &App, frame: &mut Frame, area: Rect) {
    let selected = app.selected_entry();
    let lines: Vec<Line> = app
        .entries()
        .into_iter()
        .enumerate()
        .map(|(k, i)| {
            let e = &app.exercises[i];
            let text = if e.scenario.is_some() {
                format!("{} Decision cheat sheet", e.exercise.number)
            } else if e.landscape.is_some() {
                format!("L {}", e.exercise.title)
            } else {
                format!("{} {}", e.exercise.number, e.exercise.title)
            };
            if k == selected {
                Line::from(vec![Span::raw("▶ ").cyan(), Span::raw(text).bold().cyan()])
            } else {
                Line::from(format!("  {text}"))
            }
        })
        .collect();
    let p = Paragraph::new(lines).block(Block::bordered().title(" Exercises "));
    frame.render_widget(p, area);
}

fn draw_about(ex: &ExerciseState, frame: &mut Frame, area: Rect) {
    let e = &ex.exercise;
    // The prompt on the bottom border: it costs no line of the text above.
    let block = Block::bordered()
        .title(format!(" {} · {} ", e.number, e.title))
        .title_bottom(Line::from(vec![
            Span::raw(" prompt "),
            Span::raw(format!("“{}” ", e.prompt)).cyan(),
        ]));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let nq = e.questions.len() as u16;
    let q_h = if nq == 0 { 0 } else { nq + 1 };
    let [about, questions] = Layout::vertical([
        Constraint::Fill(1),
        Constraint::Length(q_h.min(inner.height)),
    ])
    .areas(inner);
    frame.render_widget(
        Paragraph::new(e.about.as_str()).wrap(Wrap { trim: true }),
        about,
    );
    if nq == 0 {
        return;
    }
    let rows = table_rows(ex);
    let adherence = ex.adherence();
    let mut lines = vec![Line::styled(
        "Predict before you run (p to type a number):",
        Style::new().italic(),
    )];
    for (i, q) in e.questions.iter().enumerate() {
        let mut spans = vec![Span::raw(format!("Q{} ", i + 1)).bold()];
        let you = ex.predictions[i];
        let got = q.measure.value(&rows, &adherence);
        if you.is_some() || got.is_some() {
            let fmt = |v: Option<f64>| {
                v.map_or("?".to_string(), |v| {
                    if q.measure.is_ratio() {
                        format!("{v:.2}×")
                    } else {
                        q.measure.format(v)
                    }
                })
            };
            spans.push(Span::raw("[you ").cyan());
            spans.push(Span::raw(fmt(you)).cyan().bold());
            spans.push(Span::raw(" · measured ").green());
            spans.push(Span::raw(fmt(got)).green().bold());
            spans.push(Span::raw("] "));
        }
        spans.push(Span::raw(q.text.as_str()));
        lines.push(Line::from(spans));
    }
    frame.render_widget(Paragraph::new(lines), questions);
}

pub fn fmt_ms(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.2}s", ms / 1000.0)
    } else if ms >= 10.0 {
        format!("{ms:.0}ms")
    } else {
        format!("{ms:.1}ms")
    }
}

fn draw_panels(app: &App, images: &mut Images, frame: &mut Frame, area: Rect) {
    let ex = app.current();
    let control = ex.control_image().is_some();
    let n = (ex.runs.len() + usize::from(control)).max(1) as u32;
    let mut areas = Layout::horizontal((0..n).map(|_| Constraint::Ratio(1, n)))
        .split(area)
        .to_vec();
    if control {
        draw_control_panel(app, images, frame, areas.remove(0));
    }
    let rows = table_rows(ex);
    for (i, (spec, run)) in ex.exercise.runs.iter().zip(&ex.runs).enumerate() {
        let selected = i == app.selected_run;
        let active = app
            .active
            .is_some_and(|a| a.exercise == app.selected && a.run == i);
        let border = if active {
            Style::new().yellow()
        } else if selected {
            Style::new().cyan().bold()
        } else {
            Style::new()
        };
        let status = match run.row.state {
            RowState::Finished => rows[i].total_ms.map(fmt_ms).unwrap_or_default(),
            RowState::Running => format!("{}/{}", run.row.steps_done, run.total_steps),
            RowState::Loading => "loading".into(),
            RowState::Cancelled => "cancelled".into(),
            RowState::Failed => "failed".into(),
            RowState::Pending if active || app.queue.contains(&(app.selected, i)) => {
                "queued".into()
            }
            RowState::Pending => "–".into(),
        };
        let loras = if spec.lora.is_empty() {
            String::new()
        } else {
            format!(" ·{}", unet_label("", &spec.lora).trim_start_matches(" +"))
        };
        let block = Block::bordered()
            .border_style(border)
            .title(format!(" {} · cfg {}{loras} ", spec.label, spec.cfg))
            .title_bottom(Line::from(format!(" {status} ")).right_aligned());
        let inner = block.inner(areas[i]);
        frame.render_widget(block, areas[i]);
        if run.image.is_some() {
            images.render((app.selected, i), inner, frame.buffer_mut());
        } else {
            let text = match (&run.error, run.row.state) {
                (Some(e), _) => Paragraph::new(e.as_str()).red(),
                (None, RowState::Pending) if app.active.is_none() => {
                    Paragraph::new("enter runs the exercise").style(DIM)
                }
                _ => Paragraph::new("").style(DIM),
            };
            frame.render_widget(text.wrap(Wrap { trim: true }), inner);
        }
    }
}

/// The first panel of an exercise under a ControlNet: its control image as given, titled with
/// how it conditions the runs ("control · canny · ×1").
fn draw_control_panel(app: &App, images: &mut Images, frame: &mut Frame, area: Rect) {
    let ex = app.current();
    let Some(c) = ex.exercise.runs.iter().find_map(|r| r.control.as_ref()) else {
        return;
    };
    let preprocess = match c.preprocess {
        crate::pipeline::control::ControlPreprocess::Canny => "canny",
        crate::pipeline::control::ControlPreprocess::None => "as given",
    };
    let name = c.controlnet.as_deref().unwrap_or("ControlNet");
    let file = c.image.file_name().map_or_else(
        || c.image.display().to_string(),
        |f| f.to_string_lossy().into_owned(),
    );
    let block = Block::bordered()
        .border_style(DIM)
        .title(format!(" control · {preprocess} · ×{} ", c.scale))
        .title_bottom(Line::from(format!(" {name} · {file} ")).right_aligned());
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let view = &ex.control_view;
    if view.image.is_some() {
        images.render(
            (app.selected, super::images::CONTROL_PANEL),
            inner,
            frame.buffer_mut(),
        );
    } else {
        let text = match &view.error {
            Some(e) => Paragraph::new(e.as_str()).red(),
            None => Paragraph::new("reading the control image…").style(DIM),
        };
        frame.render_widget(text.wrap(Wrap { trim: true }), inner);
    }
}

fn draw_progress(app: &App, frame: &mut Frame, area: Rect) {
    let [line1, line2] =
        Layout::vertical([Constraint::Length(1), Constraint::Length(1)]).areas(area);
    if let Some(a) = app.active {
        let spec = &app.exercises[a.exercise].exercise.runs[a.run];
        let run = &app.exercises[a.exercise].runs[a.run];
        let queued = if app.queue.is_empty() {
            String::new()
        } else {
            format!("  (+{} queued)", app.queue.len())
        };
        if let Some(component) = &app.loading {
            let p = Line::from(vec![
                Span::raw(format!("▶ {} ", spec.label)).yellow(),
                Span::raw(format!(
                    "loading {component}… (not counted in the run){queued}"
                )),
            ]);
            frame.render_widget(p, line1);
        } else if run.total_steps > 0 {
            let its = run.row.its.map_or("–".into(), |v| format!("{v:.1}"));
            let eta = run
                .eta()
                .map_or("–".into(), |d| fmt_ms(d.as_secs_f64() * 1e3));
            let label = format!(
                "▶ {}  step {}/{}  {} it/s  ETA {}{queued} ",
                spec.label, run.row.steps_done, run.total_steps, its, eta
            );
            let ratio = (run.row.steps_done as f64 / run.total_steps as f64).clamp(0.0, 1.0);
            let gauge = LineGauge::default()
                .ratio(ratio)
                .label(label)
                .filled_style(Style::new().yellow())
                .unfilled_style(DIM);
            frame.render_widget(gauge, line1);
        } else {
            let p = Line::from(format!("▶ {} starting…{queued}", spec.label)).yellow();
            frame.render_widget(p, line1);
        }
    }
    let second = if let Some(s) = &app.status {
        Line::from(s.as_str())
    } else if let Some(l) = app.loaded.last() {
        Line::styled(
            format!(
                "loaded {} in {} (+{} warm-up), apart from the run's time",
                l.component,
                fmt_ms(l.load.as_secs_f64() * 1e3),
                fmt_ms(l.warm_up.as_secs_f64() * 1e3)
            ),
            DIM,
        )
    } else {
        Line::default()
    };
    frame.render_widget(second, line2);
}

/// A run's ControlNet cells: its time per step and its edge F1 (`–` where there is none).
fn control_cells(row: &TableRow, (per_step, f1): (Option<f64>, Option<f64>)) -> [Cell<'static>; 2] {
    let ms = match per_step {
        Some(v) if row.partial => format!("~{}", fmt_ms(v)),
        Some(v) => fmt_ms(v),
        None => "–".into(),
    };
    [
        Cell::from(ms),
        Cell::from(f1.map_or("–".into(), |f| format!("{f:.2}"))),
    ]
}

fn row_cells(row: &TableRow, wide: bool) -> Vec<Cell<'static>> {
    let mark = |v: Option<f64>, f: &dyn Fn(f64) -> String| match v {
        Some(v) if row.partial => format!("~{}", f(v)),
        Some(v) => f(v),
        None => "–".into(),
    };
    let glyph = match row.state {
        RowState::Pending => "·",
        RowState::Loading => "…",
        RowState::Running => "▶",
        RowState::Finished => "✓",
        RowState::Cancelled => "⊘",
        RowState::Failed => "✗",
    };
    // A run under way (loading included) shows its steps so far.
    let steps = if row.partial || row.state == RowState::Loading {
        format!("{}/{}", row.steps_done, row.steps)
    } else {
        row.steps.to_string()
    };
    let unet = match (row.unet_ms, row.unet_ms_per_step) {
        (Some(u), Some(p)) => {
            let s = format!("{} ({})", fmt_ms(u), fmt_ms(p));
            if row.partial { format!("~{s}") } else { s }
        }
        _ => "–".into(),
    };
    let speedup = match (row.speedup, row.is_baseline) {
        (Some(s), _) => format!("{s:.2}×"),
        (None, true) => "base".into(),
        (None, false) => "–".into(),
    };
    let mut cells = vec![Cell::from(format!("{glyph} {}", row.label))];
    if wide {
        cells.push(Cell::from(row.scheduler.clone()));
    }
    cells.extend([Cell::from(steps), Cell::from(format!("{}", row.cfg))]);
    if wide {
        cells.push(Cell::from(row.unet_label()));
    }
    cells.push(Cell::from(mark(row.total_ms, &fmt_ms)));
    if wide {
        cells.push(Cell::from(mark(row.text_ms, &fmt_ms)));
    }
    cells.extend([
        Cell::from(unet),
        Cell::from(mark(row.vae_ms, &fmt_ms)),
        Cell::from(mark(row.its, &|v| format!("{v:.1}"))),
        Cell::from(speedup),
    ]);
    // Quality against the baseline's image: SSIM always, PSNR when there is room.
    let (ssim, psnr) = match (row.is_baseline, row.quality) {
        (true, _) => ("base".to_string(), "base".to_string()),
        (false, Some(q)) => (
            format!("{:.3}", q.ssim),
            q.psnr_db
                .map_or_else(|| "same".to_string(), |p| format!("{p:.1}")),
        ),
        (false, None) => ("–".to_string(), "–".to_string()),
    };
    cells.push(Cell::from(ssim));
    if wide {
        cells.push(Cell::from(psnr));
    }
    cells
}

fn draw_table(ex: &ExerciseState, rng: RngSource, frame: &mut Frame, area: Rect) {
    // Runs under a ControlNet add two columns (its time per step, the edge F1): the wide
    // layout then needs 16 more columns, and the narrow one leaves out VAE and it/s.
    let control = ex.exercise.has_control();
    let wide = area.width >= if control { 136 } else { 120 };
    let dropped: &[usize] = if control && !wide { &[5, 6] } else { &[] };
    let rows = table_rows(ex);
    let mut header = vec!["run"];
    let mut widths = vec![Constraint::Fill(1)];
    if wide {
        header.push("sched");
        widths.push(Constraint::Length(12));
    }
    header.extend(["steps", "cfg"]);
    widths.extend([Constraint::Length(5), Constraint::Length(3)]);
    // Narrow: the label already names the scheduler and the UNet variant.
    if wide {
        // Room for a run-time LoRA (`lcm + style×0.9`) when a run has one.
        let unet = rows.iter().map(|r| r.unet_label().chars().count()).max();
        header.push("UNet");
        widths.push(Constraint::Length(unet.unwrap_or(0).clamp(9, 24) as u16));
    }
    // Narrow: the text encoder's time (the same for every run) gives way to the label.
    header.push("total");
    widths.push(Constraint::Length(7));
    if wide {
        header.push("text");
        widths.push(Constraint::Length(6));
    }
    header.extend(["UNet (/step)", "VAE", "it/s", "speedup"]);
    widths.extend([
        Constraint::Length(if wide { 16 } else { 15 }),
        Constraint::Length(6),
        Constraint::Length(5),
        Constraint::Length(7),
    ]);
    header.push("SSIM");
    widths.push(Constraint::Length(5));
    if wide {
        header.push("PSNR dB");
        widths.push(Constraint::Length(7));
    }
    // Runs under a ControlNet: its time per step and the control adherence (edge F1).
    if control {
        header.extend(["CN/step", "edge F1"]);
        widths.extend([Constraint::Length(7), Constraint::Length(7)]);
    }
    let keep = |k: &usize| !dropped.contains(k);
    let header: Vec<&str> = header
        .into_iter()
        .enumerate()
        .filter(|(k, _)| keep(k))
        .map(|(_, h)| h)
        .collect();
    let widths: Vec<Constraint> = widths
        .into_iter()
        .enumerate()
        .filter(|(k, _)| keep(k))
        .map(|(_, w)| w)
        .collect();
    let body = rows.iter().zip(&ex.runs).map(|(r, run)| {
        let style = match r.state {
            RowState::Finished => Style::new(),
            RowState::Running | RowState::Loading => Style::new().yellow(),
            RowState::Failed => Style::new().red(),
            RowState::Cancelled | RowState::Pending => DIM,
        };
        let mut cells = row_cells(r, wide);
        if control {
            cells.extend(control_cells(r, run.control_numbers()));
        }
        let cells: Vec<Cell> = cells
            .into_iter()
            .enumerate()
            .filter(|(k, _)| keep(k))
            .map(|(_, c)| c)
            .collect();
        Row::new(cells).style(style)
    });
    let saved = ex
        .saved
        .as_ref()
        .map(|d| format!(" · saved in {}", d.display()))
        .unwrap_or_default();
    // The LoRA files the runs fused at run time, by their digests' first digits.
    let adapters: String = distinct_adapters(rows.iter().flat_map(|r| &r.adapters))
        .iter()
        .map(|a| format!(" · {}×{} {}", a.name, a.weight, short_sha(&a.sha256)))
        .collect();
    let table = Table::new(body, widths)
        .header(Row::new(header).style(Style::new().bold().underlined()))
        .column_spacing(1)
        .block(Block::new().borders(Borders::TOP).title(format!(
            " Timings · seed {} ({rng}) · ~ partial · speedup, SSIM, PSNR vs the baseline{adapters}{saved} ",
            ex.exercise.seed
        )));
    frame.render_widget(table, area);
}

pub(super) fn draw_hints(app: &App, frame: &mut Frame, area: Rect) {
    let text = match app.mode {
        Mode::Normal if app.in_cheat_sheet() => {
            "hl scenario · e answer · a ours · r verify · R rerun · esc stop · s save · ? · q"
        }
        Mode::Normal if app.in_landscape() && app.weight_mode => {
            "r run · R restart · esc stop · hl row · s save · W steps · L back · ? · q"
        }
        Mode::Normal if app.in_landscape() => {
            "r run · R restart · esc stop · hl row · s save · W weights · L back · ? · q"
        }
        Mode::Normal if matches!(app.current().exercise.number, 1 | 2) => {
            "r run · R rerun · esc cancel · e edit · p predict · s save · L landscape · ? · q"
        }
        Mode::Normal if app.current().exercise.has_control() => {
            "r run · R rerun · esc cancel · e edit (ControlNet, image, scale) · p predict · s save · ? · q"
        }
        Mode::Normal if app.current().exercise.number == 3 => {
            "r run · R rerun · esc cancel · [ ] style −/+0.1 · e edit · p predict · s save · ? · q"
        }
        Mode::Normal => {
            "r run · R rerun · esc cancel · jk/hl move · e edit · p predict · s save · ? help · q quit"
        }
        Mode::Help | Mode::Reference(_) => "any key closes this",
        Mode::Answer(_) => {
            "tab/↑↓ row · ←/→ approach · type to write · enter keep (saved) · esc drop"
        }
        Mode::Edit(_) => {
            "tab/↑↓ field · type to edit · ←/→ pick · +/- scale · enter apply · esc close"
        }
        Mode::Predict(_) => "type a number · tab/↑↓ question · enter keep · esc close",
    };
    frame.render_widget(Line::styled(text, DIM), area);
}

pub(super) fn popup(frame: &mut Frame, area: Rect, width: u16, height: u16, title: &str) -> Rect {
    let w = width.min(area.width);
    let h = height.min(area.height);
    let r = Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    );
    frame.render_widget(Clear, r);
    let block = Block::bordered()
        .title(format!(" {title} "))
        .border_style(Style::new().cyan());
    let inner = block.inner(r);
    frame.render_widget(block, r);
    inner
}

fn draw_help(app: &App, images: &Images, frame: &mut Frame, area: Rect) {
    let mut lines: Vec<Line> = KEYS
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::raw(format!("{k:>14}  ")).cyan().bold(),
                Span::raw(*what),
            ])
        })
        .collect();
    let kb = |b: Option<usize>| b.map_or("–".into(), |b| format!("{:.1} KB", b as f64 / 1000.0));
    lines.push(Line::from(format!(
        "graphics {} ({}) · preview {}/frame (≤ {} KB) · full image {}",
        protocol_name(images.protocol()),
        app.graphics,
        kb(images.preview_bytes),
        PREVIEW_BUDGET / 1000,
        kb(images.final_bytes),
    )));
    lines.extend(preview_lines(app).map(|l| Line::styled(l, DIM)));
    lines.push(Line::styled(
        // One line at the smallest size (80 columns), so every key above fits too.
        "SSIM/PSNR: closeness to the baseline run's image (1 = same), not beauty",
        DIM,
    ));
    let inner = popup(frame, area, 90, lines.len() as u16 + 4, "Help");
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), inner);
}

/// The help's lines on previews: which kind, how often, the newest one's cost (never part of
/// a run's time). Each fits the smallest help (80 columns).
fn preview_lines(app: &App) -> [String; 2] {
    let rest = "made beside the steps, never in run times; the VAE image at the end".to_string();
    let Some(info) = &app.info else {
        return ["previews: the x0 guess each step".into(), rest];
    };
    let every = match info.preview_every {
        1 => "each step".to_string(),
        n => format!("every {n} steps"),
    };
    let cost = match app.last_preview {
        Some((kind, took)) => format!(" · last {kind} {:.1} ms", took.as_secs_f64() * 1e3),
        None => String::new(),
    };
    [format!("previews: {}, {every}{cost}", info.preview), rest]
}

fn draw_form(app: &App, form: &Form, frame: &mut Frame, area: Rect) {
    let label = &app.current().exercise.runs[form.run].label;
    let mut lines = Vec::new();
    for (i, (name, value)) in FORM_LABELS.iter().zip(&form.fields).enumerate() {
        let focused = i == form.focus;
        let cursor = if focused { "▏" } else { "" };
        let name_style = if focused {
            Style::new().cyan().bold()
        } else {
            Style::new()
        };
        lines.push(Line::from(vec![
            Span::styled(format!("{name:>7} "), name_style),
            Span::raw(format!("{value}{cursor}")),
        ]));
        if i == 0 {
            let tokens = match form.tokens {
                None => Line::styled("        (no tokenizer: token count unknown)", DIM),
                Some((count, 0)) => Line::styled(
                    format!("        {count}/{TOKEN_LIMIT} tokens"),
                    if count == TOKEN_LIMIT {
                        Style::new().yellow()
                    } else {
                        DIM
                    },
                ),
                Some((count, dropped)) => Line::styled(
                    format!(
                        "        {}/{TOKEN_LIMIT} tokens: the last {dropped} are dropped",
                        count + dropped
                    ),
                    Style::new().red().bold(),
                ),
            };
            lines.push(tokens);
            if let Some(g) = app.info.as_ref().and_then(|i| i.grammar.as_ref()) {
                lines.extend(vocabulary_lines(g, &form.fields[0]));
            }
        }
    }
    lines.extend(adapter_lines(app, form));
    lines.extend(control_lines(form));
    if let Some(e) = &form.error {
        lines.push(Line::default());
        lines.push(Line::from(e.as_str()).red());
    }
    let height = lines.len() as u16 + 4;
    let inner = popup(frame, area, 76, height, &format!("Edit run: {label}"));
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), inner);
}

/// The editor's LoRA rows: what the run's UNet variant has fused in, then each adapter with
/// the weight it is fused at at run time (empty: not applied). Nothing when there is none.
fn adapter_lines(app: &App, form: &Form) -> Vec<Line<'static>> {
    if form.adapters.is_empty() {
        return Vec::new();
    }
    let spec = &app.current().exercise.runs[form.run];
    let fused = app
        .info
        .as_ref()
        .and_then(|i| i.fused.iter().find(|(v, _)| *v == spec.unet))
        .map(|(_, set)| unet_label("", set))
        .filter(|l| !l.is_empty())
        .map(|l| format!(", which has{} fused in", l.replacen(" +", "", 1)))
        .unwrap_or_default();
    let mut lines = vec![
        Line::styled(
            "   LoRA  weights fused at run time (empty: not applied)",
            DIM,
        ),
        Line::styled(format!("         on UNet {}{fused}", spec.unet), DIM),
    ];
    for (i, (name, weight)) in form.adapters.iter().enumerate() {
        let focused = form.focus == 4 + i;
        let cursor = if focused { "▏" } else { "" };
        let name_style = if focused {
            Style::new().cyan().bold()
        } else {
            Style::new()
        };
        lines.push(Line::from(vec![
            Span::styled(format!("{:>7} ", adapter_name(name)), name_style),
            Span::raw(format!("{weight}{cursor}")),
        ]));
    }
    lines
}

/// The editor's control rows: the ControlNet (or none), the control image, its scale and
/// preprocessing; the head line says so where the model folder has no ControlNet.
fn control_lines(form: &Form) -> Vec<Line<'static>> {
    use super::app::{CONTROL_ROWS, ControlRow};
    let c = &form.control;
    let head = if c.choices.is_empty() {
        "   ControlNet  none in this folder (models/export.py --controlnet)"
    } else {
        "   ControlNet  conditions the run on an edge map (none: no control)"
    };
    let mut lines = vec![Line::styled(head, DIM)];
    let off = c.controlnet.is_none();
    for (k, row) in CONTROL_ROWS.iter().enumerate() {
        let focused = form.control_row() == Some(*row);
        let cursor = if focused { "▏" } else { "" };
        let (name, value) = match row {
            ControlRow::ControlNet => (
                "control",
                format!("◀ {} ▶", c.controlnet.as_deref().unwrap_or("none")),
            ),
            ControlRow::Image => ("image", format!("{}{cursor}", c.image)),
            ControlRow::Scale => ("scale", format!("{}{cursor}", c.scale)),
            ControlRow::Preprocess => (
                "edges",
                match c.preprocess {
                    crate::pipeline::control::ControlPreprocess::Canny => "◀ canny ▶".into(),
                    crate::pipeline::control::ControlPreprocess::None => {
                        "◀ none (as given) ▶".into()
                    }
                },
            ),
        };
        let name_style = if focused {
            Style::new().cyan().bold()
        } else {
            Style::new()
        };
        let value_style = if off && k > 0 { DIM } else { Style::new() };
        lines.push(Line::from(vec![
            Span::styled(format!("{name:>7} "), name_style),
            Span::styled(value, value_style),
        ]));
    }
    lines
}

/// What the micro model knows, under the prompt field, and the prompt's words it does not.
fn vocabulary_lines(grammar: &crate::models::Grammar, prompt: &str) -> Vec<Line<'static>> {
    let mut lines = vec![Line::styled(
        "        the micro model knows only its small world:",
        DIM,
    )];
    for l in grammar.describe() {
        lines.push(Line::styled(format!("        {l}"), DIM));
    }
    let unknown = grammar.unknown_words(prompt);
    if !unknown.is_empty() {
        lines.push(Line::styled(
            format!(
                "        not in its world (it reads them as blanks): {}",
                unknown.join(", ")
            ),
            Style::new().yellow(),
        ));
    }
    lines
}

fn draw_predict(ex: &ExerciseState, input: &PredictInput, frame: &mut Frame, area: Rect) {
    let q = &ex.exercise.questions[input.question];
    let inner = popup(
        frame,
        area,
        70,
        7,
        &format!(
            "Predict Q{} of {}",
            input.question + 1,
            ex.exercise.questions.len()
        ),
    );
    let mut lines = vec![
        Line::from(q.text.as_str()),
        Line::default(),
        Line::from(vec![
            Span::raw("your guess: ").cyan(),
            Span::raw(format!("{}▏", input.buffer)).bold(),
            Span::raw(if q.measure.is_ratio() {
                " ×"
            } else {
                " (edge F1)"
            }),
        ]),
    ];
    if let Some(e) = &input.error {
        lines.push(Line::from(e.as_str()).red());
    }
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: true }), inner);
}
