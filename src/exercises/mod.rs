//! The course's exercises as data: each one a prompt, a seed and a list of runs (config.toml's
//! `[[exercises]]` may replace or extend the defaults), with our own text: what it shows, the
//! questions to answer before running (a number the user may type), and a note after the runs
//! that reads the actual measurements.

pub mod cheatsheet;
pub mod headless;

use color_eyre::eyre::bail;
use serde::{Deserialize, Serialize};

use crate::error::Fixable;
use crate::lora::{AdapterWeight, unknown_adapter};
use crate::models::{ModelKind, ModelPrompts, ONE_STEP_LABEL};
use crate::pipeline::Request;
use crate::report::table::{RowState, RunSettings, TableRow, speedup};
use crate::rng::RngSource;
use crate::schedulers::{SchedulerKind, SchedulerOptions};

/// One run of an exercise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// What the table and the image panel call it ("DPM-Solver++ 20").
    pub label: String,
    pub scheduler: SchedulerKind,
    pub steps: usize,
    /// Classifier-free guidance scale.
    pub cfg: f32,
    /// UNet variant name (`base`, `lcm`, `style`, `lcm_style`).
    #[serde(default = "base_unet")]
    pub unet: String,
    /// Overrides the exercise's prompt / seed for this run.
    #[serde(default)]
    pub prompt: Option<String>,
    #[serde(default)]
    pub seed: Option<u64>,
    /// LoRA adapters fused at run time on top of `unet`, with their weights, in the order
    /// written: `lora = { lcm = 1.0, style = 0.6 }` (an adapter of the model folder's `loras/`
    /// by name, or a `.safetensors` file).
    #[serde(default, with = "lora_table", skip_serializing_if = "Vec::is_empty")]
    pub lora: Vec<AdapterWeight>,
    /// A ControlNet conditioning the run on a control image:
    /// `control = { image = "edges.png", preprocess = "canny", scale = 1.0, controlnet = "canny" }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<ControlSpec>,
}

fn base_unet() -> String {
    "base".into()
}

/// A run's ControlNet as config.toml and the command line give it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlSpec {
    /// The ControlNet (`controlnet_<NAME>/` in the model folder); absent: the folder's only one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controlnet: Option<String>,
    /// The control image, PNG or JPEG (in config.toml, relative to its folder).
    pub image: std::path::PathBuf,
    /// diffusers' `controlnet_conditioning_scale`, 0 to 10 (default 1).
    #[serde(default = "default_control_scale")]
    pub scale: f32,
    /// `none` (the image is the condition, an edge map say) or `canny` (its Canny edges).
    #[serde(default)]
    pub preprocess: crate::pipeline::control::ControlPreprocess,
}

fn default_control_scale() -> f32 {
    1.0
}

impl ControlSpec {
    /// The pipeline's control for a run.
    pub fn to_control(&self) -> crate::pipeline::control::Control {
        crate::pipeline::control::Control {
            name: self.controlnet.clone(),
            image: self.image.clone(),
            preprocess: self.preprocess,
            scale: self.scale,
        }
    }
}

/// `lora = { lcm = 1.0, style = 0.6 }` in config.toml: a run's adapters in the order written.
/// Each weight is checked as it is read ([`AdapterWeight::check`]), so a bad one is a config
/// error with its line and column, like a misspelt key.
mod lora_table {
    use std::fmt;

    use serde::de::{DeserializeSeed, Deserializer, Error, MapAccess, Visitor};
    use serde::ser::{SerializeMap, Serializer};

    use crate::lora::AdapterWeight;

    pub fn serialize<S: Serializer>(loras: &[AdapterWeight], s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(loras.len()))?;
        for a in loras {
            map.serialize_entry(&a.adapter, &a.weight)?;
        }
        map.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<AdapterWeight>, D::Error> {
        d.deserialize_map(Table)
    }

    struct Table;

    impl<'de> Visitor<'de> for Table {
        type Value = Vec<AdapterWeight>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a table of adapter weights, e.g. lora = { lcm = 1.0, style = 0.6 }")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(adapter) = map.next_key::<String>()? {
                if adapter.trim().is_empty() {
                    return Err(A::Error::custom(
                        "a LoRA adapter needs a name (an adapter of the model folder's loras/, or a .safetensors file)",
                    ));
                }
                out.push(map.next_value_seed(Weight(adapter))?);
            }
            Ok(out)
        }
    }

    /// One adapter's weight, read and checked where it is written (the error points at it).
    struct Weight(String);

    impl<'de> DeserializeSeed<'de> for Weight {
        type Value = AdapterWeight;

        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<AdapterWeight, D::Error> {
            let weight = <f32 as serde::Deserialize>::deserialize(d)?;
            let a = AdapterWeight {
                adapter: self.0,
                weight,
            };
            a.check().map_err(|e| {
                // The cause and its advice; the config error adds where to correct it.
                let parts = crate::error::parts(&e);
                D::Error::custom(format!(
                    "{} ({})",
                    parts.causes.join(": "),
                    parts.fixes.join("; ")
                ))
            })?;
            Ok(a)
        }
    }
}

/// `own` with `over` on top: each adapter of `over` replaces the one of the same name in `own`
/// (its weight wins, in its place) or is added after them. The command line's `--lora` is
/// applied to every run's own adapters this way.
pub fn with_adapters(own: &[AdapterWeight], over: &[AdapterWeight]) -> Vec<AdapterWeight> {
    let mut out = own.to_vec();
    for a in over {
        match out.iter_mut().find(|o| o.adapter == a.adapter) {
            Some(o) => o.weight = a.weight,
            None => out.push(a.clone()),
        }
    }
    out
}

/// A quantity a question asks the user to predict, measured after the runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Measure {
    /// Total time of run `over` ÷ total time of run `run` (indices into `runs`, 0-based):
    /// "how many times faster is run 2 than run 1?"
    Speedup { run: usize, over: usize },
    /// UNet time per step of run `run` ÷ that of run `over`.
    StepCostRatio { run: usize, over: usize },
    /// Control adherence (edge F1) of run `over` minus that of run `run`, both under a
    /// ControlNet: "how much of the control does run lose against over?" (a difference, not a
    /// ratio; negative when `run` follows the control better).
    AdherenceGap { run: usize, over: usize },
}

/// A "predict before you run" question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Question {
    pub text: String,
    pub measure: Measure,
}

/// One exercise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exercise {
    /// 1-based; the key that jumps to it.
    pub number: usize,
    pub title: String,
    /// What it shows, a few sentences.
    pub about: String,
    pub prompt: String,
    /// Prompts by model kind (`micro`, `tiny`, `sd15`) that replace `prompt` on a model of that
    /// kind: the micro model knows only its small world's words.
    #[serde(default, skip_serializing_if = "ModelPrompts::is_empty")]
    pub prompts: ModelPrompts,
    #[serde(default)]
    pub negative_prompt: String,
    /// The same seed for every run, so differences come from the method alone.
    #[serde(default = "default_seed")]
    pub seed: u64,
    pub runs: Vec<RunSpec>,
    /// Index into `runs` of the row speedups are measured against.
    #[serde(default)]
    pub baseline: usize,
    #[serde(default)]
    pub questions: Vec<Question>,
    /// Whether a model with a one-step UNet adds its run ([`Exercise::with_one_step`]):
    /// exercise 2's "one-step (turbo)"; never set from config.toml.
    #[serde(skip)]
    pub one_step_run: bool,
}

fn default_seed() -> u64 {
    42
}

impl Measure {
    /// The measured value from the exercise's rows (same order as its runs) and, for an
    /// adherence question, each run's control adherence ([`adherences`]); `None` until both
    /// runs it compares have finished (and, for adherence, were measured).
    pub fn value(&self, rows: &[TableRow], adherence: &[Option<f64>]) -> Option<f64> {
        let finished = |i: usize| rows.get(i).filter(|r| r.state == RowState::Finished);
        type Field = fn(&TableRow) -> Option<f64>;
        let (run, over, field): (usize, usize, Field) = match *self {
            // over's time ÷ run's time: "how many times faster is run than over".
            Measure::Speedup { run, over } => (over, run, |r| r.total_ms),
            Measure::StepCostRatio { run, over } => (run, over, |r| r.unet_ms_per_step),
            Measure::AdherenceGap { run, over } => {
                finished(run)?;
                finished(over)?;
                let f1 = |i: usize| adherence.get(i).copied().flatten();
                return Some(f1(over)? - f1(run)?);
            }
        };
        let num = field(finished(run)?)?;
        let den = field(finished(over)?)?;
        match self {
            // A speedup as every table has it: none against a zero time.
            Measure::Speedup { .. } => speedup(num, den),
            _ => (den > 0.0 && num.is_finite()).then(|| num / den),
        }
    }

    /// The run indices it reads.
    fn runs(&self) -> [usize; 2] {
        match *self {
            Measure::Speedup { run, over }
            | Measure::StepCostRatio { run, over }
            | Measure::AdherenceGap { run, over } => [run, over],
        }
    }

    /// A ratio (speedup, step cost: a positive number, shown `2.5×`) rather than a difference
    /// (an adherence gap: any sign, shown `0.04`).
    pub fn is_ratio(&self) -> bool {
        !matches!(self, Measure::AdherenceGap { .. })
    }

    /// A value of this measure as the questions show it: `2.38×`, or `0.04` for a gap.
    pub fn format(&self, v: f64) -> String {
        if self.is_ratio() {
            times(v)
        } else {
            format!("{v:.2}")
        }
    }

    /// Prediction against measurement in one line ([`judge`] for a ratio; for a gap, how far
    /// off in F1: "you said 0.10, measured 0.04 — 0.06 too high").
    pub fn judge(&self, prediction: f64, measured: f64) -> String {
        if self.is_ratio() {
            return judge(prediction, measured);
        }
        if !prediction.is_finite() || !measured.is_finite() {
            return format!(
                "you said {}, no measurement to compare with",
                self.format(prediction)
            );
        }
        let off = prediction - measured;
        let verdict = if off.abs() <= 0.02 {
            "within 0.02".to_string()
        } else {
            format!("{:.2} {}", off.abs(), high_low(off))
        };
        format!(
            "you said {}, measured {} — {verdict}",
            self.format(prediction),
            self.format(measured)
        )
    }
}

/// Each run's control adherence (edge F1) from its report, in the order of the runs: `None`
/// for a run without a report, without control, or whose adherence was not measured (NaN).
pub fn adherences(reports: &[Option<&crate::pipeline::RunReport>]) -> Vec<Option<f64>> {
    reports
        .iter()
        .map(|r| {
            r.and_then(|r| r.control.as_ref())
                .map(|c| c.adherence)
                .filter(|f| f.is_finite())
        })
        .collect()
}

/// How far below the baseline's edge F1 a run under the same ControlNet may fall and still
/// count as keeping the control: the bar for "LCM-LoRA composes with ControlNet".
pub const ADHERENCE_GAP: f64 = 0.1;

/// speedscape's own control images (`assets/controls/`, drawn by its `make_controls.py`), each
/// as (SD v1.5's, the micro model's): exercise 5's and the cheat sheet's scenario B's.
pub const CONTROL_IMAGES: [(&str, &str); 2] = [
    (
        "assets/controls/sd15-cottage.png",
        "assets/controls/micro-star.png",
    ),
    (
        "assets/controls/sd15-knight.png",
        "assets/controls/micro-triangle.png",
    ),
];

/// The control image `image` on a model of `kind`: a built-in one ([`CONTROL_IMAGES`]) becomes
/// the one drawn for the micro model on the micro model; any other stays.
pub fn control_image_for(image: &str, kind: ModelKind) -> String {
    match CONTROL_IMAGES.iter().find(|(sd15, _)| *sd15 == image) {
        Some((_, micro)) if kind == ModelKind::Micro => micro.to_string(),
        _ => image.to_string(),
    }
}

/// The ControlNet a run naming none uses when the model folder has several: `canny` or `edge`
/// (what the built-in control images are made for), else the first; `None` for none.
pub fn pick_controlnet(names: &[String]) -> Option<&str> {
    names
        .iter()
        .find(|n| *n == "canny" || *n == "edge")
        .or(names.first())
        .map(String::as_str)
}

impl Exercise {
    /// This exercise as it runs on a model of `kind`: with its prompt for that kind, where it
    /// has one.
    /// A run's own prompt that extends the exercise's (the style trigger appended) extends the
    /// kind's prompt the same way; a built-in control image ([`CONTROL_IMAGES`]) becomes the
    /// one drawn for the micro model on the micro model.
    pub fn for_model(mut self, kind: ModelKind) -> Self {
        if let Some(p) = self.prompts.get(&kind) {
            for r in &mut self.runs {
                if let Some(own) = &r.prompt
                    && let Some(tail) = own.strip_prefix(self.prompt.as_str())
                {
                    r.prompt = Some(format!("{p}{tail}"));
                }
            }
            self.prompt = p.clone();
        }
        for c in self.runs.iter_mut().filter_map(|r| r.control.as_mut()) {
            if let Some(image) = c.image.to_str() {
                c.image = control_image_for(image, kind).into();
            }
        }
        self
    }

    /// This exercise on a model whose one-step UNet is `variant` (see
    /// [`crate::models::folder_one_step`]): an exercise that asks for it ([`Exercise::one_step_run`],
    /// exercise 2) gains the run "one-step (turbo) 1" (Euler at SD-Turbo's trailing spacing from
    /// the variant's own scheduler config, no guidance) and a question on its speedup over the
    /// baseline. Nothing changes without one.
    pub fn with_one_step(mut self, variant: Option<&str>) -> Self {
        let Some(unet) = variant.filter(|_| self.one_step_run) else {
            return self;
        };
        if self.runs.iter().any(|r| r.unet == unet) {
            return self;
        }
        self.runs.push(run(
            &format!("{ONE_STEP_LABEL} 1"),
            SchedulerKind::Euler,
            1,
            0.0,
            unet,
        ));
        let (run, over) = (self.runs.len() - 1, self.baseline);
        self.questions.push(Question {
            text: format!(
                "How many times faster will the one-step model (1 step, no guidance) be than {}?",
                self.runs[over].label
            ),
            measure: Measure::Speedup { run, over },
        });
        self
    }

    /// Whether a run of it runs under a ControlNet.
    pub fn has_control(&self) -> bool {
        self.runs.iter().any(|r| r.control.is_some())
    }

    /// Checks its runs' ControlNets against the model folder `root`, which has `controlnets`
    /// (by name), before any run: a folder without one is one error for the whole exercise
    /// (cause and fix: export one), not a failure per run; a run naming none gets
    /// [`pick_controlnet`]'s; a name the folder lacks is core's error listing what it has.
    pub fn fit_controls(
        &mut self,
        root: &std::path::Path,
        controlnets: &[String],
    ) -> color_eyre::Result<()> {
        if !self.has_control() {
            return Ok(());
        }
        let name = self.name();
        let Some(default) = pick_controlnet(controlnets) else {
            bail!(Fixable::new(
                format!(
                    "{name} runs under a ControlNet, and the model folder {} has none",
                    root.display()
                ),
                "export one into it: models/export.py --controlnet NAME=SOURCE (e.g. \
                 canny=lllyasviel/control_v11p_sd15_canny; the micro model's is edge), or pick another exercise",
            ));
        };
        for r in &mut self.runs {
            let Some(c) = &mut r.control else { continue };
            match &c.controlnet {
                None => c.controlnet = Some(default.to_string()),
                Some(n) if !controlnets.contains(n) => {
                    bail!(
                        crate::models::unknown_controlnet(root, n)
                            .prefixed(format!("{name}: run {:?}: ", r.label))
                    );
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// How errors name it: `exercise 2 ("DPM-Solver++ vs LCM-LoRA")`; number 0, which is not
    /// one of the course's (the speed landscape's sweep), by its title alone.
    pub fn name(&self) -> String {
        if self.number == 0 {
            self.title.to_lowercase()
        } else {
            format!("exercise {} ({:?})", self.number, self.title)
        }
    }

    /// Checks what config.toml may get wrong; the error names the exercise and the fix.
    pub fn validate(&self) -> color_eyre::Result<()> {
        let name = format!("exercise {} ({:?})", self.number, self.title);
        let n = self.runs.len();
        if self.number == 0 {
            bail!(Fixable::new(
                format!("{name}: number 0 is not allowed"),
                "number exercises from 1 (1–3 and 5 replace the defaults)",
            ));
        }
        if n == 0 {
            bail!(Fixable::new(
                format!("{name} has no runs"),
                "add at least one run, e.g. runs = [{ label = \"DDPM 50\", scheduler = \"ddpm\", steps = 50, cfg = 7.5 }]",
            ));
        }
        if self.baseline >= n {
            bail!(Fixable::new(
                format!(
                    "{name}: baseline = {} but its runs are numbered 0–{}",
                    self.baseline,
                    n - 1
                ),
                "set baseline to the 0-based index of the run speedups are measured against",
            ));
        }
        for (i, q) in self.questions.iter().enumerate() {
            if let Some(bad) = q.measure.runs().into_iter().find(|&r| r >= n) {
                bail!(Fixable::new(
                    format!(
                        "{name}: question {} refers to run {bad}, but the runs are numbered 0–{}",
                        i + 1,
                        n - 1
                    ),
                    "use 0-based indices into this exercise's runs",
                ));
            }
        }
        for r in &self.runs {
            if r.steps == 0 {
                bail!(Fixable::new(
                    format!("{name}: run {:?} has steps = 0", r.label),
                    "give every run at least 1 step",
                ));
            }
            if let Some(e) = crate::pipeline::limits::guidance_error(r.cfg) {
                bail!(e.prefixed(format!("{name}: run {:?} has cfg = {}: ", r.label, r.cfg)));
            }
            crate::lora::check_set(&r.lora)
                .map_err(|e| crate::error::prefixed(format!("{name}: run {:?}: ", r.label), e))?;
        }
        Ok(())
    }

    /// Checks every run against the model before any runs: its UNet variant exists (by name or
    /// folder, as [`crate::models::Model::variant`] finds it), each LoRA adapter is one of the
    /// folder's (`adapters`, by name) or a file that exists, and its scheduler accepts its
    /// steps with the model's scheduler config. The error names the exercise, the run and the
    /// fix.
    pub fn preflight(
        &self,
        variants: &[crate::models::Variant],
        adapters: &[String],
        scheduler_config: &crate::schedulers::SchedulerConfig,
    ) -> color_eyre::Result<()> {
        let name = self.name();
        for r in &self.runs {
            if let Some(e) = unknown_adapter(&r.lora, adapters) {
                bail!(e.prefixed(format!("{name}: run {:?}: ", r.label)));
            }
            if !variants
                .iter()
                .any(|v| v.name == r.unet || v.folder == r.unet)
            {
                let known: Vec<&str> = variants.iter().map(|v| v.name.as_str()).collect();
                // The sweep's runs come from [sweep] (or --reference), not [[exercises]].
                let table = if self.number == 0 {
                    "[sweep] (its reference or [[sweep.methods]])"
                } else {
                    "[[exercises]]"
                };
                bail!(Fixable::new(
                    format!(
                        "{name}: run {:?} names UNet variant {:?}, which this model does not have; \
                         known: {}",
                        r.label,
                        r.unet,
                        known.join(", ")
                    ),
                    format!(
                        "set that run's unet to one of those in config.toml's {table}, or add a \
                         [[model.variants]] entry for it"
                    ),
                ));
            }
            crate::schedulers::build(
                r.scheduler,
                scheduler_config,
                r.steps,
                &SchedulerOptions::default(),
            )
            .map_err(|e| crate::error::prefixed(format!("{name}: run {:?}: ", r.label), e))?;
        }
        Ok(())
    }

    /// The pipeline request of run `index` (the exercise's prompt and seed unless the run
    /// overrides them; the model's native size).
    pub fn request(&self, index: usize, rng: RngSource) -> Request {
        self.runs[index].request(&self.prompt, &self.negative_prompt, self.seed, rng)
    }

    /// The exercise with `over` (the command line's `--lora`) on top of every run's own
    /// adapters ([`with_adapters`]).
    pub fn with_adapters(mut self, over: &[AdapterWeight]) -> Self {
        for r in &mut self.runs {
            r.lora = with_adapters(&r.lora, over);
        }
        self
    }

    /// The exercise with `control` (the command line's `--controlnet`, `--control-image`, …)
    /// on every run: it replaces a run's own control whole (ControlNet, image, scale and
    /// preprocessing), since the command line always names an image.
    pub fn with_control(mut self, control: &ControlSpec) -> Self {
        for r in &mut self.runs {
            r.control = Some(control.clone());
        }
        self
    }
}

/// The weight UNet variant `unet` has adapter `name` fused at (0 if it has not).
fn fused_weight(fused: &[(String, Vec<AdapterWeight>)], unet: &str, name: &str) -> f32 {
    fused
        .iter()
        .find(|(v, _)| v == unet)
        .and_then(|(_, set)| set.iter().find(|a| a.adapter == name))
        .map_or(0.0, |a| a.weight)
}

impl RunSpec {
    /// A pending table row for this run, which its events then fill in
    /// ([`TableRow::apply`]).
    pub fn table_row(&self, is_baseline: bool) -> TableRow {
        TableRow::new(
            RunSettings {
                label: self.label.clone(),
                scheduler: self.scheduler.to_string(),
                steps: self.steps,
                cfg: self.cfg,
                unet: self.unet.clone(),
                loras: self.lora.clone(),
            },
            is_baseline,
        )
    }

    /// The UNet this run asks for, as tables write it: `lcm`, `base + style×0.6`.
    pub fn unet_label(&self) -> String {
        crate::report::table::unet_label(&self.unet, &self.lora)
    }

    /// The weight adapter `name` has in this run: the weight its UNet variant has it fused at
    /// (`fused`: each variant's fused adapters, from the manifest) plus its run-time weight —
    /// fusing is linear in the weight, so the two add up.
    pub fn adapter_weight(&self, name: &str, fused: &[(String, Vec<AdapterWeight>)]) -> f32 {
        let runtime = self.lora.iter().find(|a| a.adapter == name);
        fused_weight(fused, &self.unet, name) + runtime.map_or(0.0, |a| a.weight)
    }

    /// This run with adapter `name` at `weight` in effect (see [`RunSpec::adapter_weight`]):
    /// a UNet variant that has `name` fused gives way to the variant with the same adapters
    /// but that one (`style` → `base`, `lcm_style` → `lcm`), where the model has one, so the
    /// weight is all run-time; otherwise the run-time weight is what the fused one lacks.
    pub fn set_adapter_weight(
        &mut self,
        name: &str,
        weight: f32,
        fused: &[(String, Vec<AdapterWeight>)],
    ) {
        let own = fused
            .iter()
            .find(|(v, _)| *v == self.unet)
            .map(|(_, set)| set.as_slice())
            .unwrap_or_default();
        if own.iter().any(|a| a.adapter == name) {
            let without: Vec<&AdapterWeight> = own.iter().filter(|a| a.adapter != name).collect();
            let lighter = fused.iter().find(|(_, set)| {
                set.len() == without.len() && without.iter().all(|a| set.contains(a))
            });
            if let Some((variant, _)) = lighter {
                self.unet = variant.clone();
            }
        }
        let runtime = weight - fused_weight(fused, &self.unet, name);
        self.lora = with_adapters(
            &self.lora,
            &[AdapterWeight {
                adapter: name.to_string(),
                weight: (runtime * 1000.0).round() / 1000.0,
            }],
        );
    }

    /// This run's pipeline request, with `prompt` and `seed` where the run does not set its own
    /// (the model's native size, no CLIP score).
    pub fn request(
        &self,
        prompt: &str,
        negative_prompt: &str,
        seed: u64,
        rng: RngSource,
    ) -> Request {
        Request {
            prompt: self.prompt.clone().unwrap_or_else(|| prompt.to_string()),
            negative_prompt: negative_prompt.to_string(),
            scheduler: self.scheduler,
            scheduler_options: SchedulerOptions::default(),
            steps: self.steps,
            guidance: self.cfg,
            seed: self.seed.unwrap_or(seed),
            rng,
            unet: self.unet.clone(),
            loras: self.lora.clone(),
            width: None,
            height: None,
            latents: None,
            clip_score: false,
            judge: false,
            control: self.control.as_ref().map(ControlSpec::to_control),
        }
    }
}

pub(crate) const COTTAGE: &str =
    "a small cottage on a hillside at sunset, warm golden light, detailed";
const LIGHTHOUSE: &str = "a lighthouse on a rocky coast during a storm, waves crashing, PixArFK";
/// The micro model's prompts: its world has coloured shapes, not cottages.
pub(crate) const MICRO_STAR: &str = "a large yellow star on a blue background at sunset";
const MICRO_STAR_STYLE: &str = "a large yellow star on a blue background at sunset, PixArFK";
/// Exercise 5's on the micro model: the control image, not the prompt, places the star.
const MICRO_STAR_PLAIN: &str = "a large yellow star on a blue background";
/// The style LoRA's trigger word, appended to a prompt the style run extends.
const STYLE_TRIGGER: &str = ", PixArFK";

/// `run` under the ControlNet on the built-in control image `image` (one of
/// [`CONTROL_IMAGES`]), its Canny edges at scale 1.
pub(crate) fn controlled(mut run: RunSpec, image: &str) -> RunSpec {
    run.control = Some(ControlSpec {
        controlnet: None,
        image: image.into(),
        scale: 1.0,
        preprocess: crate::pipeline::control::ControlPreprocess::Canny,
    });
    run
}

/// Exercise 5: the course's composability claim under a ControlNet.
fn controlnet_exercise() -> Exercise {
    use SchedulerKind::{DpmSolverPp, Lcm};
    let image = CONTROL_IMAGES[0].0;
    let mut style = run("LCM + style 4", Lcm, 4, 1.5, "lcm_style");
    style.prompt = Some(format!("{COTTAGE}{STYLE_TRIGGER}"));
    Exercise {
        number: 5,
        title: "ControlNet composability".into(),
        about: "A ControlNet steers the UNet with an edge map: its residuals go into the UNet's \
                blocks every step, whatever the sampler. Does LCM-LoRA keep the control at 8 and 4 \
                steps, and the style LoRA on top of it? Adherence is the edge F1 of each image's \
                Canny edges against the control's (1 = every edge in place); the first panel is \
                the control image."
            .into(),
        prompt: COTTAGE.into(),
        prompts: micro(MICRO_STAR_PLAIN),
        negative_prompt: String::new(),
        seed: 42,
        runs: vec![
            controlled(run("DPM-Solver++ 20", DpmSolverPp, 20, 7.5, "base"), image),
            controlled(run("LCM-LoRA 8", Lcm, 8, 1.5, "lcm"), image),
            controlled(run("LCM-LoRA 4", Lcm, 4, 1.5, "lcm"), image),
            controlled(style, image),
        ],
        baseline: 0,
        questions: vec![
            Question {
                text: "How many times faster will LCM-LoRA 4 + ControlNet be than DPM-Solver++ 20 + ControlNet?"
                    .into(),
                measure: Measure::Speedup { run: 2, over: 0 },
            },
            Question {
                text: "How much edge F1 will LCM-LoRA 4 lose against DPM-Solver++ 20, both under the \
                       ControlNet? (F1 of DPM-Solver++ 20 minus LCM-LoRA 4's)"
                    .into(),
                measure: Measure::AdherenceGap { run: 2, over: 0 },
            },
            Question {
                text: "And LCM + style 4, the style LoRA on top?".into(),
                measure: Measure::AdherenceGap { run: 3, over: 0 },
            },
        ],
        one_step_run: false,
    }
}

/// `prompt` on the micro model.
pub(crate) fn micro(prompt: &str) -> ModelPrompts {
    ModelPrompts::from([(ModelKind::Micro, prompt.to_string())])
}

pub(crate) fn run(
    label: &str,
    scheduler: SchedulerKind,
    steps: usize,
    cfg: f32,
    unet: &str,
) -> RunSpec {
    RunSpec {
        label: label.into(),
        scheduler,
        steps,
        cfg,
        unet: unet.into(),
        prompt: None,
        seed: None,
        lora: Vec::new(),
        control: None,
    }
}

/// Exercises 1–3 and 5 of the course (4, the decision cheat sheet, is built on 1–3).
pub fn default_exercises() -> Vec<Exercise> {
    use SchedulerKind::{DpmSolverPp, Lcm};
    vec![
        Exercise {
            number: 1,
            title: "The sampler swap".into(),
            about: "Same model, same seed, same prompt: only the sampler and its step count change. \
                    DDPM needs many small steps; DPM-Solver++ is a higher-order ODE solver that takes \
                    bigger ones. Time falls with the step count; watch where the image starts to drift \
                    from the 50-step baseline — that is where the \"free\" speedup ends."
                .into(),
            prompt: COTTAGE.into(),
            prompts: micro(MICRO_STAR),
            negative_prompt: String::new(),
            seed: 42,
            runs: vec![
                run("DDPM 50", SchedulerKind::Ddpm, 50, 7.5, "base"),
                run("DPM-Solver++ 20", DpmSolverPp, 20, 7.5, "base"),
                run("DPM-Solver++ 10", DpmSolverPp, 10, 7.5, "base"),
            ],
            baseline: 0,
            questions: vec![
                Question {
                    text: "How many times faster will DPM-Solver++ 20 be than DDPM 50?".into(),
                    measure: Measure::Speedup { run: 1, over: 0 },
                },
                Question {
                    text: "And DPM-Solver++ 10 than DDPM 50?".into(),
                    measure: Measure::Speedup { run: 2, over: 0 },
                },
            ],
            one_step_run: false,
        },
        Exercise {
            number: 2,
            title: "DPM-Solver++ vs LCM-LoRA".into(),
            about: "LCM-LoRA distils the model itself into a consistency model: a LoRA fused into the \
                    UNet lets the LCM scheduler jump to the image in 4–8 steps, at guidance 1.5 instead \
                    of 7.5. A step costs the same UNet call, so the speedup is the step ratio — the \
                    question is what the image pays for it."
                .into(),
            prompt: COTTAGE.into(),
            prompts: micro(MICRO_STAR),
            negative_prompt: String::new(),
            seed: 42,
            runs: vec![
                run("DPM-Solver++ 20", DpmSolverPp, 20, 7.5, "base"),
                run("LCM-LoRA 8", Lcm, 8, 1.5, "lcm"),
                run("LCM-LoRA 4", Lcm, 4, 1.5, "lcm"),
            ],
            one_step_run: true,
            baseline: 0,
            questions: vec![
                Question {
                    text: "How many times faster will LCM-LoRA 4 steps be than DPM-Solver++ 20?".into(),
                    measure: Measure::Speedup { run: 2, over: 0 },
                },
                Question {
                    text: "Will one LCM step cost more or less UNet time than one DPM-Solver++ step? \
                           (ratio, LCM ÷ DPM-Solver++)"
                        .into(),
                    measure: Measure::StepCostRatio { run: 1, over: 0 },
                },
            ],
        },
        Exercise {
            number: 3,
            title: "Composability".into(),
            about: "Acceleration that is a LoRA composes with other LoRAs: fuse the pixel-art style \
                    LoRA and LCM-LoRA into one UNet and keep both the style and the 4-step speed. The \
                    baseline is the style alone at 20 DPM-Solver++ steps."
                .into(),
            prompt: LIGHTHOUSE.into(),
            prompts: micro(MICRO_STAR_STYLE),
            negative_prompt: String::new(),
            seed: 42,
            runs: vec![
                run("style LoRA, DPM-Solver++ 20", DpmSolverPp, 20, 7.5, "style"),
                run("LCM-LoRA, LCM 4", Lcm, 4, 1.5, "lcm"),
                run("style + LCM-LoRA, LCM 4", Lcm, 4, 1.5, "lcm_style"),
            ],
            baseline: 0,
            questions: vec![Question {
                text: "How many times faster will style + LCM-LoRA (4 steps) be than the style alone at 20?"
                    .into(),
                measure: Measure::Speedup { run: 2, over: 0 },
            }],
            one_step_run: false,
        },
        controlnet_exercise(),
    ]
}

/// `2.5` → `2.5×`, `2.384` → `2.38×`, `4.0` → `4×`.
pub fn times(v: f64) -> String {
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}×")
}

fn ms(v: f64) -> String {
    crate::report::table::format_ms(v) + " ms"
}

/// Prediction against measurement, in one line: "you said 2.5×, measured 2.38× — within 5%".
pub fn judge(prediction: f64, measured: f64) -> String {
    if !prediction.is_finite() || !measured.is_finite() || measured <= 0.0 {
        return format!(
            "you said {}, no measurement to compare with",
            times(prediction)
        );
    }
    let head = format!(
        "you said {}, measured {}",
        times(prediction),
        times(measured)
    );
    let off = prediction / measured - 1.0;
    // Judged on the percentage as shown.
    let pct = (off.abs() * 100.0).round();
    let verdict = if pct <= 5.0 {
        "within 5%".to_string()
    } else if pct <= 20.0 {
        format!("close: {pct:.0}% {}", high_low(off))
    } else if prediction / measured >= 2.0 || measured / prediction >= 2.0 {
        let factor = (prediction / measured).max(measured / prediction);
        format!("off by {:.1}× ({})", factor, high_low(off))
    } else {
        format!("{:.0}% {}", off.abs() * 100.0, high_low(off))
    };
    format!("{head} — {verdict}")
}

fn high_low(off: f64) -> &'static str {
    if off > 0.0 { "too high" } else { "too low" }
}

/// Notes after the runs that read the actual numbers: speedups against the baseline, what a
/// UNet step cost, how much the fixed costs ate of the step ratio; for runs under a ControlNet,
/// whether each kept the control (`adherence`: each run's edge F1, [`adherences`]); then what
/// the model `kind` means for these numbers (the tiny model's weights are random, the micro
/// model's times tiny).
pub fn what_happened(
    ex: &Exercise,
    rows: &[TableRow],
    adherence: &[Option<f64>],
    kind: ModelKind,
) -> Vec<String> {
    let mut notes = Vec::new();
    let done = |r: &&TableRow| r.state == RowState::Finished && r.total_ms.is_some();
    let Some(base) = rows.get(ex.baseline).filter(done) else {
        let label = ex
            .runs
            .get(ex.baseline)
            .map_or("the baseline", |r| r.label.as_str());
        notes.push(format!(
            "{label} (the baseline) did not finish, so nothing can be compared with it."
        ));
        notes.extend(model_note(kind));
        return notes;
    };
    let base_total = base.total_ms.unwrap_or(0.0);
    for (i, r) in rows.iter().enumerate() {
        if i == ex.baseline {
            continue;
        }
        if !done(&r) {
            notes.push(format!(
                "{} did not finish ({}); no comparison for it.",
                r.label,
                match r.state {
                    RowState::Cancelled => "cancelled",
                    RowState::Failed => "failed",
                    _ => "not run",
                }
            ));
            continue;
        }
        let total = r.total_ms.unwrap_or(0.0);
        if total <= 0.0 || base_total <= 0.0 {
            continue;
        }
        let ratio = total / base_total;
        let speed = if ratio <= 1.0 {
            format!("{} faster", times(1.0 / ratio))
        } else {
            format!("{} slower", times(ratio))
        };
        notes.push(format!(
            "{} took {} the time of {} ({}: {} against {}).",
            r.label,
            times(ratio),
            base.label,
            speed,
            ms(total),
            ms(base_total)
        ));
        // What a step cost, and why it may differ.
        if let (Some(step), Some(base_step)) = (r.unet_ms_per_step, base.unet_ms_per_step)
            && base_step > 0.0
        {
            let c = step / base_step;
            let batch = |cfg: f32| if cfg > 1.0 { 2 } else { 1 };
            if (c - 1.0).abs() <= 0.10 {
                notes.push(format!(
                    "  A UNet step cost about the same ({} against {}): the time saved comes from taking fewer steps.",
                    ms(step),
                    ms(base_step)
                ));
            } else {
                let why = if batch(r.cfg) != batch(base.cfg) {
                    format!(
                        " — it runs the UNet at batch {} (cfg {}) instead of {} (cfg {})",
                        batch(r.cfg),
                        r.cfg,
                        batch(base.cfg),
                        base.cfg
                    )
                } else if r.unet != base.unet {
                    format!(" — a different UNet ({} against {})", r.unet, base.unet)
                } else {
                    String::new()
                };
                notes.push(format!(
                    "  A UNet step cost {} one of {} ({} against {}){why}.",
                    times(c),
                    base.label,
                    ms(step),
                    ms(base_step)
                ));
            }
        }
        // The step ratio against the measured speedup: where this run's time went.
        if r.steps_done > 0 && base.steps_done > 0 {
            let step_ratio = base.steps_done as f64 / r.steps_done as f64;
            let measured = base_total / total;
            if step_ratio > 1.0 && measured < step_ratio * 0.95 {
                let fixed = r.text_ms.unwrap_or(0.0) + r.vae_ms.unwrap_or(0.0);
                let unet = r.unet_ms.unwrap_or(0.0);
                let rest = (total - fixed - unet).max(0.0);
                notes.push(format!(
                    "  {} {} against {} predict {}, measured {}. Of this run's {}, the UNet took {}, text encoding + VAE decode {} ({:.0}%, the same at any step count), the scheduler and the rest {}.",
                    r.steps_done,
                    if r.steps_done == 1 { "step" } else { "steps" },
                    base.steps_done,
                    times(step_ratio),
                    times(measured),
                    ms(total),
                    ms(unet),
                    ms(fixed),
                    fixed / total * 100.0,
                    ms(rest)
                ));
            }
        }
    }
    notes.extend(control_notes(ex, rows, adherence));
    notes.extend(model_note(kind));
    notes
}

/// Whether each finished run under a ControlNet kept the control of the baseline (itself under
/// one): its edge F1 against the baseline's, within [`ADHERENCE_GAP`] or not. Nothing for an
/// exercise without control.
fn control_notes(ex: &Exercise, rows: &[TableRow], adherence: &[Option<f64>]) -> Vec<String> {
    let controlled = |i: usize| ex.runs.get(i).is_some_and(|r| r.control.is_some());
    let finished = |i: usize| rows.get(i).is_some_and(|r| r.state == RowState::Finished);
    let f1 = |i: usize| adherence.get(i).copied().flatten();
    let b = ex.baseline;
    if !controlled(b) || !finished(b) {
        return Vec::new();
    }
    let base_label = &ex.runs[b].label;
    let Some(base) = f1(b) else {
        return vec![format!(
            "Control adherence was not measured for {base_label} (no edge F1 in its report), so \
             no run's control can be compared with it."
        )];
    };
    let mut notes = vec![format!(
        "Under the ControlNet, {base_label} followed the control image with edge F1 {base:.2} \
         (1 = every edge of the control in place, within a pixel or two)."
    )];
    for i in (0..ex.runs.len()).filter(|&i| i != b && controlled(i) && finished(i)) {
        let label = &ex.runs[i].label;
        let Some(f) = f1(i) else {
            notes.push(format!("{label}: its control adherence was not measured."));
            continue;
        };
        let gap = base - f;
        let (kept, how) = if gap <= ADHERENCE_GAP {
            ("kept the control", "within")
        } else {
            ("lost some of the control", "more than")
        };
        let against = if gap >= 0.0 {
            format!("{gap:.2} below {base_label}")
        } else {
            format!("{:.2} above {base_label}", -gap)
        };
        let mut note = format!(
            "{label} {kept}: edge F1 {f:.2}, {against} ({how} the {ADHERENCE_GAP} the claim allows)."
        );
        if gap > ADHERENCE_GAP && draws_a_style(&ex.runs[i]) {
            note.push_str(STYLE_EDGES_NOTE);
        }
        notes.push(note);
    }
    notes
}

/// Said of a styled run that fell behind on edge F1: the metric's tolerance is a pixel or two.
const STYLE_EDGES_NOTE: &str = " Part of that is the style itself: a style that redraws outlines \
     (pixel art puts every edge on its block grid, as a staircase) lowers edge F1 at a pixel or two \
     even where the layout holds; compare the panels.";

/// Whether a run draws through a style adapter: its UNet variant or a run-time LoRA named for one
/// (the exporter's `style` adapter and the variants fused with it, `style`, `lcm_style`).
fn draws_a_style(run: &RunSpec) -> bool {
    run.unet.contains("style") || run.lora.iter().any(|l| l.adapter.contains("style"))
}

/// What the model's kind means for an exercise's numbers.
fn model_note(kind: ModelKind) -> Option<String> {
    match kind {
        ModelKind::Sd15 => None,
        ModelKind::Tiny => Some(
            "This is the tiny model with random weights: its images are noise and its times are tiny; \
             the ratios show the method's bookkeeping, not SD v1.5's cost. Point model.dir at a real export for real numbers."
                .into(),
        ),
        ModelKind::Micro => Some(
            "This is the micro model: SD v1.5's structure, trained on a small world of coloured shapes at 64×64. \
             Its images show what each method does to a picture, but a step costs a few ms, so fixed costs weigh more \
             than on SD v1.5 at 512²; point model.dir at a real export for SD v1.5's times."
                .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(ex: &Exercise, i: usize, total: f64, per_step: f64, text: f64, vae: f64) -> TableRow {
        let mut r = ex.runs[i].table_row(i == ex.baseline);
        r.state = RowState::Finished;
        r.steps_done = ex.runs[i].steps;
        r.total_ms = Some(total);
        r.unet_ms_per_step = Some(per_step);
        r.unet_ms = Some(per_step * r.steps_done as f64);
        r.text_ms = Some(text);
        r.vae_ms = Some(vae);
        r
    }

    /// Exercise 1 as if measured: 50 × 20 + 100 fixed, 20 × 20 + 100, 10 × 20 + 100.
    fn exercise_1_rows() -> (Exercise, Vec<TableRow>) {
        let ex = default_exercises().remove(0);
        let rows = vec![
            row(&ex, 0, 1100.0, 20.0, 40.0, 60.0),
            row(&ex, 1, 500.0, 20.0, 40.0, 60.0),
            row(&ex, 2, 300.0, 20.0, 40.0, 60.0),
        ];
        (ex, rows)
    }

    #[test]
    fn measures_read_speedups_and_step_cost_ratios_from_finished_rows() {
        let (ex, mut rows) = exercise_1_rows();
        let speedup = Measure::Speedup { run: 1, over: 0 };
        assert!((speedup.value(&rows, &[]).unwrap() - 2.2).abs() < 1e-9);
        rows[2].unet_ms_per_step = Some(30.0);
        let cost = Measure::StepCostRatio { run: 2, over: 0 };
        assert!((cost.value(&rows, &[]).unwrap() - 1.5).abs() < 1e-9);
        rows[1].state = RowState::Running;
        assert_eq!(speedup.value(&rows, &[]), None, "not finished");
        assert_eq!(Measure::Speedup { run: 5, over: 0 }.value(&rows, &[]), None);
        assert_eq!(ex.questions[0].measure, speedup);
    }

    #[test]
    fn a_speedup_over_a_zero_time_baseline_is_not_measured() {
        let (_, mut rows) = exercise_1_rows();
        rows[0].total_ms = Some(0.0);
        assert_eq!(Measure::Speedup { run: 1, over: 0 }.value(&rows, &[]), None);
    }

    #[test]
    fn what_happened_reads_the_numbers() {
        let (ex, rows) = exercise_1_rows();
        let notes = what_happened(&ex, &rows, &[], ModelKind::Sd15);
        let all = notes.join("\n");
        assert!(
            all.contains("DPM-Solver++ 20 took 0.45× the time of DDPM 50 (2.2× faster"),
            "{all}"
        );
        assert!(all.contains("DPM-Solver++ 10 took 0.27× the time"), "{all}");
        assert!(
            all.contains("A UNet step cost about the same (20.0 ms"),
            "{all}"
        );
        // 50/10 = 5× predicted, 3.67× measured, 100 ms fixed of 300
        assert!(
            all.contains(
                "10 steps against 50 predict 5×, measured 3.67×. Of this run's 300 ms, the UNet took 200 ms, \
                 text encoding + VAE decode 100 ms (33%, the same at any step count), the scheduler and the rest 0.00 ms."
            ),
            "{all}"
        );
        assert!(!all.contains("random weights"), "{all}");
        let tiny = what_happened(&ex, &rows, &[], ModelKind::Tiny);
        assert!(tiny.last().unwrap().contains("random weights"));
        let micro = what_happened(&ex, &rows, &[], ModelKind::Micro);
        assert!(
            micro.last().unwrap().contains("the micro model"),
            "{micro:?}"
        );
        assert!(!micro.join("\n").contains("random weights"), "{micro:?}");
    }

    #[test]
    fn what_happened_explains_a_dearer_step_by_the_batch() {
        let ex = default_exercises().remove(1);
        let mut lcm = ex.clone();
        lcm.runs[1].cfg = 1.0;
        let rows = vec![
            row(&lcm, 0, 500.0, 20.0, 40.0, 60.0),
            row(&lcm, 1, 180.0, 10.0, 20.0, 60.0),
            lcm.runs[2].table_row(false),
        ];
        let all = what_happened(&lcm, &rows, &[], ModelKind::Sd15).join("\n");
        assert!(
            all.contains("A UNet step cost 0.5× one of DPM-Solver++ 20"),
            "{all}"
        );
        assert!(
            all.contains("batch 1 (cfg 1) instead of 2 (cfg 7.5)"),
            "{all}"
        );
        assert!(all.contains("LCM-LoRA 4 did not finish (not run)"), "{all}");
    }

    #[test]
    fn an_unfinished_baseline_is_said_plainly() {
        let (ex, mut rows) = exercise_1_rows();
        rows[0].state = RowState::Cancelled;
        let notes = what_happened(&ex, &rows, &[], ModelKind::Sd15);
        assert_eq!(notes.len(), 1);
        assert!(notes[0].contains("DDPM 50 (the baseline) did not finish"));
    }

    #[test]
    fn judge_says_how_close_the_guess_was() {
        assert_eq!(
            judge(2.5, 2.38),
            "you said 2.5×, measured 2.38× — within 5%"
        );
        assert_eq!(
            judge(2.0, 2.38),
            "you said 2×, measured 2.38× — close: 16% too low"
        );
        assert_eq!(
            judge(3.0, 2.38),
            "you said 3×, measured 2.38× — 26% too high"
        );
        assert_eq!(
            judge(10.0, 2.5),
            "you said 10×, measured 2.5× — off by 4.0× (too high)"
        );
        assert!(judge(2.0, f64::NAN).contains("no measurement"));
    }

    /// Exercise 5 as if measured: every run finished, with these edge F1s.
    fn exercise_5_rows(f1: [Option<f64>; 4]) -> (Exercise, Vec<TableRow>, Vec<Option<f64>>) {
        let ex = default_exercises()
            .into_iter()
            .find(|e| e.number == 5)
            .unwrap();
        let rows = vec![
            row(&ex, 0, 900.0, 30.0, 40.0, 60.0),
            row(&ex, 1, 380.0, 30.0, 40.0, 60.0),
            row(&ex, 2, 250.0, 30.0, 40.0, 60.0),
            row(&ex, 3, 250.0, 30.0, 40.0, 60.0),
        ];
        (ex, rows, f1.to_vec())
    }

    #[test]
    fn exercise_5_runs_every_method_under_the_controlnet_on_one_image() {
        let (ex, _, _) = exercise_5_rows([None; 4]);
        ex.validate().unwrap();
        assert_eq!(ex.title, "ControlNet composability");
        let units: Vec<(&str, usize, &str)> = ex
            .runs
            .iter()
            .map(|r| {
                (
                    r.scheduler.to_string().leak() as &str,
                    r.steps,
                    r.unet.as_str(),
                )
            })
            .collect();
        assert_eq!(
            units,
            [
                ("dpmpp", 20, "base"),
                ("lcm", 8, "lcm"),
                ("lcm", 4, "lcm"),
                ("lcm", 4, "lcm_style")
            ]
        );
        let images: Vec<_> = ex
            .runs
            .iter()
            .map(|r| r.control.as_ref().unwrap().image.clone())
            .collect();
        assert!(images.iter().all(|i| *i == images[0]), "one control image");
        assert_eq!(images[0], std::path::Path::new(CONTROL_IMAGES[0].0));
        assert!(
            ex.runs[3].prompt.as_deref().unwrap().ends_with(", PixArFK"),
            "the style run's prompt has the trigger"
        );
        assert!(ex.runs[..3].iter().all(|r| r.prompt.is_none()));
        // On the micro model: its world's prompt (the style run's with the trigger) and its image.
        let micro = ex.for_model(ModelKind::Micro);
        assert_eq!(micro.prompt, MICRO_STAR_PLAIN);
        assert_eq!(
            micro.runs[3].prompt.as_deref(),
            Some("a large yellow star on a blue background, PixArFK")
        );
        let c = micro.runs[0].control.as_ref().unwrap();
        assert_eq!(c.image, std::path::Path::new(CONTROL_IMAGES[0].1));
        assert_eq!(
            c.preprocess,
            crate::pipeline::control::ControlPreprocess::Canny
        );
        // The shipped images are where the exercise says.
        for (sd15, micro) in CONTROL_IMAGES {
            for p in [sd15, micro] {
                let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(p);
                assert!(path.is_file(), "{} is missing", path.display());
            }
        }
    }

    #[test]
    fn an_adherence_gap_is_the_baselines_f1_minus_the_runs() {
        let (ex, mut rows, f1) = exercise_5_rows([Some(0.8), Some(0.75), Some(0.6), Some(0.9)]);
        let gap = &ex.questions[1].measure;
        assert_eq!(*gap, Measure::AdherenceGap { run: 2, over: 0 });
        assert!((gap.value(&rows, &f1).unwrap() - 0.2).abs() < 1e-9);
        let better = Measure::AdherenceGap { run: 3, over: 0 };
        assert!(
            (better.value(&rows, &f1).unwrap() + 0.1).abs() < 1e-9,
            "negative: better"
        );
        assert_eq!(
            gap.value(&rows, &[Some(0.8), None, None, None]),
            None,
            "unmeasured"
        );
        assert_eq!(gap.value(&rows, &[]), None);
        rows[2].state = RowState::Running;
        assert_eq!(gap.value(&rows, &f1), None, "not finished");
        assert!(!gap.is_ratio() && ex.questions[0].measure.is_ratio());
        assert_eq!(gap.format(0.2), "0.20");
        assert_eq!(ex.questions[0].measure.format(2.5), "2.5×");
        assert_eq!(
            gap.judge(0.1, 0.04),
            "you said 0.10, measured 0.04 — 0.06 too high"
        );
        assert_eq!(
            gap.judge(0.05, 0.04),
            "you said 0.05, measured 0.04 — within 0.02"
        );
        assert_eq!(
            gap.judge(-0.1, 0.04),
            "you said -0.10, measured 0.04 — 0.14 too low"
        );
    }

    #[test]
    fn the_control_notes_read_the_measured_f1s() {
        let (ex, rows, f1) = exercise_5_rows([Some(0.81), Some(0.77), Some(0.64), Some(0.83)]);
        let all = what_happened(&ex, &rows, &f1, ModelKind::Sd15).join("\n");
        assert!(
            all.contains("DPM-Solver++ 20 followed the control image with edge F1 0.81"),
            "{all}"
        );
        assert!(
            all.contains("LCM-LoRA 8 kept the control: edge F1 0.77, 0.04 below DPM-Solver++ 20 (within the 0.1"),
            "{all}"
        );
        assert!(
            all.contains("LCM-LoRA 4 lost some of the control: edge F1 0.64, 0.17 below DPM-Solver++ 20 (more than the 0.1"),
            "{all}"
        );
        assert!(
            all.contains(
                "LCM + style 4 kept the control: edge F1 0.83, 0.02 above DPM-Solver++ 20"
            ),
            "{all}"
        );
        // Other numbers, other notes: nothing is written in advance.
        let (_, _, f1) = exercise_5_rows([Some(0.5), Some(0.2), Some(0.45), None]);
        let all = what_happened(&ex, &rows, &f1, ModelKind::Sd15).join("\n");
        assert!(all.contains("with edge F1 0.50"), "{all}");
        assert!(
            all.contains("LCM-LoRA 8 lost some of the control: edge F1 0.20, 0.30 below"),
            "{all}"
        );
        assert!(
            all.contains("LCM-LoRA 4 kept the control: edge F1 0.45, 0.05 below"),
            "{all}"
        );
        assert!(
            all.contains("LCM + style 4: its control adherence was not measured"),
            "{all}"
        );
        // A styled run that fell behind is told the metric's part in it; a plain one is not.
        let (_, _, f1) = exercise_5_rows([Some(0.9), Some(0.6), Some(0.88), Some(0.38)]);
        let notes = what_happened(&ex, &rows, &f1, ModelKind::Sd15);
        let styled = notes
            .iter()
            .find(|n| n.starts_with("LCM + style 4 lost"))
            .unwrap();
        assert!(styled.ends_with(STYLE_EDGES_NOTE), "{styled}");
        let plain = notes
            .iter()
            .find(|n| n.starts_with("LCM-LoRA 8 lost"))
            .unwrap();
        assert!(!plain.contains("style"), "{plain}");
        let none = what_happened(&ex, &rows, &[None; 4], ModelKind::Sd15).join("\n");
        assert!(
            none.contains("Control adherence was not measured for DPM-Solver++ 20"),
            "{none}"
        );
        // An exercise without control says nothing about it.
        let (ex1, rows1) = exercise_1_rows();
        assert!(
            !what_happened(&ex1, &rows1, &[], ModelKind::Sd15)
                .join("\n")
                .contains("edge F1")
        );
    }

    #[test]
    fn fitting_the_controls_picks_the_folders_controlnet_or_says_there_is_none() {
        let root = std::path::Path::new("/models/sd15");
        let (ex, _, _) = exercise_5_rows([None; 4]);
        let e = ex.clone().fit_controls(root, &[]).unwrap_err();
        let parts = crate::error::parts(&e);
        let text = format!("{} | {}", parts.causes.join(": "), parts.fixes.join("; "));
        assert!(
            text.contains("exercise 5 (\"ControlNet composability\") runs under a ControlNet, and the model folder /models/sd15 has none"),
            "{text}"
        );
        assert!(
            text.contains("models/export.py --controlnet NAME=SOURCE"),
            "{text}"
        );
        let mut fit = ex.clone();
        fit.fit_controls(root, &["depth".into(), "edge".into()])
            .unwrap();
        assert!(
            fit.runs
                .iter()
                .all(|r| r.control.as_ref().unwrap().controlnet.as_deref() == Some("edge"))
        );
        let mut named = ex.clone();
        named.runs[1].control.as_mut().unwrap().controlnet = Some("pose".into());
        let e = format!(
            "{:?}",
            named.fit_controls(root, &["edge".into()]).unwrap_err()
        );
        assert!(
            e.contains("run \"LCM-LoRA 8\"") && e.contains("pose"),
            "{e}"
        );
        // Exercises without control are untouched by a folder without ControlNets.
        let mut one = default_exercises().remove(0);
        one.fit_controls(root, &[]).unwrap();
        assert_eq!(one, default_exercises()[0]);
        assert_eq!(pick_controlnet(&["depth".into()]), Some("depth"));
        assert_eq!(pick_controlnet(&[]), None);
    }

    #[test]
    fn the_default_exercises_are_valid() {
        for ex in default_exercises() {
            ex.validate().unwrap();
        }
    }
}
