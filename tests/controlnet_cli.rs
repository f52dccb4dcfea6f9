//! ControlNet from the command line, end to end on the embedded tiny model (which has no
//! ControlNet): `--controlnet NAME --control-image PATH [--control-scale S]
//! [--control-preprocess none|canny]` on generate, exercise, bench and sweep. Every bad input
//! (a missing, unreadable or non-image control image, one flag without the other, a scale out
//! of range, a ControlNet the folder does not have) says what is wrong and how to fix it, before
//! any model session loads, and writes nothing. `speedscape models` lists a folder's
//! ControlNets.
//!
//! A UNet without residual inputs asked to run with control, and a ControlNet of another base,
//! need a model folder with a ControlNet graph the exporter makes: models/tests/test_controlnet.py
//! drives the binary on those.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{speedscape, text};

const TINY: &str = "models/tiny";

/// `speedscape generate` of a 2-step image on the tiny model into `out`, with `extra` flags.
fn generate(out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "generate",
        "--prompt",
        "a small cottage",
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
        "--model-dir",
        TINY,
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    speedscape(&args)
}

/// Fails unless `o` failed with every one of `want` in its output, a `Fix:` line, and
/// `folder` holding nothing but `keep`.
fn refused(o: &Output, want: &[&str], folder: &Path, keep: &[&Path]) {
    let t = text(o);
    assert!(!o.status.success(), "exit 0:\n{t}");
    for w in want {
        assert!(t.contains(w), "{w:?} not in:\n{t}");
    }
    assert!(t.contains("Fix: "), "no fix:\n{t}");
    let left: Vec<PathBuf> = std::fs::read_dir(folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !keep.contains(&p.as_path()))
        .collect();
    assert!(left.is_empty(), "written: {left:?}\n{t}");
}

/// A 64×64 PNG edge map (a white square outline on black) at `path`.
fn edge_map(path: &Path) {
    let img = image::RgbImage::from_fn(64, 64, |x, y| {
        let on = (16..48).contains(&x) && (y == 16 || y == 47)
            || (16..48).contains(&y) && (x == 16 || x == 47);
        image::Rgb(if on { [255; 3] } else { [0; 3] })
    });
    img.save(path).unwrap();
}

/// The bad control images: (path, what the message must say), in `dir`: one missing, one that
/// cannot be read as a file (a folder), one that is text named .png.
fn bad_images(dir: &Path) -> Vec<(PathBuf, String)> {
    let missing = dir.join("no-such-edges.png");
    let folder = dir.join("a-folder.png");
    std::fs::create_dir(&folder).unwrap();
    let text = dir.join("not-an-image.png");
    std::fs::write(&text, "this is text, not a PNG\n").unwrap();
    vec![
        (
            missing.clone(),
            format!("control image {} does not exist", missing.display()),
        ),
        (
            folder.clone(),
            format!("cannot read control image {}", folder.display()),
        ),
        (
            text.clone(),
            format!("control image {} is not an image", text.display()),
        ),
    ]
}

#[test]
fn a_missing_unreadable_or_non_image_control_image_is_refused_before_anything_loads() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("inputs");
    std::fs::create_dir(&inputs).unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    for (image, want) in bad_images(&inputs) {
        let png = out.join("x.png");
        let o = generate(
            &png,
            &[
                "--controlnet",
                "edge",
                "--control-image",
                image.to_str().unwrap(),
            ],
        );
        refused(&o, &[&want], &out, &[]);
        // Before any model session: nothing says a component was loaded or a step was run.
        assert!(!text(&o).contains("step 1/"), "{}", text(&o));
    }
}

#[test]
fn exercise_bench_and_sweep_refuse_a_missing_control_image_before_any_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let missing = dir.path().join("no-such-edges.png");
    let want = format!("control image {} does not exist", missing.display());
    let (out_arg, bench_json) = (out.to_str().unwrap(), out.join("b.json"));
    for mut args in [
        vec!["exercise", "1", "--out", out_arg],
        vec!["sweep", "--out", out_arg],
        vec!["bench", "--json", bench_json.to_str().unwrap()],
    ] {
        args.extend(["--device", "cpu", "--model-dir", TINY]);
        args.extend(["--controlnet", "edge", "--control-image"]);
        args.push(missing.to_str().unwrap());
        let o = speedscape(&args);
        refused(&o, &[&want], &out, &[]);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o));
    }
}

#[test]
fn one_control_flag_without_the_other_is_refused_naming_the_missing_one() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("edges.png");
    edge_map(&image);
    let keep = [image.as_path()];
    let png = dir.path().join("x.png");
    let cases: [(&[&str], &[&str]); 4] = [
        (
            &["--control-image", image.to_str().unwrap()],
            &[
                "--control-image was given without --controlnet",
                "Fix: add --controlnet NAME",
            ],
        ),
        (
            &["--controlnet", "edge"],
            &[
                "--controlnet edge was given without --control-image",
                "Fix: add --control-image PATH",
            ],
        ),
        (
            &["--control-scale", "0.5"],
            &["--control-scale was given without --controlnet"],
        ),
        (
            &["--control-preprocess", "canny"],
            &["--control-preprocess was given without --controlnet"],
        ),
    ];
    for (flags, want) in cases {
        refused(&generate(&png, flags), want, dir.path(), &keep);
    }
    // The same on the commands that run many: before any run.
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let o = speedscape(&[
        "exercise",
        "1",
        "--device",
        "cpu",
        "--model-dir",
        TINY,
        "--out",
        out.to_str().unwrap(),
        "--control-image",
        image.to_str().unwrap(),
    ]);
    refused(
        &o,
        &["--control-image was given without --controlnet"],
        &out,
        &[],
    );
}

#[test]
fn a_control_scale_that_is_not_a_number_from_0_to_10_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("edges.png");
    edge_map(&image);
    let keep = [image.as_path()];
    let png = dir.path().join("x.png");
    for (scale, shown) in [
        ("NaN", "NaN"),
        ("-1", "-1"),
        ("1e6", "1000000"),
        ("inf", "inf"),
    ] {
        let o = generate(
            &png,
            &[
                "--controlnet",
                "edge",
                "--control-image",
                image.to_str().unwrap(),
                "--control-scale",
                scale,
            ],
        );
        refused(
            &o,
            &[
                &format!("the control scale {shown} is not a number from 0 to 10"),
                "Fix: pass --control-scale between 0 (no control) and 2 (strong)",
            ],
            dir.path(),
            &keep,
        );
        assert_eq!(o.status.code(), Some(2), "{scale}: {}", text(&o));
    }
    let o = generate(
        &png,
        &[
            "--controlnet",
            "edge",
            "--control-image",
            image.to_str().unwrap(),
            "--control-scale",
            "lots",
        ],
    );
    refused(&o, &["\"lots\" is not a number"], dir.path(), &keep);
    let o = generate(
        &png,
        &[
            "--controlnet",
            "edge",
            "--control-image",
            image.to_str().unwrap(),
            "--control-preprocess",
            "sobel",
        ],
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("[possible values: none, canny]"), "{t}");
}

#[test]
fn a_controlnet_the_folder_does_not_have_lists_what_it_has_and_how_to_export_one() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("edges.png");
    edge_map(&image);
    let png = dir.path().join("x.png");
    let o = generate(
        &png,
        &[
            "--controlnet",
            "edge",
            "--control-image",
            image.to_str().unwrap(),
        ],
    );
    refused(
        &o,
        &[
            "has no ControlNet edge (no controlnet_edge/model.onnx); it has none",
            "Fix: pass one of its ControlNets to --controlnet, or export one into the model: models/export.py --controlnet edge=SOURCE",
        ],
        dir.path(),
        &[image.as_path()],
    );
}

#[test]
fn exercise_4_refuses_a_control_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("edges.png");
    edge_map(&image);
    let o = speedscape(&[
        "exercise",
        "4",
        "--scenario",
        "B",
        "--device",
        "cpu",
        "--model-dir",
        TINY,
        "--controlnet",
        "edge",
        "--control-image",
        image.to_str().unwrap(),
    ]);
    refused(
        &o,
        &["--controlnet and --control-image do not apply to exercise 4"],
        dir.path(),
        &[image.as_path()],
    );
}

#[test]
fn models_lists_the_folders_controlnets_or_says_how_to_export_one() {
    let o = speedscape(&["models", "--model-dir", TINY]);
    let t = text(&o);
    assert!(
        t.contains(
            "controlnets none: --controlnet needs one; export it into the model with models/export.py --controlnet NAME=SOURCE"
        ),
        "{t}"
    );
    // A folder with a ControlNet (a stand-in file: listing reads no graph) and its manifest
    // record.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("controlnet_edge")).unwrap();
    std::fs::write(dir.path().join("controlnet_edge/model.onnx"), [0u8; 2048]).unwrap();
    let manifest = serde_json::json!({
        "format": "speedscape-export/1",
        "controlnets": {"edge": {"folder": "controlnet_edge", "residuals": 6, "kind": "folder", "source": "micro_src/controlnet"}},
    });
    std::fs::write(dir.path().join("manifest.json"), manifest.to_string()).unwrap();
    let o = speedscape(&["models", "--model-dir", dir.path().to_str().unwrap()]);
    let t = text(&o);
    let line = t
        .lines()
        .find(|l| l.trim_start().starts_with("edge "))
        .unwrap_or_else(|| panic!("no ControlNet line:\n{t}"));
    assert!(line.contains("controlnet_edge/"), "{line}");
    assert!(
        line.contains("6 down-block residuals + mid, from micro_src/controlnet"),
        "{line}"
    );
    let o = speedscape(&[
        "models",
        "--json",
        "--model-dir",
        dir.path().to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["controlnets"][0]["name"], "edge");
    assert_eq!(v["controlnets"][0]["residuals"], 6);
    assert_eq!(v["controlnets"][0]["bytes"], 2048);
}
