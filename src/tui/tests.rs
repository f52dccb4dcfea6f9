//! `update` fed with messages, and `draw` snapshots on ratatui's TestBackend with halfblocks.
//! All data is synthetic and fixed (the fake backend's timings), so snapshots are stable.

use std::path::PathBuf;
use std::time::Duration;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui_image::picker::Picker;

use super::app::{App, Effect, Mode, Msg, table_rows, update};
use super::fake;
use super::images::{Encoder, Images};
use super::ui;
use crate::exercises::cheatsheet::{Answer, Answers, Approach};
use crate::exercises::default_exercises;
use crate::models::ClipTokenizer;
use crate::pipeline::preview::PreviewKind;
use crate::report::table::RowState;
use crate::worker::{Event, RunId};

fn app() -> App {
    let mut app = App::new(default_exercises(), "set by --graphics".into());
    update(&mut app, Msg::Worker(Event::Ready(fake::info())));
    app
}

fn tokenizer() -> ClipTokenizer {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/tiny/tokenizer");
    ClipTokenizer::from_dir(&dir).unwrap()
}

fn key(code: KeyCode) -> Msg {
    Msg::Key(KeyEvent::new(code, KeyModifiers::NONE))
}

fn ch(c: char) -> Msg {
    key(KeyCode::Char(c))
}

fn typed(app: &mut App, text: &str) {
    for c in text.chars() {
        assert!(update(app, ch(c)).is_none());
    }
}

/// Answers a Submit effect the way the loop does; returns the run id given.
fn submitted(app: &mut App, effect: Option<Effect>, id: RunId) -> (usize, usize) {
    match effect {
        Some(Effect::Submit { exercise, run, .. }) => {
            assert!(update(app, Msg::Submitted { exercise, run, id }).is_none());
            (exercise, run)
        }
        other => panic!("expected Submit, got {other:?}"),
    }
}

fn request(app: &App, ex: usize, run: usize) -> crate::pipeline::Request {
    app.exercises[ex]
        .exercise
        .request(run, crate::rng::RngSource::TorchCpu)
}

fn step(run: RunId, index: usize, total: usize) -> Msg {
    Msg::Worker(Event::Step {
        run,
        index,
        total,
        timestep: 999,
        timing: fake::step_timing(),
        elapsed: Duration::from_millis(5 + 21 * (index as u64 + 1)),
    })
}

fn preview(run: RunId, index: usize) -> Msg {
    Msg::Worker(Event::Preview {
        run,
        index,
        image: fake::pattern(8, 42, index),
        kind: PreviewKind::Latent,
        took: Duration::from_micros(250),
    })
}

fn started(run: RunId, total_steps: usize) -> Msg {
    Msg::Worker(Event::Started {
        run,
        total_steps,
        width: 64,
        height: 64,
    })
}

fn finished(app: &App, run: RunId, ex: usize, idx: usize) -> Msg {
    let r = request(app, ex, idx);
    Msg::Worker(Event::Finished {
        run,
        report: Box::new(fake::report(&r)),
        image: fake::pattern(64, r.seed, r.steps),
    })
}

/// Runs `steps` steps of the active run `id` (with previews), without finishing it.
fn progress(app: &mut App, id: RunId, steps: usize, total: usize) {
    update(app, started(id, total));
    update(
        app,
        Msg::Worker(Event::Encoded {
            run: id,
            text: Duration::from_millis(5),
        }),
    );
    for i in 0..steps {
        assert!(update(app, step(id, i, total)).is_none());
        assert!(update(app, preview(id, i)).is_none());
    }
}

/// Runs the whole selected exercise to the end with ids 1, 2, 3…
fn run_all(app: &mut App) {
    let mut effect = update(app, ch('r'));
    let mut id = 1;
    while effect.is_some() {
        let (ex, r) = submitted(app, effect, id);
        let total = app.exercises[ex].exercise.runs[r].steps;
        progress(app, id, total, total);
        let m = finished(app, id, ex, r);
        effect = update(app, m);
        id += 1;
    }
}

#[test]
fn run_key_submits_the_first_run_and_queues_the_rest() {
    let mut app = app();
    let effect = update(&mut app, key(KeyCode::Enter));
    let (ex, run) = submitted(&mut app, effect, 7);
    assert_eq!((ex, run), (0, 0));
    assert_eq!(app.queue.len(), 2);
    assert_eq!(app.active_id(), Some(7));
    // A second run key while busy does nothing but say why.
    assert!(update(&mut app, ch('r')).is_none());
    assert!(app.status.as_deref().unwrap().contains("esc"));
}

#[test]
fn steps_give_progress_and_finishing_starts_the_next_run() {
    let mut app = app();
    let effect = update(&mut app, ch('r'));
    submitted(&mut app, effect, 1);
    progress(&mut app, 1, 10, 50);
    let run = &app.exercises[0].runs[0];
    assert_eq!(run.row.state, RowState::Running);
    assert_eq!(run.row.steps_done, 10);
    // 10 steps of 21 ms (UNet + scheduler): 47.6 it/s; 215 ms elapsed → 40 more steps ≈ 860 ms.
    assert!((run.row.its.unwrap() - 10.0 / 0.21).abs() < 1e-6);
    assert_eq!(run.eta().unwrap().as_millis(), 860);
    assert_eq!(run.preview_index, Some(9));
    let rows = table_rows(&app.exercises[0]);
    assert!(rows[0].partial);
    assert_eq!(rows[0].unet_ms_per_step, Some(20.0));
    assert_eq!(rows[0].vae_ms, None);
    // The rest of the run, then Finished: the next run is submitted.
    for i in 10..50 {
        update(&mut app, step(1, i, 50));
    }
    let next = {
        let m = finished(&app, 1, 0, 0);
        update(&mut app, m)
    };
    let (_, r) = submitted(&mut app, next, 2);
    assert_eq!(r, 1);
    let first = &app.exercises[0].runs[0];
    assert_eq!(first.row.state, RowState::Finished);
    assert!(first.image_final);
    assert_eq!(first.image.as_ref().unwrap().width(), 64);
}

#[test]
fn stale_run_ids_are_dropped() {
    let mut app = app();
    let effect = update(&mut app, ch('r'));
    submitted(&mut app, effect, 5);
    progress(&mut app, 5, 2, 50);
    let before = app.exercises[0].runs[0].clone();
    app.dirty = false;
    for msg in [
        step(4, 7, 50),
        preview(4, 7),
        started(99, 3),
        Msg::Worker(Event::Cancelled { run: 4 }),
        Msg::Worker(Event::Failed {
            run: 3,
            error: "old".into(),
        }),
    ] {
        assert!(update(&mut app, msg).is_none());
    }
    let after = &app.exercises[0].runs[0];
    assert_eq!(after.row.steps_done, before.row.steps_done);
    assert_eq!(after.image_gen, before.image_gen);
    assert_eq!(after.row.state, RowState::Running);
    assert_eq!(app.active_id(), Some(5));
    assert!(!app.dirty, "stale events must not cause a redraw");
}

#[test]
fn out_of_order_steps_and_previews_never_go_back() {
    let mut app = app();
    let effect = update(&mut app, ch('r'));
    submitted(&mut app, effect, 1);
    update(&mut app, started(1, 50));
    update(&mut app, step(1, 2, 50));
    update(&mut app, step(1, 1, 50));
    assert_eq!(app.exercises[0].runs[0].row.steps_done, 3);
    update(&mut app, preview(1, 2));
    let generation = app.exercises[0].runs[0].image_gen;
    update(&mut app, preview(1, 1));
    assert_eq!(app.exercises[0].runs[0].preview_index, Some(2));
    assert_eq!(app.exercises[0].runs[0].image_gen, generation);
    // Steps before Started still count (Started may be late); a preview after Finished is stale.
    {
        let m = finished(&app, 1, 0, 0);
        update(&mut app, m)
    };
    assert!(update(&mut app, preview(1, 49)).is_none());
    assert!(app.exercises[0].runs[0].image_final);
}

#[test]
fn cancel_mid_run_marks_it_cancelled_and_the_next_run_can_start() {
    let mut app = app();
    let effect = update(&mut app, ch('r'));
    submitted(&mut app, effect, 1);
    progress(&mut app, 1, 5, 50);
    match update(&mut app, key(KeyCode::Esc)) {
        Some(Effect::Cancel(1)) => {}
        other => panic!("{other:?}"),
    }
    assert!(app.queue.is_empty(), "esc also drops the queued runs");
    assert!(update(&mut app, Msg::Worker(Event::Cancelled { run: 1 })).is_none());
    assert_eq!(app.exercises[0].runs[0].row.state, RowState::Cancelled);
    assert_eq!(app.exercises[0].runs[1].row.state, RowState::Pending);
    assert!(app.active.is_none());
    // Esc with nothing running does nothing.
    assert!(update(&mut app, key(KeyCode::Esc)).is_none());
    // R reruns the selected run (the second panel).
    update(&mut app, key(KeyCode::Right));
    let effect = update(&mut app, ch('R'));
    assert_eq!(submitted(&mut app, effect, 2), (0, 1));
    assert!(app.queue.is_empty());
}

#[test]
fn quit_cancels_the_active_run() {
    let mut app = app();
    let effect = update(&mut app, ch('r'));
    submitted(&mut app, effect, 3);
    match update(&mut app, ch('q')) {
        Some(Effect::Quit { cancel: Some(3) }) => {}
        other => panic!("{other:?}"),
    }
    assert!(app.quit);
    let mut idle = self::app();
    assert!(matches!(
        update(&mut idle, ch('q')),
        Some(Effect::Quit { cancel: None })
    ));
}

#[test]
fn ctrl_c_quits_from_every_mode_and_q_only_from_the_normal_one() {
    let ctrl_c = || Msg::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
    for open in ['e', 'p', '?'] {
        let mut app = app();
        let effect = update(&mut app, ch('r'));
        submitted(&mut app, effect, 5);
        update(&mut app, ch('l')); // a queued run: the one going cannot be edited
        update(&mut app, ch(open));
        assert_ne!(app.mode, Mode::Normal, "{open}");
        // q is text in a form (or closes the help), never a quit there.
        assert!(update(&mut app, ch('q')).is_none(), "{open}");
        assert!(!app.quit, "{open}");
        update(&mut app, ch(open));
        match update(&mut app, ctrl_c()) {
            Some(Effect::Quit { cancel: Some(5) }) => {}
            other => panic!("{open}: {other:?}"),
        }
        assert!(app.quit, "{open}");
    }
}

#[test]
fn a_failed_run_is_marked_and_the_queue_goes_on() {
    let mut app = app();
    let effect = update(&mut app, ch('r'));
    submitted(&mut app, effect, 1);
    let next = update(
        &mut app,
        Msg::Worker(Event::Failed {
            run: 1,
            error: "no unet_lcm folder\nFix: export it".into(),
        }),
    );
    assert_eq!(app.exercises[0].runs[0].row.state, RowState::Failed);
    assert!(
        app.status
            .as_deref()
            .unwrap()
            .contains("no unet_lcm folder")
    );
    assert_eq!(submitted(&mut app, next, 2), (0, 1));
}

#[test]
fn fatal_worker_refuses_runs() {
    let mut app = app();
    update(
        &mut app,
        Msg::Worker(Event::Fatal {
            error: "no ONNX Runtime".into(),
        }),
    );
    assert!(update(&mut app, ch('r')).is_none());
    assert!(app.status.as_deref().unwrap().contains("could not start"));
}

#[test]
fn a_worker_dying_mid_run_fails_that_run_instead_of_leaving_it_going() {
    let mut app = app();
    let effect = update(&mut app, ch('r'));
    submitted(&mut app, effect, 4);
    progress(&mut app, 4, 3, 50);
    assert_eq!(app.exercises[0].runs[0].row.state, RowState::Running);
    let error = "the inference worker stopped: thread 'speedscape-worker' panicked";
    update(
        &mut app,
        Msg::Worker(Event::Fatal {
            error: error.into(),
        }),
    );
    let run = &app.exercises[0].runs[0];
    assert_eq!(run.row.state, RowState::Failed);
    assert_eq!(run.id, None);
    assert_eq!(run.error.as_deref(), Some(error));
    assert_eq!(app.active, None);
    assert!(app.queue.is_empty());
    assert_eq!(app.fatal.as_deref(), Some(error));
}

#[test]
fn moving_and_jumping() {
    let mut app = app();
    update(&mut app, ch('j'));
    assert_eq!(app.selected, 1);
    update(&mut app, key(KeyCode::Up));
    update(&mut app, key(KeyCode::Up));
    assert!(
        app.in_landscape(),
        "wraps around to the landscape, the last entry"
    );
    update(&mut app, key(KeyCode::Up));
    assert_eq!(app.current().exercise.number, 5, "then exercise 5");
    update(&mut app, key(KeyCode::Up));
    assert!(app.in_cheat_sheet(), "then the cheat sheet");
    update(&mut app, key(KeyCode::Up));
    assert_eq!(app.selected, 2);
    update(&mut app, ch('1'));
    assert_eq!(app.selected, 0);
    update(&mut app, ch('9'));
    assert_eq!(app.selected, 0);
    assert!(app.status.as_deref().unwrap().contains("no exercise 9"));
    update(&mut app, ch('l'));
    update(&mut app, ch('l'));
    update(&mut app, ch('l'));
    assert_eq!(app.selected_run, 2, "stops at the last panel");
    update(&mut app, ch('h'));
    assert_eq!(app.selected_run, 1);
    update(&mut app, ch('?'));
    assert_eq!(app.mode, Mode::Help);
    update(&mut app, ch('x'));
    assert_eq!(app.mode, Mode::Normal);
}

#[test]
fn the_editor_counts_tokens_and_applies_valid_values() {
    let mut app = app().with_tokenizer(Some(tokenizer()));
    update(&mut app, ch('e'));
    let Mode::Edit(form) = &app.mode else {
        panic!("no form")
    };
    assert_eq!(form.fields[0], default_exercises()[0].prompt);
    let (count, dropped) = form.tokens.unwrap();
    assert!(count > 5 && dropped == 0, "{count} {dropped}");
    typed(&mut app, &" very".repeat(80));
    let Mode::Edit(form) = &app.mode else {
        panic!()
    };
    let (count, dropped) = form.tokens.unwrap();
    assert_eq!(count, 75);
    assert!(dropped > 0);
    for _ in 0..(5 * 80) {
        update(&mut app, key(KeyCode::Backspace));
    }
    // steps: 50 → 30; cfg: garbage first.
    update(&mut app, key(KeyCode::Tab));
    update(&mut app, key(KeyCode::Backspace));
    update(&mut app, key(KeyCode::Backspace));
    typed(&mut app, "30");
    update(&mut app, key(KeyCode::Tab));
    typed(&mut app, "x");
    update(&mut app, key(KeyCode::Enter));
    let Mode::Edit(form) = &app.mode else {
        panic!("a bad cfg keeps the form open")
    };
    assert!(form.error.as_deref().unwrap().starts_with("cfg"));
    update(&mut app, key(KeyCode::Backspace));
    update(&mut app, key(KeyCode::Tab));
    typed(&mut app, "7");
    update(&mut app, key(KeyCode::Enter));
    assert_eq!(app.mode, Mode::Normal);
    let spec = &app.exercises[0].exercise.runs[0];
    assert_eq!(spec.steps, 30);
    assert_eq!(spec.label, "DDPM 30");
    assert_eq!(spec.cfg, 7.5);
    assert_eq!(spec.seed, Some(427));
    assert_eq!(spec.prompt, None, "the prompt is the exercise's again");
    // Esc leaves without changes.
    update(&mut app, ch('e'));
    typed(&mut app, "zzz");
    update(&mut app, key(KeyCode::Esc));
    assert_eq!(app.exercises[0].exercise.runs[0].prompt, None);
}

#[test]
fn predictions_are_typed_and_compared_with_measurements() {
    let mut app = app();
    update(&mut app, ch('p'));
    typed(&mut app, "2x.5"); // letters are ignored
    update(&mut app, key(KeyCode::Enter));
    assert_eq!(app.exercises[0].predictions[0], Some(2.5));
    let Mode::Predict(input) = &app.mode else {
        panic!("moves on to Q2")
    };
    assert_eq!(input.question, 1);
    typed(&mut app, "0");
    update(&mut app, key(KeyCode::Enter));
    assert!(matches!(&app.mode, Mode::Predict(i) if i.error.is_some()));
    update(&mut app, key(KeyCode::Backspace));
    typed(&mut app, "4");
    update(&mut app, key(KeyCode::Enter));
    assert_eq!(app.mode, Mode::Normal);
    assert_eq!(app.exercises[0].predictions, vec![Some(2.5), Some(4.0)]);
    run_all(&mut app);
    let rows = table_rows(&app.exercises[0]);
    let q = &app.exercises[0].exercise.questions[0];
    // Fake totals: 5 + 21·n + 15 ms → 1070 / 440.
    let got = q.measure.value(&rows, &[]).unwrap();
    assert!((got - 1070.0 / 440.0).abs() < 1e-9, "{got}");
    assert_eq!(rows[2].speedup, Some(1070.0 / 230.0));
}

#[test]
fn save_asks_only_when_something_finished() {
    let mut app = app();
    assert!(update(&mut app, ch('s')).is_none());
    run_all(&mut app);
    assert!(matches!(update(&mut app, ch('s')), Some(Effect::Save(0))));
    update(&mut app, Msg::Saved(Ok(PathBuf::from("out/exercise-1"))));
    assert!(app.status.as_deref().unwrap().contains("out/exercise-1"));
    assert_eq!(
        app.exercises[0].saved.as_deref(),
        Some(std::path::Path::new("out/exercise-1"))
    );
}

// ---- the cheat sheet (exercise 4) ----

/// The state index of cheat-sheet scenario `key`.
fn scenario_index(app: &App, key: char) -> usize {
    app.exercises
        .iter()
        .position(|e| e.scenario == Some(key))
        .unwrap()
}

fn shown_scenario(app: &App) -> Option<char> {
    app.current().scenario
}

#[test]
fn the_cheat_sheet_is_one_list_entry_whose_scenarios_h_and_l_switch() {
    let mut app = app();
    assert_eq!(
        app.entries().len(),
        6,
        "four exercises, the cheat sheet and the landscape"
    );
    update(&mut app, ch('4'));
    assert_eq!(shown_scenario(&app), Some('A'));
    assert_eq!(app.selected_run, 1, "R reruns the choice");
    update(&mut app, ch('l'));
    assert_eq!(shown_scenario(&app), Some('B'));
    update(&mut app, key(KeyCode::Right));
    assert_eq!(shown_scenario(&app), Some('C'));
    update(&mut app, ch('l'));
    assert_eq!(shown_scenario(&app), Some('A'), "wraps around");
    update(&mut app, ch('h'));
    assert_eq!(shown_scenario(&app), Some('C'));
    // Leaving (to exercise 5, the next entry) and coming back shows the scenario last shown.
    update(&mut app, ch('j'));
    assert_eq!(app.current().exercise.number, 5);
    update(&mut app, ch('k'));
    assert_eq!(shown_scenario(&app), Some('C'));
    assert_eq!(app.selected_entry(), 3);
    // A scenario's verification: the alternative (baseline) first, then the default choice.
    let ex = &app.current().exercise;
    assert_eq!(ex.number, 4);
    let labels: Vec<&str> = ex.runs.iter().map(|r| r.label.as_str()).collect();
    assert_eq!(labels, ["DPM-Solver++ 20", "LCM-LoRA 4"]);
    assert_eq!(ex.baseline, 0);
}

#[test]
fn writing_an_answer_keeps_it_runs_its_choice_and_asks_to_save_it() {
    let mut app = app();
    update(&mut app, ch('4'));
    update(&mut app, ch('l'));
    update(&mut app, ch('l'));
    update(&mut app, ch('e'));
    assert!(matches!(&app.mode, Mode::Answer(f) if f.key == 'C' && f.method.is_none()));
    update(&mut app, key(KeyCode::Right)); // DPM-Solver++ 20
    update(&mut app, key(KeyCode::Right)); // LCM-LoRA 4
    update(&mut app, key(KeyCode::Tab));
    update(&mut app, key(KeyCode::Backspace));
    typed(&mut app, "6");
    update(&mut app, key(KeyCode::Tab));
    typed(&mut app, "one UNet call a step");
    update(&mut app, key(KeyCode::Down));
    update(&mut app, key(KeyCode::Down));
    typed(&mut app, "fixed template");
    let effect = update(&mut app, key(KeyCode::Enter));
    assert_eq!(app.mode, Mode::Normal);
    let Some(Effect::SaveAnswers(saved)) = effect else {
        panic!("expected SaveAnswers, got {effect:?}")
    };
    let c = &saved.answers[&'C'];
    assert_eq!(c.choice, Some(Approach::Lcm { steps: 6 }));
    assert_eq!(c.notes[0], "one UNet call a step");
    assert_eq!(c.notes[1], "");
    assert_eq!(c.notes[2], "fixed template");
    assert_eq!(app.answers, *saved);
    // The verification now runs the new choice.
    let run = &app.exercises[scenario_index(&app, 'C')].exercise.runs[1];
    assert_eq!((run.label.as_str(), run.steps), ("LCM-LoRA 6", 6));
    assert!(
        app.status
            .as_deref()
            .unwrap()
            .contains("enter verifies LCM-LoRA 6")
    );
    // A bad step count keeps the form open with the reason; esc drops the edit.
    update(&mut app, ch('e'));
    update(&mut app, key(KeyCode::Tab));
    typed(&mut app, "x");
    assert!(update(&mut app, key(KeyCode::Enter)).is_none());
    assert!(
        matches!(&app.mode, Mode::Answer(f) if f.error.as_deref().unwrap().starts_with("steps"))
    );
    update(&mut app, key(KeyCode::Esc));
    assert_eq!(app.answers, *saved);
}

#[test]
fn a_save_refused_keeps_the_answers_and_says_why() {
    let mut app = app();
    update(
        &mut app,
        Msg::AnswersSaved(Err(
            "out/cheatsheet.json is damaged (EOF)\nFix: repair it".into()
        )),
    );
    let status = app.status.as_deref().unwrap();
    assert!(status.contains("kept in memory but not saved"), "{status}");
    assert!(status.contains("cheatsheet.json is damaged"), "{status}");
}

#[test]
fn loaded_answers_are_what_each_scenario_verifies() {
    let mut answers = Answers {
        format: 1,
        ..Answers::default()
    };
    answers.answers.insert(
        'A',
        Answer {
            choice: Some(Approach::Lcm { steps: 8 }),
            ..Answer::default()
        },
    );
    let app = app().with_answers(answers);
    let a = &app.exercises[scenario_index(&app, 'A')].exercise;
    assert_eq!(a.runs[0].label, "DPM-Solver++ 50", "A's alternative");
    assert_eq!(a.runs[1].label, "LCM-LoRA 8");
    assert_eq!(a.runs[1].unet, "lcm");
    assert_eq!(a.runs[1].cfg, 1.5);
}

/// Verifies the selected scenario with fake runs: 5 + 21·steps + 15 ms each.
fn verify(app: &mut App) {
    run_all(app);
}

#[test]
fn verifying_runs_the_alternative_then_the_choice_and_judges_the_constraint() {
    let mut app = app();
    update(&mut app, ch('4'));
    update(&mut app, ch('h')); // C
    let c = scenario_index(&app, 'C');
    let effect = update(&mut app, ch('r'));
    assert!(matches!(effect, Some(Effect::Submit { exercise, run: 0, .. }) if exercise == c));
    submitted(&mut app, effect, 1);
    assert_eq!(app.queue, [(c, 1)]);
    assert_eq!(
        super::cheat::verdict(&app, c),
        None,
        "not before both finish"
    );
    app.active = None;
    app.queue.clear();
    app.exercises[c].reset_run(0);
    verify(&mut app);
    // LCM-LoRA 4: 5 + 84 + 15 = 104 ms, under the 1000 ms limit.
    let v = super::cheat::verdict(&app, c).unwrap();
    assert!(v.passed);
    assert_eq!(v.text, "104 ms against a limit of 1000 ms");
    let rows = table_rows(&app.exercises[c]);
    assert!(rows[1].quality.is_some(), "SSIM against the alternative");

    // B with a threshold of 1.0 fails: the images differ.
    update(&mut app, ch('h'));
    let b = scenario_index(&app, 'B');
    assert_eq!(app.selected, b);
    update(&mut app, ch('e'));
    for _ in 0..6 {
        update(&mut app, key(KeyCode::Up));
    }
    let Mode::Answer(form) = &app.mode else {
        panic!()
    };
    assert_eq!(
        form.focus, 1,
        "up from the approach wraps to the threshold… and on"
    );
    for _ in 0..5 {
        update(&mut app, key(KeyCode::Down));
    }
    for _ in 0..3 {
        update(&mut app, key(KeyCode::Backspace));
    }
    typed(&mut app, "1.0");
    update(&mut app, key(KeyCode::Enter));
    verify(&mut app);
    let v = super::cheat::verdict(&app, b).unwrap();
    assert!(!v.passed, "{v:?}");
    assert!(v.text.contains("threshold of 1.00"), "{}", v.text);
}

#[test]
fn an_uninstalled_choice_is_kept_but_not_run() {
    let mut app = app();
    update(&mut app, ch('4'));
    update(&mut app, ch('e'));
    update(&mut app, key(KeyCode::Left)); // the last method: one-step
    update(&mut app, key(KeyCode::Enter));
    assert_eq!(
        app.answers.answers[&'A'].choice,
        Some(Approach::OneStep { steps: 1 }),
        "a fair answer to give"
    );
    assert!(update(&mut app, ch('r')).is_none());
    assert!(app.status.as_deref().unwrap().contains("not installed"));
    assert!(app.queue.is_empty() && app.active.is_none());
}

/// On a model with a one-step UNet: exercise 2 gains its run and question, scenario C verifies
/// both levels (the choice, then the other), and a one-step answer is verified like any other.
#[test]
fn a_one_step_unet_adds_its_runs_and_makes_the_one_step_answer_verifiable() {
    let mut app = app().with_one_step(Some("turbo".into()));
    let two = &app.exercises[1];
    assert_eq!(two.exercise.number, 2);
    let last = two.exercise.runs.last().unwrap();
    assert_eq!(
        (
            last.label.as_str(),
            last.scheduler,
            last.steps,
            last.cfg,
            last.unet.as_str()
        ),
        (
            "one-step (turbo) 1",
            crate::schedulers::SchedulerKind::Euler,
            1,
            0.0,
            "turbo"
        )
    );
    assert_eq!(two.runs.len(), 4, "a run state for the new run");
    assert_eq!(two.predictions.len(), two.exercise.questions.len());
    assert!(
        two.exercise
            .questions
            .last()
            .unwrap()
            .text
            .contains("one-step")
    );
    let one = &app.exercises[0];
    assert_eq!(one.exercise.runs.len(), 3, "exercise 1 does not ask for it");
    let c = (0..app.exercises.len())
        .find(|&i| app.exercises[i].scenario == Some('C'))
        .unwrap();
    let labels = |app: &App| -> Vec<String> {
        app.exercises[c]
            .exercise
            .runs
            .iter()
            .map(|r| r.label.clone())
            .collect()
    };
    assert_eq!(
        labels(&app),
        ["DPM-Solver++ 20", "LCM-LoRA 4", "one-step (turbo) 1"]
    );
    // Answer C with the one-step model: it is verified, LCM-LoRA 4 beside it.
    update(&mut app, ch('4'));
    while crate::tui::cheat::scenario_of(&app, app.selected).map(|s| s.key) != Some('C') {
        update(&mut app, key(KeyCode::Right));
    }
    update(&mut app, ch('e'));
    update(&mut app, key(KeyCode::Left));
    update(&mut app, key(KeyCode::Enter));
    assert_eq!(
        app.answers.answers[&'C'].choice,
        Some(Approach::OneStep { steps: 1 })
    );
    assert_eq!(
        labels(&app),
        ["DPM-Solver++ 20", "one-step (turbo) 1", "LCM-LoRA 4"]
    );
    update(&mut app, ch('r'));
    assert!(
        !app.status
            .as_deref()
            .unwrap_or("")
            .contains("not installed"),
        "{:?}",
        app.status
    );
    assert!(
        app.active.is_some() || !app.queue.is_empty(),
        "the verification runs"
    );
}

#[test]
fn a_shows_our_answer_and_any_key_closes_it() {
    let mut app = app();
    update(&mut app, ch('a'));
    assert_eq!(app.mode, Mode::Normal, "only in the cheat sheet");
    update(&mut app, ch('4'));
    update(&mut app, ch('a'));
    assert_eq!(app.mode, Mode::Reference('A'));
    assert_eq!(app.revealed, ['A']);
    update(&mut app, ch('x'));
    assert_eq!(app.mode, Mode::Normal);
}

#[test]
fn s_in_the_cheat_sheet_saves_every_verified_scenario_with_the_sheet() {
    let mut app = app();
    update(&mut app, ch('4'));
    update(&mut app, ch('h')); // C
    update(&mut app, ch('e'));
    update(&mut app, key(KeyCode::Right));
    update(&mut app, key(KeyCode::Right));
    for _ in 0..2 {
        update(&mut app, key(KeyCode::Tab));
    }
    typed(&mut app, "under a second");
    update(&mut app, key(KeyCode::Enter));
    verify(&mut app);
    assert!(matches!(update(&mut app, ch('s')), Some(Effect::SaveSheet)));
    let root = tempfile::tempdir().unwrap();
    let saver = super::FolderSaver {
        root: root.path().to_path_buf(),
    };
    let dir = super::save_sheet(&app, &saver).unwrap();
    let md = std::fs::read_to_string(dir.join("cheatsheet.md")).unwrap();
    assert!(md.contains("**Your choice: LCM-LoRA 4**"), "{md}");
    assert!(md.contains("- speed: under a second"), "{md}");
    assert!(
        md.contains("**PASS — 104 ms against a limit of 1000 ms**"),
        "{md}"
    );
    assert!(dir.join("scenario-C/contact-sheet.png").is_file());
    assert!(!dir.join("scenario-A").exists(), "A was not run");
    let kept = Answers::load(&dir.join("cheatsheet.json")).unwrap();
    assert_eq!(kept, app.answers);
}

/// Runs the selected exercise's first `n` runs (ids 1, 2, …) to `Finished` with the fake
/// report, `edit` changing each (run index, report) first.
fn finish_runs(app: &mut App, n: usize, edit: impl Fn(usize, &mut crate::pipeline::RunReport)) {
    let mut effect = update(app, ch('r'));
    for id in 1..=n as RunId {
        let (ex, r) = submitted(app, effect, id);
        let req = request(app, ex, r);
        let mut report = fake::report(&req);
        edit(r, &mut report);
        update(app, started(id, report.steps));
        effect = update(
            app,
            Msg::Worker(Event::Finished {
                run: id,
                report: Box::new(report),
                image: fake::pattern(64, req.seed, req.steps),
            }),
        );
    }
}

#[test]
fn a_finished_run_without_steps_has_no_ms_per_step_in_the_tui_table() {
    let mut app = app();
    finish_runs(&mut app, 1, |_, report| {
        report.steps = 0;
        report.timings.unet.clear();
        report.timings.scheduler.clear();
    });
    let rows = table_rows(&app.exercises[0]);
    assert_eq!(rows[0].state, RowState::Finished);
    assert_eq!(rows[0].unet_ms, Some(0.0));
    // Nothing to divide by: no value (the headless table's "-"), not a made-up 0 ms.
    assert_eq!(rows[0].unet_ms_per_step, None);
    assert_eq!(rows[0].its, None);
}

#[test]
fn a_zero_time_baseline_gives_no_speedup_in_the_tui_table() {
    let mut app = app();
    finish_runs(&mut app, 2, |r, report| {
        if r == 0 {
            report.timings.total = Duration::ZERO;
        }
    });
    let rows = table_rows(&app.exercises[0]);
    assert_eq!(
        (rows[0].state, rows[1].state),
        (RowState::Finished, RowState::Finished)
    );
    assert_eq!(rows[0].total_ms, Some(0.0));
    assert!(rows[1].total_ms.is_some_and(|t| t > 0.0));
    assert_eq!(rows[1].speedup, None, "not 0×");
    let screen = render(&app, 160, 48);
    assert!(!screen.contains("0.00×"), "{screen}");
}

#[test]
fn a_cancelled_run_keeps_its_partial_numbers_as_in_the_headless_table() {
    let mut app = app();
    let effect = update(&mut app, ch('r'));
    submitted(&mut app, effect, 1);
    progress(&mut app, 1, 5, 50);
    update(&mut app, Msg::Worker(Event::Cancelled { run: 1 }));
    let row = &table_rows(&app.exercises[0])[0];
    assert_eq!(row.state, RowState::Cancelled);
    assert!(row.partial, "the numbers are those of 5 of 50 steps");
    assert_eq!((row.steps_done, row.steps), (5, 50));
    assert_eq!(row.unet_ms, Some(100.0));
    assert_eq!(row.unet_ms_per_step, Some(20.0));
    assert_eq!(row.speedup, None);
}

// ---- draw snapshots ----

#[test]
fn finished_runs_get_quality_numbers_against_the_baseline_image() {
    let mut app = app();
    run_all(&mut app);
    let ex = &app.exercises[0];
    let rows = table_rows(ex);
    let baseline = ex.runs[0].image.as_deref().unwrap();
    assert!(rows[0].is_baseline && rows[0].quality.is_none());
    for (i, (row, run)) in rows.iter().zip(&ex.runs).enumerate().skip(1) {
        let image = run.image.as_deref().unwrap();
        let want = crate::quality::compare(baseline, image).unwrap();
        assert_eq!(row.quality, Some(want), "run {i}");
        assert!(want.ssim < 1.0, "the fake images differ by step count");
    }
}

fn render(app: &App, w: u16, h: u16) -> String {
    let mut images = Images::new(Picker::halfblocks(), Encoder::Inline);
    images.sync(app);
    let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
    term.draw(|f| ui::draw(app, &mut images, f)).unwrap();
    format!("{}", term.backend())
}

fn mid_run() -> App {
    let mut app = app();
    update(&mut app, ch('p'));
    typed(&mut app, "3");
    update(&mut app, key(KeyCode::Esc));
    let effect = update(&mut app, ch('r'));
    submitted(&mut app, effect, 1);
    progress(&mut app, 1, 50, 50);
    let next = {
        let m = finished(&app, 1, 0, 0);
        update(&mut app, m)
    };
    submitted(&mut app, next, 2);
    update(
        &mut app,
        Msg::Worker(Event::Loading {
            run: 2,
            component: "unet".into(),
        }),
    );
    update(
        &mut app,
        Msg::Worker(Event::Loaded {
            run: 2,
            component: "unet".into(),
            load: Duration::from_millis(2100),
            warm_up: Duration::from_millis(350),
        }),
    );
    progress(&mut app, 2, 12, 20);
    app
}

fn finished_app() -> App {
    let mut app = app();
    update(&mut app, ch('p'));
    typed(&mut app, "2");
    update(&mut app, key(KeyCode::Enter));
    typed(&mut app, "5");
    update(&mut app, key(KeyCode::Enter));
    run_all(&mut app);
    update(&mut app, ch('l'));
    app
}

#[test]
fn snapshot_idle() {
    let app = app();
    insta::assert_snapshot!("idle_80x24", render(&app, 80, 24));
    insta::assert_snapshot!("idle_160x48", render(&app, 160, 48));
}

#[test]
fn snapshot_mid_run() {
    let app = mid_run();
    insta::assert_snapshot!("mid_run_80x24", render(&app, 80, 24));
    insta::assert_snapshot!("mid_run_160x48", render(&app, 160, 48));
}

#[test]
fn snapshot_finished() {
    let app = finished_app();
    insta::assert_snapshot!("finished_80x24", render(&app, 80, 24));
    insta::assert_snapshot!("finished_160x48", render(&app, 160, 48));
}

#[test]
fn snapshot_help() {
    let mut app = mid_run();
    update(&mut app, ch('?'));
    insta::assert_snapshot!("help_80x24", render(&app, 80, 24));
    insta::assert_snapshot!("help_160x48", render(&app, 160, 48));
}

#[test]
fn snapshot_editor_and_prediction() {
    let mut app = app().with_tokenizer(Some(tokenizer()));
    update(&mut app, ch('e'));
    insta::assert_snapshot!("editor_80x24", render(&app, 80, 24));
    update(&mut app, key(KeyCode::Esc));
    update(&mut app, ch('p'));
    typed(&mut app, "2.5");
    insta::assert_snapshot!("predict_80x24", render(&app, 80, 24));
}

#[test]
fn snapshot_too_small() {
    let app = app();
    insta::assert_snapshot!("too_small_60x20", render(&app, 60, 20));
    // Mid-run at 40×10: the message, not a broken layout.
    let app = mid_run();
    insta::assert_snapshot!("too_small_mid_run_40x10", render(&app, 40, 10));
}

#[test]
fn the_layout_needs_80x24_and_comes_back_at_that_size() {
    let app = mid_run();
    for (w, h) in [(79, 24), (80, 23), (40, 10)] {
        let screen = render(&app, w, h);
        assert!(
            screen.contains(&format!("terminal too small: {w}×{h}")),
            "{screen}"
        );
        assert!(
            screen.contains("speedscape needs at least 80×24"),
            "{screen}"
        );
        assert!(!screen.contains("Exercises"), "{screen}");
    }
    // The same state at the minimum size: the whole layout, the run's progress in it.
    let screen = render(&app, 80, 24);
    assert!(!screen.contains("too small"), "{screen}");
    assert!(screen.contains("Exercises"), "{screen}");
    assert!(screen.contains("▶ DPM-Solver++ 20  step 12/20"), "{screen}");
}

#[test]
fn help_reports_the_bytes_of_a_preview_frame() {
    let mut app = mid_run();
    update(&mut app, ch('?'));
    let mut images = Images::new(Picker::halfblocks(), Encoder::Inline);
    images.sync(&app);
    let mut term = Terminal::new(TestBackend::new(160, 48)).unwrap();
    term.draw(|f| ui::draw(&app, &mut images, f)).unwrap();
    let bytes = images.preview_bytes.expect("a preview was drawn");
    assert!(
        bytes > 0 && bytes < super::images::PREVIEW_BUDGET,
        "{bytes}"
    );
    assert!(images.final_bytes.is_some());
}

/// The cheat sheet on scenario C with an answer written and half of another being typed.
fn cheat_sheet_app() -> App {
    let mut app = app();
    update(&mut app, ch('4'));
    update(&mut app, ch('h'));
    update(&mut app, ch('e'));
    update(&mut app, key(KeyCode::Right));
    update(&mut app, key(KeyCode::Right));
    update(&mut app, key(KeyCode::Tab));
    update(&mut app, key(KeyCode::Tab));
    typed(&mut app, "4 steps at cfg 1.5: one UNet call a step");
    update(&mut app, key(KeyCode::Tab));
    typed(&mut app, "softer, fine for a test");
    update(&mut app, key(KeyCode::Tab));
    typed(&mut app, "fixed template, no negative prompt");
    update(&mut app, key(KeyCode::Tab));
    typed(&mut app, "stacks with a brand LoRA");
    update(&mut app, key(KeyCode::Enter));
    app
}

#[test]
fn snapshot_cheat_sheet() {
    let mut app = self::app();
    update(&mut app, ch('4'));
    insta::assert_snapshot!("cheat_idle_80x24", render(&app, 80, 24));
    let mut app = cheat_sheet_app();
    insta::assert_snapshot!("cheat_answered_160x48", render(&app, 160, 48));
    // The form, reopened on the kept answer.
    update(&mut app, ch('e'));
    update(&mut app, key(KeyCode::Tab));
    insta::assert_snapshot!("cheat_form_80x24", render(&app, 80, 24));
    update(&mut app, key(KeyCode::Esc));
    // Verified: PASS with the numbers; our answer looked at.
    verify(&mut app);
    update(&mut app, ch('a'));
    insta::assert_snapshot!("cheat_reference_80x24", render(&app, 80, 24));
    update(&mut app, ch('x'));
    insta::assert_snapshot!("cheat_verified_80x24", render(&app, 80, 24));
    insta::assert_snapshot!("cheat_verified_160x48", render(&app, 160, 48));
    // B: its threshold row, and a FAIL at a threshold of 1.
    update(&mut app, ch('h'));
    update(&mut app, ch('e'));
    insta::assert_snapshot!("cheat_form_b_80x24", render(&app, 80, 24));
}

/// The panels' text with the borders and line ends taken out, so wrapped words join again.
fn panel_text(screen: &str) -> String {
    screen
        .lines()
        .map(|l| l.trim_matches('"').replace(['│', '┃'], " "))
        .map(|l| l.trim().to_string())
        .collect::<Vec<_>>()
        .join(" ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn a_model_that_cannot_open_fills_the_panel_with_its_fix_and_the_app_keeps_running() {
    let mut app = App::new(default_exercises(), "set by --graphics".into());
    let error = "model component vae_decoder is missing: /m/sd15 has no vae_decoder/ folder\nFix: copy vae_decoder/ from the export it came from";
    update(
        &mut app,
        Msg::Worker(Event::Fatal {
            error: error.into(),
        }),
    );
    let text = panel_text(&render(&app, 160, 48));
    assert!(text.contains("worker failed"), "{text}");
    assert!(
        text.contains("model component vae_decoder is missing: /m/sd15 has no vae_decoder/ folder"),
        "{text}"
    );
    assert!(
        text.contains("Fix: copy vae_decoder/ from the export it came from"),
        "{text}"
    );
    // Still running: keys are handled, runs are refused with the reason, q quits.
    assert!(update(&mut app, ch('r')).is_none());
    assert!(app.status.as_deref().unwrap().contains("could not start"));
    update(&mut app, ch('j'));
    assert_eq!(app.selected, 1, "moving still works");
    assert!(matches!(
        update(&mut app, ch('q')),
        Some(Effect::Quit { cancel: None })
    ));
}

#[test]
fn a_run_that_runs_out_of_memory_shows_why_and_the_fix_in_its_panel() {
    let mut app = app();
    let effect = update(&mut app, ch('r'));
    submitted(&mut app, effect, 1);
    let error = "out of GPU memory while running the UNet unet at 512×512 (batch 2): asked for 4.5 MiB\nONNX Runtime: CUDA failure 2: out of memory\nFix: keep fewer UNet variants loaded at once";
    let next = update(
        &mut app,
        Msg::Worker(Event::Failed {
            run: 1,
            error: error.into(),
        }),
    );
    assert_eq!(app.exercises[0].runs[0].row.state, RowState::Failed);
    assert_eq!(app.exercises[0].runs[0].error.as_deref(), Some(error));
    let text = panel_text(&render(&app, 160, 48));
    assert!(text.contains("out of GPU memory while running"), "{text}");
    assert!(text.contains("Fix: keep fewer UNet variants"), "{text}");
    // The queue goes on with the next run.
    assert_eq!(submitted(&mut app, next, 2), (0, 1));
}

#[test]
fn fallbacks_taken_at_start_are_shown_not_silent() {
    let mut app = App::new(default_exercises(), "set by --graphics".into());
    let mut info = fake::info();
    info.notes = vec!["device auto: CUDA is not usable (a CPU-only build); running on CPU".into()];
    update(&mut app, Msg::Worker(Event::Ready(info)));
    assert_eq!(
        app.status.as_deref(),
        Some("note: device auto: CUDA is not usable (a CPU-only build); running on CPU")
    );
    let screen = render(&app, 160, 48);
    assert!(screen.contains("CUDA is not usable"), "{screen}");
}

mod random_input {
    //! 1,000 random keys among worker events in random interleavings: `update` never panics and
    //! the state stays whole (see `check`).

    use std::path::PathBuf;
    use std::time::Duration;

    use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
    use proptest::prelude::*;

    use super::{app, fake};
    use crate::report::table::RowState;
    use crate::tui::app::{Active, App, Effect, Mode, Msg, update};
    use crate::worker::{Event, RunId};

    #[derive(Debug, Clone)]
    enum Input {
        Key(KeyEvent),
        /// A worker event of kind `kind` for the active run, or for a stale id when `stale`;
        /// `n` picks a step index.
        Worker {
            kind: u8,
            stale: bool,
            n: usize,
        },
    }

    fn key() -> impl Strategy<Value = KeyEvent> {
        let code = prop_oneof![
            // Printable ASCII without q; q (a quit key) on its own, rarely.
            200 => proptest::char::range(' ', '~')
                .prop_filter("q apart", |c| *c != 'q')
                .prop_map(KeyCode::Char),
            1 => Just(KeyCode::Char('q')),
            10 => proptest::char::range('\u{a0}', '\u{2fff}').prop_map(KeyCode::Char),
            60 => prop_oneof![
                Just(KeyCode::Enter),
                Just(KeyCode::Esc),
                Just(KeyCode::Tab),
                Just(KeyCode::BackTab),
                Just(KeyCode::Backspace),
                Just(KeyCode::Up),
                Just(KeyCode::Down),
                Just(KeyCode::Left),
                Just(KeyCode::Right),
                Just(KeyCode::Home),
                Just(KeyCode::Delete),
                (1u8..=12).prop_map(KeyCode::F),
            ],
        ];
        let modifiers = prop_oneof![
            30 => Just(KeyModifiers::NONE),
            3 => Just(KeyModifiers::SHIFT),
            1 => Just(KeyModifiers::ALT),
            1 => Just(KeyModifiers::CONTROL),
        ];
        let kind = prop_oneof![
            8 => Just(KeyEventKind::Press),
            1 => Just(KeyEventKind::Repeat),
            1 => Just(KeyEventKind::Release),
        ];
        (code, modifiers, kind).prop_map(|(c, m, k)| KeyEvent::new_with_kind(c, m, k))
    }

    fn input() -> impl Strategy<Value = Input> {
        prop_oneof![
            3 => key().prop_map(Input::Key),
            2 => (0u8..12, proptest::bool::weighted(0.1), 0usize..60)
                .prop_map(|(kind, stale, n)| Input::Worker { kind, stale, n }),
        ]
    }

    fn is_quit_key(key: &KeyEvent, mode: &Mode) -> bool {
        if key.kind == KeyEventKind::Release {
            return false;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        (ctrl && key.code == KeyCode::Char('c'))
            || (!ctrl && key.code == KeyCode::Char('q') && *mode == Mode::Normal)
    }

    /// The worker event `kind` for run `run` (the active one's request when there is one).
    fn event(app: &App, kind: u8, run: RunId, n: usize) -> Event {
        let (steps, request) = match app.active {
            Some(Active {
                exercise, run: r, ..
            }) => {
                let req = app.exercises[exercise]
                    .exercise
                    .request(r, crate::rng::RngSource::TorchCpu);
                (req.steps.max(1), Some(req))
            }
            None => (10, None),
        };
        let index = n % steps;
        match kind {
            0 => Event::Loading {
                run,
                component: "unet".into(),
            },
            1 => Event::Loaded {
                run,
                component: "unet".into(),
                load: Duration::from_millis(100),
                warm_up: Duration::from_millis(10),
            },
            2 => Event::Started {
                run,
                total_steps: steps,
                width: 16,
                height: 16,
            },
            3 => Event::Encoded {
                run,
                text: Duration::from_millis(5),
            },
            4 | 5 => Event::Step {
                run,
                index,
                total: steps,
                timestep: 999,
                timing: fake::step_timing(),
                elapsed: Duration::from_millis(21 * (index as u64 + 1)),
            },
            6 => Event::Preview {
                run,
                index,
                image: fake::pattern(4, 1, index),
                kind: crate::pipeline::preview::PreviewKind::Decoder,
                took: Duration::from_millis(1),
            },
            7 => match request {
                Some(req) => Event::Finished {
                    run,
                    report: Box::new(fake::report(&req)),
                    image: fake::pattern(16, req.seed, req.steps),
                },
                None => Event::Cancelled { run },
            },
            8 => Event::Cancelled { run },
            9 => Event::Failed {
                run,
                error: "it broke\nFix: none".into(),
            },
            10 if n == 0 => Event::Fatal {
                error: "the worker died\nFix: none".into(),
            },
            _ => Event::Ready(fake::info()),
        }
    }

    /// The state is whole.
    fn check(app: &App) {
        assert!(app.selected < app.exercises.len());
        assert!(app.selected_run < app.current().runs.len());
        let mut going = 0;
        for (e, ex) in app.exercises.iter().enumerate() {
            assert_eq!(ex.runs.len(), ex.exercise.runs.len());
            for (r, run) in ex.runs.iter().enumerate() {
                let is_active = app.active.is_some_and(|a| a.exercise == e && a.run == r);
                if matches!(run.row.state, RowState::Running | RowState::Loading) {
                    going += 1;
                    assert!(
                        is_active,
                        "run {e}/{r} is {:?} but not active",
                        run.row.state
                    );
                    assert!(
                        run.report.is_none(),
                        "run {e}/{r} is both going and finished"
                    );
                }
                if run.row.state == RowState::Finished {
                    assert!(run.report.is_some() && run.image_final, "run {e}/{r}");
                }
                if let Some(id) = run.id {
                    assert!(is_active && app.active_id() == Some(id), "run {e}/{r}");
                }
            }
        }
        assert!(going <= 1, "{going} runs going at once");
        if app.active.is_none() {
            assert!(app.queue.is_empty(), "a queue with no active run");
        }
    }

    /// Checks an effect against the state that asked for it, then does what the loop does.
    fn carry_out(app: &mut App, effect: Effect, next_id: &mut RunId) -> Option<Effect> {
        match effect {
            Effect::Submit {
                exercise,
                run,
                request,
            } => {
                assert_eq!(
                    app.active,
                    Some(Active {
                        exercise,
                        run,
                        id: None
                    })
                );
                assert_eq!(
                    request.steps,
                    app.exercises[exercise].exercise.runs[run].steps
                );
                *next_id += 1;
                update(
                    app,
                    Msg::Submitted {
                        exercise,
                        run,
                        id: *next_id,
                    },
                )
            }
            Effect::Cancel(id) => {
                assert_eq!(app.active_id(), Some(id));
                None
            }
            Effect::Save(i) => {
                assert!(app.exercises[i].runs.iter().any(|r| r.report.is_some()));
                update(app, Msg::Saved(Ok(PathBuf::from("/nowhere/saved"))))
            }
            Effect::SaveSheet => update(app, Msg::Saved(Err("disk full".into()))),
            Effect::SaveLandscape => {
                let l = app.current().landscape.as_deref();
                assert!(l.is_some_and(|l| l.measured.iter().any(Option::is_some)));
                update(app, Msg::Saved(Ok(PathBuf::from("/nowhere/sweep"))))
            }
            Effect::SaveAnswers(_) => update(app, Msg::AnswersSaved(Ok(PathBuf::from("/a")))),
            Effect::Quit { cancel } => {
                assert!(app.quit);
                assert_eq!(cancel, app.active_id());
                None
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 128,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn random_keys_and_worker_events_keep_the_state_whole(
            inputs in proptest::collection::vec(input(), 1..1000)
        ) {
            let mut app = app();
            let mut next_id: RunId = 100;
            for input in inputs {
                let msg = match input {
                    Input::Key(k) => Msg::Key(k),
                    Input::Worker { kind, stale, n } => {
                        let id = match app.active_id() {
                            Some(id) if !stale => id,
                            _ => 1 + n as RunId,
                        };
                        Msg::Worker(event(&app, kind, id, n))
                    }
                };
                let quit_key = match &msg {
                    Msg::Key(k) => is_quit_key(k, &app.mode),
                    _ => false,
                };
                let mut effect = update(&mut app, msg);
                let mut quit_effects = 0;
                while let Some(e) = effect.take() {
                    quit_effects += usize::from(matches!(e, Effect::Quit { .. }));
                    effect = carry_out(&mut app, e, &mut next_id);
                }
                check(&app);
                prop_assert_eq!(app.quit, quit_key, "quit only on q (normal mode) or ctrl-c");
                prop_assert_eq!(quit_effects, usize::from(quit_key));
                if app.quit {
                    break;
                }
            }
        }
    }
}

mod event_loop {
    //! The loop itself, on a test terminal, with the input as a channel.

    use std::pin::Pin;
    use std::sync::Mutex;
    use std::task::{Context, Poll};
    use std::time::Duration;

    use crossterm::event::{Event as TermEvent, KeyCode, KeyEvent, KeyModifiers};
    use futures_core::Stream;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use ratatui_image::picker::Picker;
    use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

    use super::fake;
    use crate::exercises::default_exercises;
    use crate::tui::{App, End, FolderSaver, Input, RunBackend, Signals, event_loop};
    use crate::worker::{Job, RunId};

    /// The fake backend, recording what the loop asked of it.
    struct Recording {
        inner: Box<dyn RunBackend>,
        submitted: Mutex<Vec<RunId>>,
        cancelled: Mutex<Vec<RunId>>,
    }

    impl RunBackend for Recording {
        fn submit(&self, job: Job) {
            self.submitted.lock().unwrap().push(job.run);
            self.inner.submit(job);
        }
        fn cancel(&self, run: RunId) {
            self.cancelled.lock().unwrap().push(run);
            self.inner.cancel(run);
        }
        fn next_run_id(&self) -> RunId {
            self.inner.next_run_id()
        }
    }

    struct Keys(UnboundedReceiver<std::io::Result<TermEvent>>);

    impl Stream for Keys {
        type Item = std::io::Result<TermEvent>;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.0.poll_recv(cx)
        }
    }

    /// Starts exercise 1 (`r`) on a fake whose runs take far longer than the test (the first run
    /// loads for 10 s), then sends `last` (if any) and ends the input after 200 ms.
    async fn run_then(
        last: Option<std::io::Result<TermEvent>>,
    ) -> (color_eyre::Result<End>, Vec<RunId>, Vec<RunId>, String) {
        let (inner, events) = fake::spawn(Duration::from_secs(5));
        let backend = Recording {
            inner,
            submitted: Mutex::new(Vec::new()),
            cancelled: Mutex::new(Vec::new()),
        };
        let (tx, rx): (UnboundedSender<_>, _) = unbounded_channel();
        tx.send(Ok(TermEvent::Key(KeyEvent::new(
            KeyCode::Char('r'),
            KeyModifiers::NONE,
        ))))
        .unwrap();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Some(ev) = last {
                let _ = tx.send(ev);
            }
            drop(tx);
        });
        let out = tempfile::tempdir().unwrap();
        let saver = FolderSaver {
            root: out.path().to_path_buf(),
        };
        let mut terminal = Terminal::new(TestBackend::new(120, 40)).unwrap();
        let mut app = App::new(default_exercises(), "halfblocks".into());
        let end = event_loop(
            &mut terminal,
            &mut app,
            Picker::halfblocks(),
            &backend,
            events,
            &saver,
            Input {
                events: Keys(rx),
                signals: Signals::none(),
                #[cfg(feature = "test-hooks")]
                panic_key: false,
            },
        )
        .await;
        assert_eq!(
            std::fs::read_dir(out.path()).unwrap().count(),
            0,
            "nothing saved"
        );
        let screen = format!("{}", terminal.backend());
        let submitted = backend.submitted.lock().unwrap().clone();
        let cancelled = backend.cancelled.lock().unwrap().clone();
        (end, submitted, cancelled, screen)
    }

    #[tokio::test]
    async fn the_input_ending_mid_run_cancels_the_run_and_ends_the_loop() {
        let (end, submitted, cancelled, screen) = run_then(None).await;
        assert_eq!(
            end.unwrap(),
            End::InputClosed {
                stopped: "the run under way (DDPM 50) was cancelled, and the 2 runs queued after it dropped".into()
            }
        );
        assert_eq!(submitted.len(), 1, "only the first run was sent");
        assert_eq!(cancelled, submitted, "and it was cancelled");
        assert!(screen.contains("▶ DDPM 50"), "{screen}");
    }

    #[tokio::test]
    async fn an_input_error_mid_run_cancels_the_run_and_is_returned() {
        let eio = std::io::Error::other("Input/output error");
        let (end, submitted, cancelled, _) = run_then(Some(Err(eio))).await;
        let e = format!("{:#}", end.unwrap_err());
        assert_eq!(e, "reading terminal events: Input/output error");
        assert_eq!(submitted.len(), 1);
        assert_eq!(cancelled, submitted);
    }
}

#[test]
fn the_editor_shows_a_red_warning_when_the_prompt_is_over_75_tokens() {
    let mut app = app().with_tokenizer(Some(tokenizer()));
    update(&mut app, ch('e'));
    let screen = render(&app, 100, 30);
    assert!(!screen.contains("are dropped"), "{screen}");
    typed(&mut app, &" cat".repeat(80));
    let Mode::Edit(form) = &app.mode else {
        panic!("no form")
    };
    let (count, dropped) = form.tokens.unwrap();
    let screen = render(&app, 100, 30);
    assert!(
        screen.contains(&format!(
            "{}/75 tokens: the last {dropped} are dropped",
            count + dropped
        )),
        "{screen}"
    );
}

#[test]
fn the_editor_refuses_cfg_above_the_pipelines_bound() {
    let mut app = app();
    update(&mut app, ch('e'));
    update(&mut app, key(KeyCode::Tab));
    update(&mut app, key(KeyCode::Tab));
    for _ in 0..5 {
        update(&mut app, key(KeyCode::Backspace));
    }
    typed(&mut app, "101");
    update(&mut app, key(KeyCode::Enter));
    let Mode::Edit(form) = &app.mode else {
        panic!("cfg 101 keeps the form open")
    };
    assert_eq!(
        form.error.as_deref(),
        Some("cfg: a number from 0 to 100 (7.5 for DDPM/DPM-Solver++, 1.5 for LCM)")
    );
    for _ in 0..3 {
        update(&mut app, key(KeyCode::Backspace));
    }
    typed(&mut app, "100");
    update(&mut app, key(KeyCode::Enter));
    assert_eq!(app.mode, Mode::Normal);
    assert_eq!(app.exercises[0].exercise.runs[0].cfg, 100.0);
}

#[test]
fn the_editor_accepts_an_empty_prompt_as_the_cli_does() {
    let mut app = app();
    update(&mut app, ch('e'));
    let Mode::Edit(form) = &app.mode else {
        panic!("e opens the editor")
    };
    for _ in 0..form.fields[0].chars().count() {
        update(&mut app, key(KeyCode::Backspace));
    }
    update(&mut app, key(KeyCode::Enter));
    assert_eq!(app.mode, Mode::Normal);
    let request = app.exercises[0]
        .exercise
        .request(0, crate::rng::RngSource::TorchCpu);
    assert_eq!(request.prompt, "");
}

/// The editor asks the run's own scheduler: LCM takes at most its original 50 steps, as
/// diffusers' LCMScheduler does, and the form says so instead of the run failing later.
#[test]
fn the_editor_refuses_steps_the_runs_scheduler_cannot_take() {
    let mut app = app();
    update(&mut app, ch('2'));
    update(&mut app, ch('l')); // LCM-LoRA 8
    update(&mut app, ch('e'));
    update(&mut app, key(KeyCode::Tab));
    update(&mut app, key(KeyCode::Backspace));
    typed(&mut app, "60");
    update(&mut app, key(KeyCode::Enter));
    let Mode::Edit(form) = &app.mode else {
        panic!("LCM 60 keeps the form open")
    };
    let error = form.error.as_deref().unwrap_or_default();
    assert!(
        error.starts_with("steps: lcm cannot run 60 steps")
            && error.contains("Fix: use at most 50 steps"),
        "{error}"
    );
    for _ in 0..2 {
        update(&mut app, key(KeyCode::Backspace));
    }
    typed(&mut app, "50");
    update(&mut app, key(KeyCode::Enter));
    assert_eq!(app.mode, Mode::Normal);
    assert_eq!(app.exercises[1].exercise.runs[1].steps, 50);
}

fn style(weight: f32) -> crate::lora::AdapterWeight {
    crate::lora::AdapterWeight {
        adapter: "style".into(),
        weight,
    }
}

/// `[` / `]` in exercise 3: the selected run's style weight (fused in its variant or not) by
/// ∓0.1, that run alone again, the weight in its row and the file's digest in the table.
#[test]
fn brackets_change_the_selected_runs_style_weight_and_rerun_that_run() {
    let mut app = app();
    update(&mut app, ch('3'));
    assert!(
        render(&app, 120, 40).contains("[ ] style −/+0.1"),
        "the footer shows the keys"
    );
    update(&mut app, ch('l'));
    update(&mut app, ch('l')); // style + LCM-LoRA, LCM 4: the lcm_style variant
    let effect = update(&mut app, ch('['));
    let Some(Effect::Submit {
        exercise,
        run,
        request,
    }) = &effect
    else {
        panic!("[ reruns the run: {effect:?}")
    };
    assert_eq!((*exercise, *run), (2, 2));
    // lcm_style has style fused at 1: the run moves to lcm with style at 0.9 on top.
    assert_eq!(request.unet, "lcm");
    assert_eq!(request.loras, [style(0.9)]);
    assert!(app.queue.is_empty(), "only that run");
    assert_eq!(
        app.status.as_deref(),
        Some("style + LCM-LoRA, LCM 4: UNet lcm + style×0.9, running it again")
    );
    submitted(&mut app, effect, 7);
    // Busy: the keys wait.
    assert!(update(&mut app, ch(']')).is_none());
    assert!(app.status.as_deref().unwrap().starts_with("a run is going"));
    let done = finished(&app, 7, 2, 2);
    update(&mut app, done);
    let rows = table_rows(&app.exercises[2]);
    assert_eq!(rows[2].unet_label(), "lcm + style×0.9");
    assert_eq!(rows[2].adapters[0].sha256, "0123456789abcdef".repeat(4));
    let screen = render(&app, 160, 48);
    assert!(screen.contains("lcm + style×0.9"), "{screen}");
    assert!(
        screen.contains("style×0.9 0123456789ab"),
        "the digest: {screen}"
    );
    // ] twice: 1.0, then 1.1 (the variant stays lcm).
    for (id, want) in [(8, 1.0), (9, 1.1)] {
        let effect = update(&mut app, ch(']'));
        let Some(Effect::Submit { request, .. }) = &effect else {
            panic!("] reruns the run")
        };
        assert_eq!(
            (request.unet.as_str(), request.loras.clone()),
            ("lcm", vec![style(want)])
        );
        submitted(&mut app, effect, id);
        update(&mut app, Msg::Worker(Event::Cancelled { run: id }));
    }
    // The baseline (the style variant) goes to base + style; a run without style gets it.
    update(&mut app, ch('h'));
    update(&mut app, ch('h'));
    let press = |app: &mut App, c: char, id: RunId| {
        let effect = update(app, ch(c));
        let Some(Effect::Submit { request, .. }) = &effect else {
            panic!("{c} reruns the run: {effect:?}")
        };
        let got = (request.unet.clone(), request.loras.clone());
        submitted(app, effect, id);
        update(app, Msg::Worker(Event::Cancelled { run: id }));
        got
    };
    assert_eq!(press(&mut app, '[', 10), ("base".into(), vec![style(0.9)]));
    update(&mut app, ch('l')); // LCM-LoRA, LCM 4: no style at all
    assert_eq!(press(&mut app, ']', 11), ("lcm".into(), vec![style(0.1)]));
    // Clamped to ±10.
    app.exercises[2].exercise.runs[1].lora = vec![style(9.95)];
    assert_eq!(press(&mut app, ']', 12), ("lcm".into(), vec![style(10.0)]));
}

#[test]
fn brackets_say_why_when_the_folder_has_no_style_adapter() {
    let mut app = App::new(default_exercises(), "halfblocks".into());
    let mut info = fake::info();
    info.adapters = vec!["lcm".into()];
    update(&mut app, Msg::Worker(Event::Ready(info)));
    update(&mut app, ch('3'));
    assert!(update(&mut app, ch('[')).is_none());
    assert!(
        app.status
            .as_deref()
            .unwrap()
            .contains("has no style adapter"),
        "{:?}",
        app.status
    );
    assert!(app.exercises[2].exercise.runs[0].lora.is_empty());
}

/// The editor lists the model folder's adapters: a weight typed applies one, a bad one is
/// refused in the form, an empty one removes it.
#[test]
fn the_editor_sets_adapter_weights_from_the_folders_list() {
    let mut app = app();
    update(&mut app, ch('3'));
    update(&mut app, ch('e'));
    let Mode::Edit(form) = &app.mode else {
        panic!("e opens the editor")
    };
    assert_eq!(
        form.adapters,
        [
            ("lcm".to_string(), String::new()),
            ("style".to_string(), String::new())
        ]
    );
    assert!(
        render(&app, 120, 40).contains("on UNet style, which has style×1 fused in"),
        "the variant's own adapters are said"
    );
    for _ in 0..5 {
        update(&mut app, key(KeyCode::Tab));
    }
    typed(&mut app, "11");
    update(&mut app, key(KeyCode::Enter));
    let Mode::Edit(form) = &app.mode else {
        panic!("a weight of 11 keeps the form open")
    };
    assert_eq!(
        form.error.as_deref(),
        Some("LoRA style: a weight from -10 to 10 (1 as trained; empty: not applied)")
    );
    update(&mut app, key(KeyCode::Backspace));
    update(&mut app, key(KeyCode::Backspace));
    typed(&mut app, "-0.5");
    update(&mut app, key(KeyCode::Enter));
    assert_eq!(app.mode, Mode::Normal);
    let spec = &app.exercises[2].exercise.runs[0];
    assert_eq!(spec.lora, [style(-0.5)]);
    assert_eq!(request(&app, 2, 0).loras, [style(-0.5)]);
    assert!(render(&app, 160, 48).contains("style + style×-0.5"));
    // Reopened, it shows the weight; emptied, the adapter goes.
    update(&mut app, ch('e'));
    let Mode::Edit(form) = &app.mode else {
        panic!()
    };
    assert_eq!(form.adapters[1].1, "-0.5");
    // From the prompt back round, past the four control rows, to style.
    for _ in 0..5 {
        update(&mut app, key(KeyCode::BackTab));
    }
    for _ in 0..4 {
        update(&mut app, key(KeyCode::Backspace));
    }
    update(&mut app, key(KeyCode::Enter));
    assert!(app.exercises[2].exercise.runs[0].lora.is_empty());
}

// ---- the speed landscape ----

mod landscape_view {
    //! The landscape entry: `L` opens it, enter runs (and resumes) its sweep through the same
    //! queue, each finished run is measured against its seed's reference, and the chart and
    //! table draw what was measured.

    use std::path::PathBuf;

    use crossterm::event::KeyCode;

    use super::{app, ch, finished, key, render, step, submitted};
    use crate::quality::{Quality, compare};
    use crate::report::table::RowState;
    use crate::sweep::headless::measure;
    use crate::sweep::{IDENTICAL, Measured, Sweep, SweepConfig, Target};
    use crate::tui::app::{App, Effect, Msg, update};
    use crate::tui::landscape::{self, RowKind};
    use crate::worker::{Event, RunId};

    /// A small sweep: every method at `steps`, `seeds` seeds (2 + 3 × steps × seeds runs for 2).
    fn sweep(seeds: usize, steps: &[usize]) -> Sweep {
        let cfg = SweepConfig {
            seeds,
            ..SweepConfig::default()
        };
        Sweep::from_config(&cfg, None)
            .unwrap()
            .with_steps(steps)
            .unwrap()
    }

    fn index(app: &App) -> usize {
        landscape::index(app).expect("the app has a landscape")
    }

    fn measured(app: &App) -> Vec<Option<Measured>> {
        app.exercises[index(app)]
            .landscape
            .as_ref()
            .unwrap()
            .measured
            .clone()
    }

    /// The landscape's run `run`, finished through the loop's messages; the next effect.
    fn finish(app: &mut App, id: RunId, run: usize) -> Option<Effect> {
        let li = index(app);
        let m = finished(app, id, li, run);
        update(app, m)
    }

    /// Runs the landscape's queue until `count` runs have finished (ids from `*id` on); returns
    /// the effect that submits the next one.
    fn finish_runs(
        app: &mut App,
        mut effect: Option<Effect>,
        count: usize,
        id: &mut RunId,
    ) -> Option<Effect> {
        for _ in 0..count {
            let (_, run) = submitted(app, effect, *id);
            effect = finish(app, *id, run);
            *id += 1;
        }
        effect
    }

    #[test]
    fn capital_l_opens_the_landscape_from_exercises_1_and_2_and_goes_back() {
        for (digit, from) in [('1', 0), ('2', 1), ('3', 2)] {
            let mut app = app();
            update(&mut app, ch(digit));
            assert_eq!(app.selected, from);
            assert!(update(&mut app, ch('L')).is_none());
            assert!(app.in_landscape(), "L from exercise {digit}");
            assert_eq!(app.selected, index(&app));
            assert_eq!(app.selected_run, 0);
            assert!(render(&app, 80, 24).contains("The speed landscape"));
            // L again goes back where it came from.
            update(&mut app, ch('L'));
            assert_eq!(app.selected, from, "back to exercise {digit}");
        }
    }

    #[test]
    fn the_landscape_is_the_last_entry_of_the_list() {
        let mut app = app();
        let li = index(&app);
        assert_eq!(app.entries().last(), Some(&li));
        // 1 → 2 → 3 → cheat sheet → 5 → landscape, and on round to 1.
        for _ in 0..5 {
            update(&mut app, ch('j'));
        }
        assert!(app.in_landscape());
        let screen = render(&app, 160, 48);
        assert!(screen.contains("▶ L The speed landscape"), "{screen}");
        update(&mut app, ch('j'));
        assert_eq!(app.selected, 0);
        update(&mut app, ch('k'));
        assert!(app.in_landscape(), "k wraps back to it");
        // Digits still jump to exercises from it.
        update(&mut app, ch('2'));
        assert_eq!(app.selected, 1);
    }

    #[test]
    fn enter_queues_every_run_of_the_plan_in_order() {
        let s = sweep(2, &[2, 4]);
        let mut app = app().with_sweep(&s);
        let plan = s.plan();
        update(&mut app, ch('L'));
        let li = index(&app);
        let effect = update(&mut app, key(KeyCode::Enter));
        let Some(Effect::Submit {
            exercise,
            run,
            request,
        }) = &effect
        else {
            panic!("{effect:?}");
        };
        assert_eq!((*exercise, *run), (li, 0));
        let spec = &plan.runs[0].spec;
        assert_eq!(
            (request.steps, request.seed, request.scheduler),
            (spec.steps, spec.seed.unwrap(), spec.scheduler)
        );
        let queued: Vec<(usize, usize)> = app.queue.iter().copied().collect();
        let want: Vec<(usize, usize)> = (1..plan.runs.len()).map(|r| (li, r)).collect();
        assert_eq!(queued, want);
        assert_eq!(plan.runs.len(), 2 + 3 * 2 * 2);
        // The queue submits each run's own request (its seed, steps, UNet and cfg).
        let mut id = 1;
        let mut effect = effect;
        for r in 0..plan.runs.len() {
            let Some(Effect::Submit { run, request, .. }) = &effect else {
                panic!("run {r}: {effect:?}");
            };
            let spec = &plan.runs[r].spec;
            assert_eq!(*run, r);
            assert_eq!(request.seed, spec.seed.unwrap(), "run {r}");
            assert_eq!(
                (request.steps, request.unet.as_str(), request.guidance),
                (spec.steps, spec.unet.as_str(), spec.cfg)
            );
            assert!(request.clip_score, "run {r} asks for its CLIP score");
            effect = finish_runs(&mut app, effect, 1, &mut id);
        }
        assert!(effect.is_none() && app.active.is_none());
        assert!(measured(&app).iter().all(Option::is_some));
        // Everything done: enter says so and runs nothing; R starts over.
        assert!(update(&mut app, key(KeyCode::Enter)).is_none());
        assert!(app.status.as_deref().unwrap().contains("R runs it again"));
        let effect = update(&mut app, ch('R'));
        assert!(matches!(effect, Some(Effect::Submit { run: 0, .. })));
        assert_eq!(app.queue.len(), plan.runs.len() - 1);
        assert!(measured(&app).iter().all(Option::is_none), "from scratch");
    }

    #[test]
    fn after_a_cancel_enter_resumes_with_only_the_runs_not_finished() {
        let s = sweep(2, &[2, 4]);
        let mut app = app().with_sweep(&s);
        update(&mut app, ch('L'));
        let li = index(&app);
        let mut id = 1;
        let effect = update(&mut app, key(KeyCode::Enter));
        // Runs 0–2 finish, 3 fails, 4 finishes, 5 is cancelled mid-run.
        let effect = finish_runs(&mut app, effect, 3, &mut id);
        submitted(&mut app, effect, id);
        let effect = update(
            &mut app,
            Msg::Worker(Event::Failed {
                run: id,
                error: "no unet_lcm folder\nFix: export it".into(),
            }),
        );
        id += 1;
        let effect = finish_runs(&mut app, effect, 1, &mut id);
        let (_, five) = submitted(&mut app, effect, id);
        assert_eq!(five, 5);
        update(&mut app, step(id, 0, 2));
        assert!(matches!(
            update(&mut app, key(KeyCode::Esc)),
            Some(Effect::Cancel(i)) if i == id
        ));
        assert!(app.queue.is_empty());
        update(&mut app, Msg::Worker(Event::Cancelled { run: id }));
        assert!(app.active.is_none());
        let done: Vec<bool> = measured(&app).iter().map(Option::is_some).collect();
        assert_eq!(&done[..6], [true, true, true, false, true, false]);
        let screen = render(&app, 160, 48);
        assert!(screen.contains("4 of 14 runs done · 1 failed"), "{screen}");
        // Resume: the failed and the cancelled run, then the rest; the finished are kept.
        let effect = update(&mut app, key(KeyCode::Enter));
        assert!(matches!(effect, Some(Effect::Submit { run: 3, .. })));
        let queued: Vec<usize> = app
            .queue
            .iter()
            .map(|&(e, r)| {
                assert_eq!(e, li);
                r
            })
            .collect();
        assert_eq!(queued, [5, 6, 7, 8, 9, 10, 11, 12, 13]);
        assert!(
            app.status
                .as_deref()
                .unwrap()
                .contains("10 of 14 runs left")
        );
        assert_eq!(app.exercises[li].runs[0].row.state, RowState::Finished);
        assert_eq!(measured(&app).iter().flatten().count(), 4);
    }

    #[test]
    fn a_finished_run_is_measured_against_its_own_seeds_reference() {
        let s = sweep(2, &[2, 4]);
        let plan = s.plan();
        let mut app = app().with_sweep(&s);
        update(&mut app, ch('L'));
        let li = index(&app);
        let mut id = 1;
        let effect = update(&mut app, key(KeyCode::Enter));
        finish_runs(&mut app, effect, 4, &mut id);
        let m = measured(&app);
        // The references are their own images.
        assert_eq!(m[0].unwrap().quality, IDENTICAL);
        assert_eq!(m[1].unwrap().quality, IDENTICAL);
        // Run 3 is seed 43's: compared with run 1 (seed 43's reference), not run 0.
        assert_eq!(plan.runs[3].seed_index, 1);
        assert_eq!(plan.reference_for(3), 1);
        let runs = &app.exercises[li].runs;
        let image = |r: usize| runs[r].image.as_deref().unwrap();
        let want = measure(
            &plan,
            3,
            image(3),
            runs[3].report.as_deref().unwrap(),
            Some(image(1)),
            None,
        )
        .unwrap();
        assert_eq!(m[3], Some(want));
        assert_eq!(want.quality, compare(image(1), image(3)).unwrap());
        let other: Quality = compare(image(0), image(3)).unwrap();
        assert_ne!(
            want.quality, other,
            "seed 42's reference would give other numbers"
        );
        // The run's whole time, as the report has it.
        let total = runs[3].report.as_ref().unwrap().timings.total;
        assert_eq!(want.total_ms, total.as_secs_f64() * 1e3);
        // And the exercise baseline's comparison is not made for landscape runs.
        assert!(runs[3].row.quality.is_none());
    }

    /// Made-up SSIM for method `m` at `steps` and seed index `k`: DPM-Solver++ rises to its
    /// best by 15 steps, LCM-LoRA is flat from 4, DDPM still rises at 100.
    fn made_up_ssim(m: usize, steps: usize, k: usize) -> f64 {
        let n = steps as f64;
        let base = match m {
            0 => 0.99 - 0.55 * (-n / 4.0).exp(),
            1 => 0.62 + 0.2 * (1.0 - (-n / 1.5).exp()),
            _ => 0.70 + 0.25 * (1.0 - (-n / 60.0).exp()),
        };
        base - 0.004 * k as f64
    }

    /// Overwrites every measured point with made-up SSIM (the times stay the fake reports').
    fn make_up(app: &mut App) {
        let li = index(app);
        let l = app.exercises[li].landscape.as_deref_mut().unwrap();
        for (i, r) in l.plan.runs.iter().enumerate() {
            if let (Some(m), Target::Point { method, steps }) = (&mut l.measured[i], r.target) {
                let ssim = made_up_ssim(method, steps, r.seed_index);
                m.quality = Quality {
                    psnr_db: Some(12.0 + 20.0 * ssim),
                    ssim,
                    mean_abs_diff: 0.0,
                };
            }
        }
    }

    /// The default methods with 2 seeds, everything but DDPM finished, DDPM 50's second seed
    /// 12 steps in.
    fn partly_finished() -> App {
        let s = Sweep::from_config(
            &SweepConfig {
                seeds: 2,
                ..SweepConfig::default()
            },
            None,
        )
        .unwrap();
        let mut app = app().with_sweep(&s);
        update(&mut app, ch('L'));
        let mut id = 1;
        let effect = update(&mut app, key(KeyCode::Enter));
        // 2 references, 7 + 6 points of 2 seeds, DDPM 25 and DDPM 50's first seed.
        let effect = finish_runs(&mut app, effect, 2 + 26 + 3, &mut id);
        let (_, run) = submitted(&mut app, effect, id);
        assert_eq!(
            app.exercises[index(&app)].exercise.runs[run].label,
            "DDPM 50 · seed 43"
        );
        update(&mut app, super::started(id, 50));
        for i in 0..12 {
            update(&mut app, step(id, i, 50));
        }
        make_up(&mut app);
        app
    }

    #[test]
    fn the_table_marks_each_methods_knee_on_its_row() {
        let app = partly_finished();
        let l = app.exercises[index(&app)].landscape.as_deref().unwrap();
        let land = landscape::landscape(l);
        let rows = landscape::table(&land);
        let knees: Vec<(RowKind, usize)> = rows
            .iter()
            .filter(|r| r.knee)
            .map(|r| (r.kind, r.point.steps))
            .collect();
        // DPM-Solver++ is within 0.02 of its best (0.99 at 50) from 15 steps (0.976); LCM-LoRA
        // within 0.02 of 0.82 from 4 (0.813); DDPM's best so far is its last point.
        assert_eq!(
            knees,
            [
                (RowKind::Point { series: 0 }, 15),
                (RowKind::Point { series: 1 }, 4),
                (RowKind::Point { series: 2 }, 50),
            ]
        );
        assert_eq!(rows[0].kind, RowKind::Reference);
        // On screen: the knee mark on the rows that say so, nowhere else.
        let screen = render(&app, 160, 48);
        let marked: Vec<&str> = screen.lines().filter(|l| l.contains("◀ █")).collect();
        assert_eq!(marked.len(), 3, "{screen}");
        assert!(
            marked[0].contains("DPM-Solver++") && marked[0].contains(" 15 "),
            "{screen}"
        );
        assert!(
            marked[1].contains("LCM-LoRA") && marked[1].contains(" 4 "),
            "{screen}"
        );
        assert!(
            marked[2].contains("DDPM") && marked[2].contains(" 50 "),
            "{screen}"
        );
        // DDPM 50 has one of its two seeds: a partial point, its run under way.
        assert!(
            marked[2].contains("1/2") && marked[2].contains("▶"),
            "{screen}"
        );
    }

    #[test]
    fn snapshot_landscape() {
        let app = partly_finished();
        let small = render(&app, 80, 24);
        let large = render(&app, 160, 48);
        for screen in [&small, &large] {
            assert!(
                screen.contains("Note: random-weight tiny model"),
                "{screen}"
            );
            assert!(
                screen.contains("run 32/34: DDPM 50 · seed 43, step 12/50"),
                "{screen}"
            );
            assert!(screen.contains("◀ █"), "the knee in the table: {screen}");
            assert!(
                screen.contains(" ms ") || screen.contains(" s "),
                "time labels: {screen}"
            );
        }
        insta::assert_snapshot!("landscape_80x24", small);
        insta::assert_snapshot!("landscape_160x48", large);
    }

    #[test]
    fn snapshot_landscape_before_any_run_and_scrolled() {
        let mut app = app();
        update(&mut app, ch('L'));
        insta::assert_snapshot!("landscape_idle_80x24", render(&app, 80, 24));
        // h/l pick a table row: the table scrolls to keep it in view.
        let mut app = partly_finished();
        for _ in 0..40 {
            update(&mut app, ch('h'));
        }
        let l = app.exercises[index(&app)].landscape.as_deref().unwrap();
        assert_eq!(l.row, Some(0), "h stops at the first row");
        let screen = render(&app, 80, 24);
        assert!(screen.contains("rows 1–"), "{screen}");
        insta::assert_snapshot!("landscape_top_rows_80x24", screen);
    }

    #[test]
    fn s_saves_the_landscape_once_something_finished() {
        let s = sweep(1, &[2]);
        let mut app = app().with_sweep(&s);
        update(&mut app, ch('L'));
        assert!(update(&mut app, ch('s')).is_none());
        assert!(app.status.as_deref().unwrap().contains("nothing finished"));
        let mut id = 1;
        let effect = update(&mut app, key(KeyCode::Enter));
        finish_runs(&mut app, effect, 2, &mut id);
        assert!(matches!(
            update(&mut app, ch('s')),
            Some(Effect::SaveLandscape)
        ));
        // What is saved: the runs as the headless sweep has them.
        let outcome = landscape::outcome(&app, index(&app)).unwrap();
        assert_eq!(outcome.measured, measured(&app));
        assert!(outcome.images[0].is_some() && outcome.reports[1].is_some());
        assert!(outcome.errors[0].is_none());
        assert!(outcome.errors[2].as_deref().unwrap().contains("not run"));
        update(&mut app, Msg::Saved(Ok(PathBuf::from("out/sweep-1"))));
        assert!(app.status.as_deref().unwrap().contains("out/sweep-1"));
        // e and p say why they do nothing here.
        update(&mut app, ch('e'));
        assert!(
            app.status
                .as_deref()
                .unwrap()
                .contains("[sweep] in config.toml")
        );
        update(&mut app, ch('p'));
        assert!(app.status.as_deref().unwrap().contains("no questions"));
    }

    #[test]
    fn saving_writes_the_sweep_folder() {
        use crate::tui::save::{FolderSaver, Saver};
        let s = sweep(1, &[2, 4]);
        let mut app = app().with_sweep(&s);
        update(&mut app, ch('L'));
        let mut id = 1;
        let effect = update(&mut app, key(KeyCode::Enter));
        finish_runs(&mut app, effect, 4, &mut id);
        let root = tempfile::tempdir().unwrap();
        let saver = FolderSaver {
            root: root.path().to_path_buf(),
        };
        let outcome = landscape::outcome(&app, index(&app)).unwrap();
        let dir = saver.save_sweep(&outcome).unwrap();
        for f in ["plot.png", "points.csv", "sweep.json", "summary.md"] {
            assert!(dir.join(f).is_file(), "{f}");
        }
        let csv = std::fs::read_to_string(dir.join("points.csv")).unwrap();
        assert!(csv.contains("DPM-Solver++"), "{csv}");
    }
}

/// The app on the micro model: its kind's prompts, and a Ready that carries its world.
fn micro_app() -> App {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/micro");
    let manifest = crate::models::Manifest::read(&root).unwrap().unwrap();
    let mut app = App::new(default_exercises(), "set by --graphics".into())
        .with_model_kind(crate::models::ModelKind::Micro)
        .with_tokenizer(ClipTokenizer::from_dir(&root.join("tokenizer")).ok());
    let mut info = fake::info();
    info.tiny_model = false;
    info.kind = crate::models::ModelKind::Micro;
    info.grammar = manifest.micro.map(|m| Box::new(m.grammar));
    update(&mut app, Msg::Worker(Event::Ready(info)));
    app
}

#[test]
fn on_the_micro_model_every_exercise_and_scenario_asks_for_its_world() {
    let app = micro_app();
    let star = "a large yellow star on a blue background at sunset";
    assert_eq!(app.exercises[0].exercise.prompt, star);
    assert_eq!(app.exercises[1].exercise.prompt, star);
    assert_eq!(app.exercises[2].exercise.prompt, format!("{star}, PixArFK"));
    let grammar = app.info.as_ref().unwrap().grammar.clone().unwrap();
    for state in app.exercises.iter().filter(|s| s.scenario.is_some()) {
        let p = &state.exercise.prompt;
        assert!(grammar.unknown_words(p).is_empty(), "{p}");
    }
    // What the first run asks the worker for.
    assert_eq!(request(&app, 0, 0).prompt, star);
    let screen = render(&app, 120, 40);
    assert!(
        screen.contains("(micro: a world of coloured shapes)"),
        "{screen}"
    );
    assert!(screen.contains(&format!("prompt “{star}”")), "{screen}");
}

#[test]
fn the_run_editor_lists_the_micro_models_words_and_flags_others() {
    let mut micro = micro_app();
    update(&mut micro, ch('e'));
    insta::assert_snapshot!("editor_micro_80x24", render(&micro, 80, 24));
    let screen = render(&micro, 120, 40);
    assert!(
        screen.contains("the micro model knows only its small world"),
        "{screen}"
    );
    assert!(
        screen.contains("shapes: circle | square | triangle | star"),
        "{screen}"
    );
    assert!(!screen.contains("not in its world"), "{screen}");
    typed(&mut micro, " near a castle");
    let screen = render(&micro, 120, 40);
    assert!(
        screen.contains("not in its world (it reads them as blanks): near, castle"),
        "{screen}"
    );
    // Another model's editor has no such list.
    let mut app = app();
    update(&mut app, ch('e'));
    assert!(!render(&app, 120, 40).contains("knows only"));
}

// ---- the landscape's weight mode ----

mod weights_view {
    //! `W` in the landscape: the style-weight curve as a second landscape state (made once,
    //! when the model folder has the adapter), its runs through the same queue, each measured
    //! against its seed's style-alone and plain images, the table and findings from those.

    use std::path::PathBuf;

    use crossterm::event::KeyCode;

    use super::{app, ch, fake, finished, key, micro_app, render, step, submitted};
    use crate::lora::AdapterWeight;
    use crate::quality::Quality;
    use crate::report::table::RowState;
    use crate::sweep::headless::measure;
    use crate::sweep::{
        DEFAULT_LORA_WEIGHTS, IDENTICAL, Sweep, SweepConfig, Target, WEIGHT_STEPS,
        parse_lora_weights,
    };
    use crate::tui::app::{App, Effect, Msg, update};
    use crate::tui::landscape::{self, WeightRow};
    use crate::worker::{Event, RunId};

    /// The weight curve of `style` at `weights` with `seeds` seeds, on the fake backend.
    fn weights_app(seeds: usize, weights: &str) -> App {
        let cfg = SweepConfig {
            seeds,
            ..SweepConfig::default()
        };
        let sweep = Sweep::default_weights(&cfg, parse_lora_weights(weights).unwrap()).unwrap();
        app().with_weight_sweep(sweep)
    }

    /// `L` then `W`: the weight curve on screen.
    fn open(app: &mut App) {
        update(app, ch('L'));
        assert!(update(app, ch('W')).is_none());
        assert!(app.weight_mode && app.in_landscape(), "{:?}", app.status);
    }

    fn state(app: &App) -> &landscape::LandscapeState {
        app.exercises[app.selected].landscape.as_deref().unwrap()
    }

    /// Runs the queue from `effect` until `count` runs have finished (ids from `*id` on);
    /// returns the effect that submits the next one.
    fn finish_runs(
        app: &mut App,
        mut effect: Option<Effect>,
        count: usize,
        id: &mut RunId,
    ) -> Option<Effect> {
        for _ in 0..count {
            let (ex, run) = submitted(app, effect, *id);
            let m = finished(app, *id, ex, run);
            effect = update(app, m);
            *id += 1;
        }
        effect
    }

    #[test]
    fn w_switches_the_landscape_to_the_weight_curve_and_back() {
        let mut app = app();
        let steps = landscape::step_index(&app).unwrap();
        let n_states = app.exercises.len();
        update(&mut app, ch('2'));
        update(&mut app, ch('L'));
        assert_eq!(app.selected, steps);
        update(&mut app, ch('W'));
        let weights = app.selected;
        assert_ne!(weights, steps);
        assert_eq!(app.exercises.len(), n_states + 1, "one new state");
        let l = state(&app);
        assert!(l.is_weights());
        // The headless mode's defaults: LCM-LoRA 4 with style at 0, 0.25 … 1.5.
        let s = &l.plan.sweep;
        let methods: Vec<(&str, &[usize])> = s
            .methods
            .iter()
            .map(|m| (m.name.as_str(), m.steps.as_slice()))
            .collect();
        assert_eq!(methods, [("lcm", &WEIGHT_STEPS[..])]);
        assert_eq!(
            s.weights,
            Some(parse_lora_weights(DEFAULT_LORA_WEIGHTS).unwrap())
        );
        assert_eq!(
            s.weights.as_ref().unwrap().weights,
            [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5]
        );
        // 4 seeds: a plain and a style-alone image each, then 7 weights.
        assert_eq!(l.plan.runs.len(), 4 * 2 + 7 * 4);
        // One list entry for the landscape: the mode shown.
        assert_eq!(app.entries().last(), Some(&weights));
        assert_eq!(app.entries().len(), 6);
        let screen = render(&app, 160, 48);
        assert!(screen.contains("▶ L Composability as a curve"), "{screen}");
        assert!(screen.contains("W steps"), "{screen}");
        // W again: the step landscape; W once more: the same weight state, not a new one.
        update(&mut app, ch('W'));
        assert_eq!((app.selected, app.weight_mode), (steps, false));
        update(&mut app, ch('W'));
        assert_eq!(app.selected, weights);
        assert_eq!(app.exercises.len(), n_states + 1);
        // L goes back to exercise 2 and L again reopens the mode last shown.
        update(&mut app, ch('L'));
        assert_eq!(app.selected, 1);
        update(&mut app, ch('W'));
        assert!(
            app.status
                .as_deref()
                .unwrap()
                .contains("W works in the landscape")
        );
        assert_eq!(app.selected, 1);
        update(&mut app, ch('L'));
        assert_eq!(app.selected, weights);
    }

    #[test]
    fn w_says_why_there_is_no_curve_before_the_model_is_open_or_without_the_adapter() {
        // Before the worker's Ready nothing is known about the folder's adapters.
        let mut app = App::new(crate::exercises::default_exercises(), "x".into());
        update(&mut app, ch('L'));
        update(&mut app, ch('W'));
        assert!(!app.weight_mode);
        assert!(app.status.as_deref().unwrap().contains("still opening"));
        // A folder without the style adapter: one line naming it, nothing made.
        let mut info = fake::info();
        info.adapters = vec!["lcm".into()];
        update(&mut app, Msg::Worker(Event::Ready(info)));
        let n = app.exercises.len();
        update(&mut app, ch('W'));
        let status = app.status.clone().unwrap();
        assert!(
            status.starts_with("no weight curve on this model: LoRA \"style\"")
                && status.contains("adapters: lcm")
                && !status.contains('\n'),
            "{status}"
        );
        assert!(!app.weight_mode && app.exercises.len() == n);
        assert!(render(&app, 80, 24).contains("no weight curve on this model"));
    }

    #[test]
    fn the_curves_prompt_is_the_landscapes_with_the_models_style_trigger() {
        // As the TUI makes them: both sweeps from [sweep] for the model's kind.
        let cfg = SweepConfig::default().for_model(crate::models::ModelKind::Micro);
        let mut app = micro_app()
            .with_sweep(&Sweep::from_config(&cfg, None).unwrap())
            .with_weight_sweep(landscape::weight_sweep(&cfg).unwrap());
        let steps = landscape::step_index(&app).unwrap();
        let step_prompt = app.exercises[steps].exercise.prompt.clone();
        assert_eq!(
            step_prompt,
            "a large yellow star on a blue background at sunset"
        );
        open(&mut app);
        let prompt = state(&app).plan.sweep.prompt.clone();
        // Exercise 3's style runs ask for the same.
        assert_eq!(prompt, app.exercises[2].exercise.prompt);
        assert_eq!(prompt, format!("{step_prompt}, PixArFK"));
        let effect = update(&mut app, key(KeyCode::Enter));
        let Some(Effect::Submit { request, .. }) = effect else {
            panic!("{effect:?}");
        };
        assert_eq!(request.prompt, prompt);
        // Where the prompt has it already, or the model has no trigger, it stays as it is.
        let grammar = app.info.as_ref().unwrap().grammar.clone();
        assert_eq!(landscape::triggered(&prompt, grammar.as_deref()), prompt);
        assert_eq!(landscape::triggered("a cat", None), "a cat");
        let mut fake = super::app();
        open(&mut fake);
        assert_eq!(
            state(&fake).plan.sweep.prompt,
            fake.exercises[landscape::step_index(&fake).unwrap()]
                .exercise
                .prompt
        );
    }

    #[test]
    fn enter_queues_the_curves_plan_and_each_run_is_measured_against_both_references() {
        let mut app = weights_app(2, "style=0:1:0.5");
        open(&mut app);
        let li = app.selected;
        let plan = state(&app).plan.clone();
        let effect = update(&mut app, key(KeyCode::Enter));
        let queued: Vec<(usize, usize)> = app.queue.iter().copied().collect();
        assert_eq!(
            queued,
            (1..plan.runs.len()).map(|r| (li, r)).collect::<Vec<_>>()
        );
        assert_eq!(plan.runs.len(), 2 * 2 + 3 * 2);
        // Every run asks the worker for its own settings and adapters.
        let style = |weight| AdapterWeight {
            adapter: "style".into(),
            weight,
        };
        let mut id = 1;
        let mut effect = effect;
        for (r, want) in [
            (0, (50, "base", vec![])),
            (1, (50, "base", vec![style(1.0)])),
            (6, (4, "lcm", vec![style(0.5)])),
        ] {
            while let Some(Effect::Submit { run, request, .. }) = &effect {
                if *run == r {
                    let got = (request.steps, request.unet.as_str(), request.loras.clone());
                    assert_eq!(got, (want.0, want.1, want.2), "run {r}");
                    break;
                }
                let (ex, run) = submitted(&mut app, effect, id);
                let m = finished(&app, id, ex, run);
                effect = update(&mut app, m);
                id += 1;
            }
        }
        let left = plan.runs.len() - 6;
        assert!(finish_runs(&mut app, effect, left, &mut id).is_none());
        let l = state(&app);
        assert!(l.measured.iter().all(Option::is_some));
        // Run 6 (seed 42, style×0.5) against run 1 (its style-alone image) and run 0 (plain).
        assert_eq!((plan.reference_for(6), plan.plain_for(6)), (1, Some(0)));
        let runs = &app.exercises[li].runs;
        let image = |r: usize| runs[r].image.as_deref().unwrap();
        let want = measure(
            &plan,
            6,
            image(6),
            runs[6].report.as_deref().unwrap(),
            Some(image(1)),
            Some(image(0)),
        )
        .unwrap();
        assert_eq!(l.measured[6], Some(want));
        assert!(want.plain.is_some());
        assert_eq!(l.measured[0].unwrap().quality, IDENTICAL);
        // The table: the two references, then each weight with all its seeds.
        let c = landscape::curves(l).unwrap();
        let rows = landscape::weight_table(&c);
        assert!(matches!(rows[0], WeightRow::Plain(p) if p.runs == 2));
        assert!(matches!(rows[1], WeightRow::Alone(p) if p.runs == 2));
        let weights: Vec<(f32, usize, f64)> = rows[2..]
            .iter()
            .map(|r| match r {
                WeightRow::Weight { point, .. } => (point.weight, point.runs, point.time_ms),
                other => panic!("{other:?}"),
            })
            .collect();
        // The fake's 4-step run: 5 ms text, 4 × 21 ms, 15 ms VAE.
        assert_eq!(weights, [(0.0, 2, 104.0), (0.5, 2, 104.0), (1.0, 2, 104.0)]);
        let screen = render(&app, 160, 48);
        assert!(screen.contains("all 10 runs done · s saves the folder (weights.png"));
        assert!(screen.contains("✓ style×0.5"), "{screen}");
        assert!(
            screen.contains("- LCM-LoRA 4 (cfg 1.5, UNet `lcm`)"),
            "{screen}"
        );
    }

    #[test]
    fn cancel_resume_restart_and_save_work_as_in_the_step_landscape() {
        use crate::tui::save::{FolderSaver, Saver};
        let mut app = weights_app(1, "style=0:1:1");
        open(&mut app);
        let li = app.selected;
        assert!(update(&mut app, ch('s')).is_none());
        assert!(app.status.as_deref().unwrap().contains("nothing finished"));
        let mut id = 1;
        let effect = update(&mut app, key(KeyCode::Enter));
        // The plain and style-alone images finish; the first weight is cancelled mid-run.
        let effect = finish_runs(&mut app, effect, 2, &mut id);
        submitted(&mut app, effect, id);
        update(&mut app, step(id, 0, 4));
        assert!(matches!(
            update(&mut app, key(KeyCode::Esc)),
            Some(Effect::Cancel(i)) if i == id
        ));
        update(&mut app, Msg::Worker(Event::Cancelled { run: id }));
        id += 1;
        assert_eq!(app.exercises[li].runs[2].row.state, RowState::Cancelled);
        // enter resumes with the runs not done; R starts over.
        let effect = update(&mut app, key(KeyCode::Enter));
        assert!(matches!(effect, Some(Effect::Submit { run: 2, .. })));
        assert!(app.status.as_deref().unwrap().contains("2 of 4 runs left"));
        assert!(finish_runs(&mut app, effect, 2, &mut id).is_none());
        assert!(matches!(
            update(&mut app, ch('s')),
            Some(Effect::SaveLandscape)
        ));
        // What is saved is what the headless weight sweep writes.
        let outcome = landscape::outcome(&app, landscape::index(&app).unwrap()).unwrap();
        assert!(outcome.plan.sweep.weights.is_some());
        let root = tempfile::tempdir().unwrap();
        let saver = FolderSaver {
            root: root.path().to_path_buf(),
        };
        let dir = saver.save_sweep(&outcome).unwrap();
        for f in ["weights.png", "weights.csv", "sweep.json", "summary.md"] {
            assert!(dir.join(f).is_file(), "{f}");
        }
        update(&mut app, Msg::Saved(Ok(PathBuf::from("out/sweep-2"))));
        assert!(app.status.as_deref().unwrap().contains("out/sweep-2"));
        let effect = update(&mut app, ch('R'));
        assert!(matches!(effect, Some(Effect::Submit { run: 0, .. })));
        assert!(state(&app).measured.iter().all(Option::is_none));
    }

    #[test]
    fn a_step_sweep_under_way_goes_on_while_the_curve_is_shown() {
        let mut app = app();
        update(&mut app, ch('L'));
        let steps = app.selected;
        let effect = update(&mut app, key(KeyCode::Enter));
        let (ex, _) = submitted(&mut app, effect, 1);
        assert_eq!(ex, steps);
        update(&mut app, ch('W'));
        assert!(app.weight_mode);
        let screen = render(&app, 80, 24);
        assert!(
            screen.contains("▶ L The speed landscape is running"),
            "{screen}"
        );
        // enter here waits for it, as for any run under way.
        assert!(update(&mut app, key(KeyCode::Enter)).is_none());
        assert!(app.status.as_deref().unwrap().contains("a run is going"));
    }

    /// Made-up SSIM for weight `w` and seed index `k`: the style grows with its weight, the
    /// plain image fades; they cross just under 1.
    fn make_up(app: &mut App) {
        let q = |ssim: f64| Quality {
            psnr_db: Some(12.0 + 20.0 * ssim),
            ssim,
            mean_abs_diff: 0.0,
        };
        let i = app.selected;
        let l = app.exercises[i].landscape.as_deref_mut().unwrap();
        let weights = l.plan.sweep.weights.clone().unwrap().weights;
        for (i, r) in l.plan.runs.iter().enumerate() {
            let Some(m) = &mut l.measured[i] else {
                continue;
            };
            let k = r.seed_index as f64 * 0.01;
            match r.target {
                Target::Reference => m.plain = Some(q(0.42 + k)),
                Target::Weighted { weight, .. } => {
                    let w = f64::from(weights[weight]);
                    m.quality = q(0.45 + 0.15 * w - k);
                    m.plain = Some(q(0.77 - 0.22 * w + k));
                }
                _ => {}
            }
        }
    }

    /// The default curve with 2 seeds: the references and five weights done, the sixth's
    /// second seed 2 steps in.
    fn partly_finished() -> App {
        let mut app = weights_app(2, DEFAULT_LORA_WEIGHTS);
        open(&mut app);
        let mut id = 1;
        let effect = update(&mut app, key(KeyCode::Enter));
        let effect = finish_runs(&mut app, effect, 4 + 5 * 2 + 1, &mut id);
        submitted(&mut app, effect, id);
        update(&mut app, super::started(id, 4));
        for i in 0..2 {
            update(&mut app, step(id, i, 4));
        }
        make_up(&mut app);
        app
    }

    #[test]
    fn snapshot_weights() {
        let app = partly_finished();
        let small = render(&app, 80, 24);
        let large = render(&app, 160, 48);
        for screen in [&small, &large] {
            assert!(
                screen.contains("run 16/18: LCM-LoRA 4 + style×1.25 · seed 43, step 2/4"),
                "{screen}"
            );
            assert!(screen.contains("to plain"), "{screen}");
            assert!(screen.contains("- LCM-LoRA 4"), "the findings: {screen}");
        }
        // The findings say where the made-up curves cross (0.45 + 0.15w > 0.77 − 0.22w).
        assert!(large.contains("From style×1 on"), "{large}");
        insta::assert_snapshot!("weights_80x24", small);
        insta::assert_snapshot!("weights_160x48", large);
    }
}

// ---- ControlNet: exercise 5, scenario B under the ControlNet, the editor's control rows ----

/// The app on a model folder with the ControlNets `names` (scenario B verified under the first).
fn controlnet_app(names: &[&str]) -> App {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let b = crate::exercises::cheatsheet::scenario('B').unwrap();
    let controls = b
        .control(crate::models::ModelKind::Sd15, &names)
        .map(|c| ('B', c))
        .into_iter()
        .collect();
    app().with_controlnets(std::path::Path::new("/models/sd15"), names, controls)
}

fn exercise_index(app: &App, number: usize) -> usize {
    app.exercises
        .iter()
        .position(|e| e.exercise.number == number && e.scenario.is_none())
        .unwrap()
}

#[test]
fn the_list_keeps_number_order_with_exercise_5_after_the_cheat_sheet() {
    let app = app();
    let numbers: Vec<String> = app
        .entries()
        .into_iter()
        .map(|i| {
            let e = &app.exercises[i];
            if e.landscape.is_some() {
                "L".into()
            } else {
                e.exercise.number.to_string()
            }
        })
        .collect();
    assert_eq!(numbers, ["1", "2", "3", "4", "5", "L"]);
}

#[test]
fn exercise_5_runs_under_the_controlnet_and_its_table_shows_its_time_and_adherence() {
    let mut app = controlnet_app(&["edge"]);
    update(&mut app, ch('5'));
    let i = exercise_index(&app, 5);
    assert_eq!(app.selected, i);
    assert!(app.current().blocked.is_none());
    for r in &app.current().exercise.runs {
        assert_eq!(
            r.control.as_ref().unwrap().controlnet.as_deref(),
            Some("edge")
        );
    }
    // The loop reads the control image for the first panel.
    let wanted = super::app::controls_to_load(&app);
    assert_eq!(wanted.len(), 1);
    assert_eq!(wanted[0].0, i);
    let (exercise, path) = wanted[0].clone();
    update(
        &mut app,
        Msg::ControlLoaded {
            exercise,
            path,
            result: Ok(fake::pattern(64, 1, 1)),
        },
    );
    assert!(super::app::controls_to_load(&app).is_empty(), "read once");
    run_all(&mut app);
    let ex = app.current();
    // The fake: 8 ms of ControlNet a step, edge F1 0.3 + 0.5·min(scale, 1) = 0.8 at scale 1.
    for run in &ex.runs {
        assert_eq!(run.control_numbers(), (Some(8.0), Some(0.8)));
    }
    let adherence = ex.adherence();
    let rows = table_rows(ex);
    let gap = &ex.exercise.questions[1].measure;
    assert_eq!(gap.value(&rows, &adherence), Some(0.0));
    let screen = render(&app, 160, 48);
    assert!(
        screen.contains("CN/step") && screen.contains("edge F1"),
        "{screen}"
    );
    assert!(
        screen.contains("8.0ms") && screen.contains("0.80"),
        "{screen}"
    );
    assert!(
        screen.contains("control · canny · ×1"),
        "the control panel first: {screen}"
    );
    // At 120 columns the labels keep their room: VAE and it/s give way to the two columns.
    let screen = render(&app, 120, 40);
    assert!(
        screen.contains("✓ DPM-Solver++ 20") && screen.contains("edge F1"),
        "{screen}"
    );
    assert!(!screen.contains("it/s"), "{screen}");
    let screen = render(&app, 80, 24);
    assert!(
        screen.contains("✓ DPM-Solver++") && screen.contains("edge F1"),
        "{screen}"
    );
    // Exercise 1 has no control: no such columns.
    update(&mut app, ch('1'));
    let screen = render(&app, 160, 48);
    assert!(
        !screen.contains("CN/step") && !screen.contains("edge F1"),
        "{screen}"
    );
}

#[test]
fn exercise_5_on_a_folder_without_a_controlnet_says_why_instead_of_failing_each_run() {
    let mut app = controlnet_app(&[]);
    update(&mut app, ch('5'));
    let why = app.current().blocked.clone().unwrap();
    assert!(
        why.contains("runs under a ControlNet, and the model folder /models/sd15 has none"),
        "{why}"
    );
    assert!(
        why.contains("Fix: export one into it: models/export.py --controlnet NAME=SOURCE"),
        "{why}"
    );
    assert!(update(&mut app, ch('r')).is_none(), "nothing runs");
    assert!(app.active.is_none() && app.queue.is_empty());
    assert!(app.status.as_deref().unwrap().contains("has none"));
    let screen = render(&app, 120, 40);
    assert!(screen.contains("cannot run on this model"), "{screen}");
    // Exercises 1–3 are as before.
    update(&mut app, ch('1'));
    assert!(app.current().blocked.is_none());
    assert!(matches!(
        update(&mut app, ch('r')),
        Some(Effect::Submit { .. })
    ));
}

#[test]
fn scenario_b_is_verified_under_the_controlnet_with_adherence_and_quality() {
    let mut app = controlnet_app(&["edge"]);
    let b = scenario_index(&app, 'B');
    for r in &app.exercises[b].exercise.runs {
        assert_eq!(
            r.control.as_ref().unwrap().controlnet.as_deref(),
            Some("edge")
        );
    }
    super::app::select(&mut app, b);
    verify(&mut app);
    let v = super::cheat::verdict(&app, b).unwrap();
    // The fake's images differ (SSIM below 0.8) while both keep edge F1 0.8.
    assert!(
        v.text
            .contains("edge F1 0.80 against the alternative's 0.80 (gap 0.00, at most 0.10)"),
        "{}",
        v.text
    );
    assert!(v.text.starts_with("SSIM "), "{}", v.text);
    let (evidence, note) = super::cheat::evidence(&app, b);
    let evidence = evidence.unwrap();
    assert!(
        evidence.starts_with("composability, measured: under the ControlNet LCM-LoRA 8 keeps edge F1 0.80 against DPM-Solver++ 20's 0.80"),
        "{evidence}"
    );
    assert_eq!(note, None);
    update(&mut app, ch('a'));
    let screen = render(&app, 120, 40);
    assert!(screen.contains("composability, measured"), "{screen}");
}

#[test]
fn scenario_b_without_a_controlnet_checks_quality_alone_and_says_so() {
    let mut app = controlnet_app(&[]);
    let b = scenario_index(&app, 'B');
    assert!(
        app.exercises[b]
            .exercise
            .runs
            .iter()
            .all(|r| r.control.is_none())
    );
    super::app::select(&mut app, b);
    verify(&mut app);
    let v = super::cheat::verdict(&app, b).unwrap();
    assert!(!v.text.contains("edge F1"), "{}", v.text);
    let (evidence, note) = super::cheat::evidence(&app, b);
    assert_eq!(evidence, None);
    assert!(
        note.unwrap()
            .contains("the ControlNet part was not verified")
    );
}

#[test]
fn adherences_come_from_the_reports_control_and_nan_is_unmeasured() {
    let app = controlnet_app(&["edge"]);
    let ex = &app.exercises[exercise_index(&app, 5)].exercise;
    let mut a = fake::report(&ex.request(0, crate::rng::RngSource::TorchCpu));
    let mut b = a.clone();
    b.control.as_mut().unwrap().adherence = f64::NAN;
    let mut c = a.clone();
    c.control = None;
    a.control.as_mut().unwrap().adherence = 0.7;
    assert_eq!(
        crate::exercises::adherences(&[Some(&a), Some(&b), Some(&c), None]),
        [Some(0.7), None, None, None]
    );
}

/// Opens the editor on the selected run and moves the focus to control row `k` (0: the
/// ControlNet, 1: the image, 2: the scale, 3: the preprocessing).
fn to_control_row(app: &mut App, k: usize) {
    update(app, ch('e'));
    let Mode::Edit(form) = &app.mode else {
        panic!("no form")
    };
    for _ in 0..4 + form.adapters.len() + k {
        update(app, key(KeyCode::Tab));
    }
}

#[test]
fn the_editor_sets_a_runs_controlnet_image_scale_and_preprocessing() {
    use crate::pipeline::control::ControlPreprocess;
    let mut app = controlnet_app(&["depth", "edge"]);
    // Exercise 1's first run has no control: the ControlNet row says none.
    to_control_row(&mut app, 0);
    let Mode::Edit(form) = &app.mode else {
        panic!()
    };
    assert_eq!(form.control.controlnet, None);
    update(&mut app, key(KeyCode::Right));
    update(&mut app, key(KeyCode::Right));
    let Mode::Edit(form) = &app.mode else {
        panic!()
    };
    assert_eq!(
        form.control.controlnet.as_deref(),
        Some("edge"),
        "none → depth → edge"
    );
    update(&mut app, key(KeyCode::Enter));
    assert!(
        matches!(&app.mode, Mode::Edit(f) if f.error.as_deref().unwrap().starts_with("control image")),
        "a control needs an image"
    );
    update(&mut app, key(KeyCode::Tab));
    typed(&mut app, "edges.png");
    update(&mut app, key(KeyCode::Tab));
    // Scale: 1 → 1.2 with +, then a typed value past the maximum is refused.
    update(&mut app, ch('+'));
    update(&mut app, ch('+'));
    update(&mut app, key(KeyCode::Tab));
    update(&mut app, key(KeyCode::Right));
    let Mode::Edit(form) = &app.mode else {
        panic!()
    };
    assert_eq!(form.control.scale, "1.2");
    assert_eq!(
        form.control.preprocess,
        ControlPreprocess::None,
        "canny → none"
    );
    update(&mut app, key(KeyCode::Enter));
    assert_eq!(app.mode, Mode::Normal);
    let c = app.exercises[0].exercise.runs[0].control.clone().unwrap();
    assert_eq!(c.controlnet.as_deref(), Some("edge"));
    assert_eq!(c.image, PathBuf::from("edges.png"));
    assert_eq!(c.scale, 1.2);
    assert_eq!(c.preprocess, ControlPreprocess::None);
    assert!(
        request(&app, 0, 0).control.is_some(),
        "the run's request carries it"
    );
    // A bad scale keeps the form open with the reason; "none" removes the control.
    to_control_row(&mut app, 2);
    typed(&mut app, "x");
    update(&mut app, key(KeyCode::Enter));
    assert!(
        matches!(&app.mode, Mode::Edit(f) if f.error.as_deref().unwrap().starts_with("control scale")),
        "{:?}",
        app.mode
    );
    update(&mut app, key(KeyCode::Esc));
    to_control_row(&mut app, 0);
    update(&mut app, key(KeyCode::Right)); // edge → none
    update(&mut app, key(KeyCode::Enter));
    assert_eq!(app.exercises[0].exercise.runs[0].control, None);
    // The scale's - stops at 0.
    to_control_row(&mut app, 0);
    update(&mut app, key(KeyCode::Right));
    update(&mut app, key(KeyCode::Tab));
    update(&mut app, key(KeyCode::Tab));
    for _ in 0..15 {
        update(&mut app, ch('-'));
    }
    let Mode::Edit(form) = &app.mode else {
        panic!()
    };
    assert_eq!(form.control.scale, "0");
}

#[test]
fn gap_predictions_take_a_sign() {
    let mut app = controlnet_app(&["edge"]);
    update(&mut app, ch('5'));
    update(&mut app, ch('p'));
    typed(&mut app, "4");
    update(&mut app, key(KeyCode::Enter));
    typed(&mut app, "-0.05");
    update(&mut app, key(KeyCode::Enter));
    let i = exercise_index(&app, 5);
    assert_eq!(app.exercises[i].predictions[..2], [Some(4.0), Some(-0.05)]);
}
