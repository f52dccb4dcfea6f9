//! Exercise 4 in the TUI, the decision cheat sheet. Each scenario is an [`ExerciseState`] of its
//! own — its verification: the alternative (the baseline), then the choice — so runs, previews,
//! the timing table, quality and saving work as for every exercise. On top: the user's answers
//! (kept in `cheatsheet.json` by the loop, see [`super::Effect::SaveAnswers`]), the answer form,
//! and the verdict of each scenario's constraint on its measured rows.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::app::{App, Effect, ExerciseState, Mode, table_rows};
use crate::exercises::cheatsheet::{
    self, Answer, Approach, Constraint, DIMENSIONS, Scenario, Verdict, Verification,
};

/// The approaches the form offers, in order; the last runs only on a model with a one-step
/// UNet ([`App::one_step`]).
pub const METHODS: [&str; 4] = [
    "DPM-Solver++",
    "LCM-LoRA",
    "LCM-LoRA + style",
    "one-step (SD-Turbo)",
];

/// Steps a method starts with when picked in the form.
const DEFAULT_STEPS: [usize; 4] = [20, 4, 4, 1];

/// Form rows: approach, steps, one per dimension, and the SSIM threshold where the scenario has one.
const APPROACH: usize = 0;
const STEPS: usize = 1;
const FIRST_NOTE: usize = 2;
const THRESHOLD: usize = FIRST_NOTE + DIMENSIONS.len();

/// Writing one scenario's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerForm {
    pub key: char,
    /// Index into [`METHODS`]; `None` until one is picked.
    pub method: Option<usize>,
    pub steps: String,
    pub notes: [String; 4],
    /// The SSIM threshold, for a scenario whose constraint has one.
    pub threshold: Option<String>,
    pub focus: usize,
    pub error: Option<String>,
}

impl AnswerForm {
    pub fn new(scenario: &Scenario, answer: Option<&Answer>) -> Self {
        let (method, steps) = match answer.and_then(|a| a.choice) {
            Some(Approach::DpmSolver { steps }) => (Some(0), steps.to_string()),
            Some(Approach::Lcm { steps }) => (Some(1), steps.to_string()),
            Some(Approach::LcmStyle { steps }) => (Some(2), steps.to_string()),
            Some(Approach::OneStep { steps }) => (Some(3), steps.to_string()),
            None => (None, String::new()),
        };
        let threshold = match scenario.constraint {
            Constraint::SimilarityAtLeast { min } => {
                Some(answer.and_then(|a| a.threshold).unwrap_or(min).to_string())
            }
            _ => None,
        };
        Self {
            key: scenario.key,
            method,
            steps,
            notes: answer.map(|a| a.notes.clone()).unwrap_or_default(),
            threshold,
            focus: APPROACH,
            error: None,
        }
    }

    /// Rows of the form (the threshold row only where there is one).
    pub fn rows(&self) -> usize {
        THRESHOLD + usize::from(self.threshold.is_some())
    }

    /// The row being typed into, if it takes text.
    fn text_mut(&mut self) -> Option<&mut String> {
        match self.focus {
            APPROACH => None,
            STEPS => Some(&mut self.steps),
            THRESHOLD => self.threshold.as_mut(),
            n => self.notes.get_mut(n - FIRST_NOTE),
        }
    }

    /// Picks the previous or next method; a fresh pick gets that method's usual steps.
    fn cycle(&mut self, forward: bool) {
        let n = METHODS.len();
        let next = match (self.method, forward) {
            (None, true) => 0,
            (None, false) => n - 1,
            (Some(m), true) => (m + 1) % n,
            (Some(m), false) => (m + n - 1) % n,
        };
        self.method = Some(next);
        self.steps = DEFAULT_STEPS
            .get(next)
            .map(|s| s.to_string())
            .unwrap_or_default();
    }

    /// The answer the form holds, or why it cannot be kept.
    pub fn answer(&self) -> Result<Answer, String> {
        let steps = || -> Result<usize, String> {
            self.steps
                .trim()
                .parse()
                .ok()
                .filter(|s| (1..=1000).contains(s))
                .ok_or_else(|| "steps: a whole number from 1 to 1000".to_string())
        };
        let choice = match self.method {
            None => None,
            Some(0) => Some(Approach::DpmSolver { steps: steps()? }),
            Some(1) => Some(Approach::Lcm { steps: steps()? }),
            Some(2) => Some(Approach::LcmStyle { steps: steps()? }),
            Some(_) => Some(Approach::OneStep { steps: steps()? }),
        };
        let threshold = match &self.threshold {
            None => None,
            Some(t) => Some(
                t.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|v| (-1.0..=1.0).contains(v))
                    .ok_or("SSIM threshold: a number from -1 to 1, e.g. 0.8")?,
            ),
        };
        Ok(Answer {
            choice,
            notes: self.notes.clone().map(|n| n.trim().to_string()),
            threshold,
        })
    }
}

/// The scenario states appended after the exercises, one per scenario, each verifying its
/// default choice until the user answers.
pub fn scenario_states() -> Vec<ExerciseState> {
    cheatsheet::scenarios()
        .iter()
        .map(|s| {
            let ex = Verification::exercise(s, s.default_choice, None, None)
                .expect("every scenario's default choice runs");
            ExerciseState {
                scenario: Some(s.key),
                ..ExerciseState::new(ex)
            }
        })
        .collect()
}

/// The scenario state `i` verifies, if it is one.
pub fn scenario_of(app: &App, i: usize) -> Option<Scenario> {
    let key = app.exercises.get(i)?.scenario?;
    cheatsheet::scenario(key).ok()
}

/// The choice a verification of scenario `s` runs: the user's, else the scenario's default.
pub fn choice(app: &App, s: &Scenario) -> Approach {
    app.answers
        .answers
        .get(&s.key)
        .and_then(|a| a.choice)
        .unwrap_or(s.default_choice)
}

/// Scenario `s`'s constraint with the user's threshold; for a verification under a ControlNet
/// (the model folder has one, see [`App::scenario_controls`]) also the control's.
pub fn constraint(app: &App, s: &Scenario) -> Constraint {
    s.constraint_for(
        app.answers.answers.get(&s.key).and_then(|a| a.threshold),
        app.scenario_controls.contains_key(&s.key),
    )
}

/// Each run's edge F1 in state `i` ([`crate::exercises::adherences`]).
pub fn adherence(app: &App, i: usize) -> Vec<Option<f64>> {
    let runs = &app.exercises[i].runs;
    crate::exercises::adherences(&runs.iter().map(|r| r.report.as_deref()).collect::<Vec<_>>())
}

/// The verdict on state `i`'s measured rows; `None` until both runs have finished.
pub fn verdict(app: &App, i: usize) -> Option<Verdict> {
    let s = scenario_of(app, i)?;
    cheatsheet::check_rows(
        constraint(app, &s),
        &table_rows(&app.exercises[i]),
        &adherence(app, i),
    )
}

/// What state `i`'s verification measured, as our reference answer cites it
/// ([`cheatsheet::evidence`]), and why part of it was not verified
/// ([`cheatsheet::uncontrolled_note`]).
pub fn evidence(app: &App, i: usize) -> (Option<String>, Option<String>) {
    let Some(s) = scenario_of(app, i) else {
        return (None, None);
    };
    let state = &app.exercises[i];
    (
        cheatsheet::evidence(&s, &table_rows(state), &adherence(app, i)),
        cheatsheet::uncontrolled_note(&s, &state.exercise),
    )
}

/// Whether a run of state `i` is going or queued.
pub fn busy_with(app: &App, i: usize) -> bool {
    app.active.is_some_and(|a| a.exercise == i) || app.queue.iter().any(|&(e, _)| e == i)
}

/// Makes state `i`'s runs the verification of the user's choice (when it can run): a run that
/// differs from what is wanted is replaced and reset (the alternative when the model's
/// ControlNet became known; the choice; the scenario's other level, which comes and goes with
/// the model's one-step UNet). Returns false when the choice cannot run here.
pub fn sync_choice(app: &mut App, i: usize) -> bool {
    let Some(s) = scenario_of(app, i) else {
        return true;
    };
    let choice = choice(app, &s);
    let control = app.scenario_controls.get(&s.key).cloned();
    let Ok(ex) = Verification::exercise(&s, choice, control.as_ref(), app.one_step.as_deref())
    else {
        return false;
    };
    let state = &mut app.exercises[i];
    if state.exercise.runs.len() != ex.runs.len() {
        *state = ExerciseState {
            scenario: Some(s.key),
            ..ExerciseState::new(ex)
        };
        return true;
    }
    let key = |r: &crate::exercises::RunSpec| {
        (
            r.scheduler,
            r.steps,
            r.cfg.to_bits(),
            r.unet.clone(),
            r.control.clone(),
        )
    };
    let mut changed = false;
    for (k, wanted) in ex.runs.iter().enumerate() {
        if key(&state.exercise.runs[k]) != key(wanted) {
            state.exercise.runs[k] = wanted.clone();
            state.reset_run(k);
            changed = true;
        }
    }
    if changed {
        state.exercise.title = ex.title;
        state.saved = None;
        for run in &mut state.runs {
            run.row.quality = None;
        }
    }
    true
}

/// The first state of the cheat sheet (its entry in the list), if there is one.
pub fn first_scenario(app: &App) -> Option<usize> {
    app.exercises.iter().position(|e| e.scenario.is_some())
}

/// Keys in the answer form: tab/↓ and shift-tab/↑ move, ←/→ (or space) pick the approach,
/// typing edits a text row, enter keeps the answer (and asks for it to be saved), esc drops it.
pub fn on_form_key(app: &mut App, mut form: AnswerForm, key: KeyEvent) -> Option<Effect> {
    let rows = form.rows();
    match key.code {
        KeyCode::Esc => {
            app.mode = Mode::Normal;
            return None;
        }
        KeyCode::Tab | KeyCode::Down => form.focus = (form.focus + 1) % rows,
        KeyCode::BackTab | KeyCode::Up => form.focus = (form.focus + rows - 1) % rows,
        KeyCode::Left if form.focus == APPROACH => form.cycle(false),
        KeyCode::Right if form.focus == APPROACH => form.cycle(true),
        KeyCode::Char(' ') if form.focus == APPROACH => form.cycle(true),
        KeyCode::Backspace => {
            if let Some(t) = form.text_mut() {
                t.pop();
            }
        }
        KeyCode::Char(c) if !key.modifiers.contains(KeyModifiers::CONTROL) => {
            if let Some(t) = form.text_mut() {
                t.push(c);
            }
        }
        KeyCode::Enter => match form.answer() {
            Ok(answer) => {
                app.mode = Mode::Normal;
                return keep_answer(app, form.key, answer);
            }
            Err(e) => form.error = Some(e),
        },
        _ => {}
    }
    app.mode = Mode::Answer(form);
    None
}

/// Stores `answer` for scenario `key`, lines its verification up with the new choice, and asks
/// the loop to write the answers file.
fn keep_answer(app: &mut App, key: char, answer: Answer) -> Option<Effect> {
    let changed = app.answers.answers.get(&key).map(|a| a.choice) != Some(answer.choice);
    app.answers.answers.insert(key, answer);
    let i = app.exercises.iter().position(|e| e.scenario == Some(key))?;
    let s = scenario_of(app, i)?;
    let chosen = choice(app, &s);
    app.status = Some(if chosen.run(app.one_step.as_deref()).is_none() {
        format!(
            "answer kept; {} cannot be verified here (the model has no one-step UNet): pick one speedscape runs to measure it",
            chosen.label()
        )
    } else if changed && busy_with(app, i) {
        "answer kept; the new choice runs at the next verify (a verification is going)".into()
    } else if changed && sync_choice(app, i) {
        format!(
            "answer kept: enter verifies {} against {}",
            chosen.label(),
            s.alternative.label()
        )
    } else {
        "answer kept".into()
    });
    Some(Effect::SaveAnswers(Box::new(app.answers.clone())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(key: char) -> AnswerForm {
        AnswerForm::new(&cheatsheet::scenario(key).unwrap(), None)
    }

    #[test]
    fn a_fresh_form_picks_nothing_and_b_has_a_threshold_row() {
        let a = form('A');
        assert_eq!(a.method, None, "no hint from a prefilled choice");
        assert_eq!(a.rows(), 6);
        let b = form('B');
        assert_eq!(b.threshold.as_deref(), Some("0.8"));
        assert_eq!(b.rows(), 7);
        assert_eq!(b.answer().unwrap().choice, None);
    }

    #[test]
    fn cycling_picks_a_method_with_its_usual_steps() {
        let mut f = form('C');
        f.cycle(true);
        assert_eq!(
            f.answer().unwrap().choice,
            Some(Approach::DpmSolver { steps: 20 })
        );
        f.cycle(true);
        assert_eq!(f.answer().unwrap().choice, Some(Approach::Lcm { steps: 4 }));
        f.cycle(false);
        f.cycle(false);
        assert_eq!(
            f.answer().unwrap().choice,
            Some(Approach::OneStep { steps: 1 })
        );
        f.cycle(true);
        f.steps = "0".into();
        assert!(f.answer().unwrap_err().starts_with("steps"));
    }

    #[test]
    fn the_form_round_trips_an_answer() {
        let s = cheatsheet::scenario('B').unwrap();
        let answer = Answer {
            choice: Some(Approach::LcmStyle { steps: 6 }),
            notes: ["a".into(), "b".into(), String::new(), "d".into()],
            threshold: Some(0.65),
        };
        assert_eq!(AnswerForm::new(&s, Some(&answer)).answer().unwrap(), answer);
        let mut f = AnswerForm::new(&s, Some(&answer));
        f.threshold = Some("1.5".into());
        assert!(f.answer().unwrap_err().contains("threshold"));
    }
}
