//! The control image of a ControlNet run, from the file to the tensor: reading it
//! ([`load_control_image`]), the optional Canny preprocessing ([`ControlPreprocess`]), the
//! resize to the output size and the `[1, 3, H, W]` tensor in [0, 1] that diffusers' control
//! image processor makes ([`prepare`]), and the control edge map that adherence is scored
//! against.
//!
//! The resize is PIL's `Image.resize((width, height), Image.LANCZOS)` on 8-bit RGB, byte for
//! byte ([`resize_lanczos`]): Pillow 13's `ImagingResampleInner` with the Lanczos-3 filter
//! (support 3, stretched by the downscale factor), coefficients normalised per output pixel
//! and rounded to 22-bit fixed point, each pass rounded to 8 bits. tests/edges.rs checks it
//! and the Canny preprocessing against PIL and OpenCV on committed fixtures.

use std::borrow::Cow;
use std::fmt;
use std::io::Cursor;
use std::path::Path;
use std::str::FromStr;

use eyre::bail;
use image::{ImageDecoder, ImageFormat, ImageReader, RgbImage};
use ndarray::Array4;
use serde::{Deserialize, Serialize};

use crate::error::Fixable;
use crate::quality::edges::{CANNY_HIGH, CANNY_LOW, EdgeMap, canny};

/// What is done to the control image before the ControlNet sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ControlPreprocess {
    /// The image is the control image as it is (an edge map, a pose skeleton, a depth map).
    #[default]
    None,
    /// The Canny edges of the image (thresholds 100, 200, on the image at its own size) become
    /// the control image, white on black, as in diffusers' ControlNet canny example.
    Canny,
}

impl ControlPreprocess {
    /// Every choice, in the order help texts list them.
    pub const ALL: [ControlPreprocess; 2] = [ControlPreprocess::None, ControlPreprocess::Canny];

    /// The CLI / config spelling: `none`, `canny`.
    pub fn name(self) -> &'static str {
        match self {
            ControlPreprocess::None => "none",
            ControlPreprocess::Canny => "canny",
        }
    }
}

impl fmt::Display for ControlPreprocess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ControlPreprocess {
    type Err = Fixable;

    fn from_str(s: &str) -> Result<Self, Fixable> {
        ControlPreprocess::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                Fixable::new(
                    format!("unknown control preprocess {s:?}; expected one of: none, canny"),
                    "use none (the image is already the control image) or canny (its Canny \
                     edges become the control image)",
                )
            })
    }
}

/// Reads the control image at `path` as 8-bit RGB, as diffusers' `load_image` does: EXIF
/// orientation applied, alpha dropped, grey replicated (16-bit images are rounded to 8 bits,
/// where PIL truncates). PNG and JPEG are read, whatever the file's extension; a missing
/// file, an unreadable one and one that is no such image are each an error naming the path
/// and what to do.
pub fn load_control_image(path: &Path) -> eyre::Result<RgbImage> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(Fixable::new(
            format!("control image {} does not exist", path.display()),
            "check the path: it must name an existing PNG or JPEG file",
        )),
        Err(e) => bail!(Fixable::new(
            format!("cannot read control image {}: {e}", path.display()),
            "give the path of a PNG or JPEG file you can read (not a folder; check its \
             permissions)",
        )),
    };
    let not_an_image = |what: String| {
        Fixable::new(
            format!("control image {} {what}", path.display()),
            "give a PNG or JPEG image (convert other formats to PNG first)",
        )
    };
    let reader = match ImageReader::new(Cursor::new(&bytes)).with_guessed_format() {
        Ok(reader) => reader,
        Err(e) => bail!(not_an_image(format!("cannot be read as an image: {e}"))),
    };
    match reader.format() {
        Some(ImageFormat::Png | ImageFormat::Jpeg) => {}
        Some(format) => bail!(not_an_image(format!(
            "is a {} image; speedscape reads PNG and JPEG",
            format
                .extensions_str()
                .first()
                .unwrap_or(&"?")
                .to_uppercase()
        ))),
        None => bail!(not_an_image(
            "is not an image (neither PNG nor JPEG)".into()
        )),
    }
    let decoded = reader.into_decoder().and_then(|mut decoder| {
        let orientation = decoder.orientation()?;
        let mut image = image::DynamicImage::from_decoder(decoder)?;
        image.apply_orientation(orientation);
        Ok(image)
    });
    match decoded {
        Ok(image) => Ok(image.to_rgb8()),
        Err(e) => bail!(not_an_image(format!("cannot be decoded: {e}"))),
    }
}

/// The control image as the ControlNet gets it, and as adherence scores against it.
#[derive(Debug, Clone)]
pub struct ControlInput {
    /// The control image after preprocessing and resizing: 8-bit RGB at the output size (what
    /// an exercise shows as the control panel).
    pub image: RgbImage,
    /// `image` as the ControlNet's `controlnet_cond` input: shape `[1, 3, height, width]`,
    /// RGB planes, values `byte / 255` in [0, 1] (not normalised to [-1, 1]).
    pub tensor: Array4<f32>,
    /// `image` read back as an edge map ([`EdgeMap::from_control`]), at the output size.
    pub edges: EdgeMap,
}

/// Prepares `image` for a `width`×`height` run as diffusers' `StableDiffusionControlNetPipeline`
/// does: the preprocessing first, on the image at its own size (`canny`: `cv2.Canny(image,
/// 100, 200)` replicated to three channels); then PIL's LANCZOS resize to `width`×`height`
/// (nothing when the size already matches); then `/ 255` (diffusers' control image
/// processor: `do_convert_rgb`, no normalisation).
pub fn prepare(
    image: &RgbImage,
    preprocess: ControlPreprocess,
    width: u32,
    height: u32,
) -> ControlInput {
    let source = match preprocess {
        ControlPreprocess::None => Cow::Borrowed(image),
        ControlPreprocess::Canny => Cow::Owned(canny(image, CANNY_LOW, CANNY_HIGH).to_image()),
    };
    let image = resize_lanczos(&source, width, height);
    let (w, h) = (width as usize, height as usize);
    let raw = image.as_raw();
    let tensor = Array4::from_shape_fn((1, 3, h, w), |(_, c, y, x)| {
        f32::from(raw[(y * w + x) * 3 + c]) / 255.0
    });
    let edges = EdgeMap::from_control(&image);
    ControlInput {
        image,
        tensor,
        edges,
    }
}

/// Bits after the point of Pillow's 8-bit coefficients (`PRECISION_BITS`, 32 − 8 − 2).
const PRECISION_BITS: u32 = 22;

/// PIL's `image.resize((width, height), Image.Resampling.LANCZOS)` on an 8-bit RGB image,
/// byte for byte with Pillow 13: one pass per axis whose size changes (none: a copy), the
/// horizontal one first unless the height shrinks by more than twice as many pixels as the
/// width (then the vertical one, as Pillow 13 orders them; Pillow before 13 always went
/// horizontal first, which differs by a level or two in those cases).
pub fn resize_lanczos(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (w0, h0) = (image.width(), image.height());
    if width == 0 || height == 0 {
        return RgbImage::new(width, height);
    }
    let shrink_y = i64::from(h0) - i64::from(height);
    let shrink_x = i64::from(w0) - i64::from(width);
    let horizontal_first = !(shrink_y > 0 && shrink_y > shrink_x * 2);
    let horizontal = |img: &RgbImage| {
        if width == w0 {
            img.clone()
        } else {
            resample(img, width, Axis::X)
        }
    };
    let vertical = |img: &RgbImage| {
        if height == h0 {
            img.clone()
        } else {
            resample(img, height, Axis::Y)
        }
    };
    if horizontal_first {
        vertical(&horizontal(image))
    } else {
        horizontal(&vertical(image))
    }
}

/// The axis a resampling pass runs along.
#[derive(Clone, Copy, PartialEq)]
enum Axis {
    X,
    Y,
}

/// Pillow's `lanczos_filter`: `sinc(x)·sinc(x/3)` on [-3, 3).
fn lanczos(x: f64) -> f64 {
    let sinc = |x: f64| {
        if x == 0.0 {
            1.0
        } else {
            let x = x * std::f64::consts::PI;
            x.sin() / x
        }
    };
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// One output pixel's window on the input: the first input index and the fixed-point weights.
struct Window {
    first: usize,
    weights: Vec<i32>,
}

/// Pillow's `precompute_coeffs` then `normalize_coeffs_8bpc` for `in_size` → `out_size`
/// (`out_size` ≥ 1): per output pixel, the input pixels within the filter's support
/// (stretched by the downscale factor), their Lanczos weights normalised to sum 1, then
/// rounded half away from zero to [`PRECISION_BITS`] fixed point.
fn windows(in_size: u32, out_size: u32) -> Vec<Window> {
    let scale = f64::from(in_size) / f64::from(out_size);
    let filter_scale = scale.max(1.0);
    let support = 3.0 * filter_scale;
    let inv_filter_scale = 1.0 / filter_scale;
    (0..out_size)
        .map(|xx| {
            let center = (f64::from(xx) + 0.5) * scale;
            // C's (int) cast: truncation toward zero.
            let first = ((center - support + 0.5) as i64).max(0);
            let end = ((center + support + 0.5) as i64).min(i64::from(in_size));
            let taps: Vec<f64> = (first..end)
                .map(|x| lanczos((x as f64 - center + 0.5) * inv_filter_scale))
                .collect();
            let sum: f64 = taps.iter().fold(0.0, |s, t| s + t);
            let weights = taps
                .iter()
                .map(|&t| {
                    let t = if sum != 0.0 { t / sum } else { t };
                    let fixed = t * f64::from(1u32 << PRECISION_BITS);
                    (if t < 0.0 { fixed - 0.5 } else { fixed + 0.5 }) as i32
                })
                .collect();
            Window {
                first: first as usize,
                weights,
            }
        })
        .collect()
}

/// One pass of Pillow's `ImagingResampleHorizontal_8bpc` / `Vertical_8bpc`: `image` resampled
/// to `size` along `axis`, each value `clip8((2^21 + Σ byte·weight) >> 22)`.
fn resample(image: &RgbImage, size: u32, axis: Axis) -> RgbImage {
    let (w, h) = (image.width(), image.height());
    let (out_w, out_h, in_size) = match axis {
        Axis::X => (size, h, w),
        Axis::Y => (w, size, h),
    };
    let windows = windows(in_size, size);
    let raw = image.as_raw();
    let w = w as usize;
    let mut out = RgbImage::new(out_w, out_h);
    for (y, row) in out
        .as_mut()
        .chunks_exact_mut(out_w as usize * 3)
        .enumerate()
    {
        for (x, px) in row.chunks_exact_mut(3).enumerate() {
            let window = &windows[if axis == Axis::X { x } else { y }];
            for (c, value) in px.iter_mut().enumerate() {
                let mut acc: i64 = 1 << (PRECISION_BITS - 1);
                for (i, &weight) in window.weights.iter().enumerate() {
                    let at = match axis {
                        Axis::X => y * w + window.first + i,
                        Axis::Y => (window.first + i) * w + x,
                    };
                    acc += i64::from(raw[at * 3 + c]) * i64::from(weight);
                }
                *value = (acc >> PRECISION_BITS).clamp(0, 255) as u8;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    #[test]
    fn preprocess_names_round_trip_through_from_str_display_and_serde() {
        for p in ControlPreprocess::ALL {
            assert_eq!(p.to_string().parse::<ControlPreprocess>().unwrap(), p);
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{p}\""));
            assert_eq!(serde_json::from_str::<ControlPreprocess>(&json).unwrap(), p);
        }
        assert_eq!(ControlPreprocess::default(), ControlPreprocess::None);
    }

    #[test]
    fn an_unknown_preprocess_lists_the_choices() {
        let err = "edges".parse::<ControlPreprocess>().unwrap_err();
        assert_eq!(
            err.cause(),
            "unknown control preprocess \"edges\"; expected one of: none, canny"
        );
        assert!(
            err.fix().contains("none") && err.fix().contains("canny"),
            "{err}"
        );
        let serde_err = serde_json::from_str::<ControlPreprocess>("\"Canny\"").unwrap_err();
        assert!(serde_err.to_string().contains("`none`"), "{serde_err}");
    }

    #[test]
    fn the_windows_weights_sum_to_one_in_fixed_point() {
        for (from, to) in [(64, 64), (37, 64), (600, 512), (512, 64), (3, 512), (7, 1)] {
            for (i, window) in windows(from, to).iter().enumerate() {
                let sum: i32 = window.weights.iter().sum();
                let one = 1 << PRECISION_BITS;
                // Each weight is rounded on its own: the sum is off by at most half a unit each.
                assert!(
                    (sum - one).abs() <= window.weights.len() as i32,
                    "{from}→{to} pixel {i}: {sum} vs {one}"
                );
                assert!(window.first + window.weights.len() <= from as usize);
            }
        }
    }

    #[test]
    fn resizing_keeps_a_flat_colour_and_the_size_unchanged_is_a_copy() {
        let flat = RgbImage::from_pixel(37, 23, Rgb([12, 200, 99]));
        let big = resize_lanczos(&flat, 64, 48);
        assert_eq!(big.dimensions(), (64, 48));
        assert!(big.pixels().all(|p| *p == Rgb([12, 200, 99])));
        let small = resize_lanczos(&flat, 5, 3);
        assert!(small.pixels().all(|p| *p == Rgb([12, 200, 99])));
        let noisy = RgbImage::from_fn(9, 4, |x, y| Rgb([(x * 29 + y * 7) as u8, 3, 250]));
        assert_eq!(resize_lanczos(&noisy, 9, 4), noisy);
        assert_eq!(resize_lanczos(&noisy, 0, 4).dimensions(), (0, 4));
    }

    #[test]
    fn prepare_makes_a_unit_range_nchw_tensor_and_the_edge_map_of_the_image() {
        let img = RgbImage::from_fn(8, 6, |x, y| Rgb([(x * 30) as u8, (y * 40) as u8, 255]));
        let input = prepare(&img, ControlPreprocess::None, 8, 6);
        assert_eq!(input.image, img);
        assert_eq!(input.tensor.shape(), [1, 3, 6, 8]);
        assert_eq!(input.tensor[[0, 0, 2, 5]], 150.0 / 255.0);
        assert_eq!(input.tensor[[0, 1, 2, 5]], 80.0 / 255.0);
        assert_eq!(input.tensor[[0, 2, 0, 0]], 1.0);
        assert_eq!(input.edges, EdgeMap::from_control(&img));
        // Canny on a flat image: a black control image, no edges.
        let flat = RgbImage::from_pixel(8, 6, Rgb([90, 90, 90]));
        let input = prepare(&flat, ControlPreprocess::Canny, 16, 12);
        assert_eq!(input.tensor.shape(), [1, 3, 12, 16]);
        assert!(input.tensor.iter().all(|&v| v == 0.0));
        assert_eq!(input.edges.count(), 0);
    }
}
