//! `speedscape bench`: each run warmed up, then repeated; per run the median/min/max of the
//! total and of every phase, the time outside ONNX Runtime's calls, it/s, peak host RSS and
//! (on a GPU) the GPU memory held; JSON for scripts and `--compare` for ratios between two.
//! Beside each run, the cost of a preview of each kind (the model's preview decoder where it has
//! one, and the latent matrix): every step's x0 of the run's first pass previewed by both, after
//! that pass, timed apart (never part of the run's numbers), and as a share of a step.
//!
//! Runs go straight through [`crate::pipeline::generate`] in this thread (no worker, no UI), so
//! the numbers describe the engine itself.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use color_eyre::eyre::{WrapErr, bail, eyre};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::Fixable;
use crate::exercises::ControlSpec;
use crate::lora::{AdapterWeight, AppliedAdapter};
use crate::pipeline::preview::{PreviewKind, Previewer};
use crate::pipeline::{Request, RunReport, generate};
use crate::rng::RngSource;
use crate::runtime::{Device, Provider};
use crate::schedulers::{SchedulerKind, SchedulerOptions};

/// One configuration to time.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchSpec {
    /// How it was asked for (`dpmpp:20`, `ex1`'s `DDPM 50`).
    pub spec: String,
    pub label: String,
    pub scheduler: SchedulerKind,
    pub steps: usize,
    pub cfg: f32,
    pub unet: String,
    /// LoRA adapters fused at run time on top of `unet`.
    pub loras: Vec<AdapterWeight>,
    pub prompt: String,
    /// The ControlNet every repeat runs under (an exercise run's own, or `--controlnet`'s).
    pub control: Option<ControlSpec>,
}

/// The prompt of runs given by spec (an exercise's runs keep their exercise's).
pub const BENCH_PROMPT: &str =
    "a small cottage on a hillside at sunset, warm golden light, detailed";

impl BenchSpec {
    /// `sched:steps[:cfg][@unet]`: `dpmpp:20`, `lcm:4` (cfg 1.5 on `lcm`), `ddpm:50:7.5@base`.
    pub fn parse(text: &str) -> color_eyre::Result<Self> {
        let fix = "write SCHEDULER:STEPS[:CFG][@UNET], e.g. dpmpp:20, lcm:4, ddim:30:5@style";
        let (body, unet) = match text.split_once('@') {
            Some((b, u)) if !u.is_empty() => (b, Some(u)),
            Some(_) => bail!(Fixable::new(format!("{text:?}: nothing after '@'"), fix)),
            None => (text, None),
        };
        let mut parts = body.split(':');
        let scheduler: SchedulerKind = parts
            .next()
            .unwrap_or_default()
            .parse()
            .map_err(|e| Fixable::new(format!("{text:?}: {e}"), fix))?;
        let steps: usize = parts
            .next()
            .and_then(|s| s.parse().ok())
            .filter(|&s| s >= 1)
            .ok_or_else(|| {
                Fixable::new(
                    format!("{text:?}: the step count must be a whole number ≥ 1"),
                    fix,
                )
            })?;
        let lcm = scheduler == SchedulerKind::Lcm;
        let cfg: f32 = match parts.next() {
            None => {
                if lcm {
                    1.5
                } else {
                    7.5
                }
            }
            Some(c) => c
                .parse()
                .ok()
                .filter(|c: &f32| c.is_finite() && *c >= 0.0)
                .ok_or_else(|| {
                    Fixable::new(format!("{text:?}: the cfg {c:?} is not a number ≥ 0"), fix)
                })?,
        };
        if parts.next().is_some() {
            bail!(Fixable::new(format!("{text:?}: too many ':' parts"), fix));
        }
        let unet = unet.unwrap_or(if lcm { "lcm" } else { "base" }).to_string();
        Ok(Self {
            spec: text.to_string(),
            label: format!("{} {steps} cfg {cfg} @{unet}", scheduler.as_str()),
            scheduler,
            steps,
            cfg,
            unet,
            loras: Vec::new(),
            prompt: BENCH_PROMPT.into(),
            control: None,
        })
    }

    /// This run under `control` (the command line's `--controlnet`), replacing its own; its
    /// spec and label name the ControlNet and its scale (`dpmpp:20 +controlnet=edge×1`), so
    /// `--compare` matches controlled runs with controlled runs only.
    pub fn with_control(mut self, control: &ControlSpec) -> Self {
        if self.control.as_ref() != Some(control) {
            let name = control.controlnet.as_deref().unwrap_or("?");
            self.spec
                .push_str(&format!(" +controlnet={name}×{}", control.scale));
            self.label.push_str(&format!(" + {name}×{}", control.scale));
        }
        self.control = Some(control.clone());
        self
    }

    /// This run with `over` (the command line's `--lora`) on top of its own adapters (see
    /// [`crate::exercises::with_adapters`]); its spec and label name them
    /// (`lcm:4 +style=0.6`, `lcm 4 cfg 1.5 @lcm + style×0.6`), so `--compare` matches runs
    /// with the same adapters only.
    pub fn with_adapters(mut self, over: &[AdapterWeight]) -> Self {
        for a in over {
            if !self
                .loras
                .iter()
                .any(|o| o.adapter == a.adapter && o.weight == a.weight)
            {
                self.spec.push_str(&format!(" +{a}"));
                self.label.push_str(&format!(
                    " + {}×{}",
                    crate::report::table::adapter_name(&a.adapter),
                    a.weight
                ));
            }
        }
        self.loras = crate::exercises::with_adapters(&self.loras, over);
        self
    }

    /// `--runs`: `all`, `ex1`…`exN` (an exercise's runs), or specs, comma-separated.
    pub fn parse_list(config: &Config, text: &str) -> color_eyre::Result<Vec<Self>> {
        let exercises = config.exercises();
        let mut out = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let from_exercise = |number: usize| -> color_eyre::Result<Vec<Self>> {
                let ex = exercises
                    .iter()
                    .find(|e| e.number == number)
                    .ok_or_else(|| {
                        eyre!(Fixable::new(
                            format!("--runs {item}: there is no exercise {number}"),
                            "use ex1, ex2, ex3, all or a spec like dpmpp:20",
                        ))
                    })?;
                Ok(ex
                    .runs
                    .iter()
                    .map(|r| Self {
                        spec: format!("ex{number}:{}", r.label),
                        label: r.label.clone(),
                        scheduler: r.scheduler,
                        steps: r.steps,
                        cfg: r.cfg,
                        unet: r.unet.clone(),
                        loras: r.lora.clone(),
                        prompt: r.prompt.clone().unwrap_or_else(|| ex.prompt.clone()),
                        control: r.control.clone(),
                    })
                    .collect())
            };
            if item == "all" {
                for ex in exercises.iter().filter(|e| !e.runs.is_empty()) {
                    out.extend(from_exercise(ex.number)?);
                }
            } else if let Some(n) = item.strip_prefix("ex") {
                let n: usize = n.parse().map_err(|_| {
                    eyre!(Fixable::new(
                        format!("--runs {item}: not an exercise"),
                        "use ex1, ex2, ex3, all or a spec like dpmpp:20",
                    ))
                })?;
                out.extend(from_exercise(n)?);
            } else {
                out.push(Self::parse(item)?);
            }
        }
        if out.is_empty() {
            bail!(Fixable::new(
                "--runs is empty",
                "e.g. --runs ex1, --runs all, --runs dpmpp:20,lcm:4",
            ));
        }
        Ok(out)
    }
}

/// What `speedscape bench` was asked to do.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub runs: Vec<BenchSpec>,
    /// Pixels (square); `None`: the model's native size.
    pub size: Option<usize>,
    pub warmup: usize,
    pub repeat: usize,
    pub seed: u64,
    /// `None`: config.toml's `runtime.rng` (torch-cuda when it names none).
    pub rng: Option<RngSource>,
    pub device: Option<Device>,
    pub model_dir: Option<std::path::PathBuf>,
    pub progress: bool,
    /// Time each run again with the worker's preview thread beside it ([`PreviewThreadCost`]).
    pub preview_thread: bool,
}

/// Median, min and max of a phase over the repeats (ms).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(values: &[f64]) -> Self {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Self::default();
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Self {
            median,
            min: v[0],
            max: v[n - 1],
        }
    }
}

/// One timed repeat (ms). `other_ms` is the total minus the four phases: noise, tensor
/// copies and image conversion.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Repeat {
    pub total_ms: f64,
    pub text_ms: f64,
    pub unet_ms: f64,
    pub scheduler_ms: f64,
    pub vae_ms: f64,
    /// The ControlNet's calls together (0 without control), apart from the UNet's; part of
    /// `other_ms` in files written before it was counted.
    #[serde(default)]
    pub controlnet_ms: f64,
    pub other_ms: f64,
    /// Inside ONNX Runtime's run calls.
    pub ort_ms: f64,
    pub unet_calls: usize,
    /// Host RSS right after this repeat.
    pub rss_bytes: Option<u64>,
}

impl Repeat {
    fn of(report: &RunReport) -> Self {
        let t = &report.timings;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let (text, unet, sched, vae, total) = (
            ms(t.text),
            ms(t.unet_total()),
            ms(t.scheduler_total()),
            ms(t.vae),
            ms(t.total),
        );
        let controlnet = ms(t.controlnet_total());
        Self {
            total_ms: total,
            text_ms: text,
            unet_ms: unet,
            scheduler_ms: sched,
            vae_ms: vae,
            controlnet_ms: controlnet,
            other_ms: total - text - unet - sched - vae - controlnet,
            ort_ms: ms(t.ort),
            unet_calls: t.unet.len(),
            rss_bytes: memory::rss(),
        }
    }
}

/// A run's results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    pub spec: String,
    pub label: String,
    pub scheduler: String,
    pub steps: usize,
    pub cfg: f32,
    pub unet: String,
    /// The LoRA adapters asked for on top of `unet` (not read back by `--compare`: the spec
    /// names them).
    #[serde(default, skip_deserializing, skip_serializing_if = "Vec::is_empty")]
    pub loras: Vec<AdapterWeight>,
    /// The adapters as the runs applied them: file, SHA-256, weight, format.
    #[serde(default, skip_deserializing, skip_serializing_if = "Vec::is_empty")]
    pub adapters: Vec<AppliedAdapter>,
    pub width: usize,
    pub height: usize,
    /// The warm-up runs' totals (ms), apart from the repeats.
    pub warmup_ms: Vec<f64>,
    pub repeats: Vec<Repeat>,
    pub total_ms: Spread,
    pub text_ms: Spread,
    pub unet_ms: Spread,
    /// Per UNet call (one per step; batch 2 under guidance).
    pub unet_call_ms: Spread,
    /// Per ControlNet call (one per step, before the UNet's), apart from the UNet's; absent
    /// for a run without control.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controlnet_call_ms: Option<Spread>,
    /// The run's ControlNet, control image, scale and preprocessing, and the last repeat's
    /// control adherence (edge F1; NaN when not measured); absent without control.
    #[serde(default, skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub control: Option<crate::pipeline::control::ControlReport>,
    pub scheduler_ms: Spread,
    pub vae_ms: Spread,
    pub other_ms: Spread,
    /// Denoising steps per second (UNet + scheduler), median repeat.
    pub its: f64,
    /// Share of the median total spent outside ONNX Runtime's run calls (%).
    pub outside_ort_pct: f64,
    /// Peak host RSS during this run's warm-up and repeats (bytes); `peak_rss_scope` says
    /// whether it was reset for this run (`run`) or is the process's (`process`).
    pub peak_rss_bytes: Option<u64>,
    pub peak_rss_scope: String,
    /// RSS after the last repeat minus after the first (growth across repeats).
    pub rss_growth_bytes: Option<i64>,
    /// GPU memory this process holds after the run (ONNX Runtime's arena keeps its peak);
    /// `null` on the CPU or where nvidia-smi cannot tell.
    pub peak_gpu_bytes: Option<u64>,
    /// What a preview of each kind costs on this run's x0s, apart from the run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previews: Vec<PreviewCost>,
    /// The run's time with the preview thread beside it (`--preview-thread`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with_preview_thread: Option<PreviewThreadCost>,
}

/// A run timed again with the TUI worker's preview thread making a preview of every step
/// beside it, as the TUI runs it: what previews cost the run itself, through the cores the two
/// share (the previews are never counted in the run's time; this is how much slower the run's
/// own work gets).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreviewThreadCost {
    pub kind: PreviewKind,
    /// The run's total over the repeats (ms).
    pub total_ms: Spread,
    /// Its median over the plain repeats' median total.
    pub over_run: f64,
}

/// The preview thread `--preview-thread` times runs beside: one for the whole bench (its
/// decoder session made once), as the TUI's worker keeps one; the kind it makes.
fn preview_thread(
    rt: &crate::runtime::Runtime,
    model: &mut crate::models::Model,
) -> color_eyre::Result<(crate::worker::previews::PreviewThread, PreviewKind)> {
    let previewer = Previewer::for_model(rt, model, PreviewKind::Decoder)?;
    let kind = previewer.choice().used;
    let thread =
        crate::worker::previews::PreviewThread::spawn(Box::new(previewer), Box::new(|_| true))
            .wrap_err("starting a preview thread")?;
    Ok((thread, kind))
}

/// `run_count` passes of `request` (after one untimed pass that warms the previews up at this
/// size) with `beside` offered every step's x0, as the worker offers them; the previews
/// themselves are dropped. `runs`: the thread's run ids used so far (each pass takes the next).
/// `plain_ms`: the plain repeats' median total.
fn time_with_preview_thread(
    rt: &crate::runtime::Runtime,
    model: &mut crate::models::Model,
    request: &Request,
    beside: &(crate::worker::previews::PreviewThread, PreviewKind),
    runs: &mut crate::worker::protocol::RunId,
    run_count: usize,
    plain_ms: f64,
) -> color_eyre::Result<PreviewThreadCost> {
    let (thread, kind) = beside;
    let cancel: &AtomicBool = crate::interrupt::flag();
    let mut totals = Vec::with_capacity(run_count);
    for k in 0..=run_count {
        *runs += 1;
        let run = *runs;
        let out = generate(rt, model, request, cancel, &mut |ev| {
            thread.offer(run, ev.index, ev.preview);
        })?;
        if let Some(e) = thread.finish(run, false) {
            bail!("a preview beside the run failed: {e}");
        }
        if k > 0 {
            totals.push(out.report.timings.total.as_secs_f64() * 1e3);
        }
    }
    let total_ms = Spread::of(&totals);
    let over_run = if plain_ms > 0.0 {
        total_ms.median / plain_ms
    } else {
        0.0
    };
    Ok(PreviewThreadCost {
        kind: *kind,
        total_ms,
        over_run,
    })
}

/// The cost of one preview kind on a run's x0s: every step's x0 of its first pass previewed
/// once (after one untimed warm-up preview).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreviewCost {
    pub kind: PreviewKind,
    /// Per preview (ms).
    pub ms: Spread,
    /// The median preview over the median step (UNet + ControlNet + scheduler per call): the
    /// issue's goal is ≤ 0.1 for the decoder.
    pub over_step: f64,
}

/// The preview kinds a bench times: the decoder where the model has one, and the latent matrix.
fn preview_kinds(previewer: &Previewer) -> Vec<PreviewKind> {
    let mut kinds = vec![PreviewKind::Latent];
    if previewer.choice().used == PreviewKind::Decoder {
        kinds.insert(0, PreviewKind::Decoder);
    }
    kinds
}

/// Each kind's [`PreviewCost`] on `x0s`, against `step_ms` (the median step).
fn preview_costs(
    previewer: &mut Previewer,
    x0s: &[ndarray::Array4<f32>],
    step_ms: f64,
) -> color_eyre::Result<Vec<PreviewCost>> {
    let mut costs = Vec::new();
    let Some(first) = x0s.first() else {
        return Ok(costs);
    };
    for kind in preview_kinds(previewer) {
        previewer.preview_as(kind, first.view())?;
        let mut ms = Vec::with_capacity(x0s.len());
        for x0 in x0s {
            if let Some(p) = previewer.preview_as(kind, x0.view())? {
                ms.push(p.took.as_secs_f64() * 1e3);
            }
        }
        let ms = Spread::of(&ms);
        let over_step = if step_ms > 0.0 {
            ms.median / step_ms
        } else {
            0.0
        };
        costs.push(PreviewCost {
            kind,
            ms,
            over_step,
        });
    }
    Ok(costs)
}

/// The median step of `repeats` (ms): UNet, ControlNet and scheduler over the UNet calls.
fn step_ms(repeats: &[Repeat]) -> f64 {
    let per: Vec<f64> = repeats
        .iter()
        .map(|r| (r.unet_ms + r.controlnet_ms + r.scheduler_ms) / r.unet_calls.max(1) as f64)
        .collect();
    Spread::of(&per).median
}

/// A whole bench: where it ran and every run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchReport {
    pub speedscape: String,
    pub provider: String,
    pub device: String,
    pub onnxruntime: String,
    pub model: String,
    pub tiny_model: bool,
    pub intra_op_threads: usize,
    pub warmup: usize,
    pub repeat: usize,
    /// Session creation per component (ms), before any run.
    pub load_ms: std::collections::BTreeMap<String, f64>,
    pub runs: Vec<RunResult>,
}

/// Runs the bench.
/// The engine's request for `spec` at the bench's size, seed and noise source.
fn request_of(spec: &BenchSpec, opts: &BenchOptions, rng: RngSource) -> Request {
    Request {
        prompt: spec.prompt.clone(),
        negative_prompt: String::new(),
        scheduler: spec.scheduler,
        scheduler_options: SchedulerOptions::default(),
        steps: spec.steps,
        guidance: spec.cfg,
        seed: opts.seed,
        rng,
        unet: spec.unet.clone(),
        loras: spec.loras.clone(),
        width: opts.size,
        height: opts.size,
        latents: None,
        clip_score: false,
        judge: false,
        control: spec.control.as_ref().map(ControlSpec::to_control),
    }
}

pub fn run(config: &Config, opts: &BenchOptions) -> color_eyre::Result<BenchReport> {
    if opts.repeat == 0 {
        bail!(Fixable::new(
            "--repeat 0 times nothing",
            "--repeat 3 (or more)"
        ));
    }
    let rt = crate::open::runtime(config, opts.device)?;
    let (dir, kind) = crate::open::model_dir(config, opts.model_dir.as_deref())?;
    let tiny = kind == crate::models::ModelKind::Tiny;
    let mut model = crate::open::model(config, &rt, &dir)?;
    let rng = opts.rng.unwrap_or(config.runtime.rng);
    let device = crate::worker::device_name(rt.provider);
    // A signal (SIGINT, SIGTERM, SIGHUP) stops the bench between steps; nothing is written.
    let cancel: &AtomicBool = crate::interrupt::flag();
    // The preview decoder's session (where the model has one) is made now, its time in load_ms.
    let mut previewer = Previewer::for_model(&rt, &mut model, PreviewKind::Decoder)?;
    let beside = match opts.preview_thread {
        true => Some(preview_thread(&rt, &mut model)?),
        false => None,
    };
    let mut beside_runs = 0;
    let mut results = Vec::new();
    let n = opts.runs.len();
    for (i, spec) in opts.runs.iter().enumerate() {
        // Sessions this run needs are created (and their time reported) before its clock: its
        // ControlNet's too.
        model.unet_with(&rt, &spec.unet, &spec.loras)?;
        model.text_encoder_with(&rt, &spec.unet, &spec.loras)?;
        if let Some(c) = &spec.control {
            let name = crate::pipeline::control::resolve_name(&dir, c.controlnet.as_deref())?;
            model.controlnet(&rt, &name)?;
        }
        let request = request_of(spec, opts, rng);
        let scope = if memory::reset_peak() {
            "run"
        } else {
            "process"
        };
        let mut warmup_ms = Vec::new();
        let mut repeats = Vec::new();
        let mut size = (0, 0);
        let mut adapters = Vec::new();
        let mut control = None;
        // The first pass's x0s (a warm-up's where there is one), previewed after it.
        let mut x0s = Vec::new();
        for k in 0..opts.warmup + opts.repeat {
            let warm = k < opts.warmup;
            if opts.progress {
                let what = if warm {
                    "warm-up".to_string()
                } else {
                    format!("repeat {}/{}", k - opts.warmup + 1, opts.repeat)
                };
                eprint!("\rbench [{}/{n}] {}: {what}…        ", i + 1, spec.label);
            }
            let started = Instant::now();
            let out = generate(&rt, &mut model, &request, cancel, &mut |ev| {
                if k == 0 {
                    x0s.push(ev.preview.to_owned());
                }
            })
            .wrap_err_with(|| format!("bench run {}", spec.spec))?;
            let report = out.report;
            size = (report.width, report.height);
            adapters = report.adapters.clone();
            control = report.control.clone();
            if warm {
                warmup_ms.push(started.elapsed().as_secs_f64() * 1e3);
            } else {
                repeats.push(Repeat::of(&report));
            }
        }
        if opts.progress {
            eprintln!();
        }
        let previews = preview_costs(&mut previewer, &x0s, step_ms(&repeats))?;
        let result = summarise(spec, size, warmup_ms, repeats, scope, rt.provider);
        let with_preview_thread = match &beside {
            Some(b) => Some(time_with_preview_thread(
                &rt,
                &mut model,
                &request,
                b,
                &mut beside_runs,
                opts.repeat,
                result.total_ms.median,
            )?),
            None => None,
        };
        results.push(RunResult {
            adapters,
            control,
            previews,
            with_preview_thread,
            ..result
        });
    }
    Ok(BenchReport {
        speedscape: env!("CARGO_PKG_VERSION").into(),
        provider: rt.provider.short().into(),
        device,
        onnxruntime: rt.library.version.clone(),
        model: dir.display().to_string(),
        tiny_model: tiny,
        intra_op_threads: rt.options.intra_threads(),
        warmup: opts.warmup,
        repeat: opts.repeat,
        load_ms: model
            .load_times
            .iter()
            .map(|(name, d)| (name.clone(), d.as_secs_f64() * 1e3))
            .collect(),
        runs: results,
    })
}

fn summarise(
    spec: &BenchSpec,
    (width, height): (usize, usize),
    warmup_ms: Vec<f64>,
    repeats: Vec<Repeat>,
    scope: &str,
    provider: Provider,
) -> RunResult {
    let col = |f: fn(&Repeat) -> f64| Spread::of(&repeats.iter().map(f).collect::<Vec<_>>());
    let total = col(|r| r.total_ms);
    let ort = col(|r| r.ort_ms);
    let steps = col(|r| r.unet_ms + r.scheduler_ms);
    let calls = repeats.first().map_or(0, |r| r.unet_calls).max(1);
    let rss: Vec<u64> = repeats.iter().filter_map(|r| r.rss_bytes).collect();
    RunResult {
        spec: spec.spec.clone(),
        label: spec.label.clone(),
        scheduler: spec.scheduler.as_str().into(),
        steps: spec.steps,
        cfg: spec.cfg,
        unet: spec.unet.clone(),
        loras: spec.loras.clone(),
        adapters: Vec::new(),
        width,
        height,
        warmup_ms,
        total_ms: total,
        text_ms: col(|r| r.text_ms),
        unet_ms: col(|r| r.unet_ms),
        unet_call_ms: Spread::of(
            &repeats
                .iter()
                .map(|r| r.unet_ms / r.unet_calls.max(1) as f64)
                .collect::<Vec<_>>(),
        ),
        // One ControlNet call per UNet call.
        controlnet_call_ms: spec.control.as_ref().map(|_| {
            Spread::of(
                &repeats
                    .iter()
                    .map(|r| r.controlnet_ms / r.unet_calls.max(1) as f64)
                    .collect::<Vec<_>>(),
            )
        }),
        control: None,
        scheduler_ms: col(|r| r.scheduler_ms),
        vae_ms: col(|r| r.vae_ms),
        other_ms: col(|r| r.other_ms),
        its: if steps.median > 0.0 {
            calls as f64 / (steps.median / 1e3)
        } else {
            0.0
        },
        outside_ort_pct: if total.median > 0.0 {
            (100.0 * (total.median - ort.median) / total.median).max(0.0)
        } else {
            0.0
        },
        peak_rss_bytes: memory::peak_rss(),
        peak_rss_scope: scope.into(),
        rss_growth_bytes: match (rss.first(), rss.last()) {
            (Some(&a), Some(&b)) if rss.len() > 1 => Some(b as i64 - a as i64),
            _ => None,
        },
        peak_gpu_bytes: provider.is_gpu().then(memory::gpu_bytes).flatten(),
        previews: Vec::new(),
        with_preview_thread: None,
        repeats,
    }
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("–".into(), |b| {
        format!("{:.0}", b as f64 / (1 << 20) as f64)
    })
}

fn fmt_spread(s: &Spread) -> String {
    format!("{:.1} ({:.1}–{:.1})", s.median, s.min, s.max)
}

/// The human table.
pub fn render(r: &BenchReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "speedscape {} · {} ({}) · ONNX Runtime {} · {} intra-op threads · model {}{}",
        r.speedscape,
        r.provider,
        r.device,
        r.onnxruntime,
        r.intra_op_threads,
        r.model,
        if r.tiny_model {
            " (tiny, random weights)"
        } else {
            ""
        }
    );
    let loads: Vec<String> = r
        .load_ms
        .iter()
        .map(|(k, v)| format!("{k} {v:.0} ms"))
        .collect();
    let _ = writeln!(
        out,
        "sessions created (apart from the runs): {}",
        loads.join(", ")
    );
    let _ = writeln!(
        out,
        "{} warm-up + {} repeats per run; times in ms, median (min–max)\n",
        r.warmup, r.repeat
    );
    // The ControlNet's column only when some run has one: benches without control keep
    // their width.
    let control = r.runs.iter().any(|run| run.controlnet_call_ms.is_some());
    let cn_column = |cell: String| {
        if control {
            format!(" {cell:>18}")
        } else {
            String::new()
        }
    };
    let _ = writeln!(
        out,
        "{:<26} {:>9} {:>22} {:>9} {:>18}{} {:>8} {:>8} {:>7} {:>7} {:>8} {:>9} {:>8}",
        "run",
        "size",
        "total",
        "text",
        "UNet/call",
        cn_column("ControlNet/call".into()),
        "sched",
        "VAE",
        "other",
        "it/s",
        "out-ORT",
        "peak RSS",
        "GPU MiB"
    );
    for run in &r.runs {
        let _ = writeln!(
            out,
            "{:<26} {:>9} {:>22} {:>9.1} {:>18}{} {:>8.2} {:>8.1} {:>7.1} {:>7.2} {:>7.2}% {:>5} MiB {:>8}",
            run.label,
            format!("{}×{}", run.width, run.height),
            fmt_spread(&run.total_ms),
            run.text_ms.median,
            fmt_spread(&run.unet_call_ms),
            cn_column(
                run.controlnet_call_ms
                    .as_ref()
                    .map_or_else(|| crate::report::table::NOT_APPLICABLE.into(), fmt_spread)
            ),
            run.scheduler_ms.median,
            run.vae_ms.median,
            run.other_ms.median,
            run.its,
            run.outside_ort_pct,
            mib(run.peak_rss_bytes),
            mib(run.peak_gpu_bytes),
        );
    }
    let adapters =
        crate::report::table::adapter_lines(r.runs.iter().flat_map(|r| &r.adapters), true);
    if !adapters.is_empty() {
        out.push('\n');
        out.push_str(&adapters);
    }
    out.push_str(&control_lines(r));
    out.push_str(&preview_lines(r));
    out
}

/// Under the table, one line per run with previews: each kind's ms per preview and its share
/// of a step, measured apart from the run.
fn preview_lines(r: &BenchReport) -> String {
    let mut out = String::new();
    for run in r.runs.iter().filter(|run| !run.previews.is_empty()) {
        if out.is_empty() {
            out.push_str(
                "
previews (each step's x0 of the first pass, timed apart from the run):
",
            );
        }
        let kinds: Vec<String> = run
            .previews
            .iter()
            .map(|p| {
                format!(
                    "{} {} ms = {:.1} % of a step",
                    p.kind,
                    fmt_ms(&p.ms),
                    100.0 * p.over_step
                )
            })
            .collect();
        out.push_str(&format!("{}: {}\n", run.label, kinds.join(" · ")));
    }
    let beside: Vec<String> = r
        .runs
        .iter()
        .filter_map(|run| {
            let t = run.with_preview_thread.as_ref()?;
            Some(format!(
                "{}: {} ms against {} ms without ({:.2}×)",
                run.label,
                fmt_ms(&t.total_ms),
                fmt_ms(&run.total_ms),
                t.over_run
            ))
        })
        .collect();
    if let Some(kind) = r
        .runs
        .iter()
        .find_map(|run| run.with_preview_thread.as_ref())
    {
        out.push_str(&format!(
            "\nwith the preview thread beside the run ({} previews of every step, as the TUI makes them):\n{}\n",
            kind.kind,
            beside.join("\n")
        ));
    }
    out
}

/// A preview's spread: milliseconds with two decimals (a latent preview takes microseconds).
fn fmt_ms(s: &Spread) -> String {
    format!("{:.2} ({:.2}–{:.2})", s.median, s.min, s.max)
}

/// Under the table, one line per run with a ControlNet: which, on what, how strongly, and the
/// last repeat's adherence. Nothing when no run has one.
fn control_lines(r: &BenchReport) -> String {
    let mut out = String::new();
    for run in &r.runs {
        let Some(c) = &run.control else { continue };
        if out.is_empty() {
            out.push('\n');
        }
        out.push_str(&format!(
            "{}: {}, edge F1 {} (last repeat)\n",
            run.label,
            crate::report::table::control_label(c),
            crate::report::table::format_adherence(Some(c.adherence)),
        ));
    }
    out
}

/// `--compare a.json b.json`: for every run both have (same spec and size), b's numbers over
/// a's: above 1 means b takes longer (or holds more).
pub fn compare(a_path: &Path, b_path: &Path) -> color_eyre::Result<String> {
    use std::fmt::Write;
    let read = |p: &Path| -> color_eyre::Result<BenchReport> {
        let text =
            std::fs::read_to_string(p).wrap_err_with(|| format!("reading {}", p.display()))?;
        serde_json::from_str(&text).map_err(|e| {
            eyre!(Fixable::new(
                format!(
                    "{} is not a `speedscape bench --json` file ({e})",
                    p.display()
                ),
                "pass two files written by speedscape bench --json",
            ))
        })
    };
    let (a, b) = (read(a_path)?, read(b_path)?);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "a: {} — {} ({}), ONNX Runtime {}\nb: {} — {} ({}), ONNX Runtime {}\nratios b/a (< 1: b is faster or leaner)\n",
        a_path.display(),
        a.provider,
        a.device,
        a.onnxruntime,
        b_path.display(),
        b.provider,
        b.device,
        b.onnxruntime
    );
    let _ = writeln!(
        out,
        "{:<26} {:>9} {:>12} {:>12} {:>8} {:>10} {:>10} {:>9}",
        "run", "size", "a total", "b total", "total", "UNet/call", "VAE", "peak RSS"
    );
    let ratio = |x: f64, y: f64| {
        if x > 0.0 {
            format!("{:.3}", y / x)
        } else {
            "–".into()
        }
    };
    let mut matched = 0;
    for ra in &a.runs {
        let Some(rb) = b
            .runs
            .iter()
            .find(|r| r.spec == ra.spec && r.width == ra.width && r.height == ra.height)
        else {
            continue;
        };
        matched += 1;
        let rss = match (ra.peak_rss_bytes, rb.peak_rss_bytes) {
            (Some(x), Some(y)) => ratio(x as f64, y as f64),
            _ => "–".into(),
        };
        let _ = writeln!(
            out,
            "{:<26} {:>9} {:>12.1} {:>12.1} {:>8} {:>10} {:>10} {:>9}",
            ra.label,
            format!("{}×{}", ra.width, ra.height),
            ra.total_ms.median,
            rb.total_ms.median,
            ratio(ra.total_ms.median, rb.total_ms.median),
            ratio(ra.unet_call_ms.median, rb.unet_call_ms.median),
            ratio(ra.vae_ms.median, rb.vae_ms.median),
            rss,
        );
    }
    if matched == 0 {
        bail!(Fixable::new(
            format!(
                "{} and {} have no run in common (same spec and size)",
                a_path.display(),
                b_path.display()
            ),
            "bench the same --runs and --size in both",
        ));
    }
    Ok(out)
}

/// Host and GPU memory of this process.
pub mod memory {
    /// A `kB` field of /proc/self/status, in bytes.
    fn status_field(name: &str) -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        status.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            Some(kb * 1024)
        })
    }

    /// Resident set size now.
    pub fn rss() -> Option<u64> {
        status_field("VmRSS")
    }

    /// Peak resident set size since start or the last [`reset_peak`].
    pub fn peak_rss() -> Option<u64> {
        status_field("VmHWM")
    }

    /// Resets the peak RSS to the current RSS (Linux ≥ 4.0: `5` into /proc/self/clear_refs);
    /// false where that is not allowed (the peak is then the process's).
    pub fn reset_peak() -> bool {
        std::fs::write("/proc/self/clear_refs", "5").is_ok()
    }

    /// GPU memory this process holds, from nvidia-smi (`None` where it cannot tell).
    pub fn gpu_bytes() -> Option<u64> {
        let out = std::process::Command::new("nvidia-smi")
            .args([
                "--query-compute-apps=pid,used_memory",
                "--format=csv,noheader,nounits",
            ])
            .output()
            .ok()?;
        let me = std::process::id().to_string();
        String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
            let (pid, mib) = l.split_once(',')?;
            (pid.trim() == me)
                .then(|| mib.trim().parse::<u64>().ok())
                .flatten()
                .map(|m| m << 20)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_with_sensible_defaults_and_clear_errors() {
        let s = BenchSpec::parse("dpmpp:20").unwrap();
        assert_eq!(
            (s.scheduler, s.steps, s.cfg, s.unet.as_str()),
            (SchedulerKind::DpmSolverPp, 20, 7.5, "base")
        );
        let s = BenchSpec::parse("lcm:4").unwrap();
        assert_eq!((s.cfg, s.unet.as_str()), (1.5, "lcm"));
        let s = BenchSpec::parse("ddim:30:5@style").unwrap();
        assert_eq!((s.steps, s.cfg, s.unet.as_str()), (30, 5.0, "style"));
        for bad in [
            "dpmpp",
            "dpmpp:0",
            "dpm:20",
            "dpmpp:20:x",
            "dpmpp:20@",
            "lcm:4:1:2",
        ] {
            let e = format!("{}", BenchSpec::parse(bad).unwrap_err());
            assert!(e.contains(bad) && e.contains("Fix:"), "{e}");
        }
    }

    #[test]
    fn run_lists_expand_exercises() {
        let c = Config::default();
        let ex1 = BenchSpec::parse_list(&c, "ex1").unwrap();
        let labels: Vec<&str> = ex1.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(labels, ["DDPM 50", "DPM-Solver++ 20", "DPM-Solver++ 10"]);
        // `all`: every exercise's runs (exercises 1–3: 9 runs; more as exercises are added).
        let every: usize = c.exercises().iter().map(|e| e.runs.len()).sum();
        assert!(every >= 9);
        assert_eq!(BenchSpec::parse_list(&c, "all").unwrap().len(), every);
        assert_eq!(BenchSpec::parse_list(&c, "ex2, lcm:4").unwrap().len(), 4);
        let e = format!("{}", BenchSpec::parse_list(&c, "ex9").unwrap_err());
        assert!(e.contains("no exercise 9"), "{e}");
    }

    fn control(scale: f32) -> ControlSpec {
        ControlSpec {
            controlnet: Some("edge".into()),
            image: "edges.png".into(),
            scale,
            preprocess: Default::default(),
        }
    }

    #[test]
    fn a_control_from_the_command_line_is_named_in_the_spec_and_label() {
        let s = BenchSpec::parse("dpmpp:20")
            .unwrap()
            .with_control(&control(0.5));
        assert_eq!(s.spec, "dpmpp:20 +controlnet=edge×0.5");
        assert_eq!(s.label, "dpmpp 20 cfg 7.5 @base + edge×0.5");
        assert_eq!(s.control, Some(control(0.5)));
        // The same control again changes nothing.
        let again = s.clone().with_control(&control(0.5));
        assert_eq!(again, s);
    }

    fn result(label: &str, controlnet_call_ms: Option<Spread>) -> RunResult {
        let spread = |v: f64| Spread {
            median: v,
            min: v,
            max: v,
        };
        RunResult {
            spec: label.into(),
            label: label.into(),
            scheduler: "dpmpp".into(),
            steps: 4,
            cfg: 7.5,
            unet: "base".into(),
            loras: Vec::new(),
            adapters: Vec::new(),
            width: 64,
            height: 64,
            warmup_ms: Vec::new(),
            repeats: Vec::new(),
            total_ms: spread(100.0),
            text_ms: spread(5.0),
            unet_ms: spread(80.0),
            unet_call_ms: spread(20.0),
            controlnet_call_ms,
            control: None,
            scheduler_ms: spread(1.0),
            vae_ms: spread(10.0),
            other_ms: spread(4.0),
            its: 50.0,
            outside_ort_pct: 5.0,
            peak_rss_bytes: None,
            peak_rss_scope: "run".into(),
            rss_growth_bytes: None,
            peak_gpu_bytes: None,
            previews: Vec::new(),
            with_preview_thread: None,
        }
    }

    fn bench_report(runs: Vec<RunResult>) -> BenchReport {
        BenchReport {
            speedscape: "0".into(),
            provider: "cpu".into(),
            device: "test CPU".into(),
            onnxruntime: "1".into(),
            model: "models/tiny".into(),
            tiny_model: true,
            intra_op_threads: 1,
            warmup: 1,
            repeat: 3,
            load_ms: Default::default(),
            runs,
        }
    }

    #[test]
    fn the_controlnet_column_is_there_only_when_a_run_has_a_controlnet() {
        let plain = render(&bench_report(vec![result("dpmpp 4", None)]));
        assert!(!plain.contains("ControlNet"), "{plain}");
        let cn = Spread {
            median: 8.0,
            min: 7.5,
            max: 9.0,
        };
        let mut controlled = result("dpmpp 4 + edge×1", Some(cn));
        controlled.control = Some(crate::pipeline::control::ControlReport {
            name: "edge".into(),
            image: "edges.png".into(),
            preprocess: Default::default(),
            scale: 1.0,
            adherence: 0.75,
            time: Duration::from_millis(32),
        });
        let text = render(&bench_report(vec![result("dpmpp 4", None), controlled]));
        let lines: Vec<&str> = text.lines().collect();
        // The cell of a column: its text up to where the header's name ends (right-aligned).
        let header: Vec<char> = lines
            .iter()
            .find(|l| l.starts_with("run"))
            .unwrap()
            .chars()
            .collect();
        let name: Vec<char> = "ControlNet/call".chars().collect();
        let end = header
            .windows(name.len())
            .position(|w| w == name.as_slice())
            .expect("the column")
            + name.len();
        let cell = |prefix: &str| -> String {
            let row = lines.iter().find(|l| l.starts_with(prefix)).unwrap();
            let head: String = row.chars().take(end).collect();
            head.rsplit("  ").next().unwrap().trim().to_string()
        };
        assert_eq!(cell("dpmpp 4 + edge"), "8.0 (7.5–9.0)", "{text}");
        assert_eq!(cell("dpmpp 4  "), "—", "{text}");
        assert!(
            text.contains(
                "dpmpp 4 + edge×1: ControlNet edge on edges.png (preprocess none, scale 1), edge F1 0.7500 (last repeat)"
            ),
            "{text}"
        );
    }

    #[test]
    fn preview_costs_are_listed_under_the_table_per_kind_with_their_share_of_a_step() {
        let mut run = result("DPM-Solver++ 20", None);
        assert!(!render(&bench_report(vec![run.clone()])).contains("previews"));
        let spread = |median, min, max| Spread { median, min, max };
        run.previews = vec![
            PreviewCost {
                kind: PreviewKind::Decoder,
                ms: spread(1.2, 1.0, 1.5),
                over_step: 0.1,
            },
            PreviewCost {
                kind: PreviewKind::Latent,
                ms: spread(0.02, 0.01, 0.03),
                over_step: 0.002,
            },
        ];
        let text = render(&bench_report(vec![run.clone()]));
        assert!(
            text.contains(
                "DPM-Solver++ 20: decoder 1.20 (1.00–1.50) ms = 10.0 % of a step · latent 0.02 (0.01–0.03) ms = 0.2 % of a step"
            ),
            "{text}"
        );
        // The JSON keeps them, and reads them back.
        let json = serde_json::to_string(&run).unwrap();
        let back: RunResult = serde_json::from_str(&json).unwrap();
        assert_eq!(back.previews.len(), 2);
        assert_eq!(back.previews[0].kind, PreviewKind::Decoder);
    }

    #[test]
    fn spreads_are_median_min_max() {
        let s = Spread::of(&[3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Spread::of(&[4.0, 1.0, 2.0, 3.0]).median, 2.5);
        assert_eq!(Spread::of(&[]), Spread::default());
    }

    #[test]
    fn memory_numbers_come_from_proc() {
        let rss = memory::rss().expect("Linux has VmRSS");
        let peak = memory::peak_rss().expect("and VmHWM");
        assert!(rss > 0 && peak >= rss);
    }
}
