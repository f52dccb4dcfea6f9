//! Per-step previews of a run's x0 prediction: by the model's preview decoder (a tiny learned
//! decoder, full resolution; see [`crate::models::preview_decoder`]) or by the latent → RGB
//! matrix (no network, latent resolution), or none — which kind a run gets, the fallback when
//! the model has no preview decoder, and when a step is previewed (`preview_every`).
//!
//! The latent matrix: SD v1.5's four latent channels map almost linearly to RGB; [`LatentRgb::sd15`]
//! is the widely used least-squares fit of VAE-decoded colour on latents (as in ComfyUI's and
//! A1111's "approx NN/cheap" previews). A model folder whose manifest records its own fit
//! (`latent_rgb`, the micro model's: its latents are not SD's) uses that instead. For the
//! random-weight tiny model either is only a visualisation of the latents, not of its VAE.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use eyre::eyre;
use image::RgbImage;
use ndarray::{Array4, ArrayView4};
use serde::{Deserialize, Serialize};

use crate::error::Fixable;
use crate::models::{LatentRgbRecord, Model, PreviewDecoder};
use crate::runtime::Runtime;

/// SD v1.5's fit: per latent channel, its contribution to (R, G, B) in [-1, 1] (zero bias).
const LATENT_RGB: [[f32; 3]; 4] = [
    [0.298, 0.207, 0.208],
    [0.187, 0.286, 0.173],
    [-0.158, 0.189, 0.264],
    [-0.184, -0.271, -0.473],
];

/// How a step's x0 prediction becomes a picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PreviewKind {
    /// The model's preview decoder (`preview_decoder/`), at full resolution.
    Decoder,
    /// The latent → RGB matrix, at latent resolution.
    Latent,
    /// No previews.
    Off,
}

impl PreviewKind {
    /// The name config.toml and the command line use (`decoder`, `latent`, `off`).
    pub fn name(self) -> &'static str {
        match self {
            PreviewKind::Decoder => "decoder",
            PreviewKind::Latent => "latent",
            PreviewKind::Off => "off",
        }
    }

    /// Every kind, in the order the command line lists them.
    pub const ALL: [PreviewKind; 3] = [PreviewKind::Decoder, PreviewKind::Latent, PreviewKind::Off];
}

impl fmt::Display for PreviewKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PreviewKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PreviewKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown preview {s:?}; expected decoder, latent or off"))
    }
}

/// The preview asked for and the one a model gives: `decoder` falls back to `latent` on a model
/// folder without a preview decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PreviewChoice {
    /// What config or the command line asked for.
    pub asked: PreviewKind,
    /// What runs get.
    pub used: PreviewKind,
}

impl PreviewChoice {
    /// `asked` on a model that has a preview decoder or not.
    pub fn resolve(asked: PreviewKind, has_decoder: bool) -> Self {
        let used = match asked {
            PreviewKind::Decoder if !has_decoder => PreviewKind::Latent,
            k => k,
        };
        Self { asked, used }
    }

    /// Why `used` is not `asked` (`no preview decoder`); `None` when it is.
    pub fn reason(&self) -> Option<&'static str> {
        (self.asked != self.used).then_some("no preview decoder")
    }
}

impl fmt::Display for PreviewChoice {
    /// `decoder`, `latent`, `off`, or `latent (no preview decoder)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reason() {
            Some(why) => write!(f, "{} ({why})", self.used),
            None => write!(f, "{}", self.used),
        }
    }
}

/// Whether step `index` (0-based) of `total` is previewed with `preview_every = every`: every
/// `every`-th step (the `every`-th, the 2·`every`-th, …) and always the last; `every` 0 or 1
/// is every step.
pub fn is_preview_step(index: usize, total: usize, every: usize) -> bool {
    every <= 1 || (index + 1).is_multiple_of(every) || index + 1 == total
}

/// The latent → RGB map: `v = bias + Σ_c latent_c · factors[c]` per pixel, RGB =
/// clamp((v + 1) / 2, 0, 1).
#[derive(Debug, Clone, PartialEq)]
pub struct LatentRgb {
    /// Per latent channel, its contribution to (R, G, B).
    pub factors: Vec<[f32; 3]>,
    /// Added to every pixel.
    pub bias: [f32; 3],
}

impl LatentRgb {
    /// SD v1.5's fit with zero bias.
    pub fn sd15() -> Self {
        Self {
            factors: LATENT_RGB.to_vec(),
            bias: [0.0; 3],
        }
    }

    /// A manifest's fit, checked: one row per latent channel (`channels`), finite numbers.
    pub fn from_record(record: &LatentRgbRecord, channels: usize) -> eyre::Result<Self> {
        let finite = record
            .factors
            .iter()
            .flatten()
            .chain(&record.bias)
            .all(|v| v.is_finite());
        if record.factors.len() != channels || !finite {
            return Err(eyre!(Fixable::new(
                format!(
                    "manifest.json's latent_rgb has {} rows of factors{}, but the model's latents have {channels} channels",
                    record.factors.len(),
                    if finite {
                        ""
                    } else {
                        " (and numbers that are not finite)"
                    }
                ),
                "write one finite [r, g, b] row per latent channel, as the exporter fits them, or remove latent_rgb to use SD v1.5's",
            )));
        }
        Ok(Self {
            factors: record.factors.clone(),
            bias: record.bias,
        })
    }

    /// The model's fit (its manifest's `latent_rgb`), else SD v1.5's.
    pub fn of_model(model: &Model) -> eyre::Result<Self> {
        match model.latent_rgb() {
            Some(r) => Self::from_record(r, model.geometry.latent_channels),
            None => Ok(Self::sd15()),
        }
    }

    /// Latents `[1, C, h, w]` (as the scheduler holds them) → an `h × w` RGB image.
    pub fn to_rgb(&self, latents: ArrayView4<f32>) -> RgbImage {
        let (_, _, h, w) = latents.dim();
        RgbImage::from_fn(w as u32, h as u32, |x, y| {
            let mut rgb = self.bias;
            for (ch, coeffs) in self.factors.iter().enumerate() {
                let v = latents[[0, ch, y as usize, x as usize]];
                for k in 0..3 {
                    rgb[k] += v * coeffs[k];
                }
            }
            image::Rgb(rgb.map(|v| unit_to_u8((v + 1.0) / 2.0)))
        })
    }
}

/// Latents `[1, 4, h, w]` (as the scheduler holds them) → an `h × w` RGB image by SD v1.5's fit.
pub fn latents_to_rgb(latents: ArrayView4<f32>) -> RgbImage {
    LatentRgb::sd15().to_rgb(latents)
}

/// [0, 1] → 0..=255, clamped, `round(x · 255)` as the final image is.
fn unit_to_u8(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}

/// NCHW `[1, 3, H, W]` in [0, 1] (the preview decoder's output) → RGB8.
pub fn nchw_to_rgb8(image: &Array4<f32>) -> RgbImage {
    let (_, _, h, w) = image.dim();
    RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let px = |c: usize| unit_to_u8(image[[0, c, y as usize, x as usize]]);
        image::Rgb([px(0), px(1), px(2)])
    })
}

/// One step's preview.
#[derive(Debug, Clone)]
pub struct Preview {
    /// The picture: full resolution from the decoder, latent resolution from the matrix.
    pub image: RgbImage,
    /// The kind that made it.
    pub kind: PreviewKind,
    /// What making it took (never part of a run's time).
    pub took: Duration,
}

/// Makes previews of x0 predictions for one model: its latent matrix, and its preview decoder's
/// session when decoder previews were asked for and the folder has one.
pub struct Previewer {
    choice: PreviewChoice,
    latent: LatentRgb,
    decoder: Option<PreviewDecoder>,
}

impl Previewer {
    /// A previewer of `asked` previews from its parts; `decoder` falls back to `latent` when
    /// `decoder` is `None`.
    pub fn new(asked: PreviewKind, latent: LatentRgb, decoder: Option<PreviewDecoder>) -> Self {
        let decoder = decoder.filter(|_| asked == PreviewKind::Decoder);
        Self {
            choice: PreviewChoice::resolve(asked, decoder.is_some()),
            latent,
            decoder,
        }
    }

    /// A previewer of `asked` previews for `model`: its latent fit, and (for `decoder`) a new
    /// session of its preview decoder, when it has one.
    pub fn for_model(rt: &Runtime, model: &mut Model, asked: PreviewKind) -> eyre::Result<Self> {
        let latent = LatentRgb::of_model(model)?;
        let decoder = match asked {
            PreviewKind::Decoder => model.load_preview_decoder(rt)?,
            _ => None,
        };
        Ok(Self::new(asked, latent, decoder))
    }

    /// What was asked for and what previews are made.
    pub fn choice(&self) -> PreviewChoice {
        self.choice
    }

    /// The preview of `x0` (`[1, C, h, w]`) by the kind in use; `None` when previews are off.
    pub fn preview(&mut self, x0: ArrayView4<f32>) -> eyre::Result<Option<Preview>> {
        self.preview_as(self.choice.used, x0)
    }

    /// The preview of `x0` by `kind` (`decoder` without a decoder session makes a latent one,
    /// and says so in [`Preview::kind`]); `None` for `off`.
    pub fn preview_as(
        &mut self,
        kind: PreviewKind,
        x0: ArrayView4<f32>,
    ) -> eyre::Result<Option<Preview>> {
        let start = Instant::now();
        let (image, kind) = match (kind, self.decoder.as_mut()) {
            (PreviewKind::Off, _) => return Ok(None),
            (PreviewKind::Decoder, Some(decoder)) => {
                (nchw_to_rgb8(&decoder.decode(x0)?), PreviewKind::Decoder)
            }
            _ => (self.latent.to_rgb(x0), PreviewKind::Latent),
        };
        Ok(Some(Preview {
            image,
            kind,
            took: start.elapsed(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array4;

    #[test]
    fn zero_latents_are_mid_grey_and_sizes_follow_the_latents() {
        let img = latents_to_rgb(Array4::zeros((1, 4, 3, 5)).view());
        assert_eq!(img.dimensions(), (5, 3));
        assert!(img.pixels().all(|p| p.0 == [128, 128, 128]));
    }

    #[test]
    fn the_first_channel_brightens_every_colour() {
        let mut l = Array4::zeros((1, 4, 1, 1));
        l[[0, 0, 0, 0]] = 2.0;
        let p = latents_to_rgb(l.view()).get_pixel(0, 0).0;
        assert!(p.iter().all(|&v| v > 128), "{p:?}");
    }

    #[test]
    fn a_models_factors_and_bias_are_the_affine_map_of_the_contract() {
        let fit = LatentRgb {
            factors: vec![
                [1.0, 0.0, 0.0],
                [0.0, 0.5, 0.0],
                [0.0, 0.0, -1.0],
                [0.0, 0.0, 0.0],
            ],
            bias: [-0.5, 0.2, 0.0],
        };
        let mut l = Array4::zeros((1, 4, 1, 2));
        // Pixel 0: v = (-0.5 + 0.4, 0.2 + 0.5 · 0.6, -(-0.2)) = (-0.1, 0.5, 0.2).
        l[[0, 0, 0, 0]] = 0.4;
        l[[0, 1, 0, 0]] = 0.6;
        l[[0, 2, 0, 0]] = -0.2;
        // Pixel 1: only the bias, and the fourth channel (all zeros) changes nothing.
        l[[0, 3, 0, 1]] = 9.0;
        let img = fit.to_rgb(l.view());
        let rgb = |v: [f32; 3]| v.map(|c| (((c + 1.0) / 2.0) * 255.0).round() as u8);
        assert_eq!(img.get_pixel(0, 0).0, rgb([-0.1, 0.5, 0.2]));
        assert_eq!(img.get_pixel(1, 0).0, rgb([-0.5, 0.2, 0.0]));
        // Out of range clamps.
        l[[0, 0, 0, 0]] = 5.0;
        assert_eq!(fit.to_rgb(l.view()).get_pixel(0, 0).0[0], 255);
    }

    #[test]
    fn a_manifest_fit_needs_one_finite_row_per_channel() {
        let rec = |rows: usize, v: f32| LatentRgbRecord {
            factors: vec![[v, 0.0, 0.0]; rows],
            bias: [0.0; 3],
        };
        assert_eq!(
            LatentRgb::from_record(&rec(4, 0.3), 4).unwrap().factors,
            vec![[0.3, 0.0, 0.0]; 4]
        );
        let short = LatentRgb::from_record(&rec(3, 0.3), 4).unwrap_err();
        let text = short.to_string();
        assert!(
            text.contains("has 3 rows of factors, but the model's latents have 4 channels")
                && text.contains("\nFix: "),
            "{text}"
        );
        let nan = LatentRgb::from_record(&rec(4, f32::NAN), 4).unwrap_err();
        assert!(nan.to_string().contains("not finite"), "{nan}");
    }

    #[test]
    fn decoder_falls_back_to_latent_without_a_decoder_and_says_why() {
        let choice = PreviewChoice::resolve(PreviewKind::Decoder, false);
        assert_eq!(choice.used, PreviewKind::Latent);
        assert_eq!(choice.to_string(), "latent (no preview decoder)");
        assert_eq!(
            PreviewChoice::resolve(PreviewKind::Decoder, true).to_string(),
            "decoder"
        );
        assert_eq!(
            PreviewChoice::resolve(PreviewKind::Off, true).to_string(),
            "off"
        );
        assert_eq!(
            PreviewChoice::resolve(PreviewKind::Latent, true).to_string(),
            "latent"
        );

        // A previewer asked for decoder previews without a decoder makes latent ones.
        let mut p = Previewer::new(PreviewKind::Decoder, LatentRgb::sd15(), None);
        assert_eq!(p.choice().used, PreviewKind::Latent);
        let x0 = Array4::from_elem((1, 4, 2, 3), 0.7f32);
        let made = p.preview(x0.view()).unwrap().unwrap();
        assert_eq!(made.kind, PreviewKind::Latent);
        assert_eq!(made.image, latents_to_rgb(x0.view()));
        assert!(
            p.preview_as(PreviewKind::Off, x0.view()).unwrap().is_none(),
            "off makes nothing"
        );
        let mut off = Previewer::new(PreviewKind::Off, LatentRgb::sd15(), None);
        assert!(off.preview(x0.view()).unwrap().is_none());
    }

    #[test]
    fn preview_every_takes_every_nth_step_and_always_the_last() {
        let steps = |total, every| {
            (0..total)
                .filter(|&i| is_preview_step(i, total, every))
                .collect::<Vec<_>>()
        };
        assert_eq!(steps(4, 1), [0, 1, 2, 3]);
        assert_eq!(steps(4, 0), [0, 1, 2, 3]);
        assert_eq!(steps(10, 3), [2, 5, 8, 9]);
        assert_eq!(steps(9, 3), [2, 5, 8]);
        assert_eq!(steps(2, 5), [1]);
    }

    #[test]
    fn kinds_parse_by_their_names() {
        for k in PreviewKind::ALL {
            assert_eq!(k.name().parse::<PreviewKind>(), Ok(k));
        }
        assert!(
            "vae"
                .parse::<PreviewKind>()
                .unwrap_err()
                .contains("decoder, latent or off")
        );
    }
}
