//! Euler ancestral: an Euler step down to σ_down, then fresh noise of scale σ_up, so every
//! step is stochastic. Mirrors diffusers' `EulerAncestralDiscreteScheduler`
//! (`scheduling_euler_ancestral_discrete.py`).

use eyre::Result;
use ndarray::{Array4, ArrayView4, Zip};

use super::euler::{SigmaSchedule, predict_x0, scale_by_sigma};
use super::{
    PredictionType, Scheduler, SchedulerConfig, SchedulerKind, SchedulerOptions, StepOutput, draw,
    index_for_timestep, unsupported_prediction,
};
use crate::rng::NoiseSource;

/// Euler ancestral for one run.
pub(crate) struct EulerAncestral {
    schedule: SigmaSchedule,
    /// σ per step, then 0 (length steps + 1), float32.
    sigmas: Vec<f32>,
    step_index: Option<usize>,
}

impl EulerAncestral {
    /// `EulerAncestralDiscreteScheduler.from_config(config)` then `set_timesteps(steps)`.
    pub(crate) fn new(
        config: &SchedulerConfig,
        steps: usize,
        options: &SchedulerOptions,
    ) -> Result<Self> {
        let kind = SchedulerKind::EulerAncestral;
        let schedule = SigmaSchedule::new(kind, config, steps, options)?;
        if schedule.prediction_type == PredictionType::Sample {
            return Err(unsupported_prediction(kind, PredictionType::Sample));
        }
        let sigmas = schedule
            .sigmas
            .iter()
            .chain([&0.0])
            .map(|&s| s as f32)
            .collect();
        Ok(EulerAncestral {
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

impl Scheduler for EulerAncestral {
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

    /// Mirrors `EulerAncestralDiscreteScheduler.step`: σ_up = √(σ_to²(σ_from² − σ_to²)/σ_from²),
    /// σ_down = √(σ_to² − σ_up²), an Euler step to σ_down, then + σ_up · noise (one draw every
    /// step, the last included, where σ_up = 0).
    fn step(
        &mut self,
        eps: ArrayView4<f32>,
        t: i64,
        x: ArrayView4<f32>,
        noise: &mut dyn NoiseSource,
    ) -> StepOutput {
        let i = self.index(t);
        let sigma = self.sigmas[i];
        let x0 = predict_x0(self.schedule.prediction_type, sigma, eps, x);
        let (from, to) = (sigma, self.sigmas[i + 1]);
        let sigma_up = (to * to * (from * from - to * to) / (from * from)).sqrt();
        let sigma_down = (to * to - sigma_up * sigma_up).sqrt();
        let dt = sigma_down - sigma;
        let mut prev = Zip::from(x)
            .and(&x0)
            .map_collect(|&s, &p| s + ((s - p) / sigma) * dt);
        let z = draw(noise, x);
        Zip::from(&mut prev)
            .and(&z)
            .for_each(|p, &n| *p += n * sigma_up);
        self.step_index = Some(i + 1);
        StepOutput {
            prev_sample: prev,
            denoised: Some(x0),
        }
    }
}

#[cfg(test)]
impl EulerAncestral {
    /// σ at each step, then 0 (length steps + 1).
    pub(crate) fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }
}
