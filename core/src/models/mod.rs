//! The model folder (Hugging Face Optimum ONNX layout), UNet variants and the tokenizer.
//!
//! ```text
//! text_encoder/model.onnx      input_ids [B,77] int32|int64 → last_hidden_state [B,77,D] (+ pooler_output [B,D])
//! unet/model.onnx (+ data)     sample [B,4,h,w], timestep 0-d|1-d, encoder_hidden_states [B,77,D] → out_sample
//! unet_<variant>/model.onnx    the same with LoRA adapters fused in
//! controlnet_<name>/model.onnx a ControlNet (see `controlnet`); the UNets then take its residuals
//! text_encoder_<variant>/      a text encoder with LoRA adapters fused in (only when they train it)
//! manifest.json                what models/export.py wrote (optional; see `manifest`)
//! clip_image_encoder/          optional: the CLIP scorer (see `clip`)
//! vae_decoder/model.onnx       latent_sample [B,4,h,w] → sample [B,3,8h,8w]
//! vae_decoder_fp16/            fp16 exports: the same in float16 (see `vae_precision`)
//! preview_decoder/model.onnx   optional: latents [B,4,h,w] → image [B,3,8h,8w] in [0,1] (see `preview_decoder`)
//! judge/model.onnx             optional, micro only: image → colour, shape, background (see `judge`)
//! tokenizer/                   tokenizer.json, else vocab.json + merges.txt
//! scheduler/scheduler_config.json
//! ```
//! Names, ranks and dtypes are read from each graph and converted at the boundary.

pub mod clip;
pub mod controlnet;
pub mod judge;
pub mod manifest;
mod micro;
mod ordered;
pub mod preview_decoder;
pub mod prompt;
pub mod scheduler_status;
pub mod tokenizer;
mod unet;
mod vae_precision;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use eyre::{WrapErr, bail, eyre};
use ndarray::{Array2, Array3, Array4, ArrayView4, Ix2, Ix3, Ix4};
use ort::session::{RunOptions, Session};
use ort::value::TensorElementType;
use serde::{Deserialize, Serialize};

use crate::error::Fixable;
use crate::lora::{self, AdapterWeight, Component};
use crate::runtime::Runtime;
use crate::runtime::failure::{self, MemoryContext, MemoryPhase};
use crate::runtime::tensor::{self, IoSpec};
pub use clip::{CLIP_FOLDER, ClipScore, ClipScorer};
pub use controlnet::{ControlNet, Residuals};
pub use judge::{JUDGE_FOLDER, Judge, JudgeReading, Labels};
pub use manifest::{
    LatentRgbRecord, Manifest, ModelKind, ModelPrompts, ONE_STEP_LABEL, OneStepRecord,
};
pub use micro::{Grammar, MicroRecord};
pub use preview_decoder::{PREVIEW_DECODER_FOLDER, PreviewDecoder};
pub use scheduler_status::{SchedulerConfigSource, SchedulerConfigStatus, SchedulerReport};
pub use tokenizer::{ClipTokenizer, Tokens};
pub use unet::Unet;
pub use vae_precision::{VAE_FP16_FOLDER, VaePrecision};

/// SD v1.5's scheduler config (`scheduler/scheduler_config.json` as shipped, from PNDMScheduler);
/// used, with a warning, when a model folder has none.
pub const SD15_SCHEDULER_CONFIG: &str = r#"{"_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000, "set_alpha_to_one": false, "skip_prk_steps": true, "steps_offset": 1, "trained_betas": null, "clip_sample": false}"#;

/// A UNet variant: a folder beside `unet/` holding a UNet with LoRA adapters fused in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// The name used on the command line (`--unet lcm`).
    pub name: String,
    /// Folder inside the model folder (`unet_lcm`).
    pub folder: String,
    /// What the user reads (`LCM-LoRA`).
    pub label: String,
    /// Text encoder folder when the variant's LoRAs also train it (`text_encoder_style`);
    /// `None`: the base `text_encoder`. Filled in from manifest.json when the folder has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_encoder: Option<String>,
}

/// The base text encoder's folder.
pub const BASE_TEXT_ENCODER: &str = "text_encoder";

impl Variant {
    pub(crate) fn new(name: &str, folder: &str, label: &str) -> Self {
        Self {
            name: name.into(),
            folder: folder.into(),
            label: label.into(),
            text_encoder: None,
        }
    }

    /// The folder of the text encoder this variant encodes prompts with.
    pub fn text_encoder_folder(&self) -> &str {
        self.text_encoder.as_deref().unwrap_or(BASE_TEXT_ENCODER)
    }
}

/// Configured variants completed from a manifest: each takes the text encoder of the manifest
/// variant with the same UNet folder (unless config names one), and manifest variants whose UNet
/// no configured variant uses are appended, labelled by their LoRAs (`lcm 1 + style 0.8`).
///
/// A folder of another family than SD v1.5 (`sd2`, `sd-turbo`) keeps only the variants its
/// export made: SD v1.5's LoRA variants (LCM-LoRA, the style LoRA) do not fit its UNet, so their
/// absence is not something to fix; its base is labelled by the family (`SD-Turbo`).
pub fn merge_manifest_variants(mut variants: Vec<Variant>, manifest: &Manifest) -> Vec<Variant> {
    let family = family_label(manifest.family.as_deref());
    if family.is_some() {
        variants.retain(|v| v.folder == "unet" || manifest.variant_by_unet(&v.folder).is_some());
    }
    for v in &mut variants {
        if v.text_encoder.is_none()
            && let Some((_, mv)) = manifest.variant_by_unet(&v.folder)
        {
            v.text_encoder = mv.text_encoder.clone();
        }
    }
    for (name, mv) in &manifest.variants {
        if mv.unet.is_empty() || variants.iter().any(|v| v.folder == mv.unet) {
            continue;
        }
        let name = if variants.iter().any(|v| v.name == *name) {
            mv.unet.clone()
        } else {
            name.clone()
        };
        variants.push(Variant {
            name,
            folder: mv.unet.clone(),
            label: mv.label(),
            text_encoder: mv.text_encoder.clone(),
        });
    }
    if let Some(label) = family {
        let generic = ["SD v1.5", "no LoRA"];
        for v in variants
            .iter_mut()
            .filter(|v| v.folder == "unet" && generic.contains(&v.label.as_str()))
        {
            v.label = label.into();
        }
    }
    variants
}

/// The fix for a missing variant folder (without "Fix: ").
pub fn export_fix(root: &Path) -> String {
    format!(
        "export the model with its LoRA variants: .venv-ref/bin/python models/export.py --out {} --force (defaults: --variant lcm=lcm:1.0 --variant style=style:1.0 --variant lcm_style=lcm:1.0,style:1.0; --force replaces the folder once the new export passed its checks); see README \"Real SD v1.5 on a GPU box\"",
        root.display()
    )
}

fn missing_variant_error(root: &Path, v: &Variant, what: &str, folder: &str) -> eyre::Report {
    eyre!(Fixable::new(
        format!(
            "variant {:?} ({}) needs its {what} in {}, which this model folder does not have (no {})",
            v.name,
            v.label,
            folder,
            root.join(folder).join("model.onnx").display()
        ),
        export_fix(root),
    ))
}

/// A UNet that runs as a one-step model (SD-Turbo's sampling: a few Euler steps at `trailing`
/// spacing, no guidance): the micro model's `unet_turbo` by its manifest record, or the base
/// UNet of an SD-Turbo folder by the family its manifest records.
#[derive(Debug, Clone, PartialEq)]
pub struct OneStep {
    /// The most steps it was distilled for (SD-Turbo: 1 to 4).
    pub max_steps: usize,
    /// The scheduler config its runs use in place of the folder's.
    pub scheduler_config: serde_json::Value,
    /// The scheduler its config names (`EulerDiscreteScheduler` → euler), where speedscape has it.
    pub scheduler: Option<crate::schedulers::SchedulerKind>,
    /// The guidance scale it was distilled for (0: none).
    pub guidance: f32,
    /// Where this was read, for messages (`manifest.json variants.turbo.one_step`).
    pub source: String,
}

/// SD-Turbo's step range: its model card runs it at 1 to 4 steps.
pub const SD_TURBO_MAX_STEPS: usize = 4;

impl OneStep {
    fn new(
        max_steps: usize,
        scheduler_config: serde_json::Value,
        guidance: f32,
        source: String,
    ) -> Self {
        let class = scheduler_config.get("_class_name").and_then(|v| v.as_str());
        let scheduler = crate::schedulers::SchedulerKind::ALL
            .into_iter()
            .find(|k| Some(k.diffusers_class()) == class);
        Self {
            max_steps,
            scheduler_config,
            scheduler,
            guidance,
            source,
        }
    }
}

/// The one-step variant of the folder `root`, read from its manifest alone (no session): the
/// name of a manifest variant with a `one_step` record whose UNet is there (the micro model's
/// `turbo`), or `base` for an SD-Turbo folder. `None` for a folder without one.
pub fn folder_one_step(root: &Path) -> Option<String> {
    let manifest = Manifest::read(root).ok()??;
    if manifest.family.as_deref() == Some("sd-turbo") {
        return Some("base".into());
    }
    manifest
        .variants
        .iter()
        .find(|(_, v)| v.one_step.is_some() && root.join(&v.unet).join("model.onnx").is_file())
        .map(|(name, _)| name.clone())
}

/// What the base UNet is called for a model family (`None`: keep the configured label).
fn family_label(family: Option<&str>) -> Option<&'static str> {
    match family? {
        "sd-turbo" => Some("SD-Turbo"),
        "sd2" => Some("SD 2.x"),
        _ => None,
    }
}

/// The variants speedscape knows by default; config.toml may replace or extend them.
pub fn default_variants() -> Vec<Variant> {
    vec![
        Variant::new("base", "unet", "SD v1.5"),
        Variant::new("lcm", "unet_lcm", "LCM-LoRA"),
        Variant::new("style", "unet_style", "pixel-art style LoRA"),
        Variant::new("lcm_style", "unet_lcm_style", "LCM-LoRA + style LoRA"),
    ]
}

/// What the folder says about sizes, from the components' `config.json` where present.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ModelGeometry {
    /// UNet `sample_size`: latent height/width the model was trained at.
    pub sample_size: usize,
    /// Pixels per latent cell: 2^(len(vae block_out_channels) − 1).
    pub vae_scale_factor: usize,
    /// VAE `scaling_factor` (0.18215 for SD v1.5): latents are decoded as `latents / scaling_factor`.
    pub scaling_factor: f32,
    /// Latent channels (4).
    pub latent_channels: usize,
    /// Times the UNet halves the latents on the way down: len(block_out_channels) − 1 (3 for
    /// SD v1.5). An exported graph upsamples by exactly 2 on the way back, so each level must
    /// halve evenly for its skip connection to fit.
    pub unet_downsamples: usize,
}

impl ModelGeometry {
    /// The model's native image size in pixels (512 for SD v1.5).
    pub fn default_size(&self) -> usize {
        self.sample_size * self.vae_scale_factor
    }

    /// Image sides must be multiples of this: the VAE's scale factor times 2 per UNet
    /// downsampling (64 for SD v1.5, 16 for the embedded models).
    pub(crate) fn size_grid(&self) -> usize {
        self.vae_scale_factor << self.unet_downsamples
    }

    /// Reads `unet/config.json` and `vae_decoder/config.json` under `root`; SD v1.5's values
    /// stand in for a missing file or key.
    pub fn read(root: &Path) -> eyre::Result<Self> {
        let unet = read_json_opt(&root.join("unet").join("config.json"))?;
        let vae = read_json_opt(&root.join("vae_decoder").join("config.json"))?;
        use serde_json::Value;
        // A key of a config that may be missing; the defaults are SD v1.5's.
        let field = |c: &Option<Value>, key: &str| c.as_ref().and_then(|c| c.get(key)).cloned();
        let count = |c: &Option<Value>, key: &str| {
            field(c, key)
                .and_then(|v| v.as_array().map(Vec::len))
                .unwrap_or(4)
        };
        let sample_size = field(&unet, "sample_size")
            .and_then(|v| v.as_u64())
            .unwrap_or(64) as usize;
        let latent_channels = field(&unet, "in_channels")
            .and_then(|v| v.as_u64())
            .unwrap_or(4) as usize;
        let unet_levels = count(&unet, "block_out_channels");
        let levels = count(&vae, "block_out_channels");
        let scaling_factor = field(&vae, "scaling_factor")
            .and_then(|v| v.as_f64())
            .unwrap_or(0.18215) as f32;
        Ok(Self {
            sample_size,
            vae_scale_factor: 1 << levels.saturating_sub(1),
            scaling_factor,
            latent_channels,
            unet_downsamples: unet_levels.saturating_sub(1),
        })
    }
}

/// The JSON in `path`: `None` when there is no such file, an error (with the fix) when it is
/// not valid JSON.
pub fn read_json_opt(path: &Path) -> eyre::Result<Option<serde_json::Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(path).wrap_err_with(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).map(Some).map_err(|e| {
        eyre!(Fixable::new(
            format!("{} is not valid JSON: {e}", path.display()),
            "copy it again from the export it came from, or re-export the model",
        ))
    })
}

/// Why `root` cannot be a model folder (missing, or a file), naming what named it
/// (`--model-dir`, `model.dir in …/config.toml`; `None`: not known), with the fix.
pub fn missing_dir_message(root: &Path, named_by: Option<&str>) -> Fixable {
    let by = named_by.map(|n| format!(" (from {n})")).unwrap_or_default();
    let point = named_by.unwrap_or("--model-dir (or model.dir in config.toml)");
    if root.exists() {
        return Fixable::new(
            format!("model folder {}{by} is not a folder", root.display()),
            format!(
                "point {point} at the folder that holds text_encoder/, unet/, vae_decoder/, tokenizer/ and scheduler/"
            ),
        );
    }
    let what = "does not exist";
    Fixable::new(
        format!("model folder {}{by} {what}", root.display()),
        format!(
            "create it with `.venv-ref/bin/python models/export.py --out {}` (README \"Real SD v1.5 on a GPU box\"), point {point} at an existing export, or leave it unset to use the embedded micro model",
            root.display()
        ),
    )
}

/// Checks that `root`, named by `named_by` (`--model-dir`, `model.dir in …`), is a folder.
pub fn check_model_dir(root: &Path, named_by: &str) -> eyre::Result<()> {
    if root.is_dir() {
        Ok(())
    } else {
        Err(eyre!(missing_dir_message(root, Some(named_by))))
    }
}

/// Checks that `folder/model.onnx` exists and says what is missing otherwise.
pub fn component_file(root: &Path, folder: &str) -> eyre::Result<PathBuf> {
    if !root.is_dir() {
        bail!(missing_dir_message(root, None));
    }
    let file = root.join(folder).join("model.onnx");
    if !file.is_file() {
        let what = if root.join(folder).is_dir() {
            format!("{} has no model.onnx", root.join(folder).display())
        } else {
            format!("{} has no {folder}/ folder", root.display())
        };
        bail!(Fixable::new(
            format!(
                "model component {folder} is missing: {what} (expected {}; the Optimum ONNX layout has text_encoder/, unet/, vae_decoder/, tokenizer/, scheduler/)",
                file.display()
            ),
            format!(
                "copy {folder}/ from the export it came from, or re-export (`.venv-ref/bin/python models/export.py --out {} --force`)",
                root.display()
            ),
        ));
    }
    Ok(file)
}

fn find<'a>(specs: &'a [IoSpec], name: &str) -> Option<&'a IoSpec> {
    specs.iter().find(|s| s.name == name)
}

fn describe_all(specs: &[IoSpec]) -> String {
    specs
        .iter()
        .map(IoSpec::describe)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `fp16` for half-precision tensors, else `fp32`.
fn precision_name(e: TensorElementType) -> &'static str {
    match e {
        TensorElementType::Float16 => "fp16",
        TensorElementType::Bfloat16 => "bf16",
        _ => "fp32",
    }
}

fn is_float(e: TensorElementType) -> bool {
    matches!(e, TensorElementType::Float32 | TensorElementType::Float16)
}

/// What a graph with these inputs looks like (`a UNet (the unet/ folder)`), to say what was
/// put where.
fn looks_like(inputs: &[IoSpec]) -> Option<&'static str> {
    let has = |n: &str| find(inputs, n).is_some();
    if has("sample") && has("timestep") && has("encoder_hidden_states") {
        Some("a UNet (it belongs in unet/ or a unet_<variant>/ folder)")
    } else if has("input_ids") {
        Some("a text encoder (it belongs in text_encoder/)")
    } else if has("latent_sample") {
        Some("a VAE decoder (it belongs in vae_decoder/)")
    } else if has("sample") {
        Some("a VAE encoder (it belongs in vae_encoder/)")
    } else {
        None
    }
}

/// A decoder's latents input `name` (`[batch, 4, h, w]`, float32 or float16); otherwise an error
/// naming the `what` graph and listing the inputs it has.
fn latents_input(session: &Session, file: &Path, name: &str, what: &str) -> eyre::Result<IoSpec> {
    let inputs = tensor::inputs(session);
    find(&inputs, name)
        .filter(|s| s.rank() == 4 && is_float(s.elem))
        .cloned()
        .ok_or_else(|| mismatch(file, what, &format!("{name} float[batch,4,h,w]"), &inputs))
}

fn mismatch(file: &Path, what: &str, expected: &str, found: &[IoSpec]) -> eyre::Report {
    let folder = file
        .parent()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    // "looks like a text encoder" says nothing new when a text encoder was expected.
    let guess = looks_like(found)
        .filter(|g| {
            let noun = g.trim_start_matches("a ").split(" (").next().unwrap_or("");
            !what.ends_with(noun)
        })
        .map(|g| format!("; this graph looks like {g}"))
        .unwrap_or_default();
    eyre!(Fixable::new(
        format!(
            "{} is not a {what}: expected inputs {expected}; found inputs {}{guess}",
            file.display(),
            describe_all(found)
        ),
        format!(
            "put the {what}'s model.onnx (with its data file, if any) in {folder}, as the export wrote it (Optimum ONNX layout)"
        ),
    ))
}

/// The folder name of a component's `model.onnx` (`unet_lcm`), for messages.
fn component_name(file: &Path) -> String {
    file.parent()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| file.display().to_string())
}

/// An error from a session's run: out of memory explained (what ran, at what size, the fixes
/// that fit), anything else with the call and file named.
fn run_error(
    memory: MemoryContext,
    doing: &str,
    file: &Path,
    err: impl std::fmt::Display,
) -> eyre::Report {
    let raw = err.to_string();
    match failure::out_of_memory(&raw) {
        Some(oom) => eyre::Report::new(failure::out_of_memory_message(
            doing,
            MemoryPhase::Running,
            oom,
            &raw,
            memory,
        )),
        None => eyre!(raw).wrap_err(format!("{doing}: {}", file.display())),
    }
}

/// The VAE's scale factor until the model folder says otherwise (SD v1.5's).
const DEFAULT_VAE_SCALE: usize = 8;

/// CLIP text encoder: ids → per-token hidden states.
pub struct TextEncoder {
    session: Session,
    ids: IoSpec,
    output: String,
    /// The `pooler_output` output (the EOS token's final hidden state), when the graph has it.
    pooled: Option<String>,
    /// Width D of the hidden states, when the graph fixes it.
    pub hidden_dim: Option<usize>,
    /// Its `model.onnx`.
    pub file: PathBuf,
    /// Time spent inside ONNX Runtime's run calls so far.
    pub(crate) ort: Duration,
    memory: MemoryContext,
}

impl TextEncoder {
    /// A session for `file`, checked: `input_ids` of rank 2 (`[B, 77]`, int32 or int64) in,
    /// `last_hidden_state` of rank 3 (`[B, 77, D]`) out, and `pooler_output` (`[B, D]`) used
    /// where the graph has it; otherwise an error listing what the graph has.
    pub fn load(rt: &Runtime, file: &Path) -> eyre::Result<Self> {
        Self::from_session(rt, file, rt.session(file)?)
    }

    /// [`TextEncoder::load`] of a session already made (with fused LoRA weights, say).
    fn from_session(rt: &Runtime, file: &Path, session: Session) -> eyre::Result<Self> {
        let inputs = tensor::inputs(&session);
        let ids = find(&inputs, "input_ids")
            .filter(|s| {
                s.rank() == 2
                    && matches!(s.elem, TensorElementType::Int32 | TensorElementType::Int64)
            })
            .cloned()
            .ok_or_else(|| {
                mismatch(
                    file,
                    "CLIP text encoder",
                    "input_ids int32|int64[batch,77]",
                    &inputs,
                )
            })?;
        let outputs = tensor::outputs(&session);
        let output = outputs
            .iter()
            .find(|o| o.name == "last_hidden_state")
            .or_else(|| outputs.first())
            .filter(|o| o.rank() == 3 && is_float(o.elem))
            .cloned()
            .ok_or_else(|| {
                eyre!(
                    "{} has no last_hidden_state output of rank 3; found outputs {}",
                    file.display(),
                    describe_all(&outputs)
                )
            })?;
        let pooled = outputs
            .iter()
            .find(|o| o.name == "pooler_output" && o.rank() == 2 && is_float(o.elem))
            .map(|o| o.name.clone());
        Ok(Self {
            session,
            ids,
            hidden_dim: usize::try_from(output.shape[2]).ok(),
            output: output.name,
            pooled,
            file: file.to_path_buf(),
            ort: Duration::ZERO,
            memory: rt.memory_context(),
        })
    }

    /// Hidden states `[batch, 77, D]` for `batch` rows of 77 ids each.
    pub fn encode(&mut self, ids: &[i64], batch: usize) -> eyre::Result<Array3<f32>> {
        let out = self.run(ids, batch, false)?;
        Ok(out.into_dimensionality::<Ix3>()?)
    }

    /// Whether the graph has a `pooler_output` output ([`TextEncoder::encode_pooled`]).
    pub(crate) fn has_pooled(&self) -> bool {
        self.pooled.is_some()
    }

    /// `pooler_output` `[batch, D]` (the final hidden state at each row's first EOS, as
    /// transformers' CLIPTextModel pools) for `batch` rows of 77 ids: what CLIP's
    /// `text_projection` takes. Only this output is copied out; [`TextEncoder::encode`] is
    /// unchanged.
    pub fn encode_pooled(&mut self, ids: &[i64], batch: usize) -> eyre::Result<Array2<f32>> {
        if self.pooled.is_none() {
            return Err(eyre!(Fixable::new(
                format!(
                    "the text encoder {} has no pooler_output output (found {}); the CLIP score needs it",
                    self.file.display(),
                    describe_all(&tensor::outputs(&self.session))
                ),
                "re-export the model with models/export.py, which writes last_hidden_state and pooler_output as Optimum does",
            )));
        }
        let out = self.run(ids, batch, true)?;
        Ok(out.into_dimensionality::<Ix2>()?)
    }

    /// One run; `pooler_output` (when `pooled` and the graph has it) or the hidden states,
    /// copied out (only that one).
    fn run(
        &mut self,
        ids: &[i64],
        batch: usize,
        pooled: bool,
    ) -> eyre::Result<ndarray::ArrayD<f32>> {
        let input = tensor::int_input(ids, &[batch, ids.len() / batch], self.ids.elem)?;
        let start = Instant::now();
        let (memory, file) = (self.memory, &self.file);
        let outputs = self
            .session
            .run(ort::inputs![self.ids.name.as_str() => input])
            .map_err(|e| {
                let doing = format!(
                    "running the text encoder {} (batch {batch})",
                    component_name(file)
                );
                run_error(memory, &doing, file, e)
            })?;
        self.ort += start.elapsed();
        let name = match (&self.pooled, pooled) {
            (Some(p), true) => p.as_str(),
            _ => self.output.as_str(),
        };
        tensor::float_output(&outputs[name])
    }
}

/// The VAE decoder: latents → image in [-1, 1].
pub struct VaeDecoder {
    session: Session,
    input: IoSpec,
    output: String,
    /// Its `model.onnx`.
    pub file: PathBuf,
    /// Time spent inside ONNX Runtime's run calls so far.
    pub(crate) ort: Duration,
    memory: MemoryContext,
    /// Pixels per latent cell, for sizes in messages.
    pub(crate) vae_scale: usize,
}

impl VaeDecoder {
    /// A session for `file`, checked: `latent_sample` of rank 4 (`[B, 4, h, w]`), float32 or
    /// float16, in; otherwise an error listing what the graph has.
    pub fn load(rt: &Runtime, file: &Path) -> eyre::Result<Self> {
        let session = rt.session(file)?;
        let input = latents_input(&session, file, "latent_sample", "VAE decoder")?;
        let outputs = tensor::outputs(&session);
        let output = outputs
            .iter()
            .find(|o| o.name == "sample")
            .or_else(|| outputs.first())
            .map(|o| o.name.clone())
            .ok_or_else(|| eyre!("{} has no outputs", file.display()))?;
        Ok(Self {
            session,
            input,
            output,
            file: file.to_path_buf(),
            ort: Duration::ZERO,
            memory: rt.memory_context(),
            vae_scale: DEFAULT_VAE_SCALE,
        })
    }

    /// `fp16` or `fp32`: the type the graph takes its latents in.
    pub(crate) fn io_precision(&self) -> &'static str {
        precision_name(self.input.elem)
    }

    /// Image `[batch, 3, H, W]`, roughly in [-1, 1], from already-unscaled latents.
    pub fn decode(&mut self, latents: ArrayView4<f32>) -> eyre::Result<Array4<f32>> {
        self.decode_with(latents, None)
    }

    /// [`VaeDecoder::decode`] under `options` (terminable from another thread).
    pub fn decode_with(
        &mut self,
        latents: ArrayView4<f32>,
        options: Option<&RunOptions>,
    ) -> eyre::Result<Array4<f32>> {
        let [b, _, h, w] = latents.shape() else {
            bail!(
                "latents of shape {:?}, expected [batch, 4, h, w]",
                latents.shape()
            );
        };
        let doing = format!(
            "running the VAE decoder {} at {}×{} (batch {b})",
            component_name(&self.file),
            w * self.vae_scale,
            h * self.vae_scale
        );
        let x = tensor::float_input(latents.into_dyn(), self.input.elem)?;
        let inputs = ort::inputs![self.input.name.as_str() => x];
        let start = Instant::now();
        let outputs = match options {
            Some(o) => self.session.run_with_options(inputs, o),
            None => self.session.run(inputs),
        }
        .map_err(|e| run_error(self.memory, &doing, &self.file, e))?;
        self.ort += start.elapsed();
        let out = tensor::float_output(&outputs[self.output.as_str()])?;
        Ok(out.into_dimensionality::<Ix4>()?)
    }
}

/// A model folder with its shared components loaded; UNets and variant text encoders load
/// on demand.
pub struct Model {
    pub(crate) root: PathBuf,
    /// The UNet variants it may run, completed from manifest.json where the folder has one.
    pub variants: Vec<Variant>,
    /// CLIP's BPE tokenizer (`tokenizer/`).
    pub tokenizer: ClipTokenizer,
    /// The base text encoder (`text_encoder/`).
    pub text_encoder: TextEncoder,
    /// The VAE decoder runs decode with: `vae_decoder/`, or `vae_decoder_fp16/` where
    /// [`Model::use_vae`] chose it.
    pub vae: VaeDecoder,
    /// `vae_decoder/` while `vae` is the float16 one: what decodes again when it overflows.
    pub(crate) vae_fp32: Option<VaeDecoder>,
    /// Sizes from the components' configs.
    pub geometry: ModelGeometry,
    /// The scheduler config in force: `scheduler/scheduler_config.json` as shipped, or SD
    /// v1.5's (folder has none, or config.toml says `scheduler_config = "sd15"`).
    pub scheduler_config: serde_json::Value,
    /// What the folder's scheduler config is, and what that means.
    pub scheduler_report: SchedulerReport,
    /// What `models/export.py` recorded, when the folder has a manifest.json.
    pub(crate) manifest: Option<Manifest>,
    /// Things the user should know about this folder (fallbacks taken).
    pub notes: Vec<String>,
    /// Loaded UNets by key: the folder, then the run-time adapters fused into it
    /// ([`crate::lora::fingerprint`]), least recently used first.
    unets: Vec<(String, Unet)>,
    /// Text encoders of variants with fused text-encoder LoRAs (pre-fused or at run time), by
    /// key as for `unets`.
    text_encoders: Vec<(String, TextEncoder)>,
    /// LoRA files read so far ([`crate::lora::resolve`]).
    adapters_seen: lora::Seen,
    /// Time spent creating sessions, per component folder.
    pub load_times: Vec<(String, Duration)>,
    /// Bytes the loaded UNets may take together (0: no limit); see [`Model::unet`].
    pub unet_budget: u64,
    /// UNets unloaded to stay within the budget since the last [`Model::take_unloaded`].
    unloaded: Vec<String>,
    /// The CLIP scorer, once a run asked for a CLIP score ([`Model::clip_scorer`]).
    clip: Option<ClipScorer>,
    /// ControlNets loaded so far, by name ([`Model::controlnet`]).
    controlnets: Vec<(String, ControlNet)>,
    /// The judge, once a run asked for a judge reading ([`Model::judge`]).
    judge: Option<Judge>,
}

/// What one run of a variant uses, borrowed together from its [`Model`] ([`Model::run_parts`]).
pub(crate) struct RunParts<'a> {
    pub(crate) tokenizer: &'a ClipTokenizer,
    /// The variant's text encoder: the base one unless its LoRAs also train the text encoder.
    pub(crate) text_encoder: &'a mut TextEncoder,
    pub(crate) unet: &'a mut Unet,
    pub(crate) vae: &'a mut VaeDecoder,
    /// The float32 VAE decoder while `vae` is the float16 one.
    pub(crate) vae_fp32: Option<&'a mut VaeDecoder>,
    pub(crate) geometry: &'a ModelGeometry,
    /// Whether the CLIP scorer is loaded: the run asked for a score and the folder has a scorer.
    pub(crate) clip: bool,
    /// The folder's notes, then what was unloaded to make room for this UNet.
    pub(crate) notes: Vec<String>,
    /// The adapters fused at run time, as reports name them.
    pub(crate) adapters: Vec<crate::lora::AppliedAdapter>,
    /// The run's ControlNet, when it has one.
    pub(crate) controlnet: Option<&'a mut ControlNet>,
}

impl RunParts<'_> {
    /// Time spent inside ONNX Runtime's run calls by these sessions so far.
    pub(crate) fn ort_time(&self) -> Duration {
        self.text_encoder.ort
            + self.unet.ort
            + self.vae.ort
            + self.vae_fp32.as_ref().map_or(Duration::ZERO, |v| v.ort)
            + self.controlnet.as_ref().map_or(Duration::ZERO, |c| c.ort)
    }
}

/// The UNet budget when config.toml sets none: 70% of the GPU's memory on a GPU, half the
/// host's memory on the CPU (0, no limit, where neither can be read).
pub fn default_unet_budget(gpu: bool) -> u64 {
    let mib = if gpu {
        crate::runtime::query_gpu()
            .and_then(|g| g.memory.split_whitespace().next()?.parse::<u64>().ok())
            .map(|m| m * 7 / 10)
    } else {
        std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kb| kb / 1024 / 2)
        })
    };
    mib.map_or(0, |m| m << 20)
}

/// How many of the loaded UNets (sizes in least-recently-used order) to unload, oldest first,
/// so that one of `incoming` bytes fits in `budget` (0: no limit). A UNet larger than the
/// whole budget unloads every other one and loads anyway.
pub(crate) fn unets_to_unload(loaded: &[u64], incoming: u64, budget: u64) -> usize {
    if budget == 0 {
        return 0;
    }
    let mut total: u64 = loaded.iter().sum::<u64>() + incoming;
    let mut n = 0;
    while total > budget && n < loaded.len() {
        total -= loaded[n];
        n += 1;
    }
    n
}

/// Bytes of the files in `dir` (a component folder: the graph and its external weights).
fn folder_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

impl Model {
    /// Opens the folder obeying its scheduler config; see [`Model::open_with`].
    pub fn open(rt: &Runtime, root: &Path, variants: Vec<Variant>) -> eyre::Result<Self> {
        Self::open_with(rt, root, variants, SchedulerConfigSource::File)
    }

    /// Opens the folder: tokenizer, base text encoder and VAE decoder now, UNets and variant
    /// text encoders on first use. With a manifest.json, `variants` are completed from it
    /// ([`merge_manifest_variants`]).
    pub fn open_with(
        rt: &Runtime,
        root: &Path,
        variants: Vec<Variant>,
        scheduler: SchedulerConfigSource,
    ) -> eyre::Result<Self> {
        let mut load_times = Vec::new();
        let te_file = component_file(root, BASE_TEXT_ENCODER)?;
        let vae_file = component_file(root, "vae_decoder")?;
        let manifest = Manifest::read(root)?;
        let family = manifest.as_ref().and_then(|m| m.family.clone());
        let variants = match &manifest {
            Some(m) => merge_manifest_variants(variants, m),
            None => variants,
        };
        let tokenizer = ClipTokenizer::from_dir(&root.join("tokenizer"))?;
        let geometry = ModelGeometry::read(root)?;
        let mut notes = Vec::new();
        let sched_file = root.join("scheduler").join("scheduler_config.json");
        // With SD v1.5's config in force, a damaged file is only reported, not fatal.
        let file_config = match scheduler {
            SchedulerConfigSource::File => read_json_opt(&sched_file)?,
            SchedulerConfigSource::Sd15 => read_json_opt(&sched_file).ok().flatten(),
        };
        let scheduler_report = SchedulerReport::new(
            &sched_file,
            file_config.as_ref(),
            scheduler,
            family.as_deref(),
        );
        let scheduler_config = match (scheduler, file_config) {
            (SchedulerConfigSource::File, Some(v)) => {
                scheduler_status::check_values(&sched_file, &v)?;
                if scheduler_report.warning {
                    notes.push(scheduler_report.message.replace('\n', " "));
                }
                v
            }
            (SchedulerConfigSource::File, None) => {
                notes.push(format!(
                    "{} is missing; using SD v1.5's scheduler config",
                    sched_file.display()
                ));
                serde_json::from_str(SD15_SCHEDULER_CONFIG)?
            }
            (SchedulerConfigSource::Sd15, _) => {
                notes.push(format!(
                    "model.scheduler_config = \"sd15\": using SD v1.5's original scheduler config (bundled in speedscape) instead of {}",
                    sched_file.display()
                ));
                serde_json::from_str(SD15_SCHEDULER_CONFIG)?
            }
        };
        let start = Instant::now();
        let text_encoder = TextEncoder::load(rt, &te_file)?;
        load_times.push((BASE_TEXT_ENCODER.to_string(), start.elapsed()));
        let start = Instant::now();
        let mut vae = VaeDecoder::load(rt, &vae_file)?;
        vae.vae_scale = geometry.vae_scale_factor;
        load_times.push(("vae_decoder".to_string(), start.elapsed()));
        Ok(Self {
            root: root.to_path_buf(),
            variants,
            tokenizer,
            text_encoder,
            vae,
            vae_fp32: None,
            geometry,
            scheduler_config,
            scheduler_report,
            manifest,
            notes,
            unets: Vec::new(),
            text_encoders: Vec::new(),
            adapters_seen: lora::Seen::default(),
            load_times,
            unet_budget: 0,
            unloaded: Vec::new(),
            clip: None,
            judge: None,
            controlnets: Vec::new(),
        })
    }

    /// The variant called `name` (its name or its folder), or an error listing the known ones.
    pub fn variant(&self, name: &str) -> eyre::Result<&Variant> {
        self.variants
            .iter()
            .find(|v| v.name == name || v.folder == name)
            .ok_or_else(|| {
                let known: Vec<&str> = self.variants.iter().map(|v| v.name.as_str()).collect();
                eyre!(Fixable::new(
                    format!("unknown UNet variant {name:?}; known: {}", known.join(", ")),
                    "use one of those, or add a [[model.variants]] entry to config.toml",
                ))
            })
    }

    /// The model family its manifest records (`sd15`, `sd2`, `sd-turbo`); `None` without one.
    pub fn family(&self) -> Option<&str> {
        self.manifest.as_ref()?.family.as_deref()
    }

    /// The model family in words, for messages: `SD v1.5` (also without a manifest or a
    /// family), `SD 2.x`, `SD-Turbo (SD 2.1's architecture)`.
    pub fn family_words(&self) -> &'static str {
        match self.family() {
            Some("sd-turbo") => "SD-Turbo (SD 2.1's architecture)",
            Some("sd2") => "SD 2.x",
            _ => "SD v1.5",
        }
    }

    /// How `variant` runs when it is a one-step UNet (see [`OneStep`]); `None` for a UNet of
    /// the base's sampling or an unknown variant.
    pub fn one_step(&self, variant: &str) -> Option<OneStep> {
        let v = self.variant(variant).ok()?;
        let manifest = self.manifest.as_ref()?;
        if let Some((name, mv)) = manifest.variant_by_unet(&v.folder)
            && let Some(rec) = &mv.one_step
        {
            return Some(OneStep::new(
                rec.steps,
                rec.scheduler.clone(),
                rec.guidance,
                format!("manifest.json variants.{name}.one_step"),
            ));
        }
        (v.folder == "unet" && manifest.family.as_deref() == Some("sd-turbo")).then(|| {
            OneStep::new(
                SD_TURBO_MAX_STEPS,
                self.scheduler_config.clone(),
                0.0,
                "manifest.json family \"sd-turbo\"".into(),
            )
        })
    }

    /// Variants whose UNet or text encoder folder has no model.onnx (filesystem only).
    pub fn missing_variants(&self) -> Vec<&Variant> {
        self.variants
            .iter()
            .filter(|v| {
                [v.folder.as_str(), v.text_encoder_folder()]
                    .iter()
                    .any(|f| !self.root.join(f).join("model.onnx").is_file())
            })
            .collect()
    }

    /// Whether the UNet of `variant` already has a session (no load on next use).
    pub fn has_unet(&self, variant: &str) -> bool {
        self.variant(variant)
            .is_ok_and(|v| self.unets.iter().any(|(f, _)| *f == v.folder))
    }

    /// Whether the text encoder of `variant` already has a session.
    pub fn has_text_encoder_for(&self, variant: &str) -> bool {
        self.variant(variant).is_ok_and(|v| {
            let folder = v.text_encoder_folder();
            folder == BASE_TEXT_ENCODER || self.text_encoders.iter().any(|(f, _)| f == folder)
        })
    }

    /// The UNet of `variant`, loading it on first use; loading first unloads the least recently
    /// used UNets as far as [`Model::unet_budget`] needs (the next run's warnings say which).
    pub fn unet(&mut self, rt: &Runtime, variant: &str) -> eyre::Result<&mut Unet> {
        self.unet_with(rt, variant, &[])
    }

    /// The UNet of `variant` with `adapters` fused at run time (a session per variant, adapter
    /// files and weights, kept like any UNet within [`Model::unet_budget`]); see [`Model::unet`].
    pub fn unet_with(
        &mut self,
        rt: &Runtime,
        variant: &str,
        adapters: &[AdapterWeight],
    ) -> eyre::Result<&mut Unet> {
        let resolved = lora::resolve(&self.root, adapters, &mut self.adapters_seen)?;
        let key = self.load_unet(rt, variant, &resolved)?;
        Ok(self.loaded_unet(&key))
    }

    /// The session keys a run of `variant` with run-time `adapters` uses, (UNet, text
    /// encoder): the component's folder, then each adapter that changes it, by name, file
    /// digest and weight (`unet+style@1a2b3c4d5e6f=0.6`); the folder alone without adapters.
    pub fn session_keys(
        &mut self,
        variant: &str,
        adapters: &[AdapterWeight],
    ) -> eyre::Result<(String, String)> {
        let v = self.variant(variant)?.clone();
        let resolved = lora::resolve(&self.root, adapters, &mut self.adapters_seen)?;
        Ok((
            format!(
                "{}{}",
                v.folder,
                lora::fingerprint(&resolved, Component::Unet)
            ),
            format!(
                "{}{}",
                v.text_encoder_folder(),
                lora::fingerprint(&resolved, Component::TextEncoder)
            ),
        ))
    }

    /// Whether a session under `key` ([`Model::session_keys`]) exists: no load on next use.
    pub fn has_session(&self, key: &str) -> bool {
        key == BASE_TEXT_ENCODER
            || self.unets.iter().any(|(k, _)| k == key)
            || self.text_encoders.iter().any(|(k, _)| k == key)
    }

    /// The loaded UNet under `key`, made the most recently used.
    fn loaded_unet(&mut self, key: &str) -> &mut Unet {
        let i = self
            .unets
            .iter()
            .position(|(k, _)| k == key)
            .expect("loaded before");
        let entry = self.unets.remove(i);
        self.unets.push(entry);
        &mut self.unets.last_mut().expect("just pushed").1
    }

    /// Loads the UNet of `variant` fused with `adapters` unless loaded; gives its key.
    fn load_unet(
        &mut self,
        rt: &Runtime,
        variant: &str,
        adapters: &[lora::Resolved],
    ) -> eyre::Result<String> {
        let v = self.variant(variant)?.clone();
        let folder = v.folder.clone();
        let key = format!("{folder}{}", lora::fingerprint(adapters, Component::Unet));
        if self.unets.iter().any(|(k, _)| *k == key) {
            return Ok(key);
        }
        if v.name != "base" && !self.root.join(&folder).join("model.onnx").is_file() {
            return Err(missing_variant_error(&self.root, &v, "UNet", &folder));
        }
        let file = component_file(&self.root, &folder)?;
        let incoming = folder_bytes(&self.root.join(&folder));
        let sizes: Vec<u64> = self.unets.iter().map(|(_, u)| u.bytes).collect();
        let n = unets_to_unload(&sizes, incoming, self.unet_budget);
        for (name, u) in self.unets.drain(..n) {
            self.unloaded.push(format!(
                "unloaded the UNet {name} ({} MiB) to load {key} ({} MiB) within the UNet budget of {} MiB ([model] unet_budget_mib)",
                u.bytes >> 20,
                incoming >> 20,
                self.unet_budget >> 20
            ));
        }
        let start = Instant::now();
        let overrides = lora::overrides(&file, Component::Unet, adapters, self.family_words())?;
        let unet = Unet::from_session(rt, &file, rt.session_with(&file, overrides)?)?;
        if let (Some(need), Some(have)) = (unet.context_dim(), self.text_encoder.hidden_dim)
            && need != have
        {
            bail!(Fixable::new(
                format!(
                    "{} attends to text embeddings of width {need}, but the text encoder {} produces width {have}",
                    file.display(),
                    self.text_encoder.file.display()
                ),
                "use a UNet and text encoder from the same model",
            ));
        }
        self.load_times.push((key.clone(), start.elapsed()));
        let mut unet = unet;
        unet.bytes = incoming;
        unet.vae_scale = self.geometry.vae_scale_factor;
        self.unets.push((key.clone(), unet));
        Ok(key)
    }

    /// What the folder holds, from its manifest.
    pub fn kind(&self) -> ModelKind {
        self.manifest
            .as_ref()
            .map_or(ModelKind::Sd15, Manifest::kind)
    }

    /// The micro model's world (its manifest's grammar); `None` for other kinds.
    pub fn grammar(&self) -> Option<&Grammar> {
        Some(&self.manifest.as_ref()?.micro.as_ref()?.grammar)
    }

    /// Whether the folder has a CLIP scorer (`clip_image_encoder/`); it loads on first use.
    pub fn has_clip_scorer(&self) -> bool {
        ClipScorer::present(&self.root)
    }

    /// Whether the CLIP scorer already has a session.
    pub fn clip_scorer_loaded(&self) -> bool {
        self.clip.is_some()
    }

    /// The CLIP scorer, loading it on first use: `Ok(None)` when the folder has none, an error
    /// (cause and fix) when it is there but broken or made for another text encoder.
    pub fn clip_scorer(&mut self, rt: &Runtime) -> eyre::Result<Option<&mut ClipScorer>> {
        if self.clip.is_none() {
            let start = Instant::now();
            let Some(scorer) = ClipScorer::open(rt, &self.root)? else {
                return Ok(None);
            };
            let width = scorer.config.text_hidden_size;
            let te = &self.text_encoder;
            if !te.has_pooled() || te.hidden_dim.is_some_and(|d| d != width) {
                let what = match te.hidden_dim {
                    Some(d) if te.has_pooled() => format!("produces width {d}"),
                    _ => "has no pooler_output output".to_string(),
                };
                bail!(Fixable::new(
                    format!(
                        "the CLIP scorer {} takes the text encoder's pooler_output of width {width}, but the text encoder {} {what}",
                        scorer.file.display(),
                        te.file.display()
                    ),
                    format!(
                        "re-export the model with its CLIP scorer (`.venv-ref/bin/python models/export.py --out {} --clip-scorer --force`; the exporter checks that the CLIP model's text tower is this text encoder), or remove {} to run without CLIP scores",
                        self.root.display(),
                        self.root.join(CLIP_FOLDER).display()
                    ),
                ));
            }
            self.load_times
                .push((CLIP_FOLDER.to_string(), start.elapsed()));
            self.clip = Some(scorer);
        }
        Ok(self.clip.as_mut())
    }

    /// The CLIP score of `image` against the prompt whose 77 token ids are `ids`: the base text
    /// encoder's pooler_output (CLIP's own text tower; a variant's LoRA-fused text encoder is
    /// not) through the scorer. `Ok(None)` when the folder has no scorer.
    pub(crate) fn clip_score_ids(
        &mut self,
        rt: &Runtime,
        image: &image::RgbImage,
        ids: &[i64],
    ) -> eyre::Result<Option<ClipScore>> {
        if self.clip_scorer(rt)?.is_none() {
            return Ok(None);
        }
        let pooled = self.text_encoder.encode_pooled(ids, 1)?;
        let scorer = self.clip.as_mut().expect("loaded just now");
        scorer.score(image, pooled.row(0)).map(Some)
    }

    /// The CLIP score of `image` against `prompt` (tokenized as a run tokenizes it): the base
    /// text encoder's pooler_output (CLIP's own text tower; a variant's LoRA-fused text encoder
    /// is not) through the scorer, loaded on first use. `Ok(None)` when the folder has no
    /// scorer.
    pub fn clip_score(
        &mut self,
        rt: &Runtime,
        image: &image::RgbImage,
        prompt: &str,
    ) -> eyre::Result<Option<ClipScore>> {
        let ids = self.tokenizer.encode(prompt)?.ids_i64();
        self.clip_score_ids(rt, image, &ids)
    }

    /// The judge, loading it on first use: `Ok(None)` when the folder has none (or no grammar
    /// to name its classes), an error (cause and fix) when it is there but broken.
    pub fn judge(&mut self, rt: &Runtime) -> eyre::Result<Option<&mut Judge>> {
        if self.judge.is_none() {
            let Some(grammar) = self.grammar().cloned() else {
                return Ok(None);
            };
            let start = Instant::now();
            let Some(judge) = Judge::open(rt, &self.root, &grammar)? else {
                return Ok(None);
            };
            self.load_times
                .push((JUDGE_FOLDER.to_string(), start.elapsed()));
            self.judge = Some(judge);
        }
        Ok(self.judge.as_mut())
    }

    /// The judge's reading of `image` against `prompt`; `Ok(None)` when the folder has no judge.
    pub fn judge_reading(
        &mut self,
        rt: &Runtime,
        image: &image::RgbImage,
        prompt: &str,
    ) -> eyre::Result<Option<JudgeReading>> {
        let intended = self.grammar().and_then(|g| g.intended(prompt));
        let Some(judge) = self.judge(rt)? else {
            return Ok(None);
        };
        Ok(Some(JudgeReading::of(judge.read(image)?, intended)))
    }

    /// What was unloaded to stay within the UNet budget since the last call.
    pub(crate) fn take_unloaded(&mut self) -> Vec<String> {
        std::mem::take(&mut self.unloaded)
    }

    /// The weights' precision of a component folder as manifest.json records it (`fp16`,
    /// `fp32`); `None` without a manifest or an entry.
    pub(crate) fn component_precision(&self, folder: &str) -> Option<String> {
        self.manifest.as_ref()?.component(folder)?.dtype.clone()
    }

    /// The text encoder of `variant` (the base one unless its LoRAs also train the text
    /// encoder), loading it on first use.
    pub fn text_encoder_for(
        &mut self,
        rt: &Runtime,
        variant: &str,
    ) -> eyre::Result<&mut TextEncoder> {
        self.text_encoder_with(rt, variant, &[])
    }

    /// The text encoder of `variant` with the text-encoder layers of `adapters` fused at run
    /// time (the variant's own one when no adapter has such layers).
    pub fn text_encoder_with(
        &mut self,
        rt: &Runtime,
        variant: &str,
        adapters: &[AdapterWeight],
    ) -> eyre::Result<&mut TextEncoder> {
        let resolved = lora::resolve(&self.root, adapters, &mut self.adapters_seen)?;
        let key = self.load_text_encoder(rt, variant, &resolved)?;
        Ok(self.loaded_text_encoder(&key))
    }

    fn loaded_text_encoder(&mut self, key: &str) -> &mut TextEncoder {
        if key == BASE_TEXT_ENCODER {
            return &mut self.text_encoder;
        }
        self.text_encoders
            .iter_mut()
            .find(|(k, _)| k == key)
            .map(|(_, t)| t)
            .expect("loaded before")
    }

    /// Loads the text encoder of `variant` fused with `adapters` unless loaded; gives its key.
    fn load_text_encoder(
        &mut self,
        rt: &Runtime,
        variant: &str,
        adapters: &[lora::Resolved],
    ) -> eyre::Result<String> {
        let v = self.variant(variant)?.clone();
        let folder = v.text_encoder_folder().to_string();
        let key = format!(
            "{folder}{}",
            lora::fingerprint(adapters, Component::TextEncoder)
        );
        if key == BASE_TEXT_ENCODER || self.text_encoders.iter().any(|(k, _)| *k == key) {
            return Ok(key);
        }
        if !self.root.join(&folder).join("model.onnx").is_file() {
            return Err(missing_variant_error(
                &self.root,
                &v,
                "text encoder",
                &folder,
            ));
        }
        let file = component_file(&self.root, &folder)?;
        let start = Instant::now();
        let overrides =
            lora::overrides(&file, Component::TextEncoder, adapters, self.family_words())?;
        let te = TextEncoder::from_session(rt, &file, rt.session_with(&file, overrides)?)?;
        if let (Some(need), Some(have)) = (self.text_encoder.hidden_dim, te.hidden_dim)
            && need != have
        {
            bail!(Fixable::new(
                format!(
                    "{} produces text embeddings of width {have}, but the base text encoder {} produces width {need}",
                    file.display(),
                    self.text_encoder.file.display()
                ),
                "use text encoders from the same model",
            ));
        }
        self.load_times.push((key.clone(), start.elapsed()));
        self.text_encoders.push((key.clone(), te));
        Ok(key)
    }

    /// What one run of `variant` with run-time `adapters` uses, loaded on first use in this
    /// order — its UNet, its text encoder, and with `clip` the CLIP scorer (a broken one fails
    /// here; a folder without one gives [`RunParts::clip`] false) — and then borrowed together.
    pub(crate) fn run_parts(
        &mut self,
        rt: &Runtime,
        variant: &str,
        adapters: &[AdapterWeight],
        clip: bool,
        controlnet: Option<&str>,
    ) -> eyre::Result<RunParts<'_>> {
        let resolved = lora::resolve(&self.root, adapters, &mut self.adapters_seen)?;
        if let Some(name) = controlnet {
            self.controlnet(rt, name)?;
        }
        let unet_key = self.load_unet(rt, variant, &resolved)?;
        let te_key = self.load_text_encoder(rt, variant, &resolved)?;
        let clip = clip && self.clip_scorer(rt)?.is_some();
        let mut notes = self.notes.clone();
        notes.extend(self.take_unloaded());
        self.loaded_unet(&unet_key);
        let unet = &mut self.unets.last_mut().expect("just used").1;
        let text_encoder = if te_key == BASE_TEXT_ENCODER {
            &mut self.text_encoder
        } else {
            self.text_encoders
                .iter_mut()
                .find(|(k, _)| *k == te_key)
                .map(|(_, t)| t)
                .expect("loaded above")
        };
        let controlnet = controlnet.and_then(|name| {
            self.controlnets
                .iter_mut()
                .find(|(n, _)| n == name)
                .map(|(_, c)| c)
        });
        Ok(RunParts {
            controlnet,
            tokenizer: &self.tokenizer,
            text_encoder,
            unet,
            vae: &mut self.vae,
            vae_fp32: self.vae_fp32.as_mut(),
            geometry: &self.geometry,
            clip,
            notes,
            adapters: lora::applied(&resolved),
        })
    }
}

impl Model {
    /// Whether the folder has a preview decoder (`preview_decoder/model.onnx`; filesystem only).
    pub fn has_preview_decoder(&self) -> bool {
        PreviewDecoder::present(&self.root)
    }

    /// A new session of the folder's preview decoder, owned by the caller (the worker moves it
    /// to its preview thread), its creation time recorded as `preview_decoder`'s; `Ok(None)`
    /// when the folder has none.
    pub fn load_preview_decoder(&mut self, rt: &Runtime) -> eyre::Result<Option<PreviewDecoder>> {
        if !self.has_preview_decoder() {
            return Ok(None);
        }
        let file = component_file(&self.root, PREVIEW_DECODER_FOLDER)?;
        let start = Instant::now();
        let decoder = PreviewDecoder::load(rt, &file)?;
        self.load_times
            .push((PREVIEW_DECODER_FOLDER.to_string(), start.elapsed()));
        Ok(Some(decoder))
    }

    /// The manifest's fit of the VAE's colour on the latent channels, when it records one.
    pub fn latent_rgb(&self) -> Option<&LatentRgbRecord> {
        self.manifest.as_ref()?.latent_rgb.as_ref()
    }

    /// The model folder.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl Model {
    /// The ControlNets this folder holds (`controlnet_<NAME>/model.onnx`), sorted.
    pub fn controlnet_names(&self) -> Vec<String> {
        controlnet::folder_controlnets(&self.root)
    }

    /// The ControlNet `name` (folder `controlnet_<name>/`), loaded on first use; an error
    /// listing the folder's ControlNets when it has none of that name.
    pub fn controlnet(&mut self, rt: &Runtime, name: &str) -> eyre::Result<&mut ControlNet> {
        if !self.controlnets.iter().any(|(n, _)| n == name) {
            let folder = format!("{}{name}", controlnet::CONTROLNET_PREFIX);
            let file = self.root.join(&folder).join("model.onnx");
            if !file.is_file() {
                return Err(eyre!(unknown_controlnet(&self.root, name)));
            }
            let start = Instant::now();
            let loaded = ControlNet::load(rt, &file)?;
            self.load_times.push((folder, start.elapsed()));
            self.controlnets.push((name.to_string(), loaded));
        }
        Ok(self
            .controlnets
            .iter_mut()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c)
            .expect("loaded above"))
    }
}

/// No ControlNet `name` in `root`: what it has, and how to add one.
pub fn unknown_controlnet(root: &Path, name: &str) -> Fixable {
    let have = controlnet::folder_controlnets(root);
    let has = if have.is_empty() {
        "it has none".to_string()
    } else {
        format!("it has {}", have.join(", "))
    };
    Fixable::new(
        format!(
            "the model folder {} has no ControlNet {name} (no {}{name}/model.onnx); {has}",
            root.display(),
            controlnet::CONTROLNET_PREFIX
        ),
        format!(
            "pass one of its ControlNets to --controlnet, or export one into the model: models/export.py --controlnet {name}=SOURCE (a hub id such as lllyasviel/control_v11p_sd15_canny, or a diffusers ControlNetModel folder)"
        ),
    )
}

#[cfg(test)]
impl Model {
    /// The UNet folders loaded now, least recently used first.
    pub(crate) fn loaded_unets(&self) -> Vec<&str> {
        self.unets.iter().map(|(f, _)| f.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_least_recently_used_unets_make_room() {
        let gib = 1u64 << 30;
        // No budget: nothing is unloaded.
        assert_eq!(unets_to_unload(&[4 * gib, 4 * gib], 4 * gib, 0), 0);
        // 10 GiB for 3.4 GiB fp32 UNets: two stay, the third pushes out the oldest.
        let unet = 34 * gib / 10;
        assert_eq!(unets_to_unload(&[unet], unet, 10 * gib), 0);
        assert_eq!(unets_to_unload(&[unet, unet], unet, 10 * gib), 1);
        assert_eq!(unets_to_unload(&[unet, unet, unet], unet, 10 * gib), 2);
        // Bigger than the whole budget: everything else goes, and it loads anyway.
        assert_eq!(unets_to_unload(&[gib, gib], 11 * gib, 10 * gib), 2);
    }

    /// The embedded tiny model on the CPU wheel.
    fn tiny_on_cpu() -> (crate::runtime::Runtime, Model) {
        let root = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
        let rt = crate::runtime::Runtime::init(
            &crate::runtime::SearchPlan::new(None, Some(&root)),
            crate::runtime::Device::Cpu,
        )
        .unwrap();
        let model = Model::open(&rt, &root.join("models/tiny"), default_variants()).unwrap();
        (rt, model)
    }

    #[test]
    fn the_unet_budget_unloads_the_oldest_unet_and_says_so() {
        let (rt, mut model) = tiny_on_cpu();
        // Room for one tiny UNet (3.3 MiB), not two.
        model.unet_budget = 5 << 20;
        model.unet(&rt, "base").unwrap();
        model.unet(&rt, "lcm").unwrap();
        assert_eq!(model.loaded_unets(), ["unet_lcm"]);
        let notes = model.take_unloaded();
        assert_eq!(notes.len(), 1);
        assert!(
            notes[0].contains("unloaded the UNet unet ") && notes[0].contains("unet_budget_mib"),
            "{notes:?}"
        );
        // Room for two: using one moves it last, so the other is the one to go.
        model.unet_budget = 8 << 20;
        model.unet(&rt, "base").unwrap();
        model.unet(&rt, "lcm").unwrap();
        assert_eq!(model.loaded_unets(), ["unet", "unet_lcm"]);
        model.unet(&rt, "style").unwrap();
        assert_eq!(model.loaded_unets(), ["unet_lcm", "unet_style"]);
        assert!(model.take_unloaded()[0].contains("the UNet unet "));
    }

    use super::*;

    #[test]
    fn a_run_out_of_memory_names_the_call_and_its_size_and_other_errors_keep_the_file() {
        let gpu = MemoryContext {
            gpu: true,
            memory_limit_mib: 0,
        };
        let file = Path::new("/m/sd15/unet/model.onnx");
        let oom = run_error(
            gpu,
            "running the UNet unet at 512×512 (batch 2)",
            file,
            "Non-zero status code returned while running Conv node. Status Message: CUDA error cudaErrorMemoryAllocation:out of memory",
        );
        let text = format!("{oom:#}");
        assert!(
            text.starts_with("out of GPU memory while running the UNet unet at 512×512 (batch 2)\nONNX Runtime: CUDA error cudaErrorMemoryAllocation:out of memory\nFix: "),
            "{text}"
        );
        let other = run_error(
            gpu,
            "running the UNet unet at 512×512 (batch 2)",
            file,
            "Got invalid dimensions for input: sample",
        );
        assert_eq!(
            other.to_string(),
            "running the UNet unet at 512×512 (batch 2): /m/sd15/unet/model.onnx"
        );
        assert_eq!(
            other.root_cause().to_string(),
            "Got invalid dimensions for input: sample"
        );
    }

    #[test]
    fn run_messages_give_the_image_size_in_pixels() {
        let (rt, mut model) = tiny_on_cpu();
        let unet = model.unet(&rt, "lcm").unwrap();
        assert_eq!(
            unet.doing(&[2, 4, 64, 64]),
            "running the UNet unet_lcm at 512×512 (batch 2)"
        );
        assert_eq!(
            unet.doing(&[1, 4, 8, 12]),
            "running the UNet unet_lcm at 96×64 (batch 1)"
        );
    }

    fn manifest(json: &str) -> Manifest {
        Manifest::parse(json).unwrap()
    }

    #[test]
    fn variants_take_the_manifests_text_encoder_and_gain_its_extra_variants() {
        let m = manifest(
            r#"{"variants": {
                "base": {"loras": [], "unet": "unet", "text_encoder": "text_encoder"},
                "lcm": {"loras": [{"name": "lcm", "weight": 1.0}], "unet": "unet_lcm", "text_encoder": "text_encoder"},
                "style": {"loras": [{"name": "style", "weight": 1.0}], "unet": "unet_style", "text_encoder": "text_encoder_style"},
                "mix": {"loras": [{"name": "lcm", "weight": 1.0}, {"name": "style", "weight": 0.8}], "unet": "unet_mix", "text_encoder": "text_encoder_mix"}
            }}"#,
        );
        let merged = merge_manifest_variants(default_variants(), &m);
        let style = merged.iter().find(|v| v.name == "style").unwrap();
        assert_eq!(style.text_encoder_folder(), "text_encoder_style");
        assert_eq!(
            style.label, "pixel-art style LoRA",
            "config's label is kept"
        );
        let lcm = merged.iter().find(|v| v.name == "lcm").unwrap();
        assert_eq!(lcm.text_encoder_folder(), "text_encoder");
        // lcm_style is configured but not in this manifest: left as configured.
        let lcm_style = merged.iter().find(|v| v.name == "lcm_style").unwrap();
        assert_eq!(lcm_style.text_encoder, None);
        // The manifest-only variant comes last, labelled by its LoRAs.
        let mix = merged.last().unwrap();
        assert_eq!(merged.len(), default_variants().len() + 1);
        assert_eq!(
            (mix.name.as_str(), mix.folder.as_str(), mix.label.as_str()),
            ("mix", "unet_mix", "lcm 1 + style 0.8")
        );
        assert_eq!(mix.text_encoder_folder(), "text_encoder_mix");
    }

    #[test]
    fn a_text_encoder_named_in_config_wins_and_name_clashes_fall_back_to_the_folder() {
        let mut vs = default_variants();
        vs[2].text_encoder = Some("te_mine".into());
        let m = manifest(
            r#"{"variants": {
                "style": {"loras": [], "unet": "unet_style", "text_encoder": "text_encoder_style"},
                "lcm": {"loras": [{"name": "lcm", "weight": 0.5}], "unet": "unet_lcm_half"}
            }}"#,
        );
        let merged = merge_manifest_variants(vs, &m);
        assert_eq!(merged[2].text_encoder_folder(), "te_mine");
        let extra = merged.last().unwrap();
        assert_eq!(extra.name, "unet_lcm_half", "\"lcm\" is taken by config");
        assert_eq!(extra.text_encoder_folder(), "text_encoder");
    }
}
