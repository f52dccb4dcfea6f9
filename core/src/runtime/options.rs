//! Session options from config.toml (`[runtime.session]`, `[runtime.cuda]`, `[runtime.tensorrt]`):
//! how ONNX Runtime optimises and runs each graph. The defaults are what measured fastest (or
//! leanest at the same speed) on our machines; `speedscape bench` shows the effect of a change.

use std::path::PathBuf;

use ort::ep;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use serde::{Deserialize, Serialize};

/// ONNX Runtime's graph optimisation level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Optimization {
    /// None: the graph runs as exported.
    Disable,
    /// Constant folding and redundant-node elimination (ORT's Level1).
    Basic,
    /// Also fusions of common subgraphs, such as attention and GELU (ORT's Level2).
    Extended,
    /// Everything, including layout changes (ORT's Level3). The default.
    #[default]
    All,
}

impl Optimization {
    fn level(self) -> GraphOptimizationLevel {
        match self {
            Self::Disable => GraphOptimizationLevel::Disable,
            Self::Basic => GraphOptimizationLevel::Level1,
            Self::Extended => GraphOptimizationLevel::Level2,
            Self::All => GraphOptimizationLevel::Level3,
        }
    }
}

/// `[runtime.session]`: options of every session, on any provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionOptions {
    /// How far ONNX Runtime rewrites each graph when the session is created.
    pub optimization: Optimization,
    /// Threads one operator may use; 0 (default) = one per physical core (hyper-threads slow
    /// convolutions down).
    pub intra_op_threads: usize,
    /// Where a session's intra-op threads come from; see [`ThreadPool`].
    pub thread_pool: ThreadPool,
    /// Treat subnormal floats as zero in ONNX Runtime's threads (default on): random-weight UNets
    /// produce them, and x86 runs up to 10× slower on them. The effect on values is < 1e-38.
    pub flush_denormals: bool,
    /// Where CPU sessions get their buffers; see [`CpuMemory`].
    pub cpu_memory: CpuMemory,
    /// Plan one block per call for all of a graph's buffers (default off): in a shared arena,
    /// the UNet's block and the VAE's block cannot reuse each other's room, which costs 2.2 GiB
    /// at 512² and gains no time (bench/RESULTS.md).
    pub memory_pattern: bool,
    /// Bind each run's UNet inputs and output once (IoBinding): the text context is uploaded
    /// once per run instead of every step, the output lands in a kept buffer (default on).
    pub io_binding: bool,
    /// Keep each graph as ONNX Runtime optimised it for this provider in this folder, and load
    /// that next time (unset: off). Costs a copy of the weights on disk.
    pub optimized_cache: Option<PathBuf>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            optimization: Optimization::All,
            intra_op_threads: 0,
            thread_pool: ThreadPool::Shared,
            flush_denormals: true,
            cpu_memory: CpuMemory::SharedArena,
            memory_pattern: false,
            io_binding: true,
            optimized_cache: None,
        }
    }
}

/// Where sessions get their intra-op threads. Measured on the micro model (2 cores, LCM 4: text
/// encoder, four batch-2 UNet calls, VAE decoder; bench/RESULTS.md): a pool per session 53-55 ms
/// with 45-67 ms between repeats, one shared pool 43-45 ms: a session's threads no longer spin
/// beside the next session's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ThreadPool {
    /// One pool for every session of the process (default), of the first runtime's
    /// `intra_op_threads` (0: one per physical core), denormals flushed. A session whose
    /// settings differ from the pool's (another thread count, `flush_denormals = false`) keeps
    /// a pool of its own.
    #[default]
    Shared,
    /// A pool per session (ONNX Runtime's default).
    PerSession,
}

/// How CPU sessions allocate their buffers. Measured on SD v1.5 (fp32, 512², DPM-Solver++ 4
/// steps, 2 cores; bench/RESULTS.md): `arena` 34.2 s at a 10.4 GiB peak, `system` 36.9 s at
/// 6.7 GiB, `shared-arena` (without the memory pattern) 34.0 s at 6.2 GiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CpuMemory {
    /// One arena for every session of the process (default): buffers are reused from call to
    /// call without returning to the system, and the text encoder, the UNets and the VAE share
    /// them, so the peak is the largest single call rather than the sum of every session's.
    #[default]
    SharedArena,
    /// ONNX Runtime's default: an arena per session, each keeping the most it ever held.
    Arena,
    /// No arena: every buffer comes from and goes back to the system allocator, each call.
    System,
}

/// cuDNN's convolution algorithm search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConvSearch {
    /// Time every algorithm once per shape (ORT's default; the first call per shape is slow,
    /// which the warm-up absorbs).
    #[default]
    Exhaustive,
    /// cuDNN's heuristics: fast to start, sometimes slower to run.
    Heuristic,
    /// The default algorithm.
    Default,
}

/// `[runtime.cuda]`: the CUDA execution provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CudaOptions {
    /// The CUDA device's index (0: the first GPU).
    pub device_id: i32,
    /// How cuDNN picks each convolution's algorithm.
    pub conv_algo_search: ConvSearch,
    /// TF32 matmuls/convolutions for fp32 graphs on Ampere and newer (default on).
    pub tf32: bool,
    /// Capture each UNet call as a CUDA graph and replay it (static shapes only; default off).
    pub cuda_graphs: bool,
    /// NHWC convolutions where ORT has them (default off; the exporter's `--optimize cuda`
    /// graphs are already NHWC where it pays).
    pub prefer_nhwc: bool,
    /// Cap on the CUDA arena in MiB (0: no cap).
    pub memory_limit_mib: usize,
}

impl Default for CudaOptions {
    fn default() -> Self {
        Self {
            device_id: 0,
            conv_algo_search: ConvSearch::Exhaustive,
            tf32: true,
            cuda_graphs: false,
            prefer_nhwc: false,
            memory_limit_mib: 0,
        }
    }
}

/// `[runtime.tensorrt]`: the TensorRT execution provider (`device = "tensorrt"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TensorRtOptions {
    /// Built engines are cached here (building one takes minutes; relative to config.toml).
    pub engine_cache: PathBuf,
    /// Let TensorRT pick fp16 kernels (default on).
    pub fp16: bool,
    /// Builder workspace in MiB.
    pub workspace_mib: usize,
}

impl Default for TensorRtOptions {
    fn default() -> Self {
        Self {
            engine_cache: PathBuf::from(".cache/tensorrt"),
            fp16: true,
            workspace_mib: 4096,
        }
    }
}

/// Every provider's options.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Options {
    /// Options of every session, on any provider.
    pub session: SessionOptions,
    /// The CUDA execution provider's options (also under TensorRT, for the nodes it leaves).
    pub cuda: CudaOptions,
    /// The TensorRT execution provider's options.
    pub tensorrt: TensorRtOptions,
}

impl Options {
    /// Threads for one operator: the configured count, else one per physical core.
    pub fn intra_threads(&self) -> usize {
        match self.session.intra_op_threads {
            0 => physical_cores(),
            n => n,
        }
    }

    /// Whether sessions run on the process's shared intra-op pool of `pool_threads` threads
    /// ([`ThreadPool::Shared`] with the pool's own settings: as many threads, denormals flushed).
    pub fn shares_thread_pool(&self, pool_threads: usize) -> bool {
        let s = &self.session;
        s.thread_pool == ThreadPool::Shared
            && self.intra_threads() == pool_threads
            && s.flush_denormals
    }

    /// Applies the session options to `builder` (`pool_threads`: the shared pool's size).
    pub(crate) fn apply(
        &self,
        builder: SessionBuilder,
        pool_threads: usize,
    ) -> ort::Result<SessionBuilder> {
        let s = &self.session;
        let mut b = builder
            .with_optimization_level(s.optimization.level())?
            .with_intra_threads(self.intra_threads())?
            .with_memory_pattern(s.memory_pattern)?;
        if !self.shares_thread_pool(pool_threads) {
            b = b.with_independent_thread_pool()?;
        }
        if s.flush_denormals {
            b = b.with_flush_to_zero()?;
        }
        if s.cpu_memory == CpuMemory::SharedArena {
            // The environment's CPU arena (registered by the runtime) instead of the session's own.
            b = b.with_env_allocators()?;
        }
        Ok(b)
    }

    /// The CPU provider as configured (with an arena unless `system`).
    pub(crate) fn cpu(&self) -> ep::CPU {
        ep::CPU::default().with_arena_allocator(self.session.cpu_memory != CpuMemory::System)
    }

    /// The CUDA provider as configured.
    pub(crate) fn cuda(&self) -> ep::CUDA {
        let c = &self.cuda;
        let mut cuda = ep::CUDA::default()
            .with_device_id(c.device_id)
            .with_conv_algorithm_search(match c.conv_algo_search {
                ConvSearch::Exhaustive => ep::cuda::ConvAlgorithmSearch::Exhaustive,
                ConvSearch::Heuristic => ep::cuda::ConvAlgorithmSearch::Heuristic,
                ConvSearch::Default => ep::cuda::ConvAlgorithmSearch::Default,
            })
            .with_tf32(c.tf32)
            .with_cuda_graph(c.cuda_graphs)
            .with_prefer_nhwc(c.prefer_nhwc);
        if c.memory_limit_mib > 0 {
            cuda = cuda.with_memory_limit(c.memory_limit_mib << 20);
        }
        cuda
    }

    /// The TensorRT provider as configured, its engine cache at `cache`.
    pub(crate) fn tensorrt(&self, cache: &std::path::Path) -> ep::TensorRT {
        let t = &self.tensorrt;
        ep::TensorRT::default()
            .with_device_id(self.cuda.device_id)
            .with_fp16(t.fp16)
            .with_max_workspace_size(t.workspace_mib << 20)
            .with_engine_cache(true)
            .with_engine_cache_path(cache.display())
            .with_timing_cache(true)
            .with_timing_cache_path(cache.display())
    }
}

/// Physical cores of this machine (hyper-thread siblings counted once), from /proc/cpuinfo;
/// the logical CPU count where that cannot be read.
pub(crate) fn physical_cores() -> usize {
    let logical = std::thread::available_parallelism().map_or(1, |n| n.get());
    let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") else {
        return logical;
    };
    physical_cores_in(&info).unwrap_or(logical).min(logical)
}

/// The process's shared intra-op pool ([`ThreadPool::Shared`]): `threads` threads, spinning
/// between operators, denormals flushed; no inter-op threads.
pub(crate) fn shared_thread_pool(
    threads: usize,
) -> ort::Result<ort::environment::GlobalThreadPoolOptions> {
    ort::environment::GlobalThreadPoolOptions::default()
        .with_intra_threads(threads)?
        .with_inter_threads(1)?
        .with_spin_control(true)?
        .with_flush_to_zero()
}

/// Distinct `(physical id, core id)` pairs in a /proc/cpuinfo text.
fn physical_cores_in(cpuinfo: &str) -> Option<usize> {
    let mut cores = std::collections::BTreeSet::new();
    for block in cpuinfo.split("\n\n") {
        let field = |name: &str| {
            block.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == name).then(|| v.trim().to_string())
            })
        };
        if let Some(core) = field("core id") {
            cores.insert((field("physical id").unwrap_or_default(), core));
        }
    }
    (!cores.is_empty()).then_some(cores.len())
}

/// Registers one CPU arena in `env` that sessions built with `use_env_allocators` share
/// (`cpu_memory = "shared-arena"`). Growing by what is asked (not powers of two) keeps its peak
/// at the largest call's need. Registering twice in one process is harmless.
pub(crate) fn register_shared_cpu_arena(env: &ort::environment::Environment) -> Result<(), String> {
    use ort::AsPointer;
    use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
    let api = ort::api();
    let check = |status: ort::sys::OrtStatusPtr| -> Result<(), String> {
        if status.0.is_null() {
            return Ok(());
        }
        // SAFETY: a non-null status from the API; read its message, then release it once.
        let message = unsafe {
            let m = (api.GetErrorMessage)(status.0);
            let text = std::ffi::CStr::from_ptr(m).to_string_lossy().into_owned();
            (api.ReleaseStatus)(status.0);
            text
        };
        Err(message)
    };
    let info = MemoryInfo::new(
        AllocationDevice::CPU,
        0,
        AllocatorType::Arena,
        MemoryType::Default,
    )
    .map_err(|e| e.to_string())?;
    // arena_extend_strategy 1 = kSameAsRequested.
    let keys = [c"arena_extend_strategy".as_ptr()];
    let values = [1usize];
    let mut cfg: *mut ort::sys::OrtArenaCfg = std::ptr::null_mut();
    // SAFETY: keys/values outlive the call; `cfg` is released below whatever happens next.
    check(unsafe { (api.CreateArenaCfgV2)(keys.as_ptr(), values.as_ptr(), keys.len(), &mut cfg) })?;
    // SAFETY: env and info are live ORT objects; the environment copies what it needs.
    let registered =
        check(unsafe { (api.CreateAndRegisterAllocator)(env.ptr().cast_mut(), info.ptr(), cfg) });
    // SAFETY: created above, not used after this.
    unsafe { (api.ReleaseArenaCfg)(cfg) };
    match registered {
        Err(e) if e.contains("already") => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyper_thread_siblings_count_once() {
        let two_threads_per_core = "processor\t: 0\nphysical id\t: 0\ncore id\t: 0\n\n\
             processor\t: 1\nphysical id\t: 0\ncore id\t: 0\n\n\
             processor\t: 2\nphysical id\t: 0\ncore id\t: 1\n\n\
             processor\t: 3\nphysical id\t: 0\ncore id\t: 1\n";
        assert_eq!(physical_cores_in(two_threads_per_core), Some(2));
        let two_sockets = "physical id\t: 0\ncore id\t: 0\n\nphysical id\t: 1\ncore id\t: 0\n";
        assert_eq!(physical_cores_in(two_sockets), Some(2));
        assert_eq!(physical_cores_in("processor\t: 0\n"), None, "no core ids");
        assert!(physical_cores() >= 1);
    }

    #[test]
    fn the_defaults_read_from_an_empty_table_and_typos_are_refused() {
        let s: SessionOptions = toml::from_str("").unwrap();
        assert_eq!(s, SessionOptions::default());
        assert!(s.flush_denormals && s.intra_op_threads == 0);
        assert_eq!(s.cpu_memory, CpuMemory::SharedArena);
        let e = toml::from_str::<SessionOptions>("cpu_memroy = \"system\"").unwrap_err();
        assert!(e.to_string().contains("cpu_memroy"), "{e}");
        let s: SessionOptions = toml::from_str("cpu_memory = \"shared-arena\"").unwrap();
        assert_eq!(s.cpu_memory, CpuMemory::SharedArena);
        let c: CudaOptions = toml::from_str("conv_algo_search = \"heuristic\"").unwrap();
        assert_eq!(c.conv_algo_search, ConvSearch::Heuristic);
    }

    /// Sessions share the process's pool by default, and keep their own where their settings
    /// are not the pool's or the config asks for per-session pools.
    #[test]
    fn sessions_share_the_pool_only_with_its_settings() {
        let with = |text: &str| Options {
            session: toml::from_str(text).unwrap(),
            ..Options::default()
        };
        let pool = physical_cores();
        assert_eq!(with("").session.thread_pool, ThreadPool::Shared);
        assert!(with("").shares_thread_pool(pool));
        assert!(!with("thread_pool = \"per-session\"").shares_thread_pool(pool));
        assert!(!with("flush_denormals = false").shares_thread_pool(pool));
        let three = with("intra_op_threads = 3");
        assert!(three.shares_thread_pool(3), "a pool of the same size");
        assert!(
            !three.shares_thread_pool(pool.max(4)),
            "another size: its own pool"
        );
    }
}
