//! Seeded noise that means what the same seed means in PyTorch.
//!
//! A run owns one [`NoiseSource`] and draws from it in diffusers' order: the initial latents
//! first, then each stochastic scheduler step's noise (DDPM, LCM, Euler ancestral), same shape.

use ndarray::Array4;

/// A stream of standard-normal draws, one call per `torch.randn` a diffusers run would make.
pub trait NoiseSource: Send {
    /// The next draw: standard normal float32 noise of `shape` (NCHW), filled in C order.
    fn randn(&mut self, shape: [usize; 4]) -> Array4<f32>;
}
