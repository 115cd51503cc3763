//! A storm of real OOM kills on this machine: more than the kernel's OOM
//! report rate limit (10 reports per 5 s), so some kills are logged as a
//! bare `Killed process` line without cgroup paths. Every kill must be
//! reported exactly once, and the bare ones attributed to their cgroup by
//! the cgroup's OOM counter.
//!
//! Needs root and cgroup v1 memory; elsewhere it says why it skips.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use oomlens_agent::cgroup::Sampler;
use oomlens_agent::pipeline::{self, Enrichers};
use oomlens_proto::json::event_to_json_line;
use oomlens_proto::v1::{BreakdownSource, OomEvent};
use oomlens_tests::{ScratchTree, kernel_pid, pod_and_container_ids, require_real_kernel, run_hog, unique};
use tokio::sync::{mpsc, watch};

const KILLS: usize = 14;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_kills_is_reported_once_each_and_attributed() {
    require_real_kernel!();
    let tree = ScratchTree::new(&unique("oomlens-test"));
    let mut containers = Vec::new();
    for _ in 0..KILLS {
        let (uid, id) = pod_and_container_ids();
        let relative = format!("kubepods/besteffort/pod{uid}/{id}");
        tree.create(&relative);
        tree.limit(&relative, 16 << 20);
        containers.push(relative);
    }

    let (stop, stopped) = watch::channel(false);
    let wait_stop = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let (handle, requests) = Sampler::channel();
    let (warnings, _warning_rx) = mpsc::channel(64);
    let sampler = Sampler::new(oomlens_tests::host_sampler_config(), warnings);
    let sampler_task = tokio::spawn(sampler.run(requests, wait_stop()));
    // Every container followed before the storm.
    let deadline = Instant::now() + Duration::from_secs(5);
    for relative in &containers {
        let path = tree.kernel_path(relative);
        loop {
            let snapshot = handle
                .snapshot(Some(path.clone()), None, u64::MAX)
                .await
                .expect("sampler");
            if snapshot.victim.is_some_and(|h| !h.samples.is_empty()) {
                break;
            }
            assert!(Instant::now() < deadline, "{path} not followed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    let state = tempfile::tempdir().expect("state");
    let config = oomlens_tests::test_pipeline_with(
        state.path(),
        Enrichers {
            sampler: Some(handle.clone()),
            ..Enrichers::default()
        },
    );
    let (sender, mut events) = mpsc::channel(256);
    let pipeline = tokio::spawn(pipeline::run(config, sender, wait_stop()));
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The storm opens its own rate-limit window, so that more than its
    // burst of 10 reports fall in it.
    let waited = tokio::task::block_in_place(oomlens_tests::kernel_log::wait_for_a_fresh_oom_report_window);
    eprintln!("waited {waited:?} for the kernel's OOM report window to close");
    // The storm: each hog reaches its 16 MiB limit in well under 100 ms.
    let started = Instant::now();
    let mut pids = HashMap::new();
    for relative in &containers {
        let dir = tree.path(relative);
        let (pid, _) = tokio::task::block_in_place(|| run_hog(&dir));
        pids.insert(tree.kernel_path(relative), kernel_pid(pid));
    }
    let storm = started.elapsed();

    // Ours are the events whose victim cgroup or pid is one of ours.
    let is_ours = |event: &OomEvent| {
        event.task_memcg.as_ref().is_some_and(|p| pids.contains_key(p))
            || event
                .victim
                .as_ref()
                .and_then(|v| v.pid)
                .is_some_and(|pid| pids.values().any(|&p| p == pid))
    };
    let mut ours: Vec<OomEvent> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while ours.len() < KILLS {
        let Ok(Some(event)) = tokio::time::timeout_at(deadline.into(), events.recv()).await else {
            break;
        };
        if is_ours(&event) {
            ours.push(event);
        }
    }
    // Anything late or duplicated would arrive now.
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(1500), events.recv()).await {
        if is_ours(&event) {
            ours.push(event);
        }
    }
    let _ = stop.send(true);
    pipeline.await.expect("join").expect("pipeline");
    sampler_task.await.expect("sampler");

    let dump = ours.iter().map(event_to_json_line).collect::<Vec<_>>().join("\n");
    let partial = ours.iter().filter(|e| e.partial).count();
    eprintln!(
        "storm of {KILLS} kills in {storm:?}: {} events, {partial} rate-limited",
        ours.len()
    );
    assert_eq!(ours.len(), KILLS, "each kill exactly once:\n{dump}");
    let ids: std::collections::HashSet<&str> = ours.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), KILLS, "duplicate ids:\n{dump}");
    assert!(
        partial >= 1,
        "the kernel did not rate-limit any of {KILLS} kills in {storm:?}:\n{dump}"
    );
    // Every kill names its victim's cgroup correctly, or (for a bare kill
    // line that could not be attributed without guessing) none at all.
    let mut unattributed = 0;
    let mut from_samples = 0;
    for event in &ours {
        let json = event_to_json_line(event);
        let Some(path) = event.task_memcg.as_deref() else {
            assert!(event.partial, "a full report always has its path: {json}");
            unattributed += 1;
            continue;
        };
        assert_eq!(
            event.victim.as_ref().and_then(|v| v.pid),
            pids.get(path).copied(),
            "wrong cgroup: {json}"
        );
        assert!(
            event.container.is_some() && event.pod.is_some(),
            "identity from the path: {json}"
        );
        // What filled the memory: from the kernel's stats dump, or, for a
        // kill whose report the kernel cut, from the last sample.
        let source = event.breakdown.as_ref().map(|b| b.source);
        if !event.partial {
            assert_eq!(source, Some(BreakdownSource::KernelReport as i32), "{json}");
        } else if event.oom_memcg.is_some() && event.history.as_ref().is_some_and(|h| !h.samples.is_empty()) {
            assert_eq!(source, Some(BreakdownSource::LastSample as i32), "{json}");
            from_samples += 1;
        }
    }
    eprintln!("{from_samples} rate-limited kills broken down from their last sample");
    eprintln!(
        "{} of {partial} rate-limited kills attributed",
        partial - unattributed
    );
}
