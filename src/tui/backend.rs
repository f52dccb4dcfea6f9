//! What the TUI needs from the inference worker, as a trait, so the loop runs (and is tested)
//! against a fake as well as the real [`crate::worker::WorkerHandle`].

use std::path::PathBuf;

use tokio::sync::mpsc::UnboundedReceiver;

use crate::config::Config;
use crate::runtime::Device;
use crate::worker::{Event, Job, RunId};

/// Takes jobs, cancels runs, hands out fresh run ids. Events come back on the receiver that was
/// returned with the backend.
pub trait RunBackend {
    fn submit(&self, job: Job);
    fn cancel(&self, run: RunId);
    /// A run id never used before in this process.
    fn next_run_id(&self) -> RunId;
}

/// A backend and the receiver of its events.
pub type Spawned = (Box<dyn RunBackend>, UnboundedReceiver<Event>);

/// Starts the real inference worker (it opens the runtime and the model on its own thread and
/// reports `Ready` or `Fatal` first).
pub fn spawn_worker(
    config: &Config,
    device: Option<Device>,
    model_dir: Option<PathBuf>,
) -> color_eyre::Result<Spawned> {
    let (handle, events) = crate::worker::WorkerHandle::spawn(config.clone(), device, model_dir);
    Ok((Box::new(handle), events))
}

impl RunBackend for crate::worker::WorkerHandle {
    fn submit(&self, job: Job) {
        crate::worker::WorkerHandle::submit(self, job);
    }
    fn cancel(&self, run: RunId) {
        crate::worker::WorkerHandle::cancel(self, run);
    }
    fn next_run_id(&self) -> RunId {
        crate::worker::WorkerHandle::next_run_id(self)
    }
}
