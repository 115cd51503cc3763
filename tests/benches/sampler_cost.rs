//! What sampling costs, on 500 real cgroup v1 containers (250 pods of two)
//! on this machine. Needs root and the v1 memory controller.
//!
//! `cargo bench -p oomlens-tests --bench sampler_cost`
//!
//! Prints:
//! 1. the sampler's CPU time per second at the default schedule (thread
//!    CPU time over a 10 s run), as a share of one core;
//! 2. its cost per usage sample and per full sample (read + parse +
//!    record), next to a plain loop of `pread` calls over the same files in
//!    the same run, and the ratio of the two;
//! 3. resident memory for 15 minutes of history of every followed cgroup
//!    (histories filled with 15 minutes of samples at the default schedule).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::time::{ClockId, clock_gettime};
use oomlens_agent::cgroup::history::{History, Windows};
use oomlens_agent::cgroup::reader::FullSample;
use oomlens_agent::cgroup::{Sampler, SamplerConfig};
use oomlens_tests::{ScratchTree, real_kernel_unavailable, unique};

const PODS: usize = 250;
const CONTAINERS_PER_POD: usize = 2;

fn thread_cpu_ns() -> u64 {
    let t = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).expect("thread clock");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// ns per pread of each file, over `rounds` passes of all files.
fn raw_pread_ns(files: &[File], rounds: usize) -> f64 {
    let mut buf = vec![0u8; 8192];
    let start = Instant::now();
    for _ in 0..rounds {
        for file in files {
            std::hint::black_box(file.read_at(&mut buf, 0).expect("pread"));
        }
    }
    start.elapsed().as_nanos() as f64 / (rounds * files.len()) as f64
}

fn main() {
    if let Some(reason) = real_kernel_unavailable() {
        println!("SKIPPED sampler_cost: {reason}");
        return;
    }
    let tree = ScratchTree::new(&unique("oomlens-bench"));
    let mut containers = Vec::new();
    for p in 0..PODS {
        let uid = format!("{:08x}-{:04x}-4000-8000-00000000beef", std::process::id(), p);
        for c in 0..CONTAINERS_PER_POD {
            let id = format!("{:060x}{:04x}", p, c);
            let relative = format!("kubepods/burstable/pod{uid}/{id}");
            let dir = tree.create(&relative);
            tree.limit(&relative, 256 << 20);
            containers.push(dir);
        }
    }
    println!(
        "{} containers in {PODS} pods under {}",
        containers.len(),
        tree.kernel_path("")
    );

    let config = SamplerConfig {
        node_name: "bench".into(),
        ..oomlens_tests::host_sampler_config()
    };
    let schedule = config.schedule;
    let (warnings, _rx) = tokio::sync::mpsc::channel(1024);
    let rss_before = rss_kib();
    let mut sampler = Sampler::new(config, warnings);

    // 1 + 2: the default schedule for 10 s on this thread.
    let step = schedule.hot.min(schedule.fast);
    let run_for = Duration::from_secs(10);
    let cpu_start = thread_cpu_ns();
    let wall_start = Instant::now();
    let mut next = wall_start;
    while wall_start.elapsed() < run_for {
        sampler.tick(Instant::now());
        next += step;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let cpu_ns = thread_cpu_ns() - cpu_start;
    let wall = wall_start.elapsed().as_secs_f64();
    let stats = sampler.stats();
    let rss_tracking = rss_kib();
    println!(
        "followed cgroups: {} (containers, pods, QoS, kubepods, others on the host)",
        stats.tracked
    );
    println!(
        "samples in {wall:.1} s: {} usage, {} full ({:.1} usage/s and {:.2} full/s per cgroup)",
        stats.fast_samples,
        stats.full_samples,
        (stats.fast_samples + stats.full_samples) as f64 / wall / stats.tracked as f64,
        stats.full_samples as f64 / wall / stats.tracked as f64
    );
    println!(
        "sampler CPU: {:.2} ms per second = {:.2}% of one core",
        cpu_ns as f64 / 1e6 / wall,
        cpu_ns as f64 / 1e9 / wall * 100.0
    );

    if std::env::args().any(|a| a == "--sampler-only") {
        return; // for profiling the sampling phase alone
    }

    // The same reads without the sampler: every followed cgroup's files,
    // opened once, read with plain preads on the same schedule (usage every
    // 100 ms, the full set every second instead), over the same time.
    let memory_root = Path::new("/sys/fs/cgroup/memory");
    let paths = sampler.tracked_paths();
    let dirs: Vec<_> = paths
        .iter()
        .map(|p| memory_root.join(p.trim_start_matches('/')))
        .collect();
    // Containers get usage at the fast rate; other levels full samples only
    // (none is near a limit here, so none is hot).
    let is_container: Vec<bool> = paths
        .iter()
        .map(|p| oomlens_agent::pods::parse_cgroup_path(p).level == oomlens_agent::pods::Level::Container)
        .collect();
    let full_names = [
        "memory.usage_in_bytes",
        "memory.limit_in_bytes",
        "memory.stat",
        "memory.oom_control",
        "memory.failcnt",
    ];
    let files: Vec<Vec<File>> = dirs
        .iter()
        .map(|d| {
            full_names
                .iter()
                .map(|n| File::open(d.join(n)).expect("open"))
                .collect()
        })
        .collect();
    let mut buf = vec![0u8; 8192];
    let (mut raw_fast, mut raw_full) = (0u64, 0u64);
    let cpu_start = thread_cpu_ns();
    let wall_start = Instant::now();
    let mut next = wall_start;
    let mut tick = 0u64;
    while wall_start.elapsed() < run_for {
        for (i, set) in files.iter().enumerate() {
            // Staggered like the sampler's cgroups, which start at different ticks.
            let phase = tick + i as u64;
            if phase.is_multiple_of(20) {
                for file in set {
                    std::hint::black_box(file.read_at(&mut buf, 0).expect("pread"));
                }
                raw_full += 1;
            } else if phase.is_multiple_of(2) && is_container[i] {
                std::hint::black_box(set[0].read_at(&mut buf, 0).expect("pread"));
                raw_fast += 1;
            }
        }
        tick += 1;
        next += step;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let raw_cpu_ns = thread_cpu_ns() - cpu_start;
    let raw_wall = wall_start.elapsed().as_secs_f64();
    println!(
        "raw preads, same files and schedule: {raw_fast} usage + {raw_full} full in {raw_wall:.1} s: {:.2} ms per second = {:.2}% of one core",
        raw_cpu_ns as f64 / 1e6 / raw_wall,
        raw_cpu_ns as f64 / 1e9 / raw_wall * 100.0
    );
    let sampler_per_sample = cpu_ns as f64 / (stats.fast_samples as f64 + 10.0 * stats.full_samples as f64);
    let raw_per_sample = raw_cpu_ns as f64 / (raw_fast as f64 + 10.0 * raw_full as f64);
    println!(
        "cost per sample (a full sample weighted as 10 usage samples): sampler {:.0} ns, raw {:.0} ns, ratio {:.2}",
        sampler_per_sample,
        raw_per_sample,
        sampler_per_sample / raw_per_sample
    );
    let hot_usage = raw_pread_ns(
        &files
            .iter()
            .map(|f| f[0].try_clone().expect("dup"))
            .collect::<Vec<_>>(),
        100,
    );
    println!(
        "for reference: sampling passes took {:.0} ns per sample (wall); a back-to-back pread loop with hot \
         caches reads usage in {hot_usage:.0} ns",
        stats.sampling_ns as f64 / (stats.fast_samples + stats.full_samples) as f64
    );

    // 3: 15 minutes of history for every followed cgroup.
    let mut histories: Vec<History> = (0..stats.tracked)
        .map(|_| History::new(Windows::default()))
        .collect();
    let base = 1_700_000_000_000u64;
    let full_sample = FullSample {
        usage: 100 << 20,
        limit: Some(256 << 20),
        working_set: 90 << 20,
        ..FullSample::default()
    };
    for tick in 0..(15 * 60 * 10u64) {
        let t = base + tick * 100;
        for (i, history) in histories.iter_mut().enumerate() {
            if tick % 10 == 0 {
                history.record_full(t, &full_sample);
            } else {
                history.record_usage(t, (100 << 20) + (tick + i as u64) % 4096 * 4096);
            }
        }
    }
    let heap: usize = histories.iter().map(History::heap_bytes).sum();
    let rss_full = rss_kib();
    println!(
        "memory: {:.1} MiB of history heap for {} cgroups x 15 min ({:.1} KiB each); process RSS {:.1} MiB \
         (was {:.1} MiB before the sampler, {:.1} MiB while following without history)",
        heap as f64 / 1048576.0,
        histories.len(),
        heap as f64 / 1024.0 / histories.len() as f64,
        rss_full as f64 / 1024.0,
        rss_before as f64 / 1024.0,
        rss_tracking as f64 / 1024.0
    );
    drop(sampler);
}
