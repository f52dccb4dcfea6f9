//! `speedscape sweep` on the embedded models (the tiny one, with its random CLIP scorer, and the
//! micro one, the default): the points it measures, the files it writes, the plot's axes, and the
//! numbers that must hold whatever the machine's speed.

mod common;

use std::path::{Path, PathBuf};

use common::{speedscape, text};
use serde_json::Value;

/// `speedscape sweep --device cpu --out <out>` with `args` (on the default model unless they
/// name another).
fn run_sweep(out: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["sweep", "--device", "cpu", "--out", out.to_str().unwrap()];
    all.extend_from_slice(args);
    speedscape(&all)
}

/// Runs a sweep on the tiny model with `args` into a fresh folder; the folder it saved and its
/// `sweep.json`.
fn sweep(out: &Path, args: &[&str]) -> (PathBuf, Value) {
    let mut all = vec!["--model-dir", "models/tiny"];
    all.extend_from_slice(args);
    let o = run_sweep(out, &all);
    assert!(o.status.success(), "{}", text(&o));
    let dir = saved_folder(out);
    let json = saved_json(&dir);
    (dir, json)
}

/// The one folder a sweep saved under `out`.
fn saved_folder(out: &Path) -> PathBuf {
    let mut folders: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(folders.len(), 1, "one new folder: {folders:?}");
    let dir = folders.remove(0);
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("sweep-"), "{dir:?}");
    dir
}

fn md_has_no_clip(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("summary.md"))
        .unwrap()
        .contains("No CLIP score")
}

fn saved_json(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("sweep.json")).unwrap()).unwrap()
}

fn steps_of(series: &Value) -> Vec<u64> {
    series["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["steps"].as_u64().unwrap())
        .collect()
}

/// The x coordinates of every `<polyline>` in plotters' SVG (the curves; the frame and grid are
/// `<line>`/`<rect>`).
fn polylines_x(svg: &str) -> Vec<Vec<f64>> {
    svg.split("<polyline")
        .skip(1)
        .map(|rest| {
            let points = rest.split("points=\"").nth(1).unwrap();
            let points = &points[..points.find('"').unwrap()];
            points
                .split_whitespace()
                .map(|xy| xy.split(',').next().unwrap().parse::<f64>().unwrap())
                .collect()
        })
        .collect()
}

#[test]
fn a_one_seed_sweep_of_every_preset_measures_each_point_and_writes_its_files() {
    let out = tempfile::tempdir().unwrap();
    // The issue's own command: every default method and step count, one seed.
    let (dir, json) = sweep(
        out.path(),
        &["--preset", "all", "--seeds", "1", "--rng", "torch-cpu"],
    );
    let land = &json["landscape"];
    let series = land["series"].as_array().unwrap();
    let names: Vec<&str> = series
        .iter()
        .map(|s| s["method"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["dpmpp", "lcm", "ddpm"]);
    assert_eq!(steps_of(&series[0]), [5, 8, 10, 15, 20, 30, 50]);
    assert_eq!(steps_of(&series[1]), [1, 2, 3, 4, 6, 8]);
    assert_eq!(steps_of(&series[2]), [25, 50, 100]);
    for s in series {
        for p in s["points"].as_array().unwrap() {
            assert_eq!(
                (p["runs"].as_u64(), p["planned"].as_u64()),
                (Some(1), Some(1))
            );
            assert!(p["time_ms"].as_f64().unwrap() > 0.0, "{p}");
            let ssim = p["ssim"]["mean"].as_f64().unwrap();
            assert!((-1.0..=1.0).contains(&ssim), "{p}");
        }
        // Every curve has a knee, and it is one of its points.
        let knee = s["knee"].as_u64().unwrap();
        assert!(steps_of(s).contains(&knee), "{s}");
    }
    // DPM-Solver++ 50 is the reference's own setting: the same image, bit for bit.
    let same = &series[0]["points"][6];
    assert_eq!(same["steps"], 50);
    assert_eq!(same["ssim"]["mean"].as_f64(), Some(1.0));
    assert_eq!(same["identical"], 1);
    assert!(
        same["psnr_db"].is_null(),
        "identical images have no finite PSNR"
    );
    // ...and fewer steps are not.
    assert!(series[0]["points"][0]["ssim"]["mean"].as_f64().unwrap() < 1.0);
    assert_eq!(json["runs"].as_array().unwrap().len(), 1 + 7 + 6 + 3);
    assert!(land["reference"]["time_ms"].as_f64().unwrap() > 0.0);

    // The files.
    let png = image::open(dir.join("plot.png")).unwrap();
    assert_eq!((png.width(), png.height()), (1000, 640));
    let csv = std::fs::read_to_string(dir.join("points.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(
        lines[0].starts_with("method,label,scheduler,unet,cfg,steps,"),
        "{csv}"
    );
    assert_eq!(
        lines.len(),
        1 + 1 + 16,
        "header, reference, 16 points:\n{csv}"
    );
    assert!(lines[1].starts_with("reference,DPM-Solver++ 50,dpmpp,base,7.5,50,"));
    assert_eq!(
        csv.matches(",true\n").count(),
        3,
        "one knee per method:\n{csv}"
    );
    assert!(!md_has_no_clip(&dir), "the tiny model has a scorer");
    // The tiny model has a CLIP image encoder: every point has a CLIP score.
    assert!(
        lines[0].contains(",clip_score_mean,clip_score_std,clip_score_ci95,knee"),
        "{csv}"
    );
    assert_eq!(land["clip_score"], true);
    for s in series {
        for p in s["points"].as_array().unwrap() {
            let clip = p["clip_score"]["mean"].as_f64().unwrap();
            assert!((0.0..=100.0).contains(&clip), "{p}");
        }
    }
    let images: Vec<String> = std::fs::read_dir(dir.join("images"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(images.len(), 17, "{images:?}");
    assert!(
        images.contains(&"lcm-4-seed42.png".to_string()),
        "{images:?}"
    );
    let md = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    assert!(md.contains("![SSIM to the reference"), "{md}");
    assert!(md.contains("## Where the free speedup ended"), "{md}");
    assert!(md.contains("**DPM-Solver++** (cfg 7.5"), "{md}");
    assert!(
        md.contains("numerical convergence"),
        "the tiny model's caveat: {md}"
    );

    // The plot: one curve per method, each drawn forward along the time axis.
    let svg = std::fs::read_to_string(dir.join("plot.svg")).unwrap();
    let lines = polylines_x(&svg);
    let curves: Vec<&Vec<f64>> = lines.iter().filter(|xs| xs.len() > 2).collect();
    assert_eq!(curves.len(), 3, "{lines:?}");
    for xs in curves {
        assert!(xs.windows(2).all(|w| w[0] <= w[1]), "x goes back: {xs:?}");
    }
    for label in ["DPM-Solver++", "LCM-LoRA", "DDPM", "median time per image"] {
        assert!(svg.contains(label), "{label} missing from the plot");
    }
}

#[test]
fn two_seeds_give_each_point_a_spread_and_the_table_prints_the_knees() {
    let out = tempfile::tempdir().unwrap();
    let o = run_sweep(
        out.path(),
        &[
            "--preset",
            "dpmpp",
            "--steps",
            "2,4,50",
            "--seeds",
            "2",
            "--seed",
            "7",
            "--reference",
            "dpmpp:50",
        ],
    );
    let all = text(&o);
    assert!(o.status.success(), "{all}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("seeds 7–8"), "{stdout}");
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("DPM-Solver++ "))
        .collect();
    assert_eq!(rows.len(), 3, "{stdout}");
    assert!(rows.iter().all(|r| r.contains(" 2/2 ")), "{stdout}");
    assert_eq!(
        rows.iter().filter(|r| r.ends_with("◀ knee")).count(),
        1,
        "{stdout}"
    );
    assert!(
        rows[2].contains("identical"),
        "50 steps is the reference: {stdout}"
    );
    assert!(stdout.contains("Where the free speedup ended:"), "{stdout}");
    assert!(stdout.contains("saved to "), "{stdout}");
    // Progress went to stderr, a line per completed point.
    assert!(all.contains("DPM-Solver++ 4: "), "{all}");
    let dir = saved_folder(out.path());
    let json = saved_json(&dir);
    let p = &json["landscape"]["series"][0]["points"][0];
    assert_eq!(p["ssim"]["n"], 2);
    assert!(p["ssim"]["min"].as_f64() <= p["ssim"]["max"].as_f64());
    // Only the first seed's images are kept.
    assert_eq!(std::fs::read_dir(dir.join("images")).unwrap().count(), 4);
}

#[test]
fn bad_sweep_arguments_are_refused_before_any_run() {
    let cases: [(&[&str], &str); 9] = [
        (&["--preset", "euler"], "there is no sweep preset \"euler\""),
        // The micro model has a judge but no CLIP scorer, the tiny model the reverse.
        (
            &["--quality", "clip"],
            "--quality clip (CLIP score) needs /",
        ),
        (
            &["--model-dir", "models/tiny", "--quality", "judge"],
            "models/tiny/judge/, which this model folder does not have",
        ),
        (
            &["--prompts", "tests/fixtures/no-such-set.txt"],
            "cannot read the prompt set tests/fixtures/no-such-set.txt",
        ),
        (&["--tolerance", "0"], "--tolerance 0 is not above 0"),
        (&["--steps", "5,x"], "--steps: \"x\" is not a step count"),
        (&["--seeds", "0"], "--seeds 0 is outside 1–64"),
        (
            &["--reference", "dpmpp"],
            "--reference \"dpmpp\" has no step count",
        ),
        (
            &["--preset", "lcm", "--steps", "4,60"],
            "lcm cannot run 60 steps",
        ),
    ];
    for (args, expect) in cases {
        let out = tempfile::tempdir().unwrap();
        let o = run_sweep(out.path(), args);
        let t = text(&o);
        assert!(!o.status.success(), "{args:?} ran:\n{t}");
        assert!(t.contains(expect), "{args:?}: {expect:?} not in\n{t}");
        assert!(t.contains("Fix: "), "{args:?}: no Fix line\n{t}");
        assert_eq!(
            std::fs::read_dir(out.path()).unwrap().count(),
            0,
            "{args:?} saved something"
        );
    }
}

#[test]
fn on_the_micro_model_the_sweep_asks_for_a_picture_of_its_world() {
    let out = tempfile::tempdir().unwrap();
    let o = run_sweep(
        out.path(),
        &["--preset", "lcm", "--steps", "1", "--seeds", "1"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let json = saved_json(&saved_folder(out.path()));
    assert_eq!(json["model_kind"], "micro");
    // config.toml's `[sweep] prompts = { micro = … }`.
    assert_eq!(
        json["prompt"],
        "a large yellow star on a blue background at sunset"
    );
}

#[test]
fn the_readme_shows_the_plots_the_command_made() {
    let readme = std::fs::read_to_string(common::root().join("README.md")).unwrap();
    for name in ["landscape-tiny.png", "landscape-micro.png"] {
        assert!(
            readme.contains(&format!("](assets/{name})")),
            "README shows {name}"
        );
        let png = image::open(common::root().join("assets").join(name)).unwrap();
        assert_eq!(
            (png.width(), png.height()),
            (
                speedscape::sweep::plot::WIDTH,
                speedscape::sweep::plot::HEIGHT
            ),
            "{name}: the plot's own size: it came from plot.png, unscaled"
        );
    }
}

#[test]
fn without_a_clip_image_encoder_the_clip_column_is_absent_not_zero() {
    let model = tempfile::tempdir().unwrap();
    common::copy_dir(&common::root().join("models/tiny"), model.path());
    std::fs::remove_dir_all(model.path().join("clip_image_encoder")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let o = run_sweep(
        out.path(),
        &[
            "--model-dir",
            model.path().to_str().unwrap(),
            "--preset",
            "lcm",
            "--steps",
            "1,2",
            "--seeds",
            "1",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let header = stdout.lines().find(|l| l.starts_with("method")).unwrap();
    assert!(!header.contains("CLIP"), "{stdout}");
    let dir = saved_folder(out.path());
    let csv = std::fs::read_to_string(dir.join("points.csv")).unwrap();
    assert!(!csv.contains("clip"), "{csv}");
    let json = saved_json(&dir);
    assert_eq!(json["landscape"]["clip_score"], false);
    assert!(json["landscape"]["series"][0]["points"][0]["clip_score"].is_null());
    // Both say why, and how to get one.
    assert!(stdout.contains("No CLIP score: "), "{stdout}");
    let md = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    assert!(
        md.contains("has no CLIP image encoder (clip_image_encoder/)"),
        "{md}"
    );
    assert!(!md.contains("| CLIP |"), "{md}");
}
