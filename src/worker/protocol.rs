//! What goes into the inference thread and what comes out: a [`Job`] per image, [`Event`]s
//! back, [`WorkerInfo`] once the runtime and model are open. Consumers (the TUI, the headless
//! runner, the table rows) depend on this file, not on the worker that produces them.

use std::time::Duration;

use image::RgbImage;

use crate::pipeline::preview::{PreviewChoice, PreviewKind};
use crate::pipeline::{Request, RunReport, StepTiming};
use crate::runtime::Provider;

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
    /// The LoRA adapters each variant has fused in, by variant name, as manifest.json records
    /// them (a variant it does not record, or a folder without one, is absent).
    pub fused: Vec<(String, Vec<crate::lora::AdapterWeight>)>,
    /// The adapters the model folder offers by name (its `loras/`, see
    /// [`crate::lora::folder_adapters`]), sorted.
    pub adapters: Vec<String>,
    /// The scheduler config in force (see [`crate::models::Model::scheduler_config`]).
    pub scheduler_config: serde_json::Value,
    /// The model folder has a CLIP scorer (`clip_image_encoder/`): a request with
    /// `clip_score: true` gets [`RunReport::clip_score`]. Without one the score is absent, so a
    /// view shows no CLIP column rather than zeros.
    pub clip_scorer: bool,
    /// The previews runs get (`[tui] preview`, and what the model folder allows).
    pub preview: PreviewChoice,
    /// A preview every N-th step and always the last (`[tui] preview_every`).
    pub preview_every: usize,
}

/// What the worker reports: `Ready` (or `Fatal`) first, then for each run, in order:
/// `Loading`/`Loaded` for each component (text encoder, UNet, VAE decoder) the worker has not
/// used before, with its session-creation time and an untimed warm-up pass at the run's size,
/// and for the CLIP scorer (`clip_image_encoder`, no warm-up) the first time a run asks for a
/// CLIP score on a model that has one, and the preview decoder (`preview_decoder`) the first
/// time decoder previews are made, all before the timed run; `Started`, `Encoded`, then `Step`
/// per step with `Preview`s among them (each after its step's `Step`; see [`Event::Preview`]),
/// then exactly one of `Finished`, `Cancelled`, `Failed`. A run cancelled while queued gets
/// `Cancelled` alone.
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
    /// A step's preview of its x0 prediction, made off the step loop by the worker's preview
    /// thread (full resolution from the preview decoder, latent resolution from the latent
    /// matrix). Not every step gets one: `preview_every`, and a newer step's x0 replaces one
    /// not yet previewed; the last step always does (before the run's terminal event).
    Preview {
        run: RunId,
        index: usize,
        image: RgbImage,
        /// The kind that made it.
        kind: PreviewKind,
        /// What making it took: never part of the run's time.
        took: Duration,
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
