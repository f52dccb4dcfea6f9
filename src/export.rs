//! `speedscape models export`: real SD v1.5 through the packaged exporter (`models/export.py`).
//! It owns the exporter's Python environment (made once from the packaged
//! `models/requirements.txt`, cached under `$XDG_CACHE_HOME/speedscape/`, ready only once its
//! stamp is written), the run of the exporter into a hidden folder beside the target that is
//! renamed into place only when complete, what a failure means for the user (no network, a full
//! disk, a gated hub repo, a signal), and writing `model.dir` into the config afterwards.
//!
//! Nothing half-made is kept: a failed or interrupted environment is removed (pip's own cache
//! keeps what it downloaded), and so is the export's temporary folder.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use color_eyre::eyre::{WrapErr, bail};

use crate::config::Config;
use crate::error::{FixErr, Fixable};
use crate::interrupt::Interrupted;

/// The Python that makes the exporter's environment, when set (else the wheel environment's
/// own `python3`, else `python3` on PATH).
pub const PYTHON_VAR: &str = "SPEEDSCAPE_PYTHON";

/// The stamp a finished environment holds: the hash of the requirements it was made from.
const STAMP: &str = ".speedscape-ready";

/// The prefix of the hidden folder an export is built in, beside its target.
const STAGING: &str = ".speedscape-export-";

/// Speedscape's own flags, which must come before the exporter's (after the first exporter flag
/// clap hands everything on).
const OWN_FLAGS: [&str; 6] = [
    "--out",
    "--force",
    "--yes",
    "--no-config",
    "--fp16",
    "--config",
];

/// The exporter and the requirements of its environment, as packaged.
#[derive(Debug, Clone)]
pub struct Exporter {
    pub script: PathBuf,
    pub requirements: PathBuf,
}

/// What a child process was doing, for its error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// `python -m venv`.
    Venv,
    /// `pip install -r requirements.txt`.
    Pip,
    /// `python export.py`.
    Export,
}

impl Phase {
    fn doing(self) -> &'static str {
        match self {
            Phase::Venv => "making the exporter's Python environment",
            Phase::Pip => "installing the exporter's Python packages",
            Phase::Export => "exporting the model",
        }
    }
}

/// The packaged exporter (`models/export.py`, `models/requirements.txt`): the wheel's data, or
/// the checkout's.
pub fn exporter() -> color_eyre::Result<Exporter> {
    let find = |rel: &str| {
        crate::open::asset(Path::new(rel)).ok_or_else(|| {
            Fixable::new(
                format!("the exporter's {rel} was not found beside speedscape"),
                "reinstall the wheel (`pip install --force-reinstall speedscape`), or run from the speedscape checkout",
            )
        })
    };
    Ok(Exporter {
        script: find("models/export.py")?,
        requirements: find("models/requirements.txt")?,
    })
}

/// The Python that makes the environment: `$SPEEDSCAPE_PYTHON`, else the `python3` of the wheel's
/// environment (pipx and `uv tool` venvs have one), else `python3` on PATH.
pub fn base_python() -> PathBuf {
    if let Some(p) = std::env::var_os(PYTHON_VAR).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    crate::install::wheel()
        .map(|w| w.prefix.join("bin").join("python3"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("python3"))
}

/// Where the export goes without `--out`: `models/sd15[-fp16]` under the user's data folder for
/// a wheel, under the working directory for a checkout.
pub fn default_out(wheel: bool, fp16: bool) -> color_eyre::Result<PathBuf> {
    let name = if fp16 { "sd15-fp16" } else { "sd15" };
    let base = if wheel {
        crate::install::data_dir().ok_or_else(|| {
            Fixable::new(
                "no home folder to export into (neither $XDG_DATA_HOME nor $HOME is set)",
                "pass --out DIR",
            )
        })?
    } else {
        PathBuf::from(".")
    };
    Ok(std::path::absolute(base.join("models").join(name))?)
}

/// The exporter's command line after its `--out`: the dtype and optimisation speedscape's flags
/// chose, then `extra` (the user's exporter flags) as given. Speedscape's own flags there (typed
/// after an exporter flag, so clap passed them on) are refused.
pub fn exporter_args(
    fp16: bool,
    optimize: &str,
    extra: &[String],
) -> color_eyre::Result<Vec<String>> {
    if let Some(flag) = extra.iter().find(|a| {
        OWN_FLAGS
            .iter()
            .any(|f| a == f || a.starts_with(&format!("{f}=")))
    }) {
        bail!(Fixable::new(
            format!("{flag} came after an exporter flag, so it would go to the exporter"),
            format!(
                "put speedscape's own flags ({}, --optimize) before the exporter's",
                OWN_FLAGS.join(", ")
            ),
        ));
    }
    let dtype = if fp16 { "fp16" } else { "fp32" };
    let mut args: Vec<String> = ["--dtype", dtype, "--optimize", optimize]
        .map(String::from)
        .to_vec();
    args.extend(extra.iter().cloned());
    Ok(args)
}

/// Refuses an `out` that exists (unless `force`) or that is a file, before anything is made.
pub fn check_out(out: &Path, force: bool) -> color_eyre::Result<()> {
    if out.is_file() {
        bail!(Fixable::new(
            format!("{} is a file, not a model folder", out.display()),
            "pass --out a folder path",
        ));
    }
    if out.exists() && !force {
        bail!(Fixable::new(
            format!("{} exists already", out.display()),
            "pass --force to replace it once the new export is complete, or another --out",
        ));
    }
    Ok(())
}

/// The exporter's environment under `cache`, made when missing or unfinished: `python -m venv`,
/// then `pip install -r requirements`; its stamp is written last. Returns its python. A failed
/// or interrupted attempt removes the half-made environment.
pub fn ensure_env(exporter: &Exporter, cache: &Path) -> color_eyre::Result<PathBuf> {
    // The first 12 hex digits, as scripts/setup-ref.sh names its venvs.
    let hash = crate::models::manifest::sha256_file(&exporter.requirements)?[..12].to_string();
    let venv = cache.join(format!("export-{hash}"));
    let python = venv.join("bin").join("python");
    let stamp = venv.join(STAMP);
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == hash) && python.is_file() {
        return Ok(python);
    }
    if venv.exists() {
        // A leftover of a run that was killed before it finished.
        std::fs::remove_dir_all(&venv)
            .wrap_err_with(|| format!("removing the unfinished {}", venv.display()))?;
    }
    std::fs::create_dir_all(cache).wrap_err_with(|| format!("creating {}", cache.display()))?;
    eprintln!(
        "speedscape: making the exporter's Python environment in {} (once; torch, diffusers and \
         the rest of {}, several GB)",
        venv.display(),
        exporter.requirements.display()
    );
    let made = (|| {
        let mut venv_cmd = Command::new(base_python());
        venv_cmd.arg("-m").arg("venv").arg(&venv);
        run_child(venv_cmd, Phase::Venv, &venv)?;
        let mut pip = Command::new(&python);
        pip.args(["-m", "pip", "install", "--disable-pip-version-check", "-r"])
            .arg(&exporter.requirements);
        run_child(pip, Phase::Pip, &venv)?;
        std::fs::write(&stamp, &hash).wrap_err_with(|| format!("writing {}", stamp.display()))
    })();
    if let Err(e) = made {
        let _ = std::fs::remove_dir_all(&venv);
        return Err(e);
    }
    Ok(python)
}

/// Runs the exporter (`python script --out <staging>/<name> args…`) in a hidden folder beside
/// `out`, then moves the result to `out` (an existing `out`, with `force`, is replaced only
/// then). On any failure or a signal the staging folder is removed and `out` is untouched.
pub fn export(
    python: &Path,
    exporter: &Exporter,
    out: &Path,
    args: &[String],
    force: bool,
) -> color_eyre::Result<()> {
    check_out(out, force)?;
    let parent = out.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).wrap_err_with(|| format!("creating {}", parent.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(STAGING)
        .tempdir_in(parent)
        .fix_err_with(|| {
            (
                format!("cannot make a folder in {}", parent.display()),
                "pass --out a folder you can write to",
            )
        })?;
    let name = out.file_name().unwrap_or(std::ffi::OsStr::new("model"));
    let built = staging.path().join(name);
    let mut cmd = Command::new(python);
    cmd.arg(&exporter.script)
        .arg("--out")
        .arg(&built)
        .args(args);
    run_child(cmd, Phase::Export, out)?;
    if !built.join("model_index.json").is_file() {
        bail!(Fixable::new(
            format!(
                "the exporter finished but left no model_index.json in {}",
                built.display()
            ),
            "run the export again; if it repeats, report it with the exporter's output",
        ));
    }
    crate::interrupt::check(|| {
        format!(
            "the export was complete but not moved into place; {} was not written",
            out.display()
        )
    })?;
    if out.exists() {
        // --force: the old folder goes only now, beside the new one, through the staging folder.
        let old = staging.path().join(".old");
        std::fs::rename(out, &old)
            .wrap_err_with(|| format!("moving the old {} aside", out.display()))?;
    }
    std::fs::rename(&built, out)
        .wrap_err_with(|| format!("moving the export into place at {}", out.display()))?;
    Ok(())
}

/// Runs `cmd` with stdout shared (pip's and the exporter's progress) and stderr both shown and
/// kept (its last 64 KiB) to name the failure. The child runs in a process group of its own, so
/// a signal to speedscape (a terminal's ctrl-c, `kill`, a dropped SSH session) stops the whole
/// group (pip's and torch's helpers too) and returns [`Interrupted`]; `target` is what was
/// being made, for the messages.
fn run_child(mut cmd: Command, phase: Phase, target: &Path) -> color_eyre::Result<()> {
    use std::os::unix::process::CommandExt;
    let program = cmd.get_program().to_string_lossy().to_string();
    let mut child = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .fix_err_with(|| {
            (
                format!("cannot run {program} ({})", phase.doing()),
                format!(
                    "install Python 3 (3.11 is what the pins were made with; with venv: `apt-get install python3-venv`), or point {PYTHON_VAR} at one"
                ),
            )
        })?;
    let group = child.id() as libc::pid_t;
    let hook = crate::interrupt::on_signal(move || {
        // SAFETY: kill(2) on the child's process group, whose leader is not reaped before the
        // hook is dropped.
        unsafe { libc::kill(-group, libc::SIGTERM) };
    });
    let tail = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (done, finished) = std::sync::mpsc::channel();
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let kept = tail.clone();
    std::thread::spawn(move || {
        const KEEP: usize = 64 << 10;
        let mut buf = [0u8; 8192];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            let _ = std::io::stderr().write_all(&buf[..n]);
            let mut tail = kept.lock().unwrap_or_else(|p| p.into_inner());
            tail.extend_from_slice(&buf[..n]);
            if tail.len() > KEEP {
                let cut = tail.len() - KEEP;
                tail.drain(..cut);
            }
        }
        let _ = done.send(());
    });
    let status = child
        .wait()
        .wrap_err_with(|| format!("waiting for {program}"))?;
    drop(hook);
    // A helper the child left behind may hold stderr open: its output so far is enough.
    let _ = finished.recv_timeout(std::time::Duration::from_secs(2));
    let tail = String::from_utf8_lossy(&tail.lock().unwrap_or_else(|p| p.into_inner())).to_string();
    if let Some(signal) = crate::interrupt::received() {
        let what = match phase {
            Phase::Export => format!(
                "the export was stopped; its temporary folder was removed and {} was not written",
                target.display()
            ),
            _ => format!(
                "the exporter's environment was not finished and was removed ({}); the next run makes it again",
                target.display()
            ),
        };
        return Err(Interrupted { signal, what }.into());
    }
    if status.success() {
        return Ok(());
    }
    Err(failure(phase, &tail, status, target).into())
}

/// What went wrong, from a failed child's stderr: a full disk, a hub that wants a token, the
/// network, no build of a pinned package for this Python, no venv module, or else the tool's own
/// last error line (and its own "Fix:" line, the exporter's errors have one).
pub fn failure(phase: Phase, stderr: &str, status: ExitStatus, target: &Path) -> Fixable {
    let doing = phase.doing();
    // The first line that names it: the tool's own error line comes before its advice
    // ("Please check your internet connection") and later retries.
    let found = |needles: &[&str]| {
        stderr
            .lines()
            .find(|l| needles.iter().any(|n| l.contains(n)))
            .map(|l| clip(l.trim()))
    };
    if let Some(line) = found(&["No space left on device", "[Errno 28]", "ENOSPC"]) {
        return Fixable::new(
            format!("the disk filled up while {doing}: {line}"),
            format!(
                "free space and run the same command again ({} was being written; the environment \
                 takes ~6 GB under ~/.cache/speedscape, the hub's download ~5 GB under \
                 ~/.cache/huggingface, the export ~4 GB, ~2 GB with --fp16); nothing half-made \
                 was kept",
                target.display()
            ),
        );
    }
    if phase == Phase::Export
        && let Some(line) = found(&[
            "GatedRepoError",
            "gated repo",
            "401 Client Error",
            "403 Client Error",
            "RepositoryNotFoundError",
            "Unauthorized",
        ])
    {
        return Fixable::new(
            format!(
                "the Hugging Face hub refused the download (HTTP 401/403: a gated or private repo needs an account that accepted its terms, with a token): {line}"
            ),
            "accept the model's terms on its hub page, then `huggingface-cli login` (huggingface_hub's \
             `hf auth login`; the export environment has it in bin/) or `export HF_TOKEN=hf_…`, and \
             run the same command again; or pass a local diffusers folder with --model",
        );
    }
    if let Some(line) = found(&[
        "NewConnectionError",
        "Failed to establish a new connection",
        "Temporary failure in name resolution",
        "Name or service not known",
        "Network is unreachable",
        "Max retries exceeded",
        "ConnectionError",
        "ConnectTimeout",
        "ReadTimeout",
        "timed out",
        "IncompleteRead",
        "Connection broken",
        "Connection reset",
        "ProxyError",
        "SSLError",
        "LocalEntryNotFoundError",
        "check your internet connection",
    ]) {
        let whom = match phase {
            Phase::Export => "the Hugging Face hub (huggingface.co)",
            _ => "the Python package index (PyPI)",
        };
        return Fixable::new(
            format!("could not reach {whom} while {doing}: {line}"),
            "check the network (behind a proxy: set HTTPS_PROXY; a mirror: PIP_INDEX_URL for \
             PyPI, HF_ENDPOINT for the hub) and run the same command again: what was downloaded \
             is cached and not fetched twice",
        );
    }
    if phase == Phase::Pip
        && let Some(line) = found(&["No matching distribution", "Could not find a version"])
    {
        return Fixable::new(
            format!("pip found no build of a pinned package for this Python: {line}"),
            format!(
                "the pins (models/requirements.txt) were made for Python 3.11: point {PYTHON_VAR} \
                 at a Python 3.11 (e.g. `uv python install 3.11`, then {PYTHON_VAR}=$(uv python find 3.11))"
            ),
        );
    }
    if phase == Phase::Venv
        && let Some(line) = found(&["ensurepip", "No module named venv"])
    {
        return Fixable::new(
            format!("Python cannot make a venv here: {line}"),
            format!(
                "install the venv module (`apt-get install python3-venv` on Debian/Ubuntu), or point {PYTHON_VAR} at another Python 3"
            ),
        );
    }
    let error = stderr
        .lines()
        .rev()
        .find(|l| {
            let l = l.trim_start();
            l.starts_with("error") || l.starts_with("ERROR") || l.contains("Error")
        })
        .or_else(|| stderr.lines().rev().find(|l| !l.trim().is_empty()))
        .map(|l| clip(l.trim()))
        .unwrap_or_else(|| "(it printed nothing on stderr)".into());
    let fix = stderr
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("Fix: "))
        .map(|f| clip(f.trim()))
        .unwrap_or_else(|| {
            "read its messages above; the exporter's flags are listed by models/export.py --help"
                .to_string()
        });
    Fixable::new(format!("{doing} failed ({status}): {error}"), fix)
}

/// `line`, cut to 400 characters.
fn clip(line: &str) -> String {
    match line.char_indices().nth(400) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line.to_string(),
    }
}

/// `text` (a config.toml) with `model.dir` set to `dir`: the `dir` line of its `[model]` table
/// replaced, or one added under the table's header, or a `[model]` table appended. Every other
/// line stays as written. Checked by parsing the result (as the file at `path`): it must read
/// `dir` back.
pub fn set_model_dir(text: &str, dir: &Path, path: &Path) -> color_eyre::Result<String> {
    let value = toml::Value::String(dir.display().to_string()).to_string();
    let line = format!("dir = {value}");
    let lines: Vec<&str> = text.lines().collect();
    let header = |l: &str| {
        let l = l.split('#').next().unwrap_or("").trim();
        (l.starts_with('[') && l.ends_with(']')).then(|| l.to_string())
    };
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    match lines
        .iter()
        .position(|l| header(l).as_deref() == Some("[model]"))
    {
        Some(at) => {
            let end = (at + 1..lines.len())
                .find(|&i| header(lines[i]).is_some())
                .unwrap_or(lines.len());
            let existing = (at + 1..end).find(|&i| {
                let l = lines[i].trim_start();
                l.strip_prefix("dir")
                    .is_some_and(|rest| rest.trim_start().starts_with('='))
            });
            match existing {
                Some(i) => out[i] = line,
                None => out.insert(at + 1, line),
            }
        }
        None => {
            if out.last().is_some_and(|l| !l.trim().is_empty()) {
                out.push(String::new());
            }
            out.push("[model]".into());
            out.push(line);
        }
    }
    let new = out.join("\n") + "\n";
    let reads_back =
        Config::parse_at(&new, path).is_ok_and(|c| c.model.dir.as_deref() == Some(dir));
    if !reads_back {
        bail!(Fixable::new(
            format!(
                "could not set model.dir in {} (its [model] table is written in a form this edit does not know)",
                path.display()
            ),
            format!("add `{}` under [model] in it yourself", new_line(dir)),
        ));
    }
    Ok(new)
}

/// The config line that names `dir`, as written into a config.
pub fn new_line(dir: &Path) -> String {
    format!("dir = {}", toml::Value::String(dir.display().to_string()))
}

/// Sets `model.dir` to `dir` in the config at `path` (made, with a header saying where every
/// other key is documented, when missing), written whole through a temporary file.
pub fn write_model_dir(path: &Path, dir: &Path, documented_in: &str) -> color_eyre::Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => format!(
            "# speedscape's config. `speedscape models export` set model.dir; every other key, its \
             allowed values\n# and its default: {documented_in}\n"
        ),
        Err(e) => return Err(e).wrap_err_with(|| format!("reading {}", path.display())),
    };
    let new = set_model_dir(&text, dir, path)?;
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).wrap_err_with(|| format!("creating {}", parent.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".config.toml.")
        .tempfile_in(parent)
        .wrap_err_with(|| format!("writing into {}", parent.display()))?;
    tmp.write_all(new.as_bytes())?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .wrap_err_with(|| format!("replacing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn exit(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    #[test]
    fn exporter_args_carry_the_dtype_and_optimisation_then_the_users_flags() {
        let extra = vec!["--controlnet".to_string(), "canny=a/b".to_string()];
        assert_eq!(
            exporter_args(true, "cuda", &extra).unwrap(),
            [
                "--dtype",
                "fp16",
                "--optimize",
                "cuda",
                "--controlnet",
                "canny=a/b"
            ]
        );
        assert_eq!(
            exporter_args(false, "none", &[]).unwrap(),
            ["--dtype", "fp32", "--optimize", "none"]
        );
        for own in ["--out", "--force", "--yes", "--out=x"] {
            let err =
                exporter_args(false, "none", &["--no-verify".into(), own.into()]).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("came after an exporter flag"), "{msg}");
            assert!(msg.contains("Fix: put speedscape's own flags"), "{msg}");
        }
    }

    #[test]
    fn each_failure_gets_its_own_cause_and_fix() {
        let t = Path::new("/data/sd15");
        let cases: [(Phase, &str, &str, &str); 7] = [
            (
                Phase::Pip,
                "ERROR: Could not install packages due to an OSError: [Errno 28] No space left on device\n",
                "the disk filled up while installing",
                "free space",
            ),
            (
                Phase::Export,
                "error: cannot download 'x/y' from the Hugging Face hub: GatedRepoError: 401 Client Error. Cannot access gated repo\nFix: check the network\n",
                "refused the download (HTTP 401/403",
                "huggingface-cli login",
            ),
            (
                Phase::Export,
                "error: cannot download 'x/y' from the Hugging Face hub: LocalEntryNotFoundError: An error happened. Please check your internet connection and try again.\n",
                "could not reach the Hugging Face hub",
                "check the network",
            ),
            (
                Phase::Pip,
                "WARNING: Retrying after connection broken by 'NewConnectionError(Failed to establish a new connection: [Errno -3] Temporary failure in name resolution)': /simple/torch/\nERROR: Could not find a version that satisfies the requirement torch==2.15.0 (from versions: none)\nERROR: No matching distribution found for torch==2.15.0\n",
                "could not reach the Python package index (PyPI)",
                "HTTPS_PROXY",
            ),
            (
                Phase::Pip,
                "ERROR: Could not find a version that satisfies the requirement torch==2.15.0 (from versions: 2.0.0)\nERROR: No matching distribution found for torch==2.15.0\n",
                "no build of a pinned package for this Python: ERROR: Could not find a version that satisfies the requirement torch==2.15.0",
                "Python 3.11",
            ),
            (
                Phase::Venv,
                "Error: Command '['/x/bin/python3', '-m', 'ensurepip', '--upgrade', '--default-pip']' returned non-zero exit status 1.\n",
                "Python cannot make a venv here",
                "python3-venv",
            ),
            (
                Phase::Export,
                "Traceback...\nerror: --variant lcm=lcm:x: weight 'x' is not a number\nFix: write NAME=LORA:WEIGHT\n",
                "exporting the model failed (exit status: 2): error: --variant lcm=lcm:x",
                "write NAME=LORA:WEIGHT",
            ),
        ];
        for (phase, stderr, cause, fix) in cases {
            let f = failure(phase, stderr, exit(2), t);
            assert!(
                f.cause().contains(cause),
                "{phase:?}: {:?} lacks {cause:?}",
                f.cause()
            );
            assert!(
                f.fix().contains(fix),
                "{phase:?}: {:?} lacks {fix:?}",
                f.fix()
            );
        }
        // A 401 during pip is no hub login matter.
        let f = failure(
            Phase::Pip,
            "ERROR: 401 Client Error: Unauthorized\n",
            exit(1),
            t,
        );
        assert!(!f.fix().contains("huggingface"), "{}", f.fix());
    }

    #[test]
    fn model_dir_is_set_in_place_added_under_model_or_appended() {
        let path = Path::new("/cfg/config.toml");
        let dir = Path::new("/data/models/sd15 \"fp16\"");
        // toml writes a string with `"` in it as a literal string ('…').
        let want = new_line(dir);
        assert_eq!(want, r#"dir = '/data/models/sd15 "fp16"'"#);
        // The committed config.toml: [model] with the key commented out.
        let committed =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml")).unwrap();
        let new = set_model_dir(&committed, dir, path).unwrap();
        let added: Vec<&str> = new
            .lines()
            .filter(|l| !committed.lines().any(|c| c == *l))
            .collect();
        assert_eq!(added, [want.as_str()], "one line added, every other kept");
        assert_eq!(new.lines().count(), committed.lines().count() + 1);
        // Set again: the line is replaced, not repeated.
        let again = set_model_dir(&new, Path::new("/other"), path).unwrap();
        assert_eq!(again.lines().count(), new.lines().count());
        assert!(again.contains("\ndir = \"/other\"\n") && !again.contains(&want));
        // No [model] table: one is appended after the other tables.
        let new = set_model_dir("[tui]\ngraphics = \"kitty\"\n", dir, path).unwrap();
        assert_eq!(
            new,
            format!("[tui]\ngraphics = \"kitty\"\n\n[model]\n{want}\n")
        );
        // A form the edit does not know (a dotted key at the top) is refused, not half-done.
        let err = set_model_dir("model.dir = \"/x\"\n", dir, path).unwrap_err();
        assert!(err.to_string().contains("Fix: add `dir = "), "{err}");
    }

    #[test]
    fn write_model_dir_makes_a_missing_config_with_a_header_and_keeps_an_existing_one() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("speedscape").join("config.toml");
        write_model_dir(&path, Path::new("/m"), "/env/share/speedscape/config.toml").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# speedscape's config."), "{text}");
        assert!(
            text.contains("/env/share/speedscape/config.toml\n\n[model]\ndir = \"/m\"\n"),
            "{text}"
        );
        std::fs::write(&path, "# mine\n[model]\nunet_budget_mib = 5\n").unwrap();
        write_model_dir(&path, Path::new("/n"), "x").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "# mine\n[model]\ndir = \"/n\"\nunet_budget_mib = 5\n"
        );
        let left: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file left");
    }

    #[test]
    fn an_existing_target_is_refused_without_force() {
        let tmp = tempfile::tempdir().unwrap();
        let msg = check_out(tmp.path(), false).unwrap_err().to_string();
        assert!(
            msg.contains("exists already") && msg.contains("--force"),
            "{msg}"
        );
        check_out(tmp.path(), true).unwrap();
        check_out(&tmp.path().join("new"), false).unwrap();
    }
}
