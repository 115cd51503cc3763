//! Nothing acknowledged is ever lost when the collector's storage fails:
//! real faults (a full filesystem under SQLite, a full tablespace and an
//! outage under PostgreSQL) under the real `oomlens-collector` binary and
//! `oomlens-agent run --standalone`, while an agent's spool and sender
//! stream events. Every event that was acknowledged is stored exactly once
//! after a restart, every one that was not is still in the agent's spool
//! and is delivered once the store can write again, the collector is not
//! ready meanwhile and recovers by itself.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use oomlens_agent::app::AgentMetrics;
use oomlens_agent::ship::{self, SharedSpool, ShipperConfig};
use oomlens_collector::store::{Inserted, Store};
use oomlens_common::client::ClientConfig;
use oomlens_proto::v1::{AgentHello, MemoryHistory, MemorySample, OomEvent, QueryRequest};
use oomlens_tests::collector::CollectorProcess;
use oomlens_tests::faults::{FullablePostgres, Tmpfs, fresh_database, postgres_required, postgres_url};
use oomlens_tests::{ScratchTree, free_port, metric, require_real_kernel, run_hog, tmpfs_or_skip, unique};

const NODE: &str = "faults-node";

/// A kill-sized event (a minute of history at 10 Hz is ~25 KiB; a third
/// of that here, so that a small filesystem holds enough of them).
fn synthetic(n: u64) -> OomEvent {
    let t = 1_795_000_000 + i64::try_from(n).unwrap();
    OomEvent {
        id: oomlens_proto::event_id(NODE, "boot", n),
        node: Some(NODE.into()),
        time: Some(prost_types::Timestamp { seconds: t, nanos: 0 }),
        scope: 1,
        constraint: 1,
        history: Some(MemoryHistory {
            cgroup: format!("/kubepods/pod{n}/c"),
            samples: (0..200)
                .map(|i| MemorySample {
                    time: Some(prost_types::Timestamp {
                        seconds: t - 20 + i / 10,
                        nanos: i32::try_from((i % 10) * 100_000_000).unwrap(),
                    }),
                    working_set_bytes: Some(1_000_000 + u64::try_from(i).unwrap() * 1000),
                    usage_bytes: Some(1_100_000 + u64::try_from(i).unwrap() * 1000),
                    ..MemorySample::default()
                })
                .collect(),
            limit_bytes: Some(2_000_000),
            sample_interval_ms: 100,
            ..MemoryHistory::default()
        }),
        ..OomEvent::default()
    }
}

fn ids(range: std::ops::Range<u64>) -> HashSet<String> {
    range.map(|n| synthetic(n).id).collect()
}

async fn stored_ids(endpoint: &str) -> Vec<String> {
    let config = ClientConfig {
        endpoint: endpoint.to_owned(),
        ..ClientConfig::default()
    };
    let mut client = config.event_client().await.unwrap();
    let mut ids = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .query(QueryRequest {
                filter: None,
                page_size: 1000,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        ids.extend(page.events.into_iter().map(|e| e.id));
        if page.next_page_token.is_empty() {
            return ids;
        }
        token = page.next_page_token;
    }
}

/// Stored ids, each checked to be there once.
async fn stored_once(endpoint: &str) -> HashSet<String> {
    let ids = stored_ids(endpoint).await;
    let unique: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(unique.len(), ids.len(), "an event stored twice");
    unique
}

/// The agent's sender on `spool` (as `oomlens-agent` runs it), stopped by
/// [`Shipper::stop`].
struct Shipper {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Shipper {
    fn start(spool: &SharedSpool, endpoint: &str, metrics: &Arc<AgentMetrics>) -> Self {
        let mut config = ShipperConfig::new(
            ClientConfig {
                endpoint: endpoint.to_owned(),
                ..ClientConfig::default()
            },
            AgentHello {
                node: NODE.into(),
                ..AgentHello::default()
            },
        );
        config.min_backoff = Duration::from_millis(50);
        config.max_backoff = Duration::from_millis(500);
        config.max_in_flight = 32;
        config.drain = Duration::from_millis(200);
        let (_side, side_rx) = tokio::sync::mpsc::channel(1);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(ship::run_shipper(
            spool.clone(),
            config,
            side_rx,
            metrics.sender.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        Self { stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }
}

/// Appends events to the spool at a steady pace, as the pipeline does
/// with kills, until stopped; numbered on from `next`.
struct Producer {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<u64>,
}

impl Producer {
    fn start(spool: &SharedSpool, mut next: u64, produced: &Arc<AtomicU64>) -> Self {
        let spool = spool.clone();
        let produced = Arc::clone(produced);
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(20));
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    _ = &mut stopped => return next,
                }
                spool.append(synthetic(next)).await.unwrap();
                next += 1;
                produced.store(next, Ordering::Relaxed);
            }
        });
        Self { stop, task }
    }

    /// Stops; returns the next number (events 0..it exist).
    async fn stop(self) -> u64 {
        let _ = self.stop.send(());
        self.task.await.unwrap()
    }
}

async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn spooled_ids(spool: &SharedSpool) -> HashSet<String> {
    spool
        .with(|s| s.pending())
        .await
        .into_iter()
        .map(|(_, id)| id)
        .collect()
}

/// The storage fault a scenario puts under the collector.
enum Fault<'a> {
    /// This filesystem fills up, then is freed.
    FullDisk(&'a mut Tmpfs),
    /// The collector's PostgreSQL database refuses connections and its
    /// open ones are terminated (the server, shared, keeps running).
    Outage { server: String, database: String },
}

impl Fault<'_> {
    async fn begin(&mut self) {
        match self {
            Self::FullDisk(disk) => disk.fill(),
            Self::Outage { server, database } => {
                outage_sql(
                    server,
                    &format!("ALTER DATABASE {database} ALLOW_CONNECTIONS false"),
                )
                .await;
                outage_sql(
                    server,
                    &format!(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'"
                    ),
                )
                .await;
            }
        }
    }

    async fn end(&mut self) {
        match self {
            Self::FullDisk(disk) => disk.free(),
            Self::Outage { server, database } => {
                outage_sql(
                    server,
                    &format!("ALTER DATABASE {database} ALLOW_CONNECTIONS true"),
                )
                .await;
            }
        }
    }

    /// Whether a collector can start (open its store) during the fault.
    fn collector_starts(&self) -> bool {
        matches!(self, Self::FullDisk(_))
    }
}

async fn outage_sql(server: &str, sql: &str) {
    let pool = sqlx::PgPool::connect(server).await.unwrap();
    sqlx::raw_sql(sql)
        .execute(&pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    pool.close().await;
}

fn count(log: &str, line: &str) -> usize {
    log.lines().filter(|l| l.contains(line)).count()
}

const CANNOT_WRITE: &str = "the event store cannot write";
const CAN_WRITE: &str = "the event store can write again";

/// The promise, under `fault`: events stream in while the store fails;
/// the collector turns not ready; what was acknowledged survives a
/// restart during the fault (where one can start) and what was not is
/// still spooled; once the fault ends the collector is ready again by
/// itself and every event is stored exactly once.
async fn nothing_acknowledged_is_lost(database: &str, mut fault: Fault<'_>) {
    let dir = tempfile::tempdir().unwrap();
    let mut collector = CollectorProcess::start(database, dir.path());
    let metrics = Arc::new(AgentMetrics::new());
    let spool = SharedSpool::open(&dir.path().join("spool"), 256 << 20, metrics.spool.clone()).unwrap();
    let produced = Arc::new(AtomicU64::new(0));
    // Off by one at times (an append is counted after it lands): enough
    // to wait on.
    let acked = || {
        produced
            .load(Ordering::Relaxed)
            .saturating_sub(spool.stats().events)
    };

    // Healthy: events flow and are acknowledged.
    let shipper = Shipper::start(&spool, &collector.endpoint(), &metrics);
    let producer = Producer::start(&spool, 0, &produced);
    wait_for("acks", Duration::from_secs(30), || acked() >= 20).await;
    assert_eq!(collector.ready(), Some(true));
    assert_eq!(
        metric(&collector.metrics(), "oomlens_collector_store_writable"),
        1.0
    );

    // The fault, while events keep coming: not ready, nothing acked that
    // is not stored.
    fault.begin().await;
    wait_for("not ready", Duration::from_secs(60), || {
        collector.ready() == Some(false)
    })
    .await;
    assert_eq!(
        metric(&collector.metrics(), "oomlens_collector_store_writable"),
        0.0
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let next = producer.stop().await;
    shipper.stop().await;
    let waiting = spooled_ids(&spool).await;
    assert!(
        !waiting.is_empty(),
        "the fault kept some events from being stored"
    );
    let acknowledged: HashSet<String> = ids(0..next).difference(&waiting).cloned().collect();
    assert_eq!(count(&collector.log(), CANNOT_WRITE), 1, "{}", collector.log());
    eprintln!(
        "during the fault: {next} events, {} acknowledged, {} waiting in the spool",
        acknowledged.len(),
        waiting.len()
    );
    if fault.collector_starts() {
        // Whatever was acknowledged is committed: a restart keeps it.
        collector.kill();
        collector.restart();
        let stored = stored_once(&collector.endpoint()).await;
        let lost: Vec<&String> = acknowledged.difference(&stored).collect();
        assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
    }

    // The agent goes on sending while the fault lasts: the (maybe
    // restarted) collector finds out by itself that it cannot write.
    let shipper = Shipper::start(&spool, &collector.endpoint(), &metrics);
    let producer = Producer::start(&spool, next, &produced);
    wait_for("not ready", Duration::from_secs(60), || {
        collector.ready() == Some(false)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The fault ends: ready again without a restart, everything delivered.
    fault.end().await;
    wait_for("ready again", Duration::from_secs(60), || {
        collector.ready() == Some(true)
    })
    .await;
    assert_eq!(
        metric(&collector.metrics(), "oomlens_collector_store_writable"),
        1.0
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let total = producer.stop().await;
    wait_for("an empty spool", Duration::from_secs(60), || {
        spool.stats().events == 0
    })
    .await;
    shipper.stop().await;
    let log = collector.log();
    assert_eq!(
        count(&log, CANNOT_WRITE),
        1,
        "one line when writes start failing:\n{log}"
    );
    assert_eq!(count(&log, CAN_WRITE), 1, "one line when they work again:\n{log}");

    // After a restart: every event exactly once.
    collector.kill();
    collector.restart();
    let stored = stored_once(&collector.endpoint()).await;
    assert_eq!(stored, ids(0..total), "every event stored, exactly once");
    eprintln!("{total} events, all stored once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_collector_on_a_full_disk_loses_nothing_acknowledged() {
    let mut disk = tmpfs_or_skip!("64m");
    let database = disk.path().join("events.db").display().to_string();
    nothing_acknowledged_is_lost(&database, Fault::FullDisk(&mut disk)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_collector_on_a_full_tablespace_loses_nothing_acknowledged() {
    let test = "postgres_collector_on_a_full_tablespace_loses_nothing_acknowledged";
    let Some(server) = postgres_url(test).await else {
        return;
    };
    let mut postgres = match FullablePostgres::create(&server, "full_tablespace", "32m") {
        Ok(postgres) => postgres,
        Err(reason) => {
            assert!(!postgres_required(), "{test}: {reason}");
            eprintln!("SKIPPED {test}: {reason}");
            return;
        }
    };
    let database = postgres.url.clone();
    nothing_acknowledged_is_lost(&database, Fault::FullDisk(&mut postgres.disk)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_collector_through_an_outage_loses_nothing_acknowledged() {
    let Some(server) = postgres_url("postgres_collector_through_an_outage_loses_nothing_acknowledged").await
    else {
        return;
    };
    let database = fresh_database(&server, "outage").await;
    let fault = Fault::Outage {
        server,
        database: "oomlens_t_outage".into(),
    };
    nothing_acknowledged_is_lost(&database, fault).await;
}

/// The store alone on a full disk: a write it reports stored is committed
/// (it survives a reopen), a failed one leaves no transaction open (the
/// next writes work as soon as there is room, from every pooled
/// connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_on_a_full_disk_reports_stored_only_what_it_committed() {
    let mut disk = tmpfs_or_skip!("4m");
    let path = disk.path().join("events.db").display().to_string();
    let store = Store::open(&path).await.unwrap();
    let mut stored = Vec::new();
    let mut next = 0u64;
    let mut batch = || {
        let events: Vec<OomEvent> = (next..next + 4).map(synthetic).collect();
        next += 4;
        events
    };
    let mut insert = async |store: &Store, events: Vec<OomEvent>| -> bool {
        match store.insert_batch(&events).await {
            Ok(results) => {
                for (event, result) in events.iter().zip(results) {
                    assert!(matches!(result, Inserted::Stored(_)));
                    stored.push(event.id.clone());
                }
                true
            }
            Err(_) => false,
        }
    };
    for _ in 0..5 {
        assert!(insert(&store, batch()).await);
    }
    disk.fill();
    let mut failed = 0;
    for _ in 0..20 {
        if !insert(&store, batch()).await {
            failed += 1;
        }
    }
    assert!(failed > 0, "the full disk made writes fail");
    disk.free();
    // More rounds than pooled connections: none is left in a transaction.
    for _ in 0..8 {
        assert!(
            insert(&store, batch()).await,
            "writes work again once there is room"
        );
    }
    store.close().await;
    let store = Store::open(&path).await.unwrap();
    for id in &stored {
        assert!(
            store.get(id).await.unwrap().is_some(),
            "{id} reported stored, gone"
        );
    }
    assert_eq!(
        store.totals().await.unwrap().0,
        i64::try_from(stored.len()).unwrap()
    );
    store.close().await;
}

/// `oomlens-agent run --standalone` with its database on a filesystem
/// that fills while it runs and real kernel OOM kills happen: the embedded
/// collector acknowledges nothing it did not commit, the agent keeps the
/// kills spooled and delivers them, without a restart, once there is room
/// again. (A standalone agent or a collector cannot start on a full disk:
/// SQLite cannot create the WAL index; it exits with the error.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_agent_on_a_full_disk_loses_nothing_acknowledged() {
    require_real_kernel!();
    let mut disk = tmpfs_or_skip!("64m");
    let database = disk.path().join("oomlens.db").display().to_string();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("agent");
    let spool_dir = state.join("spool");
    let agent = StandaloneAgent {
        state: state.clone(),
        database: database.clone(),
        port: free_port(),
        log: dir.path().join("agent.log"),
    };
    let tree = ScratchTree::new(&unique("oomlens-faults"));
    let kills: Vec<String> = (0..3).map(|i| format!("kill{i}")).collect();
    let kill_paths: Vec<String> = kills.iter().map(|k| tree.kernel_path(k)).collect();

    // Healthy: what the last run spooled is delivered.
    spool_events(&spool_dir, 0..40).await;
    let mut running = agent.start();
    agent.wait_spool(&spool_dir, 0).await;

    // The disk fills; kills happen: they wait in the spool.
    disk.fill();
    for kill in &kills {
        oom_kill_in(&tree, kill);
    }
    agent.wait_spool(&spool_dir, kills.len()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        spool_files(&spool_dir),
        kills.len(),
        "nothing acknowledged while the disk is full"
    );

    // Room again: delivered without a restart, and the embedded
    // collector's next probe finds it can write.
    disk.free();
    agent.wait_spool(&spool_dir, 0).await;
    let log = || std::fs::read_to_string(&agent.log).unwrap();
    wait_for("the probe", Duration::from_secs(30), || {
        count(&log(), CAN_WRITE) == 1
    })
    .await;
    agent.stop(&mut running);
    assert_eq!(count(&log(), CANNOT_WRITE), 1, "{}", log());
    assert_eq!(count(&log(), CAN_WRITE), 1, "{}", log());

    // After the restart (the store reopened): each event once.
    let store = Store::open(&database).await.unwrap();
    for id in ids(0..40) {
        assert!(store.get(&id).await.unwrap().is_some(), "{id} not stored");
    }
    let (page, _) = store.query(None, 1000, None).await.unwrap();
    for path in &kill_paths {
        let stored = page
            .iter()
            .filter(|e| e.event.oom_memcg.as_deref() == Some(path.as_str()))
            .count();
        assert_eq!(stored, 1, "the kill in {path} stored once");
    }
    let ours = page
        .iter()
        .filter(|e| {
            e.event.node.as_deref() == Some(NODE)
                || kill_paths.iter().any(|p| e.event.oom_memcg.as_deref() == Some(p))
        })
        .count();
    assert_eq!(ours, 40 + kills.len(), "nothing stored twice");
    store.close().await;
}

fn oom_kill_in(tree: &ScratchTree, name: &str) {
    let cgroup = tree.create(name);
    tree.limit(name, 32 << 20);
    let (_, status) = run_hog(&cgroup);
    assert!(!status.success(), "the hog was killed");
    tree.remove(name);
}

struct StandaloneAgent {
    state: PathBuf,
    database: String,
    port: u16,
    log: PathBuf,
}

impl StandaloneAgent {
    fn start(&self) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        Command::new(oomlens_tests::agent_binary())
            .args([
                "run",
                "--standalone",
                "--listen",
                &format!("127.0.0.1:{}", self.port),
            ])
            .args(["--database", &self.database])
            .args(["--state-dir", &self.state.display().to_string()])
            .args(["--metrics-listen", "", "--cri-socket", "none", "--no-sampler"])
            .args(["--output", "json"])
            .env("OOMLENS_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start oomlens-agent")
    }

    fn stop(&self, child: &mut Child) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(oomlens_tests::kernel_pid(child.id())),
            nix::sys::signal::Signal::SIGTERM,
        );
        let status = child.wait().unwrap();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert!(
            status.success(),
            "the agent exits cleanly on SIGTERM: {status}\n{log}"
        );
    }

    /// Waits until `events` are spooled.
    async fn wait_spool(&self, spool: &Path, events: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while spool_files(spool) != events {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            assert!(
                Instant::now() < deadline,
                "not {events} events in the spool:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn spool_files(spool: &Path) -> usize {
    std::fs::read_dir(spool)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".event"))
                .count()
        })
        .unwrap_or(0)
}

/// Spools events as a previous run of the agent would have left them.
async fn spool_events(spool: &Path, range: std::ops::Range<u64>) {
    let metrics = AgentMetrics::new();
    let spool = SharedSpool::open(spool, 256 << 20, metrics.spool.clone()).unwrap();
    for n in range {
        spool.append(synthetic(n)).await.unwrap();
    }
}
