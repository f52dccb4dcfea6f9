//! The TUI's state and `update`: messages in (keys, worker events, results of effects), state
//! changed, at most one [`Effect`] out for the loop to carry out. No I/O, no clocks: every time
//! shown comes from the worker's events.

use crate::models::ModelKind;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use image::RgbImage;

use super::cheat::{self, AnswerForm};
use super::landscape::{self, LandscapeState};
use crate::exercises::Exercise;
use crate::exercises::cheatsheet::Answers;
use crate::models::ClipTokenizer;
use crate::models::tokenizer::Tokens;
use crate::pipeline::{Request, RunReport};
use crate::report::table::{RowState, TableRow};
use crate::rng::RngSource;
use crate::worker::{Event, RunId, WorkerInfo};

/// Prompt tokens SD v1.5 reads (77 minus BOS and EOS).
pub const TOKEN_LIMIT: usize = 75;

/// What `update` reacts to.
#[derive(Debug)]
pub enum Msg {
    Key(KeyEvent),
    Worker(Event),
    /// The loop gave the job of `Effect::Submit` this id and sent it to the worker.
    Submitted {
        exercise: usize,
        run: usize,
        id: RunId,
    },
    /// The result of `Effect::Save`: the folder written, or the error as the user should read it.
    Saved(Result<PathBuf, String>),
    /// The result of `Effect::SaveAnswers`: the answers file written, or why not.
    AnswersSaved(Result<PathBuf, String>),
}

/// What the loop must do after an update.
#[derive(Debug)]
pub enum Effect {
    /// Give the request a fresh run id, send it, answer with `Msg::Submitted`.
    Submit {
        exercise: usize,
        run: usize,
        request: Box<Request>,
    },
    Cancel(RunId),
    /// Save exercise `.0`'s images and timings; answer with `Msg::Saved`.
    Save(usize),
    /// Save the whole cheat sheet (answers, verdicts, every verified scenario's runs); answer
    /// with `Msg::Saved`.
    SaveSheet,
    /// Write the cheat-sheet answers file (atomically, never over a damaged one); answer with
    /// `Msg::AnswersSaved`.
    SaveAnswers(Box<Answers>),
    /// Save the landscape's sweep (plot, points, JSON, summary, first-seed images) into a new
    /// folder; answer with `Msg::Saved`.
    SaveLandscape,
    /// Leave (cancelling the active run first, if any).
    Quit {
        cancel: Option<RunId>,
    },
}

/// What a key means in the normal mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    RunExercise,
    RerunSelected,
    Cancel,
    Up,
    Down,
    Left,
    Right,
    Jump(usize),
    Edit,
    Predict,
    Save,
    Reveal,
    /// Open the speed landscape, or go back from it.
    Landscape,
    Help,
    Quit,
}

/// Keys → actions in the normal mode (the help overlay lists the same).
pub fn action(key: &KeyEvent) -> Option<Action> {
    if key.modifiers.contains(KeyModifiers::CONTROL) {
        return (key.code == KeyCode::Char('c')).then_some(Action::Quit);
    }
    Some(match key.code {
        KeyCode::Enter | KeyCode::Char('r') => Action::RunExercise,
        KeyCode::Char('R') => Action::RerunSelected,
        KeyCode::Esc => Action::Cancel,
        KeyCode::Char('k') | KeyCode::Up => Action::Up,
        KeyCode::Char('j') | KeyCode::Down => Action::Down,
        KeyCode::Char('h') | KeyCode::Left => Action::Left,
        KeyCode::Char('l') | KeyCode::Right => Action::Right,
        KeyCode::Char(c @ '1'..='9') => Action::Jump(c as usize - '1' as usize),
        KeyCode::Char('e') => Action::Edit,
        KeyCode::Char('p') => Action::Predict,
        KeyCode::Char('s') => Action::Save,
        KeyCode::Char('a') => Action::Reveal,
        KeyCode::Char('L') => Action::Landscape,
        KeyCode::Char('?') => Action::Help,
        KeyCode::Char('q') => Action::Quit,
        _ => return None,
    })
}

/// Every key, for the help overlay: (keys, what they do).
pub const KEYS: &[(&str, &str)] = &[
    (
        "enter / r",
        "run the exercise, all its runs (landscape: the ones not done)",
    ),
    (
        "R",
        "rerun the selected run (landscape: the sweep from scratch)",
    ),
    (
        "esc",
        "cancel the active run (and the ones queued after it)",
    ),
    ("j / k, ↓ / ↑", "select an exercise"),
    (
        "h / l, ← / →",
        "select a run panel (cheat sheet: scenario; landscape: row)",
    ),
    ("1–9", "jump to an exercise by its number"),
    (
        "e",
        "edit the selected run (cheat sheet: write your answer)",
    ),
    ("a", "cheat sheet: show our answer and its reasoning"),
    ("p", "type your predictions for the exercise's questions"),
    (
        "s",
        "save images and timings (landscape: plot, points, summary)",
    ),
    (
        "L",
        "the speed landscape: SSIM against time (L again: back)",
    ),
    ("?", "this help (any key closes it)"),
    ("q, ctrl-c", "quit (cancels a running run first)"),
    (
        "in forms",
        "tab/↓ next, shift-tab/↑ back, enter apply, esc close",
    ),
];

/// A component's session created (and warmed up) for a run, apart from its timings.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadNote {
    pub component: String,
    pub load: Duration,
    pub warm_up: Duration,
}

/// One run of an exercise as the TUI knows it.
#[derive(Debug, Clone, Default)]
pub struct RunState {
    pub state: RowState,
    /// The run id while this panel waits for events from it.
    pub id: Option<RunId>,
    pub total_steps: usize,
    pub steps_done: usize,
    /// Image size in pixels (from `Started`).
    pub size: Option<(usize, usize)>,
    pub text: Option<Duration>,
    pub unet: Duration,
    pub scheduler: Duration,
    /// Since `Started`, as of the last step.
    pub elapsed: Duration,
    pub report: Option<Box<RunReport>>,
    /// The newest preview (latent resolution) or, once finished, the full image.
    pub image: Option<Arc<RgbImage>>,
    /// Bumped on every new image, so the view knows to re-encode.
    pub image_gen: u64,
    /// `image` is the finished VAE decode, not a preview.
    pub image_final: bool,
    /// Step index of the shown preview.
    pub preview_index: Option<usize>,
    pub error: Option<String>,
    /// The finished image against the exercise's baseline image, computed once when either
    /// finishes (not on every draw).
    pub quality: Option<crate::quality::Quality>,
}

impl RunState {
    /// Denoising steps per second so far (UNet + scheduler time).
    pub fn its(&self) -> Option<f64> {
        let secs = (self.unet + self.scheduler).as_secs_f64();
        (self.steps_done > 0 && secs > 0.0).then(|| self.steps_done as f64 / secs)
    }

    /// Time left at the rate so far, from the steps' elapsed times (not a wall clock).
    pub fn eta(&self) -> Option<Duration> {
        if self.steps_done == 0 || self.total_steps < self.steps_done {
            return None;
        }
        let per = self.elapsed.as_secs_f64() / self.steps_done as f64;
        Some(Duration::from_secs_f64(
            per * (self.total_steps - self.steps_done) as f64,
        ))
    }

    pub(super) fn reset(&mut self) {
        let image_gen = self.image_gen + 1;
        *self = RunState {
            image_gen,
            ..RunState::default()
        };
    }
}

/// An exercise with its runs' states and the user's predictions.
#[derive(Debug, Clone)]
pub struct ExerciseState {
    pub exercise: Exercise,
    pub runs: Vec<RunState>,
    /// One per question.
    pub predictions: Vec<Option<f64>>,
    pub saved: Option<PathBuf>,
    /// The cheat-sheet scenario this exercise verifies (exercise 4), if any.
    pub scenario: Option<char>,
    /// The speed landscape's sweep, when this state is the landscape's runs.
    pub landscape: Option<Box<LandscapeState>>,
}

impl ExerciseState {
    pub fn new(exercise: Exercise) -> Self {
        Self {
            runs: vec![RunState::default(); exercise.runs.len()],
            predictions: vec![None; exercise.questions.len()],
            saved: None,
            scenario: None,
            landscape: None,
            exercise,
        }
    }
}

/// The run-editing form.
#[derive(Debug, Clone, PartialEq)]
pub struct Form {
    pub run: usize,
    /// prompt, steps, cfg, seed
    pub fields: [String; 4],
    pub focus: usize,
    /// Token count of the prompt field (`None` without a tokenizer).
    pub tokens: Option<(usize, usize)>,
    pub error: Option<String>,
}

pub const FORM_LABELS: [&str; 4] = ["prompt", "steps", "cfg", "seed"];

/// Typing a prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictInput {
    pub question: usize,
    pub buffer: String,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    Normal,
    Help,
    Edit(Form),
    Predict(PredictInput),
    /// Writing a cheat-sheet answer.
    Answer(AnswerForm),
    /// Our answer to a cheat-sheet scenario, shown over the screen.
    Reference(char),
}

/// The run the worker is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Active {
    pub exercise: usize,
    pub run: usize,
    /// `None` between `Effect::Submit` and `Msg::Submitted`.
    pub id: Option<RunId>,
}

pub struct App {
    pub exercises: Vec<ExerciseState>,
    pub selected: usize,
    pub selected_run: usize,
    pub mode: Mode,
    pub info: Option<WorkerInfo>,
    pub fatal: Option<String>,
    pub active: Option<Active>,
    /// Runs waiting after the active one: (exercise, run).
    pub queue: VecDeque<(usize, usize)>,
    /// A component being loaded for the active run.
    pub loading: Option<String>,
    /// Sessions created so far, in order.
    pub loaded: Vec<LoadNote>,
    /// One line for the user (saved folder, why a key did nothing, an error).
    pub status: Option<String>,
    /// The image protocol in use, for the header and help ("halfblocks", "kitty (detected)").
    pub graphics: String,
    pub rng: RngSource,
    pub tokenizer: Option<Arc<ClipTokenizer>>,
    /// The cheat-sheet answers (exercise 4), as last kept.
    pub answers: Answers,
    /// The cheat-sheet scenario last shown, to come back to from the list.
    pub last_scenario: Option<usize>,
    /// Scenarios whose reference answer the user has looked at.
    pub revealed: Vec<char>,
    /// The state `L` opened the landscape from, to go back to.
    pub landscape_back: Option<usize>,
    /// What the model folder holds: the exercises' prompts are this kind's.
    pub model_kind: ModelKind,
    pub quit: bool,
    /// Something changed since the last draw.
    pub dirty: bool,
}

impl App {
    /// The exercises, then the cheat sheet's scenarios (exercise 4), then the speed landscape
    /// of the default sweep ([`App::with_sweep`] puts config.toml's in its place).
    pub fn new(exercises: Vec<Exercise>, graphics: String) -> Self {
        let mut states: Vec<ExerciseState> =
            exercises.into_iter().map(ExerciseState::new).collect();
        states.extend(cheat::scenario_states());
        states.extend(landscape::default_sweep().map(|s| landscape::state(&s)));
        Self {
            exercises: states,
            selected: 0,
            selected_run: 0,
            mode: Mode::Normal,
            info: None,
            fatal: None,
            active: None,
            queue: VecDeque::new(),
            loading: None,
            loaded: Vec::new(),
            status: None,
            graphics,
            rng: RngSource::default(),
            tokenizer: None,
            answers: Answers {
                format: 1,
                ..Answers::default()
            },
            last_scenario: None,
            revealed: Vec::new(),
            landscape_back: None,
            model_kind: ModelKind::Sd15,
            quit: false,
            dirty: true,
        }
    }

    /// Every exercise and scenario with its prompt for a model of `kind` (the micro model knows
    /// only its world's words); the sweep's comes with [`App::with_sweep`].
    pub fn with_model_kind(mut self, kind: ModelKind) -> Self {
        self.model_kind = kind;
        for state in &mut self.exercises {
            state.exercise = state.exercise.clone().for_model(kind);
        }
        self
    }

    pub fn with_tokenizer(mut self, tokenizer: Option<ClipTokenizer>) -> Self {
        self.tokenizer = tokenizer.map(Arc::new);
        self
    }

    /// The landscape runs `sweep` (from `[sweep]` in config.toml) instead of the default one.
    pub fn with_sweep(mut self, sweep: &crate::sweep::Sweep) -> Self {
        let state = landscape::state(sweep);
        match landscape::index(&self) {
            Some(i) => self.exercises[i] = state,
            None => self.exercises.push(state),
        }
        self
    }

    /// Starts from the answers kept in `cheatsheet.json`; each scenario verifies its answer.
    pub fn with_answers(mut self, answers: Answers) -> Self {
        self.answers = answers;
        for i in 0..self.exercises.len() {
            cheat::sync_choice(&mut self, i);
        }
        self
    }

    /// The list's entries: each exercise, then the cheat sheet as one entry, then the speed
    /// landscape; as the index of the state each one shows (the cheat sheet: its scenario last
    /// shown).
    pub fn entries(&self) -> Vec<usize> {
        let mut out: Vec<usize> = (0..self.exercises.len())
            .filter(|&i| {
                self.exercises[i].scenario.is_none() && self.exercises[i].landscape.is_none()
            })
            .collect();
        if let Some(first) = cheat::first_scenario(self) {
            let shown = if self.exercises[self.selected].scenario.is_some() {
                self.selected
            } else {
                self.last_scenario.unwrap_or(first)
            };
            out.push(shown);
        }
        out.extend(landscape::index(self));
        out
    }

    /// The list entry of the selected state.
    pub fn selected_entry(&self) -> usize {
        let entries = self.entries();
        entries
            .iter()
            .position(|&i| i == self.selected)
            .unwrap_or(0)
    }

    /// The cheat sheet is on screen.
    pub fn in_cheat_sheet(&self) -> bool {
        self.current().scenario.is_some()
    }

    /// The speed landscape is on screen.
    pub fn in_landscape(&self) -> bool {
        self.current().landscape.is_some()
    }

    pub fn current(&self) -> &ExerciseState {
        &self.exercises[self.selected]
    }

    pub fn active_id(&self) -> Option<RunId> {
        self.active.and_then(|a| a.id)
    }

    pub fn is_busy(&self) -> bool {
        self.active.is_some()
    }

    fn count_tokens(&self, prompt: &str) -> Option<(usize, usize)> {
        let t: Tokens = self.tokenizer.as_ref()?.encode(prompt).ok()?;
        Some((t.count, t.dropped))
    }
}

/// The one place that changes state.
pub fn update(app: &mut App, msg: Msg) -> Option<Effect> {
    match msg {
        Msg::Key(key) => {
            if key.kind == KeyEventKind::Release {
                return None;
            }
            app.dirty = true;
            on_key(app, key)
        }
        Msg::Worker(event) => on_event(app, event),
        Msg::Submitted { exercise, run, id } => {
            app.dirty = true;
            match &mut app.active {
                Some(a) if a.exercise == exercise && a.run == run && a.id.is_none() => {
                    a.id = Some(id);
                    let r = &mut app.exercises[exercise].runs[run];
                    r.reset();
                    r.id = Some(id);
                    r.state = RowState::Pending;
                }
                _ => {}
            }
            None
        }
        Msg::Saved(result) => {
            app.dirty = true;
            match result {
                Ok(dir) => {
                    app.status = Some(format!("saved to {}", dir.display()));
                    app.exercises[app.selected].saved = Some(dir);
                }
                Err(e) => app.status = Some(format!("save failed: {e}")),
            }
            None
        }
        Msg::AnswersSaved(result) => {
            app.dirty = true;
            if let Err(e) = result {
                app.status = Some(format!(
                    "your answers are kept in memory but not saved: {}",
                    first_line(&e)
                ));
            }
            None
        }
    }
}

fn on_key(app: &mut App, key: KeyEvent) -> Option<Effect> {
    // ctrl-c quits from every mode, forms and overlays included: in raw mode it is a key, not
    // SIGINT, and the key a stuck user presses.
    if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
        return on_action(app, Action::Quit);
    }
    match app.mode.clone() {
        Mode::Help => {
            app.mode = Mode::Normal;
            None
        }
        Mode::Edit(form) => on_form_key(app, form, key),
        Mode::Predict(input) => on_predict_key(app, input, key),
        Mode::Answer(form) => cheat::on_form_key(app, form, key),
        Mode::Reference(_) => {
            app.mode = Mode::Normal;
            None
        }
        Mode::Normal => on_action(app, action(&key)?),
    }
}

fn on_action(app: &mut App, action: Action) -> Option<Effect> {
    if app.in_cheat_sheet()
        && let Some(effect) = on_cheat_action(app, action)
    {
        return effect;
    }
    if app.in_landscape()
        && let Some(effect) = landscape::on_action(app, action)
    {
        return effect;
    }
    let n_runs = app.current().runs.len();
    match action {
        Action::Up | Action::Down => {
            let entries = app.entries();
            let next = step_around(app.selected_entry(), entries.len(), action == Action::Up);
            select(app, entries[next]);
        }
        Action::Jump(i) => {
            let number = i + 1;
            match app
                .entries()
                .into_iter()
                .find(|&e| app.exercises[e].exercise.number == number)
            {
                Some(e) => select(app, e),
                None => app.status = Some(format!("there is no exercise {number}")),
            }
        }
        Action::Left => app.selected_run = app.selected_run.saturating_sub(1),
        Action::Right => app.selected_run = (app.selected_run + 1).min(n_runs.saturating_sub(1)),
        Action::Help => app.mode = Mode::Help,
        Action::Landscape => landscape::toggle(app),
        Action::Reveal => {
            app.status = Some("a shows our answer in the cheat sheet (exercise 4)".into());
        }
        Action::Quit => {
            app.quit = true;
            app.queue.clear();
            return Some(Effect::Quit {
                cancel: app.active_id(),
            });
        }
        Action::Cancel => {
            let id = app.active_id()?;
            app.queue.clear();
            app.status = Some("cancelling…".into());
            return Some(Effect::Cancel(id));
        }
        Action::RunExercise | Action::RerunSelected => {
            if app.fatal.is_some() {
                app.status = Some("the worker could not start (see above); nothing can run".into());
                return None;
            }
            if app.is_busy() {
                app.status = Some("a run is going: esc cancels it".into());
                return None;
            }
            let ex = app.selected;
            let runs: Vec<usize> = if action == Action::RunExercise {
                (0..n_runs).collect()
            } else {
                vec![app.selected_run]
            };
            for &r in &runs {
                app.exercises[ex].runs[r].reset();
            }
            app.exercises[ex].saved = None;
            app.queue = runs.into_iter().map(|r| (ex, r)).collect();
            app.status = None;
            return next_in_queue(app);
        }
        Action::Edit => {
            if app
                .active
                .is_some_and(|a| a.exercise == app.selected && a.run == app.selected_run)
            {
                app.status = Some("this run is going: esc cancels it first".into());
                return None;
            }
            let ex = &app.current().exercise;
            let spec = &ex.runs[app.selected_run];
            let prompt = spec.prompt.clone().unwrap_or_else(|| ex.prompt.clone());
            let fields = [
                prompt.clone(),
                spec.steps.to_string(),
                spec.cfg.to_string(),
                spec.seed.unwrap_or(ex.seed).to_string(),
            ];
            app.mode = Mode::Edit(Form {
                run: app.selected_run,
                fields,
                focus: 0,
                tokens: app.count_tokens(&prompt),
                error: None,
            });
        }
        Action::Predict => {
            if app.current().exercise.questions.is_empty() {
                app.status = Some("this exercise has no questions".into());
                return None;
            }
            app.mode = Mode::Predict(predict_input(app, 0));
        }
        Action::Save => {
            if !app.current().runs.iter().any(|r| r.report.is_some()) {
                app.status = Some("nothing finished to save yet: enter runs the exercise".into());
                return None;
            }
            app.status = Some("saving…".into());
            return Some(Effect::Save(app.selected));
        }
    }
    None
}

/// One place back or on from `at` among `n`, wrapping around.
fn step_around(at: usize, n: usize, back: bool) -> usize {
    if back { (at + n - 1) % n } else { (at + 1) % n }
}

pub(super) fn select(app: &mut App, i: usize) {
    if i != app.selected {
        app.selected = i;
        app.selected_run = 0;
    }
    if app.exercises[i].scenario.is_some() {
        app.last_scenario = Some(i);
        // The choice's panel: R reruns it against the alternative already measured.
        app.selected_run = 1;
    }
}

/// What an action means in the cheat sheet, where it differs: `Some(effect)` when handled here.
fn on_cheat_action(app: &mut App, action: Action) -> Option<Option<Effect>> {
    let i = app.selected;
    let s = cheat::scenario_of(app, i)?;
    match action {
        Action::Left | Action::Right => {
            let states: Vec<usize> = (0..app.exercises.len())
                .filter(|&k| app.exercises[k].scenario.is_some())
                .collect();
            let at = states.iter().position(|&k| k == i)?;
            let next = step_around(at, states.len(), action == Action::Left);
            select(app, states[next]);
            Some(None)
        }
        Action::Edit => {
            let form = AnswerForm::new(&s, app.answers.answers.get(&s.key));
            app.mode = Mode::Answer(form);
            Some(None)
        }
        Action::Reveal => {
            app.mode = Mode::Reference(s.key);
            if !app.revealed.contains(&s.key) {
                app.revealed.push(s.key);
            }
            Some(None)
        }
        Action::Predict => {
            app.status = Some("the cheat sheet has no predictions: e writes your answer".into());
            Some(None)
        }
        Action::Save => {
            app.status = Some("saving the cheat sheet…".into());
            Some(Some(Effect::SaveSheet))
        }
        Action::RunExercise | Action::RerunSelected => {
            if app.is_busy() || app.fatal.is_some() {
                return None; // the general path says why
            }
            if !cheat::sync_choice(app, i) {
                app.status = Some(format!(
                    "{} is not installed here, so it cannot be verified: e picks an approach speedscape runs",
                    cheat::choice(app, &s).label()
                ));
                return Some(None);
            }
            app.selected_run = 1;
            None
        }
        _ => None,
    }
}

fn predict_input(app: &App, question: usize) -> PredictInput {
    PredictInput {
        question,
        buffer: app.current().predictions[question]
            .map(|v| v.to_string())
            .unwrap_or_default(),
        error: None,
    }
}

pub(super) fn next_in_queue(app: &mut App) -> Option<Effect> {
    let (exercise, run) = app.queue.pop_front()?;
    app.active = Some(Active {
        exercise,
        run,
        id: None,
    });
    let state = &app.exercises[exercise];
    // The landscape's runs also ask for a CLIP score (given where the model has a scorer).
    let request = match &state.landscape {
        Some(l) => l.plan.request(run, app.rng),
        None => state.exercise.request(run, app.rng),
    };
    Some(Effect::Submit {
        exercise,
        run,
        request: Box::new(request),
    })
}

fn on_form_key(app: &mut App, mut form: Form, key: KeyEvent) -> Option<Effect> {
    match key.code {
        KeyCode::Esc => {
            app.mode = Mode::Normal;
            return None;
        }
        KeyCode::Tab | KeyCode::Down => form.focus = (form.focus + 1) % 4,
        KeyCode::BackTab | KeyCode::Up => form.focus = (form.focus + 3) % 4,
        KeyCode::Backspace => {
            form.fields[form.focus].pop();
        }
        KeyCode::Char(c) if !key.modifiers.contains(KeyModifiers::CONTROL) => {
            form.fields[form.focus].push(c)
        }
        KeyCode::Enter => match apply_form(app, &form) {
            Ok(()) => {
                app.mode = Mode::Normal;
                app.status = Some(format!(
                    "run {} changed: R reruns it",
                    app.current().exercise.runs[form.run].label
                ));
                return None;
            }
            Err(e) => form.error = Some(e),
        },
        _ => {}
    }
    if form.focus == 0 || matches!(key.code, KeyCode::Backspace | KeyCode::Char(_)) {
        form.tokens = app.count_tokens(&form.fields[0]);
    }
    app.mode = Mode::Edit(form);
    None
}

fn apply_form(app: &mut App, form: &Form) -> Result<(), String> {
    // An empty prompt is allowed, as in the CLI and diffusers: the image is then unconditional.
    let prompt = form.fields[0].trim().to_string();
    let steps: usize = form.fields[1]
        .trim()
        .parse()
        .ok()
        .filter(|s| (1..=1000).contains(s))
        .ok_or("steps: a whole number from 1 to 1000")?;
    let cfg: f32 = form.fields[2]
        .trim()
        .parse()
        .ok()
        .filter(|&c: &f32| crate::pipeline::limits::guidance_error(c).is_none())
        .ok_or("cfg: a number from 0 to 100 (7.5 for DDPM/DPM-Solver++, 1.5 for LCM)")?;
    let seed: u64 = form.fields[3]
        .trim()
        .parse()
        .map_err(|_| "seed: a whole number ≥ 0".to_string())?;
    // The run's scheduler must accept that many steps with the model's scheduler config (LCM at
    // most its original 50, DDPM its 1000 …): said here, in the form, not when the run starts.
    let scheduler = app.exercises[app.selected].exercise.runs[form.run].scheduler;
    let scheduler_config: crate::schedulers::SchedulerConfig = app
        .info
        .as_ref()
        .and_then(|i| serde_json::from_value(i.scheduler_config.clone()).ok())
        .or_else(|| serde_json::from_str(crate::models::SD15_SCHEDULER_CONFIG).ok())
        .unwrap_or_default();
    crate::schedulers::build(
        scheduler,
        &scheduler_config,
        steps,
        &crate::schedulers::SchedulerOptions::default(),
    )
    .map_err(|e| format!("steps: {}", e.to_string().replace('\n', " — ")))?;
    let ex = &mut app.exercises[app.selected];
    let default_prompt = ex.exercise.prompt.clone();
    let default_seed = ex.exercise.seed;
    let spec = &mut ex.exercise.runs[form.run];
    spec.label = relabel(&spec.label, spec.steps, steps);
    spec.steps = steps;
    spec.cfg = cfg;
    spec.prompt = (prompt != default_prompt).then_some(prompt);
    spec.seed = (seed != default_seed).then_some(seed);
    ex.runs[form.run].reset();
    Ok(())
}

/// "DDPM 50" with 30 steps → "DDPM 30"; labels not ending in the step count stay.
pub fn relabel(label: &str, old: usize, new: usize) -> String {
    let old = old.to_string();
    match label.strip_suffix(&old) {
        Some(head) if head.ends_with(' ') => format!("{head}{new}"),
        _ => label.to_string(),
    }
}

fn on_predict_key(app: &mut App, mut input: PredictInput, key: KeyEvent) -> Option<Effect> {
    let n = app.current().exercise.questions.len();
    match key.code {
        KeyCode::Esc => {
            app.mode = Mode::Normal;
            return None;
        }
        KeyCode::Tab | KeyCode::Down => {
            input = predict_input(app, (input.question + 1) % n);
        }
        KeyCode::BackTab | KeyCode::Up => {
            input = predict_input(app, (input.question + n - 1) % n);
        }
        KeyCode::Backspace => {
            input.buffer.pop();
        }
        KeyCode::Char(c) if c.is_ascii_digit() || c == '.' => input.buffer.push(c),
        KeyCode::Enter => {
            let text = input.buffer.trim();
            let value = if text.is_empty() {
                None
            } else {
                match text.parse::<f64>() {
                    Ok(v) if v.is_finite() && v > 0.0 => Some(v),
                    _ => {
                        input.error = Some("a positive number, e.g. 2.5".into());
                        app.mode = Mode::Predict(input);
                        return None;
                    }
                }
            };
            app.exercises[app.selected].predictions[input.question] = value;
            if input.question + 1 < n {
                input = predict_input(app, input.question + 1);
            } else {
                app.mode = Mode::Normal;
                return None;
            }
        }
        _ => {}
    }
    app.mode = Mode::Predict(input);
    None
}

fn on_event(app: &mut App, event: Event) -> Option<Effect> {
    match event {
        Event::Ready(info) => {
            app.dirty = true;
            if !info.notes.is_empty() {
                app.status = Some(format!("note: {}", info.notes.join(" · ")));
            }
            app.info = Some(info);
            return None;
        }
        Event::Fatal { error } => {
            app.dirty = true;
            // A run under way when the worker died failed with it (not left "going" forever).
            if let Some(a) = app.active.take() {
                let run = &mut app.exercises[a.exercise].runs[a.run];
                run.state = RowState::Failed;
                run.id = None;
                run.error = Some(error.clone());
            }
            app.loading = None;
            app.fatal = Some(error);
            app.queue.clear();
            return None;
        }
        _ => {}
    }
    // Only the active run's events count; anything else is stale.
    let active = app.active?;
    if event.run() != active.id || active.id.is_none() {
        return None;
    }
    app.dirty = true;
    let run = &mut app.exercises[active.exercise].runs[active.run];
    match event {
        Event::Ready(_) | Event::Fatal { .. } => unreachable!("handled above"),
        Event::Loading { component, .. } => {
            run.state = RowState::Loading;
            app.loading = Some(component);
        }
        Event::Loaded {
            component,
            load,
            warm_up,
            ..
        } => {
            app.loading = None;
            app.loaded.push(LoadNote {
                component,
                load,
                warm_up,
            });
        }
        Event::Started {
            total_steps,
            width,
            height,
            ..
        } => {
            app.loading = None;
            run.state = RowState::Running;
            run.total_steps = total_steps;
            run.size = Some((width, height));
        }
        Event::Encoded { text, .. } => {
            run.state = RowState::Running;
            run.text = Some(text);
        }
        Event::Step {
            index,
            total,
            timing,
            elapsed,
            ..
        } => {
            // A step older than one already counted is out of order: drop it.
            if index < run.steps_done {
                return None;
            }
            run.state = RowState::Running;
            run.total_steps = total;
            run.steps_done = index + 1;
            run.unet += timing.unet;
            run.scheduler += timing.scheduler;
            run.elapsed = elapsed;
        }
        Event::Preview { index, image, .. } => {
            if run.image_final || run.preview_index.is_some_and(|p| p >= index) {
                return None;
            }
            run.preview_index = Some(index);
            run.image = Some(Arc::new(image));
            run.image_gen += 1;
        }
        Event::Finished { report, image, .. } => {
            run.state = RowState::Finished;
            run.steps_done = report.steps;
            run.total_steps = report.steps;
            run.elapsed = report.timings.total;
            run.text = Some(report.timings.text);
            run.unet = report.timings.unet_total();
            run.scheduler = report.timings.scheduler_total();
            run.report = Some(report);
            run.image = Some(Arc::new(image));
            run.image_gen += 1;
            run.image_final = true;
            run.id = None;
            app.active = None;
            if app.exercises[active.exercise].landscape.is_some() {
                // Against its seed's reference, not the exercise's baseline.
                landscape::on_finished(app, active.exercise, active.run);
            } else {
                refresh_quality(&mut app.exercises[active.exercise]);
            }
            return next_in_queue(app);
        }
        Event::Cancelled { .. } => {
            run.state = RowState::Cancelled;
            run.id = None;
            app.active = None;
            app.loading = None;
            app.status = Some("cancelled".into());
            for (ex, r) in std::mem::take(&mut app.queue) {
                app.exercises[ex].runs[r].state = RowState::Pending;
            }
        }
        Event::Failed { error, .. } => {
            run.state = RowState::Failed;
            run.id = None;
            app.status = Some(format!(
                "{} failed: {}",
                run_label(app, active),
                first_line(&error)
            ));
            app.exercises[active.exercise].runs[active.run].error = Some(error);
            app.active = None;
            app.loading = None;
            return next_in_queue(app);
        }
    }
    None
}

fn run_label(app: &App, a: Active) -> String {
    app.exercises[a.exercise].exercise.runs[a.run].label.clone()
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Compares every finished run's image with the baseline's (PSNR, SSIM, mean abs difference) and
/// keeps the numbers in the run's state; runs without a final image, or the baseline itself, get
/// none. About 3 ms per comparison at 64×64 and tens of ms at 512×512, once per finished run.
fn refresh_quality(ex: &mut ExerciseState) {
    let finals: Vec<Option<&RgbImage>> = ex
        .runs
        .iter()
        .map(|r| {
            (r.image_final && r.state == RowState::Finished)
                .then_some(r.image.as_deref())
                .flatten()
        })
        .collect();
    let mut rows = vec![TableRow::default(); ex.runs.len()];
    for (row, run) in rows.iter_mut().zip(&ex.runs) {
        row.state = run.state;
    }
    crate::report::table::with_quality(&mut rows, &finals, ex.exercise.baseline);
    for (run, row) in ex.runs.iter_mut().zip(rows) {
        run.quality = row.quality;
    }
}

/// The timing table of an exercise, from the TUI's own per-run state. One function, so the
/// worker's accumulator can replace it.
pub fn table_rows(ex: &ExerciseState) -> Vec<TableRow> {
    let mut rows: Vec<TableRow> = ex
        .exercise
        .runs
        .iter()
        .zip(&ex.runs)
        .enumerate()
        .map(|(i, (spec, run))| {
            let mut row = TableRow {
                label: spec.label.clone(),
                scheduler: spec.scheduler.to_string(),
                steps: spec.steps,
                cfg: spec.cfg,
                unet: spec.unet.clone(),
                steps_done: run.steps_done,
                is_baseline: i == ex.exercise.baseline,
                state: run.state,
                quality: run.quality,
                ..TableRow::default()
            };
            match (&run.report, run.state) {
                (Some(r), RowState::Finished) => {
                    let t = &r.timings;
                    let unet = t.unet_total();
                    let n = t.unet.len().max(1) as f64;
                    row.total_ms = Some(ms(t.total));
                    row.text_ms = Some(ms(t.text));
                    row.unet_ms = Some(ms(unet));
                    row.unet_ms_per_step = Some(ms(unet) / n);
                    row.vae_ms = Some(ms(t.vae));
                    let secs = (unet + t.scheduler_total()).as_secs_f64();
                    row.its = (secs > 0.0).then(|| t.unet.len() as f64 / secs);
                }
                (_, RowState::Running | RowState::Loading) => {
                    row.partial = true;
                    if run.steps_done > 0 {
                        row.total_ms = Some(ms(run.elapsed));
                        row.unet_ms = Some(ms(run.unet));
                        row.unet_ms_per_step = Some(ms(run.unet) / run.steps_done as f64);
                        row.its = run.its();
                    }
                    row.text_ms = run.text.map(ms);
                }
                _ => {}
            }
            row
        })
        .collect();
    let base = rows
        .get(ex.exercise.baseline)
        .filter(|b| b.state == RowState::Finished)
        .and_then(|b| b.total_ms);
    for row in &mut rows {
        if let (Some(b), Some(t), RowState::Finished) = (base, row.total_ms, row.state) {
            row.speedup = (t > 0.0).then(|| b / t);
        }
    }
    rows
}
