//! Finding ONNX Runtime's shared library.
//!
//! speedscape links ONNX Runtime at run time (`ort`'s `load-dynamic`) from the PyPI wheel,
//! which ships `onnxruntime/capi/libonnxruntime.so.1.X.Y` and no plain `.so` name, so every
//! candidate is a full path. Discovery order: `runtime.onnxruntime` in config.toml,
//! `ORT_DYLIB_PATH` (both explicit choices), the Python environment the binary was installed
//! into (a speedscape wheel under pip, pipx, `uv tool` or `uvx`: `<prefix>/bin/speedscape` beside
//! `<prefix>/lib/python3.*/site-packages/onnxruntime`), the wheel of the active `python3`, then a
//! `.venv` made by the README's set-up (beside the config file, in the working directory, or
//! above the executable).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where a candidate library path came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LibrarySource {
    /// `runtime.onnxruntime` in config.toml.
    Config,
    /// The `ORT_DYLIB_PATH` environment variable.
    EnvVar,
    /// The `onnxruntime` (or `onnxruntime-gpu`) package of the Python environment whose `bin/`
    /// holds the speedscape binary (its prefix): where `pip install speedscape` put both.
    InstallEnv(PathBuf),
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
            Self::InstallEnv(prefix) => write!(
                f,
                "the Python environment speedscape is installed in ({})",
                prefix.display()
            ),
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
    /// The prefix of the Python environment the executable was installed into, if it was
    /// ([`python_env_of`]).
    pub install_env: Option<PathBuf>,
}

impl SearchPlan {
    /// The default plan: `.venv` beside the config file, in the working directory, and in
    /// any ancestor of the executable (so `target/release/speedscape` finds the repo's venv).
    pub fn new(configured: Option<PathBuf>, config_dir: Option<&Path>) -> Self {
        let exe = std::env::current_exe().ok();
        let mut roots = Vec::new();
        if let Some(dir) = config_dir {
            roots.push(dir.to_path_buf());
        }
        if let Ok(cwd) = std::env::current_dir() {
            roots.push(cwd);
        }
        if let Some(exe) = &exe {
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
            install_env: exe.as_deref().and_then(python_env_of),
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
        if let Some(prefix) = &self.install_env {
            out.push(Candidate {
                source: LibrarySource::InstallEnv(prefix.clone()),
                path: env_library(prefix),
            });
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

/// `<prefix>` when `exe` is `<prefix>/bin/<name>`: where an installer (pip, pipx, `uv tool`) put
/// it. Its data files (`<prefix>/share/…`) and its Python packages are found from there.
pub fn install_prefix(exe: &Path) -> Option<PathBuf> {
    let bin = exe.parent()?;
    (bin.file_name()? == "bin").then(|| bin.parent().map(Path::to_path_buf))?
}

/// The prefix of the Python environment (a venv, a pipx or `uv tool` venv, `~/.local` for
/// `pip install --user`) whose `bin/` holds `exe`: [`install_prefix`] with a
/// `lib/python3.*/site-packages` in it.
pub fn python_env_of(exe: &Path) -> Option<PathBuf> {
    let prefix = install_prefix(exe)?;
    venv_site_packages(&prefix).map(|_| prefix)
}

/// The ONNX Runtime library of the Python environment at `prefix`: the `onnxruntime-gpu`
/// wheel's own when it is installed (`speedscape[cuda]` installs it beside the CPU wheel, and
/// both unpack into `onnxruntime/capi/`), else the highest version in `capi/`.
fn env_library(prefix: &Path) -> Result<PathBuf, String> {
    let site = venv_site_packages(prefix)
        .ok_or_else(|| format!("no lib/python3*/site-packages in {}", prefix.display()))?;
    if let Some(lib) = gpu_wheel_library(&site) {
        return Ok(lib);
    }
    let capi = site.join("onnxruntime").join("capi");
    if !capi.is_dir() {
        return Err(format!(
            "no onnxruntime package in {} (`pip install onnxruntime` there)",
            site.display()
        ));
    }
    highest_library_in(&capi)
}

/// The ONNX Runtime wheels installed in `site` (a site-packages folder), as `(name, version)`
/// from their `.dist-info` folders: `onnxruntime`, `onnxruntime_gpu`.
pub fn onnxruntime_wheels(site: &Path) -> Vec<(String, String)> {
    let Ok(entries) = std::fs::read_dir(site) else {
        return Vec::new();
    };
    let mut out: Vec<(String, String)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let stem = name.strip_suffix(".dist-info")?;
            let (dist, version) = stem.split_once('-')?;
            matches!(
                dist.to_lowercase().as_str(),
                "onnxruntime" | "onnxruntime_gpu"
            )
            .then(|| (dist.to_lowercase(), version.to_string()))
        })
        .collect();
    out.sort();
    out
}

/// The library that the `onnxruntime-gpu` wheel in `site` installed, by its `RECORD` (the file
/// list pip keeps): the highest `onnxruntime/capi/libonnxruntime.so.*` it lists that exists.
fn gpu_wheel_library(site: &Path) -> Option<PathBuf> {
    let dist = std::fs::read_dir(site)
        .ok()?
        .filter_map(|e| e.ok())
        .find(|e| {
            let name = e.file_name().to_string_lossy().to_lowercase();
            name.starts_with("onnxruntime_gpu-") && name.ends_with(".dist-info")
        })?;
    let record = std::fs::read_to_string(dist.path().join("RECORD")).ok()?;
    record
        .lines()
        .filter_map(|line| line.split(',').next())
        .filter(|path| path.starts_with("onnxruntime/capi/"))
        .filter_map(|path| {
            let name = Path::new(path).file_name()?.to_str()?;
            Some((library_version_from_name(name)?, site.join(path)))
        })
        .filter(|(_, p)| p.is_file())
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, p)| p)
}

/// `lib/python3.*/site-packages` of the venv (or prefix) `venv`, if it has one.
pub fn venv_site_packages(venv: &Path) -> Option<PathBuf> {
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

    /// A venv as pip lays it out: `bin/speedscape` and the given files under
    /// `lib/python3.11/site-packages/`.
    fn fake_env(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        std::fs::write(dir.path().join("bin/speedscape"), b"").unwrap();
        let site = dir.path().join("lib/python3.11/site-packages");
        std::fs::create_dir_all(&site).unwrap();
        for f in files {
            let path = site.join(f);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"").unwrap();
        }
        dir
    }

    #[test]
    fn the_install_prefix_is_the_parent_of_bin_and_a_python_env_has_site_packages() {
        assert_eq!(
            install_prefix(Path::new("/opt/venv/bin/speedscape")),
            Some(PathBuf::from("/opt/venv"))
        );
        assert_eq!(
            install_prefix(Path::new("/work/target/release/speedscape")),
            None
        );
        let env = fake_env(&[]);
        let exe = env.path().join("bin/speedscape");
        assert_eq!(python_env_of(&exe), Some(env.path().to_path_buf()));
        // A bin/ with no lib/python3*/site-packages beside it (e.g. /usr/local/bin, ~/.cargo/bin)
        // is no Python environment.
        let bare = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(bare.path().join("bin")).unwrap();
        assert_eq!(python_env_of(&bare.path().join("bin/speedscape")), None);
    }

    #[test]
    fn the_install_env_comes_after_the_explicit_choices_and_before_python3() {
        let env = fake_env(&["onnxruntime/capi/libonnxruntime.so.1.31.1"]);
        let plan = SearchPlan {
            configured: Some(PathBuf::from("/cfg/libonnxruntime.so.1.20.0")),
            venv_roots: Vec::new(),
            install_env: Some(env.path().to_path_buf()),
        };
        let sources: Vec<LibrarySource> = plan.candidates().into_iter().map(|c| c.source).collect();
        let at = |s: &LibrarySource| sources.iter().position(|x| x == s).unwrap();
        let install = LibrarySource::InstallEnv(env.path().to_path_buf());
        assert!(at(&LibrarySource::Config) < at(&install));
        assert!(at(&install) < at(&LibrarySource::Python));
        let found = plan
            .candidates()
            .into_iter()
            .find(|c| c.source == install)
            .unwrap();
        assert_eq!(
            found.path.unwrap(),
            env.path()
                .join("lib/python3.11/site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1")
        );
        assert_eq!(
            install.to_string(),
            format!(
                "the Python environment speedscape is installed in ({})",
                env.path().display()
            )
        );
    }

    #[test]
    fn an_install_env_without_onnxruntime_says_what_to_install_where() {
        let env = fake_env(&[]);
        let err = env_library(env.path()).unwrap_err();
        assert!(
            err.contains("no onnxruntime package in") && err.contains("pip install onnxruntime"),
            "{err}"
        );
    }

    #[test]
    fn with_both_wheels_installed_the_gpu_wheels_own_library_is_taken() {
        // speedscape[cuda]: the CPU wheel 1.32.0 and the GPU wheel 1.31.1 share onnxruntime/capi/;
        // the highest version there is the CPU one, but the GPU wheel's RECORD names its own.
        let env = fake_env(&[
            "onnxruntime/capi/libonnxruntime.so.1.32.0",
            "onnxruntime/capi/libonnxruntime.so.1.31.1",
            "onnxruntime/capi/libonnxruntime_providers_cuda.so",
            "onnxruntime-1.32.0.dist-info/RECORD",
        ]);
        let site = env.path().join("lib/python3.11/site-packages");
        let dist = site.join("onnxruntime_gpu-1.31.1.dist-info");
        std::fs::create_dir_all(&dist).unwrap();
        std::fs::write(
            dist.join("RECORD"),
            "onnxruntime/__init__.py,sha256=x,10\n\
             onnxruntime/capi/libonnxruntime.so.1.31.1,sha256=y,20\n\
             onnxruntime/capi/libonnxruntime_providers_cuda.so,sha256=z,30\n",
        )
        .unwrap();
        let lib = env_library(env.path()).unwrap();
        assert_eq!(lib, site.join("onnxruntime/capi/libonnxruntime.so.1.31.1"));
        assert_eq!(
            onnxruntime_wheels(&site),
            [
                ("onnxruntime".to_string(), "1.32.0".to_string()),
                ("onnxruntime_gpu".to_string(), "1.31.1".to_string())
            ]
        );
    }
}
