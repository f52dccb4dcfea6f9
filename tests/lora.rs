//! Run-time LoRA: adapters fused into the graphs' initializers when a session is made.
//!
//! On the tiny model (`models/tiny`, whose `loras/` hold the adapters its pre-fused variants
//! were exported with), `base` + an adapter at 1.0 must give the pre-fused variant's image,
//! and the fused weights must be the exporter's.

use std::path::PathBuf;
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
}
