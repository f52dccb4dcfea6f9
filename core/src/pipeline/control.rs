//! A run under a ControlNet: what the request says ([`Control`]), the checks before any step,
//! the denoiser that runs the ControlNet before the UNet every step, and what the report says
//! about it ([`ControlReport`]: the control adherence).
//!
//! As diffusers' `StableDiffusionControlNetPipeline` (guess mode off, control over every step):
//! under guidance the ControlNet runs at batch 2 on `[uncond, cond]` with the control image
//! twice, and its residuals, already × the conditioning scale, go into the UNet's down and mid
//! blocks.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ndarray::{Array4, ArrayView3, ArrayView4};
use ort::session::RunOptions;
use ort::value::DynValue;
use serde::{Deserialize, Serialize};

use super::Denoiser;
pub use super::control_image::ControlPreprocess;
use crate::error::Fixable;
use crate::models::{ControlNet, Unet};

/// The largest conditioning scale taken: diffusers' UIs offer 0 to 2; above 10 the residuals
/// swamp the UNet.
pub const MAX_CONTROL_SCALE: f32 = 10.0;

/// A request's ControlNet: which one, on what image, how strongly.
#[derive(Debug, Clone)]
pub struct Control {
    /// The ControlNet's name: its folder is `controlnet_<name>/` in the model folder; `None`:
    /// the folder's only ControlNet ([`resolve_name`]).
    pub name: Option<String>,
    /// The control image file (PNG or JPEG), read when the run starts, before its clock.
    pub image: PathBuf,
    /// What is done to it before it conditions the ControlNet.
    pub preprocess: ControlPreprocess,
    /// diffusers' `controlnet_conditioning_scale`, 0 to [`MAX_CONTROL_SCALE`].
    pub scale: f32,
}

/// `scale` as a conditioning scale, or why not.
pub fn check_scale(scale: f32) -> Result<f32, Fixable> {
    if !scale.is_finite() || !(0.0..=MAX_CONTROL_SCALE).contains(&scale) {
        return Err(Fixable::new(
            format!("the control scale {scale} is not a number from 0 to {MAX_CONTROL_SCALE}"),
            "pass --control-scale between 0 (no control) and 2 (strong); 1.0 is diffusers' default",
        ));
    }
    Ok(scale)
}

/// The UNet `unet` (`label` as messages name it) can run under a ControlNet: its graph takes
/// residuals.
pub(crate) fn check_unet_takes_residuals(unet: &Unet, label: &str) -> Result<(), Fixable> {
    if unet.residual_count() == 0 {
        return Err(Fixable::new(
            format!(
                "the UNet {label} takes no ControlNet residuals: it was exported without --controlnet"
            ),
            "re-export the model with models/export.py --controlnet NAME=SOURCE (every UNet then takes the residuals), or run without --controlnet",
        ));
    }
    Ok(())
}

/// The ControlNet a request names: `name`, or the model folder's only one when it names none;
/// an error saying what the folder has otherwise.
pub fn resolve_name(root: &std::path::Path, name: Option<&str>) -> Result<String, Fixable> {
    if let Some(n) = name {
        return Ok(n.to_string());
    }
    let have = crate::models::controlnet::folder_controlnets(root);
    match have.as_slice() {
        [only] => Ok(only.clone()),
        [] => Err(crate::models::unknown_controlnet(root, "NAME")),
        _ => Err(Fixable::new(
            format!(
                "the model folder {} has {} ControlNets ({}) and the run names none",
                root.display(),
                have.len(),
                have.join(", ")
            ),
            "name one with --controlnet NAME (or `controlnet = \"NAME\"` in the run's control table)",
        )),
    }
}

/// What a report says about the control of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControlReport {
    /// The ControlNet's name.
    pub name: String,
    /// The control image's source.
    pub image: String,
    /// Its preprocessing (`none`, `canny`).
    pub preprocess: ControlPreprocess,
    /// The conditioning scale.
    pub scale: f32,
    /// Control adherence: the edge F1 of the image's Canny edges against the control edge map
    /// ([`crate::quality::edges::adherence`]).
    pub adherence: f64,
    /// The ControlNet's time over every step (milliseconds in JSON).
    #[serde(
        rename = "controlnet_ms",
        serialize_with = "super::ser_ms",
        deserialize_with = "super::de_ms"
    )]
    pub time: Duration,
}

/// The run's UNet fed by a ControlNet every step.
pub(crate) struct Controlled<'a> {
    pub(crate) unet: &'a mut Unet,
    pub(crate) controlnet: &'a mut ControlNet,
    /// The control image as the graph's input, at the run's batch.
    pub(crate) cond: DynValue,
    pub(crate) scale: f32,
    pub(crate) options: Option<&'a RunOptions>,
    /// The ControlNet's time in the last call.
    pub(crate) aux: Duration,
}

impl Denoiser for Controlled<'_> {
    fn predict(
        &mut self,
        sample: ArrayView4<f32>,
        t: f32,
        context: ArrayView3<f32>,
    ) -> eyre::Result<Array4<f32>> {
        let start = Instant::now();
        let residuals =
            self.controlnet
                .residuals(sample, t, context, &self.cond, self.scale, self.options)?;
        self.aux = start.elapsed();
        self.unet
            .predict_controlled(sample, t, context, Some(&residuals), self.options)
    }

    fn take_aux_time(&mut self) -> Duration {
        std::mem::take(&mut self.aux)
    }
}

/// The control image's condition for a run at `batch`, and the image prepared at the run's
/// size (for the adherence afterwards).
pub(crate) fn condition(
    controlnet: &ControlNet,
    (control, image): (&Control, &image::RgbImage),
    (width, height): (usize, usize),
    batch: usize,
) -> eyre::Result<(DynValue, super::control_image::ControlInput)> {
    let prepared =
        super::control_image::prepare(image, control.preprocess, width as u32, height as u32);
    let cond = controlnet.cond_input(prepared.tensor.view(), batch)?;
    Ok((cond, prepared))
}

/// What the report says about a controlled run that made `image` (NHWC in [0, 1]) under the
/// ControlNet `name`: the control, its adherence (the edge F1 of the image's Canny edges
/// against the control edge map, [`crate::quality::edges::adherence`]) and its time.
pub(crate) fn report(
    control: &Control,
    name: String,
    prepared: &super::control_image::ControlInput,
    image: &Array4<f32>,
    timings: &super::Timings,
) -> eyre::Result<ControlReport> {
    let adherence = crate::quality::edges::adherence(&super::to_rgb8(image), &prepared.edges)?;
    Ok(ControlReport {
        name,
        image: control.image.display().to_string(),
        preprocess: control.preprocess,
        scale: control.scale,
        adherence: adherence.f1,
        time: timings.controlnet_total(),
    })
}
