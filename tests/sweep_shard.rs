//! `speedscape sweep plan` / `sweep run --shard K/N` / `sweep merge` on the micro model: a merged
//! sharded sweep equals the unsharded one in every number but the times, an interrupted shard
//! resumes keeping its finished runs, and each bad input is refused with its message and
//! without overwriting anything.

mod common;

use std::path::{Path, PathBuf};

use common::{speedscape, text};
use serde_json::Value;

/// A small sweep: DPM-Solver++ at 1 and 2 steps over a prompt set of 2 (JSON Lines) with 1
/// seed, against DPM-Solver++ 3 (6 runs), read by the micro model's judge.
const SWEEP: [&str; 12] = [
    "--quality",
    "judge",
    "--preset",
    "dpmpp",
    "--steps",
    "1,2",
    "--seeds",
    "1",
    "--prompts",
    "tests/fixtures/sweep-prompts.jsonl",
    "--reference",
    "dpmpp:3",
];

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `speedscape sweep plan --out <plan>` with the sweep's `flags`.
fn plan(plan: &Path, flags: &[&str]) -> std::process::Output {
    let mut args = vec!["sweep", "plan", "--out", s(plan), "--device", "cpu"];
    args.extend_from_slice(flags);
    speedscape(&args)
}

fn ok(o: std::process::Output) -> String {
    assert!(o.status.success(), "{}", text(&o));
    text(&o)
}

fn refused(o: std::process::Output) -> String {
    assert!(
        !o.status.success(),
        "should have been refused: {}",
        text(&o)
    );
    let t = text(&o);
    assert!(t.contains("Fix:"), "the error says how to fix it: {t}");
    t
}

/// `speedscape sweep run --plan <plan> --shard <shard> --out <dir>` on the CPU.
fn run(plan: &Path, shard: &str, dir: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "sweep",
        "run",
        "--plan",
        s(plan),
        "--shard",
        shard,
        "--out",
        s(dir),
        "--device",
        "cpu",
    ];
    args.extend_from_slice(extra);
    speedscape(&args)
}

fn merge(dirs: &[&Path], out: &Path) -> std::process::Output {
    let mut args = vec!["sweep", "merge", "--out", s(out)];
    args.extend(dirs.iter().map(|d| s(d)));
    speedscape(&args)
}

/// The one folder a sweep saved under `out`.
fn saved(out: &Path) -> PathBuf {
    let folders: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(folders.len(), 1, "one new folder: {folders:?}");
    folders[0].clone()
}

/// `value` without what measures time (`*_ms`, `time*`, timings, the run reports, which hold
/// them; the findings, sentences of the landscape's numbers and times) or where it was saved:
/// the numbers that must not depend on how the runs were split.
fn without_times(value: &Value) -> Value {
    match value {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| {
                    !(k.ends_with("_ms")
                        || k.starts_with("time")
                        || ["report", "saved", "findings"].contains(&k.as_str()))
                })
                .map(|(k, v)| (k.clone(), without_times(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_times).collect()),
        v => v.clone(),
    }
}

/// points.csv without its time columns (`time_*`, the speedup, which is a ratio of times).
fn csv_without_times(dir: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(dir.join("points.csv")).unwrap();
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split(',').collect()).collect();
    let keep: Vec<usize> = (0..rows[0].len())
        .filter(|&c| !(rows[0][c].starts_with("time_") || rows[0][c].starts_with("speedup")))
        .collect();
    rows.iter()
        .map(|r| keep.iter().map(|&c| r[c].to_string()).collect())
        .collect()
}

fn json(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("sweep.json")).unwrap()).unwrap()
}

#[test]
fn three_merged_shards_equal_the_unsharded_sweep_in_every_number_but_the_times() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("plan.json");
    ok(plan(&p, &SWEEP));
    let shards: Vec<PathBuf> = (1..=3)
        .map(|k| tmp.path().join(format!("shard{k}")))
        .collect();
    for (k, dir) in shards.iter().enumerate() {
        let t = ok(run(&p, &format!("{}/3", k + 1), dir, &[]));
        assert!(t.contains("2 runs, 0 kept from before, 2 run now"), "{t}");
        let record: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("shard.json")).unwrap())
                .unwrap();
        assert_eq!(record["provider"], "CPUExecutionProvider", "{record}");
        assert!(!record["device"].as_str().unwrap().is_empty(), "{record}");
    }
    let merged_root = tmp.path().join("merged");
    let dirs: Vec<&Path> = shards.iter().map(PathBuf::as_path).collect();
    ok(merge(&dirs, &merged_root));
    let merged = saved(&merged_root);

    let whole_root = tmp.path().join("whole");
    let mut args = vec!["sweep", "--device", "cpu", "--out", s(&whole_root)];
    args.extend_from_slice(&SWEEP);
    ok(speedscape(&args));
    let whole = saved(&whole_root);

    for file in [
        "summary.md",
        "plot.png",
        "plot.svg",
        "points.csv",
        "sweep.json",
    ] {
        assert!(merged.join(file).is_file(), "merge wrote {file}");
    }
    assert_eq!(csv_without_times(&merged), csv_without_times(&whole));
    let (m, w) = (json(&merged), json(&whole));
    assert_eq!(without_times(&m), without_times(&w));
    assert_eq!(m["runs"].as_array().unwrap().len(), 6);
    // Each point is the mean over both prompts, each against its own reference.
    assert_eq!(m["prompts"].as_array().unwrap().len(), 2);
    let point = &m["landscape"]["series"][0]["points"][0];
    assert_eq!(point["runs"], 2, "{point}");
    // The judge read every image, and the knee is read by it.
    assert_eq!(point["judge"]["n"], 2, "{point}");
    assert_eq!(m["quality"], "judge");
    // The numbers compared are real ones: every point has an SSIM to its reference.
    let ssim = &m["landscape"]["series"][0]["points"][0]["ssim"]["mean"];
    assert!(ssim.as_f64().unwrap() < 1.0, "{ssim}");
    let images = |d: &Path| {
        let mut names: Vec<_> = std::fs::read_dir(d.join("images"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|n| (n.clone(), std::fs::read(d.join("images").join(n)).unwrap()))
            .collect::<Vec<_>>()
    };
    assert_eq!(images(&merged), images(&whole), "the same images");
}

/// The mtime and bytes of every file of a shard's `runs/`.
fn run_files(dir: &Path) -> Vec<(String, std::time::SystemTime, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("runs"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            (
                name,
                e.metadata().unwrap().modified().unwrap(),
                std::fs::read(p).unwrap(),
            )
        })
        .collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    files
}

#[test]
fn an_interrupted_shard_resumes_keeping_its_finished_runs_and_redoing_the_partial_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("plan.json");
    ok(plan(&p, &SWEEP));
    let dir = tmp.path().join("shard");
    ok(run(&p, "1/1", &dir, &[]));
    let before = run_files(&dir);
    assert_eq!(before.len(), 12, "a PNG and a JSON per run");
    // The state an interruption leaves: one run never written, one JSON half-written (and a
    // temporary file of the write it was in), one image whose write did not finish.
    let runs = dir.join("runs");
    std::fs::remove_file(runs.join("run-00005.json")).unwrap();
    std::fs::remove_file(runs.join("run-00005.png")).unwrap();
    let half = std::fs::read(runs.join("run-00004.json")).unwrap();
    std::fs::write(runs.join("run-00004.json"), &half[..half.len() / 2]).unwrap();
    std::fs::write(runs.join(".speedscape-x.tmp"), b"{").unwrap();
    let png = std::fs::read(runs.join("run-00001.png")).unwrap();
    std::fs::write(runs.join("run-00001.png"), &png[..png.len() - 10]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));

    let t = ok(run(&p, "1/1", &dir, &[]));
    assert!(t.contains("6 runs, 3 kept from before, 3 run now"), "{t}");
    assert!(t.contains("run-00004.json is corrupt or partial"), "{t}");
    assert!(
        t.contains("run-00001.png is not the image its run file names"),
        "{t}"
    );
    let after = run_files(&dir);
    for name in ["run-00000", "run-00002", "run-00003"] {
        for ext in [".json", ".png"] {
            let file = format!("{name}{ext}");
            let find = |v: &[(String, std::time::SystemTime, Vec<u8>)]| {
                v.iter().find(|f| f.0 == file).cloned().unwrap()
            };
            assert_eq!(find(&after), find(&before), "{file} kept as it was");
        }
    }
    for redone in ["run-00001.png", "run-00004.json", "run-00005.json"] {
        let f = after.iter().find(|f| f.0 == redone).unwrap();
        let old = before.iter().find(|b| b.0 == redone).unwrap();
        assert!(f.1 > old.1, "{redone} written again");
    }
    // Whole again: the merge takes it.
    ok(merge(&[&dir], &tmp.path().join("merged")));
}

#[test]
fn bad_shards_are_refused_by_name_and_nothing_is_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a.json"), tmp.path().join("b.json"));
    // Two runs each: a reference and one point; b's seed differs.
    let small = [
        "--preset",
        "dpmpp",
        "--steps",
        "1",
        "--seeds",
        "1",
        "--reference",
        "dpmpp:2",
    ];
    ok(plan(&a, &small));
    ok(plan(&b, &[&small[..], &["--seed", "7"]].concat()));
    // A plan file is never replaced.
    let before = std::fs::read(&a).unwrap();
    let t = refused(plan(&a, &small));
    assert!(t.contains(s(&a)), "{t}");
    assert_eq!(std::fs::read(&a).unwrap(), before);

    // A plan from another model.
    let t = refused(run(
        &a,
        "1/2",
        &tmp.path().join("x"),
        &["--model-dir", "models/tiny"],
    ));
    assert!(t.contains("the plan was made for the model"), "{t}");
    assert!(
        !tmp.path().join("x").exists(),
        "nothing written for a refused shard"
    );

    let (a1, a2, b2) = (
        tmp.path().join("a1"),
        tmp.path().join("a2"),
        tmp.path().join("b2"),
    );
    ok(run(&a, "1/2", &a1, &[]));
    ok(run(&a, "2/2", &a2, &[]));
    ok(run(&b, "2/2", &b2, &[]));
    let out = tmp.path().join("out");

    // Another shard's folder, or a folder of something else, is not written into.
    let t = refused(run(&a, "2/2", &a1, &[]));
    assert!(t.contains("holds shard 1/2 of plan"), "{t}");
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "mine").unwrap();
    let t = refused(run(&a, "1/2", &other, &[]));
    assert!(t.contains("is not empty and is not a shard folder"), "{t}");
    assert_eq!(std::fs::read_dir(&other).unwrap().count(), 1);

    // Shards of two plans.
    let t = refused(merge(&[&a1, &b2], &out));
    assert!(t.contains("shards of two different plans"), "{t}");
    // A missing shard, named.
    let t = refused(merge(&[&a1], &out));
    assert!(t.contains("shard 2/2 is missing"), "{t}");
    // A corrupt shard folder, by file: a run file, then the record.
    let broken = tmp.path().join("broken");
    common::copy_dir(&a2, &broken);
    let json = std::fs::read_dir(broken.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .unwrap();
    std::fs::write(&json, "{\"plan_sha256\": ").unwrap();
    let t = refused(merge(&[&a1, &broken], &out));
    assert!(
        t.contains("corrupt shard folder") && t.contains(s(&json)),
        "{t}"
    );
    std::fs::write(broken.join("shard.json"), "nonsense").unwrap();
    let t = refused(merge(&[&a1, &broken], &out));
    assert!(
        t.contains(s(&broken.join("shard.json"))) && t.contains("corrupt"),
        "{t}"
    );
    assert!(!out.exists(), "a refused merge writes nothing");

    // Shards that ran on different devices merge with a warning, on the summary and plot too.
    let record = a2.join("shard.json");
    let mut r: Value = serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
    r["device"] = "Another GPU".into();
    std::fs::write(&record, r.to_string()).unwrap();
    let t = ok(merge(&[&a1, &a2], &out));
    assert!(
        t.contains("warning: the runs ran on different devices"),
        "{t}"
    );
    assert!(t.contains("Another GPU (shard 2)"), "{t}");
    let dir = saved(&out);
    let summary = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    assert!(summary.contains("times are not comparable"), "{summary}");
    let svg = std::fs::read_to_string(dir.join("plot.svg")).unwrap();
    assert!(svg.contains("not comparable"), "the plot says so");
}

#[test]
fn sweep_help_documents_plan_run_and_merge() {
    let help = ok(speedscape(&["sweep", "--help"]));
    for what in ["plan", "run", "merge", "--shard K/N"] {
        assert!(help.contains(what), "{what}: {help}");
    }
    let help = ok(speedscape(&["sweep", "run", "--help"]));
    for what in ["--plan", "--shard <K/N>", "resume", "device and provider"] {
        assert!(help.contains(what), "{what}: {help}");
    }
    let help = ok(speedscape(&["sweep", "merge", "--help"]));
    for what in ["different devices", "missing", "corrupt"] {
        assert!(help.contains(what), "{what}: {help}");
    }
}
