//! Finding ONNX Runtime's shared library.
//!
//! speedscape links ONNX Runtime at run time (`ort`'s `load-dynamic`) from the PyPI wheel,
//! which ships `onnxruntime/capi/libonnxruntime.so.1.X.Y` and no plain `.so` name, so every
//! candidate is a full path. Discovery order: `runtime.onnxruntime` in config.toml,
//! `ORT_DYLIB_PATH`, the wheel of the active `python3`, then a `.venv` made by the README's
//! set-up (beside the config file, in the working directory, or above the executable).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where a candidate library path came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LibrarySource {
    /// `runtime.onnxruntime` in config.toml.
    Config,
    /// The `ORT_DYLIB_PATH` environment variable.
    EnvVar,
    /// The `onnxruntime` package of the active `python3`.
    Python,
    /// A `.venv` made by `scripts/setup.sh`.
    Venv(PathBuf),
}

impl std::fmt::Display for LibrarySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Config => f.write_str("runtime.onnxruntime in config.toml"),
            Self::EnvVar => f.write_str("ORT_DYLIB_PATH"),
            Self::Python => f.write_str("the onnxruntime wheel of the active python3"),
            Self::Venv(dir) => write!(f, "the venv at {}", dir.display()),
        }
    }
}

/// A library path to try, or the reason a source gave none.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub source: LibrarySource,
    pub path: Result<PathBuf, String>,
}

/// Where to look, beyond the environment.
#[derive(Debug, Clone, Default)]
pub struct SearchPlan {
    /// `runtime.onnxruntime` from config.toml, already resolved against the config's folder.
    pub configured: Option<PathBuf>,
    /// Folders that may hold a `.venv` (config folder, working directory, executable's ancestors).
    pub venv_roots: Vec<PathBuf>,
}

impl SearchPlan {
    /// The default plan: `.venv` beside the config file, in the working directory, and in
    /// any ancestor of the executable (so `target/release/speedscape` finds the repo's venv).
    pub fn new(configured: Option<PathBuf>, config_dir: Option<&Path>) -> Self {
        let mut roots = Vec::new();
        if let Some(dir) = config_dir {
            roots.push(dir.to_path_buf());
        }
        if let Ok(cwd) = std::env::current_dir() {
            roots.push(cwd);
        }
        if let Ok(exe) = std::env::current_exe() {
            roots.extend(exe.ancestors().skip(1).take(4).map(Path::to_path_buf));
        }
        let mut unique: Vec<PathBuf> = Vec::new();
        for r in roots {
            let r = r.canonicalize().unwrap_or(r);
            if !unique.contains(&r) {
                unique.push(r);
            }
        }
        Self {
            configured,
            venv_roots: unique,
        }
    }

    /// Every candidate, in discovery order. Sources that yield nothing say why.
    pub(crate) fn candidates(&self) -> Vec<Candidate> {
        let mut out = Vec::new();
        if let Some(p) = &self.configured {
            out.push(Candidate {
                source: LibrarySource::Config,
                path: Ok(p.clone()),
            });
        }
        match std::env::var_os("ORT_DYLIB_PATH") {
            Some(p) if !p.is_empty() => out.push(Candidate {
                source: LibrarySource::EnvVar,
                path: Ok(PathBuf::from(p)),
            }),
            _ => {}
        }
        out.push(Candidate {
            source: LibrarySource::Python,
            path: python_wheel_library("python3"),
        });
        for root in &self.venv_roots {
            let venv = root.join(".venv");
            if !venv.is_dir() {
                continue;
            }
            let path = venv_site_packages(&venv)
                .map(|sp| sp.join("onnxruntime").join("capi"))
                .ok_or_else(|| "no lib/python3*/site-packages in it".to_string())
                .and_then(|capi| highest_library_in(&capi));
            out.push(Candidate {
                source: LibrarySource::Venv(venv),
                path,
            });
        }
        out
    }
}

/// Asks `python` where its `onnxruntime` package lives and picks the library in `capi/`.
fn python_wheel_library(python: &str) -> Result<PathBuf, String> {
    let out = Command::new(python)
        .args([
            "-c",
            "import importlib.util as u, os; s = u.find_spec('onnxruntime'); \
             print(os.path.dirname(s.origin) if s and s.origin else '')",
        ])
        .output()
        .map_err(|e| format!("could not run {python}: {e}"))?;
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || dir.is_empty() {
        return Err(format!("{python} has no onnxruntime package"));
    }
    highest_library_in(&Path::new(&dir).join("capi"))
}

fn venv_site_packages(venv: &Path) -> Option<PathBuf> {
    let lib = std::fs::read_dir(venv.join("lib")).ok()?;
    lib.filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("python3"))
        })
        .map(|p| p.join("site-packages"))
        .find(|p| p.is_dir())
}

/// The `libonnxruntime.so.1.X.Y` with the highest version in `dir` (a wheel's `capi/`).
pub(crate) fn highest_library_in(dir: &Path) -> Result<PathBuf, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut best: Option<(Vec<u64>, PathBuf)> = None;
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(version) = library_version_from_name(&name) else {
            continue;
        };
        if best.as_ref().is_none_or(|(v, _)| version > *v) {
            best = Some((version, entry.path()));
        }
    }
    best.map(|(_, p)| p)
        .ok_or_else(|| format!("no libonnxruntime.so.* in {}", dir.display()))
}

/// `libonnxruntime.so.1.31.1` → `[1, 31, 1]`; the plain `libonnxruntime.so` → `[]`.
pub(crate) fn library_version_from_name(name: &str) -> Option<Vec<u64>> {
    let rest = name.strip_prefix("libonnxruntime.so")?;
    if rest.is_empty() {
        return Some(Vec::new());
    }
    rest.strip_prefix('.')?
        .split('.')
        .map(|p| p.parse().ok())
        .collect()
}

/// Whether the wheel folder that holds `lib` ships the CUDA provider (the `onnxruntime-gpu` wheel).
pub(crate) fn has_cuda_provider(lib: &Path) -> bool {
    lib.parent()
        .is_some_and(|d| d.join("libonnxruntime_providers_cuda.so").is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_from_wheel_file_names() {
        assert_eq!(
            library_version_from_name("libonnxruntime.so.1.31.1"),
            Some(vec![1, 31, 1])
        );
        assert_eq!(library_version_from_name("libonnxruntime.so"), Some(vec![]));
        assert_eq!(
            library_version_from_name("libonnxruntime_providers_shared.so"),
            None
        );
        assert_eq!(library_version_from_name("libonnxruntime.so.1.x"), None);
    }

    #[test]
    fn the_highest_version_wins() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "libonnxruntime.so.1.9.0",
            "libonnxruntime.so.1.31.1",
            "libonnxruntime.so.1.26.0",
            "libonnxruntime_providers_shared.so",
        ] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        let best = highest_library_in(dir.path()).unwrap();
        assert_eq!(best.file_name().unwrap(), "libonnxruntime.so.1.31.1");
    }

    #[test]
    fn an_empty_folder_says_what_it_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let err = highest_library_in(dir.path()).unwrap_err();
        assert!(err.contains("no libonnxruntime.so.*"), "{err}");
    }
}
