//! `speedscape models` (what a model folder holds) and `speedscape models verify` (re-hash
//! every file the manifest lists, run every ONNX graph once, check the scheduler config).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use color_eyre::eyre::{bail, eyre};
use ndarray::{Array3, Array4};
use serde::Serialize;

use crate::config::Config;
use crate::models::manifest::{Manifest, human_bytes, sha256_file};
use crate::models::{
    BASE_TEXT_ENCODER, ClipTokenizer, ModelGeometry, SchedulerReport, TextEncoder, Unet,
    VaeDecoder, Variant, export_fix, merge_manifest_variants, read_json_opt,
};
use crate::rng::RngSource;
use crate::runtime::tensor;
use crate::runtime::{Device, Provider, Runtime};

/// Where the README explains exporting real weights.
pub const README_SECTION: &str = "README \"Real SD v1.5 on a GPU box\"";

const NO_MANIFEST: &str = "no manifest.json: not made by models/export.py (an optimum-cli export works for exercises without LoRA)";

#[derive(Debug, Clone, Serialize)]
pub struct ManifestSummary {
    pub format: String,
    pub base_source: Option<String>,
    pub base_revision: Option<String>,
    pub created: Option<String>,
    pub dtype: Option<String>,
    pub optimize: Option<String>,
    pub exporter_version: Option<String>,
    /// `sd15` | `sd2` | `sd-turbo`, and the facts the exporter read it from (`None`: not
    /// recorded, an export from before the field).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub family_evidence: Vec<String>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ComponentInfo {
    pub folder: String,
    /// `text_encoder` | `unet` | `vae_decoder` | `vae_encoder` (from the manifest, else the name).
    pub kind: Option<String>,
    /// From the manifest; `unknown` without one.
    pub dtype: String,
    /// Size on disk.
    pub bytes: u64,
    /// Whether `model.onnx` is there.
    pub present: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoraInfo {
    pub name: String,
    pub weight: f64,
    pub source: Option<String>,
    pub revision: Option<String>,
}

/// A ControlNet the folder offers by name (`--controlnet NAME`, a run's `control`).
#[derive(Debug, Clone, Serialize)]
pub struct ControlNetInfo {
    pub name: String,
    /// Its folder (`controlnet_edge`).
    pub folder: String,
    /// Size on disk.
    pub bytes: u64,
    /// Its down-block residuals, as the manifest records them (the mid block's comes on top);
    /// `None` without a manifest record.
    pub residuals: Option<u64>,
    /// Where it was exported from (hub id or folder), as the manifest records it.
    pub source: Option<String>,
}

/// An adapter the folder offers by name for run-time LoRA (`--lora NAME=WEIGHT`).
#[derive(Debug, Clone, Serialize)]
pub struct AdapterInfo {
    pub name: String,
    /// Its file, relative to the model folder (`loras/style.safetensors`).
    pub file: String,
    pub bytes: u64,
    /// SHA-256 of the file, lower-case hex (`None`: it could not be read).
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VariantInfo {
    pub name: String,
    pub label: String,
    pub unet: String,
    pub text_encoder: String,
    pub present: bool,
    /// Folders this variant needs that have no model.onnx.
    pub missing: Vec<String>,
    /// From the manifest (empty without one).
    pub loras: Vec<LoraInfo>,
    /// How it runs when it is a one-step UNet (the manifest's `one_step` record), in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub one_step: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExportCheck {
    pub folder: String,
    pub provider: Option<String>,
    pub max_abs_err: Option<f64>,
    pub tolerance: Option<f64>,
    pub passed: Option<bool>,
}

/// The manifest's file table against the disk, by size only.
#[derive(Debug, Clone, Serialize)]
pub struct SizeCheck {
    pub listed: usize,
    pub missing: Vec<String>,
    /// `(path, manifest bytes, disk bytes)`.
    pub size_differs: Vec<(String, u64, u64)>,
}

impl SizeCheck {
    pub fn ok(&self) -> bool {
        self.missing.is_empty() && self.size_differs.is_empty()
    }
}

/// What `speedscape models` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Inventory {
    pub path: String,
    pub tiny_model: bool,
    pub kind: crate::models::ModelKind,
    /// The micro model's world: what its prompts may say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub knows: Option<Vec<String>>,
    pub exists: bool,
    /// Why the folder cannot be shown, and the fix (when it does not exist or is unreadable).
    pub error: Option<String>,
    pub manifest: Option<ManifestSummary>,
    pub components: Vec<ComponentInfo>,
    pub variants: Vec<VariantInfo>,
    /// The adapters of its `loras/` folder, for run-time LoRA.
    pub adapters: Vec<AdapterInfo>,
    /// Its ControlNets (`controlnet_<NAME>/`), for `--controlnet`.
    pub controlnets: Vec<ControlNetInfo>,
    pub checks: Vec<ExportCheck>,
    pub files: Option<SizeCheck>,
    pub scheduler: Option<SchedulerReport>,
    /// What keeps this folder from making images (a required component or the tokenizer
    /// missing, a scheduler config speedscape cannot use), each with its fix.
    pub problems: Vec<String>,
}

fn folder_bytes(dir: &Path) -> u64 {
    walk(dir)
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

/// Every file under `dir`, sorted.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.is_file() {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root)
        .unwrap_or(p)
        .components()
        .map(|c| c.as_os_str().to_string_lossy().to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// Component folders: every folder with a model.onnx, the manifest's components, and the three
/// every model needs; in a stable order (text encoders, UNets, VAE).
fn component_folders(root: &Path, manifest: Option<&Manifest>) -> Vec<ComponentInfo> {
    let mut names: BTreeSet<String> = ["text_encoder", "unet", "vae_decoder"]
        .into_iter()
        .map(String::from)
        .collect();
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten() {
            if e.path().join("model.onnx").is_file() {
                names.insert(e.file_name().to_string_lossy().to_string());
            }
        }
    }
    if let Some(m) = manifest {
        names.extend(m.components.iter().map(|(f, _)| f.clone()));
    }
    let mut out: Vec<ComponentInfo> = names
        .into_iter()
        .map(|folder| {
            let c = manifest.and_then(|m| m.component(&folder));
            let kind = c
                .and_then(|c| c.kind.clone())
                .or_else(|| ComponentKind::of_folder(&folder).map(|k| k.name().to_string()));
            ComponentInfo {
                dtype: c
                    .and_then(|c| c.dtype.clone())
                    .unwrap_or_else(|| "unknown".into()),
                bytes: folder_bytes(&root.join(&folder)),
                present: root.join(&folder).join("model.onnx").is_file(),
                kind,
                folder,
            }
        })
        .collect();
    let rank = |c: &ComponentInfo| match c.kind.as_deref().and_then(ComponentKind::parse) {
        Some(ComponentKind::TextEncoder) => 0,
        Some(ComponentKind::Unet) => 1,
        Some(ComponentKind::VaeDecoder) => 2,
        Some(ComponentKind::VaeEncoder) => 3,
        Some(ComponentKind::ControlNet) => 4,
        Some(ComponentKind::PreviewDecoder) => 5,
        Some(ComponentKind::ClipImageEncoder | ComponentKind::Judge) | None => 6,
    };
    out.sort_by(|a, b| {
        (
            rank(a),
            a.folder != BASE_TEXT_ENCODER && a.folder != "unet",
            &a.folder,
        )
            .cmp(&(
                rank(b),
                b.folder != BASE_TEXT_ENCODER && b.folder != "unet",
                &b.folder,
            ))
    });
    out
}

fn variant_infos(
    root: &Path,
    variants: &[Variant],
    manifest: Option<&Manifest>,
) -> Vec<VariantInfo> {
    variants
        .iter()
        .map(|v| {
            let missing: Vec<String> = [v.folder.as_str(), v.text_encoder_folder()]
                .into_iter()
                .filter(|f| !root.join(f).join("model.onnx").is_file())
                .map(String::from)
                .collect();
            let loras = manifest
                .and_then(|m| {
                    m.variant_by_unet(&v.folder).map(|(_, mv)| {
                        mv.loras
                            .iter()
                            .map(|l| {
                                let src = m.loras.get(&l.name);
                                LoraInfo {
                                    name: l.name.clone(),
                                    weight: l.weight,
                                    source: src.and_then(|s| s.source.clone()),
                                    revision: src.and_then(|s| s.revision.clone()),
                                }
                            })
                            .collect()
                    })
                })
                .unwrap_or_default();
            let one_step = manifest
                .and_then(|m| m.variant_by_unet(&v.folder)?.1.one_step.as_ref())
                .map(|o| {
                    let field =
                        |k: &str| o.scheduler.get(k).and_then(|x| x.as_str()).unwrap_or("?");
                    format!(
                        "{} at {} spacing, 1 to {} steps, guidance {}; distilled from {}",
                        field("_class_name"),
                        field("timestep_spacing"),
                        o.steps,
                        o.guidance,
                        o.teacher
                    )
                });
            VariantInfo {
                name: v.name.clone(),
                label: v.label.clone(),
                unet: v.folder.clone(),
                text_encoder: v.text_encoder_folder().to_string(),
                present: missing.is_empty(),
                missing,
                loras,
                one_step,
            }
        })
        .collect()
}

/// The adapters of the folder's `loras/` ([`crate::lora::folder_adapters`]), each file's size
/// and SHA-256 (LoRA files are small beside the model: hashing them is quick).
fn adapter_infos(root: &Path) -> Vec<AdapterInfo> {
    crate::lora::folder_adapters(root)
        .into_iter()
        .map(|a| AdapterInfo {
            file: rel(root, &a.file),
            bytes: std::fs::metadata(&a.file).map_or(0, |m| m.len()),
            sha256: sha256_file(&a.file).ok(),
            name: a.name,
        })
        .collect()
}

/// The folder's ControlNets ([`crate::models::controlnet::folder_controlnets`]), each with its
/// size and, from manifest.json's `controlnets` record (read as JSON: cheap, no session), its
/// residual count and source.
fn controlnet_infos(root: &Path) -> Vec<ControlNetInfo> {
    let records = read_json_opt(&root.join("manifest.json"))
        .ok()
        .flatten()
        .and_then(|m| m.get("controlnets").cloned());
    crate::models::controlnet::folder_controlnets(root)
        .into_iter()
        .map(|name| {
            let folder = format!("{}{name}", crate::models::controlnet::CONTROLNET_PREFIX);
            let record = records.as_ref().and_then(|r| r.get(&name));
            let field = |key: &str| record.and_then(|r| r.get(key));
            ControlNetInfo {
                bytes: folder_bytes(&root.join(&folder)),
                residuals: field("residuals").and_then(serde_json::Value::as_u64),
                source: field("source")
                    .and_then(serde_json::Value::as_str)
                    .map(String::from),
                folder,
                name,
            }
        })
        .collect()
}

fn size_check(root: &Path, m: &Manifest) -> SizeCheck {
    let mut missing = Vec::new();
    let mut size_differs = Vec::new();
    for (path, entry) in &m.files {
        match std::fs::metadata(root.join(path)) {
            Ok(md) if md.is_file() => {
                if md.len() != entry.bytes {
                    size_differs.push((path.clone(), entry.bytes, md.len()));
                }
            }
            _ => missing.push(path.clone()),
        }
    }
    SizeCheck {
        listed: m.files.len(),
        missing,
        size_differs,
    }
}

fn scheduler_report(root: &Path, config: &Config) -> Result<SchedulerReport, String> {
    let file = root.join("scheduler").join("scheduler_config.json");
    let cfg = read_json_opt(&file).map_err(|e| format!("{e:#}"))?;
    let family = crate::models::Manifest::read(root)
        .ok()
        .flatten()
        .and_then(|m| m.family);
    Ok(SchedulerReport::new(
        &file,
        cfg.as_ref(),
        config.model.scheduler_config,
        family.as_deref(),
    ))
}

fn missing_folder_message(root: &Path) -> String {
    crate::models::missing_dir_message(root, None).to_string()
}

/// What the model folder `root` holds, by reading files only (no sessions; of the files, only
/// the LoRA adapters' are hashed).
pub fn inventory(config: &Config, root: &Path, kind: crate::models::ModelKind) -> Inventory {
    let mut inv = Inventory {
        path: root.display().to_string(),
        tiny_model: kind == crate::models::ModelKind::Tiny,
        kind,
        knows: None,
        exists: root.is_dir(),
        error: None,
        manifest: None,
        components: Vec::new(),
        variants: Vec::new(),
        adapters: Vec::new(),
        controlnets: Vec::new(),
        checks: Vec::new(),
        files: None,
        scheduler: None,
        problems: Vec::new(),
    };
    if !inv.exists {
        inv.error = Some(missing_folder_message(root));
        return inv;
    }
    let manifest = match Manifest::read(root) {
        Ok(m) => m,
        Err(e) => {
            inv.error = Some(format!("{e}"));
            None
        }
    };
    let variants = match &manifest {
        Some(m) => merge_manifest_variants(config.variants(), m),
        None => config.variants(),
    };
    if let Some(m) = &manifest {
        inv.knows = m.micro.as_ref().map(|r| r.grammar.describe());
        inv.manifest = Some(ManifestSummary {
            format: m.format.clone(),
            base_source: m.base.as_ref().and_then(|b| b.source.clone()),
            base_revision: m.base.as_ref().and_then(|b| b.revision.clone()),
            created: m.created.clone(),
            dtype: m.dtype.clone(),
            optimize: m.optimize.clone(),
            exporter_version: m.exporter.as_ref().and_then(|e| e.version.clone()),
            family: m.family.clone(),
            family_evidence: m.family_evidence.clone(),
            notes: m.notes.clone(),
        });
        inv.checks = m
            .components
            .iter()
            .filter_map(|(folder, c)| {
                c.check.as_ref().map(|k| ExportCheck {
                    folder: folder.clone(),
                    provider: k.provider.clone(),
                    max_abs_err: k.max_abs_err,
                    tolerance: k.tolerance,
                    passed: k.passed,
                })
            })
            .collect();
        inv.files = Some(size_check(root, m));
    }
    inv.components = component_folders(root, manifest.as_ref());
    inv.variants = variant_infos(root, &variants, manifest.as_ref());
    inv.adapters = adapter_infos(root);
    inv.controlnets = controlnet_infos(root);
    match scheduler_report(root, config) {
        Ok(r) => inv.scheduler = Some(r),
        Err(e) => inv.error = Some(e),
    }
    inv.problems = problems(root, config);
    inv
}

/// What keeps the folder `root` from making images, read from files only: a required
/// component or the tokenizer missing, scheduler values speedscape's schedulers do not take.
fn problems(root: &Path, config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for folder in [BASE_TEXT_ENCODER, "unet", "vae_decoder"] {
        if let Err(e) = crate::models::component_file(root, folder) {
            out.push(format!("{e}"));
        }
    }
    if let Err(e) = ClipTokenizer::from_dir(&root.join("tokenizer")) {
        out.push(format!("{e:#}"));
    }
    let file = root.join("scheduler").join("scheduler_config.json");
    if config.model.scheduler_config == crate::models::SchedulerConfigSource::File
        && let Ok(Some(cfg)) = read_json_opt(&file)
        && let Err(e) = crate::models::scheduler_status::check_values(&file, &cfg)
    {
        out.push(format!("{e}"));
    }
    out
}

fn opt(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("?")
}

impl Inventory {
    /// Whether `speedscape models` should exit 0.
    pub fn ok(&self) -> bool {
        self.exists && self.error.is_none() && self.problems.is_empty()
    }

    /// The text `speedscape models` prints: the folder, its manifest, components, variants,
    /// the manifest's export checks, its files by size, the scheduler config, problems.
    pub fn render(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!("model       {}{}\n", self.path, self.kind.aside()));
        for (i, line) in self.knows.iter().flatten().enumerate() {
            let head = if i == 0 { "  knows" } else { "" };
            s.push_str(&format!("{head:12}{line}\n"));
        }
        if !self.exists {
            if let Some(e) = &self.error {
                s.push_str(&format!("{e}\n"));
            }
            return s;
        }
        self.render_manifest(&mut s);
        self.render_components(&mut s);
        self.render_variants(&mut s);
        self.render_adapters(&mut s);
        self.render_controlnets(&mut s);
        self.render_checks(&mut s);
        self.render_files(&mut s);
        self.render_problems(&mut s);
        s
    }

    fn render_manifest(&self, s: &mut String) {
        let Some(m) = &self.manifest else {
            s.push_str(&format!("manifest    {NO_MANIFEST}\n"));
            return;
        };
        s.push_str(&format!(
            "manifest    {} by models/export.py version {}, created {}\n",
            m.format,
            opt(&m.exporter_version),
            opt(&m.created)
        ));
        s.push_str(&format!(
            "  base      {} (revision {})\n",
            opt(&m.base_source),
            m.base_revision.as_deref().unwrap_or("none")
        ));
        s.push_str(&format!(
            "  dtype     {}, optimize {}\n",
            opt(&m.dtype),
            opt(&m.optimize)
        ));
        if let Some(family) = &m.family {
            s.push_str(&format!(
                "  family    {family} ({})\n",
                m.family_evidence.join("; ")
            ));
        }
        for n in &m.notes {
            s.push_str(&format!("  note      {n}\n"));
        }
    }

    fn render_components(&self, s: &mut String) {
        s.push_str("components\n");
        for c in &self.components {
            let state = if c.present {
                human_bytes(c.bytes)
            } else {
                "MISSING (no model.onnx)".into()
            };
            s.push_str(&format!(
                "  {:<22} {:<13} {:<8} {state}\n",
                c.folder,
                c.kind.as_deref().unwrap_or("?"),
                c.dtype
            ));
        }
    }

    fn render_variants(&self, s: &mut String) {
        s.push_str("variants\n");
        for v in &self.variants {
            let state = if v.present {
                "present".to_string()
            } else {
                format!("MISSING {}", v.missing.join(", "))
            };
            s.push_str(&format!(
                "  {:<12} {:<24} unet {:<18} text encoder {:<18} {state}\n",
                v.name, v.label, v.unet, v.text_encoder
            ));
            if let Some(o) = &v.one_step {
                s.push_str(&format!("      one-step: {o}\n"));
            }
            for l in &v.loras {
                s.push_str(&format!(
                    "      LoRA {} × {} from {}{}\n",
                    l.name,
                    l.weight,
                    opt(&l.source),
                    l.revision
                        .as_ref()
                        .map(|r| format!(" @ {r}"))
                        .unwrap_or_default()
                ));
            }
        }
        if self.variants.iter().any(|v| !v.present) {
            s.push_str(&format!(
                "  missing variants cannot run; base-only exercises work.\n  Fix: {}\n",
                export_fix(Path::new(&self.path))
            ));
        }
    }

    /// The adapters `--lora NAME=WEIGHT` takes by name (the folder's `loras/`).
    fn render_adapters(&self, s: &mut String) {
        if self.adapters.is_empty() {
            s.push_str("adapters    none (no loras/ folder): --lora takes a .safetensors file\n");
            return;
        }
        s.push_str("adapters (for --lora NAME=WEIGHT, fused at run time)\n");
        for a in &self.adapters {
            let sha = a
                .sha256
                .as_deref()
                .map_or("unreadable", |h| crate::report::table::short_sha(h));
            s.push_str(&format!(
                "  {:<12} {:<28} {:>9}  sha256 {sha}\n",
                a.name,
                a.file,
                human_bytes(a.bytes)
            ));
        }
    }

    /// The ControlNets `--controlnet NAME` takes (the folder's `controlnet_<NAME>/`).
    fn render_controlnets(&self, s: &mut String) {
        if self.controlnets.is_empty() {
            s.push_str("controlnets none: --controlnet needs one; export it into the model with models/export.py --controlnet NAME=SOURCE\n");
            return;
        }
        s.push_str("controlnets (for --controlnet NAME)\n");
        for c in &self.controlnets {
            let residuals = c.residuals.map_or_else(
                || "residuals not recorded".to_string(),
                |n| format!("{n} down-block residuals + mid"),
            );
            let source = c
                .source
                .as_ref()
                .map(|src| format!(", from {src}"))
                .unwrap_or_default();
            s.push_str(&format!(
                "  {:<12} {:<28} {:>9}  {residuals}{source}\n",
                c.name,
                format!("{}/", c.folder),
                human_bytes(c.bytes)
            ));
        }
    }

    /// The manifest's export checks (ONNX Runtime against torch), when it has any.
    fn render_checks(&self, s: &mut String) {
        if self.checks.is_empty() {
            return;
        }
        s.push_str("export checks (ONNX Runtime vs torch, from the manifest)\n");
        for c in &self.checks {
            let verdict = match c.passed {
                Some(true) => "passed",
                Some(false) => "FAILED",
                None => "?",
            };
            s.push_str(&format!(
                "  {:<22} max abs err {} on {} (tolerance {}): {verdict}\n",
                c.folder,
                c.max_abs_err
                    .map(|e| format!("{e:.1e}"))
                    .unwrap_or("?".into()),
                opt(&c.provider),
                c.tolerance.map(|t| format!("{t:e}")).unwrap_or("?".into()),
            ));
        }
    }

    fn render_files(&self, s: &mut String) {
        match &self.files {
            Some(f) if f.ok() => s.push_str(&format!(
                "files       {} listed: sizes match manifest (hashes: `speedscape models verify`)\n",
                f.listed
            )),
            Some(f) => {
                s.push_str(&format!("files       {} listed: ", f.listed));
                s.push_str("DIFFER from the manifest\n");
                for m in &f.missing {
                    s.push_str(&format!("  missing   {m}\n"));
                }
                for (p, want, got) in &f.size_differs {
                    s.push_str(&format!(
                        "  size      {p}: {got} bytes on disk, manifest says {want}\n"
                    ));
                }
            }
            None => s.push_str("files       no manifest: nothing to compare sizes against\n"),
        }
    }

    /// The scheduler config's line, then what keeps the folder from working.
    fn render_problems(&self, s: &mut String) {
        if let Some(r) = &self.scheduler {
            let tag = if r.warning { "WARNING " } else { "" };
            s.push_str(&format!("scheduler   {tag}{}\n", r.message));
        }
        if let Some(e) = &self.error
            && self.exists
        {
            s.push_str(&format!("error       {e}\n"));
        }
        for p in &self.problems {
            s.push_str(&format!(
                "ERROR       {}\n",
                p.replace('\n', "\n            ")
            ));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// verify
// ---------------------------------------------------------------------------------------------

/// The manifest's file table against the disk, by hash.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HashCheck {
    pub listed: usize,
    pub bytes: u64,
    pub missing: Vec<String>,
    /// `(path, manifest bytes, disk bytes)`.
    pub size_differs: Vec<(String, u64, u64)>,
    pub hash_differs: Vec<String>,
    /// Files on disk the manifest does not list (information only).
    pub unlisted: Vec<String>,
}

/// One ONNX graph loaded and run once.
#[derive(Debug, Clone, Serialize)]
pub struct SessionCheck {
    pub folder: String,
    pub kind: String,
    pub passed: bool,
    /// Output shape and range, or the error.
    pub detail: String,
}

/// What `speedscape models verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub path: String,
    pub manifest: bool,
    pub files: Option<HashCheck>,
    pub provider: Option<Provider>,
    pub sessions: Vec<SessionCheck>,
    pub scheduler: Option<SchedulerReport>,
    /// Each a cause and a fix; any makes the verdict fail.
    pub failures: Vec<String>,
    pub warnings: Vec<String>,
    pub info: Vec<String>,
    pub passed: bool,
}

impl VerifyReport {
    pub fn verdict(&self) -> String {
        if self.passed {
            let checks = self.files.as_ref().map(|f| f.listed).unwrap_or(0) + self.sessions.len();
            format!(
                "verdict: PASSED ({checks} checks{})",
                if self.warnings.is_empty() {
                    String::new()
                } else {
                    format!(", {} warning(s)", self.warnings.len())
                }
            )
        } else {
            format!(
                "verdict: FAILED ({} problem(s); first: {})",
                self.failures.len(),
                self.failures
                    .first()
                    .map(|f| f.lines().next().unwrap_or(""))
                    .unwrap_or("")
            )
        }
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!("model       {}\n", self.path));
        match &self.files {
            Some(f) => {
                let bad = f.missing.len() + f.size_differs.len() + f.hash_differs.len();
                s.push_str(&format!(
                    "files       {} listed ({}): {}\n",
                    f.listed,
                    human_bytes(f.bytes),
                    if bad == 0 {
                        "all hashes match the manifest".to_string()
                    } else {
                        format!("{bad} differ from the manifest")
                    }
                ));
                for p in &f.missing {
                    s.push_str(&format!("  MISSING        {p}\n"));
                }
                for (p, want, got) in &f.size_differs {
                    s.push_str(&format!(
                        "  SIZE DIFFERS   {p}: {got} bytes on disk, manifest says {want}\n"
                    ));
                }
                for p in &f.hash_differs {
                    s.push_str(&format!(
                        "  HASH DIFFERS   {p}: sha256 is not the manifest's\n"
                    ));
                }
                for p in &f.unlisted {
                    s.push_str(&format!("  not in the manifest (info only): {p}\n"));
                }
            }
            None => s.push_str(
                "files       no manifest.json: nothing to hash against (sessions and scheduler are still checked)\n",
            ),
        }
        if let Some(p) = self.provider {
            s.push_str(&format!("provider    {p}\n"));
        }
        for c in &self.sessions {
            s.push_str(&format!(
                "  {:<22} {:<13} {} {}\n",
                c.folder,
                c.kind,
                if c.passed { "ok    " } else { "FAILED" },
                c.detail.replace('\n', " ")
            ));
        }
        if let Some(r) = &self.scheduler {
            let tag = if r.warning { "WARNING " } else { "" };
            s.push_str(&format!("scheduler   {tag}{}\n", r.message));
        }
        for w in &self.warnings {
            if self
                .scheduler
                .as_ref()
                .is_some_and(|r| r.warning && r.message == *w)
            {
                continue;
            }
            s.push_str(&format!("warning     {w}\n"));
        }
        for i in &self.info {
            s.push_str(&format!("info        {i}\n"));
        }
        for f in &self.failures {
            s.push_str(&format!("FAILED      {f}\n"));
        }
        s.push_str(&self.verdict());
        s.push('\n');
        s
    }
}

fn hash_check(root: &Path, m: &Manifest, progress: &mut dyn FnMut(String)) -> HashCheck {
    let mut h = HashCheck {
        listed: m.files.len(),
        ..HashCheck::default()
    };
    let n = m.files.len();
    for (i, (path, entry)) in m.files.iter().enumerate() {
        let file = root.join(path);
        progress(format!(
            "[{}/{n}] {path} ({}) ",
            i + 1,
            human_bytes(entry.bytes)
        ));
        let len = match std::fs::metadata(&file) {
            Ok(md) if md.is_file() => md.len(),
            _ => {
                progress("MISSING\n".into());
                h.missing.push(path.clone());
                continue;
            }
        };
        if len != entry.bytes {
            progress(format!("SIZE DIFFERS ({len} bytes)\n"));
            h.size_differs.push((path.clone(), entry.bytes, len));
            continue;
        }
        h.bytes += len;
        match sha256_file(&file) {
            Ok(hex) if hex.eq_ignore_ascii_case(&entry.sha256) => progress("ok\n".into()),
            Ok(_) => {
                progress("HASH DIFFERS\n".into());
                h.hash_differs.push(path.clone());
            }
            Err(e) => {
                progress(format!("unreadable: {e}\n"));
                h.missing.push(path.clone());
            }
        }
    }
    for p in walk(root) {
        let r = rel(root, &p);
        if r != crate::models::manifest::MANIFEST_FILE && !m.files.contains_key(&r) {
            h.unlisted.push(r);
        }
    }
    h
}

/// The smallest and largest of `values`, or an error when any is NaN or infinite.
fn finite_range(values: impl IntoIterator<Item = f32>) -> color_eyre::Result<(f32, f32)> {
    let (mut n, mut bad) = (0usize, 0usize);
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for v in values {
        n += 1;
        if v.is_finite() {
            (lo, hi) = (lo.min(v), hi.max(v));
        } else {
            bad += 1;
        }
    }
    if bad > 0 {
        bail!("{bad} of {n} output values are NaN or inf");
    }
    Ok((lo, hi))
}

fn check_shape(got: &[usize], want: &[usize]) -> color_eyre::Result<()> {
    if got != want {
        bail!("output shape {got:?}, expected {want:?}");
    }
    Ok(())
}

/// The component kinds `models verify` runs (a manifest's `kind`, else the folder's name says).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ComponentKind {
    TextEncoder,
    Unet,
    VaeDecoder,
    VaeEncoder,
    ClipImageEncoder,
    ControlNet,
    PreviewDecoder,
    Judge,
}

impl ComponentKind {
    const ALL: [ComponentKind; 8] = [
        ComponentKind::TextEncoder,
        ComponentKind::Unet,
        ComponentKind::VaeDecoder,
        ComponentKind::VaeEncoder,
        ComponentKind::ClipImageEncoder,
        ComponentKind::ControlNet,
        ComponentKind::PreviewDecoder,
        ComponentKind::Judge,
    ];

    /// Its name in manifests and reports.
    fn name(self) -> &'static str {
        match self {
            ComponentKind::TextEncoder => "text_encoder",
            ComponentKind::Unet => "unet",
            ComponentKind::VaeDecoder => "vae_decoder",
            ComponentKind::VaeEncoder => "vae_encoder",
            ComponentKind::ClipImageEncoder => "clip_image_encoder",
            ComponentKind::ControlNet => "controlnet",
            ComponentKind::PreviewDecoder => crate::models::PREVIEW_DECODER_FOLDER,
            ComponentKind::Judge => crate::models::JUDGE_FOLDER,
        }
    }

    /// The kind named `name` (see [`ComponentKind::name`]).
    fn parse(name: &str) -> Option<ComponentKind> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The kind a component folder's name implies: `text_encoder*`, `unet*`, `vae_decoder`,
    /// `vae_encoder`, the CLIP scorer's folder.
    fn of_folder(folder: &str) -> Option<ComponentKind> {
        if folder.starts_with("text_encoder") {
            Some(ComponentKind::TextEncoder)
        } else if folder.starts_with("unet") {
            Some(ComponentKind::Unet)
        } else if folder == "vae_decoder" {
            Some(ComponentKind::VaeDecoder)
        } else if folder == "vae_encoder" {
            Some(ComponentKind::VaeEncoder)
        } else if folder == crate::models::CLIP_FOLDER {
            Some(ComponentKind::ClipImageEncoder)
        } else if folder.starts_with(crate::models::controlnet::CONTROLNET_PREFIX) {
            Some(ComponentKind::ControlNet)
        } else if folder == crate::models::PREVIEW_DECODER_FOLDER {
            Some(ComponentKind::PreviewDecoder)
        } else if folder == crate::models::JUDGE_FOLDER {
            Some(ComponentKind::Judge)
        } else {
            None
        }
    }
}

/// What one probe found: an output of the expected shape, every value finite. It reads
/// `{output} {shape}[ {input}], all finite, in [lo, hi][; CLIP score … of a grey image]`.
#[derive(Debug, Clone, PartialEq)]
struct Probed {
    /// The output checked (`last_hidden_state`, `out_sample`, …).
    output: String,
    shape: Vec<usize>,
    /// What the graph ran on, where worth saying (`at t=500`, `from a 64×64 image`).
    input: Option<String>,
    /// The smallest and largest output value.
    range: (f32, f32),
    /// The CLIP score of a mid-grey image against the probe prompt (the CLIP scorer's probe).
    clip_score: Option<f64>,
}

impl std::fmt::Display for Probed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?}", self.output, self.shape)?;
        if let Some(input) = &self.input {
            write!(f, " {input}")?;
        }
        let (lo, hi) = self.range;
        write!(f, ", all finite, in [{lo:.3}, {hi:.3}]")?;
        if let Some(score) = self.clip_score {
            write!(f, "; CLIP score {score:.2} of a grey image")?;
        }
        Ok(())
    }
}

/// Runs component graphs once each on small inputs, at the model's geometry.
struct Probe<'a> {
    rt: &'a Runtime,
    root: &'a Path,
    geometry: ModelGeometry,
    /// Context width for UNet checks when the graph does not say: the text encoder's once it
    /// has been probed, else the manifest's.
    context_dim: Option<usize>,
    tokenizer: Option<ClipTokenizer>,
}

const PROBE_PROMPT: &str = "a small cottage on a hillside at sunset";

impl<'a> Probe<'a> {
    /// A probe of `root` at its geometry (SD v1.5's when unreadable), with the manifest's
    /// context width; a tokenizer that does not load is one of `failures`.
    fn new(
        rt: &'a Runtime,
        root: &'a Path,
        manifest: Option<&Manifest>,
        failures: &mut Vec<String>,
    ) -> Probe<'a> {
        let geometry = ModelGeometry::read(root).unwrap_or(ModelGeometry {
            sample_size: 64,
            vae_scale_factor: 8,
            scaling_factor: 0.18215,
            latent_channels: 4,
            unet_downsamples: 3,
        });
        let tokenizer = match ClipTokenizer::from_dir(&root.join("tokenizer")) {
            Ok(t) => Some(t),
            Err(e) => {
                failures.push(format!("{e:#}"));
                None
            }
        };
        Probe {
            rt,
            root,
            geometry,
            context_dim: manifest
                .and_then(|m| m.geometry.as_ref())
                .and_then(|g| g.cross_attention_dim),
            tokenizer,
        }
    }

    /// Loads `folder`'s graph as a `kind` and runs it once.
    fn run(&mut self, folder: &str, kind: ComponentKind) -> color_eyre::Result<Probed> {
        let file = self.root.join(folder).join("model.onnx");
        match kind {
            ComponentKind::TextEncoder => self.text_encoder(&file),
            ComponentKind::Unet => self.unet(&file),
            ComponentKind::VaeDecoder => self.vae_decoder(&file),
            ComponentKind::VaeEncoder => self.vae_encoder(&file),
            ComponentKind::ClipImageEncoder => self.clip_image_encoder(),
            ComponentKind::ControlNet => self.controlnet(&file),
            ComponentKind::PreviewDecoder => self.preview_decoder(&file),
            ComponentKind::Judge => self.judge(),
        }
    }

    /// Seeded latents at the model's sample size through the preview decoder: an image at the
    /// full size, in [0, 1].
    fn preview_decoder(&self, file: &Path) -> color_eyre::Result<Probed> {
        let (s, c) = (self.geometry.sample_size, self.geometry.latent_channels);
        let px = s * self.geometry.vae_scale_factor;
        let latents = RngSource::TorchCpu.generator(0).randn([1, c, s, s]);
        let mut decoder = crate::models::PreviewDecoder::load(self.rt, file)?;
        let out = decoder.decode(latents.view())?;
        check_shape(out.shape(), &[1, 3, px, px])?;
        let range = finite_range(out.iter().copied())?;
        if range.0 < -1e-3 || range.1 > 1.0 + 1e-3 {
            bail!(
                "the preview decoder's image is not in [0, 1] (found [{:.3}, {:.3}])",
                range.0,
                range.1
            );
        }
        Ok(Probed {
            output: "image".into(),
            shape: out.shape().to_vec(),
            input: Some(format!("from seeded {s}×{s} latents")),
            range,
            clip_score: None,
        })
    }

    /// The judge on a mid-grey image: its three heads' logits, with the model's grammar naming
    /// the classes (a judge without a grammar to read prompts by cannot be used).
    fn judge(&self) -> color_eyre::Result<Probed> {
        let grammar = Manifest::read(self.root)?
            .and_then(|m| m.micro)
            .map(|m| m.grammar)
            .ok_or_else(|| {
                eyre!(crate::error::Fixable::new(
                    "the folder has a judge but its manifest has no micro grammar to name its classes",
                    "the judge belongs to the micro model; remove judge/ from this folder",
                ))
            })?;
        let mut judge = crate::models::Judge::open(self.rt, self.root, &grammar)?
            .ok_or_else(|| eyre!("judge/model.onnx went missing"))?;
        let n = judge.size as u32;
        let grey = image::RgbImage::from_pixel(n, n, image::Rgb([128, 128, 128]));
        let logits = judge.logits(&grey)?;
        let read = judge.read(&grey)?;
        Ok(Probed {
            output: "colour, shape, background".into(),
            shape: logits.iter().map(Vec::len).collect(),
            input: Some(format!(
                "logits of a grey {n}×{n} image (read: {} {} on {})",
                read.colour, read.shape, read.background
            )),
            range: finite_range(logits.iter().flatten().copied())?,
            clip_score: None,
        })
    }

    /// The probe prompt's 77 token ids.
    fn prompt_ids(&self) -> color_eyre::Result<Vec<i64>> {
        let tok = self
            .tokenizer
            .as_ref()
            .ok_or_else(|| eyre!("the tokenizer did not load"))?;
        Ok(tok.encode(PROBE_PROMPT)?.ids_i64())
    }

    /// The probe prompt's hidden states; their width becomes the UNet checks' context width.
    fn text_encoder(&mut self, file: &Path) -> color_eyre::Result<Probed> {
        let ids = self.prompt_ids()?;
        let mut te = TextEncoder::load(self.rt, file)?;
        let out = te.encode(&ids, 1)?;
        let d = te.hidden_dim.unwrap_or(out.shape()[2]);
        check_shape(out.shape(), &[1, ids.len(), d])?;
        self.context_dim.get_or_insert(d);
        Ok(Probed {
            output: "last_hidden_state".into(),
            shape: out.shape().to_vec(),
            input: None,
            range: finite_range(out.iter().copied())?,
            clip_score: None,
        })
    }

    /// One noise prediction on seeded noise at t=500, at the model's sample size.
    fn unet(&self, file: &Path) -> color_eyre::Result<Probed> {
        let (s, c) = (self.geometry.sample_size, self.geometry.latent_channels);
        let mut noise = RngSource::TorchCpu.generator(0);
        let mut unet = Unet::load(self.rt, file)?;
        let d = unet.context_dim().or(self.context_dim).unwrap_or(768);
        let sample = noise.randn([1, c, s, s]);
        let ctx: Array3<f32> = noise
            .randn([1, 1, 77, d])
            .into_shape_with_order((1, 77, d))?;
        let out = unet.predict(sample.view(), 500.0, ctx.view())?;
        check_shape(out.shape(), &[1, c, s, s])?;
        Ok(Probed {
            output: "out_sample".into(),
            shape: out.shape().to_vec(),
            input: Some("at t=500".into()),
            range: finite_range(out.iter().copied())?,
            clip_score: None,
        })
    }

    /// One ControlNet call on seeded noise, text and control image at t=500, scale 1, at the
    /// model's sample size; then its residuals through the base UNet, which must take them
    /// (otherwise no run can use this ControlNet).
    fn controlnet(&self, file: &Path) -> color_eyre::Result<Probed> {
        let (s, c) = (self.geometry.sample_size, self.geometry.latent_channels);
        let px = s * self.geometry.vae_scale_factor;
        let mut noise = RngSource::TorchCpu.generator(0);
        let mut controlnet = crate::models::ControlNet::load(self.rt, file)?;
        let d = controlnet.context_dim().or(self.context_dim).unwrap_or(768);
        let sample = noise.randn([1, c, s, s]);
        let ctx: Array3<f32> = noise
            .randn([1, 1, 77, d])
            .into_shape_with_order((1, 77, d))?;
        // A control image in [0, 1], as the pipeline feeds it.
        let image = noise
            .randn([1, 3, px, px])
            .mapv(|v| (v * 0.25 + 0.5).clamp(0.0, 1.0));
        let cond = controlnet.cond_input(image.view(), 1)?;
        let residuals = controlnet.residuals(sample.view(), 500.0, ctx.view(), &cond, 1.0, None)?;
        let mut unet = Unet::load(self.rt, &self.root.join("unet").join("model.onnx"))?;
        if unet.residual_count() != controlnet.residual_count() {
            bail!(crate::error::Fixable::new(
                format!(
                    "the ControlNet gives {} residuals, the base UNet (unet/) takes {}: no run can use it",
                    controlnet.residual_count(),
                    unet.residual_count()
                ),
                "re-export the model with models/export.py --controlnet NAME=SOURCE (every UNet then takes the residuals)",
            ));
        }
        let out =
            unet.predict_controlled(sample.view(), 500.0, ctx.view(), Some(&residuals), None)?;
        check_shape(out.shape(), &[1, c, s, s])?;
        Ok(Probed {
            output: "out_sample".into(),
            shape: out.shape().to_vec(),
            input: Some(format!(
                "of unet/ with its {} residuals, at t=500",
                controlnet.residual_count()
            )),
            range: finite_range(out.iter().copied())?,
            clip_score: None,
        })
    }

    /// One decode of seeded latents (at most 8×8).
    fn vae_decoder(&self, file: &Path) -> color_eyre::Result<Probed> {
        let (s, c) = (self.geometry.sample_size, self.geometry.latent_channels);
        let f = self.geometry.vae_scale_factor;
        let mut noise = RngSource::TorchCpu.generator(0);
        let mut vae = VaeDecoder::load(self.rt, file)?;
        let n = s.min(8);
        let latents: Array4<f32> = noise.randn([1, c, n, n]);
        let out = vae.decode(latents.view())?;
        check_shape(out.shape(), &[1, 3, n * f, n * f])?;
        Ok(Probed {
            output: "sample".into(),
            shape: out.shape().to_vec(),
            input: None,
            range: finite_range(out.iter().copied())?,
            clip_score: None,
        })
    }

    /// One encode of a seeded image that makes 8×8 latents: the latents, or their mean and
    /// log-variance.
    fn vae_encoder(&self, file: &Path) -> color_eyre::Result<Probed> {
        let c = self.geometry.latent_channels;
        let f = self.geometry.vae_scale_factor;
        let mut noise = RngSource::TorchCpu.generator(0);
        let mut session = self.rt.session(file)?;
        let inputs = tensor::inputs(&session);
        let input = inputs
            .iter()
            .find(|i| i.name == "sample")
            .or_else(|| inputs.first())
            .filter(|i| i.rank() == 4)
            .cloned()
            .ok_or_else(|| {
                eyre!(
                    "{} is not a VAE encoder: expected input sample float[batch,3,H,W]",
                    file.display()
                )
            })?;
        let px = 8 * f;
        let image = noise.randn([1, 3, px, px]).mapv(|v| v.clamp(-1.0, 1.0));
        let x = tensor::float_input(image.view().into_dyn(), input.elem)?;
        let out_name = tensor::outputs(&session)
            .first()
            .map(|o| o.name.clone())
            .unwrap_or_default();
        // The error's own text, as ONNX Runtime words it.
        let outputs = session
            .run(ort::inputs![input.name.as_str() => x])
            .map_err(|x| eyre!("{x}"))?;
        let out = tensor::float_output(&outputs[0])?;
        let shape = out.shape().to_vec();
        if !(shape == [1, c, 8, 8] || shape == [1, 2 * c, 8, 8]) {
            bail!(
                "output shape {shape:?}, expected [1, {c} or {}, 8, 8]",
                2 * c
            );
        }
        Ok(Probed {
            output: out_name,
            shape,
            input: Some(format!("from a {px}×{px} image")),
            range: finite_range(out.iter().copied())?,
            clip_score: None,
        })
    }

    /// A mid-grey 64×64 image against the probe prompt's pooler_output (the base text
    /// encoder's), through the folder's CLIP scorer.
    fn clip_image_encoder(&self) -> color_eyre::Result<Probed> {
        let ids = self.prompt_ids()?;
        let te_file = self.root.join(BASE_TEXT_ENCODER).join("model.onnx");
        let mut te = TextEncoder::load(self.rt, &te_file)?;
        let pooled = te.encode_pooled(&ids, 1)?;
        let mut scorer = crate::models::ClipScorer::open(self.rt, self.root)?
            .ok_or_else(|| eyre!("no clip_image_encoder/ folder"))?;
        let image = image::RgbImage::from_pixel(64, 64, image::Rgb([128, 128, 128]));
        let pixels = scorer.preprocess(&image);
        let (img, txt) = scorer.embed(pixels.view(), pooled.view())?;
        let p = scorer.config.projection_dim;
        check_shape(img.shape(), &[1, p])?;
        check_shape(txt.shape(), &[1, p])?;
        let score = crate::models::clip::clip_score(img.row(0), txt.row(0));
        Ok(Probed {
            output: "image_embeds and text_embeds".into(),
            shape: vec![1, p],
            input: None,
            range: finite_range(img.iter().chain(txt.iter()).copied())?,
            clip_score: Some(score.score),
        })
    }
}

/// Re-hashes every file `root/manifest.json` lists, loads and runs every ONNX graph once on
/// `device`, and checks the scheduler config. `progress` gets the hashing progress.
pub fn verify(
    config: &Config,
    root: &Path,
    device: Device,
    progress: &mut dyn FnMut(String),
) -> VerifyReport {
    let mut r = VerifyReport::new(root);
    if !root.is_dir() {
        r.failures.push(missing_folder_message(root));
        return r;
    }
    let manifest = match Manifest::read(root) {
        Ok(m) => m,
        Err(e) => {
            r.failures.push(format!("{e}"));
            None
        }
    };
    r.manifest = manifest.is_some();
    if let Some(m) = &manifest {
        r.files = Some(verify_files(root, m, progress, &mut r.failures));
    }
    verify_scheduler(config, root, &mut r);
    verify_variants(config, root, manifest.as_ref(), &mut r.warnings);
    verify_sessions(config, root, device, manifest.as_ref(), progress, &mut r);
    r.passed = r.failures.is_empty();
    r
}

impl VerifyReport {
    /// Nothing checked yet, not passed.
    fn new(root: &Path) -> VerifyReport {
        VerifyReport {
            path: root.display().to_string(),
            manifest: false,
            files: None,
            provider: None,
            sessions: Vec::new(),
            scheduler: None,
            failures: Vec::new(),
            warnings: Vec::new(),
            info: Vec::new(),
            passed: false,
        }
    }

    /// One component's session check: its line, and on failure the failure (cause and fix).
    fn record_session(&mut self, folder: &str, kind: String, result: color_eyre::Result<Probed>) {
        match result {
            Ok(probed) => self.sessions.push(SessionCheck {
                folder: folder.to_string(),
                kind,
                passed: true,
                detail: probed.to_string(),
            }),
            Err(e) => {
                let e = format!("{e:#}");
                self.failures.push(format!("{folder}: {e}"));
                self.sessions.push(SessionCheck {
                    folder: folder.to_string(),
                    kind,
                    passed: false,
                    detail: e.lines().next().unwrap_or("").to_string(),
                });
            }
        }
    }
}

/// The manifest's files by hash; each one missing, resized or changed is a failure with its
/// fix.
fn verify_files(
    root: &Path,
    m: &Manifest,
    progress: &mut dyn FnMut(String),
    failures: &mut Vec<String>,
) -> HashCheck {
    let h = hash_check(root, m, progress);
    for p in &h.missing {
        failures.push(format!(
            "{p} is listed in manifest.json but missing\nFix: re-export the model (python models/export.py --out {}) or copy the file again",
            root.display()
        ));
    }
    for (p, want, got) in &h.size_differs {
        failures.push(format!(
            "{p} has {got} bytes, manifest.json says {want} (truncated or replaced)\nFix: copy the file again from the export, or re-export"
        ));
    }
    for p in &h.hash_differs {
        failures.push(format!(
            "{p} does not match its sha256 in manifest.json (corrupted or changed)\nFix: copy the file again from the export, or re-export"
        ));
    }
    h
}

/// The scheduler config: its report (a warning when speedscape falls back), a failure when
/// it is unreadable or, when in force, holds values the schedulers do not take.
fn verify_scheduler(config: &Config, root: &Path, r: &mut VerifyReport) {
    match scheduler_report(root, config) {
        Ok(s) => {
            if s.warning {
                r.warnings.push(s.message.clone());
            }
            r.scheduler = Some(s);
            let file = root.join("scheduler").join("scheduler_config.json");
            if config.model.scheduler_config == crate::models::SchedulerConfigSource::File
                && let Ok(Some(cfg)) = read_json_opt(&file)
                && let Err(e) = crate::models::scheduler_status::check_values(&file, &cfg)
            {
                r.failures.push(format!("{e}"));
            }
        }
        Err(e) => r.failures.push(format!(
            "{e}\nFix: restore scheduler/scheduler_config.json from the export"
        )),
    }
}

/// A warning for each variant that cannot run (a folder it needs has no model.onnx).
fn verify_variants(
    config: &Config,
    root: &Path,
    manifest: Option<&Manifest>,
    warnings: &mut Vec<String>,
) {
    let variants = match manifest {
        Some(m) => merge_manifest_variants(config.variants(), m),
        None => config.variants(),
    };
    for v in variant_infos(root, &variants, manifest) {
        if !v.present {
            warnings.push(format!(
                "variant {:?} cannot run: no {} (base-only exercises work). Fix: {}",
                v.name,
                v.missing.join(", "),
                export_fix(root)
            ));
        }
    }
}

/// Opens ONNX Runtime on `device` and runs every component folder's graph once; a model
/// exported for CUDA only fails on the CPU with every session marked not run.
fn verify_sessions(
    config: &Config,
    root: &Path,
    device: Device,
    manifest: Option<&Manifest>,
    progress: &mut dyn FnMut(String),
    r: &mut VerifyReport,
) {
    let components = component_folders(root, manifest);
    let rt = match crate::open::runtime(config, Some(device)) {
        Ok(rt) => rt,
        Err(e) => {
            r.failures.push(format!("{e}"));
            return;
        }
    };
    r.provider = Some(rt.provider);
    r.info.extend(rt.notes.iter().cloned());
    let cuda_only = manifest
        .and_then(|m| m.optimize.as_deref())
        .is_some_and(|o| o == "cuda");
    if cuda_only && rt.provider == Provider::Cpu {
        r.failures.push(format!(
            "this model was exported with optimize = \"cuda\": its graphs use CUDA-only fused operators and need the CUDA provider, but ONNX Runtime runs on {} here\nFix: run on the GPU box with onnxruntime-gpu (`SPEEDSCAPE_ORT_WHEEL='onnxruntime-gpu[cuda,cudnn]' scripts/setup.sh`, see README \"ONNX Runtime and the GPU\"), or export with --optimize none for the CPU",
            rt.provider
        ));
        r.sessions.extend(components.iter().map(|c| SessionCheck {
            folder: c.folder.clone(),
            kind: c.kind.clone().unwrap_or_default(),
            passed: false,
            detail: "not run: needs the CUDA provider".into(),
        }));
        return;
    }
    let mut probe = Probe::new(&rt, root, manifest, &mut r.failures);
    for c in &components {
        let kind = c.kind.clone().unwrap_or_default();
        let result = probe_component(&mut probe, root, c, &kind, progress);
        r.record_session(&c.folder, kind, result);
    }
}

/// Runs component `c` (of kind `kind`) once, telling `progress`; a folder without its
/// model.onnx, or of a kind verify does not know, fails.
fn probe_component(
    probe: &mut Probe,
    root: &Path,
    c: &ComponentInfo,
    kind: &str,
    progress: &mut dyn FnMut(String),
) -> color_eyre::Result<Probed> {
    if !c.present {
        let fix = if kind == ComponentKind::Unet.name() && c.folder != "unet" {
            export_fix(root)
        } else {
            format!(
                "re-export the model (python models/export.py --out {}, see {README_SECTION})",
                root.display()
            )
        };
        bail!(crate::error::Fixable::new(
            format!("no {}", root.join(&c.folder).join("model.onnx").display()),
            fix,
        ));
    }
    progress(format!("running {} ({kind}) ... ", c.folder));
    let result = ComponentKind::parse(kind)
        .ok_or_else(|| eyre!("unknown component kind {kind:?}"))
        .and_then(|k| probe.run(&c.folder, k));
    progress(if result.is_ok() { "ok\n" } else { "FAILED\n" }.into());
    result
}
