//! Opening what config.toml names: ONNX Runtime with its provider and options, the model
//! folder in force (`--model-dir`, else `model.dir`, else the embedded micro model: the
//! checkout's, or the one packaged in the wheel) and the model in it; and finding speedscape's
//! own files (the wheel's data first when it is one). Config itself is data; everything that touches the library or the disk to
//! turn it into live objects is here.

use std::path::{Path, PathBuf};

use color_eyre::eyre::eyre;

use crate::config::Config;
use crate::error::Fixable;
use crate::models::{self, Model, ModelKind};
use crate::runtime::{Device, Runtime};

/// Loads ONNX Runtime for `device` (else `runtime.device`) with the config's options.
pub fn runtime(config: &Config, device: Option<Device>) -> color_eyre::Result<Runtime> {
    Runtime::init_with(
        &config.search_plan(),
        device.unwrap_or(config.runtime.device),
        config.runtime_options(),
    )
}

/// Opens the model folder `dir` with the config's variants, scheduler config choice, UNet
/// memory budget and VAE decoder precision.
pub fn model(config: &Config, rt: &Runtime, dir: &Path) -> color_eyre::Result<Model> {
    let mut model = Model::open_with(rt, dir, config.variants(), config.model.scheduler_config)?;
    model.unet_budget = match config.model.unet_budget_mib {
        0 => models::default_unet_budget(rt.provider.is_gpu()),
        mib => mib << 20,
    };
    model.use_vae(rt, config.model.vae_precision)?;
    Ok(model)
}

/// The model folder in force and where it was named.
#[derive(Debug, Clone)]
pub struct ModelChoice {
    pub dir: PathBuf,
    /// What it holds (from its manifest).
    pub kind: ModelKind,
    /// Where it was named: `--model-dir`, `model.dir in <file>`, or the embedded micro model
    /// (the checkout's, or the wheel's packaged one).
    pub source: String,
}

/// The model folder to use: `override_dir`, else `model.dir`, else the embedded micro model;
/// with what it holds and where it was named.
pub fn model_choice(
    config: &Config,
    override_dir: Option<&Path>,
) -> color_eyre::Result<ModelChoice> {
    let (dir, source) = if let Some(d) = override_dir {
        models::check_model_dir(d, "--model-dir")?;
        (d.to_path_buf(), "--model-dir".to_string())
    } else if let Some(d) = &config.model.dir {
        let file = config.path.as_deref().unwrap_or(Path::new("config.toml"));
        let named = format!("model.dir in {}", file.display());
        models::check_model_dir(d, &named)?;
        (d.clone(), named)
    } else {
        let dir = embedded_model_dir("micro")?;
        let source = match crate::install::wheel() {
            Some(w) if dir.starts_with(&w.data) => {
                "the packaged micro model of the speedscape wheel (no model.dir configured)"
                    .to_string()
            }
            _ => "the embedded micro model of the checkout (no model.dir configured)".to_string(),
        };
        (dir, source)
    };
    let kind = ModelKind::of_folder(&dir);
    Ok(ModelChoice { dir, kind, source })
}

/// The model folder to use and what it holds ([`model_choice`] without its source).
pub fn model_dir(
    config: &Config,
    override_dir: Option<&Path>,
) -> color_eyre::Result<(PathBuf, ModelKind)> {
    model_choice(config, override_dir).map(|c| (c.dir, c.kind))
}

/// What the model in force holds (see [`model_dir`]); `sd15` when there is none (starting it
/// then says why).
pub fn model_kind(config: &Config, override_dir: Option<&Path>) -> ModelKind {
    model_dir(config, override_dir).map_or(ModelKind::Sd15, |(_, kind)| kind)
}

/// Where an embedded model (`micro`, the default; `tiny`, random weights for parity tests)
/// lives: `models/<name>` in one of the [`install_roots`].
pub fn embedded_model_dir(name: &str) -> color_eyre::Result<PathBuf> {
    install_roots()
        .iter()
        .map(|r| r.join("models").join(name))
        .find(|d| d.join("unet").join("model.onnx").is_file())
        .ok_or_else(|| {
            eyre!(Fixable::new(
                format!(
                    "no model configured and the embedded {name} model (models/{name}) was not found"
                ),
                "run from the speedscape checkout or reinstall the wheel (`pip install --force-reinstall speedscape`), or set model.dir in config.toml / --model-dir",
            ))
        })
}

/// A file speedscape ships (`assets/controls/micro-star.png`, relative to the checkout), found
/// in the first of the [`install_roots`] that has it; `None` when none does.
pub fn asset(relative: &Path) -> Option<PathBuf> {
    install_roots()
        .iter()
        .map(|r| r.join(relative))
        .find(|p| p.is_file())
}

/// Where speedscape's own files are looked for, in order: the wheel's data (when the binary
/// came from one: its files match the binary, whatever folder it runs in), the working
/// directory, the source tree the binary was built from, and the binary's folder and its
/// parents (an install or a `target/<profile>/` beside the checkout).
fn install_roots() -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Some(wheel) = crate::install::wheel() {
        roots.push(wheel.data);
    }
    if let Ok(cwd) = std::env::current_dir() {
        roots.push(cwd);
    }
    roots.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    if let Ok(exe) = std::env::current_exe() {
        roots.extend(exe.ancestors().skip(1).take(4).map(Path::to_path_buf));
    }
    roots
}
