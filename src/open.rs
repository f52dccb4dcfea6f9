//! Opening what config.toml names: ONNX Runtime with its provider and options, the model
//! folder in force (`--model-dir`, else `model.dir`, else the embedded micro model) and the
//! model in it. Config itself is data; everything that touches the library or the disk to
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

/// Opens the model folder `dir` with the config's variants, scheduler config choice and UNet
/// memory budget.
pub fn model(config: &Config, rt: &Runtime, dir: &Path) -> color_eyre::Result<Model> {
    let mut model = Model::open_with(rt, dir, config.variants(), config.model.scheduler_config)?;
    model.unet_budget = match config.model.unet_budget_mib {
        0 => models::default_unet_budget(rt.provider.is_gpu()),
        mib => mib << 20,
    };
    Ok(model)
}

/// The model folder to use: `override_dir`, else `model.dir`, else the embedded micro model;
/// with what it holds (from its manifest).
pub fn model_dir(
    config: &Config,
    override_dir: Option<&Path>,
) -> color_eyre::Result<(PathBuf, ModelKind)> {
    let dir = if let Some(d) = override_dir {
        models::check_model_dir(d, "--model-dir")?;
        d.to_path_buf()
    } else if let Some(d) = &config.model.dir {
        let file = config.path.as_deref().unwrap_or(Path::new("config.toml"));
        models::check_model_dir(d, &format!("model.dir in {}", file.display()))?;
        d.clone()
    } else {
        embedded_model_dir("micro")?
    };
    let kind = ModelKind::of_folder(&dir);
    Ok((dir, kind))
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
                "run from the speedscape checkout, or set model.dir in config.toml / --model-dir",
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

/// Where speedscape's own files are looked for, in order: the working directory, the source
/// tree the binary was built from, and the binary's folder and its parents (an install or a
/// `target/<profile>/` beside the checkout).
fn install_roots() -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.push(cwd);
    }
    roots.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    if let Ok(exe) = std::env::current_exe() {
        roots.extend(exe.ancestors().skip(1).take(4).map(Path::to_path_buf));
    }
    roots
}
