//! `speedscape models export` end to end against a fake Python ($SPEEDSCAPE_PYTHON): a bash
//! script that makes a "venv" (a copy of itself), "installs" the requirements and "exports", or
//! fails each way a real run can (no network, a full disk, a gated hub repo) or hangs until a
//! signal. What is checked: the exporter's command line, the environment made once, the export
//! moved into place whole, model.dir written, each failure's cause and fix, and that nothing
//! half-made (export or environment) is left behind.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{command, text};

const FAKE_PYTHON: &str = r#"#!/usr/bin/env bash
echo "$0 $*" >> "$FAKE_LOG"
if [ "$1" = -m ] && [ "$2" = venv ]; then
  mkdir -p "$3/bin" && cp "$0" "$3/bin/python" && exit 0
fi
if [ "$1" = -m ] && [ "$2" = pip ]; then
  case "${FAKE_PIP:-ok}" in
    ok) echo "Successfully installed torch-2.15.0"; exit 0 ;;
    network)
      echo "WARNING: Retrying (Retry(total=4)) after connection broken by 'NewConnectionError(Failed to establish a new connection: [Errno -3] Temporary failure in name resolution)': /simple/torch/" >&2
      echo "ERROR: No matching distribution found for torch==2.15.0" >&2; exit 1 ;;
    enospc) echo "ERROR: Could not install packages due to an OSError: [Errno 28] No space left on device" >&2; exit 1 ;;
  esac
fi
if [ "$2" = --help ]; then echo "usage: export.py [-h] --out OUT"; exit 0; fi
out=""; prev=""
for a in "$@"; do [ "$prev" = --out ] && out="$a"; prev="$a"; done
mkdir -p "$out.partial/unet" && echo half > "$out.partial/unet/model.onnx"
case "${FAKE_EXPORT:-ok}" in
  ok) mv "$out.partial" "$out" && echo '{}' > "$out/model_index.json"; echo "exported $out"; exit 0 ;;
  gated)
    echo "error: cannot download 'stable-diffusion-v1-5/stable-diffusion-v1-5' from the Hugging Face hub: GatedRepoError: 401 Client Error. Cannot access gated repo for url https://huggingface.co/api/models/x." >&2
    echo "Fix: check the network / \`huggingface-cli login\`" >&2; exit 2 ;;
  network)
    echo "error: cannot download 'x/y' from the Hugging Face hub: LocalEntryNotFoundError: An error happened while trying to locate the files on the Hub. Please check your internet connection and try again." >&2; exit 2 ;;
  enospc) echo "OSError: [Errno 28] No space left on device: '$out.partial/unet/weights.pb'" >&2; exit 1 ;;
  hang) touch "$FAKE_STARTED"; exec sleep 60 ;;
esac
"#;

/// A scratch folder with the fake Python, a cache, and where the model and config go.
struct Scene {
    dir: tempfile::TempDir,
}

impl Scene {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let python = dir.path().join("fake-python");
        std::fs::write(&python, FAKE_PYTHON).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&python, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir_all(dir.path().join("models")).unwrap();
        // An explicit --config must exist (a missing one is made only at the default path).
        std::fs::create_dir_all(dir.path().join("cfg")).unwrap();
        std::fs::write(dir.path().join("cfg/config.toml"), "# mine\n").unwrap();
        Scene { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn out(&self) -> PathBuf {
        self.path("models/sd15")
    }

    /// `speedscape models export --out <out> --config <scene>/cfg/config.toml <args>` with the
    /// fake Python and `env` (FAKE_PIP, FAKE_EXPORT).
    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let out = self.out();
        let config = self.path("cfg/config.toml");
        let mut all = vec![
            "models",
            "export",
            "--out",
            out.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        let mut c = command(&all);
        c.env("SPEEDSCAPE_PYTHON", self.path("fake-python"))
            .env("XDG_CACHE_HOME", self.path("cache"))
            .env("FAKE_LOG", self.path("log"))
            .env("FAKE_STARTED", self.path("started"));
        for (k, v) in env {
            c.env(k, v);
        }
        c
    }

    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.command(args, env).output().unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("log")).unwrap_or_default()
    }

    /// What is in models/ (the export's parent): the model, and nothing half-made beside it.
    fn beside_out(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path("models"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        names
    }

    /// The exporter environments in the cache.
    fn envs(&self) -> Vec<String> {
        let Ok(dir) = std::fs::read_dir(self.path("cache/speedscape")) else {
            return Vec::new();
        };
        dir.map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect()
    }
}

#[test]
fn an_export_passes_its_flags_makes_the_environment_once_and_lands_whole() {
    let s = Scene::new();
    let o = s.run(
        &[
            "--fp16",
            "--optimize",
            "cuda",
            "--yes",
            "--controlnet",
            "canny=lllyasviel/control_v11p_sd15_canny",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(s.out().join("model_index.json").is_file());
    assert_eq!(s.beside_out(), ["sd15"], "no staging folder left");
    let log = s.log();
    let calls: Vec<&str> = log.lines().collect();
    assert_eq!(calls.len(), 3, "venv, pip, export: {log}");
    let env = calls[0].split(" -m venv ").nth(1).unwrap();
    assert!(
        Path::new(env).starts_with(s.path("cache/speedscape")),
        "the environment is made under $XDG_CACHE_HOME/speedscape: {env}"
    );
    assert!(calls[1].contains(" -m pip install ") && calls[1].ends_with("models/requirements.txt"));
    // The exporter: the packaged script, --out in a hidden folder beside the target, the
    // dtype and optimisation, then the user's exporter flags in order.
    let export = calls[2];
    let staged = s.path("models/.speedscape-export-");
    assert!(
        export.contains(&format!(" --out {}", staged.display())),
        "{export}"
    );
    assert!(
        export.contains("models/export.py --out ")
            && export.ends_with(
                "/sd15 --dtype fp16 --optimize cuda --controlnet canny=lllyasviel/control_v11p_sd15_canny"
            ),
        "{export}"
    );
    // --yes: model.dir written into the config, whose own lines stay.
    let config = std::fs::read_to_string(s.path("cfg/config.toml")).unwrap();
    assert_eq!(
        config,
        format!("# mine\n\n[model]\ndir = \"{}\"\n", s.out().display())
    );
    // Again, replacing it: the environment is not made twice; the config is left alone.
    let o = s.run(&["--force", "--no-config"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let log = s.log();
    assert_eq!(log.lines().count(), 4, "only the export ran again: {log}");
    assert!(
        log.lines()
            .last()
            .unwrap()
            .ends_with("--dtype fp32 --optimize none")
    );
    assert_eq!(s.beside_out(), ["sd15"]);
    assert_eq!(
        std::fs::read_to_string(s.path("cfg/config.toml")).unwrap(),
        config
    );
    // Without --force an existing folder is refused before anything runs.
    let o = s.run(&[], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("exists already"), "{}", text(&o));
    assert_eq!(s.log().lines().count(), 4);
}

#[test]
fn the_exporters_own_help_is_shown_through_its_environment() {
    let s = Scene::new();
    std::fs::create_dir_all(s.out()).unwrap();
    // An existing --out does not matter: nothing is exported.
    let o = s.run(&["--", "--help"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("usage: export.py [-h] --out OUT"));
    let log = s.log();
    assert!(
        log.lines()
            .last()
            .unwrap()
            .ends_with("models/export.py --help"),
        "{log}"
    );
    assert_eq!(s.beside_out(), ["sd15"]);
}

#[test]
fn each_failure_says_what_happened_and_what_to_do_and_leaves_nothing_half_made() {
    let cases: [(&str, &str, &[&str]); 5] = [
        (
            "FAKE_PIP",
            "network",
            &[
                "could not reach the Python package index (PyPI) while installing the exporter's Python packages",
                "Fix: check the network",
            ],
        ),
        (
            "FAKE_PIP",
            "enospc",
            &["the disk filled up while installing", "Fix: free space"],
        ),
        (
            "FAKE_EXPORT",
            "gated",
            &[
                "the Hugging Face hub refused the download (HTTP 401/403",
                "huggingface-cli login",
                "HF_TOKEN",
            ],
        ),
        (
            "FAKE_EXPORT",
            "network",
            &[
                "could not reach the Hugging Face hub (huggingface.co) while exporting the model",
                "HF_ENDPOINT",
            ],
        ),
        (
            "FAKE_EXPORT",
            "enospc",
            &[
                "the disk filled up while exporting the model",
                "Fix: free space",
            ],
        ),
    ];
    for (var, mode, expected) in cases {
        let s = Scene::new();
        let o = s.run(&["--yes"], &[(var, mode)]);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "{mode}: {t}");
        for e in expected {
            assert!(t.contains(e), "{var}={mode}: {e:?} not in\n{t}");
        }
        assert!(s.beside_out().is_empty(), "{mode}: {:?}", s.beside_out());
        assert_eq!(
            std::fs::read_to_string(s.path("cfg/config.toml")).unwrap(),
            "# mine\n",
            "{mode}: the config is untouched by a failed export"
        );
        if var == "FAKE_PIP" {
            assert!(
                s.envs().is_empty(),
                "{mode}: the half-made environment is removed: {:?}",
                s.envs()
            );
        } else {
            assert_eq!(s.envs().len(), 1, "{mode}: a finished environment is kept");
        }
    }
}

#[test]
fn ctrl_c_stops_the_exporter_and_removes_its_temporary_folder() {
    let s = Scene::new();
    let child = s
        .command(&[], &[("FAKE_EXPORT", "hang")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !s.path("started").exists() {
        assert!(
            started.elapsed().as_secs() < 60,
            "the fake exporter never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(s.beside_out().len(), 1, "the staging folder, while it runs");
    // SAFETY: kill(2) on the child we spawned and have not reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let o = child.wait_with_output().unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(130), "{t}");
    assert!(
        t.contains("stopped by SIGINT: the export was stopped; its temporary folder was removed"),
        "{t}"
    );
    assert!(
        started.elapsed().as_secs() < 50,
        "the exporter was stopped, not waited for"
    );
    assert!(s.beside_out().is_empty(), "{:?}", s.beside_out());
}
