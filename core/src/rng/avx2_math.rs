//! One lane of PyTorch's AVX2 float32 `log256_ps` and `sincos256_ps`, bit for bit.
//!
//! PyTorch's x86-64 Box-Muller kernel (`NormalFill16<float>` in
//! ATen/native/cpu/DistributionTemplates.h, built for the AVX2 and AVX512 capabilities) takes
//! its logarithm, sine and cosine from ATen/native/cpu/avx_mathfun.h: Julien Pommier's port of
//! the Cephes single-precision polynomials. Every lane is independent, so one lane in scalar
//! `f32` arithmetic gives the same bits, provided each operation rounds the same way.
//!
//! The wheel is built by GCC with floating-point contraction on, so a product whose only use is
//! an addition or subtraction becomes one fused multiply-add (`vfmadd…ps`). Where an addition
//! has two products as operands, GCC fuses the product computed first. Which pairs fuse was
//! settled against torch 2.15.0's own output: no difference in 262 144 draws of seed 42, and
//! for each choice that can matter a block where only torch's choice gives torch's bits (the
//! `fma_witness_*` fixtures in tests/fixtures/rng/):
//!
//! * every Horner step `y = y * x + c` is fused;
//! * `log`: `y * z + e * q1` fuses `y * z`; `x + e * q2` fuses (the product `e * q2` is exact,
//!   so fused and unfused agree anyway);
//! * `sincos`: the three Cody-Waite steps `x + y * (-DPk)` fuse (`y * DP3` is inexact: at
//!   three values of the uniform near 0.75 only the fused form gives torch's bits, checked at
//!   draw 1 793 469 of seed 42 and 11 684 649 of seed 0); `y * z - z * 0.5` fuses `y * z`;
//!   `y2 * x + x` fuses.
//!
//! The domain here is the kernel's: `log` of `u1` in (0, 1], `sincos` of `theta` in [0, 2π).
//! Outside it the functions still follow the C code (NaN for `x <= 0`, no extra range
//! reduction past |x| ≈ 8192), but nothing relies on that.

// Constants are spelled as in avx_mathfun.h. The C source writes most as double literals that
// are then stored as floats, so they are written as `f64` and converted with `as f32` (the
// same two roundings, which parsing straight to `f32` could differ from).
#![allow(clippy::excessive_precision, clippy::unreadable_literal)]

const ONE: f32 = 1.0;
const HALF: f32 = 0.5;
/// The smallest positive normal float; smaller inputs are clamped up to it.
const MIN_NORM_POS: u32 = 0x0080_0000;
const EXPONENT_MASK: u32 = 0x7f80_0000;
const SIGN_MASK: u32 = 0x8000_0000;

/// `0.707106781186547524` in the C source: the same double as `FRAC_1_SQRT_2`.
const SQRTHF: f32 = std::f64::consts::FRAC_1_SQRT_2 as f32;
const LOG_P: [f32; 9] = [
    7.0376836292E-2_f64 as f32,
    -1.1514610310E-1_f64 as f32,
    1.1676998740E-1_f64 as f32,
    -1.2420140846E-1_f64 as f32,
    1.4249322787E-1_f64 as f32,
    -1.6668057665E-1_f64 as f32,
    2.0000714765E-1_f64 as f32,
    -2.4999993993E-1_f64 as f32,
    3.3333331174E-1_f64 as f32,
];
/// ln 2 split in two: `LOG_Q2` has 9 significant bits, so `e * LOG_Q2` is exact.
const LOG_Q1: f32 = -2.12194440e-4_f64 as f32;
const LOG_Q2: f32 = 0.693359375_f64 as f32;

/// π/4 split in three for Cody-Waite reduction (negated, as the C code stores them).
const MINUS_DP1: f32 = -0.78515625_f64 as f32;
const MINUS_DP2: f32 = -2.4187564849853515625e-4_f64 as f32;
const MINUS_DP3: f32 = -3.77489497744594108e-8_f64 as f32;
const SINCOF: [f32; 3] = [
    -1.9515295891E-4_f64 as f32,
    8.3321608736E-3_f64 as f32,
    -1.6666654611E-1_f64 as f32,
];
const COSCOF: [f32; 3] = [
    2.443315711809948E-005_f64 as f32,
    -1.388731625493765E-003_f64 as f32,
    4.166664568298827E-002_f64 as f32,
];
/// 4/π.
const FOPI: f32 = 1.27323954473516_f64 as f32;

/// Natural logarithm as `log256_ps` computes it, for `x` in (0, 1] (any finite `x` follows
/// the C code; `x <= 0` gives NaN).
pub(crate) fn log(x: f32) -> f32 {
    let invalid = x <= 0.0;
    // `_mm256_max_ps(x, min_norm_pos)`: returns the second operand when `x` is NaN.
    let min_norm = f32::from_bits(MIN_NORM_POS);
    let x = if x > min_norm { x } else { min_norm };
    let bits = x.to_bits();
    // Exponent field minus the bias (an arithmetic on the integer lane, as `_mm256_sub_epi32`).
    let exponent = (bits >> 23) as i32 - 0x7f;
    // Mantissa scaled into [0.5, 1).
    let mut m = f32::from_bits((bits & !EXPONENT_MASK) | HALF.to_bits());
    let mut e = exponent as f32 + ONE;

    // if m < sqrt(1/2) { e -= 1; m = m + m - 1 } else { m = m - 1 }, without branches.
    let below = m < SQRTHF;
    let tmp = if below { m } else { 0.0 };
    m -= ONE;
    e -= if below { ONE } else { 0.0 };
    m += tmp;

    let z = m * m;
    let mut y = LOG_P[0];
    for &p in &LOG_P[1..] {
        y = y.mul_add(m, p);
    }
    y *= m;
    y = y.mul_add(z, e * LOG_Q1);
    y = (-z).mul_add(HALF, y);
    let r = m + y;
    let r = e.mul_add(LOG_Q2, r);
    // `_mm256_or_ps(x, invalid_mask)`: all ones, a NaN.
    if invalid { f32::from_bits(u32::MAX) } else { r }
}

/// `(sin x, cos x)` as `sincos256_ps` computes them; accurate for |x| < 8192, used here for
/// `x` in [0, 2π).
pub(crate) fn sincos(x: f32) -> (f32, f32) {
    let sign_in = x.to_bits() & SIGN_MASK;
    let mut x = f32::from_bits(x.to_bits() & !SIGN_MASK);

    // Octant j = (trunc(x * 4/π) + 1) & !1, an even integer. `as i32` truncates toward zero
    // like `_mm256_cvttps_epi32` for every |x| in range.
    let j = ((x * FOPI) as i32).wrapping_add(1) & !1;
    let y = j as f32;
    let swap_sign_sin = ((j & 4) as u32) << 29;
    // Where j = 2 mod 4 (x within π/4 of π/2 or 3π/2) the sine comes from the cosine
    // polynomial and the cosine from the sine polynomial.
    let sin_uses_sin_poly = j & 2 == 0;

    // x - j·π/4 in three fused steps.
    x = y.mul_add(MINUS_DP1, x);
    x = y.mul_add(MINUS_DP2, x);
    x = y.mul_add(MINUS_DP3, x);

    let sign_cos = ((!j.wrapping_sub(2) & 4) as u32) << 29;
    let sign_sin = sign_in ^ swap_sign_sin;

    let z = x * x;
    // cos on [-π/4, π/4]: 1 - z/2 + z² (c0 z² + c1 z + c2).
    let mut c = COSCOF[0];
    c = c.mul_add(z, COSCOF[1]);
    c = c.mul_add(z, COSCOF[2]);
    c *= z;
    c = c.mul_add(z, -(z * HALF));
    c += ONE;
    // sin on [-π/4, π/4]: x + x z (s0 z² + s1 z + s2).
    let mut s = SINCOF[0];
    s = s.mul_add(z, SINCOF[1]);
    s = s.mul_add(z, SINCOF[2]);
    s *= z;
    s = s.mul_add(x, x);

    // The C code selects with masks and then adds the masked-out half (a +0): keep those
    // additions, they turn a -0 result into +0 before the sign is applied.
    let (sin_part_s, sin_part_c) = if sin_uses_sin_poly {
        (s, 0.0)
    } else {
        (0.0, c)
    };
    let s_rest = s - sin_part_s;
    let c_rest = c - sin_part_c;
    let sin = sin_part_c + sin_part_s;
    let cos = c_rest + s_rest;
    (
        f32::from_bits(sin.to_bits() ^ sign_sin),
        f32::from_bits(cos.to_bits() ^ sign_cos),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cephes' single-precision polynomials are good to a few ulp on the kernel's domain; the
    /// exact bits are pinned by the torch fixtures in tests/rng.rs, this guards the shape of
    /// the functions (exponent handling, octants, signs) over the whole domain.
    #[test]
    fn log_is_within_4_ulp_of_ln_on_0_1() {
        for k in 1..=(1u32 << 16) {
            let x = k as f32 / 65536.0;
            let want = f64::from(x).ln();
            let err = (f64::from(log(x)) - want).abs();
            let tol = 4.0 * f64::from(f32::EPSILON) * want.abs();
            assert!(err <= tol, "log({x}) off by {err:e}, more than {tol:e}");
        }
        assert!(log(0.0).is_nan() && log(-1.0).is_nan());
    }

    #[test]
    fn sincos_is_within_a_few_ulp_on_0_2pi() {
        let two_pi = (2.0 * std::f64::consts::PI) as f32;
        let mut worst = 0.0f64;
        for k in 0..(1u32 << 16) {
            let t = two_pi * (k as f32 / 65536.0);
            let (s, c) = sincos(t);
            let t = f64::from(t);
            worst = worst
                .max((f64::from(s) - t.sin()).abs())
                .max((f64::from(c) - t.cos()).abs());
        }
        // Absolute error below 2 ulp of 1.0.
        assert!(
            worst < 2.0 * f64::from(f32::EPSILON),
            "worst abs error {worst}"
        );
    }
}
