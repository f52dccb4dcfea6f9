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
use crate::exercises::cheatsheet::Answers;
use crate::exercises::{Exercise, RunSpec};
use crate::models::ClipTokenizer;
use crate::models::tokenizer::Tokens;
use crate::pipeline::preview::PreviewKind;
use crate::pipeline::{Request, RunReport};
use crate::report::table::{RowState, TableRow, with_speedups};
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
    /// The loop read the control image `path` of exercise state `exercise` (see
    /// [`controls_to_load`]): the image, or why it could not.
    ControlLoaded {
        exercise: usize,
        path: PathBuf,
        result: Result<RgbImage, String>,
    },
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
    /// In the landscape: switch between the step sweep and the style-weight curve.
    Weights,
    /// The selected run's `style` adapter weight down / up by [`STYLE_STEP`], and rerun it.
    StyleDown,
    StyleUp,
    Help,
    Quit,
}

/// What `[` and `]` take from or add to the selected run's style weight.
pub const STYLE_STEP: f32 = 0.1;

/// The adapter `[` and `]` change: the pixel-art style LoRA of exercise 3.
pub const STYLE_ADAPTER: &str = "style";

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
        KeyCode::Char('W') => Action::Weights,
        KeyCode::Char('[') => Action::StyleDown,
        KeyCode::Char(']') => Action::StyleUp,
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
    (
        "[ / ]",
        "exercise 3: selected run's style LoRA weight −/+ 0.1, rerun it",
    ),
    ("p", "type your predictions for the exercise's questions"),
    (
        "s",
        "save images and timings (landscape: plot, points, summary)",
    ),
    (
        "L / W",
        "the speed landscape (L again: back); W: the style-weight curve",
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
    /// The run's table row: its settings, state, steps and times, as its events filled it in
    /// with [`TableRow::apply`] (the fold the headless runner uses too). [`table_rows`] reads it.
    pub row: TableRow,
    /// The run id while this panel waits for events from it.
    pub id: Option<RunId>,
    /// Steps the worker said the run takes (0 until `Started`).
    pub total_steps: usize,
    /// Image size in pixels (from `Started`).
    pub size: Option<(usize, usize)>,
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
    /// The ControlNet's time over the steps so far (ms; 0 for a run without control).
    pub controlnet_ms: f64,
}

impl RunState {
    /// A run of `spec` that has not started.
    pub fn new(spec: &RunSpec) -> Self {
        Self {
            row: spec.table_row(false),
            ..Self::default()
        }
    }

    /// Time left at the rate so far, from the steps' elapsed times (not a wall clock).
    pub fn eta(&self) -> Option<Duration> {
        let done = self.row.steps_done;
        if done == 0 || self.total_steps < done {
            return None;
        }
        let elapsed = self.row.total_ms? / 1e3;
        let per = elapsed / done as f64;
        Some(Duration::from_secs_f64(
            per * (self.total_steps - done) as f64,
        ))
    }

    /// Back to a run of `spec` that has not started (a new image generation, so the view
    /// drops the old picture).
    pub(super) fn reset(&mut self, spec: &RunSpec) {
        let image_gen = self.image_gen + 1;
        *self = RunState {
            image_gen,
            ..RunState::new(spec)
        };
    }

    /// Folds an event of this run into its row; `Started` also gives the image size and the
    /// step count.
    fn apply(&mut self, ev: &Event) {
        self.row.apply(ev);
        match ev {
            Event::Started { width, height, .. } => {
                self.size = Some((*width, *height));
                self.total_steps = self.row.steps;
                self.controlnet_ms = 0.0;
            }
            Event::Step { index, timing, .. } => {
                self.total_steps = self.row.steps;
                if *index + 1 == self.row.steps_done {
                    self.controlnet_ms += timing.controlnet.as_secs_f64() * 1e3;
                }
            }
            Event::Finished { report, .. } => {
                self.total_steps = self.row.steps;
                self.controlnet_ms = report.timings.controlnet_total().as_secs_f64() * 1e3;
            }
            _ => {}
        }
    }

    /// The ControlNet's time per step so far (`None` for a run without control or no step
    /// done) and, once finished, its control adherence (edge F1; `None` unmeasured).
    pub fn control_numbers(&self) -> (Option<f64>, Option<f64>) {
        let per_step = (self.controlnet_ms > 0.0 && self.row.steps_done > 0)
            .then(|| self.controlnet_ms / self.row.steps_done as f64);
        let f1 = crate::exercises::adherences(&[self.report.as_deref()])[0];
        (per_step, f1)
    }

    /// Marks the run `state` without an event of its own (the worker died, the queue was
    /// dropped).
    fn set_state(&mut self, state: RowState) {
        self.row.state = state;
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
    /// Why none of its runs can run on this model (an exercise under a ControlNet on a folder
    /// without one: cause and fix), said instead of a failure per run.
    pub blocked: Option<String>,
    /// The control image shown as the first panel of an exercise under a ControlNet.
    pub control_view: ControlView,
}

/// The control image panel: the file last read (by the loop, see [`controls_to_load`]) and
/// what came of it.
#[derive(Debug, Clone, Default)]
pub struct ControlView {
    pub path: Option<PathBuf>,
    pub image: Option<Arc<RgbImage>>,
    pub error: Option<String>,
    /// Bumped on every new image, so the view knows to re-encode.
    pub image_gen: u64,
}

impl ExerciseState {
    pub fn new(exercise: Exercise) -> Self {
        Self {
            runs: exercise.runs.iter().map(RunState::new).collect(),
            predictions: vec![None; exercise.questions.len()],
            saved: None,
            scenario: None,
            landscape: None,
            blocked: None,
            control_view: ControlView::default(),
            exercise,
        }
    }

    /// The control image its panel shows: the first controlled run's (`None` without control,
    /// and in the cheat sheet, whose panels are its two runs).
    pub fn control_image(&self) -> Option<&std::path::Path> {
        if self.scenario.is_some() || self.landscape.is_some() {
            return None;
        }
        self.exercise
            .runs
            .iter()
            .find_map(|r| r.control.as_ref())
            .map(|c| c.image.as_path())
    }

    /// Each run's edge F1 ([`crate::exercises::adherences`]), for the questions.
    pub fn adherence(&self) -> Vec<Option<f64>> {
        crate::exercises::adherences(
            &self
                .runs
                .iter()
                .map(|r| r.report.as_deref())
                .collect::<Vec<_>>(),
        )
    }

    /// Run `i` back to not started, as its spec now says (call it after changing the spec).
    pub fn reset_run(&mut self, i: usize) {
        self.runs[i].reset(&self.exercise.runs[i]);
    }
}

/// The run-editing form.
#[derive(Debug, Clone, PartialEq)]
pub struct Form {
    pub run: usize,
    /// prompt, steps, cfg, seed
    pub fields: [String; 4],
    /// The LoRA adapters the run may fuse at run time and each one's weight as typed (empty:
    /// not applied): the model folder's adapters, then the run's others (files). Focus
    /// `4 + i` edits adapter `i`.
    pub adapters: Vec<(String, String)>,
    pub focus: usize,
    /// Token count of the prompt field (`None` without a tokenizer).
    pub tokens: Option<(usize, usize)>,
    /// The run's control; its rows come after the adapters' (see [`ControlRow`]).
    pub control: ControlFields,
    pub error: Option<String>,
}

pub const FORM_LABELS: [&str; 4] = ["prompt", "steps", "cfg", "seed"];

/// The run editor's control rows, in order after the adapters'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlRow {
    /// ←/→ (or space) cycle through the model's ControlNets and "none".
    ControlNet,
    /// The control image's path, typed.
    Image,
    /// The conditioning scale, typed, or +/- by [`CONTROL_SCALE_STEP`].
    Scale,
    /// ←/→ (or space) toggle none/canny.
    Preprocess,
}

pub const CONTROL_ROWS: [ControlRow; 4] = [
    ControlRow::ControlNet,
    ControlRow::Image,
    ControlRow::Scale,
    ControlRow::Preprocess,
];

/// What `+` and `-` add to or take from the control scale in the editor.
pub const CONTROL_SCALE_STEP: f32 = 0.1;

/// A run's control as the editor holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlFields {
    /// The model folder's ControlNets, the choices after "none".
    pub choices: Vec<String>,
    /// The one picked (`None`: the run runs without control).
    pub controlnet: Option<String>,
    pub image: String,
    pub scale: String,
    pub preprocess: crate::pipeline::control::ControlPreprocess,
}

impl ControlFields {
    /// The editor's control rows for a run with `control`, on a folder with `choices`.
    pub fn new(control: Option<&crate::exercises::ControlSpec>, choices: &[String]) -> Self {
        use crate::pipeline::control::ControlPreprocess;
        Self {
            choices: choices.to_vec(),
            controlnet: control.map(|c| {
                c.controlnet
                    .clone()
                    .or_else(|| crate::exercises::pick_controlnet(choices).map(str::to_string))
                    .unwrap_or_default()
            }),
            image: control.map_or(String::new(), |c| c.image.display().to_string()),
            scale: control.map_or(1.0, |c| c.scale).to_string(),
            preprocess: control.map_or(ControlPreprocess::Canny, |c| c.preprocess),
        }
    }

    /// The next ControlNet (or "none") after or before the one picked.
    fn cycle(&mut self, forward: bool) {
        let mut all: Vec<Option<String>> = vec![None];
        all.extend(self.choices.iter().cloned().map(Some));
        if let Some(c) = &self.controlnet
            && !self.choices.contains(c)
        {
            all.push(Some(c.clone()));
        }
        let n = all.len();
        let at = all.iter().position(|c| *c == self.controlnet).unwrap_or(0);
        self.controlnet = all[if forward {
            (at + 1) % n
        } else {
            (at + n - 1) % n
        }]
        .clone();
    }

    fn toggle_preprocess(&mut self) {
        use crate::pipeline::control::ControlPreprocess;
        self.preprocess = match self.preprocess {
            ControlPreprocess::None => ControlPreprocess::Canny,
            _ => ControlPreprocess::None,
        };
    }

    /// The scale by `+`/`-` one [`CONTROL_SCALE_STEP`], kept within 0 and the maximum.
    fn nudge_scale(&mut self, up: bool) {
        let max = crate::pipeline::control::MAX_CONTROL_SCALE;
        let now: f32 = self.scale.trim().parse().unwrap_or(1.0);
        let step = if up {
            CONTROL_SCALE_STEP
        } else {
            -CONTROL_SCALE_STEP
        };
        let next = ((now + step) * 1000.0).round() / 1000.0;
        self.scale = next.clamp(0.0, max).to_string();
    }

    /// The run's control as typed, or why it cannot be (the row's name first).
    pub fn spec(&self) -> Result<Option<crate::exercises::ControlSpec>, String> {
        let Some(name) = &self.controlnet else {
            return Ok(None);
        };
        let image = self.image.trim();
        if image.is_empty() {
            return Err(
                "control image: the path of a PNG or JPEG (or pick ControlNet none)".into(),
            );
        }
        let scale = self
            .scale
            .trim()
            .parse::<f32>()
            .map_err(|_| format!("control scale: {:?} is not a number", self.scale.trim()))
            .and_then(|v| {
                crate::pipeline::control::check_scale(v)
                    .map_err(|e| format!("control scale: {}", e.to_string().replace('\n', " — ")))
            })?;
        Ok(Some(crate::exercises::ControlSpec {
            controlnet: Some(name.clone()),
            image: image.into(),
            scale,
            preprocess: self.preprocess,
        }))
    }
}

impl Form {
    /// Which control row has the focus, if one does.
    pub fn control_row(&self) -> Option<ControlRow> {
        self.focus
            .checked_sub(4 + self.adapters.len())
            .and_then(|k| CONTROL_ROWS.get(k).copied())
    }

    /// How many rows the form has: the fixed fields, the adapters, the control rows.
    fn rows(&self) -> usize {
        4 + self.adapters.len() + CONTROL_ROWS.len()
    }

    /// The text of the focused field (a fixed one, an adapter's weight, the control image or
    /// scale); `None` on a row picked with ←/→.
    fn field_mut(&mut self) -> Option<&mut String> {
        let adapters = self.adapters.len();
        match self.control_row() {
            Some(ControlRow::Image) => Some(&mut self.control.image),
            Some(ControlRow::Scale) => Some(&mut self.control.scale),
            Some(_) => None,
            None => match self.focus {
                f @ 0..4 => Some(&mut self.fields[f]),
                f if f - 4 < adapters => Some(&mut self.adapters[f - 4].1),
                _ => None,
            },
        }
    }

    /// The adapters with a weight typed, checked ([`crate::lora::AdapterWeight::check`]).
    fn loras(&self) -> Result<Vec<crate::lora::AdapterWeight>, String> {
        let mut out = Vec::new();
        for (name, text) in &self.adapters {
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            let a = text
                .parse::<f32>()
                .ok()
                .map(|weight| crate::lora::AdapterWeight {
                    adapter: name.clone(),
                    weight,
                })
                .filter(|a| a.check().is_ok())
                .ok_or_else(|| {
                    format!(
                        "LoRA {name}: a weight from -{m} to {m} (1 as trained; empty: not applied)",
                        m = crate::lora::MAX_WEIGHT
                    )
                })?;
            out.push(a);
        }
        Ok(out)
    }
}

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
    /// The newest preview's kind and what making it took (the help overlay shows it).
    pub last_preview: Option<(PreviewKind, Duration)>,
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
    /// The landscape's weight mode (`W`): its sweep, made into a state by the first `W`.
    pub weight_sweep: Option<crate::sweep::Sweep>,
    /// The landscape shows the style-weight curve, not the step sweep.
    pub weight_mode: bool,
    /// What the model folder holds: the exercises' prompts are this kind's.
    pub model_kind: ModelKind,
    /// The model folder's ControlNets, by name (the run editor cycles through them).
    pub controlnets: Vec<String>,
    /// The control each cheat-sheet scenario with a control image verifies under (the model's
    /// ControlNet, its image found): absent where the folder has no ControlNet.
    pub scenario_controls: std::collections::BTreeMap<char, crate::exercises::ControlSpec>,
    /// The model folder's one-step UNet variant, where it has one
    /// ([`crate::models::folder_one_step`]): exercise 2's fourth run, the cheat sheet's
    /// one-step answer.
    pub one_step: Option<String>,
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
            last_preview: None,
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
            weight_sweep: landscape::default_weight_sweep(),
            weight_mode: false,
            model_kind: ModelKind::Sd15,
            controlnets: Vec::new(),
            scenario_controls: Default::default(),
            one_step: None,
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

    /// The model folder `root` has the ControlNets `controlnets`: each exercise under a
    /// ControlNet gets one for its runs that name none, or is blocked with the reason
    /// ([`Exercise::fit_controls`]); each scenario in `scenario_controls` (see
    /// [`crate::exercises::cheatsheet::Scenario::control`]) is verified under its control.
    pub fn with_controlnets(
        mut self,
        root: &std::path::Path,
        controlnets: Vec<String>,
        scenario_controls: std::collections::BTreeMap<char, crate::exercises::ControlSpec>,
    ) -> Self {
        for state in &mut self.exercises {
            if state.scenario.is_some() || state.landscape.is_some() {
                continue;
            }
            match state.exercise.fit_controls(root, &controlnets) {
                Ok(()) => {
                    for i in 0..state.runs.len() {
                        state.reset_run(i);
                    }
                }
                Err(e) => state.blocked = Some(crate::report::describe_error(&e)),
            }
        }
        self.controlnets = controlnets;
        self.scenario_controls = scenario_controls;
        for i in 0..self.exercises.len() {
            cheat::sync_choice(&mut self, i);
        }
        self
    }

    /// The model folder's one-step UNet is `variant` ([`crate::models::folder_one_step`]): the
    /// exercises that ask for it gain its run ([`Exercise::with_one_step`]), and the cheat
    /// sheet's one-step answer can be verified.
    pub fn with_one_step(mut self, variant: Option<String>) -> Self {
        for state in &mut self.exercises {
            if state.scenario.is_some() || state.landscape.is_some() {
                continue;
            }
            let ex = state.exercise.clone().with_one_step(variant.as_deref());
            if ex.runs.len() != state.exercise.runs.len() {
                let blocked = state.blocked.take();
                *state = ExerciseState::new(ex);
                state.blocked = blocked;
            }
        }
        self.one_step = variant;
        for i in 0..self.exercises.len() {
            cheat::sync_choice(&mut self, i);
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
        match landscape::step_index(&self) {
            Some(i) => self.exercises[i] = state,
            None => self.exercises.push(state),
        }
        self
    }

    /// The landscape's weight mode runs `sweep` (from `[sweep]` in config.toml) instead of the
    /// default one.
    pub fn with_weight_sweep(mut self, sweep: crate::sweep::Sweep) -> Self {
        self.weight_sweep = Some(sweep);
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

    /// The list's entries: each exercise and the cheat sheet as one entry, by number, then the
    /// speed landscape; as the index of the state each one shows (the cheat sheet: its scenario
    /// last shown).
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
            // In number order: exercise 5 comes after the cheat sheet (4).
            let number = self.exercises[shown].exercise.number;
            let at = out
                .iter()
                .position(|&i| self.exercises[i].exercise.number > number)
                .unwrap_or(out.len());
            out.insert(at, shown);
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
                    app.exercises[exercise].reset_run(run);
                    app.exercises[exercise].runs[run].id = Some(id);
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
        Msg::ControlLoaded {
            exercise,
            path,
            result,
        } => {
            app.dirty = true;
            let view = &mut app.exercises.get_mut(exercise)?.control_view;
            view.path = Some(path);
            view.image_gen += 1;
            (view.image, view.error) = match result {
                Ok(img) => (Some(Arc::new(img)), None),
                Err(e) => (None, Some(e)),
            };
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
        Action::Weights => {
            app.status = Some(
                "W works in the landscape (L): it switches to the style LoRA's weight curve".into(),
            );
        }
        Action::StyleDown | Action::StyleUp => return on_style_key(app, action),
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
            if let Some(why) = &app.current().blocked {
                app.status = Some(why.replace('\n', " — "));
                return None;
            }
            let ex = app.selected;
            let runs: Vec<usize> = if action == Action::RunExercise {
                (0..n_runs).collect()
            } else {
                vec![app.selected_run]
            };
            for &r in &runs {
                app.exercises[ex].reset_run(r);
            }
            app.exercises[ex].saved = None;
            app.queue = runs.into_iter().map(|r| (ex, r)).collect();
            app.status = None;
            return next_in_queue(app);
        }
        Action::Edit => open_editor(app),
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

/// `e`: the run editor on the selected run (its prompt, steps, cfg, seed and adapter weights),
/// unless that run is going.
fn open_editor(app: &mut App) {
    if app
        .active
        .is_some_and(|a| a.exercise == app.selected && a.run == app.selected_run)
    {
        app.status = Some("this run is going: esc cancels it first".into());
        return;
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
    let folder = app.info.as_ref().map_or(&[][..], |i| &i.adapters[..]);
    app.mode = Mode::Edit(Form {
        run: app.selected_run,
        fields,
        adapters: form_adapters(&spec.lora, folder),
        focus: 0,
        tokens: app.count_tokens(&prompt),
        control: ControlFields::new(spec.control.as_ref(), &app.controlnets),
        error: None,
    });
}

/// The editor's adapter rows: each of the folder's adapters (`folder`, by name) with the run's
/// weight for it (empty when the run does not apply it), then the run's other adapters.
fn form_adapters(run: &[crate::lora::AdapterWeight], folder: &[String]) -> Vec<(String, String)> {
    let weight = |name: &str| {
        run.iter()
            .find(|a| a.adapter == name)
            .map_or(String::new(), |a| a.weight.to_string())
    };
    let mut rows: Vec<(String, String)> = folder.iter().map(|n| (n.clone(), weight(n))).collect();
    for a in run.iter().filter(|a| !folder.contains(&a.adapter)) {
        rows.push((a.adapter.clone(), a.weight.to_string()));
    }
    rows
}

/// `[` / `]`: the selected run's `style` adapter weight by ∓[`STYLE_STEP`] (its effective
/// weight, fused in its UNet variant or not, clamped to ±[`crate::lora::MAX_WEIGHT`]; see
/// [`RunSpec::set_adapter_weight`]), then that run again.
fn on_style_key(app: &mut App, action: Action) -> Option<Effect> {
    let Some(info) = app.info.as_ref() else {
        app.status = Some("the model is still opening: [ ] work once it is ready".into());
        return None;
    };
    if !info.adapters.iter().any(|a| a == STYLE_ADAPTER) {
        app.status = Some(format!(
            "this model folder has no {STYLE_ADAPTER} adapter (loras/{STYLE_ADAPTER}.safetensors), so [ ] cannot change its weight"
        ));
        return None;
    }
    if app.in_landscape() || app.in_cheat_sheet() {
        app.status =
            Some("[ ] change a run's style weight in the exercises (3: composability)".into());
        return None;
    }
    if app.fatal.is_some() || app.is_busy() {
        app.status = Some("a run is going: esc cancels it, then [ ] changes the weight".into());
        return None;
    }
    let fused = info.fused.clone();
    let (ex, run) = (app.selected, app.selected_run);
    let spec = &mut app.exercises[ex].exercise.runs[run];
    let max = crate::lora::MAX_WEIGHT;
    let step = if action == Action::StyleUp {
        STYLE_STEP
    } else {
        -STYLE_STEP
    };
    let now = spec.adapter_weight(STYLE_ADAPTER, &fused);
    let next = ((now + step) * 1000.0).round() / 1000.0;
    spec.set_adapter_weight(STYLE_ADAPTER, next.clamp(-max, max), &fused);
    let label = spec.label.clone();
    let unet = spec.unet_label();
    app.exercises[ex].reset_run(run);
    app.exercises[ex].saved = None;
    app.queue = [(ex, run)].into();
    app.status = Some(format!("{label}: UNet {unet}, running it again"));
    next_in_queue(app)
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
    let n = form.rows();
    let row = form.control_row();
    match key.code {
        KeyCode::Esc => {
            app.mode = Mode::Normal;
            return None;
        }
        KeyCode::Tab | KeyCode::Down => form.focus = (form.focus + 1) % n,
        KeyCode::BackTab | KeyCode::Up => form.focus = (form.focus + n - 1) % n,
        KeyCode::Left | KeyCode::Right | KeyCode::Char(' ')
            if row == Some(ControlRow::ControlNet) =>
        {
            form.control.cycle(key.code != KeyCode::Left)
        }
        KeyCode::Left | KeyCode::Right | KeyCode::Char(' ')
            if row == Some(ControlRow::Preprocess) =>
        {
            form.control.toggle_preprocess()
        }
        KeyCode::Char(c @ ('+' | '-')) if row == Some(ControlRow::Scale) => {
            form.control.nudge_scale(c == '+')
        }
        KeyCode::Backspace => {
            if let Some(f) = form.field_mut() {
                f.pop();
            }
        }
        KeyCode::Char(c) if !key.modifiers.contains(KeyModifiers::CONTROL) => {
            if let Some(f) = form.field_mut() {
                f.push(c);
            }
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
    let loras = form.loras()?;
    let control = form.control.spec()?;
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
    spec.lora = loras;
    spec.control = control;
    ex.reset_run(form.run);
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
    let questions = &app.current().exercise.questions;
    let n = questions.len();
    // A ratio is a positive number; a gap in edge F1 may be negative.
    let ratio = questions[input.question].measure.is_ratio();
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
        KeyCode::Char(c) if c.is_ascii_digit() || c == '.' || (c == '-' && !ratio) => {
            input.buffer.push(c)
        }
        KeyCode::Enter => {
            let text = input.buffer.trim();
            let value = if text.is_empty() {
                None
            } else {
                match text.parse::<f64>() {
                    Ok(v) if v.is_finite() && (v > 0.0 || !ratio) => Some(v),
                    _ => {
                        input.error = Some(if ratio {
                            "a positive number, e.g. 2.5".into()
                        } else {
                            "a difference in edge F1, e.g. 0.05 (negative: better than it)".into()
                        });
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
        Event::Ready(info) => return on_ready(app, info),
        Event::Fatal { error } => return on_fatal(app, error),
        _ => {}
    }
    // Only the active run's events count; anything else is stale.
    let active = app.active?;
    if event.run() != active.id || active.id.is_none() {
        return None;
    }
    app.dirty = true;
    let run = &mut app.exercises[active.exercise].runs[active.run];
    run.apply(&event);
    match event {
        Event::Loading { component, .. } => app.loading = Some(component),
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
        Event::Started { .. } => app.loading = None,
        Event::Preview {
            index,
            image,
            kind,
            took,
            ..
        } => {
            app.last_preview = Some((kind, took));
            on_preview(run, index, image);
        }
        Event::Finished { report, image, .. } => return on_finished(app, active, report, image),
        Event::Cancelled { .. } => on_cancelled(app, active),
        Event::Failed { error, .. } => return on_failed(app, active, error),
        Event::Ready(_) | Event::Fatal { .. } | Event::Encoded { .. } | Event::Step { .. } => {}
    }
    None
}

fn on_ready(app: &mut App, info: WorkerInfo) -> Option<Effect> {
    app.dirty = true;
    if !info.notes.is_empty() {
        app.status = Some(format!("note: {}", info.notes.join(" · ")));
    }
    app.info = Some(info);
    None
}

/// The worker died: nothing more can run.
fn on_fatal(app: &mut App, error: String) -> Option<Effect> {
    app.dirty = true;
    // A run under way when the worker died failed with it (not left "going" forever).
    if let Some(a) = app.active.take() {
        let run = &mut app.exercises[a.exercise].runs[a.run];
        run.set_state(RowState::Failed);
        run.id = None;
        run.error = Some(error.clone());
    }
    app.loading = None;
    app.fatal = Some(error);
    app.queue.clear();
    None
}

/// Shows a step's preview, unless a newer one (or the final image) is already shown.
fn on_preview(run: &mut RunState, index: usize, image: RgbImage) {
    if run.image_final || run.preview_index.is_some_and(|p| p >= index) {
        return;
    }
    run.preview_index = Some(index);
    run.image = Some(Arc::new(image));
    run.image_gen += 1;
}

/// The active run finished (its row already has the report's numbers): keeps the report and the
/// final image, measures quality, and submits the next queued run.
fn on_finished(
    app: &mut App,
    active: Active,
    report: Box<RunReport>,
    image: RgbImage,
) -> Option<Effect> {
    let run = &mut app.exercises[active.exercise].runs[active.run];
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
    next_in_queue(app)
}

/// The active run was cancelled: so are the runs queued after it.
fn on_cancelled(app: &mut App, active: Active) {
    app.exercises[active.exercise].runs[active.run].id = None;
    app.active = None;
    app.loading = None;
    app.status = Some("cancelled".into());
    for (ex, r) in std::mem::take(&mut app.queue) {
        app.exercises[ex].runs[r].set_state(RowState::Pending);
    }
}

/// The active run failed: its error is kept and shown, and the queue goes on.
fn on_failed(app: &mut App, active: Active, error: String) -> Option<Effect> {
    app.status = Some(format!(
        "{} failed: {}",
        run_label(app, active),
        first_line(&error)
    ));
    let run = &mut app.exercises[active.exercise].runs[active.run];
    run.id = None;
    run.error = Some(error);
    app.active = None;
    app.loading = None;
    next_in_queue(app)
}

fn run_label(app: &App, a: Active) -> String {
    app.exercises[a.exercise].exercise.runs[a.run].label.clone()
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// Compares every finished run's image with the baseline's (PSNR, SSIM, mean abs difference) and
/// keeps the numbers in the run's row; runs without a final image, or the baseline itself, get
/// none. About 3 ms per comparison at 64×64 and tens of ms at 512×512, once per finished run.
fn refresh_quality(ex: &mut ExerciseState) {
    let finals: Vec<Option<&RgbImage>> = ex
        .runs
        .iter()
        .map(|r| {
            (r.image_final && r.row.state == RowState::Finished)
                .then_some(r.image.as_deref())
                .flatten()
        })
        .collect();
    let mut rows: Vec<TableRow> = ex.runs.iter().map(|r| r.row.clone()).collect();
    crate::report::table::with_quality(&mut rows, &finals, ex.exercise.baseline);
    for (run, row) in ex.runs.iter_mut().zip(rows) {
        run.row.quality = row.quality;
    }
}

/// The timing table of an exercise: each run's row as its events made it
/// ([`TableRow::apply`], as in the headless runner), with the speedups against the baseline.
pub fn table_rows(ex: &ExerciseState) -> Vec<TableRow> {
    let mut rows: Vec<TableRow> = ex.runs.iter().map(|r| r.row.clone()).collect();
    with_speedups(&mut rows, ex.exercise.baseline);
    rows
}

/// The control images the loop must read for their panels: (exercise state, file) for each
/// state whose control image differs from the one its panel last read; the loop answers each
/// with [`Msg::ControlLoaded`].
pub fn controls_to_load(app: &App) -> Vec<(usize, PathBuf)> {
    app.exercises
        .iter()
        .enumerate()
        .filter_map(|(i, state)| {
            let wanted = state.control_image()?;
            (state.control_view.path.as_deref() != Some(wanted)).then(|| (i, wanted.to_path_buf()))
        })
        .collect()
}
