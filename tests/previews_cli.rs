//! `speedscape previews` on the micro model (CPU): the files it writes, their shape, and that the
//! SSIM it reports for each step and kind is the SSIM of the strip's own tiles against the final
//! image (the strip shows exactly what was scored). The decoder path runs on a copy of the micro
//! model given the random-init preview decoder of tests/fixtures/preview/: its images mean
//! nothing (and it upsamples 8×, the micro VAE 4×, so its previews are resized like the latent
//! ones), so only the mechanics are asserted here; the real numbers are the README's.

mod common;

use std::path::Path;

use common::{copy_dir, root, speedscape, text};
use image::RgbImage;
use serde_json::Value;

fn run(model: &Path, out: &Path, steps: usize) -> (Value, RgbImage, String) {
    let steps = steps.to_string();
    let args = [
        "previews",
        "--device",
        "cpu",
        "--steps",
        &steps,
        "--out",
        out.to_str().unwrap(),
        "--model-dir",
        model.to_str().unwrap(),
    ];
    let o = speedscape(&args);
    let all = text(&o);
    assert!(o.status.success(), "{all}");
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("previews.json")).unwrap()).unwrap();
    let strip = image::open(out.join("strip.png")).unwrap().to_rgb8();
    (json, strip, all)
}

fn tile(strip: &RgbImage, layout: &Value, row: usize, col: usize) -> RgbImage {
    let n = |k: &str| layout[k].as_u64().unwrap() as u32;
    let (w, h, gap) = (n("tile_width"), n("tile_height"), n("gap"));
    image::imageops::crop_imm(strip, col as u32 * (w + gap), row as u32 * (h + gap), w, h)
        .to_image()
}

/// Every step's SSIM in the JSON, per kind (row), is the strip tile's against the last column.
fn check_scores_match_the_strip(json: &Value, strip: &RgbImage) {
    let layout = &json["strip"];
    let columns = layout["columns"].as_u64().unwrap() as usize;
    let rows: Vec<&str> = layout["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(
        rows,
        json["kinds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap())
            .collect::<Vec<_>>()
    );
    let per_step = json["per_step"].as_array().unwrap();
    assert_eq!(
        columns,
        per_step.len() + 1,
        "a column per step, then the final image"
    );
    let final_image = tile(strip, layout, 0, columns - 1);
    for (r, kind) in rows.iter().enumerate() {
        assert_eq!(
            tile(strip, layout, r, columns - 1),
            final_image,
            "every row ends with it"
        );
        for (c, step) in per_step.iter().enumerate() {
            let scored = step[kind]["ssim"].as_f64().unwrap();
            let again = speedscape::quality::compare(&final_image, &tile(strip, layout, r, c))
                .unwrap()
                .ssim;
            assert!(
                (scored - again).abs() < 1e-9,
                "{kind} step {c}: JSON {scored}, strip {again}"
            );
        }
    }
}

#[test]
fn a_model_without_a_preview_decoder_gets_latent_previews_scored_and_says_so() {
    // The micro model, without a preview decoder whether or not it ships one.
    let model = tempfile::tempdir().unwrap();
    copy_dir(&root().join("models/micro"), model.path());
    let _ = std::fs::remove_dir_all(model.path().join("preview_decoder"));
    let out = tempfile::tempdir().unwrap();
    let (json, strip, said) = run(model.path(), out.path(), 4);
    assert!(said.contains("no preview decoder"), "{said}");
    assert_eq!(json["preview"], "latent (no preview decoder)");
    assert_eq!(json["kinds"], serde_json::json!(["latent"]));
    let per_step = json["per_step"].as_array().unwrap();
    assert_eq!(per_step.len(), 4, "a row per step");
    for (i, step) in per_step.iter().enumerate() {
        assert_eq!(step["index"], i);
        assert_eq!(
            step["latent"]["size"],
            serde_json::json!([16, 16]),
            "latent size (64 / 4)"
        );
    }
    assert_eq!(strip.dimensions(), (5 * 64 + 4 * 2, 64));
    check_scores_match_the_strip(&json, &strip);
    // The table printed has a line per step.
    assert_eq!(
        said.lines()
            .filter(|l| l.trim_start().starts_with(char::is_numeric))
            .count(),
        4
    );
    // Run again without --force: nothing is overwritten.
    let o = speedscape(&[
        "previews",
        "--model-dir",
        model.path().to_str().unwrap(),
        "--device",
        "cpu",
        "--steps",
        "2",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("strip.png"), "{}", text(&o));
}

#[test]
fn a_model_with_a_preview_decoder_gets_a_row_of_each_kind() {
    let model = tempfile::tempdir().unwrap();
    copy_dir(&root().join("models/micro"), model.path());
    copy_dir(
        &root().join("tests/fixtures/preview/model/preview_decoder"),
        &model.path().join("preview_decoder"),
    );
    let out = tempfile::tempdir().unwrap();
    let (json, strip, said) = run(model.path(), out.path(), 3);
    assert!(!said.contains("no preview decoder"), "{said}");
    assert_eq!(json["preview"], "decoder");
    assert_eq!(json["kinds"], serde_json::json!(["decoder", "latent"]));
    let per_step = json["per_step"].as_array().unwrap();
    assert_eq!(per_step.len(), 3);
    // The fixture decoder upsamples 8×: 16×16 latents become 128×128, resized to 64×64.
    assert_eq!(
        per_step[2]["decoder"]["size"],
        serde_json::json!([128, 128])
    );
    assert_eq!(strip.dimensions(), (4 * 64 + 3 * 2, 2 * 64 + 2));
    check_scores_match_the_strip(&json, &strip);
    for kind in ["decoder", "latent"] {
        let s = &json["summary"][kind];
        assert!(
            s["ms_median"].as_f64().unwrap() >= 0.0 && s["ssim_last3"].is_f64(),
            "{s}"
        );
    }
}
