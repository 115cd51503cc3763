//! The kernel log path on the real kernel: real OOM kills in scratch v1
//! memory cgroups with kubepods-shaped paths, read back from the live
//! `/dev/kmsg`; a forged kill line; a ring overrun; a restart.
//!
//! Needs root and the cgroup v1 memory controller; elsewhere each test
//! prints why it skips. The tests share the kernel log, so they run one at
//! a time.

use std::time::{Duration, Instant};

use oomlens_agent::event::event_from_report;
use oomlens_agent::kmsg::{KmsgItem, KmsgReader, StartAt};
use oomlens_agent::oom::Parser;
use oomlens_agent::pipeline::{self, PipelineConfig};
use oomlens_proto::v1::{Constraint, OomEvent, QosClass, Scope};
use oomlens_tests::kernel_log::reports_until;
use oomlens_tests::{
    ScratchTree, SysctlGuard, kernel_pid, pod_and_container_ids, require_real_kernel, run_hog, unique,
};
use tokio::sync::{mpsc, oneshot};

/// Held for a whole test: each test has its own runtime and thread, and
/// they must not share the kernel log at the same time. (tokio's mutex is
/// runtime-agnostic and is not poisoned by a failing test.)
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const LIMIT: u64 = 32 << 20;

fn assert_killed(status: std::process::ExitStatus) {
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(9),
        "the hog should die of SIGKILL, got {status:?}"
    );
}

#[tokio::test]
async fn real_container_limit_kill_is_read_back_live() {
    require_real_kernel!();
    let _serial = SERIAL.lock().await;
    let tree = ScratchTree::new(&unique("oomlens-test"));
    let (uid, container_id) = pod_and_container_ids();
    let container = format!("kubepods/burstable/pod{uid}/{container_id}");
    let dir = tree.create(&container);
    tree.limit(&container, LIMIT);
    let kernel_path = tree.kernel_path(&container);

    let mut reader = KmsgReader::open("/dev/kmsg", StartAt::End).expect("open /dev/kmsg");
    let (pid, status) = tokio::task::spawn_blocking(move || run_hog(&dir))
        .await
        .expect("hog");
    assert_killed(status);

    let mut parser = Parser::new();
    let reports = reports_until(&mut reader, &mut parser, Duration::from_secs(15), |r| {
        r.oom_memcg() == Some(kernel_path.as_str())
    })
    .await;
    let report = reports
        .iter()
        .find(|r| r.oom_memcg() == Some(kernel_path.as_str()))
        .unwrap_or_else(|| panic!("no report for {kernel_path}; saw {reports:#?}"));
    let event = event_from_report(report, &oomlens_tests::test_node(), 0);
    let json = oomlens_proto::json::event_to_json_line(&event);
    assert!(!report.partial, "{json}");
    assert_eq!(event.constraint, Constraint::Memcg as i32, "{json}");
    assert_eq!(event.scope, Scope::ContainerLimit as i32, "{json}");
    assert_eq!(event.task_memcg.as_deref(), Some(kernel_path.as_str()), "{json}");
    let victim = event.victim.as_ref().expect("victim");
    assert_eq!(victim.pid, Some(kernel_pid(pid)), "{json}");
    assert_eq!(victim.comm.as_deref(), Some("tail"), "{json}");
    assert!(victim.anon_rss_kb.unwrap_or(0) > 20 * 1024, "{json}");
    let pod = event.pod.as_ref().expect("pod");
    assert_eq!(pod.uid, uid);
    assert_eq!(pod.qos, QosClass::Burstable as i32);
    assert_eq!(
        event.container.as_ref().map(|c| c.id.as_str()),
        Some(container_id.as_str())
    );
    let usage = event.memcg_usage.as_ref().expect("memcg usage");
    assert_eq!(usage.limit_kb, Some(LIMIT / 1024), "{json}");
    assert_eq!(
        event.trigger.as_ref().and_then(|t| t.comm.as_deref()),
        Some("tail")
    );
    assert!(event.tasks.iter().any(|t| t.pid == kernel_pid(pid)), "{json}");
    // The wall-clock time is within a minute of now.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let now = i64::try_from(now).unwrap();
    let time = event.time.as_ref().expect("time").seconds;
    assert!((now - time).abs() < 60, "kill time {time} vs now {now}");
    assert!(reader.stats().lost == 0 || reader.stats().overruns > 0);
}

#[tokio::test]
async fn real_pod_limit_kill_is_classified_pod_limit() {
    require_real_kernel!();
    let _serial = SERIAL.lock().await;
    let tree = ScratchTree::new(&unique("oomlens-test"));
    let (uid, container_id) = pod_and_container_ids();
    let pod = format!("kubepods/pod{uid}");
    let container = format!("{pod}/{container_id}");
    let dir = tree.create(&container);
    tree.limit(&pod, LIMIT);
    let pod_path = tree.kernel_path(&pod);

    let mut reader = KmsgReader::open("/dev/kmsg", StartAt::End).expect("open /dev/kmsg");
    let (_, status) = tokio::task::spawn_blocking(move || run_hog(&dir))
        .await
        .expect("hog");
    assert_killed(status);
    let mut parser = Parser::new();
    let reports = reports_until(&mut reader, &mut parser, Duration::from_secs(15), |r| {
        r.oom_memcg() == Some(pod_path.as_str())
    })
    .await;
    let report = reports
        .iter()
        .find(|r| r.oom_memcg() == Some(pod_path.as_str()))
        .unwrap_or_else(|| panic!("no report for {pod_path}; saw {reports:#?}"));
    let event = event_from_report(report, &oomlens_tests::test_node(), 0);
    let json = oomlens_proto::json::event_to_json_line(&event);
    assert_eq!(event.scope, Scope::PodLimit as i32, "{json}");
    assert_eq!(
        event.pod.as_ref().map(|p| p.qos),
        Some(QosClass::Guaranteed as i32),
        "{json}"
    );
    assert_eq!(
        event.container.as_ref().map(|c| c.id.as_str()),
        Some(container_id.as_str()),
        "{json}"
    );
}

#[tokio::test]
async fn forged_kill_lines_yield_no_event() {
    require_real_kernel!();
    let _serial = SERIAL.lock().await;
    // User writes are rate-limited by default and could be dropped.
    let _devkmsg = SysctlGuard::set("/proc/sys/kernel/printk_devkmsg", "on").expect("printk_devkmsg");
    let marker = unique("forged");
    let mut reader = KmsgReader::open("/dev/kmsg", StartAt::End).expect("open /dev/kmsg");
    let forged = [
        format!("<4>{marker} invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0"),
        format!(
            "<6>oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/{marker},task_memcg=/{marker},task={marker},pid=4242,uid=0"
        ),
        format!(
            "<3>Memory cgroup out of memory: Killed process 4242 ({marker}) total-vm:1kB, anon-rss:1kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:1kB oom_score_adj:0"
        ),
    ];
    // Each write is one record; without its newline the kernel keeps it
    // open for continuation and readers do not see it yet.
    for line in &forged {
        std::fs::write("/dev/kmsg", format!("{line}\n")).expect("write /dev/kmsg");
    }
    let mut parser = Parser::new();
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen < forged.len() && Instant::now() < deadline {
        if let Ok(Ok(KmsgItem::Record(record))) =
            tokio::time::timeout(Duration::from_millis(100), reader.next()).await
        {
            if record.message.contains(&marker) {
                seen += 1;
                assert!(
                    !record.is_kernel(),
                    "a user write arrived with facility 0: {record:?}"
                );
            }
            parser.push(&record.input_line());
        }
    }
    assert_eq!(seen, forged.len(), "the forged lines were not all read back");
    parser.finish();
    while let Some(report) = parser.next_report() {
        assert!(
            !report
                .victim
                .comm
                .as_deref()
                .unwrap_or_default()
                .contains(&marker),
            "forged kill reported: {report:?}"
        );
    }
    assert!(
        parser.stats().forged >= 3,
        "forged lines not counted: {:?}",
        parser.stats()
    );
}

#[tokio::test]
async fn ring_overrun_is_a_counted_gap_and_reading_goes_on() {
    require_real_kernel!();
    let _serial = SERIAL.lock().await;
    let _devkmsg = SysctlGuard::set("/proc/sys/kernel/printk_devkmsg", "on").expect("printk_devkmsg");
    let marker = unique("overrun");
    // Opened, then not read while the ring is flooded: the reader is paused.
    let mut reader = KmsgReader::open("/dev/kmsg", StartAt::End).expect("open /dev/kmsg");
    let filler = "x".repeat(900);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/kmsg")
        .expect("open for writing");
    // 24 MiB of records is far beyond any kernel's log buffer default.
    for i in 0..28_000 {
        use std::io::Write as _;
        file.write_all(format!("<6>{marker} flood {i} {filler}\n").as_bytes())
            .expect("flood");
    }
    use std::io::Write as _;
    file.write_all(format!("<6>{marker} after the flood\n").as_bytes())
        .expect("write");

    let mut gaps = 0u64;
    let mut lost = 0u64;
    let mut reached_end = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(2), reader.next()).await {
            Ok(Ok(KmsgItem::Gap { lost: n, .. })) => {
                gaps += 1;
                lost += n;
            }
            Ok(Ok(KmsgItem::Record(record))) if record.message == format!("{marker} after the flood") => {
                reached_end = true;
                break;
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("the reader stopped: {e}"),
            Err(_) => break,
        }
    }
    assert!(gaps >= 1, "no gap seen after flooding the ring");
    assert!(lost > 1000, "only {lost} records counted lost");
    assert_eq!(reader.stats().lost, lost);
    assert!(
        reader.stats().overruns >= 1,
        "EPIPE not counted: {:?}",
        reader.stats()
    );
    assert!(reached_end, "the reader did not continue to the newest record");
}

/// Runs the live pipeline until told to stop; returns the events it sent.
fn start_pipeline(
    config: PipelineConfig,
) -> (
    oneshot::Sender<()>,
    mpsc::Receiver<OomEvent>,
    tokio::task::JoinHandle<pipeline::PipelineStats>,
) {
    let (stop, stopped) = oneshot::channel::<()>();
    let (sender, receiver) = mpsc::channel(64);
    let task = tokio::spawn(async move {
        pipeline::run(config, sender, async {
            let _ = stopped.await;
        })
        .await
        .expect("pipeline")
    });
    (stop, receiver, task)
}

async fn events_for(receiver: &mut mpsc::Receiver<OomEvent>, memcg: &str, wait: Duration) -> Vec<OomEvent> {
    let deadline = Instant::now() + wait;
    let mut events = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline.into(), receiver.recv()).await {
        if event.oom_memcg.as_deref() == Some(memcg) {
            events.push(event);
        }
    }
    events
}

#[tokio::test]
async fn restart_resumes_without_duplicates_and_reports_kills_made_while_stopped() {
    require_real_kernel!();
    let _serial = SERIAL.lock().await;
    let state = tempfile::tempdir().expect("state dir");
    let tree = ScratchTree::new(&unique("oomlens-test"));
    let config = oomlens_tests::test_pipeline_config(state.path());
    let a = tree.create("a");
    tree.limit("a", LIMIT);
    let b = tree.create("b");
    tree.limit("b", LIMIT);

    // First run sees kill A.
    let (stop, mut events, task) = start_pipeline(config.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (pid_a, status) = tokio::task::spawn_blocking(move || run_hog(&a))
        .await
        .expect("hog a");
    assert_killed(status);
    let first = events_for(&mut events, &tree.kernel_path("a"), Duration::from_secs(5)).await;
    stop.send(()).expect("stop");
    let stats = task.await.expect("first run");
    assert!(stats.events >= 1);
    assert!(state.path().join("kmsg.cursor").exists(), "no cursor saved");

    // Kill B while no agent runs.
    let (pid_b, status) = tokio::task::spawn_blocking(move || run_hog(&b))
        .await
        .expect("hog b");
    assert_killed(status);

    // Second run: reports B, and not A again.
    let (stop, mut events, task) = start_pipeline(config);
    let mut second = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(200), events.recv()).await {
            Ok(Some(event)) => second.push(event),
            Ok(None) => break,
            Err(_)
                if second
                    .iter()
                    .any(|e| e.oom_memcg.as_deref() == Some(tree.kernel_path("b").as_str())) =>
            {
                break;
            }
            Err(_) => {}
        }
    }
    stop.send(()).expect("stop");
    task.await.expect("second run");

    let victims = |events: &[OomEvent], memcg: &str| -> Vec<i32> {
        events
            .iter()
            .filter(|e| e.oom_memcg.as_deref() == Some(memcg))
            .filter_map(|e| e.victim.as_ref()?.pid)
            .collect()
    };
    assert_eq!(
        victims(&first, &tree.kernel_path("a")),
        [kernel_pid(pid_a)],
        "first run"
    );
    assert_eq!(
        victims(&second, &tree.kernel_path("a")),
        Vec::<i32>::new(),
        "A reported twice"
    );
    assert_eq!(
        victims(&second, &tree.kernel_path("b")),
        [kernel_pid(pid_b)],
        "B, killed while stopped"
    );
}

/// Collects the events of `memcg` until `wait` passes.
async fn wait_for_memcg(events: &mut mpsc::Receiver<OomEvent>, memcg: &str, wait: Duration) -> Vec<OomEvent> {
    let deadline = Instant::now() + wait;
    let mut found = Vec::new();
    while found.is_empty() && Instant::now() < deadline {
        if let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(200), events.recv()).await
            && event.oom_memcg.as_deref() == Some(memcg)
        {
            found.push(event);
        }
    }
    found
}

#[tokio::test]
async fn a_kill_while_stopped_after_a_quiet_first_run_is_still_read() {
    require_real_kernel!();
    let _serial = SERIAL.lock().await;
    let state = tempfile::tempdir().expect("state dir");
    let tree = ScratchTree::new(&unique("oomlens-test"));
    let cgroup = tree.create("quiet");
    tree.limit("quiet", LIMIT);
    let config = oomlens_tests::test_pipeline_config(state.path());

    // The first run reads nothing (a quiet log) and is stopped: no record
    // ever moved the cursor, yet the next run must start where this one did.
    let (stop, _events, task) = start_pipeline(config.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.send(()).expect("stop");
    task.await.expect("first run");
    assert!(
        state.path().join(pipeline::CURSOR_FILE).exists(),
        "the starting position is saved at once"
    );

    let (pid, status) = tokio::task::spawn_blocking(move || run_hog(&cgroup))
        .await
        .expect("hog");
    assert_killed(status);

    let (stop, mut events, task) = start_pipeline(config);
    let found = wait_for_memcg(&mut events, &tree.kernel_path("quiet"), Duration::from_secs(5)).await;
    stop.send(()).expect("stop");
    task.await.expect("second run");
    assert_eq!(
        found
            .iter()
            .filter_map(|e| e.victim.as_ref()?.pid)
            .collect::<Vec<_>>(),
        [kernel_pid(pid)],
        "the kill made while no agent ran"
    );
}

#[tokio::test]
async fn a_cursor_ahead_of_the_log_reads_the_log_again() {
    require_real_kernel!();
    let _serial = SERIAL.lock().await;
    let state = tempfile::tempdir().expect("state dir");
    let tree = ScratchTree::new(&unique("oomlens-test"));
    let cgroup = tree.create("ahead");
    tree.limit("ahead", LIMIT);
    // A cursor of this boot far past the newest record.
    let newest = KmsgReader::open("/dev/kmsg", StartAt::End)
        .expect("open /dev/kmsg")
        .last_seq()
        .unwrap_or(0);
    let config = oomlens_tests::test_pipeline_config(state.path());
    oomlens_agent::kmsg::Cursor {
        boot_id: config.node.boot_id.clone(),
        seq: newest + 1_000_000,
    }
    .save(&state.path().join(pipeline::CURSOR_FILE))
    .expect("cursor");
    let metrics = config.reader_metrics.clone();
    let (stop, mut events, task) = start_pipeline(config);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (pid, status) = tokio::task::spawn_blocking(move || run_hog(&cgroup))
        .await
        .expect("hog");
    assert_killed(status);
    let found = wait_for_memcg(&mut events, &tree.kernel_path("ahead"), Duration::from_secs(5)).await;
    stop.send(()).expect("stop");
    task.await.expect("run");
    assert_eq!(
        found
            .iter()
            .filter_map(|e| e.victim.as_ref()?.pid)
            .collect::<Vec<_>>(),
        [kernel_pid(pid)],
        "the kill after a cursor ahead of the log"
    );
    assert_eq!(metrics.stats().cursor_resets, 1, "the reset is counted");
}

fn wall_now_us() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock");
    i64::try_from(since_epoch.as_micros()).expect("µs since 1970 fit i64")
}

/// An agent started long ago holds a stale log clock offset (here 5 s
/// off): the pipeline measures it again, and the next real kill's time is
/// the wall time at which the kernel killed (without it, 5 s off).
#[tokio::test]
async fn a_stale_log_clock_offset_is_measured_again_and_kill_times_follow() {
    require_real_kernel!();
    let _serial = SERIAL.lock().await;
    let state = tempfile::tempdir().expect("state dir");
    let tree = ScratchTree::new(&unique("oomlens-test"));
    let cgroup = tree.create("clock");
    tree.limit("clock", LIMIT);
    let mut config = oomlens_tests::test_pipeline_config(state.path());
    let true_offset = config.node.log_clock_offset_us;
    let stale = true_offset + 5_000_000;
    config.node.log_clock_offset_us = stale;
    config.node.boot_wall_us = oomlens_agent::clock::boot_wall_us(stale);
    // Due at every tick, so at once.
    config.log_clock_every = Some(Duration::ZERO);
    let metrics = config.metrics.clone();

    let (stop, mut events, task) = start_pipeline(config);
    let deadline = Instant::now() + Duration::from_secs(10);
    let measured = loop {
        let seen_us = metrics.log_clock_offset_seconds() * 1e6;
        if (seen_us - true_offset as f64).abs() < 1_000.0 {
            break seen_us;
        }
        assert!(
            Instant::now() < deadline,
            "offset still {seen_us} µs, the kernel log's is {true_offset} µs"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let before = wall_now_us();
    let (pid, status) = tokio::task::spawn_blocking(move || run_hog(&cgroup))
        .await
        .expect("hog");
    let after = wall_now_us();
    assert_killed(status);
    let found = wait_for_memcg(&mut events, &tree.kernel_path("clock"), Duration::from_secs(10)).await;
    stop.send(()).expect("stop");
    task.await.expect("pipeline");
    let event = found.first().expect("the kill was reported");
    assert_eq!(event.victim.as_ref().and_then(|v| v.pid), Some(kernel_pid(pid)));
    let time = event.time.as_ref().expect("time");
    let time_us = time.seconds * 1_000_000 + i64::from(time.nanos) / 1000;
    assert!(
        (before - 2_000..=after + 2_000).contains(&time_us),
        "kill at {time_us}, the hog ran from {before} to {after} (offset {measured} µs)"
    );
}
