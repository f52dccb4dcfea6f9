//! The command line's shape: clap's structs for `speedscape` and its subcommands, and the flags
//! several commands share ([`ModelDirArg`], [`DeviceArg`], [`EngineArgs`], [`LoraArgs`],
//! [`ControlArgs`]), each defined once.
//!
//! The argument structs carry `//` comments, not doc comments: clap turns an `Args` struct's doc
//! comment into the `about` of the command it is flattened into.

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use color_eyre::eyre::bail;

use speedscape::error::Fixable;
use speedscape::exercises::ControlSpec;
use speedscape::pipeline::control::{ControlPreprocess, check_scale};

use speedscape::config::Graphics;
use speedscape::lora::AdapterWeight;
use speedscape::pipeline::preview::PreviewKind;
use speedscape::rng::RngSource;
use speedscape::runtime::Device;
use speedscape::schedulers::SchedulerKind;

#[derive(Parser)]
#[command(
    name = "speedscape",
    version,
    about = "See how diffusion acceleration trades speed for quality: SD v1.5 on ONNX Runtime, schedulers that match diffusers"
)]
pub struct Cli {
    /// Config file (relative paths in it resolve against its folder). Default: ./config.toml
    /// (the checkout's); installed from a wheel, ~/.config/speedscape/config.toml
    /// ($XDG_CONFIG_HOME).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// How the TUI draws images (default: `[tui] graphics` in config.toml, else auto).
    #[arg(long, global = true, value_enum)]
    pub graphics: Option<Graphics>,
    #[command(flatten)]
    pub tui: TuiArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// Whether `--config` was on the command line (before or after the subcommand): a config
    /// file named there must exist, the default one may be missing.
    pub fn config_given(matches: &clap::ArgMatches) -> bool {
        matches.value_source("config") == Some(clap::parser::ValueSource::CommandLine)
    }
}

// `--model-dir`: every command that reads the model folder.
#[derive(clap::Args)]
pub struct ModelDirArg {
    /// The model folder (default: model.dir in config.toml, else the embedded micro model).
    #[arg(long)]
    pub model_dir: Option<PathBuf>,
}

// `--device`: every command that opens ONNX Runtime.
#[derive(clap::Args)]
pub struct DeviceArg {
    /// The device to run on (default: runtime.device in config.toml).
    #[arg(long, value_parser = device_values())]
    pub device: Option<Device>,
}

/// `--device`'s values (the engine's [`Device`] names), each with its meaning in `--help`.
fn device_values() -> impl clap::builder::TypedValueParser<Value = Device> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    PossibleValuesParser::new(Device::ALL.map(|d| PossibleValue::new(d.name()).help(d.about())))
        .map(|name| name.parse::<Device>().expect("one of Device::ALL's names"))
}

// The flags of everything that runs the model (the TUI, generate, bench, exercise, sweep):
// `--device`, `--model-dir`, `--rng`.
#[derive(clap::Args)]
pub struct EngineArgs {
    #[command(flatten)]
    pub device: DeviceArg,
    #[command(flatten)]
    pub model: ModelDirArg,
    /// Noise source for seeds (default: runtime.rng in config.toml, else torch-cuda).
    #[arg(long)]
    pub rng: Option<RngSource>,
}

impl EngineArgs {
    pub fn device(&self) -> Option<Device> {
        self.device.device
    }

    pub fn model_dir(&self) -> Option<&Path> {
        self.model.model_dir.as_deref()
    }
}

// `--lora NAME_OR_FILE=WEIGHT` (repeatable): the commands that run the model headless
// (generate, exercise, bench, sweep).
#[derive(clap::Args)]
pub struct LoraArgs {
    /// A LoRA adapter fused at run time, with its weight: an adapter of the model folder's
    /// loras/ by name (`speedscape models` lists them) or a .safetensors file; split at the
    /// last `=`, weight within ±10 (1 = as trained). Repeatable; combines with the UNet
    /// variant. exercise, bench and sweep apply it on top of every run's own UNet and adapters:
    /// where a run already sets that adapter, this weight wins.
    #[arg(long = "lora", value_name = "NAME_OR_FILE=WEIGHT", value_parser = parse_lora)]
    pub lora: Vec<AdapterWeight>,
}

impl LoraArgs {
    /// The adapters, checked as a set (no adapter twice) before anything runs.
    pub fn adapters(&self) -> color_eyre::Result<&[AdapterWeight]> {
        speedscape::lora::check_set(&self.lora)?;
        Ok(&self.lora)
    }
}

/// `--lora`'s value: `NAME_OR_FILE=WEIGHT` ([`AdapterWeight::parse`]); its error (cause and
/// fix) is clap's usage error.
fn parse_lora(spec: &str) -> Result<AdapterWeight, String> {
    AdapterWeight::parse(spec).map_err(|e| e.to_string())
}

// `--controlnet NAME --control-image PATH [--control-scale S] [--control-preprocess none|canny]`:
// the commands that run the model headless (generate, exercise, bench, sweep).
#[derive(clap::Args)]
pub struct ControlArgs {
    /// A ControlNet of the model folder (its controlnet_NAME/; `speedscape models` lists them)
    /// conditioning every step on --control-image. exercise, bench and sweep give it to every
    /// run: it replaces a run's own control (ControlNet, image, scale and preprocessing
    /// together).
    #[arg(long, value_name = "NAME")]
    pub controlnet: Option<String>,
    /// The control image (PNG or JPEG) for --controlnet: an edge map, or a picture with
    /// --control-preprocess canny. Read before any model loads.
    #[arg(long, value_name = "PATH")]
    pub control_image: Option<PathBuf>,
    /// How strongly the ControlNet steers (diffusers' controlnet_conditioning_scale), 0 to 10;
    /// default 1.
    #[arg(long, value_name = "SCALE", allow_negative_numbers = true, value_parser = parse_control_scale)]
    pub control_scale: Option<f32>,
    /// What is done to --control-image first: none (it is the condition) or canny (its Canny
    /// edges, thresholds 100 and 200, as diffusers' canny example); default none.
    #[arg(long, value_name = "HOW", value_parser = preprocess_values())]
    pub control_preprocess: Option<ControlPreprocess>,
}

impl ControlArgs {
    /// The control the flags give (`None` without `--controlnet`), checked before anything
    /// loads: both `--controlnet` and `--control-image` (or neither, and then no other control
    /// flag), and a control image that reads as an image.
    pub fn spec(&self) -> color_eyre::Result<Option<ControlSpec>> {
        let (name, image) = match (&self.controlnet, &self.control_image) {
            (Some(n), Some(i)) => (n, i),
            (None, None) => {
                let stray = [
                    self.control_scale.map(|_| "--control-scale"),
                    self.control_preprocess.map(|_| "--control-preprocess"),
                ];
                if let Some(flag) = stray.into_iter().flatten().next() {
                    bail!(Fixable::new(
                        format!(
                            "{flag} was given without --controlnet: there is no ControlNet for it to set"
                        ),
                        "add --controlnet NAME --control-image PATH (speedscape models lists the folder's ControlNets), or drop it",
                    ));
                }
                return Ok(None);
            }
            (None, Some(_)) => bail!(Fixable::new(
                "--control-image was given without --controlnet: a control image needs the ControlNet that reads it",
                "add --controlnet NAME (speedscape models lists the model folder's ControlNets), or drop --control-image",
            )),
            (Some(n), None) => bail!(Fixable::new(
                format!(
                    "--controlnet {n} was given without --control-image: a ControlNet needs a control image to follow"
                ),
                "add --control-image PATH (an edge map, or a picture with --control-preprocess canny), or drop --controlnet",
            )),
        };
        speedscape::pipeline::control_image::load_control_image(image)?;
        Ok(Some(ControlSpec {
            controlnet: Some(name.clone()),
            image: image.clone(),
            scale: self.control_scale.unwrap_or(1.0),
            preprocess: self.control_preprocess.unwrap_or_default(),
        }))
    }
}

/// `--control-scale`'s value: a number from 0 to the engine's maximum ([`check_scale`]); its
/// error (cause and fix) is clap's usage error.
fn parse_control_scale(text: &str) -> Result<f32, String> {
    let scale: f32 = text.trim().parse().map_err(|_| {
        Fixable::new(
            format!("{text:?} is not a number"),
            "pass --control-scale between 0 (no control) and 2 (strong); 1.0 is diffusers' default",
        )
        .to_string()
    })?;
    check_scale(scale).map_err(|e| e.to_string())
}

/// `--control-preprocess`'s values, read as config.toml reads `preprocess` (serde's names), so
/// both take the same words.
fn preprocess_values() -> impl clap::builder::TypedValueParser<Value = ControlPreprocess> {
    use clap::builder::{PossibleValuesParser, TypedValueParser};
    use serde::de::IntoDeserializer;
    PossibleValuesParser::new(["none", "canny"]).map(|name| {
        let de: serde::de::value::StringDeserializer<serde::de::value::Error> =
            name.into_deserializer();
        serde::Deserialize::deserialize(de).expect("none and canny are ControlPreprocess's names")
    })
}

// `speedscape` with no subcommand: the interactive exercises.
#[derive(clap::Args)]
pub struct TuiArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Where the TUI's `s` saves and the cheat-sheet answers are kept (default: `[tui] out` in
    /// config.toml, else ./speedscape-out).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Each step's preview: decoder (the model's preview decoder; latent where it has none),
    /// latent (the latent → RGB matrix) or off (default: `[tui] preview` in config.toml, else
    /// decoder).
    #[arg(long, value_name = "KIND", value_parser = preview_values())]
    pub preview: Option<PreviewKind>,
    /// A preview every N-th step and always on the last (default: `[tui] preview_every` in
    /// config.toml, else 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub preview_every: Option<u64>,
    /// TEST ONLY: run the TUI against a stand-in backend that makes up events (no model, no
    /// ONNX Runtime); used by tests/tui_e2e.sh. Only with the `test-hooks` feature.
    #[cfg(feature = "test-hooks")]
    #[arg(long, hide = true)]
    pub fake_backend: bool,
}

#[derive(Subcommand)]
pub enum Command {
    /// Make one image, write it as PNG and print its timings.
    Generate(GenerateArgs),
    /// Print the 77 CLIP token ids SD v1.5 sees for a prompt.
    Tokens(TokensArgs),
    /// Write the noise draws a run would make, for checking against other tools.
    Noise(NoiseArgs),
    /// Report the ONNX Runtime library, the provider sessions really get, and the model.
    Doctor(DoctorArgs),
    /// Show the model folder: manifest, components, variants, export checks, scheduler config.
    Models(ModelsArgs),
    /// Time runs: warm-up, then repeats; per run the median/min/max of every phase, the time
    /// outside ONNX Runtime, it/s, peak memory. `--compare a.json b.json` prints ratios.
    Bench(BenchArgs),
    /// Run every run of exercise N headless: progress on stderr, the timing table and what
    /// happened on stdout.
    Exercise(ExerciseArgs),
    /// Step sweeps: each method at several step counts, the same prompt and seeds, against one
    /// reference image per seed; prints the points (median time, SSIM/PSNR over seeds, each
    /// curve's knee) and saves CSV, JSON, a PNG plot and a Markdown summary.
    Sweep(SweepArgs),
    /// One run's previews, step by step: each step's x0 through the preview decoder (where the
    /// model has one) and the latent matrix, scored by SSIM against the final image; writes
    /// strip.png and previews.json into --out and prints the table.
    Previews(PreviewsArgs),
}

impl Command {
    /// Whether it runs the model or the exporter, and so stops cleanly on SIGINT, SIGTERM and
    /// SIGHUP.
    pub fn stops_on_signals(&self) -> bool {
        matches!(
            self,
            Command::Generate(_)
                | Command::Bench(_)
                | Command::Exercise(_)
                | Command::Sweep(_)
                | Command::Previews(_)
                | Command::Models(ModelsArgs {
                    action: Some(ModelsAction::Export(_)),
                    ..
                })
        )
    }
}

#[derive(clap::Args)]
pub struct PreviewsArgs {
    /// The prompt (default: exercise 1's prompt for the model's kind).
    #[arg(long)]
    pub prompt: Option<String>,
    #[arg(long, default_value = "dpmpp")]
    pub scheduler: SchedulerKind,
    #[arg(long, default_value_t = 20, value_parser = steps_at_least_one())]
    pub steps: usize,
    /// Classifier-free guidance scale.
    #[arg(long, default_value_t = 7.5, allow_negative_numbers = true)]
    pub cfg: f32,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// `base` (the unet/ folder) or a variant (lcm, style, …).
    #[arg(long, default_value = "base")]
    pub unet: String,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// The folder to write strip.png and previews.json into (made when missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Replace strip.png and previews.json if they exist.
    #[arg(long)]
    pub force: bool,
}

#[derive(clap::Args)]
#[command(group = clap::ArgGroup::new("text").required(true))]
pub struct GenerateArgs {
    #[arg(long, group = "text")]
    pub prompt: Option<String>,
    /// Read the prompt from this UTF-8 file instead (its first 64 KiB).
    #[arg(long, value_name = "PATH", group = "text")]
    pub prompt_file: Option<PathBuf>,
    #[arg(long, default_value = "")]
    pub negative_prompt: String,
    #[arg(long)]
    pub scheduler: SchedulerKind,
    #[arg(long)]
    pub steps: usize,
    /// Classifier-free guidance scale (7.5 for DDPM/DPM-Solver++, 1.5 for LCM-LoRA).
    #[arg(long, allow_negative_numbers = true)]
    pub cfg: f32,
    /// Any whole number 0..=18446744073709551615 (torch's manual_seed range).
    #[arg(long, allow_negative_numbers = true)]
    pub seed: u64,
    /// `base` (the unet/ folder) or a variant from config.toml (lcm, style, lcm_style, …).
    #[arg(long, default_value = "base")]
    pub unet: String,
    #[command(flatten)]
    pub lora: LoraArgs,
    #[command(flatten)]
    pub control: ControlArgs,
    #[arg(long)]
    pub width: Option<usize>,
    #[arg(long)]
    pub height: Option<usize>,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Initial latents [1,4,h,w] (.npy, float32) instead of drawing them from the seed.
    #[arg(long)]
    pub latents: Option<PathBuf>,
    /// DPM-Solver++ order (2 or 3).
    #[arg(long)]
    pub order: Option<usize>,
    /// Karras sigmas (DPM-Solver++).
    #[arg(long)]
    pub karras: bool,
    /// The PNG to write (an existing file is kept unless --force).
    #[arg(long)]
    pub out: PathBuf,
    /// Also write the float image (NHWC, [0,1]) before 8-bit conversion.
    #[arg(long)]
    pub save_raw: Option<PathBuf>,
    /// Replace --out and --save-raw if they exist.
    #[arg(long)]
    pub force: bool,
    /// Print the report as JSON instead of the summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
#[command(group = clap::ArgGroup::new("text").required(true))]
pub struct TokensArgs {
    #[arg(group = "text")]
    pub prompt: Option<String>,
    /// Read the prompt from this UTF-8 file instead (its first 64 KiB).
    #[arg(long, value_name = "PATH", group = "text")]
    pub prompt_file: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub model: ModelDirArg,
}

#[derive(clap::Args)]
pub struct NoiseArgs {
    /// torch-cuda: torch.Generator("cuda"), the notebook's; torch-cpu: torch.Generator("cpu").
    #[arg(long, default_value = "torch-cuda")]
    pub rng: RngSource,
    #[arg(long)]
    pub seed: u64,
    /// Comma-separated shape, e.g. 1,4,64,64.
    #[arg(long)]
    pub shape: String,
    /// How many draws of that shape, in order (the initial latents, then step noise).
    #[arg(long, default_value_t = 1)]
    pub draws: usize,
    /// The .npy to write (an existing file is kept unless --force).
    #[arg(long)]
    pub out: PathBuf,
    /// Replace --out if it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(clap::Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub device: DeviceArg,
    #[command(flatten)]
    pub model: ModelDirArg,
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    pub action: Option<ModelsAction>,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub model: ModelDirArg,
}

#[derive(Subcommand)]
pub enum ModelsAction {
    /// Export SD v1.5 (with the LCM and style LoRA variants) to ONNX for speedscape: makes the
    /// exporter's Python environment once (torch, diffusers…, pinned; cached under
    /// ~/.cache/speedscape/, several GB), runs the packaged exporter into a temporary folder
    /// beside --out, moves it into place only when complete, then offers to set model.dir in
    /// the config. Flags after the ones below go to the exporter (e.g. --controlnet,
    /// --preview-decoder, --clip-scorer; `speedscape models export -- --help` lists them).
    Export(ExportArgs),
    /// Re-hash every file the manifest lists, run every ONNX graph once, check the scheduler
    /// config; exits 0 only when everything passed.
    Verify {
        /// The model folder (default: model.dir in config.toml, else the embedded micro model).
        dir: Option<PathBuf>,
        #[command(flatten)]
        device: DeviceArg,
        #[arg(long)]
        json: bool,
    },
}

// `speedscape models export`.
#[derive(clap::Args)]
pub struct ExportArgs {
    /// The model folder to write (default: ~/.local/share/speedscape/models/sd15[-fp16] for a
    /// wheel, models/sd15[-fp16] for a checkout). It must not exist, unless --force.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Half-precision weights and activations (the exporter's --dtype fp16; the VAE stays
    /// fp32): half the size, the fast form on a GPU.
    #[arg(long)]
    pub fp16: bool,
    /// cuda: ONNX Runtime's Stable Diffusion fusions (the graphs then need the CUDA provider);
    /// cpu: the fusions the CPU provider runs (fused attention and layer norms; fp32 only);
    /// none (default): plain graphs that run anywhere.
    #[arg(long, value_name = "HOW", value_parser = ["none", "cuda", "cpu"], default_value = "none")]
    pub optimize: String,
    /// Replace --out if it exists (only once the new export is complete).
    #[arg(long)]
    pub force: bool,
    /// Set model.dir in the config to the new folder without asking.
    #[arg(long, conflicts_with = "no_config")]
    pub yes: bool,
    /// Leave the config alone (print the line to add instead).
    #[arg(long)]
    pub no_config: bool,
    /// Flags for the exporter (models/export.py), passed on as they are.
    #[arg(
        value_name = "EXPORTER_FLAGS",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub exporter: Vec<String>,
}

#[derive(clap::Args)]
pub struct BenchArgs {
    /// What to time: ex1, ex2, ex3, all (exercises' runs), or specs SCHEDULER:STEPS[:CFG][@UNET]
    /// (dpmpp:20, lcm:4, ddim:30:5@style), comma-separated.
    #[arg(long, default_value = "ex1")]
    pub runs: String,
    /// Image size in pixels (square; default: the model's native size).
    #[arg(long)]
    pub size: Option<usize>,
    /// Timed repeats per run.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Untimed runs before the repeats (session warm-up, cuDNN algorithm search).
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// The prompt of every run (default: the exercises' own; specs use the cottage prompt).
    #[arg(long)]
    pub prompt: Option<String>,
    /// Also write every number as JSON here (atomically; an existing file is kept unless --force).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Replace the --json file if it exists.
    #[arg(long)]
    pub force: bool,
    /// Print b/a ratios of two earlier --json files instead of running.
    #[arg(long, num_args = 2, value_names = ["A", "B"])]
    pub compare: Option<Vec<PathBuf>>,
    /// Also time each run with the TUI's preview thread making a preview of every step beside
    /// it (the decoder where the model has one), against the plain run.
    #[arg(long)]
    pub preview_thread: bool,
    #[command(flatten)]
    pub lora: LoraArgs,
    #[command(flatten)]
    pub control: ControlArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(clap::Args)]
pub struct ExerciseArgs {
    /// The exercise's number (1–3 by default; config.toml's [[exercises]] may add more;
    /// 4 verifies a cheat-sheet scenario, see --scenario).
    pub number: usize,
    /// Exercise 4: the scenario to verify (A concept artist, B game studio, C A/B tester).
    #[arg(long)]
    pub scenario: Option<char>,
    /// Exercise 4: the approach to verify (dpmpp:N, lcm:N, lcm_style:N, turbo:N on a model with a one-step UNet); default: the scenario's.
    #[arg(long)]
    pub choice: Option<String>,
    /// Exercise 4, scenario B: the SSIM threshold (default 0.8).
    #[arg(long)]
    pub threshold: Option<f64>,
    /// Save the session report into a new folder under this one: every run's PNG, a contact
    /// sheet, timings.json/.csv and report.md (exercise 4: cheatsheet.md with the answers
    /// kept in <OUT>/cheatsheet.json).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub lora: LoraArgs,
    #[command(flatten)]
    pub control: ControlArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(clap::Args)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "Sharded over several machines: `sweep plan --out plan.json [these flags]` writes \
every run; `sweep run --plan plan.json --shard K/N --out DIR` runs one share (resumable); \
`sweep merge DIR… --out OUT` writes the summary, CSV, JSON and plot this command would."
)]
pub struct SweepArgs {
    #[command(subcommand)]
    pub action: Option<SweepAction>,
    #[command(flatten)]
    pub flags: SweepFlags,
    /// Save into a new folder sweep-<time> under this one (default: [tui] out in config.toml,
    /// else ./speedscape-out).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum SweepAction {
    /// Write the sweep's plan for running it sharded: every run (each seed's reference, every
    /// point × seed), the model folder's identity (its manifest's SHA-256), the noise source and
    /// every setting that changes the numbers. Takes the sweep's usual flags.
    Plan(Box<SweepPlanArgs>),
    /// Run shard K of N of a plan into a shard folder: a deterministic share of its runs (dealt
    /// longest first to the least loaded shard; references are runs like any other, quality is
    /// computed by merge). Run again with the same flags to resume: finished runs are kept, a
    /// corrupt or partial one is run again. Records the device and provider.
    Run(SweepRunArgs),
    /// Merge the folders of every shard of one plan into the summary, CSV, JSON and plot a
    /// one-machine sweep writes (in a new folder sweep-<time> under --out). Refuses shards of
    /// different plans, a shard run on another model, a missing, unfinished or corrupt shard;
    /// warns (on the summary and plot too) when shards ran on different devices.
    Merge(SweepMergeArgs),
}

// The flags that say what a sweep runs: `speedscape sweep` and `sweep plan`.
#[derive(clap::Args)]
pub struct SweepFlags {
    /// Which methods: a [sweep] method's name (dpmpp, lcm, ddpm by default) or all (the
    /// default; with --lora-weights: lcm).
    #[arg(long)]
    pub preset: Option<String>,
    /// Step counts for every chosen method instead of its own list, e.g. 5,10,20.
    #[arg(long)]
    pub steps: Option<String>,
    /// Seeds per point (default: [sweep] seeds in config.toml, else 4).
    #[arg(long)]
    pub seeds: Option<usize>,
    /// The first seed (default: [sweep] seed, else 42); the others follow it.
    #[arg(long)]
    pub seed: Option<u64>,
    /// The prompt of every run (default: [sweep] prompt, else exercise 1's).
    #[arg(long)]
    pub prompt: Option<String>,
    /// Read the prompt from this file instead.
    #[arg(long, conflicts_with = "prompt")]
    pub prompt_file: Option<PathBuf>,
    /// A prompt set: every point runs each prompt with every seed and is their mean with its
    /// 95 % interval. One prompt per line, or JSON Lines {"prompt": …, "prompts": {"micro": …}}
    /// (# lines skipped); assets/prompts/ has one for SD v1.5 and one for the micro model.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["prompt", "prompt_file"])]
    pub prompts: Option<PathBuf>,
    /// What the curves are read by (their knee, best point and the plot's y axis): ssim (to
    /// the reference), clip (CLIP score; needs the folder's clip_image_encoder/) or judge
    /// (the micro model's judge accuracy; needs its judge/). Every available one is reported.
    #[arg(long, value_enum)]
    pub quality: Option<speedscape::sweep::QualityAxis>,
    /// How far below a curve's best a point may be and still count as as good, on the quality
    /// axis (default: [sweep] tolerance for ssim, 0.5 for clip, 0.05 for judge).
    #[arg(long)]
    pub tolerance: Option<f64>,
    /// The reference every point is compared with, SCHEDULER:STEPS[:CFG][@UNET] (default:
    /// [sweep] reference, else dpmpp:50).
    #[arg(long)]
    pub reference: Option<String>,
    /// Sweep one adapter's weight instead of the step counts, ADAPTER=START:STOP:STEP
    /// (inclusive, at most 50 weights), e.g. style=0:1.5:0.25: the runs (default: LCM-LoRA at
    /// 4 steps) once per weight with that adapter at that weight, each image compared with
    /// the style-alone image (the reference settings with the adapter at 1) and the plain one
    /// (without it); saves weights.csv and a weights.png plot.
    #[arg(long, value_name = "ADAPTER=START:STOP:STEP")]
    pub lora_weights: Option<String>,
    #[command(flatten)]
    pub lora: LoraArgs,
    #[command(flatten)]
    pub control: ControlArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(clap::Args)]
pub struct SweepPlanArgs {
    /// The plan file to write (a new file: an existing one is never replaced).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub flags: SweepFlags,
}

#[derive(clap::Args)]
pub struct SweepRunArgs {
    /// The plan file (`sweep plan --out`).
    #[arg(long)]
    pub plan: PathBuf,
    /// Which share: K of N, e.g. 2/3.
    #[arg(long, value_name = "K/N", value_parser = parse_shard)]
    pub shard: speedscape::sweep::shard::Shard,
    /// The shard folder: new, or this shard's folder from an interrupted run to resume it.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub engine: EngineArgs,
}

fn parse_shard(text: &str) -> Result<speedscape::sweep::shard::Shard, String> {
    speedscape::sweep::shard::parse_shard(text)
}

#[derive(clap::Args)]
pub struct SweepMergeArgs {
    /// The folders of every shard of one plan (`sweep run --out`).
    #[arg(required = true, value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
    /// Save into a new folder sweep-<time> under this one (default: [tui] out in config.toml,
    /// else ./speedscape-out).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// `previews --steps`: a whole number ≥ 1.
fn steps_at_least_one() -> impl clap::builder::TypedValueParser<Value = usize> {
    use clap::builder::TypedValueParser;
    clap::value_parser!(u64).range(1..).map(|n| n as usize)
}

/// `--preview`'s values (the engine's [`PreviewKind`] names).
fn preview_values() -> impl clap::builder::TypedValueParser<Value = PreviewKind> {
    use clap::builder::{PossibleValuesParser, TypedValueParser};
    PossibleValuesParser::new(PreviewKind::ALL.map(PreviewKind::name)).map(|name| {
        name.parse::<PreviewKind>()
            .expect("one of PreviewKind::ALL's names")
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn the_command_line_definition_is_consistent() {
        // clap's own checks: no two flags with one name or id (the flattened shared flags
        // included), groups and conflicts naming existing arguments.
        Cli::command().debug_assert();
    }

    /// `models export`'s own flags are speedscape's wherever they stand before the first flag
    /// it does not know; from there on everything goes to the exporter as written.
    #[test]
    fn models_export_passes_unknown_flags_on_to_the_exporter_in_order() {
        use super::{Command, ModelsAction};
        use clap::FromArgMatches;
        let matches = Cli::command()
            .try_get_matches_from([
                "speedscape",
                "models",
                "export",
                "--fp16",
                "--optimize",
                "cuda",
                "--out",
                "m",
                "--controlnet",
                "canny=x/y",
                "--no-verify",
                "--yes",
            ])
            .unwrap();
        let cli = Cli::from_arg_matches(&matches).unwrap();
        let Some(Command::Models(m)) = cli.command else {
            panic!("models")
        };
        let Some(ModelsAction::Export(e)) = m.action else {
            panic!("export")
        };
        assert!(e.fp16 && !e.yes);
        assert_eq!(e.optimize, "cuda");
        assert_eq!(e.out.as_deref(), Some(std::path::Path::new("m")));
        assert_eq!(
            e.exporter,
            ["--controlnet", "canny=x/y", "--no-verify", "--yes"]
        );
        let err = Cli::command()
            .try_get_matches_from(["speedscape", "models", "export", "--yes", "--no-config"])
            .unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    fn config_given(args: &[&str]) -> bool {
        let matches = Cli::command().try_get_matches_from(args).unwrap();
        Cli::config_given(&matches)
    }

    #[test]
    fn config_is_given_only_when_the_flag_is_on_the_command_line() {
        assert!(config_given(&[
            "speedscape",
            "--config",
            "a.toml",
            "doctor"
        ]));
        assert!(config_given(&["speedscape", "doctor", "--config=a.toml"]));
        assert!(config_given(&["speedscape", "--config", "config.toml"]));
        assert!(!config_given(&["speedscape", "doctor"]));
        // A prompt that reads "--config" is not the flag.
        assert!(!config_given(&["speedscape", "tokens", "--", "--config"]));
    }
}
