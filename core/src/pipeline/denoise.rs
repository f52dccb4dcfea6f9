//! The denoising loop, free of ONNX Runtime: any [`Denoiser`] drives it, so its bookkeeping
//! is tested against a fake one.
//!
//! Mirrors diffusers' `StableDiffusionPipeline.__call__` loop: per step `scale_model_input`
//! → (ControlNet →) UNet (batch 2 `[uncond, cond]` under guidance) → `uncond + g·(cond − uncond)` → `step`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use eyre::eyre;
use ndarray::{Array4, ArrayView3, ArrayView4, Axis, concatenate, s};

use super::numerics::{self, NonFinite, StepAt, Tensor};
use crate::rng::NoiseSource;
use crate::schedulers::Scheduler;

/// Predicts ε (the model output) for a batch of latents at one timestep.
pub(crate) trait Denoiser {
    /// `sample` `[B, 4, h, w]` at timestep `t` (fractional for Euler's schedules),
    /// `context` `[B, 77, D]` → model output `[B, 4, h, w]`.
    fn predict(
        &mut self,
        sample: ArrayView4<f32>,
        t: f32,
        context: ArrayView3<f32>,
    ) -> eyre::Result<Array4<f32>>;

    /// Of the last [`Denoiser::predict`], the time spent in a model that feeds the UNet (a
    /// ControlNet); taken, so the next call starts from zero.
    fn take_aux_time(&mut self) -> Duration {
        Duration::ZERO
    }
}

impl Denoiser for crate::models::Unet {
    fn predict(
        &mut self,
        sample: ArrayView4<f32>,
        t: f32,
        context: ArrayView3<f32>,
    ) -> eyre::Result<Array4<f32>> {
        crate::models::Unet::predict(self, sample, t, context)
    }
}

/// The run was cancelled between steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancelled {
    /// Steps completed before the cancel was seen.
    pub completed: usize,
}

impl std::fmt::Display for Cancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cancelled after {} steps", self.completed)
    }
}

impl std::error::Error for Cancelled {}

/// What one step took, stamped around each phase after outputs are back on the host.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct StepTiming {
    /// `scale_model_input`, the UNet call and guidance (milliseconds in JSON).
    #[serde(serialize_with = "super::ser_ms")]
    pub unet: Duration,
    /// The ControlNet's call (zero without control; milliseconds in JSON).
    #[serde(serialize_with = "super::ser_ms")]
    pub controlnet: Duration,
    /// The scheduler's `step` (milliseconds in JSON).
    #[serde(serialize_with = "super::ser_ms")]
    pub scheduler: Duration,
}

/// Emitted after every step.
pub struct StepEvent<'a> {
    /// 0-based step index.
    pub index: usize,
    /// Steps in the run.
    pub total: usize,
    /// The timestep this step denoised from (truncated toward zero where the schedule is
    /// fractional).
    pub timestep: i64,
    /// What this step took.
    pub timing: StepTiming,
    /// The current x0 prediction, latents `[1, 4, h, w]` (unscaled), for previews; the new
    /// sample where the scheduler has no x0 prediction.
    pub preview: ArrayView4<'a, f32>,
    /// The latents after this step, `[1, 4, h, w]`.
    pub latents: ArrayView4<'a, f32>,
}

/// Text conditioning: `[1, 77, D]` without guidance, `[2, 77, D]` (`[uncond, cond]`) with.
pub(crate) struct Conditioning<'a> {
    pub context: ArrayView3<'a, f32>,
    /// Classifier-free guidance scale; guidance is on when the context has two rows.
    pub guidance: f32,
}

/// Runs every timestep of `scheduler` from `latents` (already × init_noise_sigma).
/// A NaN or Inf in the UNet's output or in the latents after a step stops the loop with a
/// [`NonFinite`] error naming the step (before that step's event).
pub(crate) fn denoise(
    denoiser: &mut dyn Denoiser,
    scheduler: &mut dyn Scheduler,
    noise: &mut dyn NoiseSource,
    mut latents: Array4<f32>,
    cond: &Conditioning,
    cancel: &AtomicBool,
    on_step: &mut dyn FnMut(StepEvent),
) -> eyre::Result<(Array4<f32>, Vec<StepTiming>)> {
    let guided = cond.context.shape()[0] == 2;
    let timesteps = scheduler.timesteps().to_vec();
    let model_timesteps = scheduler.model_timesteps();
    let mut timings = Vec::with_capacity(timesteps.len());
    for (index, (&t, &model_t)) in timesteps.iter().zip(&model_timesteps).enumerate() {
        if cancel.load(Ordering::Relaxed) {
            return Err(eyre!(Cancelled { completed: index }));
        }
        let at = Some(StepAt {
            index,
            total: timesteps.len(),
            t,
        });
        let unet_start = Instant::now();
        let scaled = scheduler.scale_model_input(latents.view(), t);
        let eps = if guided {
            let input = concatenate(Axis(0), &[scaled.view(), scaled.view()])?;
            let out = denoiser.predict(input.view(), model_t, cond.context)?;
            if let Some(e) = NonFinite::find(Tensor::UnetOutput, at, &out) {
                return Err(eyre!(e));
            }
            let uncond = out.slice(s![0..1, .., .., ..]);
            let text = out.slice(s![1..2, .., .., ..]);
            let g = cond.guidance;
            ndarray::Zip::from(&uncond)
                .and(&text)
                .map_collect(|&u, &c| u + g * (c - u))
        } else {
            let out = denoiser.predict(scaled.view(), model_t, cond.context)?;
            if let Some(e) = NonFinite::find(Tensor::UnetOutput, at, &out) {
                return Err(eyre!(e));
            }
            out
        };
        let controlnet = denoiser.take_aux_time();
        let unet = unet_start.elapsed().saturating_sub(controlnet);
        let sched_start = Instant::now();
        let out = scheduler.step(eps.view(), t, latents.view(), noise);
        let scheduler_time = sched_start.elapsed();
        if let Some(count) = numerics::check(&out.prev_sample) {
            // The UNet's output was finite: guidance or the scheduler overflowed.
            let e = match NonFinite::find(Tensor::Guided, at, &eps) {
                Some(guided) => guided,
                None => NonFinite::new(Tensor::SchedulerLatents, at, count),
            };
            return Err(eyre!(e));
        }
        latents = out.prev_sample;
        let timing = StepTiming {
            unet,
            controlnet,
            scheduler: scheduler_time,
        };
        timings.push(timing);
        on_step(StepEvent {
            index,
            total: timesteps.len(),
            timestep: t,
            timing,
            preview: out.denoised.as_ref().unwrap_or(&latents).view(),
            latents: latents.view(),
        });
    }
    Ok((latents, timings))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedulers::StepOutput;
    use ndarray::{Array3, Array4};

    /// Returns ε = (row index + 1) · 10 + t/1000 for every element, and logs its calls.
    struct FakeUnet {
        calls: Vec<(usize, i64)>,
    }

    impl Denoiser for FakeUnet {
        fn predict(
            &mut self,
            sample: ArrayView4<f32>,
            t: f32,
            context: ArrayView3<f32>,
        ) -> eyre::Result<Array4<f32>> {
            let t = t as i64;
            assert_eq!(
                sample.shape()[0],
                context.shape()[0],
                "batch of sample and context"
            );
            self.calls.push((sample.shape()[0], t));
            let mut out = Array4::zeros(sample.raw_dim());
            for (b, mut row) in out.outer_iter_mut().enumerate() {
                row.fill((b as f32 + 1.0) * 10.0 + t as f32 / 1000.0);
            }
            Ok(out)
        }
    }

    /// x ← x − ε, recording the ε it was given; scales inputs by 2.
    struct FakeScheduler {
        ts: Vec<i64>,
        seen_eps: Vec<f32>,
    }

    impl Scheduler for FakeScheduler {
        fn timesteps(&self) -> &[i64] {
            &self.ts
        }
        fn init_noise_sigma(&self) -> f32 {
            1.0
        }
        fn scale_model_input(&self, x: ArrayView4<f32>, _t: i64) -> Array4<f32> {
            x.mapv(|v| v * 2.0)
        }
        fn step(
            &mut self,
            eps: ArrayView4<f32>,
            _t: i64,
            x: ArrayView4<f32>,
            _noise: &mut dyn NoiseSource,
        ) -> StepOutput {
            self.seen_eps.push(eps[[0, 0, 0, 0]]);
            StepOutput {
                prev_sample: &x - &eps,
                denoised: None,
            }
        }
    }

    struct NoNoise;
    impl NoiseSource for NoNoise {
        fn randn(&mut self, _shape: [usize; 4]) -> Array4<f32> {
            panic!("the fake scheduler draws no noise")
        }
    }

    /// The loop's result, the fakes after it, and the (index, timestep) of every event.
    type Outcome = (
        eyre::Result<Array4<f32>>,
        FakeUnet,
        FakeScheduler,
        Vec<(usize, i64)>,
    );

    fn run(guidance: f32, rows: usize, cancel_after: Option<usize>) -> Outcome {
        let mut unet = FakeUnet { calls: vec![] };
        let mut sched = FakeScheduler {
            ts: vec![900, 500, 100],
            seen_eps: vec![],
        };
        let context = Array3::<f32>::zeros((rows, 77, 8));
        let cancel = AtomicBool::new(false);
        let mut events = Vec::new();
        let res = denoise(
            &mut unet,
            &mut sched,
            &mut NoNoise,
            Array4::zeros((1, 4, 2, 2)),
            &Conditioning {
                context: context.view(),
                guidance,
            },
            &cancel,
            &mut |ev| {
                events.push((ev.index, ev.timestep));
                assert_eq!(ev.total, 3);
                if Some(ev.index + 1) == cancel_after {
                    cancel.store(true, Ordering::Relaxed);
                }
            },
        )
        .map(|(l, timings)| {
            assert_eq!(timings.len(), 3, "one timing per step");
            assert!(
                timings.iter().all(|t| t.controlnet.is_zero()),
                "a UNet fed by nothing reports no ControlNet time"
            );
            l
        });
        (res, unet, sched, events)
    }

    #[test]
    fn guidance_runs_one_batch_of_two_and_combines_uncond_plus_g_times_difference() {
        let (res, unet, sched, events) = run(7.5, 2, None);
        res.unwrap();
        assert_eq!(unet.calls, vec![(2, 900), (2, 500), (2, 100)]);
        assert_eq!(events, vec![(0, 900), (1, 500), (2, 100)]);
        // uncond = 10 + t/1000, cond = 20 + t/1000 → uncond + 7.5 · 10
        let expected: Vec<f32> = [900.0f32, 500.0, 100.0]
            .iter()
            .map(|t| (10.0 + t / 1000.0) + 7.5 * 10.0)
            .collect();
        for (got, want) in sched.seen_eps.iter().zip(&expected) {
            assert!((got - want).abs() < 1e-4, "{got} vs {want}");
        }
    }

    #[test]
    fn without_guidance_the_unet_sees_batch_one_and_its_output_unchanged() {
        let (res, unet, sched, _) = run(1.0, 1, None);
        let latents = res.unwrap();
        assert!(unet.calls.iter().all(|(b, _)| *b == 1));
        assert_eq!(sched.seen_eps[0], 10.9);
        // x ← x − ε three times from 0
        let want = -(10.9f32 + 10.5 + 10.1);
        assert!((latents[[0, 0, 0, 0]] - want).abs() < 1e-4);
    }

    /// A denoiser fed by another model: each call "spends" `aux` in it (the ControlNet).
    struct Fed {
        inner: FakeUnet,
        aux: Duration,
        pending: Duration,
    }

    impl Denoiser for Fed {
        fn predict(
            &mut self,
            sample: ArrayView4<f32>,
            t: f32,
            context: ArrayView3<f32>,
        ) -> eyre::Result<Array4<f32>> {
            self.pending = self.aux;
            self.inner.predict(sample, t, context)
        }
        fn take_aux_time(&mut self) -> Duration {
            std::mem::take(&mut self.pending)
        }
    }

    #[test]
    fn a_feeding_models_time_is_reported_apart_from_the_unets() {
        let aux = Duration::from_millis(3);
        let mut fed = Fed {
            inner: FakeUnet { calls: vec![] },
            aux,
            pending: Duration::ZERO,
        };
        let mut sched = FakeScheduler {
            ts: vec![900, 500],
            seen_eps: vec![],
        };
        let context = Array3::<f32>::zeros((2, 77, 8));
        let (_, timings) = denoise(
            &mut fed,
            &mut sched,
            &mut NoNoise,
            Array4::zeros((1, 4, 2, 2)),
            &Conditioning {
                context: context.view(),
                guidance: 7.5,
            },
            &AtomicBool::new(false),
            &mut |_| {},
        )
        .unwrap();
        // Each step reports the feeding model's share it was given, taken once per call.
        assert!(timings.iter().all(|t| t.controlnet == aux), "{timings:?}");
        assert!(fed.pending.is_zero(), "the last share was taken");
    }

    #[test]
    fn cancel_stops_between_steps_and_says_how_far_it_got() {
        let (res, unet, _, events) = run(7.5, 2, Some(1));
        let err = res.unwrap_err();
        let cancelled = err.downcast_ref::<Cancelled>().expect("a Cancelled error");
        assert_eq!(cancelled.completed, 1);
        assert_eq!(unet.calls.len(), 1);
        assert_eq!(events.len(), 1);
    }

    /// ε = 1 everywhere, except NaN in one element at the `bad`-th call.
    struct NanAt {
        bad: usize,
        calls: usize,
    }

    impl Denoiser for NanAt {
        fn predict(
            &mut self,
            sample: ArrayView4<f32>,
            _t: f32,
            _context: ArrayView3<f32>,
        ) -> eyre::Result<Array4<f32>> {
            self.calls += 1;
            let mut out = Array4::from_elem(sample.raw_dim(), 1.0);
            if self.calls == self.bad {
                out[[0, 1, 1, 0]] = f32::NAN;
            }
            Ok(out)
        }
    }

    fn run_with(
        denoiser: &mut dyn Denoiser,
        sched: &mut dyn Scheduler,
        guidance: f32,
        rows: usize,
    ) -> (eyre::Result<Array4<f32>>, Vec<usize>) {
        let context = Array3::<f32>::zeros((rows, 77, 8));
        let mut events = Vec::new();
        let res = denoise(
            denoiser,
            sched,
            &mut NoNoise,
            Array4::zeros((1, 4, 2, 2)),
            &Conditioning {
                context: context.view(),
                guidance,
            },
            &AtomicBool::new(false),
            &mut |ev| events.push(ev.index),
        )
        .map(|(l, _)| l);
        (res, events)
    }

    #[test]
    fn a_nan_from_the_unet_stops_the_loop_at_its_step_before_the_steps_event() {
        let mut unet = NanAt { bad: 2, calls: 0 };
        let mut sched = FakeScheduler {
            ts: vec![900, 500, 100],
            seen_eps: vec![],
        };
        let (res, events) = run_with(&mut unet, &mut sched, 7.5, 2);
        let err = res.unwrap_err();
        let nf = err.downcast_ref::<NonFinite>().expect("a NonFinite error");
        assert_eq!(nf.tensor, Tensor::UnetOutput);
        assert_eq!(
            nf.step,
            Some(StepAt {
                index: 1,
                total: 3,
                t: 500
            })
        );
        assert_eq!((nf.count.nan, nf.count.inf, nf.count.len), (1, 0, 32));
        assert_eq!(events, vec![0], "step 2 sent no event");
        assert_eq!(unet.calls, 2, "no UNet call after the bad one");
        assert_eq!(sched.seen_eps.len(), 1, "the scheduler never saw the NaN");
        assert!(
            err.to_string()
                .starts_with("the UNet's output at step 2 of 3 (t=500) has 1 NaN value (of 32)"),
            "{err}"
        );
    }

    /// Steps to x · 1e30, which overflows f32 on its second step.
    struct Explodes;

    impl Scheduler for Explodes {
        fn timesteps(&self) -> &[i64] {
            &[900, 500, 100]
        }
        fn init_noise_sigma(&self) -> f32 {
            1.0
        }
        fn scale_model_input(&self, x: ArrayView4<f32>, _t: i64) -> Array4<f32> {
            x.to_owned()
        }
        fn step(
            &mut self,
            eps: ArrayView4<f32>,
            _t: i64,
            x: ArrayView4<f32>,
            _noise: &mut dyn NoiseSource,
        ) -> StepOutput {
            StepOutput {
                prev_sample: (&x + &eps) * 1e30,
                denoised: None,
            }
        }
    }

    #[test]
    fn an_overflow_in_the_scheduler_is_blamed_on_the_scheduler_not_the_unet() {
        let mut unet = NanAt { bad: 0, calls: 0 };
        let (res, events) = run_with(&mut unet, &mut Explodes, 1.0, 1);
        let err = res.unwrap_err();
        let nf = err.downcast_ref::<NonFinite>().expect("a NonFinite error");
        assert_eq!(nf.tensor, Tensor::SchedulerLatents);
        assert_eq!(nf.step.map(|s| s.index), Some(1));
        assert_eq!((nf.count.inf, nf.count.len), (16, 16));
        assert_eq!(events, vec![0]);
        assert!(
            err.to_string().starts_with(
                "the latents after the scheduler's step at step 2 of 3 (t=500) have 16 Inf values"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_guidance_scale_that_overflows_is_blamed_on_guidance() {
        let mut unet = FakeUnet { calls: vec![] };
        let mut sched = FakeScheduler {
            ts: vec![900],
            seen_eps: vec![],
        };
        let (res, _) = run_with(&mut unet, &mut sched, f32::MAX, 2);
        let err = res.unwrap_err();
        let nf = err.downcast_ref::<NonFinite>().expect("a NonFinite error");
        assert_eq!(nf.tensor, Tensor::Guided);
    }
}
