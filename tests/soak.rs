//! Soak: 100 consecutive runs in one process on the tiny model, through the worker that the TUI
//! and `speedscape exercise` use, must not grow the resident memory by more than 5 % after a
//! warm-up. A leak per run (an image, a session, a tensor, an event buffer) shows up here.
//!
//! `SPEEDSCAPE_SOAK_RUNS=N` measures N runs instead of 100 (a longer soak by hand). With 5 % of
//! about 73 MiB, a leak must exceed about 37 KiB per run to fail the test.

use std::time::{Duration, Instant};

use speedscape::config::Config;
use speedscape::pipeline::Request;
use speedscape::rng::RngSource;
use speedscape::runtime::Device;
use speedscape::schedulers::{SchedulerKind, SchedulerOptions};
use speedscape::worker::{Event, Job, WorkerHandle};

/// Resident set size of this process, bytes (VmRSS in /proc/self/status).
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib * 1024
}

/// The i-th run: schedulers, variants and guidance take turns, as a TUI session would.
fn request(i: usize) -> Request {
    let (scheduler, steps, guidance, unet) = match i % 4 {
        0 => (SchedulerKind::DpmSolverPp, 6, 7.5, "base"),
        1 => (SchedulerKind::Lcm, 4, 1.0, "lcm"),
        2 => (SchedulerKind::Ddim, 5, 7.5, "base"),
        _ => (SchedulerKind::EulerAncestral, 4, 1.5, "lcm"),
    };
    Request {
        prompt: format!("a small cottage on a hillside at sunset, take {i}"),
        negative_prompt: String::new(),
        scheduler,
        scheduler_options: SchedulerOptions::default(),
        steps,
        guidance,
        seed: i as u64,
        rng: RngSource::TorchCpu,
        unet: unet.into(),
        loras: Vec::new(),
        width: None,
        height: None,
        latents: None,
        clip_score: false,
        judge: false,
        control: None,
    }
}

#[test]
fn a_hundred_runs_in_one_process_grow_resident_memory_by_at_most_5_percent() {
    let measured: usize = std::env::var("SPEEDSCAPE_SOAK_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let warm_up = 10;
    let start_rss = rss();
    let (worker, mut events) = WorkerHandle::spawn(Config::default(), Some(Device::Cpu), None);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut next = || {
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(120), events.recv()).await })
            .expect("a worker event within 120 s")
            .expect("the worker's channel is open")
    };
    assert!(matches!(next(), Event::Ready(_)));
    let mut run_one = |i: usize| {
        let id = worker.next_run_id();
        worker.submit(Job {
            run: id,
            request: request(i),
        });
        loop {
            match next() {
                Event::Finished { run, image, .. } if run == id => {
                    assert_eq!(image.dimensions(), (64, 64));
                    return;
                }
                ev if ev.is_terminal() => panic!("run {i} did not finish: {ev:?}"),
                _ => {}
            }
        }
    };
    for i in 0..warm_up {
        run_one(i);
    }
    let warm_rss = rss();
    let started = Instant::now();
    for i in warm_up..warm_up + measured {
        run_one(i);
    }
    let elapsed = started.elapsed();
    let end_rss = rss();
    worker.shutdown();
    let growth = (end_rss as f64 - warm_rss as f64) / warm_rss as f64 * 100.0;
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    eprintln!(
        "soak: RSS {:.1} MiB at start, {:.1} MiB after {warm_up} warm-up runs, {:.1} MiB after {measured} more ({growth:+.2} %); {measured} runs took {:.1} s",
        mib(start_rss),
        mib(warm_rss),
        mib(end_rss),
        elapsed.as_secs_f64()
    );
    assert!(
        growth <= 5.0,
        "resident memory grew {growth:.2} % over {measured} runs: {:.1} → {:.1} MiB",
        mib(warm_rss),
        mib(end_rss)
    );
}
