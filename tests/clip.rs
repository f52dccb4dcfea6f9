//! The CLIP score against transformers, on the embedded tiny model's scorer.
//!
//! `tests/fixtures/clip/` holds what transformers' `CLIPImageProcessor` (PIL backend) and the
//! tiny `CLIPModel` (rebuilt as models/make_tiny.py builds it) made of four images and two
//! prompts (`make_clip_fixtures.py`). Tolerances: pixel_values within 1e-6 (our PIL port
//! gives PIL's bytes, so only float rounding is left), embeddings within 1e-4 and cosines within
//! 1e-5 (ONNX Runtime against torch, float32), scores within 1e-3 (100 × the cosine).
//! Then the score through real runs: asked for, not asked for, and on a model without a scorer
//! or with a broken one.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, OnceLock};

use image::RgbImage;
use serde_json::Value;

use common::copy_dir;
use speedscape::models::clip::{self, ClipConfig};
use speedscape::models::{CLIP_FOLDER, ClipScorer, Model, default_variants};
use speedscape::pipeline::{self, Request};
use speedscape::rng::RngSource;
use speedscape::runtime::{Device, Runtime, SearchPlan};
use speedscape::schedulers::{SchedulerKind, SchedulerOptions};

const PIXEL_TOLERANCE: f32 = 1e-6;
const EMBED_TOLERANCE: f32 = 1e-4;
const COSINE_TOLERANCE: f64 = 1e-5;
const SCORE_TOLERANCE: f64 = 1e-3;

fn root() -> PathBuf {
    common::root()
}

fn tiny() -> PathBuf {
    root().join("models/tiny")
}

fn fixtures() -> PathBuf {
    root().join("tests/fixtures/clip")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn png(name: &str) -> RgbImage {
    image::open(fixtures().join(name)).unwrap().to_rgb8()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn runtime() -> Runtime {
    Runtime::init(&SearchPlan::new(None, Some(&root())), Device::Cpu)
        .expect("ONNX Runtime (run ./test.sh, which installs it into .venv)")
}

/// The tiny model, shared by the tests of this file.
fn model() -> &'static Mutex<(Runtime, Model)> {
    static MODEL: OnceLock<Mutex<(Runtime, Model)>> = OnceLock::new();
    MODEL.get_or_init(|| {
        let rt = runtime();
        let model = Model::open(&rt, &tiny(), default_variants()).unwrap();
        Mutex::new((rt, model))
    })
}

fn config() -> ClipConfig {
    ClipConfig::read(&tiny().join(CLIP_FOLDER), &tiny()).unwrap()
}

/// transformers' pixel_values `[3, 224, 224]`, from the 8-bit crop it made them of
/// (`(crop · 1/255 − mean) / std`, which the fixture script checked to 1e-6).
fn reference_pixels(crop: &RgbImage, c: &ClipConfig) -> ndarray::Array3<f32> {
    let (w, h) = crop.dimensions();
    ndarray::Array3::from_shape_fn((3, h as usize, w as usize), |(ch, y, x)| {
        let v = (f64::from(crop.get_pixel(x as u32, y as u32)[ch]) * c.rescale_factor) as f32;
        (v - c.image_mean[ch]) / c.image_std[ch]
    })
}

fn max_diff<'a>(a: impl Iterator<Item = &'a f32>, b: impl Iterator<Item = &'a f32>) -> f32 {
    a.zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn preprocessing_matches_clip_image_processor() {
    let c = config();
    assert_eq!(
        (c.resize_shortest_edge, c.crop_width, c.crop_height),
        (224, 224, 224)
    );
    let exp = expected();
    assert_eq!(floats(&exp["image_mean"]), c.image_mean);
    assert_eq!(floats(&exp["image_std"]), c.image_std);
    for rec in exp["images"].as_array().unwrap() {
        let name = rec["file"].as_str().unwrap();
        let image = png(name);
        assert_eq!(
            (image.width(), image.height()),
            (
                rec["width"].as_u64().unwrap() as u32,
                rec["height"].as_u64().unwrap() as u32
            )
        );
        let got = clip::preprocess(&image, &c);
        assert_eq!(got.shape(), [1, 3, 224, 224], "{name}");
        let want = reference_pixels(&png(rec["crop"].as_str().unwrap()), &c);
        let err = max_diff(got.iter(), want.iter());
        eprintln!("{name}: pixel_values within {err:e} of transformers'");
        assert!(
            err <= PIXEL_TOLERANCE,
            "{name}: pixel_values differ by {err}"
        );
    }
}

/// What `image`'s stock CatmullRom resize (the nearest filter it has to PIL's bicubic) would
/// cost, measured on the square images: 512² shrunk to 224² and 64² enlarged to 224². Our port
/// of Pillow's resampling gives PIL's bytes exactly; CatmullRom does not (core/src/models/clip.rs
/// states these numbers).
#[test]
fn pil_resize_is_exact_where_catmull_rom_is_only_close() {
    let c = config();
    for (name, max_levels) in [("square_512", 1), ("noise_64", 12)] {
        let image = png(&format!("{name}.png"));
        let pil = png(&format!("{name}.crop.png"));
        let ours = clip::resize_bicubic_pil(&image, 224, 224);
        assert_eq!(ours.as_raw(), pil.as_raw(), "{name}: the PIL port is exact");
        let catmull = image::imageops::resize(&image, 224, 224, image::imageops::CatmullRom);
        let levels = catmull
            .as_raw()
            .iter()
            .zip(pil.as_raw())
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        let pixel_err = f32::from(levels) / 255.0 / c.image_std.iter().copied().fold(1.0, f32::min);
        eprintln!(
            "{name}: CatmullRom vs PIL bicubic: up to {levels} levels of 255 (pixel_values up to {pixel_err:.3})"
        );
        assert!(
            levels > 0 && levels <= max_levels,
            "{name}: CatmullRom differs from PIL by {levels} levels"
        );
    }
}

#[test]
fn scores_match_transformers_clip_model() {
    let mut guard = model().lock().unwrap();
    let (rt, model) = &mut *guard;
    let exp = expected();
    let prompts = exp["prompts"].as_array().unwrap();
    // The text side: our tokenizer's ids and the text encoder's pooler_output are CLIP's.
    for p in prompts {
        let text = p["text"].as_str().unwrap();
        let ids = model.tokenizer.encode(text).unwrap().ids_i64();
        let want_ids: Vec<i64> = p["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        assert_eq!(ids, want_ids, "{text}: token ids");
        let pooled = model.text_encoder.encode_pooled(&ids, 1).unwrap();
        let err = max_diff(pooled.iter(), floats(&p["pooler_output"]).iter());
        assert!(err <= EMBED_TOLERANCE, "{text}: pooler_output off by {err}");
        let scorer = model
            .clip_scorer(rt)
            .unwrap()
            .expect("the tiny model has a scorer");
        let (_, txt) = scorer
            .embed(
                ndarray::Array4::zeros((1, 3, 224, 224)).view(),
                pooled.view(),
            )
            .unwrap();
        let err = max_diff(txt.iter(), floats(&p["text_embeds"]).iter());
        assert!(err <= EMBED_TOLERANCE, "{text}: text_embeds off by {err}");
    }
    for rec in exp["images"].as_array().unwrap() {
        let name = rec["file"].as_str().unwrap();
        let scorer = model.clip_scorer(rt).unwrap().unwrap();
        let pixels = scorer.preprocess(&png(name));
        let (img, _) = scorer
            .embed(pixels.view(), ndarray::Array2::zeros((1, 32)).view())
            .unwrap();
        let err = max_diff(img.iter(), floats(&rec["image_embeds"]).iter());
        eprintln!("{name}: image_embeds within {err:.1e}");
        assert!(err <= EMBED_TOLERANCE, "{name}: image_embeds off by {err}");
    }
    let mut clamped = 0;
    for s in exp["scores"].as_array().unwrap() {
        let (name, prompt) = (s["image"].as_str().unwrap(), s["prompt"].as_str().unwrap());
        let got = model.clip_score(rt, &png(name), prompt).unwrap().unwrap();
        let (score, cosine) = (s["score"].as_f64().unwrap(), s["cosine"].as_f64().unwrap());
        eprintln!(
            "{name} / {prompt}: score {:.6} (transformers {score:.6}), cosine off by {:.1e}",
            got.score,
            (got.cosine - cosine).abs()
        );
        assert!(
            (got.cosine - cosine).abs() <= COSINE_TOLERANCE,
            "{name} / {prompt}: cosine {} vs transformers' {cosine}",
            got.cosine
        );
        assert!(
            (got.score - score).abs() <= SCORE_TOLERANCE,
            "{name} / {prompt}: score {} vs transformers' {score}",
            got.score
        );
        if cosine < 0.0 {
            assert_eq!(got.score, 0.0, "a negative cosine scores 0");
            clamped += 1;
        }
    }
    assert!(
        clamped > 0 && clamped < exp["scores"].as_array().unwrap().len(),
        "the fixtures cover both a clamped and an unclamped score"
    );
}

fn request(clip_score: bool, unet: &str) -> Request {
    Request {
        prompt: "a small cottage on a hillside at sunset".into(),
        negative_prompt: String::new(),
        scheduler: SchedulerKind::DpmSolverPp,
        scheduler_options: SchedulerOptions::default(),
        steps: 4,
        guidance: 7.5,
        seed: 42,
        rng: RngSource::TorchCpu,
        unet: unet.into(),
        loras: Vec::new(),
        width: None,
        height: None,
        latents: None,
        clip_score,
        judge: false,
        control: None,
    }
}

fn run(rt: &Runtime, model: &mut Model, req: &Request) -> color_eyre::Result<pipeline::RunOutput> {
    pipeline::generate(rt, model, req, &AtomicBool::new(false), &mut |_| {})
}

#[test]
fn a_run_reports_the_clip_score_only_when_asked() {
    // A model of its own: the scorer must load on the first request that asks, not before.
    let rt = runtime();
    let mut model = Model::open(&rt, &tiny(), default_variants()).unwrap();
    assert!(model.has_clip_scorer());
    let plain = run(&rt, &mut model, &request(false, "base")).unwrap();
    assert_eq!(plain.report.clip_score, None);
    assert!(!model.clip_scorer_loaded(), "not loaded until asked for");
    let json = serde_json::to_value(&plain.report).unwrap();
    assert!(
        json.get("clip_score").is_none(),
        "absent from the JSON, not null or zero: {json}"
    );

    let scored = run(&rt, &mut model, &request(true, "base")).unwrap();
    let score = scored
        .report
        .clip_score
        .expect("asked for, and the model has a scorer");
    // It is the score of the run's own 8-bit image against the prompt.
    let direct = model
        .clip_score(&rt, &scored.rgb8(), &request(true, "base").prompt)
        .unwrap()
        .unwrap();
    assert_eq!(score, direct.score);
    assert!(
        score > 0.0,
        "this seed's image scores above the clamp: {score}"
    );
    assert_eq!(scored.image, plain.image, "scoring does not change the run");
    assert!(scored.report.load_ms.contains_key(CLIP_FOLDER));
    let json = serde_json::to_value(&scored.report).unwrap();
    assert_eq!(json["clip_score"].as_f64(), Some(score));

    // A variant whose LoRAs train the text encoder would still be scored with CLIP's own text
    // tower (the base text encoder); the tiny variants only change the UNet.
    let lcm = run(&rt, &mut model, &request(true, "lcm")).unwrap();
    let direct = model
        .clip_score(&rt, &lcm.rgb8(), &request(true, "lcm").prompt)
        .unwrap()
        .unwrap();
    assert_eq!(lcm.report.clip_score, Some(direct.score));
}

/// A copy of the tiny model, changed by `edit`.
fn tiny_copy(edit: impl FnOnce(&Path)) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tiny");
    copy_dir(&tiny(), &dir);
    edit(&dir);
    (tmp, dir)
}

#[test]
fn without_a_scorer_a_run_asking_for_one_gives_none_and_still_runs() {
    let (_tmp, dir) = tiny_copy(|d| std::fs::remove_dir_all(d.join(CLIP_FOLDER)).unwrap());
    let rt = runtime();
    assert!(ClipScorer::open(&rt, &dir).unwrap().is_none());
    let mut model = Model::open(&rt, &dir, default_variants()).unwrap();
    assert!(!model.has_clip_scorer());
    let out = run(&rt, &mut model, &request(true, "base")).unwrap();
    assert_eq!(out.report.clip_score, None);
    assert!(!out.report.load_ms.contains_key(CLIP_FOLDER));
    // The same image as with a scorer: nothing else changed.
    let mut guard = model_lock();
    let (rt2, full) = &mut *guard;
    let with = run(rt2, full, &request(false, "base")).unwrap();
    assert_eq!(out.image, with.image);
}

fn model_lock() -> std::sync::MutexGuard<'static, (Runtime, Model)> {
    model().lock().unwrap_or_else(|p| p.into_inner())
}

#[test]
fn a_broken_scorer_fails_a_run_that_asks_for_it_with_cause_and_fix() {
    type Edit = fn(&Path);
    let cases: [(&str, Edit, &str); 4] = [
        (
            "no model.onnx",
            |d| std::fs::remove_file(d.join(CLIP_FOLDER).join("model.onnx")).unwrap(),
            "has no model.onnx",
        ),
        (
            "no config.json",
            |d| std::fs::remove_file(d.join(CLIP_FOLDER).join("config.json")).unwrap(),
            "has no readable config.json",
        ),
        (
            "another resampling",
            |d| edit_config(d, "\"resample\": \"bicubic\"", "\"resample\": \"bilinear\""),
            "only PIL's bicubic is implemented",
        ),
        (
            "widths that do not fit the graph",
            |d| edit_config(d, "\"text_hidden_size\": 32", "\"text_hidden_size\": 768"),
            "does not match its config.json",
        ),
    ];
    let rt = runtime();
    for (what, edit, message) in cases {
        let (_tmp, dir) = tiny_copy(edit);
        let mut model = Model::open(&rt, &dir, default_variants()).unwrap();
        // Not asked for: the broken scorer is never touched.
        let out = run(&rt, &mut model, &request(false, "base")).unwrap();
        assert_eq!(out.report.clip_score, None, "{what}");
        let err = run(&rt, &mut model, &request(true, "base"))
            .err()
            .unwrap_or_else(|| panic!("{what}: a run asking for the score must fail"));
        let text = format!("{err:#}");
        assert!(text.contains(message), "{what}: {text}");
        assert!(
            text.contains("Fix: re-export the model with its CLIP scorer")
                && text.contains("--clip-scorer"),
            "{what}: {text}"
        );
    }
}

fn edit_config(dir: &Path, from: &str, to: &str) {
    let file = dir.join(CLIP_FOLDER).join("config.json");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains(from), "{text}");
    std::fs::write(&file, text.replace(from, to)).unwrap();
}
