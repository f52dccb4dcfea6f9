//! One image from a prompt, on the CPU: DPM-Solver++ in 20 steps, seed 42.
//!
//! ```text
//! cargo run -p speedscape-core --example txt2img -- [MODEL_DIR [PROMPT [OUT.png]]]
//! ```
//! MODEL_DIR defaults to the repository's embedded micro model (`models/micro`), PROMPT to one
//! that model knows, OUT.png to `txt2img.png` in the system's temporary folder. ONNX Runtime is
//! found as the crate finds it: `ORT_DYLIB_PATH`, the `onnxruntime` wheel of `python3`, a
//! `.venv` in the working directory or above the executable.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use speedscape_core::models::{Model, default_variants};
use speedscape_core::pipeline::{Request, generate};
use speedscape_core::runtime::{Device, Runtime, SearchPlan};
use speedscape_core::schedulers::SchedulerKind;

fn main() -> eyre::Result<()> {
    let mut args = std::env::args().skip(1);
    let model_dir = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/micro"));
    let prompt = args
        .next()
        .unwrap_or_else(|| "a large yellow star on a blue background at sunset".to_string());
    let out_path = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("txt2img.png"));

    let rt = Runtime::init(&SearchPlan::new(None, None), Device::Cpu)?;
    let mut model = Model::open(&rt, &model_dir, default_variants())?;
    let request = Request::new(&prompt, SchedulerKind::DpmSolverPp, 20, 42);
    let output = generate(
        &rt,
        &mut model,
        &request,
        &AtomicBool::new(false),
        &mut |_| {},
    )?;
    output.rgb8().save(&out_path)?;

    let t = &output.report.timings;
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    println!("image: {}", out_path.display());
    println!(
        "timings: text encoder {:.1} ms, UNet {:.1} ms/step × {}, VAE {:.1} ms, total {:.1} ms",
        ms(t.text),
        ms(t.unet_total()) / t.unet.len() as f64,
        t.unet.len(),
        ms(t.vae),
        ms(t.total)
    );
    Ok(())
}
