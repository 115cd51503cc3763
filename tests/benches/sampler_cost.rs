//! What sampling costs, on 500 real cgroup v1 containers (250 pods of two)
//! on this machine. Needs root and the v1 memory controller.
//!
//! `cargo bench -p oomlens-tests --bench sampler_cost`
//!
//! Prints, for three rounds and their median:
//! 1. the sampler's CPU time per second at the default schedule (thread
//!    CPU time of its passes over 10 s, after its first pass and 12 s of
//!    warm-up), as a share of one core;
//! 2. its cost per sample (read + parse + record), next to plain `pread`
//!    calls over the same files on the same schedule, and the ratio of the
//!    two. This VM's speed drifts by a quarter from one minute to the
//!    next, so the two sides share every tick: the sampler's pass and the
//!    raw pass run one after the other, the order alternating.
//!
//! The rounds run twice, back to back: on an idle machine, and on a busy
//! node, with a neighbour on the other core writing through 128 MiB (four
//! times this machine's 32 MiB last-level cache) a cache line at a time,
//! as a memory-hungry workload sharing the node does. The bench runs on
//! core 0, the neighbour on core 1 (`taskset`).
//!
//! Then resident memory with 15 minutes of history in every followed
//! cgroup's own history, and what a full rescan costs.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::time::{ClockId, clock_gettime};
use oomlens_agent::cgroup::reader::FullSample;
use oomlens_agent::cgroup::{Sampler, SamplerConfig, Schedule};
use oomlens_agent::pods::Level;
use oomlens_tests::{ScratchTree, real_kernel_unavailable, unique};

const PODS: usize = 250;
const CONTAINERS_PER_POD: usize = 2;

fn thread_cpu_ns() -> u64 {
    let t = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).expect("thread clock");
    nanos(Duration::from(t))
}

fn process_cpu_ns() -> u64 {
    let t = clock_gettime(ClockId::CLOCK_PROCESS_CPUTIME_ID).expect("process clock");
    nanos(Duration::from(t))
}

/// The bench's durations in u64 (584 years of nanoseconds).
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).expect("a bench's duration")
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).expect("a bench's duration")
}

/// CPU time of one measured phase.
struct Phase {
    /// This thread (the sampling loop).
    thread_ns: u64,
    /// The whole process: also the sampler's OOM-notification thread.
    process_ns: u64,
    wall_s: f64,
}

impl Phase {
    fn share(ns: u64, wall_s: f64) -> String {
        format!(
            "{:.2} ms per second = {:.2}% of one core",
            ns as f64 / 1e6 / wall_s,
            ns as f64 / 1e9 / wall_s * 100.0
        )
    }
}

/// Runs `pass(k)` for each k of `ticks` at `start + k * step`, as the
/// sampler's task does.
fn run_ticks(
    start: Instant,
    step: Duration,
    ticks: std::ops::RangeInclusive<u64>,
    mut pass: impl FnMut(u64),
) {
    for k in ticks {
        let at = start + step * u32::try_from(k).expect("a bench's tick count");
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        pass(k);
    }
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

fn main() {
    if let Some(reason) = real_kernel_unavailable() {
        println!("SKIPPED sampler_cost: {reason}");
        return;
    }
    let tree = ScratchTree::new(&unique("oomlens-bench"));
    for p in 0..PODS {
        let uid = format!("{:08x}-{:04x}-4000-8000-00000000beef", std::process::id(), p);
        for c in 0..CONTAINERS_PER_POD {
            let relative = format!("kubepods/burstable/pod{uid}/{:060x}{c:04x}", p);
            tree.create(&relative);
            tree.limit(&relative, 256 << 20);
        }
    }
    println!(
        "{} containers in {PODS} pods under {}",
        PODS * CONTAINERS_PER_POD,
        tree.kernel_path("")
    );
    let config = SamplerConfig {
        node_name: "bench".into(),
        ..oomlens_tests::host_sampler_config()
    };
    let schedule = config.schedule;
    let step = schedule.hot.min(schedule.fast);
    let ticks = millis(MEASURED) / millis(step);
    let rss_before = rss_kib();

    // This process on core 0; the busy neighbour gets core 1.
    let pinned = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", "0", &std::process::id().to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !pinned {
        println!("(taskset unavailable: not pinned to a core)");
    }
    let idle = rounds("idle", &config, step, ticks, Some(rss_before));
    let neighbour = std::process::Command::new("taskset")
        .args(["-c", "1", env!("CARGO_BIN_EXE_oomlens-memhog")])
        .args(["--mode", "stream", "--total-mib", "128", "--hold-secs", "600"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start the busy neighbour");
    let mut neighbour = oomlens_tests::agent::KillOnDrop(neighbour);
    // Let it fill the cache before measuring.
    std::thread::sleep(Duration::from_secs(2));
    let busy = rounds("busy", &config, step, ticks, None);
    let _ = neighbour.0.kill();
    for (label, rounds) in [("idle", &idle), ("busy", &busy)] {
        let median = |pick: fn(&(f64, f64, f64)) -> f64| {
            let mut values: Vec<f64> = rounds.iter().map(pick).collect();
            values.sort_by(f64::total_cmp);
            values[values.len() / 2]
        };
        let worst = rounds.iter().map(|r| r.2).fold(0.0, f64::max);
        println!(
            "{label}, median of {ROUNDS}: sampler {:.2}% of one core for {} containers, raw preads {:.2}%, ratio {:.2} (highest round {worst:.2})",
            median(|r| r.0),
            PODS * CONTAINERS_PER_POD,
            median(|r| r.1),
            median(|r| r.2)
        );
    }
}

/// [`ROUNDS`] rounds of the sampler and the raw reads, back to back;
/// each round's (sampler share, raw share, ratio per sample). With
/// `rss_before`, the first round also measures memory and rescans.
fn rounds(
    label: &str,
    config: &SamplerConfig,
    step: Duration,
    ticks: u64,
    rss_before: Option<u64>,
) -> Vec<(f64, f64, f64)> {
    let mut rounds = Vec::new();
    for round in 1..=ROUNDS {
        let (mut sampler, measured, raw) = interleaved_round(config, step, ticks);
        let ratio = measured.per_sample_ns() / raw.per_sample_ns();
        println!(
            "{label} round {round}: sampler {} | raw preads {} | per sample {:.0} ns vs {:.0} ns, ratio {ratio:.2}",
            Phase::share(measured.phase.thread_ns, measured.phase.wall_s),
            Phase::share(raw.phase.thread_ns, raw.phase.wall_s),
            measured.per_sample_ns(),
            raw.per_sample_ns(),
        );
        println!(
            "         {} usage, {} full, {} limit reads by the sampler; {} usage, {} full, {} limit reads raw; \
             whole process {}; first pass {:.1} ms",
            measured.usage,
            measured.full,
            measured.limits,
            raw.usage,
            raw.full,
            raw.limits,
            Phase::share(measured.phase.process_ns, measured.phase.wall_s),
            measured.first_pass_ns as f64 / 1e6,
        );
        rounds.push((measured.share(), raw.share(), ratio));
        if round == 1
            && let Some(rss_before) = rss_before
        {
            // Measured in the first round, when no other sampler has lived
            // in this process (the allocator keeps what a dropped one used).
            rescan_and_memory(&mut sampler, config, rss_before);
        }
    }
    rounds
}

/// What a full rescan costs, and resident memory with 15 minutes of
/// history in every followed cgroup's own history.
fn rescan_and_memory(sampler: &mut Sampler, config: &SamplerConfig, rss_before: u64) {
    let rescans = 10;
    let rescan_cpu = thread_cpu_ns();
    for _ in 0..rescans {
        sampler.rescan(Instant::now());
    }
    println!(
        "         a full rescan (the safety net behind inotify, every {} s): {:.2} ms",
        config.rescan.as_secs(),
        (thread_cpu_ns() - rescan_cpu) as f64 / 1e6 / f64::from(rescans)
    );
    // 15 minutes of history in every followed cgroup's own history,
    // recorded after the samples already there.
    let base = oomlens_proto::time::now_unix_ms() + 1_000;
    let full_sample = FullSample {
        usage: 100 << 20,
        limit: Some(256 << 20),
        working_set: 90 << 20,
        ..FullSample::default()
    };
    for tick in 0..(15 * 60 * 10u64) {
        let t = base + tick * 100;
        for (i, history) in sampler.histories_mut().enumerate() {
            if tick % 10 == 0 {
                history.record_full(t, &full_sample);
            } else {
                history.record_usage(t, (100 << 20) + (tick + i as u64) % 4096 * 4096);
            }
        }
    }
    let filled = sampler.stats();
    println!(
        "         memory: {:.1} MiB of history heap for {} cgroups x 15 min ({:.1} KiB each); process RSS {:.1} MiB \
         (was {:.1} MiB before the sampler)",
        filled.history_bytes as f64 / 1048576.0,
        filled.tracked,
        filled.history_bytes as f64 / 1024.0 / filled.tracked as f64,
        rss_kib() as f64 / 1024.0,
        rss_before as f64 / 1024.0,
    );
}

const ROUNDS: usize = 3;
const MEASURED: Duration = Duration::from_secs(10);

/// One side of a round: its CPU time and what it read.
struct Measured {
    phase: Phase,
    usage: u64,
    full: u64,
    limits: u64,
    first_pass_ns: u64,
}

impl Measured {
    fn per_sample_ns(&self) -> f64 {
        self.phase.thread_ns as f64 / (self.usage + self.full) as f64
    }

    fn share(&self) -> f64 {
        self.phase.thread_ns as f64 / 1e9 / self.phase.wall_s * 100.0
    }
}

/// A fresh sampler: its first pass, then a warm-up past the first limits
/// interval (in which a new cgroup's limits are read with every full
/// sample, and the OOM-notification thread registers every cgroup once),
/// then `ticks` measured ticks. Each measured tick runs the sampler's pass
/// and a pass of raw reads of the same files on the same schedule, one
/// after the other, the order alternating: this VM's speed drifts by a
/// quarter from one minute to the next, and within a tick both sides see
/// the same machine. Whole seconds of warm-up keep the measured ticks in
/// the raw reads' phase. Returns the sampler and both sides' measures.
fn interleaved_round(config: &SamplerConfig, step: Duration, ticks: u64) -> (Sampler, Measured, Measured) {
    let (warnings, _rx) = tokio::sync::mpsc::channel(1024);
    let mut sampler = Sampler::new(config.clone(), warnings);
    let first_pass = thread_cpu_ns();
    let start = Instant::now();
    sampler.tick(start);
    let first_pass_ns = thread_cpu_ns() - first_pass;
    let warm_up = (config.schedule.limits.as_secs() + 2) * 1000 / millis(step);
    run_ticks(start, step, 1..=warm_up, |_| sampler.tick(Instant::now()));
    let mut raw = RawReads::open(&sampler, config.schedule, step);
    let before = sampler.stats();
    let (mut sampler_ns, mut raw_ns) = (0, 0);
    let process = process_cpu_ns();
    let wall = Instant::now();
    run_ticks(start, step, warm_up + 1..=warm_up + ticks, |tick| {
        let sampler_first = tick.is_multiple_of(2);
        for sampler_side in [sampler_first, !sampler_first] {
            let cpu = thread_cpu_ns();
            if sampler_side {
                sampler.tick(Instant::now());
                sampler_ns += thread_cpu_ns() - cpu;
            } else {
                raw.pass(tick);
                raw_ns += thread_cpu_ns() - cpu;
            }
        }
    });
    let wall_s = wall.elapsed().as_secs_f64();
    let after = sampler.stats();
    let measured = Measured {
        phase: Phase {
            thread_ns: sampler_ns,
            // Everything but the raw reads: the sampler, its
            // OOM-notification thread, this loop.
            process_ns: process_cpu_ns() - process - raw_ns,
            wall_s,
        },
        usage: after.fast_samples - before.fast_samples,
        full: after.full_samples - before.full_samples,
        limits: after.limit_reads - before.limit_reads,
        first_pass_ns,
    };
    let raw = Measured {
        phase: Phase {
            thread_ns: raw_ns,
            process_ns: raw_ns,
            wall_s,
        },
        usage: raw.usage,
        full: raw.full,
        limits: raw.limits,
        first_pass_ns: 0,
    };
    (sampler, measured, raw)
}

/// The sampler's reads without the sampler: every cgroup it follows, its
/// files opened once and read with plain preads on the sampler's schedule.
/// None is near a limit here, so none is hot.
struct RawReads {
    cgroups: Vec<RawCgroup>,
    limit_ticks: u64,
    buf: Vec<u8>,
    usage: u64,
    full: u64,
    limits: u64,
}

/// One cgroup's files and schedule for [`RawReads`].
struct RawCgroup {
    /// What a full sample reads, usage first.
    full: Vec<File>,
    /// What a limit read adds.
    limits: Vec<File>,
    full_every: u64,
    usage_every: Option<u64>,
}

impl RawReads {
    fn open(sampler: &Sampler, schedule: Schedule, step: Duration) -> Self {
        let memory_root = Path::new("/sys/fs/cgroup/memory");
        let ticks_of = |every: Duration| (millis(every) / millis(step)).max(1);
        let open = |dir: &Path, names: &[&str]| -> Vec<File> {
            names
                .iter()
                .map(|n| File::open(dir.join(n)).expect("open"))
                .collect()
        };
        let cgroups = sampler
            .tracked_paths()
            .iter()
            .map(|p| {
                let (full_every, usage_every) = match oomlens_agent::pods::parse_cgroup_path(p).level {
                    Level::Container => (ticks_of(schedule.full), Some(ticks_of(schedule.fast))),
                    Level::Pod | Level::Qos | Level::Kubepods => {
                        (ticks_of(schedule.pod_full), Some(ticks_of(schedule.full)))
                    }
                    Level::Other => (ticks_of(schedule.full), None),
                };
                let dir = memory_root.join(p.trim_start_matches('/'));
                RawCgroup {
                    full: open(
                        &dir,
                        &["memory.usage_in_bytes", "memory.stat", "memory.oom_control"],
                    ),
                    limits: open(&dir, &["memory.limit_in_bytes"]),
                    full_every,
                    usage_every,
                }
            })
            .collect();
        Self {
            cgroups,
            limit_ticks: ticks_of(schedule.limits),
            buf: vec![0u8; 8192],
            usage: 0,
            full: 0,
            limits: 0,
        }
    }

    /// The reads due at `tick`.
    fn pass(&mut self, tick: u64) {
        let buf = &mut self.buf;
        for cgroup in &self.cgroups {
            if tick.is_multiple_of(cgroup.full_every) {
                // Limits go with the first full sample of each limits interval.
                if tick % self.limit_ticks < cgroup.full_every {
                    for file in &cgroup.limits {
                        std::hint::black_box(file.read_at(buf, 0).expect("pread"));
                    }
                    self.limits += 1;
                }
                for file in &cgroup.full {
                    std::hint::black_box(file.read_at(buf, 0).expect("pread"));
                }
                self.full += 1;
            } else if cgroup.usage_every.is_some_and(|every| tick.is_multiple_of(every)) {
                std::hint::black_box(cgroup.full[0].read_at(buf, 0).expect("pread"));
                self.usage += 1;
            }
        }
    }
}
