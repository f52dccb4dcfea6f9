//! Parity with diffusers on the tiny SD-Turbo look-alike (`models/tiny_turbo`).
//!
//! `tests/fixtures/turbo/` holds what diffusers' `AutoPipelineForText2Image` (→
//! `StableDiffusionPipeline`, EulerDiscreteScheduler at `trailing` spacing) produced on exactly
//! these weights at 1 and 4 steps, guidance 0 (see `make_turbo_fixtures.py`). Our run must pad
//! the prompt with the folder's pad token (`!`, id 0), run the UNet at batch 1 without a negative
//! prompt, take Euler's trailing schedule from the folder's scheduler config, and land within
//! 2e-3 of diffusers' image on [0, 1] pixels.

mod common;

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use ndarray::ArrayD;
use serde_json::Value;

use common::parity;
use speedscape::models::{Model, ModelGeometry};
use speedscape::pipeline::{Request, StepEvent};
use speedscape::rng::RngSource;
use speedscape::runtime::{Device, Runtime, SearchPlan};
use speedscape::schedulers::{SchedulerKind, SchedulerOptions};

const IMAGE_TOLERANCE: f32 = 2e-3;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn model_dir() -> PathBuf {
    root().join("models/tiny_turbo")
}

fn fixtures() -> PathBuf {
    root().join("tests/fixtures/turbo")
}

fn runs() -> Vec<Value> {
    let text = std::fs::read_to_string(fixtures().join("index.json")).unwrap();
    let index: Value = serde_json::from_str(&text).unwrap();
    index["runs"].as_array().unwrap().clone()
}

fn array(run: &Value, key: &str) -> ArrayD<f32> {
    parity::array(&fixtures(), run, key)
}

fn ids(run: &Value) -> Vec<i64> {
    parity::ids(&fixtures(), run, "prompt_ids")
}

/// One model shared by the tests of this file (sessions are costly to create).
fn model() -> &'static Mutex<(Runtime, Model)> {
    static MODEL: OnceLock<Mutex<(Runtime, Model)>> = OnceLock::new();
    MODEL.get_or_init(|| {
        let rt = Runtime::init(&SearchPlan::new(None, Some(&root())), Device::Cpu)
            .expect("ONNX Runtime (run ./test.sh, which installs it into .venv)");
        let model = Model::open(&rt, &model_dir(), Vec::new()).unwrap();
        Mutex::new((rt, model))
    })
}

#[test]
fn the_tokenizer_pads_with_the_folders_pad_token_as_diffusers_did() {
    let guard = model().lock().unwrap();
    let tok = &guard.1.tokenizer;
    assert_eq!(tok.pad, 0, "SD 2.x pads with \"!\" (id 0)");
    assert_eq!(
        tok.pad_source,
        ("!".to_string(), Some("special_tokens_map.json"))
    );
    for run in runs() {
        let ours = tok.encode(run["prompt"].as_str().unwrap()).unwrap();
        assert_eq!(ours.ids_i64(), ids(&run), "prompt ids of {}", run["name"]);
        assert_eq!(ours.ids[ours.count + 2..].iter().max(), Some(&0));
    }
}

#[test]
fn shapes_come_from_the_folder_not_sd15s_constants() {
    let guard = model().lock().unwrap();
    let model = &guard.1;
    let g = ModelGeometry::read(&model_dir()).unwrap();
    assert_eq!(
        (g.sample_size, g.latent_channels, g.vae_scale_factor),
        (8, 4, 8)
    );
    assert_eq!(
        model.text_encoder.hidden_dim,
        Some(8),
        "the tiny turbo's text width"
    );
}

#[test]
fn the_manifest_records_the_sd_turbo_family() {
    let manifest = speedscape::models::manifest::Manifest::read(&model_dir())
        .unwrap()
        .unwrap();
    assert_eq!(manifest.family.as_deref(), Some("sd-turbo"));
    assert!(
        manifest
            .family_evidence
            .iter()
            .any(|e| e.contains("EulerDiscreteScheduler timestep_spacing trailing")),
        "{:?}",
        manifest.family_evidence
    );
}

#[test]
fn text_embeddings_match_diffusers() {
    let mut guard = model().lock().unwrap();
    let model = &mut guard.1;
    for run in runs() {
        let ours = model.text_encoder.encode(&ids(&run), 1).unwrap().into_dyn();
        let err = parity::max_abs_diff(&ours, &array(&run, "prompt_embeds"));
        assert!(err < 1e-4, "{}: max abs err {err}", run["name"]);
    }
}

/// 1 and 4 steps at guidance 0, end to end: timesteps, every step's latents, the image.
#[test]
fn one_and_four_steps_reproduce_the_diffusers_image() {
    let mut guard = model().lock().unwrap();
    let (rt, model) = &mut *guard;
    let mut report = Vec::new();
    for run in runs() {
        assert_eq!(run["scheduler"], "EulerDiscreteScheduler");
        let req = Request {
            scheduler_options: SchedulerOptions::default(),
            guidance: run["guidance_scale"].as_f64().unwrap() as f32,
            rng: RngSource::TorchCpu,
            unet: "unet".into(),
            width: Some(run["width"].as_u64().unwrap() as usize),
            height: Some(run["height"].as_u64().unwrap() as usize),
            ..Request::new(
                run["prompt"].as_str().unwrap(),
                SchedulerKind::Euler,
                run["num_inference_steps"].as_u64().unwrap() as usize,
                run["seed"].as_u64().unwrap(),
            )
        };
        let at_batch_1 =
            |ev: &StepEvent| assert_eq!(ev.latents.shape()[0], 1, "batch 1 at guidance 0");
        report.push(parity::check_run(
            (rt, model),
            &req,
            (&fixtures(), &run),
            IMAGE_TOLERANCE,
            &at_batch_1,
        ));
    }
    println!("{}", report.join("\n"));
}
