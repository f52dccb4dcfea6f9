//! Sharded sweeps: one sweep's runs split over machines and put back together. This module owns
//! the plan file (`speedscape sweep plan`), which runs each shard gets ([`share`]), the shard
//! folder a `speedscape sweep run --plan plan.json --shard K/N --out DIR` fills (resumable: one
//! atomically written pair of files per run), and the merge (`speedscape sweep merge`) that reads
//! shard folders back into one [`SweepOutcome`] — which [`super::output::save_sweep`] writes
//! exactly as it writes an unsharded sweep's.
//!
//! **The references are their own share; merge computes quality.** A shard runs only the runs
//! [`share`] gives it, the reference runs among them, and keeps every run's 8-bit image (PNG,
//! lossless) and report. The merge then measures every run with [`super::headless::measure`],
//! the function an unsharded sweep measures with, on the same 8-bit images, so every quality
//! number comes out identical to a one-machine run. The other choice — each shard running the
//! references its points need — would repeat the most expensive runs (a 50-step reference per
//! seed) on every shard, and where shards run on different devices each would compare its points
//! with a slightly different reference image.
//!
//! A shard folder holds `plan.json` (a byte copy of the plan), `shard.json` ([`ShardRecord`]:
//! which shard of which plan, the model, the device and provider of its last session) and
//! `runs/run-NNNNN.png` + `runs/run-NNNNN.json` ([`RunFile`]; the JSON, written last, names the
//! PNG's SHA-256). A run counts as finished only when both files are there and agree; anything
//! else is run again by `sweep run` and refused, by name, by `sweep merge`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use color_eyre::eyre::bail;
use image::RgbImage;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::headless::{Engine, RunEnd, SweepOutcome, measure, run_runs};
use super::{Plan, PlannedRun, Sweep};
use crate::error::{FixErr, Fixable};
use crate::exercises::headless::write_text;
use crate::models::ModelKind;
use crate::pipeline::RunReport;
use crate::report::{Existing, encode_png, write_file};
use crate::rng::RngSource;
use crate::runtime::Provider;
use crate::worker::WorkerInfo;

/// The `format` of a plan file.
pub const PLAN_FORMAT: &str = "speedscape-sweep-plan/1";
/// The `format` of a shard folder's `shard.json`.
pub const SHARD_FORMAT: &str = "speedscape-sweep-shard/1";
/// A shard folder's record of itself.
pub const SHARD_FILE: &str = "shard.json";
/// A shard folder's copy of its plan.
pub const PLAN_COPY: &str = "plan.json";
/// A shard folder's run files.
pub const RUNS_DIR: &str = "runs";

/// Which model folder a plan is for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelIdentity {
    /// The folder the plan was made with (a shard may have it elsewhere).
    pub dir: String,
    pub kind: ModelKind,
    /// SHA-256 of its `manifest.json` (which records every exported file, its sources and
    /// revisions); `None` for a folder without one.
    pub manifest_sha256: Option<String>,
}

impl ModelIdentity {
    pub fn of(dir: &Path, kind: ModelKind) -> color_eyre::Result<Self> {
        let manifest = dir.join("manifest.json");
        let manifest_sha256 = match std::fs::read(&manifest) {
            Ok(bytes) => Some(sha256(&bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(e).fix_err_with(|| {
                    (
                        format!("cannot read {}", manifest.display()),
                        "check the model folder's permissions",
                    )
                });
            }
        };
        Ok(Self {
            dir: dir.display().to_string(),
            kind,
            manifest_sha256,
        })
    }

    /// The same model: the same manifest (without one, the same kind in the same folder).
    pub fn same_model(&self, other: &Self) -> bool {
        match (&self.manifest_sha256, &other.manifest_sha256) {
            (Some(a), Some(b)) => a == b,
            (None, None) => self.kind == other.kind && self.dir == other.dir,
            _ => false,
        }
    }

    fn describe(&self) -> String {
        let hash = self.manifest_sha256.as_deref().map_or_else(
            || "no manifest".to_string(),
            |h| format!("manifest {}", short(h)),
        );
        format!("{} ({:?}, {hash})", self.dir, self.kind)
    }
}

/// `speedscape sweep plan`'s file: every run of the sweep and every setting that changes its
/// numbers (the model, the noise source, the sweep: prompt, seeds, methods, reference, LoRAs,
/// controls). The device is not among them: shards may run anywhere (times then differ, and
/// the merge says so).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanFile {
    pub format: String,
    pub model: ModelIdentity,
    /// The noise source of every run (`[runtime] rng`, `--rng`).
    pub rng: RngSource,
    pub sweep: Sweep,
    /// Every run, in the sweep's order (each seed's reference first): what the shards split.
    pub runs: Vec<PlannedRun>,
}

impl PlanFile {
    pub fn new(sweep: &Sweep, model: ModelIdentity, rng: RngSource) -> Self {
        Self {
            format: PLAN_FORMAT.into(),
            model,
            rng,
            sweep: sweep.clone(),
            runs: sweep.plan().runs,
        }
    }

    /// The file's text, as `sweep plan` writes it.
    pub fn to_text(&self) -> color_eyre::Result<String> {
        Ok(serde_json::to_string_pretty(self)? + "\n")
    }
}

/// A plan read back: the file, the plan its sweep makes, and the file's SHA-256 (its identity).
#[derive(Debug, Clone)]
pub struct LoadedPlan {
    pub file: PlanFile,
    pub plan: Plan,
    pub sha256: String,
    pub bytes: Vec<u8>,
}

/// Reads a plan file; an error names the file, what is wrong and how to get a good one.
pub fn load_plan(path: &Path) -> color_eyre::Result<LoadedPlan> {
    let bytes = std::fs::read(path).fix_err_with(|| {
        (
            format!("cannot read the plan file {}", path.display()),
            "pass the file `speedscape sweep plan --out FILE` wrote",
        )
    })?;
    parse_plan(path, bytes)
}

fn parse_plan(path: &Path, bytes: Vec<u8>) -> color_eyre::Result<LoadedPlan> {
    let remake = "write it again with `speedscape sweep plan --out FILE`";
    let file: PlanFile = serde_json::from_slice(&bytes).fix_err_with(|| {
        (
            format!(
                "{} is not a sweep plan (corrupt or partial)",
                path.display()
            ),
            remake,
        )
    })?;
    if file.format != PLAN_FORMAT {
        bail!(Fixable::new(
            format!(
                "{} is a {:?} file, not a {PLAN_FORMAT:?} plan",
                path.display(),
                file.format
            ),
            remake,
        ));
    }
    let plan = file.sweep.plan();
    if plan.runs != file.runs {
        bail!(Fixable::new(
            format!(
                "{}: its list of runs does not match its sweep (edited by hand?)",
                path.display()
            ),
            remake,
        ));
    }
    Ok(LoadedPlan {
        sha256: sha256(&bytes),
        file,
        plan,
        bytes,
    })
}

/// `--shard K/N`: shard K (from 1) of N.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub k: usize,
    pub n: usize,
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.k, self.n)
    }
}

/// `K/N` with 1 ≤ K ≤ N.
pub fn parse_shard(text: &str) -> Result<Shard, String> {
    let bad = || format!("{text:?} is not K/N with 1 ≤ K ≤ N (e.g. 2/3: the second of three)");
    let (k, n) = text.split_once('/').ok_or_else(bad)?;
    let k: usize = k.trim().parse().map_err(|_| bad())?;
    let n: usize = n.trim().parse().map_err(|_| bad())?;
    if k == 0 || k > n {
        return Err(bad());
    }
    Ok(Shard { k, n })
}

/// Which shard (0-based) runs each of the plan's runs, when split `n` ways. Deterministic:
/// runs are dealt longest first — by steps, plus one for the text encoder and VAE every run
/// has; ties in plan order — each to the shard with the fewest steps so far (the lowest
/// numbered on a tie), so shards take about equally long. A shard runs its runs in plan order.
pub fn share(plan: &Plan, n: usize) -> Vec<usize> {
    let cost = |i: usize| plan.runs[i].spec.steps + 1;
    let mut order: Vec<usize> = (0..plan.runs.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(cost(i)), i));
    let mut load = vec![0usize; n.max(1)];
    let mut to = vec![0; plan.runs.len()];
    for i in order {
        let lightest = (0..load.len()).min_by_key(|&s| (load[s], s)).unwrap_or(0);
        load[lightest] += cost(i);
        to[i] = lightest;
    }
    to
}

/// The runs of shard `shard`, in plan order.
pub fn runs_of(plan: &Plan, shard: Shard) -> Vec<usize> {
    let to = share(plan, shard.n);
    (0..plan.runs.len())
        .filter(|&i| to[i] == shard.k - 1)
        .collect()
}

/// A shard folder's `shard.json`: which shard of which plan, and where its last session ran.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardRecord {
    pub format: String,
    /// SHA-256 of the plan file's bytes.
    pub plan_sha256: String,
    pub shard: Shard,
    /// The model folder as this shard opened it.
    pub model: ModelIdentity,
    pub provider: Provider,
    /// The GPU's or CPU's name.
    pub device: String,
    pub tiny_model: bool,
    pub clip_scorer: bool,
}

/// One finished (or failed) run in a shard folder: `runs/run-NNNNN.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunFile {
    pub plan_sha256: String,
    /// Index into the plan's runs.
    pub run: usize,
    pub label: String,
    /// Why the run failed (then there is no image, and `sweep run` tries it again).
    pub error: Option<String>,
    /// SHA-256 of `run-NNNNN.png`.
    pub image_sha256: Option<String>,
    pub report: Option<RunReport>,
}

fn run_stem(run: usize) -> String {
    format!("run-{run:05}")
}

fn run_json(dir: &Path, run: usize) -> PathBuf {
    dir.join(RUNS_DIR).join(run_stem(run) + ".json")
}

fn run_png(dir: &Path, run: usize) -> PathBuf {
    dir.join(RUNS_DIR).join(run_stem(run) + ".png")
}

/// A run as its files hold it: finished (image and report) or failed.
pub enum Stored {
    Finished(RgbImage, Box<RunReport>),
    Failed(String),
}

/// Run `run` of shard folder `dir`: `Ok(None)` when it has no file yet, `Err` (naming the
/// file) when its files are corrupt, partial or from another plan.
pub fn read_run(dir: &Path, plan: &LoadedPlan, run: usize) -> Result<Option<Stored>, String> {
    let json = run_json(dir, run);
    let text = match std::fs::read(&json) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{} cannot be read: {e}", json.display())),
    };
    let file: RunFile = serde_json::from_slice(&text)
        .map_err(|e| format!("{} is corrupt or partial: {e}", json.display()))?;
    let label = &plan.plan.runs[run].spec.label;
    if file.plan_sha256 != plan.sha256 || file.run != run || &file.label != label {
        return Err(format!(
            "{} is not run {run} ({label:?}) of this plan",
            json.display()
        ));
    }
    if let Some(e) = file.error {
        return Ok(Some(Stored::Failed(e)));
    }
    let png = run_png(dir, run);
    let bytes =
        std::fs::read(&png).map_err(|e| format!("{} cannot be read: {e}", png.display()))?;
    let (Some(want), Some(report)) = (file.image_sha256, file.report) else {
        return Err(format!(
            "{} has neither an error nor an image and report",
            json.display()
        ));
    };
    if sha256(&bytes) != want {
        return Err(format!(
            "{} is not the image its run file names (corrupt or partial)",
            png.display()
        ));
    }
    let image = image::load_from_memory(&bytes)
        .map_err(|e| format!("{} is not a readable PNG: {e}", png.display()))?
        .to_rgb8();
    Ok(Some(Stored::Finished(image, Box::new(report))))
}

/// Writes run `run`'s end into shard folder `dir`: the PNG first, then the JSON that names it,
/// each atomically, so a run interrupted half-way leaves no file that passes [`read_run`].
fn write_run(dir: &Path, plan: &LoadedPlan, run: usize, end: RunEnd) -> color_eyre::Result<()> {
    let mut file = RunFile {
        plan_sha256: plan.sha256.clone(),
        run,
        label: plan.plan.runs[run].spec.label.clone(),
        error: None,
        image_sha256: None,
        report: None,
    };
    match end {
        RunEnd::Finished { image, report } => {
            let png = encode_png(&image)?;
            write_file(&run_png(dir, run), Existing::Replace, |f| {
                f.write_all(&png)?;
                Ok(())
            })?;
            file.image_sha256 = Some(sha256(&png));
            file.report = Some(*report);
        }
        RunEnd::Failed(e) => file.error = Some(e),
        RunEnd::Cancelled => return Ok(()),
    }
    write_text(
        &run_json(dir, run),
        &(serde_json::to_string_pretty(&file)? + "\n"),
    )
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The first 12 hex digits of a digest, as messages show it.
fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

/// What `sweep run --shard` did.
pub struct ShardRun {
    pub shard: Shard,
    /// The shard's runs.
    pub runs: usize,
    /// Finished runs found in the folder and kept.
    pub kept: usize,
    /// Runs found corrupt or partial (and run again), each with why.
    pub redone: Vec<String>,
    /// Runs that failed this time.
    pub failed: usize,
}

/// `speedscape sweep run --plan --shard K/N --out DIR`: runs shard `shard` of `plan` into `dir`,
/// keeping the finished runs a previous session left there. Refuses a plan for another model
/// than `engine`'s, and a folder that holds something else than this shard.
pub fn run_shard(
    engine: &Engine,
    plan: &LoadedPlan,
    shard: Shard,
    dir: &Path,
) -> color_eyre::Result<ShardRun> {
    let (model_dir, kind) = crate::open::model_dir(engine.config, engine.model_dir.as_deref())?;
    let model = ModelIdentity::of(&model_dir, kind)?;
    if !model.same_model(&plan.file.model) {
        bail!(Fixable::new(
            format!(
                "the plan was made for the model {}, but this shard would run {}",
                plan.file.model.describe(),
                model.describe()
            ),
            "pass --model-dir with the plan's model folder, or make a plan for this model with `speedscape sweep plan`",
        ));
    }
    if engine.config.runtime.rng != plan.file.rng {
        bail!(Fixable::new(
            format!(
                "the plan's runs draw {} noise, but --rng says {}",
                plan.file.rng, engine.config.runtime.rng
            ),
            "leave --rng out: a shard runs with its plan's noise source",
        ));
    }
    prepare_folder(dir, plan, shard)?;
    let mine = runs_of(&plan.plan, shard);
    let mut todo = Vec::new();
    let mut out = ShardRun {
        shard,
        runs: mine.len(),
        kept: 0,
        redone: Vec::new(),
        failed: 0,
    };
    for &i in &mine {
        match read_run(dir, plan, i) {
            Ok(Some(Stored::Finished(..))) => out.kept += 1,
            Ok(Some(Stored::Failed(_)) | None) => todo.push(i),
            Err(why) => {
                out.redone.push(why);
                todo.push(i);
            }
        }
    }
    if todo.is_empty() {
        return Ok(out);
    }
    let info = run_runs(
        engine,
        &plan.plan,
        &todo,
        |info| write_record(dir, plan, shard, &model, info),
        |i, end| {
            let failed = match &end {
                RunEnd::Failed(e) => Some(format!("{} failed: {e}", plan.plan.runs[i].spec.label)),
                _ => None,
            };
            out.failed += usize::from(failed.is_some());
            write_run(dir, plan, i, end)?;
            Ok(failed)
        },
    );
    info.map(|_| out)
}

/// Makes `dir` a shard folder of `plan` (a byte copy of the plan inside), or checks that it is
/// this shard's: a folder with anything else in it is refused, never written into.
fn prepare_folder(dir: &Path, plan: &LoadedPlan, shard: Shard) -> color_eyre::Result<()> {
    let fix = "give each shard a new --out folder, or the folder of an earlier run of this very shard to resume it";
    let record = dir.join(SHARD_FILE);
    if dir.exists() {
        if !dir.is_dir() {
            bail!(Fixable::new(
                format!("--out {} is a file, not a folder", dir.display()),
                fix
            ));
        }
        if record.exists() {
            let r = read_record(dir)?;
            if r.plan_sha256 != plan.sha256 || r.shard != shard {
                bail!(Fixable::new(
                    format!(
                        "{} holds shard {} of plan {}; this is shard {shard} of plan {}",
                        dir.display(),
                        r.shard,
                        short(&r.plan_sha256),
                        short(&plan.sha256)
                    ),
                    fix,
                ));
            }
        } else if std::fs::read_dir(dir)?.next().is_some() {
            bail!(Fixable::new(
                format!(
                    "{} is not empty and is not a shard folder (it has no {SHARD_FILE})",
                    dir.display()
                ),
                fix,
            ));
        }
    }
    std::fs::create_dir_all(dir.join(RUNS_DIR)).fix_err_with(|| {
        (
            format!("cannot create the shard folder {}", dir.display()),
            "choose a folder you can write to",
        )
    })?;
    write_file(&dir.join(PLAN_COPY), Existing::Replace, |f| {
        f.write_all(&plan.bytes)?;
        Ok(())
    })
}

/// Writes `shard.json` once the worker is up: the device and provider of this session.
fn write_record(
    dir: &Path,
    plan: &LoadedPlan,
    shard: Shard,
    model: &ModelIdentity,
    info: &WorkerInfo,
) -> color_eyre::Result<()> {
    let record = ShardRecord {
        format: SHARD_FORMAT.into(),
        plan_sha256: plan.sha256.clone(),
        shard,
        model: model.clone(),
        provider: info.provider,
        device: info.device.clone(),
        tiny_model: info.tiny_model,
        clip_scorer: info.clip_scorer,
    };
    write_text(
        &dir.join(SHARD_FILE),
        &(serde_json::to_string_pretty(&record)? + "\n"),
    )
}

/// A shard folder's `shard.json`; an error names the file.
fn read_record(dir: &Path) -> color_eyre::Result<ShardRecord> {
    let path = dir.join(SHARD_FILE);
    let fix = "pass folders that `speedscape sweep run --shard K/N --out DIR` wrote; rerun a shard whose folder is damaged into a new folder";
    let text = std::fs::read(&path).fix_err_with(|| {
        (
            format!(
                "{} is not a shard folder: {} cannot be read",
                dir.display(),
                path.display()
            ),
            fix,
        )
    })?;
    let r: ShardRecord = serde_json::from_slice(&text).fix_err_with(|| {
        (
            format!("{} is corrupt (not a shard record)", path.display()),
            fix,
        )
    })?;
    if r.format != SHARD_FORMAT {
        bail!(Fixable::new(
            format!(
                "{} is a {:?} file, not a shard record",
                path.display(),
                r.format
            ),
            fix
        ));
    }
    Ok(r)
}

/// One shard folder as the merge reads it.
struct ShardFolder {
    dir: PathBuf,
    record: ShardRecord,
    plan: LoadedPlan,
}

/// Reads a shard folder's record and plan copy; each error names the file.
fn open_shard(dir: &Path) -> color_eyre::Result<ShardFolder> {
    let record = read_record(dir)?;
    let path = dir.join(PLAN_COPY);
    let plan = load_plan(&path)?;
    if plan.sha256 != record.plan_sha256 {
        bail!(Fixable::new(
            format!(
                "{} is not the plan {} says this shard ran (corrupt or replaced)",
                path.display(),
                dir.join(SHARD_FILE).display()
            ),
            "copy the plan file the shards were run from back into that folder, or rerun the shard",
        ));
    }
    Ok(ShardFolder {
        dir: dir.to_path_buf(),
        record,
        plan,
    })
}

/// Checks that `shards` are the N shards of one plan on its model, each once.
fn check_complete(shards: &[ShardFolder]) -> color_eyre::Result<()> {
    let first = &shards[0];
    for s in &shards[1..] {
        if s.record.plan_sha256 != first.record.plan_sha256 {
            bail!(Fixable::new(
                format!(
                    "these are shards of two different plans: {} ran plan {}, {} ran plan {}",
                    first.dir.display(),
                    short(&first.record.plan_sha256),
                    s.dir.display(),
                    short(&s.record.plan_sha256)
                ),
                "merge the shards of one plan: every `sweep run` given the same plan.json",
            ));
        }
        if s.record.shard.n != first.record.shard.n {
            bail!(Fixable::new(
                format!(
                    "{} is shard {} but {} is shard {}: one plan split two ways",
                    s.dir.display(),
                    s.record.shard,
                    first.dir.display(),
                    first.record.shard
                ),
                "merge shards of one split (the same N in --shard K/N)",
            ));
        }
    }
    for s in shards {
        if !s.record.model.same_model(&s.plan.file.model) {
            bail!(Fixable::new(
                format!(
                    "{} ran the model {}, but its plan is for {}",
                    s.dir.display(),
                    s.record.model.describe(),
                    s.plan.file.model.describe()
                ),
                "rerun that shard with the plan's model (--model-dir)",
            ));
        }
    }
    let n = first.record.shard.n;
    for k in 1..=n {
        let with: Vec<&ShardFolder> = shards.iter().filter(|s| s.record.shard.k == k).collect();
        match with.as_slice() {
            [_] => {}
            [] => bail!(Fixable::new(
                format!("shard {k}/{n} is missing: no folder given holds it"),
                format!(
                    "run `speedscape sweep run --plan plan.json --shard {k}/{n} --out DIR` and pass DIR to merge as well"
                ),
            )),
            [a, b, ..] => bail!(Fixable::new(
                format!(
                    "shard {k}/{n} is given twice: {} and {}",
                    a.dir.display(),
                    b.dir.display()
                ),
                "pass each shard's folder once",
            )),
        }
    }
    Ok(())
}

/// `speedscape sweep merge DIR…`: the shards' runs as one sweep, measured as an unsharded sweep
/// measures them. Refuses shards of different plans or splits, a shard run on another model, a
/// missing or unfinished shard and a corrupt run file (each by name).
pub fn merge(dirs: &[PathBuf]) -> color_eyre::Result<SweepOutcome> {
    if dirs.is_empty() {
        bail!(Fixable::new(
            "no shard folders to merge",
            "pass every shard's folder: `speedscape sweep merge DIR1 DIR2 … --out DIR`",
        ));
    }
    let shards = dirs
        .iter()
        .map(|d| open_shard(d))
        .collect::<color_eyre::Result<Vec<_>>>()?;
    check_complete(&shards)?;
    let loaded = &shards[0].plan;
    let plan = &loaded.plan;
    let n = plan.runs.len();
    let mut images: Vec<Option<RgbImage>> = vec![None; n];
    let mut reports: Vec<Option<RunReport>> = vec![None; n];
    let mut errors: Vec<Option<String>> = vec![None; n];
    for s in &shards {
        let mut missing = Vec::new();
        for i in runs_of(plan, s.record.shard) {
            match read_run(&s.dir, loaded, i) {
                Ok(Some(Stored::Finished(image, report))) => {
                    images[i] = Some(image);
                    reports[i] = Some(*report);
                }
                Ok(Some(Stored::Failed(e))) => errors[i] = Some(e),
                Ok(None) => missing.push(plan.runs[i].spec.label.clone()),
                Err(why) => bail!(Fixable::new(
                    format!("corrupt shard folder: {why}"),
                    format!(
                        "resume the shard (`speedscape sweep run --plan {} --shard {} --out {}`): it runs a corrupt run again",
                        s.dir.join(PLAN_COPY).display(),
                        s.record.shard,
                        s.dir.display()
                    ),
                )),
            }
        }
        if !missing.is_empty() {
            bail!(Fixable::new(
                format!(
                    "shard {} in {} is unfinished: {} of its runs have no file ({})",
                    s.record.shard,
                    s.dir.display(),
                    missing.len(),
                    missing.join("; ")
                ),
                format!(
                    "resume it: `speedscape sweep run --plan {} --shard {} --out {}`",
                    s.dir.join(PLAN_COPY).display(),
                    s.record.shard,
                    s.dir.display()
                ),
            ));
        }
    }
    Ok(outcome(&shards, images, reports, errors))
}

/// The merged runs as a [`SweepOutcome`]: every run measured against its seed's reference as
/// [`super::headless::run_sweep`] measures it.
fn outcome(
    shards: &[ShardFolder],
    images: Vec<Option<RgbImage>>,
    reports: Vec<Option<RunReport>>,
    mut errors: Vec<Option<String>>,
) -> SweepOutcome {
    let loaded = &shards[0].plan;
    let plan = &loaded.plan;
    let mut measured = vec![None; plan.runs.len()];
    for i in 0..plan.runs.len() {
        let (Some(image), Some(report)) = (&images[i], &reports[i]) else {
            continue;
        };
        let reference = images[plan.reference_for(i)].as_ref();
        let plain = plan.plain_for(i).and_then(|p| images[p].as_ref());
        match measure(plan, i, image, report, reference, plain) {
            Ok(m) => measured[i] = Some(m),
            Err(e) => errors[i] = Some(e),
        }
    }
    let first = shards
        .iter()
        .min_by_key(|s| s.record.shard.k)
        .map_or(&shards[0].record, |s| &s.record);
    SweepOutcome {
        info: worker_info(first),
        plan: plan.clone(),
        rng: loaded.file.rng,
        measured,
        images,
        reports,
        errors,
        devices: devices(shards),
    }
}

/// "CPUExecutionProvider on AMD EPYC (shards 1, 2); CUDAExecutionProvider on H100 (shard 3)"
/// when the shards ran on more than one device or provider; `None` for one.
fn devices(shards: &[ShardFolder]) -> Option<String> {
    let mut seen: Vec<(String, Vec<String>)> = Vec::new();
    let mut sorted: Vec<&ShardFolder> = shards.iter().collect();
    sorted.sort_by_key(|s| s.record.shard.k);
    for s in sorted {
        let what = format!("{} on {}", s.record.provider, s.record.device);
        let k = s.record.shard.k.to_string();
        match seen.iter_mut().find(|(w, _)| *w == what) {
            Some((_, ks)) => ks.push(k),
            None => seen.push((what, vec![k])),
        }
    }
    (seen.len() > 1).then(|| {
        seen.iter()
            .map(|(w, ks)| {
                let s = if ks.len() == 1 { "" } else { "s" };
                format!("{w} (shard{s} {})", ks.join(", "))
            })
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// What the outputs need of a worker's info, from a shard's record.
fn worker_info(r: &ShardRecord) -> WorkerInfo {
    use crate::pipeline::preview::{PreviewChoice, PreviewKind};
    WorkerInfo {
        provider: r.provider,
        device: r.device.clone(),
        model_dir: PathBuf::from(&r.model.dir),
        tiny_model: r.tiny_model,
        kind: r.model.kind,
        grammar: None,
        image_size: 0,
        notes: Vec::new(),
        variants: Vec::new(),
        fused: Vec::new(),
        adapters: Vec::new(),
        scheduler_config: serde_json::Value::Null,
        clip_scorer: r.clip_scorer,
        preview: PreviewChoice {
            asked: PreviewKind::Off,
            used: PreviewKind::Off,
        },
        preview_every: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::{Sweep, SweepConfig};

    fn plan(seeds: usize) -> Plan {
        Sweep::from_config(&SweepConfig::default(), None)
            .unwrap()
            .with_seed_count(seeds)
            .unwrap()
            .plan()
    }

    #[test]
    fn every_run_goes_to_exactly_one_shard_and_the_loads_are_balanced() {
        let p = plan(3);
        for n in 1..=5 {
            let mut all: Vec<usize> = (1..=n).flat_map(|k| runs_of(&p, Shard { k, n })).collect();
            all.sort_unstable();
            assert_eq!(all, (0..p.runs.len()).collect::<Vec<_>>(), "n = {n}");
            let loads: Vec<usize> = (1..=n)
                .map(|k| {
                    runs_of(&p, Shard { k, n })
                        .iter()
                        .map(|&i| p.runs[i].spec.steps + 1)
                        .sum()
                })
                .collect();
            let longest = p.runs.iter().map(|r| r.spec.steps + 1).max().unwrap();
            let (lo, hi) = (loads.iter().min().unwrap(), loads.iter().max().unwrap());
            assert!(hi - lo <= longest, "n = {n}: loads {loads:?}");
        }
        assert_eq!(share(&p, 3), share(&p, 3), "deterministic");
    }

    #[test]
    fn shard_specs_are_k_of_n() {
        assert_eq!(parse_shard("2/3"), Ok(Shard { k: 2, n: 3 }));
        for bad in ["0/3", "4/3", "3", "a/b", "1/0"] {
            let e = parse_shard(bad).unwrap_err();
            assert!(e.contains("is not K/N"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_plan_file_reads_back_as_the_same_plan_and_an_edited_one_is_refused() {
        let sweep = Sweep::from_config(&SweepConfig::default(), Some("lcm")).unwrap();
        let model = ModelIdentity {
            dir: "models/micro".into(),
            kind: ModelKind::Micro,
            manifest_sha256: Some("ab".repeat(32)),
        };
        let file = PlanFile::new(&sweep, model, RngSource::default());
        let text = file.to_text().unwrap();
        let back = parse_plan(Path::new("plan.json"), text.clone().into_bytes()).unwrap();
        assert_eq!(back.plan, sweep.plan());
        assert_eq!(back.sha256, sha256(text.as_bytes()));
        let edited = text.replacen("\"steps\": 1,", "\"steps\": 7,", 1);
        assert_ne!(edited, text);
        let e = parse_plan(Path::new("plan.json"), edited.into_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not match its sweep"), "{e}");
    }
}
