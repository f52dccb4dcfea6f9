//! DDIM (Song et al. 2021): the non-Markovian sampler, deterministic at η = 0.
//! Mirrors diffusers' `DDIMScheduler` (`scheduling_ddim.py`).

use eyre::Result;
use ndarray::{ArrayView4, Zip};

use super::ddpm::predict_x0;
use super::{
    LINEAR_DEFAULTS, PredictionType, Scheduler, SchedulerConfig, SchedulerKind, SchedulerOptions,
    StepOutput, TimestepSpacing, TrainTable, check_max_steps, clip, draw, integer_timesteps,
};
use crate::rng::NoiseSource;

/// DDIM for one run.
pub(crate) struct Ddim {
    table: TrainTable,
    timesteps: Vec<i64>,
    /// The requested step count (DDIM steps back by T / steps whatever the spacing).
    steps: usize,
    prediction_type: PredictionType,
    /// `Some(range)` when the x0 prediction is clamped to ±range.
    clip_range: Option<f64>,
    /// ᾱ after the last step: 1 with `set_alpha_to_one`, else ᾱ_0.
    final_alpha_cumprod: f32,
    /// η: 0 deterministic, 1 DDPM-like.
    eta: f32,
}

impl Ddim {
    /// `DDIMScheduler.from_config(config)` then `set_timesteps(steps)`; `options.eta` is the
    /// η that StableDiffusionPipeline passes to `step`.
    pub(crate) fn new(
        config: &SchedulerConfig,
        steps: usize,
        options: &SchedulerOptions,
    ) -> Result<Self> {
        let kind = SchedulerKind::Ddim;
        let table = TrainTable::new(config, LINEAR_DEFAULTS)?;
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
        let final_alpha_cumprod = if config.set_alpha_to_one.unwrap_or(true) {
            1.0
        } else {
            table.alphas_cumprod[0]
        };
        Ok(Ddim {
            table,
            timesteps,
            steps,
            prediction_type: config.prediction_type.unwrap_or(PredictionType::Epsilon),
            clip_range: config
                .clip_sample
                .unwrap_or(true)
                .then(|| config.clip_sample_range.unwrap_or(1.0)),
            final_alpha_cumprod,
            eta: options.eta,
        })
    }
}

impl Scheduler for Ddim {
    fn timesteps(&self) -> &[i64] {
        &self.timesteps
    }

    /// Mirrors `DDIMScheduler.step` (formula (12) of the DDIM paper): x0 and ε from the
    /// prediction, then x_{t−1} = √ᾱ_prev·x0 + √(1 − ᾱ_prev − σ²)·ε (+ σ·noise when η > 0,
    /// one draw per step).
    fn step(
        &mut self,
        eps: ArrayView4<f32>,
        t: i64,
        x: ArrayView4<f32>,
        noise: &mut dyn NoiseSource,
    ) -> StepOutput {
        // Always T / steps back, even when the spacing is not `leading`.
        let prev_t = t - (self.table.num_train_timesteps / self.steps) as i64;
        let alpha_prod_t = self.table.alpha_at(t);
        let alpha_prod_t_prev = if prev_t >= 0 {
            self.table.alpha_at(prev_t)
        } else {
            self.final_alpha_cumprod
        };
        let beta_prod_t = 1.0 - alpha_prod_t;
        let (sa, sb) = (alpha_prod_t.sqrt(), beta_prod_t.sqrt());

        let mut x0 = predict_x0(self.prediction_type, alpha_prod_t, eps, x);
        let pred_eps = match self.prediction_type {
            PredictionType::Epsilon => eps.to_owned(),
            PredictionType::Sample => Zip::from(x)
                .and(&x0)
                .map_collect(|&s, &p| (s - sa * p) / sb),
            PredictionType::VPrediction => {
                Zip::from(eps).and(x).map_collect(|&v, &s| sa * v + sb * s)
            }
        };
        if let Some(range) = self.clip_range {
            clip(&mut x0, range);
        }

        // `_get_variance`, then σ_t = η·√variance.
        let beta_prod_t_prev = 1.0 - alpha_prod_t_prev;
        let variance = (beta_prod_t_prev / beta_prod_t) * (1.0 - alpha_prod_t / alpha_prod_t_prev);
        let std_dev_t = self.eta * variance.sqrt();

        let dir_coeff = (1.0 - alpha_prod_t_prev - std_dev_t * std_dev_t).sqrt();
        let x0_coeff = alpha_prod_t_prev.sqrt();
        let mut prev = Zip::from(&x0)
            .and(&pred_eps)
            .map_collect(|&p, &e| x0_coeff * p + dir_coeff * e);
        if self.eta > 0.0 {
            let z = draw(noise, x);
            Zip::from(&mut prev)
                .and(&z)
                .for_each(|p, &n| *p += std_dev_t * n);
        }
        StepOutput {
            prev_sample: prev,
            denoised: Some(x0),
        }
    }
}
