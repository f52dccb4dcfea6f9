//! `manifest.json`: what `models/export.py` wrote into a model folder (format
//! `speedscape-model/1`): provenance, dtype, per-component checks, variants and a file table.
//!
//! Parsed leniently: later exporter versions add fields, so unknown keys are ignored and
//! everything but the essentials has a default.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use eyre::{WrapErr, eyre};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::micro::MicroRecord;
use super::ordered::ordered_map;
use crate::error::Fixable;

/// The file name inside a model folder.
pub const MANIFEST_FILE: &str = "manifest.json";

/// What `models/export.py` records about a model folder.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Manifest {
    /// `speedscape-model/1`.
    pub format: String,
    /// UTC time stamp of the export.
    pub created: Option<String>,
    /// Which script wrote the folder, how it was called, with which libraries.
    pub exporter: Option<Exporter>,
    /// Where the base pipeline's weights came from.
    pub base: Option<BaseSource>,
    /// The model family the exporter read from the configs: `sd15`, `sd2` or `sd-turbo`
    /// (`None`: an export from before the field, SD v1.5's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// The facts `family` was read from (text width, linear projections, scheduler, hub id).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub family_evidence: Vec<String>,
    /// LoRA adapters by name.
    pub loras: BTreeMap<String, LoraSource>,
    /// `fp32` | `fp16`.
    pub dtype: Option<String>,
    /// `none` | `cuda` (CUDA-only fused operators).
    pub optimize: Option<String>,
    /// Sizes the exporter read from the pipeline's configs.
    pub geometry: Option<Geometry>,
    /// Remarks the exporter made (fallbacks taken, skipped steps), in the order made.
    pub notes: Vec<String>,
    /// Component folders (`unet`, `unet_lcm`, `text_encoder`, …) in the order written.
    #[serde(deserialize_with = "ordered_map")]
    pub components: Vec<(String, Component)>,
    /// Variants by name, in the order written (`base` first).
    #[serde(deserialize_with = "ordered_map")]
    pub variants: Vec<(String, ManifestVariant)>,
    /// Every file of the folder but manifest.json itself, by relative path.
    pub files: BTreeMap<String, FileEntry>,
    /// The trained micro model's record (grammar, training, evaluation); see [`MicroRecord`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub micro: Option<MicroRecord>,
    /// The least-squares fit of the VAE decoder's colour on the latent channels, for the
    /// latent preview (see [`LatentRgbRecord`]); `None`: SD v1.5's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latent_rgb: Option<LatentRgbRecord>,
}

/// manifest.json's `latent_rgb`: the VAE decoder's colour in [-1, 1] as an affine map of the
/// latent channels, `v = bias + Σ_c latent_c · factors[c]` (RGB = clamp((v + 1) / 2, 0, 1)),
/// fitted by least squares on the model's own latents (the micro model's are not SD's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatentRgbRecord {
    /// Per latent channel, its contribution to (R, G, B).
    pub factors: Vec<[f32; 3]>,
    /// Added to every pixel's (R, G, B).
    #[serde(default)]
    pub bias: [f32; 3],
}

/// The exporter that wrote a folder (manifest.json's `exporter`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Exporter {
    /// The script, relative to the repository (`models/export.py`).
    pub script: Option<String>,
    /// The exporter's own version.
    pub version: Option<String>,
    /// The command line it ran with, `python` first.
    pub command: Vec<String>,
    /// The Python version it ran under (`3.11.9`).
    pub python: Option<String>,
    /// Library versions (`null` when not installed).
    pub libraries: BTreeMap<String, Option<String>>,
}

/// Where the base pipeline came from (manifest.json's `base`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct BaseSource {
    /// `hub` | `folder`.
    pub kind: Option<String>,
    /// The Hub repository id, or the folder (a label or its path); the random-weight tiny
    /// model's starts with `random-init`.
    pub source: Option<String>,
    /// The Hub commit; `None` for a folder.
    pub revision: Option<String>,
    /// SHA-256 of the source files that were read.
    pub sha256: BTreeMap<String, String>,
}

/// Where a LoRA adapter came from (an entry of manifest.json's `loras`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LoraSource {
    /// `hub` | `folder` | `file`.
    pub kind: Option<String>,
    /// The Hub repository id, or the local file's path (relative to the model folder when it
    /// lies inside it).
    pub source: Option<String>,
    /// The Hub commit; `None` for a local adapter.
    pub revision: Option<String>,
    /// The adapter's file name (relative to the Hub repository for a Hub adapter).
    pub file: Option<String>,
    /// SHA-256 of that file, lower-case hex.
    pub sha256: Option<String>,
    /// Its size in bytes.
    pub bytes: Option<u64>,
    /// `diffusers` | `kohya`.
    pub format: Option<String>,
    /// `unet`, `text_encoder`.
    pub components: Vec<String>,
    /// Where a copy of the adapter lies inside the model folder.
    pub copy: Option<String>,
}

/// Sizes of the exported pipeline (manifest.json's `geometry`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Geometry {
    /// The UNet's latent side, in latent cells (64 for SD v1.5).
    pub sample_size: Option<usize>,
    /// Pixels per latent cell (8 for SD v1.5).
    pub vae_scale_factor: Option<usize>,
    /// The native image side in pixels: `sample_size × vae_scale_factor`.
    pub image_size: Option<usize>,
    /// Width D of the text embeddings the UNet attends to (768 for SD v1.5).
    pub cross_attention_dim: Option<usize>,
}

/// One exported component folder (an entry of manifest.json's `components`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Component {
    /// `text_encoder` | `unet` | `vae_decoder` | `vae_encoder`.
    pub kind: Option<String>,
    /// The weights' precision: `fp32` | `fp16`.
    pub dtype: Option<String>,
    /// What was done to the graph after the torch export, in order.
    pub optimizations: Vec<Optimization>,
    /// Seconds the export of this component took.
    pub export_s: Option<f64>,
    /// Bytes of the folder (graph and external weights).
    pub bytes: Option<u64>,
    /// The exporter's ONNX Runtime vs torch comparison.
    pub check: Option<Check>,
}

/// One transformation of an exported graph (`float16`, onnxruntime's transformer fusions).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Optimization {
    /// What was done (`float16`, `onnxruntime.transformers fusions (unet)`).
    pub name: String,
    /// Fusions: how many operators of each kind the optimizer fused.
    pub fused_operators: Option<BTreeMap<String, u64>>,
    /// `float16`: the element type of the graph's inputs and outputs afterwards.
    pub io: Option<serde_json::Value>,
}

/// The exporter's comparison of ONNX Runtime against torch on random inputs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Check {
    /// The execution provider the graph ran on (`CPUExecutionProvider`).
    pub provider: Option<String>,
    /// The precision checked: `fp32` | `fp16`.
    pub dtype: Option<String>,
    /// Largest absolute difference over every case and output.
    pub max_abs_err: Option<f64>,
    /// Largest difference relative to the reference's magnitude (at least 1).
    pub max_rel_err: Option<f64>,
    /// The bound `max_rel_err` had to stay within.
    pub tolerance: Option<f64>,
    /// Whether `max_rel_err ≤ tolerance`.
    pub passed: Option<bool>,
    /// Which graph was checked when it is not the one written (the unfused graph, where the
    /// CUDA-fused one needs onnxruntime-gpu).
    pub graph: Option<serde_json::Value>,
    /// Per output and input set: the inputs' description and its `max_abs_err`.
    pub cases: Vec<serde_json::Value>,
}

/// What a one-step UNet is called where the user reads it.
pub const ONE_STEP_LABEL: &str = "one-step (turbo)";

/// A UNet variant: base weights plus LoRAs fused at fixed weights (manifest.json's
/// `variants`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ManifestVariant {
    /// The LoRAs fused into it, in order; empty for the base.
    pub loras: Vec<LoraWeight>,
    /// UNet folder (`unet_lcm`).
    pub unet: String,
    /// Text encoder folder (`text_encoder`, or `text_encoder_<variant>` when fused).
    pub text_encoder: Option<String>,
    /// A UNet distilled for one to a few steps without guidance (the micro model's
    /// `unet_turbo`): how it is run. `None`: a UNet of the base's sampling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub one_step: Option<OneStepRecord>,
}

/// How a one-step (adversarially or otherwise distilled) UNet is run, as its exporter recorded it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct OneStepRecord {
    /// The most steps it was distilled for (SD-Turbo: 4).
    pub steps: usize,
    /// The scheduler config it runs with, in place of the folder's (SD-Turbo's:
    /// EulerDiscreteScheduler, `timestep_spacing: "trailing"`).
    pub scheduler: serde_json::Value,
    /// The guidance scale it was distilled for (0: none, one UNet call a step).
    pub guidance: f32,
    /// What it was distilled from, for the user (`base, DPM-Solver++ 20 at cfg 7.5`).
    pub teacher: String,
}

/// A LoRA fused into a variant, and the weight it was fused at.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LoraWeight {
    /// Its key in [`Manifest::loras`].
    pub name: String,
    /// The scale its low-rank update was added at (1 = as trained).
    pub weight: f64,
}

/// One file of the folder as written (manifest.json's `files`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FileEntry {
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256, lower-case hex.
    pub sha256: String,
}

impl ManifestVariant {
    /// `lcm 1 + style 0.8`; `one-step (turbo)` for a one-step UNet; `no LoRA` for the base.
    pub(crate) fn label(&self) -> String {
        if self.one_step.is_some() {
            return ONE_STEP_LABEL.into();
        }
        if self.loras.is_empty() {
            return "no LoRA".into();
        }
        self.loras
            .iter()
            .map(|l| format!("{} {}", l.name, l.weight))
            .collect::<Vec<_>>()
            .join(" + ")
    }
}

impl Manifest {
    /// Reads `dir/manifest.json`: `None` when the folder has none.
    pub fn read(dir: &Path) -> eyre::Result<Option<Self>> {
        let path = dir.join(MANIFEST_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path)
            .wrap_err_with(|| format!("reading {}", path.display()))?;
        Self::parse(&text).map(Some).map_err(|e| {
            eyre!(Fixable::new(
                format!("{} is malformed: {e}", path.display()),
                "re-export the model with models/export.py, or delete manifest.json (speedscape then treats the folder as a plain Optimum export)",
            ))
        })
    }

    /// Parses the text of a manifest.
    pub(crate) fn parse(text: &str) -> eyre::Result<Self> {
        serde_json::from_str(text).map_err(|e| eyre!("{e}"))
    }

    /// What the folder holds: the micro model has a `micro` record, the random-weight tiny
    /// model says so in its base's source (`models/make_tiny.py`).
    pub(crate) fn kind(&self) -> ModelKind {
        let random = |b: &BaseSource| {
            b.source
                .as_deref()
                .is_some_and(|s| s.starts_with("random-init"))
        };
        if self.micro.is_some() {
            ModelKind::Micro
        } else if self.base.as_ref().is_some_and(random) {
            ModelKind::Tiny
        } else {
            ModelKind::Sd15
        }
    }

    /// The component whose folder is `folder` (`unet_lcm`).
    pub fn component(&self, folder: &str) -> Option<&Component> {
        self.components
            .iter()
            .find(|(f, _)| f == folder)
            .map(|(_, c)| c)
    }

    /// The manifest variant whose UNet is `folder`.
    pub fn variant_by_unet(&self, folder: &str) -> Option<(&str, &ManifestVariant)> {
        self.variants
            .iter()
            .find(|(_, v)| v.unet == folder)
            .map(|(n, v)| (n.as_str(), v))
    }
}

/// SHA-256 of a file as lower-case hex, read in 1 MiB chunks (files can be several GB).
pub fn sha256_file(path: &Path) -> eyre::Result<String> {
    let mut file =
        std::fs::File::open(path).wrap_err_with(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .wrap_err_with(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Bytes as a short human string (`3.1 MB`).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// What a model folder holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// An export of SD v1.5 (or a folder without a manifest).
    Sd15,
    /// The trained micro model.
    Micro,
    /// The random-weight tiny model: noise images.
    Tiny,
}

impl ModelKind {
    /// The kind of the folder `dir`, from its manifest.json; a folder without one (or with one
    /// that does not parse: opening the model says why) is taken for an SD v1.5 export.
    pub fn of_folder(dir: &Path) -> ModelKind {
        match Manifest::read(dir) {
            Ok(Some(m)) => m.kind(),
            _ => ModelKind::Sd15,
        }
    }

    /// What a line naming the model folder adds after it.
    pub fn aside(self) -> &'static str {
        match self {
            ModelKind::Sd15 => "",
            ModelKind::Micro => {
                " (the micro model: SD v1.5's structure trained on a small world of coloured shapes)"
            }
            ModelKind::Tiny => " (the tiny model: random weights, noise-like images)",
        }
    }
}

/// Prompts by model kind: config.toml's `prompts = { micro = "…" }` on an exercise or the sweep,
/// each replacing the `prompt` beside it on a model of that kind.
pub type ModelPrompts = std::collections::BTreeMap<ModelKind, String>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn tiny() -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join("models/tiny")
    }

    #[test]
    fn the_tiny_models_manifest_parses() {
        let m = Manifest::read(&tiny())
            .unwrap()
            .expect("models/tiny has one");
        assert_eq!(m.format, "speedscape-model/1");
        assert_eq!(m.dtype.as_deref(), Some("fp32"));
        assert_eq!(m.optimize.as_deref(), Some("none"));
        let geometry = m.geometry.as_ref().unwrap();
        assert_eq!(geometry.sample_size, Some(8));
        assert_eq!(geometry.vae_scale_factor, Some(8));
        let names: Vec<&str> = m.variants.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["base", "lcm", "style", "lcm_style"],
            "written order"
        );
        let (_, lcm_style) = &m.variants[3];
        assert_eq!(lcm_style.unet, "unet_lcm_style");
        assert_eq!(lcm_style.text_encoder.as_deref(), Some("text_encoder"));
        assert_eq!(lcm_style.label(), "lcm 1 + style 1");
        assert_eq!(m.loras["lcm"].components, ["unet"]);
        let unet = m.component("unet").unwrap();
        assert_eq!(unet.kind.as_deref(), Some("unet"));
        assert_eq!(unet.check.as_ref().unwrap().passed, Some(true));
        // The file table matches the disk, byte counts included.
        for (rel, entry) in &m.files {
            let len = std::fs::metadata(tiny().join(rel)).unwrap().len();
            assert_eq!(len, entry.bytes, "{rel}");
        }
        assert!(!m.files.contains_key(MANIFEST_FILE));
    }

    #[test]
    fn unknown_fields_are_ignored_and_a_missing_file_is_none() {
        let m = Manifest::parse(r#"{"format": "speedscape-model/9", "future": {"x": 1}, "variants": {"b": {"unet": "unet_b", "loras": [{"name": "b", "weight": 0.8}], "extra": true}}}"#).unwrap();
        assert_eq!(m.variants[0].1.label(), "b 0.8");
        assert!(m.files.is_empty());
        let dir = tempfile::tempdir().unwrap();
        assert!(Manifest::read(dir.path()).unwrap().is_none());
    }

    #[test]
    fn the_latent_rgb_fit_is_read_with_its_bias_and_absent_without_one() {
        let m = Manifest::parse(
            r#"{"latent_rgb": {"factors": [[0.1, 0.2, 0.3], [0, 0, 0], [-1, 0.5, 0], [0, 0, 2]], "bias": [0.13, 0.01, -0.2], "r2": 0.9}}"#,
        )
        .unwrap();
        let fit = m.latent_rgb.expect("recorded");
        assert_eq!(fit.factors.len(), 4);
        assert_eq!(fit.factors[2], [-1.0, 0.5, 0.0]);
        assert_eq!(fit.bias, [0.13, 0.01, -0.2]);
        // The bias defaults to zero; a folder without a fit has none (SD v1.5's is used).
        let m = Manifest::parse(r#"{"latent_rgb": {"factors": [[1, 0, 0]]}}"#).unwrap();
        assert_eq!(m.latent_rgb.unwrap().bias, [0.0; 3]);
        assert!(Manifest::parse("{}").unwrap().latent_rgb.is_none());
    }

    #[test]
    fn a_malformed_manifest_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MANIFEST_FILE), "{\"files\": 3}").unwrap();
        let err = format!("{}", Manifest::read(dir.path()).unwrap_err());
        assert!(err.contains("manifest.json is malformed"), "{err}");
        assert!(err.contains("Fix:"), "{err}");
    }

    #[test]
    fn sha256_matches_the_manifest() {
        let m = Manifest::read(&tiny()).unwrap().unwrap();
        let rel = "scheduler/scheduler_config.json";
        assert_eq!(sha256_file(&tiny().join(rel)).unwrap(), m.files[rel].sha256);
    }
}
