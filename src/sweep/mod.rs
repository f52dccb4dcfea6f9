//! Step sweeps: the speed landscape. A sweep is a few methods (a scheduler, a UNet variant and a
//! guidance scale), each run at a list of step counts, all with one prompt (or a prompt set,
//! [`prompt_set`]) and the same seeds, against one reference image per sample — a prompt and a
//! seed — (DPM-Solver++ 50 unless config.toml says otherwise). Each point of a method's curve is
//! its median time over its runs against its qualities averaged over the samples, each with its
//! spread and 95 % interval: SSIM / PSNR to the reference, and where the model can say, the
//! reference-free CLIP score and judge accuracy. The knee of a curve is the fewest steps whose
//! quality on the sweep's axis ([`QualityAxis`], SSIM by default) is within a tolerance of the
//! method's best — where its "free" speedup ends.
//!
//! [`Sweep`] is what to run (from `[sweep]` in config.toml, narrowed by `--preset`, `--steps`,
//! `--seeds`); [`Plan`] flattens it into runs (as an [`Exercise`], so the TUI's queue runs it like
//! any other); [`Plan::landscape`] turns what the runs measured into curves ([`Landscape`]), which
//! [`output`] writes as a table, CSV, JSON, Markdown and [`plot`] draws.
//!
//! A sweep's other mode, composability as a curve (`--lora-weights style=0:1.5:0.25`,
//! [`WeightAxis`]): the same runs once per weight of one LoRA adapter instead of once per step
//! count, each image compared with two references per seed — the style-alone image (the
//! reference settings with that adapter at weight 1) and the plain one (without it);
//! [`Plan::weight_curves`] turns those into [`WeightCurves`].

pub mod headless;
pub mod output;
pub mod plot;
pub mod prompt_set;
pub mod shard;

use color_eyre::eyre::{bail, eyre};
use serde::{Deserialize, Serialize};

use crate::error::Fixable;
use crate::exercises::{ControlSpec, Exercise, RunSpec, with_adapters};
use crate::lora::AdapterWeight;
use crate::quality::Quality;
use crate::schedulers::SchedulerKind;

/// One curve of the landscape: a method and the step counts it is run at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Method {
    /// What `--preset` calls it (`dpmpp`, `lcm`, `ddpm`).
    pub name: String,
    /// The chart's legend ("DPM-Solver++").
    pub label: String,
    pub scheduler: SchedulerKind,
    /// UNet variant (`base`, `lcm`, `style`, `lcm_style`).
    #[serde(default = "base_unet")]
    pub unet: String,
    /// Classifier-free guidance scale.
    pub cfg: f32,
    /// Step counts, run in this order (the curve sorts them).
    pub steps: Vec<usize>,
    /// A ControlNet on every run of this method (`control = { image = "edges.png", … }`);
    /// absent: `[sweep]`'s `control`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<ControlSpec>,
}

/// The run every point is compared with (one per seed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    pub scheduler: SchedulerKind,
    pub steps: usize,
    pub cfg: f32,
    #[serde(default = "base_unet")]
    pub unet: String,
    /// A ControlNet on the reference runs; absent: `[sweep]`'s `control`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<ControlSpec>,
}

fn base_unet() -> String {
    "base".into()
}

impl Reference {
    /// "DPM-Solver++ 50" (cfg and UNet when they are not the usual ones).
    pub fn label(&self) -> String {
        let mut s = format!("{} {}", scheduler_label(self.scheduler), self.steps);
        if self.unet != "base" {
            s.push_str(&format!(" @{}", self.unet));
        }
        s
    }
}

/// The legend name of a scheduler.
pub fn scheduler_label(kind: SchedulerKind) -> &'static str {
    match kind {
        SchedulerKind::Ddpm => "DDPM",
        SchedulerKind::DpmSolverPp => "DPM-Solver++",
        SchedulerKind::Lcm => "LCM",
        SchedulerKind::Euler => "Euler",
        SchedulerKind::EulerAncestral => "Euler a",
        SchedulerKind::Ddim => "DDIM",
    }
}

/// `[sweep]` in config.toml. `[[sweep.methods]]` entries replace the default method of the same
/// name, or add one.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SweepConfig {
    pub prompt: String,
    /// Prompts by model kind (`micro`, `tiny`, `sd15`) that replace `prompt` on that kind.
    pub prompts: crate::models::ModelPrompts,
    pub negative_prompt: String,
    /// The first seed; a sweep with N seeds uses seed, seed + 1, …, seed + N − 1.
    pub seed: u64,
    /// Seeds per point (each one image, compared with the reference of the same seed).
    pub seeds: usize,
    /// SSIM below a method's best that still counts as "as good": the knee is the fewest steps
    /// within it.
    pub tolerance: f64,
    pub reference: Reference,
    pub methods: Option<Vec<Method>>,
    /// A ControlNet on every run (the reference's and every method's) that does not set its
    /// own: `control = { image = "edges.png", preprocess = "canny", scale = 1.0 }`.
    pub control: Option<ControlSpec>,
}

/// Most seeds a sweep takes (each one multiplies its runs).
pub const MAX_SEEDS: usize = 64;

impl Default for SweepConfig {
    fn default() -> Self {
        Self {
            prompt: crate::exercises::COTTAGE.into(),
            prompts: crate::exercises::micro(crate::exercises::MICRO_STAR),
            negative_prompt: String::new(),
            seed: 42,
            seeds: 4,
            tolerance: 0.02,
            reference: Reference {
                scheduler: SchedulerKind::DpmSolverPp,
                steps: 50,
                cfg: 7.5,
                unet: base_unet(),
                control: None,
            },
            methods: None,
            control: None,
        }
    }
}

impl SweepConfig {
    /// This sweep on a model of `kind`: with its prompt for that kind, where it has one.
    pub fn for_model(&self, kind: crate::models::ModelKind) -> Self {
        let mut s = self.clone();
        if let Some(p) = s.prompts.get(&kind) {
            s.prompt = p.clone();
        }
        s
    }
}

/// The built-in methods: the curves of exercises 1 and 2.
pub fn default_methods() -> Vec<Method> {
    let m = |name: &str, label: &str, scheduler, unet: &str, cfg, steps: &[usize]| Method {
        name: name.into(),
        label: label.into(),
        scheduler,
        unet: unet.into(),
        cfg,
        steps: steps.to_vec(),
        control: None,
    };
    vec![
        m(
            "dpmpp",
            "DPM-Solver++",
            SchedulerKind::DpmSolverPp,
            "base",
            7.5,
            &[5, 8, 10, 15, 20, 30, 50],
        ),
        m(
            "lcm",
            "LCM-LoRA",
            SchedulerKind::Lcm,
            "lcm",
            1.5,
            &[1, 2, 3, 4, 6, 8],
        ),
        m(
            "ddpm",
            "DDPM",
            SchedulerKind::Ddpm,
            "base",
            7.5,
            &[25, 50, 100],
        ),
    ]
}

impl SweepConfig {
    /// The methods in force: the defaults, each replaced by a config entry of the same name,
    /// then the config's new ones; each without a control of its own gets `[sweep]`'s.
    pub fn methods(&self) -> Vec<Method> {
        let mut all = default_methods();
        for m in self.methods.iter().flatten() {
            match all.iter_mut().find(|d| d.name == m.name) {
                Some(d) => *d = m.clone(),
                None => all.push(m.clone()),
            }
        }
        for m in &mut all {
            m.control = m.control.take().or_else(|| self.control.clone());
        }
        all
    }

    /// The reference in force: with `[sweep]`'s control unless it sets its own.
    pub fn reference(&self) -> Reference {
        let mut r = self.reference.clone();
        r.control = r.control.take().or_else(|| self.control.clone());
        r
    }

    /// Every control the sweep's runs may take, with where config.toml sets it (`[sweep]`,
    /// `[sweep.reference]`, `[[sweep.methods]] "lcm"`): what [`SweepConfig::validate`] checks
    /// and what a command reads up front.
    pub fn controls(&self) -> Vec<(String, &ControlSpec)> {
        let own = self.methods.iter().flatten().filter_map(|m| {
            let c = m.control.as_ref()?;
            Some((format!("[[sweep.methods]] {:?}", m.name), c))
        });
        let shared = [
            ("[sweep]".to_string(), self.control.as_ref()),
            (
                "[sweep.reference]".to_string(),
                self.reference.control.as_ref(),
            ),
        ];
        shared
            .into_iter()
            .filter_map(|(w, c)| Some((w, c?)))
            .chain(own)
            .collect()
    }

    /// What config.toml may get wrong; the error names the key and the fix.
    pub fn validate(&self) -> color_eyre::Result<()> {
        if self.seeds == 0 || self.seeds > MAX_SEEDS {
            bail!(Fixable::new(
                format!("[sweep] seeds = {} is outside 1–{MAX_SEEDS}", self.seeds),
                "use a few seeds (4 is the default; each one adds a run per point)",
            ));
        }
        if !(self.tolerance.is_finite() && self.tolerance > 0.0 && self.tolerance < 1.0) {
            bail!(Fixable::new(
                format!(
                    "[sweep] tolerance = {} is not between 0 and 1 (an SSIM difference)",
                    self.tolerance
                ),
                "use e.g. 0.02",
            ));
        }
        if self.reference.steps == 0 {
            bail!(Fixable::new(
                "[sweep] reference has steps = 0",
                "give the reference at least 1 step",
            ));
        }
        if let Some(e) = crate::pipeline::limits::guidance_error(self.reference.cfg) {
            bail!(e.prefixed(format!(
                "[sweep] reference has cfg = {}: ",
                self.reference.cfg
            )));
        }
        for (what, c) in self.controls() {
            crate::pipeline::control::check_scale(c.scale)
                .map_err(|e| e.prefixed(format!("{what} control: ")))?;
        }
        let methods = self.methods();
        for (i, m) in methods.iter().enumerate() {
            if methods[..i].iter().any(|o| o.name == m.name) {
                bail!(Fixable::new(
                    format!("[[sweep.methods]] defines {:?} twice", m.name),
                    "give each method its own name",
                ));
            }
            if m.steps.is_empty() {
                bail!(Fixable::new(
                    format!("[[sweep.methods]] {:?} has no steps", m.name),
                    "list the step counts to run, e.g. steps = [5, 10, 20]",
                ));
            }
            if m.steps.contains(&0) {
                bail!(Fixable::new(
                    format!("[[sweep.methods]] {:?} lists 0 steps", m.name),
                    "give every point at least 1 step",
                ));
            }
            if let Some(e) = crate::pipeline::limits::guidance_error(m.cfg) {
                bail!(e.prefixed(format!(
                    "[[sweep.methods]] {:?} has cfg = {}: ",
                    m.name, m.cfg
                )));
            }
        }
        Ok(())
    }
}

/// A sweep to run: the config narrowed by the command line. Deserialized from a plan file
/// (`speedscape sweep plan`, see [`shard`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sweep {
    pub prompt: String,
    pub negative_prompt: String,
    pub seeds: Vec<u64>,
    pub tolerance: f64,
    pub reference: Reference,
    pub methods: Vec<Method>,
    /// LoRA adapters on top of every run's own (`--lora`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub loras: Vec<AdapterWeight>,
    /// A weight sweep of one adapter (`--lora-weights`) instead of a step sweep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<WeightAxis>,
    /// A prompt set (`--prompts FILE`, already resolved for the model's kind): every point runs
    /// each of them with every seed, against the reference of the same prompt and seed; empty:
    /// `prompt` alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prompts: Vec<String>,
    /// The quality a curve is read by (`--quality`): its knee, its best point and the plot's y
    /// axis. Every available quality is reported whatever this is.
    #[serde(default, skip_serializing_if = "QualityAxis::is_ssim")]
    pub quality: QualityAxis,
}

/// What a landscape's y axis is (`--quality`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum QualityAxis {
    /// SSIM to the reference image of the same prompt and seed: closeness, not quality.
    #[default]
    Ssim,
    /// CLIP score against the prompt (needs the folder's `clip_image_encoder/`).
    Clip,
    /// The micro model's judge: the share of colour, shape and background read as the prompt
    /// names them (needs the folder's `judge/`).
    Judge,
}

impl QualityAxis {
    fn is_ssim(&self) -> bool {
        *self == Self::Ssim
    }

    /// The axis as tables and plots name it.
    pub fn label(self) -> &'static str {
        match self {
            Self::Ssim => "SSIM",
            Self::Clip => "CLIP score",
            Self::Judge => "judge accuracy",
        }
    }

    /// How far below a curve's best a point may be and still count as "as good" when the
    /// sweep does not say ([`SweepConfig::tolerance`] is for SSIM): the CLIP score moves on a
    /// 0–100 scale, a judge accuracy in thirds of an image.
    pub fn default_tolerance(self) -> f64 {
        match self {
            Self::Ssim => SweepConfig::default().tolerance,
            Self::Clip => 0.5,
            Self::Judge => 0.05,
        }
    }
}

/// `--lora-weights ADAPTER=START:STOP:STEP`: one adapter and the weights it is run at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightAxis {
    /// A folder adapter's name or a `.safetensors` file, as `--lora` takes it.
    pub adapter: String,
    /// START, START + STEP, … up to STOP inclusive, ascending.
    pub weights: Vec<f32>,
}

/// Most weights a weight sweep runs (each one a run per method, step count and seed).
pub const MAX_WEIGHT_POINTS: usize = 50;

/// What a weight sweep runs unless `--preset` and `--steps` say otherwise: the `lcm` method
/// (LCM-LoRA) at [`WEIGHT_STEPS`].
pub const WEIGHT_PRESET: &str = "lcm";
/// The step counts of a weight sweep's runs unless `--steps` says otherwise.
pub const WEIGHT_STEPS: [usize; 1] = [4];
/// The weight curve the TUI's landscape draws (`W`), as `--lora-weights` takes it: the `style`
/// adapter from 0 to 1.5 by 0.25.
pub const DEFAULT_LORA_WEIGHTS: &str = "style=0:1.5:0.25";

impl WeightAxis {
    /// The adapter as tables name it (a file by its stem).
    pub fn name(&self) -> String {
        crate::report::table::adapter_name(&self.adapter)
    }

    /// The adapter at `weight`, as a run applies it.
    pub fn at(&self, weight: f32) -> AdapterWeight {
        AdapterWeight {
            adapter: self.adapter.clone(),
            weight,
        }
    }
}

/// `--lora-weights style=0:1.5:0.25` → `style` at 0, 0.25, …, 1.5. START ≤ STOP, STEP > 0,
/// every weight within ±[`crate::lora::MAX_WEIGHT`], at most [`MAX_WEIGHT_POINTS`] of them;
/// STOP is included when the steps land on it (within a millionth of a step).
pub fn parse_lora_weights(text: &str) -> color_eyre::Result<WeightAxis> {
    let fix = "write ADAPTER=START:STOP:STEP, e.g. --lora-weights style=0:1.5:0.25";
    let bad = |cause: String| {
        eyre!(Fixable::new(
            format!("--lora-weights {text:?}: {cause}"),
            fix
        ))
    };
    let Some((adapter, range)) = text.rsplit_once('=') else {
        return Err(bad("no `=` between the adapter and its weights".into()));
    };
    let adapter = adapter.trim();
    if adapter.is_empty() {
        return Err(bad("no adapter before the `=`".into()));
    }
    let parts: Vec<&str> = range.split(':').map(str::trim).collect();
    let [start, stop, step] = parts[..] else {
        return Err(bad(format!(
            "{range:?} is not START:STOP:STEP (three numbers)"
        )));
    };
    let number = |what: &str, v: &str| -> color_eyre::Result<f64> {
        v.parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .ok_or_else(|| bad(format!("{what} {v:?} is not a finite number")))
    };
    let (start, stop, step) = (
        number("START", start)?,
        number("STOP", stop)?,
        number("STEP", step)?,
    );
    let max = f64::from(crate::lora::MAX_WEIGHT);
    if step <= 0.0 {
        return Err(bad(format!("STEP {step} is not above 0")));
    }
    if start > stop {
        return Err(bad(format!("START {start} is above STOP {stop}")));
    }
    if start < -max || stop > max {
        return Err(bad(format!(
            "weights {start}..{stop} go beyond ±{max}, where a LoRA's update swamps the model"
        )));
    }
    let count = ((stop - start) / step + 1e-6).floor() + 1.0;
    if count > MAX_WEIGHT_POINTS as f64 {
        return Err(bad(format!(
            "{count} weights are more than {MAX_WEIGHT_POINTS}: each one is a run per seed"
        )));
    }
    // Rounded to a millionth, so 0.1 steps read 0.3, not 0.30000001.
    let weights = (0..count as usize)
        .map(|k| ((start + k as f64 * step) * 1e6).round() / 1e6)
        .map(|w| w as f32)
        .collect();
    Ok(WeightAxis {
        adapter: adapter.to_string(),
        weights,
    })
}

/// The one-step curve a model with a one-step UNet adds ([`crate::models::folder_one_step`]):
/// `unet` at 1, 2 and 4 Euler steps (SD-Turbo's trailing schedule, from the variant's own
/// scheduler config), no guidance.
pub fn one_step_method(unet: &str) -> Method {
    Method {
        name: ONE_STEP_METHOD.into(),
        label: crate::models::ONE_STEP_LABEL.into(),
        scheduler: SchedulerKind::Euler,
        unet: unet.into(),
        cfg: 0.0,
        steps: vec![1, 2, 4],
        control: None,
    }
}

/// The name of [`one_step_method`] (`--preset turbo`).
pub const ONE_STEP_METHOD: &str = "turbo";

impl Sweep {
    /// The sweep of `config` for `preset` (a method's name, or `all`; `None` is `all`).
    pub fn from_config(config: &SweepConfig, preset: Option<&str>) -> color_eyre::Result<Self> {
        Self::from_config_for(config, preset, None)
    }

    /// [`Sweep::from_config`] on a model whose one-step UNet is `one_step`: its curve
    /// ([`one_step_method`], unless config.toml defines a method of that name) is one of the
    /// methods.
    pub fn from_config_for(
        config: &SweepConfig,
        preset: Option<&str>,
        one_step: Option<&str>,
    ) -> color_eyre::Result<Self> {
        config.validate()?;
        let mut all = config.methods();
        if let Some(unet) = one_step
            && !all.iter().any(|m| m.name == ONE_STEP_METHOD)
        {
            all.push(one_step_method(unet));
        }
        let methods = match preset {
            None | Some("all") => all,
            Some(name) => {
                let picked: Vec<Method> = all.iter().filter(|m| m.name == name).cloned().collect();
                if picked.is_empty() {
                    let names: Vec<&str> = all.iter().map(|m| m.name.as_str()).collect();
                    bail!(Fixable::new(
                        format!(
                            "there is no sweep preset {name:?}; the presets are {} and all",
                            names.join(", ")
                        ),
                        format!(
                            "pass one of those to --preset, or add a [[sweep.methods]] entry named {name:?} to config.toml"
                        ),
                    ));
                }
                picked
            }
        };
        Ok(Self {
            prompt: config.prompt.clone(),
            negative_prompt: config.negative_prompt.clone(),
            seeds: (0..config.seeds as u64)
                .map(|k| config.seed.wrapping_add(k))
                .collect(),
            tolerance: config.tolerance,
            reference: config.reference(),
            methods,
            loras: Vec::new(),
            weights: None,
            prompts: Vec::new(),
            quality: QualityAxis::Ssim,
        })
    }

    /// Every run with `over` (`--lora`) on top of its own adapters.
    pub fn with_adapters(mut self, over: &[AdapterWeight]) -> Self {
        self.loras = with_adapters(&self.loras, over);
        self
    }

    /// `config`'s weight sweep of `axis` with the defaults: [`WEIGHT_PRESET`] at
    /// [`WEIGHT_STEPS`].
    pub fn default_weights(config: &SweepConfig, axis: WeightAxis) -> color_eyre::Result<Self> {
        Ok(Self::from_config(config, Some(WEIGHT_PRESET))?
            .with_steps(&WEIGHT_STEPS)?
            .with_weights(axis))
    }

    /// A weight sweep of `axis` instead of a step sweep (see [`WeightAxis`]).
    pub fn with_weights(mut self, axis: WeightAxis) -> Self {
        self.weights = Some(axis);
        self
    }

    /// Runs every method at `steps` instead of its own list.
    pub fn with_steps(mut self, steps: &[usize]) -> color_eyre::Result<Self> {
        if steps.is_empty() || steps.contains(&0) {
            bail!(Fixable::new(
                "--steps needs step counts of at least 1, e.g. --steps 5,10,20",
                "list positive step counts, comma-separated",
            ));
        }
        for m in &mut self.methods {
            m.steps = steps.to_vec();
        }
        Ok(self)
    }

    /// `count` seeds from the first one.
    pub fn with_seed_count(mut self, count: usize) -> color_eyre::Result<Self> {
        if count == 0 || count > MAX_SEEDS {
            bail!(Fixable::new(
                format!("--seeds {count} is outside 1–{MAX_SEEDS}"),
                "use a few seeds (each one adds a run per point)",
            ));
        }
        let first = self.seeds[0];
        self.seeds = (0..count as u64).map(|k| first.wrapping_add(k)).collect();
        Ok(self)
    }

    pub fn with_first_seed(mut self, seed: u64) -> Self {
        let n = self.seeds.len() as u64;
        self.seeds = (0..n).map(|k| seed.wrapping_add(k)).collect();
        self
    }

    pub fn with_prompt(mut self, prompt: String) -> Self {
        self.prompt = prompt;
        self
    }

    /// Every point over `prompts` (a prompt set, resolved for the model's kind) × the seeds;
    /// `prompt` becomes the set's first, which titles the outputs.
    pub fn with_prompts(mut self, prompts: Vec<String>) -> Self {
        if let Some(first) = prompts.first() {
            self.prompt = first.clone();
        }
        self.prompts = prompts;
        self
    }

    /// Curves read by `axis`, with `tolerance` below their best still "as good" (`None`: the
    /// axis's default, or for SSIM the sweep's own).
    pub fn with_quality(
        mut self,
        axis: QualityAxis,
        tolerance: Option<f64>,
    ) -> color_eyre::Result<Self> {
        if let Some(t) = tolerance.filter(|t| !(t.is_finite() && *t > 0.0)) {
            bail!(Fixable::new(
                format!("--tolerance {t} is not above 0"),
                format!(
                    "give how far below a curve's best still counts, on the {} axis, e.g. {}",
                    axis.label(),
                    axis.default_tolerance()
                ),
            ));
        }
        if axis != self.quality || tolerance.is_some() {
            self.tolerance = tolerance.unwrap_or_else(|| match axis {
                QualityAxis::Ssim => self.tolerance,
                other => other.default_tolerance(),
            });
        }
        self.quality = axis;
        Ok(self)
    }

    /// Compares every point with `reference` (`--reference`), which keeps the control the
    /// reference had.
    pub fn with_reference(mut self, reference: Reference) -> Self {
        let control = self.reference.control.take();
        self.reference = Reference {
            control: reference.control.or(control),
            ..reference
        };
        self
    }

    /// Every run (the reference's and each method's) under `control` (the command line's
    /// `--controlnet`), replacing its own.
    pub fn with_control(mut self, control: &ControlSpec) -> Self {
        self.reference.control = Some(control.clone());
        for m in &mut self.methods {
            m.control = Some(control.clone());
        }
        self
    }

    /// How many prompts each point runs: the prompt set's, or 1 (`prompt`).
    pub fn prompt_count(&self) -> usize {
        self.prompts.len().max(1)
    }

    /// Prompt `index` of the prompt set (`prompt` without one).
    pub fn prompt_of(&self, index: usize) -> &str {
        self.prompts.get(index).map_or(&self.prompt, String::as_str)
    }

    /// The samples every point runs, prompt by prompt, each with every seed: (prompt index,
    /// seed index). A point is their mean; its interval is over them.
    pub fn samples(&self) -> Vec<(usize, usize)> {
        (0..self.prompt_count())
            .flat_map(|p| (0..self.seeds.len()).map(move |s| (p, s)))
            .collect()
    }

    /// " · prompt 3 · seed 42" (" · seed 42" without a prompt set): how a run's label names
    /// its sample.
    fn sample_label(&self, (prompt, seed): (usize, usize)) -> String {
        let seed = self.seeds[seed];
        if self.prompts.is_empty() {
            format!(" · seed {seed}")
        } else {
            format!(" · prompt {} · seed {seed}", prompt + 1)
        }
    }

    /// The runs, in order: each sample's reference first (in a weight sweep, its plain image
    /// then its style-alone one), then each method's points in its order, every sample of a
    /// point before the next point (so a point is whole as soon as it can be).
    pub fn plan(&self) -> Plan {
        let mut runs = Vec::new();
        for sample in self.samples() {
            let at = self.sample_label(sample);
            if let Some(axis) = &self.weights {
                let plain: Vec<AdapterWeight> = self
                    .loras
                    .iter()
                    .filter(|a| a.adapter != axis.adapter)
                    .cloned()
                    .collect();
                let label = format!("plain: reference {}{at}", self.reference.label());
                runs.push(self.planned_reference(Target::Plain, sample, label, plain));
            }
            let (label, loras) = match &self.weights {
                None => (
                    format!("reference {}{at}", self.reference.label()),
                    self.loras.clone(),
                ),
                Some(axis) => (
                    format!(
                        "{} alone: reference {} + {}×1{at}",
                        axis.name(),
                        self.reference.label(),
                        axis.name()
                    ),
                    with_adapters(&self.loras, &[axis.at(1.0)]),
                ),
            };
            runs.push(self.planned_reference(Target::Reference, sample, label, loras));
        }
        for (mi, m) in self.methods.iter().enumerate() {
            let mut seen = Vec::new();
            for &steps in &m.steps {
                if seen.contains(&steps) {
                    continue;
                }
                seen.push(steps);
                runs.extend(self.point_runs(mi, steps));
            }
        }
        Plan {
            sweep: self.clone(),
            runs,
        }
    }

    /// A run of `spec`'s settings for `sample`: its prompt (when the sweep has a prompt set)
    /// and its seed.
    fn planned(&self, target: Target, sample: (usize, usize), spec: RunSpec) -> PlannedRun {
        let (prompt_index, seed_index) = sample;
        PlannedRun {
            target,
            prompt_index,
            seed_index,
            spec: RunSpec {
                prompt: (!self.prompts.is_empty()).then(|| self.prompt_of(prompt_index).into()),
                seed: Some(self.seeds[seed_index]),
                ..spec
            },
        }
    }

    /// A reference run of `sample`: the reference settings with `loras`.
    fn planned_reference(
        &self,
        target: Target,
        sample: (usize, usize),
        label: String,
        loras: Vec<AdapterWeight>,
    ) -> PlannedRun {
        let r = &self.reference;
        let spec = RunSpec {
            label,
            scheduler: r.scheduler,
            steps: r.steps,
            cfg: r.cfg,
            unet: r.unet.clone(),
            prompt: None,
            seed: None,
            lora: loras,
            control: r.control.clone(),
        };
        self.planned(target, sample, spec)
    }

    /// The runs of method `method` at `steps`: one per sample, or in a weight sweep one per
    /// weight and sample (every sample of a weight before the next weight).
    fn point_runs(&self, method: usize, steps: usize) -> Vec<PlannedRun> {
        let m = &self.methods[method];
        let run = |target, sample, label: String, lora| {
            let spec = RunSpec {
                label,
                scheduler: m.scheduler,
                steps,
                cfg: m.cfg,
                unet: m.unet.clone(),
                prompt: None,
                seed: None,
                lora,
                control: m.control.clone(),
            };
            self.planned(target, sample, spec)
        };
        let Some(axis) = &self.weights else {
            return self
                .samples()
                .into_iter()
                .map(|sample| {
                    let label = format!("{} {steps}{}", m.label, self.sample_label(sample));
                    let target = Target::Point { method, steps };
                    run(target, sample, label, self.loras.clone())
                })
                .collect();
        };
        let mut out = Vec::new();
        for (weight, &w) in axis.weights.iter().enumerate() {
            for sample in self.samples() {
                let label = format!(
                    "{} {steps} + {}×{w}{}",
                    m.label,
                    axis.name(),
                    self.sample_label(sample)
                );
                let target = Target::Weighted {
                    method,
                    steps,
                    weight,
                };
                out.push(run(
                    target,
                    sample,
                    label,
                    with_adapters(&self.loras, &[axis.at(w)]),
                ));
            }
        }
        out
    }
}

/// What a run of a sweep is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Target {
    /// The image every point of the same seed is compared with (in a weight sweep: the
    /// style-alone image, the reference settings with the swept adapter at 1).
    Reference,
    /// Method `method` (index into the sweep's methods) at `steps`.
    Point { method: usize, steps: usize },
    /// A weight sweep's plain image: the reference settings without the swept adapter.
    Plain,
    /// A weight sweep's method `method` at `steps` with the swept adapter at its weight
    /// number `weight` (index into [`WeightAxis::weights`]).
    Weighted {
        method: usize,
        steps: usize,
        weight: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlannedRun {
    pub target: Target,
    /// Index into the sweep's prompt set (0 without one).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub prompt_index: usize,
    /// Index into the sweep's seeds.
    pub seed_index: usize,
    pub spec: RunSpec,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl PlannedRun {
    /// Its sample: (prompt, seed), what its reference shares with it.
    pub fn sample(&self) -> (usize, usize) {
        (self.prompt_index, self.seed_index)
    }
}

/// A sweep flattened into runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub sweep: Sweep,
    pub runs: Vec<PlannedRun>,
}

/// What one finished run measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Measured {
    /// The run's whole time (text encoder, denoising, VAE), as every table reports it.
    pub total_ms: f64,
    /// The image against its seed's reference (the reference itself: identical).
    pub quality: Quality,
    /// CLIP score against the prompt, where the model has a CLIP image encoder.
    pub clip_score: Option<f64>,
    /// A weight sweep's image against its seed's plain image (the style-alone reference's
    /// too: how far apart the curve's two ends are); `None` in a step sweep.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plain: Option<Quality>,
    /// Control adherence (edge F1 against the control), for a run with a ControlNet whose
    /// adherence was measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adherence: Option<f64>,
    /// The judge's accuracy on the image (the share of colour, shape and background it reads
    /// as the prompt names them), where the model has a judge and the prompt names all three.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub judge: Option<f64>,
}

/// The quality of an image that is its own reference.
pub const IDENTICAL: Quality = Quality {
    psnr_db: None,
    ssim: 1.0,
    mean_abs_diff: 0.0,
};

impl Plan {
    /// The run holding `sample`'s reference image (prompt index, seed index).
    pub fn reference_run(&self, sample: (usize, usize)) -> usize {
        self.runs
            .iter()
            .position(|r| r.target == Target::Reference && r.sample() == sample)
            .unwrap_or(0)
    }

    /// The reference run that run `run` is compared with (a reference: itself).
    pub fn reference_for(&self, run: usize) -> usize {
        self.reference_run(self.runs[run].sample())
    }

    /// The plain run (a weight sweep's) that run `run` is also compared with; `None` in a step
    /// sweep, and for the plain run itself.
    pub fn plain_for(&self, run: usize) -> Option<usize> {
        let sample = self.runs[run].sample();
        (self.runs[run].target != Target::Plain)
            .then(|| {
                self.runs
                    .iter()
                    .position(|r| r.target == Target::Plain && r.sample() == sample)
            })
            .flatten()
    }

    /// Run `run`'s request: its exercise request (see [`Plan::exercise`]) asking for a CLIP
    /// score and a judge reading, which the model gives when it has a CLIP image encoder or a
    /// judge (computed after the timed part of the run).
    pub fn request(&self, run: usize, rng: crate::rng::RngSource) -> crate::pipeline::Request {
        let s = &self.sweep;
        let first_seed = s.seeds.first().copied().unwrap_or(42);
        let mut r = self.runs[run]
            .spec
            .request(&s.prompt, &s.negative_prompt, first_seed, rng);
        r.clip_score = true;
        r.judge = true;
        r
    }

    /// The sweep as an exercise (number 0: not one of the course's), so the TUI's run queue
    /// runs it like any other. Its baseline is the first reference.
    pub fn exercise(&self) -> Exercise {
        let s = &self.sweep;
        let seeds = match s.seeds.as_slice() {
            [one] => format!("seed {one}"),
            [first, .., last] => format!("seeds {first}–{last}"),
            [] => "no seeds".into(),
        };
        let (title, about) = match &s.weights {
            None => (
                "The speed landscape",
                format!(
                    "Each method runs at several step counts with {seeds}; every image is compared \
                     with the {} image of its seed. A point is the median time against the mean \
                     SSIM; the ring on each curve marks its knee, the fewest steps within {} SSIM \
                     of the method's best — where its free speedup ends.",
                    s.reference.label(),
                    s.tolerance
                ),
            ),
            Some(axis) => (
                "Composability as a curve",
                format!(
                    "Each method runs with the {a} adapter at every weight with {seeds}; every \
                     image is compared with the {a}-alone image ({r} + {a}×1) and the plain one \
                     ({r}) of its seed: where the style fades as its weight falls.",
                    a = axis.name(),
                    r = s.reference.label()
                ),
            ),
        };
        Exercise {
            number: 0,
            title: title.into(),
            about,
            prompt: s.prompt.clone(),
            prompts: Default::default(),
            negative_prompt: s.negative_prompt.clone(),
            seed: s.seeds.first().copied().unwrap_or(42),
            runs: self.runs.iter().map(|r| r.spec.clone()).collect(),
            baseline: 0,
            questions: Vec::new(),
            one_step_run: false,
        }
    }

    /// The curves from what the runs measured so far (`measured[i]` is run `i`'s; `None`: not
    /// finished). Points without a finished run are left out.
    pub fn landscape(&self, measured: &[Option<Measured>]) -> Landscape {
        let got = |i: usize| measured.get(i).copied().flatten();
        let series = self
            .sweep
            .methods
            .iter()
            .enumerate()
            .map(|(mi, method)| {
                let mut steps: Vec<usize> = method.steps.clone();
                steps.sort_unstable();
                steps.dedup();
                let points: Vec<Point> = steps
                    .into_iter()
                    .filter_map(|n| {
                        let runs: Vec<Measured> = self
                            .runs
                            .iter()
                            .enumerate()
                            .filter(|(_, r)| {
                                r.target
                                    == Target::Point {
                                        method: mi,
                                        steps: n,
                                    }
                            })
                            .filter_map(|(i, _)| got(i))
                            .collect();
                        Point::of(n, &runs, self.sweep.samples().len())
                    })
                    .collect();
                let axis = self.sweep.quality;
                let knee = knee(
                    &points
                        .iter()
                        .map(|p| (p.steps, p.mean(axis)))
                        .collect::<Vec<_>>(),
                    self.sweep.tolerance,
                );
                Series {
                    method: method.clone(),
                    points,
                    knee,
                }
            })
            .collect();
        let refs: Vec<Measured> = self
            .runs
            .iter()
            .enumerate()
            .filter(|(_, r)| r.target == Target::Reference)
            .filter_map(|(i, _)| got(i))
            .collect();
        Landscape {
            sweep: self.sweep.clone(),
            reference: Point::of(
                self.sweep.reference.steps,
                &refs,
                self.sweep.samples().len(),
            ),
            series,
            clip_score: measured.iter().flatten().any(|m| m.clip_score.is_some()),
            adherence: measured.iter().flatten().any(|m| m.adherence.is_some()),
            judge: measured.iter().flatten().any(|m| m.judge.is_some()),
        }
    }
}

impl Plan {
    /// A weight sweep's curves from what the runs measured so far (`None` for a step sweep):
    /// per method and step count, each weight's median time and its SSIM to the style-alone
    /// and the plain image over the seeds. Weights without a finished run are left out.
    pub fn weight_curves(&self, measured: &[Option<Measured>]) -> Option<WeightCurves> {
        let axis = self.sweep.weights.as_ref()?;
        let got = |i: usize| measured.get(i).copied().flatten();
        let of_target = |target: Target| -> Vec<Measured> {
            let runs = self.runs.iter().enumerate();
            runs.filter(|(_, r)| r.target == target)
                .filter_map(|(i, _)| got(i))
                .collect()
        };
        let mut series = Vec::new();
        for (mi, method) in self.sweep.methods.iter().enumerate() {
            let mut steps: Vec<usize> = method.steps.clone();
            steps.sort_unstable();
            steps.dedup();
            for n in steps {
                let points = (0..axis.weights.len())
                    .filter_map(|weight| {
                        let target = Target::Weighted {
                            method: mi,
                            steps: n,
                            weight,
                        };
                        let runs = of_target(target);
                        WeightPoint::of(axis.weights[weight], &runs, self.sweep.samples().len())
                    })
                    .collect();
                series.push(WeightSeries {
                    method: method.clone(),
                    steps: n,
                    points,
                });
            }
        }
        let refs = of_target(Target::Reference);
        let ends: Vec<f64> = refs
            .iter()
            .filter_map(|m| m.plain)
            .map(|q| q.ssim)
            .collect();
        Some(WeightCurves {
            axis: axis.clone(),
            reference: Point::of(
                self.sweep.reference.steps,
                &refs,
                self.sweep.samples().len(),
            ),
            plain: Point::of(
                self.sweep.reference.steps,
                &of_target(Target::Plain),
                self.sweep.samples().len(),
            ),
            ends: Stat::of(&ends),
            series,
        })
    }
}

/// A weight sweep's numbers: one curve per method and step count.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WeightCurves {
    pub axis: WeightAxis,
    /// The style-alone reference runs' time.
    pub reference: Option<Point>,
    /// The plain reference runs' time.
    pub plain: Option<Point>,
    /// SSIM of the style-alone image to the plain one over the seeds: how far apart the two
    /// references are (a curve moves between them).
    pub ends: Option<Stat>,
    pub series: Vec<WeightSeries>,
}

impl WeightCurves {
    /// No weight has any run yet.
    pub fn is_empty(&self) -> bool {
        self.series.iter().all(|s| s.points.is_empty())
    }
}

/// One method at one step count across the weights.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WeightSeries {
    pub method: Method,
    pub steps: usize,
    /// By weight, ascending; only weights with a finished run.
    pub points: Vec<WeightPoint>,
}

impl WeightSeries {
    /// "LCM-LoRA 4": the method and its step count, as legends and tables name the curve.
    pub fn label(&self) -> String {
        format!("{} {}", self.method.label, self.steps)
    }
}

/// One weight of a curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WeightPoint {
    pub weight: f32,
    /// Finished runs behind it (one per seed when complete).
    pub runs: usize,
    /// Runs planned for it.
    pub planned: usize,
    /// Median total time over its runs, and their range.
    pub time_ms: f64,
    pub time_min_ms: f64,
    pub time_max_ms: f64,
    /// SSIM to the style-alone image over the seeds: the style's strength.
    pub ssim_style: Stat,
    /// SSIM to the plain image over the seeds (`None` while no plain image is there).
    pub ssim_plain: Option<Stat>,
}

impl WeightPoint {
    fn of(weight: f32, runs: &[Measured], planned: usize) -> Option<Self> {
        let times: Vec<f64> = runs.iter().map(|m| m.total_ms).collect();
        let time_ms = median(&times)?;
        let style = Stat::of(&runs.iter().map(|m| m.quality.ssim).collect::<Vec<_>>())?;
        let plain: Vec<f64> = runs
            .iter()
            .filter_map(|m| m.plain)
            .map(|q| q.ssim)
            .collect();
        Some(Self {
            weight,
            runs: runs.len(),
            planned,
            time_ms,
            time_min_ms: times.iter().copied().fold(f64::INFINITY, f64::min),
            time_max_ms: times.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            ssim_style: style,
            ssim_plain: Stat::of(&plain),
        })
    }

    /// Every planned run of it finished.
    pub fn complete(&self) -> bool {
        self.runs >= self.planned
    }
}

/// Mean, spread and range of a few numbers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stat {
    pub mean: f64,
    /// Sample standard deviation (0 for one value).
    pub std: f64,
    /// Half-width of the mean's 95 % confidence interval, Student's t over the values as
    /// independent samples (prompts × seeds): mean ± this. 0 for one value (no interval).
    pub ci95: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

/// Student's t at 97.5 % (a two-sided 95 % interval) for `df` degrees of freedom: tabulated to
/// 30, then the Cornish–Fisher expansion around the normal's 1.96 (within 1e-4 from 30 on).
pub fn t_975(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010,
        2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739,
        2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
    ];
    match df {
        0 => f64::NAN,
        1..=30 => TABLE[df - 1],
        _ => {
            let (z, n): (f64, f64) = (1.959_964, df as f64);
            let (z3, z5) = (z.powi(3), z.powi(5));
            z + (z3 + z) / (4.0 * n)
                + (5.0 * z5 + 16.0 * z3 + 3.0 * z) / (96.0 * n * n)
                + (3.0 * z.powi(7) + 19.0 * z5 + 17.0 * z3 - 15.0 * z) / (384.0 * n.powi(3))
        }
    }
}

impl Stat {
    /// `None` for no values.
    pub fn of(values: &[f64]) -> Option<Self> {
        let n = values.len();
        if n == 0 {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let var = if n > 1 {
            values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64
        } else {
            0.0
        };
        let std = var.sqrt();
        Some(Self {
            mean,
            std,
            ci95: if n > 1 {
                t_975(n - 1) * std / (n as f64).sqrt()
            } else {
                0.0
            },
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            n,
        })
    }
}

/// The median of `values` (mean of the middle two for an even count); `None` for none.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    })
}

/// One point of a curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    pub steps: usize,
    /// Finished runs behind it (one per seed when complete).
    pub runs: usize,
    /// Runs planned for it.
    pub planned: usize,
    /// Median total time over its runs, and their range.
    pub time_ms: f64,
    pub time_min_ms: f64,
    pub time_max_ms: f64,
    /// SSIM to the reference over the seeds.
    pub ssim: Stat,
    /// PSNR over the seeds whose image differs from the reference (identical ones have no
    /// finite PSNR); `None` when every one is identical.
    pub psnr_db: Option<Stat>,
    /// Seeds whose image is bit-identical to the reference's.
    pub identical: usize,
    pub clip_score: Option<Stat>,
    /// Control adherence (edge F1) over the seeds whose runs have one, as SSIM is aggregated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adherence: Option<Stat>,
    /// Judge accuracy over the runs that have one ([`Measured::judge`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub judge: Option<Stat>,
}

impl Point {
    fn of(steps: usize, runs: &[Measured], planned: usize) -> Option<Self> {
        let times: Vec<f64> = runs.iter().map(|m| m.total_ms).collect();
        let time_ms = median(&times)?;
        let ssim = Stat::of(&runs.iter().map(|m| m.quality.ssim).collect::<Vec<_>>())?;
        let psnr: Vec<f64> = runs.iter().filter_map(|m| m.quality.psnr_db).collect();
        let clips: Vec<f64> = runs.iter().filter_map(|m| m.clip_score).collect();
        let adherence: Vec<f64> = runs.iter().filter_map(|m| m.adherence).collect();
        let judge: Vec<f64> = runs.iter().filter_map(|m| m.judge).collect();
        Some(Self {
            steps,
            runs: runs.len(),
            planned,
            time_ms,
            time_min_ms: times.iter().copied().fold(f64::INFINITY, f64::min),
            time_max_ms: times.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            ssim,
            psnr_db: Stat::of(&psnr),
            identical: runs.len() - psnr.len(),
            clip_score: Stat::of(&clips),
            adherence: Stat::of(&adherence),
            judge: Stat::of(&judge),
        })
    }

    /// Its quality on `axis`, over the runs that have it.
    pub fn quality(&self, axis: QualityAxis) -> Option<Stat> {
        match axis {
            QualityAxis::Ssim => Some(self.ssim),
            QualityAxis::Clip => self.clip_score,
            QualityAxis::Judge => self.judge,
        }
    }

    /// Its mean quality on `axis`; NaN where it has none (never a knee, never the best).
    pub fn mean(&self, axis: QualityAxis) -> f64 {
        self.quality(axis).map_or(f64::NAN, |s| s.mean)
    }

    /// Every planned run of it finished.
    pub fn complete(&self) -> bool {
        self.runs >= self.planned
    }
}

/// One method's curve.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    pub method: Method,
    /// By step count, ascending; only points with a finished run.
    pub points: Vec<Point>,
    /// The knee's step count (see [`knee`]).
    pub knee: Option<usize>,
}

impl Series {
    /// The points in the order a line through them is drawn: by time, fastest first (ties by
    /// steps), so the x axis only goes forward.
    pub fn by_time(&self) -> Vec<Point> {
        let mut p = self.points.clone();
        p.sort_by(|a, b| a.time_ms.total_cmp(&b.time_ms).then(a.steps.cmp(&b.steps)));
        p
    }

    pub fn point(&self, steps: usize) -> Option<&Point> {
        self.points.iter().find(|p| p.steps == steps)
    }

    /// The point with the best mean quality on `axis` (fewest steps among equals); `None`
    /// when no point has that quality.
    pub fn best(&self, axis: QualityAxis) -> Option<&Point> {
        self.points.iter().filter(|p| !p.mean(axis).is_nan()).fold(
            None,
            |best: Option<&Point>, p| match best {
                Some(b) if b.mean(axis) >= p.mean(axis) => Some(b),
                _ => Some(p),
            },
        )
    }
}

/// Every curve of a sweep, as far as it got.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Landscape {
    pub sweep: Sweep,
    /// The reference runs' time (their SSIM is 1 by definition).
    pub reference: Option<Point>,
    pub series: Vec<Series>,
    /// Some run has a CLIP score (the model has a CLIP image encoder): the column exists.
    pub clip_score: bool,
    /// Some run has a control adherence (it ran under a ControlNet): the edge F1 column exists.
    pub adherence: bool,
    /// Some run has a judge accuracy (the model has a judge): the judge column exists.
    pub judge: bool,
}

impl Landscape {
    /// Reference time ÷ the point's time, as every table has a speedup
    /// ([`crate::report::table::speedup`]: none against a zero time).
    pub fn speedup(&self, p: &Point) -> Option<f64> {
        crate::report::table::speedup(self.reference?.time_ms, p.time_ms)
    }

    /// No point has any run yet.
    pub fn is_empty(&self) -> bool {
        self.series.iter().all(|s| s.points.is_empty())
    }
}

/// The knee of a curve of `(steps, quality)` points: the fewest steps whose quality is within
/// `tolerance` of the best quality on the curve. `None` for no points; NaN qualities never count.
pub fn knee(points: &[(usize, f64)], tolerance: f64) -> Option<usize> {
    let best = points
        .iter()
        .map(|&(_, q)| q)
        .filter(|q| !q.is_nan())
        .fold(None, |b: Option<f64>, q| Some(b.map_or(q, |b| b.max(q))))?;
    points
        .iter()
        .filter(|&&(_, q)| q >= best - tolerance)
        .map(|&(n, _)| n)
        .min()
}

/// `--steps 5,10,20` → `[5, 10, 20]`.
pub fn parse_steps(text: &str) -> color_eyre::Result<Vec<usize>> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>().map_err(|_| {
                eyre!(Fixable::new(
                    format!("--steps: {s:?} is not a step count"),
                    "list positive whole numbers, comma-separated, e.g. --steps 5,10,20",
                ))
            })
        })
        .collect()
}

/// `--reference dpmpp:50[:CFG][@UNET]` (the bench's spelling).
pub fn parse_reference(text: &str) -> color_eyre::Result<Reference> {
    let fix = "write SCHEDULER:STEPS[:CFG][@UNET], e.g. dpmpp:50 or ddpm:100:7.5";
    let (body, unet) = match text.split_once('@') {
        Some((b, u)) => (b, u.to_string()),
        None => (text, base_unet()),
    };
    let mut parts = body.split(':');
    let scheduler: SchedulerKind = parts
        .next()
        .unwrap_or_default()
        .parse()
        .map_err(|e| Fixable::new(format!("--reference {text:?}: {e}"), fix))?;
    let steps: usize = parts
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .ok_or_else(|| Fixable::new(format!("--reference {text:?} has no step count ≥ 1"), fix))?;
    let cfg: f32 = match parts.next() {
        Some(c) => c.parse().map_err(|_| {
            Fixable::new(
                format!("--reference {text:?}: cfg {c:?} is not a number"),
                fix,
            )
        })?,
        None => 7.5,
    };
    if parts.next().is_some() {
        bail!(Fixable::new(
            format!("--reference {text:?} has too many parts"),
            fix
        ));
    }
    Ok(Reference {
        scheduler,
        steps,
        cfg,
        unet,
        control: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(total_ms: f64, ssim: f64) -> Option<Measured> {
        Some(Measured {
            total_ms,
            quality: Quality {
                psnr_db: (ssim < 1.0).then_some(30.0 * ssim),
                ssim,
                mean_abs_diff: 0.0,
            },
            clip_score: None,
            plain: None,
            adherence: None,
            judge: None,
        })
    }

    #[test]
    fn the_knee_is_the_fewest_steps_within_the_tolerance_of_the_best() {
        // A solver curve: flat from 15 steps up, falling below.
        let curve = [
            (5, 0.67),
            (8, 0.85),
            (10, 0.91),
            (15, 0.975),
            (20, 0.985),
            (30, 0.99),
            (50, 0.992),
        ];
        assert_eq!(knee(&curve, 0.02), Some(15));
        assert_eq!(knee(&curve, 0.1), Some(10));
        assert_eq!(knee(&curve, 0.003), Some(30));
        assert_eq!(knee(&curve, 0.001), Some(50));
        // Order of the input does not matter.
        let mut rev = curve;
        rev.reverse();
        assert_eq!(knee(&rev, 0.02), Some(15));
    }

    #[test]
    fn a_flat_curve_has_its_knee_at_the_fewest_steps_and_a_late_peak_at_the_peak() {
        // LCM-like: good from 4 steps, barely better after.
        assert_eq!(
            knee(&[(1, 0.5), (2, 0.7), (4, 0.8), (6, 0.805), (8, 0.81)], 0.02),
            Some(4)
        );
        // Rising to the end: the knee is the last point.
        assert_eq!(knee(&[(1, 0.1), (2, 0.5), (3, 0.9)], 0.02), Some(3));
        // One point, or a constant curve: its fewest steps.
        assert_eq!(knee(&[(7, 0.3)], 0.02), Some(7));
        assert_eq!(knee(&[(9, 1.0), (3, 1.0)], 0.02), Some(3));
        // A dip that recovers does not move the knee past an earlier point that is good enough.
        assert_eq!(knee(&[(2, 0.95), (4, 0.7), (8, 0.96)], 0.02), Some(2));
    }

    #[test]
    fn no_points_or_only_nan_have_no_knee() {
        assert_eq!(knee(&[], 0.02), None);
        assert_eq!(knee(&[(4, f64::NAN)], 0.02), None);
        assert_eq!(knee(&[(4, f64::NAN), (8, 0.5)], 0.02), Some(8));
    }

    fn small_sweep(seeds: usize) -> Sweep {
        let cfg = SweepConfig {
            seeds,
            ..SweepConfig::default()
        };
        Sweep::from_config(&cfg, Some("dpmpp"))
            .unwrap()
            .with_steps(&[10, 5, 10, 20])
            .unwrap()
    }

    #[test]
    fn t_quantiles_match_students_t_tables() {
        // R: qt(0.975, df).
        for (df, want) in [
            (1, 12.7062),
            (4, 2.7764),
            (30, 2.0423),
            (31, 2.0395),
            (40, 2.0211),
            (119, 1.9801),
            (1000, 1.9623),
        ] {
            assert!((t_975(df) - want).abs() < 2e-4, "df {df}: {}", t_975(df));
        }
    }

    #[test]
    fn a_stats_interval_is_students_t_over_the_standard_error() {
        let s = Stat::of(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        let sd = (5.0f64 / 3.0).sqrt();
        assert!((s.std - sd).abs() < 1e-12);
        assert!((s.ci95 - 3.1824 * sd / 2.0).abs() < 1e-4, "{}", s.ci95);
        assert_eq!(
            Stat::of(&[0.7]).unwrap().ci95,
            0.0,
            "one value: no interval"
        );
    }

    #[test]
    fn a_prompt_set_runs_every_prompt_with_every_seed_against_its_own_reference() {
        let prompts = vec!["a red fox".to_string(), "an owl".to_string()];
        let sweep = small_sweep(2).with_prompts(prompts.clone());
        assert_eq!(sweep.prompt, "a red fox", "the first titles the outputs");
        assert_eq!(sweep.samples(), [(0, 0), (0, 1), (1, 0), (1, 1)]);
        let plan = sweep.plan();
        let refs: Vec<&PlannedRun> = plan
            .runs
            .iter()
            .filter(|r| r.target == Target::Reference)
            .collect();
        assert_eq!(refs.len(), 4);
        for (i, r) in plan.runs.iter().enumerate() {
            let want = &prompts[r.prompt_index];
            assert_eq!(r.spec.prompt.as_ref(), Some(want), "{}", r.spec.label);
            assert_eq!(r.spec.seed, Some(sweep.seeds[r.seed_index]));
            let reference = &plan.runs[plan.reference_for(i)];
            assert_eq!(reference.target, Target::Reference);
            assert_eq!(reference.sample(), r.sample(), "{}", r.spec.label);
        }
        // Each point runs all four samples, one after another.
        let ten: Vec<(usize, usize)> = plan
            .runs
            .iter()
            .filter(|r| {
                r.target
                    == Target::Point {
                        method: 0,
                        steps: 10,
                    }
            })
            .map(PlannedRun::sample)
            .collect();
        assert_eq!(ten, sweep.samples());
        assert!(
            plan.runs[4].spec.label.ends_with("· prompt 1 · seed 42"),
            "{}",
            plan.runs[4].spec.label
        );
        // A point counts all four as planned.
        let measured: Vec<Option<Measured>> =
            plan.runs.iter().map(|_| measured(10.0, 0.9)).collect();
        let land = plan.landscape(&measured);
        assert_eq!(land.series[0].points[0].planned, 4);
        assert_eq!(land.series[0].points[0].ssim.n, 4);
    }

    #[test]
    fn without_a_prompt_set_runs_keep_the_sweeps_prompt_and_plans_keep_their_old_form() {
        let plan = small_sweep(1).plan();
        assert!(
            plan.runs
                .iter()
                .all(|r| r.spec.prompt.is_none() && r.prompt_index == 0)
        );
        let json = serde_json::to_value(&plan.runs[0]).unwrap();
        assert!(json.get("prompt_index").is_none(), "{json}");
        assert!(
            serde_json::to_value(&plan.sweep)
                .unwrap()
                .get("quality")
                .is_none()
        );
    }

    #[test]
    fn the_knee_and_the_best_point_follow_the_quality_axis() {
        // SSIM says 20 steps are needed; the judge reads every image right from 5.
        let sweep = small_sweep(1)
            .with_quality(QualityAxis::Judge, None)
            .unwrap();
        assert_eq!(sweep.tolerance, QualityAxis::Judge.default_tolerance());
        let plan = sweep.plan();
        let measured: Vec<Option<Measured>> = plan
            .runs
            .iter()
            .map(|r| {
                let (ssim, judge) = match r.target {
                    Target::Point { steps: 5, .. } => (0.6, 1.0),
                    Target::Point { steps: 10, .. } => (0.8, 1.0),
                    _ => (0.99, 1.0),
                };
                measured(10.0, ssim).map(|m| Measured {
                    judge: Some(judge),
                    ..m
                })
            })
            .collect();
        let land = plan.landscape(&measured);
        assert!(land.judge);
        assert_eq!(land.series[0].knee, Some(5));
        assert_eq!(land.series[0].best(QualityAxis::Ssim).unwrap().steps, 20);
        assert_eq!(land.series[0].best(QualityAxis::Judge).unwrap().steps, 5);
        // Read by SSIM, the same runs put the knee at 20.
        let by_ssim = Plan {
            sweep: Sweep {
                quality: QualityAxis::Ssim,
                tolerance: 0.02,
                ..plan.sweep.clone()
            },
            runs: plan.runs.clone(),
        };
        assert_eq!(by_ssim.landscape(&measured).series[0].knee, Some(20));
        // No run has a CLIP score: on that axis there is no knee and no best.
        let by_clip = Plan {
            sweep: Sweep {
                quality: QualityAxis::Clip,
                ..plan.sweep.clone()
            },
            runs: plan.runs,
        };
        let l = by_clip.landscape(&measured);
        assert_eq!(
            (l.series[0].knee, l.series[0].best(QualityAxis::Clip)),
            (None, None)
        );
    }

    #[test]
    fn a_tolerance_must_be_above_zero() {
        for t in [0.0, -0.1, f64::NAN] {
            let e = small_sweep(1)
                .with_quality(QualityAxis::Ssim, Some(t))
                .unwrap_err();
            assert!(format!("{e:?}").contains("--tolerance"), "{e:?}");
        }
        let s = small_sweep(1)
            .with_quality(QualityAxis::Clip, Some(2.0))
            .unwrap();
        assert_eq!((s.quality, s.tolerance), (QualityAxis::Clip, 2.0));
    }

    #[test]
    fn a_plan_runs_each_seeds_reference_first_then_every_seed_of_a_point_together() {
        let plan = small_sweep(2).plan();
        let got: Vec<(Target, usize)> =
            plan.runs.iter().map(|r| (r.target, r.seed_index)).collect();
        let p = |steps| Target::Point { method: 0, steps };
        assert_eq!(
            got,
            vec![
                (Target::Reference, 0),
                (Target::Reference, 1),
                (p(10), 0),
                (p(10), 1),
                (p(5), 0),
                (p(5), 1),
                (p(20), 0),
                (p(20), 1),
            ],
            "the repeated 10 runs once"
        );
        assert_eq!(plan.runs[3].spec.seed, Some(43));
        assert_eq!(plan.runs[3].spec.label, "DPM-Solver++ 10 · seed 43");
        assert_eq!(plan.reference_for(5), 1);
        assert_eq!(plan.reference_for(4), 0);
        let ex = plan.exercise();
        assert_eq!(ex.runs.len(), 8);
        assert_eq!(ex.runs[0].steps, 50);
        assert_eq!(ex.request(3, crate::rng::RngSource::TorchCpu).seed, 43);
    }

    #[test]
    fn points_take_the_median_time_and_the_mean_ssim_over_seeds_with_their_spread() {
        let plan = small_sweep(3).plan();
        let mut m = vec![None; plan.runs.len()];
        for (i, r) in plan.runs.iter().enumerate() {
            m[i] = match r.target {
                Target::Reference => Some(Measured {
                    total_ms: 500.0 + i as f64,
                    quality: IDENTICAL,
                    clip_score: None,
                    plain: None,
                    adherence: None,
                    judge: None,
                }),
                Target::Point { steps: 10, .. } => measured(
                    [100.0, 300.0, 110.0][r.seed_index],
                    [0.9, 0.8, 0.7][r.seed_index],
                ),
                Target::Point { steps: 5, .. } if r.seed_index == 0 => measured(50.0, 0.5),
                _ => None,
            };
        }
        let land = plan.landscape(&m);
        let s = &land.series[0];
        assert_eq!(
            s.points.iter().map(|p| p.steps).collect::<Vec<_>>(),
            [5, 10]
        );
        let ten = s.point(10).unwrap();
        assert_eq!(ten.time_ms, 110.0);
        assert_eq!((ten.time_min_ms, ten.time_max_ms), (100.0, 300.0));
        assert!((ten.ssim.mean - 0.8).abs() < 1e-12);
        assert!((ten.ssim.std - 0.1).abs() < 1e-12);
        assert_eq!((ten.ssim.min, ten.ssim.max, ten.ssim.n), (0.7, 0.9, 3));
        assert!(ten.complete());
        let five = s.point(5).unwrap();
        assert_eq!((five.runs, five.planned, five.complete()), (1, 3, false));
        assert_eq!(land.reference.unwrap().time_ms, 501.0);
        assert!((land.speedup(ten).unwrap() - 501.0 / 110.0).abs() < 1e-12);
        assert_eq!(s.knee, Some(10));
        assert!(!land.clip_score, "no run had a CLIP score: no column");
    }

    #[test]
    fn a_zero_reference_time_gives_no_speedup_rather_than_zero() {
        let plan = small_sweep(1).plan();
        let m: Vec<Option<Measured>> = plan
            .runs
            .iter()
            .map(|r| match r.target {
                Target::Reference => Some(Measured {
                    total_ms: 0.0,
                    quality: IDENTICAL,
                    clip_score: None,
                    plain: None,
                    adherence: None,
                    judge: None,
                }),
                _ => measured(100.0, 0.9),
            })
            .collect();
        let land = plan.landscape(&m);
        let p = land.series[0].points[0];
        assert_eq!(land.reference.unwrap().time_ms, 0.0);
        assert_eq!(land.speedup(&p), None);
    }

    #[test]
    fn the_median_is_the_middle_value_or_the_mean_of_the_middle_two() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN, 5.0]), Some(5.0));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn identical_images_count_apart_from_the_psnr_mean() {
        let plan = small_sweep(2).plan();
        let mut m = vec![None; plan.runs.len()];
        let twenty: Vec<usize> = (0..plan.runs.len())
            .filter(|&i| matches!(plan.runs[i].target, Target::Point { steps: 20, .. }))
            .collect();
        m[twenty[0]] = Some(Measured {
            total_ms: 1.0,
            quality: IDENTICAL,
            clip_score: Some(31.0),
            plain: None,
            adherence: None,
            judge: None,
        });
        m[twenty[1]] = measured(1.0, 0.9);
        let land = plan.landscape(&m);
        let p = land.series[0].point(20).unwrap();
        assert_eq!(p.identical, 1);
        assert_eq!(p.psnr_db.unwrap().n, 1);
        assert_eq!(p.clip_score.unwrap().n, 1);
        assert!(land.clip_score);
    }

    #[test]
    fn a_line_through_a_curve_goes_forward_in_time_even_when_times_cross() {
        let s = Series {
            method: default_methods().remove(0),
            points: [(5, 40.0), (8, 35.0), (10, 60.0)]
                .iter()
                .map(|&(steps, t)| Point {
                    steps,
                    runs: 1,
                    planned: 1,
                    time_ms: t,
                    time_min_ms: t,
                    time_max_ms: t,
                    ssim: Stat::of(&[0.5]).unwrap(),
                    psnr_db: None,
                    identical: 0,
                    clip_score: None,
                    adherence: None,
                    judge: None,
                })
                .collect(),
            knee: None,
        };
        let order: Vec<usize> = s.by_time().iter().map(|p| p.steps).collect();
        assert_eq!(order, [8, 5, 10]);
    }

    /// A model with a one-step UNet adds its curve (1, 2, 4 Euler steps, no guidance, that
    /// variant), also as `--preset turbo`; without one there is no such preset; a method of that
    /// name in config.toml is kept as written.
    #[test]
    fn a_one_step_unet_adds_its_curve_and_preset() {
        let cfg = SweepConfig::default();
        let all = Sweep::from_config_for(&cfg, None, Some("turbo")).unwrap();
        let names: Vec<&str> = all.methods.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["dpmpp", "lcm", "ddpm", "turbo"]);
        let t = &all.methods[3];
        assert_eq!(
            (t.scheduler, t.cfg, t.unet.as_str(), t.steps.as_slice()),
            (SchedulerKind::Euler, 0.0, "turbo", [1, 2, 4].as_slice())
        );
        let only = Sweep::from_config_for(&cfg, Some("turbo"), Some("base")).unwrap();
        assert_eq!(only.methods.len(), 1);
        assert_eq!(only.methods[0].unet, "base", "an SD-Turbo folder's base");
        let err = Sweep::from_config_for(&cfg, Some("turbo"), None).unwrap_err();
        assert!(
            err.to_string().contains("no sweep preset \"turbo\""),
            "{err}"
        );
        let mut own = cfg.clone();
        own.methods = Some(vec![Method {
            steps: vec![1],
            ..one_step_method("my_turbo")
        }]);
        let s = Sweep::from_config_for(&own, Some("turbo"), Some("turbo")).unwrap();
        assert_eq!(
            (s.methods[0].unet.as_str(), s.methods[0].steps.as_slice()),
            ("my_turbo", [1].as_slice())
        );
    }

    #[test]
    fn presets_pick_methods_by_name_and_an_unknown_one_names_the_choices() {
        let cfg = SweepConfig::default();
        let all = Sweep::from_config(&cfg, Some("all")).unwrap();
        let names: Vec<&str> = all.methods.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["dpmpp", "lcm", "ddpm"]);
        assert_eq!(all.seeds, [42, 43, 44, 45]);
        let lcm = Sweep::from_config(&cfg, Some("lcm")).unwrap();
        assert_eq!(lcm.methods[0].steps, [1, 2, 3, 4, 6, 8]);
        assert_eq!(lcm.methods[0].unet, "lcm");
        let err = Sweep::from_config(&cfg, Some("euler"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no sweep preset \"euler\""), "{err}");
        assert!(err.contains("dpmpp, lcm, ddpm and all"), "{err}");
        assert!(err.contains("Fix:"), "{err}");
    }

    #[test]
    fn lora_weight_ranges_are_inclusive_rounded_and_split_at_the_last_equals() {
        let a = parse_lora_weights("style=0:1.5:0.25").unwrap();
        assert_eq!(a.adapter, "style");
        assert_eq!(a.weights, [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5]);
        // 0.3 steps: no 0.30000001, and 1.0 is not reached.
        let a = parse_lora_weights("style=0:1:0.3").unwrap();
        assert_eq!(a.weights, [0.0, 0.3, 0.6, 0.9]);
        let a = parse_lora_weights("dir/a=b.safetensors=-1:1:1").unwrap();
        assert_eq!(a.adapter, "dir/a=b.safetensors");
        assert_eq!(a.name(), "a=b");
        assert_eq!(a.weights, [-1.0, 0.0, 1.0]);
        assert_eq!(
            parse_lora_weights("style=0.6:0.6:1").unwrap().weights,
            [0.6]
        );
        assert_eq!(parse_lora_weights("s=0:4.9:0.1").unwrap().weights.len(), 50);
        let e = parse_lora_weights("s=0:5:0.1").unwrap_err().to_string();
        assert!(
            e.contains("51 weights are more than 50") && e.contains("Fix:"),
            "{e}"
        );
    }

    fn style(weight: f32) -> AdapterWeight {
        AdapterWeight {
            adapter: "style".into(),
            weight,
        }
    }

    /// LCM-LoRA at 4 steps, 2 seeds, `detail` at 0.5 on every run (--lora), style at 0, 0.5, 1.
    fn weight_sweep() -> Sweep {
        let cfg = SweepConfig {
            seeds: 2,
            ..SweepConfig::default()
        };
        let detail = AdapterWeight {
            adapter: "detail".into(),
            weight: 0.5,
        };
        Sweep::from_config(&cfg, Some("lcm"))
            .unwrap()
            .with_steps(&[4])
            .unwrap()
            .with_adapters(&[detail])
            .with_weights(parse_lora_weights("style=0:1:0.5").unwrap())
    }

    #[test]
    fn a_weight_sweep_plans_each_seeds_plain_and_style_alone_images_then_every_weight() {
        let plan = weight_sweep().plan();
        let w = |weight| Target::Weighted {
            method: 0,
            steps: 4,
            weight,
        };
        let got: Vec<(Target, usize)> =
            plan.runs.iter().map(|r| (r.target, r.seed_index)).collect();
        assert_eq!(
            got,
            [
                (Target::Plain, 0),
                (Target::Reference, 0),
                (Target::Plain, 1),
                (Target::Reference, 1),
                (w(0), 0),
                (w(0), 1),
                (w(1), 0),
                (w(1), 1),
                (w(2), 0),
                (w(2), 1),
            ]
        );
        let detail = plan.runs[0].spec.lora[0].clone();
        // The plain image: the reference settings without the swept adapter.
        assert_eq!(plan.runs[0].spec.lora, std::slice::from_ref(&detail));
        assert_eq!(
            (plan.runs[0].spec.steps, plan.runs[0].spec.unet.as_str()),
            (50, "base")
        );
        // The style-alone image: the same with the adapter at 1.
        assert_eq!(plan.runs[1].spec.lora, [detail.clone(), style(1.0)]);
        assert_eq!(plan.runs[7].spec.lora, [detail, style(0.5)]);
        assert_eq!(
            (plan.runs[7].spec.unet.as_str(), plan.runs[7].spec.steps),
            ("lcm", 4)
        );
        assert_eq!(plan.runs[7].spec.label, "LCM-LoRA 4 + style×0.5 · seed 43");
        assert_eq!(
            plan.request(7, crate::rng::RngSource::TorchCpu).loras.len(),
            2
        );
        assert_eq!((plan.reference_for(7), plan.plain_for(7)), (3, Some(2)));
        assert_eq!(plan.plain_for(2), None, "the plain image is its own");
        assert_eq!(
            plan.plain_for(1),
            Some(0),
            "the style-alone one is compared too"
        );
        assert_eq!(plan.exercise().title, "Composability as a curve");
        // A step sweep has no plain images and no weight curves.
        let steps = small_sweep(1).plan();
        assert_eq!(steps.plain_for(1), None);
        assert_eq!(steps.weight_curves(&[]), None);
    }

    #[test]
    fn weight_curves_take_the_median_time_and_both_ssims_over_the_seeds() {
        let plan = weight_sweep().plan();
        let q = |ssim: f64| Quality {
            psnr_db: Some(20.0),
            ssim,
            mean_abs_diff: 0.0,
        };
        let m: Vec<Option<Measured>> = plan
            .runs
            .iter()
            .map(|r| match r.target {
                Target::Plain => None,
                Target::Reference => Some(Measured {
                    total_ms: 500.0,
                    quality: IDENTICAL,
                    clip_score: None,
                    plain: Some(q(0.4 + 0.1 * r.seed_index as f64)),
                    adherence: None,
                    judge: None,
                }),
                Target::Weighted { weight: 2, .. } if r.seed_index == 1 => None,
                Target::Weighted { weight, .. } => Some(Measured {
                    total_ms: 100.0 + 10.0 * r.seed_index as f64,
                    quality: q(0.5 + 0.2 * weight as f64 + 0.1 * r.seed_index as f64),
                    clip_score: None,
                    plain: Some(q(0.9 - 0.2 * weight as f64)),
                    adherence: None,
                    judge: None,
                }),
                Target::Point { .. } => unreachable!("a weight sweep has no step points"),
            })
            .collect();
        let c = plan.weight_curves(&m).unwrap();
        assert_eq!(c.series.len(), 1);
        let s = &c.series[0];
        assert_eq!(s.label(), "LCM-LoRA 4");
        let ws: Vec<f32> = s.points.iter().map(|p| p.weight).collect();
        assert_eq!(ws, [0.0, 0.5, 1.0]);
        let p = &s.points[1];
        assert_eq!(
            (p.time_ms, p.time_min_ms, p.time_max_ms),
            (105.0, 100.0, 110.0)
        );
        assert!((p.ssim_style.mean - 0.75).abs() < 1e-12);
        assert!((p.ssim_plain.unwrap().mean - 0.7).abs() < 1e-12);
        assert!(p.complete());
        let last = &s.points[2];
        assert_eq!((last.runs, last.planned, last.complete()), (1, 2, false));
        assert!((c.ends.unwrap().mean - 0.45).abs() < 1e-12);
        assert_eq!(c.reference.unwrap().time_ms, 500.0);
        assert_eq!(c.plain, None, "no plain run measured");
    }

    #[test]
    fn command_line_step_and_reference_lists_are_checked() {
        assert_eq!(parse_steps("5, 10,20").unwrap(), [5, 10, 20]);
        let e = parse_steps("5,ten").unwrap_err().to_string();
        assert!(
            e.contains("\"ten\" is not a step count") && e.contains("Fix:"),
            "{e}"
        );
        let e = small_sweep(1).with_steps(&[0]).unwrap_err().to_string();
        assert!(e.contains("at least 1"), "{e}");
        let r = parse_reference("ddpm:100:5@style").unwrap();
        assert_eq!(
            (r.scheduler, r.steps, r.cfg, r.unet.as_str()),
            (SchedulerKind::Ddpm, 100, 5.0, "style")
        );
        assert_eq!(r.label(), "DDPM 100 @style");
        assert_eq!(
            parse_reference("dpmpp:50").unwrap().label(),
            "DPM-Solver++ 50"
        );
        let e = parse_reference("dpmpp").unwrap_err().to_string();
        assert!(e.contains("no step count") && e.contains("Fix:"), "{e}");
    }

    #[test]
    fn the_committed_config_toml_states_the_built_in_sweep() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml");
        let cfg = crate::config::Config::parse(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(cfg.sweep.methods(), default_methods());
        let without_methods = SweepConfig {
            methods: None,
            ..cfg.sweep.clone()
        };
        assert_eq!(without_methods, SweepConfig::default());
    }

    #[test]
    fn a_runs_control_is_its_methods_else_the_sweeps_and_the_command_line_replaces_both() {
        let cfg: SweepConfig =
            toml::from_str(r#"control = { image = "all.png", controlnet = "edge" }"#).unwrap();
        let mut cfg = SweepConfig {
            methods: Some(vec![Method {
                control: Some(ControlSpec {
                    controlnet: Some("edge".into()),
                    image: "lcm.png".into(),
                    scale: 0.5,
                    preprocess: Default::default(),
                }),
                ..default_methods().remove(1)
            }]),
            ..cfg
        };
        let image = |c: &Option<ControlSpec>| c.as_ref().map(|c| c.image.display().to_string());
        let sweep = Sweep::from_config(&cfg, None).unwrap();
        assert_eq!(image(&sweep.reference.control).as_deref(), Some("all.png"));
        let by_name = |name: &str| sweep.methods.iter().find(|m| m.name == name).unwrap();
        assert_eq!(image(&by_name("lcm").control).as_deref(), Some("lcm.png"));
        assert_eq!(image(&by_name("dpmpp").control).as_deref(), Some("all.png"));
        // Every planned run carries its control to its request.
        let plan = sweep.plan();
        let req = plan.request(plan.runs.len() - 1, crate::rng::RngSource::TorchCpu);
        assert_eq!(
            req.control.unwrap().image,
            std::path::PathBuf::from("all.png")
        );
        let cli = ControlSpec {
            controlnet: Some("pose".into()),
            image: "cli.png".into(),
            scale: 2.0,
            preprocess: Default::default(),
        };
        let sweep = sweep.with_control(&cli);
        assert!(
            sweep
                .methods
                .iter()
                .all(|m| m.control.as_ref() == Some(&cli))
                && sweep.reference.control.as_ref() == Some(&cli)
        );
        // A scale out of range is refused, naming where it is set.
        cfg.control.as_mut().unwrap().scale = -1.0;
        let e = cfg.validate().unwrap_err().to_string();
        assert!(
            e.starts_with("[sweep] control: the control scale -1 is not a number from 0 to 10"),
            "{e}"
        );
        assert!(e.contains("\nFix: "), "{e}");
    }

    #[test]
    fn config_methods_replace_defaults_by_name_and_bad_values_are_refused() {
        let mut cfg = SweepConfig {
            methods: Some(vec![Method {
                name: "lcm".into(),
                label: "LCM-LoRA".into(),
                scheduler: SchedulerKind::Lcm,
                unet: "lcm".into(),
                cfg: 1.0,
                steps: vec![2, 4],
                control: None,
            }]),
            ..SweepConfig::default()
        };
        let m = cfg.methods();
        assert_eq!(m.len(), 3);
        assert_eq!(m[1].steps, [2, 4]);
        cfg.seeds = 0;
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("seeds = 0")
        );
        cfg.seeds = 2;
        cfg.tolerance = 1.5;
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("tolerance = 1.5")
        );
        cfg.tolerance = 0.02;
        cfg.methods.as_mut().unwrap()[0].steps.clear();
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("has no steps")
        );
    }
}
