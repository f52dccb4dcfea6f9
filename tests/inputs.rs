//! Bad run parameters and awkward prompts through the binary (`generate`, `tokens`), on the
//! embedded tiny model (its tokenizer is CLIP's whole one; the micro model's is trimmed to its
//! world) and the CPU wheel: each refusal names the value, the rule and the fix, exit ≠ 0; each
//! accepted edge case runs.

mod common;

use std::path::Path;
use std::process::Output;

/// The binary with `args` on the tiny model.
fn speedscape(args: &[&str]) -> Output {
    let mut all = args.to_vec();
    all.extend(["--model-dir", "models/tiny"]);
    common::speedscape(&all)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `generate` with `args` replacing the defaults they name (dpmpp, 2 steps, cfg 7.5, seed 42).
fn generate(out: &Path, args: &[&str]) -> Output {
    let mut all: Vec<&str> = vec!["generate", "--device", "cpu", "--json"];
    let out = out.to_str().unwrap();
    all.extend(["--out", out]);
    for (flag, default) in [
        ("--scheduler", "dpmpp"),
        ("--steps", "2"),
        ("--cfg", "7.5"),
        ("--seed", "42"),
    ] {
        if !args.contains(&flag) {
            all.extend([flag, default]);
        }
    }
    if !args.contains(&"--prompt") && !args.contains(&"--prompt-file") {
        all.extend(["--prompt", "a red fox"]);
    }
    all.extend_from_slice(args);
    speedscape(&all)
}

/// Runs `args` and asserts it failed, wrote no image, and said every one of `needles`.
fn refused(args: &[&str], needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("o.png");
    let o = generate(&png, args);
    let err = stderr(&o);
    assert!(!o.status.success(), "{args:?} ran:\n{err}");
    assert!(!png.exists(), "{args:?} wrote an image");
    for n in needles {
        assert!(err.contains(n), "{args:?}: {n:?} not in\n{err}");
    }
}

/// Runs `args`, asserts success, and returns the JSON report and stderr.
fn ran(args: &[&str]) -> (serde_json::Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("o.png");
    let o = generate(&png, args);
    let err = stderr(&o);
    assert!(o.status.success(), "{args:?}:\n{err}");
    assert!(png.is_file(), "{args:?} wrote no image");
    (serde_json::from_slice(&o.stdout).unwrap(), err)
}

#[test]
fn zero_steps_is_refused_with_the_fix() {
    refused(
        &["--steps", "0"],
        &[
            "dpmpp cannot run 0 inference steps",
            "Fix: use at least 1 step",
        ],
    );
}

#[test]
fn lcm_above_its_original_50_steps_is_refused_as_diffusers_does() {
    refused(
        &[
            "--scheduler",
            "lcm",
            "--unet",
            "lcm",
            "--cfg",
            "1.5",
            "--steps",
            "51",
        ],
        &[
            "lcm cannot run 51 steps: its timesteps are a subset of the 50-step schedule",
            "diffusers' LCMScheduler refuses more",
            "Fix: use at most 50 steps",
        ],
    );
}

#[test]
fn ddpm_above_1000_steps_is_refused_as_diffusers_does() {
    refused(
        &["--scheduler", "ddpm", "--steps", "1001"],
        &[
            "ddpm cannot run 1001 steps: more than `num_train_timesteps` = 1000",
            "Fix: use at most 1000 steps",
        ],
    );
}

#[test]
fn dpmpp_at_1000_steps_is_refused_where_diffusers_returns_nan() {
    refused(
        &["--steps", "1000"],
        &[
            "dpmpp with 1000 `linspace` steps visits timestep 500 twice",
            "returns NaN",
            "Fix: use fewer steps",
        ],
    );
}

#[test]
fn a_step_count_past_10000_is_refused_not_a_panic() {
    refused(
        &["--scheduler", "euler", "--steps", "18446744073709551615"],
        &[
            "euler cannot run 18446744073709551615 steps: speedscape runs at most 10000",
            "Fix: use at most 10000 steps",
        ],
    );
}

#[test]
fn dpmpp_order_3_with_fewer_than_3_steps_runs_lowering_its_order_as_diffusers_does() {
    for steps in ["1", "2"] {
        let (report, _) = ran(&["--order", "3", "--steps", steps]);
        assert_eq!(report["steps"].to_string(), steps);
    }
}

#[test]
fn guidance_that_is_negative_nan_infinite_or_huge_is_refused() {
    let fix = "Fix: use e.g. 7.5 (DDPM/DPM-Solver++) or 1.5 (LCM-LoRA)";
    for (cfg, why) in [
        ("-1", "guidance scale -1 is not a finite number ≥ 0"),
        ("NaN", "guidance scale NaN is not a finite number ≥ 0"),
        ("inf", "guidance scale inf is not a finite number ≥ 0"),
        ("100.5", "guidance scale 100.5 is above 100"),
        ("1e30", "guidance scale 1e30 is above 100"),
    ] {
        refused(&["--cfg", cfg], &[why, fix]);
    }
    let (report, _) = ran(&["--cfg", "100"]);
    assert_eq!(report["guidance"], 100.0);
}

#[test]
fn sizes_off_the_grid_zero_or_too_large_are_refused_with_the_rule() {
    refused(
        &["--width", "60"],
        &[
            "width 60 is not a positive multiple of 16 (the VAE's scale factor 8, times 2 for each of the UNet's 1 downsamplings)",
            "Fix: use e.g. 48",
        ],
    );
    refused(
        &["--height", "0"],
        &[
            "height 0 is not a positive multiple of 16",
            "Fix: use e.g. 16",
        ],
    );
    refused(
        &["--width", "4112"],
        &[
            "width 4112 is above 4096 pixels, the most speedscape runs",
            "Fix: use at most 4096",
        ],
    );
    // 4096² on the tiny model: 2 × 8 × (512·512)² float32 attention scores, 4 TiB.
    refused(
        &["--width", "4096", "--height", "4096"],
        &[
            "4096×4096 needs at least 4096.0 GiB on the CPU, more than this machine's",
            "the UNet's first self-attention holds batch × heads × cells² float32 scores (2 × 8 × (512×512)²",
            "Fix: use a smaller size, e.g. 64×64",
        ],
    );
}

#[test]
fn every_u64_seed_runs_and_others_get_clap_s_error_naming_the_flag() {
    for seed in ["0", "18446744073709551615"] {
        let (report, _) = ran(&["--seed", seed]);
        assert_eq!(report["seed"].to_string(), seed);
    }
    for (seed, why) in [
        ("-1", "invalid digit found in string"),
        (
            "18446744073709551616",
            "number too large to fit in target type",
        ),
    ] {
        refused(
            &["--seed", seed],
            &[&format!(
                "invalid value '{seed}' for '--seed <SEED>': {why}"
            )],
        );
    }
}

#[test]
fn an_empty_prompt_runs() {
    let (report, err) = ran(&["--prompt", ""]);
    assert_eq!(report["prompt_tokens"], 0);
    assert!(!err.contains("warning"), "{err}");
}

#[test]
fn a_prompt_over_75_tokens_warns_on_stderr_with_the_count_and_the_cut() {
    let prompt = format!("{} red fox jumping", vec!["cat"; 75].join(" "));
    let (report, err) = ran(&["--prompt", &prompt]);
    assert_eq!(report["prompt_tokens"], 75);
    let warning = "warning: prompt is 78 CLIP tokens; SD v1.5 reads at most 75, so the last 3 \
                   were dropped: cut here: \"…cat cat cat cat cat cat cat\" ✂ \"red fox jumping\"";
    assert_eq!(err.matches(warning).count(), 1, "said once:\n{err}");
    // The report keeps it too.
    assert!(
        report["warnings"]
            .to_string()
            .contains("the last 3 were dropped")
    );
}

#[test]
fn control_characters_are_stripped_with_a_note_and_never_reach_the_terminal() {
    // NUL cannot be passed in argv: it comes from a file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.txt");
    std::fs::write(&file, "a \u{7}red\u{0} \u{1b}[31mfox\u{1b}[0m").unwrap();
    let (report, err) = ran(&["--prompt-file", file.to_str().unwrap()]);
    assert_eq!(report["prompt_tokens"], 3, "a red fox");
    assert!(
        err.contains("warning: prompt had 4 control characters (such as NUL, BEL or a terminal escape sequence), removed"),
        "{err}"
    );
    let o = speedscape(&["tokens", "a \u{7}red \u{1b}[31mfox"]);
    assert!(o.status.success());
    let all = [o.stdout.as_slice(), o.stderr.as_slice()].concat();
    assert!(
        !all.iter().any(|&b| b == 0x07 || b == 0x1b || b == 0),
        "{}",
        String::from_utf8_lossy(&all)
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&speedscape(&["tokens", "a red fox"]).stdout)
    );
}

#[test]
fn prompt_file_gives_the_same_tokens_and_image_as_the_prompt_itself() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("prompt.txt");
    std::fs::write(&file, "a red fox\n").unwrap();
    let from_file = speedscape(&["tokens", "--prompt-file", file.to_str().unwrap()]);
    assert!(from_file.status.success(), "{}", stderr(&from_file));
    assert_eq!(
        from_file.stdout,
        speedscape(&["tokens", "a red fox"]).stdout
    );
    let (a, _) = ran(&["--prompt-file", file.to_str().unwrap()]);
    let (b, _) = ran(&["--prompt", "a red fox"]);
    assert_eq!(a["prompt_tokens"], b["prompt_tokens"]);
    // Exactly one of the two.
    let o = speedscape(&["tokens", "x", "--prompt-file", file.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("the argument '[PROMPT]' cannot be used with '--prompt-file <PATH>'"),
        "{}",
        stderr(&o)
    );
    let o = speedscape(&["tokens"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o)
            .contains("required arguments were not provided:\n  <PROMPT|--prompt-file <PATH>>"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_prompt_file_that_is_not_utf8_names_the_file_and_the_byte() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("latin1.txt");
    std::fs::write(&file, b"a red fox\nin sn\xf6w\n").unwrap();
    let want = format!(
        "prompt file {} is not UTF-8 text: byte 15 (0xf6, line 2) does not start a valid UTF-8 character",
        file.display()
    );
    for args in [
        vec!["tokens", "--prompt-file", file.to_str().unwrap()],
        vec![
            "generate",
            "--prompt-file",
            file.to_str().unwrap(),
            "--scheduler",
            "dpmpp",
            "--steps",
            "2",
            "--cfg",
            "7.5",
            "--seed",
            "1",
            "--out",
            "unused.png",
        ],
    ] {
        let o = speedscape(&args);
        assert!(!o.status.success());
        let err = stderr(&o);
        assert!(err.contains(&want), "{err}");
        assert!(err.contains("Fix: save the file as UTF-8"), "{err}");
    }
    let o = speedscape(&["tokens", "--prompt-file", "/nonexistent/prompt.txt"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("cannot open prompt file /nonexistent/prompt.txt"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_10_mb_prompt_file_is_read_up_to_64_kib_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("huge.txt");
    std::fs::write(&file, "cat ".repeat(10 << 18)).unwrap();
    let file = file.to_str().unwrap();
    let o = speedscape(&["tokens", "--prompt-file", file]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "warning: prompt file {file} is 10485760 bytes; only its first 65536 were read"
        )),
        "{err}"
    );
    assert!(
        err.contains("warning: prompt is 16384 CLIP tokens; SD v1.5 reads at most 75, so the last 16309 were dropped"),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("75 prompt tokens (of 75)"));
    let (report, _) = ran(&["--prompt-file", file]);
    assert_eq!(report["prompt_tokens"], 75);
}
