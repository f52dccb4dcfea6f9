//! `torch.randn(..., generator=torch.Generator("cpu").manual_seed(seed))` for float32.
//!
//! What PyTorch 2.15 does, from its sources (`normal_kernel` and `normal_fill` in
//! ATen/native/cpu/DistributionTemplates.h, `uniform_real_distribution` and
//! `normal_distribution` in ATen/core/DistributionsHelper.h, `uniform_real` in
//! ATen/core/TransformationHelper.h, `CPUGeneratorImpl`):
//!
//! * **16 or more elements** (a contiguous float32 tensor): first one float uniform per element,
//!   `(w & 0xff_ffff) · 2^-24` from one 32-bit MT19937 word `w`, so in [0, 1) on a 2^-24 grid.
//!   Then Box-Muller over each whole block of 16 in place: for `j` in 0..8,
//!   `u1 = 1 - d[j]`, `u2 = d[j + 8]`, `r = sqrt(-2 ln u1)`, `θ = 2π u2`, `d[j] = r cos θ`,
//!   `d[j + 8] = r sin θ`. If the length is not a multiple of 16, the last 16 positions
//!   (overlapping the last whole block) are refilled with 16 fresh uniforms and transformed
//!   again. A draw of `n` elements thus uses `n` words, or `n + 16` when `16 ∤ n`.
//! * **Fewer than 16 elements**: element by element, in C order, a double-precision
//!   Box-Muller (`normal_distribution<double>`): two 53-bit uniforms `u1, u2` (each from two
//!   words, the first one high), `r = sqrt(-2 log1p(-u2))`, `θ = 2π u1`; it returns `r cos θ`
//!   and keeps `r sin θ` in the generator, and the next scalar element takes that kept value
//!   instead of drawing. The kept value survives draws of 16 or more (which never look at
//!   it), so a 3-element draw, then a 256-element one, then a 5-element one starts the third
//!   with the sine left over from the first. Each value is rounded to float32 on output.
//!
//! Both paths finish with torch's `value · std + mean` (std 1, mean 0), which changes nothing
//! but the sign of a zero.

use std::f64::consts::PI;

use ndarray::Array4;

use super::NoiseSource;
use super::avx2_math;
use super::mt19937::Mt19937;

/// Draws of this many elements or more take the block (float) path; shorter ones the scalar
/// (double) path.
pub(crate) const BLOCK: usize = 16;

/// `torch.randn`'s mean and standard deviation, applied as torch applies them.
const MEAN: f32 = 0.0;
const STD: f32 = 1.0;

/// Which of PyTorch's Box-Muller kernels for float32 blocks of 16 to reproduce. Draws of fewer
/// than 16 elements do not depend on it.
///
/// Checked against torch 2.15.0 on an AVX512 x86-64 machine by selecting kernel sets with
/// `ATEN_CPU_CAPABILITY` (tests/fixtures/rng/index.json records it): `avx2` and `avx512` give
/// identical bits (both compile the AVX2 kernel); `default` differs from them in about 38 % of
/// the elements, by up to 2e-6 (1.8e-6 in the fixtures; 2.3e-6 the largest of 8.4 million
/// draws, with 26 of them above 2e-6).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CpuKernel {
    /// The x86-64 kernel torch runs on any CPU with AVX2 (AVX512 ones included): Cephes
    /// float32 polynomials for log, sin and cos, with GCC's fused multiply-adds
    /// (core/src/rng/avx2_math.rs). Pure arithmetic, so bit-exact on every platform.
    #[default]
    Avx2,
    /// The portable kernel (`ATEN_CPU_CAPABILITY=default`; by the source also what builds
    /// without the AVX2 kernel run): the C library's float32 `logf`, `cosf`, `sinf`. Rust's
    /// `f32::ln`, `cos`, `sin` call the same libm functions, so this is bit-exact where the
    /// libm is the one torch ran with (checked on glibc 2.36), and within a few ulp elsewhere.
    Scalar,
}

impl CpuKernel {
    /// Box-Muller in place on one block of 16 uniforms in [0, 1): element `j` and `j + 8`
    /// become the cosine and sine normal of the pair `(d[j], d[j + 8])`.
    fn box_muller_16(self, block: &mut [f32; BLOCK]) {
        for j in 0..BLOCK / 2 {
            // [0, 1) -> (0, 1] so the logarithm is finite.
            let u1 = 1.0 - block[j];
            let u2 = block[j + BLOCK / 2];
            let (n1, n2) = match self {
                CpuKernel::Avx2 => {
                    // `_mm256_set1_ps(2.0f * c10::pi<double>)`: 2π rounded once to float.
                    const TWO_PI: f32 = (2.0 * PI) as f32;
                    let radius = (-2.0 * avx2_math::log(u1)).sqrt();
                    let (sin, cos) = avx2_math::sincos(TWO_PI * u2);
                    (radius * cos, radius * sin)
                }
                CpuKernel::Scalar => {
                    let radius = (-2.0 * u1.ln()).sqrt();
                    // `2.0f * c10::pi<double> * u2` is evaluated in double, then stored as float.
                    let theta = (2.0 * PI * f64::from(u2)) as f32;
                    (radius * theta.cos(), radius * theta.sin())
                }
            };
            block[j] = n1.mul_add(STD, MEAN);
            block[j + BLOCK / 2] = n2.mul_add(STD, MEAN);
        }
    }
}

/// PyTorch's CPU generator (`torch.Generator("cpu")`) producing float32 `torch.randn` draws.
///
/// Invariant: the state is exactly torch's after the same sequence of draws from
/// `manual_seed(seed)`: the MT19937 stream plus the one kept normal of the scalar path.
#[derive(Clone)]
pub struct TorchCpu {
    engine: Mt19937,
    /// torch's `next_double_normal_sample_`: the sine half of the last scalar-path pair, not
    /// yet handed out.
    kept_normal: Option<f64>,
    kernel: CpuKernel,
}

impl TorchCpu {
    /// The generator `torch.Generator("cpu").manual_seed(seed)` gives on x86-64 (any `u64`;
    /// only `seed mod 2^32` matters, as in torch).
    pub(crate) fn new(seed: u64) -> Self {
        Self::with_kernel(seed, CpuKernel::Avx2)
    }

    /// The generator `torch.Generator("cpu").manual_seed(seed)` gives (only `seed mod 2^32`
    /// matters, as in torch), drawing as torch's `kernel` does: AVX2 is what
    /// [`RngSource::TorchCpu`](super::RngSource::TorchCpu) uses.
    pub fn with_kernel(seed: u64, kernel: CpuKernel) -> Self {
        Self {
            engine: Mt19937::new(seed),
            kept_normal: None,
            kernel,
        }
    }

    /// The next draw of `len` standard normal floats: `torch.randn(shape, generator=g)` for any
    /// shape with `len` elements, in C order (only the element count matters to torch).
    pub(crate) fn randn_vec(&mut self, len: usize) -> Vec<f32> {
        if len >= BLOCK {
            self.block_path(len)
        } else {
            (0..len).map(|_| self.scalar_normal()).collect()
        }
    }

    /// torch's `normal_fill`: all uniforms first, Box-Muller per block, the ragged end redone.
    fn block_path(&mut self, len: usize) -> Vec<f32> {
        let mut data: Vec<f32> = (0..len).map(|_| self.uniform_f32()).collect();
        let (blocks, _) = data.as_chunks_mut::<BLOCK>();
        for block in blocks {
            self.kernel.box_muller_16(block);
        }
        if !len.is_multiple_of(BLOCK) {
            let mut tail = [0.0; BLOCK];
            tail.fill_with(|| self.uniform_f32());
            self.kernel.box_muller_16(&mut tail);
            data[len - BLOCK..].copy_from_slice(&tail);
        }
        data
    }

    /// One element of torch's serial kernel: `(float) normal_distribution<double>(0, 1)`.
    fn scalar_normal(&mut self) -> f32 {
        let normal = match self.kept_normal.take() {
            Some(kept) => kept,
            None => {
                let u1 = self.uniform_f64();
                let u2 = self.uniform_f64();
                let radius = (-2.0 * (-u2).ln_1p()).sqrt();
                let theta = 2.0 * PI * u1;
                self.kept_normal = Some(radius * theta.sin());
                radius * theta.cos()
            }
        };
        (normal * f64::from(STD) + f64::from(MEAN)) as f32
    }

    /// A float uniform in [0, 1): the low 24 bits of one word, times 2^-24.
    fn uniform_f32(&mut self) -> f32 {
        const MANTISSA: u32 = (1 << f32::MANTISSA_DIGITS) - 1;
        (self.engine.next_u32() & MANTISSA) as f32 / (1u32 << f32::MANTISSA_DIGITS) as f32
    }

    /// A double uniform in [0, 1): the low 53 bits of two words (first one high), times 2^-53.
    fn uniform_f64(&mut self) -> f64 {
        const MANTISSA: u64 = (1 << f64::MANTISSA_DIGITS) - 1;
        (self.engine.next_u64() & MANTISSA) as f64 / (1u64 << f64::MANTISSA_DIGITS) as f64
    }
}

impl NoiseSource for TorchCpu {
    fn randn(&mut self, shape: [usize; 4]) -> Array4<f32> {
        let len = shape.iter().product();
        Array4::from_shape_vec(shape, self.randn_vec(len))
            .expect("randn_vec returns exactly the shape's element count")
    }

    fn randn_vec(&mut self, len: usize) -> Vec<f32> {
        TorchCpu::randn_vec(self, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The block path spends one word per element, plus 16 when the length is ragged; the
    /// scalar path two words per pair of elements. Seen through the next draw: a generator
    /// advanced by hand by the same number of words must continue identically.
    #[test]
    fn draws_consume_torchs_number_of_words() {
        for (len, words) in [(16, 16), (17, 33), (100, 116), (256, 256), (2, 4), (1, 4)] {
            let mut drawn = TorchCpu::new(9);
            drawn.randn_vec(len);
            drawn.kept_normal = None;
            let mut skipped = TorchCpu::new(9);
            for _ in 0..words {
                skipped.engine.next_u32();
            }
            let a = drawn.randn_vec(64);
            let b = skipped.randn_vec(64);
            assert!(
                a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "len {len}: expected {words} words consumed"
            );
        }
    }

    #[test]
    fn randn_fills_the_shape_in_c_order_like_randn_vec() {
        let shape = [1, 4, 8, 8];
        let array = TorchCpu::new(3).randn(shape);
        let flat = TorchCpu::new(3).randn_vec(256);
        assert_eq!(array.shape(), &shape);
        assert_eq!(array.as_slice().expect("standard layout"), &flat[..]);
    }

    #[test]
    fn empty_draw_consumes_nothing() {
        let mut a = TorchCpu::new(5);
        assert!(a.randn_vec(0).is_empty());
        assert_eq!(a.randn_vec(20), TorchCpu::new(5).randn_vec(20));
    }
}
