//! What ONNX Runtime's failures mean to the user: a library that is not ONNX Runtime (or too
//! old), a graph that does not load (truncated, not ONNX, external data missing), memory that
//! runs out while a session loads or runs. Each message names the file, says why, and comes
//! with its fix ([`Fixable`]).

use std::path::Path;

use ort::LoadDynamicError;

use crate::error::Fixable;

/// An allocation ONNX Runtime could not make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OutOfMemory {
    /// Bytes asked for, when the message says.
    pub requested: Option<u64>,
    /// The message is CUDA's (or cuBLAS'/cuDNN's) own: the GPU ran out, whatever the arena.
    pub cuda: bool,
}

/// Phrases ONNX Runtime's allocators and the CUDA libraries use when memory runs out, each with
/// the text before the byte count it gives (if any) and whether it is CUDA's own.
const OOM_PATTERNS: &[(&str, Option<&str>, bool)] = &[
    // BFCArena::AllocateRawInternal when the arena has a cap (`[runtime.cuda] memory_limit_mib`).
    (
        "is smaller than requested bytes of",
        Some("requested bytes of "),
        false,
    ),
    // BFCArena / the CUDA allocator when the device itself is full.
    (
        "Failed to allocate memory for requested buffer of size",
        Some("requested buffer of size "),
        false,
    ),
    ("cudaErrorMemoryAllocation", None, true),
    ("CUDA failure 2: out of memory", None, true),
    ("CUBLAS_STATUS_ALLOC_FAILED", None, true),
    ("CUDNN_STATUS_ALLOC_FAILED", None, true),
    // operator new on the host.
    ("std::bad_alloc", None, false),
];

/// Recognises an out-of-memory error in ONNX Runtime's message (session creation or `run`).
pub(crate) fn out_of_memory(message: &str) -> Option<OutOfMemory> {
    let mut found: Option<OutOfMemory> = None;
    for (phrase, size_prefix, cuda) in OOM_PATTERNS {
        if !message.contains(phrase) {
            continue;
        }
        let requested = size_prefix.and_then(|p| {
            let rest = &message[message.find(p)? + p.len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        });
        let f = found.get_or_insert(OutOfMemory {
            requested: None,
            cuda: false,
        });
        f.requested = f.requested.or(requested);
        f.cuda |= cuda;
    }
    found
}

/// The part of an ONNX Runtime message worth quoting: from the out-of-memory phrase (or the
/// start) to the end of that line, without the source location and C++ signature before it.
fn quoted(message: &str) -> &str {
    let starts = [
        "Available memory of",
        "Failed to allocate memory",
        "CUDA failure",
        "CUDA error",
        "CUBLAS failure",
        "CUDNN failure",
        "std::bad_alloc",
    ];
    let from = starts
        .iter()
        .filter_map(|s| message.find(s))
        .min()
        .unwrap_or(0);
    let rest = &message[from..];
    rest.lines().next().unwrap_or(rest).trim()
}

/// What an out-of-memory message needs to know about the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MemoryContext {
    /// Sessions run on the GPU (CUDA or TensorRT).
    pub gpu: bool,
    /// `[runtime.cuda] memory_limit_mib` (0: no cap).
    pub memory_limit_mib: usize,
}

fn mib(bytes: u64) -> String {
    let m = bytes as f64 / f64::from(1u32 << 20);
    if m >= 100.0 {
        format!("{m:.0} MiB")
    } else {
        format!("{m:.1} MiB")
    }
}

/// Whether the out-of-memory happened making a session or in a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MemoryPhase {
    Loading,
    Running,
}

/// The message for `oom` while `doing` (`loading text_encoder (…/model.onnx)`, `running the
/// UNet unet at 512×512 (batch 2)`), quoting ONNX Runtime's `raw` message, with the fixes that
/// fit this configuration.
pub(crate) fn out_of_memory_message(
    doing: &str,
    phase: MemoryPhase,
    oom: OutOfMemory,
    raw: &str,
    ctx: MemoryContext,
) -> Fixable {
    let gpu = ctx.gpu || oom.cuda;
    let what = if gpu { "GPU memory" } else { "memory (RAM)" };
    let asked = oom
        .requested
        .map(|b| format!(": asked for {}", mib(b)))
        .unwrap_or_default();
    let capped = gpu && ctx.memory_limit_mib > 0 && !oom.cuda;
    let why = if capped {
        format!(
            " (the CUDA arena is capped at {} MiB by [runtime.cuda] memory_limit_mib)",
            ctx.memory_limit_mib
        )
    } else {
        String::new()
    };
    let mut fixes = Vec::new();
    if gpu && ctx.memory_limit_mib > 0 {
        fixes.push(format!(
            "raise or unset `[runtime.cuda] memory_limit_mib` in config.toml (now {}; 0 = no cap)",
            ctx.memory_limit_mib
        ));
    }
    fixes.push(
        "keep fewer UNet variants loaded at once (`[model] unet_budget_mib` in config.toml)".into(),
    );
    if gpu {
        fixes.push(
            "use an fp16 export (`.venv-ref/bin/python models/export.py --dtype fp16`)".into(),
        );
    }
    if phase == MemoryPhase::Running {
        fixes.push("a smaller image (--width/--height)".into());
    }
    if gpu {
        fixes.push("or free the GPU (`nvidia-smi` lists what else uses it)".into());
    } else {
        fixes.push("or close other programs".into());
    }
    Fixable::new(
        format!(
            "out of {what} while {doing}{asked}{why}\nONNX Runtime: {}",
            quoted(raw)
        ),
        fixes.join(", "),
    )
}

/// Why ONNX Runtime could not make a session of `model` (an `.onnx` file), from its message
/// `raw` and a look at the files; `None` when the message is not one of the known kinds.
pub(crate) fn load_failure(model: &Path, raw: &str) -> Option<Fixable> {
    let dir = model.parent().unwrap_or(Path::new("."));
    let root = dir.parent().unwrap_or(dir);
    let verify = format!(
        "`speedscape models verify {}` checks every file against manifest.json",
        root.display()
    );
    let reexport = format!(
        "re-export (`.venv-ref/bin/python models/export.py --out {} --force`)",
        root.display()
    );
    if raw.contains("External data path does not exist")
        || (raw.contains("external data") && raw.contains("does not exist"))
    {
        let data = raw
            .rsplit("does not exist:")
            .next()
            .map(|s| s.trim().trim_matches('"').to_string())
            .filter(|s| !s.is_empty() && !s.contains('\n'))
            .unwrap_or_else(|| "its external data file".into());
        let name = Path::new(&data)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| data.clone());
        return Some(Fixable::new(
            format!(
                "{} keeps its weights in an external data file, {data}, which is missing",
                model.display()
            ),
            format!(
                "copy {name} from the export into {} beside model.onnx (the two belong together), or {reexport}; {verify}",
                dir.display()
            ),
        ));
    }
    if raw.contains("GetExtDataFromTensorProto") || raw.contains("can not be read in full") {
        let length = raw
            .split("file_length: ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .map(|s| format!(" ({s} bytes)"))
            .unwrap_or_default();
        return Some(Fixable::new(
            format!(
                "the external data beside {}{length} is shorter than the graph needs: truncated, or from another export",
                model.display()
            ),
            format!("copy the folder's data file again from the export, or {reexport}; {verify}"),
        ));
    }
    if raw.contains("Protobuf parsing failed") || raw.contains("No graph was found") {
        let bytes = std::fs::read(model).unwrap_or_default();
        let head: Vec<u8> = bytes.iter().copied().take(64).collect();
        let head_text = String::from_utf8_lossy(&head);
        let is_text = !head.is_empty()
            && std::str::from_utf8(&head).is_ok()
            && head
                .iter()
                .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace());
        let why = if bytes.is_empty() {
            "is empty (0 bytes), not an ONNX model".to_string()
        } else if head_text.starts_with("version https://git-lfs") {
            return Some(Fixable::new(
                format!(
                    "{} is a Git LFS pointer, not the model itself",
                    model.display()
                ),
                "`git lfs pull` in that checkout, or download the real file",
            ));
        } else if is_text {
            format!(
                "is a text file, not an ONNX model (it begins {:?})",
                head_text.lines().next().unwrap_or("").trim()
            )
        } else {
            format!(
                "is not a readable ONNX model ({} bytes): ONNX Runtime could not parse it, so it is truncated or damaged",
                bytes.len()
            )
        };
        return Some(Fixable::new(
            format!("{} {why}", model.display()),
            format!("copy it again from the export, or {reexport}; {verify}"),
        ));
    }
    None
}

/// The reason a library path did not load, in words: not a shared library, not ONNX Runtime,
/// or an ONNX Runtime older than `ort` needs.
///
/// The version check is `ort`'s (`load-dynamic`): it calls the library's
/// `OrtGetApiBase()->GetVersionString()`, takes the minor number of `1.MINOR.PATCH`, and refuses
/// a library whose minor is below [`ort::MINOR_VERSION`] (the C API version speedscape is built
/// against); a newer library is accepted (its C API keeps the older entry points).
pub(crate) fn library_failure(error: &LoadDynamicError) -> String {
    match error {
        LoadDynamicError::Dlopen { error, .. } => {
            // libloading's own text is "dlopen failed"; the reason is its source.
            let reason = std::error::Error::source(error)
                .map(|s| s.to_string())
                .unwrap_or_else(|| error.to_string());
            if reason.contains("invalid ELF header") || reason.contains("file too short") {
                format!("not a shared library (dlopen: {reason})")
            } else {
                format!("the system could not load it (dlopen: {reason})")
            }
        }
        LoadDynamicError::MissingApi { .. } => {
            "a shared library, but not ONNX Runtime: it exports no OrtGetApiBase (expected libonnxruntime.so.1.x.y)".into()
        }
        LoadDynamicError::InvalidVersionString => {
            "its OrtGetApiBase()->GetVersionString() is not a version".into()
        }
        LoadDynamicError::BadVersion { version_str, .. } => format!(
            "ONNX Runtime {version_str} is too old: speedscape needs 1.{} or newer",
            ort::MINOR_VERSION
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real ONNX Runtime messages, verbatim: an H200 with `[runtime.cuda] memory_limit_mib = 256`
    /// loading the text encoder, and CUDA running out for real.
    const BFC_CAPPED: &str = "Exception during initialization: /onnxruntime_src/onnxruntime/core/framework/bfc_arena.cc:360 void* onnxruntime::BFCArena::AllocateRawInternal(size_t, bool, onnxruntime::Stream*) Available memory of 0 is smaller than requested bytes of 4718592";
    const CUDA_FAILURE: &str = "CUDA failure 2: out of memory";
    const CUDA_ERROR: &str = "CUDA error cudaErrorMemoryAllocation:out of memory";
    const BUFFER: &str = "Failed to allocate memory for requested buffer of size 4718592";

    #[test]
    fn real_onnx_runtime_out_of_memory_messages_are_recognised_with_their_size() {
        assert_eq!(
            out_of_memory(BFC_CAPPED),
            Some(OutOfMemory {
                requested: Some(4718592),
                cuda: false
            })
        );
        assert_eq!(
            out_of_memory(CUDA_FAILURE),
            Some(OutOfMemory {
                requested: None,
                cuda: true
            })
        );
        assert_eq!(
            out_of_memory(CUDA_ERROR),
            Some(OutOfMemory {
                requested: None,
                cuda: true
            })
        );
        assert_eq!(
            out_of_memory(BUFFER),
            Some(OutOfMemory {
                requested: Some(4718592),
                cuda: false
            })
        );
        // Inside a longer run error, as `Session::run` reports it.
        let wrapped = format!(
            "Non-zero status code returned while running Conv node. Name:'/conv_in/Conv' Status Message: {CUDA_ERROR}"
        );
        assert!(out_of_memory(&wrapped).is_some_and(|o| o.cuda));
        // Not memory: a missing file, a shape error.
        assert_eq!(
            out_of_memory("Load model from x failed:Protobuf parsing failed."),
            None
        );
        assert_eq!(
            out_of_memory("Got invalid dimensions for input: sample for the following indices"),
            None
        );
    }

    #[test]
    fn a_capped_arena_names_the_cap_the_component_and_the_fixes() {
        let ctx = MemoryContext {
            gpu: true,
            memory_limit_mib: 256,
        };
        let oom = out_of_memory(BFC_CAPPED).unwrap();
        let m = out_of_memory_message(
            "loading text_encoder (/m/text_encoder/model.onnx)",
            MemoryPhase::Loading,
            oom,
            BFC_CAPPED,
            ctx,
        )
        .to_string();
        assert_eq!(
            m.lines().next().unwrap(),
            "out of GPU memory while loading text_encoder (/m/text_encoder/model.onnx): asked for 4.5 MiB (the CUDA arena is capped at 256 MiB by [runtime.cuda] memory_limit_mib)"
        );
        assert!(
            m.contains(
                "\nONNX Runtime: Available memory of 0 is smaller than requested bytes of 4718592\n"
            ),
            "the source location and C++ signature are left out: {m}"
        );
        let fix = m.lines().last().unwrap();
        assert!(
            fix.starts_with("Fix: raise or unset `[runtime.cuda] memory_limit_mib` in config.toml (now 256; 0 = no cap)"),
            "{fix}"
        );
        assert!(
            fix.contains("[model] unet_budget_mib") && fix.contains("--dtype fp16"),
            "{fix}"
        );
        assert!(
            !fix.contains("--width"),
            "the size does not matter while loading: {fix}"
        );
    }

    #[test]
    fn a_real_cuda_out_of_memory_while_running_names_the_size_and_not_the_cap() {
        let ctx = MemoryContext {
            gpu: true,
            memory_limit_mib: 0,
        };
        let raw = format!(
            "Non-zero status code returned while running Conv node. Status Message: {CUDA_FAILURE}"
        );
        let m = out_of_memory_message(
            "running the UNet unet at 1024×1024 (batch 2)",
            MemoryPhase::Running,
            out_of_memory(&raw).unwrap(),
            &raw,
            ctx,
        )
        .to_string();
        assert!(
            m.starts_with("out of GPU memory while running the UNet unet at 1024×1024 (batch 2)\n"),
            "{m}"
        );
        assert!(
            m.contains("ONNX Runtime: CUDA failure 2: out of memory"),
            "{m}"
        );
        let fix = m.lines().last().unwrap();
        assert!(
            fix.contains("--width/--height") && !fix.contains("memory_limit_mib"),
            "{fix}"
        );
        // On the CPU, the same allocator message is about RAM.
        let cpu = out_of_memory_message(
            "running the VAE decoder",
            MemoryPhase::Running,
            out_of_memory(BUFFER).unwrap(),
            BUFFER,
            MemoryContext {
                gpu: false,
                memory_limit_mib: 0,
            },
        )
        .to_string();
        assert!(
            cpu.starts_with(
                "out of memory (RAM) while running the VAE decoder: asked for 4.5 MiB\n"
            ),
            "{cpu}"
        );
        assert!(
            !cpu.contains("fp16") && !cpu.contains("nvidia-smi"),
            "{cpu}"
        );
    }

    #[test]
    fn library_errors_say_what_the_file_is() {
        let bad = LoadDynamicError::BadVersion {
            version_str: "1.16.3".into(),
            path: "/x/libonnxruntime.so.1.16.3".into(),
        };
        assert_eq!(
            library_failure(&bad),
            format!(
                "ONNX Runtime 1.16.3 is too old: speedscape needs 1.{} or newer",
                ort::MINOR_VERSION
            )
        );
        let missing = LoadDynamicError::MissingApi {
            path: "/lib/libc.so.6".into(),
        };
        assert!(library_failure(&missing).contains("not ONNX Runtime"));
    }
}
