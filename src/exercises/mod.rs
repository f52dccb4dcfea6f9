//! The course's exercises as data: each one a prompt, a seed and a list of runs (config.toml's
//! `[[exercises]]` may replace or extend the defaults), with our own text: what it shows, the
//! questions to answer before running (a number the user may type), and a note after the runs
//! that reads the actual measurements.

use serde::{Deserialize, Serialize};

use crate::pipeline::Request;
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

impl Exercise {
    /// The pipeline request of run `index` (the exercise's prompt and seed unless the run
    /// overrides them; the model's native size).
    pub fn request(&self, index: usize, rng: RngSource) -> Request {
        let spec = &self.runs[index];
        Request {
            prompt: spec.prompt.clone().unwrap_or_else(|| self.prompt.clone()),
            negative_prompt: self.negative_prompt.clone(),
            scheduler: spec.scheduler,
            scheduler_options: SchedulerOptions::default(),
            steps: spec.steps,
            guidance: spec.cfg,
            seed: spec.seed.unwrap_or(self.seed),
            rng,
            unet: spec.unet.clone(),
            width: None,
            height: None,
            latents: None,
        }
    }
}

const COTTAGE: &str = "a small cottage on a hillside at sunset, warm golden light, detailed";
const LIGHTHOUSE: &str = "a lighthouse on a rocky coast during a storm, waves crashing, PixArFK";

fn run(label: &str, scheduler: SchedulerKind, steps: usize, cfg: f32, unet: &str) -> RunSpec {
    RunSpec {
        label: label.into(),
        scheduler,
        steps,
        cfg,
        unet: unet.into(),
        prompt: None,
        seed: None,
    }
}

/// Exercises 1–3 of the course (4, the decision cheat sheet, is built on these).
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
            negative_prompt: String::new(),
            seed: 42,
            runs: vec![
                run("DPM-Solver++ 20", DpmSolverPp, 20, 7.5, "base"),
                run("LCM-LoRA 8", Lcm, 8, 1.5, "lcm"),
                run("LCM-LoRA 4", Lcm, 4, 1.5, "lcm"),
            ],
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
        },
    ]
}
