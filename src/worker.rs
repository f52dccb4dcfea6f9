//! The inference thread: it owns the runtime, the model and every ONNX session (loaded once,
//! lazily, and kept), takes [`Job`]s one at a time and reports [`Event`]s. The UI never blocks on
//! it; the headless `speedscape exercise` drives the same thread.
//!
//! Every run has a fresh [`RunId`]; a consumer drops events whose id it no longer waits for.
//! Cancel: [`WorkerHandle::cancel`] sets the run's flag (checked between steps) and terminates a
//! UNet call already under way (`RunOptions::terminate`).

use std::time::Duration;

use image::RgbImage;

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

/// What the worker reports, in order, for each run: `Loading`/`Loaded` (only when a session is
/// created, with a warm-up pass, all before the timed run), `Started`, `Encoded`, then `Step` and
/// `Preview` per step, then exactly one of `Finished`, `Cancelled`, `Failed`.
/// What the worker says once its runtime and model are open.
#[derive(Debug, Clone)]
pub struct WorkerInfo {
    pub provider: Provider,
    /// The GPU's name (CUDA) or the CPU's, for the header.
    pub device: String,
    pub model_dir: std::path::PathBuf,
    /// The embedded tiny model: random weights, noise-like images.
    pub tiny_model: bool,
    /// Native image size (pixels).
    pub image_size: usize,
}

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
