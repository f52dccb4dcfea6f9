//! speedscape's command line: the interactive exercises (no subcommand), `generate`, `exercise`, `tokens`,
//! `noise`, `doctor`, `models`.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use clap::{Parser, Subcommand};
use color_eyre::eyre::{WrapErr, bail, eyre};
use ndarray::{Array4, ArrayD, IxDyn};

use speedscape::config::{Config, Graphics};
use speedscape::error::Fixable;
use speedscape::pipeline::{self, Request};
use speedscape::report;
use speedscape::rng::RngSource;
use speedscape::runtime::Device;
use speedscape::schedulers::{SchedulerKind, SchedulerOptions};

#[derive(Parser)]
#[command(
    name = "speedscape",
    version,
    about = "See how diffusion acceleration trades speed for quality: SD v1.5 on ONNX Runtime, schedulers that match diffusers"
)]
struct Cli {
    /// Config file (relative paths in it resolve against its folder).
    #[arg(long, global = true, default_value = "config.toml")]
    config: PathBuf,
    /// How the TUI draws images (default: `[tui] graphics` in config.toml, else auto).
    #[arg(long, global = true, value_enum)]
    graphics: Option<Graphics>,
    /// The TUI's device (default: runtime.device in config.toml).
    #[arg(long, value_parser = device_values())]
    device: Option<Device>,
    /// The TUI's model folder (default: model.dir in config.toml, else the embedded micro model).
    #[arg(long)]
    model_dir: Option<PathBuf>,
    /// The TUI's noise source for seeds (default: runtime.rng in config.toml, else torch-cuda).
    #[arg(long)]
    rng: Option<RngSource>,
    /// Where the TUI's `s` saves and the cheat-sheet answers are kept (default: `[tui] out` in
    /// config.toml, else ./speedscape-out).
    #[arg(long)]
    out: Option<PathBuf>,
    /// TEST ONLY: run the TUI against a stand-in backend that makes up events (no model, no
    /// ONNX Runtime); used by tests/tui_e2e.sh.
    #[arg(long, hide = true)]
    fake_backend: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Args)]
struct BenchArgs {
    /// What to time: ex1, ex2, ex3, all (exercises' runs), or specs SCHEDULER:STEPS[:CFG][@UNET]
    /// (dpmpp:20, lcm:4, ddim:30:5@style), comma-separated.
    #[arg(long, default_value = "ex1")]
    runs: String,
    /// Image size in pixels (square; default: the model's native size).
    #[arg(long)]
    size: Option<usize>,
    /// Timed repeats per run.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Untimed runs before the repeats (session warm-up, cuDNN algorithm search).
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// The prompt of every run (default: the exercises' own; specs use the cottage prompt).
    #[arg(long)]
    prompt: Option<String>,
    /// Also write every number as JSON here (atomically; an existing file is kept unless --force).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Replace the --json file if it exists.
    #[arg(long)]
    force: bool,
    /// Print b/a ratios of two earlier --json files instead of running.
    #[arg(long, num_args = 2, value_names = ["A", "B"])]
    compare: Option<Vec<PathBuf>>,
    /// Noise source for seeds (default: runtime.rng in config.toml, else torch-cuda).
    #[arg(long)]
    rng: Option<RngSource>,
    #[arg(long, value_parser = device_values())]
    device: Option<Device>,
    #[arg(long)]
    model_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Make one image, write it as PNG and print its timings.
    Generate(GenerateArgs),
    /// Print the 77 CLIP token ids SD v1.5 sees for a prompt.
    #[command(group = clap::ArgGroup::new("text").required(true))]
    Tokens {
        #[arg(group = "text")]
        prompt: Option<String>,
        /// Read the prompt from this UTF-8 file instead (its first 64 KiB).
        #[arg(long, value_name = "PATH", group = "text")]
        prompt_file: Option<PathBuf>,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        model_dir: Option<PathBuf>,
    },
    /// Write the noise draws a run would make, for checking against other tools.
    Noise {
        /// torch-cuda: torch.Generator("cuda"), the notebook's; torch-cpu: torch.Generator("cpu").
        #[arg(long, default_value = "torch-cuda")]
        rng: RngSource,
        #[arg(long)]
        seed: u64,
        /// Comma-separated shape, e.g. 1,4,64,64.
        #[arg(long)]
        shape: String,
        /// How many draws of that shape, in order (the initial latents, then step noise).
        #[arg(long, default_value_t = 1)]
        draws: usize,
        /// The .npy to write (an existing file is kept unless --force).
        #[arg(long)]
        out: PathBuf,
        /// Replace --out if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Report the ONNX Runtime library, the provider sessions really get, and the model.
    Doctor {
        #[arg(long, value_parser = device_values())]
        device: Option<Device>,
        #[arg(long)]
        model_dir: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Show the model folder: manifest, components, variants, export checks, scheduler config.
    Models(ModelsArgs),
    /// Time runs: warm-up, then repeats; per run the median/min/max of every phase, the time
    /// outside ONNX Runtime, it/s, peak memory. `--compare a.json b.json` prints ratios.
    Bench(BenchArgs),
    /// Run every run of exercise N headless: progress on stderr, the timing table and what
    /// happened on stdout.
    Exercise {
        /// The exercise's number (1–3 by default; config.toml's [[exercises]] may add more;
        /// 4 verifies a cheat-sheet scenario, see --scenario).
        number: usize,
        /// Exercise 4: the scenario to verify (A concept artist, B game studio, C A/B tester).
        #[arg(long)]
        scenario: Option<char>,
        /// Exercise 4: the approach to verify (dpmpp:N, lcm:N, lcm_style:N); default: the scenario's.
        #[arg(long)]
        choice: Option<String>,
        /// Exercise 4, scenario B: the SSIM threshold (default 0.8).
        #[arg(long)]
        threshold: Option<f64>,
        /// Save the session report into a new folder under this one: every run's PNG, a contact
        /// sheet, timings.json/.csv and report.md (exercise 4: cheatsheet.md with the answers
        /// kept in <OUT>/cheatsheet.json).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
        /// Noise source for seeds (default: runtime.rng in config.toml, else torch-cuda).
        #[arg(long)]
        rng: Option<RngSource>,
        #[arg(long, value_parser = device_values())]
        device: Option<Device>,
        #[arg(long)]
        model_dir: Option<PathBuf>,
    },
    /// Step sweeps: each method at several step counts, the same prompt and seeds, against one
    /// reference image per seed; prints the points (median time, SSIM/PSNR over seeds, each
    /// curve's knee) and saves CSV, JSON, a PNG plot and a Markdown summary.
    Sweep(SweepArgs),
}

#[derive(clap::Args)]
struct SweepArgs {
    /// Which methods: a [sweep] method's name (dpmpp, lcm, ddpm by default) or all.
    #[arg(long, default_value = "all")]
    preset: String,
    /// Step counts for every chosen method instead of its own list, e.g. 5,10,20.
    #[arg(long)]
    steps: Option<String>,
    /// Seeds per point (default: [sweep] seeds in config.toml, else 4).
    #[arg(long)]
    seeds: Option<usize>,
    /// The first seed (default: [sweep] seed, else 42); the others follow it.
    #[arg(long)]
    seed: Option<u64>,
    /// The prompt of every run (default: [sweep] prompt, else exercise 1's).
    #[arg(long)]
    prompt: Option<String>,
    /// Read the prompt from this file instead.
    #[arg(long, conflicts_with = "prompt")]
    prompt_file: Option<PathBuf>,
    /// The reference every point is compared with, SCHEDULER:STEPS[:CFG][@UNET] (default:
    /// [sweep] reference, else dpmpp:50).
    #[arg(long)]
    reference: Option<String>,
    /// Save into a new folder sweep-<time> under this one (default: [tui] out in config.toml,
    /// else ./speedscape-out).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Noise source for seeds (default: runtime.rng in config.toml, else torch-cuda).
    #[arg(long)]
    rng: Option<RngSource>,
    #[arg(long, value_parser = device_values())]
    device: Option<Device>,
    #[arg(long)]
    model_dir: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ModelsArgs {
    #[command(subcommand)]
    action: Option<ModelsAction>,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    #[arg(long)]
    model_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum ModelsAction {
    /// Re-hash every file the manifest lists, run every ONNX graph once, check the scheduler
    /// config; exits 0 only when everything passed.
    Verify {
        /// The model folder (default: model.dir in config.toml, else the embedded micro model).
        dir: Option<PathBuf>,
        #[arg(long, value_parser = device_values())]
        device: Option<Device>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
#[command(group = clap::ArgGroup::new("text").required(true))]
struct GenerateArgs {
    #[arg(long, group = "text")]
    prompt: Option<String>,
    /// Read the prompt from this UTF-8 file instead (its first 64 KiB).
    #[arg(long, value_name = "PATH", group = "text")]
    prompt_file: Option<PathBuf>,
    #[arg(long, default_value = "")]
    negative_prompt: String,
    #[arg(long)]
    scheduler: SchedulerKind,
    #[arg(long)]
    steps: usize,
    /// Classifier-free guidance scale (7.5 for DDPM/DPM-Solver++, 1.5 for LCM-LoRA).
    #[arg(long, allow_negative_numbers = true)]
    cfg: f32,
    /// Any whole number 0..=18446744073709551615 (torch's manual_seed range).
    #[arg(long, allow_negative_numbers = true)]
    seed: u64,
    /// `base` (the unet/ folder) or a variant from config.toml (lcm, style, lcm_style, …).
    #[arg(long, default_value = "base")]
    unet: String,
    #[arg(long)]
    width: Option<usize>,
    #[arg(long)]
    height: Option<usize>,
    #[arg(long)]
    model_dir: Option<PathBuf>,
    #[arg(long, value_parser = device_values())]
    device: Option<Device>,
    /// Initial latents [1,4,h,w] (.npy, float32) instead of drawing them from the seed.
    #[arg(long)]
    latents: Option<PathBuf>,
    #[arg(long)]
    rng: Option<RngSource>,
    /// DPM-Solver++ order (2 or 3).
    #[arg(long)]
    order: Option<usize>,
    /// Karras sigmas (DPM-Solver++).
    #[arg(long)]
    karras: bool,
    /// The PNG to write (an existing file is kept unless --force).
    #[arg(long)]
    out: PathBuf,
    /// Also write the float image (NHWC, [0,1]) before 8-bit conversion.
    #[arg(long)]
    save_raw: Option<PathBuf>,
    /// Replace --out and --save-raw if they exist.
    #[arg(long)]
    force: bool,
    /// Print the report as JSON instead of the summary.
    #[arg(long)]
    json: bool,
}

/// `--device`'s values (the engine's [`Device`] names), each with its meaning in `--help`.
fn device_values() -> impl clap::builder::TypedValueParser<Value = Device> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    PossibleValuesParser::new(Device::ALL.map(|d| PossibleValue::new(d.name()).help(d.about())))
        .map(|name| name.parse::<Device>().expect("one of Device::ALL's names"))
}

/// Errors print as the message and its causes alone: no colours unless stderr is a terminal (and
/// `NO_COLOR` is unset), and no backtrace (a user's global `RUST_BACKTRACE=1` is for panics);
/// `SPEEDSCAPE_BACKTRACE=1` brings the error's backtrace back for a bug report.
fn install_error_report() -> color_eyre::Result<()> {
    use std::io::IsTerminal;
    if std::env::var_os("SPEEDSCAPE_BACKTRACE").is_some_and(|v| v != "0") {
        // SAFETY: first thing in main, before any other thread exists.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "1") };
    } else if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: as above.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let theme = if colour {
        color_eyre::config::Theme::dark()
    } else {
        color_eyre::config::Theme::new()
    };
    color_eyre::config::HookBuilder::default()
        .theme(theme)
        .display_env_section(false)
        .install()
}

fn main() -> color_eyre::Result<()> {
    install_error_report()?;
    let cli = Cli::parse();
    // The commands that run the model stop cleanly on SIGINT, SIGTERM and SIGHUP (the TUI
    // waits for them in its own loop).
    if matches!(
        cli.command,
        Some(
            Command::Generate(_) | Command::Bench(_) | Command::Exercise { .. } | Command::Sweep(_)
        )
    ) {
        speedscape::interrupt::install().wrap_err("installing the signal handlers")?;
    }
    let result = run(cli);
    if let Some((message, code)) = speedscape::interrupt::outcome(&result) {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "speedscape: {message}");
        std::process::exit(code);
    }
    result
}

fn run(cli: Cli) -> color_eyre::Result<()> {
    let explicit = std::env::args().any(|a| a == "--config" || a.starts_with("--config="));
    let config = Config::load(&cli.config, explicit)?;
    match cli.command {
        Some(Command::Generate(args)) => generate(&config, args),
        Some(Command::Tokens {
            prompt,
            prompt_file,
            json,
            model_dir,
        }) => {
            let prompt = read_prompt(prompt, prompt_file.as_deref())?;
            tokens(&config, &prompt, json, model_dir.as_deref())
        }
        Some(Command::Noise {
            rng,
            seed,
            shape,
            draws,
            out,
            force,
        }) => noise(rng, seed, &shape, draws, &out, force),
        Some(Command::Doctor {
            device,
            model_dir,
            json,
        }) => doctor(&config, device, model_dir.as_deref(), json),
        Some(Command::Models(args)) => models(&config, args),
        Some(Command::Bench(args)) => bench(&config, args),
        Some(Command::Exercise {
            number: 4,
            scenario,
            choice,
            threshold,
            out,
            json,
            rng,
            device,
            model_dir,
        }) if scenario.is_some() || !has_exercise(&config, 4) => verify_scenario(
            &with_rng(&config, rng),
            scenario,
            choice,
            threshold,
            out.as_deref(),
            json,
            device,
            model_dir,
        ),
        Some(Command::Exercise {
            number,
            out,
            json,
            rng,
            device,
            model_dir,
            ..
        }) => exercise(
            &with_rng(&config, rng),
            number,
            out.as_deref(),
            json,
            device,
            model_dir,
        ),
        Some(Command::Sweep(args)) => sweep(&with_rng(&config, args.rng), args),
        None => {
            let (graphics, graphics_source) = match cli.graphics {
                Some(g) => (g, "--graphics"),
                None => (config.tui.graphics, "config.toml"),
            };
            speedscape::tui::run(
                &config,
                speedscape::tui::Options {
                    graphics,
                    graphics_source,
                    device: cli.device,
                    model_dir: cli.model_dir,
                    fake_backend: cli.fake_backend,
                    rng: cli.rng,
                    save_root: cli
                        .out
                        .or_else(|| config.tui.out.clone())
                        .unwrap_or_else(|| PathBuf::from("speedscape-out")),
                },
            )
        }
    }
}

/// `--prompt`, or the text of `--prompt-file` (a note on stderr when only its head was read).
fn read_prompt(prompt: Option<String>, file: Option<&Path>) -> color_eyre::Result<String> {
    let Some(path) = file else {
        return Ok(prompt.unwrap_or_default());
    };
    let (text, note) = speedscape::models::prompt::read_prompt_file(path)?;
    if let Some(note) = note {
        eprintln!("warning: {note}");
    }
    Ok(text)
}

/// `config` with `runtime.rng` set to `--rng` when it was given.
fn with_rng(config: &Config, rng: Option<RngSource>) -> Config {
    let mut config = config.clone();
    if let Some(rng) = rng {
        config.runtime.rng = rng;
    }
    config
}

fn generate(config: &Config, args: GenerateArgs) -> color_eyre::Result<()> {
    // Before the run: a bad output path must not cost the image at its end.
    report::check_output_file(&args.out, args.force)?;
    if let Some(raw) = &args.save_raw {
        report::check_output_file(raw, args.force)?;
    }
    let existing = if args.force {
        report::Existing::Replace
    } else {
        report::Existing::Refuse
    };
    let prompt = read_prompt(args.prompt, args.prompt_file.as_deref())?;
    let device = args.device.unwrap_or(config.runtime.device);
    let rt = speedscape::open::runtime(config, Some(device))?;
    let (dir, _) = speedscape::open::model_dir(config, args.model_dir.as_deref())?;
    let mut model = speedscape::open::model(config, &rt, &dir)?;
    let latents = match &args.latents {
        Some(p) => Some(read_latents(p)?),
        None => None,
    };
    let options = SchedulerOptions {
        solver_order: args.order,
        use_karras_sigmas: args.karras.then_some(true),
        ..SchedulerOptions::default()
    };
    // What the tokenizer removes, cuts or drops is said now, before the run.
    let mut said = Vec::new();
    // The negative prompt is only encoded under guidance (cfg > 1).
    let negative = (args.cfg > 1.0).then_some(("negative ", &args.negative_prompt));
    for (what, p) in [("", &prompt)].into_iter().chain(negative) {
        for w in model.tokenizer.encode(p)?.warnings() {
            eprintln!("warning: {what}{w}");
            said.push(format!("{what}{w}"));
        }
    }
    let req = Request {
        prompt,
        negative_prompt: args.negative_prompt,
        scheduler: args.scheduler,
        scheduler_options: options,
        steps: args.steps,
        guidance: args.cfg,
        seed: args.seed,
        rng: args.rng.unwrap_or(config.runtime.rng),
        unet: args.unet,
        width: args.width,
        height: args.height,
        latents,
        clip_score: false,
    };
    // A signal (SIGINT, SIGTERM, SIGHUP) sets this flag: the run stops between steps.
    let cancel: &AtomicBool = speedscape::interrupt::flag();
    let show_progress = !args.json;
    let mut shown = false;
    let out = pipeline::generate(&rt, &mut model, &req, cancel, &mut |ev| {
        if show_progress {
            shown = true;
            eprint!(
                "\rstep {}/{} (t={})   ",
                ev.index + 1,
                ev.total,
                ev.timestep
            );
        }
    });
    if shown {
        // The error, if any, starts on its own line.
        eprintln!();
    }
    let steps = req.steps;
    let not_written = |how: String| format!("{how}; {} was not written", args.out.display());
    if let Err(e) = &out
        && let Some(c) = e.downcast_ref::<pipeline::Cancelled>()
    {
        speedscape::interrupt::check(|| {
            not_written(format!(
                "the run was cancelled after {} of {steps} steps",
                c.completed
            ))
        })?;
    }
    let out = out?;
    speedscape::interrupt::check(|| not_written("the run had finished".into()))?;
    for w in out.report.warnings.iter().filter(|w| !said.contains(w)) {
        eprintln!("warning: {w}");
    }
    report::save_png_as(&args.out, &out.rgb8(), existing)?;
    if let Some(raw) = &args.save_raw {
        report::save_npy_as(raw, &out.image, existing)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out.report)?);
    } else {
        print!("{}", report::summary(&out.report));
        println!("wrote {}", args.out.display());
    }
    Ok(())
}

fn read_latents(path: &Path) -> color_eyre::Result<Array4<f32>> {
    let arr: ArrayD<f32> = ndarray_npy::read_npy(path).map_err(|e| {
        Fixable::new(
            format!("cannot read latents from {}: {e}", path.display()),
            "pass a float32 .npy of shape [1,4,h,w]",
        )
    })?;
    arr.into_dimensionality()
        .wrap_err_with(|| format!("{} must have 4 dimensions [1,4,h,w]", path.display()))
}

fn tokens(
    config: &Config,
    prompt: &str,
    json: bool,
    model_dir: Option<&Path>,
) -> color_eyre::Result<()> {
    let (dir, _) = speedscape::open::model_dir(config, model_dir)?;
    let tok = speedscape::models::ClipTokenizer::from_dir(&dir.join("tokenizer"))?;
    let t = tok.encode(prompt)?;
    if json {
        println!("{}", serde_json::to_string(&t)?);
    } else {
        let ids: Vec<String> = t.ids.iter().map(u32::to_string).collect();
        println!("{}", ids.join(" "));
        println!("{} prompt tokens (of 75)", t.count);
    }
    for w in t.warnings() {
        eprintln!("warning: {w}");
    }
    Ok(())
}

fn noise(
    rng: RngSource,
    seed: u64,
    shape: &str,
    draws: usize,
    out: &Path,
    force: bool,
) -> color_eyre::Result<()> {
    report::check_output_file(out, force)?;
    let dims: Vec<usize> = shape
        .split(',')
        .map(|s| s.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| {
            eyre!("--shape {shape:?} is not a comma-separated list of sizes, e.g. 1,4,64,64")
        })?;
    if dims.is_empty() || dims.len() > 4 || dims.contains(&0) {
        bail!("--shape {shape:?} must have 1 to 4 positive sizes, e.g. 1,4,64,64");
    }
    if draws == 0 {
        bail!("--draws must be at least 1");
    }
    // Fewer than 4 dims: leading ones; the elements and their order are the same.
    let mut four = [1usize; 4];
    four[4 - dims.len()..].copy_from_slice(&dims);
    let mut source = rng.generator(seed);
    let mut data = Vec::with_capacity(draws * four.iter().product::<usize>());
    for _ in 0..draws {
        data.extend(source.randn(four).iter().copied());
    }
    let mut full = vec![draws];
    full.extend(&dims);
    let arr = ArrayD::from_shape_vec(IxDyn(&full), data)?;
    let existing = if force {
        report::Existing::Replace
    } else {
        report::Existing::Refuse
    };
    report::save_npy_as(out, &arr, existing)?;
    println!(
        "wrote {} draws of {dims:?} ({rng}, seed {seed}) to {}",
        draws,
        out.display()
    );
    Ok(())
}

fn doctor(
    config: &Config,
    device: Option<Device>,
    model_dir: Option<&Path>,
    json: bool,
) -> color_eyre::Result<()> {
    let device = device.unwrap_or(config.runtime.device);
    let report = speedscape::doctor::run(config, device, model_dir);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    if report.fatal().is_some() {
        // The report above already says what failed and how to fix it.
        std::process::exit(1);
    }
    Ok(())
}

fn models(config: &Config, args: ModelsArgs) -> color_eyre::Result<()> {
    use speedscape::inventory;
    let ok = match args.action {
        None => {
            let (dir, kind) = speedscape::open::model_dir(config, args.model_dir.as_deref())?;
            let inv = inventory::inventory(config, &dir, kind);
            if args.json {
                println!("{}", serde_json::to_string_pretty(&inv)?);
            } else {
                print!("{}", inv.render());
            }
            inv.ok()
        }
        Some(ModelsAction::Verify { dir, device, json }) => {
            let dir = dir.or(args.model_dir);
            let (dir, _) = speedscape::open::model_dir(config, dir.as_deref())?;
            let device = device.unwrap_or(config.runtime.device);
            let report = inventory::verify(config, &dir, device, &mut |line| eprint!("{line}"));
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render());
            }
            report.passed
        }
    };
    if !ok {
        // The report above already says what failed and how to fix it.
        std::process::exit(1);
    }
    Ok(())
}

fn bench(config: &Config, args: BenchArgs) -> color_eyre::Result<()> {
    use speedscape::bench;
    if let Some(files) = &args.compare {
        print!("{}", bench::compare(&files[0], &files[1])?);
        return Ok(());
    }
    if let Some(path) = &args.json {
        report::check_output_file(path, args.force)?;
    }
    let mut runs = bench::BenchSpec::parse_list(config, &args.runs)?;
    if let Some(p) = &args.prompt {
        for r in &mut runs {
            r.prompt = p.clone();
        }
    }
    let opts = bench::BenchOptions {
        runs,
        size: args.size,
        warmup: args.warmup,
        repeat: args.repeat,
        seed: args.seed,
        rng: args.rng,
        device: args.device,
        model_dir: args.model_dir,
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let report = bench::run(config, &opts)?;
    speedscape::interrupt::check(|| "the runs had finished; nothing was written".into())?;
    print!("{}", bench::render(&report));
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        let existing = if args.force {
            report::Existing::Replace
        } else {
            report::Existing::Refuse
        };
        report::write_file(path, existing, |f| {
            f.write_all(json.as_bytes())?;
            Ok(())
        })?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn has_exercise(config: &Config, number: usize) -> bool {
    config.exercises().iter().any(|e| e.number == number)
}

/// `speedscape exercise 4 --scenario X`: the cheat sheet's verification run, pass/fail with the
/// numbers; exit 0 either way unless a run failed.
#[allow(clippy::too_many_arguments)]
fn verify_scenario(
    config: &Config,
    scenario: Option<char>,
    choice: Option<String>,
    threshold: Option<f64>,
    out: Option<&Path>,
    json: bool,
    device: Option<Device>,
    model_dir: Option<PathBuf>,
) -> color_eyre::Result<()> {
    use speedscape::exercises::cheatsheet;
    let Some(key) = scenario else {
        bail!(Fixable::new(
            "exercise 4 is the decision cheat sheet: it verifies one scenario's choice by a run",
            "pass --scenario A, B or C (and optionally --choice lcm:4); the TUI lets you fill in the whole sheet",
        ));
    };
    let choice = choice
        .as_deref()
        .map(cheatsheet::Approach::parse)
        .transpose()?;
    if let Some(root) = out {
        speedscape::report::check_output_root(root)?;
    }
    let v = cheatsheet::verify(config, key, choice, threshold, device, model_dir, !json)?;
    speedscape::interrupt::check(|| format!("{}; nothing was saved", v.outcome.stopped_runs()))?;
    // A failed save is reported after the verdict, which still prints.
    let save = |root: &Path| -> color_eyre::Result<PathBuf> {
        // The user's answers live beside the reports (written by the TUI); a damaged file
        // stops here with its name rather than being replaced.
        let answers = cheatsheet::Answers::load(&root.join("cheatsheet.json"))?;
        let o = &v.outcome;
        cheatsheet::save(
            root,
            &answers,
            &[cheatsheet::Saved {
                key: v.scenario.key,
                choice: v.choice,
                constraint: v.constraint,
                exercise: &o.exercise,
                rows: &o.rows,
                images: &o.images,
                reports: &o.reports,
            }],
        )
    };
    let (saved, save_error) = match out.map(save) {
        Some(Ok(dir)) => (Some(dir), None),
        Some(Err(e)) => (None, Some(e)),
        None => (None, None),
    };
    if json {
        let mut value = v.outcome.json();
        value["scenario"] = v.scenario.key.to_string().into();
        value["choice"] = v.choice.label().into();
        value["constraint"] = v.constraint.describe().into();
        value["passed"] = v.verdict.as_ref().map(|d| d.passed).into();
        value["verdict"] = v.verdict.as_ref().map(|d| d.text.clone()).into();
        if let Some(dir) = &saved {
            value["saved"] = dir.display().to_string().into();
        }
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", v.outcome.render());
        println!("\n{}", v.summary());
        if let Some(dir) = &saved {
            println!("saved in {}", dir.display());
        }
    }
    if let Some(e) = save_error {
        return Err(e);
    }
    if v.outcome.any_failed() {
        bail!("a verification run did not finish; the constraint could not be checked");
    }
    Ok(())
}

fn exercise(
    config: &Config,
    number: usize,
    out: Option<&Path>,
    json: bool,
    device: Option<Device>,
    model_dir: Option<PathBuf>,
) -> color_eyre::Result<()> {
    use speedscape::exercises::headless;
    let ex = headless::find_exercise(config, number)?;
    if let Some(root) = out {
        // Before the runs: a bad --out must not cost them at the end.
        speedscape::report::check_output_root(root)?;
    }
    let outcome = headless::run_exercise(config, &ex, device, model_dir, !json)?;
    speedscape::interrupt::check(|| format!("{}; nothing was saved", outcome.stopped_runs()))?;
    // A failed save is reported after the table, which still prints.
    let (saved, save_error) = match out.map(|root| {
        headless::save_exercise(
            root,
            &ex,
            &outcome.rows,
            &outcome.images,
            &outcome.reports,
            &[],
        )
    }) {
        Some(Ok(dir)) => (Some(dir), None),
        Some(Err(e)) => (None, Some(e)),
        None => (None, None),
    };
    if json {
        let mut v = outcome.json();
        v["saved"] = serde_json::json!(saved.as_ref().map(|p| p.display().to_string()));
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", outcome.render());
        if let Some(p) = &saved {
            println!("\nsaved to {}", p.display());
        }
    }
    if let Some(e) = save_error {
        return Err(e);
    }
    if outcome.any_failed() {
        // The table and the errors above say which run failed and why.
        std::process::exit(1);
    }
    Ok(())
}

fn sweep(config: &Config, args: SweepArgs) -> color_eyre::Result<()> {
    use speedscape::sweep::{self, Sweep, headless, output};
    let kind = speedscape::open::model_kind(config, args.model_dir.as_deref());
    let mut plan = Sweep::from_config(&config.sweep.for_model(kind), Some(&args.preset))?;
    if let Some(steps) = &args.steps {
        plan = plan.with_steps(&sweep::parse_steps(steps)?)?;
    }
    if let Some(seed) = args.seed {
        plan = plan.with_first_seed(seed);
    }
    if let Some(n) = args.seeds {
        plan = plan.with_seed_count(n)?;
    }
    if args.prompt.is_some() || args.prompt_file.is_some() {
        plan = plan.with_prompt(read_prompt(args.prompt, args.prompt_file.as_deref())?);
    }
    if let Some(r) = &args.reference {
        plan = plan.with_reference(sweep::parse_reference(r)?);
    }
    let root = args
        .out
        .or_else(|| config.tui.out.clone())
        .unwrap_or_else(|| PathBuf::from("speedscape-out"));
    // Before the runs: a bad --out must not cost them at the end.
    report::check_output_root(&root)?;
    let outcome =
        headless::run_sweep(config, plan.plan(), args.device, args.model_dir, !args.json)?;
    speedscape::interrupt::check(|| format!("{}; nothing was saved", outcome.stopped_runs()))?;
    let saved = output::save_sweep(&root, &outcome);
    if args.json {
        let mut v = output::json(&outcome, &[]);
        v["saved"] = serde_json::json!(saved.as_ref().ok().map(|p| p.display().to_string()));
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", output::render(&outcome));
        if let Ok(p) = &saved {
            println!(
                "\nsaved to {} (summary.md, plot.png, points.csv, sweep.json)",
                p.display()
            );
        }
    }
    saved?;
    if outcome.any_failed() {
        // The table and the errors above say which run failed and why.
        std::process::exit(1);
    }
    Ok(())
}
