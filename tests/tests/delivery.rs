//! At-least-once delivery, exactly-once storage: the agent's spool and
//! sender against the real collector binary, with the collector killed
//! (SIGKILL) and the agent restarted mid-stream; then the real agent
//! binary shipping real kernel OOM kills across restarts of both, read
//! back with the `oomlens` CLI.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use oomlens_agent::app::AgentMetrics;
use oomlens_agent::ship::SharedSpool;
use oomlens_common::client::ClientConfig;
use oomlens_proto::v1::{OomEvent, QueryRequest};
use oomlens_tests::agent::{InProcessShipper, start_shipping, stop};
use oomlens_tests::collector::CollectorProcess;
use oomlens_tests::collector::stored_ids;
use oomlens_tests::{ScratchTree, cli_binary, metric, oom_kill_in, require_real_kernel, unique};

/// 60 s at 10 Hz, as a real kill carries.
fn synthetic(n: u64) -> OomEvent {
    oomlens_tests::synthetic_kill("delivery-node", n, 600)
}

/// The sender, retrying fast, with a small window: the kill lands with
/// many events in flight, and more still to send.
fn start_shipper(spool: &SharedSpool, endpoint: &str, metrics: &Arc<AgentMetrics>) -> InProcessShipper {
    InProcessShipper::start(spool, endpoint, metrics, "delivery-node", |config| {
        config.min_backoff = Duration::from_millis(50);
        config.max_backoff = Duration::from_millis(500);
        config.max_in_flight = 32;
    })
}

async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_kill_and_agent_restart_lose_nothing_and_store_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut collector =
        CollectorProcess::start(&dir.path().join("events.db").display().to_string(), dir.path());
    let spool_dir = dir.path().join("spool");
    let metrics = Arc::new(AgentMetrics::new());
    let spool = SharedSpool::open(&spool_dir, 256 << 20, metrics.spool.clone()).unwrap();
    let total = 600u64;
    for n in 0..300 {
        spool.append(synthetic(n)).await.unwrap();
    }
    let shipper = start_shipper(&spool, &collector.endpoint(), &metrics);
    // Mid-stream: kill the collector while events are in flight.
    let spooled = || spool.stats().events;
    wait_for("the first acks", Duration::from_secs(30), || spooled() < 250).await;
    collector.kill();
    // Events keep coming while it is down: they wait in the spool.
    for n in 300..450 {
        spool.append(synthetic(n)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    collector.restart();
    // Mid-stream again: the agent dies (its task is dropped, acks in
    // flight are lost) and a new one opens the same spool.
    let before = spooled();
    wait_for("progress after the restart", Duration::from_secs(30), || {
        spooled() + 20 < before
    })
    .await;
    shipper.abort().await;
    let spool = SharedSpool::open(&spool_dir, 256 << 20, metrics.spool.clone()).unwrap();
    for n in 450..total {
        spool.append(synthetic(n)).await.unwrap();
    }
    let shipper = start_shipper(&spool, &collector.endpoint(), &metrics);
    wait_for("an empty spool", Duration::from_secs(60), || {
        spool.stats().events == 0
    })
    .await;
    shipper.stop().await;

    let ids = stored_ids(&collector.endpoint()).await;
    let unique_ids: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique_ids.len(), ids.len(), "no event stored twice");
    let expected: HashSet<String> = (0..total).map(|n| synthetic(n).id).collect();
    assert_eq!(ids.len(), usize::try_from(total).unwrap(), "every event stored");
    assert!(ids.iter().all(|id| expected.contains(id)));
    let text = metrics.encode();
    eprintln!(
        "{}",
        text.lines()
            .filter(|l| l.starts_with("oomlens_agent_shipped") || l.starts_with("oomlens_agent_send"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The SIGKILL broke the open stream, and reconnecting failed while the
    // collector was down: both are counted.
    for reason in ["stream", "connect"] {
        let series = format!("oomlens_agent_send_errors_total{{reason=\"{reason}\"}}");
        assert!(metric(&text, &series) >= 1.0, "{reason} errors counted:\n{text}");
    }
}

/// Holds the spool's lock until the returned sender is dropped: a disk
/// that stalls every write.
async fn stall_disk(spool: &SharedSpool) -> std::sync::mpsc::Sender<()> {
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (held, holding) = tokio::sync::oneshot::channel();
    let stalled = spool.clone();
    tokio::spawn(async move {
        stalled
            .with(move |_| {
                let _ = held.send(());
                let _ = released.recv();
            })
            .await;
    });
    holding.await.unwrap();
    release
}

fn spool_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".event")
        })
        .count()
}

/// A collector, and a spool whose sender has its ingest stream open.
struct Connected {
    collector: CollectorProcess,
    spool_dir: std::path::PathBuf,
    metrics: Arc<AgentMetrics>,
    spool: SharedSpool,
    shipper: InProcessShipper,
}

async fn connected(dir: &std::path::Path) -> Connected {
    let collector = CollectorProcess::start(&dir.join("events.db").display().to_string(), dir);
    let spool_dir = dir.join("spool");
    let metrics = Arc::new(AgentMetrics::new());
    let spool = SharedSpool::open(&spool_dir, 256 << 20, metrics.spool.clone()).unwrap();
    let shipper = start_shipper(&spool, &collector.endpoint(), &metrics);
    wait_for("the ingest stream", Duration::from_secs(30), || {
        metric(&metrics.encode(), "oomlens_agent_collector_connected") == 1.0
    })
    .await;
    Connected {
        collector,
        spool_dir,
        metrics,
        spool,
        shipper,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_the_collector_while_their_spool_writes_are_stalled() {
    let dir = tempfile::tempdir().unwrap();
    let Connected {
        collector,
        spool_dir,
        metrics,
        spool,
        shipper,
    } = connected(dir.path()).await;
    let release = stall_disk(&spool).await;
    let appends: Vec<_> = (0..20)
        .map(|n| {
            let spool = spool.clone();
            tokio::spawn(async move { spool.append_retrying(&synthetic(n)).await })
        })
        .collect();
    // Stored by the collector while not one spool write has begun.
    let endpoint = collector.endpoint();
    let deadline = Instant::now() + Duration::from_secs(30);
    while stored_ids(&endpoint).await.len() < 20 {
        assert!(
            Instant::now() < deadline,
            "events stored while the spool disk is stalled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(spool_files(&spool_dir), 0);
    drop(release);
    for append in appends {
        append.await.unwrap().unwrap();
    }
    shipper.stop().await;
    assert_eq!(metrics.sender.sent_early(), 20);
    assert_eq!(
        metrics.spool.writes_skipped(),
        20,
        "the disk was spared what the collector stored"
    );
    assert_eq!(spool_files(&spool_dir), 0);
    assert_eq!(spool.stats().events, 0);
    let ids = stored_ids(&endpoint).await;
    let expected: HashSet<String> = (0..20).map(|n| synthetic(n).id).collect();
    assert_eq!(ids.into_iter().collect::<HashSet<_>>(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_sends_racing_their_writes_across_a_collector_kill_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Connected {
        mut collector,
        spool_dir,
        metrics,
        spool,
        shipper,
    } = connected(dir.path()).await;
    // Four writers, as a burst of kills and their revisions would be, each
    // sent while its write runs; the collector dies in the middle.
    let writers = 4u64;
    let each = 100u64;
    let appends: Vec<_> = (0..writers)
        .map(|w| {
            let spool = spool.clone();
            tokio::spawn(async move {
                for n in 0..each {
                    spool.append_retrying(&synthetic(w * each + n)).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        })
        .collect();
    wait_for("the first acks", Duration::from_secs(30), || {
        metric(
            &metrics.encode(),
            "oomlens_agent_shipped_events_total{result=\"stored\"}",
        ) >= 60.0
    })
    .await;
    collector.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    collector.restart();
    for append in appends {
        append.await.unwrap();
    }
    wait_for("an empty spool", Duration::from_secs(60), || {
        spool.stats().events == 0
    })
    .await;
    shipper.stop().await;
    assert_eq!(spool_files(&spool_dir), 0, "no file outlives its acknowledgement");
    let ids = stored_ids(&collector.endpoint()).await;
    let unique_ids: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique_ids.len(), ids.len(), "no event stored twice");
    assert_eq!(
        ids.len(),
        usize::try_from(writers * each).unwrap(),
        "every event stored"
    );
    eprintln!(
        "sent early {}, writes skipped {}, acks {}",
        metrics.sender.sent_early(),
        metrics.spool.writes_skipped(),
        metric(
            &metrics.encode(),
            "oomlens_agent_shipped_events_total{result=\"stored\"}"
        )
    );
    assert!(
        metrics.sender.sent_early() >= 60,
        "sent as spooled: {}",
        metrics.sender.sent_early()
    );
}

/// Polls the collector until `count` events from our cgroups are stored.
async fn wait_stored(endpoint: &str, names: &[String], count: usize) -> Vec<OomEvent> {
    let config = ClientConfig {
        endpoint: endpoint.to_owned(),
        ..ClientConfig::default()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut client) = config.event_client().await {
            let page = client
                .query(QueryRequest {
                    page_size: 1000,
                    ..QueryRequest::default()
                })
                .await
                .unwrap()
                .into_inner();
            let ours: Vec<OomEvent> = page
                .events
                .into_iter()
                .filter(|e| {
                    e.oom_memcg
                        .as_deref()
                        .is_some_and(|m| names.iter().any(|name| m.contains(name.as_str())))
                })
                .collect();
            if ours.len() >= count {
                return ours;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{count} of our kills not stored within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_binary_ships_real_kills_across_restarts() {
    require_real_kernel!();
    let dir = tempfile::tempdir().unwrap();
    let mut collector =
        CollectorProcess::start(&dir.path().join("events.db").display().to_string(), dir.path());
    let state = dir.path().join("agent");
    let tree = ScratchTree::new(&unique("oomlens-delivery"));
    let names: Vec<String> = (0..3).map(|i| format!("kill{i}")).collect();
    let full = |i: usize| tree.kernel_path(&names[i]);
    let ours: Vec<String> = (0..3).map(full).collect();

    let mut agent = start_shipping(&collector.endpoint(), &state);
    tokio::time::sleep(Duration::from_millis(500)).await;
    oom_kill_in(&tree, &names[0]);
    wait_stored(&collector.endpoint(), &ours, 1).await;

    // The collector dies; a kill happens meanwhile; the agent restarts.
    collector.kill();
    oom_kill_in(&tree, &names[1]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop(&mut agent);
    assert!(
        std::fs::read_dir(state.join("spool"))
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".event")),
        "the undelivered kill waits in the spool"
    );
    collector.restart();
    let mut agent = start_shipping(&collector.endpoint(), &state);
    wait_stored(&collector.endpoint(), &ours, 2).await;
    oom_kill_in(&tree, &names[2]);
    let events = wait_stored(&collector.endpoint(), &ours, 3).await;
    stop(&mut agent);
    // Each kill exactly once, matched on our own cgroups.
    for path in &ours {
        let count = events
            .iter()
            .filter(|e| e.oom_memcg.as_deref() == Some(path.as_str()))
            .count();
        assert_eq!(count, 1, "{path} stored once");
    }

    // The CLI reads them back.
    let out = Command::new(cli_binary())
        .args([
            "--collector",
            &collector.endpoint(),
            "events",
            "--output",
            "json",
            "--limit",
            "1000",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    for path in &ours {
        assert_eq!(
            text.matches(&format!("\"oom_memcg\":\"{path}\"")).count(),
            1,
            "{text}"
        );
    }
    let first = events
        .iter()
        .find(|e| e.oom_memcg.as_deref() == Some(ours[0].as_str()))
        .unwrap();
    let out = Command::new(cli_binary())
        .args(["--collector", &collector.endpoint(), "show", &first.id[..10]])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(shown.contains(&format!("OOM kill {}", first.id)), "{shown}");
    // A plain cgroup, not a pod: a verdict, but no Kubernetes limit to recommend.
    assert!(shown.contains("scope      other_cgroup (memcg)"), "{shown}");
    assert!(shown.contains("Verdict: "), "{shown}");
    assert!(shown.contains("memcg      usage 32Mi of limit 32Mi"), "{shown}");
}

/// The next `oom` event on `stream` that is one of our kills, skipping
/// anyone else's; panics after `wait`.
async fn our_streamed_kill(
    stream: &mut oomlens_tests::http::EventStream,
    ours: &[String],
    wait: Duration,
) -> (String, OomEvent) {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let sent = stream
            .next(left)
            .await
            .expect("one of our kills on the HTTP stream in time");
        assert_eq!(sent.event, "oom", "{sent:?}");
        let event = oomlens_proto::json::event_from_json(&sent.data).unwrap();
        if event
            .oom_memcg
            .as_deref()
            .is_some_and(|m| ours.iter().any(|o| o == m))
        {
            return (sent.id.expect("an oom event carries its cursor"), event);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_stream_and_a_webhook_carry_real_kills_across_a_collector_restart() {
    require_real_kernel!();
    let dir = tempfile::tempdir().unwrap();
    let receiver = oomlens_tests::http::Receiver::start(|_, _| 200).await;
    let mut collector = CollectorProcess::start_with_env(
        &dir.path().join("events.db").display().to_string(),
        dir.path(),
        &[
            ("OOMLENS_WEBHOOKS", &receiver.url("/oom")),
            ("OOMLENS_WEBHOOK_FORMAT", "summary"),
        ],
    );
    let state = dir.path().join("agent");
    let tree = ScratchTree::new(&unique("oomlens-sse"));
    let names: Vec<String> = (0..3).map(|i| format!("kill{i}")).collect();
    let ours: Vec<String> = names.iter().map(|n| tree.kernel_path(n)).collect();

    let mut stream = oomlens_tests::http::stream(&collector.http_address(), "/api/v1/stream", &[]).await;
    assert_eq!(stream.status, 200);
    let mut agent = start_shipping(&collector.endpoint(), &state);
    tokio::time::sleep(Duration::from_millis(500)).await;
    oom_kill_in(&tree, &names[0]);
    let (first_cursor, first) = our_streamed_kill(&mut stream, &ours, Duration::from_secs(30)).await;
    assert_eq!(first.oom_memcg.as_deref(), Some(ours[0].as_str()));
    assert_eq!(first.victim.and_then(|v| v.comm).as_deref(), Some("tail"));

    // The collector dies (the stream with it); a kill happens meanwhile.
    collector.kill();
    assert!(stream.ends_within(Duration::from_secs(5)).await);
    oom_kill_in(&tree, &names[1]);
    collector.restart();
    // An EventSource reconnects with the last id it saw.
    let mut resumed = oomlens_tests::http::stream(
        &collector.http_address(),
        "/api/v1/stream",
        &[("Last-Event-ID", &first_cursor)],
    )
    .await;
    assert_eq!(resumed.status, 200);
    let (_, second) = our_streamed_kill(&mut resumed, &ours, Duration::from_secs(30)).await;
    assert_eq!(
        second.oom_memcg.as_deref(),
        Some(ours[1].as_str()),
        "the kill made while down, once"
    );
    oom_kill_in(&tree, &names[2]);
    let (_, third) = our_streamed_kill(&mut resumed, &ours, Duration::from_secs(30)).await;
    assert_eq!(third.oom_memcg.as_deref(), Some(ours[2].as_str()));
    stop(&mut agent);
    // The webhook got the three too, in order, at least once each (a
    // delivery cut by the SIGKILL may come again).
    let names_in = |requests: &[oomlens_tests::http::Received]| -> Vec<String> {
        let mut seen: Vec<String> = Vec::new();
        for request in requests.iter().filter(|r| r.status == 200) {
            let body: serde_json::Value = serde_json::from_str(&request.body).unwrap();
            let id = body["id"].as_str().unwrap().to_owned();
            if !seen.contains(&id) {
                seen.push(id);
            }
        }
        seen
    };
    let wanted = [first.id.clone(), second.id.clone(), third.id.clone()];
    let requests = receiver
        .wait_until(Duration::from_secs(30), |r| {
            let seen = names_in(r);
            wanted.iter().all(|w| seen.contains(w))
        })
        .await;
    let order: Vec<String> = names_in(&requests)
        .into_iter()
        .filter(|id| wanted.contains(id))
        .collect();
    assert_eq!(order, wanted, "the webhook got our kills in order");
    let summary = requests
        .iter()
        .find(|r| r.body.contains(&first.id))
        .map(|r| serde_json::from_str::<serde_json::Value>(&r.body).unwrap())
        .unwrap();
    assert_eq!(summary["scope"], "other_cgroup");
    assert_eq!(summary["victim"], "tail");
    // Nothing of ours repeated after the three.
    while let Some(sent) = resumed.next(Duration::from_millis(500)).await {
        let event = oomlens_proto::json::event_from_json(&sent.data).unwrap();
        assert!(
            !event
                .oom_memcg
                .as_deref()
                .is_some_and(|m| ours.iter().any(|o| o == m)),
            "repeated: {:?}",
            event.oom_memcg
        );
    }
}
