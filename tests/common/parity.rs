//! What the diffusers parity tests share: a fixture folder's tensors (`.npy`, named in its
//! `index.json`) and one run of our pipeline checked against a diffusers run, step by step.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use ndarray::{ArrayD, Ix4, Ix5};
use ndarray_npy::read_npy;
use serde_json::Value;

use speedscape::models::Model;
use speedscape::pipeline::{self, Request, StepEvent};
use speedscape::runtime::Runtime;

/// The tensor `key` of fixture run `run`, from the fixture folder `dir`.
pub fn array(dir: &Path, run: &Value, key: &str) -> ArrayD<f32> {
    let file = run["files"][key]["file"].as_str().unwrap();
    read_npy(dir.join(file)).unwrap()
}

/// The token ids `key` of fixture run `run`.
pub fn ids(dir: &Path, run: &Value, key: &str) -> Vec<i64> {
    let file = run["files"][key]["file"].as_str().unwrap();
    let a: ArrayD<i64> = read_npy(dir.join(file)).unwrap();
    a.iter().copied().collect()
}

pub fn max_abs_diff(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Runs `req` and checks it against the diffusers run `run` of the fixture folder `dir`: the
/// timesteps exactly, the final image within `tolerance` (max abs), each step's latents recorded
/// as an error relative to their scale (in the failure message and the returned report line).
/// `on_step` asserts more of each step.
pub fn check_run(
    (rt, model): (&Runtime, &mut Model),
    req: &Request,
    (dir, run): (&Path, &Value),
    tolerance: f32,
    on_step: &dyn Fn(&StepEvent),
) -> String {
    let name = run["name"].as_str().unwrap();
    let want_latents = array(dir, run, "latents")
        .into_dimensionality::<Ix5>()
        .unwrap();
    let mut step_errors: Vec<f32> = Vec::new();
    let out = pipeline::generate(rt, model, req, &AtomicBool::new(false), &mut |ev| {
        on_step(&ev);
        let want = want_latents.index_axis(ndarray::Axis(0), ev.index);
        let scale = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        let err = ev
            .latents
            .iter()
            .zip(want.iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        step_errors.push(err / scale);
    })
    .unwrap_or_else(|e| panic!("{name}: {e:?}"));
    let timesteps: Vec<i64> = run["timesteps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_i64().unwrap())
        .collect();
    assert_eq!(out.report.timesteps, timesteps, "{name}: timesteps");
    let want = array(dir, run, "image")
        .into_dimensionality::<Ix4>()
        .unwrap();
    let err = max_abs_diff(&out.image.clone().into_dyn(), &want.into_dyn());
    let worst_step = step_errors.iter().copied().fold(0.0, f32::max);
    assert!(
        err <= tolerance,
        "{name}: image max abs err {err} > {tolerance}; per-step latent rel errors {step_errors:?}"
    );
    format!("{name}: image max abs err {err:.2e}, worst per-step latent rel err {worst_step:.2e}")
}
