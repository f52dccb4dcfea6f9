//! Edge maps and control adherence: OpenCV's Canny edge detector, the edge map a control image
//! stands for, and the tolerance-matched edge F1 between two maps. The Rust side of
//! `models/edges.py` (one definition for both languages; tests/edges.rs checks this port
//! against OpenCV and that file on committed fixtures).
//!
//! - [`canny`] is `cv2.Canny(rgb, low, high)` (aperture 3, L1 gradient) on an 8-bit RGB
//!   image, bit for bit: 3×3 Sobel per channel with the border replicated, per pixel the
//!   channel of largest `|dx| + |dy|`, OpenCV's non-maximum suppression (its fixed-point
//!   tan 22.5° test) and hysteresis over the 8 neighbours.
//! - [`EdgeMap::from_control`] reads a control image back as edges: luminance above 127.
//! - [`edge_f1`] scores a predicted map against a reference one; [`adherence`] is the F1 of
//!   a generated image's Canny edges (100, 200, diffusers' canny recipe) against the control
//!   edge map, at the tolerance of [`tolerance_for`].

use eyre::bail;
use image::{Rgb, RgbImage};
use serde::Serialize;

use crate::error::Fixable;

/// Canny's low threshold in diffusers' ControlNet canny example (and models/edges.py).
pub const CANNY_LOW: i32 = 100;
/// Canny's high threshold in diffusers' ControlNet canny example (and models/edges.py).
pub const CANNY_HIGH: i32 = 200;

/// A binary edge map, `width`×`height`, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeMap {
    width: u32,
    height: u32,
    data: Vec<bool>,
}

impl EdgeMap {
    /// A map with `f(x, y)` at each pixel.
    pub fn from_fn(width: u32, height: u32, mut f: impl FnMut(u32, u32) -> bool) -> Self {
        let data = (0..height)
            .flat_map(|y| (0..width).map(move |x| (x, y)))
            .map(|(x, y)| f(x, y))
            .collect();
        EdgeMap {
            width,
            height,
            data,
        }
    }

    /// A control image read back as an edge map (models/edges.py's `control_map`): a pixel is
    /// an edge when its luminance `(R·299 + G·587 + B·114) / 1000`, rounded half up, is above
    /// 127. (That is the ITU-R 601 formula that PIL documents for `convert("L")`; PIL itself
    /// computes it in 16-bit fixed point, which decides 62 of the 16.7 million colours the
    /// other way at this threshold, none of them grey.)
    pub fn from_control(image: &RgbImage) -> Self {
        EdgeMap::from_fn(image.width(), image.height(), |x, y| {
            let Rgb([r, g, b]) = *image.get_pixel(x, y);
            let sum = u32::from(r) * 299 + u32::from(g) * 587 + u32::from(b) * 114;
            (sum + 500) / 1000 > 127
        })
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Whether pixel (`x`, `y`) is an edge; panics outside the map.
    pub fn get(&self, x: u32, y: u32) -> bool {
        assert!(
            x < self.width && y < self.height,
            "({x}, {y}) outside the map"
        );
        self.data[(y * self.width + x) as usize]
    }

    /// The pixels row by row, `true` on an edge.
    pub fn as_slice(&self) -> &[bool] {
        &self.data
    }

    /// How many pixels are edges.
    pub fn count(&self) -> usize {
        self.data.iter().filter(|&&e| e).count()
    }

    /// The map as a control image: 255 on edges, 0 elsewhere, in all three channels (what
    /// diffusers' canny example makes of `cv2.Canny`'s output).
    pub fn to_image(&self) -> RgbImage {
        RgbImage::from_fn(self.width, self.height, |x, y| {
            Rgb([if self.get(x, y) { 255 } else { 0 }; 3])
        })
    }
}

/// `cv2.Canny(image, low, high)` with OpenCV's defaults (aperture 3, `L2gradient=False`) on an
/// 8-bit RGB image: the same map, pixel for pixel. A gradient magnitude `|dx| + |dy|` above
/// `high` starts an edge, one above `low` continues it; `low` and `high` are swapped when
/// given the other way round, as OpenCV does.
pub fn canny(image: &RgbImage, low: i32, high: i32) -> EdgeMap {
    let (low, high) = if low > high { (high, low) } else { (low, high) };
    let (w, h) = (image.width() as usize, image.height() as usize);
    let grad = Gradients::of(image);
    let (mut map, strong) = suppress_non_maxima(&grad, low, high);
    hysteresis(&mut map, w + 2, strong);
    EdgeMap::from_fn(w as u32, h as u32, |x, y| {
        map[(y as usize + 1) * (w + 2) + x as usize + 1] == EDGE
    })
}

/// Per pixel, the Sobel derivatives of the channel with the largest L1 magnitude.
struct Gradients {
    width: usize,
    height: usize,
    dx: Vec<i32>,
    dy: Vec<i32>,
    /// `|dx| + |dy|` on a `(width + 2)`×`(height + 2)` grid with a ring of zeros around the
    /// image (OpenCV's magnitude rows and columns outside the image).
    mag: Vec<i32>,
}

impl Gradients {
    /// OpenCV's `Sobel(src, CV_16S, 1, 0, 3, 1, 0, BORDER_REPLICATE)` (and `0, 1`) per channel;
    /// the first channel wins a tie, as in OpenCV's `if (mag[k] > mag[max])`.
    fn of(image: &RgbImage) -> Self {
        let (w, h) = (image.width() as usize, image.height() as usize);
        let raw = image.as_raw();
        // The border replicated: a coordinate outside the image reads the nearest inside.
        let at = |x: isize, y: isize, c: usize| -> i32 {
            let x = x.clamp(0, w as isize - 1) as usize;
            let y = y.clamp(0, h as isize - 1) as usize;
            i32::from(raw[(y * w + x) * 3 + c])
        };
        let mut grad = Gradients {
            width: w,
            height: h,
            dx: vec![0; w * h],
            dy: vec![0; w * h],
            mag: vec![0; (w + 2) * (h + 2)],
        };
        for y in 0..h as isize {
            for x in 0..w as isize {
                let mut best = (-1, 0, 0);
                for c in 0..3 {
                    let p = |dx: isize, dy: isize| at(x + dx, y + dy, c);
                    let gx =
                        (p(1, -1) - p(-1, -1)) + 2 * (p(1, 0) - p(-1, 0)) + (p(1, 1) - p(-1, 1));
                    let gy =
                        (p(-1, 1) - p(-1, -1)) + 2 * (p(0, 1) - p(0, -1)) + (p(1, 1) - p(1, -1));
                    let m = gx.abs() + gy.abs();
                    if m > best.0 {
                        best = (m, gx, gy);
                    }
                }
                let (x, y) = (x as usize, y as usize);
                grad.mag[(y + 1) * (w + 2) + x + 1] = best.0;
                grad.dx[y * w + x] = best.1;
                grad.dy[y * w + x] = best.2;
            }
        }
        grad
    }
}

/// Map values, as OpenCV's: a pixel that may still join an edge, one that cannot, an edge.
const CANDIDATE: u8 = 0;
const NOT_EDGE: u8 = 1;
const EDGE: u8 = 2;

/// tan 22.5° in OpenCV's fixed point: `(int)(0.4142135623730950488 · 2^15 + 0.5)`.
const TG22: i64 = 13573;

/// OpenCV's non-maximum suppression and double threshold: a map on the
/// `(width + 2)`×`(height + 2)` grid (its ring [`NOT_EDGE`]) where each pixel whose magnitude
/// is above `low` and a maximum across the edge (the gradient's direction, quantised by the
/// tan 22.5° test) is [`EDGE`] above `high`, else [`CANDIDATE`]; the edges' grid indices.
fn suppress_non_maxima(grad: &Gradients, low: i32, high: i32) -> (Vec<u8>, Vec<usize>) {
    let (w, h) = (grad.width, grad.height);
    let step = w + 2;
    let mag = &grad.mag;
    let mut map = vec![NOT_EDGE; step * (h + 2)];
    let mut strong = Vec::new();
    for y in 0..h {
        for x in 0..w {
            let i = (y + 1) * step + x + 1;
            let m = mag[i];
            if m <= low {
                continue;
            }
            let (xs, ys) = (grad.dx[y * w + x], grad.dy[y * w + x]);
            let ax = i64::from(xs.abs());
            let ay = i64::from(ys.abs()) << 15;
            let tg22x = ax * TG22;
            let peak = if ay < tg22x {
                // Near horizontal gradient: compare left and right.
                m > mag[i - 1] && m >= mag[i + 1]
            } else if ay > tg22x + (ax << 16) {
                // Near vertical: compare above and below.
                m > mag[i - step] && m >= mag[i + step]
            } else {
                // Diagonal: the two neighbours along the gradient's diagonal.
                let (up, down) = if (xs ^ ys) < 0 {
                    (i - step + 1, i + step - 1)
                } else {
                    (i - step - 1, i + step + 1)
                };
                m > mag[up] && m > mag[down]
            };
            if !peak {
                continue;
            }
            if m > high {
                map[i] = EDGE;
                strong.push(i);
            } else {
                map[i] = CANDIDATE;
            }
        }
    }
    (map, strong)
}

/// Hysteresis: every [`CANDIDATE`] 8-connected to an edge becomes an edge (the ring of
/// [`NOT_EDGE`] around the image keeps the walk inside).
fn hysteresis(map: &mut [u8], step: usize, mut stack: Vec<usize>) {
    while let Some(i) = stack.pop() {
        for n in [
            i - step - 1,
            i - step,
            i - step + 1,
            i - 1,
            i + 1,
            i + step - 1,
            i + step,
            i + step + 1,
        ] {
            if map[n] == CANDIDATE {
                map[n] = EDGE;
                stack.push(n);
            }
        }
    }
}

/// How well one edge map matches another.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EdgeScore {
    /// Share of the predicted edge pixels with a reference edge pixel within `tolerance`.
    pub precision: f64,
    /// Share of the reference edge pixels with a predicted edge pixel within `tolerance`.
    pub recall: f64,
    /// `2·P·R / (P + R)`: 1 when both maps are empty, 0 when only one is.
    pub f1: f64,
    /// The matching distance in pixels (Euclidean).
    pub tolerance: f64,
}

/// The matching tolerance of the adherence score: 1 px when the short side is under 256 px,
/// 2 px from 256 (SD's 512×512), as models/edges.py's `tolerance`.
pub fn tolerance_for(width: u32, height: u32) -> f64 {
    if width.min(height) < 256 { 1.0 } else { 2.0 }
}

/// Precision, recall and F1 of `pred` against `reference` (maps of one size), an edge pixel
/// matching when the other map has one within Euclidean distance `tolerance` (models/edges.py's
/// `edge_f1`; the usual tolerance-matched boundary F-score, without BSDS's one-to-one
/// assignment).
pub fn edge_f1(pred: &EdgeMap, reference: &EdgeMap, tolerance: f64) -> eyre::Result<EdgeScore> {
    if (pred.width, pred.height) != (reference.width, reference.height) {
        bail!(Fixable::new(
            format!(
                "cannot score a {}×{} edge map against a {}×{} one: edge F1 needs one size",
                pred.width, pred.height, reference.width, reference.height
            ),
            "compare the image with a control edge map made at its own size",
        ));
    }
    let (n_pred, n_ref) = (pred.count(), reference.count());
    let score = |p: f64, r: f64, f1: f64| EdgeScore {
        precision: p,
        recall: r,
        f1,
        tolerance,
    };
    if n_pred == 0 && n_ref == 0 {
        return Ok(score(1.0, 1.0, 1.0));
    }
    if n_pred == 0 || n_ref == 0 {
        return Ok(score(0.0, 0.0, 0.0));
    }
    let precision = matched(pred, reference, tolerance) as f64 / n_pred as f64;
    let recall = matched(reference, pred, tolerance) as f64 / n_ref as f64;
    let f1 = if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    };
    Ok(score(precision, recall, f1))
}

/// How many edge pixels of `edges` have an edge pixel of `of` within Euclidean distance `tol`:
/// a search of the disk of radius `tol` around each (at most the map's size).
fn matched(edges: &EdgeMap, of: &EdgeMap, tol: f64) -> usize {
    let (w, h) = (edges.width as i64, edges.height as i64);
    let radius = if tol >= 0.0 {
        tol.floor().min(w.max(h) as f64) as i64
    } else {
        -1
    };
    let disk: Vec<(i64, i64)> = (-radius..=radius)
        .flat_map(|dy| (-radius..=radius).map(move |dx| (dx, dy)))
        .filter(|&(dx, dy)| (((dx * dx + dy * dy) as f64).sqrt()) <= tol)
        .collect();
    let mut count = 0;
    for y in 0..h {
        for x in 0..w {
            if !edges.data[(y * w + x) as usize] {
                continue;
            }
            let hit = disk.iter().any(|&(dx, dy)| {
                let (nx, ny) = (x + dx, y + dy);
                (0..w).contains(&nx) && (0..h).contains(&ny) && of.data[(ny * w + nx) as usize]
            });
            count += usize::from(hit);
        }
    }
    count
}

/// Control adherence: the F1 of `image`'s Canny edges ([`CANNY_LOW`], [`CANNY_HIGH`]) against
/// the control edge map (see [`EdgeMap::from_control`]), at [`tolerance_for`] the image's size
/// (models/edges.py's `adherence`, with precision and recall besides the F1).
pub fn adherence(image: &RgbImage, control_edges: &EdgeMap) -> eyre::Result<EdgeScore> {
    let tol = tolerance_for(image.width(), image.height());
    edge_f1(&canny(image, CANNY_LOW, CANNY_HIGH), control_edges, tol)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(rows: &[&str]) -> EdgeMap {
        EdgeMap::from_fn(rows[0].len() as u32, rows.len() as u32, |x, y| {
            rows[y as usize].as_bytes()[x as usize] == b'#'
        })
    }

    #[test]
    fn a_disk_of_radius_one_matches_the_four_neighbours_and_not_the_diagonals() {
        let centre = map(&["...", ".#.", "..."]);
        let beside = map(&["...", "..#", "..."]);
        let diagonal = map(&["..#", "...", "..."]);
        assert_eq!(matched(&centre, &beside, 1.0), 1);
        assert_eq!(matched(&centre, &diagonal, 1.0), 0);
        // √2 ≤ 1.5: the diagonal is within 1.5 px.
        assert_eq!(matched(&centre, &diagonal, 1.5), 1);
        assert_eq!(matched(&centre, &centre, 0.0), 1);
        assert_eq!(matched(&centre, &beside, -1.0), 0);
    }

    #[test]
    fn a_shifted_line_scores_one_within_tolerance_and_zero_without() {
        let a = map(&["#....", "#....", "#...."]);
        let b = map(&[".#...", ".#...", ".#..."]);
        let s = edge_f1(&a, &b, 1.0).unwrap();
        assert_eq!((s.precision, s.recall, s.f1), (1.0, 1.0, 1.0));
        let s = edge_f1(&a, &b, 0.5).unwrap();
        assert_eq!((s.precision, s.recall, s.f1), (0.0, 0.0, 0.0));
    }

    #[test]
    fn empty_maps_score_one_together_and_zero_against_edges() {
        let empty = map(&["...", "..."]);
        let line = map(&["###", "..."]);
        assert_eq!(edge_f1(&empty, &empty, 1.0).unwrap().f1, 1.0);
        assert_eq!(edge_f1(&empty, &line, 1.0).unwrap().f1, 0.0);
        assert_eq!(edge_f1(&line, &empty, 1.0).unwrap().f1, 0.0);
    }

    #[test]
    fn the_tolerance_is_two_pixels_from_a_256_pixel_short_side() {
        assert_eq!(tolerance_for(255, 512), 1.0);
        assert_eq!(tolerance_for(512, 255), 1.0);
        assert_eq!(tolerance_for(256, 256), 2.0);
        assert_eq!(tolerance_for(64, 64), 1.0);
    }

    #[test]
    fn a_flat_image_has_no_edges_and_a_step_has_one_line_each_side() {
        let flat = RgbImage::from_pixel(9, 7, Rgb([80, 90, 100]));
        assert_eq!(canny(&flat, CANNY_LOW, CANNY_HIGH).count(), 0);
        let step = RgbImage::from_fn(9, 7, |x, _| Rgb([if x < 4 { 0 } else { 255 }; 3]));
        let edges = canny(&step, CANNY_LOW, CANNY_HIGH);
        // Sobel peaks on both columns at the step (3, 4); OpenCV keeps the left one (its `>`
        // against the left neighbour, `>=` against the right).
        for y in 0..7 {
            let row: Vec<u32> = (0..9).filter(|&x| edges.get(x, y)).collect();
            assert_eq!(row, [3], "row {y}");
        }
    }

    #[test]
    fn the_control_map_thresholds_luminance_above_127() {
        let img = RgbImage::from_fn(4, 1, |x, _| {
            [
                Rgb([127, 127, 127]),
                Rgb([128, 128, 128]),
                Rgb([255, 0, 0]),
                Rgb([0, 255, 0]),
            ][x as usize]
        });
        let m = EdgeMap::from_control(&img);
        // Red: 76.245 → 76; green: 149.685 → 150.
        assert_eq!(m.as_slice(), [false, true, false, true]);
        assert_eq!(EdgeMap::from_control(&m.to_image()), m);
    }
}
