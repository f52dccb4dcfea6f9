//! The preview decoder against diffusers: `tests/fixtures/preview/` holds a random-init
//! decoder of TAESD's architecture exported by models/export.py's own preview-decoder export,
//! seeded latents and torch's `AutoencoderTiny` decode of them mapped to [0, 1]
//! (`make_preview_fixtures.py`). Our session must land within 1e-4 of it, and the previewer's
//! decoder preview is that image in 8 bits at full resolution.

use std::path::PathBuf;

use ndarray::{Array4, ArrayD, Ix4};
use ndarray_npy::read_npy;

use speedscape::models::PreviewDecoder;
use speedscape::pipeline::preview::{LatentRgb, PreviewKind, Previewer, nchw_to_rgb8};
use speedscape::runtime::{Device, Runtime, SearchPlan};

const TOLERANCE: f32 = 1e-4;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> Array4<f32> {
    let a: ArrayD<f32> = read_npy(root().join("tests/fixtures/preview").join(name)).unwrap();
    a.into_dimensionality::<Ix4>().unwrap()
}

fn decoder(rt: &Runtime) -> PreviewDecoder {
    let file = root().join("tests/fixtures/preview/model/preview_decoder/model.onnx");
    PreviewDecoder::load(rt, &file).unwrap()
}

fn runtime() -> Runtime {
    Runtime::init(&SearchPlan::new(None, Some(&root())), Device::Cpu)
        .expect("ONNX Runtime (run ./test.sh, which installs it into .venv)")
}

#[test]
fn the_decoder_matches_diffusers_autoencoder_tiny_within_1e_4() {
    let rt = runtime();
    let (latents, expected) = (fixture("latents.npy"), fixture("expected.npy"));
    assert_eq!(latents.shape(), [1, 4, 8, 8]);
    let mut d = decoder(&rt);
    assert_eq!(d.io_precision(), "fp32");
    let image = d.decode(latents.view()).unwrap();
    assert_eq!(image.shape(), [1, 3, 64, 64], "8× the latents, RGB");
    let max = (&image - &expected)
        .iter()
        .fold(0f32, |m, v| m.max(v.abs()));
    assert!(max <= TOLERANCE, "max abs difference {max} > {TOLERANCE}");
    assert!(
        image.iter().all(|v| (0.0..=1.0).contains(v)),
        "clamped to [0, 1] inside the graph"
    );
}

#[test]
fn a_decoder_preview_is_the_decoded_image_at_full_resolution() {
    let rt = runtime();
    let (latents, expected) = (fixture("latents.npy"), fixture("expected.npy"));
    let mut p = Previewer::new(PreviewKind::Decoder, LatentRgb::sd15(), Some(decoder(&rt)));
    assert_eq!(p.choice().to_string(), "decoder");
    let made = p.preview(latents.view()).unwrap().expect("a preview");
    assert_eq!(made.kind, PreviewKind::Decoder);
    assert_eq!(made.image.dimensions(), (64, 64));
    // torch's image in 8 bits; ours may round the other way where they differ by ≤ 1e-4.
    let want = nchw_to_rgb8(&expected);
    let worst = made
        .image
        .as_raw()
        .iter()
        .zip(want.as_raw())
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap();
    assert!(worst <= 1, "8-bit difference {worst}");
    // The same previewer still makes latent previews when asked: the matrix, at latent size.
    let latent = p
        .preview_as(PreviewKind::Latent, latents.view())
        .unwrap()
        .unwrap();
    assert_eq!(
        (latent.kind, latent.image.dimensions()),
        (PreviewKind::Latent, (8, 8))
    );
    // A previewer asked for latent previews never uses the decoder it was given.
    let mut q = Previewer::new(PreviewKind::Latent, LatentRgb::sd15(), Some(decoder(&rt)));
    assert_eq!(
        q.preview_as(PreviewKind::Decoder, latents.view())
            .unwrap()
            .unwrap()
            .kind,
        PreviewKind::Latent
    );
}
