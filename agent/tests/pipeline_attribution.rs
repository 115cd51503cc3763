//! The live pipeline as a component, without root: fixture kernel records
//! in, a scripted sampler answering its requests, tokio's paused clock for
//! the attribution wait. A storm whose reports the kernel rate-limited is
//! placed kill by kill: by its report, the victim's `/proc` entry, the
//! sampler's process list, the kernel's OOM notice, the only counter step,
//! or not at all when the evidence is ambiguous.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::stream;
use oomlens_agent::app::AgentMetrics;
use oomlens_agent::cgroup::{CounterStep, OomNotice, Request, Sampler, Snapshot};
use oomlens_agent::event::NodeContext;
use oomlens_agent::kmsg::{Cursor, KmsgItem, Record};
use oomlens_agent::pipeline::attribute::ATTRIBUTION_WAIT;
use oomlens_agent::pipeline::{self, Enrichers, EventSink, PipelineConfig};
use oomlens_proto::json::JsonEnum as _;
use oomlens_proto::v1::{OomEvent, Scope};
use tokio::sync::{mpsc, oneshot};

/// Boot at a fixed wall time, so kills have fixed Unix times.
const BOOT_WALL_US: i64 = 1_700_000_000_000_000;

fn unix_ms(monotonic_us: u64) -> u64 {
    (BOOT_WALL_US as u64 + monotonic_us) / 1000
}

fn record(seq: u64, monotonic_us: u64, facility: u8, message: &str) -> Record {
    Record {
        facility,
        level: 3,
        seq,
        timestamp_us: monotonic_us,
        flag: '-',
        caller: None,
        message: message.to_owned(),
        fields: Vec::new(),
    }
}

fn bare_kill(pid: u32) -> String {
    format!(
        "Memory cgroup out of memory: Killed process {pid} (hog) total-vm:70000kB, anon-rss:65000kB, \
         file-rss:1000kB, shmem-rss:0kB, UID:0 pgtables:180kB oom_score_adj:0"
    )
}

const C1: &str = "/kubepods/burstable/podaaaaaaaa-0000-0000-0000-000000000001/1111111111111111111111111111111111111111111111111111111111111111";
const C2: &str = "/kubepods/burstable/podaaaaaaaa-0000-0000-0000-000000000002/2222222222222222222222222222222222222222222222222222222222222222";
const C3: &str = "/kubepods/burstable/podaaaaaaaa-0000-0000-0000-000000000003/3333333333333333333333333333333333333333333333333333333333333333";
const C4: &str = "/kubepods/burstable/podaaaaaaaa-0000-0000-0000-000000000004/4444444444444444444444444444444444444444444444444444444444444444";
const POD5: &str = "/kubepods/burstable/podaaaaaaaa-0000-0000-0000-000000000005";
const C5: &str = "/kubepods/burstable/podaaaaaaaa-0000-0000-0000-000000000005/5555555555555555555555555555555555555555555555555555555555555555";
const C6: &str = "/kubepods/burstable/podaaaaaaaa-0000-0000-0000-000000000006/6666666666666666666666666666666666666666666666666666666666666666";
const C7: &str = "/kubepods/burstable/podaaaaaaaa-0000-0000-0000-000000000007/7777777777777777777777777777777777777777777777777777777777777777";

/// Kernel time of each kill line.
const T1: u64 = 10_000_000;
const T2: u64 = 10_020_000;
const T3: u64 = 10_040_000;
const T4: u64 = 10_060_000;
const T5: u64 = 10_500_000;
const T6: u64 = 14_000_000;

/// The storm as the kernel logged it: one complete report, then only
/// kill lines (the header was rate-limited), and a forged line.
fn storm() -> Vec<Record> {
    vec![
        record(
            1,
            T1 - 100,
            0,
            "hog invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
        ),
        record(
            2,
            T1 - 50,
            0,
            &format!(
                "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,\
                 oom_memcg={C1},task_memcg={C1},task=hog,pid=100,uid=0"
            ),
        ),
        record(3, T1, 0, &bare_kill(100)),
        record(4, T2, 0, &bare_kill(200)),
        // Written to /dev/kmsg by someone else: never a kill.
        record(5, T2 + 5_000, 1, &bare_kill(999)),
        record(6, T3, 0, &bare_kill(300)),
        record(7, T4, 0, &bare_kill(400)),
        record(8, T5, 0, &bare_kill(500)),
        record(9, T6, 0, &bare_kill(600)),
    ]
}

/// What the sampler saw during the storm, its notices timed on
/// `CLOCK_MONOTONIC`: the kernel log's clock minus `log_clock_offset_us`.
fn evidence(log_clock_offset_us: i64) -> (Vec<OomNotice>, Vec<CounterStep>) {
    let notice = |cgroup: &str, at_us: u64| OomNotice {
        cgroup: cgroup.to_owned(),
        at_us: at_us.saturating_add_signed(-log_clock_offset_us),
    };
    let step = |cgroup: &str, at_ms| CounterStep {
        cgroup: cgroup.to_owned(),
        at_ms,
    };
    let notices = vec![
        // C1's own OOM: its kill was placed by the report, so this notice
        // must not place another kill.
        notice(C1, T1 - 200),
        notice(C4, T4 - 300),
    ];
    let steps = vec![
        step(C1, unix_ms(T1) + 300),
        // Kill 5: the pod's counter steps with its container's (v2).
        step(POD5, unix_ms(T5) + 400),
        step(C5, unix_ms(T5) + 400),
        // Kill 6: two containers stepped in its window: no guess.
        step(C6, unix_ms(T6) + 200),
        step(C7, unix_ms(T6) + 600),
    ];
    (notices, steps)
}

/// Answers the pipeline's requests as a sampler that saw `evidence`.
async fn scripted_sampler(mut requests: mpsc::Receiver<Request>, log_clock_offset_us: i64) {
    let (notices, steps) = evidence(log_clock_offset_us);
    while let Some(request) = requests.recv().await {
        match request {
            Request::OomNotices {
                from_us,
                to_us,
                reply,
            } => {
                let _ = reply.send(
                    notices
                        .iter()
                        .filter(|n| (from_us..=to_us).contains(&n.at_us))
                        .cloned()
                        .collect(),
                );
            }
            Request::OomSteps {
                from_ms,
                to_ms,
                reply,
            } => {
                let _ = reply.send(
                    steps
                        .iter()
                        .filter(|s| (from_ms..=to_ms).contains(&s.at_ms))
                        .cloned()
                        .collect(),
                );
            }
            Request::CgroupOfPid { pid, reply, .. } => {
                let _ = reply.send((pid == 300).then(|| C3.to_owned()));
            }
            // C5 sat at its pod's limit, not its own.
            Request::LimitedCgroup { victim, reply, .. } => {
                let _ = reply.send((victim == C5).then(|| POD5.to_owned()));
            }
            Request::Snapshot { reply, .. } => {
                let _ = reply.send(Snapshot::default());
            }
            Request::Stats { reply } => {
                let _ = reply.send(Default::default());
            }
            Request::Statuses { reply } => {
                let _ = reply.send(Vec::new());
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_rate_limited_storm_is_placed_kill_by_kill_without_guessing() {
    storm_is_placed_kill_by_kill(0).await;
}

/// The same storm on a node up for weeks: the kernel log's clock 30 ms
/// behind CLOCK_MONOTONIC, on which the OOM notices are timed. The notice
/// still places its kill (matched on one clock, not 30 ms apart).
#[tokio::test(start_paused = true)]
async fn a_storm_is_placed_by_notices_with_the_log_clock_drifted() {
    storm_is_placed_kill_by_kill(-30_000).await;
}

async fn storm_is_placed_kill_by_kill(log_clock_offset_us: i64) {
    let proc_root = tempfile::tempdir().expect("proc root");
    // Kill 2's victim is still dying: its /proc entry names its cgroup.
    let dying = proc_root.path().join("200");
    std::fs::create_dir(&dying).expect("pid dir");
    std::fs::write(dying.join("cgroup"), format!("7:memory:{C2}\n")).expect("cgroup file");
    let state = tempfile::tempdir().expect("state");
    let (sampler, requests) = Sampler::channel();
    tokio::spawn(scripted_sampler(requests, log_clock_offset_us));
    let metrics = AgentMetrics::new();
    let node = NodeContext {
        node: "node-1".into(),
        boot_id: "boot-1".into(),
        boot_wall_us: Some(BOOT_WALL_US),
        log_clock_offset_us,
        kernel_release: None,
    };
    let config = PipelineConfig {
        state_dir: Some(state.path().to_path_buf()),
        enrichers: Enrichers {
            sampler: Some(sampler),
            ..Enrichers::default()
        },
        metrics: metrics.pipeline.clone(),
        reader_metrics: metrics.reader.clone(),
        ..PipelineConfig::new("/nonexistent/kmsg".into(), proc_root.path().to_path_buf(), node)
    };
    let records = stream::iter(storm().into_iter().map(|r| Ok(KmsgItem::Record(r))));
    let (events_tx, mut events) = mpsc::channel(16);
    let (stop, stopped) = oneshot::channel::<()>();
    let started = tokio::time::Instant::now();
    let pipeline = tokio::spawn(pipeline::run_on(
        config,
        records,
        EventSink::from(events_tx),
        async move {
            let _ = stopped.await;
        },
    ));
    let mut received: HashMap<i32, (OomEvent, Duration)> = HashMap::new();
    while received.len() < 6 {
        let event = tokio::time::timeout(Duration::from_secs(60), events.recv())
            .await
            .expect("every kill within a minute")
            .expect("the pipeline runs");
        let pid = event.victim.as_ref().and_then(|v| v.pid).expect("pid");
        received.insert(pid, (event, started.elapsed()));
    }
    stop.send(()).expect("stop");
    let stats = pipeline.await.expect("task").expect("pipeline");
    assert_eq!(stats.events, 6);
    assert_eq!(stats.parser.forged, 1, "the forged kill line is no kill");

    let place = |pid: i32| {
        let (event, _) = &received[&pid];
        (
            event.task_memcg.as_deref(),
            event.oom_memcg.as_deref(),
            Scope::try_from(event.scope).ok().and_then(|s| s.word()),
        )
    };
    let container = Some("container_limit".to_owned());
    assert_eq!(
        place(100),
        (Some(C1), Some(C1), container.clone()),
        "by its report"
    );
    assert_eq!(place(200).0, Some(C2), "by its /proc entry");
    assert_eq!(place(300).0, Some(C3), "by the sampler's process list");
    assert_eq!(place(400), (Some(C4), Some(C4), container), "by its OOM notice");
    assert_eq!(
        place(500),
        (Some(C5), Some(POD5), Some("pod_limit".to_owned())),
        "by the only leaf counter step; the pod's usage says which limit"
    );
    assert_eq!(
        place(600),
        (None, None, Some("unknown".to_owned())),
        "two candidates: no guess"
    );
    assert_eq!(received[&600].0.pod, None);

    // The kills placed at once went out at once; the others waited for the
    // sampler's evidence.
    for pid in [100, 200, 300] {
        assert!(
            received[&pid].1 < ATTRIBUTION_WAIT,
            "{pid} at {:?}",
            received[&pid].1
        );
    }
    for pid in [400, 500, 600] {
        assert!(
            received[&pid].1 >= ATTRIBUTION_WAIT,
            "{pid} at {:?}",
            received[&pid].1
        );
    }

    let text = metrics.encode();
    for by in ["report", "proc", "process_list", "notice", "counter", "unplaced"] {
        let series = format!("oomlens_agent_kill_placements_total{{by=\"{by}\"}} 1");
        assert!(text.contains(&series), "{series} in:\n{text}");
    }
    assert!(text.contains("oomlens_agent_kmsg_forged_lines_total 1"), "{text}");
    assert!(text.contains("oomlens_agent_oom_kills_partial_total 5"), "{text}");

    // Everything was handled: the cursor covers the last record.
    let cursor = Cursor::load(&state.path().join(pipeline::CURSOR_FILE))
        .expect("readable")
        .expect("saved");
    assert_eq!((cursor.boot_id.as_str(), cursor.seq), ("boot-1", 9));
}

/// A RHEL 7 (3.10) memcg kill: the kernel logs `Task in` in two pieces
/// when another CPU prints between them, and names no constraint; the live
/// path joins the pieces and reads the kind and both cgroups.
#[tokio::test(start_paused = true)]
async fn an_old_kernels_kill_logged_in_pieces_keeps_its_cgroups() {
    let pod = "/kubepods/burstable/pod95387fa4-da9c-11e7-9d36-5254b24cbf5e";
    let container = format!("{pod}/6895a3e13439535852d3184ac2aadd26d7363cc035f171545ec7d4ce74073b0b");
    let split = |seq: u64, flag: char, message: &str| Record {
        flag,
        ..record(seq, 1_000_000 + seq, 0, message)
    };
    let records = vec![
        split(
            1,
            '-',
            "java invoked oom-killer: gfp_mask=0xd0, order=0, oom_score_adj=-998",
        ),
        split(2, 'c', &format!("Task in {container} killed")),
        split(3, '-', "e1000: eth0 NIC Link is Up"),
        split(4, '+', &format!(" as a result of limit of {container}")),
        split(5, '-', "memory: usage 1048576kB, limit 1048576kB, failcnt 3051"),
        split(
            6,
            '-',
            "Memory cgroup out of memory: Kill process 24572 (sh) score 0 or sacrifice child",
        ),
        split(
            7,
            '-',
            "Killed process 28438 (java) total-vm:20255636kB, anon-rss:466160kB, file-rss:13684kB",
        ),
    ];
    let node = NodeContext {
        node: "rhel7".into(),
        boot_id: "boot-1".into(),
        boot_wall_us: Some(BOOT_WALL_US),
        log_clock_offset_us: 0,
        kernel_release: Some("3.10.0-327.4.5.el7.x86_64".into()),
    };
    let proc_root = tempfile::tempdir().expect("proc root");
    let config = PipelineConfig::new("/nonexistent/kmsg".into(), proc_root.path().to_path_buf(), node);
    let (events_tx, mut events) = mpsc::channel(4);
    let (stop, stopped) = oneshot::channel::<()>();
    let pipeline = tokio::spawn(pipeline::run_on(
        config,
        stream::iter(records.into_iter().map(|r| Ok(KmsgItem::Record(r)))),
        EventSink::from(events_tx),
        async move {
            let _ = stopped.await;
        },
    ));
    let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("in time")
        .expect("an event");
    stop.send(()).expect("stop");
    pipeline.await.expect("task").expect("pipeline");
    assert_eq!(event.victim.as_ref().and_then(|v| v.pid), Some(28438));
    assert_eq!(
        Scope::try_from(event.scope)
            .ok()
            .and_then(|s| s.word())
            .as_deref(),
        Some("container_limit")
    );
    assert_eq!(event.oom_memcg.as_deref(), Some(container.as_str()));
    assert_eq!(event.task_memcg.as_deref(), Some(container.as_str()));
    assert_eq!(
        event.pod.as_ref().map(|p| p.uid.as_str()),
        Some("95387fa4-da9c-11e7-9d36-5254b24cbf5e")
    );
}
