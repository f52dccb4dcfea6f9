//! The CLIP score: a reference-free number for how well an image matches its prompt.
//!
//! ```text
//! clip_image_encoder/model.onnx   pixel_values f32 [Bi,3,224,224], text_pooled f32 [Bt,D_text]
//!                                 → image_embeds f32 [Bi,P], text_embeds f32 [Bt,P] (projected, not normalised)
//! clip_image_encoder/config.json  preprocessing (CLIPImageProcessor's settings), widths, source
//! ```
//! `models/export.py --clip-scorer` writes the folder: the vision tower, `visual_projection` and
//! `text_projection` of the CLIP model whose text tower *is* the pipeline's text encoder (SD v1.5's
//! text encoder is openai/clip-vit-large-patch14's; the exporter compares the tensors). So the text
//! side is the base text encoder's `pooler_output` through `text_projection`, as
//! `CLIPModel.get_text_features` computes it.
//!
//! The score is torchmetrics' `CLIPScore` for one image: `max(100 · cos(image_embeds,
//! text_embeds), 0)`. Preprocessing is `CLIPImageProcessor`'s (PIL backend): resize the shortest
//! edge to 224 with PIL's bicubic (antialiased when shrinking), center crop 224×224, ×1/255,
//! normalise with CLIP's mean and std. [`resize_bicubic_pil`] is a port of Pillow's `Resample.c`
//! and gives PIL's bytes exactly (`tests/clip.rs`: 512² shrunk, 64² and 96×64 enlarged, 448×320
//! shrunk by a non-integer ratio). `image`'s `CatmullRom` resize, the nearest stock filter, was
//! measured off by up to 1 level of 255 when shrinking 512² to 224² (pixel_values up to 0.015)
//! and up to 12 levels when enlarging a noise-like 64² image (0.18): it rounds once instead of
//! after each pass and places the filter differently near edges.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use eyre::{WrapErr, eyre};
use image::RgbImage;
use ndarray::{Array2, Array4, ArrayView1, ArrayView2, ArrayView4, Ix2};
use ort::session::Session;
use serde::{Deserialize, Serialize};

use super::{describe_all, find, is_float, run_error};
use crate::error::Fixable;
use crate::runtime::Runtime;
use crate::runtime::failure::MemoryContext;
use crate::runtime::tensor::{self, IoSpec};

/// The scorer's folder inside a model folder.
pub const CLIP_FOLDER: &str = "clip_image_encoder";

/// What `config.json` of `clip_image_encoder/` says (format `speedscape-clip-scorer/1`).
/// Unknown keys are ignored: later exporters may add some.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipConfig {
    /// `speedscape-clip-scorer/1`.
    pub format: String,
    /// The CLIP model it came from (`openai/clip-vit-large-patch14`).
    #[serde(default)]
    pub source: Option<String>,
    /// The Hub commit of `source`.
    #[serde(default)]
    pub revision: Option<String>,
    /// The shortest edge is resized to this many pixels.
    pub resize_shortest_edge: usize,
    /// `bicubic` (PIL's); the only one implemented.
    pub resample: String,
    /// Height in pixels of the center crop after resizing (224).
    pub crop_height: usize,
    /// Width in pixels of the center crop (224).
    pub crop_width: usize,
    /// 1/255.
    pub rescale_factor: f64,
    /// Per RGB channel, after rescaling.
    pub image_mean: [f32; 3],
    /// Per RGB channel, after rescaling: pixel values are `(x · rescale_factor − mean) / std`.
    pub image_std: [f32; 3],
    /// Width P of both embeddings.
    pub projection_dim: usize,
    /// Width of the text encoder's pooler_output the graph takes.
    pub text_hidden_size: usize,
}

/// One image's CLIP score against one prompt.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClipScore {
    /// `max(100 · cosine, 0)`, torchmetrics' CLIPScore.
    pub score: f64,
    /// The cosine similarity of the two embeddings, in [-1, 1] (not clamped).
    pub cosine: f64,
}

/// The score of an image embedding against a text embedding (each `[P]`, not normalised).
pub fn clip_score(image_embeds: ArrayView1<f32>, text_embeds: ArrayView1<f32>) -> ClipScore {
    let dot: f64 = image_embeds
        .iter()
        .zip(text_embeds.iter())
        .map(|(a, b)| f64::from(*a) * f64::from(*b))
        .sum();
    let norm = |v: ArrayView1<f32>| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let denom = norm(image_embeds) * norm(text_embeds);
    let cosine = if denom > 0.0 { dot / denom } else { 0.0 };
    ClipScore {
        score: (100.0 * cosine).max(0.0),
        cosine,
    }
}

/// The fix for a scorer folder that is there but unusable (without "Fix: ").
fn fix(root: &Path) -> String {
    format!(
        "re-export the model with its CLIP scorer (`.venv-ref/bin/python models/export.py --out {} --clip-scorer --force`), or remove {} to run without CLIP scores",
        root.display(),
        root.join(CLIP_FOLDER).display()
    )
}

impl ClipConfig {
    /// Reads and checks `dir/config.json`; `root` is the model folder, for the fix.
    pub fn read(dir: &Path, root: &Path) -> eyre::Result<Self> {
        let file = dir.join("config.json");
        let text = std::fs::read_to_string(&file).map_err(|e| {
            Fixable::new(
                format!(
                    "the CLIP scorer {} has no readable config.json ({e}); it holds the image preprocessing",
                    dir.display()
                ),
                fix(root),
            )
        })?;
        let config: ClipConfig = serde_json::from_str(&text).map_err(|e| {
            Fixable::new(
                format!("{} is not a CLIP scorer config: {e}", file.display()),
                fix(root),
            )
        })?;
        let mut problems = Vec::new();
        if !config.format.starts_with("speedscape-clip-scorer/") {
            problems.push(format!(
                "format {:?} (expected speedscape-clip-scorer/1)",
                config.format
            ));
        }
        if config.resample != "bicubic" {
            problems.push(format!(
                "resample {:?} (only PIL's bicubic is implemented)",
                config.resample
            ));
        }
        if config.crop_height == 0
            || config.crop_width == 0
            || config.crop_height > config.resize_shortest_edge
            || config.crop_width > config.resize_shortest_edge
        {
            problems.push(format!(
                "crop {}×{} with the shortest edge resized to {} (the crop must fit)",
                config.crop_width, config.crop_height, config.resize_shortest_edge
            ));
        }
        if config.image_std.iter().any(|s| *s <= 0.0 || !s.is_finite()) {
            problems.push(format!("image_std {:?}", config.image_std));
        }
        if !problems.is_empty() {
            return Err(eyre!(Fixable::new(
                format!(
                    "{} describes a preprocessing speedscape does not do: {}",
                    file.display(),
                    problems.join("; ")
                ),
                fix(root),
            )));
        }
        Ok(config)
    }
}

/// The CLIP scorer of a model folder: its session and preprocessing.
pub struct ClipScorer {
    session: Session,
    pixels: IoSpec,
    text: IoSpec,
    image_out: String,
    text_out: String,
    /// The folder's `config.json`: preprocessing and widths.
    pub config: ClipConfig,
    pub(crate) file: PathBuf,
    /// Time spent inside ONNX Runtime's run calls so far.
    pub(crate) ort: Duration,
    memory: MemoryContext,
}

impl ClipScorer {
    /// Whether the model folder has a CLIP scorer (its folder; [`ClipScorer::open`] checks it).
    pub fn present(root: &Path) -> bool {
        root.join(CLIP_FOLDER).is_dir()
    }

    /// Opens `root/clip_image_encoder/`: `Ok(None)` when the model has none; an error with the
    /// cause and fix when it is there but incomplete, damaged or not a CLIP scorer.
    pub fn open(rt: &Runtime, root: &Path) -> eyre::Result<Option<Self>> {
        let dir = root.join(CLIP_FOLDER);
        if !dir.exists() {
            return Ok(None);
        }
        let file = dir.join("model.onnx");
        if !file.is_file() {
            return Err(eyre!(Fixable::new(
                format!("the CLIP scorer {} has no model.onnx", dir.display()),
                fix(root),
            )));
        }
        let config = ClipConfig::read(&dir, root)?;
        let session = rt
            .session(&file)
            .wrap_err_with(|| format!("loading the CLIP scorer {}", file.display()))?;
        let inputs = tensor::inputs(&session);
        let outputs = tensor::outputs(&session);
        let pixels = find(&inputs, "pixel_values").filter(|s| s.rank() == 4 && is_float(s.elem));
        let text = find(&inputs, "text_pooled").filter(|s| s.rank() == 2 && is_float(s.elem));
        let image_out = find(&outputs, "image_embeds").filter(|s| s.rank() == 2);
        let text_out = find(&outputs, "text_embeds").filter(|s| s.rank() == 2);
        let (Some(pixels), Some(text), Some(image_out), Some(text_out)) =
            (pixels, text, image_out, text_out)
        else {
            return Err(eyre!(Fixable::new(
                format!(
                    "{} is not a CLIP scorer: expected inputs pixel_values float[batch,3,H,W], text_pooled float[batch,D] and outputs image_embeds, text_embeds; found inputs {}, outputs {}",
                    file.display(),
                    describe_all(&inputs),
                    describe_all(&outputs)
                ),
                fix(root),
            )));
        };
        // Fixed dimensions of the graph must be what config.json says.
        let fixed = |d: i64, want: usize| d <= 0 || d as usize == want;
        let ok = fixed(pixels.shape[1], 3)
            && fixed(pixels.shape[2], config.crop_height)
            && fixed(pixels.shape[3], config.crop_width)
            && fixed(text.shape[1], config.text_hidden_size)
            && fixed(image_out.shape[1], config.projection_dim)
            && fixed(text_out.shape[1], config.projection_dim);
        if !ok {
            return Err(eyre!(Fixable::new(
                format!(
                    "{} does not match its config.json: the graph has {}, {} → {}, {}; config.json says {}×{} crops, text width {}, projection {}",
                    file.display(),
                    pixels.describe(),
                    text.describe(),
                    image_out.describe(),
                    text_out.describe(),
                    config.crop_width,
                    config.crop_height,
                    config.text_hidden_size,
                    config.projection_dim
                ),
                fix(root),
            )));
        }
        Ok(Some(Self {
            pixels: pixels.clone(),
            text: text.clone(),
            image_out: image_out.name.clone(),
            text_out: text_out.name.clone(),
            session,
            config,
            file,
            ort: Duration::ZERO,
            memory: rt.memory_context(),
        }))
    }

    /// `pixel_values` `[1, 3, crop_h, crop_w]` for `image`, as CLIPImageProcessor makes them.
    pub fn preprocess(&self, image: &RgbImage) -> Array4<f32> {
        preprocess(image, &self.config)
    }

    /// Projected embeddings: `image_embeds` `[Bi, P]` for `pixel_values` `[Bi, 3, h, w]` and
    /// `text_embeds` `[Bt, P]` for `text_pooled` `[Bt, D]` (the text encoder's pooler_output).
    pub fn embed(
        &mut self,
        pixel_values: ArrayView4<f32>,
        text_pooled: ArrayView2<f32>,
    ) -> eyre::Result<(Array2<f32>, Array2<f32>)> {
        let want = self.config.text_hidden_size;
        if text_pooled.shape()[1] != want {
            return Err(eyre!(Fixable::new(
                format!(
                    "the CLIP scorer {} takes text pooler_output of width {want}, got width {}",
                    self.file.display(),
                    text_pooled.shape()[1]
                ),
                "use the CLIP scorer exported with this model's text encoder",
            )));
        }
        let x = tensor::float_input(pixel_values.into_dyn(), self.pixels.elem)?;
        let t = tensor::float_input(text_pooled.into_dyn(), self.text.elem)?;
        let doing = format!(
            "running the CLIP scorer {CLIP_FOLDER} (batch {})",
            pixel_values.shape()[0]
        );
        let start = Instant::now();
        let outputs = self
            .session
            .run(ort::inputs![
                self.pixels.name.as_str() => x,
                self.text.name.as_str() => t,
            ])
            .map_err(|e| run_error(self.memory, &doing, &self.file, e))?;
        self.ort += start.elapsed();
        let image = tensor::float_output(&outputs[self.image_out.as_str()])?
            .into_dimensionality::<Ix2>()?;
        let text =
            tensor::float_output(&outputs[self.text_out.as_str()])?.into_dimensionality::<Ix2>()?;
        Ok((image, text))
    }

    /// The CLIP score of `image` against a prompt's `text_pooled` `[D]` (the base text
    /// encoder's pooler_output for the prompt's 77 ids).
    pub(crate) fn score(
        &mut self,
        image: &RgbImage,
        text_pooled: ArrayView1<f32>,
    ) -> eyre::Result<ClipScore> {
        let pixels = self.preprocess(image);
        let text = text_pooled.insert_axis(ndarray::Axis(0));
        let (img, txt) = self.embed(pixels.view(), text)?;
        Ok(clip_score(img.row(0), txt.row(0)))
    }
}

/// `pixel_values` `[1, 3, crop_h, crop_w]`: CLIPImageProcessor (PIL backend) with `config`'s
/// settings. The resized size is transformers' `get_resize_output_image_size`: the shortest
/// edge becomes `S`, the other `int(S · long / short)`; the crop starts at `(size − crop) // 2`.
pub fn preprocess(image: &RgbImage, config: &ClipConfig) -> Array4<f32> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let s = config.resize_shortest_edge;
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    let new_long = ((s * long) as f64 / short.max(1) as f64) as usize;
    let (nw, nh) = if w <= h { (s, new_long) } else { (new_long, s) };
    let resized;
    let img = if (nw, nh) == (w, h) {
        image
    } else {
        resized = resize_bicubic_pil(image, nw as u32, nh as u32);
        &resized
    };
    let (ch, cw) = (config.crop_height, config.crop_width);
    let top = nh.saturating_sub(ch) / 2;
    let left = nw.saturating_sub(cw) / 2;
    let mut out = Array4::<f32>::zeros((1, 3, ch, cw));
    for y in 0..ch.min(nh) {
        for x in 0..cw.min(nw) {
            let p = img.get_pixel((left + x) as u32, (top + y) as u32);
            for c in 0..3 {
                // As transformers: rescale in float64 then float32, normalise in float32.
                let v = (f64::from(p[c]) * config.rescale_factor) as f32;
                out[[0, c, y, x]] = (v - config.image_mean[c]) / config.image_std[c];
            }
        }
    }
    out
}

// --------------------------------------------------------------------------------------------
// Pillow's resampling (libImaging/Resample.c), bicubic, 8 bits per channel
// --------------------------------------------------------------------------------------------

/// Fixed-point precision of Pillow's 8-bit resampling coefficients.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's `bicubic_filter` (a = −0.5, support 2).
fn bicubic_filter(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for the whole input range: per
/// output pixel the first input index, the count and the fixed-point weights.
struct Coeffs {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    weights: Vec<i32>,
}

fn precompute_coeffs(in_size: usize, out_size: usize) -> Coeffs {
    let (in0, in1) = (0.0f32, in_size as f32);
    let scale = f64::from(in1 - in0) / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = f64::from(in0) + (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C's (int) truncates toward zero.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(xmax) {
            let w = bicubic_filter((x as f64 + xmin as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        for (x, kx) in k.iter().enumerate().take(xmax) {
            let v = if ww != 0.0 { kx / ww } else { *kx };
            let scaled = v * f64::from(1u32 << PRECISION_BITS);
            weights[xx * ksize + x] = if v < 0.0 {
                (-0.5 + scaled) as i32
            } else {
                (0.5 + scaled) as i32
            };
        }
        bounds.push((xmin, xmax));
    }
    Coeffs {
        ksize,
        bounds,
        weights,
    }
}

fn clip8(v: i64) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// `image.resize((width, height), Image.BICUBIC)` of Pillow, byte for byte: a horizontal pass
/// into an 8-bit image, then a vertical pass, each with fixed-point weights; antialiased when
/// shrinking (the filter widens by the scale).
pub fn resize_bicubic_pil(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let (nw, nh) = (width as usize, height as usize);
    let half = 1i64 << (PRECISION_BITS - 1);
    let src = image.as_raw();
    // Horizontal pass (Pillow skips a pass whose size does not change).
    let (tmp, tw) = if nw != w {
        let c = precompute_coeffs(w, nw);
        let mut out = vec![0u8; h * nw * 3];
        for y in 0..h {
            for (xx, &(xmin, xmax)) in c.bounds.iter().enumerate() {
                let k = &c.weights[xx * c.ksize..xx * c.ksize + xmax];
                for ch in 0..3 {
                    let mut ss = half;
                    for (x, &kx) in k.iter().enumerate() {
                        ss += i64::from(src[(y * w + xmin + x) * 3 + ch]) * i64::from(kx);
                    }
                    out[(y * nw + xx) * 3 + ch] = clip8(ss);
                }
            }
        }
        (out, nw)
    } else {
        (src.clone(), w)
    };
    // Vertical pass.
    let out = if nh != h {
        let c = precompute_coeffs(h, nh);
        let mut out = vec![0u8; nh * tw * 3];
        for (yy, &(ymin, ymax)) in c.bounds.iter().enumerate() {
            let k = &c.weights[yy * c.ksize..yy * c.ksize + ymax];
            for x in 0..tw {
                for ch in 0..3 {
                    let mut ss = half;
                    for (y, &ky) in k.iter().enumerate() {
                        ss += i64::from(tmp[((ymin + y) * tw + x) * 3 + ch]) * i64::from(ky);
                    }
                    out[(yy * tw + x) * 3 + ch] = clip8(ss);
                }
            }
        }
        out
    } else {
        tmp
    };
    RgbImage::from_raw(width, height, out).expect("width × height × 3 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_score_is_100_cosine_clamped_at_zero() {
        let a = ndarray::arr1(&[1.0f32, 0.0, 0.0]);
        let b = ndarray::arr1(&[1.0f32, 1.0, 0.0]);
        let s = clip_score(a.view(), b.view());
        assert!((s.cosine - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-12);
        assert!((s.score - 100.0 * std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-9);
        let opposite = ndarray::arr1(&[-2.0f32, 0.0, 0.0]);
        let s = clip_score(a.view(), opposite.view());
        assert_eq!((s.cosine, s.score), (-1.0, 0.0));
        // Not normalised inputs: the scale does not matter.
        let scaled = ndarray::arr1(&[10.0f32, 10.0, 0.0]);
        assert!(
            (clip_score(a.view(), scaled.view()).score - clip_score(a.view(), b.view()).score)
                .abs()
                < 1e-9
        );
    }

    #[test]
    fn a_flat_image_stays_flat_through_the_pil_resize() {
        let img = RgbImage::from_pixel(37, 23, image::Rgb([200, 17, 90]));
        for (w, h) in [(224, 139), (5, 3), (37, 224)] {
            let out = resize_bicubic_pil(&img, w, h);
            assert!(out.pixels().all(|p| p.0 == [200, 17, 90]), "{w}×{h}");
        }
    }
}
