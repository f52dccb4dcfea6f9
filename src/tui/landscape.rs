//! The speed landscape in the TUI: a step sweep ([`crate::sweep`]) as one more list entry. Its
//! runs are an [`ExerciseState`] (the plan as an exercise), so the queue, cancel, failures and
//! the worker's events work as for every exercise; on top, [`LandscapeState`] keeps the plan and
//! what each finished run measured against its seed's reference, computed once when the run
//! finishes. The curves are recomputed from those numbers when drawn (cheap: no images).
//!
//! `enter` resumes: only runs without a measurement are queued, so a cancelled sweep goes on
//! where it stopped; `R` starts over; `s` saves the sweep's folder (plot, CSV, JSON, summary).

use super::app::{self, Action, Active, App, Effect, ExerciseState};
use crate::report::table::RowState;
use crate::sweep::headless::{SweepOutcome, measure};
use crate::sweep::{Landscape, Measured, Plan, Point, Sweep, SweepConfig, Target};

/// What the landscape entry adds to its [`ExerciseState`].
#[derive(Debug, Clone)]
pub struct LandscapeState {
    pub plan: Plan,
    /// What run `i` measured (`None`: not finished, or it could not be compared).
    pub measured: Vec<Option<Measured>>,
    /// The table row the user picked with h/l; `None` follows the run under way.
    pub row: Option<usize>,
}

/// The landscape's entry: the plan's runs as an exercise (number 0), with its state.
pub fn state(sweep: &Sweep) -> ExerciseState {
    let plan = sweep.plan();
    let mut ex = ExerciseState::new(plan.exercise());
    ex.landscape = Some(Box::new(LandscapeState {
        measured: vec![None; plan.runs.len()],
        plan,
        row: None,
    }));
    ex
}

/// The sweep of `[sweep]` as config.toml leaves it by default (every method).
pub fn default_sweep() -> Option<Sweep> {
    Sweep::from_config(&SweepConfig::default(), None).ok()
}

/// The state index of the landscape, if the app has one.
pub fn index(app: &App) -> Option<usize> {
    app.exercises.iter().position(|e| e.landscape.is_some())
}

pub fn of(app: &App) -> Option<&LandscapeState> {
    app.current().landscape.as_deref()
}

/// The curves as far as the runs got.
pub fn landscape(l: &LandscapeState) -> Landscape {
    l.plan.landscape(&l.measured)
}

/// `L`: opens the landscape (remembering where from), or from the landscape goes back there.
pub fn toggle(app: &mut App) {
    let Some(i) = index(app) else {
        app.status = Some("there is no landscape: [sweep] in config.toml has no methods".into());
        return;
    };
    if app.selected == i {
        let last = app.exercises.len() - 1;
        let back = app.landscape_back.take().unwrap_or(0).min(last);
        app::select(app, back);
    } else {
        app.landscape_back = Some(app.selected);
        app::select(app, i);
    }
}

/// What an action means in the landscape, where it differs: `Some(effect)` when handled here.
pub fn on_action(app: &mut App, action: Action) -> Option<Option<Effect>> {
    let i = app.selected;
    let l = app.exercises[i].landscape.as_deref()?;
    match action {
        Action::Left | Action::Right => {
            let rows = table(&landscape(l)).len();
            if rows > 0 {
                let at = l
                    .row
                    .unwrap_or_else(|| focus_row(app, i).unwrap_or(0))
                    .min(rows - 1);
                let next = if action == Action::Left {
                    at.saturating_sub(1)
                } else {
                    (at + 1).min(rows - 1)
                };
                if let Some(l) = app.exercises[i].landscape.as_deref_mut() {
                    l.row = Some(next);
                }
            }
            Some(None)
        }
        Action::Edit => {
            app.status = Some(
                "the landscape's runs come from [sweep] in config.toml (prompt, seeds, methods, steps, reference): change them there".into(),
            );
            Some(None)
        }
        Action::Predict => {
            app.status = Some(
                "the landscape has no questions: read each method's knee off the chart".into(),
            );
            Some(None)
        }
        Action::Save => {
            if !l.measured.iter().any(Option::is_some) {
                app.status = Some("nothing finished to save yet: enter runs the sweep".into());
            } else {
                app.status = Some("saving the landscape…".into());
                return Some(Some(Effect::SaveLandscape));
            }
            Some(None)
        }
        Action::RunExercise | Action::RerunSelected => {
            if app.is_busy() || app.fatal.is_some() {
                return None; // the general path says why
            }
            let restart = action == Action::RerunSelected;
            let n = l.plan.runs.len();
            let todo: Vec<usize> = (0..n)
                .filter(|&r| restart || l.measured[r].is_none())
                .collect();
            if todo.is_empty() {
                app.status = Some(format!(
                    "all {n} runs of the sweep are done: R runs it again from scratch, s saves it"
                ));
                return Some(None);
            }
            let ex = &mut app.exercises[i];
            if let Some(l) = ex.landscape.as_deref_mut() {
                l.row = None;
                for &r in &todo {
                    l.measured[r] = None;
                }
            }
            for &r in &todo {
                ex.reset_run(r);
            }
            ex.saved = None;
            app.status = (todo.len() < n)
                .then(|| format!("resuming: {} of {n} runs left (R starts over)", todo.len()));
            app.queue = todo.into_iter().map(|r| (i, r)).collect();
            Some(app::next_in_queue(app))
        }
        _ => None,
    }
}

/// Run `run` of the landscape `ex` finished: measures it against its seed's reference image
/// (once; the chart and table only read the numbers).
pub fn on_finished(app: &mut App, ex: usize, run: usize) {
    let state = &app.exercises[ex];
    let Some(l) = state.landscape.as_deref() else {
        return;
    };
    let r = &state.runs[run];
    let (Some(image), Some(report)) = (r.image.as_deref(), r.report.as_deref()) else {
        return;
    };
    let finished_image = |i: usize| {
        let r = &state.runs[i];
        (r.image_final && r.row.state == RowState::Finished)
            .then_some(r.image.as_deref())
            .flatten()
    };
    let reference = finished_image(l.plan.reference_for(run));
    let plain = l.plan.plain_for(run).and_then(finished_image);
    let result = measure(&l.plan, run, image, report, reference, plain);
    let label = l.plan.runs[run].spec.label.clone();
    let state = &mut app.exercises[ex];
    match result {
        Ok(m) => {
            if let Some(l) = state.landscape.as_deref_mut() {
                l.measured[run] = Some(m);
            }
        }
        Err(e) => {
            app.status = Some(format!("{label} finished but has no SSIM: {e}"));
            state.runs[run].error = Some(e);
        }
    }
}

/// Everything the landscape's runs produced, as the headless sweep has it (for
/// [`crate::sweep::output::save_sweep`]); `None` before the worker is ready.
pub fn outcome(app: &App, ex: usize) -> Option<SweepOutcome> {
    let state = &app.exercises[ex];
    let l = state.landscape.as_deref()?;
    let info = app.info.clone()?;
    let n = l.plan.runs.len();
    let mut images = Vec::with_capacity(n);
    let mut reports = Vec::with_capacity(n);
    let mut errors = Vec::with_capacity(n);
    for (i, r) in state.runs.iter().enumerate() {
        let finished = r.row.state == RowState::Finished && r.image_final;
        images.push(finished.then(|| r.image.as_deref().cloned()).flatten());
        reports.push(finished.then(|| r.report.as_deref().cloned()).flatten());
        errors.push(match (l.measured[i], r.row.state, &r.error) {
            (Some(_), ..) => None,
            (None, _, Some(e)) => Some(e.clone()),
            (None, RowState::Cancelled, None) => Some("cancelled".into()),
            (None, ..) => Some("not run: the sweep was saved from the TUI before this run".into()),
        });
    }
    Some(SweepOutcome {
        info,
        plan: l.plan.clone(),
        rng: app.rng,
        measured: l.measured.clone(),
        images,
        reports,
        errors,
    })
}

/// What a table row is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RowKind {
    Reference,
    /// Series `series` of the landscape.
    Point {
        series: usize,
    },
}

/// One row of the table under the chart.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TableRow {
    pub kind: RowKind,
    pub point: Point,
    /// The knee of its curve.
    pub knee: bool,
}

/// The table's rows: the reference (once it has a run), then each method's points by steps.
pub fn table(land: &Landscape) -> Vec<TableRow> {
    let mut rows: Vec<TableRow> = land
        .reference
        .iter()
        .map(|&point| TableRow {
            kind: RowKind::Reference,
            point,
            knee: false,
        })
        .collect();
    for (s, series) in land.series.iter().enumerate() {
        for &point in &series.points {
            rows.push(TableRow {
                kind: RowKind::Point { series: s },
                point,
                knee: series.knee == Some(point.steps),
            });
        }
    }
    rows
}

/// The row of `target` in `rows`.
pub fn row_of(rows: &[TableRow], target: Target) -> Option<usize> {
    rows.iter().position(|r| match (r.kind, target) {
        (RowKind::Reference, Target::Reference) => true,
        (RowKind::Point { series }, Target::Point { method, steps }) => {
            series == method && r.point.steps == steps
        }
        _ => false,
    })
}

/// The row the table keeps in view when the user has not picked one: the point of the run
/// under way, else the last one measured (in the plan's order).
pub fn focus_row(app: &App, ex: usize) -> Option<usize> {
    let l = app.exercises[ex].landscape.as_deref()?;
    let rows = table(&landscape(l));
    let active = app
        .active
        .filter(|a| a.exercise == ex)
        .and_then(|a| row_of(&rows, l.plan.runs[a.run].target));
    active.or_else(|| {
        (0..l.plan.runs.len())
            .rev()
            .find(|&i| l.measured[i].is_some())
            .and_then(|i| row_of(&rows, l.plan.runs[i].target))
    })
}

/// The landscape's run under way, if any.
pub fn active_run(app: &App, ex: usize) -> Option<Active> {
    app.active.filter(|a| a.exercise == ex)
}
