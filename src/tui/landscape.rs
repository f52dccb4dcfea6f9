//! The speed landscape in the TUI: a step sweep ([`crate::sweep`]) as one more list entry. Its
//! runs are an [`ExerciseState`] (the plan as an exercise), so the queue, cancel, failures and
//! the worker's events work as for every exercise; on top, [`LandscapeState`] keeps the plan and
//! what each finished run measured against its seed's reference, computed once when the run
//! finishes. The curves are recomputed from those numbers when drawn (cheap: no images).
//!
//! `enter` resumes: only runs without a measurement are queued, so a cancelled sweep goes on
//! where it stopped; `R` starts over; `s` saves the sweep's folder (plot, CSV, JSON, summary).
//!
//! `W` switches to the landscape's other mode, the style-weight curve: the sweep module's
//! weight sweep ([`crate::sweep::WeightAxis`], LCM-LoRA 4 with `style` at 0, 0.25 … 1.5, the
//! prompt with the model's style trigger word) as a second landscape state, made by the first
//! `W` once the worker says the model folder has the adapter. Its runs, measures and saving are
//! the step landscape's; only the curves ([`crate::sweep::Plan::weight_curves`]) and the table
//! ([`weight_table`]) differ.

use super::app::{self, Action, Active, App, Effect, ExerciseState};
use crate::models::Grammar;
use crate::report::table::RowState;
use crate::sweep::headless::{SweepOutcome, measure};
use crate::sweep::{
    DEFAULT_LORA_WEIGHTS, Landscape, Measured, Plan, Point, Sweep, SweepConfig, Target,
    WeightCurves, WeightPoint, parse_lora_weights,
};

/// What the landscape entry adds to its [`ExerciseState`].
#[derive(Debug, Clone)]
pub struct LandscapeState {
    pub plan: Plan,
    /// What run `i` measured (`None`: not finished, or it could not be compared).
    pub measured: Vec<Option<Measured>>,
    /// The table row the user picked with h/l; `None` follows the run under way.
    pub row: Option<usize>,
}

impl LandscapeState {
    /// This is the style-weight curve (a weight sweep), not the step sweep.
    pub fn is_weights(&self) -> bool {
        self.plan.sweep.weights.is_some()
    }
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

/// The weight mode's sweep of `[sweep]` as config.toml leaves it by default.
pub fn default_weight_sweep() -> Option<Sweep> {
    weight_sweep(&SweepConfig::default()).ok()
}

/// The weight mode's sweep of `config`: [`DEFAULT_LORA_WEIGHTS`] with the weight sweep's
/// defaults, as `speedscape sweep --lora-weights` runs it.
pub fn weight_sweep(config: &SweepConfig) -> color_eyre::Result<Sweep> {
    Sweep::default_weights(config, parse_lora_weights(DEFAULT_LORA_WEIGHTS)?)
}

/// The state index of the landscape in the mode shown (`W`), if the app has one.
pub fn index(app: &App) -> Option<usize> {
    index_of(app, app.weight_mode).or_else(|| step_index(app))
}

/// The state index of the step landscape, if the app has one.
pub fn step_index(app: &App) -> Option<usize> {
    index_of(app, false)
}

fn index_of(app: &App, weights: bool) -> Option<usize> {
    app.exercises.iter().position(|e| {
        e.landscape
            .as_deref()
            .is_some_and(|l| l.is_weights() == weights)
    })
}

pub fn of(app: &App) -> Option<&LandscapeState> {
    app.current().landscape.as_deref()
}

/// The curves as far as the runs got.
pub fn landscape(l: &LandscapeState) -> Landscape {
    l.plan.landscape(&l.measured)
}

/// The weight curves as far as the runs got (`None`: the step landscape).
pub fn curves(l: &LandscapeState) -> Option<WeightCurves> {
    l.plan.weight_curves(&l.measured)
}

/// `L`: opens the landscape (remembering where from), or from the landscape goes back there.
pub fn toggle(app: &mut App) {
    let Some(i) = index(app) else {
        app.status = Some("there is no landscape: [sweep] in config.toml has no methods".into());
        return;
    };
    if app.in_landscape() {
        let last = app.exercises.len() - 1;
        let back = app.landscape_back.take().unwrap_or(0).min(last);
        app::select(app, back);
    } else {
        app.landscape_back = Some(app.selected);
        app::select(app, i);
    }
}

/// `W` in the landscape: from the step sweep to the style-weight curve (made the first time,
/// when the model folder has the adapter) and back. Runs under way go on.
fn switch_mode(app: &mut App) {
    if !app.weight_mode && index_of(app, true).is_none() {
        match weight_state(app) {
            Ok(state) => app.exercises.push(state),
            Err(why) => {
                app.status = Some(why);
                return;
            }
        }
    }
    app.weight_mode = !app.weight_mode;
    app.status = None;
    if let Some(i) = index(app) {
        app::select(app, i);
    }
}

/// The weight mode's state: its sweep with the model's style trigger in the prompt; why not,
/// in one line, before the model is open or where its folder lacks the adapter.
fn weight_state(app: &App) -> Result<ExerciseState, String> {
    let sweep = app
        .weight_sweep
        .as_ref()
        .ok_or("there is no weight curve: [sweep] in config.toml has no lcm method")?;
    let info = app
        .info
        .as_ref()
        .ok_or("the model is still opening: W works once it is ready")?;
    let axis = sweep
        .weights
        .as_ref()
        .ok_or("the weight sweep has no weights")?;
    if let Some(e) = crate::lora::unknown_adapter(&[axis.at(1.0)], &info.adapters) {
        return Err(format!("no weight curve on this model: {}", e.cause()));
    }
    let prompt = triggered(&sweep.prompt, info.grammar.as_deref());
    Ok(state(&sweep.clone().with_prompt(prompt)))
}

/// `prompt` with the model's style trigger word appended as its grammar writes it
/// (`…, PixArFK` on the micro model), unless it is there already or the model has none.
pub fn triggered(prompt: &str, grammar: Option<&Grammar>) -> String {
    let Some(trigger) = grammar.map(|g| g.trigger.trim()).filter(|t| !t.is_empty()) else {
        return prompt.to_string();
    };
    let has = prompt
        .split(|c: char| !c.is_alphanumeric())
        .any(|w| w.eq_ignore_ascii_case(trigger));
    if has {
        prompt.to_string()
    } else {
        format!("{prompt}, {trigger}")
    }
}

/// What an action means in the landscape, where it differs: `Some(effect)` when handled here.
pub fn on_action(app: &mut App, action: Action) -> Option<Option<Effect>> {
    let i = app.selected;
    let l = app.exercises[i].landscape.as_deref()?;
    match action {
        Action::Weights => {
            switch_mode(app);
            Some(None)
        }
        Action::Left | Action::Right => {
            let rows = rows_len(l);
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
            app.status = Some(if l.is_weights() {
                "the curve's runs come from [sweep] in config.toml (prompt, seeds, reference); speedscape sweep --lora-weights sweeps other weights".into()
            } else {
                "the landscape's runs come from [sweep] in config.toml (prompt, seeds, methods, steps, reference): change them there".into()
            });
            Some(None)
        }
        Action::Predict => {
            app.status = Some(if l.is_weights() {
                "the curve has no questions: read off it where the style takes over".into()
            } else {
                "the landscape has no questions: read each method's knee off the chart".into()
            });
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
        devices: None,
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

/// What a row of the weight curve's table is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WeightRow {
    /// The plain references (no style), their time.
    Plain(Point),
    /// The style-alone references (style at 1), their time and their SSIM to the plain ones.
    Alone(Point),
    /// Weight `point.weight` of curve `series`.
    Weight { series: usize, point: WeightPoint },
}

/// The weight table's rows: the two references (once they have a run), then each curve's
/// weights, ascending.
pub fn weight_table(c: &WeightCurves) -> Vec<WeightRow> {
    let mut rows: Vec<WeightRow> = c.plain.map(WeightRow::Plain).into_iter().collect();
    rows.extend(c.reference.map(WeightRow::Alone));
    for (series, s) in c.series.iter().enumerate() {
        rows.extend(
            s.points
                .iter()
                .map(|&point| WeightRow::Weight { series, point }),
        );
    }
    rows
}

/// The row of a weight sweep's run target in `rows` (the table of `c`, from `plan`).
pub fn weight_row_of(
    rows: &[WeightRow],
    c: &WeightCurves,
    plan: &Plan,
    target: Target,
) -> Option<usize> {
    rows.iter().position(|r| match (*r, target) {
        (WeightRow::Plain(_), Target::Plain) | (WeightRow::Alone(_), Target::Reference) => true,
        (
            WeightRow::Weight { series, point },
            Target::Weighted {
                method,
                steps,
                weight,
            },
        ) => {
            let s = &c.series[series];
            s.steps == steps
                && s.method == plan.sweep.methods[method]
                && point.weight == c.axis.weights[weight]
        }
        _ => false,
    })
}

/// How many rows the table of `l`'s mode has.
pub fn rows_len(l: &LandscapeState) -> usize {
    match curves(l) {
        Some(c) => weight_table(&c).len(),
        None => table(&landscape(l)).len(),
    }
}

/// The row of run target `target` in the table of `l`'s mode.
pub fn row_for(l: &LandscapeState, target: Target) -> Option<usize> {
    match curves(l) {
        Some(c) => weight_row_of(&weight_table(&c), &c, &l.plan, target),
        None => row_of(&table(&landscape(l)), target),
    }
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
    let active = app
        .active
        .filter(|a| a.exercise == ex)
        .and_then(|a| row_for(l, l.plan.runs[a.run].target));
    active.or_else(|| {
        (0..l.plan.runs.len())
            .rev()
            .find(|&i| l.measured[i].is_some())
            .and_then(|i| row_for(l, l.plan.runs[i].target))
    })
}

/// The landscape's run under way, if any.
pub fn active_run(app: &App, ex: usize) -> Option<Active> {
    app.active.filter(|a| a.exercise == ex)
}
