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

/// Starts the real inference worker.
///
/// The worker (`WorkerHandle`) is built on another branch; until it is merged this returns an
/// error that says so. After the merge, replace the body with the one in the block comment at
/// the end of this file and remove the comment markers around the `impl`.
pub fn spawn_worker(
    config: &Config,
    device: Option<Device>,
    model_dir: Option<PathBuf>,
) -> color_eyre::Result<Spawned> {
    let _ = (config, device, model_dir);
    Err(color_eyre::eyre::eyre!(
        "the inference worker is not part of this build yet (branch `tui` before the worker merge)\nFix: build the merged branch"
    ))
}

/* The real adapter, for after the worker branch is merged (it does not compile before: this
   branch has no `WorkerHandle`). Replace `spawn_worker`'s body with:

    let (handle, events) = crate::worker::WorkerHandle::spawn(config.clone(), device, model_dir);
    Ok((Box::new(handle), events))

and uncomment:

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
*/
