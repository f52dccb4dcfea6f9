//! Non-finite values (NaN, ±Inf) in a run's tensors: found after every step, they stop the run
//! with an error that names the component, the step and the likely cause (fp16 overflow is the
//! classic source of black images), instead of a silently black PNG.
//!
//! The check is one pass over the tensor that only ORs bits (so it vectorises); counting the
//! NaN and Inf values, a second pass, happens only once something was found.

use ndarray::{ArrayBase, Data, Dimension};

use crate::error::Fixable;

/// How many values of a tensor are NaN or ±Inf, of how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct NonFiniteCount {
    pub nan: usize,
    pub inf: usize,
    pub len: usize,
}

impl NonFiniteCount {
    /// `3 NaN and 1 Inf values (of 12288)`.
    pub(crate) fn describe(&self) -> String {
        let c = self;
        let mut parts = Vec::new();
        if c.nan > 0 {
            parts.push(format!("{} NaN", c.nan));
        }
        if c.inf > 0 {
            parts.push(format!("{} Inf", c.inf));
        }
        let noun = if c.nan + c.inf == 1 {
            "value"
        } else {
            "values"
        };
        format!("{} {noun} (of {})", parts.join(" and "), c.len)
    }
}

const EXPONENT: u32 = 0x7f80_0000;

/// Whether any value of `x` is NaN or ±Inf (all exponent bits set): one pass, no branches.
fn slice_has_non_finite(x: &[f32]) -> bool {
    x.chunks(1024).any(|chunk| {
        chunk
            .iter()
            .fold(false, |acc, v| acc | (v.to_bits() & EXPONENT == EXPONENT))
    })
}

fn count_slice(x: &[f32]) -> NonFiniteCount {
    let mut c = NonFiniteCount {
        len: x.len(),
        ..NonFiniteCount::default()
    };
    for v in x {
        if v.is_nan() {
            c.nan += 1;
        } else if v.is_infinite() {
            c.inf += 1;
        }
    }
    c
}

/// `None` when every value of `x` is finite (the common case: one pass); else the counts.
pub(crate) fn check<S, D>(x: &ArrayBase<S, D>) -> Option<NonFiniteCount>
where
    S: Data<Elem = f32>,
    D: Dimension,
{
    match x.as_slice_memory_order() {
        Some(s) => slice_has_non_finite(s).then(|| count_slice(s)),
        None => {
            let found = x
                .iter()
                .fold(false, |acc, v| acc | (v.to_bits() & EXPONENT == EXPONENT));
            found.then(|| {
                let owned: Vec<f32> = x.iter().copied().collect();
                count_slice(&owned)
            })
        }
    }
}

/// Which tensor of the run went non-finite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tensor {
    /// The text encoder's hidden states (the prompt's conditioning).
    TextEncoder,
    /// The latents the run starts from (drawn, or given with `--latents`).
    InitialLatents,
    /// The UNet's noise prediction at a step (before guidance).
    UnetOutput,
    /// The noise prediction after classifier-free guidance (`uncond + g·(cond − uncond)`).
    Guided,
    /// The latents the scheduler's step produced.
    SchedulerLatents,
    /// The VAE decoder's image.
    VaeImage,
}

impl Tensor {
    fn describe(self) -> &'static str {
        match self {
            Tensor::TextEncoder => "the text encoder's output",
            Tensor::InitialLatents => "the initial latents",
            Tensor::UnetOutput => "the UNet's output",
            Tensor::Guided => "the guided noise prediction (uncond + cfg·(cond − uncond))",
            Tensor::SchedulerLatents => "the latents after the scheduler's step",
            Tensor::VaeImage => "the VAE decoder's image",
        }
    }
}

/// Where in the denoising loop: 0-based `index` of `total` steps, at timestep `t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StepAt {
    pub index: usize,
    pub total: usize,
    pub t: i64,
}

/// A tensor of the run holds NaN or Inf values: the run stopped there.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NonFinite {
    pub tensor: Tensor,
    pub step: Option<StepAt>,
    pub count: NonFiniteCount,
    /// The model component that made it, as the user knows it, e.g. `UNet variant lcm
    /// (unet_lcm), fp16`; filled in by the pipeline, which knows the model.
    pub component: Option<String>,
    /// The component's weights are fp16 (the hint then leads with fp16 overflow).
    pub fp16: bool,
    /// The run's guidance scale, when guidance is on (the hint suggests a lower one).
    pub guidance: Option<f32>,
}

impl NonFinite {
    pub(crate) fn new(tensor: Tensor, step: Option<StepAt>, count: NonFiniteCount) -> Self {
        Self {
            tensor,
            step,
            count,
            component: None,
            fp16: false,
            guidance: None,
        }
    }

    /// `Some(err)` when `x` holds a non-finite value.
    pub(crate) fn find<S, D>(
        tensor: Tensor,
        step: Option<StepAt>,
        x: &ArrayBase<S, D>,
    ) -> Option<Self>
    where
        S: Data<Elem = f32>,
        D: Dimension,
    {
        check(x).map(|count| Self::new(tensor, step, count))
    }

    fn values(&self) -> String {
        self.count.describe()
    }

    /// What to do about it, without "Fix: ".
    fn fix(&self) -> String {
        let cfg = match self.guidance {
            Some(g) => format!("try a lower --cfg than {g}"),
            None => "try another --cfg".to_string(),
        };
        match self.tensor {
            Tensor::InitialLatents => {
                "pass finite --latents (check the .npy file), or leave --latents out to draw them from the seed".to_string()
            }
            Tensor::SchedulerLatents => format!(
                "the scheduler's arithmetic overflowed: {cfg}, another --scheduler, or more --steps; if it persists, this is a bug in speedscape: please report it with the command"
            ),
            _ if self.fp16 => format!(
                "fp16 overflow is the usual cause: use the fp32 export (python models/export.py --out DIR --dtype fp32), or {cfg}; if the fp32 export does it too, check the model (speedscape models verify)"
            ),
            _ => format!(
                "{cfg}; check the model (speedscape models verify, or export it again: python models/export.py --out DIR)"
            ),
        }
    }

    /// What went wrong: the tensor, the step, the values, the component, what was not written.
    fn cause(&self) -> String {
        let mut out = self.tensor.describe().to_string();
        if let Some(s) = self.step {
            out += &format!(" at step {} of {} (t={})", s.index + 1, s.total, s.t);
        }
        let verb = match self.tensor {
            Tensor::InitialLatents | Tensor::SchedulerLatents => "have",
            _ => "has",
        };
        out += &format!(" {verb} {}", self.values());
        if let Some(c) = &self.component {
            out += &format!(" ({c})");
        }
        let stopped = match (self.tensor, self.step) {
            (Tensor::VaeImage, _) => "; no image was written",
            (_, Some(_)) => "; the run stopped there, no image was written",
            _ => "; the run stopped before its first step, no image was written",
        };
        out + stopped
    }
}

impl std::fmt::Display for NonFinite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The same text as the error the run stops with.
        write!(f, "{}", Fixable::new(self.cause(), self.fix()))
    }
}

impl std::error::Error for NonFinite {}

/// The error a run stops with, once the pipeline has named the component: the same message,
/// its cause and fix apart, and the [`NonFinite`] itself as the detail
/// ([`crate::error::detail`] finds it).
impl From<NonFinite> for Fixable {
    fn from(e: NonFinite) -> Self {
        Fixable::new(e.cause(), e.fix()).with_detail(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array4, s};

    #[test]
    fn finite_tensors_pass_and_nan_and_inf_are_counted_apart() {
        let mut x = Array4::<f32>::from_elem((1, 4, 33, 33), 0.5);
        assert_eq!(check(&x), None);
        // Large but finite values, subnormals and -0 are finite.
        x[[0, 0, 0, 0]] = f32::MAX;
        x[[0, 0, 0, 1]] = -f32::MAX;
        x[[0, 0, 0, 2]] = f32::MIN_POSITIVE / 2.0;
        x[[0, 0, 0, 3]] = -0.0;
        assert_eq!(check(&x), None);
        x[[0, 1, 2, 3]] = f32::NAN;
        x[[0, 3, 32, 32]] = f32::NAN;
        x[[0, 2, 5, 5]] = f32::INFINITY;
        x[[0, 2, 5, 6]] = f32::NEG_INFINITY;
        x[[0, 2, 5, 7]] = -f32::NAN;
        assert_eq!(
            check(&x),
            Some(NonFiniteCount {
                nan: 3,
                inf: 2,
                len: 4 * 33 * 33
            })
        );
    }

    #[test]
    fn views_that_are_not_contiguous_are_checked_too() {
        let mut x = Array4::<f32>::zeros((2, 4, 8, 8));
        x[[1, 2, 3, 4]] = f32::INFINITY;
        x[[0, 2, 3, 4]] = f32::NAN;
        let row1 = x.slice(s![1..2, .., .., ..]);
        assert_eq!(
            check(&row1),
            Some(NonFiniteCount {
                nan: 0,
                inf: 1,
                len: 256
            })
        );
        let strided = x.slice(s![.., .., .., ..;2]);
        assert_eq!(check(&strided).map(|c| (c.nan, c.inf)), Some((1, 1)));
        let t = x.view().permuted_axes([3, 2, 1, 0]);
        assert_eq!(check(&t).map(|c| (c.nan, c.inf)), Some((1, 1)));
    }

    #[test]
    fn the_message_names_the_tensor_the_step_the_component_and_an_fp16_fix() {
        let mut e = NonFinite::new(
            Tensor::UnetOutput,
            Some(StepAt {
                index: 2,
                total: 20,
                t: 801,
            }),
            NonFiniteCount {
                nan: 412,
                inf: 0,
                len: 32768,
            },
        );
        e.component = Some("UNet variant lcm (unet_lcm), fp16".into());
        e.fp16 = true;
        e.guidance = Some(7.5);
        assert_eq!(
            e.to_string(),
            "the UNet's output at step 3 of 20 (t=801) has 412 NaN values (of 32768) (UNet variant lcm (unet_lcm), fp16); the run stopped there, no image was written\n\
             Fix: fp16 overflow is the usual cause: use the fp32 export (python models/export.py --out DIR --dtype fp32), or try a lower --cfg than 7.5; if the fp32 export does it too, check the model (speedscape models verify)"
        );
    }

    #[test]
    fn the_vae_message_has_no_step_and_an_fp32_model_gets_the_check_the_model_fix() {
        let mut e = NonFinite::new(
            Tensor::VaeImage,
            None,
            NonFiniteCount {
                nan: 0,
                inf: 12,
                len: 12288,
            },
        );
        e.component = Some("VAE decoder (vae_decoder), fp32".into());
        let text = e.to_string();
        assert!(
            text.starts_with(
                "the VAE decoder's image has 12 Inf values (of 12288) (VAE decoder (vae_decoder), fp32); no image was written\nFix: try another --cfg; check the model (speedscape models verify"
            ),
            "{text}"
        );
    }

    #[test]
    fn as_the_runs_error_the_message_is_the_same_and_the_fix_and_tensor_are_typed() {
        let e = NonFinite::new(
            Tensor::InitialLatents,
            None,
            NonFiniteCount {
                nan: 1,
                inf: 0,
                len: 16,
            },
        );
        let text = e.to_string();
        let report = eyre::Report::new(Fixable::from(e.clone()));
        assert_eq!(report.to_string(), text);
        assert_eq!(
            crate::error::parts(&report).fixes,
            [
                "pass finite --latents (check the .npy file), or leave --latents out to draw them from the seed"
            ]
        );
        assert_eq!(crate::error::detail::<NonFinite>(&report), Some(&e));
    }

    /// Not a test: what the check costs, per tensor the loop checks. Run with
    /// `cargo test --lib numerics::tests::cost -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn cost() {
        for (what, shape) in [
            ("tiny model, guided UNet output [2,4,8,8]", (2, 4, 8, 8)),
            ("512x512 latents [1,4,64,64]", (1, 4, 64, 64)),
            ("512x512 guided UNet output [2,4,64,64]", (2, 4, 64, 64)),
        ] {
            let x = Array4::<f32>::from_shape_fn(shape, |(a, b, c, d)| {
                ((a * 7 + b * 5 + c * 3 + d) % 17) as f32 - 8.0
            });
            let n = 2000;
            let start = std::time::Instant::now();
            for _ in 0..n {
                assert!(check(std::hint::black_box(&x)).is_none());
            }
            let per = start.elapsed().as_secs_f64() / n as f64;
            println!("{what}: {:.2} µs per check ({} values)", per * 1e6, x.len());
        }
    }
}
