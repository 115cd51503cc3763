//! The pipeline's state directory failing under it, without root: the
//! directory (or the spool inside it) is replaced by a plain file, so every
//! write there fails, then put back. A kill made meanwhile is still passed
//! on, kept in memory and spooled once the directory takes writes again;
//! the cursor never moves past it; readiness and the metric follow.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use oomlens_agent::event::NodeContext;
use oomlens_agent::kmsg::{Cursor, KmsgError, KmsgItem, Record};
use oomlens_agent::pipeline::{self, EventSink, PipelineConfig};
use oomlens_agent::ship::{Settlement, SharedSpool, SpoolMetrics};
use oomlens_agent::telemetry::{Readiness, encode};
use oomlens_proto::v1::OomEvent;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;

const BOOT: &str = "0b9c5a7e-0000-4000-8000-000000000001";

fn record(seq: u64, message: String) -> KmsgItem {
    KmsgItem::Record(Record {
        facility: 0,
        level: 3,
        seq,
        timestamp_us: seq * 1_000,
        flag: '-',
        caller: None,
        message,
        fields: Vec::new(),
    })
}

/// A complete cgroup v2 memcg kill report on records `first..first + 3`.
fn kill(first: u64, pid: u32) -> Vec<KmsgItem> {
    let cgroup = format!("/kubepods/burstable/pod0000000{pid}-0000-0000-0000-000000000001/c{pid}");
    vec![
        record(
            first,
            "hog invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0".into(),
        ),
        record(
            first + 1,
            format!(
                "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,\
                 oom_memcg={cgroup},task_memcg={cgroup},task=hog,pid={pid},uid=0"
            ),
        ),
        record(
            first + 2,
            format!(
                "Memory cgroup out of memory: Killed process {pid} (hog) total-vm:70000kB, \
                 anon-rss:65000kB, file-rss:1000kB, shmem-rss:0kB, UID:0 pgtables:180kB oom_score_adj:0"
            ),
        ),
    ]
}

fn quiet(seq: u64) -> Vec<KmsgItem> {
    vec![record(seq, format!("eth0: link is up ({seq})"))]
}

/// Swaps `path` (a directory) for a plain file, and back.
struct Broken {
    path: PathBuf,
    aside: PathBuf,
}

impl Broken {
    fn break_dir(path: &Path) -> Self {
        let aside = path.with_extension("aside");
        std::fs::rename(path, &aside).expect("move the directory aside");
        std::fs::write(path, b"not a directory").expect("a file in its place");
        Self {
            path: path.to_owned(),
            aside,
        }
    }

    fn repair(self) {
        std::fs::remove_file(&self.path).expect("remove the file");
        std::fs::rename(&self.aside, &self.path).expect("put the directory back");
    }
}

struct Harness {
    records: mpsc::Sender<Result<KmsgItem, KmsgError>>,
    events: mpsc::Receiver<OomEvent>,
    spool: SharedSpool,
    readiness: Arc<Readiness>,
    registry: Registry,
    cursor: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    run: tokio::task::JoinHandle<Result<pipeline::PipelineStats, pipeline::PipelineError>>,
}

impl Harness {
    fn start(state: &Path) -> Self {
        let spool =
            SharedSpool::open(&state.join("spool"), 64 << 20, SpoolMetrics::default()).expect("spool");
        let node = NodeContext {
            node: "state-node".into(),
            boot_id: BOOT.into(),
            ..NodeContext::default()
        };
        let mut config = PipelineConfig::new("/nonexistent".into(), "/nonexistent".into(), node);
        config.state_dir = Some(state.to_owned());
        let readiness = Arc::clone(&config.readiness);
        readiness.set_kmsg_ready();
        let mut registry = Registry::default();
        config.metrics.register(&mut registry);
        let (records, records_rx) = mpsc::channel(64);
        let (events_tx, events) = mpsc::channel(64);
        let sink = EventSink {
            spool: Some(spool.clone()),
            channel: Some(events_tx),
            printer: None,
            runtime_watch: None,
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let stream = tokio_stream::wrappers::ReceiverStream::new(records_rx);
        let run = tokio::spawn(pipeline::run_on(config, stream, sink, async {
            let _ = stopped.await;
        }));
        Self {
            records,
            events,
            spool,
            readiness,
            registry,
            cursor: state.join("kmsg.cursor"),
            stop: Some(stop),
            run,
        }
    }

    async fn feed(&self, items: Vec<KmsgItem>) {
        for item in items {
            self.records.send(Ok(item)).await.expect("pipeline reading");
        }
    }

    async fn next_event(&mut self) -> OomEvent {
        tokio::time::timeout(Duration::from_secs(10), self.events.recv())
            .await
            .expect("an event within 10 s")
            .expect("pipeline running")
    }

    fn metric(&self, name: &str) -> String {
        let text = encode(&self.registry);
        text.lines()
            .find(|line| line.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
            .to_owned()
    }

    fn saved_seq(&self) -> Option<u64> {
        Cursor::load(&self.cursor).ok().flatten().map(|c| c.seq)
    }

    /// Waits (up to 10 s, the pipeline retries once a second) for `what`.
    async fn until(&self, what: &str, mut done: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().map(|stop| stop.send(()));
        self.run.await.expect("join").expect("pipeline");
    }
}

#[tokio::test]
async fn a_state_directory_that_takes_no_writes_makes_the_agent_unready_and_loses_no_kill() {
    let root = tempfile::tempdir().expect("tempdir");
    let state = root.path().join("state");
    std::fs::create_dir(&state).expect("state dir");
    let mut harness = Harness::start(&state);

    harness.feed(kill(1, 101)).await;
    let first = harness.next_event().await;
    harness
        .until("the first kill spooled", |h| h.spool.stats().events == 1)
        .await;
    assert!(harness.readiness.ready());

    // The whole state directory goes: neither cursor nor spool can write.
    let broken = Broken::break_dir(&state);
    harness.feed(kill(4, 102)).await;
    let second = harness.next_event().await;
    assert_ne!(first.id, second.id);
    harness.until("not ready", |h| !h.readiness.ready()).await;
    assert!(harness.metric("state_unwritable").ends_with(" 1"));
    assert!(harness.metric("unspooled_events").ends_with(" 1"));
    assert_eq!(harness.spool.stats().events, 1, "the spool cannot have taken it");

    broken.repair();
    harness.feed(quiet(7)).await;
    harness
        .until("the kept kill spooled", |h| h.spool.stats().events == 2)
        .await;
    harness.until("ready again", |h| h.readiness.ready()).await;
    assert!(harness.metric("state_unwritable").ends_with(" 0"));
    assert!(harness.metric("unspooled_events").ends_with(" 0"));
    harness
        .until("the cursor past every record", |h| h.saved_seq() == Some(7))
        .await;
    let spooled: Vec<String> = harness
        .spool
        .with(|spool| spool.pending().into_iter().map(|(_, id)| id).collect())
        .await;
    assert_eq!(spooled, vec![first.id, second.id], "both kills, in order, once");
    harness.stop().await;
}

#[tokio::test]
async fn the_cursor_stays_before_a_kill_the_spool_did_not_take() {
    let root = tempfile::tempdir().expect("tempdir");
    let state = root.path().join("state");
    std::fs::create_dir(&state).expect("state dir");
    let mut harness = Harness::start(&state);
    harness.feed(quiet(1)).await;
    harness
        .until("the cursor saved", |h| h.saved_seq() == Some(1))
        .await;

    // Only the spool fails: the cursor still saves, but not past the kill
    // (its report starts at record 2), whatever is read after it.
    let broken = Broken::break_dir(&state.join("spool"));
    harness.feed(kill(2, 201)).await;
    harness.next_event().await;
    for seq in 5..10 {
        harness.feed(quiet(seq)).await;
    }
    harness.until("not ready", |h| !h.readiness.ready()).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(harness.saved_seq(), Some(1), "a restart must read the kill again");

    broken.repair();
    harness
        .until("the kill spooled", |h| h.spool.stats().events == 1)
        .await;
    harness
        .until("the cursor past it", |h| h.saved_seq() == Some(9))
        .await;
    assert!(harness.readiness.ready());
    harness.stop().await;
}

#[tokio::test]
async fn stopping_with_a_kill_not_spooled_leaves_the_cursor_before_it() {
    let root = tempfile::tempdir().expect("tempdir");
    let state = root.path().join("state");
    std::fs::create_dir(&state).expect("state dir");
    let mut harness = Harness::start(&state);
    harness.feed(quiet(1)).await;
    harness
        .until("the cursor saved", |h| h.saved_seq() == Some(1))
        .await;
    let broken = Broken::break_dir(&state.join("spool"));
    harness.feed(kill(2, 301)).await;
    harness.feed(quiet(5)).await;
    harness.next_event().await;
    harness.stop().await;
    assert_eq!(
        Cursor::load(&state.join("kmsg.cursor"))
            .expect("cursor")
            .map(|c| c.seq),
        Some(1),
        "the next start reads the kill again"
    );
    broken.repair();
}

/// Kills the spool cannot take are offered to the collector all the
/// while they are kept (the test plays the sender and the collector's
/// answers); each is let go once stored there, the cursor passing it,
/// though it was never written. Readiness still says the spool takes no
/// writes until it does again.
#[tokio::test]
async fn kept_kills_the_collector_stored_need_no_spool() {
    let root = tempfile::tempdir().expect("tempdir");
    let state = root.path().join("state");
    std::fs::create_dir(&state).expect("state dir");
    let mut harness = Harness::start(&state);
    let mut offered = harness.spool.early_events(16);
    harness.feed(quiet(1)).await;
    harness
        .until("the cursor saved", |h| h.saved_seq() == Some(1))
        .await;
    let broken = Broken::break_dir(&state.join("spool"));
    harness.feed(kill(2, 401)).await;
    let first = harness.next_event().await;
    harness.feed(kill(5, 402)).await;
    let second = harness.next_event().await;
    for seq in 8..12 {
        harness.feed(quiet(seq)).await;
    }
    harness
        .until("both kills kept", |h| {
            h.metric("unspooled_events").ends_with(" 2")
        })
        .await;
    // Each offered as it was kept, and again while kept, under one key.
    let mut keys: std::collections::HashMap<String, Vec<u64>> = std::collections::HashMap::new();
    while keys.values().map(Vec::len).min().unwrap_or(0) < 2 || keys.len() < 2 {
        let (key, event) = tokio::time::timeout(Duration::from_secs(5), offered.recv())
            .await
            .expect("offered again within 5 s")
            .expect("offers open");
        keys.entry(event.id.clone()).or_default().push(key);
    }
    let key_of = |id: &str| {
        let seen = &keys[id];
        assert!(seen.iter().all(|k| *k == seen[0]), "one key per kill: {seen:?}");
        seen[0]
    };
    assert_eq!(harness.saved_seq(), Some(1), "held before the kept kills");

    // The newer one stored first: let go behind the older, whose write
    // still fails; the cursor stays before the older.
    harness.spool.settle(key_of(&second.id), Settlement::Stored).await;
    harness
        .until("the stored kill let go", |h| {
            h.metric("unspooled_events").ends_with(" 1")
        })
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(harness.saved_seq(), Some(1), "still held before the older kill");

    harness.spool.settle(key_of(&first.id), Settlement::Stored).await;
    harness
        .until("both let go", |h| h.metric("unspooled_events").ends_with(" 0"))
        .await;
    harness
        .until("the cursor past them", |h| h.saved_seq() == Some(11))
        .await;
    assert!(!harness.readiness.ready(), "the spool still takes no writes");
    assert!(harness.metric("state_unwritable").ends_with(" 1"));

    broken.repair();
    harness.until("ready again", |h| h.readiness.ready()).await;
    assert_eq!(harness.spool.stats().events, 0, "never written");
    harness.stop().await;
}
