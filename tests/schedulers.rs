//! Golden tests: every scheduler against diffusers 0.42.1, step by step.
//!
//! `tests/fixtures/make_scheduler_fixtures.py` records diffusers driving each scheduler the way
//! StableDiffusionPipeline does (model outputs, the noise each step draws, every output). Here
//! the Rust schedulers are driven with the same model outputs and a noise source that replays
//! the recorded draws, and every step is compared:
//!
//! - timesteps (and the float timesteps the UNet sees) exactly equal;
//! - `scale_model_input`, `prev_sample` and `denoised` within 1e-5 relative, where
//!   relative = max|rust − ref| / max(max|ref|, 1e-6) over the step's tensor;
//! - schedules diffusers refuses (or cannot step through) are refused.
//!
//! Run with `--nocapture` to see the worst error per scheduler and variant; set
//! `SCHEDULER_CASE_ERRORS=1` as well to list every case and every step that is not bit-exact.
//!
//! Why not bit-exact everywhere: torch's CPU float32 `sqrt`, `exp` and `log` (used on 0-d
//! tensors for ᾱ^½, e^{−h}, log σ, …) are not correctly rounded for ~0.1–1% of inputs, while
//! Rust's are; a one-ulp difference in a coefficient then propagates through later steps.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ndarray::{Array2, Array4, Array5, ArrayView4, Axis};
use ndarray_npy::read_npy;
use serde::Deserialize;
use speedscape::rng::NoiseSource;
use speedscape::schedulers::{
    BetaSchedule, SchedulerConfig, SchedulerKind, SchedulerOptions, alphas_cumprod, betas, build,
};

/// The tolerance on every compared tensor, relative to the reference's largest magnitude.
const REL_TOL: f32 = 1e-5;

#[derive(Deserialize)]
struct Index {
    versions: BTreeMap<String, String>,
    sample_shape: Vec<usize>,
    sd_v15_config: serde_json::Value,
    tables: BTreeMap<String, TableCase>,
    cases: Vec<Case>,
}

/// betas and alphas_cumprod of one beta schedule, as diffusers computes them.
#[derive(Deserialize)]
struct TableCase {
    beta_start: f64,
    beta_end: f64,
    file: String,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    kind: String,
    steps: usize,
    config: serde_json::Value,
    options: CaseOptions,
    /// "ok", "refused" (set_timesteps raised), "step_failed" (step raised), "empty".
    status: String,
    error: Option<String>,
    timesteps: Option<Vec<i64>>,
    timesteps_f32: Option<Vec<f32>>,
    init_noise_sigma: Option<f32>,
    /// Folder of the trajectory arrays, for cases that have one.
    dir: Option<String>,
    noise_draws: Option<usize>,
    scale_identity: Option<bool>,
}

#[derive(Deserialize)]
struct CaseOptions {
    solver_order: Option<usize>,
    use_karras_sigmas: Option<bool>,
    eta: Option<f32>,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/schedulers")
}

fn load_index() -> Index {
    let path = fixtures().join("index.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

fn options(case: &Case) -> SchedulerOptions {
    SchedulerOptions {
        solver_order: case.options.solver_order,
        use_karras_sigmas: case.options.use_karras_sigmas,
        timestep_spacing: None,
        eta: case.options.eta.unwrap_or(0.0),
    }
}

/// Replays the noise diffusers drew, checking each request's shape.
struct ReplayNoise {
    draws: Option<Array5<f32>>,
    next: usize,
    shape: [usize; 4],
}

impl NoiseSource for ReplayNoise {
    fn randn(&mut self, shape: [usize; 4]) -> Array4<f32> {
        assert_eq!(shape, self.shape, "noise requested with the wrong shape");
        let draws = self
            .draws
            .as_ref()
            .expect("the scheduler drew noise where diffusers drew none");
        assert!(
            self.next < draws.len_of(Axis(0)),
            "the scheduler drew more noise than diffusers ({} draws)",
            draws.len_of(Axis(0))
        );
        let out = draws.index_axis(Axis(0), self.next).to_owned();
        self.next += 1;
        out
    }
}

/// Worst errors of one compared tensor.
#[derive(Clone, Copy, Default)]
struct Err {
    /// max|rust − ref| / max(max|ref|, 1e-6).
    rel: f32,
    /// max|rust − ref|.
    abs: f32,
}

impl Err {
    fn of(rust: ArrayView4<f32>, reference: ArrayView4<f32>) -> Err {
        assert_eq!(rust.dim(), reference.dim());
        let scale = reference
            .iter()
            .fold(0.0f32, |m, v| m.max(v.abs()))
            .max(1e-6);
        let abs = rust.iter().zip(reference.iter()).fold(0.0f32, |m, (a, b)| {
            let d = (a - b).abs();
            if d.is_nan() { f32::INFINITY } else { m.max(d) }
        });
        Err {
            rel: abs / scale,
            abs,
        }
    }

    fn max(self, other: Err) -> Err {
        Err {
            rel: self.rel.max(other.rel),
            abs: self.abs.max(other.abs),
        }
    }
}

fn read5(dir: &Path, name: &str) -> Option<Array5<f32>> {
    let path = dir.join(format!("{name}.npy"));
    path.exists()
        .then(|| read_npy(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display())))
}

/// Whether speedscape refuses this case: where diffusers refuses or fails in `step`, for zero
/// steps (diffusers either crashes or returns an empty run), and where a DDPM/DDIM schedule
/// visits a negative timestep (diffusers then silently reads ᾱ[−1]), and where a multistep
/// DPM-Solver++ schedule (not Karras: its σ stay distinct) visits a timestep twice (diffusers'
/// next update divides by the zero log-SNR gap and returns NaN).
fn expect_refusal(case: &Case) -> bool {
    let negative = case
        .timesteps
        .as_ref()
        .is_some_and(|ts| ts.iter().any(|&t| t < 0));
    let repeated = case
        .timesteps
        .as_ref()
        .is_some_and(|ts| ts.windows(2).any(|w| w[0] == w[1]));
    let dpmpp_repeats = case.kind == "dpmpp"
        && repeated
        && case.options.use_karras_sigmas != Some(true)
        && case.options.solver_order != Some(1)
        && case.config.get("use_karras_sigmas") != Some(&serde_json::Value::Bool(true))
        && case.config.get("solver_order") != Some(&serde_json::Value::from(1));
    case.status != "ok"
        || case.steps == 0
        || (matches!(case.kind.as_str(), "ddpm" | "ddim") && negative)
        || dpmpp_repeats
}

/// The variant a case belongs to: its name without the step count.
fn group(case: &Case) -> String {
    let suffix = format!("-{}", case.steps);
    case.name
        .strip_suffix(&suffix)
        .unwrap_or(&case.name)
        .to_string()
}

/// Runs one case; returns the worst error over its steps, or the failures.
fn run_case(case: &Case, shape: [usize; 4]) -> Result<Option<Err>, Vec<String>> {
    let who = format!("{} ({} steps)", case.name, case.steps);
    let kind: SchedulerKind = case.kind.parse().map_err(|e| vec![format!("{who}: {e}")])?;
    let config: SchedulerConfig = serde_json::from_value(case.config.clone())
        .map_err(|e| vec![format!("{who}: config does not parse: {e}")])?;
    let built = build(kind, &config, case.steps, &options(case));

    if expect_refusal(case) {
        return match built {
            Ok(s) => Err(vec![format!(
                "{who}: diffusers {} ({}) but speedscape accepted it with timesteps {:?}",
                case.status,
                case.error.as_deref().unwrap_or("negative timestep"),
                s.timesteps()
            )]),
            Err(e) => {
                // The refusal names its cause: the offending setting, else the step count.
                let msg = e.to_string();
                let diffusers_error = case.error.as_deref().unwrap_or("");
                let cause = if diffusers_error.contains("prediction_type") {
                    "prediction_type".to_string()
                } else {
                    case.steps.to_string()
                };
                if msg.contains(&cause) {
                    Ok(None)
                } else {
                    Err(vec![format!("{who}: refusal does not name {cause}: {msg}")])
                }
            }
        };
    }
    let mut scheduler = built.map_err(|e| vec![format!("{who}: refused: {e:#}")])?;

    let mut failures = Vec::new();
    let expected_ts = case.timesteps.as_ref().expect("ok cases record timesteps");
    if scheduler.timesteps() != expected_ts.as_slice() {
        failures.push(format!(
            "{who}: timesteps {:?}, diffusers {:?}",
            scheduler.timesteps(),
            expected_ts
        ));
    }
    let expected_model_ts: Vec<f32> = match &case.timesteps_f32 {
        Some(f) => f.clone(),
        None => expected_ts.iter().map(|&t| t as f32).collect(),
    };
    let model_ts = scheduler.model_timesteps();
    if model_ts
        .iter()
        .map(|t| t.to_bits())
        .ne(expected_model_ts.iter().map(|t| t.to_bits()))
    {
        failures.push(format!(
            "{who}: model timesteps {model_ts:?}, diffusers {expected_model_ts:?}"
        ));
    }
    let sigma = scheduler.init_noise_sigma();
    let expected_sigma = case
        .init_noise_sigma
        .expect("ok cases record init_noise_sigma");
    if sigma != expected_sigma {
        failures.push(format!(
            "{who}: init_noise_sigma {sigma}, diffusers {expected_sigma}"
        ));
    }
    if !failures.is_empty() {
        return Err(failures);
    }
    let Some(dir) = &case.dir else {
        return Ok(None);
    };

    let dir = fixtures().join(dir);
    let xs = read5(&dir, "x").expect("x.npy");
    let outs = read5(&dir, "model_output").expect("model_output.npy");
    let denoised = read5(&dir, "denoised").expect("denoised.npy");
    let scaled = read5(&dir, "scaled");
    assert_eq!(scaled.is_none(), case.scale_identity == Some(true), "{who}");
    let mut noise = ReplayNoise {
        draws: read5(&dir, "noise"),
        next: 0,
        shape,
    };

    let mut worst = Err::default();
    let mut x = xs.index_axis(Axis(0), 0).to_owned();
    let timesteps = scheduler.timesteps().to_vec();
    for (i, &t) in timesteps.iter().enumerate() {
        let at = |what: &str, e: Err| {
            format!(
                "{} {} steps, step {i} (t={t}): {what} off by {:.3e} relative ({:.3e} abs)",
                case.kind, case.steps, e.rel, e.abs
            )
        };
        let model_in = scheduler.scale_model_input(x.view(), t);
        let reference_in = match &scaled {
            Some(s) => s.index_axis(Axis(0), i).to_owned(),
            None => x.clone(),
        };
        let e_in = Err::of(model_in.view(), reference_in.view());
        let out = scheduler.step(outs.index_axis(Axis(0), i), t, x.view(), &mut noise);
        let e_prev = Err::of(out.prev_sample.view(), xs.index_axis(Axis(0), i + 1));
        let e_den = match &out.denoised {
            Some(d) => Err::of(d.view(), denoised.index_axis(Axis(0), i)),
            None => {
                failures.push(format!("{who}: step {i} returned no denoised"));
                Err::default()
            }
        };
        for (what, e) in [
            ("scale_model_input", e_in),
            ("prev_sample", e_prev),
            ("denoised", e_den),
        ] {
            if e.rel > REL_TOL || e.rel.is_nan() {
                failures.push(format!("[{}] {}", case.name, at(what, e)));
            }
        }
        if std::env::var_os("SCHEDULER_CASE_ERRORS").is_some()
            && (e_in.abs > 0.0 || e_prev.abs > 0.0 || e_den.abs > 0.0)
        {
            println!(
                "  {} step {i} t={t}: in {:.3e} prev {:.3e} den {:.3e}",
                case.name, e_in.abs, e_prev.abs, e_den.abs
            );
        }
        worst = worst.max(e_in).max(e_prev).max(e_den);
        x = out.prev_sample;
    }
    let drawn = noise.next;
    if drawn != case.noise_draws.unwrap_or(0) {
        failures.push(format!(
            "{who}: drew {drawn} noise tensors, diffusers drew {}",
            case.noise_draws.unwrap_or(0)
        ));
    }
    if failures.is_empty() {
        Ok(Some(worst))
    } else {
        Err(failures)
    }
}

#[test]
fn schedulers_match_diffusers() {
    let index = load_index();
    assert_eq!(
        index.versions.get("diffusers").map(String::as_str),
        Some("0.42.1")
    );
    let shape: [usize; 4] = index
        .sample_shape
        .clone()
        .try_into()
        .expect("4-d sample shape");

    let mut failures = Vec::new();
    let mut worst: BTreeMap<String, (Err, usize)> = BTreeMap::new();
    let mut refused = 0;
    for case in &index.cases {
        match run_case(case, shape) {
            Ok(Some(e)) => {
                if std::env::var_os("SCHEDULER_CASE_ERRORS").is_some() {
                    println!("{:<28} {:>12.3e} {:>12.3e}", case.name, e.rel, e.abs);
                }
                let entry = worst.entry(group(case)).or_default();
                *entry = (entry.0.max(e), entry.1 + 1);
            }
            Ok(None) => refused += usize::from(expect_refusal(case)),
            Err(f) => failures.extend(f),
        }
    }

    println!("worst error per scheduler/variant over all steps of all its trajectories:");
    println!(
        "{:<24} {:>6} {:>12} {:>12}",
        "variant", "cases", "relative", "abs"
    );
    for (name, (e, n)) in &worst {
        println!("{name:<24} {n:>6} {:>12.3e} {:>12.3e}", e.rel, e.abs);
    }
    let mut per_kind: BTreeMap<&str, Err> = BTreeMap::new();
    for (name, (e, _)) in &worst {
        let kind = SchedulerKind::ALL
            .iter()
            .map(|k| k.as_str())
            .filter(|k| name == k || name.starts_with(&format!("{k}-")))
            .max_by_key(|k| k.len())
            .unwrap_or("?");
        let w = per_kind.entry(kind).or_default();
        *w = w.max(*e);
    }
    println!("per scheduler:");
    for (kind, e) in &per_kind {
        println!("{kind:<24} {:>6} {:>12.3e} {:>12.3e}", "", e.rel, e.abs);
    }
    println!("{} cases, {refused} refusals matched", index.cases.len());

    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let trajectories: usize = worst.values().map(|(_, n)| n).sum();
    assert!(
        trajectories > 100 && refused > 20,
        "{trajectories} trajectories, {refused} refusals"
    );
}

/// SD v1.5's own PNDM config (with keys for other classes) parses, and a step count's schedule
/// follows each scheduler's own default spacing, as the fixtures recorded from diffusers show.
#[test]
fn sd_v15_config_parses_with_foreign_keys() {
    let index = load_index();
    let config: SchedulerConfig =
        serde_json::from_value(index.sd_v15_config.clone()).expect("SD v1.5 config parses");
    assert_eq!(config.num_train_timesteps, Some(1000));
    assert_eq!(config.steps_offset, Some(1));
    assert_eq!(config.timestep_spacing, None);
    assert_eq!(config.class_name.as_deref(), Some("PNDMScheduler"));
}

/// Unknown values are refused with the field, the value and the accepted values.
#[test]
fn unknown_config_values_are_clear_errors() {
    let index = load_index();
    for (field, bad, accepted) in [
        ("beta_schedule", "foo", "scaled_linear"),
        ("prediction_type", "bar", "v_prediction"),
        ("timestep_spacing", "sideways", "trailing"),
    ] {
        let mut value = index.sd_v15_config.clone();
        value[field] = serde_json::Value::from(bad);
        let text = value.to_string();
        let err = SchedulerConfig::from_json_str(&text)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(field) && err.contains(bad) && err.contains(accepted),
            "{field}: {err}"
        );
    }
}

/// betas and alphas_cumprod equal diffusers' float32 tables bit for bit.
#[test]
fn beta_tables_match_diffusers_exactly() {
    let index = load_index();
    assert_eq!(index.tables.len(), 3);
    for (name, table) in &index.tables {
        let schedule = BetaSchedule::try_from(name.clone()).expect("known beta schedule");
        let path = fixtures().join(&table.file);
        let reference: Array2<f32> =
            read_npy(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let b = betas(
            schedule,
            table.beta_start,
            table.beta_end,
            reference.ncols(),
        );
        let a = alphas_cumprod(&b);
        for (what, rust, row) in [("betas", &b, 0), ("alphas_cumprod", &a, 1)] {
            let reference = reference.row(row);
            let bad: Vec<_> = rust
                .iter()
                .zip(reference.iter())
                .enumerate()
                .filter(|(_, (r, d))| r.to_bits() != d.to_bits())
                .map(|(i, (r, d))| format!("[{i}] {r:e} vs {d:e}"))
                .take(5)
                .collect();
            assert!(bad.is_empty(), "{name} {what} differ: {}", bad.join(", "));
        }
    }
}
