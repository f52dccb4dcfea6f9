//! Euler (Karras et al. 2022, Algorithm 2 without churn): the probability-flow ODE in sigma
//! space, x = x0 + σ·ε. Mirrors diffusers' `EulerDiscreteScheduler`
//! (`scheduling_euler_discrete.py`).

use eyre::{Result, bail};
use ndarray::{Array4, ArrayView4, Zip};

use super::{
    FinalSigmasType, InterpolationType, LINEAR_DEFAULTS, PredictionType, Scheduler,
    SchedulerConfig, SchedulerKind, SchedulerOptions, StepOutput, TimestepSpacing, TimestepType,
    TrainTable, index_for_timestep, np_interp_unit_grid, spaced_timesteps,
};
use crate::rng::NoiseSource;

/// The schedule Euler and Euler ancestral share.
pub(super) struct SigmaSchedule {
    /// Timesteps as diffusers keeps them: float32, fractional under `linspace`.
    pub timesteps_f32: Vec<f32>,
    /// The same, truncated toward zero.
    pub timesteps: Vec<i64>,
    /// σ at each timestep (float64 `np.interp` of the training sigmas), before the final one.
    pub sigmas: Vec<f64>,
    /// The training sigmas, float32.
    pub train_sigmas: Vec<f32>,
    pub spacing: TimestepSpacing,
    pub prediction_type: PredictionType,
}

impl SigmaSchedule {
    /// The timesteps and sigmas of diffusers' Euler/Euler ancestral `set_timesteps`:
    /// float32 timesteps by spacing (`linspace` unrounded, default), σ by linear interpolation.
    pub(super) fn new(
        kind: SchedulerKind,
        config: &SchedulerConfig,
        steps: usize,
        options: &SchedulerOptions,
    ) -> Result<Self> {
        let table = TrainTable::new(config, LINEAR_DEFAULTS)?;
        let prediction_type = config.prediction_type.unwrap_or(PredictionType::Epsilon);
        let spacing = options
            .timestep_spacing
            .or(config.timestep_spacing)
            .unwrap_or(TimestepSpacing::Linspace);
        let timesteps_f32: Vec<f32> = spaced_timesteps(
            spacing,
            table.num_train_timesteps,
            steps,
            config.steps_offset.unwrap_or(0),
        )
        .into_iter()
        .map(|t| t as f32)
        .collect();
        let train_sigmas = table.sigmas();
        let sigmas = timesteps_f32
            .iter()
            .map(|&t| np_interp_unit_grid(f64::from(t), &train_sigmas))
            .collect();
        if kind == SchedulerKind::Euler {
            if config.interpolation_type == Some(InterpolationType::LogLinear) {
                bail!(
                    "euler: `interpolation_type` \"log_linear\" is not implemented; use \"linear\""
                );
            }
            if config.timestep_type == Some(TimestepType::Continuous)
                && prediction_type == PredictionType::VPrediction
            {
                bail!(
                    "euler: continuous timesteps for v-prediction are not implemented; use `timestep_type` \"discrete\""
                );
            }
            if config.use_karras_sigmas == Some(true) {
                bail!(
                    "euler with `use_karras_sigmas` is not implemented (its fractional Karras \
                     timesteps depend on numpy's float32 log, which speedscape cannot match bit \
                     for bit); use dpmpp for Karras sigmas or set it to false"
                );
            }
        }
        Ok(SigmaSchedule {
            timesteps: timesteps_f32.iter().map(|&t| t as i64).collect(),
            timesteps_f32,
            sigmas,
            train_sigmas,
            spacing,
            prediction_type,
        })
    }

    /// σ_max for `linspace`/`trailing`, √(σ_max² + 1) for `leading`: diffusers'
    /// `init_noise_sigma` property.
    pub(super) fn init_noise_sigma(&self, sigmas: &[f32]) -> f32 {
        let max = sigmas.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        match self.spacing {
            TimestepSpacing::Linspace | TimestepSpacing::Trailing => max,
            TimestepSpacing::Leading => (max * max + 1.0).sqrt(),
        }
    }
}

/// x / √(σ² + 1): diffusers' Euler `scale_model_input`.
pub(super) fn scale_by_sigma(x: ArrayView4<f32>, sigma: f32) -> Array4<f32> {
    let s = (sigma * sigma + 1.0).sqrt();
    x.mapv(|v| v / s)
}

/// x0 from the UNet output in sigma space (x = x0 + σ ε), float32 as diffusers computes it.
pub(super) fn predict_x0(
    prediction_type: PredictionType,
    sigma: f32,
    out: ArrayView4<f32>,
    x: ArrayView4<f32>,
) -> Array4<f32> {
    match prediction_type {
        PredictionType::Epsilon => Zip::from(x).and(out).map_collect(|&s, &e| s - sigma * e),
        PredictionType::Sample => out.to_owned(),
        PredictionType::VPrediction => {
            let c_out = -sigma / (sigma * sigma + 1.0).sqrt();
            let c_in = sigma * sigma + 1.0;
            Zip::from(out)
                .and(x)
                .map_collect(|&v, &s| v * c_out + s / c_in)
        }
    }
}

/// Euler for one run.
pub(crate) struct Euler {
    schedule: SigmaSchedule,
    /// σ per step plus the final σ (0 or σ_min), float32.
    sigmas: Vec<f32>,
    step_index: Option<usize>,
}

impl Euler {
    /// `EulerDiscreteScheduler.from_config(config)` then `set_timesteps(steps)`.
    pub(crate) fn new(
        config: &SchedulerConfig,
        steps: usize,
        options: &SchedulerOptions,
    ) -> Result<Self> {
        let schedule = SigmaSchedule::new(SchedulerKind::Euler, config, steps, options)?;
        let last = match config.final_sigmas_type.unwrap_or(FinalSigmasType::Zero) {
            FinalSigmasType::Zero => 0.0,
            FinalSigmasType::SigmaMin => f64::from(schedule.train_sigmas[0]),
        };
        let sigmas = schedule
            .sigmas
            .iter()
            .chain([&last])
            .map(|&s| s as f32)
            .collect();
        Ok(Euler {
            schedule,
            sigmas,
            step_index: None,
        })
    }

    fn index(&self, t: i64) -> usize {
        self.step_index
            .unwrap_or_else(|| index_for_timestep(&self.schedule.timesteps, t, 0))
    }
}

impl Scheduler for Euler {
    fn timesteps(&self) -> &[i64] {
        &self.schedule.timesteps
    }

    fn model_timesteps(&self) -> Vec<f32> {
        self.schedule.timesteps_f32.clone()
    }

    fn init_noise_sigma(&self) -> f32 {
        self.schedule.init_noise_sigma(&self.sigmas)
    }

    fn scale_model_input(&self, x: ArrayView4<f32>, t: i64) -> Array4<f32> {
        scale_by_sigma(x, self.sigmas[self.index(t)])
    }

    /// Mirrors `EulerDiscreteScheduler.step` with diffusers' defaults (no churn, so no noise):
    /// x0 = x − σ·ε, d = (x − x0)/σ, x_next = x + d·(σ_next − σ).
    fn step(
        &mut self,
        eps: ArrayView4<f32>,
        t: i64,
        x: ArrayView4<f32>,
        _noise: &mut dyn NoiseSource,
    ) -> StepOutput {
        let i = self.index(t);
        let sigma = self.sigmas[i];
        let x0 = predict_x0(self.schedule.prediction_type, sigma, eps, x);
        let dt = self.sigmas[i + 1] - sigma;
        let prev = Zip::from(x)
            .and(&x0)
            .map_collect(|&s, &p| s + ((s - p) / sigma) * dt);
        self.step_index = Some(i + 1);
        StepOutput {
            prev_sample: prev,
            denoised: Some(x0),
        }
    }
}

#[cfg(test)]
impl Euler {
    /// σ at each step, then the final σ (length steps + 1).
    pub(crate) fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }
}
