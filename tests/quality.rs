//! PSNR / SSIM / mean absolute difference against scikit-image on committed fixture pairs
//! (tests/fixtures/make_quality_fixtures.py).

use std::path::{Path, PathBuf};

use speedscape::quality::compare;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/quality")
}

fn load(name: &str) -> image::RgbImage {
    image::open(fixtures().join(name)).unwrap().to_rgb8()
}

#[test]
fn quality_numbers_match_scikit_image() {
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("expected.json")).unwrap())
            .unwrap();
    let cases = expected["cases"].as_object().unwrap();
    assert!(cases.len() >= 6);
    for (name, want) in cases {
        let q = compare(
            &load(&format!("{name}_a.png")),
            &load(&format!("{name}_b.png")),
        )
        .unwrap();
        let ssim = want["ssim"].as_f64().unwrap();
        assert!(
            (q.ssim - ssim).abs() < 1e-4,
            "{name}: ssim {} vs {ssim}",
            q.ssim
        );
        assert!(
            (q.ssim - ssim).abs() < 1e-9,
            "{name}: ssim {} vs {ssim} (f64)",
            q.ssim
        );
        match want["psnr_db"].as_f64() {
            None => assert_eq!(q.psnr_db, None, "{name}: identical images"),
            Some(p) => {
                let got = q.psnr_db.unwrap();
                assert!((got - p).abs() < 1e-9, "{name}: psnr {got} vs {p}");
            }
        }
        let mad = want["mean_abs_diff"].as_f64().unwrap();
        assert!(
            (q.mean_abs_diff - mad).abs() < 1e-9,
            "{name}: mad {} vs {mad}",
            q.mean_abs_diff
        );
    }
}

#[test]
fn identical_images_score_one_and_infinite_psnr() {
    let a = load("noisy_a.png");
    let q = compare(&a, &a.clone()).unwrap();
    assert_eq!(q.ssim, 1.0);
    assert_eq!(q.psnr_db, None);
    assert_eq!(q.mean_abs_diff, 0.0);
}

#[test]
fn images_of_different_sizes_are_a_clear_error() {
    let a = load("noisy_a.png");
    let b = load("slightly_noisy_a.png");
    let err = format!("{}", compare(&a, &b).unwrap_err());
    assert!(err.contains("72×40") && err.contains("64×64"), "{err}");
    assert!(err.contains("Fix:"), "{err}");
}

#[test]
fn images_smaller_than_the_window_are_a_clear_error() {
    let tiny = image::RgbImage::new(8, 8);
    let err = format!("{}", compare(&tiny, &tiny).unwrap_err());
    assert!(err.contains("11×11"), "{err}");
}

#[test]
fn pixelation_and_roughness_match_the_micro_models_evaluation() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/measures");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let block = expected["block"].as_u64().unwrap() as usize;
    let cases = expected["cases"].as_object().unwrap();
    assert!(cases.len() >= 10);
    for (name, want) in cases {
        let img = image::open(dir.join(format!("{name}.png")))
            .unwrap()
            .to_rgb8();
        let p = speedscape::quality::pixelation(&img, block);
        let r = speedscape::quality::roughness(&img);
        let (wp, wr) = (
            want["pixelation"].as_f64().unwrap(),
            want["roughness"].as_f64().unwrap(),
        );
        assert!((p - wp).abs() < 1e-9, "{name}: pixelation {p} vs {wp}");
        assert!(
            (r - wr).abs() < 1e-9 * wr.max(1.0),
            "{name}: roughness {r} vs {wr}"
        );
    }
}
