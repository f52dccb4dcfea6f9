//! Run-time LoRA from the command line, end to end on the embedded tiny model (its `loras/`
//! holds `lcm` and `style`): `--lora NAME_OR_FILE=WEIGHT` on generate, exercise, bench and
//! sweep, `lora = { … }` in config.toml, the adapters in every report, `speedscape models`
//! listing them, and `sweep --lora-weights`. Each bad input says what is wrong and how to fix it,
//! and writes nothing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{root, speedscape, text};

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
/// `folder` still empty.
fn refused(o: &Output, want: &[&str], folder: &Path) {
    let t = text(o);
    assert!(!o.status.success(), "exit 0:\n{t}");
    for w in want {
        assert!(t.contains(w), "{w:?} not in:\n{t}");
    }
    assert!(t.contains("Fix: "), "no fix:\n{t}");
    let left: Vec<PathBuf> = std::fs::read_dir(folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "written: {left:?}\n{t}");
}

#[test]
fn a_lora_without_a_weight_or_with_a_bad_one_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("x.png");
    let cases: [(&str, &[&str]); 5] = [
        ("style", &["LoRA \"style\" has no weight", "style=1.0"]),
        (
            "style=nan",
            &["LoRA \"style\": weight NaN is outside -10..10"],
        ),
        (
            "style=11",
            &["LoRA \"style\": weight 11 is outside -10..10"],
        ),
        ("style=-inf", &["weight -inf is outside -10..10"]),
        ("style=lots", &["weight \"lots\" is not a number"]),
    ];
    for (spec, want) in cases {
        let o = generate(&png, &["--lora", spec]);
        refused(&o, want, dir.path());
        // A usage error, as clap gives every bad flag value.
        assert_eq!(o.status.code(), Some(2), "{spec}: {}", text(&o));
    }
}

#[test]
fn an_adapter_given_twice_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let o = generate(
        &dir.path().join("x.png"),
        &["--lora", "style=1", "--lora", "style=0.5"],
    );
    refused(&o, &["LoRA \"style\" is given twice"], dir.path());
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let (out_arg, bench_json) = (out.to_str().unwrap(), out.join("b.json"));
    for mut args in [
        vec!["exercise", "1", "--out", out_arg],
        vec!["sweep", "--out", out_arg],
        vec!["bench", "--json", bench_json.to_str().unwrap()],
    ] {
        args.extend(["--lora", "lcm=1", "--lora", "lcm=0.5", "--device", "cpu"]);
        args.extend(["--model-dir", TINY]);
        refused(&speedscape(&args), &["LoRA \"lcm\" is given twice"], &out);
    }
}

#[test]
fn an_adapter_the_folder_does_not_have_is_refused_before_any_run_listing_those_it_has() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let o = speedscape(&[
        "exercise",
        "1",
        "--device",
        "cpu",
        "--model-dir",
        TINY,
        "--lora",
        "stlye=0.5",
        "--out",
        out.to_str().unwrap(),
    ]);
    refused(
        &o,
        &[
            "exercise 1 (\"The sampler swap\"): run \"DDPM 50\": LoRA \"stlye\" is neither an adapter of the model folder nor a file; the model folder's adapters: lcm, style",
            "Fix: name one of the folder's adapters (speedscape models lists them)",
        ],
        &out,
    );
    // No run started: no table.
    assert!(!text(&o).contains("speedup"), "{}", text(&o));
}

#[test]
fn a_lora_file_that_does_not_exist_is_refused_before_any_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let missing = dir.path().join("pixel.safetensors");
    let spec = format!("{}=0.8", missing.display());
    let o = speedscape(&[
        "sweep",
        "--device",
        "cpu",
        "--model-dir",
        TINY,
        "--lora",
        &spec,
        "--out",
        out.to_str().unwrap(),
    ]);
    refused(
        &o,
        &[&format!(
            "LoRA {:?} is neither an adapter of the model folder nor a file",
            missing.display().to_string()
        )],
        &out,
    );
}

#[test]
fn sweep_lora_weights_ranges_are_checked_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &str); 7] = [
        ("0:1:0.5", "no `=` between the adapter and its weights"),
        ("=0:1:0.5", "no adapter before the `=`"),
        (
            "style=0:1.5",
            "\"0:1.5\" is not START:STOP:STEP (three numbers)",
        ),
        ("style=1:0:0.25", "START 1 is above STOP 0"),
        ("style=0:1:0", "STEP 0 is not above 0"),
        ("style=0:20:1", "weights 0..20 go beyond ±10"),
        ("style=0:10:0.1", "101 weights are more than 50"),
    ];
    for (range, want) in cases {
        let o = speedscape(&[
            "sweep",
            "--device",
            "cpu",
            "--model-dir",
            TINY,
            "--lora-weights",
            range,
            "--out",
            dir.path().to_str().unwrap(),
        ]);
        refused(
            &o,
            &[
                &format!("--lora-weights {range:?}: {want}"),
                "Fix: write ADAPTER=START:STOP:STEP",
            ],
            dir.path(),
        );
    }
}

/// A config whose exercise 7 runs two 2-step runs on the tiny model, the second with
/// `lora = { style = 0.6 }`.
fn lora_config(dir: &Path) -> PathBuf {
    let path = dir.join("config.toml");
    let text = format!(
        r#"[model]
dir = "{}"

[[exercises]]
number = 7
title = "Weights"
about = "The style at 0.6."
prompt = "a red fox"
runs = [
  {{ label = "plain", scheduler = "dpmpp", steps = 2, cfg = 7.5 }},
  {{ label = "styled", scheduler = "dpmpp", steps = 2, cfg = 7.5, lora = {{ style = 0.6 }} }},
]
"#,
        root().join(TINY).display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_config_runs_lora_and_the_command_lines_are_in_the_table_and_the_reports() {
    let dir = tempfile::tempdir().unwrap();
    let config = lora_config(dir.path());
    let out = dir.path().join("out");
    let o = speedscape(&[
        "--config",
        config.to_str().unwrap(),
        "exercise",
        "7",
        "--device",
        "cpu",
        "--lora",
        "lcm=0.5",
        "--out",
        out.to_str().unwrap(),
    ]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    // The table names each run's UNet with its adapters: the config's, then --lora's.
    let row = |label: &str| {
        t.lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no {label} row:\n{t}"))
    };
    assert!(row("plain ").contains(" base + lcm×0.5 "), "{t}");
    assert!(
        row("styled ").contains(" base + style×0.6 + lcm×0.5 "),
        "{t}"
    );
    let folder = std::fs::read_dir(&out)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let md = std::fs::read_to_string(folder.join("report.md")).unwrap();
    assert!(md.contains("| base + style×0.6 + lcm×0.5 |"), "{md}");
    let mut csv = csv::Reader::from_path(folder.join("timings.csv")).unwrap();
    let header = csv.headers().unwrap().clone();
    let col = header.iter().position(|h| h == "loras").unwrap();
    let loras: Vec<String> = csv.records().map(|r| r.unwrap()[col].to_string()).collect();
    assert_eq!(loras, ["lcm=0.5", "style=0.6 lcm=0.5"]);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.join("timings.json")).unwrap()).unwrap();
    assert_eq!(json["rows"][1]["loras"][0]["adapter"], "style");
    assert_eq!(json["rows"][1]["loras"][0]["weight"], 0.6);
}

/// The SHA-256 of a tiny-model adapter as the exporter recorded it in manifest.json.
fn manifest_sha(adapter: &str) -> String {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root().join(TINY).join("manifest.json")).unwrap())
            .unwrap();
    m["loras"][adapter]["sha256"].as_str().unwrap().to_string()
}

#[test]
fn the_reports_name_each_adapters_file_and_its_sha256() {
    let dir = tempfile::tempdir().unwrap();
    let config = lora_config(dir.path());
    let out = dir.path().join("out");
    let o = speedscape(&[
        "--config",
        config.to_str().unwrap(),
        "exercise",
        "7",
        "--device",
        "cpu",
        "--out",
        out.to_str().unwrap(),
    ]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let sha = manifest_sha("style");
    // The table: the digest's first 12 digits; report.md: all of it.
    assert!(
        t.contains(&format!("LoRA style×0.6: sha256 {} (", &sha[..12])),
        "{t}"
    );
    let folder = std::fs::read_dir(&out)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let md = std::fs::read_to_string(folder.join("report.md")).unwrap();
    assert!(md.contains("| style | 0.6 | diffusers | unet |"), "{md}");
    assert!(md.contains(&format!("`{sha}`")), "{md}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.join("timings.json")).unwrap()).unwrap();
    assert_eq!(json["runs"][1]["adapters"][0]["sha256"], sha.as_str());
    assert_eq!(json["rows"][1]["adapters"][0]["sha256"], sha.as_str());
}

#[test]
fn bench_names_the_adapters_in_its_label_spec_and_json_with_their_digests() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let o = speedscape(&[
        "bench",
        "--runs",
        "lcm:1",
        "--repeat",
        "1",
        "--warmup",
        "0",
        "--device",
        "cpu",
        "--model-dir",
        TINY,
        "--lora",
        "style=0.5",
        "--json",
        json.to_str().unwrap(),
    ]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("lcm 1 cfg 1.5 @lcm + style×0.5"), "{t}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let run = &v["runs"][0];
    assert_eq!(run["spec"], "lcm:1 +style=0.5");
    assert_eq!(run["loras"][0]["adapter"], "style");
    assert_eq!(run["loras"][0]["weight"], 0.5);
    // The fused file's digest, in the text and the JSON.
    let sha = manifest_sha("style");
    assert!(t.contains(&format!("LoRA style×0.5: sha256 {sha}")), "{t}");
    assert_eq!(run["adapters"][0]["sha256"], sha.as_str());
}

#[test]
fn models_lists_the_folders_adapters_with_size_and_digest() {
    let o = speedscape(&["models", "--model-dir", TINY]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("adapters (for --lora NAME=WEIGHT, fused at run time)"),
        "{t}"
    );
    for name in ["lcm", "style"] {
        let line = t
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")) && l.contains("sha256"))
            .unwrap_or_else(|| panic!("no {name} line:\n{t}"));
        assert!(
            line.contains(&format!("loras/{name}.safetensors")),
            "{line}"
        );
        assert!(line.contains(&manifest_sha(name)[..12]), "{line}");
    }
    let o = speedscape(&["models", "--json", "--model-dir", TINY]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let style = &v["adapters"][1];
    assert_eq!(style["name"], "style");
    assert_eq!(style["bytes"], 51120);
    assert_eq!(style["sha256"], manifest_sha("style").as_str());
}

/// `speedscape sweep --lora-weights style=0:1:0.5` on the tiny model, one seed, a 2-step
/// reference; the saved folder.
fn weight_sweep(dir: &Path) -> (Output, PathBuf) {
    let o = speedscape(&[
        "sweep",
        "--device",
        "cpu",
        "--model-dir",
        TINY,
        "--seeds",
        "1",
        "--reference",
        "dpmpp:2",
        "--lora-weights",
        "style=0:1:0.5",
        "--out",
        dir.to_str().unwrap(),
    ]);
    let folder = std::fs::read_dir(dir)
        .unwrap()
        .next()
        .map(|e| e.unwrap().path())
        .unwrap_or_default();
    (o, folder)
}

#[test]
fn a_weight_sweep_runs_lcm_at_4_steps_per_weight_and_saves_its_curves() {
    let dir = tempfile::tempdir().unwrap();
    let (o, folder) = weight_sweep(dir.path());
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    // One line per weight, SSIM to the style-alone image and to the plain one side by side.
    assert!(t.contains("SSIM to style alone  SSIM to plain"), "{t}");
    for w in ["style×0 ", "style×0.5 ", "style×1 "] {
        assert!(
            t.lines()
                .any(|l| l.starts_with("LCM-LoRA 4") && l.contains(w)),
            "{w}: {t}"
        );
    }
    assert!(
        t.contains("(summary.md, weights.png, weights.csv, sweep.json)"),
        "{t}"
    );
    for f in [
        "summary.md",
        "weights.png",
        "weights.svg",
        "weights.csv",
        "sweep.json",
    ] {
        assert!(
            folder.join(f).is_file(),
            "{f} missing in {}",
            folder.display()
        );
    }
    assert!(
        !folder.join("points.csv").exists(),
        "no empty step landscape"
    );
    let mut csv = csv::Reader::from_path(folder.join("weights.csv")).unwrap();
    let header = csv.headers().unwrap().clone();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let records: Vec<csv::StringRecord> = csv.records().map(Result::unwrap).collect();
    let curve: Vec<(&str, &str, &str)> = records
        .iter()
        .map(|r| (&r[col("curve")], &r[col("steps")], &r[col("weight")]))
        .collect();
    assert_eq!(
        curve,
        [
            ("LCM-LoRA 4", "4", "0"),
            ("LCM-LoRA 4", "4", "0.5"),
            ("LCM-LoRA 4", "4", "1"),
            ("style_alone", "2", "1"),
            ("plain", "2", "0"),
        ]
    );
    for r in &records[..3] {
        let ssim: f64 = r[col("ssim_style_mean")].parse().unwrap();
        let plain: f64 = r[col("ssim_plain_mean")].parse().unwrap();
        assert!((-1.0..=1.0).contains(&ssim) && (-1.0..=1.0).contains(&plain));
        assert!(r[col("time_ms_median")].parse::<f64>().unwrap() > 0.0);
    }
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.join("sweep.json")).unwrap()).unwrap();
    assert_eq!(json["weights"]["axis"]["adapter"], "style");
    let runs = json["runs"].as_array().unwrap();
    let requested: Vec<serde_json::Value> =
        runs.iter().map(|r| r["report"]["unet"].clone()).collect();
    assert_eq!(
        requested,
        ["base", "base", "lcm", "lcm", "lcm"],
        "plain, style alone, 3 weights"
    );
    let md = std::fs::read_to_string(folder.join("summary.md")).unwrap();
    assert!(md.starts_with("# Composability as a curve"), "{md}");
    assert!(md.contains("![SSIM to the style-alone image"), "{md}");
}

/// The composability curve means what it says only with the adapter really fused: the
/// style-alone image is the one at weight 1, so SSIM to it rises with the weight while SSIM to
/// the plain image falls.
#[test]
fn a_weight_sweeps_style_strength_rises_with_the_weight() {
    let dir = tempfile::tempdir().unwrap();
    let (o, folder) = weight_sweep(dir.path());
    assert!(o.status.success(), "{}", text(&o));
    let mut csv = csv::Reader::from_path(folder.join("weights.csv")).unwrap();
    let header = csv.headers().unwrap().clone();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let rows: Vec<(f64, f64)> = csv
        .records()
        .map(Result::unwrap)
        .filter(|r| &r[col("curve")] == "LCM-LoRA 4")
        .map(|r| {
            (
                r[col("ssim_style_mean")].parse().unwrap(),
                r[col("ssim_plain_mean")].parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(rows.len(), 3);
    assert!(rows[0].0 < rows[2].0, "style strength rises: {rows:?}");
    assert!(rows[0].1 > rows[2].1, "closeness to plain falls: {rows:?}");
}

#[test]
fn generate_fuses_a_lora_on_top_of_a_variant_and_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.png");
    let styled = dir.path().join("styled.png");
    assert!(generate(&plain, &["--unet", "lcm"]).status.success());
    let o = generate(&styled, &["--unet", "lcm", "--lora", "style=0.8", "--json"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["unet"], "lcm");
    assert_eq!(v["adapters"][0]["name"], "style");
    assert_eq!(v["adapters"][0]["sha256"], manifest_sha("style").as_str());
    assert_ne!(
        std::fs::read(&plain).unwrap(),
        std::fs::read(&styled).unwrap(),
        "the adapter changes the image"
    );
}

#[test]
fn generate_with_an_unknown_adapter_or_a_missing_file_lists_the_folders_adapters() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("x.png");
    refused(
        &generate(&png, &["--lora", "stlye=1"]),
        &["stlye", "lcm, style"],
        dir.path(),
    );
    let missing = dir.path().join("gone.safetensors");
    let spec = format!("{}=1", missing.display());
    refused(
        &generate(&png, &["--lora", &spec]),
        &["gone.safetensors"],
        dir.path(),
    );
}
