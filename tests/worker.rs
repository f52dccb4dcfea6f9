//! The inference thread on the default model, the embedded micro model (CPU): event order, lazy
//! loading, cancel, run ids, shutdown, a model that cannot open; the CLIP scorer on the tiny
//! model (the micro model has none).

mod common;

use common::copy_dir;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;

use speedscape::config::Config;
use speedscape::pipeline::Request;
use speedscape::pipeline::preview::PreviewKind;
use speedscape::rng::RngSource;
use speedscape::runtime::Device;
use speedscape::schedulers::{SchedulerKind, SchedulerOptions};
use speedscape::worker::{Event, Job, RunId, WorkerHandle, WorkerInfo};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Rx {
    rt: tokio::runtime::Runtime,
    rx: UnboundedReceiver<Event>,
}

impl Rx {
    /// The next event, or a panic after 120 s (a hung worker fails the test, not the suite).
    fn next(&mut self) -> Option<Event> {
        let rx = &mut self.rx;
        self.rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(120), rx.recv()).await })
            .expect("no worker event within 120 s")
    }

    fn event(&mut self) -> Event {
        self.next().expect("the worker's event channel closed")
    }

    /// Events of one run up to and including its terminal one.
    fn until_terminal(&mut self, run: RunId) -> Vec<Event> {
        let mut out = Vec::new();
        loop {
            let ev = self.event();
            assert_eq!(ev.run(), Some(run), "an event of another run: {ev:?}");
            let done = ev.is_terminal();
            out.push(ev);
            if done {
                return out;
            }
        }
    }
}

fn spawn(model_dir: Option<PathBuf>) -> (WorkerHandle, Rx) {
    spawn_with(Config::default(), model_dir)
}

fn spawn_with(config: Config, model_dir: Option<PathBuf>) -> (WorkerHandle, Rx) {
    let (h, rx) = WorkerHandle::spawn(config, Some(Device::Cpu), model_dir);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    (h, Rx { rt, rx })
}

fn ready(rx: &mut Rx) -> WorkerInfo {
    match rx.event() {
        Event::Ready(info) => {
            assert_eq!(info.kind, speedscape::models::ModelKind::Micro);
            assert!(!info.tiny_model);
            let grammar = info.grammar.as_ref().expect("the micro model's world");
            assert_eq!(grammar.trigger, "PixArFK");
            assert_eq!(info.image_size, 64);
            assert!(info.model_dir.ends_with("models/micro"));
            assert!(!info.clip_scorer);
            info
        }
        other => panic!("expected Ready first, got {other:?}"),
    }
}

fn request(scheduler: SchedulerKind, steps: usize, cfg: f32, unet: &str) -> Request {
    Request {
        prompt: "a small cottage on a hillside at sunset".into(),
        negative_prompt: String::new(),
        scheduler,
        scheduler_options: SchedulerOptions::default(),
        steps,
        guidance: cfg,
        seed: 42,
        rng: RngSource::TorchCpu,
        unet: unet.into(),
        loras: Vec::new(),
        width: None,
        height: None,
        latents: None,
        clip_score: false,
        judge: false,
        control: None,
    }
}

/// A compact trace: `Loading:unet`, `Step:0`, `Finished`, …
fn trace(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            Event::Loading { component, .. } => format!("Loading:{component}"),
            Event::Loaded { component, .. } => format!("Loaded:{component}"),
            Event::Started { .. } => "Started".into(),
            Event::Encoded { .. } => "Encoded".into(),
            Event::Step { index, .. } => format!("Step:{index}"),
            Event::Preview { index, .. } => format!("Preview:{index}"),
            Event::Finished { .. } => "Finished".into(),
            Event::Cancelled { .. } => "Cancelled".into(),
            Event::Failed { error, .. } => format!("Failed:{error}"),
            Event::Ready(_) | Event::Fatal { .. } => "worker event".into(),
        })
        .collect()
}

fn steps(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("Step:{i}")).collect()
}

/// The trace without previews: they come from the preview thread, between steps wherever
/// they are ready ([`check_previews`] checks them).
fn without_previews(events: &[Event]) -> Vec<String> {
    trace(events)
        .into_iter()
        .filter(|e| !e.starts_with("Preview:"))
        .collect()
}

/// A finished run's previews: each after its own step's `Step`, in step order, of the kind in
/// use, and the last step's among them; all before the terminal event. Gives their indices.
fn check_previews(events: &[Event], info: &WorkerInfo, total: usize) -> Vec<usize> {
    let mut stepped = 0;
    let mut previewed: Vec<usize> = Vec::new();
    for ev in events {
        match ev {
            Event::Step { index, .. } => stepped = index + 1,
            Event::Preview {
                index, image, kind, ..
            } => {
                assert!(*index < stepped, "preview {index} after its step");
                assert!(previewed.last().is_none_or(|p| p < index), "in order");
                assert_eq!(*kind, info.preview.used);
                let side = match kind {
                    PreviewKind::Decoder => 64,
                    _ => 16,
                };
                assert_eq!(
                    image.dimensions(),
                    (side, side),
                    "decoder previews at the image size, latent ones at latent size (64 / 4)"
                );
                previewed.push(*index);
            }
            _ => {}
        }
    }
    assert_eq!(
        previewed.last(),
        Some(&(total - 1)),
        "the last step is previewed"
    );
    assert!(events.last().is_some_and(Event::is_terminal));
    previewed
}

#[test]
fn events_come_in_the_documented_order_and_components_load_once() {
    let (worker, mut rx) = spawn(None);
    let info = ready(&mut rx);

    let a = worker.next_run_id();
    let b = worker.next_run_id();
    let c = worker.next_run_id();
    assert!(a < b && b < c, "run ids grow");
    worker.submit(Job {
        run: a,
        request: request(SchedulerKind::DpmSolverPp, 3, 7.5, "base"),
    });
    worker.submit(Job {
        run: b,
        request: request(SchedulerKind::DpmSolverPp, 3, 7.5, "base"),
    });
    worker.submit(Job {
        run: c,
        request: request(SchedulerKind::Lcm, 2, 1.0, "lcm"),
    });

    // First run: every component is loaded and warmed before the timed run.
    let first = rx.until_terminal(a);
    let mut want: Vec<String> = [
        "Loading:text_encoder",
        "Loaded:text_encoder",
        "Loading:unet",
        "Loaded:unet",
        "Loading:vae_decoder",
        "Loaded:vae_decoder",
    ]
    .map(String::from)
    .to_vec();
    if info.preview.used == PreviewKind::Decoder {
        want.extend([
            "Loading:preview_decoder".into(),
            "Loaded:preview_decoder".into(),
        ]);
    }
    want.extend(["Started".into(), "Encoded".into()]);
    want.extend(steps(3));
    want.push("Finished".into());
    assert_eq!(without_previews(&first), want);
    check_previews(&first, &info, 3);
    for ev in &first {
        match ev {
            Event::Loaded {
                component, load, ..
            } => assert!(*load > Duration::ZERO, "{component}: session time recorded"),
            Event::Started {
                total_steps,
                width,
                height,
                ..
            } => assert_eq!((*total_steps, *width, *height), (3, 64, 64)),
            Event::Step { total, elapsed, .. } => {
                assert_eq!(*total, 3);
                assert!(*elapsed > Duration::ZERO);
            }
            Event::Finished { report, image, .. } => {
                assert_eq!(image.dimensions(), (64, 64), "the native size");
                assert!(!report.tiny_model);
                assert_eq!(report.model_kind, speedscape::models::ModelKind::Micro);
                assert_eq!(report.timings.unet.len(), 3);
                assert!(report.timings.text > Duration::ZERO);
            }
            _ => {}
        }
    }

    // Same variant again: nothing to load.
    let second = rx.until_terminal(b);
    let mut want: Vec<String> = ["Started", "Encoded"].map(String::from).to_vec();
    want.extend(steps(3));
    want.push("Finished".into());
    assert_eq!(without_previews(&second), want);
    check_previews(&second, &info, 3);

    // A new variant: only its UNet loads (it shares the base text encoder and the VAE).
    let third = rx.until_terminal(c);
    let mut want: Vec<String> = ["Loading:unet_lcm", "Loaded:unet_lcm", "Started", "Encoded"]
        .map(String::from)
        .to_vec();
    want.extend(steps(2));
    want.push("Finished".into());
    assert_eq!(without_previews(&third), want);
    check_previews(&third, &info, 2);
}

/// A DDPM job big enough (256 px: 32×32 latents) that 50 steps take a while on the CPU.
fn slow_job(worker: &WorkerHandle) -> Job {
    let mut req = request(SchedulerKind::Ddpm, 50, 7.5, "base");
    req.width = Some(256);
    req.height = Some(256);
    Job {
        run: worker.next_run_id(),
        request: req,
    }
}

#[test]
fn a_cancel_mid_run_ends_it_cancelled_and_the_next_job_runs_fine() {
    let (worker, mut rx) = spawn(None);
    ready(&mut rx);
    let slow = slow_job(&worker);
    let a = slow.run;
    let b = worker.next_run_id();
    worker.submit(slow);
    worker.submit(Job {
        run: b,
        request: request(SchedulerKind::DpmSolverPp, 3, 7.5, "base"),
    });

    let mut steps_a = 0;
    let mut ended_a = None;
    while ended_a.is_none() {
        let ev = rx.event();
        assert_eq!(ev.run(), Some(a), "b's events before a ended: {ev:?}");
        if let Event::Step { index, .. } = ev {
            assert_eq!(index, steps_a, "steps in order");
            steps_a += 1;
            if index == 1 {
                worker.cancel(a);
            }
        }
        if ev.is_terminal() {
            ended_a = Some(ev);
        }
    }
    assert!(
        matches!(ended_a, Some(Event::Cancelled { run }) if run == a),
        "{ended_a:?}"
    );
    assert!(steps_a < 50, "the cancel stopped the run ({steps_a} steps)");

    let after = rx.until_terminal(b);
    assert!(
        matches!(after.last(), Some(Event::Finished { image, .. }) if image.dimensions() == (64, 64)),
        "{:?}",
        trace(&after)
    );
    assert_eq!(
        after
            .iter()
            .filter(|e| matches!(e, Event::Step { .. }))
            .count(),
        3
    );
}

#[test]
fn a_cancel_while_queued_or_inside_a_unet_call_is_cancelled_not_failed() {
    let (worker, mut rx) = spawn(None);
    ready(&mut rx);
    // Inside the first UNet call: cancel as soon as the run starts (512 px: 64×64 latents,
    // so the encode and the first call take a while).
    let mut big = request(SchedulerKind::Ddpm, 50, 7.5, "base");
    big.width = Some(512);
    big.height = Some(512);
    let a = worker.next_run_id();
    let b = worker.next_run_id();
    let c = worker.next_run_id();
    worker.submit(Job {
        run: a,
        request: big,
    });
    worker.submit(Job {
        run: b,
        request: request(SchedulerKind::DpmSolverPp, 3, 7.5, "base"),
    });
    worker.submit(Job {
        run: c,
        request: request(SchedulerKind::DpmSolverPp, 2, 7.5, "base"),
    });
    // b is still queued: it ends with Cancelled alone.
    worker.cancel(b);
    let mut seen = Vec::new();
    loop {
        let ev = rx.event();
        if matches!(ev, Event::Started { .. }) {
            worker.cancel(a);
        }
        let done = ev.is_terminal();
        seen.push(ev);
        if done {
            break;
        }
    }
    assert!(
        matches!(seen.last(), Some(Event::Cancelled { run }) if *run == a),
        "{:?}",
        trace(&seen)
    );
    assert!(
        seen.iter()
            .filter(|e| matches!(e, Event::Step { .. }))
            .count()
            < 50,
        "{:?}",
        trace(&seen)
    );
    let queued = rx.until_terminal(b);
    assert_eq!(trace(&queued), vec!["Cancelled"]);
    let last = rx.until_terminal(c);
    assert_eq!(trace(&last).last().map(String::as_str), Some("Finished"));
}

#[test]
fn dropping_the_handle_stops_the_worker() {
    let (worker, mut rx) = spawn(None);
    ready(&mut rx);
    let job = slow_job(&worker);
    let run = job.run;
    worker.submit(job);
    // Wait for the run to be under way, then drop the handle: the run is cancelled and the
    // thread ends, closing the channel.
    loop {
        if let Event::Step { .. } = rx.event() {
            break;
        }
    }
    drop(worker);
    let mut rest = Vec::new();
    while let Some(ev) = rx.next() {
        assert_eq!(ev.run(), Some(run));
        rest.push(ev);
    }
    assert!(
        matches!(rest.last(), Some(Event::Cancelled { .. })),
        "{:?}",
        trace(&rest)
    );
}

#[test]
fn a_model_that_cannot_open_is_fatal_with_its_fix_and_no_colours() {
    let (_worker, mut rx) = spawn(Some(root().join("no-such-model")));
    match rx.event() {
        Event::Fatal { error } => {
            assert!(error.contains("does not exist"), "{error}");
            assert!(error.contains("Fix:"), "{error}");
            assert!(!error.contains('\u{1b}'), "{error}");
        }
        other => panic!("expected Fatal, got {other:?}"),
    }
    assert!(rx.next().is_none(), "the worker stops after Fatal");
}

#[test]
fn a_variant_that_does_not_load_fails_its_run_with_the_fix_and_the_worker_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    copy_dir(&root().join("models/tiny"), &model);
    // unet_lcm loads on first use: its weights file is cut short.
    let data = model.join("unet_lcm/model.onnx_data");
    let bytes = std::fs::read(&data).unwrap();
    std::fs::write(&data, &bytes[..bytes.len() / 2]).unwrap();
    let (worker, mut rx) = spawn(Some(model.clone()));
    assert!(matches!(rx.event(), Event::Ready(_)));

    let a = worker.next_run_id();
    worker.submit(Job {
        run: a,
        request: request(SchedulerKind::Lcm, 2, 1.0, "lcm"),
    });
    let events = rx.until_terminal(a);
    match events.last() {
        Some(Event::Failed { error, .. }) => {
            assert!(
                error.contains(&format!(
                    "the external data beside {} ",
                    model.join("unet_lcm/model.onnx").display()
                )) && error.contains("is shorter than the graph needs"),
                "{error}"
            );
            assert!(
                error.contains("\nFix: copy the folder's data file again"),
                "{error}"
            );
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    // The worker is still there: the base UNet runs.
    let b = worker.next_run_id();
    worker.submit(Job {
        run: b,
        request: request(SchedulerKind::DpmSolverPp, 2, 1.0, "base"),
    });
    let events = rx.until_terminal(b);
    assert!(
        matches!(events.last(), Some(Event::Finished { .. })),
        "{:?}",
        trace(&events)
    );
}

#[test]
fn a_clip_score_request_loads_the_scorer_once_before_its_run_and_reports_the_score() {
    let (worker, mut rx) = spawn(Some(root().join("models/tiny")));
    match rx.event() {
        Event::Ready(info) => {
            assert!(info.clip_scorer, "the tiny model has a CLIP scorer");
            assert!(info.tiny_model && info.grammar.is_none());
        }
        other => panic!("expected Ready first, got {other:?}"),
    }
    let mut asked = request(SchedulerKind::DpmSolverPp, 2, 7.5, "base");
    asked.clip_score = true;
    let plain = request(SchedulerKind::DpmSolverPp, 2, 7.5, "base");
    let runs: Vec<RunId> = (0..3).map(|_| worker.next_run_id()).collect();
    for (run, req) in runs.iter().zip([plain, asked.clone(), asked]) {
        worker.submit(Job {
            run: *run,
            request: req,
        });
    }
    let mut scores = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let events = rx.until_terminal(*run);
        let t = trace(&events);
        let loads = t
            .iter()
            .filter(|e| e.ends_with(":clip_image_encoder"))
            .count();
        // Loaded by the first run that asks (before `Started`), never again.
        assert_eq!(loads, if i == 1 { 2 } else { 0 }, "run {i}: {t:?}");
        if i == 1 {
            let started = t.iter().position(|e| e == "Started").unwrap();
            assert_eq!(
                t[started - 2..started],
                ["Loading:clip_image_encoder", "Loaded:clip_image_encoder"]
            );
        }
        match events.last() {
            Some(Event::Finished { report, .. }) => scores.push(report.clip_score),
            other => panic!("run {i}: {other:?}"),
        }
    }
    assert_eq!(scores[0], None, "not asked for");
    assert!(
        scores[1].is_some_and(|s| s.is_finite() && s >= 0.0),
        "{scores:?}"
    );
    assert_eq!(scores[1], scores[2], "same run, same score");
    worker.shutdown();
}

#[test]
fn a_model_without_a_scorer_says_so_in_ready_and_runs_without_a_score() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tiny");
    copy_dir(&root().join("models/tiny"), &dir);
    std::fs::remove_dir_all(dir.join("clip_image_encoder")).unwrap();
    let (worker, mut rx) = spawn(Some(dir));
    match rx.event() {
        Event::Ready(info) => assert!(!info.clip_scorer),
        other => panic!("expected Ready first, got {other:?}"),
    }
    let mut req = request(SchedulerKind::DpmSolverPp, 2, 7.5, "base");
    req.clip_score = true;
    let run = worker.next_run_id();
    worker.submit(Job { run, request: req });
    let events = rx.until_terminal(run);
    assert!(
        !trace(&events)
            .iter()
            .any(|e| e.contains("clip_image_encoder"))
    );
    match events.last() {
        Some(Event::Finished { report, .. }) => assert_eq!(report.clip_score, None),
        other => panic!("{other:?}"),
    }
    worker.shutdown();
}

#[test]
fn previews_follow_preview_every_and_off_makes_none() {
    let mut config = Config::default();
    config.tui.preview_every = 2;
    let (worker, mut rx) = spawn_with(config, None);
    let info = ready(&mut rx);
    assert_eq!(info.preview_every, 2);
    let run = worker.next_run_id();
    worker.submit(Job {
        run,
        request: request(SchedulerKind::DpmSolverPp, 5, 7.5, "base"),
    });
    let events = rx.until_terminal(run);
    assert!(matches!(events.last(), Some(Event::Finished { .. })));
    // Every 2nd step (indices 1, 3) and the last (4); a newer x0 may replace one not yet taken.
    let previewed = check_previews(&events, &info, 5);
    assert!(
        previewed.iter().all(|i| [1, 3, 4].contains(i)),
        "{previewed:?}"
    );
    worker.shutdown();

    let mut config = Config::default();
    config.tui.preview = PreviewKind::Off;
    let (worker, mut rx) = spawn_with(config, None);
    let info = ready(&mut rx);
    assert_eq!(info.preview.to_string(), "off");
    let run = worker.next_run_id();
    worker.submit(Job {
        run,
        request: request(SchedulerKind::DpmSolverPp, 3, 7.5, "base"),
    });
    let t = trace(&rx.until_terminal(run));
    assert_eq!(t.iter().filter(|e| e.starts_with("Step:")).count(), 3);
    assert!(
        !t.iter()
            .any(|e| e.starts_with("Preview:") || e.ends_with(":preview_decoder")),
        "{t:?}"
    );
    assert_eq!(t.last().map(String::as_str), Some("Finished"));
    worker.shutdown();
}
