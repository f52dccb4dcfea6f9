//! PLACEHOLDER until the control-image module lands (nearest resize, no canny): replaced by
//! the real one on merge.

use image::RgbImage;
use ndarray::Array4;

/// How the control image is turned into the ControlNet's condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ControlPreprocess {
    /// As given.
    #[default]
    None,
    /// Canny edges.
    Canny,
}

/// The condition.
pub struct ControlInput {
    /// `[1, 3, H, W]` in [0, 1].
    pub tensor: Array4<f32>,
}

/// Placeholder.
pub fn prepare(
    image: &RgbImage,
    _preprocess: ControlPreprocess,
    width: usize,
    height: usize,
) -> eyre::Result<ControlInput> {
    let img = image::imageops::resize(
        image,
        width as u32,
        height as u32,
        image::imageops::FilterType::Nearest,
    );
    let tensor = Array4::from_shape_fn((1, 3, height, width), |(_, c, y, x)| {
        img.get_pixel(x as u32, y as u32)[c] as f32 / 255.0
    });
    Ok(ControlInput { tensor })
}

/// Placeholder.
pub fn load_control_image(path: &std::path::Path) -> eyre::Result<RgbImage> {
    Ok(image::open(path)?.to_rgb8())
}
