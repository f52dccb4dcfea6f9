//! Drawing the cheat sheet (exercise 4): the scenario tabs and brief, the user's answer beside the
//! two runs' panels, the verdict line, the answer form and our reference answer.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};

use super::app::App;
use super::cheat::{self, AnswerForm, METHODS};
use super::ui::{DIM, popup};
use crate::exercises::cheatsheet::{self, DIMENSIONS, Scenario};
use crate::report::table::RowState;

/// `[A ✓] [B] [C ✗]  C. A/B tester` and the brief; the prompt and constraint when there is room.
pub fn draw_scenario(app: &App, frame: &mut Frame, area: Rect) {
    let Some(s) = cheat::scenario_of(app, app.selected) else {
        return;
    };
    let number = app.current().exercise.number;
    let block = Block::bordered().title(format!(" {number} · Decision cheat sheet "));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let mut tabs = Vec::new();
    for (i, e) in app.exercises.iter().enumerate() {
        let Some(key) = e.scenario else { continue };
        let (mark, style) = match cheat::verdict(app, i) {
            Some(v) if v.passed => ("✓", Style::new().green()),
            Some(_) => ("✗", Style::new().red()),
            None => ("", Style::new()),
        };
        let text = format!(" {key}{mark} ");
        tabs.push(if i == app.selected {
            Span::styled(text, style.bold().reversed())
        } else {
            Span::styled(text, style)
        });
        tabs.push(Span::raw(" "));
    }
    tabs.push(Span::raw(format!("{}. {}", s.key, s.title)).bold());
    let mut lines = vec![Line::from(tabs), Line::from(s.brief)];
    if inner.height >= 8 {
        lines.push(Line::default());
        lines.push(Line::from(vec![
            Span::raw("prompt ").italic(),
            Span::styled(s.prompt, DIM),
        ]));
        lines.push(Line::from(vec![
            Span::raw("constraint ").italic(),
            Span::raw(cheat::constraint(app, &s).describe()),
        ]));
    }
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: true }), inner);
}

/// The dimension names, shortened where the pane is narrow.
fn dimension_names(width: u16) -> [&'static str; 4] {
    if width >= 50 {
        DIMENSIONS
    } else {
        ["speed", "quality", "flex", "compose"]
    }
}

/// The user's answer to the scenario on screen (and ours, once looked at).
pub fn draw_answer(app: &App, frame: &mut Frame, area: Rect) {
    let Some(s) = cheat::scenario_of(app, app.selected) else {
        return;
    };
    let block = Block::bordered().title(" Your answer · e write · a ours ");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let names = dimension_names(inner.width);
    let w = if inner.width >= 50 { 13 } else { 8 };
    let answer = app.answers.answers.get(&s.key);
    let mut lines = Vec::new();
    match answer.and_then(|a| a.choice) {
        Some(c) if c.run(app.one_step.as_deref()).is_none() => lines.push(Line::from(vec![
            Span::raw(format!("{:>w$}  ", "choice")).cyan(),
            Span::raw(format!("{} (not installed here)", c.label())).yellow(),
        ])),
        Some(c) => lines.push(Line::from(vec![
            Span::raw(format!("{:>w$}  ", "choice")).cyan(),
            Span::raw(c.label()).bold(),
        ])),
        None => lines.push(Line::from(vec![
            Span::raw(format!("{:>w$}  ", "choice")).cyan(),
            Span::styled("none yet: e to answer", DIM),
        ])),
    }
    for (k, name) in names.iter().enumerate() {
        let note = answer.map(|a| a.notes[k].as_str()).unwrap_or_default();
        lines.push(Line::from(vec![
            Span::raw(format!("{name:>w$}  ")).cyan(),
            if note.is_empty() {
                Span::styled("–", DIM)
            } else {
                Span::raw(note.to_string())
            },
        ]));
    }
    if let cheatsheet::Constraint::SimilarityAtLeast { min } = cheat::constraint(app, &s) {
        lines.push(Line::from(vec![
            Span::raw(format!("{:>w$}  ", "SSIM ≥")).cyan(),
            Span::raw(format!("{min:.2}")),
        ]));
    }
    if app.revealed.contains(&s.key) {
        lines.push(Line::from(vec![
            Span::raw(format!("{:>w$}  ", "ours")).green(),
            Span::raw(s.reference.label()).green().bold(),
        ]));
    }
    frame.render_widget(Paragraph::new(lines), inner);
}

/// One line: the constraint and its verdict with the numbers, or what to do to get one.
pub fn draw_verdict(app: &App, frame: &mut Frame, area: Rect) {
    let i = app.selected;
    let Some(s) = cheat::scenario_of(app, i) else {
        return;
    };
    let choice = cheat::choice(app, &s);
    let runs = &app.exercises[i].runs;
    let line = if choice.run(app.one_step.as_deref()).is_none() {
        Line::from(format!(
            "{} is not installed here (the model has no one-step UNet): it cannot be verified (e picks another approach)",
            choice.label()
        ))
        .yellow()
    } else if let Some(v) = cheat::verdict(app, i) {
        let head = if v.passed {
            Span::raw(" PASS ").bold().black().on_green()
        } else {
            Span::raw(" FAIL ").bold().white().on_red()
        };
        Line::from(vec![
            head,
            Span::raw(format!(" {} — ", v.text)),
            Span::styled(cheat::constraint(app, &s).describe(), DIM),
        ])
    } else {
        let constraint = cheat::constraint(app, &s).describe();
        let status = if cheat::busy_with(app, i) {
            "verifying…"
        } else if runs.iter().any(|r| {
            matches!(
                r.row.state,
                RowState::Failed | RowState::Cancelled | RowState::Finished
            )
        }) {
            "not verified: both runs must finish (enter runs them again)"
        } else {
            "enter verifies"
        };
        Line::from(vec![
            Span::raw(format!("{status} ")).yellow(),
            Span::styled(format!("— {constraint}"), DIM),
        ])
    };
    frame.render_widget(line, area);
}

/// `lines` in a popup `width` wide and as tall as they wrap to.
fn text_popup(frame: &mut Frame, area: Rect, width: u16, title: &str, lines: Vec<Line>) {
    let text_w = usize::from(width.saturating_sub(4).max(1));
    let height: u16 = lines
        .iter()
        .map(|l| l.width().div_ceil(text_w).max(1) as u16)
        .sum::<u16>()
        + 2;
    let inner = popup(frame, area, width, height, title);
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), inner);
}

/// The answer form over the screen.
pub fn draw_form(form: &AnswerForm, one_step_installed: bool, frame: &mut Frame, area: Rect) {
    let Ok(s) = cheatsheet::scenario(form.key) else {
        return;
    };
    let width = 78.min(area.width);
    let row = |i: usize, name: &str, value: Span<'static>, cursor: bool| -> Line<'static> {
        let focused = i == form.focus;
        let label = if focused {
            Span::raw(format!("{name:>13}  ")).cyan().bold()
        } else {
            Span::raw(format!("{name:>13}  "))
        };
        let mut spans = vec![label, value];
        if focused && cursor {
            spans.push(Span::raw("▏"));
        }
        Line::from(spans)
    };
    let mut lines = vec![Line::styled(s.brief, DIM), Line::default()];
    let method = match form.method {
        None => Span::styled("◀ pick one with ←/→ ▶", DIM),
        Some(m) if m + 1 == METHODS.len() && !one_step_installed => Span::raw(format!(
            "◀ {} ▶ not installed here: cannot be verified",
            METHODS[m]
        ))
        .yellow(),
        Some(m) => Span::raw(format!("◀ {} ▶", METHODS[m])).bold(),
    };
    lines.push(row(0, "approach", method, false));
    let steps = if form.method.is_none() {
        Span::styled("–", DIM)
    } else {
        Span::raw(form.steps.clone())
    };
    lines.push(row(1, "steps", steps, true));
    for (k, name) in DIMENSIONS.iter().enumerate() {
        lines.push(row(2 + k, name, Span::raw(form.notes[k].clone()), true));
    }
    if let Some(t) = &form.threshold {
        lines.push(row(
            2 + DIMENSIONS.len(),
            "SSIM ≥",
            Span::raw(t.clone()),
            true,
        ));
    }
    lines.push(Line::default());
    let hint = "A line per dimension: why this approach fits the brief. Enter keeps the answer \
                (saved in cheatsheet.json); a to compare with ours afterwards.";
    lines.push(Line::styled(hint, DIM));
    if let Some(e) = &form.error {
        lines.push(Line::from(e.as_str()).red());
    }
    let title = format!("Your answer · {}. {}", s.key, s.title);
    text_popup(frame, area, width, &title, lines);
}

/// Our answer and its reasoning, beside the user's choice.
pub fn draw_reference(app: &App, key: char, frame: &mut Frame, area: Rect) {
    let Ok(s) = cheatsheet::scenario(key) else {
        return;
    };
    let width = 84.min(area.width);
    let mut lines = vec![Line::from(vec![
        Span::raw("ours: ").green(),
        Span::raw(s.reference.label()).green().bold(),
    ])];
    for r in s.reasoning {
        lines.push(Line::from(format!("· {r}")));
    }
    // What this session's verification measured, where it ran under the ControlNet.
    let state = app.exercises.iter().position(|e| e.scenario == Some(key));
    let (evidence, note) = state.map_or((None, None), |i| cheat::evidence(app, i));
    if let Some(e) = evidence {
        lines.push(Line::from(format!("· {e}")).green());
    }
    if let Some(n) = note {
        lines.push(Line::from(n.replace('\n', " — ")).yellow());
    }
    lines.push(Line::default());
    let yours = app
        .answers
        .answers
        .get(&s.key)
        .and_then(|a| a.choice)
        .map_or("not answered yet (e writes it)".to_string(), |c| c.label());
    lines.push(Line::from(vec![
        Span::raw("yours: ").cyan(),
        Span::raw(yours).cyan().bold(),
    ]));
    lines.push(Line::styled(verify_hint(app, &s), DIM));
    let title = format!("Our answer · {}. {}", s.key, s.title);
    text_popup(frame, area, width, &title, lines);
}

fn verify_hint(app: &App, s: &Scenario) -> String {
    format!(
        "The measurement decides: enter runs {} against {} and checks {}.",
        cheat::choice(app, s).label(),
        s.alternative.label(),
        cheat::constraint(app, s).describe()
    )
}
