//! The real collector under a bounded load from loopback clients, as an
//! attacker or a very large cluster would apply it at once: agents sending
//! the largest events allowed on four streams, one sending events over the
//! cap, subscribers that never read, and status reports for 600,000
//! distinct containers. Its peak memory stays bounded by its limits
//! (docs/reliability.md) and every acknowledged event is stored once.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use oomlens_common::client::ClientConfig;
use oomlens_common::limits::MAX_EVENT_BYTES;
use oomlens_proto::v1::{
    AckStatus, AgentHello, ContainerMemoryStatus, ContainerStatusReport, IngestRequest, MemoryHistory,
    MemorySample, OomEvent, Pod, SubscribeRequest, ingest_request,
};
use oomlens_tests::collector::{CollectorProcess, stored_ids};
use prost::Message as _;
use prost_types::Timestamp;
use tokio_stream::wrappers::ReceiverStream;

const STREAMS: usize = 4;
const EVENTS_PER_STREAM: usize = 8;
const IDLE_SUBSCRIBERS: usize = 20;
const CONTAINERS: usize = 600_000;
const STATUSES_PER_REPORT: usize = 5_000;
/// What the limits add up to (write queue 64 MiB, ring 64 MiB, all
/// subscribers 128 MiB, four backfill pages up to 100 MiB, 100,000
/// statuses about 110 MiB: 466 MiB) with room for the decoding buffers of
/// four ingest streams of the largest events, batch encoding, SQLite and
/// the allocator's fragmentation. Before the limits, the same load took
/// several GiB (7.6 GiB from four streams of 15 MB events alone).
const PEAK_RSS_BOUND_KIB: u64 = 1024 * 1024;

fn timestamp(seconds: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos: 0 })
}

/// A kill whose 10 Hz history makes it `samples` long.
fn event(stream: usize, n: usize, samples: usize) -> OomEvent {
    let limit = 512u64 << 20;
    let time = 1_795_000_000 + i64::try_from(n).unwrap();
    let node = format!("load-node-{stream}");
    let cgroup = format!("/kubepods/burstable/pod{stream}x{n}/c{n}");
    OomEvent {
        id: oomlens_proto::event_id(&node, "boot-load", u64::try_from(n).unwrap()),
        node: Some(node),
        time: timestamp(time),
        constraint: oomlens_proto::v1::Constraint::Memcg as i32,
        scope: oomlens_proto::v1::Scope::ContainerLimit as i32,
        oom_memcg: Some(cgroup.clone()),
        task_memcg: Some(cgroup.clone()),
        history: Some(MemoryHistory {
            cgroup,
            samples: (0..samples)
                .map(|i| MemorySample {
                    time: timestamp(time - 3600 + i64::try_from(i / 10).unwrap()),
                    working_set_bytes: Some(limit / 2 + u64::try_from(i).unwrap()),
                    usage_bytes: Some(limit / 2 + u64::try_from(i).unwrap() + 4096),
                    limit_bytes: Some(limit),
                    ..MemorySample::default()
                })
                .collect(),
            limit_bytes: Some(limit),
            sample_interval_ms: 100,
            ..MemoryHistory::default()
        }),
        ..OomEvent::default()
    }
}

/// The most samples an event may carry and stay within the cap.
fn samples_within_cap() -> usize {
    let per_sample = event(0, 0, 2).encoded_len() - event(0, 0, 1).encoded_len();
    let fixed = event(0, 0, 0).encoded_len();
    (MAX_EVENT_BYTES - fixed) / per_sample - 16
}

/// Sends `events` on one ingest stream; the ids acknowledged as stored.
async fn ingest(
    config: ClientConfig,
    node: String,
    events: Vec<OomEvent>,
) -> Result<Vec<String>, tonic::Status> {
    let mut client = config.ingest_client().await.unwrap();
    let count = events.len();
    let (sender, receiver) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        let hello = ingest_request::Item::Hello(AgentHello {
            node,
            ..AgentHello::default()
        });
        let items = std::iter::once(hello).chain(events.into_iter().map(ingest_request::Item::Event));
        for item in items {
            if sender.send(IngestRequest { item: Some(item) }).await.is_err() {
                return;
            }
        }
    });
    let mut acks = client.ingest(ReceiverStream::new(receiver)).await?.into_inner();
    let mut stored = Vec::new();
    for _ in 0..count {
        let ack = acks.message().await?.expect("an ack per event");
        assert_eq!(ack.status(), AckStatus::Stored, "{}: {}", ack.id, ack.message);
        stored.push(ack.id);
    }
    Ok(stored)
}

/// Status reports for `containers` distinct cgroups.
async fn report_statuses(config: ClientConfig, containers: usize) {
    let mut client = config.ingest_client().await.unwrap();
    let (sender, receiver) = tokio::sync::mpsc::channel(2);
    let sending = tokio::spawn(async move {
        let hello = ingest_request::Item::Hello(AgentHello {
            node: "load-statuses".into(),
            ..AgentHello::default()
        });
        sender.send(IngestRequest { item: Some(hello) }).await.unwrap();
        for first in (0..containers).step_by(STATUSES_PER_REPORT) {
            let report = ContainerStatusReport {
                containers: (first..containers.min(first + STATUSES_PER_REPORT))
                    .map(|n| ContainerMemoryStatus {
                        node: format!("load-node-{}", n % 5_000),
                        time: timestamp(1_795_000_000),
                        pod: Some(Pod {
                            uid: format!("{n:08x}-0000-4000-8000-000000000000"),
                            name: Some(format!("api-{n}")),
                            namespace: Some("load".into()),
                            ..Pod::default()
                        }),
                        cgroup: format!("/kubepods/burstable/pod{n:08x}/{n:064x}"),
                        working_set_bytes: 100 << 20,
                        limit_bytes: Some(512 << 20),
                        ..ContainerMemoryStatus::default()
                    })
                    .collect(),
            };
            let item = ingest_request::Item::Status(report);
            sender.send(IngestRequest { item: Some(item) }).await.unwrap();
        }
    });
    let mut acks = client
        .ingest(ReceiverStream::new(receiver))
        .await
        .unwrap()
        .into_inner();
    sending.await.unwrap();
    // Statuses are not acknowledged: the collector ends the stream once it
    // has read them all.
    while acks.message().await.unwrap().is_some() {}
    drop(client);
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

fn metric(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in:\n{metrics}"))
}

#[test]
fn collector_memory_stays_bounded_and_every_acknowledged_event_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("events.db").display().to_string();
    // As the image runs it (Dockerfile): without these, glibc's per-thread
    // arenas keep freed event buffers, and the peak varies from run to run
    // (830 MiB to 1.7 GiB here) above what the limits hold.
    let collector = CollectorProcess::start_with_env(
        &database,
        dir.path(),
        &[("MALLOC_ARENA_MAX", "2"), ("MALLOC_MMAP_THRESHOLD_", "1048576")],
    );
    let pid = collector.pid().unwrap();
    let config = ClientConfig {
        endpoint: collector.endpoint(),
        ..ClientConfig::default()
    };
    let samples = samples_within_cap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let status_config = config.clone();
    let (acked, over_cap, idle) = runtime.block_on(async {
        // Subscribers from the beginning that never read a response.
        let mut idle = Vec::new();
        for _ in 0..IDLE_SUBSCRIBERS {
            let mut client = config.event_client().await.unwrap();
            let stream = client
                .subscribe(SubscribeRequest {
                    cursor: "0".into(),
                    ..SubscribeRequest::default()
                })
                .await
                .unwrap()
                .into_inner();
            idle.push((client, stream));
        }
        let statuses = tokio::spawn(async move {
            let sending = Instant::now();
            report_statuses(status_config, CONTAINERS).await;
            sending.elapsed()
        });
        let senders: Vec<_> = (0..STREAMS)
            .map(|stream| {
                let events = (0..EVENTS_PER_STREAM)
                    .map(|n| event(stream, n, samples))
                    .collect();
                tokio::spawn(ingest(config.clone(), format!("load-node-{stream}"), events))
            })
            .collect();
        // Over the cap: refused before it is read whole, the stream ends.
        let huge = event(9, 0, samples * 15 / 8);
        assert!(huge.encoded_len() > 14 << 20);
        let over_cap = ingest(config.clone(), "load-node-9".into(), vec![huge]).await;
        let mut acked = Vec::new();
        for sender in senders {
            acked.extend(
                sender
                    .await
                    .unwrap()
                    .expect("an ingest stream of events within the cap"),
            );
        }
        eprintln!("collector load: events acked after {:.1?}", started.elapsed());
        let took = statuses.await.unwrap();
        eprintln!("collector load: {CONTAINERS} statuses read in {took:.1?}");
        (acked, over_cap, idle)
    });
    let loaded = started.elapsed();
    // The status gauge is refreshed when the board is pruned (every 5 s).
    let deadline = Instant::now() + Duration::from_secs(20);
    let metrics = loop {
        let metrics = collector.metrics();
        if metric(&metrics, "oomlens_collector_container_statuses") > 0.0 || Instant::now() > deadline {
            break metrics;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let peak = peak_rss_kib(pid);

    // Every acknowledged event is stored, once.
    let mut stored: HashMap<String, usize> = HashMap::new();
    for id in runtime.block_on(stored_ids(&collector.endpoint())) {
        *stored.entry(id).or_default() += 1;
    }
    drop(idle);
    let statuses = metric(&metrics, "oomlens_collector_container_statuses");
    let statuses_dropped = metric(&metrics, "oomlens_collector_container_statuses_dropped_total");
    eprintln!(
        "collector load: {} events of {} bytes acked in {loaded:.1?}; {CONTAINERS} container statuses \
         ({statuses} kept, {statuses_dropped} dropped); {IDLE_SUBSCRIBERS} idle subscribers; \
         peak RSS {} MiB (bound {} MiB)",
        acked.len(),
        event(0, 0, samples).encoded_len(),
        peak / 1024,
        PEAK_RSS_BOUND_KIB / 1024
    );

    let refused = over_cap.expect_err("an event over the cap is refused");
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused:?}");
    assert_eq!(acked.len(), STREAMS * EVENTS_PER_STREAM);
    for id in &acked {
        assert_eq!(stored.get(id), Some(&1), "acked event {id} stored once");
    }
    assert_eq!(stored.len(), acked.len(), "nothing but the acked events stored");
    // Statuses unreported for 30 s are pruned meanwhile, so fewer than
    // the cap may be left; the board was full at some point.
    assert!(statuses <= 100_000.0, "{statuses} statuses kept");
    assert!(statuses_dropped > 0.0, "statuses beyond the cap are counted");
    assert!(
        peak < PEAK_RSS_BOUND_KIB,
        "peak RSS {} MiB over the bound of {} MiB",
        peak / 1024,
        PEAK_RSS_BOUND_KIB / 1024
    );
}
