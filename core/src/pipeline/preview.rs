//! Cheap previews: latents → RGB without the VAE, every step.
//!
//! SD v1.5's four latent channels map almost linearly to RGB; the coefficients below are the
//! widely used least-squares fit of VAE-decoded colour on latents (as in ComfyUI's and
//! A1111's "approx NN/cheap" previews). For the random-weight tiny model they are only a
//! visualisation of the latents, not of its VAE.

use image::RgbImage;
use ndarray::ArrayView4;

/// Per latent channel, its contribution to (R, G, B).
const LATENT_RGB: [[f32; 3]; 4] = [
    [0.298, 0.207, 0.208],
    [0.187, 0.286, 0.173],
    [-0.158, 0.189, 0.264],
    [-0.184, -0.271, -0.473],
];

/// Latents `[1, 4, h, w]` (unscaled, as the scheduler holds them) → an `h × w` RGB image.
pub fn latents_to_rgb(latents: ArrayView4<f32>) -> RgbImage {
    let (_, c, h, w) = latents.dim();
    let mut img = RgbImage::new(w as u32, h as u32);
    for y in 0..h {
        for x in 0..w {
            let mut rgb = [0.0f32; 3];
            for (ch, coeffs) in LATENT_RGB.iter().enumerate().take(c) {
                let v = latents[[0, ch, y, x]];
                for k in 0..3 {
                    rgb[k] += v * coeffs[k];
                }
            }
            let px = rgb.map(|v| (((v + 1.0) / 2.0).clamp(0.0, 1.0) * 255.0).round() as u8);
            img.put_pixel(x as u32, y as u32, image::Rgb(px));
        }
    }
    img
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
}
