//! Latent Consistency Models (Luo et al. 2023): multistep consistency sampling, 1–8 steps.
//! Mirrors diffusers' `LCMScheduler` (`scheduling_lcm.py`).

use eyre::{Result, bail};
use ndarray::{ArrayView4, Zip};

use super::ddpm::predict_x0;
use super::{
    BetaDefaults, BetaSchedule, PredictionType, Scheduler, SchedulerConfig, SchedulerKind,
    StepOutput, TrainTable, check_max_steps, clip, draw, index_for_timestep, np_linspace_open,
};
use crate::error::Fixable;
use crate::rng::NoiseSource;

/// LCM's own beta defaults (those of SD v1.5).
pub(super) const BETA_DEFAULTS: BetaDefaults = BetaDefaults {
    beta_start: 0.00085,
    beta_end: 0.012,
    schedule: BetaSchedule::ScaledLinear,
};

/// LCM for one run.
pub(crate) struct Lcm {
    table: TrainTable,
    timesteps: Vec<i64>,
    prediction_type: PredictionType,
    /// `Some(range)` when the x0 prediction is clamped to ±range.
    clip_range: Option<f64>,
    timestep_scaling: f32,
    /// Index of the next step; set from the first `t` seen.
    step_index: Option<usize>,
}

impl Lcm {
    /// `LCMScheduler.from_config(config)` then `set_timesteps(steps)`. LCM ignores
    /// `timestep_spacing` and `steps_offset`: its timesteps are a subset of the
    /// `original_inference_steps`-step distillation schedule [T/n − 1, 2T/n − 1, …, T − 1].
    pub(crate) fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        let kind = SchedulerKind::Lcm;
        let table = TrainTable::new(config, BETA_DEFAULTS)?;
        let t_train = table.num_train_timesteps;
        let original = config.original_inference_steps.unwrap_or(50);
        if original == 0 || original > t_train {
            bail!(
                "lcm: `original_inference_steps` = {original} must be between 1 and \
                 `num_train_timesteps` = {t_train}; fix the scheduler config"
            );
        }
        check_max_steps(kind, steps, t_train)?;
        if steps > original {
            bail!(Fixable::new(
                format!(
                    "lcm cannot run {steps} steps: its timesteps are a subset of the \
                     {original}-step schedule it was distilled on (`original_inference_steps`), and \
                     diffusers' LCMScheduler refuses more"
                ),
                format!("use at most {original} steps (LCM is meant for 1–8)"),
            ));
        }
        // [k−1, 2k−1, …, original·k − 1], largest first.
        let k = t_train / original;
        let origin: Vec<i64> = (1..=original).rev().map(|i| (i * k) as i64 - 1).collect();
        let timesteps = np_linspace_open(origin.len() as f64, steps)
            .into_iter()
            .map(|v| origin[v.floor() as usize])
            .collect();
        Ok(Lcm {
            table,
            timesteps,
            prediction_type: config.prediction_type.unwrap_or(PredictionType::Epsilon),
            clip_range: config
                .clip_sample
                .unwrap_or(false)
                .then(|| config.clip_sample_range.unwrap_or(1.0)),
            timestep_scaling: config.timestep_scaling.unwrap_or(10.0) as f32,
            step_index: None,
        })
    }
}

/// The consistency-model boundary conditions (c_skip, c_out) at timestep `t`, σ_data = 0.5,
/// in float32: diffusers' `get_scalings_for_boundary_condition_discrete`.
pub(crate) fn boundary_condition_scalings(t: i64, timestep_scaling: f32) -> (f32, f32) {
    let sigma_data_sq = 0.25f32;
    let scaled = t as f32 * timestep_scaling;
    let denom = scaled * scaled + sigma_data_sq;
    let c_skip = (1.0 / denom) * sigma_data_sq;
    let c_out = scaled / denom.sqrt();
    (c_skip, c_out)
}

impl Scheduler for Lcm {
    fn timesteps(&self) -> &[i64] {
        &self.timesteps
    }

    /// Mirrors `LCMScheduler.step`: x0 from the prediction, denoised = c_out·x0 + c_skip·x_t,
    /// then (every step but the last) re-noise to the next timestep with one fresh draw:
    /// x_prev = √ᾱ_prev·denoised + √(1 − ᾱ_prev)·noise. At the last step x_prev = denoised.
    fn step(
        &mut self,
        eps: ArrayView4<f32>,
        t: i64,
        x: ArrayView4<f32>,
        noise: &mut dyn NoiseSource,
    ) -> StepOutput {
        let i = *self
            .step_index
            .get_or_insert_with(|| index_for_timestep(&self.timesteps, t, 0));
        let prev_t = self.timesteps.get(i + 1).copied().unwrap_or(t);
        let alpha_prod_t = self.table.alpha_at(t);
        let alpha_prod_t_prev = self.table.alpha_at(prev_t);
        let beta_prod_t_prev = 1.0 - alpha_prod_t_prev;
        let (c_skip, c_out) = boundary_condition_scalings(t, self.timestep_scaling);

        let mut x0 = predict_x0(self.prediction_type, alpha_prod_t, eps, x);
        if let Some(range) = self.clip_range {
            clip(&mut x0, range);
        }
        let denoised = Zip::from(&x0)
            .and(x)
            .map_collect(|&p, &s| c_out * p + c_skip * s);

        let prev = if i + 1 != self.timesteps.len() {
            let z = draw(noise, x);
            let (a, b) = (alpha_prod_t_prev.sqrt(), beta_prod_t_prev.sqrt());
            Zip::from(&denoised)
                .and(&z)
                .map_collect(|&d, &n| a * d + b * n)
        } else {
            denoised.clone()
        };
        self.step_index = Some(i + 1);
        StepOutput {
            prev_sample: prev,
            denoised: Some(denoised),
        }
    }
}
