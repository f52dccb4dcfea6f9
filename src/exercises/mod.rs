//! The course's exercises as data: each one a prompt, a seed and a list of runs (config.toml's
//! `[[exercises]]` may replace or extend the defaults), with our own text: what it shows, the
//! questions to answer before running (a number the user may type), and a note after the runs
//! that reads the actual measurements.

use serde::{Deserialize, Serialize};

use crate::schedulers::SchedulerKind;

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
}

fn base_unet() -> String {
    "base".into()
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
}

fn default_seed() -> u64 {
    42
}
