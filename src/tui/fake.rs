//! TEST ONLY: a stand-in backend that makes no images, only events, on a timer — for the hidden
//! `--fake-backend` flag (tmux end-to-end test before the worker exists, UI work without a
//! model) and for synthetic data in tests. Its numbers are made up and say so in the header.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use image::{Rgb, RgbImage};
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

use super::backend::{RunBackend, Spawned};
use crate::pipeline::preview::{PreviewChoice, PreviewKind};
use crate::pipeline::{Request, RunReport, StepTiming, Timings};
use crate::runtime::Provider;
use crate::worker::{Event, Job, RunId, WorkerInfo};

enum Cmd {
    Submit(Box<Job>),
    Cancel(RunId),
}

pub struct FakeBackend {
    tx: mpsc::Sender<Cmd>,
    next: AtomicU64,
}

impl RunBackend for FakeBackend {
    fn submit(&self, job: Job) {
        let _ = self.tx.send(Cmd::Submit(Box::new(job)));
    }
    fn cancel(&self, run: RunId) {
        let _ = self.tx.send(Cmd::Cancel(run));
    }
    fn next_run_id(&self) -> RunId {
        self.next.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// The fake's `Ready` info.
pub fn info() -> WorkerInfo {
    WorkerInfo {
        provider: Provider::Cpu,
        device: "fake backend (test only)".into(),
        model_dir: PathBuf::from("fake"),
        tiny_model: true,
        kind: crate::models::ModelKind::Tiny,
        grammar: None,
        image_size: 64,
        notes: Vec::new(),
        variants: crate::models::default_variants(),
        fused: fake_fused(),
        adapters: vec!["lcm".into(), "style".into()],
        scheduler_config: serde_json::from_str(crate::models::SD15_SCHEDULER_CONFIG)
            .unwrap_or_default(),
        clip_scorer: false,
        // The tiny model has no preview decoder: `decoder` (the default) falls back.
        preview: PreviewChoice::resolve(PreviewKind::Decoder, false),
        preview_every: 1,
    }
}

/// The default variants' fused adapters, as the tiny model's manifest records them.
fn fake_fused() -> Vec<(String, Vec<crate::lora::AdapterWeight>)> {
    let a = |adapter: &str| crate::lora::AdapterWeight {
        adapter: adapter.into(),
        weight: 1.0,
    };
    vec![
        ("base".into(), vec![]),
        ("lcm".into(), vec![a("lcm")]),
        ("style".into(), vec![a("style")]),
        ("lcm_style".into(), vec![a("lcm"), a("style")]),
    ]
}

/// Starts the fake: each step takes `step` of real time and reports 20 ms of UNet.
pub fn spawn(step: Duration) -> Spawned {
    let (tx, rx) = mpsc::channel();
    let (events, receiver) = unbounded_channel();
    std::thread::spawn(move || serve(rx, events, step));
    (
        Box::new(FakeBackend {
            tx,
            next: AtomicU64::new(0),
        }),
        receiver,
    )
}

fn serve(rx: mpsc::Receiver<Cmd>, out: UnboundedSender<Event>, step: Duration) {
    if out.send(Event::Ready(info())).is_err() {
        return;
    }
    let mut queue: VecDeque<Job> = VecDeque::new();
    let mut loaded: Vec<String> = Vec::new();
    loop {
        let job = match queue.pop_front() {
            Some(j) => j,
            None => match rx.recv() {
                Ok(Cmd::Submit(j)) => *j,
                Ok(Cmd::Cancel(_)) => continue,
                Err(_) => return,
            },
        };
        let run = job.run;
        let r = &job.request;
        let send = |e: Event| out.send(e).is_ok();
        let component = format!("unet:{}", r.unet);
        if !loaded.contains(&component) {
            let ok = send(Event::Loading {
                run,
                component: component.clone(),
            });
            std::thread::sleep(step * 2);
            let ok = ok
                && send(Event::Loaded {
                    run,
                    component: component.clone(),
                    load: Duration::from_millis(120),
                    warm_up: Duration::from_millis(30),
                });
            if !ok {
                return;
            }
            loaded.push(component);
        }
        let mut ok = send(Event::Started {
            run,
            total_steps: r.steps,
            width: 64,
            height: 64,
        }) && send(Event::Encoded {
            run,
            text: Duration::from_millis(5),
        });
        let mut cancelled = false;
        for i in 0..r.steps {
            while let Ok(cmd) = rx.try_recv() {
                match cmd {
                    Cmd::Submit(j) => queue.push_back(*j),
                    Cmd::Cancel(id) if id == run => cancelled = true,
                    Cmd::Cancel(id) => queue.retain(|j| j.run != id),
                }
            }
            if cancelled || !ok {
                break;
            }
            std::thread::sleep(step);
            ok = send(Event::Step {
                run,
                index: i,
                total: r.steps,
                timestep: 999 - (i * 1000 / r.steps) as i64,
                timing: step_timing(),
                elapsed: Duration::from_millis(5 + 21 * (i as u64 + 1)),
            }) && send(Event::Preview {
                run,
                index: i,
                image: pattern(8, r.seed, i),
                kind: PreviewKind::Latent,
                took: Duration::from_micros(300),
            });
        }
        if !ok {
            return;
        }
        let last = if cancelled {
            Event::Cancelled { run }
        } else {
            Event::Finished {
                run,
                report: Box::new(report(r)),
                image: pattern(64, r.seed, r.steps),
            }
        };
        if !send(last) {
            return;
        }
    }
}

/// What every fake step takes: 20 ms UNet, 1 ms scheduler.
pub fn step_timing() -> StepTiming {
    StepTiming {
        unet: Duration::from_millis(20),
        controlnet: Duration::ZERO,
        scheduler: Duration::from_millis(1),
    }
}

/// A deterministic picture: a colour gradient that sharpens with `step`.
pub fn pattern(size: u32, seed: u64, step: usize) -> RgbImage {
    let s = (seed % 97) as u32;
    RgbImage::from_fn(size, size, |x, y| {
        let u = x * 255 / size.max(1);
        let v = y * 255 / size.max(1);
        let k = (step as u32 * 13 + s) % 256;
        Rgb([u as u8, v as u8, ((u + v + k) / 2 % 256) as u8])
    })
}

/// A run-time adapter as the fake "applies" it: a made-up file and digest.
fn applied(a: &crate::lora::AdapterWeight) -> crate::lora::AppliedAdapter {
    let name = crate::report::table::adapter_name(&a.adapter);
    crate::lora::AppliedAdapter {
        file: format!("fake/loras/{name}.safetensors"),
        sha256: "0123456789abcdef".repeat(4),
        weight: a.weight,
        format: "diffusers".into(),
        components: vec!["unet".into()],
        name,
    }
}

/// The report of a fake run of `r`: 5 ms text, 20 ms UNet + 1 ms scheduler a step, 15 ms VAE.
pub fn report(r: &Request) -> RunReport {
    let n = r.steps;
    let timings = Timings {
        text: Duration::from_millis(5),
        unet: vec![Duration::from_millis(20); n],
        scheduler: vec![Duration::from_millis(1); n],
        controlnet: match r.control {
            Some(_) => vec![Duration::from_millis(8); n],
            None => Vec::new(),
        },
        vae: Duration::from_millis(15),
        total: Duration::from_millis(5 + 21 * n as u64 + 15),
        // The made-up "ONNX Runtime" share: text, UNet and VAE calls.
        ort: Duration::from_millis(4 + 19 * n as u64 + 14),
    };
    RunReport {
        model: "fake".into(),
        tiny_model: true,
        model_kind: crate::models::ModelKind::Tiny,
        provider: Provider::Cpu,
        device: "fake CPU".into(),
        onnxruntime: String::new(),
        onnxruntime_version: String::new(),
        unet: r.unet.clone(),
        unet_label: r.unet.clone(),
        adapters: r.loras.iter().map(applied).collect(),
        scheduler: r.scheduler.to_string(),
        steps: n,
        guidance: r.guidance,
        seed: r.seed,
        rng: r.rng.to_string(),
        width: 64,
        height: 64,
        timesteps: (0..n).map(|i| 999 - (i * 1000 / n.max(1)) as i64).collect(),
        prompt_tokens: 10,
        timings,
        load_ms: BTreeMap::new(),
        warnings: Vec::new(),
        clip_score: None,
        judge: None,
        control: r.control.as_ref().map(fake_control),
    }
}

/// What the fake says about a controlled run: the ControlNet named (or `edge`), 8 ms a step,
/// an adherence that grows with the scale (0.3 at 0, 0.8 from 1).
fn fake_control(c: &crate::pipeline::control::Control) -> crate::pipeline::control::ControlReport {
    crate::pipeline::control::ControlReport {
        name: c.name.clone().unwrap_or_else(|| "edge".into()),
        image: c.image.display().to_string(),
        preprocess: c.preprocess,
        scale: c.scale,
        adherence: 0.3 + 0.5 * f64::from(c.scale.min(1.0)),
        time: Duration::from_millis(8),
    }
}
