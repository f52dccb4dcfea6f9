//! Diffusion schedulers that reproduce Hugging Face diffusers, one file each.
//!
//! Every scheduler is built the way `X.from_config(pipe.scheduler.config)` builds it in
//! diffusers 0.42.1: the model's own `scheduler_config.json` (usually written for another
//! class, e.g. SD v1.5's PNDM config) supplies the values it spells out, and each scheduler
//! falls back to *its own* defaults for the rest. That matters: SD v1.5's config has no
//! `timestep_spacing`, so DPM-Solver++ and Euler use `linspace` while DDPM, DDIM use `leading`.
//!
//! Precision follows diffusers: the training tables (betas, `alphas_cumprod`, sigmas) are
//! float32 as torch makes them on the CPU, schedules are float64 as numpy makes them, and every
//! per-step coefficient is a float32 scalar applied to float32 tensors in diffusers' order.

mod ddim;
mod ddpm;
mod dpm_solver_pp;
mod euler;
mod euler_ancestral;
mod lcm;

use std::fmt;
use std::str::FromStr;

use eyre::{Result, bail, eyre};
use ndarray::{Array4, ArrayView4};
use serde::Deserialize;

use crate::error::Fixable;
use crate::rng::NoiseSource;

/// What one scheduler step returns.
pub struct StepOutput {
    /// x_{t-1}, same shape as the sample.
    pub prev_sample: Array4<f32>,
    /// The scheduler's x0 prediction where it has one (LCM, DDPM, DDIM, Euler, DPM-Solver++).
    pub denoised: Option<Array4<f32>>,
}

/// One denoising schedule for one run. A new run builds a new scheduler.
pub trait Scheduler: Send {
    /// The timesteps of this run, in the order they are visited (descending).
    fn timesteps(&self) -> &[i64];
    /// Standard deviation of the initial noise; latents are `randn × init_noise_sigma`
    /// (1 for the ᾱ-space schedulers: DDPM, DDIM, DPM-Solver++, LCM).
    fn init_noise_sigma(&self) -> f32 {
        1.0
    }
    /// The UNet input for timestep `t` (identity for DDPM/DDIM/DPM-Solver++/LCM).
    fn scale_model_input(&self, x: ArrayView4<f32>, _t: i64) -> Array4<f32> {
        x.to_owned()
    }
    /// One step from `x` at `t` given the (guided) UNet output `eps`; stochastic schedulers
    /// draw their noise from `noise`, never from a hidden generator.
    fn step(
        &mut self,
        eps: ArrayView4<f32>,
        t: i64,
        x: ArrayView4<f32>,
        noise: &mut dyn NoiseSource,
    ) -> StepOutput;
    /// The timestep values diffusers hands the UNet, one per entry of [`Scheduler::timesteps`].
    /// Equal to those integers except for Euler and Euler ancestral, whose `linspace` schedule
    /// is fractional float32 (e.g. 946.4211); `timesteps()` then holds them truncated toward
    /// zero, which is what a cast to an int64 UNet input gives.
    fn model_timesteps(&self) -> Vec<f32> {
        self.timesteps().iter().map(|&t| t as f32).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// scheduler_config.json
// ---------------------------------------------------------------------------------------------

/// Defines a config enum that deserializes from diffusers' spelling and, for any other value,
/// fails with a message that names the field, the value, and the accepted spellings.
macro_rules! config_enum {
    ($(#[$meta:meta])* $name:ident, $field:literal { $($(#[$vmeta:meta])* $variant:ident = $($spelling:literal)|+),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
        #[serde(try_from = "String")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every spelling diffusers accepts for this field.
            pub(crate) const ACCEPTED: &'static [&'static str] = &[$($($spelling),+),+];

            /// The canonical diffusers spelling.
            pub(crate) fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => [$($spelling),+][0]),+
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(value: String) -> Result<Self, String> {
                $(if [$($spelling),+].contains(&value.as_str()) {
                    return Ok($name::$variant);
                })+
                Err(format!(
                    "`{}` is {:?}; accepted values: {}",
                    $field,
                    value,
                    Self::ACCEPTED.join(", ")
                ))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

config_enum!(
    /// How betas are laid out over the training timesteps.
    BetaSchedule, "beta_schedule" {
        /// `torch.linspace(beta_start, beta_end, T)`.
        Linear = "linear",
        /// `torch.linspace(√beta_start, √beta_end, T) ** 2` (Stable Diffusion).
        ScaledLinear = "scaled_linear",
        /// The Glide cosine schedule, through `betas_for_alpha_bar`.
        SquaredcosCapV2 = "squaredcos_cap_v2",
    }
);

config_enum!(
    /// What the UNet predicts.
    PredictionType, "prediction_type" {
        /// The added noise ε (SD v1.5).
        Epsilon = "epsilon",
        /// The velocity v = α ε − σ x0 (SD 2.x 768).
        VPrediction = "v_prediction",
        /// x0 itself.
        Sample = "sample",
    }
);

config_enum!(
    /// How inference timesteps are picked among the training ones (Table 2 of
    /// "Common Diffusion Noise Schedules and Sample Steps are Flawed").
    TimestepSpacing, "timestep_spacing" {
        /// Evenly spaced from 0 to T-1, inclusive.
        Linspace = "linspace",
        /// Multiples of T / steps from 0, plus `steps_offset`.
        Leading = "leading",
        /// Evenly spaced down from T, minus one.
        Trailing = "trailing",
    }
);

config_enum!(
    /// DDPM's posterior variance (diffusers' `variance_type`).
    VarianceType, "variance_type" {
        /// β̃_t, the posterior variance (the default).
        FixedSmall = "fixed_small",
        /// β̃_t through log/exp, the noise scale is exp(½ log β̃_t).
        FixedSmallLog = "fixed_small_log",
        /// β_t.
        FixedLarge = "fixed_large",
        /// log β_t (unsupported: diffusers takes its square root).
        FixedLargeLog = "fixed_large_log",
        /// Predicted by the UNet (unsupported: needs a 2×-channel UNet).
        Learned = "learned",
        /// Interpolated from a UNet prediction (unsupported).
        LearnedRange = "learned_range",
    }
);

config_enum!(
    /// DPM-Solver's formulation; only the data-prediction ODE solver is implemented.
    AlgorithmType, "algorithm_type" {
        /// DPM-Solver++ (diffusers also maps `deis` to it).
        DpmSolverPp = "dpmsolver++" | "deis",
        /// DPM-Solver (noise prediction; unsupported).
        DpmSolver = "dpmsolver",
        /// SDE DPM-Solver++ (unsupported).
        SdeDpmSolverPp = "sde-dpmsolver++",
        /// SDE DPM-Solver (unsupported).
        SdeDpmSolver = "sde-dpmsolver",
    }
);

config_enum!(
    /// DPM-Solver's second-order update.
    SolverType, "solver_type" {
        /// The midpoint rule (default; diffusers maps UniPC's names to it).
        Midpoint = "midpoint" | "logrho" | "bh1" | "bh2",
        /// Heun's rule.
        Heun = "heun",
    }
);

config_enum!(
    /// The sigma after the last step.
    FinalSigmasType, "final_sigmas_type" {
        /// 0: the last step lands on x0.
        Zero = "zero",
        /// The smallest training sigma.
        SigmaMin = "sigma_min",
    }
);

config_enum!(
    /// Euler's sigma interpolation between training timesteps.
    InterpolationType, "interpolation_type" {
        /// `np.interp` (default).
        Linear = "linear",
        /// Log-linear (unsupported).
        LogLinear = "log_linear",
    }
);

config_enum!(
    /// Euler's timestep flavour.
    TimestepType, "timestep_type" {
        /// Training timesteps (default).
        Discrete = "discrete",
        /// `0.25·log σ` for v-prediction models (unsupported).
        Continuous = "continuous",
    }
);

/// A model's `scheduler_config.json`, with diffusers' field names.
///
/// Every field is optional: a missing one takes the default of the scheduler being built, as
/// `from_config` does. Keys meant for other classes (PNDM's `skip_prk_steps`, …) are ignored.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct SchedulerConfig {
    /// The class the file was written for, e.g. "PNDMScheduler" (informational).
    #[serde(rename = "_class_name")]
    pub class_name: Option<String>,
    /// Number of training timesteps T (1000 for SD).
    pub num_train_timesteps: Option<usize>,
    /// First beta of the schedule.
    pub beta_start: Option<f64>,
    /// Last beta of the schedule.
    pub beta_end: Option<f64>,
    /// Layout of the betas.
    pub beta_schedule: Option<BetaSchedule>,
    /// Explicit betas, overriding `beta_start`/`beta_end`/`beta_schedule`.
    pub trained_betas: Option<Vec<f64>>,
    /// What the UNet predicts.
    pub prediction_type: Option<PredictionType>,
    /// How inference timesteps are spaced.
    pub timestep_spacing: Option<TimestepSpacing>,
    /// Added to `leading` timesteps (1 for SD v1.5).
    pub steps_offset: Option<i64>,
    /// DDIM/LCM: use ᾱ = 1 after the last step (else ᾱ_0).
    pub set_alpha_to_one: Option<bool>,
    /// DDPM/DDIM/LCM: clamp the x0 prediction to ±`clip_sample_range`.
    pub clip_sample: Option<bool>,
    /// Bound for `clip_sample`.
    pub clip_sample_range: Option<f64>,
    /// Dynamic thresholding of x0 (unsupported; must be false).
    pub thresholding: Option<bool>,
    /// Zero-terminal-SNR beta rescaling (unsupported; must be false).
    pub rescale_betas_zero_snr: Option<bool>,
    /// DDPM's posterior variance.
    pub variance_type: Option<VarianceType>,
    /// DPM-Solver order, 1–3.
    pub solver_order: Option<usize>,
    /// DPM-Solver formulation.
    pub algorithm_type: Option<AlgorithmType>,
    /// DPM-Solver second-order rule.
    pub solver_type: Option<SolverType>,
    /// DPM-Solver: lower the order for the final steps of short (< 15 step) runs.
    pub lower_order_final: Option<bool>,
    /// DPM-Solver: use a first-order step at the very end.
    pub euler_at_final: Option<bool>,
    /// DPM-Solver/Euler: Karras et al. sigma spacing.
    pub use_karras_sigmas: Option<bool>,
    /// Exponential sigma spacing (unsupported; must be false).
    pub use_exponential_sigmas: Option<bool>,
    /// Beta-distribution sigma spacing (unsupported; must be false).
    pub use_beta_sigmas: Option<bool>,
    /// Uniform-logSNR spacing (unsupported; must be false).
    pub use_lu_lambdas: Option<bool>,
    /// Flow-matching sigmas (unsupported; must be false).
    pub use_flow_sigmas: Option<bool>,
    /// DPM-Solver/Euler: sigma after the last step.
    pub final_sigmas_type: Option<FinalSigmasType>,
    /// DPM-Solver: timesteps whose log-SNR λ(t) is below this are cut off.
    pub lambda_min_clipped: Option<f64>,
    /// Karras: smallest sigma (defaults to the training schedule's).
    pub sigma_min: Option<f64>,
    /// Karras: largest sigma (defaults to the training schedule's).
    pub sigma_max: Option<f64>,
    /// Euler: sigma interpolation.
    pub interpolation_type: Option<InterpolationType>,
    /// Euler: timestep flavour.
    pub timestep_type: Option<TimestepType>,
    /// LCM: length of the distillation schedule the inference steps are taken from.
    pub original_inference_steps: Option<usize>,
    /// LCM: multiplier of t in the consistency boundary conditions c_skip, c_out.
    pub timestep_scaling: Option<f64>,
}

impl SchedulerConfig {
    /// Parses the text of a `scheduler_config.json`.
    pub fn from_json_str(text: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| eyre!("invalid scheduler config: {e}"))
    }
}

// ---------------------------------------------------------------------------------------------
// Kinds, options, build
// ---------------------------------------------------------------------------------------------

/// The schedulers speedscape implements, spelt as on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SchedulerKind {
    /// `ddpm`: DDPMScheduler.
    Ddpm,
    /// `dpmpp`: DPMSolverMultistepScheduler (DPM-Solver++).
    DpmSolverPp,
    /// `lcm`: LCMScheduler.
    Lcm,
    /// `euler`: EulerDiscreteScheduler.
    Euler,
    /// `euler-a`: EulerAncestralDiscreteScheduler.
    EulerAncestral,
    /// `ddim`: DDIMScheduler.
    Ddim,
}

impl SchedulerKind {
    /// Every kind, in CLI order.
    pub const ALL: [SchedulerKind; 6] = [
        SchedulerKind::Ddpm,
        SchedulerKind::DpmSolverPp,
        SchedulerKind::Lcm,
        SchedulerKind::Euler,
        SchedulerKind::EulerAncestral,
        SchedulerKind::Ddim,
    ];

    /// The CLI spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SchedulerKind::Ddpm => "ddpm",
            SchedulerKind::DpmSolverPp => "dpmpp",
            SchedulerKind::Lcm => "lcm",
            SchedulerKind::Euler => "euler",
            SchedulerKind::EulerAncestral => "euler-a",
            SchedulerKind::Ddim => "ddim",
        }
    }

    /// The diffusers class this kind mirrors.
    pub(crate) fn diffusers_class(self) -> &'static str {
        match self {
            SchedulerKind::Ddpm => "DDPMScheduler",
            SchedulerKind::DpmSolverPp => "DPMSolverMultistepScheduler",
            SchedulerKind::Lcm => "LCMScheduler",
            SchedulerKind::Euler => "EulerDiscreteScheduler",
            SchedulerKind::EulerAncestral => "EulerAncestralDiscreteScheduler",
            SchedulerKind::Ddim => "DDIMScheduler",
        }
    }
}

impl serde::Serialize for SchedulerKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for SchedulerKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SchedulerKind {
    type Err = eyre::Report;
    fn from_str(s: &str) -> Result<Self> {
        SchedulerKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = SchedulerKind::ALL.iter().map(|k| k.as_str()).collect();
                eyre!(
                    "unknown scheduler {s:?}; expected one of {}",
                    names.join("|")
                )
            })
    }
}

/// Run-time choices on top of the model's config; like `from_config(config, **kwargs)`, a
/// `Some` here overrides what the config says.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SchedulerOptions {
    /// DPM-Solver++ order: 1, 2 or 3 (`None`: the config's `solver_order`, else 2).
    pub solver_order: Option<usize>,
    /// Karras sigmas for DPM-Solver++ (`None`: the config's `use_karras_sigmas`, else false).
    pub use_karras_sigmas: Option<bool>,
    /// Overrides the config's (or the scheduler's default) `timestep_spacing`.
    pub timestep_spacing: Option<TimestepSpacing>,
    /// DDIM's η: 0 is deterministic (StableDiffusionPipeline's default), 1 is DDPM-like and
    /// draws noise every step.
    pub eta: f32,
}

/// The most inference steps any scheduler runs: far past every useful count (SD v1.5 was
/// trained on 1000 timesteps), and low enough that a schedule's arrays stay small.
pub(crate) const MAX_STEPS: usize = 10_000;

/// Builds a scheduler for `steps` inference steps, as
/// `X.from_config(config, **options); X.set_timesteps(steps)` does in diffusers.
///
/// Refuses what diffusers refuses (more steps than `num_train_timesteps` for DDPM/DDIM/LCM,
/// LCM above `original_inference_steps`), zero steps (which diffusers either crashes on or
/// turns into an empty run), and schedules diffusers accepts but cannot step through.
///
/// `timesteps().len()` is `steps`, except where diffusers' own `trailing` schedule has one
/// more entry (numpy's `arange` rounding: 61 steps give 62 timesteps ending at t = −1); dpmpp,
/// euler and euler-a run it as diffusers does, ddpm and ddim refuse it.
pub fn build(
    kind: SchedulerKind,
    config: &SchedulerConfig,
    steps: usize,
    options: &SchedulerOptions,
) -> Result<Box<dyn Scheduler>> {
    if steps == 0 {
        bail!(Fixable::new(
            format!(
                "{kind} cannot run 0 inference steps (diffusers' {} either divides by zero or \
                 returns an empty schedule)",
                kind.diffusers_class()
            ),
            "use at least 1 step",
        ));
    }
    if steps > MAX_STEPS {
        bail!(Fixable::new(
            format!(
                "{kind} cannot run {steps} steps: speedscape runs at most {MAX_STEPS} (the UNet was \
                 trained on 1000 timesteps, so more steps only repeat its calls, for hours)"
            ),
            format!("use at most {MAX_STEPS} steps (20–50 is usual; LCM 1–8)"),
        ));
    }
    check_common(kind, config)?;
    if options.solver_order.is_some() && kind != SchedulerKind::DpmSolverPp {
        bail!("a solver order only applies to dpmpp, not {kind}; drop it");
    }
    if options.use_karras_sigmas.is_some() && kind != SchedulerKind::DpmSolverPp {
        bail!("Karras sigmas are implemented for dpmpp only, not {kind}; drop the option");
    }
    if options.timestep_spacing.is_some() && kind == SchedulerKind::Lcm {
        bail!(
            "lcm has no timestep spacing (its timesteps are a subset of the `original_inference_steps` schedule); drop the option"
        );
    }
    if options.eta != 0.0 && kind != SchedulerKind::Ddim {
        bail!("eta only applies to ddim, not {kind}; drop it");
    }
    if !(options.eta.is_finite() && options.eta >= 0.0) {
        bail!("eta must be a finite number ≥ 0, got {}", options.eta);
    }
    let scheduler: Box<dyn Scheduler> = match kind {
        SchedulerKind::Ddpm => Box::new(ddpm::Ddpm::new(config, steps, options)?),
        SchedulerKind::DpmSolverPp => {
            Box::new(dpm_solver_pp::DpmSolverPp::new(config, steps, options)?)
        }
        SchedulerKind::Lcm => Box::new(lcm::Lcm::new(config, steps)?),
        SchedulerKind::Euler => Box::new(euler::Euler::new(config, steps, options)?),
        SchedulerKind::EulerAncestral => Box::new(euler_ancestral::EulerAncestral::new(
            config, steps, options,
        )?),
        SchedulerKind::Ddim => Box::new(ddim::Ddim::new(config, steps, options)?),
    };
    Ok(scheduler)
}

/// Refuses config switches this kind's diffusers class reads but speedscape does not
/// implement (switches meant for other classes are ignored, as `from_config` ignores them).
fn check_common(kind: SchedulerKind, config: &SchedulerConfig) -> Result<()> {
    use SchedulerKind::*;
    let switches: [(&str, Option<bool>, &[SchedulerKind]); 6] = [
        (
            "thresholding",
            config.thresholding,
            &[Ddpm, DpmSolverPp, Lcm, Ddim],
        ),
        (
            "rescale_betas_zero_snr",
            config.rescale_betas_zero_snr,
            &SchedulerKind::ALL,
        ),
        (
            "use_exponential_sigmas",
            config.use_exponential_sigmas,
            &[DpmSolverPp, Euler],
        ),
        (
            "use_beta_sigmas",
            config.use_beta_sigmas,
            &[DpmSolverPp, Euler],
        ),
        ("use_lu_lambdas", config.use_lu_lambdas, &[DpmSolverPp]),
        ("use_flow_sigmas", config.use_flow_sigmas, &[DpmSolverPp]),
    ];
    for (field, value, readers) in switches {
        if value == Some(true) && readers.contains(&kind) {
            bail!(
                "the scheduler config sets `{field}` to true, which speedscape's {kind} does not \
                 implement; set it to false or remove it"
            );
        }
    }
    Ok(())
}

/// A prediction type a scheduler cannot use.
fn unsupported_prediction(kind: SchedulerKind, p: PredictionType) -> eyre::Report {
    eyre!(
        "{kind} does not support `prediction_type` {:?} (diffusers' {} raises for it)",
        p.as_str(),
        kind.diffusers_class()
    )
}

// ---------------------------------------------------------------------------------------------
// Training tables: betas and alphas_cumprod
// ---------------------------------------------------------------------------------------------

/// Scheduler defaults for the beta table (diffusers' `__init__` defaults).
#[derive(Clone, Copy)]
struct BetaDefaults {
    beta_start: f64,
    beta_end: f64,
    schedule: BetaSchedule,
}

/// DDPM/DDIM/DPM-Solver/Euler defaults.
const LINEAR_DEFAULTS: BetaDefaults = BetaDefaults {
    beta_start: 0.0001,
    beta_end: 0.02,
    schedule: BetaSchedule::Linear,
};

/// The training schedule a scheduler works on.
struct TrainTable {
    /// T.
    num_train_timesteps: usize,
    /// ᾱ_t for t in 0..T, float32.
    alphas_cumprod: Vec<f32>,
}

impl TrainTable {
    fn new(config: &SchedulerConfig, defaults: BetaDefaults) -> Result<Self> {
        let num_train_timesteps = config.num_train_timesteps.unwrap_or(1000);
        if num_train_timesteps < 2 {
            bail!("`num_train_timesteps` must be at least 2, got {num_train_timesteps}");
        }
        let betas = match &config.trained_betas {
            Some(trained) => {
                if trained.len() != num_train_timesteps {
                    bail!(
                        "`trained_betas` has {} values but `num_train_timesteps` is {num_train_timesteps}",
                        trained.len()
                    );
                }
                trained.iter().map(|&b| b as f32).collect()
            }
            None => betas(
                config.beta_schedule.unwrap_or(defaults.schedule),
                config.beta_start.unwrap_or(defaults.beta_start),
                config.beta_end.unwrap_or(defaults.beta_end),
                num_train_timesteps,
            ),
        };
        Ok(TrainTable {
            num_train_timesteps,
            alphas_cumprod: alphas_cumprod(&betas),
        })
    }

    /// σ_t = √((1 − ᾱ_t) / ᾱ_t) for every training timestep, float32
    /// (diffusers' `((1 - self.alphas_cumprod) / self.alphas_cumprod) ** 0.5`).
    fn sigmas(&self) -> Vec<f32> {
        self.alphas_cumprod
            .iter()
            .map(|&a| ((1.0 - a) / a).sqrt())
            .collect()
    }

    /// ᾱ at a timestep of the schedule; schedules are checked to lie in 0..T at build time.
    fn alpha_at(&self, t: i64) -> f32 {
        self.alphas_cumprod[t as usize]
    }
}

/// The float32 betas of a schedule, as diffusers' scheduler `__init__` computes them.
pub fn betas(
    schedule: BetaSchedule,
    beta_start: f64,
    beta_end: f64,
    num_train_timesteps: usize,
) -> Vec<f32> {
    match schedule {
        BetaSchedule::Linear => torch_linspace_f32(beta_start, beta_end, num_train_timesteps),
        BetaSchedule::ScaledLinear => {
            torch_linspace_f32(beta_start.sqrt(), beta_end.sqrt(), num_train_timesteps)
                .into_iter()
                .map(|b| b * b)
                .collect()
        }
        BetaSchedule::SquaredcosCapV2 => betas_for_alpha_bar(num_train_timesteps, 0.999),
    }
}

/// `torch.linspace(start, end, steps, dtype=torch.float32)` on the CPU, bit for bit: the
/// bounds and step are float32, the first half counts up from `start` and the second half down
/// from `end`, each as one fused multiply-add (how torch's AVX2/AVX-512 kernels compile).
pub(crate) fn torch_linspace_f32(start: f64, end: f64, steps: usize) -> Vec<f32> {
    let (start, end) = (start as f32, end as f32);
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let halfway = steps / 2;
    (0..steps)
        .map(|i| {
            if i < halfway {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((steps - 1 - i) as f32, end)
            }
        })
        .collect()
}

/// The Glide cosine schedule: β_i = min(1 − ᾱ((i+1)/T) / ᾱ(i/T), max_beta) with
/// ᾱ(t) = cos²((t + 0.008) / 1.008 · π/2), in float64, then rounded to float32.
/// Mirrors diffusers' `betas_for_alpha_bar` (cosine); t is a float ratio, never `i / T` on
/// integers.
pub(crate) fn betas_for_alpha_bar(num_diffusion_timesteps: usize, max_beta: f64) -> Vec<f32> {
    let alpha_bar = |t: f64| {
        ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
            .cos()
            .powi(2)
    };
    let n = num_diffusion_timesteps as f64;
    (0..num_diffusion_timesteps)
        .map(|i| {
            let t1 = i as f64 / n;
            let t2 = (i + 1) as f64 / n;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(max_beta) as f32
        })
        .collect()
}

/// ᾱ_t = ∏_{s≤t} (1 − β_s): `torch.cumprod(1.0 - betas, dim=0)` on the CPU, which multiplies
/// in float64 and rounds each partial product to float32.
pub fn alphas_cumprod(betas: &[f32]) -> Vec<f32> {
    let mut acc = 1.0f64;
    betas
        .iter()
        .map(|&b| {
            acc *= f64::from(1.0f32 - b);
            acc as f32
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Schedules (numpy float64, as in diffusers' set_timesteps)
// ---------------------------------------------------------------------------------------------

/// `np.linspace(start, stop, num)` (endpoint included): `i * step + start` in float64, the
/// last value set to `stop`.
fn np_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    let div = num.saturating_sub(1);
    let delta = stop - start;
    let mut y: Vec<f64> = if div > 0 {
        let step = delta / div as f64;
        (0..num).map(|i| i as f64 * step + start).collect()
    } else {
        (0..num).map(|i| i as f64 * delta + start).collect()
    };
    if num > 1 {
        y[num - 1] = stop;
    }
    y
}

/// `np.linspace(0, stop, num, endpoint=False)`.
fn np_linspace_open(stop: f64, num: usize) -> Vec<f64> {
    let step = stop / num as f64;
    (0..num).map(|i| i as f64 * step).collect()
}

/// `np.arange(start, 0, -step)` for a positive float `step`: numpy sizes it as
/// ⌈(0 − start) / −step⌉ and fills `start + i·d` with `d = (start − step) − start`. The size
/// can exceed `start / step` by one (e.g. 1000 / (1000/61) rounds up to 62 values).
fn np_arange_down(start: f64, step: f64) -> Vec<f64> {
    let len = ((0.0 - start) / -step).ceil().max(0.0) as usize;
    let d = (start + -step) - start;
    (0..len)
        .map(|i| match i {
            0 => start,
            1 => start + -step,
            _ => start + i as f64 * d,
        })
        .collect()
}

/// `np.round` then `astype(np.int64)`: round half to even.
fn round_i64(v: f64) -> i64 {
    v.round_ties_even() as i64
}

/// The inference timesteps of diffusers' DDPM/DDIM/Euler `set_timesteps`, as float64 values
/// before any cast: `linspace` here is unrounded (DDPM/DDIM round it, Euler keeps fractions).
fn spaced_timesteps(
    spacing: TimestepSpacing,
    num_train_timesteps: usize,
    steps: usize,
    steps_offset: i64,
) -> Vec<f64> {
    let t = num_train_timesteps;
    match spacing {
        TimestepSpacing::Linspace => {
            let mut v = np_linspace(0.0, (t - 1) as f64, steps);
            v.reverse();
            v
        }
        TimestepSpacing::Leading => {
            let ratio = t / steps;
            (0..steps)
                .rev()
                .map(|i| (i * ratio) as f64 + steps_offset as f64)
                .collect()
        }
        TimestepSpacing::Trailing => {
            let ratio = t as f64 / steps as f64;
            np_arange_down(t as f64, ratio)
                .into_iter()
                .map(|v| v.round_ties_even() - 1.0)
                .collect()
        }
    }
}

/// Integer DDPM/DDIM schedules (`.round()` then int64; leading/trailing are integral already),
/// checked to index the training table: diffusers accepts some schedules whose steps then
/// index out of range (1000 `leading` steps with `steps_offset` 1 reach t = 1000) or wrap
/// around (`trailing` can end on t = −1, and torch reads ᾱ[−1] = ᾱ_999).
fn integer_timesteps(
    kind: SchedulerKind,
    spacing: TimestepSpacing,
    num_train_timesteps: usize,
    steps: usize,
    steps_offset: i64,
) -> Result<Vec<i64>> {
    let timesteps: Vec<i64> = spaced_timesteps(spacing, num_train_timesteps, steps, steps_offset)
        .into_iter()
        .map(round_i64)
        .collect();
    if let Some(&bad) = timesteps
        .iter()
        .find(|&&t| t < 0 || t >= num_train_timesteps as i64)
    {
        // The nearest smaller step count whose schedule stays inside, for the fix.
        let fits = (1..steps).rev().find(|&s| {
            spaced_timesteps(spacing, num_train_timesteps, s, steps_offset)
                .into_iter()
                .map(round_i64)
                .all(|t| (0..num_train_timesteps as i64).contains(&t))
        });
        let fix = match fits {
            Some(s) => format!("use {s} steps (or fewer)"),
            None => "use another step count".to_string(),
        };
        bail!(Fixable::new(
            format!(
                "{kind} with {steps} `{spacing}` steps (steps_offset {steps_offset}) visits timestep \
                 {bad}, outside 0..{num_train_timesteps}; diffusers builds this schedule but its \
                 step() {} it",
                if bad < 0 {
                    "silently reads the wrong alpha for"
                } else {
                    "fails on"
                }
            ),
            format!(
                "{fix}, or set another timestep_spacing in the model's \
                 scheduler/scheduler_config.json"
            ),
        ));
    }
    Ok(timesteps)
}

/// Refuses step counts above the training schedule, as DDPM/DDIM/LCM `set_timesteps` do.
fn check_max_steps(kind: SchedulerKind, steps: usize, num_train_timesteps: usize) -> Result<()> {
    if steps > num_train_timesteps {
        bail!(Fixable::new(
            format!(
                "{kind} cannot run {steps} steps: more than `num_train_timesteps` = \
                 {num_train_timesteps}, the timesteps the UNet was trained on (diffusers' {} refuses \
                 it too)",
                kind.diffusers_class()
            ),
            format!("use at most {num_train_timesteps} steps"),
        ));
    }
    Ok(())
}

/// `np.interp(x, arange(len(fp)), fp)` in float64 (numpy's formula: `slope·(x − x_j) + f_j`,
/// exact at the knots, clamped outside).
fn np_interp_unit_grid(x: f64, fp: &[f32]) -> f64 {
    let last = fp.len() - 1;
    if x.is_nan() {
        return x;
    }
    if x < 0.0 {
        return f64::from(fp[0]);
    }
    if x >= last as f64 {
        return f64::from(fp[last]);
    }
    let j = x.floor() as usize;
    let (xj, fj, fk) = (j as f64, f64::from(fp[j]), f64::from(fp[j + 1]));
    if xj == x {
        return fj;
    }
    let slope = (fk - fj) / ((j + 1) as f64 - xj);
    slope * (x - xj) + fj
}

/// The fractional timestep of a sigma by log-linear interpolation of the training sigmas:
/// diffusers' `_sigma_to_t`, with its mixed precision (float32 `log_sigmas`, float32
/// `low - high`, float64 elsewhere).
fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    let count = log_sigmas
        .iter()
        .filter(|&&l| log_sigma - f64::from(l) >= 0.0)
        .count();
    let low_idx = count.saturating_sub(1).min(log_sigmas.len() - 2);
    let high_idx = low_idx + 1;
    let low = log_sigmas[low_idx];
    let high = log_sigmas[high_idx];
    let w = ((f64::from(low) - log_sigma) / f64::from(low - high)).clamp(0.0, 1.0);
    (1.0 - w) * low_idx as f64 + w * high_idx as f64
}

/// Karras et al. (2022) sigmas, ρ = 7, from `sigma_max` down to `sigma_min` (float64):
/// diffusers' `_convert_to_karras`.
fn karras_sigmas(sigma_min: f64, sigma_max: f64, steps: usize) -> Vec<f64> {
    let rho = 7.0;
    let min_inv_rho = sigma_min.powf(1.0 / rho);
    let max_inv_rho = sigma_max.powf(1.0 / rho);
    np_linspace(0.0, 1.0, steps)
        .into_iter()
        .map(|r| (max_inv_rho + r * (min_inv_rho - max_inv_rho)).powf(rho))
        .collect()
}

/// Where a scheduler that counts its own steps starts: diffusers' `index_for_timestep`
/// (the second match if `t` occurs twice, so img2img starting mid-schedule does not skip a
/// step; `missing` if `t` is not in the schedule).
fn index_for_timestep(timesteps: &[i64], t: i64, missing: usize) -> usize {
    let mut hits = timesteps
        .iter()
        .enumerate()
        .filter(|&(_, &s)| s == t)
        .map(|(i, _)| i);
    match (hits.next(), hits.next()) {
        (Some(_), Some(second)) => second,
        (Some(first), None) => first,
        _ => missing,
    }
}

/// Clamps an x0 prediction to ±`range` (diffusers' `clip_sample`).
fn clip(x0: &mut Array4<f32>, range: f64) {
    let r = range as f32;
    x0.mapv_inplace(|v| v.clamp(-r, r));
}

/// Draws one noise tensor of the sample's shape.
fn draw(noise: &mut dyn NoiseSource, like: ArrayView4<f32>) -> Array4<f32> {
    let d = like.dim();
    noise.randn([d.0, d.1, d.2, d.3])
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Zip;

    /// SD v1.5's own scheduler_config.json.
    const SD_V15: &str = r#"{"_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000, "set_alpha_to_one": false, "skip_prk_steps": true, "steps_offset": 1, "trained_betas": null, "clip_sample": false}"#;

    /// Noise that is all zeros, of the requested shape.
    struct ZeroNoise;
    impl NoiseSource for ZeroNoise {
        fn randn(&mut self, shape: [usize; 4]) -> Array4<f32> {
            Array4::zeros(shape)
        }
    }

    fn sd_config() -> SchedulerConfig {
        SchedulerConfig::from_json_str(SD_V15).unwrap()
    }

    /// A smooth, fixed x0 in the range of SD latents.
    fn known_x0() -> Array4<f32> {
        Array4::from_shape_fn((1, 4, 8, 8), |(_, c, h, w)| {
            ((c as f32 + 1.0) * 0.7 + h as f32 * 0.31 - w as f32 * 0.17).sin() * 1.5
        })
    }

    /// A fixed ε, roughly unit variance.
    fn known_eps() -> Array4<f32> {
        Array4::from_shape_fn((1, 4, 8, 8), |(_, c, h, w)| {
            ((c * 64 + h * 8 + w) as f32 * 1.618).sin() * 1.7
        })
    }

    fn max_abs_diff(a: &Array4<f32>, b: &Array4<f32>) -> f32 {
        Zip::from(a)
            .and(b)
            .fold(0.0f32, |m, &x, &y| m.max((x - y).abs()))
    }

    #[test]
    fn timesteps_strictly_decrease_and_number_steps() {
        let config = sd_config();
        let spacings = [
            None,
            Some(TimestepSpacing::Linspace),
            Some(TimestepSpacing::Leading),
            Some(TimestepSpacing::Trailing),
        ];
        for kind in SchedulerKind::ALL {
            for timestep_spacing in spacings {
                for karras in [None, Some(true)] {
                    // Karras is dpmpp-only; LCM has no spacing.
                    if (karras.is_some() && kind != SchedulerKind::DpmSolverPp)
                        || (timestep_spacing.is_some() && kind == SchedulerKind::Lcm)
                    {
                        continue;
                    }
                    let options = SchedulerOptions {
                        timestep_spacing,
                        use_karras_sigmas: karras,
                        ..SchedulerOptions::default()
                    };
                    for steps in [1usize, 2, 3, 4, 7, 10, 20, 25, 50] {
                        let what = format!("{kind} {steps} steps, {options:?}");
                        let s = build(kind, &config, steps, &options).unwrap();
                        let ts = s.timesteps();
                        assert_eq!(ts.len(), steps, "{what}");
                        // Karras sigmas crowd near σ_min, and diffusers rounds them to the
                        // same timestep (50 steps end [.., 2, 1, 1, 0]); their sigmas still
                        // strictly decrease.
                        let decreasing = if karras.is_some() {
                            ts.windows(2).all(|w| w[0] >= w[1])
                        } else {
                            ts.windows(2).all(|w| w[0] > w[1])
                        };
                        assert!(decreasing, "{what}: {ts:?} not decreasing");
                        if karras.is_some() {
                            let dpm =
                                dpm_solver_pp::DpmSolverPp::new(&config, steps, &options).unwrap();
                            let sig = dpm.sigmas();
                            assert!(sig.windows(2).all(|w| w[0] > w[1]), "{what}: {sig:?}");
                        }
                        let mts = s.model_timesteps();
                        assert_eq!(mts.len(), steps, "{what}");
                        assert!(
                            mts.windows(2).all(|w| w[0] > w[1] || karras.is_some()),
                            "{what}: {mts:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn alphas_cumprod_in_unit_interval_and_decreasing() {
        for schedule in [
            BetaSchedule::Linear,
            BetaSchedule::ScaledLinear,
            BetaSchedule::SquaredcosCapV2,
        ] {
            let a = alphas_cumprod(&betas(schedule, 0.00085, 0.012, 1000));
            assert_eq!(a.len(), 1000);
            assert!(a.iter().all(|&v| v > 0.0 && v <= 1.0), "{schedule}");
            assert!(a.windows(2).all(|w| w[1] < w[0]), "{schedule}");
        }
    }

    #[test]
    fn betas_for_alpha_bar_uses_float_ratios() {
        // With integer division every t1 would be 0 and every beta the same.
        let b = betas_for_alpha_bar(1000, 0.999);
        assert!(b.windows(2).all(|w| w[1] > w[0]));
        assert!(b[999] <= 0.999);
    }

    #[test]
    fn torch_linspace_hits_both_ends() {
        let v = torch_linspace_f32(0.1, 0.7, 37);
        assert_eq!(v[0], 0.1f32);
        assert_eq!(v[36], 0.7f32);
    }

    /// The noisy sample at step `i` of a fresh scheduler for the true (x0, ε), in that
    /// scheduler's own parametrisation: x0 + σ·ε in sigma space (Euler), √ᾱ·x0 + √(1−ᾱ)·ε
    /// otherwise.
    fn noisy_sample(
        kind: SchedulerKind,
        config: &SchedulerConfig,
        steps: usize,
        i: usize,
        t: i64,
        x0: &Array4<f32>,
        eps: &Array4<f32>,
    ) -> Array4<f32> {
        let options = SchedulerOptions::default();
        let sigma = match kind {
            SchedulerKind::Euler => euler::Euler::new(config, steps, &options).unwrap().sigmas()[i],
            SchedulerKind::EulerAncestral => {
                euler_ancestral::EulerAncestral::new(config, steps, &options)
                    .unwrap()
                    .sigmas()[i]
            }
            _ => {
                let a = TrainTable::new(config, LINEAR_DEFAULTS)
                    .unwrap()
                    .alpha_at(t);
                let (sa, sb) = (a.sqrt(), (1.0 - a).sqrt());
                return Zip::from(x0).and(eps).map_collect(|&x, &e| sa * x + sb * e);
            }
        };
        Zip::from(x0).and(eps).map_collect(|&x, &e| x + sigma * e)
    }

    /// With zero noise and the true ε of a known x0, every scheduler's x0 prediction recovers
    /// x0 at every noise level of its schedule (LCM reports the consistency blend
    /// c_out·x0 + c_skip·x_t, which is checked instead).
    #[test]
    fn true_eps_recovers_x0() {
        let config = sd_config();
        let x0 = known_x0();
        let eps = known_eps();
        let scale = x0.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for kind in SchedulerKind::ALL {
            for steps in [1usize, 4, 25] {
                let timesteps = build(kind, &config, steps, &SchedulerOptions::default())
                    .unwrap()
                    .timesteps()
                    .to_vec();
                for (i, &t) in timesteps.iter().enumerate() {
                    // A fresh scheduler starts at the step of the first `t` it sees.
                    let mut s = build(kind, &config, steps, &SchedulerOptions::default()).unwrap();
                    let x = noisy_sample(kind, &config, steps, i, t, &x0, &eps);
                    let out = s.step(eps.view(), t, x.view(), &mut ZeroNoise);
                    let denoised = out.denoised.expect("every scheduler here reports x0");
                    let target = if kind == SchedulerKind::Lcm {
                        let (c_skip, c_out) = lcm::boundary_condition_scalings(t, 10.0);
                        Zip::from(&x0)
                            .and(&x)
                            .map_collect(|&p, &s| c_out * p + c_skip * s)
                    } else {
                        x0.clone()
                    };
                    let err = max_abs_diff(&denoised, &target) / scale;
                    assert!(
                        err < 1e-5,
                        "{kind} {steps} steps, step {i} (t={t}): x0 recovered to {err:e} relative"
                    );
                }
            }
        }
    }

    /// The deterministic samplers, fed the true ε of a known x0 all the way down with zero
    /// noise, end on x0 (the ODE solution of a single data point is exact).
    #[test]
    fn deterministic_runs_end_on_x0() {
        let config = sd_config();
        let x0 = known_x0();
        let eps = known_eps();
        let scale = x0.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for kind in [
            SchedulerKind::DpmSolverPp,
            SchedulerKind::Euler,
            SchedulerKind::Ddim,
        ] {
            for steps in [4usize, 25] {
                let mut s = build(kind, &config, steps, &SchedulerOptions::default()).unwrap();
                let first = s.timesteps()[0];
                let mut x = noisy_sample(kind, &config, steps, 0, first, &x0, &eps);
                for t in s.timesteps().to_vec() {
                    x = s.step(eps.view(), t, x.view(), &mut ZeroNoise).prev_sample;
                }
                // DDIM stops at ᾱ_0 (SD sets set_alpha_to_one = false), not at ᾱ = 1.
                let target = if kind == SchedulerKind::Ddim {
                    noisy_sample(kind, &config, steps, 0, 0, &x0, &eps)
                } else {
                    x0.clone()
                };
                let err = max_abs_diff(&x, &target) / scale;
                assert!(
                    err < 1e-4,
                    "{kind} {steps} steps ends {err:e} from its target"
                );
            }
        }
    }

    #[test]
    fn kind_round_trips_through_cli_spelling() {
        for kind in SchedulerKind::ALL {
            assert_eq!(kind.to_string().parse::<SchedulerKind>().unwrap(), kind);
        }
        let err = "euler_a".parse::<SchedulerKind>().unwrap_err().to_string();
        assert!(err.contains("euler_a") && err.contains("euler-a"), "{err}");
    }

    #[test]
    fn unknown_values_name_field_value_and_choices() {
        let text = SD_V15.replace("scaled_linear", "foo");
        let err = SchedulerConfig::from_json_str(&text)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("beta_schedule") && err.contains("foo") && err.contains("scaled_linear"),
            "{err}"
        );
        let text = SD_V15.replace('}', r#", "prediction_type": "bar"}"#);
        let err = SchedulerConfig::from_json_str(&text)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("prediction_type") && err.contains("bar") && err.contains("v_prediction"),
            "{err}"
        );
    }

    #[test]
    fn misuse_is_refused_with_cause_and_fix() {
        let config = sd_config();
        let cases: [(SchedulerKind, SchedulerOptions, &str); 4] = [
            (
                SchedulerKind::Euler,
                SchedulerOptions {
                    solver_order: Some(3),
                    ..Default::default()
                },
                "dpmpp",
            ),
            (
                SchedulerKind::Ddim,
                SchedulerOptions {
                    use_karras_sigmas: Some(true),
                    ..Default::default()
                },
                "dpmpp only",
            ),
            (
                SchedulerKind::Ddpm,
                SchedulerOptions {
                    eta: 1.0,
                    ..Default::default()
                },
                "ddim",
            ),
            (
                SchedulerKind::DpmSolverPp,
                SchedulerOptions {
                    solver_order: Some(4),
                    ..Default::default()
                },
                "1, 2 or 3",
            ),
        ];
        for (kind, options, needle) in cases {
            let err = build(kind, &config, 10, &options)
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains(needle), "{kind} {options:?}: {err}");
        }
        let mut thresholded = config.clone();
        thresholded.thresholding = Some(true);
        let err = build(
            SchedulerKind::Ddim,
            &thresholded,
            10,
            &SchedulerOptions::default(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.contains("thresholding") && err.contains("false"),
            "{err}"
        );
    }

    #[test]
    fn zero_steps_refused_with_cause_and_fix() {
        for kind in SchedulerKind::ALL {
            let err = build(kind, &sd_config(), 0, &SchedulerOptions::default())
                .err()
                .unwrap()
                .to_string();
            assert!(
                err.contains("0 inference steps") && err.contains("at least 1"),
                "{err}"
            );
        }
    }

    #[test]
    fn step_counts_past_each_schedulers_limit_are_refused_with_the_fix() {
        let config = sd_config();
        let opts = SchedulerOptions::default();
        let err = |kind, steps| {
            build(kind, &config, steps, &opts)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        // LCMScheduler.set_timesteps raises above original_inference_steps (50).
        assert!(build(SchedulerKind::Lcm, &config, 50, &opts).is_ok());
        let e = err(SchedulerKind::Lcm, 51);
        assert!(
            e.contains("lcm cannot run 51 steps") && e.contains("Fix: use at most 50 steps"),
            "{e}"
        );
        // DDPM/DDIM raise above num_train_timesteps (SD's `leading` spacing with
        // steps_offset 1 already leaves the table at 1000: refused apart, see integer_timesteps).
        for kind in [SchedulerKind::Ddpm, SchedulerKind::Ddim] {
            assert!(build(kind, &config, 999, &opts).is_ok(), "{kind}");
            let e = err(kind, 1001);
            assert!(
                e.contains("more than `num_train_timesteps` = 1000")
                    && e.contains("Fix: use at most 1000 steps"),
                "{e}"
            );
        }
        // 1000 `leading` steps with steps_offset 1 visit t = 1000: the fix names the nearest
        // count that fits.
        for kind in [SchedulerKind::Ddpm, SchedulerKind::Ddim] {
            let e = err(kind, 1000);
            assert!(
                e.contains("visits timestep 1000, outside 0..1000")
                    && e.contains(
                        "\nFix: use 999 steps (or fewer), or set another timestep_spacing"
                    ),
                "{e}"
            );
        }
        // DPM-Solver++ at 1000 linspace steps repeats t = 500: diffusers returns NaN.
        assert!(build(SchedulerKind::DpmSolverPp, &config, 999, &opts).is_ok());
        let e = err(SchedulerKind::DpmSolverPp, 1000);
        assert!(
            e.contains("visits timestep 500 twice") && e.contains("Fix: use fewer steps"),
            "{e}"
        );
        // First order never divides by the gap: diffusers' output stays finite.
        let first_order = SchedulerOptions {
            solver_order: Some(1),
            ..SchedulerOptions::default()
        };
        assert!(build(SchedulerKind::DpmSolverPp, &config, 1000, &first_order).is_ok());
        // Everyone: at most MAX_STEPS, and huge counts are refused, not a panic.
        assert!(build(SchedulerKind::Euler, &config, MAX_STEPS, &opts).is_ok());
        for kind in SchedulerKind::ALL {
            for steps in [MAX_STEPS + 1, usize::MAX] {
                let e = err(kind, steps);
                assert!(
                    e.contains(&format!("cannot run {steps} steps"))
                        && e.contains(&format!("Fix: use at most {MAX_STEPS} steps")),
                    "{kind}: {e}"
                );
            }
        }
    }

    /// Order 3 on 1–3 steps is allowed: like diffusers (`lower_order_final` and the warm-up of
    /// `lower_order_nums`), it never has the history for a third-order step there, so it takes
    /// exactly order 2's steps (tests/fixtures/schedulers/dpmpp-order3-{1,2,3} check the values
    /// against diffusers itself).
    #[test]
    fn dpmpp_order_3_on_fewer_than_3_steps_runs_as_order_2() {
        let config = sd_config();
        let x0 = known_x0();
        let eps = known_eps();
        for steps in [1usize, 2, 3] {
            let run = |order| {
                let opts = SchedulerOptions {
                    solver_order: Some(order),
                    ..SchedulerOptions::default()
                };
                let mut s = build(SchedulerKind::DpmSolverPp, &config, steps, &opts).unwrap();
                let first = s.timesteps()[0];
                let mut x = noisy_sample(
                    SchedulerKind::DpmSolverPp,
                    &config,
                    steps,
                    0,
                    first,
                    &x0,
                    &eps,
                );
                for t in s.timesteps().to_vec() {
                    // A different ε each step, so a higher-order step would change the result.
                    let e = eps.mapv(|v| v * (1.0 + t as f32 / 1000.0));
                    x = s.step(e.view(), t, x.view(), &mut ZeroNoise).prev_sample;
                }
                x
            };
            assert_eq!(run(3), run(2), "{steps} steps");
        }
    }
}
