//! Prompt → text embeddings → denoise loop → VAE decode, as diffusers'
//! `StableDiffusionPipeline` does it.
//!
//! Guidance: when `guidance_scale > 1` one UNet call at batch 2 (`[uncond, cond]`) per step,
//! also for LCM-LoRA at 1.5; at ≤ 1, batch 1 and the negative prompt is not encoded.
//! Latents are `randn × init_noise_sigma`; the image is `clamp(vae(latents / scaling)/2 + 0.5, 0, 1)`.
//! A NaN or Inf in the text encoder's output, the UNet's output or the latents after any step, or
//! the VAE's image stops the run with an error naming the tensor, the component (and its
//! precision), the step, and a fix (a [`Fixable`]).

pub mod control;
pub mod control_image;
mod denoise;
pub mod limits;
mod numerics;
pub mod preview;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use eyre::{bail, eyre};
use image::RgbImage;
use ndarray::{Array3, Array4};
use ort::session::RunOptions;
use serde::{Deserialize, Serialize};

use crate::error::Fixable;
use crate::models::{Model, ModelGeometry, RunParts, Variant};
use crate::rng::{NoiseSource, RngSource};
use crate::runtime::{Provider, Runtime};
use crate::schedulers::{Scheduler, SchedulerKind, SchedulerOptions};
pub use denoise::{Cancelled, StepEvent, StepTiming};
pub(crate) use denoise::{Conditioning, Denoiser, denoise};
pub(crate) use numerics::NonFinite;

pub(crate) fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1e3)
}

fn ser_ms_vec<S: serde::Serializer>(d: &[Duration], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(d.iter().map(|d| d.as_secs_f64() * 1e3))
}

/// Milliseconds as [`ser_ms`] writes them, back to a duration (a report read back from disk:
/// a sharded sweep's run files). A negative or non-finite time is refused.
pub(crate) fn de_ms<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let ms = <f64 as serde::Deserialize>::deserialize(d)?;
    Duration::try_from_secs_f64(ms / 1e3).map_err(serde::de::Error::custom)
}

fn de_ms_vec<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    let ms = <Vec<f64> as serde::Deserialize>::deserialize(d)?;
    ms.into_iter()
        .map(|ms| Duration::try_from_secs_f64(ms / 1e3).map_err(serde::de::Error::custom))
        .collect()
}

/// One image to make.
#[derive(Debug, Clone)]
pub struct Request {
    /// What to draw; tokenized to at most 75 tokens (see [`crate::models::tokenizer`]).
    pub prompt: String,
    /// Used only under guidance (`guidance > 1`); empty is diffusers' default.
    pub negative_prompt: String,
    /// Which scheduler runs the steps.
    pub scheduler: SchedulerKind,
    /// Overrides of the model's scheduler config (diffusers' `from_config` keyword arguments).
    pub scheduler_options: SchedulerOptions,
    /// Denoising steps (UNet calls), 1 to 10 000; a scheduler refuses a count its schedule
    /// cannot hold (see [`crate::schedulers::build`]).
    pub steps: usize,
    /// Classifier-free guidance scale: ≤ 1 runs the UNet at batch 1 on the prompt alone, above
    /// 1 at batch 2 on `[negative, prompt]`; finite, 0 to 100.
    pub guidance: f32,
    /// The generator's seed: the same seed, source and size give the same initial latents as
    /// `torch.randn` on that generator.
    pub seed: u64,
    /// Which PyTorch generator the noise reproduces.
    pub rng: RngSource,
    /// UNet variant name (`base`, `lcm`, …) or folder.
    pub unet: String,
    /// LoRA adapters fused into that UNet (and the text encoder, where an adapter has
    /// text-encoder layers) at run time, with their weights; empty: the variant as exported.
    pub loras: Vec<crate::lora::AdapterWeight>,
    /// Image width in pixels, a multiple of the model's size grid (64 for SD v1.5); `None`: the
    /// model's native size.
    pub width: Option<usize>,
    /// Image height in pixels, like `width`.
    pub height: Option<usize>,
    /// Initial latents `[1, 4, height/8, width/8]` (before × init_noise_sigma) instead of
    /// drawing them.
    pub latents: Option<Array4<f32>>,
    /// Also compute the CLIP score of the final image against `prompt`
    /// ([`RunReport::clip_score`]), after the timed run; ignored when the model has no CLIP
    /// scorer (`clip_image_encoder/`).
    pub clip_score: bool,
    /// Also read the final image with the model's judge against `prompt`
    /// ([`RunReport::judge`]), after the timed run; ignored when the model has no judge
    /// (`judge/`, the micro model's).
    pub judge: bool,
    /// A ControlNet conditioning every step on a control image; `None`: no control.
    pub control: Option<control::Control>,
}

impl Request {
    /// `prompt` through `scheduler` in `steps` steps from `seed`, the rest as a plain diffusers
    /// call has it: no negative prompt, guidance 7.5, the `base` UNet at the model's native size,
    /// the model's scheduler config as is, latents drawn from [`RngSource::default`] (torch's
    /// CUDA generator, computed on the host), no CLIP score. Change a field with struct update
    /// syntax: `Request { guidance: 1.5, ..Request::new(…) }`.
    pub fn new(prompt: &str, scheduler: SchedulerKind, steps: usize, seed: u64) -> Self {
        Request {
            prompt: prompt.to_string(),
            negative_prompt: String::new(),
            scheduler,
            scheduler_options: SchedulerOptions::default(),
            steps,
            guidance: 7.5,
            seed,
            rng: RngSource::default(),
            unet: "base".to_string(),
            loras: Vec::new(),
            width: None,
            height: None,
            latents: None,
            clip_score: false,
            judge: false,
            control: None,
        }
    }
}

/// Per-phase wall times of one run, each stamped after outputs were back on the host.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Timings {
    /// Tokenizing and the text encoder (both prompts).
    #[serde(
        rename = "text_ms",
        serialize_with = "ser_ms",
        deserialize_with = "de_ms"
    )]
    pub text: Duration,
    /// Each UNet call (including `scale_model_input` and guidance), per step.
    #[serde(
        rename = "unet_ms",
        serialize_with = "ser_ms_vec",
        deserialize_with = "de_ms_vec"
    )]
    pub unet: Vec<Duration>,
    /// Each scheduler step.
    #[serde(
        rename = "scheduler_ms",
        serialize_with = "ser_ms_vec",
        deserialize_with = "de_ms_vec"
    )]
    pub scheduler: Vec<Duration>,
    /// Each step's ControlNet call, apart from the UNet's; empty without control.
    #[serde(
        rename = "controlnet_ms",
        serialize_with = "ser_ms_vec",
        deserialize_with = "de_ms_vec",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub controlnet: Vec<Duration>,
    /// The VAE decode and the conversion to NHWC [0, 1].
    #[serde(
        rename = "vae_ms",
        serialize_with = "ser_ms",
        deserialize_with = "de_ms"
    )]
    pub vae: Duration,
    /// Whole run, excluding model loading.
    #[serde(
        rename = "total_ms",
        serialize_with = "ser_ms",
        deserialize_with = "de_ms"
    )]
    pub total: Duration,
    /// Of `total`, the time inside ONNX Runtime's run calls (every session); the rest is ours:
    /// tokenizing, tensor copies, guidance, the scheduler, conversions.
    #[serde(
        rename = "ort_ms",
        serialize_with = "ser_ms",
        deserialize_with = "de_ms"
    )]
    pub ort: Duration,
}

impl Timings {
    /// Every step's UNet time together.
    pub fn unet_total(&self) -> Duration {
        self.unet.iter().sum()
    }
    /// Every step's scheduler time together.
    pub fn scheduler_total(&self) -> Duration {
        self.scheduler.iter().sum()
    }
    /// The per-step columns of `steps` (the ControlNet's only when `controlled`), the phases
    /// outside the loop zero.
    fn of_steps(steps: &[StepTiming], controlled: bool) -> Self {
        Timings {
            unet: steps.iter().map(|t| t.unet).collect(),
            scheduler: steps.iter().map(|t| t.scheduler).collect(),
            controlnet: match controlled {
                true => steps.iter().map(|t| t.controlnet).collect(),
                false => Vec::new(),
            },
            ..Timings::default()
        }
    }
    /// Every step's ControlNet time together (zero without control).
    pub fn controlnet_total(&self) -> Duration {
        self.controlnet.iter().sum()
    }
}

/// Everything about a finished run that a report needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    /// The model folder, as opened.
    pub model: String,
    /// The random-weight tiny model: noise-like images.
    pub tiny_model: bool,
    /// What the model folder holds: `sd15`, `micro`, `tiny`.
    pub model_kind: crate::models::ModelKind,
    /// The execution provider the sessions ran on.
    pub provider: Provider,
    /// The GPU's or the CPU's name (set by the worker; empty when run without one).
    pub device: String,
    /// The ONNX Runtime library file loaded.
    pub onnxruntime: String,
    /// Its version (`1.22.0`).
    pub onnxruntime_version: String,
    /// The UNet variant's name (`lcm`).
    pub unet: String,
    /// The UNet variant's label (`LCM-LoRA`).
    pub unet_label: String,
    /// The LoRA adapters fused at run time (on top of the variant), in the order given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adapters: Vec<crate::lora::AppliedAdapter>,
    /// The scheduler, as spelt on the command line (`dpmpp`).
    pub scheduler: String,
    /// Steps asked for.
    pub steps: usize,
    /// Guidance scale asked for.
    pub guidance: f32,
    /// The seed.
    pub seed: u64,
    /// The noise source's name (`torch-cpu`).
    pub rng: String,
    /// Image width in pixels.
    pub width: usize,
    /// Image height in pixels.
    pub height: usize,
    /// The timesteps visited, in order (descending).
    pub timesteps: Vec<i64>,
    /// The prompt's tokens kept (0 to 75, without BOS/EOS).
    pub prompt_tokens: usize,
    /// Wall times of the run's phases.
    pub timings: Timings,
    /// Session creation per component so far (ms), apart from any run's time.
    pub load_ms: std::collections::BTreeMap<String, f64>,
    /// What the user should know about the run, in order: the model's notes, UNets unloaded to
    /// make room, the runtime's notes, the prompts' notes (cleaning, truncation).
    pub warnings: Vec<String>,
    /// CLIP score of the final 8-bit image against the prompt, `max(100 · cos, 0)` (torchmetrics'
    /// CLIPScore; [`crate::models::clip`]). `None` (absent from the JSON, not zero) unless the
    /// request asked for it and the model has a CLIP scorer. Computed after the timed run: never
    /// part of `timings`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clip_score: Option<f64>,
    /// The judge's reading of the final 8-bit image against the prompt (colour, shape,
    /// background); `None` unless the request asked for it and the model has a judge. After the
    /// timed run, like `clip_score`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<crate::models::JudgeReading>,
    /// The run's ControlNet and how closely the image follows its control; absent without.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control: Option<control::ControlReport>,
}

/// A finished run: the float image and its report.
pub struct RunOutput {
    /// NHWC `[1, H, W, 3]` in [0, 1], before 8-bit conversion.
    pub image: Array4<f32>,
    /// What ran, and how long each phase took.
    pub report: RunReport,
}

impl RunOutput {
    /// The 8-bit image, rounded as diffusers' `numpy_to_pil` does (`round(x · 255)`).
    pub fn rgb8(&self) -> RgbImage {
        to_rgb8(&self.image)
    }
}

/// NHWC [0,1] floats → RGB8 with `round(x · 255)`.
pub(crate) fn to_rgb8(image: &Array4<f32>) -> RgbImage {
    let (_, h, w, _) = image.dim();
    RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let px = |c: usize| (image[[0, y as usize, x as usize, c]] * 255.0).round() as u8;
        image::Rgb([px(0), px(1), px(2)])
    })
}

/// Checks a requested size against the model: positive multiples of its size grid
/// ([`crate::models::ModelGeometry::size_grid`]).
pub(crate) fn resolve_size(
    model: &Model,
    width: Option<usize>,
    height: Option<usize>,
) -> eyre::Result<(usize, usize)> {
    let native = model.geometry.default_size();
    let f = model.geometry.vae_scale_factor;
    let d = model.geometry.unet_downsamples;
    let grid = model.geometry.size_grid();
    let w = width.unwrap_or(native);
    let h = height.unwrap_or(native);
    for (name, v) in [("width", w), ("height", h)] {
        if v == 0 || v % grid != 0 {
            bail!(Fixable::new(
                format!(
                    "{name} {v} is not a positive multiple of {grid} (the VAE's scale factor {f}, times 2 for each of the UNet's {d} downsamplings)"
                ),
                format!(
                    "use e.g. {} (this model's native size is {native})",
                    (v / grid).max(1) * grid
                ),
            ));
        }
    }
    Ok((w, h))
}

/// What a caller may watch and steer in a run besides its steps (the worker's hooks).
pub struct RunControl<'a> {
    /// Checked between steps and before the VAE decode (the error then is [`Cancelled`]).
    pub cancel: &'a AtomicBool,
    /// Under which the UNet and VAE calls run: `terminate()` from another thread ends a call
    /// under way (the error is ONNX Runtime's; the caller knows it cancelled).
    pub run_options: Option<&'a RunOptions>,
    /// Phases of the timed run, stamped here.
    pub on_phase: &'a mut dyn FnMut(Phase),
    /// Called after every denoising step, with its timings and latents.
    pub on_step: &'a mut dyn FnMut(StepEvent),
}

/// Milestones of the timed run, in order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Phase {
    /// Sessions are loaded; the clock starts now.
    Started {
        /// The steps the scheduler will run.
        total_steps: usize,
        /// Image width in pixels.
        width: usize,
        /// Image height in pixels.
        height: usize,
    },
    /// Prompt(s) tokenized and encoded.
    Encoded {
        /// Time since `Started`: the same time the report gives as [`Timings::text`].
        text: Duration,
    },
    /// The last step is done; the VAE decode begins.
    Decoding,
}

/// Makes one image: the whole pipeline, emitting `on_step` after every denoising step.
/// Honours `cancel` between steps (the error then is [`Cancelled`]).
pub fn generate(
    rt: &Runtime,
    model: &mut Model,
    req: &Request,
    cancel: &AtomicBool,
    on_step: &mut dyn FnMut(StepEvent),
) -> eyre::Result<RunOutput> {
    generate_with(
        rt,
        model,
        req,
        RunControl {
            cancel,
            run_options: None,
            on_phase: &mut |_| {},
            on_step,
        },
    )
}

/// A UNet whose calls run under a run's [`RunOptions`].
struct Terminable<'a> {
    unet: &'a mut crate::models::Unet,
    options: Option<&'a RunOptions>,
}

impl Denoiser for Terminable<'_> {
    fn predict(
        &mut self,
        sample: ndarray::ArrayView4<f32>,
        t: f32,
        context: ndarray::ArrayView3<f32>,
    ) -> eyre::Result<Array4<f32>> {
        self.unet.predict_with(sample, t, context, self.options)
    }
}

/// A component as a [`NonFinite`] error names it (`UNet variant lcm (unet_lcm), fp16`), and
/// whether its weights are fp16: manifest.json's dtype `recorded`, else the graph's input type
/// `io`.
fn describe(
    recorded: Option<String>,
    component: &str,
    folder: &str,
    io: Option<&str>,
) -> (String, bool) {
    let precision = recorded.or_else(|| io.map(str::to_string));
    let fp16 = precision.as_deref() == Some("fp16");
    let text = match precision {
        Some(p) => format!("{component} ({folder}), {p}"),
        None => format!("{component} ({folder})"),
    };
    (text, fp16)
}

/// Whom a run's [`NonFinite`] errors blame: each component as the error names it, with whether
/// its weights are fp16 ([`describe`]), and the guidance scale when guidance is on.
struct Blame {
    guidance: Option<f32>,
    text_encoder: (String, bool),
    unet: (String, bool),
    vae: (String, bool),
    scheduler: (String, bool),
}

impl Blame {
    /// Precisions from manifest.json (`recorded`, read from `model` before its sessions are
    /// borrowed), else from the graphs in `parts`.
    fn new(
        recorded: [Option<String>; 3],
        variant: &Variant,
        parts: &RunParts,
        req: &Request,
    ) -> Self {
        let [text_encoder, unet, vae] = recorded;
        Blame {
            guidance: (req.guidance > 1.0).then_some(req.guidance),
            text_encoder: describe(
                text_encoder,
                "text encoder",
                variant.text_encoder_folder(),
                None,
            ),
            unet: describe(
                unet,
                &format!("UNet variant {}", variant.name),
                &variant.folder,
                Some(parts.unet.io_precision()),
            ),
            // The image a run keeps comes from vae_decoder/ whenever the float16 decoder's
            // did not (see `decode`).
            vae: describe(
                vae,
                "VAE decoder",
                "vae_decoder",
                Some(
                    parts
                        .vae_fp32
                        .as_deref()
                        .unwrap_or(parts.vae)
                        .io_precision(),
                ),
            ),
            scheduler: (format!("scheduler {}", req.scheduler), false),
        }
    }

    /// `e` as the run's error, blaming `culprit`.
    fn on(&self, mut e: NonFinite, (component, fp16): &(String, bool)) -> eyre::Report {
        e.component = Some(component.clone());
        e.fp16 = *fp16;
        e.guidance = self.guidance;
        eyre::Report::new(Fixable::from(e))
    }
}

/// The encode phase's result.
struct Encoded {
    /// `[1, 77, D]`, or `[2, 77, D]` (`[uncond, cond]`) under guidance.
    context: Array3<f32>,
    /// The prompt's 77 token ids, for the CLIP score.
    cond_ids: Vec<i64>,
    /// The prompt's tokens kept, 0 to 75 ([`RunReport::prompt_tokens`]).
    prompt_tokens: usize,
    /// The prompts' notes (cleaning, truncation), the negative prompt's prefixed `negative`.
    warnings: Vec<String>,
}

/// Text: `[uncond, cond]` under guidance (both prompts in one batch-2 call of the variant's text
/// encoder, stacked as diffusers stacks them), else cond alone.
fn encode(parts: &mut RunParts, req: &Request, blame: &Blame) -> eyre::Result<Encoded> {
    let cond_tokens = parts.tokenizer.encode(&req.prompt)?;
    let mut warnings = cond_tokens.warnings();
    let uncond_tokens = if req.guidance > 1.0 {
        let t = parts.tokenizer.encode(&req.negative_prompt)?;
        warnings.extend(t.warnings().into_iter().map(|w| format!("negative {w}")));
        Some(t)
    } else {
        None
    };
    let context = match uncond_tokens {
        Some(uncond_tokens) => {
            let mut ids = uncond_tokens.ids_i64();
            ids.extend(cond_tokens.ids_i64());
            parts.text_encoder.encode(&ids, 2)?
        }
        None => parts.text_encoder.encode(&cond_tokens.ids_i64(), 1)?,
    };
    if let Some(e) = NonFinite::find(numerics::Tensor::TextEncoder, None, &context) {
        return Err(blame.on(e, &blame.text_encoder));
    }
    Ok(Encoded {
        context,
        cond_ids: cond_tokens.ids_i64(),
        prompt_tokens: cond_tokens.count,
        warnings,
    })
}

/// The initial latents `[1, C, height/f, width/f]`: the request's, or drawn from `noise`;
/// before × init_noise_sigma.
fn initial_latents(
    req: &Request,
    geometry: &ModelGeometry,
    (width, height): (usize, usize),
    noise: &mut dyn NoiseSource,
    blame: &Blame,
) -> eyre::Result<Array4<f32>> {
    let f = geometry.vae_scale_factor;
    let shape = [1, geometry.latent_channels, height / f, width / f];
    let initial = match &req.latents {
        Some(l) => {
            if l.shape() != shape {
                bail!(Fixable::new(
                    format!(
                        "--latents has shape {:?}, this run needs {shape:?} ({width}×{height} at VAE scale {f})",
                        l.shape()
                    ),
                    "pass latents of that shape, or change --width/--height",
                ));
            }
            l.clone()
        }
        None => noise.randn(shape),
    };
    if let Some(e) = NonFinite::find(numerics::Tensor::InitialLatents, None, &initial) {
        let source = if req.latents.is_some() {
            "given with --latents"
        } else {
            "drawn from the seed"
        };
        return Err(blame.on(e, &(source.to_string(), false)));
    }
    Ok(initial)
}

/// What the denoising loop runs on besides the UNet.
struct Denoising<'a> {
    scheduler: &'a mut dyn Scheduler,
    noise: &'a mut dyn NoiseSource,
    /// Already × init_noise_sigma.
    latents: Array4<f32>,
    cond: Conditioning<'a>,
    /// The ControlNet, its condition at the run's batch and the scale, under control.
    control: Option<(&'a mut crate::models::ControlNet, ort::value::DynValue, f32)>,
}

/// The denoising loop on the run's UNet (bound to the run's context when `io_binding` is on,
/// unbound after), then the cancel check before the decode.
fn denoise_phase(
    rt: &Runtime,
    unet: &mut crate::models::Unet,
    run: Denoising,
    ctl: &mut RunControl,
    blame: &Blame,
) -> eyre::Result<(Array4<f32>, Vec<StepTiming>)> {
    let context = run.cond.context;
    if rt.options.session.io_binding {
        let (_, c, h, w) = run.latents.dim();
        let controlled = run.control.is_some();
        unet.bind_run(rt, context, [context.shape()[0], c, h, w], controlled)?;
    }
    let mut denoiser: Box<dyn Denoiser + '_> = match run.control {
        Some((controlnet, cond, scale)) => Box::new(control::Controlled {
            unet: &mut *unet,
            controlnet,
            cond,
            scale,
            options: ctl.run_options,
            aux: Duration::ZERO,
        }),
        None => Box::new(Terminable {
            unet: &mut *unet,
            options: ctl.run_options,
        }),
    };
    let result = denoise(
        denoiser.as_mut(),
        run.scheduler,
        run.noise,
        run.latents,
        &run.cond,
        ctl.cancel,
        ctl.on_step,
    );
    drop(denoiser);
    unet.unbind();
    let (latents, step_timings) = result.map_err(|e| match e.downcast::<NonFinite>() {
        Ok(nf) if nf.tensor == numerics::Tensor::SchedulerLatents => blame.on(nf, &blame.scheduler),
        Ok(nf) => blame.on(nf, &blame.unet),
        Err(e) => e,
    })?;
    if ctl.cancel.load(Ordering::Relaxed) {
        return Err(eyre!(Cancelled {
            completed: step_timings.len()
        }));
    }
    Ok((latents, step_timings))
}

/// The VAE decode: latents → NHWC `[1, H, W, 3]` in [0, 1] (`clamp(vae(latents / scaling)/2 + 0.5, 0, 1)`).
/// When the float16 VAE decoder's image has NaN or Inf and the model keeps the float32 one
/// ([`Model::use_vae`]), the float32 one decodes again and the note (the second value) says so;
/// an image that is still not finite is the run's error.
fn decode(
    parts: &mut RunParts,
    latents: Array4<f32>,
    run_options: Option<&RunOptions>,
    blame: &Blame,
) -> eyre::Result<(Array4<f32>, Option<String>)> {
    let latents = latents / parts.geometry.scaling_factor;
    let mut decoded = parts.vae.decode_with(latents.view(), run_options)?;
    let mut non_finite = NonFinite::find(numerics::Tensor::VaeImage, None, &decoded);
    let mut note = None;
    if let (Some(e), Some(fp32)) = (&non_finite, parts.vae_fp32.as_deref_mut()) {
        let start = Instant::now();
        decoded = fp32.decode_with(latents.view(), run_options)?;
        note = Some(format!(
            "the float16 VAE decoder ({}/) overflowed ({}); the image was decoded again in float32 (vae_decoder/, {:.1} ms, counted in the VAE time)",
            crate::models::VAE_FP16_FOLDER,
            e.count.describe(),
            start.elapsed().as_secs_f64() * 1e3
        ));
        non_finite = NonFinite::find(numerics::Tensor::VaeImage, None, &decoded);
    }
    if let Some(e) = non_finite {
        return Err(blame.on(e, &blame.vae));
    }
    // NCHW [-1,1] → NHWC [0,1]
    let image = decoded
        .permuted_axes([0, 2, 3, 1])
        .mapv(|v| (v / 2.0 + 0.5).clamp(0.0, 1.0))
        .as_standard_layout()
        .to_owned();
    Ok((image, note))
}

/// The report's fields that say what ran (model, runtime, request, variant, load times); those
/// the run measures are left empty for [`generate_with`] to fill.
fn describe_run(rt: &Runtime, model: &Model, req: &Request, variant: &Variant) -> RunReport {
    RunReport {
        model: model.root.display().to_string(),
        tiny_model: model.kind() == crate::models::ModelKind::Tiny,
        model_kind: model.kind(),
        provider: rt.provider,
        device: String::new(),
        onnxruntime: rt.library.path.display().to_string(),
        onnxruntime_version: rt.library.version.clone(),
        unet: variant.name.clone(),
        unet_label: variant.label.clone(),
        adapters: Vec::new(),
        scheduler: req.scheduler.to_string(),
        steps: req.steps,
        guidance: req.guidance,
        seed: req.seed,
        rng: req.rng.to_string(),
        width: 0,
        height: 0,
        timesteps: Vec::new(),
        prompt_tokens: 0,
        timings: Timings::default(),
        load_ms: model
            .load_times
            .iter()
            .map(|(name, d)| (name.clone(), d.as_secs_f64() * 1e3))
            .collect(),
        warnings: Vec::new(),
        clip_score: None,
        judge: None,
        control: None,
    }
}

/// Under control: the run's UNet takes residuals and fits its ControlNet; the control image
/// (as [`limits::check_request`] read it, with the ControlNet's name) prepared at the run's size and its condition
/// at the run's batch. `None` without control.
fn control_parts(
    parts: &mut RunParts,
    req: &Request,
    (variant, checked): (&Variant, Option<&(String, RgbImage)>),
    size: (usize, usize),
) -> eyre::Result<Option<(control_image::ControlInput, ort::value::DynValue, f32)>> {
    let (Some(c), Some(controlnet), Some((name, image))) =
        (&req.control, parts.controlnet.as_deref(), checked)
    else {
        return Ok(None);
    };
    let label = format!("{} ({})", variant.name, variant.folder);
    control::check_unet_takes_residuals(parts.unet, &label)?;
    crate::models::controlnet::check_fits(
        controlnet,
        name,
        parts.unet.residual_specs(),
        parts.unet.context_dim(),
        &label,
    )?;
    let batch = if req.guidance > 1.0 { 2 } else { 1 };
    let (cond, prepared) = control::condition(controlnet, (c, image), size, batch)?;
    Ok(Some((prepared, cond, c.scale)))
}

/// A finished run's scores, measured after the clock (measurements of the run, not part of
/// it): the CLIP score of the 8-bit image against the prompt's ids `cond_ids` when `clip` (the
/// run asked and the model has a scorer), and the judge's reading when the run asked for it.
fn scores(
    rt: &Runtime,
    model: &mut Model,
    req: &Request,
    image: &Array4<f32>,
    (clip, cond_ids): (bool, &[i64]),
) -> eyre::Result<(Option<f64>, Option<crate::models::JudgeReading>)> {
    if !(clip || req.judge) {
        return Ok((None, None));
    }
    let rgb = to_rgb8(image);
    let clip_score = if clip {
        model.clip_score_ids(rt, &rgb, cond_ids)?.map(|s| s.score)
    } else {
        None
    };
    let judge = if req.judge {
        model.judge_reading(rt, &rgb, &req.prompt)?
    } else {
        None
    };
    Ok((clip_score, judge))
}

/// [`generate`] with every hook: phases, terminable sessions.
pub fn generate_with(
    rt: &Runtime,
    model: &mut Model,
    req: &Request,
    mut ctl: RunControl,
) -> eyre::Result<RunOutput> {
    // Every refusal that needs no session comes before any session loads.
    let limits::Checked {
        width,
        height,
        mut scheduler,
        control: checked_control,
        notes: checked_notes,
    } = limits::check_request(model, rt.provider, req)?;
    let variant = model.variant(&req.unet)?.clone();
    let recorded = [
        variant.text_encoder_folder(),
        &variant.folder,
        "vae_decoder",
    ]
    .map(|folder| model.component_precision(folder));
    // Sessions load before the clock starts: their creation is reported apart (load_ms). The
    // CLIP scorer too, the first time a run asks for it.
    let control_name = checked_control.as_ref().map(|(name, _)| name.as_str());
    if req.judge {
        model.judge(rt)?;
    }
    let mut parts = model.run_parts(rt, &req.unet, &req.loras, req.clip_score, control_name)?;
    let controlling = control_parts(
        &mut parts,
        req,
        (&variant, checked_control.as_ref()),
        (width, height),
    )?;
    let blame = Blame::new(recorded, &variant, &parts, req);
    let mut noise = req.rng.generator(req.seed);
    let mut warnings = std::mem::take(&mut parts.notes);
    warnings.extend(rt.notes.iter().cloned());
    warnings.extend(checked_notes);

    (ctl.on_phase)(Phase::Started {
        total_steps: scheduler.timesteps().len(),
        width,
        height,
    });
    let ort_before = parts.ort_time();
    let run_start = Instant::now();
    let encoded = encode(&mut parts, req, &blame)?;
    warnings.extend(encoded.warnings);
    let text = run_start.elapsed();
    (ctl.on_phase)(Phase::Encoded { text });

    let initial = initial_latents(req, parts.geometry, (width, height), noise.as_mut(), &blame)?;
    let latents = initial * scheduler.init_noise_sigma();
    let (prepared, control) = match (controlling, parts.controlnet.as_deref_mut()) {
        (Some((prepared, cond, scale)), Some(controlnet)) => {
            (Some(prepared), Some((controlnet, cond, scale)))
        }
        _ => (None, None),
    };
    let (latents, step_timings) = denoise_phase(
        rt,
        parts.unet,
        Denoising {
            scheduler: scheduler.as_mut(),
            noise: noise.as_mut(),
            latents,
            cond: Conditioning {
                context: encoded.context.view(),
                guidance: req.guidance,
            },
            control,
        },
        &mut ctl,
        &blame,
    )?;

    (ctl.on_phase)(Phase::Decoding);
    let vae_start = Instant::now();
    let (image, decode_note) = decode(&mut parts, latents, ctl.run_options, &blame)?;
    warnings.extend(decode_note);
    let vae = vae_start.elapsed();
    let total = run_start.elapsed();
    let adapters = std::mem::take(&mut parts.adapters);
    let timings = Timings {
        text,
        vae,
        total,
        ort: parts.ort_time().saturating_sub(ort_before),
        ..Timings::of_steps(&step_timings, req.control.is_some())
    };
    let clip = parts.clip;
    let (clip_score, judge) = scores(rt, model, req, &image, (clip, &encoded.cond_ids))?;
    let control = match (&req.control, &prepared, control_name) {
        (Some(c), Some(p), Some(name)) => {
            Some(control::report(c, name.to_string(), p, &image, &timings)?)
        }
        _ => None,
    };
    let report = RunReport {
        control,
        width,
        height,
        timesteps: scheduler.timesteps().to_vec(),
        prompt_tokens: encoded.prompt_tokens,
        timings,
        warnings,
        clip_score,
        judge,
        adapters,
        ..describe_run(rt, model, req, &variant)
    };
    Ok(RunOutput { image, report })
}
