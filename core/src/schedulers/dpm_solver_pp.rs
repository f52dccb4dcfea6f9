//! DPM-Solver++ multistep (Lu et al. 2022): a 1st/2nd/3rd-order solver of the diffusion ODE
//! in the data-prediction (x0) form, in log-SNR time λ = log(α/σ). Mirrors diffusers'
//! `DPMSolverMultistepScheduler` (`scheduling_dpmsolver_multistep.py`) with
//! `algorithm_type="dpmsolver++"`.

use eyre::{Result, bail};
use ndarray::{Array4, ArrayView4, Zip};

use super::{
    AlgorithmType, BetaSchedule, FinalSigmasType, LINEAR_DEFAULTS, PredictionType, Scheduler,
    SchedulerConfig, SchedulerOptions, SolverType, StepOutput, TimestepSpacing, TrainTable,
    index_for_timestep, karras_sigmas, np_arange_down, np_interp_unit_grid, np_linspace, round_i64,
    sigma_to_t,
};
use crate::error::Fixable;
use crate::rng::NoiseSource;

/// DPM-Solver++ for one run; the multistep history lives here.
pub(crate) struct DpmSolverPp {
    timesteps: Vec<i64>,
    /// σ per step plus the final σ (0 by default), float32.
    sigmas: Vec<f32>,
    order: usize,
    solver_type: SolverType,
    prediction_type: PredictionType,
    lower_order_final: bool,
    euler_at_final: bool,
    final_sigmas_type: FinalSigmasType,
    /// x0 predictions of the last `order` steps, oldest first (`model_outputs` in diffusers).
    history: Vec<Option<Array4<f32>>>,
    /// How many steps have run, capped at `order` (`lower_order_nums`).
    lower_order_nums: usize,
    step_index: Option<usize>,
}

/// (α_t, σ_t) of a sigma: α = 1/√(σ² + 1), σ_t = σ·α (`_sigma_to_alpha_sigma_t`).
fn alpha_sigma(sigma: f32) -> (f32, f32) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    (alpha, sigma * alpha)
}

/// λ = log α − log σ, float32 (−∞ handled as diffusers: σ = 0 gives λ = +∞).
fn lambda(alpha: f32, sigma: f32) -> f32 {
    alpha.ln() - sigma.ln()
}

/// The solver order the config and options ask for, after refusing what this solver does not
/// implement (another `algorithm_type`, learned variance).
fn checked_order(config: &SchedulerConfig, options: &SchedulerOptions) -> Result<usize> {
    let order = options.solver_order.or(config.solver_order).unwrap_or(2);
    if !(1..=3).contains(&order) {
        bail!("dpmpp `solver_order` must be 1, 2 or 3, got {order}");
    }
    let algorithm = config.algorithm_type.unwrap_or(AlgorithmType::DpmSolverPp);
    if algorithm != AlgorithmType::DpmSolverPp {
        bail!(
            "dpmpp implements `algorithm_type` \"dpmsolver++\" only, the config asks for {:?}; \
             remove the key or set it to \"dpmsolver++\"",
            algorithm.as_str()
        );
    }
    if config.variance_type.is_some_and(|v| {
        matches!(
            v,
            super::VarianceType::Learned | super::VarianceType::LearnedRange
        )
    }) {
        bail!(
            "dpmpp does not implement learned-variance UNets (`variance_type` learned/learned_range)"
        );
    }
    Ok(order)
}

/// The timesteps of `set_timesteps(steps)` before any Karras rewrite: `spacing` over the
/// training timesteps left after λ(t) clipping (those whose λ is below `lambda_min_clipped`
/// are cut off).
fn spaced_timesteps(
    config: &SchedulerConfig,
    table: &TrainTable,
    spacing: TimestepSpacing,
    steps: usize,
) -> Vec<i64> {
    let t_train = table.num_train_timesteps;
    let alphas = &table.alphas_cumprod;
    let lambda_min_clipped = config.lambda_min_clipped.unwrap_or(f64::NEG_INFINITY);
    let clipped_idx = alphas
        .iter()
        .rev()
        .map(|&a| lambda(a.sqrt(), (1.0 - a).sqrt()))
        .filter(|&l| f64::from(l) < lambda_min_clipped)
        .count();
    let last_timestep = t_train - clipped_idx;

    match spacing {
        TimestepSpacing::Linspace => {
            // Reversed, without the final 0.
            let v = np_linspace(0.0, last_timestep as f64 - 1.0, steps + 1);
            v[1..].iter().rev().map(|&t| round_i64(t)).collect()
        }
        TimestepSpacing::Leading => {
            let ratio = last_timestep / (steps + 1);
            let offset = config.steps_offset.unwrap_or(0);
            (1..=steps)
                .rev()
                .map(|i| (i * ratio) as i64 + offset)
                .collect()
        }
        TimestepSpacing::Trailing => {
            let ratio = t_train as f64 / steps as f64;
            np_arange_down(last_timestep as f64, ratio)
                .into_iter()
                .map(|v| round_i64(v) - 1)
                .collect()
        }
    }
}

/// σ per step, float64, for `timesteps`: interpolated in the training σ table, or with Karras
/// sigmas `steps` new ones, in which case `timesteps` are rewritten to match them.
fn step_sigmas(
    config: &SchedulerConfig,
    train_sigmas: &[f32],
    use_karras: bool,
    steps: usize,
    timesteps: &mut Vec<i64>,
) -> Vec<f64> {
    if !use_karras {
        return timesteps
            .iter()
            .map(|&t| np_interp_unit_grid(t as f64, train_sigmas))
            .collect();
    }
    let log_sigmas: Vec<f32> = train_sigmas
        .iter()
        .map(|&s| f64::from(s).ln() as f32)
        .collect();
    let sigma_min = config.sigma_min.unwrap_or(f64::from(train_sigmas[0]));
    let sigma_max = config
        .sigma_max
        .unwrap_or(f64::from(train_sigmas[train_sigmas.len() - 1]));
    let sigmas = karras_sigmas(sigma_min, sigma_max, steps);
    let cosine = config.beta_schedule == Some(BetaSchedule::SquaredcosCapV2);
    *timesteps = sigmas
        .iter()
        .map(|&s| {
            let t = sigma_to_t(s, &log_sigmas);
            // Rounded, except for the cosine schedule, which casts (truncates).
            if cosine { t as i64 } else { round_i64(t) }
        })
        .collect();
    sigmas
}

impl DpmSolverPp {
    /// `DPMSolverMultistepScheduler.from_config(config, **options)` then
    /// `set_timesteps(steps)`.
    pub(crate) fn new(
        config: &SchedulerConfig,
        steps: usize,
        options: &SchedulerOptions,
    ) -> Result<Self> {
        let table = TrainTable::new(config, LINEAR_DEFAULTS)?;
        let order = checked_order(config, options)?;
        let use_karras = options
            .use_karras_sigmas
            .or(config.use_karras_sigmas)
            .unwrap_or(false);
        let spacing = options
            .timestep_spacing
            .or(config.timestep_spacing)
            .unwrap_or(TimestepSpacing::Linspace);
        let final_sigmas_type = config.final_sigmas_type.unwrap_or(FinalSigmasType::Zero);

        let t_train = table.num_train_timesteps;
        let mut timesteps = spaced_timesteps(config, &table, spacing, steps);
        let train_sigmas = table.sigmas();
        let sigmas = step_sigmas(config, &train_sigmas, use_karras, steps, &mut timesteps);
        let last = match final_sigmas_type {
            FinalSigmasType::Zero => 0.0,
            FinalSigmasType::SigmaMin => f64::from(train_sigmas[0]),
        };
        let sigmas: Vec<f32> = sigmas.iter().chain([&last]).map(|&s| s as f32).collect();
        // A repeated σ is a zero log-SNR gap h; the next multistep update divides by it
        // (r0 = h_0 / h), so diffusers returns NaN (e.g. 1000 linspace steps repeat t = 999).
        if order > 1
            && let Some(i) = (1..timesteps.len()).find(|&i| sigmas[i] >= sigmas[i - 1])
        {
            bail!(Fixable::new(
                format!(
                    "dpmpp with {steps} `{spacing}` steps visits timestep {} twice (steps {i} and {}): \
                     a multistep DPM-Solver++ update then divides by a zero log-SNR gap, and diffusers' \
                     DPMSolverMultistepScheduler returns NaN for it",
                    timesteps[i],
                    i + 1
                ),
                format!(
                    "use fewer steps (dpmpp is meant for 10–25; with linspace spacing at most {})",
                    t_train - 1
                ),
            ));
        }

        Ok(DpmSolverPp {
            timesteps,
            sigmas,
            order,
            solver_type: config.solver_type.unwrap_or(SolverType::Midpoint),
            prediction_type: config.prediction_type.unwrap_or(PredictionType::Epsilon),
            lower_order_final: config.lower_order_final.unwrap_or(true),
            euler_at_final: config.euler_at_final.unwrap_or(false),
            final_sigmas_type,
            history: vec![None; order],
            lower_order_nums: 0,
            step_index: None,
        })
    }

    /// The x0 prediction at step `i`: diffusers' `convert_model_output` for dpmsolver++.
    fn convert_model_output(
        &self,
        out: ArrayView4<f32>,
        x: ArrayView4<f32>,
        i: usize,
    ) -> Array4<f32> {
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[i]);
        match self.prediction_type {
            PredictionType::Epsilon => Zip::from(x)
                .and(out)
                .map_collect(|&s, &e| (s - sigma_t * e) / alpha_t),
            PredictionType::Sample => out.to_owned(),
            PredictionType::VPrediction => Zip::from(x)
                .and(out)
                .map_collect(|&s, &v| alpha_t * s - sigma_t * v),
        }
    }

    /// `dpm_solver_first_order_update` (DDIM in λ time):
    /// x_t = (σ_t/σ_s)·x − α_t(e^{−h} − 1)·x0.
    fn first_order(&self, i: usize, m0: &Array4<f32>, x: ArrayView4<f32>) -> Array4<f32> {
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[i + 1]);
        let (alpha_s, sigma_s) = alpha_sigma(self.sigmas[i]);
        let h = lambda(alpha_t, sigma_t) - lambda(alpha_s, sigma_s);
        let c_x = sigma_t / sigma_s;
        let c_d0 = alpha_t * ((-h).exp() - 1.0);
        Zip::from(x)
            .and(m0)
            .map_collect(|&s, &d0| c_x * s - c_d0 * d0)
    }

    /// `multistep_dpm_solver_second_order_update` for dpmsolver++ (midpoint or Heun).
    fn second_order(&self, i: usize, x: ArrayView4<f32>) -> Array4<f32> {
        let m0 = self.history[self.order - 1].as_ref().expect("current x0");
        let m1 = self.history[self.order - 2].as_ref().expect("previous x0");
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[i + 1]);
        let (alpha_s0, sigma_s0) = alpha_sigma(self.sigmas[i]);
        let (alpha_s1, sigma_s1) = alpha_sigma(self.sigmas[i - 1]);
        let (lambda_t, lambda_s0, lambda_s1) = (
            lambda(alpha_t, sigma_t),
            lambda(alpha_s0, sigma_s0),
            lambda(alpha_s1, sigma_s1),
        );
        let (h, h_0) = (lambda_t - lambda_s0, lambda_s0 - lambda_s1);
        let r0 = h_0 / h;
        let inv_r0 = 1.0 / r0;
        let em1 = (-h).exp() - 1.0;
        let c_x = sigma_t / sigma_s0;
        let c_d0 = alpha_t * em1;
        let mut out = Array4::zeros(x.raw_dim());
        match self.solver_type {
            SolverType::Midpoint => {
                let c_d1 = 0.5 * (alpha_t * em1);
                Zip::from(&mut out)
                    .and(x)
                    .and(m0)
                    .and(m1)
                    .for_each(|o, &s, &a, &b| {
                        let d1 = inv_r0 * (a - b);
                        *o = c_x * s - c_d0 * a - c_d1 * d1;
                    });
            }
            SolverType::Heun => {
                let c_d1 = alpha_t * (em1 / h + 1.0);
                Zip::from(&mut out)
                    .and(x)
                    .and(m0)
                    .and(m1)
                    .for_each(|o, &s, &a, &b| {
                        let d1 = inv_r0 * (a - b);
                        *o = c_x * s - c_d0 * a + c_d1 * d1;
                    });
            }
        }
        out
    }

    /// `multistep_dpm_solver_third_order_update` for dpmsolver++.
    fn third_order(&self, i: usize, x: ArrayView4<f32>) -> Array4<f32> {
        let m0 = self.history[self.order - 1].as_ref().expect("current x0");
        let m1 = self.history[self.order - 2].as_ref().expect("previous x0");
        let m2 = self.history[self.order - 3]
            .as_ref()
            .expect("x0 before that");
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[i + 1]);
        let (alpha_s0, sigma_s0) = alpha_sigma(self.sigmas[i]);
        let (alpha_s1, sigma_s1) = alpha_sigma(self.sigmas[i - 1]);
        let (alpha_s2, sigma_s2) = alpha_sigma(self.sigmas[i - 2]);
        let lambda_t = lambda(alpha_t, sigma_t);
        let lambda_s0 = lambda(alpha_s0, sigma_s0);
        let lambda_s1 = lambda(alpha_s1, sigma_s1);
        let lambda_s2 = lambda(alpha_s2, sigma_s2);
        let (h, h_0, h_1) = (
            lambda_t - lambda_s0,
            lambda_s0 - lambda_s1,
            lambda_s1 - lambda_s2,
        );
        let (r0, r1) = (h_0 / h, h_1 / h);
        let (inv_r0, inv_r1) = (1.0 / r0, 1.0 / r1);
        let c_blend = r0 / (r0 + r1);
        let inv_sum = 1.0 / (r0 + r1);
        let em1 = (-h).exp() - 1.0;
        let c_x = sigma_t / sigma_s0;
        let c_d0 = alpha_t * em1;
        let c_d1 = alpha_t * (em1 / h + 1.0);
        let c_d2 = alpha_t * (((-h).exp() - 1.0 + h) / (h * h) - 0.5);
        let mut out = Array4::zeros(x.raw_dim());
        Zip::from(&mut out)
            .and(x)
            .and(m0)
            .and(m1)
            .and(m2)
            .for_each(|o, &s, &a, &b, &c| {
                let d1_0 = inv_r0 * (a - b);
                let d1_1 = inv_r1 * (b - c);
                let d1 = d1_0 + c_blend * (d1_0 - d1_1);
                let d2 = inv_sum * (d1_0 - d1_1);
                *o = c_x * s - c_d0 * a + c_d1 * d1 - c_d2 * d2;
            });
        out
    }
}

impl Scheduler for DpmSolverPp {
    fn timesteps(&self) -> &[i64] {
        &self.timesteps
    }

    /// Mirrors `DPMSolverMultistepScheduler.step`: convert the output to x0, push it on the
    /// history, and take the highest-order update the history allows; the last step (and, for
    /// short runs, the one before it) lowers the order as `lower_order_final` /
    /// `final_sigmas_type="zero"` ask. Deterministic: never draws noise.
    fn step(
        &mut self,
        eps: ArrayView4<f32>,
        t: i64,
        x: ArrayView4<f32>,
        _noise: &mut dyn NoiseSource,
    ) -> StepOutput {
        let n = self.timesteps.len();
        let i = *self
            .step_index
            .get_or_insert_with(|| index_for_timestep(&self.timesteps, t, n - 1));
        let lower_order_final = i == n - 1
            && (self.euler_at_final
                || (self.lower_order_final && n < 15)
                || self.final_sigmas_type == FinalSigmasType::Zero);
        let lower_order_second = i + 2 == n && self.lower_order_final && n < 15;

        let x0 = self.convert_model_output(eps, x, i);
        self.history.rotate_left(1);
        self.history[self.order - 1] = Some(x0.clone());

        let prev = if self.order == 1 || self.lower_order_nums < 1 || lower_order_final {
            self.first_order(i, &x0, x)
        } else if self.order == 2 || self.lower_order_nums < 2 || lower_order_second {
            self.second_order(i, x)
        } else {
            self.third_order(i, x)
        };
        if self.lower_order_nums < self.order {
            self.lower_order_nums += 1;
        }
        self.step_index = Some(i + 1);
        StepOutput {
            prev_sample: prev,
            denoised: Some(x0),
        }
    }
}

#[cfg(test)]
impl DpmSolverPp {
    /// σ at each step, then the final σ (length steps + 1).
    pub(crate) fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }
}
