//! Run-time LoRA: adapters fused into the graphs' initializers when a session is made.
//!
//! On the tiny model (`models/tiny`, whose `loras/` hold the adapters its pre-fused variants
//! were exported with), `base` + an adapter at 1.0 must give the pre-fused variant's image.
//! Against diffusers itself (`tests/fixtures/lora/`, written by `make_lora_fixtures.py`:
//! `load_lora_weights` + `set_adapters(names, weights)`, unfused, torch CPU generator), every
//! case — combined and negative weights, diffusers/peft and kohya files, LoCon convolutions,
//! text-encoder layers, an fp16 export and an `optimum-cli`-style export — lands within 2e-3 of
//! diffusers' image. Refusals of bad files are checked on the fixtures' bad files.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, OnceLock};

use speedscape::lora::AdapterWeight;
use speedscape::models::{Model, default_variants};
use speedscape::pipeline::{self, Request};
use speedscape::rng::RngSource;
use speedscape::runtime::{Device, Runtime, SearchPlan};
use speedscape::schedulers::SchedulerKind;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn runtime() -> Runtime {
    Runtime::init(&SearchPlan::new(None, Some(&root())), Device::Cpu)
        .expect("ONNX Runtime (run ./test.sh, which installs it into .venv)")
}

/// One tiny model shared by the tests of this file.
fn tiny() -> &'static Mutex<(Runtime, Model)> {
    static MODEL: OnceLock<Mutex<(Runtime, Model)>> = OnceLock::new();
    MODEL.get_or_init(|| {
        let rt = runtime();
        let model = Model::open(&rt, &root().join("models/tiny"), default_variants()).unwrap();
        Mutex::new((rt, model))
    })
}

fn lora(spec: &str) -> AdapterWeight {
    AdapterWeight::parse(spec).unwrap()
}

fn image(unet: &str, loras: Vec<AdapterWeight>) -> (ndarray::Array4<f32>, pipeline::RunReport) {
    let mut guard = tiny().lock().unwrap_or_else(|e| e.into_inner());
    let (rt, model) = &mut *guard;
    let req = Request {
        unet: unet.into(),
        loras,
        guidance: 1.5,
        rng: RngSource::TorchCpu,
        ..Request::new("a red circle", SchedulerKind::Lcm, 4, 7)
    };
    let out = pipeline::generate(rt, model, &req, &AtomicBool::new(false), &mut |_| {}).unwrap();
    (out.image, out.report)
}

fn max_abs(a: &ndarray::Array4<f32>, b: &ndarray::Array4<f32>) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn base_with_an_adapter_at_one_gives_the_pre_fused_variants_image() {
    let (fused, _) = image("lcm", vec![]);
    let (runtime, report) = image("base", vec![lora("lcm=1.0")]);
    let (plain, _) = image("base", vec![]);
    let d = max_abs(&fused, &runtime);
    eprintln!(
        "runtime lcm=1 vs pre-fused unet_lcm: max abs {d:e}; vs base {:e}",
        max_abs(&plain, &runtime)
    );
    assert!(d <= 1e-5, "max abs {d}");
    assert!(
        max_abs(&plain, &runtime) > 1e-2,
        "the adapter changed nothing"
    );
    assert_eq!(report.adapters.len(), 1);
    assert_eq!(report.adapters[0].name, "lcm");
    assert_eq!(report.adapters[0].components, ["unet"]);
}

#[test]
fn every_pre_fused_variant_is_base_with_its_adapters_at_one() {
    // style's file scales by lora_alpha / r = 2 from its metadata; lcm's has none (scale 1).
    for (variant, adapters) in [
        ("style", vec!["style=1"]),
        ("lcm_style", vec!["lcm=1", "style=1"]),
    ] {
        let (fused, _) = image(variant, vec![]);
        let (runtime, report) = image("base", adapters.iter().map(|a| lora(a)).collect());
        let d = max_abs(&fused, &runtime);
        eprintln!("runtime {adapters:?} vs pre-fused {variant}: max abs {d:e}");
        assert!(d <= 1e-5, "{variant}: max abs {d}");
        assert_eq!(report.adapters.len(), adapters.len());
    }
    // On top of a pre-fused variant (whose nodes the exporter named `…/to_q/base_layer/MatMul`).
    let (fused, _) = image("lcm_style", vec![]);
    let (stacked, _) = image("lcm", vec![lora("style=1")]);
    let d = max_abs(&fused, &stacked);
    eprintln!("runtime style=1 on pre-fused lcm vs pre-fused lcm_style: max abs {d:e}");
    assert!(d <= 1e-5, "lcm + style: max abs {d}");
}

fn fixtures() -> PathBuf {
    root().join("tests/fixtures/lora")
}

fn index() -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join("index.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn npy(file: &str) -> ndarray::Array4<f32> {
    let a: ndarray::ArrayD<f32> = ndarray_npy::read_npy(fixtures().join(file)).unwrap();
    a.into_dimensionality().unwrap()
}

fn kind(class: &str) -> SchedulerKind {
    match class {
        "DPMSolverMultistepScheduler" => SchedulerKind::DpmSolverPp,
        "LCMScheduler" => SchedulerKind::Lcm,
        other => panic!("fixture scheduler {other} not mapped"),
    }
}

/// The request a fixture case describes (its `--lora` specs as a user writes them).
fn case_request(case: &serde_json::Value) -> Request {
    let s = |k: &str| case[k].as_str().unwrap_or_default().to_string();
    Request {
        negative_prompt: s("negative_prompt"),
        guidance: case["guidance_scale"].as_f64().unwrap() as f32,
        unet: s("unet"),
        loras: case["cli_lora"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| lora(v.as_str().unwrap()))
            .collect(),
        rng: RngSource::TorchCpu,
        width: case["width"].as_u64().map(|v| v as usize),
        height: case["height"].as_u64().map(|v| v as usize),
        ..Request::new(
            &s("prompt"),
            kind(case["scheduler"].as_str().unwrap()),
            case["num_inference_steps"].as_u64().unwrap() as usize,
            case["seed"].as_u64().unwrap(),
        )
    }
}

fn run_in(model_dir: &Path, req: &Request) -> pipeline::RunOutput {
    let rt = runtime();
    let mut model = Model::open(&rt, model_dir, default_variants()).unwrap();
    pipeline::generate(&rt, &mut model, req, &AtomicBool::new(false), &mut |_| {}).unwrap()
}

#[test]
fn every_case_matches_diffusers_with_its_adapters_set() {
    for case in index()["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let req = case_request(case);
        let out = run_in(&root().join(case["model_dir"].as_str().unwrap()), &req);
        let want = npy(case["files"]["image"]["file"].as_str().unwrap());
        let d = max_abs(&out.image, &want);
        let effect = case["effect"]["image_max_abs_vs_no_adapters"]
            .as_f64()
            .unwrap();
        eprintln!("{name}: max abs {d:e} against diffusers (the adapters move it by {effect:.3})");
        assert!(d <= 2e-3, "{name}: {d}");
        assert_eq!(out.report.adapters.len(), req.loras.len(), "{name}");
    }
}

#[test]
fn an_optimum_cli_export_with_weights_inside_the_file_takes_a_locon_lora() {
    // models/tiny with its UNet swapped for the bare-UNet export optimum-cli makes (no /unet
    // wrapper in node names, weights inside model.onnx, 0-d timestep): the `negative` case.
    let dir = tempfile::tempdir().unwrap();
    common::copy_dir(&root().join("models/tiny"), dir.path());
    std::fs::remove_dir_all(dir.path().join("unet")).unwrap();
    std::fs::create_dir(dir.path().join("unet")).unwrap();
    std::fs::copy(
        fixtures().join("optimum_unet/model.onnx"),
        dir.path().join("unet/model.onnx"),
    )
    .unwrap();
    let index = index();
    let case = index["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "negative")
        .unwrap();
    let out = run_in(dir.path(), &case_request(case));
    let d = max_abs(
        &out.image,
        &npy(case["files"]["image"]["file"].as_str().unwrap()),
    );
    eprintln!("optimum-style UNet + peft_conv=-0.5: max abs {d:e} against diffusers");
    assert!(d <= 2e-3, "{d}");
}

/// An fp16 export keeps only fp16(W): run-time fusion computes fp16(fp16(W) + ΔW) where the
/// exporter computed fp16(W + ΔW) from the fp32 weights, so a few fused weights differ by one
/// fp16 ulp and the images by a few 1e-4 — a fifth of what fp16 itself costs against the fp32
/// reference (the fp16 case above lands 1.2e-3 from diffusers).
#[test]
fn an_fp16_export_at_weight_one_gives_its_pre_fused_variants_image_within_fp16_rounding() {
    let dir = fixtures().join("tiny_fp16");
    let req = |unet: &str, loras: Vec<AdapterWeight>| Request {
        unet: unet.into(),
        loras,
        guidance: 1.5,
        rng: RngSource::TorchCpu,
        ..Request::new("a red circle", SchedulerKind::Lcm, 4, 7)
    };
    let fused = run_in(&dir, &req("lcm", vec![])).image;
    let runtime = run_in(&dir, &req("base", vec![lora("lcm=1")])).image;
    let d = max_abs(&fused, &runtime);
    let base = run_in(&dir, &req("base", vec![])).image;
    eprintln!(
        "fp16: runtime lcm=1 vs pre-fused unet_lcm: max abs {d:e} (the adapter moves it by {:e})",
        max_abs(&base, &fused)
    );
    assert!(d <= 5e-4, "{d}");
}

#[test]
fn the_fixtures_bad_files_are_refused_by_name() {
    let expect: [(&str, &[&str]); 5] = [
        ("loha", &["LoHa", "hada_"]),
        ("dora", &["DoRA", "lora_magnitude_vector"]),
        ("sd2_shapes", &["attn2.to_k", "[32, 1024]", "[32, 32]"]),
        ("unknown_keys", &["no LoRA tensors", "emb_params"]),
        ("not_safetensors", &["not a safetensors file"]),
    ];
    let mut guard = tiny().lock().unwrap_or_else(|e| e.into_inner());
    let (rt, model) = &mut *guard;
    for (name, words) in expect {
        let spec = format!("tests/fixtures/lora/{name}.safetensors=1");
        let req = Request {
            loras: vec![lora(&spec)],
            ..Request::new("a red circle", SchedulerKind::Lcm, 2, 1)
        };
        let Err(e) = pipeline::generate(rt, model, &req, &AtomicBool::new(false), &mut |_| {})
        else {
            panic!("{name} was accepted");
        };
        let parts = speedscape::error::parts(&e);
        let text = parts.causes.join("\n");
        for w in words {
            assert!(text.contains(w), "{name}: {w:?} not in {text}");
        }
        assert_eq!(parts.fixes.len(), 1, "{name}: {parts:?}");
    }
}
