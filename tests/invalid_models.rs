//! Broken model folders and ONNX Runtime libraries, end to end: each case copies the embedded
//! tiny model into a temp folder, breaks one thing, runs the binary and checks that the message
//! names the file (or field, or value), says why, and gives the fix, with the exit status.
//!
//! Runs on the CPU-only `onnxruntime` wheel (as tests/cli.rs does). Out-of-GPU-memory cannot
//! happen here; its classifier is unit-tested on real ONNX Runtime messages in
//! `core/src/runtime/failure.rs` and `core/src/runtime/mod.rs`.

mod common;

use common::{copy_dir, text};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tiny() -> PathBuf {
    root().join("models/tiny")
}

fn truncate_to_half(file: &Path) {
    let bytes = std::fs::read(file).unwrap();
    std::fs::write(file, &bytes[..bytes.len() / 2]).unwrap();
}

fn size_of(file: &Path) -> u64 {
    std::fs::metadata(file).unwrap().len()
}

/// Where a case runs: its temp folder and its (possibly broken) copy of the tiny model.
struct Setup {
    /// Keeps the temp folder alive for the case.
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    model: PathBuf,
}

impl Setup {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let model = dir.join("tiny");
        copy_dir(&tiny(), &model);
        Self {
            _tmp: tmp,
            dir,
            model,
        }
    }

    /// `{model}`, `{dir}`, `{tiny}`, `{libc}` and `{old_ort}` replaced.
    fn fill(&self, s: &str) -> String {
        s.replace("{model}", &self.model.display().to_string())
            .replace("{dir}", &self.dir.display().to_string())
            .replace("{tiny}", &tiny().display().to_string())
            .replace("{libc}", &libc_path().display().to_string())
            .replace(
                "{old_ort}",
                &self
                    .dir
                    .join("libonnxruntime.so.1.16.3")
                    .display()
                    .to_string(),
            )
    }

    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_speedscape"));
        cmd.args(args.iter().map(|a| self.fill(a)))
            .current_dir(root())
            .env_remove("ORT_DYLIB_PATH")
            .env("NO_COLOR", "1");
        for (k, v) in env {
            cmd.env(k, self.fill(v));
        }
        cmd.output().unwrap()
    }
}

/// The C library this test process runs on: a real shared library that is not ONNX Runtime.
fn libc_path() -> PathBuf {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| {
            Path::new(p)
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libc.so"))
        })
        .map(PathBuf::from)
        .expect("libc in /proc/self/maps")
}

/// Builds `{dir}/libonnxruntime.so.1.16.3`: a shared library that answers
/// `OrtGetApiBase()->GetVersionString()` with "1.16.3" like an ONNX Runtime too old for
/// speedscape (no real old wheel is needed, and no Python).
fn build_old_onnxruntime(dir: &Path) {
    let src = dir.join("old_ort.c");
    std::fs::write(
        &src,
        r#"typedef struct { const void* (*GetApi)(unsigned v); const char* (*GetVersionString)(void); } OrtApiBase;
static const void* get_api(unsigned v) { (void)v; return 0; }
static const char* version(void) { return "1.16.3"; }
static const OrtApiBase base = { get_api, version };
const OrtApiBase* OrtGetApiBase(void) { return &base; }
"#,
    )
    .unwrap();
    let out = dir.join("libonnxruntime.so.1.16.3");
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-shared", "-fPIC", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("a C compiler (cc, the linker Rust uses) to build the stand-in library");
    assert!(status.success(), "cc failed building {}", out.display());
}

/// `generate` on the broken copy, 64×64, 2 steps, CPU.
const GENERATE: &[&str] = &[
    "generate",
    "--prompt",
    "a small cottage",
    "--scheduler",
    "dpmpp",
    "--steps",
    "2",
    "--cfg",
    "7.5",
    "--seed",
    "1",
    "--width",
    "64",
    "--height",
    "64",
    "--device",
    "cpu",
    "--out",
    "{dir}/out.png",
    "--model-dir",
    "{model}",
];

/// [`GENERATE`] with `extra` flags; a `--model-dir` among them replaces the broken copy.
fn generate_with(extra: &[&'static str]) -> Vec<&'static str> {
    let mut v = GENERATE.to_vec();
    if extra.contains(&"--model-dir") {
        v.truncate(v.len() - 2);
    }
    v.extend_from_slice(extra);
    v
}

struct Case {
    name: &'static str,
    /// Breaks the copy (`model`) or writes what the case needs into the temp folder (`dir`).
    breaks: fn(&Setup),
    args: Vec<&'static str>,
    env: &'static [(&'static str, &'static str)],
    /// Exits 0 (a fallback that is said, not an error).
    succeeds: bool,
    /// Each of these is in stdout + stderr (after the placeholders are filled in).
    expect: Vec<String>,
}

fn nothing(_: &Setup) {}

fn cases() -> Vec<Case> {
    let te_bytes = size_of(&tiny().join("text_encoder/model.onnx")) / 2;
    let data_bytes = size_of(&tiny().join("unet/model.onnx_data")) / 2;
    vec![
        // 1. The model folder is missing.
        Case {
            name: "--model-dir names a folder that does not exist",
            breaks: nothing,
            args: generate_with(&["--model-dir", "{dir}/nowhere"]),
            env: &[],
            succeeds: false,
            expect: vec![
                "model folder {dir}/nowhere (from --model-dir) does not exist".into(),
                "Fix: create it with `.venv-ref/bin/python models/export.py --out {dir}/nowhere`".into(),
                "point --model-dir at an existing export".into(),
            ],
        },
        Case {
            name: "model.dir in config.toml names a folder that does not exist",
            breaks: |s| {
                std::fs::write(s.dir.join("config.toml"), "[model]\ndir = \"nowhere\"\n").unwrap()
            },
            args: vec![
                "--config",
                "{dir}/config.toml",
                "generate",
                "--prompt",
                "x",
                "--scheduler",
                "dpmpp",
                "--steps",
                "2",
                "--cfg",
                "1",
                "--seed",
                "1",
                "--device",
                "cpu",
                "--out",
                "{dir}/out.png",
            ],
            env: &[],
            succeeds: false,
            expect: vec![
                "model folder {dir}/nowhere (from model.dir in {dir}/config.toml) does not exist"
                    .into(),
                "point model.dir in {dir}/config.toml at an existing export".into(),
            ],
        },
        Case {
            name: "models on a folder that does not exist",
            breaks: nothing,
            args: vec!["models", "--model-dir", "{dir}/nowhere"],
            env: &[],
            succeeds: false,
            expect: vec!["model folder {dir}/nowhere (from --model-dir) does not exist".into()],
        },
        Case {
            name: "doctor on a folder that does not exist fails",
            breaks: nothing,
            args: vec!["doctor", "--device", "cpu", "--model-dir", "{dir}/nowhere"],
            env: &[],
            succeeds: false,
            expect: vec![
                "ERROR        model folder {dir}/nowhere (from --model-dir) does not exist".into(),
            ],
        },
        Case {
            name: "--model-dir names a file",
            breaks: nothing,
            args: generate_with(&["--model-dir", "{model}/model_index.json"]),
            env: &[],
            succeeds: false,
            expect: vec![
                "model folder {model}/model_index.json (from --model-dir) is not a folder".into(),
                "Fix: point --model-dir at the folder that holds text_encoder/, unet/".into(),
            ],
        },
        // 2. A component is missing.
        Case {
            name: "vae_decoder/ is gone",
            breaks: |s| std::fs::remove_dir_all(s.model.join("vae_decoder")).unwrap(),
            args: GENERATE.to_vec(),
            env: &[],
            succeeds: false,
            expect: vec![
                "model component vae_decoder is missing: {model} has no vae_decoder/ folder".into(),
                "Fix: copy vae_decoder/ from the export it came from, or re-export (`.venv-ref/bin/python models/export.py --out {model} --force`)".into(),
            ],
        },
        Case {
            name: "models says a folder without vae_decoder/ cannot make images",
            breaks: |s| std::fs::remove_dir_all(s.model.join("vae_decoder")).unwrap(),
            args: vec!["models", "--model-dir", "{model}"],
            env: &[],
            succeeds: false,
            expect: vec![
                "ERROR       model component vae_decoder is missing: {model} has no vae_decoder/ folder".into(),
                "vae_decoder            vae_decoder   fp32     MISSING (no model.onnx)".into(),
            ],
        },
        Case {
            name: "unet/model.onnx is gone",
            breaks: |s| std::fs::remove_file(s.model.join("unet/model.onnx")).unwrap(),
            args: GENERATE.to_vec(),
            env: &[],
            succeeds: false,
            expect: vec![
                "model component unet is missing: {model}/unet has no model.onnx".into(),
                "Fix: copy unet/ from the export".into(),
            ],
        },
        Case {
            name: "--unet lcm without unet_lcm/",
            breaks: |s| std::fs::remove_dir_all(s.model.join("unet_lcm")).unwrap(),
            args: generate_with(&["--unet", "lcm"]),
            env: &[],
            succeeds: false,
            expect: vec![
                "variant \"lcm\" (LCM-LoRA) needs its UNet in unet_lcm, which this model folder does not have (no {model}/unet_lcm/model.onnx)".into(),
                "Fix: export the model with its LoRA variants: .venv-ref/bin/python models/export.py --out {model} --force".into(),
            ],
        },
        // 3. model.onnx truncated, or not ONNX at all.
        Case {
            name: "text_encoder/model.onnx cut to half",
            breaks: |s| truncate_to_half(&s.model.join("text_encoder/model.onnx")),
            args: GENERATE.to_vec(),
            env: &[],
            succeeds: false,
            expect: vec![
                format!("{{model}}/text_encoder/model.onnx is not a readable ONNX model ({te_bytes} bytes): ONNX Runtime could not parse it, so it is truncated or damaged"),
                "Fix: copy it again from the export, or re-export (`.venv-ref/bin/python models/export.py --out {model} --force`); `speedscape models verify {model}` checks every file against manifest.json".into(),
            ],
        },
        Case {
            name: "doctor fails on a truncated text encoder",
            breaks: |s| truncate_to_half(&s.model.join("text_encoder/model.onnx")),
            args: vec!["doctor", "--device", "cpu", "--model-dir", "{model}"],
            env: &[],
            succeeds: false,
            expect: vec![
                "ERROR        {model}/text_encoder/model.onnx is not a readable ONNX model".into(),
            ],
        },
        Case {
            name: "vae_decoder/model.onnx is a text file",
            breaks: |s| {
                std::fs::write(s.model.join("vae_decoder/model.onnx"), "this is not a model\n")
                    .unwrap()
            },
            args: GENERATE.to_vec(),
            env: &[],
            succeeds: false,
            expect: vec![
                "{model}/vae_decoder/model.onnx is a text file, not an ONNX model (it begins \"this is not a model\")".into(),
                "Fix: copy it again from the export".into(),
            ],
        },
        Case {
            name: "unet/model.onnx is a Git LFS pointer",
            breaks: |s| {
                std::fs::write(
                    s.model.join("unet/model.onnx"),
                    "version https://git-lfs.github.com/spec/v1\noid sha256:4d7a\nsize 306644\n",
                )
                .unwrap()
            },
            args: GENERATE.to_vec(),
            env: &[],
            succeeds: false,
            expect: vec![
                "{model}/unet/model.onnx is a Git LFS pointer, not the model itself".into(),
                "Fix: `git lfs pull` in that checkout".into(),
            ],
        },
        // 4. External data (the tiny UNets keep their weights in model.onnx_data).
        Case {
            name: "unet/model.onnx_data is gone",
            breaks: |s| std::fs::remove_file(s.model.join("unet/model.onnx_data")).unwrap(),
            args: GENERATE.to_vec(),
            env: &[],
            succeeds: false,
            expect: vec![
                "{model}/unet/model.onnx keeps its weights in an external data file, {model}/unet/model.onnx_data, which is missing".into(),
                "Fix: copy model.onnx_data from the export into {model}/unet beside model.onnx".into(),
            ],
        },
        Case {
            name: "unet/model.onnx_data cut to half",
            breaks: |s| truncate_to_half(&s.model.join("unet/model.onnx_data")),
            args: GENERATE.to_vec(),
            env: &[],
            succeeds: false,
            expect: vec![
                format!("the external data beside {{model}}/unet/model.onnx ({data_bytes} bytes) is shorter than the graph needs: truncated, or from another export"),
                "Fix: copy the folder's data file again from the export".into(),
            ],
        },
        // 5. A component in the wrong folder.
        Case {
            name: "a UNet in the text encoder's folder",
            breaks: |s| {
                std::fs::remove_dir_all(s.model.join("text_encoder")).unwrap();
                copy_dir(&s.model.join("unet"), &s.model.join("text_encoder"));
            },
            args: GENERATE.to_vec(),
            env: &[],
            succeeds: false,
            expect: vec![
                "{model}/text_encoder/model.onnx is not a CLIP text encoder: expected inputs input_ids int32|int64[batch,77]; found inputs sample float32[?,4,?,?], timestep float32[], encoder_hidden_states float32[?,?,32]; this graph looks like a UNet".into(),
                "Fix: put the CLIP text encoder's model.onnx (with its data file, if any) in {model}/text_encoder".into(),
            ],
        },
        Case {
            name: "a text encoder in the UNet's folder",
            breaks: |s| {
                std::fs::remove_dir_all(s.model.join("unet")).unwrap();
                copy_dir(&s.model.join("text_encoder"), &s.model.join("unet"));
            },
            args: GENERATE.to_vec(),
            env: &[],
            succeeds: false,
            expect: vec![
                "{model}/unet/model.onnx is not a UNet: expected inputs sample float[batch,4,h,w], timestep (0-d or 1-d), encoder_hidden_states float[batch,77,D]; found inputs input_ids".into(),
                "this graph looks like a text encoder (it belongs in text_encoder/)".into(),
            ],
        },
        // 7. The tokenizer.
        Case {
            name: "tokenizer/ is gone",
            breaks: |s| std::fs::remove_dir_all(s.model.join("tokenizer")).unwrap(),
            args: GENERATE.to_vec(),
            env: &[],
            succeeds: false,
            expect: vec![
                "no tokenizer in {model}/tokenizer: the folder does not exist (it needs tokenizer.json, or vocab.json and merges.txt)".into(),
                "Fix: copy the tokenizer/ folder of SD v1.5 (or openai/clip-vit-large-patch14) there".into(),
            ],
        },
        Case {
            name: "tokenizer.json is cut off",
            breaks: |s| truncate_to_half(&s.model.join("tokenizer/tokenizer.json")),
            args: vec!["tokens", "a cat", "--model-dir", "{model}"],
            env: &[],
            succeeds: false,
            expect: vec![
                "tokenizer {model}/tokenizer/tokenizer.json is not a valid tokenizers JSON file".into(),
                "Fix: re-export the model, or delete it so vocab.json + merges.txt are used".into(),
            ],
        },
        Case {
            name: "vocab.json is corrupt (and no tokenizer.json)",
            breaks: |s| {
                std::fs::remove_file(s.model.join("tokenizer/tokenizer.json")).unwrap();
                std::fs::write(s.model.join("tokenizer/vocab.json"), "{\"a\": ").unwrap();
            },
            args: GENERATE.to_vec(),
            env: &[],
            succeeds: false,
            expect: vec![
                "tokenizer {model}/tokenizer/vocab.json is not valid JSON".into(),
                "Fix: copy the tokenizer/ folder of SD v1.5".into(),
            ],
        },
        Case {
            name: "merges.txt is gone (and no tokenizer.json)",
            breaks: |s| {
                std::fs::remove_file(s.model.join("tokenizer/tokenizer.json")).unwrap();
                std::fs::remove_file(s.model.join("tokenizer/merges.txt")).unwrap();
            },
            args: vec!["tokens", "a cat", "--model-dir", "{model}"],
            env: &[],
            succeeds: false,
            expect: vec![
                "no tokenizer in {model}/tokenizer: no tokenizer.json, and no merges.txt".into(),
            ],
        },
        Case {
            name: "a tokenizer that is not CLIP's",
            breaks: |s| {
                let path = s.model.join("tokenizer/tokenizer.json");
                let mut t: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
                t["added_tokens"][0]["id"] = 7.into();
                t["model"]["vocab"]["<|startoftext|>"] = 7.into();
                std::fs::write(&path, t.to_string()).unwrap();
            },
            args: vec!["tokens", "a cat", "--model-dir", "{model}"],
            env: &[],
            succeeds: false,
            expect: vec![
                "the tokenizer in {model}/tokenizer is not CLIP's: <|startoftext|> is id 7, SD v1.5's text encoder expects id 49406".into(),
            ],
        },
        // 8. The scheduler config.
        Case {
            name: "scheduler/ is gone: SD v1.5's config, and the report says so",
            breaks: |s| std::fs::remove_dir_all(s.model.join("scheduler")).unwrap(),
            args: GENERATE.to_vec(),
            env: &[],
            succeeds: true,
            expect: vec![
                "warning: {model}/scheduler/scheduler_config.json is missing; using SD v1.5's scheduler config".into(),
            ],
        },
        Case {
            name: "beta_schedule \"cosine_wobble\"",
            breaks: |s| edit_scheduler(s, "beta_schedule", "cosine_wobble"),
            args: GENERATE.to_vec(),
            env: &[],
            succeeds: false,
            expect: vec![
                "{model}/scheduler/scheduler_config.json is not a scheduler config speedscape can use: `beta_schedule` is \"cosine_wobble\"; accepted values: linear, scaled_linear, squaredcos_cap_v2".into(),
                "Fix: set `beta_schedule` to one of the accepted values (SD v1.5's is \"scaled_linear\"), or set scheduler_config = \"sd15\" under [model] in config.toml".into(),
            ],
        },
        Case {
            name: "prediction_type \"sample2\"",
            breaks: |s| edit_scheduler(s, "prediction_type", "sample2"),
            args: GENERATE.to_vec(),
            env: &[],
            succeeds: false,
            expect: vec![
                "`prediction_type` is \"sample2\"; accepted values: epsilon, v_prediction, sample".into(),
                "Fix: set `prediction_type` to one of the accepted values (SD v1.5's is \"epsilon\")".into(),
            ],
        },
        Case {
            name: "models reports an unknown scheduler value",
            breaks: |s| edit_scheduler(s, "beta_schedule", "cosine_wobble"),
            args: vec!["models", "--model-dir", "{model}"],
            env: &[],
            succeeds: false,
            expect: vec![
                "ERROR       {model}/scheduler/scheduler_config.json is not a scheduler config speedscape can use: `beta_schedule` is \"cosine_wobble\"".into(),
            ],
        },
        Case {
            name: "scheduler_config.json is not JSON",
            breaks: |s| {
                std::fs::write(s.model.join("scheduler/scheduler_config.json"), "{\"beta_end\":")
                    .unwrap()
            },
            args: GENERATE.to_vec(),
            env: &[],
            succeeds: false,
            expect: vec![
                "{model}/scheduler/scheduler_config.json is not valid JSON".into(),
                "Fix: copy it again from the export it came from, or re-export the model".into(),
            ],
        },
        // 9. The ONNX Runtime library.
        Case {
            name: "ORT_DYLIB_PATH names a missing file",
            breaks: nothing,
            args: generate_with(&["--model-dir", "{tiny}"]),
            env: &[(
                "ORT_DYLIB_PATH",
                "/nonexistent/libonnxruntime.so.1.30.0",
            )],
            succeeds: false,
            expect: vec![
                "could not load ONNX Runtime (speedscape needs version 1.".into(),
                "ORT_DYLIB_PATH → /nonexistent/libonnxruntime.so.1.30.0: no such file".into(),
                "Fix: point ORT_DYLIB_PATH at the full path of libonnxruntime.so.1.x.y".into(),
            ],
        },
        Case {
            name: "ORT_DYLIB_PATH names a text file",
            breaks: |s| {
                std::fs::write(
                    s.dir.join("libonnxruntime.so.1.31.1"),
                    "a text file that has the name of a library, and is long enough to have an ELF header's size\n",
                )
                .unwrap()
            },
            args: generate_with(&["--model-dir", "{tiny}"]),
            env: &[("ORT_DYLIB_PATH", "{dir}/libonnxruntime.so.1.31.1")],
            succeeds: false,
            expect: vec![
                "ORT_DYLIB_PATH → {dir}/libonnxruntime.so.1.31.1: not a shared library (dlopen: {dir}/libonnxruntime.so.1.31.1: invalid ELF header)".into(),
                "Fix: point ORT_DYLIB_PATH at".into(),
            ],
        },
        Case {
            name: "ORT_DYLIB_PATH names libc",
            breaks: nothing,
            args: generate_with(&["--model-dir", "{tiny}"]),
            env: &[("ORT_DYLIB_PATH", "{libc}")],
            succeeds: false,
            expect: vec![
                "ORT_DYLIB_PATH → {libc}: a shared library, but not ONNX Runtime: it exports no OrtGetApiBase".into(),
            ],
        },
        Case {
            name: "ORT_DYLIB_PATH names an ONNX Runtime that is too old",
            breaks: |s| build_old_onnxruntime(&s.dir),
            args: generate_with(&["--model-dir", "{tiny}"]),
            env: &[("ORT_DYLIB_PATH", "{old_ort}")],
            succeeds: false,
            expect: vec![format!(
                "ORT_DYLIB_PATH → {{old_ort}}: ONNX Runtime 1.16.3 is too old: speedscape needs 1.{} or newer",
                ort::MINOR_VERSION
            )],
        },
        Case {
            name: "runtime.onnxruntime in config.toml names a missing file",
            breaks: |s| {
                std::fs::write(
                    s.dir.join("config.toml"),
                    "[runtime]\nonnxruntime = \"/nonexistent/libonnxruntime.so.1.31.1\"\n",
                )
                .unwrap()
            },
            args: vec!["--config", "{dir}/config.toml", "doctor"],
            env: &[],
            succeeds: false,
            expect: vec![
                "runtime.onnxruntime in config.toml → /nonexistent/libonnxruntime.so.1.31.1: no such file".into(),
                "Fix: correct runtime.onnxruntime in config.toml".into(),
            ],
        },
        // 10. CUDA asked of the CPU-only wheel.
        Case {
            name: "--device cuda on the CPU-only wheel",
            breaks: nothing,
            args: vec![
                "generate",
                "--prompt",
                "x",
                "--scheduler",
                "dpmpp",
                "--steps",
                "2",
                "--cfg",
                "1",
                "--seed",
                "1",
                "--device",
                "cuda",
                "--out",
                "{dir}/out.png",
            ],
            env: &[],
            succeeds: false,
            expect: vec![
                "/onnxruntime/capi/libonnxruntime.so.1.".into(),
                "is a CPU-only build: it has no CUDAExecutionProvider.".into(),
                "Fix: install the GPU wheel, `SPEEDSCAPE_ORT_WHEEL='onnxruntime-gpu[cuda,cudnn]' scripts/setup.sh`".into(),
                "or use --device cpu".into(),
            ],
        },
        Case {
            name: "--device auto on the CPU-only wheel runs on the CPU and says so",
            breaks: nothing,
            args: vec![
                "generate",
                "--prompt",
                "x",
                "--scheduler",
                "dpmpp",
                "--steps",
                "2",
                "--cfg",
                "1",
                "--seed",
                "1",
                "--width",
                "64",
                "--height",
                "64",
                "--device",
                "auto",
                "--out",
                "{dir}/out.png",
            ],
            env: &[],
            succeeds: true,
            expect: vec![
                "provider CPUExecutionProvider".into(),
                "warning: device auto: CUDA is not usable (the ONNX Runtime at".into(),
                "is a CPU-only build: it has no CUDAExecutionProvider.); running on CPU".into(),
            ],
        },
    ]
}

fn edit_scheduler(s: &Setup, key: &str, value: &str) {
    let path = s.model.join("scheduler/scheduler_config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg[key] = value.into();
    std::fs::write(&path, cfg.to_string()).unwrap();
}

#[test]
fn every_broken_model_or_library_gives_its_cause_and_fix() {
    let mut failures = Vec::new();
    let cases = cases();
    for case in &cases {
        let setup = Setup::new();
        (case.breaks)(&setup);
        let args: Vec<&str> = case.args.to_vec();
        let o = setup.run(&args, case.env);
        let t = text(&o);
        let mut problems = Vec::new();
        if o.status.success() != case.succeeds {
            problems.push(format!(
                "exit status {:?}, expected {}",
                o.status.code(),
                if case.succeeds { "0" } else { "non-zero" }
            ));
        }
        if !case.succeeds && o.status.code().is_none() {
            problems.push("killed by a signal instead of exiting with an error".into());
        }
        for want in &case.expect {
            let want = setup.fill(want);
            if !t.contains(&want) {
                problems.push(format!("missing: {want}"));
            }
        }
        if !case.succeeds && setup.dir.join("out.png").exists() {
            problems.push("an image was written anyway".into());
        }
        if t.contains('\u{1b}') {
            problems.push("terminal colours in the output".into());
        }
        if !problems.is_empty() {
            failures.push(format!(
                "case {:?}:\n  {}\n--- output ---\n{t}",
                case.name,
                problems.join("\n  ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

/// Case 6, components of different dtypes: a float16 text encoder feeding the float32 tiny UNet. The
/// pipeline converts at each boundary (outputs to f32, inputs to the graph's dtype), so this is
/// no error: the two stand-ins below (tests/fixtures/models, made by
/// scripts/make-broken-fixtures.py) compute the same values, one as float16 and one as float32,
/// and must give the same image, bit for bit.
#[test]
fn a_float16_text_encoder_feeds_a_float32_unet_through_the_conversion() {
    let mut raws = Vec::new();
    for dtype in ["fp16", "fp32"] {
        let setup = Setup::new();
        std::fs::copy(
            root().join(format!("tests/fixtures/models/text_encoder_{dtype}.onnx")),
            setup.model.join("text_encoder/model.onnx"),
        )
        .unwrap();
        let raw = setup.dir.join("out.npy");
        let o = setup.run(
            &generate_with(&["--save-raw", "{dir}/out.npy", "--json"]),
            &[],
        );
        assert!(o.status.success(), "{dtype}: {}", text(&o));
        raws.push(std::fs::read(&raw).unwrap());
    }
    assert!(
        raws[0] == raws[1],
        "float16 and float32 text encoders of equal values made different images"
    );
    // The stand-in really was used: the tiny model's own text encoder gives another image.
    let setup = Setup::new();
    let o = setup.run(
        &generate_with(&["--save-raw", "{dir}/out.npy", "--json"]),
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(std::fs::read(setup.dir.join("out.npy")).unwrap() != raws[0]);
}
