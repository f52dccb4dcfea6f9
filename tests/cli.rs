//! The `speedscape` binary end to end, on the embedded tiny model and the CPU wheel.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ndarray::ArrayD;
use ndarray_npy::read_npy;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn speedscape(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_speedscape"))
        .args(args)
        .current_dir(root())
        .env_remove("ORT_DYLIB_PATH")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

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
    assert_eq!(report["tiny_model"], true);
    // Session creation is reported apart from the run, per component.
    for component in ["text_encoder", "unet", "vae_decoder"] {
        assert!(
            report["load_ms"][component].as_f64().unwrap() > 0.0,
            "{component}"
        );
    }
    let img = image::open(&png).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (64, 64), "the tiny model's native size");
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
    let o = generate(&dir.path().join("x.png"), &[]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("provider CPUExecutionProvider"), "{t}");
    assert!(t.contains("random weights"), "{t}");
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
    let o = generate(&dir.path().join("x.png"), &["--unet", "turbo"]);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(t.contains("turbo") && t.contains("lcm_style"), "{t}");
}

#[test]
fn a_size_off_the_vae_grid_is_refused_with_a_fix() {
    let dir = tempfile::tempdir().unwrap();
    let o = generate(&dir.path().join("x.png"), &["--width", "60"]);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(t.contains("width 60") && t.contains("multiple of 8"), "{t}");
}

#[test]
fn tokens_prints_77_ids_and_the_count() {
    let o = speedscape(&["tokens", "a small cottage", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ids"].as_array().unwrap().len(), 77);
    assert_eq!(v["count"], 3);
    assert_eq!(v["ids"][0], 49406);
    assert_eq!(v["ids"][4], 49407);
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

#[test]
fn doctor_on_the_cpu_wheel_says_cpu() {
    let o = speedscape(&["doctor", "--device", "cpu"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("CPUExecutionProvider"), "{t}");
    assert!(t.contains("CPU-only wheel"), "{t}");
    assert!(t.contains("unet_lcm_style") && !t.contains("FAILED"), "{t}");
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
