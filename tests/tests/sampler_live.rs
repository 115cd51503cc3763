//! The cgroup sampler on the real kernel (cgroup v1 memory controller):
//! a process allocating at a known rate, and a real OOM kill whose event
//! carries the climb to the limit although the cgroup was already removed.
//!
//! Needs root and cgroup v1 memory; elsewhere each test says why it skips.

use std::io::{BufRead as _, BufReader};
use std::time::{Duration, Instant};

use oomlens_agent::cgroup::history::Windows;
use oomlens_agent::cgroup::{Sampler, SamplerConfig, SamplerHandle};
use oomlens_agent::event::event_from_report;
use oomlens_agent::kmsg::{KmsgReader, StartAt};
use oomlens_agent::pipeline::{self, Enrichers};
use oomlens_proto::json::event_to_json_line;
use oomlens_proto::v1::{MemoryHistory, OomEvent, Scope};
use oomlens_tests::{ScratchTree, pod_and_container_ids, require_real_kernel, spawn_memhog, unique};
use tokio::sync::{mpsc, watch};

const MEMHOG: &str = env!("CARGO_BIN_EXE_oomlens-memhog");
const MIB: f64 = 1024.0 * 1024.0;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Running {
    handle: SamplerHandle,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn start_sampler(windows: Windows) -> Running {
    let config = SamplerConfig {
        windows,
        ..oomlens_tests::host_sampler_config()
    };
    let (handle, requests) = Sampler::channel();
    let (warnings, _warning_rx) = mpsc::channel(16);
    let (stop, mut stopped) = watch::channel(false);
    let sampler = Sampler::new(config, warnings);
    let task = tokio::spawn(async move {
        sampler
            .run(requests, async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await;
    });
    Running { handle, stop, task }
}

impl Running {
    async fn shut(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Waits until the sampler follows `path` (inotify notices new cgroups).
async fn wait_tracked(handle: &SamplerHandle, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let snapshot = handle
            .snapshot(Some(path.to_owned()), None, u64::MAX)
            .await
            .expect("sampler alive");
        if snapshot.victim.is_some_and(|h| !h.samples.is_empty()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the sampler did not pick up {path} within 5 s");
}

fn ms_of(sample_time: &prost_types::Timestamp) -> u64 {
    oomlens_proto::time::unix_ms(sample_time)
}

fn samples_between(history: &MemoryHistory, from_ms: u64, to_ms: u64) -> usize {
    history
        .samples
        .iter()
        .filter(|s| {
            s.time
                .as_ref()
                .is_some_and(|t| (from_ms..=to_ms).contains(&ms_of(t)))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_growth_and_peak_match_the_process() {
    require_real_kernel!();
    let _serial = SERIAL.lock().await;
    let tree = ScratchTree::new(&unique("oomlens-test"));
    let (uid, container_id) = pod_and_container_ids();
    let container = format!("kubepods/burstable/pod{uid}/{container_id}");
    let dir = tree.create(&container);
    tree.limit(&container, 512 << 20);
    let path = tree.kernel_path(&container);

    // Growth judged over the 3 s before the process stopped growing.
    let sampler = start_sampler(Windows {
        growth_ms: 3_000,
        ..Windows::default()
    });
    wait_tracked(&sampler.handle, &path).await;

    let (rate_mib, total_mib) = (25.0, 100);
    let mut hog = spawn_memhog(MEMHOG, &dir, rate_mib, total_mib, 1.0);
    let mut lines = BufReader::new(hog.stdout.take().expect("stdout")).lines();
    let mut stamp = |word: &str| -> u64 {
        let line = lines.next().expect("a line").expect("utf-8");
        let (got, ms) = line.split_once(' ').expect("WORD MS");
        assert_eq!(got, word);
        ms.parse().expect("ms")
    };
    let started = tokio::task::block_in_place(|| stamp("started"));
    let grown = tokio::task::block_in_place(|| stamp("grown"));
    // Let the last samples before `grown` be taken.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let snapshot = sampler
        .handle
        .snapshot(Some(path.clone()), None, grown)
        .await
        .expect("sampler alive");
    let _ = hog.wait();
    sampler.shut().await;

    let history = snapshot.victim.expect("history of the container");
    let report = serde_json::to_string(&history).expect("json");
    let growth = history.growth_bytes_per_second.expect("growth") / MIB;
    assert!(
        (growth - rate_mib).abs() <= rate_mib * 0.10,
        "growth {growth:.1} MiB/s, process did {rate_mib}; {report}"
    );
    let peak = history.peak_working_set_bytes.expect("peak") as f64 / MIB;
    assert!(
        (peak - total_mib as f64).abs() <= total_mib as f64 * 0.10,
        "peak {peak:.1} MiB vs {total_mib}; {report}"
    );
    let per_second = samples_between(&history, started, grown) as f64 / ((grown - started) as f64 / 1000.0);
    eprintln!(
        "measured: growth {growth:.2} MiB/s (process: {rate_mib}), peak {peak:.1} MiB (process: {total_mib}), {per_second:.1} samples/s"
    );
    assert!(per_second >= 10.0, "{per_second:.1} samples/s while growing");
    assert_eq!(history.limit_bytes, Some(512 << 20));
}

/// The victim's history shows the climb to `limit` at 10 Hz or more;
/// `own_limit` is the limit of the victim's own cgroup (None in a pod-limit
/// kill, where only the pod is limited).
fn assert_climb(event: &OomEvent, limit: u64, own_limit: Option<u64>) {
    let json = event_to_json_line(event);
    let history = event
        .history
        .as_ref()
        .unwrap_or_else(|| panic!("no history: {json}"));
    let kill_ms = event.time.as_ref().map(ms_of).expect("kill time");
    let last_second = samples_between(history, kill_ms.saturating_sub(1000), kill_ms);
    eprintln!(
        "measured: {last_second} samples in the last second, peak {:?}, growth {:?} B/s, {} samples, {} buckets",
        history.peak_working_set_bytes,
        history.growth_bytes_per_second,
        history.samples.len(),
        history.buckets.len()
    );
    assert!(
        last_second >= 10,
        "{last_second} samples in the second before the kill: {json}"
    );
    let peak = history.peak_working_set_bytes.expect("peak");
    assert!(
        peak as f64 >= limit as f64 * 0.8,
        "peak {peak} far below the limit {limit}: {json}"
    );
    let first = history
        .samples
        .first()
        .and_then(|s| s.working_set_bytes)
        .expect("first");
    assert!(
        first < peak / 2,
        "no climb: first sample {first}, peak {peak}: {json}"
    );
    assert!(history.growth_bytes_per_second.is_some_and(|g| g > 0.0), "{json}");
    assert_eq!(history.limit_bytes, own_limit, "{json}");
    assert!(
        event
            .node_memory
            .as_ref()
            .and_then(|n| n.mem_available_bytes)
            .is_some(),
        "{json}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_kill_keeps_its_history_after_the_cgroup_is_removed() {
    require_real_kernel!();
    let _serial = SERIAL.lock().await;
    let tree = ScratchTree::new(&unique("oomlens-test"));
    let (uid, container_id) = pod_and_container_ids();
    let container = format!("kubepods/besteffort/pod{uid}/{container_id}");
    let dir = tree.create(&container);
    let limit = 64u64 << 20;
    tree.limit(&container, limit);
    let path = tree.kernel_path(&container);

    let sampler = start_sampler(Windows::default());
    wait_tracked(&sampler.handle, &path).await;
    let mut reader = KmsgReader::open("/dev/kmsg", StartAt::End).expect("open /dev/kmsg");

    // Climbs at 40 MiB/s into a 64 MiB limit: killed after about 1.5 s.
    let mut hog = spawn_memhog(MEMHOG, &dir, 40.0, 400, 10.0);
    let status = tokio::task::block_in_place(|| hog.wait()).expect("wait");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(9),
        "the hog should be OOM-killed: {status:?}"
    );

    // The container's cgroup goes away before the kill is assembled.
    tree.remove(&container);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stats = sampler.handle.stats().await.expect("sampler alive");
        if stats.in_grace >= 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sampler did not notice the removal: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let report = oomlens_tests::kernel_log::kill_at(&mut reader, &path, Duration::from_secs(10)).await;
    let mut event = event_from_report(&report, &oomlens_tests::test_node(), 0);
    let kill_ms = event.time.as_ref().map(ms_of).expect("kill time");
    let snapshot = sampler
        .handle
        .snapshot(event.task_memcg.clone(), event.oom_memcg.clone(), kill_ms)
        .await
        .expect("sampler alive");
    sampler.shut().await;
    event.history = snapshot.victim;
    event.oom_memcg_history = snapshot.oom_memcg;
    event.node_memory = snapshot.node;
    assert_eq!(
        event.scope,
        Scope::ContainerLimit as i32,
        "{}",
        event_to_json_line(&event)
    );
    // Same cgroup limited and killed: one history, not two.
    assert!(event.oom_memcg_history.is_none());
    assert_climb(&event, limit, Some(limit));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_pipeline_attaches_history_to_pod_limit_kills() {
    require_real_kernel!();
    let _serial = SERIAL.lock().await;
    let tree = ScratchTree::new(&unique("oomlens-test"));
    let (uid, container_id) = pod_and_container_ids();
    let pod = format!("kubepods/burstable/pod{uid}");
    let container = format!("{pod}/{container_id}");
    let dir = tree.create(&container);
    let limit = 48u64 << 20;
    tree.limit(&pod, limit);
    let (pod_path, container_path) = (tree.kernel_path(&pod), tree.kernel_path(&container));

    let sampler = start_sampler(Windows::default());
    wait_tracked(&sampler.handle, &container_path).await;
    let state = tempfile::tempdir().expect("state");
    let config = oomlens_tests::test_pipeline_with(
        state.path(),
        Enrichers {
            sampler: Some(sampler.handle.clone()),
            ..Enrichers::default()
        },
    );
    let (sender, mut events) = mpsc::channel(16);
    let (stop, mut stopped) = watch::channel(false);
    let pipeline = tokio::spawn(pipeline::run(config, sender, async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut hog = spawn_memhog(MEMHOG, &dir, 40.0, 400, 10.0);
    let _ = tokio::task::block_in_place(|| hog.wait());
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut found = None;
    while found.is_none() {
        let event = tokio::time::timeout_at(deadline.into(), events.recv())
            .await
            .unwrap_or_else(|_| panic!("no event for {pod_path}"))
            .expect("pipeline alive");
        if event.oom_memcg.as_deref() == Some(pod_path.as_str()) {
            found = Some(event);
        }
    }
    let _ = stop.send(true);
    pipeline.await.expect("join").expect("pipeline");
    sampler.shut().await;
    let event = found.expect("event");
    let json = event_to_json_line(&event);
    assert_eq!(event.scope, Scope::PodLimit as i32, "{json}");
    assert_climb(&event, limit, None);
    let pod_history = event
        .oom_memcg_history
        .as_ref()
        .unwrap_or_else(|| panic!("no pod history: {json}"));
    assert_eq!(pod_history.cgroup, pod_path);
    assert_eq!(pod_history.limit_bytes, Some(limit), "{json}");
    assert!(
        pod_history
            .peak_working_set_bytes
            .is_some_and(|p| p as f64 >= limit as f64 * 0.8),
        "{json}"
    );
}

/// The pre-OOM warning's lead on a real container: 4 MB/s toward a 128 MiB
/// limit until the kernel kills it. The old rule (90% of the limit and a
/// projection within 300 s) warned 3.4 s before the kill; the projection
/// from half the limit warns about 16 s before (docs/metrics.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_climb_is_warned_from_half_its_limit() {
    require_real_kernel!();
    let _serial = SERIAL.lock().await;
    let tree = ScratchTree::new(&unique("oomlens-test"));
    let (uid, container_id) = pod_and_container_ids();
    let container = format!("kubepods/burstable/pod{uid}/{container_id}");
    let dir = tree.create(&container);
    tree.limit(&container, 128 << 20);
    let path = tree.kernel_path(&container);

    let (handle, requests) = Sampler::channel();
    let (warnings, mut warning_rx) = mpsc::channel(16);
    let (stop, mut stopped) = watch::channel(false);
    let sampler = Sampler::new(oomlens_tests::host_sampler_config(), warnings);
    let task = tokio::spawn(async move {
        sampler
            .run(requests, async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await;
    });
    wait_tracked(&handle, &path).await;

    let rate_mib = 4_000_000.0 / MIB;
    let mut hog = spawn_memhog(MEMHOG, &dir, rate_mib, 200, 1.0);
    let mut first_warning = None;
    let killed = loop {
        if let Ok(Some(status)) = hog.try_wait() {
            break (Instant::now(), status);
        }
        if let Ok(Some(warning)) = tokio::time::timeout(Duration::from_millis(20), warning_rx.recv()).await
            && warning.cgroup == path
            && first_warning.is_none()
        {
            first_warning = Some((Instant::now(), warning));
        }
    };
    let _ = stop.send(true);
    let _ = task.await;
    let (killed_at, status) = killed;
    assert!(
        !status.success(),
        "the hog was to be killed at its limit: {status}"
    );
    let (warned_at, warning) = first_warning.expect("a warning before the kill");
    let lead = killed_at.duration_since(warned_at).as_secs_f64();
    let fraction = warning.working_set_bytes as f64 / warning.limit_bytes as f64;
    eprintln!(
        "warned {lead:.1} s before the kill at {:.0}% of the limit, projected {:.1} s, trend {} s",
        fraction * 100.0,
        warning.seconds_to_limit.unwrap_or(f64::NAN),
        warning.trend_seconds
    );
    assert!(
        lead >= 10.0,
        "warned only {lead:.1} s before the kill: {warning:?}"
    );
    assert!((0.5..0.6).contains(&fraction), "{fraction}");
    assert_eq!(warning.trend_seconds, 60);
}
