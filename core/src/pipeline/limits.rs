//! What a run may ask for: guidance scale, image size, and (through the scheduler) steps;
//! checked before any session loads, each refusal saying the rule and the fix.

use std::path::Path;

use eyre::bail;

use super::Request;
use crate::error::Fixable;
use crate::models::Model;
use crate::runtime::Provider;
use crate::schedulers::{self, Scheduler, SchedulerConfig};

/// The largest guidance scale accepted. Guidance multiplies the gap between the prompt's and
/// the empty prompt's noise predictions; SD v1.5 is used at 1–15 (7.5 by default), past ~30
/// the image burns out to saturated colour, and past 100 nothing of the prompt is left.
pub(crate) const MAX_GUIDANCE: f32 = 100.0;

/// The largest image side in pixels (on every device). SD v1.5 is trained at 512; at 4096 the
/// VAE decoder's last block alone holds 128 × 4096 × 4096 float32 values (8 GiB) per map, and
/// the UNet's first self-attention relates 262 144 latent cells to each other.
pub(crate) const MAX_SIDE: usize = 4096;

/// Why `guidance` is refused, if it is: not finite, negative, or above 100.
/// The error comes with its fix.
pub fn guidance_error(guidance: f32) -> Option<Fixable> {
    const FIX: &str = "use e.g. 7.5 (DDPM/DPM-Solver++) or 1.5 (LCM-LoRA)";
    if !guidance.is_finite() || guidance < 0.0 {
        return Some(Fixable::new(
            format!("guidance scale {guidance} is not a finite number ≥ 0"),
            FIX,
        ));
    }
    if guidance > MAX_GUIDANCE {
        // 1e30 reads better than its 31 digits.
        let g = if guidance < 1e6 {
            guidance.to_string()
        } else {
            format!("{guidance:e}")
        };
        return Some(Fixable::new(
            format!(
                "guidance scale {g} is above {MAX_GUIDANCE}: guidance multiplies the gap \
                 between the prompt's and the empty prompt's predictions, SD v1.5 is used at 1–15, \
                 and past {MAX_GUIDANCE} nothing of the prompt is left in the image"
            ),
            FIX,
        ));
    }
    None
}

/// A request that passed [`check_request`]: its size and its scheduler, ready to run.
pub struct Checked {
    /// Image width in pixels: the request's, or the model's native size.
    pub width: usize,
    /// Image height in pixels.
    pub height: usize,
    /// The request's scheduler, built with the model's scheduler config for its steps.
    pub scheduler: Box<dyn Scheduler>,
    /// Under control: the ControlNet's name (resolved: the folder's only one where the request
    /// names none) and the control image, read once, here.
    pub control: Option<(String, image::RgbImage)>,
    /// What the run should say about itself (a one-step UNet run past its design: guidance,
    /// steps, scheduler).
    pub notes: Vec<String>,
}

/// Everything about `req` that can be refused before a session loads: size (VAE grid, at most
/// 4096 pixels a side, memory on the CPU), guidance, UNet variant, and steps (by building the
/// scheduler as diffusers would, with the model's scheduler config), and the control: its
/// scale, its ControlNet in the folder, its image readable.
pub fn check_request(model: &Model, provider: Provider, req: &Request) -> eyre::Result<Checked> {
    let (width, height) = super::resolve_size(model, req.width, req.height)?;
    if let Some(e) = guidance_error(req.guidance) {
        bail!(e);
    }
    let batch = if req.guidance > 1.0 { 2 } else { 1 };
    check_memory(model, provider, width, height, batch)?;
    model.variant(&req.unet)?;
    let control = match &req.control {
        Some(c) => {
            super::control::check_scale(c.scale)?;
            let name = super::control::resolve_name(&model.root, c.name.as_deref())?;
            if !model.controlnet_names().contains(&name) {
                bail!(crate::models::unknown_controlnet(&model.root, &name));
            }
            Some((name, super::control_image::load_control_image(&c.image)?))
        }
        None => None,
    };
    let one_step = model.one_step(&req.unet);
    let (config_file, config) = match &one_step {
        Some(o) => (model.root.join("manifest.json"), &o.scheduler_config),
        None => (
            model.root.join("scheduler").join("scheduler_config.json"),
            &model.scheduler_config,
        ),
    };
    let sched_cfg: SchedulerConfig =
        crate::models::scheduler_status::check_values(&config_file, config)?;
    let scheduler =
        schedulers::build(req.scheduler, &sched_cfg, req.steps, &req.scheduler_options)?;
    let notes = one_step
        .map(|o| one_step_notes(&req.unet, &o, req))
        .unwrap_or_default();
    Ok(Checked {
        width,
        height,
        scheduler,
        control,
        notes,
    })
}

/// What a run of the one-step UNet `unet` says when it asks for more than the distillation gave:
/// guidance above 1, more steps than it was distilled for, another scheduler than its own.
///
/// None of these is refused. Guidance is run as diffusers' StableDiffusionPipeline runs it for
/// SD-Turbo when asked (classifier-free guidance with the negative prompt: two UNet calls a step,
/// so parity holds and the cost is measured); the model card's guidance is 0 because the
/// distillation already baked the teacher's guidance in.
pub(crate) fn one_step_notes(unet: &str, o: &crate::models::OneStep, req: &Request) -> Vec<String> {
    let mut notes = Vec::new();
    if req.guidance > 1.0 {
        notes.push(format!(
            "unet {unet} is a one-step model distilled for guidance {} ({}): guidance {} runs classifier-free guidance anyway, as diffusers' StableDiffusionPipeline does when asked (two UNet calls a step, twice the UNet time, colours pushed past what it was trained to draw); use --cfg 0",
            o.guidance, o.source, req.guidance
        ));
    }
    if req.steps > o.max_steps {
        notes.push(format!(
            "unet {unet} was distilled for 1 to {} steps ({}): {} steps cost {} UNet calls and are not what it was trained for (past {} its images stop improving or get worse); use --steps 1 to {}",
            o.max_steps, o.source, req.steps, req.steps, o.max_steps, o.max_steps
        ));
    }
    if let Some(own) = o.scheduler
        && own != req.scheduler
    {
        notes.push(format!(
            "unet {unet} was distilled for the {} scheduler ({}): {} steps from another scheduler's schedule are not what it learned; use --scheduler {}",
            own.as_str(),
            o.source,
            req.scheduler.as_str(),
            own.as_str()
        ));
    }
    notes
}

/// The parts of a model's configs the memory estimate needs (SD v1.5's values where a
/// config.json is missing).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct MemoryShape {
    /// `vae_decoder/config.json` `block_out_channels[0]`: channels of the decoder's last,
    /// full-resolution block (128 for SD v1.5).
    pub vae_channels: usize,
    /// Heads of the UNet's first self-attention (SD v1.5: 8; diffusers reads
    /// `attention_head_dim` as the head count when `num_attention_heads` is null); 0 when the
    /// first down block has no attention.
    pub attention_heads: usize,
    pub vae_scale_factor: usize,
}

impl MemoryShape {
    pub(crate) fn read(root: &Path, vae_scale_factor: usize) -> Self {
        let json = |folder: &str| -> serde_json::Value {
            std::fs::read_to_string(root.join(folder).join("config.json"))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default()
        };
        let first = |v: &serde_json::Value| -> Option<usize> {
            v.as_u64()
                .or_else(|| v.get(0)?.as_u64())
                .map(|n| n as usize)
        };
        let unet = json("unet");
        let vae = json("vae_decoder");
        let vae_channels = first(&vae["block_out_channels"]).unwrap_or(128);
        let heads = first(&unet["num_attention_heads"])
            .or_else(|| first(&unet["attention_head_dim"]))
            .unwrap_or(8);
        let attends = unet["down_block_types"]
            .get(0)
            .and_then(|b| b.as_str())
            .is_none_or(|b| b.starts_with("CrossAttn"));
        Self {
            vae_channels,
            attention_heads: if attends { heads } else { 0 },
            vae_scale_factor,
        }
    }

    /// A lower bound, in bytes, on the memory one run at `width`×`height` (UNet batch
    /// `batch`) needs at its peak on the CPU: the larger of [`Self::attention_bytes`] and
    /// [`Self::vae_bytes`].
    pub(crate) fn peak_bytes(&self, width: usize, height: usize, batch: usize) -> u128 {
        self.attention_bytes(width, height, batch)
            .max(self.vae_bytes(width, height))
    }

    /// The UNet's first self-attention scores: `batch × heads × n²` float32, n = latent cells
    /// (ONNX Runtime's CPU attention holds them all at once).
    pub(crate) fn attention_bytes(&self, width: usize, height: usize, batch: usize) -> u128 {
        let cells = self.cells(width, height);
        batch as u128 * self.attention_heads as u128 * cells * cells * 4
    }

    /// The VAE decoder's last block: three `channels × width × height` float32 maps (a resnet's
    /// input, its normalised input and its convolution's output).
    pub(crate) fn vae_bytes(&self, width: usize, height: usize) -> u128 {
        3 * self.vae_channels as u128 * width as u128 * height as u128 * 4
    }

    fn cells(&self, width: usize, height: usize) -> u128 {
        let f = self.vae_scale_factor.max(1) as u128;
        (width as u128 / f) * (height as u128 / f)
    }
}

/// The host's physical memory in bytes (`MemTotal`), when it can be read.
fn host_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kb * 1024)
}

fn gib(bytes: u128) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// Refuses sizes above [`MAX_SIDE`], and on the CPU sizes whose [`MemoryShape::peak_bytes`]
/// lower bound exceeds the machine's whole memory (such a run could only fail, after minutes).
/// On a GPU only the side limit applies: its attention kernels need not hold every score.
pub(crate) fn check_memory(
    model: &Model,
    provider: Provider,
    width: usize,
    height: usize,
    batch: usize,
) -> eyre::Result<()> {
    let native = model.geometry.default_size();
    for (name, v) in [("width", width), ("height", height)] {
        if v > MAX_SIDE {
            bail!(Fixable::new(
                format!(
                    "{name} {v} is above {MAX_SIDE} pixels, the most speedscape runs: SD v1.5 is \
                     trained at 512, and at {MAX_SIDE} one VAE decoder feature map alone is 8 GiB"
                ),
                format!("use at most {MAX_SIDE} (this model's native size is {native})"),
            ));
        }
    }
    if provider.is_gpu() {
        return Ok(());
    }
    let Some(total) = host_memory() else {
        return Ok(());
    };
    let shape = MemoryShape::read(&model.root, model.geometry.vae_scale_factor);
    let need = shape.peak_bytes(width, height, batch);
    if need > u128::from(total) {
        let f = shape.vae_scale_factor.max(1);
        let why = if shape.attention_bytes(width, height, batch) >= shape.vae_bytes(width, height) {
            format!(
                "the UNet's first self-attention holds batch × heads × cells² float32 scores \
                 ({batch} × {} × ({}×{})², cells = latent positions), which grows with the square \
                 of the pixel count",
                shape.attention_heads,
                width / f,
                height / f
            )
        } else {
            format!(
                "the VAE decoder's last block holds three {} × {width} × {height} float32 maps",
                shape.vae_channels
            )
        };
        bail!(Fixable::new(
            format!(
                "{width}×{height} needs at least {} on the CPU, more than this machine's {} of \
                 memory: {why}",
                gib(need),
                gib(u128::from(total)),
            ),
            format!(
                "use a smaller size, e.g. {native}×{native} (this model's native size), or run on a GPU"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guidance_is_refused_when_not_finite_negative_or_above_the_bound() {
        for g in [0.0, 1.0, 7.5, MAX_GUIDANCE] {
            assert!(guidance_error(g).is_none(), "{g}");
        }
        for (g, why) in [
            (f32::NAN, "NaN is not a finite number ≥ 0"),
            (f32::INFINITY, "inf is not a finite number ≥ 0"),
            (-1.0, "-1 is not a finite number ≥ 0"),
            (100.5, "100.5 is above 100"),
            (1e30, "1e30 is above 100"),
        ] {
            let e = guidance_error(g).unwrap().to_string();
            assert!(e.contains(why), "{e}");
            assert!(e.contains("Fix: use e.g. 7.5"), "{e}");
        }
    }

    const SD15: MemoryShape = MemoryShape {
        vae_channels: 128,
        attention_heads: 8,
        vae_scale_factor: 8,
    };

    #[test]
    fn sd15_at_512_needs_a_gib_of_attention_scores_and_quadratically_more_above() {
        // 2 × 8 × 4096² × 4 bytes = 1 GiB: the attention scores dominate.
        assert_eq!(SD15.peak_bytes(512, 512, 2), 1 << 30);
        // Twice the side: 4 × the cells, 16 × the scores.
        assert_eq!(SD15.peak_bytes(1024, 1024, 2), 16 << 30);
        assert_eq!(SD15.peak_bytes(512, 512, 1), 1 << 29);
        // No attention at full resolution: the VAE's maps bound it.
        let no_attention = MemoryShape {
            attention_heads: 0,
            ..SD15
        };
        assert_eq!(
            no_attention.peak_bytes(512, 512, 2),
            3 * 128 * 512 * 512 * 4
        );
    }

    #[test]
    fn the_tiny_model_config_reads_as_eight_heads_and_eight_vae_channels() {
        let root = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .join("models/tiny");
        assert_eq!(
            MemoryShape::read(&root, 8),
            MemoryShape {
                vae_channels: 8,
                attention_heads: 8,
                vae_scale_factor: 8
            }
        );
        // A folder without configs: SD v1.5's values.
        assert_eq!(MemoryShape::read(Path::new("/nonexistent"), 8), SD15);
    }
}
