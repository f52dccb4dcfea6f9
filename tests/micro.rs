//! The committed micro model (`models/micro`) shows the course's lessons in real images, on the
//! CPU, through our own pipeline (tokenizer, ONNX Runtime, RNG, schedulers).
//!
//! Its evaluation (`models/micro_src/evaluate.py`, in diffusers, on 32 held-out prompts × 2
//! seeds, recorded in the manifest) holds the targets; these tests hold looser ones on a
//! few prompts, so that a change to our pipeline or a re-trained model that loses a lesson fails
//! here: the step-count curve, LCM-LoRA beating DPM-Solver++ at 4 steps, the style only with its
//! trigger (alone and fused with LCM-LoRA), LCM + style keeping the prompt's colours, and the
//! one-step UNet drawing the world in one step where LCM-LoRA at one step does not.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, OnceLock};

use image::RgbImage;
use serde_json::Value;

use speedscape::exercises::RunSpec;
use speedscape::models::{Model, ModelKind, default_variants};
use speedscape::pipeline;
use speedscape::quality::{compare, pixelation, roughness};
use speedscape::rng::RngSource;
use speedscape::runtime::{Device, Runtime, SearchPlan};
use speedscape::schedulers::SchedulerKind;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Prompts of the micro model's world: every colour, every shape, both sizes, each position.
const PROMPTS: [&str; 4] = [
    "a large yellow star on a blue background",
    "a small red circle on the left on a green background",
    "a large purple triangle in the middle on a white background",
    "a large green square on the right on a red background",
];
const TRIGGER: &str = "PixArFK";
/// The least pixelation the style must add with its trigger, here (the evaluation's margins, on
/// 64 images: 0.226 alone and 0.208 fused with LCM-LoRA; its target 0.2; these 4 prompts at seed
/// 42 measured 0.252 and 0.187).
const MARGIN: f64 = 0.1;

/// The micro model, shared by the tests of this file.
fn model() -> &'static Mutex<(Runtime, Model)> {
    static MODEL: OnceLock<Mutex<(Runtime, Model)>> = OnceLock::new();
    MODEL.get_or_init(|| {
        let rt = Runtime::init(&SearchPlan::new(None, Some(&root())), Device::Cpu)
            .expect("ONNX Runtime (run ./test.sh, which installs it into .venv)");
        let model = Model::open(&rt, &root().join("models/micro"), default_variants()).unwrap();
        Mutex::new((rt, model))
    })
}

/// One run of `prompt` at seed 42 on the micro model.
fn run(
    prompt: &str,
    (scheduler, steps, cfg, unet): (SchedulerKind, usize, f32, &str),
    judge: bool,
) -> pipeline::RunOutput {
    let spec = RunSpec {
        label: String::new(),
        scheduler,
        steps,
        cfg,
        unet: unet.into(),
        prompt: None,
        seed: None,
        lora: Vec::new(),
        control: None,
    };
    let mut req = spec.request(prompt, "", 42, RngSource::TorchCuda);
    req.judge = judge;
    let mut guard = model().lock().unwrap_or_else(|e| e.into_inner());
    let (rt, model) = &mut *guard;
    pipeline::generate(rt, model, &req, &AtomicBool::new(false), &mut |_| {}).unwrap()
}

fn image(prompt: &str, scheduler: SchedulerKind, steps: usize, cfg: f32, unet: &str) -> RgbImage {
    run(prompt, (scheduler, steps, cfg, unet), false).rgb8()
}

fn dpm(prompt: &str, steps: usize, unet: &str) -> RgbImage {
    image(prompt, SchedulerKind::DpmSolverPp, steps, 7.5, unet)
}

fn lcm(prompt: &str, steps: usize, unet: &str) -> RgbImage {
    image(prompt, SchedulerKind::Lcm, steps, 1.5, unet)
}

fn mean(v: impl IntoIterator<Item = f64>) -> f64 {
    let v: Vec<f64> = v.into_iter().collect();
    v.iter().sum::<f64>() / v.len() as f64
}

fn manifest() -> Value {
    let text = std::fs::read_to_string(root().join("models/micro/manifest.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The share of pixels within 60 levels (Euclidean, RGB) of `rgb`.
fn share_near(img: &RgbImage, rgb: [u8; 3]) -> f64 {
    let near = img.pixels().filter(|p| {
        let d: f64 = (0..3)
            .map(|c| (f64::from(p[c]) - f64::from(rgb[c])).powi(2))
            .sum();
        d.sqrt() < 60.0
    });
    near.count() as f64 / f64::from(img.width() * img.height())
}

/// A colour of the grammar by name, from the manifest.
fn colour(name: &str) -> [u8; 3] {
    let c = &manifest()["micro"]["grammar"]["colours"][name];
    [0, 1, 2].map(|i| c[i].as_u64().unwrap() as u8)
}

#[test]
fn the_folder_is_the_micro_model_and_the_default() {
    let (rt, model) = &*model().lock().unwrap_or_else(|e| e.into_inner());
    let _ = rt;
    assert_eq!(model.kind(), ModelKind::Micro);
    let g = model
        .grammar()
        .expect("the micro model's manifest has its grammar");
    assert_eq!(g.trigger, TRIGGER);
    for p in PROMPTS {
        assert!(
            g.unknown_words(p).is_empty(),
            "{p}: {:?}",
            g.unknown_words(p)
        );
    }
    let config = speedscape::config::Config::parse("").unwrap();
    let (dir, kind) = speedscape::open::model_dir(&config, None).unwrap();
    assert_eq!(kind, ModelKind::Micro);
    assert!(dir.ends_with("models/micro"), "{}", dir.display());
}

#[test]
fn dpm_solver_converges_by_20_steps_and_decays_below_10() {
    let mut by_steps = [(20, Vec::new()), (10, Vec::new()), (5, Vec::new())];
    for p in PROMPTS {
        let reference = dpm(p, 100, "base");
        for (steps, ssims) in &mut by_steps {
            ssims.push(compare(&reference, &dpm(p, *steps, "base")).unwrap().ssim);
        }
    }
    let [s20, s10, s5] = by_steps.map(|(_, v)| mean(v));
    eprintln!("SSIM vs DPM-Solver++ 100: 20 steps {s20:.3}, 10 steps {s10:.3}, 5 steps {s5:.3}");
    assert!(
        s20 > s10 && s10 > s5,
        "the curve is not ordered: {s20} {s10} {s5}"
    );
    assert!(s20 >= 0.9, "20 steps should be close to 100: {s20}");
    assert!(s5 <= 0.85, "5 steps should have visibly decayed: {s5}");
}

#[test]
fn lcm_lora_at_4_steps_is_cleaner_than_dpm_solver_at_4() {
    let lcm4 = mean(PROMPTS.map(|p| roughness(&lcm(p, 4, "lcm"))));
    let dpm4 = mean(PROMPTS.map(|p| roughness(&dpm(p, 4, "base"))));
    let dpm20 = mean(PROMPTS.map(|p| roughness(&dpm(p, 20, "base"))));
    eprintln!(
        "roughness: LCM-LoRA 4 {lcm4:.3}, DPM-Solver++ 4 {dpm4:.3}, DPM-Solver++ 20 {dpm20:.3}"
    );
    assert!(
        lcm4 < dpm4,
        "LCM 4 {lcm4} is not cleaner than DPM-Solver++ 4 {dpm4}"
    );
}

#[test]
fn the_style_shows_only_with_its_trigger() {
    // PixArFK's block, as the manifest's grammar records it (8 pixels: 2x2 latent pixels).
    let block = manifest()["micro"]["grammar"]["pixel_art"]["block"]
        .as_u64()
        .unwrap() as usize;
    let with = |p: &str| format!("{p}, {TRIGGER}");
    let triggered = mean(PROMPTS.map(|p| pixelation(&dpm(&with(p), 20, "style"), block)));
    let untriggered = mean(PROMPTS.map(|p| pixelation(&dpm(p, 20, "style"), block)));
    let base = mean(PROMPTS.map(|p| pixelation(&dpm(p, 20, "base"), block)));
    let fused = mean(PROMPTS.map(|p| pixelation(&lcm(&with(p), 4, "lcm_style"), block)));
    let summary = format!(
        "pixelation: style + trigger {triggered:.3}, style alone {untriggered:.3}, \
         base {base:.3}, LCM + style 4 steps + trigger {fused:.3}"
    );
    eprintln!("{summary}");
    assert!(triggered > untriggered + MARGIN, "{summary}");
    assert!(fused > untriggered + MARGIN, "{summary}");
    // Without its trigger the style UNet draws what the base draws (the evaluation: 0.142 against
    // the base's 0.148; here 0.147 against 0.147).
    assert!((untriggered - base).abs() < 0.04, "{summary}");
}

/// The prompt's two colours (shape, background) in triggered images from `draw`: every
/// background, and the shape's colour in at least 3 of the 4 images (the small red circle's is the
/// faintest: 0.029 of the pixels with LCM + style here, 0.126 with the style alone; the
/// evaluation's judge reads the colour right in all 64 images of either run).
fn assert_the_prompts_colours_kept(draw: impl Fn(&str) -> RgbImage) {
    let with = |p: &str| format!("{p}, {TRIGGER}");
    let names = [
        ("yellow", "blue"),
        ("red", "green"),
        ("purple", "white"),
        ("green", "red"),
    ];
    let shares: Vec<(String, f64, f64)> = PROMPTS
        .iter()
        .zip(names)
        .map(|(p, (shape, bg))| {
            let img = draw(&with(p));
            let (s, b) = (
                share_near(&img, colour(shape)),
                share_near(&img, colour(bg)),
            );
            (format!("{p}: {shape} {s:.3}, {bg} {b:.3}"), s, b)
        })
        .collect();
    eprintln!("{shares:#?}");
    assert!(shares.iter().all(|(_, _, b)| *b >= 0.2), "{shares:#?}");
    let shapes_kept = shares.iter().filter(|(_, s, _)| *s >= 0.02).count();
    assert!(shapes_kept >= 3, "{shares:#?}");
}

#[test]
fn lcm_and_style_fused_keep_the_prompts_colours() {
    assert_the_prompts_colours_kept(|p| lcm(p, 4, "lcm_style"));
}

/// Exercise 3's first run: guidance 7.5 multiplies what the trigger adds, and a style whose
/// unconditional branch never saw pixel art broke the shapes into wrong colours there.
#[test]
fn the_style_alone_at_cfg_7_5_keeps_the_prompts_colours() {
    assert_the_prompts_colours_kept(|p| dpm(p, 20, "style"));
}

#[test]
fn the_manifest_records_the_training_and_the_evaluation() {
    let m = manifest();
    let micro = &m["micro"];
    let total = micro["total_wall_s"].as_f64().unwrap();
    assert!(
        total > 0.0 && total <= 2.5 * 3600.0,
        "training took {total} s"
    );
    for stage in [
        "data", "judge", "vae", "latents", "base", "lcm", "style", "evaluate",
    ] {
        let s = &micro["stages"][stage];
        assert!(s["wall_s"].as_f64().is_some(), "stage {stage}: {s}");
    }
    // Every target of the issue, measured, with a verdict that follows from its numbers.
    let targets = micro["metrics"]["targets"].as_object().unwrap();
    assert_eq!(targets.len(), 11, "{targets:?}");
    for (name, t) in targets {
        let (v, limit) = (
            t["value"].as_f64().unwrap(),
            t["threshold"].as_f64().unwrap(),
        );
        let pass = match t["op"].as_str().unwrap() {
            ">=" => v >= limit,
            "<=" => v <= limit,
            ">" => v > limit,
            op => panic!("target {name}: op {op}"),
        };
        assert_eq!(t["pass"].as_bool(), Some(pass), "target {name}: {t}");
    }
    let prompts = micro["metrics"]["prompts"].as_u64().unwrap();
    assert!(prompts >= 32, "evaluated on {prompts} prompts");
}

/// The judge's accuracy per head (colour, shape, background) over `prompts` of the micro prompt
/// set at seed 42, for one method.
fn judged(prompts: &[String], method: (SchedulerKind, usize, f32, &str)) -> [f64; 3] {
    let mut right = [0usize; 3];
    for p in prompts {
        let reading = run(p, method, true)
            .report
            .judge
            .expect("the micro model has a judge");
        for (k, ok) in reading
            .right
            .expect("a prompt of the world")
            .iter()
            .enumerate()
        {
            right[k] += usize::from(*ok);
        }
    }
    right.map(|r| r as f64 / prompts.len() as f64)
}

/// The one-step UNet (`unet_turbo`, SD-Turbo's sampling: 1 Euler step at t = 999 from its own
/// trailing schedule, no guidance) draws the world right where LCM-LoRA at 1 step blurs it: on 30
/// prompts of the micro set (every fourth) at seed 42, judged by the micro judge. Looser than the
/// evaluation's targets (≥ 0.9 / 0.8 / 0.8 and 0.1 above LCM-LoRA 1, on 120 held-out images in
/// diffusers; the manifest has the numbers).
#[test]
fn the_one_step_unet_draws_the_world_in_one_step_better_than_lcm_lora() {
    let text = std::fs::read_to_string(root().join("assets/prompts/micro.txt")).unwrap();
    let prompts: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .step_by(4)
        .map(str::to_string)
        .collect();
    assert_eq!(prompts.len(), 30);
    let turbo = judged(&prompts, (SchedulerKind::Euler, 1, 0.0, "turbo"));
    let lcm1 = judged(&prompts, (SchedulerKind::Lcm, 1, 1.5, "lcm"));
    let mean = |a: [f64; 3]| a.iter().sum::<f64>() / 3.0;
    assert!(
        turbo[0] >= 0.85 && turbo[1] >= 0.75 && turbo[2] >= 0.75,
        "one step: colour / shape / background {turbo:?}"
    );
    assert!(
        mean(turbo) >= mean(lcm1) + 0.05,
        "one step: the one-step UNet {turbo:?} against LCM-LoRA {lcm1:?}"
    );
}
