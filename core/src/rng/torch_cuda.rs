//! `torch.randn` on a CUDA generator, computed on the host.
//!
//! What the notebook's `torch.Generator("cuda").manual_seed(seed)` gives, reproduced without a
//! GPU. PyTorch's CUDA normal kernel (ATen `normal_kernel` → `distribution_nullary_kernel`):
//!
//! - **Launch.** Blocks of 256 threads, `grid = min(ceil(numel / 256), SMs × threads-per-SM / 256)`.
//!   Each thread owns a Philox4x32-10 stream and, per round, draws one 128-bit block
//!   (`curand_normal4`): four normals for elements `t`, `t + T`, `t + 2T`, `t + 3T` of that round,
//!   where `T = 256 × grid`. A round covers `4T` elements.
//! - **Philox state.** `curand_init(seed, subsequence = thread, offset)`: the key is the seed's two
//!   32-bit halves; the 128-bit counter is `offset / 4 + round` in its low 64 bits and the thread
//!   index in its high 64 bits.
//! - **Offset.** After a call the generator's offset grows by `4 × rounds`, so the next `randn` of
//!   a run (the next step's noise) starts where this one left off.
//! - **Box-Muller** (`_curand_box_muller` on the device): from words `(a, b)`,
//!   `u = fma(float(a), 2⁻³², 2⁻³³)`, `v = fma(float(b), 2π·2⁻³², π·2⁻³²)`,
//!   `s = sqrtf(-2 logf(u))`, then `(sin v · s, cos v · s)`, with the sine and cosine from
//!   `__sincosf`.
//!
//! # What is exact and what is not
//! The Philox words, the element layout and the offsets are exact (integer arithmetic). The
//! values are not all bit-identical: `__sincosf` runs on the GPU's special-function unit (SASS
//! `MUFU.SIN`/`MUFU.COS` after the argument is scaled by 1/2π, rounding toward zero), a hardware
//! approximation with an absolute error of about 2⁻²¹ whose exact results are not published. We
//! scale the same way and take the correctly rounded sine and cosine of the scaled argument. Against
//! draws made by torch 2.11 on an H200 (`tests/fixtures/rng_cuda/`) every element is within
//! 1.3e-6 and about a quarter are bit-identical: far below what a diffusion run can show (an
//! fp16 UNet rounds its input by up to 2e-3), and every wrong-layout or wrong-offset error is
//! O(1).
//!
//! The launch depends on the GPU when `ceil(numel / 256)` exceeds its block limit: for
//! `numel ≤ 256 × SMs × threads-per-SM / 256` every element has its own thread and the result
//! does not depend on the GPU at all. That covers SD v1.5's latents up to 1×4×96×96 (768²) on any
//! GPU with at least 36 SMs of 1024 threads (a T4 has 40; an A100 108 of 2048; an H100 132 of
//! 2048). [`CudaLaunch`] names the GPU for larger draws; the default is an H100/H200.

use ndarray::Array4;

use super::NoiseSource;

/// The two numbers of a GPU that set torch's launch for a draw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CudaLaunch {
    /// `multiProcessorCount`.
    pub sm_count: u32,
    /// `maxThreadsPerMultiProcessor`.
    pub max_threads_per_sm: u32,
}

impl CudaLaunch {
    /// An NVIDIA H100 or H200 (132 SMs of 2048 threads): where the reference draws were made.
    pub(crate) const H100: CudaLaunch = CudaLaunch {
        sm_count: 132,
        max_threads_per_sm: 2048,
    };

    /// Threads per block in torch's distribution kernels.
    pub(crate) const BLOCK: u64 = 256;
    /// Normals per Philox block (`curand_normal4`).
    const UNROLL: u64 = 4;

    /// Blocks of the grid torch launches for `numel` elements.
    pub(crate) fn grid(self, numel: u64) -> u64 {
        let wanted = numel.div_ceil(Self::BLOCK);
        let cap = u64::from(self.sm_count) * u64::from(self.max_threads_per_sm / 256);
        wanted.min(cap).max(1)
    }
}

impl Default for CudaLaunch {
    fn default() -> Self {
        Self::H100
    }
}

const PHILOX_M0: u32 = 0xD251_1F53;
const PHILOX_M1: u32 = 0xCD9E_8D57;
const PHILOX_W0: u32 = 0x9E37_79B9;
const PHILOX_W1: u32 = 0xBB67_AE85;

/// Philox4x32 with 10 rounds (Salmon et al. 2011, as in Random123 and cuRAND).
pub(crate) fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(PHILOX_W0);
            k[1] = k[1].wrapping_add(PHILOX_W1);
        }
        let p0 = u64::from(PHILOX_M0) * u64::from(c[0]);
        let p1 = u64::from(PHILOX_M1) * u64::from(c[2]);
        c = [
            (p1 >> 32) as u32 ^ c[1] ^ k[0],
            p1 as u32,
            (p0 >> 32) as u32 ^ c[3] ^ k[1],
            p0 as u32,
        ];
    }
    c
}

/// cuRAND's `CURAND_2POW32_INV` and `CURAND_2POW32_INV_2PI`, folded in float as nvcc does.
const TWO_POW_M32: f32 = 2.328_306_4e-10;
const TWO_POW_M32_2PI: f32 = 2.328_306_4e-10 * 6.283_185_5;
/// `__sinf`/`__cosf` scale their argument by this (rounded toward zero) before `MUFU`.
const INV_2PI: f32 = 0.159_154_94;

/// `x × y` rounded toward zero (`FMUL.RZ`), for positive finite operands.
fn mul_toward_zero(x: f32, y: f32) -> f32 {
    let exact = f64::from(x) * f64::from(y); // 24 × 24 bits: exact in f64
    let nearest = exact as f32;
    if f64::from(nearest) > exact {
        f32::from_bits(nearest.to_bits() - 1)
    } else {
        nearest
    }
}

/// `_curand_box_muller(a, b)` as the device computes it; see the module's notes on the sine.
fn box_muller(a: u32, b: u32) -> [f32; 2] {
    let u = (a as f32).mul_add(TWO_POW_M32, TWO_POW_M32 / 2.0);
    let v = (b as f32).mul_add(TWO_POW_M32_2PI, TWO_POW_M32_2PI / 2.0);
    let s = (-2.0 * u.ln()).sqrt();
    let turns = f64::from(mul_toward_zero(v, INV_2PI)) * std::f64::consts::TAU;
    [turns.sin() as f32 * s, turns.cos() as f32 * s]
}

/// `torch.randn(..., generator=torch.Generator("cuda").manual_seed(seed))`, float32, on the host.
#[derive(Clone, Debug)]
pub struct TorchCuda {
    seed: u64,
    /// The generator's Philox offset (in 32-bit words, a multiple of 4), as `get_offset()` reports.
    offset: u64,
    launch: CudaLaunch,
}

impl TorchCuda {
    /// A generator as `manual_seed(seed)` leaves it, launching like an H100/H200.
    pub fn new(seed: u64) -> Self {
        Self::with_launch(seed, CudaLaunch::default())
    }

    /// A generator whose draws are laid out as torch lays them out on `launch`'s GPU.
    pub fn with_launch(seed: u64, launch: CudaLaunch) -> Self {
        Self {
            seed,
            offset: 0,
            launch,
        }
    }

    /// The Philox offset the next draw starts at (torch's `Generator.get_offset()`).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next `numel` normals, in C order.
    pub(crate) fn draw(&mut self, numel: usize) -> Vec<f32> {
        let mut out = vec![0.0f32; numel];
        if numel == 0 {
            return out;
        }
        let n = numel as u64;
        let threads = CudaLaunch::BLOCK * self.launch.grid(n);
        let per_round = threads * CudaLaunch::UNROLL;
        let rounds = (n - 1) / per_round + 1;
        let key = [self.seed as u32, (self.seed >> 32) as u32];
        let base = self.offset / 4;
        for round in 0..rounds {
            let ctr_lo = base + round;
            let start = round * per_round;
            // Threads whose first element exists this round (later ones write nothing).
            let active = threads.min(n - start);
            for thread in 0..active {
                let words = philox4x32_10(
                    [
                        ctr_lo as u32,
                        (ctr_lo >> 32) as u32,
                        thread as u32,
                        (thread >> 32) as u32,
                    ],
                    key,
                );
                let first = box_muller(words[0], words[1]);
                out[(start + thread) as usize] = first[0];
                // The other three normals land T, 2T, 3T further on, when those exist.
                if start + threads + thread < n {
                    out[(start + threads + thread) as usize] = first[1];
                    let second = box_muller(words[2], words[3]);
                    for (ii, value) in second.into_iter().enumerate() {
                        let li = start + (2 + ii as u64) * threads + thread;
                        if li < n {
                            out[li as usize] = value;
                        }
                    }
                }
            }
        }
        self.offset += rounds * 4;
        out
    }
}

impl NoiseSource for TorchCuda {
    fn randn(&mut self, shape: [usize; 4]) -> Array4<f32> {
        let values = self.draw(shape.iter().product());
        Array4::from_shape_vec(shape, values).expect("draw returns one value per element")
    }

    fn randn_vec(&mut self, len: usize) -> Vec<f32> {
        self.draw(len)
    }
}

#[cfg(test)]
impl CudaLaunch {
    /// The largest draw whose layout does not depend on the GPU beyond this one's limit.
    pub(crate) fn launch_independent_up_to(self) -> u64 {
        u64::from(self.sm_count) * u64::from(self.max_threads_per_sm / 256) * Self::BLOCK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random123's known-answer vectors for philox4x32-10 (kat_vectors).
    #[test]
    fn philox_matches_the_random123_known_answers() {
        assert_eq!(
            philox4x32_10([0; 4], [0; 2]),
            [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344],
                [0xa409_3822, 0x299f_31d0]
            ),
            [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1]
        );
    }

    #[test]
    fn curand_constants_are_the_ones_nvcc_folds() {
        assert_eq!(TWO_POW_M32, 1.0 / 4_294_967_296.0);
        assert_eq!(TWO_POW_M32_2PI.to_bits(), 0x30c9_0fdb);
    }

    #[test]
    fn round_toward_zero_never_rounds_up() {
        let (x, y) = (1.1f32, 3.3f32);
        let rz = mul_toward_zero(x, y);
        assert!(f64::from(rz) <= f64::from(x) * f64::from(y));
        assert!(f64::from(f32::from_bits(rz.to_bits() + 1)) > f64::from(x) * f64::from(y));
        assert_eq!(mul_toward_zero(2.0, 0.5), 1.0);
    }

    #[test]
    fn grid_follows_torch_launch_rules() {
        let h100 = CudaLaunch::H100;
        assert_eq!(h100.grid(1), 1);
        assert_eq!(h100.grid(16_384), 64);
        assert_eq!(h100.grid(4 * 4 * 512 * 512), 1056);
        let t4 = CudaLaunch {
            sm_count: 40,
            max_threads_per_sm: 1024,
        };
        assert_eq!(t4.grid(65_536), 160);
        assert_eq!(t4.launch_independent_up_to(), 40_960);
    }

    #[test]
    fn offset_advances_by_four_per_round() {
        let mut g = TorchCuda::new(0);
        g.draw(16_384);
        assert_eq!(g.offset(), 4);
        g.draw(1);
        assert_eq!(g.offset(), 8);
        // 4×4×512×512 on an H100 takes four rounds.
        let mut big = TorchCuda::new(0);
        big.draw(4 * 4 * 512 * 512);
        assert_eq!(big.offset(), 16);
    }

    /// A draw of fewer elements is a prefix of a larger one while each element has its own
    /// thread (both fit in one round with T ≥ numel): element i is thread i's first normal.
    #[test]
    fn small_draws_are_prefixes_within_one_round() {
        let a = TorchCuda::new(42).draw(100);
        let b = TorchCuda::new(42).draw(1000);
        assert_eq!(a[..], b[..100]);
    }
}
