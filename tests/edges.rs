//! Edge maps, control images and control adherence against the reference implementations, on
//! committed fixtures (tests/fixtures/make_edge_fixtures.py): Canny against OpenCV's
//! `cv2.Canny` (the same map), the LANCZOS resize and diffusers' control preprocessing against
//! PIL (the same bytes), the edge F1 and adherence against models/edges.py, image files as
//! diffusers' `load_image` reads them; and the errors for control images that cannot be used.

use std::path::{Path, PathBuf};

use image::RgbImage;
use serde_json::Value;
use speedscape::error::parts;
use speedscape::pipeline::control_image::{
    ControlPreprocess, load_control_image, prepare, resize_lanczos,
};
use speedscape::quality::edges::{
    CANNY_HIGH, CANNY_LOW, EdgeMap, adherence, canny, edge_f1, tolerance_for,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/edges")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn load(name: &Value) -> RgbImage {
    let name = name.as_str().unwrap();
    image::open(fixtures().join(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .to_rgb8()
}

/// A 0/255 map fixture as an edge map.
fn load_map(name: &Value) -> EdgeMap {
    EdgeMap::from_control(&load(name))
}

/// Where two maps differ, for a failure message: the count and the first few pixels.
fn map_diff(got: &EdgeMap, want: &EdgeMap) -> String {
    let w = want.width() as usize;
    let at: Vec<(usize, usize)> = got
        .as_slice()
        .iter()
        .zip(want.as_slice())
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, _)| (i % w, i / w))
        .collect();
    format!(
        "{} pixels differ, first (x, y): {:?}",
        at.len(),
        &at[..at.len().min(8)]
    )
}

/// The largest difference between two images of one size, in 8-bit levels.
fn max_diff(a: &RgbImage, b: &RgbImage) -> u8 {
    assert_eq!(a.dimensions(), b.dimensions());
    a.as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0)
}

fn size(case: &Value) -> (u32, u32) {
    let s = case["size"].as_array().unwrap();
    (s[0].as_u64().unwrap() as u32, s[1].as_u64().unwrap() as u32)
}

#[test]
fn canny_matches_opencv_pixel_for_pixel() {
    let expected = expected();
    let cases = expected["canny"].as_object().unwrap();
    assert!(cases.len() >= 12, "{} canny cases", cases.len());
    for (name, case) in cases {
        let input = load(&case["input"]);
        let want = load_map(&case["edges"]);
        let got = canny(&input, CANNY_LOW, CANNY_HIGH);
        assert_eq!(
            (got.width(), got.height()),
            input.dimensions(),
            "{name}: size"
        );
        assert!(got == want, "{name}: {}", map_diff(&got, &want));
        assert_eq!(
            got.count() as u64,
            case["count"].as_u64().unwrap(),
            "{name}"
        );
    }
    // The cases have edges to get right, on the border too.
    assert!(cases["texture"]["count"].as_u64().unwrap() > 300);
    let border = load_map(&cases["border"]["edges"]);
    assert!(
        (0..border.height()).all(|y| border.get(0, y)),
        "left column"
    );
}

#[test]
fn swapped_thresholds_give_the_same_map_as_opencv() {
    // cv2.Canny(img, 200, 100) is cv2.Canny(img, 100, 200): OpenCV swaps them.
    let case = &expected()["canny"]["texture"];
    let input = load(&case["input"]);
    assert!(canny(&input, CANNY_HIGH, CANNY_LOW) == load_map(&case["edges"]));
}

#[test]
fn lanczos_resize_matches_pil_byte_for_byte() {
    let expected = expected();
    let cases = expected["resize"].as_object().unwrap();
    assert!(cases.len() >= 10, "{} resize cases", cases.len());
    for (name, case) in cases {
        let (w, h) = size(case);
        let got = resize_lanczos(&load(&case["input"]), w, h);
        let want = load(&case["output"]);
        assert_eq!(got.dimensions(), (w, h), "{name}");
        assert!(
            got == want,
            "{name}: differs from PIL by up to {} levels",
            max_diff(&got, &want)
        );
    }
}

#[test]
fn control_preprocessing_matches_diffusers() {
    let expected = expected();
    let cases = expected["prepare"].as_object().unwrap();
    assert!(cases.len() >= 4);
    for (name, case) in cases {
        let (w, h) = size(case);
        let preprocess: ControlPreprocess = case["preprocess"].as_str().unwrap().parse().unwrap();
        let got = prepare(&load(&case["input"]), preprocess, w, h);
        let want = load(&case["image"]);
        assert!(
            got.image == want,
            "{name}: control image differs from PIL's by up to {} levels",
            max_diff(&got.image, &want)
        );
        // diffusers' processor: np.array(image).astype(np.float32) / 255.0, as [1, 3, H, W].
        assert_eq!(got.tensor.shape(), [1, 3, h as usize, w as usize], "{name}");
        for ((_, c, y, x), &v) in got.tensor.indexed_iter() {
            let byte = want.get_pixel(x as u32, y as u32)[c];
            assert_eq!(v, f32::from(byte) / 255.0, "{name} at c{c} ({x}, {y})");
        }
        let edges = load_map(&case["edges"]);
        assert!(
            got.edges == edges,
            "{name}: {}",
            map_diff(&got.edges, &edges)
        );
    }
}

#[test]
fn edge_f1_matches_models_edges_py() {
    let expected = expected();
    let cases = expected["f1"].as_object().unwrap();
    assert!(cases.len() >= 10);
    for (name, case) in cases {
        let (pred, reference) = (load_map(&case["pred"]), load_map(&case["ref"]));
        let tol = case["tol_given"]
            .as_f64()
            .unwrap_or_else(|| tolerance_for(pred.width(), pred.height()));
        let got = edge_f1(&pred, &reference, tol).unwrap();
        assert_eq!(got.tolerance, case["tolerance"].as_f64().unwrap(), "{name}");
        for (field, value) in [
            ("precision", got.precision),
            ("recall", got.recall),
            ("f1", got.f1),
        ] {
            let want = case[field].as_f64().unwrap();
            assert!(
                (value - want).abs() <= 1e-12,
                "{name}: {field} {value} vs {want}"
            );
        }
    }
}

#[test]
fn adherence_matches_models_edges_py() {
    let expected = expected();
    let cases = expected["adherence"].as_object().unwrap();
    assert!(cases.len() >= 3);
    for (name, case) in cases {
        let control = EdgeMap::from_control(&load(&case["control"]));
        let got = adherence(&load(&case["image"]), &control).unwrap();
        assert_eq!(got.tolerance, case["tolerance"].as_f64().unwrap(), "{name}");
        let want = case["f1"].as_f64().unwrap();
        assert!(
            (got.f1 - want).abs() <= 1e-12,
            "{name}: f1 {} vs {want}",
            got.f1
        );
        let want = case["precision"].as_f64().unwrap();
        assert!((got.precision - want).abs() <= 1e-12, "{name}: precision");
    }
}

#[test]
fn maps_of_different_sizes_are_a_clear_error() {
    let a = EdgeMap::from_fn(4, 3, |_, _| true);
    let b = EdgeMap::from_fn(3, 4, |_, _| true);
    let err = edge_f1(&a, &b, 1.0).unwrap_err();
    let p = parts(&err);
    assert_eq!(
        p.causes,
        ["cannot score a 4×3 edge map against a 3×4 one: edge F1 needs one size"]
    );
    assert_eq!(p.fixes.len(), 1, "{p:?}");
}

#[test]
fn png_control_images_read_as_pil_converts_them_to_rgb() {
    let expected = expected();
    for name in ["grey", "rgba", "palette"] {
        let case = &expected["load"][name];
        let path = fixtures().join(case["file"].as_str().unwrap());
        let got = load_control_image(&path).unwrap();
        assert!(got == load(&case["rgb"]), "{name}");
    }
}

#[test]
fn jpeg_control_images_read_close_to_libjpeg_with_exif_orientation_applied() {
    let expected = expected();
    for name in ["jpeg", "jpeg_exif_rotated"] {
        let case = &expected["load"][name];
        let path = fixtures().join(case["file"].as_str().unwrap());
        let got = load_control_image(&path).unwrap();
        let want = load(&case["rgb"]);
        // The rotated file is stored 32×24 with orientation 6: it reads 24×32, as load_image's
        // exif_transpose turns it.
        assert_eq!(got.dimensions(), want.dimensions(), "{name}");
        // Another JPEG decoder (zune-jpeg, not PIL's libjpeg-turbo): its IDCT and chroma
        // upsampling round differently, by a few levels (3 on these files, 0.36 on average).
        let d = max_diff(&got, &want);
        assert!(d <= 4, "{name}: {d} levels from PIL's decoding");
    }
    assert_eq!(
        load_control_image(&fixtures().join("load_rotated.jpg"))
            .unwrap()
            .dimensions(),
        (24, 32)
    );
}

/// The message users read for a control image at `path`, with its causes and fixes.
fn load_error(path: &Path) -> (String, Vec<String>) {
    let err = load_control_image(path).unwrap_err();
    let p = parts(&err);
    assert_eq!(p.fixes.len(), 1, "{p:?}");
    (p.causes.join("\n"), p.fixes)
}

#[test]
fn a_missing_control_image_names_the_path_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edges.png");
    let (cause, fixes) = load_error(&path);
    assert_eq!(
        cause,
        format!("control image {} does not exist", path.display())
    );
    assert_eq!(
        fixes,
        ["check the path: it must name an existing PNG or JPEG file"]
    );
}

#[test]
fn an_unreadable_control_image_says_why_and_what_to_do() {
    // A folder cannot be read as a file (permissions cannot stop root, who runs CI).
    let dir = tempfile::tempdir().unwrap();
    let (cause, fixes) = load_error(dir.path());
    let prefix = format!("cannot read control image {}: ", dir.path().display());
    assert!(cause.starts_with(&prefix), "{cause}");
    assert!(cause.len() > prefix.len(), "the OS error is named: {cause}");
    assert!(fixes[0].contains("not a folder"), "{fixes:?}");
}

#[test]
fn a_file_that_is_not_a_png_or_jpeg_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.png");
    std::fs::write(&text, "edges go here\n").unwrap();
    let gif = dir.path().join("edges.gif");
    std::fs::write(&gif, b"GIF89a\x01\x00\x01\x00\x00\x00\x00;").unwrap();
    let png = std::fs::read(fixtures().join("canny_texture.png")).unwrap();
    let truncated = dir.path().join("cut.png");
    std::fs::write(&truncated, &png[..png.len() / 2]).unwrap();
    let fix = "give a PNG or JPEG image (convert other formats to PNG first)";
    let cases = [
        (&text, "is not an image (neither PNG nor JPEG)".to_string()),
        (
            &gif,
            "is a GIF image; speedscape reads PNG and JPEG".to_string(),
        ),
        (&truncated, "cannot be decoded: ".to_string()),
    ];
    for (path, what) in cases {
        let (cause, fixes) = load_error(path);
        let want = format!("control image {} {what}", path.display());
        assert!(cause.starts_with(&want), "{cause:?} should start {want:?}");
        assert_eq!(fixes, [fix], "{}", path.display());
    }
}
