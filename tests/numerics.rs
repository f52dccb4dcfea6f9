//! NaN and Inf from a real model (the tiny model with poisoned weights): the run stops at the
//! step and component that produced them, with a fix, on the CLI (exit ≠ 0, no image), in the
//! headless exercise runner, through the worker, and in the TUI's panel.

mod common;

mod poisoned;

use common::{speedscape, text};
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use poisoned::{Poison, poisoned_model, set_manifest};

/// `generate` on `model` (dpmpp, 3 steps, cfg 7.5) into `out`.
fn generate(model: &Path, out: &Path, extra: &[&str]) -> Output {
    generate_cfg(model, out, "7.5", extra)
}

fn generate_cfg(model: &Path, out: &Path, cfg: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "generate",
        "--prompt",
        "a small cottage on a hillside at sunset",
        "--scheduler",
        "dpmpp",
        "--steps",
        "3",
        "--cfg",
        cfg,
        "--seed",
        "42",
        "--device",
        "cpu",
        "--model-dir",
        model.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    speedscape(&args)
}

/// The UNet's last convolution's bias is NaN: every output value is NaN.
fn nan_unet() -> tempfile::TempDir {
    poisoned_model(&[Poison {
        component: "unet",
        initializer: "unet.conv_out.bias",
        value: f32::NAN,
    }])
}

#[test]
fn a_unet_that_outputs_nan_stops_generate_at_step_1_naming_the_unet_and_writes_nothing() {
    let model = nan_unet();
    let out = tempfile::tempdir().unwrap();
    let png = out.path().join("x.png");
    let o = generate(model.path(), &png, &[]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    // dpmpp's 3 timesteps are 999, 666, 333; the batch of 2 (guidance) is [2, 4, 8, 8].
    assert!(
        t.contains(
            "the UNet's output at step 1 of 3 (t=999) has 512 NaN values (of 512) (UNet variant base (unet), fp32); the run stopped there, no image was written"
        ),
        "{t}"
    );
    assert!(
        t.contains("Fix: try a lower --cfg than 7.5; check the model (speedscape models verify"),
        "{t}"
    );
    assert!(!png.exists(), "no black image was written");
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
}

#[test]
fn an_fp16_unet_that_outputs_nan_gets_the_fp16_overflow_fix() {
    let model = nan_unet();
    // What an fp16 export's manifest says of its UNet (the graph itself stays the tiny fp32 one).
    set_manifest(model.path(), "/components/unet/dtype", "fp16".into());
    let out = tempfile::tempdir().unwrap();
    let o = generate_cfg(model.path(), &out.path().join("x.png"), "1", &[]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    // No guidance at cfg 1: batch 1.
    assert!(
        t.contains("the UNet's output at step 1 of 3 (t=999) has 256 NaN values (of 256) (UNet variant base (unet), fp16)"),
        "{t}"
    );
    assert!(
        t.contains(
            "Fix: fp16 overflow is the usual cause: use the fp32 export (python models/export.py --out DIR --dtype fp32), or try another --cfg"
        ),
        "{t}"
    );
}

#[test]
fn a_vae_that_outputs_inf_is_named_after_the_steps_finished() {
    let model = poisoned_model(&[Poison {
        component: "vae_decoder",
        initializer: "vae.decoder.conv_out.bias",
        value: f32::INFINITY,
    }]);
    let out = tempfile::tempdir().unwrap();
    let png = out.path().join("x.png");
    let o = generate(model.path(), &png, &[]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(t.contains("step 3/3"), "every step ran: {t}");
    assert!(
        t.contains(
            "the VAE decoder's image has 12288 Inf values (of 12288) (VAE decoder (vae_decoder), fp32); no image was written"
        ),
        "{t}"
    );
    assert!(t.contains("Fix: "), "{t}");
    assert!(!png.exists());
}

#[test]
fn a_text_encoder_that_outputs_nan_is_named_before_the_first_step() {
    let model = poisoned_model(&[Poison {
        component: "text_encoder",
        initializer: "text_encoder.embeddings.position_embedding.weight",
        value: f32::NAN,
    }]);
    let out = tempfile::tempdir().unwrap();
    let o = generate(model.path(), &out.path().join("x.png"), &[]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("the text encoder's output has ")
            && t.contains("NaN values (of 4928) (text encoder (text_encoder), fp32); the run stopped before its first step"),
        "{t}"
    );
    assert!(!t.contains("step 1/3"), "no step ran: {t}");
}

#[test]
fn latents_given_with_nan_are_refused_before_the_first_step() {
    let dir = tempfile::tempdir().unwrap();
    let mut latents = ndarray::Array4::<f32>::zeros((1, 4, 8, 8));
    latents[[0, 1, 2, 3]] = f32::NAN;
    let npy = dir.path().join("latents.npy");
    ndarray_npy::write_npy(&npy, &latents).unwrap();
    let o = generate(
        &poisoned::tiny(),
        &dir.path().join("x.png"),
        &["--latents", npy.to_str().unwrap()],
    );
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("the initial latents have 1 NaN value (of 256) (given with --latents); the run stopped before its first step"),
        "{t}"
    );
    assert!(t.contains("Fix: pass finite --latents"), "{t}");
}

#[test]
fn the_headless_exercise_reports_each_run_failed_with_the_step_and_exits_non_zero() {
    let model = nan_unet();
    let o = speedscape(&[
        "exercise",
        "1",
        "--device",
        "cpu",
        "--model-dir",
        model.path().to_str().unwrap(),
    ]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    // Exercise 1's baseline: DDPM 50 steps at cfg 7.5; its first timestep is 981.
    assert!(
        t.contains("DDPM 50 failed: the UNet's output at step 1 of 50 (t=981) has 512 NaN values"),
        "{t}"
    );
    assert!(
        t.contains("DPM-Solver++ 20 failed: the UNet's output at step 1 of 20"),
        "{t}"
    );
}

#[test]
fn the_worker_sends_failed_and_the_tui_shows_it_in_the_runs_panel() {
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use ratatui_image::picker::Picker;
    use speedscape::config::Config;
    use speedscape::report::table::RowState;
    use speedscape::runtime::Device;
    use speedscape::tui::app::{App, Effect, Msg, update};
    use speedscape::tui::images::{Encoder, Images};
    use speedscape::worker::{Event, Job, WorkerHandle};

    let model = nan_unet();
    let (worker, mut events) = WorkerHandle::spawn(
        Config::default(),
        Some(Device::Cpu),
        Some(model.path().to_path_buf()),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut next = || {
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(120), events.recv()).await })
            .expect("a worker event within 120 s")
            .expect("the worker's channel is open")
    };
    let mut app = App::new(
        speedscape::exercises::default_exercises(),
        "halfblocks".into(),
    );
    let ready = next();
    assert!(matches!(ready, Event::Ready(_)), "{ready:?}");
    update(&mut app, Msg::Worker(ready));
    // The user presses r: the TUI asks for its first run, which goes to the real worker.
    let Some(Effect::Submit {
        exercise,
        run,
        request,
    }) = update(
        &mut app,
        Msg::Key(crossterm::event::KeyCode::Char('r').into()),
    )
    else {
        panic!("r submits the first run");
    };
    let id = worker.next_run_id();
    worker.submit(Job {
        run: id,
        request: *request,
    });
    update(&mut app, Msg::Submitted { exercise, run, id });
    let failed = loop {
        let ev = next();
        if let Event::Failed { error, .. } = &ev {
            let error = error.clone();
            update(&mut app, Msg::Worker(ev));
            break error;
        }
        assert!(!ev.is_terminal(), "the run must fail: {ev:?}");
        update(&mut app, Msg::Worker(ev));
    };
    worker.shutdown();
    assert!(
        failed.starts_with("the UNet's output at step 1 of 50 (t=981) has 512 NaN values (of 512) (UNet variant base (unet), fp32)"),
        "{failed}"
    );
    assert!(failed.contains("\nFix: "), "{failed}");
    let row = &app.exercises[exercise].runs[run];
    assert_eq!(row.row.state, RowState::Failed);
    assert_eq!(row.error.as_deref(), Some(failed.as_str()));
    assert!(
        app.status
            .as_deref()
            .unwrap_or("")
            .contains("the UNet's output at step 1 of 50"),
        "{:?}",
        app.status
    );
    // Drawn: the run's panel holds the message (wrapped), the fix included.
    let mut images = Images::new(Picker::halfblocks(), Encoder::Inline);
    images.sync(&app);
    let mut term = Terminal::new(TestBackend::new(200, 60)).unwrap();
    term.draw(|f| speedscape::tui::ui::draw(&app, &mut images, f))
        .unwrap();
    let screen: String = format!("{}", term.backend())
        .split(['│', '"', '\n'])
        .collect::<Vec<_>>()
        .join(" ");
    let words = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let screen = words(&screen);
    for part in ["the UNet's output at step 1 of 50", "Fix: try a lower"] {
        assert!(
            screen.contains(part),
            "{part:?} not drawn:\n{}",
            term.backend()
        );
    }
}
