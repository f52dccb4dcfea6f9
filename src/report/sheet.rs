//! Contact sheets: an exercise's images side by side, each under its title (method, steps, cfg,
//! time, quality), in one PNG — the course's comparison figure. Text is drawn with ab_glyph from
//! DejaVu Sans, bundled in assets/fonts (Bitstream Vera licence, see LICENSE.txt there).

use ab_glyph::{Font, FontRef, PxScale, ScaleFont, point};
use image::{Rgb, RgbImage, imageops};

static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// Pixels around and between tiles.
const PAD: u32 = 12;
/// Text size (px) and line height of the two title lines.
const TEXT_PX: f32 = 15.0;
const LINE: u32 = 22;
/// Images narrower than this are scaled up (nearest neighbour, whole factors) so titles fit.
const MIN_TILE: u32 = 320;
const BACKGROUND: Rgb<u8> = Rgb([255, 255, 255]);
const INK: Rgb<u8> = Rgb([20, 20, 20]);
const FAINT: Rgb<u8> = Rgb([110, 110, 110]);
const EMPTY: Rgb<u8> = Rgb([225, 225, 225]);

/// One image of the sheet with its two title lines.
pub struct Tile<'a> {
    pub title: String,
    pub subtitle: String,
    /// `None`: the run has no image (drawn as a grey box).
    pub image: Option<&'a RgbImage>,
}

/// Scale factor and tile size (pixels) for images `w`×`h`.
fn tile_geometry(w: u32, h: u32) -> (u32, u32, u32) {
    let factor = MIN_TILE.div_ceil(w.max(1)).max(1);
    (factor, w * factor, h * factor)
}

/// The sheet's size for `n` tiles of `w`×`h` images.
pub fn sheet_size(n: u32, w: u32, h: u32) -> (u32, u32) {
    let (_, tw, th) = tile_geometry(w, h);
    (PAD + n * (tw + PAD), PAD + 2 * LINE + th + PAD)
}

/// Lays the tiles out in one row. All images share the size of the first one present (a
/// 64×64 image is shown 5× so its title fits); a tile without an image is a grey box.
pub fn contact_sheet(tiles: &[Tile]) -> RgbImage {
    let (w, h) = tiles
        .iter()
        .find_map(|t| t.image.map(|i| i.dimensions()))
        .unwrap_or((MIN_TILE, MIN_TILE));
    let (factor, tw, th) = tile_geometry(w, h);
    let (sw, sh) = sheet_size(tiles.len() as u32, w, h);
    let mut sheet = RgbImage::from_pixel(sw, sh, BACKGROUND);
    let font = FontRef::try_from_slice(FONT).expect("the bundled font parses");
    for (i, tile) in tiles.iter().enumerate() {
        let x = PAD + i as u32 * (tw + PAD);
        draw_text(&mut sheet, &font, x, PAD, tw, &tile.title, INK);
        draw_text(&mut sheet, &font, x, PAD + LINE, tw, &tile.subtitle, FAINT);
        let y = PAD + 2 * LINE;
        match tile.image {
            Some(img) if img.dimensions() == (w, h) => {
                let scaled = if factor == 1 {
                    img.clone()
                } else {
                    imageops::resize(img, tw, th, imageops::FilterType::Nearest)
                };
                imageops::replace(&mut sheet, &scaled, i64::from(x), i64::from(y));
            }
            _ => {
                let grey = RgbImage::from_pixel(tw, th, EMPTY);
                imageops::replace(&mut sheet, &grey, i64::from(x), i64::from(y));
                draw_text(
                    &mut sheet,
                    &font,
                    x + 8,
                    y + th / 2 - 8,
                    tw - 16,
                    "no image",
                    FAINT,
                );
            }
        }
    }
    sheet
}

/// Draws one line of `text` with its top-left at (`x`, `y`), clipped to `max_w` pixels (an
/// ellipsis marks the cut).
fn draw_text(
    img: &mut RgbImage,
    font: &FontRef,
    x: u32,
    y: u32,
    max_w: u32,
    text: &str,
    ink: Rgb<u8>,
) {
    let scaled = font.as_scaled(PxScale::from(TEXT_PX));
    let ellipsis_w = scaled.h_advance(font.glyph_id('…'));
    let width_of = |s: &str| -> f32 { s.chars().map(|c| scaled.h_advance(font.glyph_id(c))).sum() };
    let mut shown: String = text.to_string();
    if width_of(&shown) > max_w as f32 {
        while !shown.is_empty() && width_of(&shown) + ellipsis_w > max_w as f32 {
            shown.pop();
        }
        shown.push('…');
    }
    let mut caret = x as f32;
    let baseline = y as f32 + scaled.ascent();
    let mut previous = None;
    for c in shown.chars() {
        let id = font.glyph_id(c);
        if let Some(p) = previous {
            caret += scaled.kern(p, id);
        }
        let glyph = id.with_scale_and_position(PxScale::from(TEXT_PX), point(caret, baseline));
        caret += scaled.h_advance(id);
        previous = Some(id);
        let Some(outline) = font.outline_glyph(glyph) else {
            continue; // spaces
        };
        let bounds = outline.px_bounds();
        outline.draw(|gx, gy, coverage| {
            let px = bounds.min.x as i64 + i64::from(gx);
            let py = bounds.min.y as i64 + i64::from(gy);
            if px < 0 || py < 0 || px >= i64::from(img.width()) || py >= i64::from(img.height()) {
                return;
            }
            let p = img.get_pixel_mut(px as u32, py as u32);
            let a = coverage.clamp(0.0, 1.0);
            for k in 0..3 {
                p.0[k] = (f32::from(p.0[k]) * (1.0 - a) + f32::from(ink.0[k]) * a).round() as u8;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_images_are_scaled_up_by_whole_factors_and_sized_as_documented() {
        let img = RgbImage::from_pixel(64, 64, Rgb([200, 0, 0]));
        let tiles: Vec<Tile> = (0..3)
            .map(|i| Tile {
                title: format!("run {i}"),
                subtitle: "20 steps · cfg 7.5 · 77 ms".into(),
                image: (i != 2).then_some(&img),
            })
            .collect();
        let sheet = contact_sheet(&tiles);
        assert_eq!(sheet.dimensions(), sheet_size(3, 64, 64));
        assert_eq!(
            sheet.dimensions(),
            (12 + 3 * (320 + 12), 12 + 44 + 320 + 12)
        );
        // The first image fills its 320×320 box (scaled 5×); the third box is grey.
        let top = 12 + 44;
        assert_eq!(*sheet.get_pixel(12 + 160, top + 160), Rgb([200, 0, 0]));
        assert_eq!(*sheet.get_pixel(12 + 2 * 332 + 5, top + 5), EMPTY);
    }

    #[test]
    fn titles_put_ink_on_the_sheet_within_their_tile() {
        let img = RgbImage::from_pixel(512, 512, Rgb([255, 255, 255]));
        let tile = |t: &str| Tile {
            title: t.into(),
            subtitle: String::new(),
            image: Some(&img),
        };
        let blank = contact_sheet(&[tile("")]);
        let titled = contact_sheet(&[tile("DPM-Solver++ 20")]);
        let inked = |s: &RgbImage| s.pixels().filter(|p| p.0[0] < 128).count();
        assert_eq!(inked(&blank), 0);
        assert!(inked(&titled) > 50, "the title was drawn");
        // A very long title is cut to its tile: nothing spills into the right padding.
        let long = contact_sheet(&[tile(&"wide ".repeat(200))]);
        let right_pad = (12 + 512)..long.width();
        for x in right_pad {
            for y in 0..long.height() {
                assert_eq!(*long.get_pixel(x, y), BACKGROUND, "({x},{y})");
            }
        }
    }
}
