//! DDPM (Ho et al. 2020): ancestral sampling with the posterior mean and a fixed variance.
//! Mirrors diffusers' `DDPMScheduler` (`scheduling_ddpm.py`).

use eyre::{Result, bail};
use ndarray::{Array4, ArrayView4, Zip};

use super::{
    LINEAR_DEFAULTS, PredictionType, Scheduler, SchedulerConfig, SchedulerKind, SchedulerOptions,
    StepOutput, TimestepSpacing, TrainTable, VarianceType, check_max_steps, clip, draw,
    integer_timesteps,
};
use crate::rng::NoiseSource;

/// DDPM for one run.
pub(crate) struct Ddpm {
    table: TrainTable,
    timesteps: Vec<i64>,
    prediction_type: PredictionType,
    variance_type: VarianceType,
    /// `Some(range)` when the x0 prediction is clamped to ±range.
    clip_range: Option<f64>,
}

impl Ddpm {
    /// `DDPMScheduler.from_config(config)` then `set_timesteps(steps)`.
    pub(crate) fn new(
        config: &SchedulerConfig,
        steps: usize,
        options: &SchedulerOptions,
    ) -> Result<Self> {
        let kind = SchedulerKind::Ddpm;
        let table = TrainTable::new(config, LINEAR_DEFAULTS)?;
        let variance_type = config.variance_type.unwrap_or(VarianceType::FixedSmall);
        if !matches!(
            variance_type,
            VarianceType::FixedSmall | VarianceType::FixedSmallLog | VarianceType::FixedLarge
        ) {
            bail!(
                "ddpm does not implement `variance_type` {:?}; use fixed_small, fixed_small_log or fixed_large",
                variance_type.as_str()
            );
        }
        check_max_steps(kind, steps, table.num_train_timesteps)?;
        let spacing = options
            .timestep_spacing
            .or(config.timestep_spacing)
            .unwrap_or(TimestepSpacing::Leading);
        let timesteps = integer_timesteps(
            kind,
            spacing,
            table.num_train_timesteps,
            steps,
            config.steps_offset.unwrap_or(0),
        )?;
        Ok(Ddpm {
            table,
            timesteps,
            prediction_type: config.prediction_type.unwrap_or(PredictionType::Epsilon),
            variance_type,
            clip_range: config
                .clip_sample
                .unwrap_or(true)
                .then(|| config.clip_sample_range.unwrap_or(1.0)),
        })
    }

    /// The timestep after `t` in this schedule, −1 after the last: diffusers'
    /// `previous_timestep` (it looks the next entry up rather than subtracting a ratio).
    fn previous_timestep(&self, t: i64) -> i64 {
        match self.timesteps.iter().position(|&s| s == t) {
            Some(i) if i + 1 < self.timesteps.len() => self.timesteps[i + 1],
            _ => -1,
        }
    }
}

impl Scheduler for Ddpm {
    fn timesteps(&self) -> &[i64] {
        &self.timesteps
    }

    /// Mirrors `DDPMScheduler.step`: x0 from the prediction, the posterior mean
    /// μ = c_x0·x0 + c_x·x_t, plus √variance · noise for t > 0 (one draw, none at t = 0).
    fn step(
        &mut self,
        eps: ArrayView4<f32>,
        t: i64,
        x: ArrayView4<f32>,
        noise: &mut dyn NoiseSource,
    ) -> StepOutput {
        let prev_t = self.previous_timestep(t);
        let alpha_prod_t = self.table.alpha_at(t);
        let alpha_prod_t_prev = if prev_t >= 0 {
            self.table.alpha_at(prev_t)
        } else {
            1.0
        };
        let beta_prod_t = 1.0 - alpha_prod_t;
        let beta_prod_t_prev = 1.0 - alpha_prod_t_prev;
        let current_alpha_t = alpha_prod_t / alpha_prod_t_prev;
        let current_beta_t = 1.0 - current_alpha_t;

        let mut x0 = predict_x0(self.prediction_type, alpha_prod_t, eps, x);
        if let Some(range) = self.clip_range {
            clip(&mut x0, range);
        }

        // Formula (7) of the DDPM paper.
        let x0_coeff = alpha_prod_t_prev.sqrt() * current_beta_t / beta_prod_t;
        let x_coeff = current_alpha_t.sqrt() * beta_prod_t_prev / beta_prod_t;
        let mut prev = Zip::from(&x0)
            .and(x)
            .map_collect(|&p, &s| x0_coeff * p + x_coeff * s);

        if t > 0 {
            let z = draw(noise, x);
            let scale = self.noise_scale(alpha_prod_t, alpha_prod_t_prev);
            Zip::from(&mut prev)
                .and(&z)
                .for_each(|p, &n| *p += scale * n);
        }
        StepOutput {
            prev_sample: prev,
            denoised: Some(x0),
        }
    }
}

impl Ddpm {
    /// The factor on the unit noise: diffusers' `_get_variance` (clamped at 1e-20) then its
    /// square root, or exp(½ log) for `fixed_small_log`, or √β_t for `fixed_large`.
    fn noise_scale(&self, alpha_prod_t: f32, alpha_prod_t_prev: f32) -> f32 {
        let current_beta_t = 1.0 - alpha_prod_t / alpha_prod_t_prev;
        let variance =
            ((1.0 - alpha_prod_t_prev) / (1.0 - alpha_prod_t) * current_beta_t).max(1e-20);
        match self.variance_type {
            VarianceType::FixedSmallLog => (0.5 * variance.ln()).exp(),
            VarianceType::FixedLarge => current_beta_t.sqrt(),
            _ => variance.sqrt(),
        }
    }
}

/// x0 from the UNet output in the DDPM parametrisation x_t = √ᾱ x0 + √(1−ᾱ) ε (step 2 of
/// diffusers' DDPM/DDIM/LCM `step`).
pub(super) fn predict_x0(
    prediction_type: PredictionType,
    alpha_prod_t: f32,
    out: ArrayView4<f32>,
    x: ArrayView4<f32>,
) -> Array4<f32> {
    let beta_prod_t = 1.0 - alpha_prod_t;
    let (sa, sb) = (alpha_prod_t.sqrt(), beta_prod_t.sqrt());
    match prediction_type {
        PredictionType::Epsilon => Zip::from(x)
            .and(out)
            .map_collect(|&s, &e| (s - sb * e) / sa),
        PredictionType::Sample => out.to_owned(),
        PredictionType::VPrediction => Zip::from(x).and(out).map_collect(|&s, &v| sa * s - sb * v),
    }
}
