//! The inference thread: it owns the runtime, the model and every ONNX session (loaded once,
//! lazily, and kept), takes [`Job`]s one at a time and reports [`Event`]s. The UI never blocks on
//! it; the headless `speedscape exercise` drives the same thread.
//!
//! Every run has a fresh [`RunId`]; a consumer drops events whose id it no longer waits for.
//! Cancel: [`WorkerHandle::cancel`] sets the run's flag (checked between steps) and terminates a
//! UNet call already under way (`RunOptions::terminate`).

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use color_eyre::eyre::eyre;
use image::RgbImage;
use ndarray::{Array3, Array4, Axis};
use ort::session::RunOptions;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::config::Config;
use crate::error::Fixable;
use crate::models::Model;
use crate::pipeline::{self, Phase, Request, RunControl, RunReport, StepTiming};
use crate::runtime::{Device, Provider, Runtime};

/// Identifies one run for its whole life; never reused within a process.
pub type RunId = u64;

/// One image to make.
#[derive(Debug, Clone)]
pub struct Job {
    pub run: RunId,
    pub request: Request,
}

/// What the worker says once its runtime and model are open.
#[derive(Debug, Clone)]
pub struct WorkerInfo {
    pub provider: Provider,
    /// The GPU's name (CUDA) or the CPU's, for the header.
    pub device: String,
    pub model_dir: std::path::PathBuf,
    /// The random-weight tiny model: noise-like images.
    pub tiny_model: bool,
    /// What the model folder holds.
    pub kind: crate::models::ModelKind,
    /// The micro model's world (what its prompts may say); `None` for other kinds.
    pub grammar: Option<Box<crate::models::Grammar>>,
    /// Native image size (pixels).
    pub image_size: usize,
    /// Fallbacks taken while starting (`device auto` on the CPU, a missing scheduler config):
    /// the TUI shows them, never silently.
    pub notes: Vec<String>,
    /// The model's UNet variants (config.toml's, with the manifest's added).
    pub variants: Vec<crate::models::Variant>,
    /// The scheduler config in force (see [`crate::models::Model::scheduler_config`]).
    pub scheduler_config: serde_json::Value,
    /// The model folder has a CLIP scorer (`clip_image_encoder/`): a request with
    /// `clip_score: true` gets [`RunReport::clip_score`]. Without one the score is absent, so a
    /// view shows no CLIP column rather than zeros.
    pub clip_scorer: bool,
}

/// What the worker reports: `Ready` (or `Fatal`) first, then for each run, in order:
/// `Loading`/`Loaded` for each component (text encoder, UNet, VAE decoder) the worker has not
/// used before, with its session-creation time and an untimed warm-up pass at the run's size,
/// and for the CLIP scorer (`clip_image_encoder`, no warm-up) the first time a run asks for a
/// CLIP score on a model that has one, all before the timed run; `Started`, `Encoded`, then
/// `Step` and `Preview` per step, then exactly one of `Finished`, `Cancelled`, `Failed`. A run
/// cancelled while queued gets `Cancelled` alone.
#[derive(Debug, Clone)]
pub enum Event {
    /// The runtime and the model are open (first event of the worker).
    Ready(WorkerInfo),
    /// The runtime or the model could not be opened; the worker stops. Cause and fix inside.
    Fatal {
        error: String,
    },
    /// A component's session is being created (e.g. "unet_lcm").
    Loading {
        run: RunId,
        component: String,
    },
    /// Session created and warmed up; times are apart from the run's.
    Loaded {
        run: RunId,
        component: String,
        load: Duration,
        warm_up: Duration,
    },
    /// The timed run begins.
    Started {
        run: RunId,
        total_steps: usize,
        /// Image size in pixels.
        width: usize,
        height: usize,
    },
    /// Prompt(s) tokenized and encoded.
    Encoded {
        run: RunId,
        text: Duration,
    },
    /// One denoising step done (0-based `index`).
    Step {
        run: RunId,
        index: usize,
        total: usize,
        timestep: i64,
        timing: StepTiming,
        /// Since `Started`.
        elapsed: Duration,
    },
    /// The cheap per-step preview: x0 prediction → RGB at latent resolution.
    Preview {
        run: RunId,
        index: usize,
        image: RgbImage,
    },
    /// The run is complete: the full VAE-decoded image and the report (all timings).
    Finished {
        run: RunId,
        report: Box<RunReport>,
        image: RgbImage,
    },
    Cancelled {
        run: RunId,
    },
    /// The error, with its cause and fix, as the user should read it.
    Failed {
        run: RunId,
        error: String,
    },
}

impl Event {
    /// The run this event belongs to (`None` for `Ready` and `Fatal`).
    pub fn run(&self) -> Option<RunId> {
        match self {
            Event::Ready(_) | Event::Fatal { .. } => None,
            Event::Loading { run, .. }
            | Event::Loaded { run, .. }
            | Event::Started { run, .. }
            | Event::Encoded { run, .. }
            | Event::Step { run, .. }
            | Event::Preview { run, .. }
            | Event::Finished { run, .. }
            | Event::Cancelled { run }
            | Event::Failed { run, .. } => Some(*run),
        }
    }

    /// `Finished`, `Cancelled` or `Failed`: nothing more comes for this run.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Event::Finished { .. } | Event::Cancelled { .. } | Event::Failed { .. }
        )
    }
}

/// Run ids are unique in the process, across handles.
static NEXT_RUN: AtomicU64 = AtomicU64::new(1);

/// The run under way, as `cancel` reaches it.
struct Active {
    run: RunId,
    cancel: Arc<AtomicBool>,
    options: Arc<RunOptions>,
}

impl Active {
    fn stop(&self) {
        self.cancel.store(true, Ordering::SeqCst);
        // A failed terminate only means the call runs to its end; the flag still stops the run.
        let _ = self.options.terminate();
    }
}

/// What the handle and the thread share, under one lock (so a cancel never falls between a
/// job leaving the queue and its run starting).
#[derive(Default)]
struct Shared {
    active: Option<Active>,
    /// Runs cancelled before they started.
    cancelled: HashSet<RunId>,
    /// Every run from now on is cancelled (a signal stops a headless command).
    cancel_all: bool,
    stopping: bool,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The UI's (or the headless runner's) end of the inference thread.
pub struct WorkerHandle {
    jobs: Option<mpsc::Sender<Job>>,
    shared: Arc<Mutex<Shared>>,
    thread: Option<JoinHandle<()>>,
}

impl WorkerHandle {
    /// Starts the inference thread; it opens the runtime (`device`, else config's) and the
    /// model (`model_dir`, else config's, else the embedded tiny model), then sends `Ready`
    /// (or `Fatal` and stops).
    pub fn spawn(
        config: Config,
        device: Option<Device>,
        model_dir: Option<PathBuf>,
    ) -> (WorkerHandle, UnboundedReceiver<Event>) {
        let (events_tx, events_rx) = unbounded_channel();
        let (jobs_tx, jobs_rx) = mpsc::channel();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let thread_shared = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name("speedscape-worker".into())
            .spawn(move || {
                worker_main(
                    config,
                    device,
                    model_dir,
                    jobs_rx,
                    Sender(events_tx),
                    thread_shared,
                )
            });
        let thread = match spawned {
            Ok(t) => Some(t),
            Err(e) => {
                // The receiver is still ours here: say why nothing will come.
                let (tx, rx) = unbounded_channel();
                let _ = tx.send(Event::Fatal {
                    error: Fixable::new(
                        format!("could not start the inference thread: {e}"),
                        "free some memory or threads and start again",
                    )
                    .to_string(),
                });
                return (
                    WorkerHandle {
                        jobs: None,
                        shared,
                        thread: None,
                    },
                    rx,
                );
            }
        };
        (
            WorkerHandle {
                jobs: Some(jobs_tx),
                shared,
                thread,
            },
            events_rx,
        )
    }

    /// Queues `job`; jobs run one at a time, in the order submitted. If the thread has
    /// stopped, nothing happens (its `Fatal`, or the closed event channel, says why).
    pub fn submit(&self, job: Job) {
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send(job);
        }
    }

    /// Cancels `run`, queued or under way: it ends with `Cancelled` (a UNet or VAE call under
    /// way is terminated). Cancelling a finished or unknown run does nothing visible.
    pub fn cancel(&self, run: RunId) {
        let mut shared = lock(&self.shared);
        match &shared.active {
            Some(active) if active.run == run => active.stop(),
            _ => {
                shared.cancelled.insert(run);
            }
        }
    }

    /// A handle that cancels every run, under way or to come, from any thread (a signal
    /// handler's hook): each ends with `Cancelled`.
    pub fn canceller(&self) -> Canceller {
        Canceller {
            shared: Arc::clone(&self.shared),
        }
    }

    /// A fresh run id, larger than every one handed out before in this process.
    pub fn next_run_id(&self) -> RunId {
        NEXT_RUN.fetch_add(1, Ordering::Relaxed)
    }

    /// Stops the thread (cancelling a run under way, dropping queued jobs) and waits for it.
    pub fn shutdown(mut self) {
        self.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn stop(&mut self) {
        {
            let mut shared = lock(&self.shared);
            shared.stopping = true;
            if let Some(active) = &shared.active {
                active.stop();
            }
        }
        // Closing the queue wakes the thread if it waits for a job.
        self.jobs = None;
    }
}

impl Drop for WorkerHandle {
    /// Asks the thread to stop (cancelling a run under way) without waiting for it.
    fn drop(&mut self) {
        self.stop();
    }
}

/// See [`WorkerHandle::canceller`].
#[derive(Clone)]
pub struct Canceller {
    shared: Arc<Mutex<Shared>>,
}

impl Canceller {
    /// Cancels the run under way and every run submitted before or after.
    pub fn cancel_all(&self) {
        let mut shared = lock(&self.shared);
        shared.cancel_all = true;
        if let Some(active) = &shared.active {
            active.stop();
        }
    }
}

/// The consumer went away: the worker stops.
struct Gone;

#[derive(Clone)]
struct Sender(UnboundedSender<Event>);

impl Sender {
    fn send(&self, ev: Event) -> Result<(), Gone> {
        self.0.send(ev).map_err(|_| Gone)
    }
}

fn worker_main(
    config: Config,
    device: Option<Device>,
    model_dir: Option<PathBuf>,
    jobs: mpsc::Receiver<Job>,
    events: Sender,
    shared: Arc<Mutex<Shared>>,
) {
    let opened = std::panic::catch_unwind(AssertUnwindSafe(|| {
        Worker::open(&config, device, model_dir.as_deref(), events.clone())
    }))
    .unwrap_or_else(|p| {
        Err(eyre!(
            "the inference thread panicked while starting: {}",
            panic_text(&p)
        ))
    });
    let mut worker = match opened {
        Ok(w) => w,
        Err(e) => {
            let _ = events.send(Event::Fatal {
                error: describe_error(&e),
            });
            return;
        }
    };
    if events.send(Event::Ready(worker.info.clone())).is_err() {
        return;
    }
    // TEST ONLY: `SPEEDSCAPE_TEST_PANIC=worker` makes every run panic here (tests/tui_terminal.sh
    // checks that the TUI shows it as the run's error and keeps going).
    let test_panic = std::env::var_os("SPEEDSCAPE_TEST_PANIC").is_some_and(|v| v == "worker");
    while let Ok(job) = jobs.recv() {
        let active = {
            let mut s = lock(&shared);
            if s.stopping {
                return;
            }
            if s.cancelled.remove(&job.run) || s.cancel_all {
                None
            } else {
                match RunOptions::new() {
                    Ok(options) => {
                        let active = Active {
                            run: job.run,
                            cancel: Arc::new(AtomicBool::new(false)),
                            options: Arc::new(options),
                        };
                        let pair = (Arc::clone(&active.cancel), Arc::clone(&active.options));
                        s.active = Some(active);
                        Some(Ok(pair))
                    }
                    Err(e) => Some(Err(eyre!("ONNX Runtime could not create run options: {e}"))),
                }
            }
        };
        let sent = match active {
            None => events.send(Event::Cancelled { run: job.run }),
            Some(Err(e)) => events.send(Event::Failed {
                run: job.run,
                error: describe_error(&e),
            }),
            Some(Ok((cancel, options))) => {
                let run = job.run;
                std::panic::catch_unwind(AssertUnwindSafe(|| {
                    if test_panic {
                        panic!(
                            "SPEEDSCAPE_TEST_PANIC=worker: a deliberate panic on the inference thread (test only)"
                        );
                    }
                    worker.run(&job, &cancel, &options)
                }))
                .unwrap_or_else(|p| {
                    events.send(Event::Failed {
                        run,
                        error: Fixable::new(
                            format!("the inference thread panicked: {}", panic_text(&p)),
                            "this is a bug in speedscape; please report it with the command that caused it",
                        )
                        .to_string(),
                    })
                })
            }
        };
        lock(&shared).active = None;
        if sent.is_err() {
            return;
        }
    }
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// The thread's state: runtime, model, and what has been loaded and warmed so far.
struct Worker {
    rt: Runtime,
    model: Model,
    info: WorkerInfo,
    events: Sender,
    /// Components that have had their `Loading`/`Loaded` events.
    announced: HashSet<String>,
    /// (component, batch, latent h, latent w) already run once.
    warmed: HashSet<(String, usize, usize, usize)>,
}

impl Worker {
    fn open(
        config: &Config,
        device: Option<Device>,
        model_dir: Option<&std::path::Path>,
        events: Sender,
    ) -> color_eyre::Result<Self> {
        let device = device.unwrap_or(config.runtime.device);
        let rt = crate::open::runtime(config, Some(device))?;
        let (dir, _) = crate::open::model_dir(config, model_dir)?;
        let model = crate::open::model(config, &rt, &dir)?;
        let info = WorkerInfo {
            provider: rt.provider,
            device: device_name(rt.provider),
            model_dir: dir,
            tiny_model: model.kind() == crate::models::ModelKind::Tiny,
            kind: model.kind(),
            grammar: model.grammar().cloned().map(Box::new),
            image_size: model.geometry.default_size(),
            notes: rt.notes.iter().chain(&model.notes).cloned().collect(),
            variants: model.variants.clone(),
            scheduler_config: model.scheduler_config.clone(),
            clip_scorer: model.has_clip_scorer(),
        };
        Ok(Self {
            rt,
            model,
            info,
            events,
            announced: HashSet::new(),
            warmed: HashSet::new(),
        })
    }

    /// Runs one job to its terminal event. `Err` only when the consumer is gone.
    fn run(
        &mut self,
        job: &Job,
        cancel: &Arc<AtomicBool>,
        options: &Arc<RunOptions>,
    ) -> Result<(), Gone> {
        let run = job.run;
        let gone = AtomicBool::new(false);
        let result = self
            .prepare(job, options, &gone)
            .and_then(|()| self.timed(job, cancel, options, &gone));
        if gone.load(Ordering::SeqCst) {
            return Err(Gone);
        }
        let ev = match result {
            // A run that finished is reported as such even if a cancel came after its end.
            Ok((report, image)) => Event::Finished {
                run,
                report: Box::new(report),
                image,
            },
            // A cancel ends the run with `Cancelled` whatever error it caused (a terminated
            // ONNX Runtime call, or the flag seen between steps).
            Err(_) if cancel.load(Ordering::SeqCst) => Event::Cancelled { run },
            Err(e) if e.downcast_ref::<pipeline::Cancelled>().is_some() => Event::Cancelled { run },
            Err(e) => Event::Failed {
                run,
                error: describe_error(&e),
            },
        };
        self.events.send(ev)
    }

    fn send(&self, ev: Event, gone: &AtomicBool) -> color_eyre::Result<()> {
        self.events.send(ev).map_err(|Gone| {
            gone.store(true, Ordering::SeqCst);
            eyre!("the consumer of worker events is gone")
        })
    }

    /// Loads and warms up, outside the timed run, every component the job needs that the
    /// worker has not run at this size yet.
    fn prepare(
        &mut self,
        job: &Job,
        options: &RunOptions,
        gone: &AtomicBool,
    ) -> color_eyre::Result<()> {
        let req = &job.request;
        let run = job.run;
        let pipeline::limits::Checked { width, height, .. } =
            pipeline::limits::check_request(&self.model, self.rt.provider, req)?;
        let f = self.model.geometry.vae_scale_factor;
        let (h, w) = (height / f, width / f);
        let batch = if req.guidance > 1.0 { 2 } else { 1 };
        let variant = self.model.variant(&req.unet)?.clone();

        // Text encoder: its warm-up is one encode of the empty prompt, whose hidden states
        // also serve as the UNet warm-up's context.
        let unet_key = (variant.folder.clone(), batch, h, w);
        let announce_unet = !self.announced.contains(&variant.folder);
        let warm_unet = announce_unet || !self.warmed.contains(&unet_key);
        let te_folder = variant.text_encoder_folder().to_string();
        let announce_te = !self.announced.contains(&te_folder);
        let mut hidden: Option<Array3<f32>> = None;
        if announce_te || warm_unet {
            if announce_te {
                self.send(
                    Event::Loading {
                        run,
                        component: te_folder.clone(),
                    },
                    gone,
                )?;
            }
            let was_loaded = self.model.has_text_encoder_for(&req.unet);
            let ids = self.model.tokenizer.encode("")?.ids_i64();
            let load_start = Instant::now();
            let te = self.model.text_encoder_for(&self.rt, &req.unet)?;
            let load = load_start.elapsed();
            let warm_start = Instant::now();
            hidden = Some(te.encode(&ids, 1)?);
            let warm_up = warm_start.elapsed();
            if announce_te {
                self.announced.insert(te_folder.clone());
                let load = if was_loaded {
                    self.load_time(&te_folder)
                } else {
                    load
                };
                self.send(
                    Event::Loaded {
                        run,
                        component: te_folder,
                        load,
                        warm_up,
                    },
                    gone,
                )?;
            }
        }

        // UNet: one call at the run's batch and latent size.
        if announce_unet {
            self.send(
                Event::Loading {
                    run,
                    component: variant.folder.clone(),
                },
                gone,
            )?;
        }
        if let (true, Some(hidden)) = (warm_unet, &hidden) {
            let was_loaded = self.model.has_unet(&req.unet);
            let load_start = Instant::now();
            let channels = self.model.geometry.latent_channels;
            let unet = self.model.unet(&self.rt, &req.unet)?;
            let load = load_start.elapsed();
            let context = ndarray::concatenate(Axis(0), &vec![hidden.view(); batch])?;
            let sample = Array4::<f32>::zeros((batch, channels, h, w));
            let warm_start = Instant::now();
            unet.predict_with(sample.view(), 500.0, context.view(), Some(options))?;
            let warm_up = warm_start.elapsed();
            self.warmed.insert(unet_key);
            if announce_unet {
                self.announced.insert(variant.folder.clone());
                let load = if was_loaded {
                    self.load_time(&variant.folder)
                } else {
                    load
                };
                self.send(
                    Event::Loaded {
                        run,
                        component: variant.folder.clone(),
                        load,
                        warm_up,
                    },
                    gone,
                )?;
            }
        }

        // VAE decoder: one decode at the run's latent size.
        let vae = "vae_decoder".to_string();
        let vae_key = (vae.clone(), 1, h, w);
        let announce_vae = !self.announced.contains(&vae);
        if announce_vae {
            self.send(
                Event::Loading {
                    run,
                    component: vae.clone(),
                },
                gone,
            )?;
        }
        if announce_vae || !self.warmed.contains(&vae_key) {
            let latents = Array4::<f32>::zeros((1, self.model.geometry.latent_channels, h, w));
            let warm_start = Instant::now();
            self.model.vae.decode_with(latents.view(), Some(options))?;
            let warm_up = warm_start.elapsed();
            self.warmed.insert(vae_key);
            if announce_vae {
                self.announced.insert(vae.clone());
                self.send(
                    Event::Loaded {
                        run,
                        component: vae.clone(),
                        load: self.load_time(&vae),
                        warm_up,
                    },
                    gone,
                )?;
            }
        }

        // CLIP scorer: loaded the first time a run asks for a score (it runs after the timed
        // run, so it needs no warm-up).
        let clip = crate::models::CLIP_FOLDER;
        if req.clip_score && self.model.has_clip_scorer() && !self.announced.contains(clip) {
            self.send(
                Event::Loading {
                    run,
                    component: clip.to_string(),
                },
                gone,
            )?;
            self.model.clip_scorer(&self.rt)?;
            self.announced.insert(clip.to_string());
            self.send(
                Event::Loaded {
                    run,
                    component: clip.to_string(),
                    load: self.load_time(clip),
                    warm_up: Duration::ZERO,
                },
                gone,
            )?;
        }
        Ok(())
    }

    /// Session-creation time recorded for `component` (0 if none was recorded).
    fn load_time(&self, component: &str) -> Duration {
        self.model
            .load_times
            .iter()
            .rev()
            .find(|(name, _)| name == component)
            .map(|(_, d)| *d)
            .unwrap_or_default()
    }

    /// The timed run, with its events.
    fn timed(
        &mut self,
        job: &Job,
        cancel: &AtomicBool,
        options: &RunOptions,
        gone: &AtomicBool,
    ) -> color_eyre::Result<(RunReport, RgbImage)> {
        if cancel.load(Ordering::SeqCst) {
            return Err(eyre!(pipeline::Cancelled { completed: 0 }));
        }
        let run = job.run;
        let events = self.events.clone();
        // Sends, or on a gone consumer remembers it and stops the run at the next step.
        let emit = |ev: Event| {
            if events.send(ev).is_err() {
                gone.store(true, Ordering::SeqCst);
                cancel.store(true, Ordering::SeqCst);
            }
        };
        let started_at = std::cell::Cell::new(None::<Instant>);
        let out = pipeline::generate_with(
            &self.rt,
            &mut self.model,
            &job.request,
            RunControl {
                cancel,
                run_options: Some(options),
                on_phase: &mut |phase| match phase {
                    Phase::Started {
                        total_steps,
                        width,
                        height,
                    } => {
                        started_at.set(Some(Instant::now()));
                        emit(Event::Started {
                            run,
                            total_steps,
                            width,
                            height,
                        });
                    }
                    Phase::Encoded { text } => emit(Event::Encoded { run, text }),
                    Phase::Decoding => {}
                },
                on_step: &mut |ev| {
                    let elapsed = started_at.get().map(|s| s.elapsed()).unwrap_or_default();
                    emit(Event::Step {
                        run,
                        index: ev.index,
                        total: ev.total,
                        timestep: ev.timestep,
                        timing: ev.timing,
                        elapsed,
                    });
                    emit(Event::Preview {
                        run,
                        index: ev.index,
                        image: pipeline::preview::latents_to_rgb(ev.preview),
                    });
                },
            },
        );
        let mut out = out?;
        out.report.device = self.info.device.clone();
        let image = out.rgb8();
        Ok((out.report, image))
    }
}

/// The device's name for the header: the GPU's (CUDA) or the CPU's.
pub fn device_name(provider: Provider) -> String {
    match provider {
        Provider::Cuda | Provider::TensorRt => crate::runtime::query_gpu()
            .map(|g| g.name)
            .unwrap_or_else(|| "CUDA GPU".into()),
        Provider::Cpu => cpu_name().unwrap_or_else(|| "CPU".into()),
    }
}

fn cpu_name() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let name = text
        .lines()
        .find(|l| l.starts_with("model name"))?
        .split_once(':')?
        .1
        .trim()
        .to_string();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Some(format!("{name} ({cores} threads)"))
}

/// An error as the user should read it: each cause on its own line, then the fixes of the
/// chain's [`Fixable`] errors (each once, as `Fix:` lines), no terminal colours.
pub fn describe_error(err: &color_eyre::Report) -> String {
    let parts = crate::error::parts(err);
    let mut lines: Vec<String> = Vec::new();
    for (i, cause) in parts.causes.iter().enumerate() {
        let text = strip_ansi(cause);
        for (j, line) in text.lines().enumerate() {
            let line = line.trim_end();
            if line.is_empty() {
                continue;
            } else if i > 0 && j == 0 {
                lines.push(format!("  caused by: {line}"));
            } else if i > 0 {
                lines.push(format!("    {line}"));
            } else {
                lines.push(line.to_string());
            }
        }
    }
    lines.extend(parts.fixes.iter().map(|fix| {
        format!("Fix: {}", strip_ansi(fix).trim())
            .trim_end()
            .to_string()
    }));
    lines.join("\n")
}

/// Removes ANSI escape sequences (CSI `ESC [ … final byte`, and lone `ESC x`).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use color_eyre::eyre::WrapErr;

    #[test]
    fn an_error_chain_reads_as_causes_with_the_fix_last_and_no_colours() {
        let inner: color_eyre::Result<()> = Err(eyre!(Fixable::new(
            "\u{1b}[31mno such file\u{1b}[0m",
            "export the model"
        )));
        let err = inner.wrap_err("loading the UNet").unwrap_err();
        assert_eq!(
            describe_error(&err),
            "loading the UNet\n  caused by: no such file\nFix: export the model"
        );
    }

    #[test]
    fn only_the_typed_fixes_go_last_once_each_and_a_quoted_fix_line_stays_with_its_cause() {
        use crate::error::FixErr;
        // ONNX Runtime's own words may hold a line that begins "Fix:"; it is a cause's text.
        let quoted: color_eyre::Result<()> = Err(eyre!("ONNX Runtime said:\nFix: node 3"));
        let err = quoted
            .fix_err("loading the UNet", "re-export the model")
            .fix_err("running exercise 2", "re-export the model")
            .unwrap_err();
        assert_eq!(
            describe_error(&err),
            "running exercise 2\n  caused by: loading the UNet\n  caused by: ONNX Runtime said:\n    \
             Fix: node 3\nFix: re-export the model"
        );
    }
}
