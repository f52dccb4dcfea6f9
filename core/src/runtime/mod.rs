//! ONNX Runtime: library discovery, execution providers, session loading, tensor helpers.
//!
//! A [`Runtime`] is the loaded library plus the execution provider every session of this
//! process gets. A CUDA request never runs on the CPU silently: `device = "cuda"` registers
//! the CUDA provider with `error_on_failure`, and `auto` says when it falls back.

pub(crate) mod failure;
mod gpu;
mod library;
mod options;
pub mod tensor;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use eyre::{bail, eyre};
use ort::environment::Environment;
use ort::ep::{self, ExecutionProvider, ExecutionProviderDispatch};
use ort::session::Session;
use ort::session::builder::SessionBuilder;
use serde::{Deserialize, Serialize};

use crate::error::Fixable;

pub use gpu::{GpuInfo, query_gpu};
pub use library::{
    LibrarySource, SearchPlan, install_prefix, onnxruntime_wheels, python_env_of,
    venv_site_packages,
};
pub use options::{
    ConvSearch, CpuMemory, CudaOptions, Optimization, Options, SessionOptions, TensorRtOptions,
    ThreadPool,
};

/// The execution provider the user asks for (`device` in config.toml, `--device`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// CUDA when it works, else CPU — and say so.
    #[default]
    Auto,
    /// CUDA or a clear error; never a silent CPU run.
    Cuda,
    /// TensorRT (with CUDA for what it does not take), engines cached on disk; falls back to
    /// CUDA with a note when TensorRT is not installed.
    #[serde(rename = "tensorrt")]
    TensorRt,
    /// ONNX Runtime's CPU provider.
    Cpu,
}

impl Device {
    /// Every device, in the order a command line lists them.
    pub const ALL: [Device; 4] = [Device::Auto, Device::Cuda, Device::TensorRt, Device::Cpu];

    /// The name config.toml and `--device` use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Cuda => "cuda",
            Self::TensorRt => "tensorrt",
            Self::Cpu => "cpu",
        }
    }

    /// One line on what the device means, for a command line's help.
    pub fn about(self) -> &'static str {
        match self {
            Self::Auto => "CUDA when it works, else CPU — and say so",
            Self::Cuda => "CUDA or a clear error; never a silent CPU run",
            Self::TensorRt => {
                "TensorRT (with CUDA for what it does not take), engines cached on disk; falls back to CUDA with a note when TensorRT is not installed"
            }
            Self::Cpu => "ONNX Runtime's CPU provider",
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Device {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Device::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| format!("unknown device {s:?} (auto, cuda, tensorrt or cpu)"))
    }
}

/// The execution provider sessions really get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Provider {
    /// ONNX Runtime's CUDA provider.
    #[serde(rename = "CUDAExecutionProvider")]
    Cuda,
    /// TensorRT first, CUDA for the nodes TensorRT does not take.
    #[serde(rename = "TensorrtExecutionProvider")]
    TensorRt,
    /// ONNX Runtime's CPU provider.
    #[serde(rename = "CPUExecutionProvider")]
    Cpu,
}

impl Provider {
    /// Runs on the GPU.
    pub fn is_gpu(self) -> bool {
        matches!(self, Self::Cuda | Self::TensorRt)
    }

    /// A short name for headers: `CUDA`, `TensorRT`, `CPU`.
    pub fn short(self) -> &'static str {
        match self {
            Self::Cuda => "CUDA",
            Self::TensorRt => "TensorRT",
            Self::Cpu => "CPU",
        }
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Cuda => "CUDAExecutionProvider",
            Self::TensorRt => "TensorrtExecutionProvider",
            Self::Cpu => "CPUExecutionProvider",
        })
    }
}

/// The ONNX Runtime library this process loaded.
#[derive(Debug, Clone, Serialize)]
pub struct LoadedLibrary {
    /// The shared library's full path (`…/onnxruntime/capi/libonnxruntime.so.1.31.1`).
    pub path: PathBuf,
    /// ONNX Runtime's own version string, e.g. `1.31.1`.
    pub version: String,
    /// Where discovery found it.
    #[serde(serialize_with = "serialize_display")]
    pub source: LibrarySource,
    /// Whether the wheel ships the CUDA provider (`onnxruntime-gpu`).
    pub gpu_build: bool,
    /// Threads of the process's shared intra-op pool ([`ThreadPool::Shared`]): the first
    /// runtime's `intra_op_threads` (0: one per physical core), fixed for the process.
    pub pool_threads: usize,
}

fn serialize_display<S: serde::Serializer, T: std::fmt::Display>(
    v: &T,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// What a session takes in place of its file's weights (run-time LoRA's fused weights): values
/// by initializer name, used by ONNX Runtime as they are (`AddInitializer`: no copy; the file's
/// own bytes for them are never read).
///
/// Such a session is optimised at most at the Extended level: at All, ONNX Runtime 1.31's layout
/// passes read a Conv's weight from the graph file and silently ignore its replacement (checked
/// against torch by `tests/fixtures/make_lora_fixtures.py`). Extended keeps every fusion CUDA
/// uses, and on the CPU a step of SD v1.5's UNet ran as fast (bench/RESULTS.md). The other
/// call, `AddExternalInitializers`, copies every value twice (peak memory +2 copies) and refuses
/// weights stored inside the graph file.
#[derive(Default)]
pub(crate) struct WeightOverrides(pub(crate) Vec<(String, ort::value::DynValue)>);

/// A loaded ONNX Runtime and the provider its sessions get.
#[derive(Clone)]
pub struct Runtime {
    env: Environment,
    /// The library loaded (once per process).
    pub library: LoadedLibrary,
    /// The execution provider every session of this runtime gets.
    pub provider: Provider,
    /// Session and provider options (config.toml's `[runtime.*]` tables).
    pub options: Options,
    /// Things the user should know (a fallback, preloaded CUDA libraries).
    pub notes: Vec<String>,
}

/// ONNX Runtime can be loaded once per process; tests and the TUI share it.
static LOADED: OnceLock<Mutex<Option<(LoadedLibrary, Environment)>>> = OnceLock::new();

/// ONNX Runtime's own error log lines, newest last (the last 8). They are not printed: each
/// comes with the error of the call that failed, which speedscape explains, and ORT's coloured
/// copy would only repeat it raw (on the TUI's screen too). Where a log line adds to an error
/// (the CUDA provider's reason for not loading), the message quotes it from here.
/// `ORT_LOG=warning` (or info, verbose) prints ORT's log on stderr instead, for debugging.
static ORT_LOG: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());

/// The logger: keeps error lines (see [`ORT_LOG`]), or prints from `print_from` up.
fn ort_logger(print_from: Option<ort::logging::LogLevel>) -> ort::logging::LoggerFunction {
    use ort::logging::LogLevel;
    Arc::new(
        move |level: LogLevel, _category: &str, _id: &str, location: &str, message: &str| {
            if let Some(min) = print_from {
                if level >= min {
                    eprintln!("onnxruntime {level:?} {location}: {message}");
                }
            } else if level >= LogLevel::Error
                && let Ok(mut log) = ORT_LOG.lock()
            {
                if log.len() == 8 {
                    log.pop_front();
                }
                log.push_back(message.trim().to_string());
            }
        },
    )
}

/// Takes ONNX Runtime's error log lines kept since the last call.
pub(crate) fn take_ort_log() -> Vec<String> {
    ORT_LOG
        .lock()
        .map(|mut l| l.drain(..).collect())
        .unwrap_or_default()
}

/// `error` plus what ONNX Runtime logged (`logged`) that it does not already say.
fn with_ort_log(error: &str, logged: Vec<String>) -> String {
    let mut out = error.trim_end().to_string();
    for line in logged {
        if !error.contains(&line) {
            out.push_str(&format!("\nONNX Runtime logged: {line}"));
        }
    }
    out
}

/// The fix printed when no library loads.
pub(crate) const SETUP_FIX: &str = "run `scripts/setup.sh` (installs the `onnxruntime` wheel into ./.venv), \
     or `pip install onnxruntime` (CPU) / `pip install 'onnxruntime-gpu[cuda,cudnn]'` (CUDA 13; \
     `onnxruntime-gpu==1.26.*` for CUDA 12 drivers) into your python3, or set \
     runtime.onnxruntime in config.toml / ORT_DYLIB_PATH to the full path of libonnxruntime.so.1.x.y";

impl Runtime {
    /// Loads ONNX Runtime (once per process) and settles the execution provider for `device`,
    /// with default session options.
    pub fn init(plan: &SearchPlan, device: Device) -> eyre::Result<Self> {
        Self::init_with(plan, device, Options::default())
    }

    /// [`Runtime::init`] with `options` for every session.
    pub fn init_with(plan: &SearchPlan, device: Device, options: Options) -> eyre::Result<Self> {
        let (library, env) = load_library(plan, options.intra_threads())?;
        // What ORT logged before is about other calls; the CUDA probe's message quotes its own.
        take_ort_log();
        let mut notes = Vec::new();
        let provider = match device {
            Device::Cpu => Provider::Cpu,
            Device::Cuda => {
                prepare_cuda(&library, &mut notes)?;
                probe_cuda(&env, &options).map_err(|e| cuda_failure_message(&library, &e))?;
                Provider::Cuda
            }
            Device::TensorRt => {
                prepare_cuda(&library, &mut notes)?;
                preload_tensorrt(&library, &mut notes);
                let cache = options.tensorrt.engine_cache.clone();
                match probe_tensorrt(&env, &options, &cache) {
                    Ok(()) => Provider::TensorRt,
                    Err(e) => {
                        probe_cuda(&env, &options)
                            .map_err(|e| cuda_failure_message(&library, &e))?;
                        notes.push(format!(
                            "device tensorrt: TensorRT is not usable ({}); running on CUDA. Fix: \
                             pip install tensorrt-cu13 (NVIDIA's wheels) beside onnxruntime-gpu",
                            first_line(&e)
                        ));
                        Provider::Cuda
                    }
                }
            }
            Device::Auto => {
                let attempt = prepare_cuda(&library, &mut notes)
                    .and_then(|()| probe_cuda(&env, &options).map_err(|e| eyre!(e)));
                match attempt {
                    Ok(()) => Provider::Cuda,
                    Err(e) => {
                        notes.push(format!(
                            "device auto: CUDA is not usable ({}); running on CPU",
                            first_line(&e.to_string())
                        ));
                        Provider::Cpu
                    }
                }
            }
        };
        let mut options = options;
        if options.session.cpu_memory == options::CpuMemory::SharedArena
            && let Err(e) = options::register_shared_cpu_arena(&env)
        {
            notes.push(format!(
                "cpu_memory = \"shared-arena\" is not available ({e}); each session keeps its own arena"
            ));
            options.session.cpu_memory = options::CpuMemory::Arena;
        }
        Ok(Self {
            env,
            library,
            provider,
            options,
            notes,
        })
    }

    /// The execution providers a session of this runtime registers, in order.
    fn execution_providers(&self) -> Vec<ExecutionProviderDispatch> {
        let o = &self.options;
        match self.provider {
            Provider::Cuda => vec![o.cuda().build().error_on_failure()],
            Provider::TensorRt => vec![
                o.tensorrt(&o.tensorrt.engine_cache)
                    .build()
                    .error_on_failure(),
                o.cuda().build().error_on_failure(),
            ],
            Provider::Cpu => vec![o.cpu().build()],
        }
    }

    /// Opens `model` (an `.onnx` file; external data beside it) on this runtime's provider.
    /// With `[runtime.session] optimized_cache`, the graph ONNX Runtime optimised for this
    /// provider is kept there, keyed by the source files, ONNX Runtime's version, the provider
    /// and the options, and loaded as is next time.
    pub fn session(&self, model: &Path) -> eyre::Result<Session> {
        match self.options.session.optimized_cache.clone() {
            Some(dir) if !dir.as_os_str().is_empty() => self.cached_session(model, &dir),
            _ => self.build_session(model, None, false, WeightOverrides::default()),
        }
    }

    /// A session of `model` with some of its weights replaced (run-time LoRA: the fused
    /// weights). Never from or into the optimised-graph cache, which is keyed by the files alone.
    pub(crate) fn session_with(
        &self,
        model: &Path,
        overrides: WeightOverrides,
    ) -> eyre::Result<Session> {
        if overrides.0.is_empty() {
            return self.session(model);
        }
        self.build_session(model, None, false, overrides)
    }

    /// Whether this runtime's sessions take their intra-op threads from the process's shared
    /// pool (`[runtime.session] thread_pool`).
    pub fn shares_thread_pool(&self) -> bool {
        self.options.shares_thread_pool(self.library.pool_threads)
    }

    /// A session of `model` for work done beside a timed run while it runs (the preview
    /// decoder): this runtime's provider and options, but one intra-op thread that sleeps when it
    /// has nothing to do. A pool of its own that spins takes the cores the run's operators are
    /// timed on: on 2 CPU cores, the micro model's DPM-Solver++ 20 with decoder previews took a
    /// median 438 ms with the preview decoder on a default session, 278 ms on this one, and
    /// 250 ms with no previews (exercise 1, 6 runs each, interleaved). Never from the
    /// optimised-graph cache (such graphs are small).
    pub fn side_session(&self, model: &Path) -> eyre::Result<Session> {
        self.builder()?
            .with_independent_thread_pool()
            .map_err(|e| eyre!("{e}"))?
            .with_intra_threads(1)
            .map_err(|e| eyre!("{e}"))?
            .with_intra_op_spinning(false)
            .map_err(|e| eyre!("{e}"))?
            .commit_from_file(model)
            .map_err(|e| self.load_error(model, &e.to_string()))
    }

    /// A session builder with this runtime's options and execution providers.
    fn builder(&self) -> eyre::Result<SessionBuilder> {
        let builder = Session::builder(&self.env).map_err(|e| eyre!("{e}"))?;
        self.options
            .apply(builder, self.library.pool_threads)
            .map_err(|e| eyre!("{e}"))?
            .with_execution_providers(self.execution_providers())
            .map_err(|e| eyre!("{e}"))
    }

    /// A session of `model`; `save_to` writes the optimised graph there (weights beside it in
    /// `model.onnx.data`); `preoptimised` loads a graph already optimised (no passes again).
    fn build_session(
        &self,
        model: &Path,
        save_to: Option<&Path>,
        preoptimised: bool,
        overrides: WeightOverrides,
    ) -> eyre::Result<Session> {
        let mut builder = self.builder()?;
        if preoptimised {
            builder = builder
                .with_optimization_level(ort::session::builder::GraphOptimizationLevel::Disable)
                .map_err(|e| eyre!("{e}"))?;
        }
        if let Some(path) = save_to {
            builder = builder
                .with_optimized_model_path(path)
                .map_err(|e| eyre!("{e}"))?
                .with_config_entry(
                    "session.optimized_model_external_initializers_file_name",
                    "model.onnx.data",
                )
                .map_err(|e| eyre!("{e}"))?
                .with_config_entry(
                    "session.optimized_model_external_initializers_min_size_in_bytes",
                    "1024",
                )
                .map_err(|e| eyre!("{e}"))?;
        }
        if !overrides.0.is_empty()
            && self.options.session.optimization == options::Optimization::All
        {
            builder = builder
                .with_optimization_level(ort::session::builder::GraphOptimizationLevel::Level2)
                .map_err(|e| eyre!("{e}"))?;
        }
        for (name, value) in overrides.0 {
            builder = builder
                .with_initializer(&name, value)
                .map_err(|e| eyre!("overriding the initializer {name}: {e}"))?;
        }
        builder
            .commit_from_file(model)
            .map_err(|e| self.load_error(model, &e.to_string()))
    }

    /// What the allocator situation is, for out-of-memory messages.
    pub(crate) fn memory_context(&self) -> failure::MemoryContext {
        failure::MemoryContext {
            gpu: self.provider.is_gpu(),
            memory_limit_mib: self.options.cuda.memory_limit_mib,
        }
    }

    /// ONNX Runtime's refusal to make a session of `model`, explained: out of memory, a file
    /// that is not (all) there, or its own words with the check to run.
    fn load_error(&self, model: &Path, raw: &str) -> eyre::Report {
        let logged = take_ort_log();
        let component = model
            .parent()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "the model".into());
        if let Some(oom) = failure::out_of_memory(raw) {
            return eyre::Report::new(failure::out_of_memory_message(
                &format!("loading {component} ({})", model.display()),
                failure::MemoryPhase::Loading,
                oom,
                raw,
                self.memory_context(),
            ));
        }
        if let Some(why) = failure::load_failure(model, raw) {
            return eyre::Report::new(why);
        }
        let root = model
            .parent()
            .and_then(Path::parent)
            .unwrap_or(Path::new("."));
        eyre::Report::new(Fixable::new(
            with_ort_log(raw, logged),
            format!(
                "`speedscape models verify {}` checks every file of the folder against manifest.json and runs each graph once",
                root.display()
            ),
        ))
        .wrap_err(format!("ONNX Runtime could not load {}", model.display()))
    }

    /// The optimised-graph cache: `dir/<key>/model.onnx`, the key hashing the source files
    /// (path, size, modification time), ONNX Runtime's version, the provider and the options.
    /// A miss builds the session normally and writes the optimised graph beside, renamed into
    /// place only once complete; a cached graph that does not load is rebuilt from the source.
    fn cached_session(&self, model: &Path, dir: &Path) -> eyre::Result<Session> {
        let key = self.cache_key(model);
        let entry = dir.join(&key);
        let cached = entry.join("model.onnx");
        if cached.is_file() {
            match self.build_session(&cached, None, true, WeightOverrides::default()) {
                Ok(s) => return Ok(s),
                Err(_) => {
                    // Damaged or written by another build: drop it and make it again.
                    let _ = std::fs::remove_dir_all(&entry);
                }
            }
        }
        let staging = dir.join(format!(".{key}.partial-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        if std::fs::create_dir_all(&staging).is_err() {
            // An unwritable cache must not stop the run.
            return self.build_session(model, None, false, WeightOverrides::default());
        }
        let session = self.build_session(
            model,
            Some(&staging.join("model.onnx")),
            false,
            WeightOverrides::default(),
        );
        let complete = session.is_ok() && staging.join("model.onnx").is_file();
        if !complete || std::fs::rename(&staging, &entry).is_err() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        match session {
            Ok(s) => Ok(s),
            // Writing the optimised graph failed (a full disk, say) or the model is bad: a
            // session without the cache tells which, and a full cache disk must not stop the run.
            Err(_) => self.build_session(model, None, false, WeightOverrides::default()),
        }
    }

    fn cache_key(&self, model: &Path) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        let folder = model.parent().unwrap_or(Path::new("."));
        let mut files: Vec<(String, u64, u128)> = std::fs::read_dir(folder)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .filter_map(|e| {
                        let m = e.metadata().ok()?;
                        let mtime = m
                            .modified()
                            .ok()?
                            .duration_since(std::time::UNIX_EPOCH)
                            .ok()?
                            .as_nanos();
                        m.is_file()
                            .then(|| (e.file_name().to_string_lossy().into_owned(), m.len(), mtime))
                    })
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        h.update(
            model
                .canonicalize()
                .unwrap_or_else(|_| model.to_path_buf())
                .to_string_lossy()
                .as_bytes(),
        );
        h.update(format!("{files:?}").as_bytes());
        h.update(self.library.version.as_bytes());
        h.update(self.provider.to_string().as_bytes());
        h.update(
            serde_json::to_string(&self.options)
                .unwrap_or_default()
                .as_bytes(),
        );
        let name = folder
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        let digest = h.finalize();
        let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!("{name}-{hex}")
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

fn load_library(
    plan: &SearchPlan,
    pool_threads: usize,
) -> eyre::Result<(LoadedLibrary, Environment)> {
    let cell = LOADED.get_or_init(|| Mutex::new(None));
    let mut guard = cell
        .lock()
        .map_err(|_| eyre!("ONNX Runtime loader poisoned"))?;
    if let Some((lib, env)) = guard.as_ref() {
        return Ok((lib.clone(), env.clone()));
    }
    let mut tried = Vec::new();
    // The explicit choice that failed (and stopped the search), if any.
    let mut explicit: Option<LibrarySource> = None;
    for candidate in plan.candidates() {
        let path = match candidate.path {
            Ok(p) => p,
            Err(why) => {
                tried.push(format!("  - {}: {why}", candidate.source));
                continue;
            }
        };
        if !path.is_file() {
            tried.push(format!(
                "  - {} → {}: no such file",
                candidate.source,
                path.display()
            ));
            if matches!(
                candidate.source,
                LibrarySource::Config | LibrarySource::EnvVar
            ) {
                explicit = Some(candidate.source);
                break; // an explicit choice that fails is not silently replaced
            }
            continue;
        }
        match ort::init_from(&path) {
            Ok(builder) => {
                let level = match std::env::var("ORT_LOG").as_deref() {
                    Ok("warning") => Some(ort::logging::LogLevel::Warning),
                    Ok("info") => Some(ort::logging::LogLevel::Info),
                    Ok("verbose") => Some(ort::logging::LogLevel::Verbose),
                    _ => None,
                };
                let pool = options::shared_thread_pool(pool_threads).map_err(|e| {
                    eyre!(
                        "ONNX Runtime at {} has no global thread pool: {e}",
                        path.display()
                    )
                })?;
                let env = builder
                    .with_name("speedscape")
                    .with_logger(ort_logger(level))
                    .with_global_thread_pool(pool)
                    .build()
                    .map_err(|e| {
                        eyre!(
                            "ONNX Runtime at {} loaded but would not start: {e}",
                            path.display()
                        )
                    })?;
                // A custom logger gets every level unless told; keep ORT from formatting
                // verbose messages nobody reads.
                env.set_log_level(level.unwrap_or(ort::logging::LogLevel::Error));
                let version = ort_version(&path);
                let lib = LoadedLibrary {
                    gpu_build: library::has_cuda_provider(&path),
                    pool_threads,
                    path,
                    version,
                    source: candidate.source,
                };
                *guard = Some((lib.clone(), env.clone()));
                return Ok((lib, env));
            }
            Err(e) => {
                tried.push(format!(
                    "  - {} → {}: {}",
                    candidate.source,
                    path.display(),
                    failure::library_failure(&e)
                ));
                if matches!(
                    candidate.source,
                    LibrarySource::Config | LibrarySource::EnvVar
                ) {
                    explicit = Some(candidate.source);
                    break;
                }
            }
        }
    }
    let first = match explicit {
        Some(LibrarySource::EnvVar) => {
            "point ORT_DYLIB_PATH at the full path of libonnxruntime.so.1.x.y (the onnxruntime wheel has it in site-packages/onnxruntime/capi/), or unset it so speedscape searches python3 and ./.venv; else "
        }
        Some(LibrarySource::Config) => {
            "correct runtime.onnxruntime in config.toml (the full path of libonnxruntime.so.1.x.y), or remove it so speedscape searches ORT_DYLIB_PATH, python3 and ./.venv; else "
        }
        _ => "",
    };
    bail!(Fixable::new(
        format!(
            "could not load ONNX Runtime (speedscape needs version 1.{} or newer).\nSearched:\n{}",
            ort::MINOR_VERSION,
            tried.join("\n")
        ),
        format!("{first}{SETUP_FIX}"),
    ))
}

/// ONNX Runtime's own version string (`OrtGetApiBase()->GetVersionString()`), e.g. `1.31.1`.
fn ort_version(path: &Path) -> String {
    // The library is already loaded: this dlopen only takes another reference to it.
    let read = || -> Option<String> {
        let lib = unsafe { libloading::Library::new(path) }.ok()?;
        let get_base: libloading::Symbol<unsafe extern "C" fn() -> *const ort::sys::OrtApiBase> =
            unsafe { lib.get(b"OrtGetApiBase") }.ok()?;
        let base = unsafe { get_base() };
        if base.is_null() {
            return None;
        }
        let v = unsafe { ((*base).GetVersionString)() };
        (!v.is_null()).then(|| {
            unsafe { std::ffi::CStr::from_ptr(v) }
                .to_string_lossy()
                .to_string()
        })
    };
    read().unwrap_or_else(|| "unknown".to_string())
}

/// Checks that the library can do CUDA at all and preloads CUDA/cuDNN from pip's
/// `nvidia-*` packages when they sit beside the wheel.
fn prepare_cuda(library: &LoadedLibrary, notes: &mut Vec<String>) -> eyre::Result<()> {
    if !ep::CUDA::is_available().unwrap_or(false) {
        bail!(Fixable::new(
            format!(
                "the ONNX Runtime at {} (version {}) is a CPU-only build: it has no CUDAExecutionProvider.",
                library.path.display(),
                library.version
            ),
            "install the GPU wheel, `SPEEDSCAPE_ORT_WHEEL='onnxruntime-gpu[cuda,cudnn]' scripts/setup.sh` \
             (CUDA 13 drivers; add SPEEDSCAPE_ORT_VERSION=1.26.0 for CUDA 12), or use --device cpu",
        ));
    }
    let Some(site_packages) = library.path.ancestors().nth(3) else {
        return Ok(());
    };
    let nvidia = site_packages.join("nvidia");
    let Ok(entries) = std::fs::read_dir(&nvidia) else {
        return Ok(());
    };
    let lib_dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("lib"))
        .filter(|p| p.is_dir())
        .collect();
    let mut loaded = Vec::new();
    for name in ep::cuda::CUDA_DYLIBS.iter().chain(ep::cuda::CUDNN_DYLIBS) {
        if let Some(path) = lib_dirs.iter().map(|d| d.join(name)).find(|p| p.is_file())
            && ort::util::preload_dylib(path.as_path()).is_ok()
        {
            loaded.push(*name);
        }
    }
    if !loaded.is_empty() {
        notes.push(format!(
            "preloaded {} CUDA/cuDNN libraries from {}",
            loaded.len(),
            nvidia.display()
        ));
    }
    Ok(())
}

/// A one-node model (`y = Relu(x)`, opset 13) used to prove a provider really works.
const PROBE_MODEL: &[u8] = &[
    8, 7, 18, 10, 115, 112, 101, 101, 100, 115, 99, 97, 112, 101, 58, 55, 10, 12, 10, 1, 120, 18,
    1, 121, 34, 4, 82, 101, 108, 117, 18, 5, 112, 114, 111, 98, 101, 90, 15, 10, 1, 120, 18, 10,
    10, 8, 8, 1, 18, 4, 10, 2, 8, 1, 98, 15, 10, 1, 121, 18, 10, 10, 8, 8, 1, 18, 4, 10, 2, 8, 1,
    66, 4, 10, 0, 16, 13,
];

/// Builds and runs the probe model with the CUDA provider registered strictly.
fn probe_cuda(env: &Environment, options: &Options) -> Result<(), String> {
    probe_with(env, vec![options.cuda().build().error_on_failure()], "CUDA")
}

/// The same with TensorRT (engine built into `cache`).
fn probe_tensorrt(env: &Environment, options: &Options, cache: &Path) -> Result<(), String> {
    if !ep::TensorRT::is_available().unwrap_or(false) {
        return Err("this ONNX Runtime build has no TensorrtExecutionProvider".into());
    }
    std::fs::create_dir_all(cache)
        .map_err(|e| format!("cannot create the engine cache {}: {e}", cache.display()))?;
    probe_with(
        env,
        vec![options.tensorrt(cache).build().error_on_failure()],
        "TensorRT",
    )
}

/// Runs the one-node probe model with `eps` registered strictly.
fn probe_with(
    env: &Environment,
    eps: Vec<ExecutionProviderDispatch>,
    name: &str,
) -> Result<(), String> {
    let mut session = Session::builder(env)
        .map_err(|e| e.to_string())?
        .with_execution_providers(eps)
        .map_err(|e| e.to_string())?
        .commit_from_memory(PROBE_MODEL)
        .map_err(|e| e.to_string())?;
    let x = ort::value::Tensor::from_array(([1usize], vec![-1.0f32])).map_err(|e| e.to_string())?;
    let out = session.run(ort::inputs![x]).map_err(|e| e.to_string())?;
    let (_, y) = out[0]
        .try_extract_tensor::<f32>()
        .map_err(|e| e.to_string())?;
    if y != [0.0] {
        return Err(format!("the {name} probe computed Relu(-1) = {y:?}"));
    }
    Ok(())
}

/// Preloads TensorRT's libraries from NVIDIA's pip wheels (`tensorrt_libs/` beside the
/// onnxruntime wheel) so the TensorRT provider finds them.
fn preload_tensorrt(library: &LoadedLibrary, notes: &mut Vec<String>) {
    let Some(site_packages) = library.path.ancestors().nth(3) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(site_packages.join("tensorrt_libs")) else {
        return;
    };
    let mut libs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libnvinfer") && n.contains(".so"))
        })
        .collect();
    libs.sort();
    let loaded = libs
        .iter()
        .filter(|p| ort::util::preload_dylib(p.as_path()).is_ok())
        .count();
    if loaded > 0 {
        notes.push(format!(
            "preloaded {loaded} TensorRT libraries from {}",
            site_packages.join("tensorrt_libs").display()
        ));
    }
}

fn cuda_failure_message(library: &LoadedLibrary, error: &str) -> Fixable {
    let error = with_ort_log(error, take_ort_log());
    Fixable::new(
        format!(
            "--device cuda was asked for, but ONNX Runtime's CUDA provider does not work here: {error}\n\
             ONNX Runtime: {} (version {}).",
            library.path.display(),
            library.version
        ),
        "check `nvidia-smi` shows a GPU; install CUDA 13 + cuDNN 9 libraries \
         (`pip install 'onnxruntime-gpu[cuda,cudnn]'` brings them) or put them on LD_LIBRARY_PATH; \
         for a CUDA 12 driver use onnxruntime-gpu 1.26; or run with --device cpu. \
         speedscape never falls back to the CPU when CUDA is asked for.",
    )
}

/// Runs the probe model on the CPU provider: proves the library executes a graph.
pub fn probe_cpu(rt: &Runtime) -> eyre::Result<()> {
    let mut session = Session::builder(&rt.env)
        .map_err(|e| eyre!("{e}"))?
        .commit_from_memory(PROBE_MODEL)
        .map_err(|e| eyre!("{e}"))?;
    let x = ort::value::Tensor::from_array(([1usize], vec![-2.0f32]))?;
    let out = session.run(ort::inputs![x])?;
    let (_, y) = out[0].try_extract_tensor::<f32>()?;
    if y != [0.0] {
        bail!("the CPU probe computed Relu(-2) = {y:?}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu_runtime() -> Runtime {
        let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
        Runtime::init(&SearchPlan::new(None, Some(&root)), Device::Cpu).unwrap()
    }

    #[test]
    fn a_session_that_runs_out_of_memory_while_loading_names_the_component_and_the_cap() {
        // Verbatim from an H200 with `[runtime.cuda] memory_limit_mib = 256`: speedscape used to
        // print only "ONNX Runtime could not load …/text_encoder/model.onnx" and this text.
        let raw = "Exception during initialization: /onnxruntime_src/onnxruntime/core/framework/bfc_arena.cc:360 void* onnxruntime::BFCArena::AllocateRawInternal(size_t, bool, onnxruntime::Stream*) Available memory of 0 is smaller than requested bytes of 4718592";
        let mut rt = cpu_runtime();
        rt.provider = Provider::Cuda;
        rt.options.cuda.memory_limit_mib = 256;
        let model = Path::new("/m/sd15/text_encoder/model.onnx");
        let e = format!("{:#}", rt.load_error(model, raw));
        assert!(
            e.starts_with("out of GPU memory while loading text_encoder (/m/sd15/text_encoder/model.onnx): asked for 4.5 MiB (the CUDA arena is capped at 256 MiB by [runtime.cuda] memory_limit_mib)\n"),
            "{e}"
        );
        assert!(
            e.contains("\nFix: raise or unset `[runtime.cuda] memory_limit_mib`"),
            "{e}"
        );
        // Any other load error keeps ONNX Runtime's words, under the file, with the check to run.
        let e = rt.load_error(model, "Node (x) Op (Foo) is not a registered function/op");
        let text = format!("{e:?}");
        assert!(
            text.contains("ONNX Runtime could not load /m/sd15/text_encoder/model.onnx"),
            "{text}"
        );
        assert!(
            text.contains("Fix: `speedscape models verify /m/sd15`"),
            "{text}"
        );
    }
}
