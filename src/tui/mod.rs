//! The interactive exercises: `speedscape` with no subcommand.
//!
//! - [`app`]: state and `update(&mut App, Msg) -> Option<Effect>` (pure)
//! - [`ui`]: `draw(&App, &mut Images, &mut Frame)` (pure drawing)
//! - [`images`]: the run panels' terminal graphics, encoded off the render path
//! - [`backend`]: the worker as a trait ([`RunBackend`]); `fake` is a test-only stand-in (unit
//!   tests and the `test-hooks` feature)
//! - [`save`]: saving an exercise's results ([`Saver`])
//! - [`landscape`]: the speed landscape (a step sweep, or with `W` the style-weight curve) as a
//!   list entry; `landscape_ui` draws it
//!
//! This module is the loop: a current-thread tokio runtime waits with `select!` on terminal
//! events, worker events, finished image encodes, signals and a ~30 fps frame timer, and draws
//! only when something changed. [`terminal`] decides whether the TUI can run here at all and
//! gives the terminal back on every way out (quit, error, SIGINT/SIGTERM/SIGHUP, the input
//! closing, a panic).

pub mod app;
pub mod backend;
pub mod cheat;
mod cheat_ui;
#[cfg(any(test, feature = "test-hooks"))]
pub mod fake;
pub mod images;
pub mod landscape;
mod landscape_ui;
pub mod save;
pub mod terminal;
#[cfg(test)]
mod tests;
pub mod ui;

use std::path::PathBuf;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use color_eyre::eyre::{WrapErr, eyre};
use crossterm::event::{Event as TermEvent, EventStream};
use futures_core::Stream;
use ratatui::Terminal;
use ratatui::backend::Backend;
use ratatui_image::picker::{Picker, ProtocolType, cap_parser::QueryStdioOptions};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

pub use app::{App, Effect, Msg, update};
pub use backend::RunBackend;
pub use images::{Encoder, Images};
pub use save::{FolderSaver, SaveRequest, Saver, SheetRun};

use crate::config::{Config, Graphics};
use crate::error::Fixable;
use crate::exercises::Exercise;
use crate::interrupt::{Interrupted, Signal};
use crate::runtime::Device;
use crate::worker::{Event, Job};

/// How `speedscape` (no subcommand) was asked to run.
pub struct Options {
    /// `--graphics`, else `[tui] graphics`.
    pub graphics: Graphics,
    /// Where the graphics choice came from, for the help line ("--graphics", "config.toml").
    pub graphics_source: &'static str,
    pub device: Option<Device>,
    pub model_dir: Option<PathBuf>,
    /// TEST ONLY (`--fake-backend`, feature `test-hooks`): no model, made-up events.
    #[cfg(feature = "test-hooks")]
    pub fake_backend: bool,
    /// Where `s` saves.
    pub save_root: PathBuf,
    /// `--rng`, else config.toml's `runtime.rng`, else torch-cuda.
    pub rng: Option<crate::rng::RngSource>,
}

/// The exercises the TUI offers: the defaults, replaced or extended by config.toml's `[[exercises]]`.
pub fn exercises(config: &Config) -> Vec<Exercise> {
    config.exercises()
}

/// `app` on the model folder in force: its ControlNets (exercise 5 blocked with the reason
/// where it has none; scenario B verified under one where it has one), and the built-in control
/// images found where speedscape is installed (an exercise whose image is nowhere is blocked
/// with that error). Without a model folder `app` stays as it is (the worker says why).
fn with_model_controls(
    app: App,
    config: &Config,
    model_dir: Option<&std::path::Path>,
    kind: crate::models::ModelKind,
) -> App {
    use crate::exercises::headless::{locate_control, locate_control_images};
    let Ok((dir, _)) = crate::open::model_dir(config, model_dir) else {
        return app;
    };
    let app = app.with_one_step(crate::models::folder_one_step(&dir));
    let controlnets = crate::models::controlnet::folder_controlnets(&dir);
    let scenario_controls = crate::exercises::cheatsheet::scenarios()
        .iter()
        .filter_map(|s| {
            let mut c = s.control(kind, &controlnets)?;
            locate_control(&mut c).ok()?;
            Some((s.key, c))
        })
        .collect();
    let mut app = app.with_controlnets(&dir, controlnets, scenario_controls);
    for state in &mut app.exercises {
        if state.blocked.is_none()
            && let Err(e) = locate_control_images(&mut state.exercise)
        {
            state.blocked = Some(crate::report::describe_error(&e));
        }
    }
    app
}

/// Reads the control images the panels want ([`app::controls_to_load`]) and hands each to the
/// app (its error as the panel shows it).
fn load_controls(app: &mut App) {
    for (exercise, path) in app::controls_to_load(app) {
        let result = crate::pipeline::control_image::load_control_image(&path)
            .map_err(|e| crate::report::describe_error(&e));
        update(
            app,
            Msg::ControlLoaded {
                exercise,
                path,
                result,
            },
        );
    }
}

/// Opens the TUI and runs it until `q`; the terminal is restored on every exit, error, signal
/// or panic. Refuses (before touching the terminal) where it cannot run: see
/// [`terminal::check`]. A signal ends it with an [`Interrupted`] error (`main` exits 128 + the
/// signal's number); the input closing ends it with an error.
pub fn run(config: &Config, opts: Options) -> color_eyre::Result<()> {
    terminal::check_this_process()?;
    // The landscape's sweep: `[sweep]` in config.toml (checked before the terminal is touched).
    let kind = crate::open::model_kind(config, opts.model_dir.as_deref());
    let sweep_config = config.sweep.for_model(kind);
    let one_step = crate::open::model_dir(config, opts.model_dir.as_deref())
        .ok()
        .and_then(|(dir, _)| crate::models::folder_one_step(&dir));
    let sweep = crate::sweep::Sweep::from_config_for(&sweep_config, None, one_step.as_deref())?;
    let weight_sweep = landscape::weight_sweep(&sweep_config)?;
    let (backend, events) = spawn_backend(config, &opts)?;
    let tokenizer = crate::open::model_dir(config, opts.model_dir.as_deref())
        .ok()
        .and_then(|(dir, _)| crate::models::ClipTokenizer::from_dir(&dir.join("tokenizer")).ok());
    let rng = opts.rng.unwrap_or(config.runtime.rng);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .wrap_err("starting the UI's event loop")?;
    // The signals are the loop's from before raw mode on, so none can kill the process with the
    // terminal still raw.
    let signals = {
        let _entered = runtime.enter();
        Signals::new().wrap_err("installing the signal handlers")?
    };
    // TEST ONLY (feature `test-hooks`): `SPEEDSCAPE_TEST_PANIC=ui` makes the key `!` panic on
    // the UI thread (tests/tui_terminal.sh checks that the terminal comes back and the report is
    // printed).
    #[cfg(feature = "test-hooks")]
    let panic_key = std::env::var_os("SPEEDSCAPE_TEST_PANIC").is_some_and(|v| v == "ui");

    let mut session = terminal::Session::enter()?;
    // Ask the terminal about graphics now: after the alternate screen, before reading events.
    let pick = pick_graphics(opts.graphics, opts.graphics_source);
    #[cfg(feature = "test-hooks")]
    images::test_log::graphics(&pick);
    let picker = pick.picker;
    let mut app = App::new(exercises(config), pick.how)
        .with_tokenizer(tokenizer)
        .with_sweep(&sweep)
        .with_weight_sweep(weight_sweep)
        .with_model_kind(kind);
    app = with_model_controls(app, config, opts.model_dir.as_deref(), kind);
    app.rng = rng;
    // The status line says at start when the terminal's graphics were changed, and why.
    app.status = pick.note;
    // The cheat-sheet answers kept from earlier sessions; a damaged file is named and left as it
    // is (answers then live in memory only, and every save attempt says why it is refused).
    match crate::exercises::cheatsheet::Answers::load(&save::answers_path(&opts.save_root)) {
        Ok(answers) => app = app.with_answers(answers),
        Err(e) => {
            app.status = Some(
                format!("{e}")
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
    }
    let saver = FolderSaver {
        root: opts.save_root.clone(),
    };
    let end = runtime.block_on(event_loop(
        &mut session.terminal,
        &mut app,
        picker,
        backend.as_ref(),
        events,
        &saver,
        Input {
            events: EventStream::new(),
            signals,
            #[cfg(feature = "test-hooks")]
            panic_key,
        },
    ));
    drop(session);
    // The runs' own panics were shown as their errors; any panic is printed in full now that
    // the screen is the shell's again.
    let mut panics: Vec<(String, usize)> = Vec::new();
    for p in terminal::take_background_panics() {
        match panics.iter_mut().find(|(q, _)| *q == p) {
            Some((_, n)) => *n += 1,
            None => panics.push((p, 1)),
        }
    }
    for (p, n) in &panics {
        use std::io::Write;
        let times = if *n > 1 {
            format!(" ({n} times)")
        } else {
            String::new()
        };
        let _ = writeln!(
            std::io::stderr(),
            "speedscape: {p}{times}\n{}",
            terminal::BUG_HINT
        );
    }
    match end? {
        End::Quit => Ok(()),
        End::Signal { signal, stopped } => Err(Interrupted {
            signal,
            what: stopped,
        }
        .into()),
        End::InputClosed { stopped } => Err(eyre!(Fixable::new(
            format!("the terminal's input closed (end of file), so speedscape stopped: {stopped}"),
            format!(
                "run speedscape in a terminal that stays open; for unattended runs use {}",
                terminal::HEADLESS_HINT
            ),
        ))),
    }
}

/// The worker on the model, or (feature `test-hooks`, `--fake-backend`) the fake backend.
fn spawn_backend(config: &Config, opts: &Options) -> color_eyre::Result<backend::Spawned> {
    #[cfg(feature = "test-hooks")]
    if opts.fake_backend {
        return Ok(fake::spawn(Duration::from_millis(40)));
    }
    backend::spawn_worker(config, opts.device, opts.model_dir.clone())
}

fn protocol_of(g: Graphics) -> Option<ProtocolType> {
    match g {
        Graphics::Auto => None,
        Graphics::Kitty => Some(ProtocolType::Kitty),
        Graphics::Sixel => Some(ProtocolType::Sixel),
        Graphics::Iterm2 => Some(ProtocolType::Iterm2),
        Graphics::Halfblocks => Some(ProtocolType::Halfblocks),
    }
}

/// How the run panels draw images, and why.
pub struct GraphicsPick {
    pub picker: Picker,
    /// How it was chosen, for the help line: "detected", "set by --graphics", or `note`.
    pub how: String,
    /// The protocol detected or asked for does not work on this terminal: what is used instead
    /// and why (the status line shows it at start).
    pub note: Option<String>,
    /// What the terminal said about itself (`None`: not asked, halfblocks were set).
    pub terminal: Option<terminal::Identity>,
}

/// The picker for `graphics` (`source`: where that came from) and how it was chosen: the
/// terminal is asked who it is ([`terminal::identify`]) and what it can draw (ratatui-image's
/// query), then [`images::fit_protocol`] keeps placeholder kitty graphics off an old kitty.
/// Stdin and stdout are a terminal ([`terminal::check`] passed).
pub fn pick_graphics(graphics: Graphics, source: &str) -> GraphicsPick {
    if graphics == Graphics::Halfblocks {
        return GraphicsPick {
            picker: Picker::halfblocks(),
            how: format!("set by {source}"),
            note: None,
            terminal: None,
        };
    }
    let identity = terminal::identify();
    let (mut picker, how) = query_picker(graphics, source);
    let sixel = picker
        .capabilities()
        .contains(&ratatui_image::picker::Capability::Sixel);
    let forced_by = (graphics != Graphics::Auto).then_some(source);
    let (protocol, note) = images::fit_protocol(
        picker.protocol_type(),
        identity.terminal(),
        sixel,
        forced_by,
    );
    picker.set_protocol_type(protocol);
    GraphicsPick {
        picker,
        how: note.clone().unwrap_or(how),
        note,
        terminal: Some(identity),
    }
}

/// ratatui-image's capability query, with `graphics` forced over its answer where set.
fn query_picker(graphics: Graphics, source: &str) -> (Picker, String) {
    let options = QueryStdioOptions {
        timeout: Duration::from_millis(1000),
        ..QueryStdioOptions::default()
    };
    let timeout = options.timeout;
    let started = std::time::Instant::now();
    let queried = Picker::from_query_stdio_with_options(options);
    let unanswered = started.elapsed() >= timeout;
    if unanswered {
        // No answer in time (e.g. a detached tmux): ratatui-image's reader thread still waits on
        // stdin and would eat the first keys. A plain DA1 query, which every terminal (and tmux
        // itself) answers, gives it the reply it waits for so it ends.
        use std::io::Write;
        let mut out = std::io::stdout();
        let _ = out.write_all(b"\x1b[c");
        let _ = out.flush();
        std::thread::sleep(Duration::from_millis(100));
    }
    match (queried, protocol_of(graphics)) {
        (Ok(p), None) if unanswered => (p, "the terminal did not answer: halfblocks".into()),
        (Ok(p), None) => (p, "detected".into()),
        (Ok(mut p), Some(t)) => {
            p.set_protocol_type(t);
            (p, format!("set by {source}"))
        }
        (Err(e), None) => (
            Picker::halfblocks(),
            format!("the terminal did not answer ({e}): halfblocks"),
        ),
        (Err(_), Some(t)) => {
            let mut p = Picker::halfblocks();
            p.set_protocol_type(t);
            (p, format!("set by {source}; font size unknown"))
        }
    }
}

/// SIGINT, SIGTERM and SIGHUP, as the loop waits for them.
pub struct Signals(Vec<(Signal, tokio::signal::unix::Signal)>);

impl Signals {
    /// Takes the three signals over (inside a tokio runtime with I/O enabled).
    pub fn new() -> std::io::Result<Signals> {
        let mut v = Vec::new();
        for s in Signal::ALL {
            v.push((s, tokio::signal::unix::signal(s.kind())?));
        }
        Ok(Signals(v))
    }

    /// None ever comes (tests).
    pub fn none() -> Signals {
        Signals(Vec::new())
    }

    async fn recv(&mut self) -> Signal {
        std::future::poll_fn(|cx| {
            for (signal, stream) in &mut self.0 {
                if let Poll::Ready(Some(())) = stream.poll_recv(cx) {
                    return Poll::Ready(*signal);
                }
            }
            Poll::Pending
        })
        .await
    }
}

/// What the loop reads besides the worker: the terminal's events, the signals.
pub struct Input<S> {
    pub events: S,
    pub signals: Signals,
    /// TEST ONLY (feature `test-hooks`): the key `!` panics (see [`run`]).
    #[cfg(feature = "test-hooks")]
    pub panic_key: bool,
}

/// Why the loop ended.
#[derive(Debug, PartialEq)]
pub enum End {
    /// `q` or ctrl-c.
    Quit,
    /// A signal; `stopped` says what was cancelled.
    Signal { signal: Signal, stopped: String },
    /// The terminal's events ended (end of file).
    InputClosed { stopped: String },
}

async fn next_term_event<S>(stream: &mut S) -> Option<std::io::Result<TermEvent>>
where
    S: Stream<Item = std::io::Result<TermEvent>> + Unpin,
{
    std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)).await
}

/// Cancels the active run and drops the queue (the loop is ending); says what that stopped.
fn stop_runs(app: &mut App, backend: &dyn RunBackend) -> String {
    let queued = std::mem::take(&mut app.queue).len();
    let Some(active) = app.active else {
        return "no run was going".into();
    };
    if let Some(id) = active.id {
        backend.cancel(id);
    }
    let label = &app.exercises[active.exercise].exercise.runs[active.run].label;
    let after = match queued {
        0 => String::new(),
        1 => ", and the run queued after it dropped".into(),
        n => format!(", and the {n} runs queued after it dropped"),
    };
    format!("the run under way ({label}) was cancelled{after}")
}

#[allow(clippy::too_many_arguments)]
async fn event_loop<B, S>(
    terminal: &mut Terminal<B>,
    app: &mut App,
    picker: Picker,
    backend: &dyn RunBackend,
    mut worker: UnboundedReceiver<Event>,
    saver: &dyn Saver,
    mut input: Input<S>,
) -> color_eyre::Result<End>
where
    B: Backend,
    B::Error: std::error::Error + Send + Sync + 'static,
    S: Stream<Item = std::io::Result<TermEvent>> + Unpin,
{
    let (enc_tx, mut encoded) = unbounded_channel();
    let mut images = Images::new(picker, Encoder::Threaded(enc_tx));
    let mut frame = tokio::time::interval(Duration::from_millis(33));
    frame.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut worker_open = true;
    let mut redraw = true;
    let mut stats = LoopStats::default();
    while !app.quit {
        load_controls(app);
        let msg = tokio::select! {
            signal = input.signals.recv() => {
                let stopped = stop_runs(app, backend);
                stats.write_if_asked();
                return Ok(End::Signal { signal, stopped });
            }
            ev = next_term_event(&mut input.events) => match ev {
                Some(Ok(TermEvent::Key(key))) => {
                    #[cfg(feature = "test-hooks")]
                    if input.panic_key && key.code == crossterm::event::KeyCode::Char('!') {
                        panic!("SPEEDSCAPE_TEST_PANIC=ui: a deliberate panic on the UI thread (test only)");
                    }
                    Some(Msg::Key(key))
                }
                Some(Ok(TermEvent::Resize(..))) => {
                    redraw = true;
                    None
                }
                Some(Ok(_)) => None,
                Some(Err(e)) => {
                    stop_runs(app, backend);
                    return Err(e).wrap_err("reading terminal events");
                }
                None => {
                    let stopped = stop_runs(app, backend);
                    stats.write_if_asked();
                    return Ok(End::InputClosed { stopped });
                }
            },
            ev = worker.recv(), if worker_open => match ev {
                Some(ev) => Some(Msg::Worker(ev)),
                None => {
                    worker_open = false;
                    if app.fatal.is_none() {
                        // A thread that died of a panic left its message with the panic hook.
                        let error = match terminal::take_background_panics().first() {
                            Some(p) => Fixable::new(
                                format!("the inference worker stopped: {p}"),
                                "this is a bug in speedscape; please report it with this message",
                            )
                            .to_string(),
                            None => "the inference worker stopped".to_string(),
                        };
                        Some(Msg::Worker(Event::Fatal { error }))
                    } else {
                        None
                    }
                }
            },
            Some(done) = encoded.recv() => {
                redraw |= images.on_encoded(done);
                None
            },
            _ = frame.tick() => {
                if redraw || app.dirty {
                    draw(terminal, app, &mut images, &mut stats)?;
                    redraw = false;
                }
                None
            },
        };
        let Some(msg) = msg else { continue };
        let is_key = matches!(msg, Msg::Key(_));
        if is_key {
            stats.key_received(app.active.is_some());
        }
        let mut effect = update(app, msg);
        while let Some(e) = effect.take() {
            effect = carry_out(app, e, backend, saver);
        }
        // A key's effect is drawn at once, not at the next frame tick.
        if is_key && app.dirty && !app.quit {
            draw(terminal, app, &mut images, &mut stats)?;
            redraw = false;
        }
    }
    stats.write_if_asked();
    Ok(End::Quit)
}

fn draw<B>(
    terminal: &mut Terminal<B>,
    app: &mut App,
    images: &mut Images,
    stats: &mut LoopStats,
) -> color_eyre::Result<()>
where
    B: Backend,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let start = std::time::Instant::now();
    images.sync(app);
    terminal.draw(|f| ui::draw(app, images, f))?;
    app.dirty = false;
    stats.drawn(start, app.active.is_some());
    Ok(())
}

/// How long frames take to draw and keys to show their effect, kept while the UI runs and
/// written as JSON to the file named by `SPEEDSCAPE_UI_STATS` on exit (the e2e test reads it).
#[derive(Default)]
struct LoopStats {
    /// Draw times (ms), and whether a run was going.
    frames: Vec<(f64, bool)>,
    /// A key waiting for the draw that shows it: when it arrived, and whether a run was going.
    pending_key: Option<(std::time::Instant, bool)>,
    /// Key received → its effect drawn (ms), and whether a run was going.
    keys: Vec<(f64, bool)>,
}

impl LoopStats {
    fn key_received(&mut self, running: bool) {
        self.pending_key
            .get_or_insert((std::time::Instant::now(), running));
    }

    fn drawn(&mut self, start: std::time::Instant, running: bool) {
        let now = std::time::Instant::now();
        self.frames
            .push(((now - start).as_secs_f64() * 1e3, running));
        if let Some((at, was_running)) = self.pending_key.take() {
            self.keys
                .push(((now - at).as_secs_f64() * 1e3, was_running));
        }
    }

    fn summary(values: impl Iterator<Item = f64>) -> serde_json::Value {
        let mut v: Vec<f64> = values.collect();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return serde_json::json!({ "count": 0 });
        }
        let pct = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
        serde_json::json!({
            "count": v.len(),
            "mean_ms": v.iter().sum::<f64>() / v.len() as f64,
            "p50_ms": pct(0.5),
            "p95_ms": pct(0.95),
            "max_ms": v[v.len() - 1],
        })
    }

    fn write_if_asked(&self) {
        let Some(path) = std::env::var_os("SPEEDSCAPE_UI_STATS") else {
            return;
        };
        let pick = |xs: &[(f64, bool)], running: bool| {
            Self::summary(xs.iter().filter(move |x| x.1 == running).map(|x| x.0))
        };
        let value = serde_json::json!({
            "frame_draw_while_running": pick(&self.frames, true),
            "frame_draw_idle": pick(&self.frames, false),
            "key_to_drawn_while_running": pick(&self.keys, true),
            "key_to_drawn_idle": pick(&self.keys, false),
        });
        // Best effort: the terminal is being restored; a failed write only loses the stats.
        let text = format!("{value:#}\n");
        let _ = crate::report::write_atomic(std::path::Path::new(&path), |f| {
            f.write_all(text.as_bytes())?;
            Ok(())
        });
    }
}

/// Does what an update asked; returns the follow-up effect of feeding the result back.
fn carry_out(
    app: &mut App,
    effect: Effect,
    backend: &dyn RunBackend,
    saver: &dyn Saver,
) -> Option<Effect> {
    match effect {
        Effect::Submit {
            exercise,
            run,
            request,
        } => {
            let id = backend.next_run_id();
            backend.submit(Job {
                run: id,
                request: *request,
            });
            update(app, Msg::Submitted { exercise, run, id })
        }
        Effect::Cancel(id) => {
            backend.cancel(id);
            None
        }
        Effect::Quit { cancel } => {
            if let Some(id) = cancel {
                backend.cancel(id);
            }
            app.quit = true;
            None
        }
        Effect::Save(exercise) => {
            let result = save(app, exercise, saver).map_err(|e| format!("{e:#}"));
            update(app, Msg::Saved(result))
        }
        Effect::SaveSheet => {
            let result = save_sheet(app, saver).map_err(|e| format!("{e:#}"));
            update(app, Msg::Saved(result))
        }
        Effect::SaveLandscape => {
            let result = match landscape::index(app).and_then(|i| landscape::outcome(app, i)) {
                Some(outcome) => saver.save_sweep(&outcome).map_err(|e| format!("{e:#}")),
                None => Err("the worker is not ready, so nothing has run yet".into()),
            };
            update(app, Msg::Saved(result))
        }
        Effect::SaveAnswers(answers) => {
            let result = saver.save_answers(&answers).map_err(|e| format!("{e:#}"));
            update(app, Msg::AnswersSaved(result))
        }
    }
}

/// What there is to save of exercise `i`.
fn save_request(app: &App, i: usize) -> SaveRequest<'_> {
    let ex = &app.exercises[i];
    SaveRequest {
        exercise: &ex.exercise,
        rows: app::table_rows(ex),
        images: ex
            .runs
            .iter()
            .map(|r| r.image.as_deref().filter(|_| r.image_final))
            .collect(),
        reports: ex.runs.iter().map(|r| r.report.as_deref()).collect(),
        predictions: ex.predictions.clone(),
    }
}

/// The cheat sheet with every scenario that has a finished run.
fn save_sheet(app: &App, saver: &dyn Saver) -> color_eyre::Result<PathBuf> {
    let verified: Vec<SheetRun> = (0..app.exercises.len())
        .filter_map(|i| {
            let s = cheat::scenario_of(app, i)?;
            let ex = &app.exercises[i];
            ex.runs
                .iter()
                .any(|r| r.report.is_some())
                .then(|| SheetRun {
                    key: s.key,
                    choice: cheat::choice(app, &s),
                    constraint: cheat::constraint(app, &s),
                    request: save_request(app, i),
                })
        })
        .collect();
    saver.save_sheet(&app.answers, &verified)
}

fn save(app: &App, exercise: usize, saver: &dyn Saver) -> color_eyre::Result<PathBuf> {
    saver.save_exercise(&save_request(app, exercise))
}
