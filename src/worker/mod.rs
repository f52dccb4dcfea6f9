//! The inference thread: it owns the runtime, the model and every ONNX session (loaded once,
//! lazily, and kept), takes [`Job`]s one at a time and reports [`Event`]s. The UI never blocks on
//! it; the headless `speedscape exercise` drives the same thread.
//!
//! Every run has a fresh [`RunId`]; a consumer drops events whose id it no longer waits for.
//! Previews are made beside the step loop, by the worker's preview thread ([`previews`]).
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
use crate::pipeline::preview::{PreviewChoice, PreviewKind, Previewer, is_preview_step};
use crate::pipeline::{self, Phase, Request, RunControl, RunReport};
use crate::runtime::{Device, Provider, Runtime};
use previews::PreviewThread;

pub(crate) mod previews;
pub mod protocol;
pub use protocol::{Event, Job, RunId, WorkerInfo};

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
    /// Stops the thread (cancelling a run under way) and waits for it: a process must not exit
    /// while the thread is inside ONNX Runtime (loading a session, say), whose static
    /// destructors would then run under it (a segmentation fault on quitting the TUI during a
    /// load). A run's calls are terminated, so this waits at most for a session being created.
    fn drop(&mut self) {
        self.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
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
                error: crate::report::describe_error(&e),
            });
            return;
        }
    };
    if events.send(Event::Ready(worker.info.clone())).is_err() {
        return;
    }
    // TEST ONLY (feature `test-hooks`): `SPEEDSCAPE_TEST_PANIC=worker` makes every run panic here
    // (tests/tui_terminal.sh checks that the TUI shows it as the run's error and keeps going).
    #[cfg(feature = "test-hooks")]
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
                error: crate::report::describe_error(&e),
            }),
            Some(Ok((cancel, options))) => {
                let run = job.run;
                std::panic::catch_unwind(AssertUnwindSafe(|| {
                    #[cfg(feature = "test-hooks")]
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

/// The VAE decoder's folder, the name its events carry.
const VAE_DECODER: &str = "vae_decoder";

/// The folder of the ControlNet `name`, the name its events carry (`controlnet_edge`).
fn controlnet_folder(name: &str) -> String {
    format!("{}{name}", crate::models::controlnet::CONTROLNET_PREFIX)
}

/// (component folder, batch, latent height, latent width) of a warm-up pass already run.
type WarmKey = (String, usize, usize, usize);

/// A run's size as its warm-up passes see it.
#[derive(Debug, Clone, Copy)]
struct LatentSize {
    /// 2 with classifier-free guidance (both prompts in one UNet call), else 1.
    batch: usize,
    /// Latent pixels (image pixels / the VAE's scale factor).
    h: usize,
    w: usize,
}

impl LatentSize {
    /// The [`WarmKey`] of `folder`'s pass at this size.
    fn key(&self, folder: &str) -> WarmKey {
        (folder.to_string(), self.batch, self.h, self.w)
    }
}

/// What every component's preparation for one run shares.
struct Prep<'a> {
    run: RunId,
    options: &'a RunOptions,
    gone: &'a AtomicBool,
}

/// Where a component's `Loaded { load }` time comes from.
#[derive(Debug, Clone, Copy)]
enum LoadTime {
    /// Timed around the session's creation by this preparation.
    Measured,
    /// The session-creation time the model recorded: for a session that existed before this
    /// run (the base text encoder and the VAE decoder open with the model), and the CLIP
    /// scorer's.
    Recorded,
}

impl LoadTime {
    /// `Recorded` when the session exists already, else `Measured`.
    fn of(already_loaded: bool) -> LoadTime {
        if already_loaded {
            LoadTime::Recorded
        } else {
            LoadTime::Measured
        }
    }
}

/// One component on its way to the timed run (see [`Worker::load_and_warm`]).
struct Component<'a> {
    /// Its folder, the name its events carry (`text_encoder`, `unet_lcm`, `vae_decoder`, …).
    folder: &'a str,
    load_time: LoadTime,
    /// It needs its step at this run's size even when the worker has used it before.
    warm: bool,
    /// Recorded as warmed once its step is done.
    warmed: Option<WarmKey>,
}

/// Times the two phases of a component's step: its session creation ([`Stopwatch::load`]) and
/// its warm-up pass ([`Stopwatch::warm_up`]); a phase not run takes zero.
#[derive(Debug, Default)]
struct Stopwatch {
    load: Duration,
    warm_up: Duration,
}

impl Stopwatch {
    fn load<T>(&mut self, phase: impl FnOnce() -> color_eyre::Result<T>) -> color_eyre::Result<T> {
        time_into(&mut self.load, phase)
    }

    fn warm_up<T>(
        &mut self,
        phase: impl FnOnce() -> color_eyre::Result<T>,
    ) -> color_eyre::Result<T> {
        time_into(&mut self.warm_up, phase)
    }
}

/// Runs `phase`, storing its wall time in `slot`.
fn time_into<T>(slot: &mut Duration, phase: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = phase();
    *slot = start.elapsed();
    out
}

/// The LoRA adapters each of `variants` has fused in, from the manifest.json of the model folder
/// `dir` (none without one): what [`WorkerInfo::fused`] holds.
fn fused_adapters(
    dir: &std::path::Path,
    variants: &[crate::models::Variant],
) -> Vec<(String, Vec<crate::lora::AdapterWeight>)> {
    let Ok(Some(manifest)) = crate::models::manifest::Manifest::read(dir) else {
        return Vec::new();
    };
    variants
        .iter()
        .filter_map(|v| {
            let (_, mv) = manifest.variant_by_unet(&v.folder)?;
            let loras = mv
                .loras
                .iter()
                .map(|l| crate::lora::AdapterWeight {
                    adapter: l.name.clone(),
                    weight: l.weight as f32,
                })
                .collect();
            Some((v.name.clone(), loras))
        })
        .collect()
}

/// The thread's state: runtime, model, and what has been loaded and warmed so far.
struct Worker {
    rt: Runtime,
    model: Model,
    info: WorkerInfo,
    events: Sender,
    /// Components that have had their `Loading`/`Loaded` events.
    announced: HashSet<String>,
    /// Warm-up passes already run.
    warmed: HashSet<WarmKey>,
    /// The preview thread, from the first run that makes previews on.
    previews: Option<PreviewThread>,
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
        let adapters = crate::lora::folder_adapters(&dir)
            .into_iter()
            .map(|a| a.name)
            .collect();
        let info = WorkerInfo {
            fused: fused_adapters(&dir, &model.variants),
            provider: rt.provider,
            device: device_name(rt.provider),
            model_dir: dir,
            tiny_model: model.kind() == crate::models::ModelKind::Tiny,
            kind: model.kind(),
            grammar: model.grammar().cloned().map(Box::new),
            image_size: model.geometry.default_size(),
            notes: rt.notes.iter().chain(&model.notes).cloned().collect(),
            adapters,
            variants: model.variants.clone(),
            scheduler_config: model.scheduler_config.clone(),
            clip_scorer: model.has_clip_scorer(),
            preview: PreviewChoice::resolve(config.tui.preview, model.has_preview_decoder()),
            preview_every: config.tui.preview_every,
        };
        Ok(Self {
            rt,
            model,
            info,
            events,
            announced: HashSet::new(),
            warmed: HashSet::new(),
            previews: None,
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
        let result = self.finish_previews(run, result);
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
                error: crate::report::describe_error(&e),
            },
        };
        self.events.send(ev)
    }

    /// The end of `run`'s previews before its terminal event: a finished run's last step is
    /// previewed first; otherwise an x0 not yet previewed is dropped. A preview that failed
    /// becomes one of the finished run's warnings.
    fn finish_previews(
        &self,
        run: RunId,
        result: color_eyre::Result<(RunReport, RgbImage)>,
    ) -> color_eyre::Result<(RunReport, RgbImage)> {
        let Some(previews) = &self.previews else {
            return result;
        };
        let error = previews.finish(run, result.is_ok());
        result.map(|(mut report, image)| {
            if let Some(e) = error {
                report
                    .warnings
                    .push(format!("a step's preview failed: {}", e.replace('\n', " ")));
            }
            (report, image)
        })
    }

    fn send(&self, ev: Event, gone: &AtomicBool) -> color_eyre::Result<()> {
        self.events.send(ev).map_err(|Gone| {
            gone.store(true, Ordering::SeqCst);
            eyre!("the consumer of worker events is gone")
        })
    }

    /// Loads and warms up, outside the timed run, every component the job needs that the
    /// worker has not run at this size yet: the text encoder, the UNet, the run's ControlNet
    /// (under control) and the VAE decoder, then the CLIP scorer when the run asks for a score.
    fn prepare(
        &mut self,
        job: &Job,
        options: &RunOptions,
        gone: &AtomicBool,
    ) -> color_eyre::Result<()> {
        let req = &job.request;
        let size = self.latent_size(req)?;
        // Sessions go by key: the folder, then any run-time adapters fused into it.
        let (unet_key, te_key) = self.model.session_keys(&req.unet, &req.loras)?;
        let prep = Prep {
            run: job.run,
            options,
            gone,
        };
        // The UNet's warm-up takes the text encoder's output as its context: when the UNet
        // needs one, so does the text encoder.
        let warm_unet =
            !self.announced.contains(&unet_key) || !self.warmed.contains(&size.key(&unet_key));
        let controlnet = self.control_name(req)?;
        let warm_controlnet = controlnet.as_ref().is_some_and(|name| {
            let folder = controlnet_folder(name);
            !self.announced.contains(&folder) || !self.warmed.contains(&size.key(&folder))
        });
        let hidden =
            self.prepare_text_encoder(&prep, req, &te_key, warm_unet || warm_controlnet)?;
        if warm_unet && let Some(hidden) = &hidden {
            self.prepare_unet(&prep, req, &unet_key, size, hidden)?;
        }
        if let (Some(name), Some(hidden)) = (&controlnet, &hidden) {
            self.prepare_controlnet(&prep, name, size, hidden)?;
        }
        self.prepare_vae_decoder(&prep, size)?;
        self.prepare_previews(&prep, size)?;
        if req.clip_score && self.model.has_clip_scorer() {
            self.prepare_clip_scorer(&prep)?;
        }
        Ok(())
    }

    /// The run's checked size in latent pixels, and its UNet batch.
    fn latent_size(&self, req: &Request) -> color_eyre::Result<LatentSize> {
        let pipeline::limits::Checked { width, height, .. } =
            pipeline::limits::check_request(&self.model, self.rt.provider, req)?;
        let f = self.model.geometry.vae_scale_factor;
        Ok(LatentSize {
            batch: if req.guidance > 1.0 { 2 } else { 1 },
            h: height / f,
            w: width / f,
        })
    }

    /// The one way a component gets ready for the timed run: `Loading` the first time the
    /// worker uses it; then, if it is new or `part.warm`, its `step` (session creation and
    /// warm-up pass, each timed by the stopwatch); then, the first time, `Loaded` with both
    /// times. `None` when there was nothing to do. A failed step's error is the run's error.
    fn load_and_warm<T>(
        &mut self,
        prep: &Prep,
        part: Component<'_>,
        step: impl FnOnce(&mut Model, &Runtime, &mut Stopwatch) -> color_eyre::Result<T>,
    ) -> color_eyre::Result<Option<T>> {
        let announce = !self.announced.contains(part.folder);
        if !announce && !part.warm {
            return Ok(None);
        }
        if announce {
            let loading = Event::Loading {
                run: prep.run,
                component: part.folder.to_string(),
            };
            self.send(loading, prep.gone)?;
        }
        let mut clock = Stopwatch::default();
        let out = step(&mut self.model, &self.rt, &mut clock)?;
        if let Some(key) = part.warmed {
            self.warmed.insert(key);
        }
        if announce {
            self.announced.insert(part.folder.to_string());
            let load = match part.load_time {
                LoadTime::Measured => clock.load,
                LoadTime::Recorded => self.load_time(part.folder),
            };
            let loaded = Event::Loaded {
                run: prep.run,
                component: part.folder.to_string(),
                load,
                warm_up: clock.warm_up,
            };
            self.send(loaded, prep.gone)?;
        }
        Ok(Some(out))
    }

    /// The text encoder of `req`'s variant and adapters (its session key `folder`): its
    /// warm-up is one encode of the empty prompt, whose hidden states (`[1, 77, hidden]`) are
    /// returned to serve as the UNet warm-up's context. It runs when new, and whenever
    /// `warm_unet`.
    fn prepare_text_encoder(
        &mut self,
        prep: &Prep,
        req: &Request,
        folder: &str,
        warm_unet: bool,
    ) -> color_eyre::Result<Option<Array3<f32>>> {
        let (variant, adapters) = (req.unet.as_str(), req.loras.as_slice());
        let part = Component {
            folder,
            load_time: LoadTime::of(self.model.has_session(folder)),
            warm: warm_unet,
            warmed: None,
        };
        self.load_and_warm(prep, part, |model, rt, clock| {
            let ids = model.tokenizer.encode("")?.ids_i64();
            let te = clock.load(|| model.text_encoder_with(rt, variant, adapters))?;
            clock.warm_up(|| te.encode(&ids, 1))
        })
    }

    /// The UNet of `req`'s variant and adapters (its session key `folder`): one call at the
    /// run's batch and latent size, on `hidden` (the text encoder's warm-up output) once per
    /// batch row.
    fn prepare_unet(
        &mut self,
        prep: &Prep,
        req: &Request,
        folder: &str,
        size: LatentSize,
        hidden: &Array3<f32>,
    ) -> color_eyre::Result<()> {
        let (variant, adapters) = (req.unet.as_str(), req.loras.as_slice());
        let part = Component {
            folder,
            load_time: LoadTime::of(self.model.has_session(folder)),
            warm: true,
            warmed: Some(size.key(folder)),
        };
        let options = prep.options;
        self.load_and_warm(prep, part, |model, rt, clock| {
            let channels = model.geometry.latent_channels;
            let unet = clock.load(|| model.unet_with(rt, variant, adapters))?;
            let context = ndarray::concatenate(Axis(0), &vec![hidden.view(); size.batch])?;
            let sample = Array4::<f32>::zeros((size.batch, channels, size.h, size.w));
            clock.warm_up(|| unet.predict_with(sample.view(), 500.0, context.view(), Some(options)))
        })?;
        Ok(())
    }

    /// The ControlNet `req` runs under (its name, resolved against the model folder: the
    /// folder's only one when the request names none), its scale checked; `None` without
    /// control.
    fn control_name(&self, req: &Request) -> color_eyre::Result<Option<String>> {
        let Some(c) = &req.control else {
            return Ok(None);
        };
        pipeline::control::check_scale(c.scale)?;
        let name = pipeline::control::resolve_name(&self.info.model_dir, c.name.as_deref())?;
        Ok(Some(name))
    }

    /// The ControlNet `name` (folder `controlnet_<name>/`): loaded the first time (its
    /// session-creation time is its `Loaded` load, and the report's `load_ms` has it as
    /// `controlnet_<name>`), then one call at the run's batch and latent size on a blank
    /// control image and `hidden` (the text encoder's warm-up output) once per batch row.
    fn prepare_controlnet(
        &mut self,
        prep: &Prep,
        name: &str,
        size: LatentSize,
        hidden: &Array3<f32>,
    ) -> color_eyre::Result<()> {
        let folder = controlnet_folder(name);
        let key = size.key(&folder);
        let part = Component {
            folder: &folder,
            load_time: LoadTime::Measured,
            warm: !self.warmed.contains(&key),
            warmed: Some(key.clone()),
        };
        let options = prep.options;
        self.load_and_warm(prep, part, |model, rt, clock| {
            let (channels, f) = (
                model.geometry.latent_channels,
                model.geometry.vae_scale_factor,
            );
            let controlnet = clock.load(|| model.controlnet(rt, name))?;
            let context = ndarray::concatenate(Axis(0), &vec![hidden.view(); size.batch])?;
            let sample = Array4::<f32>::zeros((size.batch, channels, size.h, size.w));
            let blank = Array4::<f32>::zeros((1, 3, size.h * f, size.w * f));
            let cond = controlnet.cond_input(blank.view(), size.batch)?;
            clock.warm_up(|| {
                controlnet
                    .residuals(
                        sample.view(),
                        500.0,
                        context.view(),
                        &cond,
                        1.0,
                        Some(options),
                    )
                    .map(drop)
            })
        })?;
        Ok(())
    }

    /// The VAE decoder (opened with the model): one decode at the run's latent size.
    fn prepare_vae_decoder(&mut self, prep: &Prep, size: LatentSize) -> color_eyre::Result<()> {
        let key = LatentSize { batch: 1, ..size }.key(VAE_DECODER);
        let part = Component {
            folder: VAE_DECODER,
            load_time: LoadTime::Recorded,
            warm: !self.warmed.contains(&key),
            warmed: Some(key),
        };
        let options = prep.options;
        self.load_and_warm(prep, part, |model, _, clock| {
            let latents = Array4::<f32>::zeros((1, model.geometry.latent_channels, size.h, size.w));
            clock.warm_up(|| model.vae.decode_with(latents.view(), Some(options)))
        })?;
        Ok(())
    }

    /// The preview thread, started by the first run with previews (none when they are off), with
    /// its previewer: the latent matrix, or for decoder previews a session of the preview
    /// decoder (`preview_decoder`, loaded and warmed up once at this run's size, outside the
    /// timed run; other sizes warm up inside the preview thread, whose time is never the run's).
    fn prepare_previews(&mut self, prep: &Prep, size: LatentSize) -> color_eyre::Result<()> {
        let used = self.info.preview.used;
        if self.previews.is_some() || used == PreviewKind::Off {
            return Ok(());
        }
        let previewer = if used == PreviewKind::Decoder {
            let part = Component {
                folder: crate::models::PREVIEW_DECODER_FOLDER,
                load_time: LoadTime::Measured,
                warm: true,
                warmed: None,
            };
            let made = self.load_and_warm(prep, part, |model, rt, clock| {
                let channels = model.geometry.latent_channels;
                let mut p = clock.load(|| Previewer::for_model(rt, model, used))?;
                let x0 = Array4::<f32>::zeros((1, channels, size.h, size.w));
                clock.warm_up(|| p.preview(x0.view()))?;
                Ok(p)
            })?;
            made.ok_or_else(|| eyre!("the preview decoder was loaded before its thread started"))?
        } else {
            Previewer::for_model(&self.rt, &mut self.model, used)?
        };
        let events = self.events.clone();
        let thread = PreviewThread::spawn(
            Box::new(previewer),
            Box::new(move |ev| events.send(ev).is_ok()),
        )
        .map_err(|e| {
            eyre!(Fixable::new(
                format!("could not start the preview thread: {e}"),
                "free some memory or threads, or turn previews off ([tui] preview = \"off\", --preview off)",
            ))
        })?;
        self.previews = Some(thread);
        Ok(())
    }

    /// The CLIP scorer, loaded the first time a run asks for a score; it runs after the timed
    /// run, so it needs no warm-up.
    fn prepare_clip_scorer(&mut self, prep: &Prep) -> color_eyre::Result<()> {
        let part = Component {
            folder: crate::models::CLIP_FOLDER,
            load_time: LoadTime::Recorded,
            warm: false,
            warmed: None,
        };
        self.load_and_warm(prep, part, |model, rt, clock| {
            clock.load(|| model.clip_scorer(rt).map(|_| ()))
        })?;
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
        let (previews, every) = (self.previews.as_ref(), self.info.preview_every);
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
                    if let Some(p) = previews
                        && is_preview_step(ev.index, ev.total, every)
                    {
                        p.offer(run, ev.index, ev.preview);
                    }
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
