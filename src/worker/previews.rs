//! The worker's preview thread: a run's step loop hands each previewed step's x0 to a slot of
//! one and goes on; this thread makes the preview (decoder or latent matrix) and sends
//! `Event::Preview`. Latest wins: an x0 the thread has not taken yet is replaced by a newer one,
//! never queued, so a preview slower than a step costs the step loop nothing and skips steps
//! instead. A run's time therefore never includes a preview; each preview's own time travels in
//! its event.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use ndarray::{Array4, ArrayView4};

use super::protocol::{Event, RunId};
use crate::pipeline::preview::{Preview, Previewer};

/// What makes a preview from an x0 prediction (`[1, C, h, w]`): the engine's [`Previewer`], or a
/// test's stand-in.
pub(crate) trait MakePreview: Send {
    /// The preview of `x0`; `None` when previews are off.
    fn make(&mut self, x0: ArrayView4<f32>) -> color_eyre::Result<Option<Preview>>;
}

impl MakePreview for Previewer {
    fn make(&mut self, x0: ArrayView4<f32>) -> color_eyre::Result<Option<Preview>> {
        self.preview(x0)
    }
}

/// One step's x0, waiting in the slot.
struct Pending {
    run: RunId,
    index: usize,
    x0: Array4<f32>,
}

/// The slot and the thread's state, under one lock.
#[derive(Default)]
struct Slot {
    next: Option<Pending>,
    /// The run whose preview is being made now.
    busy: Option<RunId>,
    /// The first preview error of each run not yet collected by [`PreviewThread::finish`].
    failed: Vec<(RunId, String)>,
    stop: bool,
}

type Shared = Arc<(Mutex<Slot>, Condvar)>;

fn lock(shared: &Shared) -> MutexGuard<'_, Slot> {
    shared.0.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where previews go: the worker's event channel (or a test's).
pub(crate) type Emit = Box<dyn Fn(Event) -> bool + Send>;

/// The preview thread of a worker; dropping it stops the thread and waits for it.
pub(crate) struct PreviewThread {
    shared: Shared,
    thread: Option<JoinHandle<()>>,
}

impl PreviewThread {
    /// Starts the thread with `maker`; each preview goes to `emit` (which says `false` once the
    /// consumer is gone: the thread then stops).
    pub(crate) fn spawn(maker: Box<dyn MakePreview>, emit: Emit) -> std::io::Result<Self> {
        let shared: Shared = Arc::default();
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("speedscape-preview".into())
            .spawn(move || preview_main(maker, emit, thread_shared))?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Hands step `index`'s x0 of `run` to the thread, replacing one it has not taken yet.
    /// Never waits for a preview.
    pub(crate) fn offer(&self, run: RunId, index: usize, x0: ArrayView4<f32>) {
        let pending = Pending {
            run,
            index,
            x0: x0.to_owned(),
        };
        lock(&self.shared).next = Some(pending);
        self.shared.1.notify_all();
    }

    /// The end of `run`: with `keep`, waits until its last offered x0 is previewed and sent;
    /// without, drops an x0 of it not yet taken and waits only for a preview under way. Either
    /// way no preview of `run` comes after this returns. Gives the run's first preview error.
    pub(crate) fn finish(&self, run: RunId, keep: bool) -> Option<String> {
        let mut slot = lock(&self.shared);
        if !keep && slot.next.as_ref().is_some_and(|p| p.run == run) {
            slot.next = None;
        }
        while slot.busy == Some(run) || slot.next.as_ref().is_some_and(|p| p.run == run) {
            slot = self.shared.1.wait(slot).unwrap_or_else(|p| p.into_inner());
        }
        let i = slot.failed.iter().position(|(r, _)| *r == run)?;
        Some(slot.failed.remove(i).1)
    }
}

impl Drop for PreviewThread {
    fn drop(&mut self) {
        lock(&self.shared).stop = true;
        self.shared.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The thread: take the newest x0, preview it, send it; until stopped or the consumer is gone.
fn preview_main(mut maker: Box<dyn MakePreview>, emit: Emit, shared: Shared) {
    loop {
        let job = {
            let mut slot = lock(&shared);
            loop {
                if slot.stop {
                    return;
                }
                if let Some(job) = slot.next.take() {
                    slot.busy = Some(job.run);
                    break job;
                }
                slot = shared.1.wait(slot).unwrap_or_else(|p| p.into_inner());
            }
        };
        let made = maker.make(job.x0.view());
        let sent = match made {
            Ok(Some(p)) => emit(Event::Preview {
                run: job.run,
                index: job.index,
                image: p.image,
                kind: p.kind,
                took: p.took,
            }),
            Ok(None) => true,
            Err(e) => {
                let mut slot = lock(&shared);
                if !slot.failed.iter().any(|(r, _)| *r == job.run) {
                    slot.failed
                        .push((job.run, crate::report::describe_error(&e)));
                }
                true
            }
        };
        lock(&shared).busy = None;
        shared.1.notify_all();
        if !sent {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::preview::PreviewKind;
    use std::sync::mpsc;
    use std::time::Duration;

    /// A previewer that tells which x0 it took (by its first value, the step index) and then
    /// waits until the test lets it go: slower than any step loop.
    struct Gated {
        took: mpsc::Sender<usize>,
        gate: mpsc::Receiver<()>,
    }

    impl MakePreview for Gated {
        fn make(&mut self, x0: ArrayView4<f32>) -> color_eyre::Result<Option<Preview>> {
            let _ = self.took.send(x0[[0, 0, 0, 0]] as usize);
            let _ = self.gate.recv();
            if x0[[0, 0, 0, 0]] < 0.0 {
                color_eyre::eyre::bail!("the decoder broke");
            }
            Ok(Some(Preview {
                image: image::RgbImage::new(1, 1),
                kind: PreviewKind::Decoder,
                took: Duration::from_millis(7),
            }))
        }
    }

    struct Harness {
        thread: PreviewThread,
        took: mpsc::Receiver<usize>,
        gate: mpsc::Sender<()>,
        events: mpsc::Receiver<Event>,
    }

    fn harness() -> Harness {
        let (took_tx, took) = mpsc::channel();
        let (gate, gate_rx) = mpsc::channel();
        let (events_tx, events) = mpsc::channel();
        let maker = Gated {
            took: took_tx,
            gate: gate_rx,
        };
        let emit: Emit = Box::new(move |ev| events_tx.send(ev).is_ok());
        let thread = PreviewThread::spawn(Box::new(maker), emit).unwrap();
        Harness {
            thread,
            took,
            gate,
            events,
        }
    }

    fn x0(index: usize) -> Array4<f32> {
        Array4::from_elem((1, 4, 2, 2), index as f32)
    }

    /// Waits (at most a minute, so a broken thread fails instead of hanging) for the next thing.
    fn next<T>(rx: &mpsc::Receiver<T>) -> T {
        rx.recv_timeout(Duration::from_secs(60))
            .expect("the preview thread answered")
    }

    fn previewed(events: &mpsc::Receiver<Event>) -> Vec<(RunId, usize)> {
        events
            .try_iter()
            .map(|ev| match ev {
                Event::Preview { run, index, .. } => (run, index),
                other => panic!("only previews come from the preview thread: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn steps_never_wait_for_a_slow_preview_and_only_the_newest_x0_is_previewed() {
        let h = harness();
        h.thread.offer(1, 0, x0(0).view());
        assert_eq!(
            next(&h.took),
            0,
            "the thread took step 0 and is stuck in it"
        );
        // The step loop goes on while that preview cannot finish: offering never waits for it.
        for i in 1..10 {
            h.thread.offer(1, i, x0(i).view());
        }
        h.gate.send(()).unwrap();
        assert_eq!(next(&h.took), 9, "steps 1 to 8 were replaced, never queued");
        h.gate.send(()).unwrap();
        assert_eq!(h.thread.finish(1, true), None);
        assert_eq!(previewed(&h.events), [(1, 0), (1, 9)]);
    }

    #[test]
    fn a_run_ends_only_after_its_last_step_is_previewed() {
        let h = harness();
        h.thread.offer(3, 0, x0(0).view());
        assert_eq!(next(&h.took), 0);
        h.thread.offer(3, 1, x0(1).view());
        // Let both previews through, then finish: step 1 (the last) is previewed before it
        // returns, whatever the thread was doing when the run ended.
        h.gate.send(()).unwrap();
        h.gate.send(()).unwrap();
        assert_eq!(h.thread.finish(3, true), None);
        let events: Vec<Event> = h.events.try_iter().collect();
        let Some(Event::Preview {
            run,
            index,
            kind,
            took,
            ..
        }) = events.last()
        else {
            panic!("the last step was previewed: {events:?}");
        };
        assert_eq!((*run, *index), (3, 1));
        assert_eq!(
            (*kind, *took),
            (PreviewKind::Decoder, Duration::from_millis(7)),
            "the event carries the kind used and the time the preview took"
        );
    }

    #[test]
    fn a_cancelled_run_drops_its_untaken_x0_and_reports_preview_errors() {
        let h = harness();
        h.thread.offer(5, 0, x0(0).view());
        assert_eq!(next(&h.took), 0);
        h.thread.offer(5, 1, x0(1).view());
        h.gate.send(()).unwrap();
        // Step 1's x0 may or may not have been taken by now; if it was, let it finish too.
        let _ = h.gate.send(());
        h.thread.finish(5, false);
        let made = previewed(&h.events);
        assert!(
            made == [(5, 0)] || made == [(5, 0), (5, 1)],
            "nothing of the run after finish: {made:?}"
        );
        while h.took.try_recv().is_ok() {}
        // A preview that fails is not sent; the run's end gives its error.
        h.thread
            .offer(6, 0, Array4::from_elem((1, 4, 2, 2), -1.0).view());
        h.gate.send(()).unwrap();
        let error = h.thread.finish(6, true).expect("the error is kept");
        assert!(error.contains("the decoder broke"), "{error}");
        assert!(previewed(&h.events).is_empty());
    }
}
