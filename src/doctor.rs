//! `speedscape doctor`: what this box can run, and why not where it cannot; and, run in a
//! terminal, which terminal it is and the graphics the TUI would use on it.

use std::io::IsTerminal;
use std::path::Path;

use serde::Serialize;

use crate::config::Config;
use crate::models;
use crate::runtime::{self, Device, GpuInfo, Runtime, query_gpu};

#[derive(Debug, Serialize)]
pub struct ComponentStatus {
    pub name: String,
    pub path: String,
    /// `ok`, or the error.
    pub status: String,
}

#[derive(Debug, Serialize)]
pub struct DoctorReport {
    pub config: Option<String>,
    /// How this speedscape was installed: a wheel (its environment and data) or a checkout build.
    pub install: String,
    pub device_requested: Device,
    /// The loaded ONNX Runtime, or why none loaded.
    pub onnxruntime: Result<runtime::LoadedLibrary, String>,
    /// The provider sessions really get, or why the requested one does not work.
    pub provider: Result<runtime::Provider, String>,
    /// ONNX Runtime's intra-op threads on the CPU and where sessions get them
    /// (`[runtime.session] thread_pool`); `None` when no ONNX Runtime loaded.
    pub threads: Option<String>,
    pub notes: Vec<String>,
    pub gpu: Option<GpuInfo>,
    pub wheel_advice: String,
    pub model_dir: Option<String>,
    /// Where the model folder was named (`--model-dir`, `model.dir in …`, the packaged micro model).
    pub model_source: Option<String>,
    pub tiny_model: bool,
    /// What the model folder holds (`None` when it was not found).
    pub model_kind: Option<crate::models::ModelKind>,
    pub components: Vec<ComponentStatus>,
    /// The terminal doctor runs in, as it names itself (XTVERSION), or why it was not asked.
    pub terminal: String,
    /// The protocol the TUI would draw images with here, and how it was chosen (`None`: not a
    /// terminal).
    pub graphics: Option<String>,
    /// Why the model cannot make images here (its folder does not open, or its base UNet does
    /// not load); a variant that does not load is only a component status.
    pub model_error: Option<String>,
}

impl DoctorReport {
    /// The error that makes `doctor` exit non-zero: no library, the requested device unusable,
    /// or a model that cannot make images.
    pub fn fatal(&self) -> Option<String> {
        if let Err(e) = &self.onnxruntime {
            return Some(e.clone());
        }
        if let Err(e) = &self.provider {
            return Some(e.clone());
        }
        self.model_error.clone()
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let mut line = |k: &str, v: String| s.push_str(&format!("{k:<14} {v}\n"));
        line(
            "config",
            self.config
                .clone()
                .unwrap_or_else(|| "(none: built-in defaults)".into()),
        );
        line("speedscape", self.install.clone());
        match &self.onnxruntime {
            Ok(lib) => {
                line(
                    "onnxruntime",
                    format!("{} (version {})", lib.path.display(), lib.version),
                );
                line("  found via", lib.source.to_string());
                line(
                    "  build",
                    if lib.gpu_build {
                        "GPU wheel (has CUDAExecutionProvider)".into()
                    } else {
                        "CPU-only wheel".into()
                    },
                );
            }
            Err(e) => line("onnxruntime", format!("NOT LOADED\n{e}")),
        }
        line("device", format!("{} requested", self.device_requested));
        match &self.provider {
            Ok(p) => line(
                "provider",
                format!("{p} (sessions really get it: probe ran)"),
            ),
            Err(e) => line("provider", format!("FAILED\n{e}")),
        }
        if let Some(t) = &self.threads {
            line("threads", t.clone());
        }
        match &self.gpu {
            Some(g) => line(
                "gpu",
                format!(
                    "{} ({}, driver {}, CUDA {})",
                    g.name,
                    g.memory,
                    g.driver,
                    g.cuda.as_deref().unwrap_or("?")
                ),
            ),
            None => line("gpu", "none visible (no nvidia-smi or no device)".into()),
        }
        line("wheel", self.wheel_advice.clone());
        line("terminal", self.terminal.clone());
        if let Some(g) = &self.graphics {
            line("graphics", g.clone());
        }
        for n in &self.notes {
            line("note", n.clone());
        }
        line(
            "model",
            match &self.model_dir {
                Some(d) => format!("{d}{}", self.model_kind.map_or("", |k| k.aside())),
                None => "not found".into(),
            },
        );
        if let Some(source) = &self.model_source {
            line("  found via", source.clone());
        }
        if let Some(e) = &self.model_error {
            line("  ERROR", e.replace('\n', &format!("\n{:15}", "")));
        }
        for c in &self.components {
            line(
                &format!("  {}", c.name),
                format!("{}  {}", c.status, c.path),
            );
        }
        s
    }
}

/// Runs every check; never fails itself — failures are part of the report.
pub fn run(config: &Config, device: Device, model_dir: Option<&Path>) -> DoctorReport {
    let gpu = query_gpu();
    let wheel_advice = wheel_advice(gpu.as_ref());
    let mut report = DoctorReport {
        config: config.path.as_ref().map(|p| p.display().to_string()),
        install: install_line(),
        device_requested: device,
        onnxruntime: Err(String::new()),
        provider: Err(String::new()),
        threads: None,
        notes: Vec::new(),
        gpu,
        wheel_advice,
        model_dir: None,
        model_source: None,
        tiny_model: false,
        model_kind: None,
        components: Vec::new(),
        terminal: String::new(),
        graphics: None,
        model_error: None,
    };
    (report.terminal, report.graphics) = terminal_report(
        config.tui.graphics,
        std::io::stdin().is_terminal(),
        std::io::stdout().is_terminal(),
    );
    let plan = config.search_plan();
    // Load the library on the CPU first so a CUDA failure still shows which library it was.
    let rt_cpu = match Runtime::init_with(&plan, Device::Cpu, config.runtime_options()) {
        Ok(rt) => rt,
        Err(e) => {
            report.onnxruntime = Err(format!("{e}"));
            report.provider = Err("no ONNX Runtime".into());
            return report;
        }
    };
    report.onnxruntime = Ok(rt_cpu.library.clone());
    report.threads = Some(if rt_cpu.shares_thread_pool() {
        format!(
            "{} intra-op, one pool shared by every session",
            rt_cpu.library.pool_threads
        )
    } else {
        format!(
            "{} intra-op, a pool per session",
            rt_cpu.options.intra_threads()
        )
    });
    if let Some(note) = both_wheels_note(&rt_cpu.library) {
        report.notes.push(note);
    }
    if let Err(e) = runtime::probe_cpu(&rt_cpu) {
        report
            .notes
            .push(format!("the CPU provider failed its probe: {e}"));
    }
    let rt = match device {
        Device::Cpu => Some(rt_cpu),
        _ => match Runtime::init_with(&plan, device, config.runtime_options()) {
            Ok(rt) => Some(rt),
            Err(e) => {
                report.provider = Err(format!("{e}"));
                None
            }
        },
    };
    if let Some(rt) = &rt {
        report.provider = Ok(rt.provider);
        report.notes.extend(rt.notes.iter().cloned());
    }
    match crate::open::model_choice(config, model_dir) {
        Ok(crate::open::ModelChoice { dir, kind, source }) => {
            report.model_dir = Some(dir.display().to_string());
            report.model_source = Some(source);
            report.tiny_model = kind == crate::models::ModelKind::Tiny;
            report.model_kind = Some(kind);
            if let Some(rt) = &rt {
                let (components, error) = check_components(rt, &dir, config);
                report.components = components;
                report.model_error = error;
            }
        }
        Err(e) => report.model_error = Some(format!("{e}")),
    }
    report
}

/// Every component's status, and the error that keeps the model from making images (the
/// folder does not open, or the base UNet does not load).
fn check_components(
    rt: &Runtime,
    dir: &Path,
    config: &Config,
) -> (Vec<ComponentStatus>, Option<String>) {
    let mut out = Vec::new();
    let mut error = None;
    let status = |r: color_eyre::Result<()>| match r {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("{e:#}").replace('\n', " "),
    };
    let model = crate::open::model(config, rt, dir);
    match model {
        Ok(mut m) => {
            for (name, path) in [
                ("text_encoder", m.text_encoder.file.clone()),
                ("vae_decoder", m.vae.file.clone()),
            ] {
                out.push(ComponentStatus {
                    name: name.into(),
                    path: path.display().to_string(),
                    status: "ok".into(),
                });
            }
            out.push(ComponentStatus {
                name: "tokenizer".into(),
                path: dir.join("tokenizer").display().to_string(),
                status: "ok".into(),
            });
            out.push(ComponentStatus {
                name: "scheduler".into(),
                path: dir
                    .join("scheduler")
                    .join("scheduler_config.json")
                    .display()
                    .to_string(),
                status: if m.scheduler_report.warning {
                    m.scheduler_report.message.replace('\n', " ")
                } else {
                    "ok".to_string()
                },
            });
            for v in m.variants.clone() {
                let path = dir.join(&v.folder).join("model.onnx");
                let r = m.unet(rt, &v.name).map(|_| ());
                if v.folder == "unet"
                    && let Err(e) = &r
                {
                    error = Some(format!("{e:#}"));
                }
                out.push(ComponentStatus {
                    name: format!("{} ({})", v.folder, v.label),
                    path: path.display().to_string(),
                    status: status(r),
                });
            }
            // ControlNets: like a variant, one that does not load is only its own status.
            for name in m.controlnet_names() {
                let folder = format!("{}{name}", models::controlnet::CONTROLNET_PREFIX);
                let r = m.controlnet(rt, &name).map(|_| ());
                out.push(ComponentStatus {
                    name: format!("{folder} (ControlNet {name})"),
                    path: dir.join(&folder).join("model.onnx").display().to_string(),
                    status: status(r),
                });
            }
            // The preview decoder: where there is none, previews use the latent matrix.
            let folder = models::preview_decoder::PREVIEW_DECODER_FOLDER;
            out.push(ComponentStatus {
                name: format!("{folder} (step previews)"),
                path: dir.join(folder).join("model.onnx").display().to_string(),
                status: match m.load_preview_decoder(rt) {
                    Ok(None) => "none: previews use the latent matrix".into(),
                    r => status(r.map(|_| ())),
                },
            });
        }
        // The report's model error says why; the folders below say what is there.
        Err(e) => error = Some(format!("{e:#}")),
    }
    // A folder that does not open still says which files are there.
    if out.is_empty() {
        for folder in ["text_encoder", "unet", "vae_decoder"] {
            out.push(ComponentStatus {
                name: folder.into(),
                path: dir.join(folder).join("model.onnx").display().to_string(),
                status: match models::component_file(dir, folder) {
                    Ok(_) => "file present (not loaded: the model did not open)".into(),
                    Err(e) => status(Err(e)),
                },
            });
        }
    }
    (out, error)
}

/// The terminal and the graphics the TUI would use in it with config.toml's `[tui] graphics`,
/// as the TUI picks them ([`crate::tui::pick_graphics`]); the terminal is asked only when
/// stdin and stdout are one (a pipe would wait for a reply that never comes).
fn terminal_report(
    graphics: crate::config::Graphics,
    stdin_tty: bool,
    stdout_tty: bool,
) -> (String, Option<String>) {
    if !(stdin_tty && stdout_tty) {
        return (
            "not a terminal (stdin or stdout is not a tty), so not asked".into(),
            None,
        );
    }
    let pick = crate::tui::pick_graphics(graphics, "config.toml");
    let identity = pick.terminal.unwrap_or_else(crate::tui::terminal::identify);
    let protocol = format!("{:?}", pick.picker.protocol_type()).to_lowercase();
    (
        identity.to_string(),
        Some(format!("{protocol} ({})", pick.how)),
    )
}

/// `speedscape <version>`, and how it was installed: the wheel's environment and data, or the
/// binary of a checkout build.
fn install_line() -> String {
    let version = env!("CARGO_PKG_VERSION");
    match crate::install::wheel() {
        Some(w) => format!(
            "{version}, wheel installed in {} (data {})",
            w.prefix.display(),
            w.data.display()
        ),
        None => {
            let exe =
                std::env::current_exe().map_or_else(|_| "?".into(), |p| p.display().to_string());
            format!("{version}, built with cargo, not from a wheel ({exe})")
        }
    }
}

/// A note when the library came from an environment holding both the `onnxruntime` and the
/// `onnxruntime-gpu` wheel (`speedscape[cuda]` installs both; they unpack into one folder, so
/// the one installed last owns the files they share).
fn both_wheels_note(lib: &runtime::LoadedLibrary) -> Option<String> {
    let runtime::LibrarySource::InstallEnv(prefix) = &lib.source else {
        return None;
    };
    let wheels = runtime::onnxruntime_wheels(&runtime::venv_site_packages(prefix)?);
    let listed: Vec<String> = wheels.iter().map(|(n, v)| format!("{n} {v}")).collect();
    (wheels.len() > 1).then(|| {
        format!(
            "{} are both installed in {}; speedscape uses the GPU wheel's library. If CUDA fails, \
             `pip uninstall -y onnxruntime onnxruntime-gpu && pip install 'onnxruntime-gpu[cuda,cudnn]'` \
             in that environment leaves the GPU wheel alone",
            listed.join(" and "),
            prefix.display()
        )
    })
}

/// Which `onnxruntime-gpu` wheel fits this driver.
fn wheel_advice(gpu: Option<&GpuInfo>) -> String {
    let major = gpu
        .and_then(|g| g.cuda.as_deref())
        .and_then(|c| c.split('.').next())
        .and_then(|m| m.parse::<u32>().ok());
    match major {
        Some(m) if m >= 13 => "driver supports CUDA 13: `pip install 'onnxruntime-gpu[cuda,cudnn]'` (1.27 or newer)".into(),
        Some(12) => "driver stops at CUDA 12: `pip install 'onnxruntime-gpu[cuda,cudnn]==1.26.*'` (1.27+ needs CUDA 13)".into(),
        Some(m) => format!("driver supports CUDA {m} only: onnxruntime-gpu needs CUDA 12 or 13; use --device cpu"),
        None => "no NVIDIA driver seen: the CPU wheel `onnxruntime` is the one to use".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_a_terminal_doctor_does_not_ask_and_says_why() {
        for (stdin, stdout) in [(false, true), (true, false), (false, false)] {
            let (terminal, graphics) =
                terminal_report(crate::config::Graphics::Auto, stdin, stdout);
            assert_eq!(
                terminal,
                "not a terminal (stdin or stdout is not a tty), so not asked"
            );
            assert_eq!(graphics, None);
        }
    }
}
