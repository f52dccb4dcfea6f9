//! Diffusion schedulers that reproduce Hugging Face diffusers, one file each.

use ndarray::{Array4, ArrayView4};

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
    /// Standard deviation of the initial noise; latents are `randn × init_noise_sigma`.
    fn init_noise_sigma(&self) -> f32;
    /// The UNet input for timestep `t` (identity for DDPM/DDIM/DPM-Solver++/LCM).
    fn scale_model_input(&self, x: ArrayView4<f32>, t: i64) -> Array4<f32>;
    /// One step from `x` at `t` given the (guided) UNet output `eps`; stochastic schedulers
    /// draw their noise from `noise`, never from a hidden generator.
    fn step(
        &mut self,
        eps: ArrayView4<f32>,
        t: i64,
        x: ArrayView4<f32>,
        noise: &mut dyn NoiseSource,
    ) -> StepOutput;
}
// TEMPSTUB
#[derive(Debug, Clone, Copy)]
pub enum SchedulerKind {
    Ddpm,
    DpmSolverPp,
    Lcm,
}
impl std::str::FromStr for SchedulerKind {
    type Err = String;
    fn from_str(_s: &str) -> Result<Self, String> {
        Ok(Self::Ddpm)
    }
}
impl std::fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ddpm")
    }
}
#[derive(Debug, Clone, serde::Deserialize)]
pub struct SchedulerConfig {}
#[derive(Debug, Clone, Default)]
pub struct SchedulerOptions {
    pub solver_order: usize,
    pub use_karras_sigmas: bool,
}
pub fn build(
    _k: SchedulerKind,
    _c: &SchedulerConfig,
    _s: usize,
    _o: &SchedulerOptions,
) -> color_eyre::Result<Box<dyn Scheduler>> {
    todo!()
}
