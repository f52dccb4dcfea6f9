//! Image quality against a reference image (an exercise's baseline run): PSNR, SSIM and the mean
//! absolute pixel difference, on 8-bit RGB.
//!
//! SSIM is the standard one of Wang et al. 2004, as scikit-image computes it with
//! `structural_similarity(a, b, channel_axis=-1, gaussian_weights=True, sigma=1.5,
//! use_sample_covariance=False, data_range=255)`: per channel, local means, variances and the
//! covariance under an 11×11 Gaussian window (σ = 1.5, truncated at 3.5σ), C1 = (0.01·255)²,
//! C2 = (0.03·255)²; the SSIM map is averaged over the pixels whose window lies wholly inside
//! the image (scikit-image crops the 5-pixel border), then over the three channels.
//! tests/quality.rs checks it against scikit-image on committed fixtures.
//!
//! What they mean: how close an image is to the baseline *pixel by pixel*. A faster method that
//! keeps the composition scores high; a different seed, or a style LoRA that is supposed to change
//! the look, scores low without being worse. They say nothing about how good an image looks.
//!
//! [`edges`] holds the edge maps of ControlNet runs and control adherence (Canny, edge F1).

pub mod edges;

use eyre::bail;
use image::RgbImage;
use serde::Serialize;

use crate::error::Fixable;

/// Radius of the Gaussian window: int(3.5 · 1.5 + 0.5) = 5, so 11 taps.
const RADIUS: usize = 5;
const SIGMA: f64 = 1.5;
const DATA_RANGE: f64 = 255.0;

/// How an image compares with the reference.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Quality {
    /// Peak signal-to-noise ratio in dB (peak 255); `None` when the images are identical
    /// (infinite PSNR).
    pub psnr_db: Option<f64>,
    /// Structural similarity in [-1, 1]; 1 for identical images.
    pub ssim: f64,
    /// Mean of |a − b| over every pixel and channel, in 8-bit levels (0–255).
    pub mean_abs_diff: f64,
}

/// Compares `image` with `reference`. Both must be the same size, at least 11×11 (the SSIM window).
pub fn compare(reference: &RgbImage, image: &RgbImage) -> eyre::Result<Quality> {
    if reference.dimensions() != image.dimensions() {
        let (rw, rh) = reference.dimensions();
        let (w, h) = image.dimensions();
        bail!(Fixable::new(
            format!(
                "cannot compare a {w}×{h} image with a {rw}×{rh} reference: quality numbers need the same size"
            ),
            "run both at the same width and height",
        ));
    }
    let (w, h) = (reference.width() as usize, reference.height() as usize);
    if w < 2 * RADIUS + 1 || h < 2 * RADIUS + 1 {
        bail!(Fixable::new(
            format!("a {w}×{h} image is smaller than SSIM's 11×11 window"),
            "compare images of at least 11×11 pixels",
        ));
    }
    let (a, b) = (reference.as_raw(), image.as_raw());
    let mut sq = 0.0f64;
    let mut abs = 0.0f64;
    for (&x, &y) in a.iter().zip(b) {
        let d = f64::from(x) - f64::from(y);
        sq += d * d;
        abs += d.abs();
    }
    let n = a.len() as f64;
    let mse = sq / n;
    let psnr_db = (mse > 0.0).then(|| 10.0 * (DATA_RANGE * DATA_RANGE / mse).log10());
    let ssim = (0..3)
        .map(|c| {
            let plane = |img: &[u8]| -> Vec<f64> {
                img.iter()
                    .skip(c)
                    .step_by(3)
                    .map(|&v| f64::from(v))
                    .collect()
            };
            ssim_plane(&plane(a), &plane(b), w, h)
        })
        .sum::<f64>()
        / 3.0;
    Ok(Quality {
        psnr_db,
        ssim,
        mean_abs_diff: abs / n,
    })
}

/// The normalised 1-D Gaussian taps, as scipy.ndimage builds them.
fn gaussian_taps() -> [f64; 2 * RADIUS + 1] {
    let mut taps = [0.0; 2 * RADIUS + 1];
    for (i, t) in taps.iter_mut().enumerate() {
        let x = i as f64 - RADIUS as f64;
        *t = (-0.5 * x * x / (SIGMA * SIGMA)).exp();
    }
    let sum: f64 = taps.iter().sum();
    taps.iter_mut().for_each(|t| *t /= sum);
    taps
}

/// Gaussian-filters `plane` (`w`×`h`, row-major) where the window fits wholly inside:
/// a `(w − 10)`×`(h − 10)` result, separable (rows, then columns).
fn filter_valid(plane: &[f64], w: usize, h: usize, taps: &[f64]) -> Vec<f64> {
    let k = taps.len();
    let ow = w + 1 - k;
    let oh = h + 1 - k;
    let mut rows = vec![0.0; ow * h];
    for y in 0..h {
        let src = &plane[y * w..(y + 1) * w];
        for x in 0..ow {
            rows[y * ow + x] = taps.iter().zip(&src[x..x + k]).map(|(t, v)| t * v).sum();
        }
    }
    let mut out = vec![0.0; ow * oh];
    for y in 0..oh {
        for x in 0..ow {
            out[y * ow + x] = taps
                .iter()
                .enumerate()
                .map(|(i, t)| t * rows[(y + i) * ow + x])
                .sum();
        }
    }
    out
}

fn ssim_plane(a: &[f64], b: &[f64], w: usize, h: usize) -> f64 {
    let taps = gaussian_taps();
    let product =
        |p: &[f64], q: &[f64]| -> Vec<f64> { p.iter().zip(q).map(|(x, y)| x * y).collect() };
    let ux = filter_valid(a, w, h, &taps);
    let uy = filter_valid(b, w, h, &taps);
    let uxx = filter_valid(&product(a, a), w, h, &taps);
    let uyy = filter_valid(&product(b, b), w, h, &taps);
    let uxy = filter_valid(&product(a, b), w, h, &taps);
    let c1 = (0.01 * DATA_RANGE).powi(2);
    let c2 = (0.03 * DATA_RANGE).powi(2);
    let n = ux.len();
    let mut total = 0.0;
    for i in 0..n {
        let (mx, my) = (ux[i], uy[i]);
        let vx = uxx[i] - mx * mx;
        let vy = uyy[i] - my * my;
        let vxy = uxy[i] - mx * my;
        total +=
            ((2.0 * mx * my + c1) * (2.0 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2));
    }
    total / n as f64
}

/// How much of an image's edge energy lies on one grid of `block`-pixel cells: about 0 when
/// edges fall anywhere (a plain picture), 1 when every edge is on the grid (pixel art of flat
/// `block`×`block` cells). The micro model's style LoRA is judged by it
/// (`models/micro_src/judge.py`, `pixelation`; tests/micro.rs checks this port against it).
///
/// Per axis, the squared differences between neighbouring pixels (summed over the channels and
/// the other axis) give an energy per column (row) boundary; the best of the `block` grid
/// offsets takes a share `e` of it, `1/block` for edges spread evenly. The score rescales the
/// two axes' share together: `(e − 1/block) / (1 − 1/block)`. A flat image scores 0.
pub fn pixelation(img: &RgbImage, block: usize) -> f64 {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if block < 2 || w < 2 || h < 2 {
        return 0.0;
    }
    let px = |x: usize, y: usize, c: usize| f64::from(img.get_pixel(x as u32, y as u32)[c]);
    // Energy at the boundary between column j and j + 1 (row i and i + 1).
    let mut cols = vec![0.0; w - 1];
    let mut rows = vec![0.0; h - 1];
    for y in 0..h {
        for (x, e) in cols.iter_mut().enumerate() {
            *e += (0..3)
                .map(|c| (px(x + 1, y, c) - px(x, y, c)).powi(2))
                .sum::<f64>();
        }
    }
    for (y, e) in rows.iter_mut().enumerate() {
        for x in 0..w {
            *e += (0..3)
                .map(|c| (px(x, y + 1, c) - px(x, y, c)).powi(2))
                .sum::<f64>();
        }
    }
    // The most energy one grid offset takes: boundaries j with (j + 1 − offset) % block == 0.
    let best = |e: &[f64]| -> f64 {
        (0..block)
            .map(|o| {
                e.iter()
                    .enumerate()
                    .filter(|(j, _)| (j + 1 + block - o).is_multiple_of(block))
                    .map(|(_, v)| v)
                    .sum::<f64>()
            })
            .fold(0.0, f64::max)
    };
    let total: f64 = cols.iter().sum::<f64>() + rows.iter().sum::<f64>();
    if total <= 1e-9 * (w * h) as f64 {
        return 0.0;
    }
    let share = (best(&cols) + best(&rows)) / total;
    let even = 1.0 / block as f64;
    (share - even) / (1.0 - even)
}

/// Speckle: the mean squared difference (×1000, on [0, 1] values) between an image and its
/// 3×3 median filter, edges repeated. Grain and blotches score high, flat areas and clean
/// edges low. The micro model's evaluation calls a method cleaner than another by it
/// (`models/micro_src/evaluate.py`, `roughness`).
pub fn roughness(img: &RgbImage) -> f64 {
    let (w, h) = (img.width() as i64, img.height() as i64);
    if w == 0 || h == 0 {
        return 0.0;
    }
    let at = |x: i64, y: i64, c: usize| {
        let (x, y) = (x.clamp(0, w - 1), y.clamp(0, h - 1));
        img.get_pixel(x as u32, y as u32)[c]
    };
    let mut sum = 0.0;
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let mut win = [0u8; 9];
                let mut k = 0;
                for dy in -1..=1 {
                    for dx in -1..=1 {
                        win[k] = at(x + dx, y + dy, c);
                        k += 1;
                    }
                }
                win.sort_unstable();
                let d = (f64::from(at(x, y, c)) - f64::from(win[4])) / 255.0;
                sum += d * d;
            }
        }
    }
    sum / (w * h * 3) as f64 * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A picture with edges everywhere: a disc and stripes at odd positions.
    fn plain(size: u32) -> RgbImage {
        RgbImage::from_fn(size, size, |x, y| {
            let (dx, dy) = (x as f64 - 30.3, y as f64 - 27.7);
            let disc = (dx * dx + dy * dy).sqrt() < 17.0;
            let v = (x * 37 + y * 11) % 255;
            image::Rgb([if disc { 230 } else { 20 }, v as u8, ((x * y) % 251) as u8])
        })
    }

    /// `img` as pixel art: each `block`×`block` cell the colour of its top-left pixel.
    fn blocky(img: &RgbImage, block: u32) -> RgbImage {
        RgbImage::from_fn(img.width(), img.height(), |x, y| {
            *img.get_pixel(x / block * block, y / block * block)
        })
    }

    #[test]
    fn pixel_art_on_its_grid_scores_one_and_a_plain_picture_near_zero() {
        let p = plain(64);
        assert!((pixelation(&blocky(&p, 4), 4) - 1.0).abs() < 1e-12);
        assert!(pixelation(&p, 4).abs() < 0.15, "{}", pixelation(&p, 4));
        // Any offset of the grid counts: shift the cells by 2 pixels.
        let shifted = RgbImage::from_fn(64, 64, |x, y| {
            *p.get_pixel((x + 2) / 4 * 4 % 64, (y + 2) / 4 * 4 % 64)
        });
        assert!((pixelation(&shifted, 4) - 1.0).abs() < 1e-12);
        // A flat image has no edges at all.
        assert_eq!(pixelation(&RgbImage::new(64, 64), 4), 0.0);
    }

    #[test]
    fn roughness_is_zero_on_flat_cells_and_grows_with_speckle() {
        let p = plain(64);
        assert_eq!(
            roughness(&RgbImage::from_pixel(32, 32, image::Rgb([9, 90, 200]))),
            0.0
        );
        let mut speckled = blocky(&p, 4);
        let clean = roughness(&speckled);
        for (i, px) in speckled.pixels_mut().enumerate() {
            if i % 7 == 0 {
                px[1] = px[1].wrapping_add(90);
            }
        }
        assert!(
            roughness(&speckled) > clean * 2.0,
            "{clean} → {}",
            roughness(&speckled)
        );
    }

    #[test]
    fn the_gaussian_window_has_11_taps_summing_to_one() {
        let taps = gaussian_taps();
        assert_eq!(taps.len(), 11);
        assert!((taps.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        assert!(taps[5] > taps[4] && (taps[0] - taps[10]).abs() < 1e-18);
    }

    #[test]
    fn filtering_a_constant_plane_keeps_the_constant() {
        let plane = vec![7.0; 20 * 13];
        let out = filter_valid(&plane, 20, 13, &gaussian_taps());
        assert_eq!(out.len(), 10 * 3);
        assert!(out.iter().all(|v| (v - 7.0).abs() < 1e-12));
    }
}
