//! config.toml: serde structs, defaults, validation.
//!
//! Every table denies unknown keys, so a misspelt key is a loud error with its line.
//! Relative paths resolve against the config file's folder.

use std::path::{Path, PathBuf};

use color_eyre::eyre::{WrapErr, bail};
use serde::Deserialize;

use crate::error::Fixable;
use crate::exercises::{Exercise, default_exercises};
use crate::models::{SchedulerConfigSource, VaePrecision, Variant, default_variants};
use crate::pipeline::preview::PreviewKind;
use crate::runtime::{Device, SearchPlan};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub runtime: RuntimeConfig,
    pub model: ModelConfig,
    /// `[[exercises]]`: each replaces the default exercise with the same `number`, or adds one.
    pub exercises: Option<Vec<Exercise>>,
    pub tui: TuiConfig,
    /// `[sweep]`: the speed landscape's default sweep.
    pub sweep: crate::sweep::SweepConfig,
    /// Where the file was read from (`None`: built-in defaults).
    #[serde(skip)]
    pub path: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Full path of `libonnxruntime.so.1.x.y`; empty: discover it (see README).
    pub onnxruntime: Option<PathBuf>,
    /// `auto` | `cuda` | `cpu`.
    pub device: Device,
    /// Noise source for seeds: `torch-cuda` (the default: the course notebook's generator) or
    /// `torch-cpu`. An unknown name is refused at load, with its line.
    pub rng: crate::rng::RngSource,
    /// `[runtime.session]`: graph optimisation, threads, denormals, arena, memory pattern.
    pub session: crate::runtime::SessionOptions,
    /// `[runtime.cuda]`: the CUDA provider's options.
    pub cuda: crate::runtime::CudaOptions,
    /// `[runtime.tensorrt]`: the TensorRT provider's options.
    pub tensorrt: crate::runtime::TensorRtOptions,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// An Optimum ONNX export of SD v1.5; unset: the embedded micro model.
    pub dir: Option<PathBuf>,
    /// UNet variants (folders beside `unet/`); unset: base, lcm, style, lcm_style.
    pub variants: Option<Vec<Variant>>,
    /// `file` (default): obey the folder's `scheduler/scheduler_config.json`; `sd15`: use SD
    /// v1.5's original, bundled (for folders whose config diffusers re-saved).
    pub scheduler_config: SchedulerConfigSource,
    /// Memory the loaded UNets may take together (MiB); past it, the least recently used one is
    /// unloaded first. 0 (default): 70% of the GPU's memory on a GPU, half the host's on the CPU.
    pub unet_budget_mib: u64,
    /// Which VAE decoder decodes: `auto` (default: the float16 `vae_decoder_fp16/` of an fp16
    /// export on a GPU, else `vae_decoder/`), `fp32`, `fp16`. The float16 one's overflow is
    /// decoded again in float32, and the run's notes say so.
    pub vae_precision: VaePrecision,
}

/// `[tui]`: the interactive exercises.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TuiConfig {
    /// Image protocol for the run panels: `auto` (ask the terminal once at start), `kitty`,
    /// `sixel`, `iterm2`, `halfblocks`. `--graphics` overrides it.
    pub graphics: Graphics,
    /// Where `s` saves reports and the cheat-sheet answers (`cheatsheet.json`) are kept.
    /// Unset: `speedscape-out` in the working folder. `--out` overrides it.
    pub out: Option<PathBuf>,
    /// Each step's preview: `decoder` (default; the model's preview decoder, falling back to
    /// `latent` where the folder has none), `latent` (the latent → RGB matrix), `off`.
    /// `--preview` overrides it.
    pub preview: PreviewKind,
    /// A preview every N-th step and always on the last (default 1: every step).
    /// `--preview-every` overrides it.
    #[serde(deserialize_with = "at_least_one")]
    pub preview_every: usize,
}

impl Default for TuiConfig {
    fn default() -> Self {
        Self {
            graphics: Graphics::default(),
            out: None,
            preview: PreviewKind::Decoder,
            preview_every: 1,
        }
    }
}

/// A count of 1 or more (`preview_every`).
fn at_least_one<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let n = usize::deserialize(d)?;
    if n == 0 {
        return Err(serde::de::Error::custom(
            "preview_every must be 1 or more (1: a preview every step; N: every N-th step and the last)",
        ));
    }
    Ok(n)
}

/// How the TUI draws images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Graphics {
    /// Query the terminal at start (halfblocks when stdin is not a terminal or it does not answer).
    #[default]
    Auto,
    Kitty,
    Sixel,
    Iterm2,
    /// Unicode half blocks with colours: works everywhere, also over SSH and in tmux.
    Halfblocks,
}

impl Config {
    /// Reads `path`; when `explicit` is false a missing file means built-in defaults.
    pub fn load(path: &Path, explicit: bool) -> color_eyre::Result<Self> {
        if !path.exists() {
            if explicit {
                bail!(Fixable::new(
                    format!(
                        "config file {} does not exist{}",
                        path.display(),
                        absolute_note(path)
                    ),
                    "pass an existing file to --config, or drop --config to use ./config.toml",
                ));
            }
            return Ok(Self::default());
        }
        let bytes = std::fs::read(path).wrap_err_with(|| format!("reading {}", path.display()))?;
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            let at = e.valid_up_to();
            let (line, column) = line_column(&String::from_utf8_lossy(&bytes[..at]), at);
            Fixable::new(
                format!(
                    "{} is not UTF-8 text: byte {at} (line {line}, column {column}) does not start a valid UTF-8 character",
                    path.display()
                ),
                "save the file as UTF-8",
            )
        })?;
        Self::parse_at(text, path)
    }

    /// Parses and validates `text` as the config file at `path` (which need not exist):
    /// errors name the file, and relative paths resolve against its folder. The binary's
    /// [`Config::load`] reads the file and comes here.
    pub fn parse_at(text: &str, path: &Path) -> color_eyre::Result<Self> {
        let mut cfg = Self::parse(text)
            .map_err(|e| crate::error::prefixed(format!("{}: ", path.display()), e))?;
        let path = &std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let path = &path.canonicalize().unwrap_or_else(|_| path.clone());
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        cfg.runtime.onnxruntime = cfg.runtime.onnxruntime.map(|p| dir.join(p));
        cfg.model.dir = cfg.model.dir.map(|p| dir.join(p));
        cfg.tui.out = cfg.tui.out.map(|p| dir.join(p));
        cfg.runtime.tensorrt.engine_cache = dir.join(&cfg.runtime.tensorrt.engine_cache);
        cfg.runtime.session.optimized_cache =
            cfg.runtime.session.optimized_cache.map(|p| dir.join(p));
        // A run's LoRA given as a file (`lora = { "my/pixel.safetensors" = 0.8 }`), not by a
        // folder adapter's name.
        for run in cfg.exercises.iter_mut().flatten().flat_map(|e| &mut e.runs) {
            for a in run
                .lora
                .iter_mut()
                .filter(|a| a.adapter.ends_with(".safetensors"))
            {
                a.adapter = dir.join(&a.adapter).display().to_string();
            }
            if let Some(c) = &mut run.control {
                c.image = dir.join(&c.image);
            }
        }
        // The sweep's control images (`[sweep]`, its reference's, each method's).
        let sweep = &mut cfg.sweep;
        let methods = sweep.methods.iter_mut().flatten().map(|m| &mut m.control);
        for c in [&mut sweep.control, &mut sweep.reference.control]
            .into_iter()
            .chain(methods)
            .flatten()
        {
            c.image = dir.join(&c.image);
        }
        cfg.path = Some(path.to_path_buf());
        Ok(cfg)
    }

    /// Parses and validates TOML text (paths left as written). A TOML error keeps toml's
    /// message (line, column, the line itself, what was expected) and adds the fix.
    pub fn parse(text: &str) -> color_eyre::Result<Self> {
        let cfg: Self = toml::from_str(text).map_err(|e| {
            let fix = match e.span() {
                Some(span) => {
                    let (line, column) = line_column(text, span.start);
                    let table = table_at(text, span.start)
                        .map(|t| format!(" (in {t})"))
                        .unwrap_or_default();
                    format!("correct line {line}, column {column}{table}")
                }
                None => "correct the key named above".to_string(),
            };
            Fixable::new(
                e.to_string().trim_end(),
                format!(
                    "{fix}; speedscape's own config.toml lists every key, its allowed values and its default"
                ),
            )
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> color_eyre::Result<()> {
        if let Some(vs) = &self.model.variants {
            if !vs.iter().any(|v| v.name == "base") {
                bail!(Fixable::new(
                    "model.variants has no variant named \"base\"",
                    "add { name = \"base\", folder = \"unet\", label = \"SD v1.5\" }",
                ));
            }
            for (i, v) in vs.iter().enumerate() {
                if vs[..i].iter().any(|w| w.name == v.name) {
                    bail!(Fixable::new(
                        format!("model.variants names {:?} twice", v.name),
                        "give each variant its own name",
                    ));
                }
            }
        }
        if let Some(exercises) = &self.exercises {
            for (i, ex) in exercises.iter().enumerate() {
                ex.validate()?;
                check_control_scales(ex)?;
                if exercises[..i].iter().any(|e| e.number == ex.number) {
                    bail!(Fixable::new(
                        format!("[[exercises]] defines exercise {} twice", ex.number),
                        "give each [[exercises]] entry its own number (an entry with a default's number replaces that default)",
                    ));
                }
            }
        }
        self.sweep.validate()?;
        Ok(())
    }

    /// The folder relative paths resolve against.
    pub fn dir(&self) -> Option<&Path> {
        self.path.as_deref().and_then(Path::parent)
    }

    pub fn variants(&self) -> Vec<Variant> {
        self.model.variants.clone().unwrap_or_else(default_variants)
    }

    /// The exercises in force, by number: the defaults, each replaced by a config entry with
    /// its number, plus the config's new ones.
    pub fn exercises(&self) -> Vec<Exercise> {
        let mut all = default_exercises();
        for ex in self.exercises.iter().flatten() {
            match all.iter_mut().find(|d| d.number == ex.number) {
                Some(d) => *d = ex.clone(),
                None => all.push(ex.clone()),
            }
        }
        all.sort_by_key(|e| e.number);
        all
    }

    pub fn search_plan(&self) -> SearchPlan {
        SearchPlan::new(self.runtime.onnxruntime.clone(), self.dir())
    }

    /// Session and provider options from `[runtime.session]`, `[runtime.cuda]`, `[runtime.tensorrt]`.
    pub fn runtime_options(&self) -> crate::runtime::Options {
        crate::runtime::Options {
            session: self.runtime.session.clone(),
            cuda: self.runtime.cuda.clone(),
            tensorrt: self.runtime.tensorrt.clone(),
        }
    }
}

/// Each run of `ex` with a control has a conditioning scale the engine takes
/// ([`crate::pipeline::control::check_scale`]); the error names the exercise and the run. (Its
/// image is read when a command runs the exercise: a missing one does not stop other commands.)
fn check_control_scales(ex: &Exercise) -> color_eyre::Result<()> {
    for r in &ex.runs {
        if let Some(c) = &r.control {
            crate::pipeline::control::check_scale(c.scale)
                .map_err(|e| e.prefixed(format!("{}: run {:?}: control: ", ex.name(), r.label)))?;
        }
    }
    Ok(())
}

/// 1-based line and column (in characters) of byte `offset` of `text` (clamped to its end).
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut at = offset.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

/// The table header (`[runtime.session]`, `[[exercises]]`) last opened before byte `offset`.
fn table_at(text: &str, offset: usize) -> Option<&str> {
    let mut at = offset.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    text[..at]
        .lines()
        // A header line: `[x]` or `[[x]]`, maybe with a comment after it.
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .rfind(|l| l.starts_with('[') && l.ends_with(']'))
}

/// " (looked for /abs/path)" when `path` is relative, so the message says where it was looked for.
fn absolute_note(path: &Path) -> String {
    if path.is_absolute() {
        return String::new();
    }
    std::path::absolute(path)
        .map(|p| format!(" (looked for {})", p.display()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The commented `[sweep]` control example of the committed config.toml parses as
    /// written once uncommented: every run gets it, its image relative to the config's folder,
    /// and an exercise run takes the same table.
    #[test]
    fn the_committed_config_tomls_control_example_parses() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("# control = {"))
            .expect("the example")
            .trim_start_matches("# ");
        let dir = tempfile::tempdir().unwrap();
        let at = dir.path().join("config.toml");
        let cfg = Config::parse_at(&format!("[sweep]\n{line}\n"), &at).unwrap();
        let c = cfg.sweep.control.as_ref().unwrap();
        let want_dir = dir.path().canonicalize().unwrap();
        assert_eq!(c.image, want_dir.join("edges.png"));
        assert_eq!((c.controlnet.as_deref(), c.scale), (Some("edge"), 1.0));
        assert!(
            cfg.sweep
                .methods()
                .iter()
                .all(|m| m.control.as_ref() == Some(c))
        );
        assert_eq!(cfg.sweep.reference().control.as_ref(), Some(c));
        let run = format!(
            "[[exercises]]\nnumber = 6\ntitle = \"t\"\nabout = \"a\"\nprompt = \"p\"\n\
             runs = [{{ label = \"x\", scheduler = \"ddpm\", steps = 2, cfg = 7.5, {line} }}]\n"
        );
        let cfg = Config::parse_at(&run, &at).unwrap();
        let ex = &cfg.exercises.unwrap()[0];
        assert_eq!(
            ex.runs[0].control.as_ref().unwrap().image,
            want_dir.join("edges.png")
        );
    }

    /// The commented `[[exercises]]` example of the committed config.toml parses as written
    /// once uncommented, its runs' LoRA weights in order.
    #[test]
    fn the_committed_config_tomls_lora_exercise_example_parses() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let start = text.find("# [[exercises]]\n").expect("the example");
        let example: String = text[start..]
            .lines()
            .take_while(|l| l.starts_with('#'))
            .map(|l| format!("{}\n", l.trim_start_matches("# ")))
            .collect();
        let cfg = Config::parse(&example).unwrap();
        let ex = &cfg.exercises.unwrap()[0];
        let weights: Vec<(String, f32)> = ex
            .runs
            .iter()
            .flat_map(|r| r.lora.iter().map(|a| (a.adapter.clone(), a.weight)))
            .collect();
        assert_eq!(
            weights,
            [
                ("style".into(), 0.3),
                ("style".into(), 0.6),
                ("style".into(), 1.0)
            ]
        );
        assert_eq!(ex.runs[1].unet_label(), "lcm + style×0.6");
    }

    #[test]
    fn an_empty_file_gives_defaults() {
        let cfg = Config::parse("").unwrap();
        assert_eq!(cfg.runtime.device, Device::Auto);
        assert_eq!(cfg.variants(), default_variants());
    }

    #[test]
    fn a_misspelt_key_names_itself() {
        let err = Config::parse("[runtime]\ndevise = \"cpu\"\n").unwrap_err();
        let msg = format!("{err}");
        assert!(msg.contains("devise"), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");
    }

    #[test]
    fn a_toml_error_gives_line_column_table_and_fix() {
        let err = Config::parse("[runtime]\ndevice = \"cpu\"\n\n[runtime.session]\ntreads = 2\n")
            .unwrap_err();
        let msg = format!("{err}");
        assert!(msg.contains("line 5, column 1"), "{msg}");
        assert!(msg.contains("unknown field `treads`"), "{msg}");
        assert!(
            msg.contains("Fix: correct line 5, column 1 (in [runtime.session])"),
            "{msg}"
        );
        let msg = format!("{}", Config::parse("[runtime]\nrng = \n").unwrap_err());
        assert!(
            msg.contains("Fix: correct line 2, column 7 (in [runtime])"),
            "{msg}"
        );
    }

    #[test]
    fn an_unknown_rng_is_refused_at_load_with_its_line() {
        let msg = format!(
            "{}",
            Config::parse("[runtime]\nrng = \"philox\"\n").unwrap_err()
        );
        assert!(
            msg.contains("unknown variant `philox`, expected `torch-cpu`"),
            "{msg}"
        );
        assert!(msg.contains("line 2, column 7"), "{msg}");
        let cfg = Config::parse("[runtime]\nrng = \"torch-cpu\"\n").unwrap();
        assert_eq!(cfg.runtime.rng, crate::rng::RngSource::TorchCpu);
        // Nothing said: the course notebook's generator.
        assert_eq!(
            Config::parse("").unwrap().runtime.rng,
            crate::rng::RngSource::TorchCuda
        );
    }

    #[test]
    fn parse_at_resolves_against_the_files_folder_and_names_the_file() {
        let path = Path::new("/some/where/config.toml");
        let cfg = Config::parse_at("[model]\ndir = \"m\"\n", path).unwrap();
        assert_eq!(cfg.model.dir.unwrap(), Path::new("/some/where/m"));
        let err = Config::parse_at("x = 1\n", path).unwrap_err();
        assert!(
            format!("{err}").starts_with("/some/where/config.toml: TOML parse error at line 1"),
            "{err}"
        );
    }

    #[test]
    fn a_config_that_is_not_utf8_names_the_byte_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, b"[model]\ndir = \"m\xff\"\n").unwrap();
        let msg = format!("{}", Config::load(&path, true).unwrap_err());
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(
            msg.contains("byte 16 (line 2, column 9)")
                && msg.contains("Fix: save the file as UTF-8"),
            "{msg}"
        );
    }

    #[test]
    fn a_bad_device_is_refused() {
        let err = Config::parse("[runtime]\ndevice = \"tpu\"\n").unwrap_err();
        assert!(format!("{err}").contains("tpu"));
    }

    #[test]
    fn relative_paths_resolve_against_the_config_folder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "[model]\ndir = \"sd15\"\n[runtime]\nonnxruntime = \"lib/libonnxruntime.so.1.31.1\"\n",
        )
        .unwrap();
        let cfg = Config::load(&path, true).unwrap();
        assert_eq!(cfg.model.dir.unwrap(), dir.path().join("sd15"));
        assert_eq!(
            cfg.runtime.onnxruntime.unwrap(),
            dir.path().join("lib/libonnxruntime.so.1.31.1")
        );
    }

    #[test]
    fn scheduler_config_is_file_by_default_and_takes_sd15() {
        let cfg = Config::parse("").unwrap();
        assert_eq!(cfg.model.scheduler_config, SchedulerConfigSource::File);
        let cfg = Config::parse("[model]\nscheduler_config = \"sd15\"\n").unwrap();
        assert_eq!(cfg.model.scheduler_config, SchedulerConfigSource::Sd15);
        let err = Config::parse("[model]\nscheduler_config = \"sd21\"\n").unwrap_err();
        assert!(format!("{err}").contains("sd21"), "{err}");
    }

    #[test]
    fn a_variant_may_name_its_text_encoder_but_nothing_unknown() {
        let base = "[[model.variants]]\nname = \"base\"\nfolder = \"unet\"\nlabel = \"SD\"\n";
        let cfg = Config::parse(&format!(
            "{base}[[model.variants]]\nname = \"style\"\nfolder = \"unet_style\"\nlabel = \"S\"\ntext_encoder = \"text_encoder_style\"\n"
        ))
        .unwrap();
        assert_eq!(
            cfg.variants()[1].text_encoder_folder(),
            "text_encoder_style"
        );
        assert_eq!(cfg.variants()[0].text_encoder_folder(), "text_encoder");
        let err = Config::parse(&format!("{base}textencoder = \"x\"\n")).unwrap_err();
        assert!(format!("{err}").contains("textencoder"), "{err}");
    }

    const EXTRA: &str = r#"
[[exercises]]
number = 7
title = "Euler at 30"
about = "Mine."
prompt = "a red fox"
baseline = 0
runs = [
  { label = "DDPM 50", scheduler = "ddpm", steps = 50, cfg = 7.5 },
  { label = "Euler 30", scheduler = "euler", steps = 30, cfg = 7.5 },
]
questions = [ { text = "How much faster?", measure = { kind = "speedup", run = 1, over = 0 } } ]
"#;

    #[test]
    fn config_exercises_replace_a_default_by_number_and_add_new_ones() {
        let replace_one = EXTRA.replace("number = 7", "number = 1");
        let cfg = Config::parse(&format!("{EXTRA}{replace_one}")).unwrap();
        let all = cfg.exercises();
        let numbers: Vec<usize> = all.iter().map(|e| e.number).collect();
        assert_eq!(numbers, vec![1, 2, 3, 5, 7]);
        assert_eq!(all[0].title, "Euler at 30", "exercise 1 replaced");
        assert_eq!(all[0].runs[1].unet, "base", "unet defaults to base");
        assert_eq!(all[0].seed, 42, "seed defaults to 42");
        assert_eq!(all[1], default_exercises()[1], "exercise 2 untouched");
        assert_eq!(Config::parse("").unwrap().exercises(), default_exercises());
    }

    fn exercise_error(edit: impl Fn(&str) -> String) -> String {
        format!("{}", Config::parse(&edit(EXTRA)).unwrap_err())
    }

    #[test]
    fn bad_exercises_are_refused_naming_the_exercise_and_the_fix() {
        let cases: Vec<(String, &str)> = vec![
            (
                exercise_error(|t| t.replace("baseline = 0", "baseline = 2")),
                "baseline = 2",
            ),
            (
                exercise_error(|t| t.replace("run = 1, over = 0", "run = 5, over = 0")),
                "run 5",
            ),
            (
                exercise_error(|t| t.replace("steps = 30", "steps = 0")),
                "steps",
            ),
            (
                exercise_error(|t| t.replace("steps = 30, cfg = 7.5", "steps = 30, cfg = -1.0")),
                "cfg",
            ),
            (
                exercise_error(|t| t.replace("steps = 30, cfg = 7.5", "steps = 30, cfg = nan")),
                "cfg",
            ),
            (
                exercise_error(|t| {
                    let start = t.find("runs = [").unwrap();
                    let end = t.find("questions").unwrap();
                    format!("{}runs = []\n{}", &t[..start], &t[end..])
                        .replace("run = 1, over = 0", "run = 0, over = 0")
                }),
                "no runs",
            ),
            (exercise_error(|t| format!("{t}{t}")), "twice"),
        ];
        for (msg, what) in cases {
            assert!(msg.contains(what), "{what:?} not in {msg}");
            assert!(msg.contains("Fix:"), "{msg}");
            assert!(
                msg.contains("exercise 7") || msg.contains("defines exercise 7"),
                "{msg}"
            );
        }
        let err = exercise_error(|t| t.replace("title =", "titel ="));
        assert!(err.contains("titel"), "unknown keys are refused: {err}");
    }

    #[test]
    fn tui_graphics_defaults_to_auto_and_denies_unknown_keys() {
        assert_eq!(Config::parse("").unwrap().tui.graphics, Graphics::Auto);
        let cfg = Config::parse("[tui]\ngraphics = \"halfblocks\"\n").unwrap();
        assert_eq!(cfg.tui.graphics, Graphics::Halfblocks);
        let err = Config::parse("[tui]\ngraphics = \"ascii\"\n").unwrap_err();
        assert!(format!("{err}").contains("ascii"), "{err}");
        let err = Config::parse("[tui]\ngrafics = \"kitty\"\n").unwrap_err();
        assert!(format!("{err}").contains("grafics"), "{err}");
    }

    #[test]
    fn tui_preview_defaults_to_the_decoder_every_step_and_denies_bad_values() {
        let cfg = Config::parse("").unwrap();
        assert_eq!(
            (cfg.tui.preview, cfg.tui.preview_every),
            (PreviewKind::Decoder, 1)
        );
        let cfg = Config::parse("[tui]\npreview = \"off\"\npreview_every = 4\n").unwrap();
        assert_eq!(
            (cfg.tui.preview, cfg.tui.preview_every),
            (PreviewKind::Off, 4)
        );
        let err = format!(
            "{}",
            Config::parse("[tui]\npreview = \"vae\"\n").unwrap_err()
        );
        assert!(
            err.contains("line 2") && err.contains("vae") && err.contains("decoder"),
            "{err}"
        );
        let err = format!(
            "{}",
            Config::parse("[tui]\npreview_every = 0\n").unwrap_err()
        );
        assert!(
            err.contains("line 2") && err.contains("preview_every must be 1 or more"),
            "{err}"
        );
    }

    #[test]
    fn variants_must_keep_base() {
        let err = Config::parse(
            "[[model.variants]]\nname = \"lcm\"\nfolder = \"unet_lcm\"\nlabel = \"LCM\"\n",
        )
        .unwrap_err();
        assert!(format!("{err}").contains("base"));
    }
}
