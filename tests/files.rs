//! What the CLI writes: never over an existing file without --force, never a device or folder,
//! a clear error (path and fix) before the run when the output cannot be written, nothing
//! half-written when a write fails midway, and a cache that cannot be written never stops a run.

mod common;

use common::{speedscape, text};
use std::path::Path;
use std::process::{Command, Output};

/// `speedscape args…` with writes limited to `kib` KiB per file (`ulimit -f`; SIGXFSZ ignored,
/// so a write past it fails with EFBIG as a full disk fails with ENOSPC).
fn speedscape_with_file_limit(kib: u32, args: &[&str]) -> Output {
    Command::new("bash")
        .arg("-c")
        .arg(format!("trap '' XFSZ; ulimit -f {kib}; exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_speedscape"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("ORT_DYLIB_PATH")
        .output()
        .unwrap()
}

fn generate_args<'a>(out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "generate",
        "--prompt",
        "a small cottage on a hillside at sunset",
        "--scheduler",
        "dpmpp",
        "--steps",
        "2",
        "--cfg",
        "7.5",
        "--seed",
        "42",
        "--device",
        "cpu",
        "--out",
        out,
    ];
    args.extend_from_slice(extra);
    args
}

fn generate(out: &Path, extra: &[&str]) -> Output {
    speedscape(&generate_args(out.to_str().unwrap(), extra))
}

fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    n.sort();
    n
}

#[test]
fn generate_refuses_an_existing_out_before_the_run_and_force_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("mine.png");
    std::fs::write(&png, b"the user's picture").unwrap();
    let o = generate(&png, &[]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains(&format!(
            "{} already exists; speedscape does not overwrite it\n      Fix: choose a new name, or pass --force to replace it",
            png.display()
        )),
        "{t}"
    );
    assert!(!t.contains("step 1/2"), "refused before the run: {t}");
    assert_eq!(std::fs::read(&png).unwrap(), b"the user's picture");
    assert_eq!(names(dir.path()), vec!["mine.png"]);

    let o = generate(&png, &["--force"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(image::open(&png).unwrap().width(), 64);
    assert_eq!(
        names(dir.path()),
        vec!["mine.png"],
        "no temporary file left"
    );
}

#[test]
fn generate_refuses_an_existing_save_raw_and_writes_neither_file() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("new.png");
    let raw = dir.path().join("raw.npy");
    std::fs::write(&raw, b"earlier floats").unwrap();
    let o = generate(&png, &["--save-raw", raw.to_str().unwrap()]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains(&format!("{} already exists", raw.display())),
        "{t}"
    );
    assert!(!png.exists());
    assert_eq!(std::fs::read(&raw).unwrap(), b"earlier floats");
}

#[test]
fn noise_and_bench_keep_an_existing_file_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let npy = dir.path().join("noise.npy");
    std::fs::write(&npy, b"keep").unwrap();
    let noise = |extra: &[&str]| {
        let mut args = vec![
            "noise",
            "--seed",
            "1",
            "--shape",
            "1,4,8,8",
            "--out",
            npy.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        speedscape(&args)
    };
    let o = noise(&[]);
    assert!(!o.status.success());
    assert!(text(&o).contains("already exists") && text(&o).contains("--force"));
    assert_eq!(std::fs::read(&npy).unwrap(), b"keep");
    let o = noise(&["--force"]);
    assert!(o.status.success(), "{}", text(&o));
    let arr: ndarray::ArrayD<f32> = ndarray_npy::read_npy(&npy).unwrap();
    assert_eq!(arr.shape(), &[1, 1, 4, 8, 8]);

    let json = dir.path().join("bench.json");
    std::fs::write(&json, b"{\"earlier\": true}").unwrap();
    let o = speedscape(&[
        "bench",
        "--runs",
        "dpmpp:2",
        "--repeat",
        "1",
        "--device",
        "cpu",
        "--json",
        json.to_str().unwrap(),
    ]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains(&format!("{} already exists", json.display())),
        "{t}"
    );
    assert!(o.stdout.is_empty(), "refused before timing anything: {t}");
    assert_eq!(std::fs::read(&json).unwrap(), b"{\"earlier\": true}");
}

#[test]
fn a_device_or_folder_is_never_replaced_even_with_force() {
    // As root, renaming over /dev/full would replace the device node: refused.
    let o = speedscape(&generate_args("/dev/full", &["--force"]));
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("cannot write /dev/full: it exists and is not a regular file"),
        "{t}"
    );
    assert!(!t.contains("step 1/2"), "{t}");
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::metadata("/dev/full")
            .unwrap()
            .file_type()
            .is_char_device()
    );
    let dir = tempfile::tempdir().unwrap();
    let o = generate(dir.path(), &["--force"]);
    assert!(text(&o).contains("is not a regular file"), "{}", text(&o));
    assert!(names(dir.path()).is_empty());
}

#[test]
fn an_output_path_under_a_regular_file_is_refused_before_the_run_naming_the_file() {
    // ENOTDIR: a folder that is a file stops root as it stops anyone (chmod would not).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("results");
    std::fs::write(&file, b"a file, not a folder").unwrap();
    let png = file.join("x.png");
    let o = generate(&png, &[]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains(&format!(
            "cannot write {}: {} is a file, not a folder\n      Fix: choose a path in a folder (or move {} away)",
            png.display(),
            file.display(),
            file.display()
        )),
        "{t}"
    );
    assert!(!t.contains("step 1/2"), "refused before the run: {t}");

    // The exercise's --out: refused before its runs, not after them.
    let out = file.join("out");
    let o = speedscape(&[
        "exercise",
        "1",
        "--device",
        "cpu",
        "--out",
        out.to_str().unwrap(),
    ]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains(&format!(
            "cannot create the output folder {}: {} is a file, not a folder",
            out.display(),
            file.display()
        )),
        "{t}"
    );
    assert!(o.stdout.is_empty(), "no run before the refusal: {t}");
    assert_eq!(std::fs::read(&file).unwrap(), b"a file, not a folder");
}

#[test]
fn a_png_that_cannot_be_written_whole_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("x.png");
    // 256×256 of noise is a PNG of about 200 KiB: past a 64 KiB limit.
    let o = speedscape_with_file_limit(
        64,
        &generate_args(
            png.to_str().unwrap(),
            &["--width", "256", "--height", "256"],
        ),
    );
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains(&format!(
            "cannot write {}; nothing was written there",
            png.display()
        )) && t.contains("File too large"),
        "{t}"
    );
    assert!(t.contains("Fix: check the disk of"), "{t}");
    assert!(
        names(dir.path()).is_empty(),
        "no PNG, no temporary file: {:?}",
        names(dir.path())
    );
}

#[test]
fn an_optimised_graph_cache_that_cannot_be_written_does_not_stop_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[runtime.session]\noptimized_cache = \"{}\"\n",
            cache.display()
        ),
    )
    .unwrap();
    let png = dir.path().join("x.png");
    // On the tiny model (whose text encoder keeps CLIP's whole token table), the text encoder's
    // optimised graph (6 MB) and the UNet's (3 MB) cannot be written.
    let mut args = vec!["--config", config.to_str().unwrap()];
    args.extend(generate_args(
        png.to_str().unwrap(),
        &["--model-dir", "models/tiny"],
    ));
    let o = speedscape_with_file_limit(512, &args);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(image::open(&png).unwrap().width(), 64);
    // What was cached is whole; nothing half-written (no `.partial` staging folder) stays.
    let entries = names(&cache);
    assert!(entries.iter().all(|e| !e.starts_with('.')), "{entries:?}");
    assert!(
        !entries.iter().any(|e| e.starts_with("text_encoder")),
        "the text encoder could not be cached: {entries:?}"
    );
}
