//! Where this speedscape came from and where its own files and the user's are: a wheel (`pip`,
//! `pipx`, `uv tool install speedscape`: the binary in `<prefix>/bin/`, its data — the micro
//! model, config.toml's defaults, the exporter — in `<prefix>/share/speedscape/`, laid out as
//! the checkout is) or a build from a checkout; and the per-user folders a wheel uses, by the XDG
//! base directory rules (`$XDG_CONFIG_HOME`, `$XDG_CACHE_HOME`, `$XDG_DATA_HOME`, else
//! `~/.config`, `~/.cache`, `~/.local/share`).

use std::path::{Path, PathBuf};

/// A speedscape installed from its wheel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wheel {
    /// The environment's prefix: the binary is `<prefix>/bin/speedscape`.
    pub prefix: PathBuf,
    /// The wheel's data, `<prefix>/share/speedscape/` (`models/micro/`, `models/export.py`,
    /// `models/requirements.txt`, `config.toml`).
    pub data: PathBuf,
}

/// The folder of the wheel's data under an install prefix.
const DATA: &str = "share/speedscape";

/// The wheel this process's binary came from; `None` for a build from a checkout.
pub fn wheel() -> Option<Wheel> {
    wheel_of(&std::env::current_exe().ok()?)
}

/// The wheel `exe` came from: `<prefix>/bin/<exe>` with the wheel's data (its `config.toml`)
/// in `<prefix>/share/speedscape/`.
pub fn wheel_of(exe: &Path) -> Option<Wheel> {
    let prefix = crate::runtime::install_prefix(exe)?;
    let data = prefix.join(DATA);
    data.join("config.toml")
        .is_file()
        .then_some(Wheel { prefix, data })
}

/// The config file read when `--config` is not given: the user's
/// (`$XDG_CONFIG_HOME/speedscape/config.toml`) for a wheel, `./config.toml` for a checkout build
/// (the repository's, run from its root).
pub fn default_config_path() -> PathBuf {
    match wheel() {
        Some(_) => user_config_path().unwrap_or_else(|| PathBuf::from("config.toml")),
        None => PathBuf::from("config.toml"),
    }
}

/// `$XDG_CONFIG_HOME/speedscape/config.toml` (else `~/.config/…`); `None` without a home.
pub fn user_config_path() -> Option<PathBuf> {
    Some(xdg_dir("XDG_CONFIG_HOME", ".config")?.join("config.toml"))
}

/// `$XDG_CACHE_HOME/speedscape` (else `~/.cache/speedscape`): the exporter's environment.
pub fn cache_dir() -> Option<PathBuf> {
    xdg_dir("XDG_CACHE_HOME", ".cache")
}

/// `$XDG_DATA_HOME/speedscape` (else `~/.local/share/speedscape`): exported models of a wheel.
pub fn data_dir() -> Option<PathBuf> {
    xdg_dir("XDG_DATA_HOME", ".local/share")
}

/// `speedscape` under the XDG variable `var` when it holds an absolute path (the spec says to
/// ignore a relative one), else under `$HOME/<fallback>`.
fn xdg_dir(var: &str, fallback: &str) -> Option<PathBuf> {
    xdg_dir_in(|v| std::env::var_os(v), var, fallback)
}

/// [`xdg_dir`] with the environment read through `env`.
fn xdg_dir_in(
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
    var: &str,
    fallback: &str,
) -> Option<PathBuf> {
    let base = env(var)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            let home = PathBuf::from(env("HOME")?);
            home.is_absolute().then(|| home.join(fallback))
        })?;
    Some(base.join("speedscape"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wheel_is_a_bin_folder_with_the_packaged_data_beside_it() {
        let env = tempfile::tempdir().unwrap();
        let exe = env.path().join("bin").join("speedscape");
        std::fs::create_dir_all(exe.parent().unwrap()).unwrap();
        assert_eq!(wheel_of(&exe), None, "no share/speedscape: not a wheel");
        let data = env.path().join("share/speedscape");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("config.toml"), "").unwrap();
        assert_eq!(
            wheel_of(&exe),
            Some(Wheel {
                prefix: env.path().to_path_buf(),
                data
            })
        );
        // target/release/speedscape of a checkout is no wheel.
        assert_eq!(wheel_of(&env.path().join("release/speedscape")), None);
    }

    #[test]
    fn xdg_variables_win_when_absolute_and_home_is_the_fallback() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |v: &str| {
                vars.iter()
                    .find(|(k, _)| *k == v)
                    .map(|(_, val)| std::ffi::OsString::from(val))
            }
        };
        let set = env(&[("HOME", "/home/u"), ("XDG_CONFIG_HOME", "/xdg/config")]);
        assert_eq!(
            xdg_dir_in(set, "XDG_CONFIG_HOME", ".config"),
            Some(PathBuf::from("/xdg/config/speedscape"))
        );
        assert_eq!(
            xdg_dir_in(set, "XDG_CACHE_HOME", ".cache"),
            Some(PathBuf::from("/home/u/.cache/speedscape"))
        );
        let relative = env(&[("HOME", "/home/u"), ("XDG_CACHE_HOME", "rel/cache")]);
        assert_eq!(
            xdg_dir_in(relative, "XDG_CACHE_HOME", ".cache"),
            Some(PathBuf::from("/home/u/.cache/speedscape")),
            "a relative XDG path is ignored"
        );
        assert_eq!(xdg_dir_in(env(&[]), "XDG_DATA_HOME", ".local/share"), None);
    }
}
