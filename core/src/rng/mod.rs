//! Seeded noise that means what the same seed means in PyTorch.
//!
//! A run owns one [`NoiseSource`] and draws from it in diffusers' order: the initial latents
//! first, then each stochastic scheduler step's noise (DDPM, LCM, Euler ancestral), same shape.
//!
//! [`TorchCpu`] is `torch.randn` on a CPU generator, bit-exact with the x86-64 (AVX2/AVX512)
//! kernel of torch 2.15. [`TorchCuda`] is `torch.randn` on a CUDA generator (Philox4x32-10),
//! computed on the host: exact stream, layout and offsets, values within 1.3e-6 of the GPU's (its
//! sine comes from the GPU's special-function unit; see the module). [`RngSource`] names the
//! sources for the CLI and config.

mod avx2_math;
mod mt19937;
mod torch_cpu;
mod torch_cuda;

use std::fmt;
use std::str::FromStr;

use ndarray::Array4;
use serde::{Deserialize, Serialize};

pub use torch_cpu::{CpuKernel, TorchCpu};
pub use torch_cuda::{CudaLaunch, TorchCuda};

/// A stream of standard-normal draws, one call per `torch.randn` a diffusers run would make.
pub trait NoiseSource: Send {
    /// The next draw: standard normal float32 noise of `shape` (NCHW), filled in C order.
    fn randn(&mut self, shape: [usize; 4]) -> Array4<f32>;

    /// The next draw as a flat vector of `len` elements, for shapes that are not NCHW.
    ///
    /// Must equal `randn` of any shape with `len` elements, flattened in C order; the default
    /// asks `randn` for shape `[1, 1, 1, len]`, which is right for sources (like all of
    /// PyTorch's) whose draws depend only on the element count.
    fn randn_vec(&mut self, len: usize) -> Vec<f32> {
        self.randn([1, 1, 1, len]).iter().copied().collect()
    }
}

/// Which generator's `torch.randn` a seed means. CLI and config spelling in kebab case.
///
/// To see a notebook's image for its seed, pick the generator the notebook seeded:
/// `torch.Generator("cuda")` (the course's) → `torch-cuda`, `torch.Generator("cpu")` or
/// `torch.manual_seed` on a CPU → `torch-cpu`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RngSource {
    /// `torch.Generator("cpu")`, diffusers' usual choice for reproducible seeds; see
    /// [`TorchCpu`] (x86-64 kernel).
    TorchCpu,
    /// `torch.Generator("cuda")`, what the course notebook seeds; see [`TorchCuda`].
    #[default]
    TorchCuda,
}

impl RngSource {
    /// Every source, in the order help text lists them.
    pub(crate) const ALL: [RngSource; 2] = [RngSource::TorchCuda, RngSource::TorchCpu];

    /// The CLI / config spelling, e.g. `torch-cpu`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            RngSource::TorchCpu => "torch-cpu",
            RngSource::TorchCuda => "torch-cuda",
        }
    }

    /// A fresh generator seeded as `manual_seed(seed)` would seed it.
    pub fn generator(self, seed: u64) -> Box<dyn NoiseSource> {
        match self {
            RngSource::TorchCpu => Box::new(TorchCpu::new(seed)),
            RngSource::TorchCuda => Box::new(TorchCuda::new(seed)),
        }
    }
}

impl fmt::Display for RngSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A string that names no [`RngSource`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownRngSource(pub String);

impl fmt::Display for UnknownRngSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown noise source {:?}; expected one of:", self.0)?;
        for source in RngSource::ALL {
            write!(f, " {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for UnknownRngSource {}

impl FromStr for RngSource {
    type Err = UnknownRngSource;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RngSource::ALL
            .into_iter()
            .find(|source| source.name() == s)
            .ok_or_else(|| UnknownRngSource(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_from_str_display_and_serde() {
        for source in RngSource::ALL {
            let name = source.to_string();
            assert_eq!(name.parse::<RngSource>(), Ok(source));
            let json = serde_json::to_string(&source).expect("serialize");
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(
                serde_json::from_str::<RngSource>(&json).expect("deserialize"),
                source
            );
        }
        assert_eq!("torch-cpu".parse::<RngSource>(), Ok(RngSource::TorchCpu));
        assert_eq!("torch-cuda".parse::<RngSource>(), Ok(RngSource::TorchCuda));
    }

    #[test]
    fn unknown_name_error_lists_the_valid_ones() {
        let err = "torch_cpu".parse::<RngSource>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown noise source \"torch_cpu\"; expected one of: torch-cuda torch-cpu"
        );
    }

    #[test]
    fn generator_draws_what_the_named_source_draws() {
        let mut boxed = RngSource::TorchCpu.generator(42);
        let mut direct = TorchCpu::new(42);
        assert_eq!(boxed.randn([1, 4, 8, 8]), direct.randn([1, 4, 8, 8]));
        assert_eq!(boxed.randn_vec(5), direct.randn_vec(5));
        let mut boxed = RngSource::TorchCuda.generator(42);
        let mut direct = TorchCuda::new(42);
        assert_eq!(boxed.randn([1, 4, 8, 8]), direct.randn([1, 4, 8, 8]));
        assert_eq!(boxed.randn_vec(5), direct.randn_vec(5));
    }

    /// The trait's default `randn_vec` must agree with a source's own `randn`.
    #[test]
    fn default_randn_vec_flattens_randn() {
        struct OnlyRandn(TorchCpu);
        impl NoiseSource for OnlyRandn {
            fn randn(&mut self, shape: [usize; 4]) -> Array4<f32> {
                self.0.randn(shape)
            }
        }
        let mut wrapped = OnlyRandn(TorchCpu::new(7));
        let mut direct = TorchCpu::new(7);
        assert_eq!(wrapped.randn_vec(3), direct.randn_vec(3));
        assert_eq!(wrapped.randn_vec(100), direct.randn_vec(100));
    }
}
