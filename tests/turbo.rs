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

fn run_on(model: &mut Model, rt: &Runtime, req: &Request) -> speedscape::pipeline::RunReport {
    let cancel = std::sync::atomic::AtomicBool::new(false);
    speedscape::pipeline::generate(rt, model, req, &cancel, &mut |_| {})
        .unwrap()
        .report
}

fn request(scheduler: SchedulerKind, steps: usize, guidance: f32, unet: &str) -> Request {
    Request {
        guidance,
        unet: unet.into(),
        ..Request::new("a photo of a cat", scheduler, steps, 1)
    }
}

/// An SD-Turbo folder is one: its base is labelled SD-Turbo, its own scheduler config is not
/// reported as a stranger's, and SD v1.5's LoRA variants are not asked of it.
#[test]
fn an_sd_turbo_folder_is_labelled_and_reported_by_its_family() {
    let guard = model().lock().unwrap();
    let model = &guard.1;
    assert_eq!(model.family(), Some("sd-turbo"));
    let names: Vec<(&str, &str)> = model
        .variants
        .iter()
        .map(|v| (v.name.as_str(), v.label.as_str()))
        .collect();
    assert_eq!(names, [("base", "SD-Turbo")]);
    assert!(
        !model.scheduler_report.warning,
        "{}",
        model.scheduler_report.message
    );
    assert!(
        model
            .scheduler_report
            .message
            .contains("sd-turbo model's own scheduler config")
            && model.scheduler_report.message.contains("\"trailing\""),
        "{}",
        model.scheduler_report.message
    );
    let one = model
        .one_step("base")
        .expect("SD-Turbo's base is a one-step UNet");
    assert_eq!((one.max_steps, one.guidance), (4, 0.0));
    assert_eq!(one.scheduler, Some(SchedulerKind::Euler));
}

/// Past what the distillation gave (guidance above 1, more than 4 steps, another scheduler)
/// a run says so with the numbers, and runs as diffusers would: guidance 7.5 is real
/// classifier-free guidance at batch 2. A run within the design says nothing.
#[test]
fn a_one_step_run_past_its_design_warns_with_the_numbers() {
    let mut guard = model().lock().unwrap();
    let (rt, model) = &mut *guard;
    let within = run_on(model, rt, &request(SchedulerKind::Euler, 2, 0.0, "base"));
    assert!(
        !within
            .warnings
            .iter()
            .any(|w| w.contains("one-step") || w.contains("distilled")),
        "{:?}",
        within.warnings
    );
    let past = run_on(
        model,
        rt,
        &request(SchedulerKind::DpmSolverPp, 8, 7.5, "base"),
    );
    let said = past.warnings.join("\n");
    assert!(
        said.contains("distilled for guidance 0") && said.contains("guidance 7.5"),
        "{said}"
    );
    assert!(
        said.contains("1 to 4 steps") && said.contains("8 steps"),
        "{said}"
    );
    assert!(
        said.contains("the euler scheduler") && said.contains("--scheduler euler"),
        "{said}"
    );
    // Guidance is run, not dropped: the guided image is not the unguided one.
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let mut image = |g: f32| {
        let req = request(SchedulerKind::Euler, 1, g, "base");
        speedscape::pipeline::generate(rt, model, &req, &cancel, &mut |_| {})
            .unwrap()
            .image
    };
    let (plain, guided) = (image(0.0), image(7.5));
    let moved = plain
        .iter()
        .zip(guided.iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        moved > 1e-3,
        "guidance 7.5 left the image as guidance 0 drew it ({moved})"
    );
}

/// A one-step variant recorded in a folder's manifest runs with the scheduler config of its
/// record (Euler at trailing spacing: 2 steps at t = 999, 499), while the base of the same
/// folder keeps the folder's (SD v1.5's: linspace, t = 999, 0).
#[test]
fn a_one_step_variant_runs_with_its_own_scheduler_config() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("tiny");
    common::copy_dir(&root().join("models/tiny"), &folder);
    common::copy_dir(&root().join("models/tiny/unet"), &folder.join("unet_turbo"));
    let path = folder.join("manifest.json");
    let mut manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let sd_turbo: Value = serde_json::from_str(
        &std::fs::read_to_string(model_dir().join("scheduler/scheduler_config.json")).unwrap(),
    )
    .unwrap();
    manifest["variants"]["turbo"] = serde_json::json!({
        "loras": [], "unet": "unet_turbo", "text_encoder": "text_encoder",
        "one_step": {"steps": 4, "scheduler": sd_turbo, "guidance": 0.0, "teacher": "a test"}
    });
    std::fs::write(&path, serde_json::to_string(&manifest).unwrap()).unwrap();
    assert_eq!(
        speedscape::models::folder_one_step(&folder).as_deref(),
        Some("turbo")
    );
    let guard = model().lock().unwrap();
    let rt = &guard.0;
    let mut tiny = Model::open(rt, &folder, speedscape::models::default_variants()).unwrap();
    assert_eq!(tiny.variant("turbo").unwrap().label, "one-step (turbo)");
    let turbo = run_on(
        &mut tiny,
        rt,
        &request(SchedulerKind::Euler, 2, 0.0, "turbo"),
    );
    assert_eq!(turbo.timesteps, [999, 499]);
    let base = run_on(
        &mut tiny,
        rt,
        &request(SchedulerKind::Euler, 2, 0.0, "base"),
    );
    assert_eq!(base.timesteps, [999, 0]);
}

/// An SD 1.5 LoRA (the tiny SD 1.5 look-alike's style adapter) on the SD-Turbo folder is refused
/// before any session loads, naming both shapes and the family this folder's manifest records.
#[test]
fn an_sd15_lora_on_the_sd_turbo_folder_is_refused_naming_the_family() {
    let mut guard = model().lock().unwrap();
    let (rt, model) = &mut *guard;
    let file = root().join("models/tiny/loras/style.safetensors");
    let lora = speedscape::lora::AdapterWeight::parse(&format!("{}=1", file.display())).unwrap();
    let Err(e) = model.unet_with(rt, "base", &[lora]) else {
        panic!("an SD 1.5 LoRA fused into SD-Turbo's UNet");
    };
    let said = format!("{e:#}");
    assert!(
        said.contains("this model is SD-Turbo (SD 2.1's architecture)")
            && said.contains("but")
            && said.contains("has it as"),
        "{said}"
    );
}
