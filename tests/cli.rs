//! The `speedscape` binary end to end, on the embedded tiny model and the CPU wheel.

mod common;

use common::{copy_dir, root, speedscape, text};
use std::path::{Path, PathBuf};
use std::process::Output;

use ndarray::ArrayD;
use ndarray_npy::read_npy;

fn generate(out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "generate",
        "--prompt",
        "a small cottage on a hillside at sunset",
        "--scheduler",
        "dpmpp",
        "--steps",
        "3",
        "--cfg",
        "7.5",
        "--seed",
        "42",
        "--device",
        "cpu",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    speedscape(&args)
}

#[test]
fn generate_writes_the_png_its_raw_floats_and_a_json_report() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("out.png");
    let raw = dir.path().join("out.npy");
    let o = generate(&png, &["--json", "--save-raw", raw.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["provider"], "CPUExecutionProvider");
    assert_eq!(report["steps"], 3);
    assert_eq!(report["timings"]["unet_ms"].as_array().unwrap().len(), 3);
    // The default model: the embedded micro model.
    assert_eq!(report["tiny_model"], false);
    assert_eq!(report["model_kind"], "micro");
    // Session creation is reported apart from the run, per component.
    for component in ["text_encoder", "unet", "vae_decoder"] {
        assert!(
            report["load_ms"][component].as_f64().unwrap() > 0.0,
            "{component}"
        );
    }
    let img = image::open(&png).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (64, 64), "the micro model's native size");
    let floats: ArrayD<f32> = read_npy(&raw).unwrap();
    assert_eq!(floats.shape(), &[1, 64, 64, 3]);
    // The PNG is the float image rounded to 8 bits.
    let px = img.get_pixel(10, 20).0;
    for (c, &channel) in px.iter().enumerate() {
        assert_eq!(channel, (floats[[0, 20, 10, c]] * 255.0).round() as u8);
    }
    let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(leftovers, 2, "only out.png and out.npy, no temporary files");
}

#[test]
fn the_same_seed_gives_the_same_image_and_another_seed_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a.png"),
        dir.path().join("b.png"),
        dir.path().join("c.png"),
    );
    assert!(generate(&a, &[]).status.success());
    assert!(generate(&b, &[]).status.success());
    let o = speedscape(&[
        "generate",
        "--prompt",
        "a small cottage on a hillside at sunset",
        "--scheduler",
        "dpmpp",
        "--steps",
        "3",
        "--cfg",
        "7.5",
        "--seed",
        "43",
        "--device",
        "cpu",
        "--out",
        c.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let load = |p: &Path| image::open(p).unwrap().to_rgb8().into_raw();
    assert_eq!(load(&a), load(&b));
    assert_ne!(load(&a), load(&c));
}

#[test]
fn the_summary_names_the_provider_and_warns_that_the_tiny_model_is_random() {
    let dir = tempfile::tempdir().unwrap();
    let o = generate(&dir.path().join("x.png"), &["--model-dir", "models/tiny"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("provider CPUExecutionProvider"), "{t}");
    assert!(t.contains("random weights"), "{t}");
    // The micro model's images are real: no such warning.
    let o = generate(&dir.path().join("y.png"), &[]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(!t.contains("random weights"), "{t}");
}

#[test]
fn a_model_folder_that_does_not_exist_says_which_command_creates_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("sd15");
    let missing = missing.to_str().unwrap();
    let o = generate(&dir.path().join("x.png"), &["--model-dir", missing]);
    let t = text(&o);
    assert!(!o.status.success());
    assert!(
        t.contains(&format!("models/export.py --out {missing}")),
        "{t}"
    );
}

#[test]
fn an_output_folder_that_does_not_exist_is_an_error_that_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let o = generate(&dir.path().join("missing/out.png"), &[]);
    assert!(!o.status.success());
    assert!(text(&o).contains("does not exist"), "{}", text(&o));
}

#[test]
fn an_unknown_unet_variant_lists_the_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    let o = generate(&dir.path().join("x.png"), &["--unet", "sdxl"]);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(t.contains("sdxl") && t.contains("lcm_style"), "{t}");
}

#[test]
fn a_size_off_the_vae_grid_is_refused_with_a_fix() {
    let dir = tempfile::tempdir().unwrap();
    // The micro model: VAE scale 4, and its UNet halves the latents twice.
    let o = generate(&dir.path().join("x.png"), &["--width", "60"]);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains("width 60") && t.contains("multiple of 16"),
        "{t}"
    );
    assert!(t.contains("Fix: use e.g. 48"), "{t}");
}

#[test]
fn tokens_prints_77_ids_and_the_count() {
    let o = speedscape(&[
        "tokens",
        "a small cottage",
        "--json",
        "--model-dir",
        "models/tiny",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ids"].as_array().unwrap().len(), 77);
    assert_eq!(v["count"], 3);
    assert_eq!(v["ids"][0], 49406);
    assert_eq!(v["ids"][4], 49407);
}

/// The micro model's tokenizer is CLIP's, trimmed to its world: its words get CLIP's own ids,
/// and a word outside it still tokenizes (as bytes, which its text encoder reads as blanks).
#[test]
fn the_micro_models_tokenizer_gives_clips_ids_for_its_words() {
    let ids = |model: &str, prompt: &str| -> Vec<serde_json::Value> {
        let o = speedscape(&["tokens", prompt, "--json", "--model-dir", model]);
        assert!(o.status.success(), "{}", text(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["ids"].as_array().unwrap().clone()
    };
    let words = "a large yellow star on the left on a blue background at sunset, PixArFK";
    assert_eq!(ids("models/micro", words), ids("models/tiny", words));
    let outside = ids("models/micro", "a castle");
    assert_eq!(outside[0], 49406);
    assert_ne!(outside, ids("models/tiny", "a castle"));
}

#[test]
fn noise_writes_the_runs_draws_in_order() {
    use speedscape::rng::RngSource;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("noise.npy");
    let o = speedscape(&[
        "noise",
        "--rng",
        "torch-cpu",
        "--seed",
        "7",
        "--shape",
        "1,4,8,8",
        "--draws",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let got: ArrayD<f32> = read_npy(&out).unwrap();
    assert_eq!(got.shape(), &[3, 1, 4, 8, 8]);
    let mut source = RngSource::TorchCpu.generator(7);
    for i in 0..3 {
        let want = source.randn([1, 4, 8, 8]);
        assert_eq!(
            got.index_axis(ndarray::Axis(0), i),
            want.into_dyn(),
            "draw {i}"
        );
    }
}

/// The default source is the notebook's CUDA generator (config.toml says so, and so does the
/// built-in default); `noise` draws what `TorchCuda` draws, offsets carried across draws.
#[test]
fn noise_defaults_to_the_cuda_generator() {
    use speedscape::rng::{NoiseSource, TorchCuda};
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("noise.npy");
    let o = speedscape(&[
        "noise",
        "--seed",
        "42",
        "--shape",
        "1,4,32,32",
        "--draws",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("torch-cuda, seed 42"), "{}", text(&o));
    let got: ArrayD<f32> = read_npy(&out).unwrap();
    let mut source = TorchCuda::new(42);
    for i in 0..2 {
        let want = source.randn([1, 4, 32, 32]);
        assert_eq!(
            got.index_axis(ndarray::Axis(0), i),
            want.into_dyn(),
            "draw {i}"
        );
    }
}

/// `generate` names the source in its summary, and `--rng` changes the image (same seed).
#[test]
fn generate_names_the_noise_source_and_rng_selects_it() {
    let dir = tempfile::tempdir().unwrap();
    let (cuda, cpu) = (dir.path().join("cuda.png"), dir.path().join("cpu.png"));
    let o = generate(&cuda, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("seed 42 (torch-cuda)"), "{}", text(&o));
    let o = generate(&cpu, &["--rng", "torch-cpu"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("seed 42 (torch-cpu)"), "{}", text(&o));
    assert_ne!(std::fs::read(&cuda).unwrap(), std::fs::read(&cpu).unwrap());
}

/// `exercise --rng` reaches every run, and the table's header says which source it was.
#[test]
fn exercise_header_names_the_noise_source() {
    let o = speedscape(&["exercise", "3", "--rng", "torch-cpu", "--device", "cpu"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let header = out.lines().next().unwrap_or_default();
    assert!(header.contains("(torch-cpu noise)"), "{header}");
}

#[test]
fn doctor_on_the_cpu_wheel_says_cpu() {
    let o = speedscape(&["doctor", "--device", "cpu"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("CPUExecutionProvider"), "{t}");
    assert!(t.contains("CPU-only wheel"), "{t}");
    assert!(t.contains("unet_lcm_style") && !t.contains("FAILED"), "{t}");
}

/// doctor says where sessions get their intra-op threads: the shared pool by default, a pool
/// per session when the config asks for it.
#[test]
fn doctor_names_the_thread_pool_the_sessions_use() {
    let shared = text(&speedscape(&["doctor", "--device", "cpu"]));
    assert!(
        shared.contains("intra-op, one pool shared by every session"),
        "{shared}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("config.toml");
    std::fs::write(&cfg, "[runtime.session]\nthread_pool = \"per-session\"\n").unwrap();
    let per = text(&speedscape(&[
        "--config",
        cfg.to_str().unwrap(),
        "doctor",
        "--device",
        "cpu",
    ]));
    assert!(per.contains("intra-op, a pool per session"), "{per}");
}

/// doctor loads the preview decoder where the folder has one, and says what previews use where
/// it has none (the tiny model).
#[test]
fn doctor_reports_the_preview_decoder_or_the_fallback() {
    let micro = speedscape(&["doctor", "--device", "cpu"]);
    let t = text(&micro);
    assert!(micro.status.success(), "{t}");
    let line = t
        .lines()
        .find(|l| l.contains("preview_decoder (step previews)"));
    assert!(line.is_some_and(|l| l.contains(" ok ")), "{t}");
    let tiny = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny");
    let o = speedscape(&[
        "doctor",
        "--device",
        "cpu",
        "--model-dir",
        tiny.to_str().unwrap(),
    ]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let line = t
        .lines()
        .find(|l| l.contains("preview_decoder (step previews)"));
    assert!(
        line.is_some_and(|l| l.contains("none: previews use the latent matrix")),
        "{t}"
    );
}

#[test]
fn doctor_with_device_cuda_on_the_cpu_wheel_fails_instead_of_running_on_cpu() {
    let o = speedscape(&["doctor", "--device", "cuda"]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(t.contains("CPU-only build"), "{t}");
    assert!(t.contains("onnxruntime-gpu"), "the fix is named: {t}");
}

#[test]
fn generate_with_device_cuda_on_the_cpu_wheel_refuses_to_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.png");
    let o = speedscape(&[
        "generate",
        "--prompt",
        "x",
        "--scheduler",
        "dpmpp",
        "--steps",
        "3",
        "--cfg",
        "7.5",
        "--seed",
        "42",
        "--device",
        "cuda",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("CPU-only build"), "{}", text(&o));
    assert!(!out.exists(), "nothing was generated on the CPU");
}

#[test]
fn a_missing_onnxruntime_says_where_it_looked_and_how_to_fix_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        "[runtime]\nonnxruntime = \"nowhere/libonnxruntime.so.1.31.1\"\n",
    )
    .unwrap();
    let o = speedscape(&["--config", cfg.to_str().unwrap(), "doctor"]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("nowhere/libonnxruntime.so.1.31.1") && t.contains("no such file"),
        "{t}"
    );
    assert!(t.contains("scripts/setup.sh"), "{t}");
}

// ---------------------------------------------------------------------------------------------
// speedscape models / models verify
// ---------------------------------------------------------------------------------------------

/// A private copy of models/tiny at `<tmp>/tiny`.
/// `speedscape models verify DIR --device cpu`.
fn verify_on_cpu(model: &Path) -> Output {
    speedscape(&[
        "models",
        "verify",
        model.to_str().unwrap(),
        "--device",
        "cpu",
    ])
}

fn tiny_copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny");
    copy_dir(&root().join("models/tiny"), &model);
    (dir, model)
}

fn json_file(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Rewrites scheduler_config.json as diffusers' save_pretrained does (0.42.1, leading spacing).
fn resave_scheduler_config(model: &Path) {
    let path = model.join("scheduler/scheduler_config.json");
    let mut cfg = json_file(&path);
    cfg["_diffusers_version"] = "0.42.1".into();
    cfg["timestep_spacing"] = "leading".into();
    cfg["prediction_type"] = "epsilon".into();
    std::fs::write(&path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
}

/// DPM-Solver++ 4-step timesteps our scheduler builds from `cfg`.
fn dpmpp4(cfg: &serde_json::Value) -> Vec<i64> {
    use speedscape::schedulers::{self, SchedulerConfig, SchedulerKind, SchedulerOptions};
    let cfg: SchedulerConfig = serde_json::from_value(cfg.clone()).unwrap();
    schedulers::build(
        SchedulerKind::DpmSolverPp,
        &cfg,
        4,
        &SchedulerOptions::default(),
    )
    .unwrap()
    .timesteps()
    .to_vec()
}

fn joined(ts: &[i64]) -> String {
    ts.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
}

#[test]
fn models_lists_the_tiny_models_four_variants_and_their_folders() {
    let o = speedscape(&["models", "--json", "--model-dir", "models/tiny"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["tiny_model"], true);
    assert_eq!(v["manifest"]["format"], "speedscape-model/1");
    let variants: Vec<(String, String, String, bool)> = v["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["name"].as_str().unwrap().to_string(),
                x["unet"].as_str().unwrap().to_string(),
                x["text_encoder"].as_str().unwrap().to_string(),
                x["present"].as_bool().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, String, String, bool)> = [
        ("base", "unet"),
        ("lcm", "unet_lcm"),
        ("style", "unet_style"),
        ("lcm_style", "unet_lcm_style"),
    ]
    .iter()
    .map(|(n, f)| (n.to_string(), f.to_string(), "text_encoder".into(), true))
    .collect();
    assert_eq!(variants, want);
    assert_eq!(v["files"]["missing"].as_array().unwrap().len(), 0);
    assert_eq!(v["files"]["size_differs"].as_array().unwrap().len(), 0);
    assert_eq!(v["scheduler"]["status"], "original");

    let o = speedscape(&["models"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    for folder in ["unet_lcm", "unet_style", "unet_lcm_style", "vae_decoder"] {
        assert!(t.contains(folder), "{folder}: {t}");
    }
    assert!(t.contains("sizes match manifest"), "{t}");
    assert!(t.contains("SD v1.5's original scheduler config"), "{t}");
}

#[test]
fn models_says_what_the_micro_model_knows() {
    let o = speedscape(&["models", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["kind"], "micro");
    assert_eq!(v["tiny_model"], false);
    let knows: Vec<&str> = v["knows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(
        knows.contains(&"shapes: circle | square | triangle | star"),
        "{knows:?}"
    );
    let o = speedscape(&["models"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("(the micro model: "), "{t}");
    assert!(
        t.contains("  knows     a [size] <colour> <shape> [position] on a <colour> background"),
        "{t}"
    );
}

#[test]
fn models_on_a_folder_that_does_not_exist_says_how_to_create_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("sd15");
    let o = speedscape(&["models", "--model-dir", missing.to_str().unwrap()]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(t.contains("does not exist"), "{t}");
    assert!(t.contains("python models/export.py --out"), "{t}");
}

#[test]
fn models_verify_passes_on_the_tiny_model() {
    let o = speedscape(&["models", "verify", "models/tiny", "--device", "cpu"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("verdict: PASSED"), "{t}");
    // Every listed file was hashed, with its size shown.
    let manifest = json_file(&root().join("models/tiny/manifest.json"));
    for path in manifest["files"].as_object().unwrap().keys() {
        assert!(t.contains(&format!("] {path} (")), "{path}: {t}");
    }
    assert!(
        t.contains("not in the manifest (info only): README.md"),
        "{t}"
    );
    let o = speedscape(&[
        "models",
        "verify",
        "models/tiny",
        "--device",
        "cpu",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["passed"], true);
    let sessions: Vec<&str> = v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["passed"] == true)
        .map(|s| s["folder"].as_str().unwrap())
        .collect();
    for folder in [
        "text_encoder",
        "unet",
        "unet_lcm",
        "unet_style",
        "unet_lcm_style",
        "vae_decoder",
        "vae_encoder",
        "clip_image_encoder",
    ] {
        assert!(sessions.contains(&folder), "{folder}: {sessions:?}");
    }
}

#[test]
fn models_verify_runs_every_component_of_the_micro_model_including_its_preview_decoder_and_judge() {
    let o = speedscape(&[
        "models",
        "verify",
        "models/micro",
        "--device",
        "cpu",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["passed"], true, "{v}");
    let sessions = v["sessions"].as_array().unwrap();
    for (folder, output) in [
        ("preview_decoder", "image [1, 3, 64, 64]"),
        ("judge", "colour, shape, background [6, 4, 6]"),
        ("controlnet_edge", "out_sample"),
    ] {
        let s = sessions
            .iter()
            .find(|s| s["folder"] == folder)
            .unwrap_or_else(|| panic!("{folder} was run: {v}"));
        assert_eq!(s["passed"], true, "{s}");
        assert!(s["detail"].as_str().unwrap().starts_with(output), "{s}");
    }
}

#[test]
fn models_verify_names_a_file_with_one_byte_flipped() {
    let (_tmp, model) = tiny_copy();
    let file = model.join("unet_lcm/model.onnx_data");
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&file, bytes).unwrap();
    let o = verify_on_cpu(&model);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(t.contains("HASH DIFFERS   unet_lcm/model.onnx_data"), "{t}");
    assert!(t.contains("verdict: FAILED"), "{t}");
    // Only that file.
    assert_eq!(t.matches("HASH DIFFERS   ").count(), 1, "{t}");
}

#[test]
fn models_verify_explains_a_resaved_scheduler_config_with_its_schedules() {
    let (_tmp, model) = tiny_copy();
    resave_scheduler_config(&model);
    let file_cfg = json_file(&model.join("scheduler/scheduler_config.json"));
    let original: serde_json::Value =
        serde_json::from_str(speedscape::models::SD15_SCHEDULER_CONFIG).unwrap();
    let (leading, linspace) = (dpmpp4(&file_cfg), dpmpp4(&original));
    // What diffusers 0.42.1 gives for these configs.
    assert_eq!(leading, [801, 601, 401, 201]);
    assert_eq!(linspace, [999, 749, 500, 250]);

    let o = verify_on_cpu(&model);
    let t = text(&o);
    assert!(t.contains("re-saved by diffusers 0.42.1"), "{t}");
    assert!(t.contains("timestep_spacing \"leading\""), "{t}");
    assert!(
        t.contains(&joined(&leading)) && t.contains(&joined(&linspace)),
        "{t}"
    );
    assert!(t.contains("scheduler_config = \"sd15\""), "the fix: {t}");
    // The manifest's hash of the file no longer matches: that is a failure...
    assert!(!o.status.success(), "{t}");
    assert!(t.contains("scheduler/scheduler_config.json has"), "{t}");

    // ...but the re-saved config alone is only a warning (an optimum-cli-style folder).
    std::fs::remove_file(model.join("manifest.json")).unwrap();
    let o = verify_on_cpu(&model);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("nothing to hash against"), "{t}");
    assert!(
        t.contains("WARNING") && t.contains(&joined(&leading)),
        "{t}"
    );
}

#[test]
fn a_missing_variant_folder_names_the_variant_the_folder_and_the_exporter() {
    let (tmp, model) = tiny_copy();
    std::fs::remove_dir_all(model.join("unet_lcm")).unwrap();
    let out = tmp.path().join("x.png");
    let o = generate(
        &out,
        &["--unet", "lcm", "--model-dir", model.to_str().unwrap()],
    );
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(t.contains("variant \"lcm\""), "{t}");
    assert!(t.contains("unet_lcm"), "{t}");
    assert!(t.contains("python models/export.py --out"), "{t}");
    // The base still runs on that folder.
    let o = generate(&out, &["--model-dir", model.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    // `models` lists it as missing.
    let o = speedscape(&["models", "--json", "--model-dir", model.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let lcm = v["variants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "lcm")
        .unwrap()
        .clone();
    assert_eq!(lcm["present"], false);
    assert_eq!(lcm["missing"], serde_json::json!(["unet_lcm"]));
}

#[test]
fn a_variant_with_its_own_text_encoder_encodes_with_it() {
    let (tmp, model) = tiny_copy();
    copy_dir(
        &model.join("text_encoder"),
        &model.join("text_encoder_style"),
    );
    let path = model.join("manifest.json");
    let mut manifest = json_file(&path);
    manifest["variants"]["style"]["text_encoder"] = "text_encoder_style".into();
    std::fs::write(&path, serde_json::to_string_pretty(&manifest).unwrap()).unwrap();
    let out = tmp.path().join("x.png");
    let run = |unet: &str| {
        let o = generate(
            &out,
            &[
                "--unet",
                unet,
                "--json",
                "--force",
                "--model-dir",
                model.to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "{}", text(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let style = run("style");
    assert!(
        style["load_ms"]["text_encoder_style"].as_f64().unwrap() > 0.0,
        "{style}"
    );
    let base = run("base");
    assert!(
        base["load_ms"].get("text_encoder_style").is_none(),
        "{base}"
    );

    std::fs::remove_dir_all(model.join("text_encoder_style")).unwrap();
    let o = generate(
        &tmp.path().join("y.png"),
        &["--unet", "style", "--model-dir", model.to_str().unwrap()],
    );
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("variant \"style\"") && t.contains("text_encoder_style"),
        "{t}"
    );
}

#[test]
fn scheduler_config_sd15_runs_a_resaved_folder_with_the_original_timesteps() {
    let (tmp, model) = tiny_copy();
    resave_scheduler_config(&model);
    let original: serde_json::Value =
        serde_json::from_str(speedscape::models::SD15_SCHEDULER_CONFIG).unwrap();
    let file_cfg = json_file(&model.join("scheduler/scheduler_config.json"));
    let timesteps = |config: &str| {
        let cfg = tmp.path().join("config.toml");
        std::fs::write(&cfg, config).unwrap();
        let out = tmp.path().join("x.png");
        let o = speedscape(&[
            "--config",
            cfg.to_str().unwrap(),
            "generate",
            "--prompt",
            "a small cottage",
            "--scheduler",
            "dpmpp",
            "--steps",
            "4",
            "--cfg",
            "7.5",
            "--seed",
            "42",
            "--device",
            "cpu",
            "--json",
            "--force",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o));
        let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let ts: Vec<i64> = report["timesteps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_i64().unwrap())
            .collect();
        (ts, report["warnings"].to_string())
    };
    let dir = model.to_str().unwrap();
    let (obeyed, warnings) = timesteps(&format!("[model]\ndir = {dir:?}\n"));
    assert_eq!(obeyed, dpmpp4(&file_cfg), "the file is obeyed by default");
    assert_eq!(obeyed, [801, 601, 401, 201]);
    assert!(warnings.contains("re-saved"), "{warnings}");
    let (sd15, warnings) = timesteps(&format!(
        "[model]\ndir = {dir:?}\nscheduler_config = \"sd15\"\n"
    ));
    assert_eq!(sd15, dpmpp4(&original));
    assert_eq!(sd15, [999, 749, 500, 250]);
    assert!(warnings.contains("sd15"), "the note says so: {warnings}");
}

#[test]
fn models_verify_on_the_cpu_says_cuda_optimized_graphs_need_the_cuda_provider() {
    let (_tmp, model) = tiny_copy();
    let path = model.join("manifest.json");
    let mut manifest = json_file(&path);
    manifest["optimize"] = "cuda".into();
    std::fs::write(&path, serde_json::to_string_pretty(&manifest).unwrap()).unwrap();
    let o = verify_on_cpu(&model);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(t.contains("CUDA-only fused operators"), "{t}");
    assert!(t.contains("onnxruntime-gpu"), "the fix: {t}");
    assert!(
        t.contains("all hashes match the manifest"),
        "files still check: {t}"
    );
}

#[test]
fn model_missing_variants_lists_those_without_their_folders() {
    use speedscape::models::{Model, default_variants};
    use speedscape::runtime::{Device, Runtime, SearchPlan};
    let (_tmp, model) = tiny_copy();
    std::fs::remove_dir_all(model.join("unet_style")).unwrap();
    let rt = Runtime::init(&SearchPlan::new(None, Some(&root())), Device::Cpu).unwrap();
    let m = Model::open(&rt, &model, default_variants()).unwrap();
    let missing: Vec<&str> = m
        .missing_variants()
        .iter()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(missing, ["style"]);
    let full = Model::open(&rt, &root().join("models/tiny"), default_variants()).unwrap();
    assert!(full.missing_variants().is_empty());
}

fn exercise(args: &[&str]) -> Output {
    let mut all = vec!["exercise"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--device", "cpu"]);
    speedscape(&all)
}

#[test]
fn exercise_1_prints_a_table_of_three_finished_runs_with_speedups() {
    let o = exercise(&["1"]);
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].contains("CPUExecutionProvider"), "{stdout}");
    assert!(lines[0].contains("the micro model"), "{stdout}");
    // On the micro model, exercise 1 asks for a picture of its world.
    assert_eq!(
        lines[1],
        "prompt: “a large yellow star on a blue background at sunset”"
    );
    let header = lines
        .iter()
        .position(|l| l.starts_with("run ") && l.ends_with("speedup      SSIM   PSNR dB"))
        .expect("a table header");
    let rows = &lines[header + 1..header + 4];
    for (row, label) in rows
        .iter()
        .zip(["DDPM 50", "DPM-Solver++ 20", "DPM-Solver++ 10"])
    {
        assert!(row.starts_with(label), "{stdout}");
        assert!(row.contains(" done "), "finished: {stdout}");
        assert!(!row.contains('~'), "no partial numbers: {stdout}");
    }
    assert!(
        rows[0].ends_with("baseline  baseline  baseline"),
        "{stdout}"
    );
    for row in &rows[1..] {
        // speedup, SSIM and PSNR against the baseline: numbers.
        let cells: Vec<&str> = row.split_whitespace().rev().take(3).collect();
        let speedup: f64 = cells[2].trim_end_matches('×').parse().expect(cells[2]);
        let ssim: f64 = cells[1].parse().expect(cells[1]);
        let psnr: f64 = cells[0].parse().expect(cells[0]);
        assert!(speedup > 0.0, "{stdout}");
        assert!((-1.0..1.0).contains(&ssim), "different images: {stdout}");
        assert!(psnr.is_finite() && psnr > 0.0, "{stdout}");
    }
    assert!(stdout.contains("What happened:"), "{stdout}");
    assert!(stdout.contains("took"), "{stdout}");
}

#[test]
fn exercise_json_has_rows_with_times_and_a_report_per_run() {
    let o = exercise(&["1", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["exercise"], 1);
    assert_eq!(v["provider"], "CPUExecutionProvider");
    assert_eq!(v["tiny_model"], false);
    assert_eq!(v["model_kind"], "micro");
    assert_eq!(
        v["prompt"],
        "a large yellow star on a blue background at sunset"
    );
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for r in rows {
        assert!(r["total_ms"].as_f64().unwrap() > 0.0, "{r}");
        assert_eq!(r["state"], "finished");
    }
    assert_eq!(v["runs"].as_array().unwrap().len(), 3);
    assert_eq!(v["runs"][0]["steps"], 50);
    assert!(!v["notes"].as_array().unwrap().is_empty());
}

#[test]
fn exercise_out_twice_makes_two_complete_report_folders() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    for _ in 0..2 {
        let o = exercise(&["1", "--out", out]);
        assert!(o.status.success(), "{}", text(&o));
    }
    let folders: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(folders.len(), 2, "{folders:?}");
    for f in &folders {
        assert!(
            f.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("exercise-1-")
        );
        let names: Vec<String> = std::fs::read_dir(f)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        let pngs: Vec<&String> = names
            .iter()
            .filter(|n| n.ends_with(".png") && *n != "contact-sheet.png")
            .collect();
        assert_eq!(pngs.len(), 3, "{names:?}");
        for p in pngs {
            let img = image::open(f.join(p)).unwrap();
            assert_eq!((img.width(), img.height()), (64, 64));
        }
        for file in [
            "contact-sheet.png",
            "timings.json",
            "timings.csv",
            "report.md",
        ] {
            assert!(names.contains(&file.to_string()), "{file}: {names:?}");
        }
        assert_eq!(names.len(), 7, "{names:?}");
        json_file(&f.join("timings.json"));
    }
}

#[test]
fn an_unknown_exercise_names_the_valid_numbers() {
    let o = exercise(&["9"]);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(t.contains("no exercise 9"), "{t}");
    assert!(t.contains("1 (The sampler swap)"), "{t}");
    assert!(t.contains("3 (Composability)"), "{t}");
}

#[test]
fn exercise_4_verifies_a_scenario_and_prints_pass_or_fail_with_numbers() {
    let o = exercise(&["4", "--scenario", "C"]);
    let t = text(&o);
    assert!(o.status.success(), "pass or fail, the exit is 0: {t}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("LCM-LoRA 4 against DPM-Solver++ 20"),
        "{stdout}"
    );
    let verdict = stdout
        .lines()
        .find(|l| l.starts_with("PASS: ") || l.starts_with("FAIL: "))
        .expect("a verdict line");
    assert!(
        verdict.contains("ms against a limit of 1000 ms"),
        "{verdict}"
    );

    // The verdict follows from the measured number (no timing is asserted here).
    let o = exercise(&["4", "--scenario", "C", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let total = v["rows"][1]["total_ms"].as_f64().unwrap();
    assert_eq!(v["passed"], total < 1000.0, "{v}");
    assert!(
        v["verdict"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{total:.0} ms")),
        "{v}"
    );

    let o = exercise(&["4", "--scenario", "b", "--threshold", "1.0", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["scenario"], "B");
    assert_eq!(v["passed"], false, "SSIM 1.0 needs identical images: {v}");
    assert!(
        v["verdict"].as_str().unwrap().contains("threshold of 1.00"),
        "{v}"
    );
}

#[test]
fn exercise_4_without_a_scenario_or_with_an_unrunnable_choice_says_what_to_do() {
    let t = text(&exercise(&["4"]));
    assert!(t.contains("--scenario A, B or C"), "{t}");
    // The one-step approach on a model without a one-step UNet (the tiny model has none).
    let tiny = root().join("models/tiny");
    let o = exercise(&[
        "4",
        "--scenario",
        "A",
        "--choice",
        "turbo",
        "--model-dir",
        tiny.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains("the model folder has no one-step UNet") && t.contains("unet_turbo"),
        "{t}"
    );
    let o = exercise(&["4", "--scenario", "Z"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("no scenario 'Z'"), "{}", text(&o));
}

#[test]
fn exercise_4_out_writes_the_cheat_sheet_and_never_replaces_damaged_answers() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let o = exercise(&["4", "--scenario", "C", "--out", out]);
    assert!(o.status.success(), "{}", text(&o));
    let folder = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .unwrap();
    let md = std::fs::read_to_string(folder.join("cheatsheet.md")).unwrap();
    assert!(
        md.contains("Verified: LCM-LoRA 4 against DPM-Solver++ 20"),
        "{md}"
    );
    assert!(md.contains("ms against a limit of 1000 ms**"), "{md}");
    assert!(md.contains("Measured: LCM-LoRA 4: "), "{md}");
    // Every link of the cheat sheet resolves: the scenario's contact sheet and its report.
    let mut links = 0;
    for part in md.split("](").skip(1) {
        let target = &part[..part.find(')').unwrap()];
        assert!(folder.join(target).is_file(), "broken link {target}: {md}");
        links += 1;
    }
    assert_eq!(links, 2, "{md}");
    for name in [
        "report.md",
        "timings.csv",
        "timings.json",
        "contact-sheet.png",
    ] {
        assert!(folder.join("scenario-C").join(name).is_file(), "{name}");
    }
    assert!(
        folder.join("cheatsheet.json").is_file(),
        "the answers as they were"
    );

    let answers = dir.path().join("cheatsheet.json");
    std::fs::write(&answers, "{\"format\": 1, \"answ").unwrap();
    let o = exercise(&["4", "--scenario", "C", "--out", out]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("cheatsheet.json is damaged"),
        "{}",
        text(&o)
    );
    assert_eq!(
        std::fs::read_to_string(&answers).unwrap(),
        "{\"format\": 1, \"answ",
        "left as it was"
    );
}

/// `--preview-thread`: each run timed again with the TUI's preview thread previewing every step
/// beside it (the micro model's decoder), as its own spread and as a ratio to the plain run's
/// median, in the JSON and under the table (no speed is asserted).
#[test]
fn bench_times_a_run_with_the_preview_thread_beside_it_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.json");
    let o = speedscape(&[
        "bench",
        "--runs",
        "dpmpp:3",
        "--repeat",
        "2",
        "--device",
        "cpu",
        "--preview-thread",
        "--json",
        a.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("with the preview thread beside the run (decoder previews of every step"),
        "{stdout}"
    );
    let run = &json_file(&a)["runs"][0];
    let t = &run["with_preview_thread"];
    assert_eq!(t["kind"], "decoder", "{run}");
    let median = t["total_ms"]["median"].as_f64().unwrap();
    assert!(median > 0.0 && t["total_ms"]["min"].as_f64().unwrap() <= median);
    let plain = run["total_ms"]["median"].as_f64().unwrap();
    assert!((t["over_run"].as_f64().unwrap() - median / plain).abs() < 1e-9);
}

/// The CI smoke bench: the JSON's structure, and phases that add up to the total (no speed is
/// asserted anywhere).
#[test]
fn bench_writes_every_number_and_its_phases_add_up_to_the_total() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.json");
    let o = speedscape(&[
        "bench",
        "--runs",
        "dpmpp:3,lcm:2",
        "--repeat",
        "2",
        "--device",
        "cpu",
        "--json",
        a.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("1 warm-up + 2 repeats"), "{stdout}");
    let v = json_file(&a);
    assert_eq!(v["provider"], "CPU");
    assert_eq!(
        v["tiny_model"], false,
        "the default model is the micro model"
    );
    assert!(v["intra_op_threads"].as_u64().unwrap() >= 1);
    assert!(v["load_ms"]["unet"].as_f64().unwrap() > 0.0);
    assert!(v["load_ms"]["unet_lcm"].as_f64().unwrap() > 0.0);
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(
        (runs[1]["scheduler"].as_str(), runs[1]["unet"].as_str()),
        (Some("lcm"), Some("lcm"))
    );
    for run in runs {
        assert_eq!(run["warmup_ms"].as_array().unwrap().len(), 1);
        assert!(
            run.get("with_preview_thread").is_none(),
            "timed with previews only when asked"
        );
        let repeats = run["repeats"].as_array().unwrap();
        assert_eq!(repeats.len(), 2);
        for r in repeats {
            let f = |k: &str| r[k].as_f64().unwrap();
            let phases = f("text_ms") + f("unet_ms") + f("scheduler_ms") + f("vae_ms");
            let total = f("total_ms");
            // Every millisecond is attributed: the four phases are measured inside the total,
            // and `other` (noise, latent setup, callbacks) is the rest. How big the rest is
            // depends on the machine's load, so no share is asserted.
            assert!(
                phases <= total + 1e-6,
                "phases {phases} ms exceed the total of {total} ms: {r}"
            );
            assert!((f("other_ms") - (total - phases)).abs() < 1e-9);
            assert!(f("ort_ms") > 0.0 && f("ort_ms") <= total, "{r}");
            assert_eq!(r["unet_calls"], run["steps"]);
        }
        for k in [
            "total_ms",
            "text_ms",
            "unet_ms",
            "unet_call_ms",
            "scheduler_ms",
            "vae_ms",
            "other_ms",
        ] {
            let s = &run[k];
            let (med, min, max) = (
                s["median"].as_f64().unwrap(),
                s["min"].as_f64().unwrap(),
                s["max"].as_f64().unwrap(),
            );
            assert!(min <= med && med <= max, "{k}: {s}");
        }
        assert!(run["its"].as_f64().unwrap() > 0.0);
        let pct = run["outside_ort_pct"].as_f64().unwrap();
        assert!((0.0..100.0).contains(&pct), "{pct}");
        assert!(run["peak_rss_bytes"].as_u64().unwrap() > 0);
        assert!(run["rss_growth_bytes"].is_i64());
        assert!(run["peak_gpu_bytes"].is_null(), "CPU: no GPU memory");
        assert_eq!(
            (run["width"].as_u64(), run["height"].as_u64()),
            (Some(64), Some(64))
        );
    }

    // --compare: the ratios of the runs both files have.
    let b = dir.path().join("b.json");
    let o = speedscape(&[
        "bench",
        "--runs",
        "dpmpp:3",
        "--repeat",
        "1",
        "--device",
        "cpu",
        "--json",
        b.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let o = speedscape(&[
        "bench",
        "--compare",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    let row = table
        .lines()
        .find(|l| l.starts_with("dpmpp 3 cfg 7.5 @base"))
        .unwrap_or_else(|| panic!("{table}"));
    let ratio: f64 = row.split_whitespace().nth(8).unwrap().parse().unwrap();
    let want = json_file(&b)["runs"][0]["total_ms"]["median"]
        .as_f64()
        .unwrap()
        / v["runs"][0]["total_ms"]["median"].as_f64().unwrap();
    assert!((ratio - want).abs() < 1e-3, "{ratio} vs {want}: {table}");
    assert!(
        !table.contains("lcm 2"),
        "only runs both files have: {table}"
    );
    let o = speedscape(&[
        "bench",
        "--compare",
        a.to_str().unwrap(),
        "/nonexistent.json",
    ]);
    assert!(!o.status.success());
}

#[test]
fn bench_refuses_bad_run_specs_with_the_fix() {
    let o = speedscape(&["bench", "--runs", "dpmpp:0", "--device", "cpu"]);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(t.contains("step count") && t.contains("Fix:"), "{t}");
}

#[test]
fn models_names_the_family_the_exporter_recorded() {
    let o = speedscape(&["models", "--model-dir", "models/tiny_turbo"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("  family    sd-turbo (text encoder hidden_size 8, 3 layers, gelu; UNet use_linear_projection true"),
        "{t}"
    );
    let o = speedscape(&["models", "--json", "--model-dir", "models/tiny_turbo"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["manifest"]["family"], "sd-turbo");
    // An export from before the field says nothing about it.
    let o = speedscape(&["models", "--model-dir", "models/tiny"]);
    assert!(!text(&o).contains("  family "), "{}", text(&o));
}

#[test]
fn vae_precision_fp16_on_a_folder_without_the_fp16_decoder_names_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("config.toml");
    std::fs::write(&cfg, "[model]\nvae_precision = \"fp16\"\n").unwrap();
    let out = tmp.path().join("x.png");
    let model = root().join("models/tiny");
    let o = generate(
        &out,
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--model-dir",
            model.to_str().unwrap(),
        ],
    );
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(t.contains("has no vae_decoder_fp16/"), "the cause: {t}");
    assert!(
        t.contains("--fp16") && t.contains("vae_precision = \"auto\""),
        "the fix: {t}"
    );
    assert!(!out.exists(), "no image written");
}
