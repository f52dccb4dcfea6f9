//! Exercise 4, the decision cheat sheet, as data: three scenarios, the approaches speedscape can
//! run, our reference answers, and each scenario's measurable constraint. The user's answers are
//! kept between sessions in a JSON file written atomically; a damaged file is reported, never
//! silently replaced.

use std::path::{Path, PathBuf};

use color_eyre::eyre::{WrapErr, eyre};
use serde::{Deserialize, Serialize};

use crate::error::Fixable;
use crate::report::table::{RowState, TableRow, format_ms, speedup};
use crate::report::write_atomic;
use crate::schedulers::SchedulerKind;

/// What a scenario's choice can be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Approach {
    /// DPM-Solver++ on the base UNet (or the style UNet), cfg 7.5.
    DpmSolver { steps: usize },
    /// LCM-LoRA (`unet_lcm`), LCM scheduler, cfg 1.5.
    Lcm { steps: usize },
    /// LCM-LoRA fused with the style LoRA (`unet_lcm_style`), cfg 1.5.
    LcmStyle { steps: usize },
    /// A one-step distilled UNet (SD-Turbo; the micro model's `unet_turbo`): Euler at its own
    /// trailing schedule, no guidance. Runs where the model folder has one
    /// ([`crate::models::folder_one_step`]).
    OneStep {
        #[serde(default = "one_step")]
        steps: usize,
    },
}

fn one_step() -> usize {
    1
}

impl Approach {
    /// Shown in lists and reports.
    pub fn label(self) -> String {
        match self {
            Approach::DpmSolver { steps } => format!("DPM-Solver++ {steps}"),
            Approach::Lcm { steps } => format!("LCM-LoRA {steps}"),
            Approach::LcmStyle { steps } => format!("LCM-LoRA + style {steps}"),
            Approach::OneStep { steps } => format!("{} {steps}", crate::models::ONE_STEP_LABEL),
        }
    }

    /// `(scheduler, steps, cfg, unet variant)` on a model whose one-step UNet is `one_step`
    /// (see [`crate::models::folder_one_step`]); `None` for the one-step approach on a model
    /// without one.
    pub fn run(self, one_step: Option<&str>) -> Option<(SchedulerKind, usize, f32, String)> {
        let (scheduler, steps, cfg, unet) = match self {
            Approach::DpmSolver { steps } => (SchedulerKind::DpmSolverPp, steps, 7.5, "base"),
            Approach::Lcm { steps } => (SchedulerKind::Lcm, steps, 1.5, "lcm"),
            Approach::LcmStyle { steps } => (SchedulerKind::Lcm, steps, 1.5, "lcm_style"),
            Approach::OneStep { steps } => (SchedulerKind::Euler, steps, 0.0, one_step?),
        };
        Some((scheduler, steps, cfg, unet.to_string()))
    }

    /// `dpmpp:20`, `lcm:4`, `lcm_style:4`, `turbo:1` (the `--choice` spelling; `turbo` alone
    /// is one step).
    pub fn parse(text: &str) -> color_eyre::Result<Self> {
        let (method, count) = text.split_once(':').unwrap_or((text, ""));
        let steps = || -> color_eyre::Result<usize> {
            let steps = count;
            let n: usize = steps.parse().map_err(|_| {
                eyre!("{text:?}: the step count after ':' must be a whole number ≥ 1")
            })?;
            if n == 0 {
                return Err(eyre!("{text:?}: the step count must be ≥ 1"));
            }
            Ok(n)
        };
        match method {
            "dpmpp" => Ok(Approach::DpmSolver { steps: steps()? }),
            "lcm" => Ok(Approach::Lcm { steps: steps()? }),
            "lcm_style" => Ok(Approach::LcmStyle { steps: steps()? }),
            "turbo" | "one-step" if count.is_empty() => Ok(Approach::OneStep { steps: 1 }),
            "turbo" | "one-step" => Ok(Approach::OneStep { steps: steps()? }),
            _ => Err(eyre!(Fixable::new(
                format!("unknown approach {text:?}"),
                "use dpmpp:N, lcm:N, lcm_style:N or turbo:N (a model with a one-step UNet)",
            ))),
        }
    }
}

/// The four dimensions a choice is judged on.
pub const DIMENSIONS: [&str; 4] = ["speed", "quality", "flexibility", "composability"];

/// A measurable condition the scenario puts on its choice.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Constraint {
    /// End-to-end time of one image under `ms`.
    LatencyUnder { ms: f64 },
    /// At least `images` images in `hours` hours: each image within hours·3600/images seconds.
    Throughput { images: u32, hours: f64 },
    /// SSIM of the choice's image against the alternative's at least `min`.
    SimilarityAtLeast { min: f64 },
    /// Both runs under the ControlNet: SSIM against the alternative's image at least `min`, and
    /// the choice's control adherence (edge F1) at most `max_gap` below the alternative's.
    SimilarityAndControl { min: f64, max_gap: f64 },
}

/// What a verification run measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    /// End-to-end time of the chosen approach's image (ms).
    pub total_ms: f64,
    /// SSIM of the chosen image against the alternative's.
    pub ssim_vs_alternative: Option<f64>,
    /// Control adherence (edge F1) of the choice and of the alternative, both under the
    /// ControlNet (`None`: not run under one, or not measured).
    pub adherence: Option<(f64, f64)>,
}

/// A constraint's verdict, with the numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub passed: bool,
    pub text: String,
}

impl Constraint {
    pub fn describe(self) -> String {
        match self {
            Constraint::LatencyUnder { ms } => format!("one image end to end in under {ms:.0} ms"),
            Constraint::Throughput { images, hours } => format!(
                "{images} images in {hours} h: at most {:.1} s an image",
                hours * 3600.0 / f64::from(images)
            ),
            Constraint::SimilarityAtLeast { min } => {
                format!("SSIM against the alternative's image at least {min:.2}")
            }
            Constraint::SimilarityAndControl { min, max_gap } => format!(
                "both under the ControlNet: SSIM against the alternative's image at least {min:.2}, \
                 edge F1 within {max_gap:.2} of the alternative's"
            ),
        }
    }

    pub fn check(self, m: &Measured) -> Verdict {
        match self {
            Constraint::LatencyUnder { ms } => Verdict {
                passed: m.total_ms < ms,
                text: format!("{:.0} ms against a limit of {ms:.0} ms", m.total_ms),
            },
            Constraint::Throughput { images, hours } => {
                let budget = hours * 3600.0 / f64::from(images);
                let per_image = m.total_ms / 1e3;
                Verdict {
                    passed: per_image <= budget,
                    text: format!(
                        "{per_image:.2} s an image against {budget:.1} s ({:.0} images in {hours} h)",
                        (hours * 3600.0 / per_image.max(1e-9)).floor()
                    ),
                }
            }
            Constraint::SimilarityAtLeast { min } => similarity(m, min),
            Constraint::SimilarityAndControl { min, max_gap } => {
                let quality = similarity(m, min);
                let control = match m.adherence {
                    Some((choice, alternative)) => {
                        let gap = alternative - choice;
                        Verdict {
                            passed: gap <= max_gap,
                            text: format!(
                                "edge F1 {choice:.2} against the alternative's {alternative:.2} \
                                 (gap {gap:.2}, at most {max_gap:.2})"
                            ),
                        }
                    }
                    None => Verdict {
                        passed: false,
                        text: "no edge F1: the control adherence was not measured".into(),
                    },
                };
                Verdict {
                    passed: quality.passed && control.passed,
                    text: format!("{}; {}", quality.text, control.text),
                }
            }
        }
    }
}

/// SSIM at least `min`, or why not.
fn similarity(m: &Measured, min: f64) -> Verdict {
    match m.ssim_vs_alternative {
        Some(s) => Verdict {
            passed: s >= min,
            text: format!("SSIM {s:.3} against a threshold of {min:.2}"),
        },
        None => Verdict {
            passed: false,
            text: "no SSIM: the alternative's image is missing".into(),
        },
    }
}

/// One scenario of the cheat sheet.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// 'A', 'B', 'C'.
    pub key: char,
    pub title: &'static str,
    pub brief: &'static str,
    /// The prompt its verification runs (the same for the choice and the alternative).
    pub prompt: &'static str,
    /// The same on the micro model, in its world's words.
    pub micro_prompt: &'static str,
    pub constraint: Constraint,
    /// Our answer: the approach and a line per dimension.
    pub reference: Approach,
    pub reasoning: [&'static str; 4],
    /// What verification runs by default: the choice against this alternative.
    pub default_choice: Approach,
    pub alternative: Approach,
    /// The scenario's control image (one of [`super::CONTROL_IMAGES`]): its verification runs
    /// both approaches under the model's ControlNet when it has one.
    pub control_image: Option<&'static str>,
    /// Two answers the reference weighs against each other (C: LCM-LoRA 4, Level 3a, and a
    /// one-step model, Level 3b): where the model can run both, verification runs the one not
    /// chosen as a third run, so the reasoning cites both measured ([`evidence`]).
    pub levels: Option<[Approach; 2]>,
}

impl Scenario {
    /// The scenario's constraint, with `threshold` replacing an SSIM minimum where it has one.
    pub fn constraint_with(&self, threshold: Option<f64>) -> Constraint {
        match (self.constraint, threshold) {
            (Constraint::SimilarityAtLeast { .. }, Some(min)) => {
                Constraint::SimilarityAtLeast { min }
            }
            (c, _) => c,
        }
    }

    /// The third run of a verification of `choice` on a model whose one-step UNet is
    /// `one_step`: the one of [`Scenario::levels`] not chosen, when the model runs it.
    pub fn companion(&self, choice: Approach, one_step: Option<&str>) -> Option<Approach> {
        let levels = self.levels?;
        one_step?;
        let same_kind = |a: Approach, b: Approach| {
            std::mem::discriminant(&a) == std::mem::discriminant(&b)
                || matches!(
                    (a, b),
                    (Approach::Lcm { .. }, Approach::LcmStyle { .. })
                        | (Approach::LcmStyle { .. }, Approach::Lcm { .. })
                )
        };
        let chosen = levels.iter().position(|&l| same_kind(l, choice))?;
        Some(levels[1 - chosen])
    }

    /// [`Scenario::constraint_with`], and with `controlled` (the verification runs under a
    /// ControlNet) an SSIM minimum also asks the choice to keep the control: its edge F1 within
    /// [`super::ADHERENCE_GAP`] of the alternative's.
    pub fn constraint_for(&self, threshold: Option<f64>, controlled: bool) -> Constraint {
        match self.constraint_with(threshold) {
            Constraint::SimilarityAtLeast { min } if controlled => {
                Constraint::SimilarityAndControl {
                    min,
                    max_gap: super::ADHERENCE_GAP,
                }
            }
            c => c,
        }
    }

    /// The control its verification runs under on a model of `kind` whose folder has the
    /// ControlNets `controlnets`: the scenario's control image (the micro model's on the micro
    /// model, still relative to the checkout: see
    /// [`super::headless::locate_control_images`]), its Canny edges, scale 1, the folder's
    /// ControlNet ([`super::pick_controlnet`]). `None` for a scenario without one, or a folder
    /// without ControlNets (its verification then checks quality alone).
    pub fn control(
        &self,
        kind: crate::models::ModelKind,
        controlnets: &[String],
    ) -> Option<super::ControlSpec> {
        let image = self.control_image?;
        let name = super::pick_controlnet(controlnets)?;
        let run = super::run("", SchedulerKind::Ddpm, 1, 1.0, "base");
        let mut c = super::controlled(run, &super::control_image_for(image, kind)).control?;
        c.controlnet = Some(name.to_string());
        Some(c)
    }
}

/// The three scenarios, in our words.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            key: 'A',
            title: "Concept artist",
            prompt: "a small cottage on a hillside at sunset, warm golden light, detailed",
            micro_prompt: "a small red circle on the left on a green background at sunset",
            brief: "Vanilla SD v1.5; 50 or more variations of an idea in an afternoon; previews, \
                    not production images.",
            constraint: Constraint::Throughput {
                images: 50,
                hours: 4.0,
            },
            reference: Approach::DpmSolver { steps: 20 },
            reasoning: [
                "speed: 20 steps instead of 50 is ~2.5× faster with no new weights",
                "quality: close to the 50-step image; plenty for previews",
                "flexibility: any prompt, any cfg, negative prompts keep working",
                "composability: nothing to combine yet; LCM-LoRA is the next step if 20 is still slow",
            ],
            default_choice: Approach::DpmSolver { steps: 20 },
            alternative: Approach::DpmSolver { steps: 50 },
            control_image: None,
            levels: None,
        },
        Scenario {
            key: 'B',
            title: "Game studio",
            prompt: "portrait of a fantasy knight character, detailed armor, studio lighting",
            micro_prompt: "a large purple triangle in the middle on a white background",
            brief: "A custom SD v1.5 fine-tune for character portraits at good quality, with a \
                    ControlNet pose model; quality matters more than speed.",
            constraint: Constraint::SimilarityAtLeast { min: 0.8 },
            reference: Approach::DpmSolver { steps: 20 },
            reasoning: [
                "speed: secondary; 20 solver steps are already a 2.5× saving",
                "quality: a sampler swap keeps the fine-tune's own look; LCM-LoRA was distilled \
                 from the base model, not from this fine-tune",
                "flexibility: full cfg range and negative prompts for art direction",
                "composability: ControlNet works with any sampler; LCM-LoRA with a fine-tune \
                 and ControlNet is a gamble to verify first",
            ],
            default_choice: Approach::Lcm { steps: 8 },
            alternative: Approach::DpmSolver { steps: 20 },
            control_image: Some(super::CONTROL_IMAGES[1].0),
            levels: None,
        },
        Scenario {
            key: 'C',
            title: "A/B tester",
            prompt: "a product photo of a red sneaker on a white background",
            micro_prompt: "a large red square on a white background",
            brief: "An image on every page load from a fixed prompt template; no custom models; \
                    under 1 second end to end; a little quality loss is fine.",
            constraint: Constraint::LatencyUnder { ms: 1000.0 },
            reference: Approach::Lcm { steps: 4 },
            reasoning: [
                "speed: LCM-LoRA at 4 steps and cfg 1.5 (one UNet call a step, Level 3a) meets a \
                 1 s budget on one GPU; a one-step model (SD-Turbo, Level 3b: one UNet call in all) \
                 is faster still if latency is critical — where the model has one, verification \
                 measures both",
                "quality: a little softer than 20 solver steps, acceptable by the brief",
                "flexibility: low cfg means weaker prompt adherence and no negative prompt — \
                 fine for a fixed template",
                "composability: a LoRA, so it stacks with a style LoRA if the brand needs one",
            ],
            default_choice: Approach::Lcm { steps: 4 },
            alternative: Approach::DpmSolver { steps: 20 },
            control_image: None,
            levels: Some([Approach::Lcm { steps: 4 }, Approach::OneStep { steps: 1 }]),
        },
    ]
}

/// The user's answer to one scenario.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    pub choice: Option<Approach>,
    /// One line per dimension, in [`DIMENSIONS`] order.
    #[serde(default)]
    pub notes: [String; 4],
    /// B's threshold as the user set it (None: the scenario's default).
    #[serde(default)]
    pub threshold: Option<f64>,
}

/// Every answer, keyed by scenario letter; what `cheatsheet.json` holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answers {
    pub format: u32,
    pub answers: std::collections::BTreeMap<char, Answer>,
}

impl Answers {
    /// Reads `path`; a missing file is an empty sheet. A file that does not parse (damaged, half
    /// written by something else) is an error naming it — it is never overwritten silently.
    pub fn load(path: &Path) -> color_eyre::Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self {
                    format: 1,
                    ..Self::default()
                });
            }
            Err(e) => return Err(e).wrap_err_with(|| format!("reading {}", path.display())),
        };
        serde_json::from_str(&text).map_err(|e| {
            eyre!(Fixable::new(
                format!(
                    "{} is damaged ({e}); your cheat-sheet answers are in it",
                    path.display()
                ),
                "repair or move it away; speedscape will not overwrite it",
            ))
        })
    }

    /// Writes `path` atomically (temp file + rename).
    pub fn save(&self, path: &Path) -> color_eyre::Result<()> {
        let json = serde_json::to_string_pretty(self)?;
        write_atomic(path, |f| {
            f.write_all(json.as_bytes())?;
            Ok(())
        })
    }
}

/// A scenario's verification: its choice run against its alternative, and the constraint's verdict.
pub struct Verification {
    pub scenario: Scenario,
    pub choice: Approach,
    pub constraint: Constraint,
    pub outcome: super::headless::ExerciseOutcome,
    /// `None` when a run did not finish.
    pub verdict: Option<Verdict>,
}

impl Verification {
    /// The exercise that runs it on a model whose one-step UNet is `one_step`: the alternative
    /// first (the baseline quality is measured against), then the choice, then the scenario's
    /// other level where it has one the model runs ([`Scenario::companion`]); the same seed and
    /// prompt for all, and with `control` all under that ControlNet ([`Scenario::control`]).
    pub fn exercise(
        scenario: &Scenario,
        choice: Approach,
        control: Option<&super::ControlSpec>,
        one_step: Option<&str>,
    ) -> color_eyre::Result<super::Exercise> {
        let spec = |a: Approach| -> color_eyre::Result<super::RunSpec> {
            let (scheduler, steps, cfg, unet) = a.run(one_step).ok_or_else(|| {
                eyre!(Fixable::new(
                    format!(
                        "{} cannot be verified: the model folder has no one-step UNet",
                        a.label()
                    ),
                    "pick one it can run (dpmpp:N, lcm:N, lcm_style:N), or use a model with one: \
                     the micro model's unet_turbo, or SD-Turbo exported with models/export.py \
                     --model stabilityai/sd-turbo",
                ))
            })?;
            let mut run = super::run(&a.label(), scheduler, steps, cfg, &unet);
            run.control = control.cloned();
            Ok(run)
        };
        Ok(super::Exercise {
            number: 4,
            title: format!("Cheat sheet, scenario {}: {}", scenario.key, scenario.title),
            about: scenario.brief.into(),
            prompt: scenario.prompt.into(),
            prompts: super::micro(scenario.micro_prompt),
            negative_prompt: String::new(),
            seed: 42,
            runs: [
                Some(scenario.alternative),
                Some(choice),
                scenario.companion(choice, one_step),
            ]
            .into_iter()
            .flatten()
            .map(spec)
            .collect::<color_eyre::Result<_>>()?,
            baseline: 0,
            questions: Vec::new(),
            one_step_run: false,
        })
    }

    /// The verdict as printed: "PASS — 420 ms against a limit of 1000 ms", then the measured
    /// numbers and, for a scenario with a control image run without one, why and how to get it.
    pub fn summary(&self) -> String {
        let head = format!(
            "scenario {} ({}): {} against {} — {}",
            self.scenario.key,
            self.scenario.title,
            self.choice.label(),
            self.scenario.alternative.label(),
            self.constraint.describe()
        );
        let mut out = match &self.verdict {
            Some(v) => format!(
                "{head}\n{}: {}",
                if v.passed { "PASS" } else { "FAIL" },
                v.text
            ),
            None => format!("{head}\nnot verified: a run did not finish"),
        };
        let o = &self.outcome;
        let adherence = outcome_adherence(o);
        if let Some(line) = evidence(&self.scenario, &o.rows, &adherence) {
            out.push_str(&format!("\n{line}"));
        }
        if let Some(note) = uncontrolled_note(&self.scenario, &o.exercise) {
            out.push_str(&format!("\n{note}"));
        }
        out
    }
}

/// Each run's edge F1 of a verification's outcome ([`super::adherences`]).
fn outcome_adherence(o: &super::headless::ExerciseOutcome) -> Vec<Option<f64>> {
    super::adherences(&o.reports.iter().map(Option::as_ref).collect::<Vec<_>>())
}

/// For a scenario with a control image whose verification `ex` ran without a ControlNet (the
/// model folder has none): that its ControlNet part was not verified, and how to get it.
pub fn uncontrolled_note(scenario: &Scenario, ex: &super::Exercise) -> Option<String> {
    (scenario.control_image.is_some() && !ex.has_control()).then(|| {
        crate::error::Fixable::new(
            "the ControlNet part was not verified: the model folder has no ControlNet, so both \
             runs ran without one and only quality (SSIM) was checked",
            "export one into the model (models/export.py --controlnet NAME=SOURCE, e.g. \
             canny=lllyasviel/control_v11p_sd15_canny) and verify again",
        )
        .to_string()
    })
}

/// The constraint checked on a verification's rows (the alternative first, then the choice, as
/// [`Verification::exercise`] orders them) and the runs' edge F1 (`adherence`, same order);
/// `None` until both runs have finished.
pub fn check_rows(
    constraint: Constraint,
    rows: &[TableRow],
    adherence: &[Option<f64>],
) -> Option<Verdict> {
    let [alternative, choice, ..] = rows else {
        return None;
    };
    if alternative.state != RowState::Finished || choice.state != RowState::Finished {
        return None;
    }
    let f1 = |i: usize| adherence.get(i).copied().flatten();
    Some(constraint.check(&Measured {
        total_ms: choice.total_ms?,
        ssim_vs_alternative: choice.quality.map(|q| q.ssim),
        adherence: f1(1).zip(f1(0)),
    }))
}

/// Both runs' numbers in one line: "LCM-LoRA 4: 58 ms · DPM-Solver++ 20: 310 ms · 5.34× faster ·
/// SSIM 0.412 against it · edge F1 0.74 against 0.78". `None` until the choice has finished.
pub fn measured_line(rows: &[TableRow], adherence: &[Option<f64>]) -> Option<String> {
    let [alternative, choice, ..] = rows else {
        return None;
    };
    let t = choice
        .total_ms
        .filter(|_| choice.state == RowState::Finished)?;
    let mut parts = vec![format!("{}: {}", choice.label, format_ms(t))];
    if let Some(a) = alternative
        .total_ms
        .filter(|_| alternative.state == RowState::Finished)
    {
        parts.push(format!("{}: {}", alternative.label, format_ms(a)));
        if let Some(s) = speedup(a, t) {
            parts.push(format!("{s:.2}× the speed"));
        }
    }
    if let Some(q) = choice.quality {
        parts.push(format!("SSIM {:.3} against it", q.ssim));
    }
    if let (Some(Some(c)), Some(Some(a))) = (adherence.get(1), adherence.first()) {
        parts.push(format!("edge F1 {c:.2} against {a:.2}"));
    }
    Some(parts.join(" · "))
}

/// What the verification measured, as a line of our reference answer's reasoning on
/// composability, for a scenario with a control image whose runs both finished under the
/// ControlNet with their adherence measured: "composability, measured: under the ControlNet
/// LCM-LoRA 8 keeps edge F1 0.74 against DPM-Solver++ 20's 0.78 (gap 0.04, within 0.10), SSIM
/// 0.853 against it, at 2.41× the speed". `None` otherwise.
///
/// For a scenario with [`Scenario::levels`] whose verification ran both (three finished rows):
/// "speed, measured: LCM-LoRA 4 (Level 3a) 58 ms, 5.34× DPM-Solver++ 20's 310 ms, SSIM 0.731;
/// one-step (turbo) 1 (Level 3b) 16 ms, 19.4×, SSIM 0.802" ([`levels_evidence`]).
pub fn evidence(
    scenario: &Scenario,
    rows: &[TableRow],
    adherence: &[Option<f64>],
) -> Option<String> {
    if scenario.levels.is_some() {
        return levels_evidence(scenario, rows);
    }
    scenario.control_image?;
    let [alternative, choice, ..] = rows else {
        return None;
    };
    let (a, c) = (adherence.first().copied()??, adherence.get(1).copied()??);
    if alternative.state != RowState::Finished || choice.state != RowState::Finished {
        return None;
    }
    let gap = a - c;
    let within = if gap <= super::ADHERENCE_GAP {
        "within"
    } else {
        "more than"
    };
    let mut line = format!(
        "composability, measured: under the ControlNet {} keeps edge F1 {c:.2} against {}'s \
         {a:.2} (gap {gap:.2}, {within} {:.2})",
        choice.label,
        alternative.label,
        super::ADHERENCE_GAP
    );
    if let Some(q) = choice.quality {
        line.push_str(&format!(", SSIM {:.3} against it", q.ssim));
    }
    if let (Some(at), Some(ct)) = (alternative.total_ms, choice.total_ms)
        && let Some(s) = speedup(at, ct)
    {
        line.push_str(&format!(", at {s:.2}× the speed"));
    }
    Some(line)
}

/// The measured line of a scenario with two levels (see [`evidence`]): each level's time, its
/// speedup over the alternative (row 0) and its SSIM against it, in the levels' order (Level 3a
/// first). `None` until all three rows have finished.
fn levels_evidence(scenario: &Scenario, rows: &[TableRow]) -> Option<String> {
    let levels = scenario.levels?;
    let [alternative, _, _] = rows else {
        return None;
    };
    if rows.iter().any(|r| r.state != RowState::Finished) {
        return None;
    }
    let base = alternative.total_ms?;
    let mut parts = Vec::new();
    for (k, level) in levels.iter().enumerate() {
        let label = level.label();
        let kind =
            |r: &&TableRow| r.label.split_whitespace().next() == label.split_whitespace().next();
        let row = rows[1..].iter().find(kind)?;
        let t = row.total_ms?;
        let mut part = format!(
            "{} (Level 3{}) {} ms",
            row.label,
            ['a', 'b'][k],
            format_ms(t)
        );
        if let Some(x) = speedup(base, t) {
            if parts.is_empty() {
                part.push_str(&format!(
                    ", {x:.2}× {}'s {} ms",
                    alternative.label,
                    format_ms(base)
                ));
            } else {
                part.push_str(&format!(", {x:.2}×"));
            }
        }
        if let Some(q) = row.quality {
            part.push_str(&format!(", SSIM {:.3}", q.ssim));
        }
        parts.push(part);
    }
    Some(format!("speed, measured: {}", parts.join("; ")))
}

/// One verified scenario, as saved: its exercise (alternative, choice) and what the runs left.
pub struct Saved<'a> {
    pub key: char,
    pub choice: Approach,
    pub constraint: Constraint,
    pub exercise: &'a super::Exercise,
    pub rows: &'a [TableRow],
    pub images: &'a [Option<image::RgbImage>],
    pub reports: &'a [Option<crate::pipeline::RunReport>],
}

/// Saves the cheat sheet into a new folder `out_root/exercise-4-YYYYmmdd-HHMMSS`:
/// `cheatsheet.md` (every scenario: the brief, your answer, ours with its reasoning, and each
/// verification's verdict, numbers and contact sheet), `cheatsheet.json` (the answers as they
/// were), and per verified scenario a `scenario-X/` folder with the runs' full report. Nothing
/// is overwritten; the folder appears whole. Returns the folder.
pub fn save(out_root: &Path, answers: &Answers, verified: &[Saved]) -> color_eyre::Result<PathBuf> {
    super::headless::save_new_folder(out_root, "exercise-4", |dir| {
        let mut checked = Vec::new();
        for v in verified {
            let scenario = scenario(v.key)?;
            let folder = format!("scenario-{}", v.key);
            std::fs::create_dir(dir.join(&folder))
                .wrap_err_with(|| format!("cannot create {folder} in {}", dir.display()))?;
            super::headless::write_exercise(
                &dir.join(&folder),
                v.exercise,
                v.rows,
                v.images,
                v.reports,
                &[],
            )?;
            let adherence =
                super::adherences(&v.reports.iter().map(Option::as_ref).collect::<Vec<_>>());
            checked.push(Checked {
                key: v.key,
                choice: v.choice.label(),
                alternative: scenario.alternative.label(),
                constraint: v.constraint.describe(),
                verdict: check_rows(v.constraint, v.rows, &adherence),
                measured: measured_line(v.rows, &adherence),
                evidence: evidence(&scenario, v.rows, &adherence),
                note: uncontrolled_note(&scenario, v.exercise),
                folder: Some(folder),
            });
        }
        let md = markdown(answers, &checked);
        super::headless::write_text(&dir.join("cheatsheet.md"), &md)?;
        answers.save(&dir.join("cheatsheet.json"))
    })
}

/// Finds scenario `key` (A, B or C, either case).
pub fn scenario(key: char) -> color_eyre::Result<Scenario> {
    scenarios()
        .into_iter()
        .find(|s| s.key == key.to_ascii_uppercase())
        .ok_or_else(|| {
            eyre!(Fixable::new(
                format!("no scenario {key:?}"),
                "use A (concept artist), B (game studio) or C (A/B tester)",
            ))
        })
}

/// Runs scenario `key`'s verification through the worker: `choice` (default: the scenario's)
/// against its alternative; `threshold` replaces B's SSIM threshold. Scenario B runs both under
/// the model's ControlNet and also checks the choice keeps the control; a folder without a
/// ControlNet checks quality alone and says so ([`uncontrolled_note`]).
pub fn verify(
    config: &crate::config::Config,
    key: char,
    choice: Option<Approach>,
    threshold: Option<f64>,
    device: Option<crate::runtime::Device>,
    model_dir: Option<std::path::PathBuf>,
    progress: bool,
) -> color_eyre::Result<Verification> {
    let scenario = scenario(key)?;
    let choice = choice.unwrap_or(scenario.default_choice);
    if let Some(min) = threshold.filter(|m| !(-1.0..=1.0).contains(m)) {
        return Err(eyre!(Fixable::new(
            format!("--threshold {min} is not an SSIM"),
            "use a value between -1 and 1, e.g. 0.8",
        )));
    }
    // Scenario B runs under the model's ControlNet where its folder has one.
    let (kind, controlnets) = match crate::open::model_dir(config, model_dir.as_deref()) {
        Ok((dir, kind)) => (kind, crate::models::controlnet::folder_controlnets(&dir)),
        Err(_) => (crate::models::ModelKind::Sd15, Vec::new()),
    };
    let control = scenario.control(kind, &controlnets);
    let constraint = scenario.constraint_for(threshold, control.is_some());
    let one_step = crate::open::model_dir(config, model_dir.as_deref())
        .ok()
        .and_then(|(dir, _)| crate::models::folder_one_step(&dir));
    let ex = Verification::exercise(&scenario, choice, control.as_ref(), one_step.as_deref())?;
    let outcome = super::headless::run_exercise(config, &ex, device, model_dir, progress)?;
    let verdict = check_rows(constraint, &outcome.rows, &outcome_adherence(&outcome));
    Ok(Verification {
        scenario,
        choice,
        constraint,
        outcome,
        verdict,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approaches_parse_from_their_spelling_and_say_what_they_run() {
        assert_eq!(
            Approach::parse("lcm:4").unwrap(),
            Approach::Lcm { steps: 4 }
        );
        assert_eq!(
            Approach::parse("dpmpp:20").unwrap().run(None),
            Some((SchedulerKind::DpmSolverPp, 20, 7.5, "base".to_string()))
        );
        // The one-step approach: `turbo` is one step; it runs only where the model has a
        // one-step UNet, as that variant, with Euler at no guidance.
        assert_eq!(
            Approach::parse("turbo").unwrap(),
            Approach::OneStep { steps: 1 }
        );
        let two = Approach::parse("turbo:2").unwrap();
        assert_eq!(two, Approach::OneStep { steps: 2 });
        assert_eq!(two.run(None), None);
        assert_eq!(
            two.run(Some("turbo")),
            Some((SchedulerKind::Euler, 2, 0.0, "turbo".to_string()))
        );
        assert_eq!(two.label(), "one-step (turbo) 2");
        for bad in ["turbo:0", "turbo:x"] {
            assert!(Approach::parse(bad).is_err(), "{bad}");
        }
        for bad in ["lcm", "lcm:0", "lcm:x", "euler:4"] {
            let e = format!("{}", Approach::parse(bad).unwrap_err());
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn constraints_pass_or_fail_on_the_numbers() {
        let c = Constraint::LatencyUnder { ms: 1000.0 };
        let fast = Measured {
            total_ms: 420.0,
            ssim_vs_alternative: None,
            adherence: None,
        };
        let slow = Measured {
            total_ms: 1300.0,
            ssim_vs_alternative: None,
            adherence: None,
        };
        assert!(c.check(&fast).passed && !c.check(&slow).passed);
        assert!(c.check(&slow).text.contains("1300 ms"));
        // 50 images in 4 h: 288 s an image.
        let t = Constraint::Throughput {
            images: 50,
            hours: 4.0,
        };
        assert!(
            t.check(&Measured {
                total_ms: 287_000.0,
                ssim_vs_alternative: None,
                adherence: None
            })
            .passed
        );
        assert!(
            !t.check(&Measured {
                total_ms: 289_000.0,
                ssim_vs_alternative: None,
                adherence: None
            })
            .passed
        );
        let s = Constraint::SimilarityAtLeast { min: 0.8 };
        assert!(
            s.check(&Measured {
                total_ms: 1.0,
                ssim_vs_alternative: Some(0.81),
                adherence: None
            })
            .passed
        );
        assert!(
            !s.check(&Measured {
                total_ms: 1.0,
                ssim_vs_alternative: Some(0.79),
                adherence: None
            })
            .passed
        );
        assert!(
            !s.check(&Measured {
                total_ms: 1.0,
                ssim_vs_alternative: None,
                adherence: None
            })
            .passed
        );
    }

    fn finished_row(label: &str, total: f64, ssim: Option<f64>) -> TableRow {
        let mut r = super::super::run(label, SchedulerKind::Lcm, 8, 1.5, "lcm").table_row(false);
        r.state = RowState::Finished;
        r.total_ms = Some(total);
        r.quality = ssim.map(|ssim| crate::quality::Quality {
            ssim,
            psnr_db: Some(20.0),
            mean_abs_diff: 0.1,
        });
        r
    }

    #[test]
    fn under_the_controlnet_scenario_b_also_checks_the_control_is_kept() {
        let b = scenario('B').unwrap();
        assert_eq!(b.constraint_for(None, false), b.constraint);
        let c = b.constraint_for(Some(0.7), true);
        assert_eq!(
            c,
            Constraint::SimilarityAndControl {
                min: 0.7,
                max_gap: 0.1
            }
        );
        assert_eq!(
            scenario('C').unwrap().constraint_for(None, true),
            Constraint::LatencyUnder { ms: 1000.0 }
        );
        let rows = [
            finished_row("DPM-Solver++ 20", 900.0, None),
            finished_row("LCM-LoRA 8", 380.0, Some(0.82)),
        ];
        let kept = check_rows(c, &rows, &[Some(0.78), Some(0.71)]).unwrap();
        assert!(kept.passed, "{kept:?}");
        assert_eq!(
            kept.text,
            "SSIM 0.820 against a threshold of 0.70; edge F1 0.71 against the alternative's 0.78 (gap 0.07, at most 0.10)"
        );
        let lost = check_rows(c, &rows, &[Some(0.78), Some(0.6)]).unwrap();
        assert!(!lost.passed && lost.text.contains("gap 0.18"), "{lost:?}");
        let unmeasured = check_rows(c, &rows, &[Some(0.78), None]).unwrap();
        assert!(
            !unmeasured.passed && unmeasured.text.contains("no edge F1"),
            "{unmeasured:?}"
        );
        // Quality still counts.
        let strict = b.constraint_for(Some(0.9), true);
        assert!(
            !check_rows(strict, &rows, &[Some(0.78), Some(0.75)])
                .unwrap()
                .passed
        );
    }

    #[test]
    fn our_reasoning_cites_what_the_controlled_verification_measured() {
        let b = scenario('B').unwrap();
        let rows = [
            finished_row("DPM-Solver++ 20", 900.0, None),
            finished_row("LCM-LoRA 8", 375.0, Some(0.853)),
        ];
        let line = evidence(&b, &rows, &[Some(0.78), Some(0.74)]).unwrap();
        assert_eq!(
            line,
            "composability, measured: under the ControlNet LCM-LoRA 8 keeps edge F1 0.74 against \
             DPM-Solver++ 20's 0.78 (gap 0.04, within 0.10), SSIM 0.853 against it, at 2.40× the speed"
        );
        let line = evidence(&b, &rows, &[Some(0.9), Some(0.5)]).unwrap();
        assert!(line.contains("gap 0.40, more than 0.10"), "{line}");
        assert_eq!(evidence(&b, &rows, &[Some(0.9), None]), None);
        assert_eq!(
            evidence(&scenario('C').unwrap(), &rows, &[Some(0.9), Some(0.9)]),
            None
        );
        let m = measured_line(&rows, &[Some(0.78), Some(0.74)]).unwrap();
        assert!(m.ends_with("edge F1 0.74 against 0.78"), "{m}");
    }

    #[test]
    fn scenario_b_runs_under_the_folders_controlnet_or_says_why_not() {
        use crate::models::ModelKind;
        let b = scenario('B').unwrap();
        assert_eq!(b.control(ModelKind::Sd15, &[]), None);
        assert_eq!(
            scenario('A')
                .unwrap()
                .control(ModelKind::Sd15, &["edge".into()]),
            None
        );
        let c = b.control(ModelKind::Micro, &["edge".into()]).unwrap();
        assert_eq!(c.controlnet.as_deref(), Some("edge"));
        assert_eq!(c.image, Path::new(super::super::CONTROL_IMAGES[1].1));
        let sd15 = b
            .control(ModelKind::Sd15, &["canny".into(), "pose".into()])
            .unwrap();
        assert_eq!(sd15.image, Path::new(super::super::CONTROL_IMAGES[1].0));
        assert_eq!(sd15.controlnet.as_deref(), Some("canny"));
        let ex = Verification::exercise(&b, b.default_choice, Some(&c), None).unwrap();
        assert!(ex.runs.iter().all(|r| r.control.as_ref() == Some(&c)));
        assert_eq!(uncontrolled_note(&b, &ex), None);
        let plain = Verification::exercise(&b, b.default_choice, None, None).unwrap();
        let note = uncontrolled_note(&b, &plain).unwrap();
        assert!(
            note.contains("the ControlNet part was not verified")
                && note.contains(
                    "Fix: export one into the model (models/export.py --controlnet NAME=SOURCE"
                ),
            "{note}"
        );
        let c_plain = Verification::exercise(
            &scenario('C').unwrap(),
            Approach::Lcm { steps: 4 },
            None,
            None,
        );
        assert_eq!(
            uncontrolled_note(&scenario('C').unwrap(), &c_plain.unwrap()),
            None
        );
    }

    /// Scenario C weighs Level 3a (LCM-LoRA 4) against Level 3b (a one-step model): on a model
    /// with a one-step UNet its verification runs the level not chosen as a third run, and the
    /// reasoning cites both measured; without one, two runs as before. Other scenarios never
    /// gain a run.
    #[test]
    fn scenario_c_measures_both_levels_where_the_model_has_a_one_step_unet() {
        let c = scenario('C').unwrap();
        let labels = |choice: Approach, one_step: Option<&str>| -> Vec<String> {
            Verification::exercise(&c, choice, None, one_step)
                .unwrap()
                .runs
                .into_iter()
                .map(|r| r.label)
                .collect()
        };
        let lcm4 = Approach::Lcm { steps: 4 };
        let turbo1 = Approach::OneStep { steps: 1 };
        assert_eq!(
            labels(lcm4, Some("turbo")),
            ["DPM-Solver++ 20", "LCM-LoRA 4", "one-step (turbo) 1"]
        );
        assert_eq!(
            labels(turbo1, Some("turbo")),
            ["DPM-Solver++ 20", "one-step (turbo) 1", "LCM-LoRA 4"]
        );
        assert_eq!(labels(lcm4, None), ["DPM-Solver++ 20", "LCM-LoRA 4"]);
        let e = Verification::exercise(&c, turbo1, None, None).unwrap_err();
        assert!(format!("{e}").contains("no one-step UNet"), "{e}");
        let ex = Verification::exercise(&c, turbo1, None, Some("turbo")).unwrap();
        let one = &ex.runs[1];
        assert_eq!(
            (one.scheduler, one.steps, one.cfg, one.unet.as_str()),
            (SchedulerKind::Euler, 1, 0.0, "turbo")
        );
        let a = scenario('A').unwrap();
        let ex = Verification::exercise(&a, a.default_choice, None, Some("turbo")).unwrap();
        assert_eq!(ex.runs.len(), 2);
        // The reasoning's measured line, in the levels' order whichever was chosen.
        let rows = [
            finished_row("DPM-Solver++ 20", 800.0, None),
            finished_row("one-step (turbo) 1", 50.0, Some(0.79)),
            finished_row("LCM-LoRA 4", 200.0, Some(0.87)),
        ];
        let line = evidence(&c, &rows, &[None, None, None]).unwrap();
        assert_eq!(
            line,
            "speed, measured: LCM-LoRA 4 (Level 3a) 200 ms, 4.00× DPM-Solver++ 20's 800 ms, SSIM 0.870; \
             one-step (turbo) 1 (Level 3b) 50.0 ms, 16.00×, SSIM 0.790"
        );
        let mut unfinished = rows.clone();
        unfinished[2].state = RowState::Running;
        assert_eq!(evidence(&c, &unfinished, &[None, None, None]), None);
        // The verdict still reads the choice (row 1) against the alternative (row 0).
        let v = check_rows(c.constraint, &rows, &[]).unwrap();
        assert!(v.passed && v.text.contains("50 ms"), "{}", v.text);
    }

    /// An answers file written before one-step approaches had steps still reads.
    #[test]
    fn an_older_one_step_answer_reads_as_one_step() {
        let old = r#"{"format": 1, "answers": {"C": {"choice": {"method": "one_step"}}}}"#;
        let a: Answers = serde_json::from_str(old).unwrap();
        assert_eq!(a.answers[&'C'].choice, Some(Approach::OneStep { steps: 1 }));
    }

    #[test]
    fn the_scenarios_verify_runnable_approaches() {
        let all = scenarios();
        assert_eq!(all.iter().map(|s| s.key).collect::<String>(), "ABC");
        for s in &all {
            assert!(s.default_choice.run(None).is_some() && s.alternative.run(None).is_some());
            assert!(
                s.reasoning
                    .iter()
                    .zip(DIMENSIONS)
                    .all(|(r, d)| r.starts_with(d))
            );
        }
    }

    #[test]
    fn answers_round_trip_through_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cheatsheet.json");
        let empty = Answers::load(&path).unwrap();
        assert!(empty.answers.is_empty());
        let mut a = empty.clone();
        a.answers.insert(
            'C',
            Answer {
                choice: Some(Approach::Lcm { steps: 4 }),
                notes: [
                    "fast".into(),
                    "ok".into(),
                    "fixed prompt".into(),
                    "a LoRA".into(),
                ],
                threshold: None,
            },
        );
        a.save(&path).unwrap();
        assert_eq!(Answers::load(&path).unwrap(), a);
    }

    #[test]
    fn a_damaged_or_half_written_file_is_reported_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cheatsheet.json");
        let mut a = Answers::load(&path).unwrap();
        a.answers.insert('A', Answer::default());
        a.save(&path).unwrap();
        let full = std::fs::read_to_string(&path).unwrap();
        let half = &full[..full.len() / 2];
        std::fs::write(&path, half).unwrap();
        let e = format!("{}", Answers::load(&path).unwrap_err());
        assert!(
            e.contains("damaged") && e.contains("will not overwrite"),
            "{e}"
        );
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            half,
            "left as it was"
        );
    }
}

/// A verification's result as the cheat sheet shows it.
pub struct Checked {
    pub key: char,
    pub choice: String,
    pub alternative: String,
    pub constraint: String,
    /// `None`: a run did not finish.
    pub verdict: Option<Verdict>,
    /// Both runs' numbers in a line ("LCM-LoRA 4 58 ms · DPM-Solver++ 20 310 ms (5.3×) · SSIM…").
    pub measured: Option<String>,
    /// The measured line our reference answer's reasoning adds ([`evidence`]).
    pub evidence: Option<String>,
    /// Why part of the scenario was not verified ([`uncontrolled_note`]).
    pub note: Option<String>,
    /// The folder with the runs' report (contact sheet, images, timings), relative to the
    /// Markdown file.
    pub folder: Option<String>,
}

/// The cheat sheet as Markdown: per scenario, the brief, the user's answer (if any), our
/// reference answer with its reasoning, and the verification's verdict with its numbers.
pub fn markdown(answers: &Answers, checked: &[Checked]) -> String {
    use std::fmt::Write;
    let mut md = String::from("# Decision cheat sheet\n\n");
    md.push_str(
        "Speed is one of four dimensions: speed, quality, flexibility, composability. Each choice \
         below is checked by a measured run.\n",
    );
    for s in scenarios() {
        let _ = writeln!(md, "\n## {}. {}\n\n{}\n", s.key, s.title, s.brief);
        let _ = writeln!(md, "Constraint: {}.\n", s.constraint.describe());
        match answers.answers.get(&s.key) {
            Some(a) => {
                let choice = a.choice.map_or("(no choice yet)".into(), |c| c.label());
                let _ = writeln!(md, "**Your choice: {choice}**\n");
                for (d, note) in DIMENSIONS.iter().zip(&a.notes) {
                    if !note.is_empty() {
                        let _ = writeln!(md, "- {d}: {note}");
                    }
                }
                md.push('\n');
            }
            None => md.push_str("Your choice: not answered yet.\n\n"),
        }
        let _ = writeln!(md, "Reference: **{}**\n", s.reference.label());
        for r in s.reasoning {
            let _ = writeln!(md, "- {r}");
        }
        for e in checked.iter().filter(|c| c.key == s.key) {
            if let Some(line) = &e.evidence {
                let _ = writeln!(md, "- {line}");
            }
        }
        for c in checked.iter().filter(|c| c.key == s.key) {
            let result = match &c.verdict {
                Some(v) => format!("{} — {}", if v.passed { "PASS" } else { "FAIL" }, v.text),
                None => "not verified: a run did not finish".into(),
            };
            let _ = writeln!(
                md,
                "\nVerified: {} against {} ({}): **{result}**",
                c.choice, c.alternative, c.constraint
            );
            if let Some(m) = &c.measured {
                let _ = writeln!(md, "\nMeasured: {m}");
            }
            if let Some(n) = &c.note {
                let _ = writeln!(md, "\n{}", n.replace('\n', " — "));
            }
            if let Some(dir) = &c.folder {
                let _ = writeln!(
                    md,
                    "\n![{} against {}]({dir}/contact-sheet.png)\n\nThe runs' report: [{dir}/report.md]({dir}/report.md)",
                    c.choice, c.alternative
                );
            }
        }
    }
    md
}

#[cfg(test)]
mod markdown_tests {
    use super::*;

    #[test]
    fn the_sheet_shows_answers_references_and_verdicts() {
        let mut answers = Answers::default();
        answers.answers.insert(
            'C',
            Answer {
                choice: Some(Approach::Lcm { steps: 4 }),
                notes: [
                    "under a second".into(),
                    String::new(),
                    String::new(),
                    String::new(),
                ],
                threshold: None,
            },
        );
        let checked = [Checked {
            key: 'C',
            choice: "LCM-LoRA 4".into(),
            alternative: "DPM-Solver++ 20".into(),
            constraint: Constraint::LatencyUnder { ms: 1000.0 }.describe(),
            verdict: Some(Verdict {
                passed: true,
                text: "58 ms against a limit of 1000 ms".into(),
            }),
            measured: Some("LCM-LoRA 4 58 ms".into()),
            evidence: None,
            note: None,
            folder: Some("scenario-C".into()),
        }];
        let md = markdown(&answers, &checked);
        for s in scenarios() {
            assert!(md.contains(&format!("## {}. {}", s.key, s.title)), "{md}");
            assert!(md.contains(&s.reference.label()), "{md}");
        }
        assert!(md.contains("**Your choice: LCM-LoRA 4**"), "{md}");
        assert!(md.contains("- speed: under a second"), "{md}");
        assert!(
            md.contains("**PASS — 58 ms against a limit of 1000 ms**"),
            "{md}"
        );
        assert!(md.contains("](scenario-C/contact-sheet.png)"), "{md}");
        assert!(md.contains("Measured: LCM-LoRA 4 58 ms"), "{md}");
        assert_eq!(md.matches("not answered yet").count(), 2, "A and B: {md}");
    }
}
